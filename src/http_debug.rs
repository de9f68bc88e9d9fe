//! `http_debug`: a small local HTTP/1.1 endpoint with `GET /status` (the status
//! document) and `GET /metrics` (Prometheus text).
//!
//! One request per connection (`Connection: close`). A stranger gets little: the request
//! head is bounded (8 KiB) and must arrive within 5 s, and at most 16 clients are served
//! at once; the rest are turned away with 503 without reading their request.

use crate::status::{self, StatusSource};
use async_io::{Async, Timer};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::LocalExecutor;
use std::cell::Cell;
use std::io;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest request head (request line and headers) read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The whole request head must arrive within this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A client must take the response within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;

/// Binds `listen`, logging the address; a bind failure is logged and the agent runs on
/// without the endpoint.
pub fn bind_logged(listen: &str) -> Option<Async<TcpListener>> {
    match bind(listen) {
        Ok(listener) => {
            match listener.get_ref().local_addr() {
                Ok(a) => log::info!("http_debug: serving /status and /metrics on http://{a}"),
                Err(_) => log::info!("http_debug: serving /status and /metrics on {listen}"),
            }
            Some(listener)
        }
        Err(e) => {
            log::error!("http_debug: cannot listen on {listen}: {e}; running without it");
            None
        }
    }
}

pub fn bind(listen: &str) -> io::Result<Async<TcpListener>> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address");
    for addr in listen.to_socket_addrs()? {
        match Async::<TcpListener>::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Serves `listener` until the future is dropped. Clients run as tasks of an executor
/// of its own, polled within this future: it needs nothing from its caller but the
/// documents.
pub async fn serve(listener: Async<TcpListener>, source: Rc<dyn StatusSource>) {
    let clients = LocalExecutor::new();
    clients.run(accept_loop(&clients, listener, source)).await
}

async fn accept_loop(
    clients: &LocalExecutor<'_>,
    listener: Async<TcpListener>,
    source: Rc<dyn StatusSource>,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: miners matter more; back off.
                log::debug!("http_debug: accept failed: {e}");
                Timer::after(Duration::from_millis(200)).await;
                continue;
            }
        };
        if active.get() >= MAX_CLIENTS {
            // Best effort and never blocking: the socket buffer takes this small reply.
            let _ = std::io::Write::write(
                &mut stream.get_ref(),
                [
                    response_head(503, "Service Unavailable", "text/plain", Some(9)).as_bytes(),
                    b"too busy\n",
                ]
                .concat()
                .as_slice(),
            );
            continue;
        }
        active.set(active.get() + 1);
        let slot = ClientSlot(active.clone());
        let source = source.clone();
        clients
            .spawn(async move {
                let _slot = slot;
                if let Err(e) = handle(&*source, stream).await {
                    log::debug!("http_debug: {peer}: {e}");
                }
            })
            .detach();
    }
}

/// Frees a client place when the connection's task ends, however it ends.
struct ClientSlot(Rc<Cell<usize>>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What a request asked for, or why it gets an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Status,
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a complete request head.
pub fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    match path {
        "/status" => Route::Status,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// Where the request head ends (after the blank line), if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
}

enum ReadOutcome {
    Head(usize),
    TooLarge,
    TimedOut,
    Closed,
}

async fn read_head(stream: &mut Async<TcpStream>, buf: &mut [u8]) -> io::Result<ReadOutcome> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut filled = 0;
    loop {
        if let Some(end) = head_end(&buf[..filled]) {
            return Ok(ReadOutcome::Head(end));
        }
        if filled == buf.len() {
            return Ok(ReadOutcome::TooLarge);
        }
        let read = async { stream.read(&mut buf[filled..]).await.map(Some) };
        let timer = async {
            Timer::at(deadline).await;
            Ok(None)
        };
        match smol::future::or(read, timer).await? {
            None => return Ok(ReadOutcome::TimedOut),
            Some(0) => return Ok(ReadOutcome::Closed),
            Some(n) => filled += n,
        }
    }
}

async fn handle(source: &dyn StatusSource, mut stream: Async<TcpStream>) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let head_len = match read_head(&mut stream, &mut buf).await? {
        ReadOutcome::Head(n) => n,
        ReadOutcome::TooLarge => {
            return reply(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "text/plain",
                b"request head over 8 KiB\n",
            )
            .await
        }
        ReadOutcome::TimedOut => {
            return reply(
                &mut stream,
                408,
                "Request Timeout",
                "text/plain",
                b"request not complete within 5 s\n",
            )
            .await
        }
        ReadOutcome::Closed => return Ok(()),
    };
    match route(&buf[..head_len]) {
        Route::Status => send_document(source, &mut stream).await,
        Route::Metrics => {
            let body = status::metrics_text(&source.overview());
            reply(
                &mut stream,
                200,
                "OK",
                status::metrics::CONTENT_TYPE,
                body.as_bytes(),
            )
            .await
        }
        Route::NotFound => {
            reply(
                &mut stream,
                404,
                "Not Found",
                "text/plain",
                b"not found: try /status or /metrics\n",
            )
            .await
        }
        Route::MethodNotAllowed => {
            reply(
                &mut stream,
                405,
                "Method Not Allowed",
                "text/plain",
                b"only GET\n",
            )
            .await
        }
        Route::BadRequest => {
            reply(
                &mut stream,
                400,
                "Bad Request",
                "text/plain",
                b"not an HTTP/1 request\n",
            )
            .await
        }
    }
}

