//! The patched reactor (vendor/polling/PATCHED.md): timers still fire without a
//! timerfd, and wake-ups from other threads are never lost now that the wake-up
//! eventfd is re-armed only when it fired.

use std::time::{Duration, Instant};

#[test]
fn timers_fire_and_never_early() {
    smol::block_on(async {
        for ms in [0u64, 1, 2, 5, 13] {
            let start = Instant::now();
            async_io::Timer::after(Duration::from_millis(ms)).await;
            assert!(
                start.elapsed() >= Duration::from_millis(ms),
                "{ms} ms timer early"
            );
        }
        // Sub-millisecond timeouts round up instead of spinning.
        let start = Instant::now();
        async_io::Timer::after(Duration::from_micros(300)).await;
        assert!(start.elapsed() >= Duration::from_micros(300));
    });
}

#[test]
fn wakeups_from_other_threads_are_never_lost() {
    // Another thread wakes the blocked main thread many times, with and without a
    // pending timer, at moments racing the reactor's own wake-ups: a lost wake-up
    // would leave the receiver waiting forever (the test would hang).
    let (tx, rx) = smol::channel::bounded::<u32>(1);
    let sender = std::thread::spawn(move || {
        for i in 0..20_000u32 {
            smol::block_on(tx.send(i)).unwrap();
            if i % 1000 == 0 {
                std::thread::yield_now();
            }
        }
    });
    smol::block_on(async {
        let far = async_io::Timer::after(Duration::from_secs(3600));
        let mut expected = 0;
        let received = smol::future::or(
            async {
                while let Ok(i) = rx.recv().await {
                    assert_eq!(i, expected);
                    expected += 1;
                }
                expected
            },
            async {
                far.await;
                0
            },
        )
        .await;
        assert_eq!(received, 20_000);
    });
    sender.join().unwrap();
}

#[test]
fn io_is_still_delivered_with_a_timer_months_away() {
    // The reactor's wait carries the nearest timer as epoll_wait's own timeout; one
    // months away must not make epoll_wait fail (it would fail at once on every wait,
    // and no I/O would ever be delivered: this test would hang). Where rustix makes
    // the system call itself on Linux 5.11 or later (x86-64 here) an uncapped timeout
    // goes through epoll_pwait2 and works anyway; the cap matters on rustix's libc
    // backend (32-bit MIPS musl: an `int` of milliseconds or EINVAL) and older kernels,
    // where this test is what shows it.
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b).unwrap();
        }
    });
    smol::block_on(async {
        let far = async_io::Timer::after(Duration::from_secs(90 * 24 * 3600));
        let talk = async {
            use smol::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = async_net::TcpStream::connect(addr).await.unwrap();
            for i in 0..200u8 {
                s.write_all(&[i]).await.unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                assert_eq!(b[0], i);
            }
        };
        smol::future::or(talk, async {
            far.await;
            panic!("the far timer fired");
        })
        .await;
    });
    echo.join().unwrap();
}
