//! The http_debug endpoint of a running agent binary under bad clients: garbage, a
//! 100 KB header, a client sending one byte per 100 ms, HEAD and POST, more clients
//! than it serves at once. Each gets an error or a close, and a good request made at
//! the same time is answered promptly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

struct Agent {
    child: Child,
    http: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_agent() -> Agent {
    let dir = std::env::temp_dir().join(format!("btcagent-status-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("agent_conf.json");
    // No pool listens on the pool port: the endpoint must work without one.
    std::fs::write(
        &conf,
        serde_json::json!({
            "agent_listen_ip": "127.0.0.1",
            "agent_listen_port": 0,
            "pools": [["127.0.0.1", free_port(), "farm1"]],
            "status_file": "",
            "http_debug": {"enable": true, "listen": format!("127.0.0.1:{}", free_port())},
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_btcagent"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let http = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("agent did not start the http_debug endpoint");
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.trim().parse().unwrap();
        }
    };
    thread::spawn(move || while rx.recv().is_ok() {});
    Agent { child, http }
}

/// Sends `request` (ignoring write errors: the server may close first) and returns
/// what comes back until the server closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// A good request, answered within a second.
fn assert_served(addr: SocketAddr) {
    let t = Instant::now();
    let resp = exchange(addr, b"GET /status HTTP/1.1\r\nHost: agent\r\n\r\n");
    assert_eq!(status_line(&resp), "HTTP/1.1 200 OK", "{resp}");
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["totals"]["miners"], 0);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn bad_clients_get_errors_and_do_not_disturb_a_good_one() {
    let agent = start_agent();
    let addr = agent.http;

    // A client dribbling one byte per 100 ms is cut off after 5 s with 408.
    let slow = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        for b in b"GET /status HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(&[b'a'; 200])
        {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            let mut chunk = [0u8; 512];
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(_) => {} // nothing yet
            }
            if started.elapsed() > Duration::from_secs(12) {
                break;
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.read_to_end(&mut out);
        (
            String::from_utf8_lossy(&out).into_owned(),
            started.elapsed(),
        )
    });
    thread::sleep(Duration::from_millis(300));

    let mut huge = b"GET /status HTTP/1.1\r\nX-Big: ".to_vec();
    huge.resize(huge.len() + 100 * 1024, b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    let big = exchange(addr, &huge);
    assert!(
        big.is_empty() || status_line(&big) == "HTTP/1.1 431 Request Header Fields Too Large",
        "{big}"
    );
    assert_served(addr);

    let garbage = exchange(addr, b"\x16\x03\x01\x00\xff\xfe garbage\r\n\r\n");
    assert_eq!(
        status_line(&garbage),
        "HTTP/1.1 400 Bad Request",
        "{garbage}"
    );
    let mut cut = TcpStream::connect(addr).unwrap();
    cut.write_all(b"\x00\x01\x02 no end").unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    cut.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = Vec::new();
    cut.read_to_end(&mut out)
        .expect("an unfinished request then EOF: closed at once");
    assert!(out.is_empty(), "{out:?}");
    let head = exchange(addr, b"HEAD /status HTTP/1.1\r\n\r\n");
    assert_eq!(
        status_line(&head),
        "HTTP/1.1 405 Method Not Allowed",
        "{head}"
    );
    assert!(head.contains("\r\nAllow: GET\r\n"));
    let post = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(
        status_line(&post),
        "HTTP/1.1 405 Method Not Allowed",
        "{post}"
    );
    let missing = exchange(addr, b"GET /favicon.ico HTTP/1.1\r\n\r\n");
    assert_eq!(status_line(&missing), "HTTP/1.1 404 Not Found", "{missing}");
    assert_served(addr);

    let (slow_response, slow_took) = slow.join().unwrap();
    assert_eq!(
        status_line(&slow_response),
        "HTTP/1.1 408 Request Timeout",
        "{slow_response}"
    );
    assert!(
        slow_took >= Duration::from_secs(4) && slow_took < Duration::from_secs(9),
        "cut off after {slow_took:?}"
    );

    // Sixteen clients that send nothing fill the endpoint: the next one is turned away
    // at once; when they leave, it serves again.
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(300));
    let busy = exchange(addr, b"GET /status HTTP/1.1\r\n\r\n");
    assert_eq!(
        status_line(&busy),
        "HTTP/1.1 503 Service Unavailable",
        "{busy}"
    );
    drop(idle);
    thread::sleep(Duration::from_millis(300));
    assert_served(addr);

    let mut agent = agent;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
}
