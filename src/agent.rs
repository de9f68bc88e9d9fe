//! The agent: accepts miners, keeps the pool groups, and shuts down cleanly.

use crate::admission::{Admission, Verdict};
use crate::config::Config;
use crate::miner::session_ids::SessionIds;
use crate::miner::{MinerSession, MinerState};
use crate::pool::PoolGroup;
use crate::protocol::worker::NamingRules;
use crate::upstream::Connector;
use async_io::{Async, Timer};
use smol::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes per `advanced.message_queue_size.miner_session` unit of a miner's unsent
/// output: about one job each.
const MINER_QUEUE_UNIT: usize = 2048;

pub struct Agent {
    cfg: Config,
    ex: &'static LocalExecutor<'static>,
    connector: Connector,
    naming: NamingRules,
    ids: RefCell<SessionIds>,
    miners: RefCell<HashMap<u16, Rc<MinerSession>>>,
    /// Keyed by sub-account; the single-user group under "".
    groups: RefCell<HashMap<Rc<str>, Rc<PoolGroup>>>,
    next_pool_id: Cell<u32>,
    /// The newest version mask a pool gave, offered to miners before they have a pool.
    version_mask: Cell<u32>,
    /// Connections that have not authorized yet, bounded against floods.
    admission: RefCell<Admission>,
    /// Log lines about connections strangers can open at will (scans, floods).
    refused: RateLimit,
    pub started: Instant,
    /// Share accounting for the status report.
    pub status: crate::status::Tracker,
}

