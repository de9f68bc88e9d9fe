//! The agent: accepts miners, keeps the pool groups, and shuts down cleanly.

use crate::admission::{Admission, Verdict};
use crate::config::{Config, PoolEntry};
#[cfg(unix)]
use crate::handoff_state::HandoffState;
use crate::handoff_state::{HandedMiner, Stage};
use crate::http_debug;
use crate::miner::deadlines::Deadlines;
use crate::miner::session_ids::SessionIds;
use crate::miner::table::MinerTable;
use crate::miner::{MinerSession, MinerState, RECONNECT_GRACE};
use crate::pool::dial_streak::DialStreaks;
use crate::pool::layouts::PoolLayouts;
use crate::pool::PoolGroup;
use crate::protocol::stratum;
use crate::protocol::stratum_upstream::extranonce::MinerLayout;
use crate::protocol::worker::NamingRules;
use crate::status::history::OfflineWorker;
use crate::status::{self, StatusSource};
use crate::upstream::Connector;
use async_io::{Async, Timer};
use smol::LocalExecutor;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime};

/// Where a handoff exists, it is the restart that keeps the miners.
#[cfg(target_os = "linux")]
pub const RESTART_HINT: &str = " (SIGUSR2 restarts without dropping miners)";
#[cfg(not(target_os = "linux"))]
pub const RESTART_HINT: &str = "";

/// Bytes per `advanced.message_queue_size.miner_session` unit of a miner's unsent
/// output: about one job each.
const MINER_QUEUE_UNIT: usize = 2048;

pub struct Agent {
    /// Replaced whole by a reload; tasks that hold the old one finish with it.
    cfg: RefCell<Rc<Config>>,
    ex: &'static LocalExecutor<'static>,
    connector: RefCell<Rc<Connector>>,
    naming: RefCell<Rc<NamingRules>>,
    ids: RefCell<SessionIds>,
    miners: RefCell<MinerTable>,
    /// Keyed by sub-account; the single-user group under "".
    groups: RefCell<HashMap<Rc<str>, Rc<PoolGroup>>>,
    next_pool_id: Cell<u32>,
    /// The newest version mask a pool gave, offered to miners before they have a pool.
    version_mask: Cell<u32>,
    /// Each pool entry's extranonce split, for a new miner's subscribe answer.
    pool_layouts: RefCell<PoolLayouts>,
    /// Connections that have not authorized yet, bounded against floods.
    admission: RefCell<Admission>,
    /// Miners' deadlines, for the one task that keeps them ([`sweep_deadlines`]).
    deadlines: Rc<Deadlines>,
    /// Log lines about connections strangers can open at will (scans, floods).
    refused: RateLimit,
    /// Failed pool dials, logged once per failure streak (see [`DialStreaks`]).
    dial_streaks: RefCell<DialStreaks>,
    /// Set when shutdown starts: from then on, dial outcomes are not logged.
    stopping: Cell<bool>,
    /// The miner port's socket, for a handoff to the next process.
    #[cfg(unix)]
    listener_fd: Cell<Option<i32>>,
    pub started: Instant,
    /// Share accounting for the status report.
    pub status: status::Tracker,
}

impl Agent {
    pub fn new(cfg: Config, ex: &'static LocalExecutor<'static>) -> Result<Rc<Agent>, String> {
        let connector = Connector::from_config(&cfg)?;
        let naming = naming_rules(&cfg);
        let version_mask = cfg.advanced.bitcoin_default_version_mask;
        let admission = handshake_limits(&cfg, crate::fd_limit::current());
        let agent = Rc::new(Agent {
            cfg: RefCell::new(Rc::new(cfg)),
            ex,
            connector: RefCell::new(Rc::new(connector)),
            naming: RefCell::new(Rc::new(naming)),
            ids: RefCell::new(SessionIds::new()),
            miners: RefCell::new(MinerTable::default()),
            groups: RefCell::new(HashMap::new()),
            next_pool_id: Cell::new(1),
            version_mask: Cell::new(version_mask),
            pool_layouts: RefCell::new(PoolLayouts::default()),
            admission: RefCell::new(admission),
            deadlines: Rc::new(Deadlines::new()),
            refused: RateLimit::new(),
            dial_streaks: RefCell::new(DialStreaks::new()),
            stopping: Cell::new(false),
            #[cfg(unix)]
            listener_fd: Cell::new(None),
            started: Instant::now(),
            status: status::Tracker::new(),
        });
        agent.spawn(sweep_deadlines(
            Rc::downgrade(&agent),
            agent.deadlines.clone(),
        ));
        Ok(agent)
    }

