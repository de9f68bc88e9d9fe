//! Why reaching the pool failed, per route, in words an operator can act on.

use std::fmt;
use std::io;

/// Why one route (direct or one proxy) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// Host name did not resolve (pool host for direct, proxy host for proxies).
    Resolve(String),
    Refused,
    Timeout,
    /// The proxy refused our user name/password (or wanted some we did not give).
    AuthFailed(String),
    /// TLS peer certificate rejected (unknown issuer, wrong name, expired, ...).
    Certificate(String),
    /// HTTP CONNECT answered with a non-2xx status.
    ProxyHttpStatus(u16, String),
    /// The proxy could not reach the pool (SOCKS5 reply code, e.g. "host unreachable").
    ProxyRefused(String),
    /// The peer spoke something unexpected.
    Protocol(String),
    Closed,
    Io(String),
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Resolve(why) => write!(f, "name resolution failed: {why}"),
            FailureReason::Refused => f.write_str("connection refused"),
            FailureReason::Timeout => f.write_str("timeout"),
            FailureReason::AuthFailed(why) => write!(f, "auth failed: {why}"),
            FailureReason::Certificate(why) => write!(f, "certificate error: {why}"),
            FailureReason::ProxyHttpStatus(code, text) => {
                write!(f, "proxy said HTTP {code} {text}")
            }
            FailureReason::ProxyRefused(why) => write!(f, "proxy could not connect: {why}"),
            FailureReason::Protocol(why) => write!(f, "protocol error: {why}"),
            FailureReason::Closed => f.write_str("connection closed by peer"),
            FailureReason::Io(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for FailureReason {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => FailureReason::Refused,
            io::ErrorKind::TimedOut => FailureReason::Timeout,
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => FailureReason::Closed,
            _ => match crate::upstream::tls::classify(&e) {
                Some(reason) => reason,
                None => FailureReason::Io(e.to_string()),
            },
        }
    }
}

/// One failed attempt: the route in words ("direct", "socks5 10.0.0.2:1080") and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    pub route: String,
    pub reason: FailureReason,
}

/// Every route to one pool failed. Displays as ONE line naming the pool and each
/// route's failure; never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// `host:port` of the pool.
    pub pool: String,
    pub failures: Vec<RouteFailure>,
}

impl ConnectError {
    /// Each route's failure, without the pool: `direct: connection refused; socks5 ...`.
    pub fn failures_text(&self) -> String {
        if self.failures.is_empty() {
            return "no route configured".into();
        }
        let parts: Vec<String> = self
            .failures
            .iter()
            .map(|failure| format!("{}: {}", failure.route, failure.reason))
            .collect();
        parts.join("; ")
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach pool {}: {}",
            self.pool,
            self.failures_text()
        )
    }
}

impl std::error::Error for ConnectError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_all_failures() {
        let e = ConnectError {
            pool: "pool.example:1800".into(),
            failures: vec![
                RouteFailure {
                    route: "socks5 10.0.0.2:1080".into(),
                    reason: FailureReason::AuthFailed("rejected".into()),
                },
                RouteFailure {
                    route: "direct".into(),
                    reason: FailureReason::Refused,
                },
                RouteFailure {
                    route: "http 10.0.0.3:3128".into(),
                    reason: FailureReason::ProxyHttpStatus(
                        407,
                        "Proxy Authentication Required".into(),
                    ),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "cannot reach pool pool.example:1800: socks5 10.0.0.2:1080: auth failed: rejected; \
             direct: connection refused; http 10.0.0.3:3128: proxy said HTTP 407 Proxy Authentication Required"
        );
    }

    #[test]
    fn io_errors_map_to_reasons() {
        let r: FailureReason = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        assert_eq!(r, FailureReason::Refused);
        let r: FailureReason = io::Error::from(io::ErrorKind::UnexpectedEof).into();
        assert_eq!(r, FailureReason::Closed);
    }
}