impl Agent {
    pub fn new(cfg: Config, ex: &'static LocalExecutor<'static>) -> Result<Rc<Agent>, String> {
        let connector = Connector::from_config(&cfg)?;
        let naming = NamingRules {
            multi_user_mode: cfg.multi_user_mode,
            use_ip_as_worker_name: cfg.use_ip_as_worker_name,
            ip_worker_name_format: cfg.ip_worker_name_format.clone(),
            fixed_worker_name: cfg.fixed_worker_name.clone(),
        };
        let version_mask = cfg.advanced.bitcoin_default_version_mask;
        let admission = handshake_limits(&cfg, crate::fd_limit::current());
        Ok(Rc::new(Agent {
            cfg,
            ex,
            connector,
            naming,
            ids: RefCell::new(SessionIds::new()),
            miners: RefCell::new(HashMap::new()),
            groups: RefCell::new(HashMap::new()),
            next_pool_id: Cell::new(1),
            version_mask: Cell::new(version_mask),
            admission: RefCell::new(admission),
            refused: RateLimit::new(),
            started: Instant::now(),
            status: crate::status::Tracker::new(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    pub fn naming(&self) -> &NamingRules {
        &self.naming
    }

    pub fn spawn(&self, fut: impl Future<Output = ()> + 'static) {
        self.ex.spawn(fut).detach();
    }

    pub fn spawn_task<T: 'static>(&self, fut: impl Future<Output = T> + 'static) -> smol::Task<T> {
        self.ex.spawn(fut)
    }

    pub fn next_pool_id(&self) -> u32 {
        let id = self.next_pool_id.get();
        self.next_pool_id.set(id.wrapping_add(1));
        id
    }

    /// A miner must authorize within the time a pool may stay silent: both bound how
    /// long a connection may hold resources without doing anything useful.
    fn handshake_timeout(&self) -> Duration {
        self.cfg.advanced.pool_connection_read_timeout
    }

    pub fn miner_output_limit(&self) -> usize {
        (self.cfg.advanced.message_queue_size.miner_session as usize).max(16) * MINER_QUEUE_UNIT
    }

    pub fn version_mask_for_new_miners(&self) -> u32 {
        self.version_mask.get()
    }

    pub fn note_version_mask(&self, mask: u32) {
        self.version_mask.set(mask);
    }

    pub fn miners(&self) -> Vec<Rc<MinerSession>> {
        self.miners.borrow().values().cloned().collect()
    }

    pub fn groups(&self) -> Vec<Rc<PoolGroup>> {
        self.groups.borrow().values().cloned().collect()
    }

    /// The group of a sub-account (`None` in single-user mode), started on first use.
    pub fn group_for(self: &Rc<Self>, subaccount: Option<&str>) -> Rc<PoolGroup> {
        let key: Rc<str> = subaccount.unwrap_or("").into();
        if let Some(g) = self.groups.borrow().get(&key) {
            return g.clone();
        }
        log::info!(
            "sub-account {}: opening {} pool connections",
            if key.is_empty() {
                "(single-user)"
            } else {
                &key
            },
            self.cfg.advanced.pool_connection_number_per_subaccount
        );
        let group = PoolGroup::start(self, subaccount.map(|_| key.clone()));
        self.groups.borrow_mut().insert(key, group.clone());
        group
    }

    pub fn forget_group(&self, group: &PoolGroup) {
        self.groups
            .borrow_mut()
            .retain(|_, g| !std::ptr::eq(&**g, group));
    }

    /// Binds the miner port, with room in the kernel for a farm reconnecting at once.
    pub fn bind(cfg: &Config) -> io::Result<Async<TcpListener>> {
        let listener = Async::<TcpListener>::bind(SocketAddr::new(
            cfg.agent_listen_ip,
            cfg.agent_listen_port,
        ))?;
        deepen_backlog(listener.get_ref());
        Ok(listener)
    }

    /// Accepts miners until the listener fails.
    pub async fn run(self: Rc<Self>, listener: Async<TcpListener>) {
        if !self.cfg.multi_user_mode {
            // One set of connections for everyone, up before the first miner arrives.
            self.group_for(None);
        }
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    self.on_accept(stream, peer);
                    // An accept that succeeds at once does not yield: under a flood the
                    // loop would run through the whole queue before the miners' tasks
                    // (and the closing of evicted handshakes, which frees descriptors)
                    // get a turn.
                    smol::future::yield_now().await;
                }
                Err(e) => {
                    // Out of descriptors: wait for miners to leave instead of spinning.
                    if self.refused.allow() {
                        log::error!("accepting a miner failed: {e}");
                    }
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn on_accept(self: &Rc<Self>, stream: Async<TcpStream>, peer: SocketAddr) {
        let Some(sid) = self.ids.borrow_mut().allocate() else {
            if self.refused.allow() {
                log::warn!("refusing miner {peer}: all 65,535 session ids are in use");
            }
            return; // dropping the stream closes it
        };
        let verdict = self.admission.borrow_mut().admit(sid, peer.ip());
        match verdict {
            Verdict::Admit => {}
            Verdict::RefuseSource(n) => {
                self.ids.borrow_mut().release(sid);
                if self.refused.allow() {
                    log::warn!(
                        "refusing {peer}: {n} connections from its address have not authorized yet (advanced.max_unauthorized_connections_per_ip)"
                    );
                }
                return;
            }
            Verdict::AdmitEvicting(old) => {
                let evicted = self.miners.borrow().get(&old).cloned();
                if let Some(m) = evicted {
                    m.close(format!(
                        "closed to make room: {} connections had not authorized (advanced.max_unauthorized_connections)",
                        self.admission.borrow().max_total()
                    ));
                }
            }
        }
        let _ = stream.get_ref().set_nodelay(true);
        let miner = Rc::new(MinerSession::new(
            sid,
            stream,
            peer,
            Instant::now() + self.handshake_timeout(),
        ));
        self.miners.borrow_mut().insert(sid, miner.clone());
        log::debug!("{}: connected", miner.name());
        let agent = self.clone();
        self.spawn(async move {
            let why = miner.serve(&agent).await;
            agent.miner_gone(&miner, &why);
        });
    }

    /// A miner's handshake is over: it gave a login the agent takes.
    pub fn handshake_done(&self, miner: &MinerSession) {
        self.admission.borrow_mut().finished(miner.sid);
    }

    /// Whether a line about `miner` may be logged: always once it authorized; before
    /// that it may be anyone (a scan, a flood), so such lines are rate-limited.
    pub fn may_log_about(&self, miner: &MinerSession) -> bool {
        !is_handshake(miner.state.get()) || self.refused.allow()
    }

    fn miner_gone(self: &Rc<Self>, miner: &Rc<MinerSession>, why: &str) {
        miner.close(why);
        self.admission.borrow_mut().finished(miner.sid);
        let state = miner.state.get();
        if !is_handshake(state) {
            log::info!("{}: disconnected: {why}", miner.name());
        } else if self.refused.allow() {
            if state == MinerState::Connected && why.starts_with("not Stratum") {
                log::warn!("{}: {why}; closed", miner.name());
            } else {
                log::info!("{}: disconnected: {why}", miner.name());
            }
        }
        let group = miner.group.borrow_mut().take();
        if let Some(group) = group {
            group.leave(self, miner);
        }
        self.miners.borrow_mut().remove(&miner.sid);
        self.status.miner_left(miner);
        self.ids.borrow_mut().release(miner.sid);
    }

    /// A miner's deadline passed: returns why it must go, or `None` if it stays.
    pub fn miner_deadline_passed(self: &Rc<Self>, miner: &Rc<MinerSession>) -> Option<String> {
        match miner.state.get() {
            MinerState::Connected | MinerState::Subscribed => Some(format!(
                "did not authorize within {} s",
                self.handshake_timeout().as_secs()
            )),
            MinerState::WaitingForPool => {
                let group = miner.group.borrow().clone();
                match group {
                    Some(g) => g.wait_expired(self, miner),
                    None => Some("no pool group".into()),
                }
            }
            MinerState::Authorized => {
                miner.set_deadline(None);
                None
            }
        }
    }

    /// Unregisters every worker at the pool and closes all connections.
    pub async fn shutdown(&self) {
        log::info!(
            "shutting down: unregistering {} miners",
            self.miners.borrow().len()
        );
        let sessions: Vec<_> = self.groups().iter().flat_map(|g| g.sessions()).collect();
        for s in &sessions {
            s.farewell(Duration::from_secs(2)).await;
        }
        // Let the writers hand the last bytes to the kernel.
        Timer::after(Duration::from_millis(100)).await;
        for m in self.miners() {
            m.close("agent shutting down");
        }
        for g in self.groups() {
            g.close();
        }
    }
}

/// Connections the kernel completes and queues for `accept`: std listens with 128,
/// and beyond that a SYN is dropped and the miner retries a second later. Thousands of
/// miners reconnect at once after a restart, and a flood must not crowd them out of a
/// short queue either. Linux takes a second listen() as a new backlog (capped by
/// net.core.somaxconn, 4096 by default since 5.4).
#[cfg(unix)]
fn deepen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen() on a descriptor the listener owns; it only changes the backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), ACCEPT_BACKLOG);
    }
}

#[cfg(not(unix))]
fn deepen_backlog(_: &TcpListener) {}

#[cfg(unix)]
const ACCEPT_BACKLOG: i32 = 4096;

/// Connected or subscribed: not authorized yet, so possibly anyone.
fn is_handshake(state: MinerState) -> bool {
    matches!(state, MinerState::Connected | MinerState::Subscribed)
}

/// The handshake bounds of `cfg`, capped so that strangers' handshakes can take at
/// most a quarter of the open-files limit (`nofile`): the rest stays for miners.
fn handshake_limits(cfg: &Config, nofile: Option<u64>) -> Admission {
    let wanted = cfg.advanced.max_unauthorized_connections as usize;
    let total = match nofile {
        Some(n) => wanted.min(usize::try_from(n / 4).unwrap_or(usize::MAX).max(16)),
        None => wanted,
    };
    if total < wanted {
        log::warn!(
            "advanced.max_unauthorized_connections {wanted} taken as {total}: a quarter of the open-files limit ({})",
            nofile.unwrap_or(0)
        );
    }
    let per_ip = (cfg.advanced.max_unauthorized_connections_per_ip as usize).min(total);
    Admission::new(total, per_ip)
}

/// At most a burst of log lines per second for events a stranger can trigger at will
/// (port scans, floods), so the log of a router cannot be filled by them. The lines
/// left out are counted in one line when the next window opens.
struct RateLimit {
    window: Cell<Option<Instant>>,
    count: Cell<u32>,
    suppressed: Cell<u64>,
}

impl RateLimit {
    const BURST: u32 = 10;

