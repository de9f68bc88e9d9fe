//! The status history's memory at its bounds, counted by a counting allocator, and the
//! size of what it adds to the status document. Prints figures (run with --nocapture);
//! asserts only the design bounds, never a time.

use btcagent::status::history::{
    History, OfflineWorker, PoolEvent, MAX_OFFLINE_WORKERS, MAX_POOL_EVENTS, MAX_SUBACCOUNT_SERIES,
};
use btcagent::status::ShareCount;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const T0: u64 = 1_764_000_000;

/// Everything at once: a day of buckets for the farm and every sub-account series,
/// every event slot with a long reason, every offline slot, over two days of churn.
fn fill(h: &mut History) {
    for m in 0..(2 * 24 * 60) as u64 {
        let t = T0 + m * 60;
        let d = ShareCount {
            accepted: 6000,
            rejected: 6,
            difficulty: 6000.0 * 65536.0,
        };
        h.add_farm(t, d);
        for s in 0..MAX_SUBACCOUNT_SERIES + 8 {
            h.add_subaccount(t, &format!("subaccount-{s:02}"), d);
        }
        h.pool_event(PoolEvent::new(
            t,
            if m % 2 == 0 { "up" } else { "down" },
            m as u32,
            "us.ss.btc.com:1800".into(),
            "subaccount-01".into(),
            &"read timeout: the pool sent nothing for 60 s; ".repeat(5),
        ));
        for k in 0..4 {
            h.worker_left(OfflineWorker {
                worker: format!("s19-{:05}", (m * 4 + k) % 20_000),
                subaccount: "subaccount-01".into(),
                ip: "192.168.100.200".into(),
                last_seen: t,
                last_hashrate: 9.5e13,
                connected_seconds: 3600,
                shares_accepted: 1000,
                shares_rejected: 1,
            });
        }
    }
}

#[test]
fn history_memory_at_its_bounds() {
    let before = LIVE.load(Ordering::Relaxed);
    let mut h = History::new();
    let empty = LIVE.load(Ordering::Relaxed) - before;
    fill(&mut h);
    let now = T0 + 2 * 24 * 3600;
    h.prune_offline(now - 3600, &HashSet::new());
    let full = LIVE.load(Ordering::Relaxed) - before;

    let doc = h.doc(now);
    let events = h.pool_events();
    let offline = h.offline_workers();
    assert_eq!(doc.minutes.subaccounts.len(), MAX_SUBACCOUNT_SERIES);
    assert_eq!(events.len(), MAX_POOL_EVENTS);
    assert_eq!(offline.len(), MAX_OFFLINE_WORKERS);
    let json = |v: &dyn erased::Ser| v.len();
    let history_json = json(&doc);
    let events_json = json(&events);
    let offline_json = json(&offline);
    let saved_json = serde_json::to_vec(&h.saved(now)).unwrap().len();
    println!(
        "status history at its bounds ({} sub-account series, {} events, {} offline workers): {} KiB on the heap ({} KiB empty)",
        MAX_SUBACCOUNT_SERIES,
        MAX_POOL_EVENTS,
        MAX_OFFLINE_WORKERS,
        full / 1024,
        empty / 1024
    );
    println!(
        "in the status document: history {} KiB, pool_events {} KiB, offline_workers {} KiB; history file {} KiB",
        history_json / 1024,
        events_json / 1024,
        offline_json / 1024,
        saved_json / 1024
    );
    // Design bound (docs/status-history.md): well under half a megabyte.
    assert!(full < 512 * 1024, "{full} bytes");

    // More of the same adds nothing.
    let mut more = h.clone();
    let before_more = LIVE.load(Ordering::Relaxed);
    fill(&mut more);
    more.prune_offline(now - 3600, &HashSet::new());
    let grown = LIVE.load(Ordering::Relaxed) - before_more;
    println!("another two days of the same: {} bytes more", grown);
    assert!(grown.abs() < 64 * 1024, "{grown}");
}

mod erased {
    /// Serialized length of anything serializable, behind one object type.
    pub trait Ser {
        fn len(&self) -> usize;
    }
    impl<T: serde::Serialize> Ser for T {
        fn len(&self) -> usize {
            serde_json::to_vec(self).unwrap().len()
        }
    }
}
