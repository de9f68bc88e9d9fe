//! Replacing the running binary without dropping a miner (an upgrade, a restart):
//! the agent re-executes itself in place and the new program takes the miners over.
//!
//! In place, with `execve`, rather than a second process that is passed the sockets:
//! procd and systemd know the agent by its process id, and a new one would be a second
//! instance to them (procd would start another on the old one's exit). The process id
//! stays; the miners' sockets and the miner port stay open across the `execve` (their
//! close-on-exec flag is cleared), and a state document ([`crate::handoff_state`]) in a
//! memory file tells the new program what each descriptor is. The pool connections
//! close with the old program: the new one dials its own and takes the miners over as
//! it would after a failover (they are held, then get a clean job).
//!
//! Before anything is at stake the binary is run once with the same arguments and
//! `--check-handoff`: it must start on this machine, load the config and read this
//! state format. If it does not (a binary for another CPU, a truncated download, an
//! older version without handoff, a config it refuses), this process keeps serving
//! and says why. What the check cannot see, a new binary that crashes while taking
//! the miners over, costs the miners their connections (they reconnect, and the
//! service manager starts the agent again).

use crate::agent::{Agent, Handed, Successor};
use crate::handoff_state::{self, HandoffState};
use crate::pool::{drain_all, PoolSession};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

/// Names, in the new program's environment, the descriptor that holds the state.
pub const STATE_FD_ENV: &str = "BTCAGENT_HANDOFF_FD";

/// The command-line switch of the check, and what a binary that passes it prints.
pub const CHECK_SWITCH: &str = "--check-handoff";
pub fn check_reply() -> String {
    format!("btcagent handoff format {}", handoff_state::FORMAT)
}

/// How long the check may take: it only loads the config.
const CHECK_TIME: Duration = Duration::from_secs(20);

/// How long a pool connection's buffered output may take to go out before the exec.
const DRAIN_TIME: Duration = Duration::from_millis(500);

/// The signals the agent handles: blocked across the `execve`, so that one arriving
/// before the new program has its handlers in place waits instead of killing it.
const SIGNALS: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGUSR2];

/// The binary this process runs, as it was at start. A package upgrade replaces the
/// file at `path` (the running one is unlinked), so the path is what is kept.
pub struct Binary {
    pub path: PathBuf,
    /// The command line, program name first: the new program gets the same.
    argv: Vec<OsString>,
    identity: Option<Identity>,
}

/// What tells two files at one path apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

impl Binary {
    /// This process's binary; `None` where the system does not say (no `/proc`).
    pub fn at_start() -> Option<Binary> {
        let path = std::env::current_exe().ok()?;
        Some(Binary {
            identity: identity(&path),
            argv: std::env::args_os().collect(),
            path,
        })
    }

    /// Another file is at the path now (an upgrade installed it).
    pub fn replaced(&self) -> bool {
        match (identity(&self.path), self.identity) {
            (Some(now), Some(then)) => now != then,
            // Gone (being replaced right now) or never known: nothing to hand over to.
            _ => false,
        }
    }

    /// Runs the binary with this process's arguments and [`CHECK_SWITCH`]: it must
    /// say it reads this state format, within [`CHECK_TIME`]. The executor goes on
    /// serving meanwhile.
    async fn check(&self) -> Result<(), String> {
        let path = self.path.display();
        let mut args = self.argv.clone();
        args.push(CHECK_SWITCH.into());
        let child =
            Child::spawn(&self.path, &args).map_err(|e| format!("{path} does not start: {e}"))?;
        let end = Instant::now() + CHECK_TIME;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < end => {
                    async_io::Timer::after(Duration::from_millis(20)).await;
                }
                Ok(None) => {
                    child.kill();
                    return Err(format!(
                        "{path} {CHECK_SWITCH} did not finish within {} s",
                        CHECK_TIME.as_secs()
                    ));
                }
                Err(e) => return Err(format!("{path} {CHECK_SWITCH}: {e}")),
            }
        };
        // It has exited: what it wrote is all in the pipe, and little.
        let mut said = String::new();
        let _ = (&child.output).take(4096).read_to_string(&mut said);
        if status != 0 {
            let first = said
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            let how = if status > 0 {
                format!("exit status {status}")
            } else {
                format!("signal {}", -status)
            };
            return Err(format!(
                "{path} {CHECK_SWITCH} failed ({how}): {}",
                first.trim()
            ));
        }
        if said.trim() != check_reply() {
            return Err(format!(
                "{path} does not take miners over from this version (its {CHECK_SWITCH} said {:?})",
                said.trim()
            ));
        }
        Ok(())
    }
}

