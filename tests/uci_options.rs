//! One set of option names across the OpenWrt package: the UCI defaults, the UCI-to-JSON
//! translator, the LuCI page, and the agent's JSON config.

use btcagent::config::Config;
use btcagent::uci;
use serde_json::Value;
use std::collections::BTreeSet;

const UCI_DEFAULTS: &str = include_str!("../openwrt/files/btcagent.config");
const LUCI_OPTIONS: &str = include_str!("../luci-app-btcagent/uci-options.txt");

/// JSON fields of the original agent that have no UCI spelling on purpose: `agent_type`
/// has one accepted value, and the queue sizes and default version mask are tuning of
/// the original's internals (btcagent reads only `message_queue_size.miner_session`).
const JSON_ONLY: &[&str] = &[
    "agent_type",
    "advanced.message_queue_size.session_manager",
    "advanced.message_queue_size.pool_session_manager",
    "advanced.message_queue_size.pool_session",
    "advanced.message_queue_size.miner_session",
    "advanced.bitcoin_default_version_mask",
];

fn options_in_defaults() -> BTreeSet<String> {
    let mut section = String::new();
    let mut names = BTreeSet::new();
    for line in UCI_DEFAULTS.lines() {
        let words: Vec<&str> = line
            .trim()
            .trim_start_matches('#')
            .split_whitespace()
            .collect();
        match words.as_slice() {
            ["config", kind, ..] => section = kind.to_string(),
            ["option" | "list", name, ..] => {
                names.insert(format!("{section}.{name}"));
            }
            _ => {}
        }
    }
    names
}

fn json_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if child.is_object() {
                json_paths(child, &path, out);
            } else {
                out.insert(path);
            }
        }
    }
}

#[test]
fn shipped_uci_defaults_translate_to_a_valid_config_without_warnings() {
    let json = uci::uci_to_json(UCI_DEFAULTS).unwrap();
    let (config, warnings) = Config::from_json_value(&json).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(config.multi_user_mode);
    assert_eq!(config.agent_listen_port, 3333);
    assert_eq!(config.pools.len(), 3);
    assert_eq!(config.pools[1].port, 443);
    assert_eq!(config.status_file, "/var/run/btcagent/status.json");
}

#[test]
fn luci_page_defaults_and_translator_name_the_same_options() {
    let luci: BTreeSet<String> = LUCI_OPTIONS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let defaults = options_in_defaults();
    let translator: BTreeSet<String> = uci::option_names().into_iter().collect();
    assert_eq!(luci, translator, "LuCI page vs translator");
    assert_eq!(defaults, translator, "UCI defaults file vs translator");
}

#[test]
fn every_json_option_has_a_uci_spelling() {
    // A UCI file setting every option (the proxy list included) yields every JSON field.
    let full = UCI_DEFAULTS.replace("#list proxy", "list proxy");
    let json = uci::uci_to_json(&full).unwrap();
    let mut from_uci = BTreeSet::new();
    json_paths(&json, "", &mut from_uci);
    let template: Value = serde_json::from_str(&Config::default().to_json_pretty()).unwrap();
    let mut all = BTreeSet::new();
    json_paths(&template, "", &mut all);
    let missing: Vec<_> = all
        .iter()
        .filter(|p| !from_uci.contains(*p) && !JSON_ONLY.contains(&p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "JSON options without a UCI spelling: {missing:?}"
    );
    let (config, _) = Config::from_json_value(&json).unwrap();
    assert_eq!(config.proxy.len(), 1);
}
