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
    // A UCI file setting every option (the proxy list and the Stratum options, commented
    // out in the shipped file, included) yields every JSON field.
    let full = UCI_DEFAULTS
        .replace("#list proxy", "list proxy")
        .replace("#option stratum_", "option stratum_");
    assert_eq!(full.matches("\toption stratum_").count(), 3);
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
    let (a, d) = (&config.advanced, Config::default().advanced);
    assert_eq!(
        (
            a.stratum_shares_per_minute,
            a.stratum_start_difficulty,
            a.stratum_min_difficulty
        ),
        (
            d.stratum_shares_per_minute,
            d.stratum_start_difficulty,
            d.stratum_min_difficulty
        ),
        "the shipped file's commented-out Stratum options state the agent's defaults"
    );
}

/// tests/luci checks that the settings page shows these values for absent options; here
/// each one must mean exactly what the absent option means to the agent.
#[test]
fn agent_defaults_fixture_states_the_agents_defaults() {
    let fixture: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("../tests/luci/fixtures/agent-defaults.json")).unwrap();
    let pool = "config pool\n\toption host 'h'\n\toption port '1'\n\toption subaccount 's'\n";
    let absent = uci::uci_to_json(pool).unwrap();
    let (absent, _) = Config::from_json_value(&absent).unwrap();
    let init = include_str!("../openwrt/files/btcagent.init");
    let init_script_defaults = [
        ("btcagent.enabled", "config_get_bool enabled main enabled 0"),
        (
            "btcagent.log_verbosity",
            "config_get verbosity main log_verbosity 0",
        ),
        (
            "btcagent.log_target",
            "config_get target main log_target syslog",
        ),
    ];
    for (name, value) in fixture.iter().filter(|(k, _)| !k.starts_with('_')) {
        let value = value.as_str().unwrap();
        if let Some((_, line)) = init_script_defaults.iter().find(|(n, _)| n == name) {
            assert!(
                init.contains(line),
                "{name}: the init script reads `{line}`"
            );
            assert!(line.ends_with(&format!(" {value}")), "{name}");
            continue;
        }
        let option = name.strip_prefix("btcagent.").unwrap();
        let text = format!("config btcagent 'main'\n\toption {option} '{value}'\n{pool}");
        let json = uci::uci_to_json(&text).unwrap();
        let (set, _) = Config::from_json_value(&json).unwrap();
        assert_eq!(
            format!("{set:?}"),
            format!("{absent:?}"),
            "{name}='{value}'"
        );
    }
    let expected: BTreeSet<String> = uci::option_names()
        .into_iter()
        .filter(|n| n.starts_with("btcagent.") && n != "btcagent.proxy")
        .collect();
    let listed: BTreeSet<String> = fixture
        .keys()
        .filter(|k| !k.starts_with('_'))
        .cloned()
        .collect();
    assert_eq!(listed, expected);
}