/// The check's process: started with `posix_spawn`, its standard output and error in
/// one pipe. (std's `Command` would cost the router binary some 20 KB for this one use.)
struct Child {
    pid: libc::pid_t,
    output: File,
    reaped: std::cell::Cell<bool>,
}

impl Child {
    fn spawn(path: &Path, args: &[OsString]) -> io::Result<Child> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let argv = c_strings(args.iter().map(|a| a.as_bytes().to_vec()))?;
        let argv_ptrs = null_terminated(&argv);
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are new descriptors owned by nothing else.
        let (output, input) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        let null = c"/dev/null";
        // SAFETY: the file actions are initialised before use and destroyed after;
        // every pointer passed is to a NUL-terminated string or array that outlives
        // the call; `environ` is this process's environment.
        unsafe {
            let mut actions = std::mem::zeroed::<libc::posix_spawn_file_actions_t>();
            libc::posix_spawn_file_actions_init(&mut actions);
            libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                null.as_ptr(),
                libc::O_RDONLY,
                0,
            );
            libc::posix_spawn_file_actions_adddup2(&mut actions, input.as_raw_fd(), 1);
            libc::posix_spawn_file_actions_adddup2(&mut actions, input.as_raw_fd(), 2);
            let mut pid = 0;
            let rc = libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                std::ptr::null(),
                argv_ptrs.as_ptr() as *const *mut libc::c_char,
                environ as *const *mut libc::c_char,
            );
            libc::posix_spawn_file_actions_destroy(&mut actions);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Child {
                pid,
                output,
                reaped: std::cell::Cell::new(false),
            })
        }
    }

    /// Its exit code, or minus the signal that ended it; `None` while it runs.
    fn try_wait(&self) -> io::Result<Option<i32>> {
        let mut status = 0;
        // SAFETY: waits for our own child without blocking.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if rc == 0 {
            return Ok(None);
        }
        self.reaped.set(true);
        Ok(Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        }))
    }

    fn kill(&self) {
        // SAFETY: signals and reaps our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        self.reaped.set(true);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A handoff dropped while checking (the agent stops): no zombie left behind.
        if !self.reaped.get() {
            self.kill();
        }
    }
}

extern "C" {
    /// The process's environment (unistd.h); a successor's variable is removed from it
    /// at start ([`take_state`]).
    static environ: *const *const libc::c_char;
}

impl Successor for Binary {
    fn take_over<'a>(&'a self, agent: &'a Rc<Agent>) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
        Box::pin(async move {
            if let Err(e) = hand_over(self, agent).await {
                log::error!("handoff refused, this process keeps serving: {e}");
                crate::service_notify::notify("READY=1");
            }
        })
    }
}

/// Checks the binary, then replaces this process by it with every miner; returns only
/// if that could not be done.
async fn hand_over(binary: &Binary, agent: &Rc<Agent>) -> Result<(), String> {
    log::info!("handoff: checking {}", binary.path.display());
    binary.check().await?;
    // Shares the miners were answered for may still wait in the pool connections'
    // buffers (a coalescing window, a writer not run yet): out first, or they would go
    // with the connections. The last check and the exec come without an await between
    // them, so nothing is queued after it.
    let sessions: Vec<_> = agent.groups().iter().flat_map(|g| g.sessions()).collect();
    let sessions: Vec<&PoolSession> = sessions.iter().map(|s| &**s).collect();
    drain_all(&sessions, DRAIN_TIME).await;
    let state = agent
        .handoff_state()
        .ok_or("the miner port is not open yet")?;
    crate::service_notify::notify("RELOADING=1");
    agent
        .status
        .save_history(crate::status::unix_seconds(SystemTime::now()));
    log::info!(
        "handoff: handing {} miners to {}",
        state.miners.len(),
        binary.path.display()
    );
    log::logger().flush();
    let e = exec(binary, &state);
    Err(format!("{}: {e}", binary.path.display()))
}