    /// The config in force now (a reload may replace it between two calls).
    pub fn config(&self) -> Rc<Config> {
        self.cfg.borrow().clone()
    }

    pub fn connector(&self) -> Rc<Connector> {
        self.connector.borrow().clone()
    }

    pub fn naming(&self) -> Rc<NamingRules> {
        self.naming.borrow().clone()
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
        self.config().advanced.pool_connection_read_timeout
    }

    pub fn miner_output_limit(&self) -> usize {
        (self.config().advanced.message_queue_size.miner_session as usize).max(16)
            * MINER_QUEUE_UNIT
    }

    pub fn version_mask_for_new_miners(&self) -> u32 {
        self.version_mask.get()
    }

    pub fn note_version_mask(&self, mask: u32) {
        self.version_mask.set(mask);
    }

    /// The extranonce layout a miner that subscribes now is told (docs/stratum-upstream.md
    /// §3): that of the first pool of the list that is up. On a 4-5 byte pool in
    /// single-user mode its prefix is one free on the connection it most likely
    /// joins ([`PoolGroup::suggest_prefix`]). In multi-user mode its sub-account, so
    /// its group, is only known at authorize: it keeps its session id's low byte,
    /// and placement prefers a connection of its group where that is free.
    pub fn layout_for_new_miner(&self, sid: u16) -> MinerLayout {
        let layout = self
            .pool_layouts
            .borrow()
            .for_new_miner(&self.config().pools, sid);
        let MinerLayout::Prefix {
            extranonce2_size, ..
        } = layout
        else {
            return layout;
        };
        if self.config().multi_user_mode {
            return layout;
        }
        let group = self.groups.borrow().get("").cloned();
        match group.and_then(|g| g.suggest_prefix(layout)) {
            Some(prefix) => MinerLayout::Prefix {
                prefix,
                extranonce2_size,
            },
            None => layout,
        }
    }

    /// A connection to `entry` came up, its pool's extranonce2 `extranonce2_size`
    /// bytes (`None`: the agent protocol).
    pub fn pool_connection_up(&self, entry: &PoolEntry, extranonce2_size: Option<usize>) {
        self.pool_layouts
            .borrow_mut()
            .connection_up(entry, extranonce2_size, &self.config().pools);
    }

    pub fn pool_connection_down(&self, entry: &PoolEntry) {
        self.pool_layouts.borrow_mut().connection_down(entry);
    }

    /// The miner of session `sid`.
    pub fn miner(&self, sid: u16) -> Option<Rc<MinerSession>> {
        self.miners.borrow().get(sid).cloned()
    }

    pub fn miners(&self) -> Vec<Rc<MinerSession>> {
        self.miners.borrow().iter().cloned().collect()
    }

