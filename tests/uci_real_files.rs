//! UCI files written by the real `uci` command (openwrt/uci 66127cd, run in a developer
//! session: `uci set`, `add_list`, `add`, `delete`, `reorder`, `set x=`, then `commit`),
//! with what `uci show` read back from them. The translator must read every value
//! exactly as uci does, and keep the pools in uci's order.

use btcagent::uci::uci_to_json;
use serde_json::{json, Value};

const EDITS_UCI: &str = include_str!("uci_real/edits.uci");
const EDITS_SHOW: &str = include_str!("uci_real/edits.show");

/// `uci show` output: `name=value` entries whose value is one or more '...' words
/// (`'\''` inside for a quote, newlines kept), several words for a list.
fn parse_show(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].to_string();
        rest = &rest[eq + 1..];
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut chars = rest.char_indices().peekable();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => {
                    let w = word.get_or_insert_with(String::new);
                    for (_, c) in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                        w.push(c);
                    }
                }
                '\\' => {
                    if let Some((_, c)) = chars.next() {
                        word.get_or_insert_with(String::new).push(c);
                    }
                }
                ' ' => words.extend(word.take()),
                '\n' => {
                    end = i + 1;
                    break;
                }
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word.take());
        out.push((name, words));
        rest = &rest[end.min(rest.len())..];
    }
    out
}

#[test]
fn every_value_uci_show_reads_is_what_the_translator_reads() {
    let json = uci_to_json(EDITS_UCI).unwrap();
    let show = parse_show(EDITS_SHOW);
    let text = |name: &str| -> Vec<String> {
        show.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} in uci show"))
            .1
            .clone()
    };
    assert_eq!(json["proxy"], json!(text("btcagent.main.proxy")));
    for (option, field) in [
        ("fixed_worker_name", "fixed_worker_name"),
        ("ip_worker_name_format", "ip_worker_name_format"),
        ("status_file", "status_file"),
        ("agent_listen_ip", "agent_listen_ip"),
    ] {
        assert_eq!(
            json[field],
            Value::String(text(&format!("btcagent.main.{option}")).concat()),
            "{option}"
        );
    }
    assert_eq!(json["fixed_worker_name"], "two\nlines \"q\" \\ end");
    // Every boolean spelling uci stored, as config_get_bool reads it.
    for (option, field, value) in [
        ("multi_user_mode", "multi_user_mode", true),
        ("use_proxy", "use_proxy", true),
        ("pool_use_tls", "pool_use_tls", false),
        ("always_keep_downconn", "always_keep_downconn", true),
        (
            "disconnect_when_lost_asicboost",
            "disconnect_when_lost_asicboost",
            false,
        ),
        (
            "submit_response_from_server",
            "submit_response_from_server",
            false,
        ),
        (
            "direct_connect_with_proxy",
            "direct_connect_with_proxy",
            true,
        ),
    ] {
        assert_eq!(
            json[field],
            value,
            "{option}={:?}",
            text(&format!("btcagent.main.{option}"))
        );
    }
    assert_eq!(json["advanced"]["tls_skip_certificate_verify"], false);
    // `uci set x=` and `uci delete` left nothing behind.
    assert!(
        !EDITS_SHOW.contains("http_debug_listen") && !EDITS_SHOW.contains("submit_coalesce_ms")
    );
    assert!(json.get("http_debug").is_none());
    assert!(json["advanced"].get("submit_coalesce_ms").is_none());
    // Pools in uci's order after add, delete and reorder; named and anonymous alike.
    let pools: Vec<(String, Vec<String>)> = show
        .iter()
        .filter(|(n, w)| n.split('.').count() == 2 && w == &["pool"])
        .map(|(n, _)| {
            let field = |f: &str| {
                show.iter()
                    .find(|(m, _)| *m == format!("{n}.{f}"))
                    .map(|(_, w)| w.concat())
                    .unwrap_or_default()
            };
            (
                n.clone(),
                vec![field("host"), field("port"), field("subaccount")],
            )
        })
        .collect();
    let want: Vec<Value> = pools
        .iter()
        .map(|(_, p)| json!([p[0], p[1].parse::<u16>().unwrap(), p[2]]))
        .collect();
    assert_eq!(json["pools"], Value::Array(want));
    assert_eq!(json["pools"][1], json!(["us.ss.btc.com", 1800, "farm1"]));
}