/// Replaces this process by `binary`, the miner port and every miner's socket kept
/// open for it. Returns only if that failed, and then leaves everything as it was.
fn exec(binary: &Binary, state: &HandoffState) -> io::Error {
    let file = match state_file(&handoff_state::encode(state)) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let argv = match c_strings(binary.argv.iter().map(|a| a.as_bytes().to_vec())) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let path = match CString::new(binary.path.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(e) => return io::Error::new(io::ErrorKind::InvalidInput, e),
    };
    let env = std::env::vars_os()
        .filter(|(k, _)| k != STATE_FD_ENV)
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
        .chain([format!("{STATE_FD_ENV}={}", file.as_raw_fd()).into_bytes()]);
    let env = match c_strings(env) {
        Ok(e) => e,
        Err(e) => return e,
    };
    let fds: Vec<RawFd> = [file.as_raw_fd(), state.listener_fd]
        .into_iter()
        .chain(state.miners.iter().map(|m| m.fd))
        .collect();
    let mut kept = Vec::with_capacity(fds.len());
    let mut error = None;
    for fd in fds {
        match set_close_on_exec(fd, false) {
            Ok(()) => kept.push(fd),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = error.unwrap_or_else(|| {
        let blocked = block_signals();
        let argv_ptrs = null_terminated(&argv);
        let env_ptrs = null_terminated(&env);
        // SAFETY: every pointer is to a NUL-terminated string that outlives the call,
        // and both arrays end with a null pointer, as execve requires.
        unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
        let e = io::Error::last_os_error();
        restore_signals(&blocked);
        e
    });
    for fd in kept {
        let _ = set_close_on_exec(fd, true);
    }
    drop(file);
    error
}

fn c_strings(items: impl Iterator<Item = Vec<u8>>) -> io::Result<Vec<CString>> {
    items
        .map(|s| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)))
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

/// The state in a memory file (no file system needed, gone with its last descriptor).
fn state_file(bytes: &[u8]) -> io::Result<File> {
    // SAFETY: the name is a NUL-terminated literal; the result is checked below.
    let fd = unsafe { libc::memfd_create(c"btcagent-handoff".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file)
}

fn set_close_on_exec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number only reads or sets its flags; a closed one
    // gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds valid signals.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the agent's signals in this thread; returns the mask it had.
fn block_signals() -> libc::sigset_t {
    let set = signal_set();
    // SAFETY: both sets are valid for the call; the old mask is written to `old`.
    unsafe {
        let mut old = std::mem::zeroed::<libc::sigset_t>();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: a mask returned by pthread_sigmask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// Unblocks the agent's signals once their handlers are in place: the previous
/// program blocked them across the `execve` (and a supervisor may have too).
pub fn unblock_signals() {
    let set = signal_set();
    // SAFETY: a valid set; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// The state the previous program left, if this process is its successor: read from
/// the descriptor named in the environment, which is then closed and unset (so that a
/// check child does not see it).
pub fn take_state() -> Option<Result<HandoffState, String>> {
    let text = std::env::var_os(STATE_FD_ENV)?;
    std::env::remove_var(STATE_FD_ENV);
    Some(read_state(&text.to_string_lossy()))
}

fn read_state(fd_text: &str) -> Result<HandoffState, String> {
    let fd: RawFd = fd_text
        .parse()
        .ok()
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("{STATE_FD_ENV}={fd_text:?} is not a descriptor"))?;
    if file_type(fd) != Some(libc::S_IFREG) {
        return Err(format!("descriptor {fd} is not the state file"));
    }
    // SAFETY: an open regular file the previous program left for this one alone.
    let file = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.take(handoff_state::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the state: {e}"))?;
    handoff_state::decode(&bytes)
}

/// The `S_IFMT` bits of an open descriptor, `None` if it is not open.
fn file_type(fd: RawFd) -> Option<libc::mode_t> {
    // SAFETY: fstat writes only the struct it is given; a closed fd gives EBADF.
    unsafe {
        let mut st = std::mem::zeroed::<libc::stat>();
        (libc::fstat(fd, &mut st) == 0).then_some(st.st_mode & libc::S_IFMT)
    }
}

/// Turns a descriptor the previous program handed over into an owned socket, closed
/// on the next `execve` again. `None` if it is not an open socket.
fn inherited_socket(fd: RawFd) -> Option<OwnedSocket> {
    if file_type(fd) != Some(libc::S_IFSOCK) {
        return None;
    }
    set_close_on_exec(fd, true).ok()?;
    Some(OwnedSocket(fd))
}

/// A socket descriptor taken over, owned from here on.
struct OwnedSocket(RawFd);

impl OwnedSocket {
    fn stream(self) -> TcpStream {
        // SAFETY: an open socket handed to this program, owned by nothing else.
        unsafe { TcpStream::from_raw_fd(self.0) }
    }

    fn listener(self) -> TcpListener {
        // SAFETY: as above.
        unsafe { TcpListener::from_raw_fd(self.0) }
    }
}

/// What the successor takes over: the miner port, if it is still the one the config
/// names, and the miners with their sockets.
pub struct Inherited {
    pub listener: Option<TcpListener>,
    pub handed: Handed,
}

/// Takes the handed descriptors into ownership. Any descriptor the previous program
/// left open that is not in the state is closed.
pub fn inherit(state: HandoffState) -> Inherited {
    let listener = inherited_socket(state.listener_fd).map(OwnedSocket::listener);
    let mut miners = Vec::with_capacity(state.miners.len());
    for m in state.miners {
        match inherited_socket(m.fd) {
            Some(socket) => miners.push((m, socket.stream())),
            None => log::warn!("handoff: miner#{} {}: its socket is gone", m.sid, m.peer),
        }
    }
    close_strays();
    Inherited {
        listener,
        handed: Handed {
            next_pool_id: state.next_pool_id,
            multi_user_mode: state.multi_user_mode,
            miners,
        },
    }
}

/// Closes descriptors above standard error that would stay open across an `execve`:
/// everything this program opens itself is close-on-exec, so these are what a
/// previous program left and nobody took (a state that could not be read).
pub fn close_strays() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: reads the flags of a descriptor number (EBADF if it is the
        // directory's own, closed by now).
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: a descriptor nothing in this program owns: every descriptor
            // this program opens is close-on-exec, and taken-over ones were set so.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_replaced_at_its_path_is_noticed() {
        let dir = std::env::temp_dir().join(format!("btcagent-handoff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("btcagent");
        std::fs::write(&path, b"one").unwrap();
        let binary = Binary {
            path: path.clone(),
            argv: vec![],
            identity: identity(&path),
        };
        assert!(!binary.replaced());
        // As opkg installs a file: written beside, renamed over.
        std::fs::write(dir.join("new"), b"two").unwrap();
        std::fs::rename(dir.join("new"), &path).unwrap();
        assert!(binary.replaced());
        std::fs::remove_file(&path).unwrap();
        assert!(
            !binary.replaced(),
            "a missing file is nothing to hand over to"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_goes_through_a_memory_file() {
        let state = HandoffState {
            format: handoff_state::FORMAT,
            listener_fd: 3,
            next_pool_id: 9,
            multi_user_mode: false,
            miners: vec![],
        };
        let file = state_file(&handoff_state::encode(&state)).unwrap();
        let fd = file.as_raw_fd();
        std::mem::forget(file); // read_state takes it over
        assert_eq!(read_state(&fd.to_string()).unwrap(), state);
    }

    #[test]
    fn a_named_descriptor_that_is_no_state_file_is_refused() {
        assert!(read_state("0").is_err(), "standard input");
        assert!(read_state("x").is_err());
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = read_state(&socket.as_raw_fd().to_string()).unwrap_err();
        assert!(e.contains("is not the state file"), "{e}");
        assert!(inherited_socket(socket.as_raw_fd()).is_some());
        assert!(inherited_socket(999_999).is_none());
    }
}
