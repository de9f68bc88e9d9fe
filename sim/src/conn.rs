//! [`MinerConn`]: one scripted Stratum client for precise protocol tests. It speaks
//! as a miner to the agent (lines only) or, with [`MinerConn::connect_as_agent`], as
//! an agent to the pool simulator (lines and ex-messages).

use crate::exmsg::{self, ExMessage};
use crate::framing::{Frame, FrameReader};
use serde_json::{json, Value};
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use smol::Timer;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct MinerConn {
    stream: TcpStream,
    reader: FrameReader,
    next_id: u64,
    /// Frames read while looking for something else, handed out first.
    pending: VecDeque<Frame>,
    /// Sent in `mining.subscribe` by [`MinerConn::subscribe_and_authorize`].
    user_agent: &'static str,
}

/// The user agent of a scripted agent connection: sserver treats a connection as an
/// agent only when it starts with `btccom-agent/` (StratumSession.cc `setClientAgent`).
pub const AGENT_USER_AGENT: &str = "btccom-agent/0.1-sim";

/// What `mining.subscribe` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub extranonce1: String,
    pub extranonce2_size: u64,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Runs `future` with a deadline; `TimedOut` when it passes.
pub async fn with_timeout<T>(
    timeout: Duration,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    smol::future::or(future, async {
        Timer::after(timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    })
    .await
}

impl MinerConn {
    /// Connects as a miner: incoming bytes are JSON lines only.
    pub async fn connect(addr: SocketAddr) -> io::Result<MinerConn> {
        Self::open(addr, false).await
    }

    /// Connects as an agent would to a pool: ex-messages may arrive too.
    pub async fn connect_as_agent(addr: SocketAddr) -> io::Result<MinerConn> {
        Self::open(addr, true).await
    }

    async fn open(addr: SocketAddr, accept_ex: bool) -> io::Result<MinerConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(MinerConn {
            stream,
            reader: FrameReader::new(64 * 1024, accept_ex),
            next_id: 1,
            pending: VecDeque::new(),
            user_agent: if accept_ex {
                AGENT_USER_AGENT
            } else {
                "btcagent-sim/0.1"
            },
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Sends one line; the newline is added when missing.
    pub async fn send_line(&mut self, line: &str) -> io::Result<()> {
        let mut bytes = line.as_bytes().to_vec();
        if !line.ends_with('\n') {
            bytes.push(b'\n');
        }
        self.stream.write_all(&bytes).await
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send_ex(&mut self, message: &ExMessage) -> io::Result<()> {
        self.send_bytes(&exmsg::encode(message)).await
    }

    /// Sends a request with the next numeric id; returns the id.
    pub async fn request(&mut self, method: &str, params: Value) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string();
        self.send_line(&line).await?;
        Ok(id)
    }

    /// The next frame; `UnexpectedEof` when the peer closed, `TimedOut` after `timeout`.
    pub async fn read_frame(&mut self, timeout: Duration) -> io::Result<Frame> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        let reader = &mut self.reader;
        let stream = &mut self.stream;
        with_timeout(timeout, async {
            reader
                .read_frame(stream)
                .await?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
        })
        .await
    }

    /// The next line (an ex-message here is an error).
    pub async fn read_line(&mut self, timeout: Duration) -> io::Result<String> {
        match self.read_frame(timeout).await? {
            Frame::Line(line) => Ok(line),
            Frame::Ex(bytes) => Err(invalid(format!(
                "expected a line, got ex-message {bytes:02x?}"
            ))),
        }
    }

    pub async fn read_json(&mut self, timeout: Duration) -> io::Result<Value> {
        let line = self.read_line(timeout).await?;
        serde_json::from_str(&line).map_err(|e| invalid(format!("bad JSON {line:?}: {e}")))
    }

    /// The next ex-message, keeping lines read meanwhile for later reads.
    pub async fn read_ex(&mut self, timeout: Duration) -> io::Result<ExMessage> {
        let deadline = Instant::now() + timeout;
        let mut skipped = VecDeque::new();
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                Ok(Frame::Ex(bytes)) => {
                    break exmsg::decode(&bytes).map_err(|e| invalid(e.to_string()))
                }
                Ok(line) => skipped.push_back(line),
                Err(e) => break Err(e),
            }
        };
        skipped.append(&mut self.pending);
        self.pending = skipped;
        result
    }

    /// Reads until a JSON message matches, keeping the others for later reads.
    pub async fn read_matching(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&Value) -> bool,
    ) -> io::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut skipped = VecDeque::new();
        let mut from_pending = std::mem::take(&mut self.pending);
        let result = loop {
            let frame = match from_pending.pop_front() {
                Some(frame) => Ok(frame),
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.read_frame(left).await
                }
            };
            match frame {
                Ok(Frame::Line(line)) => match serde_json::from_str::<Value>(&line) {
                    Ok(value) if wanted(&value) => break Ok(value),
                    _ => skipped.push_back(Frame::Line(line)),
                },
                Ok(ex) => skipped.push_back(ex),
                Err(e) => break Err(e),
            }
        };
        skipped.append(&mut from_pending);
        skipped.append(&mut self.pending);
        self.pending = skipped;
        result
    }

    /// The response to request `id`.
    pub async fn read_response(&mut self, id: u64, timeout: Duration) -> io::Result<Value> {
        self.read_matching(timeout, |v| {
            v.get("id") == Some(&json!(id)) && v.get("method").is_none()
        })
        .await
    }

    /// The next notification or request with this method.
    pub async fn read_method(&mut self, method: &str, timeout: Duration) -> io::Result<Value> {
        self.read_matching(timeout, |v| {
            v.get("method").and_then(Value::as_str) == Some(method)
        })
        .await
    }

    /// `mining.subscribe` then `mining.authorize [user, password]`; fails on an error
    /// answer. Notifications that arrive meanwhile stay queued.
    pub async fn subscribe_and_authorize(
        &mut self,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> io::Result<Subscription> {
        let id = self
            .request("mining.subscribe", json!([self.user_agent]))
            .await?;
        let result = self.read_response(id, timeout).await?;
        let subscription = (|| {
            let r = result.get("result")?;
            Some(Subscription {
                extranonce1: r.get(1)?.as_str()?.to_string(),
                extranonce2_size: r.get(2)?.as_u64()?,
            })
        })()
        .ok_or_else(|| invalid(format!("bad subscribe answer {result}")))?;
        let id = self
            .request("mining.authorize", json!([user, password]))
            .await?;
        let answer = self.read_response(id, timeout).await?;
        if answer.get("result") != Some(&json!(true)) {
            return Err(invalid(format!("authorize refused: {answer}")));
        }
        Ok(subscription)
    }

    /// True when the peer closes the connection within `timeout` (frames read meanwhile
    /// are discarded).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.pending.clear();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                Ok(_) => continue,
                Err(e) => return e.kind() != io::ErrorKind::TimedOut,
            }
        }
    }
}
