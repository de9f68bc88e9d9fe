//! The figures of a run as a flat map of named numbers: printed as one table,
//! written as JSON, and combined into medians over repeated runs.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub type Figures = BTreeMap<String, f64>;

pub fn to_json(figures: &Figures) -> Value {
    Value::Object(
        figures
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect::<Map<_, _>>(),
    )
}

pub fn from_json(text: &str) -> Result<Figures, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let object = value.as_object().ok_or("not a JSON object")?;
    Ok(object
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect())
}

/// The median of every figure present in all runs (the mean of the middle two for
/// an even count).
pub fn median(runs: &[Figures]) -> Figures {
    let mut out = Figures::new();
    let Some(first) = runs.first() else {
        return out;
    };
    for key in first.keys() {
        let mut values: Vec<f64> = runs.iter().filter_map(|r| r.get(key).copied()).collect();
        if values.len() != runs.len() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let m = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        out.insert(key.clone(), m);
    }
    out
}

fn get(f: &Figures, key: &str) -> f64 {
    f.get(key).copied().unwrap_or(f64::NAN)
}

/// Rows of (metric, value, target) for the table; a row is left out when its
/// figures are missing.
fn rows(f: &Figures) -> Vec<(String, String, &'static str)> {
    let g = |k: &str| get(f, k);
    let mut rows = vec![
        (
            "agent RSS".to_string(),
            format!(
                "{:.1} MB (peak {:.1} MB, {:.1} MB with no miners)",
                g("agent_rss_kb") / 1024.0,
                g("agent_hwm_kb") / 1024.0,
                g("agent_rss_idle_kb") / 1024.0
            ),
            "< 10 MB at 10k",
        ),
        (
            "agent memory per miner".into(),
            format!("{:.0} bytes", g("agent_bytes_per_miner")),
            "< 1 KB",
        ),
        (
            "agent CPU".into(),
            format!(
                "{:.2} % of a core, {:.1} ms per 1,000 shares",
                g("agent_cpu_pct"),
                g("agent_cpu_ms_per_1000_shares")
            ),
            "< 4 % at 10k",
        ),
        (
            "shares in window".into(),
            format!(
                "{:.0} sent, {:.1}/s",
                g("window_shares_sent"),
                g("shares_per_s")
            ),
            "",
        ),
        (
            "agent->pool payload".into(),
            format!(
                "{:.1} kbps, {:.2} bytes/share (protocol minimum {:.2})",
                g("agent_to_pool_kbps"),
                g("agent_to_pool_bytes_per_share"),
                g("protocol_min_bytes_per_share")
            ),
            "at the minimum",
        ),
        (
            "agent->pool segments".into(),
            format!(
                "{:.1} pool reads/s, {:.1} shares per read",
                g("agent_to_pool_reads_per_s"),
                g("shares_per_pool_read")
            ),
            ">= 10 shares per read",
        ),
        (
            "pool->agent payload".into(),
            format!(
                "{:.1} kbps, {:.1} bytes per share",
                g("pool_to_agent_kbps"),
                g("pool_to_agent_bytes_per_share")
            ),
            "",
        ),
        (
            "agent system calls".into(),
            if f.contains_key("syscalls_per_share") {
                format!(
                    "{:.1} per share; per second: sendto {:.0}, recvfrom {:.0}, epoll_pwait {:.0}, epoll_ctl {:.0}, timerfd_settime {:.0}, read {:.0}, write {:.0}, futex {:.0}",
                    g("syscalls_per_share"),
                    g("syscalls_sendto_per_s"),
                    g("syscalls_recvfrom_per_s"),
                    g("syscalls_epoll_pwait_per_s"),
                    g("syscalls_epoll_ctl_per_s"),
                    g("syscalls_timerfd_settime_per_s"),
                    g("syscalls_read_per_s"),
                    g("syscalls_write_per_s"),
                    g("syscalls_futex_per_s"),
                )
            } else {
                format!(
                    "write(2) {:.0}/s from /proc syscw (socket sends use sendto and are not in it; install perf for counts)",
                    g("agent_write2_calls_per_s")
                )
            },
            "",
        ),
        ("job fan-out, swarm".into(), latency(f, "fanout_swarm"), ""),
        (
            "job fan-out, probe".into(),
            latency(f, "fanout_probe"),
            "p99 < 30 ms",
        ),
        (
            "share response".into(),
            format!(
                "{} ({})",
                latency(f, "response"),
                if g("server_responses") > 0.0 {
                    "pool's verdict"
                } else {
                    "agent answers"
                }
            ),
            "",
        ),
        (
            "shares, whole run".into(),
            format!(
                "{:.0} sent, {:.0} valid, {:.0} invalid, {:.0} stale, {:.0} duplicate, {:.0} lost",
                g("total_shares_sent"),
                g("total_valid"),
                g("total_invalid"),
                g("total_stale"),
                g("total_duplicate"),
                g("total_lost")
            ),
            "0 invalid, 0 lost",
        ),
        (
            "miner disconnects".into(),
            format!(
                "{:.0} in window, {:.0} in whole run, {:.0} connect failures",
                g("window_disconnects"),
                g("total_disconnects"),
                g("connect_failures")
            ),
            "0",
        ),
        (
            "load generators' CPU".into(),
            format!(
                "swarm {:.1} %, probe {:.2} %, pool simulator {:.1} % of a core",
                g("swarm_cpu_pct"),
                g("probe_cpu_pct"),
                g("pool_sim_cpu_pct")
            ),
            "",
        ),
    ];
    if f.contains_key("stratum") {
        stratum_rows(f, &mut rows);
    }
    if f.contains_key("floor_fanout_p50_ms") {
        rows.push((
            "fan-out floor (one writer thread)".into(),
            format!(
                "{}; {:.0} sockets x {:.0} bytes written in {:.1} ms ({:.1} us per write)",
                latency(f, "floor_fanout"),
                g("floor_sockets"),
                g("floor_message_bytes"),
                g("floor_write_all_ms"),
                g("floor_us_per_write")
            ),
            "",
        ));
        rows.push((
            "agent fan-out over the floor".into(),
            format!(
                "p50 {:.2}x, p99 {:.2}x (every miner's socket, as the floor)",
                g("fanout_swarm_p50_over_floor"),
                g("fanout_swarm_p99_over_floor"),
            ),
            "<= 1.2x",
        ));
    }
    if f.contains_key("cut_moved_miners") {
        rows.push((
            "pool connection cut".into(),
            format!(
                "{:.0} miners moved; all re-registered at the pool after {:.0} ms, all had a job after {:.0} ms",
                g("cut_moved_miners"),
                g("cut_reregistered_ms"),
                g("cut_miners_have_job_ms")
            ),
            "no disconnects",
        ));
    }
    if f.contains_key("event_same_pid") {
        rows.push((
            if g("event_kind") == 4.0 {
                "after the window: the binary replaced, SIGHUP: handoff".into()
            } else {
                "after the window: SIGUSR2: handoff".into()
            },
            if g("event_refused") == 1.0 {
                "refused by the agent (see the problems below)".to_string()
            } else {
                format!(
                    "{:.0} miners; {:.0} handed, {:.0} taken over after {:.0} ms; old pool connections closed after {:.0} ms; all registered again on the new ones after {:.0} ms, all had a job after {:.0} ms; {:.0} miner disconnects; {:.0} shares rejected at the miners; same process: {}",
                    g("event_miners"),
                    g("event_handed_miners"),
                    g("event_took_over_miners"),
                    g("event_took_over_ms"),
                    g("event_old_closed_ms"),
                    g("event_reregistered_ms"),
                    g("event_miners_have_job_ms"),
                    g("event_disconnects"),
                    g("event_rejected_at_miners"),
                    if g("event_same_pid") == 1.0 { "yes" } else { "NO" }
                )
            },
            "no disconnects, same pid",
        ));
    } else if f.contains_key("event_miners") {
        rows.push((
            if g("event_kind") == 1.0 {
                "after the window: the pool fails".into()
            } else {
                "after the window: reload to another pool".into()
            },
            format!(
                "{:.0} miners; all registered at the second pool after {:.0} ms, all had a job after {:.0} ms; {:.0} miner disconnects",
                g("event_miners"),
                g("event_at_second_pool_ms"),
                g("event_miners_have_job_ms"),
                g("event_disconnects")
            ),
            "no disconnects",
        ));
    }
    rows
}

