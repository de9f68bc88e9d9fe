//! OpenWrt UCI config (`/etc/config/btcagent`) translated into the agent's JSON config.