    /// The sub-account of miners without a pool connection in single-user mode: the
    /// first entry's (the one the agent dials first).
    pub fn fallback_subaccount(&self) -> String {
        self.config()
            .pools
            .first()
            .map(|p| p.account().to_string())
            .unwrap_or_default()
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
            self.config().advanced.pool_connection_number_per_subaccount
        );
        let group = PoolGroup::start(self, subaccount.map(|_| key.clone()));
        self.groups.borrow_mut().insert(key, group.clone());
        group
    }

    /// True once shutdown has started.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// A dial of `pool` (`pool host:port (sub-account)`) failed: logged when it starts
    /// a failure streak or is due for a reminder, never during shutdown.
    pub fn dial_failed(&self, pool: &str, why: &str) {
        let line = self
            .dial_streaks
            .borrow_mut()
            .failed(pool, why, Instant::now());
        if let Some(line) = line.filter(|_| !self.is_stopping()) {
            log::warn!("{line}");
        }
    }

    /// A dial of `pool` succeeded: logged when it ends a failure streak.
    pub fn dial_succeeded(&self, pool: &str) {
        let line = self
            .dial_streaks
            .borrow_mut()
            .connected(pool, Instant::now());
        if let Some(line) = line.filter(|_| !self.is_stopping()) {
            log::info!("{line}");
        }
    }

    pub fn forget_group(&self, group: &PoolGroup) {
        self.groups
            .borrow_mut()
            .retain(|_, g| !std::ptr::eq(&**g, group));
    }

    /// Takes `new` into use without dropping a miner (SIGHUP): what a running agent
    /// can change applies now, the rest is kept until a restart and logged so. A
    /// config the connector refuses changes nothing.
    pub fn reload(self: &Rc<Self>, new: Config) {
        let old = self.config();
        let plan = crate::reload::plan(&old, &new);
        if plan.unchanged {
            log::info!("reload: the config is unchanged");
            return;
        }
        let new = crate::reload::applicable(&old, new, &plan);
        let connector = match Connector::from_config(&new) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused, the running config stays: {e}");
                return;
            }
        };
        for field in &plan.needs_restart {
            log::warn!(
                "reload: {field} changed: it takes effect at the next restart{RESTART_HINT}"
            );
        }
        *self.connector.borrow_mut() = Rc::new(connector);
        *self.naming.borrow_mut() = Rc::new(naming_rules(&new));
        *self.cfg.borrow_mut() = Rc::new(new);
        let cfg = self.config();
        let mut applied = Vec::new();
        if plan.resize {
            let n = cfg.advanced.pool_connection_number_per_subaccount;
            for group in self.groups() {
                group.resize(self, n);
            }
            applied.push(format!("{n} connections per sub-account"));
        }
        if plan.redial {
            for group in self.groups() {
                group.redial(self);
            }
            applied.push("pool connections dialled again one at a time".into());
        }
        if plan.rename {
            let renamed = self.rename_miners();
            applied.push(format!("{renamed} workers renamed"));
        }
        if applied.is_empty() {
            log::info!("reload: applied");
        } else {
            log::info!("reload: applied ({})", applied.join(", "));
        }
    }

    /// Registers again, under the name the current rules give, every miner whose
    /// name at the pool changes.
    fn rename_miners(self: &Rc<Self>) -> usize {
        let naming = self.naming();
        let mut renamed = 0;
        for miner in self.miners() {
            if miner.state.get() != MinerState::Authorized {
                continue;
            }
            let name = naming.worker_name(&miner.login_worker(), miner.peer().ip());
            if *miner.worker() == *name {
                continue;
            }
            miner.set_worker(name.into());
            let pool = miner.pool();
            if let Some(pool) = pool {
                // The pool ignores a REGISTER for a live session: leave, then join.
                pool.release(&miner, crate::pool::Departure::Now);
                pool.adopt(self, &miner);
            }
            renamed += 1;
        }
        renamed
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
        #[cfg(unix)]
        self.listener_fd
            .set(Some(std::os::fd::AsRawFd::as_raw_fd(&listener)));
        let cfg = self.config();
        log::info!(
            "{}",
            crate::startup::plan(&cfg, &self.connector().describe())
        );
        if !cfg.multi_user_mode {
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
                let evicted = self.miners.borrow().get(old).cloned();
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
        self.miners.borrow_mut().insert(miner.clone());
        log::debug!("{}: connected", miner.name());
        self.spawn(miner.serve(self.clone()));
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

    /// The end of a miner's task ([`MinerSession::serve`]).
    pub fn miner_gone(self: &Rc<Self>, miner: &Rc<MinerSession>, why: &str) {
        miner.close(why);
        self.admission.borrow_mut().finished(miner.sid);
        let state = miner.state.get();
        self.status_keeps(miner, !is_handshake(state));
        if !is_handshake(state) {
            log::info!("{}: disconnected: {why}", miner.name());
        } else if self.refused.allow() {
            if state == MinerState::Connected && why.starts_with("not Stratum") {
                log::warn!("{}: {why}; closed", miner.name());
            } else {
                log::info!("{}: disconnected: {why}", miner.name());
            }
        }
        let group = miner.set_group(None);
        if let Some(group) = group {
            group.leave(self, miner);
        }
        self.miners.borrow_mut().remove(miner.sid);
        self.ids.borrow_mut().release(miner.sid);
    }

    /// What the status keeps of a miner that leaves: its shares in the totals, the
    /// last of them in its sub-account's history, and (if it had logged in) an entry in
    /// the offline workers. Before its group lets go of it: that decides its sub-account.
    fn status_keeps(&self, miner: &MinerSession, logged_in: bool) {
        let now_unix = status::unix_seconds(SystemTime::now());
        let subaccount = miner.subaccount(&self.fallback_subaccount());
        let delta = miner.stats.take_history_delta();
        self.status.subaccount_shares(now_unix, &subaccount, delta);
        let shares = miner.stats.shares();
        self.status.miner_left(shares);
        if logged_in {
            let connected = miner.connected_at.age(Instant::now());
            self.status.worker_left(OfflineWorker {
                worker: miner.worker().to_string(),
                subaccount,
                ip: miner.peer().ip().to_string(),
                last_seen: now_unix,
                last_hashrate: status::hashrate(shares.difficulty, connected.as_secs_f64()),
                connected_seconds: connected.as_secs(),
                shares_accepted: shares.accepted,
                shares_rejected: shares.rejected,
            });
        }
    }

    /// Gives `miner`'s deadline to the sweeper, unless it has it already.
    pub fn watch_deadline(&self, miner: &MinerSession) {
        let Some(at) = miner.deadline_to_watch() else {
            return;
        };
        if self.deadlines.push(miner.sid, at) {
            let miners = self.miners.borrow();
            self.deadlines.retain(|sid, at| {
                miners
                    .get(sid)
                    .is_some_and(|m| !m.is_closed() && m.deadline() == Some(at))
            });
        }
    }

    /// Closes or keeps each miner whose deadline has passed.
    fn deadlines_passed(self: &Rc<Self>) {
        let now = Instant::now();
        while let Some((sid, at)) = self.deadlines.pop_passed(now) {
            let miner = self.miners.borrow().get(sid).cloned();
            let Some(miner) = miner.filter(|m| !m.is_closed()) else {
                continue; // gone: a stale entry
            };
            if miner.deadline() != Some(at) {
                // Changed since: the sweeper may not have heard of the new one yet.
                self.watch_deadline(&miner);
                continue;
            }
            // This entry is used up; anything the miner waits for next sets a new one.
            miner.set_deadline(None);
            match self.miner_deadline_passed(&miner) {
                Some(reason) => miner.close(reason),
                None => self.watch_deadline(&miner),
            }
        }
    }

    /// A miner's deadline passed: returns why it must go, or `None` if it stays.
    pub fn miner_deadline_passed(self: &Rc<Self>, miner: &Rc<MinerSession>) -> Option<String> {
        match miner.state.get() {
            MinerState::Connected | MinerState::Subscribed => Some(format!(
                "did not authorize within {} s",
                self.handshake_timeout().as_secs()
            )),
            MinerState::WaitingForPool => {
                let group = miner.group();
                match group {
                    Some(g) => g.wait_expired(self, miner),
                    None => Some("no pool group".into()),
                }
            }
            MinerState::Authorized if miner.reconnect_asked() => Some(format!(
                "asked to reconnect for a new extranonce, still there after {} s",
                RECONNECT_GRACE.as_secs()
            )),
            MinerState::Authorized => {
                miner.set_deadline(None);
                None
            }
        }
    }

    /// What the next process needs to go on with every miner (`src/handoff.rs`), and
    /// the descriptors that must stay open for it; `None` before the agent listens.
    #[cfg(unix)]
    pub fn handoff_state(&self) -> Option<HandoffState> {
        let listener_fd = self.listener_fd.get()?;
        let miners: Vec<HandedMiner> = self
            .miners
            .borrow()
            .iter()
            .filter_map(|m| m.handoff_record())
            .collect();
        Some(HandoffState {
            format: crate::handoff_state::FORMAT,
            listener_fd,
            next_pool_id: self.next_pool_id.get(),
            multi_user_mode: self.config().multi_user_mode,
            miners,
        })
    }

    /// Goes on with the miners a previous agent process handed over: each keeps its
    /// session id (its extranonce1), name and difficulty, and goes on from where it was:
    /// a logged-in miner is held until its group's first connection is up, then gets
    /// a clean job, as after a failover.
    pub fn take_over(self: &Rc<Self>, handed: Handed) {
        let id = self.next_pool_id.get().max(handed.next_pool_id);
        self.next_pool_id.set(id);
        let same_mode = handed.multi_user_mode == self.config().multi_user_mode;
        let total = handed.miners.len();
        let mut taken = 0;
        for (m, stream) in handed.miners {
            if !self.ids.borrow_mut().reserve(m.sid) {
                log::warn!("handoff: session id {} handed twice: closed", m.sid);
                continue;
            }
            let stream = match Async::new(stream) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("handoff: miner#{} {}: {e}: closed", m.sid, m.peer);
                    self.ids.borrow_mut().release(m.sid);
                    continue;
                }
            };
            let miner = Rc::new(MinerSession::handed(
                &m,
                stream,
                Instant::now() + self.handshake_timeout(),
            ));
            self.miners.borrow_mut().insert(miner.clone());
            if !m.unsent.is_empty() {
                miner.send(self, &m.unsent);
            }
            match &m.stage {
                Stage::Connected | Stage::Subscribed => {
                    if self.admission.borrow_mut().admit(m.sid, m.peer.ip()) != Verdict::Admit {
                        miner.close("too many connections that have not authorized");
                    }
                }
                _ if !same_mode => {
                    // Its login means another sub-account under the other mode.
                    miner.send(self, &stratum::notification("client.reconnect", "[]"));
                    miner.close("multi_user_mode changed: asked to log in again");
                }
                Stage::WaitingForPool { auth_id } => {
                    self.rename(&miner);
                    self.group_for(m.subaccount.as_deref())
                        .join(self, &miner, auth_id);
                }
                Stage::Authorized => {
                    self.rename(&miner);
                    self.group_for(m.subaccount.as_deref())
                        .take_handed(self, &miner);
                }
            }
            self.spawn(miner.clone().serve(self.clone()));
            taken += 1;
        }
        log::info!("handoff: took over {taken} of {total} miners");
    }

    /// Applies the naming rules in force to a handed-over miner's login.
    fn rename(&self, miner: &MinerSession) {
        let name = self
            .naming()
            .worker_name(&miner.login_worker(), miner.peer().ip());
        if *miner.worker() != *name {
            miner.set_worker(name.into());
        }
    }

    /// Unregisters every worker at the pool and closes all connections.
    pub async fn shutdown(&self) {
        self.stopping.set(true);
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
        self.status
            .save_history(status::unix_seconds(SystemTime::now()));
    }
}