/// A plain Stratum pool (`--stratum`): the rows about shares and the upstream are
/// about forwarded shares, the others stay.
fn stratum_rows(f: &Figures, rows: &mut Vec<(String, String, &'static str)>) {
    let g = |k: &str| get(f, k);
    let replace = |rows: &mut Vec<(String, String, &'static str)>,
                   metric: &str,
                   value: String,
                   target: &'static str| {
        if let Some(row) = rows.iter_mut().find(|r| r.0 == metric) {
            row.1 = value;
            row.2 = target;
        }
    };
    replace(
        rows,
        "agent CPU",
        format!(
            "{:.2} % of a core, {:.1} ms per 1,000 shares (each hashed by the agent)",
            g("agent_cpu_pct"),
            g("agent_cpu_ms_per_1000_shares")
        ),
        "",
    );
    replace(
        rows,
        "shares in window",
        format!(
            "{:.0} sent, {:.1}/s checked; forwarded {:.1}/s ({:.2} %, expected {:.2} % at pool difficulty 2^{:.0}, miners' 2^{:.0}), accepted locally {:.1}/s",
            g("window_shares_sent"),
            g("shares_per_s"),
            g("forwarded_per_s"),
            g("forwarded_fraction") * 100.0,
            g("expected_forwarded_fraction") * 100.0,
            g("stratum_pool_difficulty").log2(),
            g("stratum_miner_difficulty").log2(),
            g("local_per_s"),
        ),
        "",
    );
    replace(
        rows,
        "agent->pool payload",
        format!(
            "{:.1} kbps, {:.1} bytes per forwarded share",
            g("agent_to_pool_kbps"),
            g("agent_to_pool_bytes_per_forwarded_share")
        ),
        "",
    );
    replace(
        rows,
        "agent->pool segments",
        format!(
            "{:.1} pool reads/s, {:.2} forwarded shares per read",
            g("agent_to_pool_reads_per_s"),
            g("forwarded_shares_per_pool_read")
        ),
        "",
    );
    replace(
        rows,
        "pool->agent payload",
        format!(
            "{:.1} kbps, {:.1} bytes per forwarded share",
            g("pool_to_agent_kbps"),
            g("pool_to_agent_bytes_per_forwarded_share")
        ),
        "",
    );
    replace(
        rows,
        "shares, whole run",
        format!(
            "{:.0} sent; at the pool {:.0} valid, {:.0} invalid, {:.0} stale, {:.0} duplicate, {:.0} refused; {:.0} accepted locally by the agent; {:.0} lost; {:.0} forwarded by the agent's count and not judged by the pool",
            g("total_shares_sent"),
            g("total_valid"),
            g("total_invalid"),
            g("total_stale"),
            g("total_duplicate"),
            g("total_refused"),
            g("total_local_at_agent"),
            g("total_lost"),
            g("total_forwarded_missing")
        ),
        "0 invalid, 0 lost",
    );
    rows.push((
        "agent log".into(),
        format!(
            "{:.0} WARN, {:.0} ERROR lines",
            g("agent_log_warnings"),
            g("agent_log_errors")
        ),
        "0",
    ));
}

fn latency(f: &Figures, prefix: &str) -> String {
    let g = |k: &str| get(f, &format!("{prefix}_{k}"));
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={:.0})",
        g("p50_ms"),
        g("p99_ms"),
        g("max_ms"),
        g("count")
    )
}

