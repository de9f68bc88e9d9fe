//! `btcagent status`: the status file as a readable summary.

use super::StatusDoc;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

/// Workers listed, the busiest first.
const TOP_WORKERS: usize = 10;
/// Offline workers and pool events listed, the newest first.
const TOP_OFFLINE: usize = 10;
const TOP_EVENTS: usize = 5;
/// Longer names are cut in the tables.
const MAX_CELL: usize = 40;

/// Reads the status file (`file`, else the default path) and prints the summary.
/// Exit code 1 when the file is missing, unreadable, implausible or stale.
pub fn print_summary(file: Option<&Path>) -> ExitCode {
    let path = file.unwrap_or(Path::new(crate::config::DEFAULT_STATUS_FILE));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "btcagent: no status file at {}: is the agent running with status_file set to it? (--file PATH reads another)",
                path.display()
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("btcagent: cannot read {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let doc: StatusDoc = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "btcagent: {} is not a btcagent status file: {e}",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    let now = super::unix_seconds(SystemTime::now());
    print!("{}", format_summary(&doc, now));
    if let Some(why) = implausible(&doc) {
        eprintln!(
            "btcagent: {}: {why}: a damaged file, or not one btcagent wrote",
            path.display()
        );
        return ExitCode::from(1);
    }
    match stale_for(&doc, now) {
        Some(age) => {
            // The summary starts with STALE; on a terminal, where both streams show,
            // say it once. Scripts (stdout piped or discarded) still get it here.
            if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                eprintln!(
                    "btcagent: {} is stale: last updated {} ago: agent not running?",
                    path.display(),
                    duration(age)
                );
            }
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}

/// How old the document is, if older than three rewrite intervals. Saturating: an
/// interval no agent writes must not wrap into a wrong verdict.
fn stale_for(doc: &StatusDoc, now: u64) -> Option<u64> {
    let interval = match doc.status_interval_seconds {
        0 => crate::config::DEFAULT_STATUS_INTERVAL_SECONDS,
        n => n,
    };
    let age = now.saturating_sub(doc.updated_at);
    (age > interval.saturating_mul(3)).then_some(age)
}

/// Why `doc` cannot be what an agent wrote, if it cannot: the summary is still
/// printed (with saturating arithmetic), but its verdicts are not to be trusted.
fn implausible(doc: &StatusDoc) -> Option<String> {
    let max = crate::config::MAX_STATUS_INTERVAL_SECONDS;
    if doc.status_interval_seconds > max {
        return Some(format!(
            "status_interval_seconds {} is over {max}, the most an agent writes",
            doc.status_interval_seconds
        ));
    }
    let t = &doc.totals;
    if t.shares_accepted.checked_add(t.shares_rejected).is_none() {
        return Some("shares_accepted + shares_rejected is over 2^64".into());
    }
    None
}

/// The summary text of `doc` as seen at `now` (Unix seconds).
pub fn format_summary(doc: &StatusDoc, now: u64) -> String {
    let t = &doc.totals;
    let mut out = String::new();
    if let Some(why) = implausible(doc) {
        let _ = writeln!(out, "IMPLAUSIBLE: {why}: a damaged file?");
    }
    if let Some(age) = stale_for(doc, now) {
        let _ = writeln!(
            out,
            "STALE: last updated {} ago: agent not running?",
            duration(age)
        );
    }
    let _ = writeln!(
        out,
        "btcagent {}, up {}, listening for miners on {}",
        doc.version,
        duration(doc.uptime_seconds),
        doc.listen
    );
    let _ = writeln!(
        out,
        "Shares: {} accepted, {} rejected{}; last 5 min: {} accepted, {} rejected; hashrate {}",
        t.shares_accepted,
        t.shares_rejected,
        percent(t.shares_rejected, t.shares_accepted),
        t.accepted_last_5min,
        t.rejected_last_5min,
        hashrate(t.hashrate)
    );
    let _ = writeln!(
        out,
        "\nPools: {} of {} connections up",
        t.pools_up, t.pool_connections
    );
    if !doc.pools.is_empty() {
        let mut rows = vec![row(&[
            "ID",
            "POOL",
            "SUB-ACCOUNT",
            "STATE",
            "FOR",
            "ROUTE",
            "MINERS",
            "JOBS",
            "LAST JOB",
            "ACCEPTED",
            "REJECTED",
        ])];
        for p in &doc.pools {
            rows.push(vec![
                p.id.to_string(),
                p.pool.clone(),
                p.subaccount.clone(),
                p.state.clone(),
                duration(now.saturating_sub(p.since)),
                p.route.clone(),
                p.miners.to_string(),
                p.jobs.to_string(),
                ago(p.last_job_age_seconds),
                p.shares_accepted.to_string(),
                p.shares_rejected.to_string(),
            ]);
        }
        table(&mut out, rows);
    }
    if !doc.subaccounts.is_empty() {
        let _ = writeln!(out, "\nSub-accounts:");
        let mut rows = vec![row(&[
            "NAME",
            "CONNECTIONS",
            "MINERS",
            "ACCEPTED",
            "REJECTED",
            "HASHRATE",
        ])];
        for s in &doc.subaccounts {
            rows.push(vec![
                s.name.clone(),
                s.pool_connections.to_string(),
                s.miners.to_string(),
                s.shares_accepted.to_string(),
                s.shares_rejected.to_string(),
                hashrate(s.hashrate),
            ]);
        }
        table(&mut out, rows);
    }
    let _ = write!(out, "\nMiners: {}", t.miners);
    if doc.miners.is_empty() {
        out.push('\n');
    } else {
        miners_table(&mut out, doc);
    }
    if !doc.offline_workers.is_empty() {
        let shown = doc.offline_workers.len().min(TOP_OFFLINE);
        let _ = writeln!(
            out,
            "\nOffline workers (seen in the last 24 h, not connected now): {}{}",
            doc.offline_workers.len(),
            if shown < doc.offline_workers.len() {
                format!("; the {shown} newest:")
            } else {
                ", newest first:".to_string()
            }
        );
        let mut rows = vec![row(&[
            "WORKER",
            "SUB-ACCOUNT",
            "IP",
            "LAST SEEN",
            "LAST HASHRATE",
        ])];
        for w in doc.offline_workers.iter().take(shown) {
            rows.push(vec![
                w.worker.clone(),
                w.subaccount.clone(),
                w.ip.clone(),
                format!("{} ago", duration(now.saturating_sub(w.last_seen))),
                hashrate(w.last_hashrate),
            ]);
        }
        table(&mut out, rows);
    }
    if !doc.pool_events.is_empty() {
        let _ = writeln!(out, "\nPool events, newest first:");
        let mut rows = vec![row(&["WHEN", "EVENT", "POOL", "SUB-ACCOUNT", "REASON"])];
        for e in doc.pool_events.iter().take(TOP_EVENTS) {
            let event = if e.count > 1 {
                format!("{} x{}", e.event, e.count)
            } else {
                e.event.clone()
            };
            rows.push(vec![
                format!("{} ago", duration(now.saturating_sub(e.last_at))),
                event,
                e.pool.clone(),
                e.subaccount.clone(),
                e.reason.clone(),
            ]);
        }
        table(&mut out, rows);
    }
    out
}

/// The busiest workers connected now.
fn miners_table(out: &mut String, doc: &StatusDoc) {
    let mut top: Vec<_> = doc.miners.iter().collect();
    top.sort_by(|a, b| b.hashrate.total_cmp(&a.hashrate));
    top.truncate(TOP_WORKERS);
    let _ = writeln!(
        out,
        "; {} by hashrate:",
        if top.len() < doc.miners.len() {
            format!("top {}", top.len())
        } else {
            "all".to_string()
        }
    );
    let mut rows = vec![row(&[
        "WORKER",
        "SUB-ACCOUNT",
        "IP",
        "POOL",
        "DIFF",
        "ACCEPTED",
        "REJECTED",
        "LAST SHARE",
        "HASHRATE",
    ])];
    for m in top {
        rows.push(vec![
            m.worker.clone(),
            m.subaccount.clone(),
            m.ip.clone(),
            m.pool_id
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            format!("{}", m.difficulty),
            m.shares_accepted.to_string(),
            m.shares_rejected.to_string(),
            ago(m.last_share_age_seconds),
            hashrate(m.hashrate),
        ]);
    }
    table(out, rows);
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns two spaces apart; over-long cells are cut with `…`.
fn table(out: &mut String, mut rows: Vec<Vec<String>>) {
    for r in rows.iter_mut() {
        for cell in r.iter_mut() {
            // Control characters from a worker name must not reach the terminal.
            let clean: String = cell
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            *cell = if clean.chars().count() > MAX_CELL {
                clean.chars().take(MAX_CELL - 1).chain(['…']).collect()
            } else {
                clean
            };
        }
    }
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `1d 02h`, `3h 04m`, `5m 06s`, `7s`.
fn duration(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    }
}

fn ago(age: Option<u64>) -> String {
    match age {
        Some(a) => format!("{} ago", duration(a)),
        None => "never".into(),
    }
}

/// `rejected` as a share of all, exact for any pair of u64 (the sum is taken in u128).
fn percent(rejected: u64, accepted: u64) -> String {
    let whole = accepted as u128 + rejected as u128;
    if whole == 0 || rejected == 0 {
        String::new()
    } else {
        format!(" ({:.2}%)", rejected as f64 * 100.0 / whole as f64)
    }
}

/// Hashes per second with an SI prefix: `120.00 TH/s`.
fn hashrate(h: f64) -> String {
    const UNITS: [&str; 7] = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    let mut v = if h.is_finite() { h.max(0.0) } else { 0.0 };
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::sample_doc;

    #[test]
    fn summary_shows_pools_subaccounts_and_top_workers() {
        let doc = sample_doc(12);
        let text = format_summary(&doc, doc.updated_at + 1);
        assert!(!text.contains("STALE"), "{text}");
        assert!(
            text.starts_with("btcagent 0.1.0, up 58s, listening for miners on 0.0.0.0:3333\n"),
            "{text}"
        );
        assert!(
            text.contains("Shares: 120 accepted, 1 rejected (0.83%); last 5 min: 100 accepted, 1 rejected; hashrate 120.00 TH/s"),
            "{text}"
        );
        assert!(text.contains("Pools: 2 of 2 connections up"), "{text}");
        let pool_line = text
            .lines()
            .find(|l| l.contains("us.ss.btc.com:1800"))
            .unwrap();
        assert_eq!(
            pool_line.split_whitespace().collect::<Vec<_>>(),
            [
                "1",
                "us.ss.btc.com:1800",
                "farm1",
                "up",
                "58s",
                "direct",
                "2",
                "12",
                "3s",
                "ago",
                "79",
                "1"
            ]
        );
        assert!(text.contains("never"), "a pool without jobs: {text}");
        assert!(text.contains("Miners: 12; top 10 by hashrate:"), "{text}");
        // The busiest worker first; the two slowest are not listed.
        let workers: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("s19-"))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(workers.len(), 10);
        assert_eq!(workers[0], "s19-00011");
        assert!(!workers.contains(&"s19-00000") && !workers.contains(&"s19-00001"));
    }

    #[test]
    fn columns_line_up() {
        let mut out = String::new();
        table(
            &mut out,
            vec![
                row(&["A", "BB"]),
                row(&["long cell", "x"]),
                row(&["y", "z"]),
            ],
        );
        assert_eq!(out, "  A          BB\n  long cell  x\n  y          z\n");
    }

    #[test]
    fn hostile_worker_names_are_cut_and_defused() {
        let mut out = String::new();
        table(&mut out, vec![vec!["\x1b[2Jevil".into(), "x".repeat(100)]]);
        assert!(out.starts_with("  ?[2Jevil  "), "{out:?}");
        assert!(out.trim_end().ends_with('…'));
        assert!(out.chars().count() < 60);
    }

    #[test]
    fn a_stale_file_says_so() {
        let doc = sample_doc(0);
        assert_eq!(stale_for(&doc, doc.updated_at + 15), None);
        assert_eq!(stale_for(&doc, doc.updated_at + 16), Some(16));
        let text = format_summary(&doc, doc.updated_at + 600);
        assert!(
            text.starts_with("STALE: last updated 10m 00s ago: agent not running?\n"),
            "{text}"
        );
        // A file from an agent that did not say its interval: the default (5 s).
        let mut old = doc.clone();
        old.status_interval_seconds = 0;
        assert_eq!(stale_for(&old, old.updated_at + 16), Some(16));
    }

    /// Issue 19 item 3: numbers no agent writes must not wrap (a wrong verdict or
    /// percentage in a release build, a panic in a debug one) and must be called out.
    #[test]
    fn absurd_numbers_do_not_wrap_and_are_called_out() {
        let mut doc = sample_doc(0);
        doc.status_interval_seconds = 1 << 63;
        let text = format_summary(&doc, doc.updated_at + 16);
        assert!(
            text.starts_with("IMPLAUSIBLE: status_interval_seconds 9223372036854775808 is over 3600, the most an agent writes: a damaged file?\n"),
            "{text}"
        );
        // An interval that large cannot make the file stale (it would wrap to 0 s).
        assert!(!text.contains("STALE"), "{text}");
        assert_eq!(stale_for(&doc, u64::MAX), None);
        assert!(implausible(&doc).is_some());

        let mut doc = sample_doc(0);
        doc.totals.shares_accepted = u64::MAX;
        doc.totals.shares_rejected = 1;
        let text = format_summary(&doc, doc.updated_at + 1);
        assert!(
            text.contains("Shares: 18446744073709551615 accepted, 1 rejected (0.00%);"),
            "{text}"
        );
        assert!(
            text.starts_with(
                "IMPLAUSIBLE: shares_accepted + shares_rejected is over 2^64: a damaged file?\n"
            ),
            "{text}"
        );
        let mut doc = sample_doc(0);
        doc.totals.shares_accepted = u64::MAX - 1;
        doc.totals.shares_rejected = u64::MAX - 1;
        let text = format_summary(&doc, doc.updated_at + 1);
        assert!(text.contains("rejected (50.00%)"), "{text}");
        // A sane file is not flagged.
        assert_eq!(implausible(&sample_doc(3)), None);
    }

    #[test]
    fn offline_workers_and_pool_events_are_listed_newest_first() {
        let doc = crate::status::tests::with_history(sample_doc(0), 12);
        let text = format_summary(&doc, doc.updated_at);
        assert!(
            text.contains("\nOffline workers (seen in the last 24 h, not connected now): 12; the 10 newest:\n"),
            "{text}"
        );
        let gone: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("gone-"))
            .collect();
        assert_eq!(gone.len(), 10);
        assert_eq!(
            gone[0].split_whitespace().collect::<Vec<_>>(),
            [
                "gone-00011",
                "farm1",
                "192.168.9.12",
                "1h",
                "59m",
                "ago",
                "95.00",
                "TH/s"
            ]
        );
        assert!(text.contains("\nPool events, newest first:\n"), "{text}");
        let first_event = text
            .lines()
            .skip_while(|l| !l.starts_with("Pool events"))
            .nth(2)
            .unwrap();
        assert!(first_event.contains(" up "), "{first_event}");
        assert!(text.contains("read timeout (60 s without a byte)"));
    }

    #[test]
    fn no_miners_no_table() {
        let text = format_summary(&sample_doc(0), 1_764_034_300);
        assert!(text.ends_with("\nMiners: 0\n"), "{text}");
    }

    #[test]
    fn units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(61), "1m 01s");
        assert_eq!(duration(3 * 3600 + 4 * 60), "3h 04m");
        assert_eq!(duration(86_400 + 2 * 3600), "1d 02h");
        assert_eq!(hashrate(0.0), "0.00 H/s");
        assert_eq!(hashrate(1.2e14), "120.00 TH/s");
        assert_eq!(hashrate(f64::NAN), "0.00 H/s");
        assert_eq!(percent(0, 0), "");
        assert_eq!(percent(1, 3), " (25.00%)");
        assert_eq!(percent(u64::MAX, u64::MAX), " (50.00%)");
    }
}
