//! How a byte stream to the pool is obtained: directly, through proxies, over TLS.
//!
//! [`Connector::connect`] races every configured route (proxies, optionally direct),
//! runs the connection test on each and hands the first to pass to the pool session.
//! Losers are dropped, which closes their sockets.

pub mod conn_test;
pub mod error;
pub mod http_connect;
pub mod proxy_url;
pub mod socks5;
pub mod tls;

#[cfg(test)]
mod script;

pub use error::{ConnectError, FailureReason, RouteFailure};
pub use proxy_url::{redact, ProxyScheme, ProxyUrl};

use proxy_url::host_port;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// What the pool session reads and writes; boxed so direct, proxied and TLS streams look alike.
pub trait PoolIo: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin {}
impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin> PoolIo for T {}
pub type PoolStream = Box<dyn PoolIo>;

pub struct Connected {
    pub stream: PoolStream,
    /// Bytes read past the connection-test reply line: feed them to the session first.
    pub leftover: Vec<u8>,
    /// Human text for logs ("direct", "socks5 10.0.0.2:1080"); never credentials.
    pub route: String,
}

/// Shows the route and the leftover size (the stream itself has no useful Debug).
impl fmt::Debug for Connected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("route", &self.route)
            .field("leftover_len", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Route {
    Direct,
    Proxy(ProxyUrl),
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("direct"),
            Route::Proxy(p) => p.fmt(f),
        }
    }
}

pub struct Connector {
    proxies: Vec<ProxyUrl>,
    direct_with_proxy: bool,
    direct_after_proxy: bool,
    pool_use_tls: bool,
    /// Present when TLS is used at all (pool_use_tls or an https proxy).
    tls: Option<Arc<tls::TlsConfig>>,
    attempt_timeout: Duration,
}

impl Connector {
    pub fn from_config(cfg: &crate::config::Config) -> Result<Connector, String> {
        Self::from_config_with_env(cfg, |name| std::env::var(name).ok())
    }

    /// As [`Connector::from_config`], with the environment (proxy variables,
    /// SSL_CERT_FILE) injected.
    pub fn from_config_with_env(
        cfg: &crate::config::Config,
        getenv: impl Fn(&str) -> Option<String>,
    ) -> Result<Connector, String> {
        let proxies = if cfg.use_proxy {
            proxy_url::resolve_proxy_list(&cfg.proxy, &getenv)?
        } else {
            Vec::new()
        };
        let needs_tls = cfg.pool_use_tls || proxies.iter().any(|p| p.scheme == ProxyScheme::Https);
        let tls = if needs_tls {
            Some(tls::client_config(
                cfg.advanced.tls_skip_certificate_verify,
                getenv("SSL_CERT_FILE"),
            )?)
        } else {
            None
        };
        Ok(Connector {
            proxies,
            direct_with_proxy: cfg.direct_connect_with_proxy,
            direct_after_proxy: cfg.direct_connect_after_proxy,
            pool_use_tls: cfg.pool_use_tls,
            tls,
            attempt_timeout: cfg
                .advanced
                .pool_connection_dial_timeout
                .max(Duration::from_secs(1)),
        })
    }

    /// The routes tried, in words, for the startup log: e.g. "socks5 10.0.0.2:1080, direct after".
    pub fn describe(&self) -> String {
        if self.proxies.is_empty() {
            return "direct".into();
        }
        let mut parts: Vec<String> = self.proxies.iter().map(|p| p.to_string()).collect();
        if self.direct_with_proxy {
            parts.push("direct".into());
        } else if self.direct_after_proxy {
            parts.push("direct after".into());
        }
        parts.join(", ")
    }

    /// Dial `host:port` by the configured routes, run the connection test, return the winner.
    /// Each attempt is bounded by the dial timeout; the caller may bound the whole too.
    pub async fn connect(&self, host: &str, port: u16) -> Result<Connected, ConnectError> {
        self.connect_with(host, port, conn_test::Probe::CAPABILITIES)
            .await
    }

