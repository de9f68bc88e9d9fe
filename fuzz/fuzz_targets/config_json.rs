//! agent_conf.json: what loads prints (--print-config) as a file that loads the same.
#![no_main]

use btcagent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok((config, _warnings)) = Config::from_json_str(text) else {
        return;
    };
    let printed = config.to_json_pretty();
    let (again, warnings) = Config::from_json_str(&printed).expect("printed config loads");
    assert!(warnings.is_empty(), "{warnings:?}\n{printed}");
    assert_eq!(again, config, "{printed}");
});