/// One Markdown table, headed by what was run.
pub fn table(f: &Figures, title: &str) -> String {
    let g = |k: &str| get(f, k);
    let mut out = format!(
        "{title}: {:.0} miners (+{:.0} probe), {:.0} pool connections, {:.0} s window, a share every {:.0} s per miner, a job every {:.0} s, {:.0} % rolling versions\n\n",
        g("miners"),
        g("probe_miners"),
        g("pool_connections"),
        g("window_s"),
        g("share_interval_s"),
        g("job_interval_s"),
        g("version_rolling_fraction") * 100.0
    );
    out.push_str("| metric | value | target |\n|---|---|---|\n");
    for (metric, value, target) in rows(f) {
        out.push_str(&format!("| {metric} | {value} | {target} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_runs() {
        let run = |v: f64| Figures::from([("a".to_string(), v)]);
        assert_eq!(median(&[run(3.0), run(1.0), run(2.0)])["a"], 2.0);
        assert_eq!(median(&[run(4.0), run(1.0)])["a"], 2.5);
        assert!(median(&[]).is_empty());
    }

    #[test]
    fn json_round_trip_and_table() {
        let f = Figures::from([
            ("miners".to_string(), 10.0),
            ("agent_rss_kb".into(), 2048.0),
        ]);
        let back = from_json(&to_json(&f).to_string()).unwrap();
        assert_eq!(back, f);
        let t = table(&f, "run");
        assert!(t.contains("10 miners") && t.contains("| agent RSS | 2.0 MB"));
        assert!(!t.contains("floor"), "no floor row without a floor run");
        let mut with_floor = f.clone();
        for (k, v) in [
            ("floor_fanout_p50_ms", 100.0),
            ("floor_fanout_p99_ms", 190.0),
            ("fanout_swarm_p50_over_floor", 1.1),
        ] {
            with_floor.insert(k.into(), v);
        }
        let t = table(&with_floor, "run");
        assert!(t.contains("p50 100.00 ms, p99 190.00 ms"), "{t}");
        assert!(t.contains("p50 1.10x"), "{t}");
        assert!(from_json("[1]").is_err());
    }

    #[test]
    fn handoff_row() {
        let mut f = Figures::from([
            ("miners".to_string(), 10.0),
            ("event_miners".into(), 30.0),
            ("event_kind".into(), 3.0),
            ("event_refused".into(), 0.0),
            ("event_handed_miners".into(), 30.0),
            ("event_took_over_miners".into(), 30.0),
            ("event_reregistered_ms".into(), 850.0),
            ("event_disconnects".into(), 0.0),
            ("event_rejected_at_miners".into(), 7.0),
            ("event_same_pid".into(), 1.0),
        ]);
        let t = table(&f, "run");
        assert!(
            t.contains("| after the window: SIGUSR2: handoff | 30 miners"),
            "{t}"
        );
        assert!(t.contains("again on the new ones after 850 ms"), "{t}");
        assert!(
            t.contains("7 shares rejected at the miners; same process: yes"),
            "{t}"
        );
        assert!(!t.contains("second pool"), "{t}");
        f.insert("event_kind".into(), 4.0);
        f.insert("event_refused".into(), 1.0);
        let t = table(&f, "run");
        assert!(
            t.contains("binary replaced, SIGHUP: handoff | refused"),
            "{t}"
        );
    }

    #[test]
    fn stratum_rows_count_forwarded_shares() {
        let mut f = Figures::from([
            ("miners".to_string(), 10.0),
            ("forwarded_fraction".into(), 0.0625),
            ("total_valid".into(), 5.0),
            ("total_local_at_agent".into(), 75.0),
            ("agent_to_pool_bytes_per_forwarded_share".into(), 125.0),
        ]);
        let t = table(&f, "run");
        assert!(t.contains("bytes/share (protocol minimum"), "{t}");
        f.insert("stratum".into(), 1.0);
        let t = table(&f, "run");
        assert!(t.contains("forwarded NaN/s (6.25 %"), "{t}");
        assert!(t.contains("125.0 bytes per forwarded share"), "{t}");
        assert!(
            t.contains("5 valid") && t.contains("75 accepted locally"),
            "{t}"
        );
        assert!(!t.contains("protocol minimum"), "{t}");
        assert!(t.contains("| agent log |"), "{t}");
    }
}