    /// [`Connector::connect`] with another connection test (a Stratum pool's).
    pub async fn connect_with(
        &self,
        host: &str,
        port: u16,
        probe: conn_test::Probe<'_>,
    ) -> Result<Connected, ConnectError> {
        let pool = host_port(host, port);
        let mut failures = Vec::new();
        let mut first: Vec<Route> = self.proxies.iter().cloned().map(Route::Proxy).collect();
        if first.is_empty() || self.direct_with_proxy {
            first.push(Route::Direct);
        }
        let mut won = self.race(&first, host, port, probe, &mut failures).await;
        if won.is_none()
            && !self.proxies.is_empty()
            && !self.direct_with_proxy
            && self.direct_after_proxy
        {
            log::debug!("pool {pool}: every proxy failed, trying direct");
            won = self
                .race(&[Route::Direct], host, port, probe, &mut failures)
                .await;
        }
        let Some(won) = won else {
            // The caller logs this once per failure streak, not per dial.
            return Err(ConnectError { pool, failures });
        };
        if !failures.is_empty() {
            // A route that keeps failing while another works: worth knowing, and this
            // is once per pool connection, which lives for hours.
            let failed = ConnectError { pool, failures };
            log::info!(
                "pool {}: connected via {}; {}",
                failed.pool,
                won.route,
                failed.failures_text()
            );
        }
        Ok(won)
    }

    /// Runs all `routes` at once; the first to pass the connection test wins and the
    /// rest are dropped. Failures are appended in route order (and logged at debug
    /// level: the caller reports them, once per streak).
    async fn race(
        &self,
        routes: &[Route],
        host: &str,
        port: u16,
        probe: conn_test::Probe<'_>,
        failures: &mut Vec<RouteFailure>,
    ) -> Option<Connected> {
        type Attempt<'a> =
            Pin<Box<dyn Future<Output = (usize, Result<Connected, FailureReason>)> + 'a>>;
        let mut running: Vec<Attempt<'_>> = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let attempt = async move {
                    let timeout = async {
                        smol::Timer::after(self.attempt_timeout).await;
                        Err(FailureReason::Timeout)
                    };
                    (
                        i,
                        smol::future::or(self.attempt(route, host, port, probe), timeout).await,
                    )
                };
                Box::pin(attempt) as Attempt<'_>
            })
            .collect();
        let mut failed: Vec<(usize, FailureReason)> = Vec::new();
        let winner = std::future::poll_fn(|cx| {
            let mut i = 0;
            while i < running.len() {
                match running[i].as_mut().poll(cx) {
                    Poll::Pending => i += 1,
                    Poll::Ready((_, Ok(connected))) => return Poll::Ready(Some(connected)),
                    Poll::Ready((index, Err(reason))) => {
                        log::debug!(
                            "pool {}: {}: {reason}",
                            host_port(host, port),
                            routes[index]
                        );
                        failed.push((index, reason));
                        drop(running.swap_remove(i));
                    }
                }
            }
            if running.is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await;
        drop(running);
        failed.sort_by_key(|(index, _)| *index);
        failures.extend(failed.into_iter().map(|(index, reason)| RouteFailure {
            route: routes[index].to_string(),
            reason,
        }));
        winner
    }

    /// One route: TCP, proxy handshake (inside TLS for https proxies), TLS to the
    /// pool if configured, connection test.
    async fn attempt(
        &self,
        route: &Route,
        host: &str,
        port: u16,
        probe: conn_test::Probe<'_>,
    ) -> Result<Connected, FailureReason> {
        let mut stream: PoolStream = match route {
            Route::Direct => Box::new(dial(host, port).await?),
            Route::Proxy(proxy) => {
                let mut stream: PoolStream = Box::new(dial(&proxy.host, proxy.port).await?);
                if proxy.scheme == ProxyScheme::Https {
                    stream = tls::connect(self.tls_config()?, &proxy.host, stream)
                        .await
                        .map_err(|reason| match reason {
                            FailureReason::Certificate(why) => {
                                FailureReason::Certificate(format!("{why} (proxy's certificate)"))
                            }
                            other => other,
                        })?;
                }
                match proxy.scheme {
                    ProxyScheme::Socks5 => {
                        socks5::handshake(&mut stream, host, port, proxy.auth.as_ref()).await?
                    }
                    ProxyScheme::Http | ProxyScheme::Https => {
                        http_connect::handshake(&mut stream, host, port, proxy.auth.as_ref())
                            .await?
                    }
                }
                stream
            }
        };
        if self.pool_use_tls {
            stream = tls::connect(self.tls_config()?, host, stream).await?;
        }
        let leftover = conn_test::run_probe(&mut stream, conn_test::PATIENCE, probe).await?;
        Ok(Connected {
            stream,
            leftover,
            route: route.to_string(),
        })
    }

    fn tls_config(&self) -> Result<&Arc<tls::TlsConfig>, FailureReason> {
        self.tls
            .as_ref()
            .ok_or_else(|| FailureReason::Protocol("TLS not configured".into()))
    }
}