fn naming_rules(cfg: &Config) -> NamingRules {
    NamingRules {
        multi_user_mode: cfg.multi_user_mode,
        use_ip_as_worker_name: cfg.use_ip_as_worker_name,
        ip_worker_name_format: cfg.ip_worker_name_format.clone(),
        fixed_worker_name: cfg.fixed_worker_name.clone(),
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

/// Starts publishing the status: the sampler, the log line, the status file (and the
/// history file beside it), the HTTP endpoint if enabled. The agent is their
/// [`StatusSource`] (`src/agent_status.rs`); `listen` is the miner port as bound.
fn start_status(agent: &Rc<Agent>, listen: Option<SocketAddr>) {
    *agent.status.listen.borrow_mut() = listen;
    let cfg = agent.config();
    let source: Rc<dyn StatusSource> = agent.clone();
    agent.spawn(status::sample_loop(source.clone()));
    agent.spawn(status::log_loop(source.clone()));
    if !cfg.status_file.is_empty() {
        let path = PathBuf::from(&cfg.status_file);
        agent.status.keep_history_in(status::history_path(&path));
        agent.spawn(status::file_loop(source.clone(), path, cfg.status_interval));
    }
    if cfg.http_debug.enable {
        if let Some(listener) = http_debug::bind_logged(&cfg.http_debug.listen) {
            agent.spawn(http_debug::serve(listener, source));
        }
    }
}

/// What the process asks of a running agent (signals, in `main`).
pub enum Control {
    /// Take this config into use (SIGHUP: the config source was read again).
    Reload(Box<Config>),
    /// Hand the miners over to this process's successor (SIGUSR2; on SIGHUP too when
    /// the binary was replaced).
    HandOff(Rc<dyn Successor>),
    /// Unregister the miners, close, return (SIGINT, SIGTERM).
    Stop,
}

/// A process that can take the running agent's miners over (`src/handoff.rs`): it
/// returns only if it could not, and then the agent goes on as before.
pub trait Successor {
    fn take_over<'a>(
        &'a self,
        agent: &'a Rc<Agent>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;
}

/// Miners a previous agent process handed over, with their sockets.
pub struct Handed {
    pub next_pool_id: u32,
    pub multi_user_mode: bool,
    pub miners: Vec<(HandedMiner, TcpStream)>,
}

/// The one task that keeps every miner's deadline; ends with the agent.
async fn sweep_deadlines(agent: Weak<Agent>, deadlines: Rc<Deadlines>) {
    loop {
        deadlines.passed().await;
        let Some(agent) = agent.upgrade() else {
            return;
        };
        agent.deadlines_passed();
    }
}

/// Runs the agent on the current thread until `controls` says stop or ends; with the
/// miners a previous process `handed` over, if it is a successor.
pub fn run_blocking(
    cfg: Config,
    listener: Async<TcpListener>,
    controls: impl smol::stream::Stream<Item = Control> + 'static,
    handed: Option<Handed>,
) -> Result<(), String> {
    let ex: &'static LocalExecutor<'static> = Box::leak(Box::new(LocalExecutor::new()));
    match crate::fd_limit::raise() {
        Some(n) => log::debug!("open-files limit: {n}"),
        None => log::debug!("open-files limit unknown"),
    }
    let agent = Agent::new(cfg, ex)?;
    start_status(&agent, listener.get_ref().local_addr().ok());
    let serve = ex.spawn(agent.clone().run(listener));
    if let Some(handed) = handed {
        agent.take_over(handed);
    }
    // A task, not part of the future below: that future is polled on every executor
    // wake-up, and polling the signal stream costs a read() each time.
    let controlled = agent.clone();
    let stop = ex.spawn(async move {
        use smol::stream::StreamExt;
        let mut controls = std::pin::pin!(controls);
        // Its own task, so that a stop while the successor is being checked is taken
        // at once (dropping the task ends the handoff) rather than lost in the exec.
        let mut handoff: Option<smol::Task<()>> = None;
        while let Some(control) = controls.next().await {
            match control {
                Control::Reload(cfg) => controlled.reload(*cfg),
                Control::HandOff(_) if handoff.as_ref().is_some_and(|t| !t.is_finished()) => {
                    log::info!("handoff: one is under way already");
                }
                Control::HandOff(successor) => {
                    let agent = controlled.clone();
                    handoff = Some(ex.spawn(async move { successor.take_over(&agent).await }));
                }
                Control::Stop => return,
            }
        }
    });
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

    /// Multi-user mode on loopback, any free port, one pool entry nobody listens on.
    fn dead_pool_config() -> Config {
        Config {
            multi_user_mode: true,
            agent_listen_ip: [127, 0, 0, 1].into(),
            agent_listen_port: 0,
            pools: vec![PoolEntry {
                host: "127.0.0.1".into(),
                port: 9,
                subaccount: "x".into(),
                stratum: None,
            }],
            ..Config::default()
        }
    }

    #[test]
    fn refuses_miners_cleanly_when_every_session_id_is_taken() {
        let cfg = dead_pool_config();
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

    /// An agent on a dead pool whose miners must authorize within `handshake`.
    fn agent_with_deadlines(handshake: Duration) -> (Rc<Agent>, Async<TcpListener>) {
        let mut cfg = dead_pool_config();
        cfg.advanced.pool_connection_read_timeout = handshake;
        cfg.advanced.pool_connection_dial_timeout = Duration::from_secs(1);
        // All the test's miners come from 127.0.0.1.
        cfg.advanced.max_unauthorized_connections_per_ip = 4096;
        let listener = Agent::bind(&cfg).unwrap();
        let ex: &'static LocalExecutor<'static> = Box::leak(Box::new(LocalExecutor::new()));
        (Agent::new(cfg, ex).unwrap(), listener)
    }

    /// Waits (without a time limit of its own) until `done` holds.
    async fn until(mut done: impl FnMut() -> bool) {
        while !done() {
            Timer::after(Duration::from_millis(10)).await;
        }
    }

    const SUBSCRIBE: &[u8] = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n";

    #[test]
    fn every_handshake_deadline_is_in_the_one_sweepers_queue() {
        let (agent, listener) = agent_with_deadlines(Duration::from_secs(3600));
        let addr = listener.get_ref().local_addr().unwrap();
        let ex = agent.ex;
        smol::block_on(ex.run(async {
            let _serve = ex.spawn(agent.clone().run(listener));
            let mut miners = Vec::new();
            for i in 0..200 {
                let mut m = async_net::TcpStream::connect(addr).await.unwrap();
                if i % 2 == 0 {
                    m.write_all(SUBSCRIBE).await.unwrap();
                }
                miners.push(m);
            }
            // No timer per miner: each one's deadline is an entry in the agent's queue.
            until(|| agent.deadlines.len() == 200).await;
            until(|| agent.miners.borrow().len() == 200).await;
            drop(miners);
            until(|| agent.miners.borrow().is_empty()).await;
            // The entries of miners that left go in the next sweep of stale ones.
            let mut more = Vec::new();
            while agent.deadlines.len() == 200 + more.len() {
                more.push(async_net::TcpStream::connect(addr).await.unwrap());
                until(|| agent.miners.borrow().len() == more.len()).await;
                smol::future::yield_now().await;
            }
            assert_eq!(agent.deadlines.len(), more.len());
        }));
    }

    #[test]
    fn the_sweeper_closes_each_miner_at_its_deadline() {
        let handshake = Duration::from_secs(1);
        let (agent, listener) = agent_with_deadlines(handshake);
        let addr = listener.get_ref().local_addr().unwrap();
        let ex = agent.ex;
        smol::block_on(ex.run(async {
            let _serve = ex.spawn(agent.clone().run(listener));
            let start = Instant::now();
            let mut handshakes = Vec::new();
            for i in 0..100 {
                let mut m = async_net::TcpStream::connect(addr).await.unwrap();
                if i % 2 == 0 {
                    m.write_all(SUBSCRIBE).await.unwrap();
                }
                handshakes.push(m);
            }
            // Authorized in time, then waiting for a pool connection that never comes:
            // its second deadline (the dial timeout) is the sweeper's too.
            let mut waiting = async_net::TcpStream::connect(addr).await.unwrap();
            waiting.write_all(SUBSCRIBE).await.unwrap();
            waiting
                .write_all(
                    b"{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"sub.w1\",\"x\"]}\n",
                )
                .await
                .unwrap();
            for mut m in handshakes {
                let mut rest = Vec::new();
                m.read_to_end(&mut rest).await.unwrap();
                assert!(start.elapsed() >= handshake, "closed before its deadline");
            }
            let mut said = String::new();
            waiting.read_to_string(&mut said).await.unwrap();
            assert!(said.contains("No pool connection available"), "{said}");
            until(|| agent.miners.borrow().is_empty()).await;
            assert!(agent.deadlines.is_empty(), "{}", agent.deadlines.len());
            assert_eq!(agent.admission.borrow().pending(), 0);
        }));
    }
}