/// The status document, a piece at a time (megabytes at 10,000 miners are never whole
/// in memory, and the executor goes back to the miners between pieces). Its length is
/// not known before the end: the body ends where the connection closes (RFC 9112,
/// section 6.3).
async fn send_document(source: &dyn StatusSource, stream: &mut Async<TcpStream>) -> io::Result<()> {
    let (overview, miners) = source.document();
    let (mut pieces, mut buf) = status::DocumentPieces::new(&overview, miners)?;
    drop(overview);
    let head = response_head(200, "OK", "application/json", None);
    let stream_ref = &mut *stream;
    let write = async move {
        stream_ref.write_all(head.as_bytes()).await?;
        loop {
            stream_ref.write_all(&buf).await?;
            buf.clear();
            // A fast reader would otherwise take the whole document in one turn.
            smol::future::yield_now().await;
            if !pieces.next_piece(&mut buf)? {
                break;
            }
        }
        stream_ref.flush().await
    };
    within_write_timeout(write).await?;
    half_close(stream);
    Ok(())
}

/// `len` is the body's length when it is known before the body is sent.
fn response_head(code: u16, reason: &str, content_type: &str, len: Option<usize>) -> String {
    let allow = if code == 405 { "Allow: GET\r\n" } else { "" };
    let length = match len {
        Some(len) => format!("Content-Length: {len}\r\n"),
        None => String::new(),
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n{length}{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
}

async fn reply(
    stream: &mut Async<TcpStream>,
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = response_head(code, reason, content_type, Some(body.len()));
    let stream_ref = &mut *stream;
    let write = async move {
        stream_ref.write_all(head.as_bytes()).await?;
        stream_ref.write_all(body).await?;
        stream_ref.flush().await
    };
    within_write_timeout(write).await?;
    half_close(stream);
    Ok(())
}

async fn within_write_timeout(
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let timer = async {
        Timer::after(WRITE_TIMEOUT).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not take the response",
        ))
    };
    smol::future::or(write, timer).await
}

/// Unread request bytes would make close() send a reset that can destroy the response
/// in flight; a half-close lets the client read it all first.
fn half_close(stream: &Async<TcpStream>) {
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{MinerEntries, StatusDoc};
    use std::io::{Read, Write};

    /// A source that knows no agent: the endpoint serves whatever it is given.
    struct Fixed(StatusDoc, Cell<u32>);

    impl StatusSource for Fixed {
        fn overview(&self) -> StatusDoc {
            self.document().0
        }
        fn document(&self) -> (StatusDoc, MinerEntries<'_>) {
            self.1.set(self.1.get() + 1);
            let mut overview = self.0.clone();
            let miners = std::mem::take(&mut overview.miners);
            (overview, Box::new(miners.into_iter()))
        }
        fn sample(&self) {}
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_what_the_source_gives_on_loopback() {
        let listener = bind("127.0.0.1:0").unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        // Enough miners for many pieces.
        let doc = crate::status::tests::sample_doc(1234);
        let source = Rc::new(Fixed(doc.clone(), Cell::new(0)));
        let server = serve(listener, source.clone());
        let client =
            smol::unblock(move || (get(addr, "/status"), get(addr, "/metrics"), get(addr, "/x")));
        let (status, metrics, missing) =
            smol::block_on(smol::future::or(async { Some(client.await) }, async {
                server.await;
                None
            }))
            .unwrap();
        let (head, body) = status.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            !head.contains("Content-Length"),
            "streamed: the body ends at the close ({head})"
        );
        assert!(head.ends_with("\r\nConnection: close"), "{head}");
        assert_eq!(body, serde_json::to_string(&doc).unwrap());
        assert!(metrics.contains("btcagent_miners 1234\n"), "{metrics}");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        assert_eq!(source.1.get(), 2, "one snapshot per document served");
    }

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /status HTTP/1.1\r\n\r\n"), Route::Status);
        assert_eq!(
            route(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /status\n\n"), Route::BadRequest);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /statusx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"HEAD /status HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"\x16\x03\x01\x02\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET http://x/ HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET  /status HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(
            route(b"\xff\xfe /status HTTP/1.1\r\n\r\n"),
            Route::BadRequest
        );
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\n"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn responses_close_and_say_their_length() {
        let head = response_head(405, "Method Not Allowed", "text/plain", Some(9));
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(head.contains("\r\nContent-Length: 9\r\n"));
        assert!(head.contains("\r\nAllow: GET\r\n"));
        assert!(head.ends_with("\r\nConnection: close\r\n\r\n"));
    }
}