/// TCP to `host:port`, trying each resolved address in turn.
async fn dial(host: &str, port: u16) -> Result<async_net::TcpStream, FailureReason> {
    let addrs = async_net::resolve((host, port))
        .await
        .map_err(|e| FailureReason::Resolve(format!("{host}: {e}")))?;
    let mut last = FailureReason::Resolve(format!("{host}: no address"));
    for addr in addrs {
        match async_net::TcpStream::connect(addr).await {
            Ok(stream) => {
                // Shares are small and latency-sensitive; the session batches writes itself.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn connector(proxy: &[&str], edit: impl FnOnce(&mut Config)) -> Result<Connector, String> {
        let mut cfg = Config {
            proxy: proxy.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        };
        edit(&mut cfg);
        Connector::from_config_with_env(&cfg, |_| None)
    }

    #[test]
    fn describes_routes_without_credentials() {
        let c = connector(
            &["socks5://u:hunter2@10.0.0.2:1080", "http://p:3128"],
            |_| {},
        )
        .unwrap();
        assert_eq!(
            c.describe(),
            "socks5 10.0.0.2:1080, http p:3128, direct after"
        );
        let c = connector(&["socks5://h:1"], |c| c.use_proxy = false).unwrap();
        assert_eq!(c.describe(), "direct");
        let c = connector(&["socks5://h:1"], |c| c.direct_connect_with_proxy = true).unwrap();
        assert_eq!(c.describe(), "socks5 h:1, direct");
    }

    #[test]
    fn bad_proxy_is_a_config_error() {
        let err = connector(&["socks4://u:hunter2@h:1"], |_| {})
            .err()
            .unwrap();
        assert!(
            err.contains("unsupported scheme") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_settings_refused_without_the_feature() {
        assert!(connector(&[], |_| {}).is_ok());
        let err = connector(&[], |c| c.pool_use_tls = true).err().unwrap();
        assert!(err.contains("built without TLS"), "{err}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_only_built_when_needed() {
        assert!(connector(&[], |_| {}).unwrap().tls.is_none());
        assert!(connector(&["https://h:1"], |_| {}).unwrap().tls.is_some());
        assert!(connector(&[], |c| c.pool_use_tls = true)
            .unwrap()
            .tls
            .is_some());
    }

    #[test]
    fn direct_refused_is_reported() {
        // A port nobody listens on: bind then drop to get one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = connector(&[], |_| {}).unwrap();
        let err = smol::block_on(c.connect("127.0.0.1", port)).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!("cannot reach pool 127.0.0.1:{port}: direct: connection refused")
        );
    }
}