    fn new() -> RateLimit {
        RateLimit {
            window: Cell::new(None),
            count: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }

    fn allow(&self) -> bool {
        let now = Instant::now();
        match self.window.get() {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {
                self.count.set(self.count.get() + 1);
                let allowed = self.count.get() <= Self::BURST;
                if !allowed {
                    self.suppressed.set(self.suppressed.get() + 1);
                }
                allowed
            }
            _ => {
                let suppressed = self.suppressed.replace(0);
                if suppressed > 0 {
                    log::warn!(
                        "{suppressed} more lines about connections that had not authorized were left out"
                    );
                }
                self.window.set(Some(now));
                self.count.set(1);
                true
            }
        }
    }
}

/// Runs the agent on the current thread until SIGINT/SIGTERM or `stop` resolves.
pub fn run_blocking(
    cfg: Config,
    listener: Async<TcpListener>,
    stop: impl Future<Output = ()> + 'static,
) -> Result<(), String> {
    let ex: &'static LocalExecutor<'static> = Box::leak(Box::new(LocalExecutor::new()));
    match crate::fd_limit::raise() {
        Some(n) => log::debug!("open-files limit: {n}"),
        None => log::debug!("open-files limit unknown"),
    }
    let agent = Agent::new(cfg, ex)?;
    crate::status::start(&agent, listener.get_ref().local_addr().ok());
    let serve = ex.spawn(agent.clone().run(listener));
    // A task, not part of the future below: that future is polled on every executor
    // wake-up, and polling the signal stream costs a read() each time.
    let stop = ex.spawn(stop);
    smol::block_on(ex.run(async {
        stop.await;
        drop(serve);
        agent.shutdown().await;
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolEntry;
    use crate::miner::session_ids::MAX_SESSION_ID;
    use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    #[test]
    fn refuses_miners_cleanly_when_every_session_id_is_taken() {
        let cfg = Config {
            multi_user_mode: true,
            agent_listen_ip: [127, 0, 0, 1].into(),
            agent_listen_port: 0,
            pools: vec![PoolEntry {
                host: "127.0.0.1".into(),
                port: 9,
                subaccount: "x".into(),
            }],
            ..Config::default()
        };
        let listener = Agent::bind(&cfg).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let ex: &'static LocalExecutor<'static> = Box::leak(Box::new(LocalExecutor::new()));
        let agent = Agent::new(cfg, ex).unwrap();
        for _ in 0..=MAX_SESSION_ID {
            agent.ids.borrow_mut().allocate().unwrap();
        }
        smol::block_on(ex.run(async {
            let _serve = ex.spawn(agent.clone().run(listener));
            // Refused: closed without a byte, and without disturbing anyone.
            let mut refused = async_net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 64];
            let n = smol::future::or(refused.read(&mut buf), async {
                Timer::after(Duration::from_secs(5)).await;
                Ok(usize::MAX)
            })
            .await
            .unwrap_or(0);
            assert_eq!(
                n, 0,
                "a connection beyond the last session id is closed at once"
            );
            // A freed id is served again.
            agent.ids.borrow_mut().release(77);
            let mut ok = async_net::TcpStream::connect(addr).await.unwrap();
            ok.write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
                .await
                .unwrap();
            let mut line = String::new();
            BufReader::new(ok).read_line(&mut line).await.unwrap();
            assert!(line.contains("\"0000004d\""), "{line}");
        }));
    }
}
