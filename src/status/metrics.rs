//! The status document as Prometheus text exposition format 0.0.4.

use super::StatusDoc;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The content type of [`metrics_text`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `doc` as metrics. Per-pool series are summed over the connections to the
/// same pool and sub-account, so label sets stay unique and few.
pub fn metrics_text(doc: &StatusDoc) -> String {
    let mut out = String::with_capacity(4096);
    let t = &doc.totals;
    family(&mut out, "btcagent_up", "gauge", "1 while the agent runs.");
    sample(&mut out, "btcagent_up", &[], 1.0);
    family(
        &mut out,
        "btcagent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    sample(
        &mut out,
        "btcagent_uptime_seconds",
        &[],
        doc.uptime_seconds as f64,
    );
    family(
        &mut out,
        "btcagent_miners",
        "gauge",
        "Miners logged in to the agent.",
    );
    sample(&mut out, "btcagent_miners", &[], t.miners as f64);
    family(
        &mut out,
        "btcagent_pool_connections",
        "gauge",
        "Pool connections the agent keeps, by state (down includes being dialled).",
    );
    let down = t.pool_connections.saturating_sub(t.pools_up);
    sample(
        &mut out,
        "btcagent_pool_connections",
        &[("state", "up")],
        t.pools_up as f64,
    );
    sample(
        &mut out,
        "btcagent_pool_connections",
        &[("state", "down")],
        down as f64,
    );
    family(
        &mut out,
        "btcagent_shares_total",
        "counter",
        "Shares answered to the miners since the agent started.",
    );
    sample(
        &mut out,
        "btcagent_shares_total",
        &[("result", "accepted")],
        t.shares_accepted as f64,
    );
    sample(
        &mut out,
        "btcagent_shares_total",
        &[("result", "rejected")],
        t.shares_rejected as f64,
    );
    family(
        &mut out,
        "btcagent_shares_last_5min",
        "gauge",
        "Shares answered to the miners in the last five minutes.",
    );
    sample(
        &mut out,
        "btcagent_shares_last_5min",
        &[("result", "accepted")],
        t.accepted_last_5min as f64,
    );
    sample(
        &mut out,
        "btcagent_shares_last_5min",
        &[("result", "rejected")],
        t.rejected_last_5min as f64,
    );
    family(
        &mut out,
        "btcagent_hashrate",
        "gauge",
        "Hashes per second estimated from the last five minutes of accepted shares.",
    );
    sample(&mut out, "btcagent_hashrate", &[], t.hashrate);

    family(
        &mut out,
        "btcagent_pool_events_total",
        "counter",
        "Pool connection events since the agent started: up, down (a connection that was up was lost), dial_failed.",
    );
    let c = &doc.pool_event_counts;
    for (event, n) in [
        ("up", c.up),
        ("down", c.down),
        ("dial_failed", c.dial_failed),
    ] {
        sample(
            &mut out,
            "btcagent_pool_events_total",
            &[("event", event)],
            n as f64,
        );
    }
    family(
        &mut out,
        "btcagent_offline_workers",
        "gauge",
        "Workers seen in the last 24 hours that are not connected now (at most 1000).",
    );
    sample(
        &mut out,
        "btcagent_offline_workers",
        &[],
        doc.offline_workers.len() as f64,
    );

    // (pool, sub-account) -> (accepted, rejected, miners, jobs, local)
    let mut per_pool: BTreeMap<(&str, &str), [u64; 5]> = BTreeMap::new();
    // pool -> (bytes up, bytes down)
    let mut bytes: BTreeMap<&str, [u64; 2]> = BTreeMap::new();
    for p in &doc.pools {
        let e = per_pool.entry((&p.pool, &p.subaccount)).or_insert([0; 5]);
        e[0] += p.shares_accepted;
        e[1] += p.shares_rejected;
        e[2] += p.miners;
        e[3] += p.jobs;
        e[4] += p.shares_local;
        let b = bytes.entry(&p.pool).or_insert([0; 2]);
        b[0] += p.bytes_up;
        b[1] += p.bytes_down;
    }
    family(
        &mut out,
        "btcagent_pool_shares_total",
        "counter",
        "Pool verdicts on shares, per pool and sub-account (connections that are up).",
    );
    for ((pool, sub), v) in &per_pool {
        for (result, n) in [("accepted", v[0]), ("rejected", v[1])] {
            sample(
                &mut out,
                "btcagent_pool_shares_total",
                &[("pool", pool), ("subaccount", sub), ("result", result)],
                n as f64,
            );
        }
    }
    family(
        &mut out,
        "btcagent_pool_shares_local_total",
        "counter",
        "Plain Stratum pools: shares that met the miner's difficulty but not the pool's, accepted by the agent and not sent (0 on agent-protocol pools).",
    );
    for ((pool, sub), v) in &per_pool {
        sample(
            &mut out,
            "btcagent_pool_shares_local_total",
            &[("pool", pool), ("subaccount", sub)],
            v[4] as f64,
        );
    }
    family(
        &mut out,
        "btcagent_pool_bytes_total",
        "counter",
        "Bytes sent to (up) and received from (down) each pool.",
    );
    for (pool, b) in &bytes {
        for (direction, n) in [("up", b[0]), ("down", b[1])] {
            sample(
                &mut out,
                "btcagent_pool_bytes_total",
                &[("pool", pool), ("direction", direction)],
                n as f64,
            );
        }
    }
    family(
        &mut out,
        "btcagent_pool_miners",
        "gauge",
        "Miners on each pool and sub-account.",
    );
    for ((pool, sub), v) in &per_pool {
        sample(
            &mut out,
            "btcagent_pool_miners",
            &[("pool", pool), ("subaccount", sub)],
            v[2] as f64,
        );
    }
    family(
        &mut out,
        "btcagent_pool_jobs_total",
        "counter",
        "Jobs received from each pool and sub-account.",
    );
    for ((pool, sub), v) in &per_pool {
        sample(
            &mut out,
            "btcagent_pool_jobs_total",
            &[("pool", pool), ("subaccount", sub)],
            v[3] as f64,
        );
    }
    family(
        &mut out,
        "btcagent_subaccount_hashrate",
        "gauge",
        "Hashes per second of each sub-account's miners, over their time connected.",
    );
    for s in &doc.subaccounts {
        sample(
            &mut out,
            "btcagent_subaccount_hashrate",
            &[("subaccount", &s.name)],
            s.hashrate,
        );
    }
    family(
        &mut out,
        "btcagent_subaccount_miners",
        "gauge",
        "Miners of each sub-account.",
    );
    for s in &doc.subaccounts {
        sample(
            &mut out,
            "btcagent_subaccount_miners",
            &[("subaccount", &s.name)],
            s.miners as f64,
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

/// Label values escape backslash, double quote and line feed; nothing else.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v:e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::sample_doc;

    fn escaped(v: &str) -> String {
        let mut s = String::new();
        escape_label_value(&mut s, v);
        s
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escaped("farm1"), "farm1");
        assert_eq!(escaped(r#"a"b"#), r#"a\"b"#);
        assert_eq!(escaped(r"a\b"), r"a\\b");
        assert_eq!(escaped("a\nb"), r"a\nb");
        assert_eq!(escaped("矿工{x=1}"), "矿工{x=1}");
    }

    #[test]
    fn values_are_prometheus_numbers() {
        let v = |x: f64| {
            let mut s = String::new();
            push_value(&mut s, x);
            s
        };
        assert_eq!(v(0.0), "0");
        assert_eq!(v(12.0), "12");
        assert_eq!(v(1.2e14), "120000000000000");
        assert_eq!(v(1.5), "1.5e0");
        assert_eq!(v(1e20), "1e20");
        assert_eq!(v(f64::NAN), "NaN");
        assert_eq!(v(f64::INFINITY), "+Inf");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = metrics_text(&sample_doc(2));
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        assert!(text.contains("# HELP btcagent_up "));
        assert!(text.contains("btcagent_up 1\n"));
        assert!(text.contains("btcagent_pool_connections{state=\"up\"} 2\n"));
        assert!(text.contains("btcagent_shares_total{result=\"accepted\"} 120\n"));
        assert!(text.contains(
            "btcagent_pool_shares_total{pool=\"us.ss.btc.com:1800\",subaccount=\"farm1\",result=\"rejected\"} 1\n"
        ));
        // The sample document's second sub-account is `farm"2\`.
        assert!(text.contains(
            "btcagent_pool_miners{pool=\"eu.ss.btc.com:1800\",subaccount=\"farm\\\"2\\\\\"} 1\n"
        ));
        assert!(text.contains(
            "btcagent_pool_bytes_total{pool=\"us.ss.btc.com:1800\",direction=\"down\"} 5678\n"
        ));
        assert!(text.contains(
            "btcagent_pool_shares_local_total{pool=\"eu.ss.btc.com:1800\",subaccount=\"farm\\\"2\\\\\"} 7\n"
        ));
        assert!(
            text.contains("btcagent_subaccount_hashrate{subaccount=\"farm1\"} 80000000000000\n")
        );
    }

    #[test]
    fn pool_events_and_offline_workers_are_series() {
        let doc = crate::status::tests::with_history(sample_doc(0), 3);
        let text = metrics_text(&doc);
        assert!(text.contains("# TYPE btcagent_pool_events_total counter\n"));
        assert!(
            text.contains("btcagent_pool_events_total{event=\"up\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("btcagent_pool_events_total{event=\"dial_failed\"} 1\n"));
        assert!(text.contains("btcagent_offline_workers 3\n"));
    }

    #[test]
    fn connections_to_the_same_pool_are_summed() {
        let mut doc = sample_doc(0);
        let mut second = doc.pools[0].clone();
        second.id = 9;
        second.shares_accepted = 1;
        doc.pools.push(second);
        let text = metrics_text(&doc);
        assert!(text.contains(
            "btcagent_pool_shares_total{pool=\"us.ss.btc.com:1800\",subaccount=\"farm1\",result=\"accepted\"} 80\n"
        ));
        assert_eq!(
            text.matches("btcagent_pool_miners{pool=\"us.ss.btc.com:1800\"")
                .count(),
            1
        );
    }
}
