//! OpenWrt UCI config (`/etc/config/btcagent`) translated into the agent's JSON config.

/// Placeholder until the UCI translator lands.
pub fn uci_to_json(_text: &str) -> Result<serde_json::Value, String> {
    Err("UCI configs are not supported by this build".into())
}
