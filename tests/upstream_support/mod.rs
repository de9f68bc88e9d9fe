//! Real servers for the upstream tests: a loopback line server standing in for the
//! pool, and danted / tinyproxy / stunnel4 processes started on free ports with their
//! config written to a per-test temp dir. Everything is killed and removed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Sent by the fake pool right after its conn_test answer, in the same write, so
/// tests can check that bytes past the reply line reach the session.
pub const POOL_GREETING: &str =
    "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[8]}\n";

/// Per-test scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "btcagent-upstream-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True when `bin` can be run; otherwise says why the test is skipped.
pub fn have(bin: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        eprintln!("SKIP: {bin} not installed (run scripts/test-deps-upstream.sh)");
    }
    found
}

/// A loopback port where connections are refused, for as long as it lives: bound, so
/// no other test (nor an outgoing connection) can take it, but not listening. A port
/// that was merely free a moment ago can be taken by a server of a test running beside.
pub struct DeadPort {
    _socket: rustix::fd::OwnedFd,
    pub port: u16,
}

pub fn dead_port() -> DeadPort {
    use rustix::net::{bind, getsockname, socket, AddressFamily, SocketType};
    let socket = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(
        &socket,
        &std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0),
    )
    .unwrap();
    let addr = std::net::SocketAddrV4::try_from(getsockname(&socket).unwrap()).unwrap();
    DeadPort {
        _socket: socket,
        port: addr.port(),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback line server playing the pool: answers the connection test, then
/// echoes each line as `echo:<line>`.
pub struct FakePool {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
}

impl FakePool {
    pub fn start() -> FakePool {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve_pool_connection(conn));
            }
        });
        FakePool { port, connections }
    }
}

fn serve_pool_connection(conn: TcpStream) {
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let mut first = true;
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        let reply = if first && line.contains("\"conn_test\"") {
            format!("{{\"id\":\"conn_test\",\"result\":{{\"capabilities\":[\"verrol\"]}},\"error\":null}}\n{POOL_GREETING}")
        } else {
            format!("echo:{line}")
        };
        first = false;
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// A server process, killed on drop; its output goes to `<dir>/<name>.log`.
pub struct Server {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` and waits until `port` accepts connections.
    pub fn start(name: &str, dir: &TempDir, mut cmd: Command, port: u16) -> Server {
        let log = dir.path(&format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut server = Server {
            name: name.into(),
            child,
            log,
        };
        server.wait_port(port);
        server
    }

    fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before listening:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not listening on {port} after 15 s:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn danted(dir: &TempDir, port: u16, with_user_auth: bool) -> Server {
    let method = if with_user_auth { "username" } else { "none" };
    let conf = format!(
        "logoutput: stderr\n\
         internal: 127.0.0.1 port = {port}\n\
         external: 127.0.0.1\n\
         clientmethod: none\n\
         socksmethod: {method}\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
         socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }}\n"
    );
    let conf_path = dir.write(&format!("danted-{port}.conf"), &conf);
    let mut cmd = Command::new("danted");
    cmd.arg("-f")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.path(&format!("danted-{port}.pid")))
        .arg("-N")
        .arg("1");
    Server::start("danted", dir, cmd, port)
}

pub fn tinyproxy(dir: &TempDir, port: u16, basic_auth: Option<(&str, &str)>) -> Server {
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 20\nAllow 127.0.0.1\n\
         User nobody\nGroup nogroup\nLogLevel Info\n"
    );
    if let Some((user, pass)) = basic_auth {
        conf.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    let conf_path = dir.write(&format!("tinyproxy-{port}.conf"), &conf);
    let mut cmd = Command::new("tinyproxy");
    cmd.arg("-d").arg("-c").arg(&conf_path);
    Server::start("tinyproxy", dir, cmd, port)
}

/// stunnel terminating TLS on `accept` with `cert`/`key`, forwarding to `connect`.
pub fn stunnel(dir: &TempDir, accept: u16, connect: u16, cert: &Path, key: &Path) -> Server {
    let conf = format!(
        "foreground = yes\npid =\ndebug = 4\n\
         [svc]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n\
         cert = {}\nkey = {}\n",
        cert.display(),
        key.display()
    );
    let conf_path = dir.write(&format!("stunnel-{accept}.conf"), &conf);
    let bin = if have_quiet("stunnel4") {
        "stunnel4"
    } else {
        "stunnel"
    };
    let mut cmd = Command::new(bin);
    cmd.arg(&conf_path);
    Server::start("stunnel", dir, cmd, accept)
}

fn have_quiet(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Test PKI: a CA, a CA-signed cert for localhost/127.0.0.1, a CA-signed cert for
/// the wrong name, and a self-signed cert for localhost. Paths of (cert, key).
pub struct Pki {
    pub ca: PathBuf,
    pub good: (PathBuf, PathBuf),
    pub wrong_name: (PathBuf, PathBuf),
    pub self_signed: (PathBuf, PathBuf),
}

pub fn make_pki(dir: &TempDir) -> Pki {
    let d = |n: &str| dir.path(n).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                &d("ca.key"),
                "-out",
                &d("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=btcagent test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    for (name, san) in [
        ("good", "DNS:localhost,IP:127.0.0.1"),
        ("wrong", "DNS:wrong.example"),
    ] {
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    &d(&format!("{name}.key")),
                    "-out",
                    &d(&format!("{name}.csr")),
                    "-subj",
                    "/CN=btcagent test server",
                ],
            ]
            .concat(),
        );
        let ext = dir.write(
            &format!("{name}.ext"),
            &format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &d(&format!("{name}.csr")),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-out",
            &d(&format!("{name}.pem")),
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ]);
    }
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                &d("self.key"),
                "-out",
                &d("self.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
        ]
        .concat(),
    );
    Pki {
        ca: dir.path("ca.pem"),
        good: (dir.path("good.pem"), dir.path("good.key")),
        wrong_name: (dir.path("wrong.pem"), dir.path("wrong.key")),
        self_signed: (dir.path("self.pem"), dir.path("self.key")),
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every log line of this test binary, for "no credentials in logs" checks.
pub fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct CaptureLogger;
impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        eprintln!("{line}");
        logs().lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

pub fn init_logging() {
    static LOGGER: CaptureLogger = CaptureLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

pub fn assert_no_secret_logged(secret: &str) {
    for line in logs().lock().unwrap().iter() {
        assert!(!line.contains(secret), "secret leaked into log: {line}");
    }
}
