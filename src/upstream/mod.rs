//! How a byte stream to the pool is obtained: directly, through proxies, over TLS.
//!
//! Pool sessions see only [`Connector::connect`] and a boxed stream, so routes can be
//! added here without touching them.

use crate::config::Config;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::fmt;

/// What the pool session reads and writes; boxed so direct, proxied and TLS streams look alike.
pub trait PoolIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> PoolIo for T {}
pub type PoolStream = Box<dyn PoolIo>;

/// A stream that passed the connection test.
pub struct Connected {
    pub stream: PoolStream,
    /// Bytes read past the connection-test reply; the session reads them first.
    pub leftover: Vec<u8>,
    /// For logs: "direct", "socks5 10.0.0.2:1080"; never credentials.
    pub route: String,
}

#[derive(Debug)]
pub struct ConnectError(pub String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

pub struct Connector {}

/// The first line the original agent sends on a new connection: any reply proves the
/// route reaches a pool that speaks its protocol.
pub const CONNECTION_TEST: &[u8] =
    b"{\"id\":\"conn_test\",\"method\":\"agent.get_capabilities\",\"params\":[[\"verrol\"]]}\n";

/// A pool reply line longer than this is not a connection-test answer.
const MAX_TEST_REPLY: usize = 64 * 1024;

impl Connector {
    pub fn from_config(_cfg: &Config) -> Result<Connector, String> {
        Ok(Connector {})
    }

    pub async fn connect(&self, host: &str, port: u16) -> Result<Connected, ConnectError> {
        let fail = |why: String| ConnectError(format!("pool {host}:{port} via direct: {why}"));
        let tcp = async_net::TcpStream::connect((host, port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: PoolStream = Box::new(tcp);
        let leftover = connection_test(&mut stream).await.map_err(fail)?;
        Ok(Connected {
            stream,
            leftover,
            route: "direct".into(),
        })
    }
}

/// Sends the connection test and waits for one line back.
pub async fn connection_test(stream: &mut PoolStream) -> Result<Vec<u8>, String> {
    stream
        .write_all(CONNECTION_TEST)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("closed before answering the connection test".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            return Ok(buf.split_off(end + 1));
        }
        if buf.len() > MAX_TEST_REPLY {
            return Err("answered the connection test with an over-long line".into());
        }
    }
}
