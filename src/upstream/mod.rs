//! How a byte stream to the pool is obtained: directly, through proxies, over TLS.
