//! A sub-account's set of pool connections and the miners that share them.
//!
//! Each of the `pool_connection_number_per_subaccount` slots keeps one connection up,
//! walking the pool list in order. Miners go to the connection with the fewest miners;
//! when a connection dies its miners move to a sibling without noticing (their
//! extranonce1 is their session id, not tied to a connection). When the last one dies
//! (the pool itself went away), the miners are held, still connected, for
//! `pool_failover_hold` while the slots dial the next pools of the list: the first
//! connection up takes them all, and they see a new job, not a disconnect.

use super::passthrough;
use super::session::{Departure, PoolSession};
use crate::agent::Agent;
use crate::config::{PoolEntry, StratumEntry};
use crate::miner::{MinerSession, MinerState};
use crate::protocol::framing::FrameReader;
use crate::protocol::job::{fake_job, Job};
use crate::protocol::stratum::{self, code};
use crate::protocol::stratum_upstream::connection::{Settings, StratumConnection};
use crate::protocol::stratum_upstream::extranonce::MinerLayout;
use crate::protocol::stratum_upstream::user::UserTemplate;
use crate::protocol::stratum_upstream::vardiff::VardiffConfig;
use crate::status::history::PoolEvent;
use crate::status::unix_seconds;
use crate::upstream::conn_test::Probe;
use crate::upstream::Connected;
use async_io::Timer;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A connection that dies sooner than this after coming up counts as a failed dial,
/// so a flapping pool is retried with backoff rather than in a tight loop.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait between rounds of the pool list while miners are held.
const HOLD_RETRY: Duration = Duration::from_secs(1);
/// Connections a group may open beyond the configured number when every one is full
/// (a 4-5 byte Stratum pool's carry 256 miners each).
const MAX_EXTRA_CONNECTIONS: u16 = 16;

pub struct PoolGroup {
    /// `None` in single-user mode: each pool entry's own sub-account is used.
    pub subaccount: Option<Rc<str>>,
    sessions: RefCell<Vec<Rc<PoolSession>>>,
    waiting: RefCell<Vec<Rc<MinerSession>>>,
    /// Miners kept on fake jobs while no connection is up (`always_keep_downconn`).
    orphans: RefCell<Vec<Rc<MinerSession>>>,
    /// Miners whose last connection died, kept connected until the hold runs out.
    held: RefCell<Vec<Rc<MinerSession>>>,
    /// Counts holds, so a hold timer knows whether its hold is still the current one.
    hold_epoch: Cell<u32>,
    miners: Cell<usize>,
    closed: Cell<bool>,
    last_job: RefCell<Option<Rc<Job>>>,
    feeding_fakes: Cell<bool>,
    submit_response_from_server: Cell<bool>,
    /// How many connection slots should run; a reload may change it.
    slots: Cell<u16>,
    /// The connection each slot has up now.
    by_slot: RefCell<Vec<(u16, Rc<PoolSession>)>>,
    /// Connections handing their miners over before a redial: no miner joins them.
    retiring: RefCell<Vec<Rc<PoolSession>>>,
    /// Counts redials, so that an older one stops when a newer reload begins.
    redial_epoch: Cell<u32>,
    /// The miners' own connections to identity pass-through pools.
    passthrough: passthrough::Connections,
}

impl PoolGroup {
    /// Creates the group and starts its connection slots.
    pub fn start(agent: &Rc<Agent>, subaccount: Option<Rc<str>>) -> Rc<PoolGroup> {
        let group = Rc::new(PoolGroup {
            subaccount,
            sessions: RefCell::new(Vec::new()),
            waiting: RefCell::new(Vec::new()),
            orphans: RefCell::new(Vec::new()),
            held: RefCell::new(Vec::new()),
            hold_epoch: Cell::new(0),
            miners: Cell::new(0),
            closed: Cell::new(false),
            last_job: RefCell::new(None),
            feeding_fakes: Cell::new(false),
            submit_response_from_server: Cell::new(agent.config().submit_response_from_server),
            slots: Cell::new(0),
            by_slot: RefCell::new(Vec::new()),
            retiring: RefCell::new(Vec::new()),
            redial_epoch: Cell::new(0),
            passthrough: passthrough::Connections::default(),
        });
        group.resize(
            agent,
            agent
                .config()
                .advanced
                .pool_connection_number_per_subaccount,
        );
        group
    }

    /// Runs `slots` connection slots: new ones start dialling, surplus ones close
    /// their connection (its miners move to the siblings) and end.
    pub fn resize(self: &Rc<Self>, agent: &Rc<Agent>, slots: u16) {
        let before = self.slots.replace(slots);
        for slot in before..slots {
            agent.spawn(run_slot(agent.clone(), self.clone(), slot));
        }
        for (slot, session) in self.by_slot.borrow().iter() {
            if *slot >= slots {
                session.kill("fewer connections per sub-account in the new config");
            }
        }
    }

    /// Takes a new pool list, route or handshake into use (a reload): one connection
    /// at a time hands its miners to its siblings, closes, and its slot dials the
    /// list again; the next one goes only once that slot is up again (or could not
    /// be within its dial time), so the farm never loses more than one connection.
    pub fn redial(self: &Rc<Self>, agent: &Rc<Agent>) {
        self.submit_response_from_server
            .set(agent.config().submit_response_from_server);
        let epoch = self.redial_epoch.get().wrapping_add(1);
        self.redial_epoch.set(epoch);
        agent.spawn(redial_slots(agent.clone(), self.clone(), epoch));
        self.passthrough
            .kill_all("config reloaded: its miner walks the pool list again");
    }

    fn slot_session(&self, slot: u16) -> Option<Rc<PoolSession>> {
        self.by_slot
            .borrow()
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, session)| session.clone())
    }

    /// Moves every miner of `session` to its siblings the way a rebalance does: the
    /// shares they find on its jobs meanwhile still go to it. False when it has no
    /// sibling up.
    fn hand_over(&self, agent: &Rc<Agent>, session: &Rc<PoolSession>) -> bool {
        self.retiring.borrow_mut().push(session.clone());
        if self.least_loaded().is_none() {
            self.retiring
                .borrow_mut()
                .retain(|s| !Rc::ptr_eq(s, session));
            return false;
        }
        let mut moved = 0;
        while let Some(miner) = session.any_miner() {
            let Some(sibling) = self.least_loaded_for(&miner) else {
                break;
            };
            session.release(&miner, Departure::AfterGrace);
            sibling.adopt(agent, &miner);
            moved += 1;
        }
        if moved > 0 {
            log::info!(
                "{}: handed {moved} miners to sibling connections before dialling again",
                session.name()
            );
        }
        true
    }

    pub fn name(&self) -> &str {
        self.subaccount.as_deref().unwrap_or("(single-user)")
    }

    pub fn submit_response_from_server(&self) -> bool {
        self.submit_response_from_server.get()
    }

    /// Every connection up: the shared ones, then the miners' own (pass-through).
    pub fn sessions(&self) -> Vec<Rc<PoolSession>> {
        let mut all = self.sessions.borrow().clone();
        all.extend(self.passthrough.sessions());
        all
    }

    pub fn miner_count(&self) -> usize {
        self.miners.get()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Miners are held, connected, waiting for a connection to come back.
    fn is_holding(&self) -> bool {
        !self.held.borrow().is_empty()
    }

    fn least_loaded(&self) -> Option<Rc<PoolSession>> {
        let retiring = self.retiring.borrow();
        self.sessions
            .borrow()
            .iter()
            .filter(|s| s.is_up() && s.has_room() && !retiring.iter().any(|r| Rc::ptr_eq(r, s)))
            .min_by_key(|s| s.miner_count())
            .cloned()
    }

    /// [`Self::least_loaded`] among the connections the miner joins as it is (its
    /// layout and, on a 4-5 byte pool, its prefix free there), else among those of
    /// its layout, else among all: a miner given another extranonce costs it
    /// `mining.set_extranonce` or a reconnect (docs/stratum-upstream.md §3, §7).
    fn least_loaded_for(&self, miner: &MinerSession) -> Option<Rc<PoolSession>> {
        let retiring = self.retiring.borrow();
        let sessions = self.sessions.borrow();
        let open = || {
            sessions
                .iter()
                .filter(|s| s.is_up() && s.has_room() && !retiring.iter().any(|r| Rc::ptr_eq(r, s)))
        };
        let layout = miner.layout();
        open()
            .filter(|s| s.keeps(miner))
            .min_by_key(|s| s.miner_count())
            .or_else(|| {
                open()
                    .filter(|s| s.fits(layout))
                    .min_by_key(|s| s.miner_count())
            })
            .or_else(|| open().min_by_key(|s| s.miner_count()))
            .cloned()
    }

    /// The prefix to tell a miner of `layout` (a 4-5 byte pool's) that subscribes
    /// now: one free on the connection [`Self::least_loaded_for`] most likely gives
    /// it, the least loaded of that layout, so it joins without
    /// `mining.set_extranonce` or a reconnect. `None` when no such connection is up
    /// with a prefix free.
    pub fn suggest_prefix(&self, layout: MinerLayout) -> Option<u8> {
        let likely = {
            let retiring = self.retiring.borrow();
            self.sessions
                .borrow()
                .iter()
                .filter(|s| {
                    s.is_up()
                        && s.has_room()
                        && s.fits(layout)
                        && !retiring.iter().any(|r| Rc::ptr_eq(r, s))
                })
                .min_by_key(|s| s.miner_count())
                .cloned()
        };
        likely?.suggest_prefix()
    }

    /// Every connection up is full: one more slot dials the list (bounded by
    /// [`MAX_EXTRA_CONNECTIONS`]), unless a slot is dialling already.
    fn open_another_if_full(self: &Rc<Self>, agent: &Rc<Agent>) {
        let full = {
            let sessions = self.sessions.borrow();
            let up: Vec<_> = sessions.iter().filter(|s| s.is_up()).collect();
            !up.is_empty() && up.iter().all(|s| !s.has_room())
        };
        let slots = self.slots.get();
        let configured = agent
            .config()
            .advanced
            .pool_connection_number_per_subaccount;
        if !full
            || self.by_slot.borrow().len() < usize::from(slots)
            || slots >= configured.saturating_add(MAX_EXTRA_CONNECTIONS)
        {
            return;
        }
        log::info!(
            "{}: every connection is full, opening one more ({} in all)",
            self.name(),
            slots + 1
        );
        self.resize(agent, slots + 1);
    }

    /// A logged-in miner found no connection with room: it is held, as the miners of
    /// a lost connection are, until one has room, and another connection is opened.
    pub fn no_room_for(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>) {
        let hold = agent
            .config()
            .advanced
            .pool_failover_hold
            .max(agent.config().advanced.pool_connection_dial_timeout);
        self.hold(agent, vec![miner.clone()], hold);
        self.open_another_if_full(agent);
    }

    pub fn note_job(&self, job: &Rc<Job>) {
        *self.last_job.borrow_mut() = Some(job.clone());
    }

    /// An authorized miner joins: it gets a connection now, or waits for the first one.
    pub fn join(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>, auth_id: &str) {
        self.miners.set(self.miners.get() + 1);
        miner.set_group(Some(self.clone()));
        if passthrough::in_use(agent) {
            passthrough::start(agent, self, miner, Some(auth_id));
            return;
        }
        match self.least_loaded_for(miner) {
            Some(session) => {
                accept_login(agent, miner, auth_id);
                session.adopt(agent, miner);
            }
            None => {
                log::info!(
                    "{}: waiting for a pool connection of {}",
                    miner.name(),
                    self.name()
                );
                miner.state.set(MinerState::WaitingForPool);
                miner.set_pending_auth(auth_id);
                miner.set_deadline(Some(
                    Instant::now() + agent.config().advanced.pool_connection_dial_timeout,
                ));
                self.waiting.borrow_mut().push(miner.clone());
                self.open_another_if_full(agent);
            }
        }
    }

    /// The wait for a first connection ran out. Returns why the miner must go, or `None`
    /// when it stays on fake jobs.
    pub fn wait_expired(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        miner: &Rc<MinerSession>,
    ) -> Option<String> {
        self.waiting.borrow_mut().retain(|m| !Rc::ptr_eq(m, miner));
        let id = miner.take_pending_auth().unwrap_or_else(|| "null".into());
        if agent.config().always_keep_downconn {
            accept_login(agent, miner, &id);
            self.orphan(agent, miner.clone());
            None
        } else {
            miner.send(
                agent,
                &stratum::error_line(&id, code::INTERNAL_ERROR, "No pool connection available"),
            );
            Some(format!(
                "no pool connection for {} within the dial timeout",
                self.name()
            ))
        }
    }

    /// A miner left the agent.
    pub fn leave(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>) {
        if let Some(pool) = miner.set_pool(None) {
            pool.release(miner, Departure::Now);
        }
        for s in self.sessions.borrow().iter() {
            s.forget(miner.sid);
        }
        self.waiting.borrow_mut().retain(|m| !Rc::ptr_eq(m, miner));
        self.orphans.borrow_mut().retain(|m| !Rc::ptr_eq(m, miner));
        self.held.borrow_mut().retain(|m| !Rc::ptr_eq(m, miner));
        self.passthrough.leave(agent, miner.sid);
        self.miners.set(self.miners.get().saturating_sub(1));
        if self.miners.get() == 0 && self.subaccount.is_some() {
            log::info!(
                "sub-account {}: last miner left, closing its pool connections",
                self.name()
            );
            self.closed.set(true);
            for s in self.sessions.borrow().iter() {
                agent.spawn(s.clone().retire("sub-account has no miners left"));
            }
            agent.forget_group(self);
        }
    }

    /// Stops the slots and their connections.
    pub fn close(&self) {
        self.closed.set(true);
        for s in self.sessions.borrow().iter() {
            s.kill("sub-account closed");
        }
        self.passthrough.kill_all("sub-account closed");
    }

    fn session_up(self: &Rc<Self>, agent: &Rc<Agent>, session: &Rc<PoolSession>) {
        self.sessions.borrow_mut().push(session.clone());
        agent.note_version_mask(session.version_mask());
        agent.pool_connection_up(&session.entry, session.layout_extranonce2_size());
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for miner in waiting {
            if miner.is_closed() {
                continue;
            }
            if !session.has_room() && self.least_loaded().is_none() {
                self.waiting.borrow_mut().push(miner); // its dial timeout still runs
                continue;
            }
            let id = miner.take_pending_auth().unwrap_or_else(|| "null".into());
            accept_login(agent, &miner, &id);
            self.least_loaded_for(&miner)
                .unwrap_or_else(|| session.clone())
                .adopt(agent, &miner);
        }
        let held = std::mem::take(&mut *self.held.borrow_mut());
        if !held.is_empty() {
            log::info!(
                "{}: takes over the {} miners held for {}",
                session.name(),
                held.len(),
                self.name()
            );
        }
        for miner in held {
            if !miner.is_closed() {
                self.least_loaded_for(&miner)
                    .unwrap_or_else(|| session.clone())
                    .adopt(agent, &miner);
            }
        }
        let orphans = std::mem::take(&mut *self.orphans.borrow_mut());
        if !orphans.is_empty() {
            log::info!(
                "{}: back on a real pool connection: {} miners leave fake jobs",
                session.name(),
                orphans.len()
            );
        }
        for miner in orphans {
            if !miner.is_closed() {
                self.least_loaded_for(&miner)
                    .unwrap_or_else(|| session.clone())
                    .adopt(agent, &miner);
            }
        }
        self.rebalance(agent, session);
    }

    /// A connection that comes up late, or back after a failure, takes miners from the
    /// busiest siblings until loads differ by at most one: otherwise the survivors of
    /// every outage would carry the farm for good. A moved miner only gets a clean job,
    /// and its shares on the old connection's jobs still go there (see
    /// [`PoolSession::release`]). Loads that differ by no more than [`rebalance_margin`]
    /// are left alone: a move costs the miner its current work.
    fn rebalance(&self, agent: &Rc<Agent>, fresh: &Rc<PoolSession>) {
        let (busiest, total, up) = {
            let sessions = self.sessions.borrow();
            let up: Vec<_> = sessions.iter().filter(|s| s.is_up()).collect();
            let busiest = up.iter().map(|s| s.miner_count()).max().unwrap_or(0);
            let total: usize = up.iter().map(|s| s.miner_count()).sum();
            (busiest, total, up.len())
        };
        if busiest <= fresh.miner_count() + rebalance_margin(total, up) {
            return;
        }
        let mut moved = 0;
        loop {
            let busiest = self
                .sessions
                .borrow()
                .iter()
                // Only from connections of the same extranonce layout: the load is not
                // worth a reconnect.
                .filter(|s| {
                    s.is_up() && !Rc::ptr_eq(s, fresh) && s.layout_class() == fresh.layout_class()
                })
                .max_by_key(|s| s.miner_count())
                .cloned();
            let Some(busiest) = busiest else { break };
            if busiest.miner_count() <= fresh.miner_count() + 1 || !fresh.has_room() {
                break;
            }
            let Some(miner) = busiest.any_miner() else {
                break;
            };
            busiest.release(&miner, Departure::AfterGrace);
            fresh.adopt(agent, &miner);
            moved += 1;
        }
        if moved > 0 {
            log::info!(
                "{}: took over {moved} miners to balance the load",
                fresh.name()
            );
        }
    }

    fn session_down(self: &Rc<Self>, agent: &Rc<Agent>, session: &Rc<PoolSession>) {
        self.sessions
            .borrow_mut()
            .retain(|s| !Rc::ptr_eq(s, session));
        self.by_slot
            .borrow_mut()
            .retain(|(_, s)| !Rc::ptr_eq(s, session));
        self.retiring
            .borrow_mut()
            .retain(|s| !Rc::ptr_eq(s, session));
        agent.pool_connection_down(&session.entry);
        let mut miners = session.shut(agent);
        if miners.is_empty() {
            return;
        }
        if self.least_loaded().is_some() {
            log::info!(
                "{}: moving {} miners to sibling connections",
                session.name(),
                miners.len()
            );
            let mut no_room = Vec::new();
            for miner in miners.into_iter().filter(|m| !m.is_closed()) {
                match self.least_loaded_for(&miner) {
                    Some(s) => s.adopt(agent, &miner),
                    None => no_room.push(miner),
                }
            }
            if no_room.is_empty() {
                return;
            }
            // The siblings are full (4-5 byte pools): the rest wait as below.
            miners = no_room;
        }
        self.open_another_if_full(agent);
        if passthrough::in_use(agent) {
            // The pass-through entries of the list are dialled for each miner.
            for miner in miners.iter().filter(|m| !m.is_closed()) {
                passthrough::start(agent, self, miner, None);
            }
            return;
        }
        let hold = agent.config().advanced.pool_failover_hold;
        // The pool asked to be dialled again after a wait (client.reconnect): the
        // miners are held through it, and through the dial that follows.
        let hold = match session.reconnect_wait() {
            Some(wait) if !hold.is_zero() => {
                hold.max(wait + agent.config().advanced.pool_connection_dial_timeout)
            }
            _ => hold,
        };
        if hold.is_zero() {
            self.no_pool_for(agent, miners, &session.name());
            return;
        }
        log::warn!(
            "{}: no connection of {} is up: holding {} miners for up to {} s while the next pools are dialled",
            session.name(),
            self.name(),
            miners.len(),
            hold.as_secs()
        );
        self.hold(agent, miners, hold);
    }

    /// A logged-in miner the previous agent process handed over (`src/handoff.rs`):
    /// it is held, as the miners of a lost connection are, until this group has a
    /// connection up, for at least the dial timeout even if the config holds none.
    pub fn take_handed(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>) {
        self.miners.set(self.miners.get() + 1);
        miner.set_group(Some(self.clone()));
        miner.state.set(MinerState::Authorized);
        if passthrough::in_use(agent) {
            passthrough::start(agent, self, miner, None);
            return;
        }
        if let Some(session) = self.least_loaded_for(miner) {
            session.adopt(agent, miner);
            return;
        }
        let cfg = agent.config();
        let hold = cfg
            .advanced
            .pool_failover_hold
            .max(cfg.advanced.pool_connection_dial_timeout);
        self.hold(agent, vec![miner.clone()], hold);
    }

    /// Keeps `miners` connected for up to `hold`: the first connection up takes them.
    fn hold(self: &Rc<Self>, agent: &Rc<Agent>, miners: Vec<Rc<MinerSession>>, hold: Duration) {
        let first_of_hold = self.held.borrow().is_empty();
        self.held
            .borrow_mut()
            .extend(miners.into_iter().filter(|m| !m.is_closed()));
        if first_of_hold {
            let epoch = self.hold_epoch.get().wrapping_add(1);
            self.hold_epoch.set(epoch);
            agent.spawn(end_hold(agent.clone(), self.clone(), epoch, hold));
        }
    }

    /// No connection is up for these miners (any more): fake jobs or a disconnect.
    fn no_pool_for(self: &Rc<Self>, agent: &Rc<Agent>, miners: Vec<Rc<MinerSession>>, why: &str) {
        let miners: Vec<_> = miners.into_iter().filter(|m| !m.is_closed()).collect();
        if miners.is_empty() {
            return;
        }
        if agent.config().always_keep_downconn {
            log::warn!(
                "{why}: no connection of {} is up: {} miners stay on fake jobs",
                self.name(),
                miners.len()
            );
            for miner in miners {
                self.orphan(agent, miner);
            }
        } else {
            log::warn!(
                "{why}: no connection of {} is up: disconnecting {} miners",
                self.name(),
                miners.len()
            );
            for miner in miners {
                miner.close("no pool connection is up");
            }
        }
    }

    fn orphan(self: &Rc<Self>, agent: &Rc<Agent>, miner: Rc<MinerSession>) {
        self.orphans.borrow_mut().push(miner.clone());
        if let Some(job) = self.last_job.borrow().as_ref() {
            miner.send_shared(agent, &fake_job(job, 0, unix_now()));
        }
        if !self.feeding_fakes.replace(true) {
            agent.spawn(feed_fake_jobs(agent.clone(), self.clone()));
        }
    }
}

impl passthrough::Group for PoolGroup {
    fn subaccount(&self) -> Option<&str> {
        self.subaccount.as_deref()
    }

    fn is_closed(&self) -> bool {
        PoolGroup::is_closed(self)
    }

    fn connections(&self) -> &passthrough::Connections {
        &self.passthrough
    }

    fn shared(&self) -> Option<Rc<PoolSession>> {
        self.least_loaded()
    }

    fn take_back(&self, miner: &Rc<MinerSession>) {
        self.waiting.borrow_mut().retain(|m| !Rc::ptr_eq(m, miner));
        self.orphans.borrow_mut().retain(|m| !Rc::ptr_eq(m, miner));
        self.held.borrow_mut().retain(|m| !Rc::ptr_eq(m, miner));
    }

    fn no_pool_for(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>, why: &str) {
        PoolGroup::no_pool_for(self, agent, vec![miner.clone()], why);
    }

    fn accept_login(&self, agent: &Rc<Agent>, miner: &Rc<MinerSession>, auth_id: &str) {
        accept_login(agent, miner, auth_id);
    }

    fn pool_event(&self, session: &PoolSession, event: &str, why: &str) -> PoolEvent {
        pool_event(session, event, why)
    }

    async fn open(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        entry: &PoolEntry,
        user: String,
    ) -> Result<OpenSession, String> {
        open(agent, self, entry, user).await
    }
}

/// How far apart connection loads may be before a connection coming up takes miners:
/// a tenth of an even share, and at least two miners.
fn rebalance_margin(miners: usize, connections: usize) -> usize {
    (miners / (10 * connections.max(1))).max(2)
}

/// The session a miner's share goes to: the job names its connection (the miner's
/// own, or the one it was just moved from while that one still takes its shares).
pub fn session_for_share(miner: &MinerSession, connection: u32) -> Option<Rc<PoolSession>> {
    let current = miner.pool().filter(|p| p.is_up());
    if let Some(pool) = current.filter(|p| p.id == connection) {
        return Some(pool);
    }
    let group = miner.group()?;
    let sessions = group.sessions.borrow();
    sessions
        .iter()
        .find(|s| s.id == connection && s.is_up() && s.still_registered(miner.sid))
        .cloned()
}

fn accept_login(agent: &Rc<Agent>, miner: &Rc<MinerSession>, auth_id: &str) {
    miner.state.set(MinerState::Authorized);
    miner.set_deadline(None);
    log::info!("{}: authorized", miner.name());
    miner.send(agent, &stratum::result_line(auth_id, "true"));
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Lets the held miners go when no connection came up within the hold.
async fn end_hold(agent: Rc<Agent>, group: Rc<PoolGroup>, epoch: u32, hold: Duration) {
    Timer::after(hold).await;
    if group.hold_epoch.get() != epoch || group.is_closed() {
        return;
    }
    let held = std::mem::take(&mut *group.held.borrow_mut());
    let why = format!("{} s failover hold", hold.as_secs());
    group.no_pool_for(&agent, held, &why);
}

/// Sends every orphan a fresh fake job each `fake_job_notify_interval` until none is left.
async fn feed_fake_jobs(agent: Rc<Agent>, group: Rc<PoolGroup>) {
    let interval = agent.config().advanced.fake_job_notify_interval;
    let mut seq = 1u32;
    loop {
        Timer::after(interval).await;
        let orphans = group.orphans.borrow().clone();
        if orphans.is_empty() || group.is_closed() {
            group.feeding_fakes.set(false);
            return;
        }
        let Some(job) = group.last_job.borrow().clone() else {
            continue;
        };
        let line = fake_job(&job, seq, unix_now());
        seq = seq.wrapping_add(1);
        for miner in orphans {
            miner.send_shared(&agent, &line);
        }
    }
}

/// A status history record of `session`'s connection coming up or going down.
fn pool_event(session: &PoolSession, event: &str, why: &str) -> PoolEvent {
    PoolEvent::new(
        unix_seconds(SystemTime::now()),
        event,
        session.id,
        format!("{}:{}", session.entry.host, session.entry.port),
        session.subaccount.clone(),
        why,
    )
}

/// The name a connection of `group` to `entry` mines for: the sub-account it
/// authorizes as on the agent protocol, the user (the entry's template filled in with
/// the group's sub-account) on a Stratum pool.
fn connection_user(agent: &Agent, group: &PoolGroup, entry: &PoolEntry) -> Result<String, String> {
    let sub = group.subaccount.as_deref();
    match &entry.stratum {
        None => Ok(sub.unwrap_or(&entry.subaccount).to_string()),
        Some(s) => UserTemplate::parse(&s.user, agent.config().multi_user_mode, false)?
            .user_for(sub.unwrap_or(""), ""),
    }
}

/// One connection slot: dial the pool list in order, run the session, start again.
async fn run_slot(agent: Rc<Agent>, group: Rc<PoolGroup>, slot: u16) {
    let mut backoff = Duration::from_secs(1);
    // Spread the slots' first dials a little so a farm's agents do not hit the pool in step.
    Timer::after(Duration::from_millis(50 * slot as u64)).await;
    // Closed, stopping (nothing more is dialled or logged), or removed by a reload.
    let surplus =
        |group: &PoolGroup| group.is_closed() || agent.is_stopping() || slot >= group.slots.get();
    // Where a pool's client.reconnect asked to be dialled: tried once, first, and
    // never kept (a failed dial of it falls back to the list).
    let mut asked: Option<PoolEntry> = None;
    while !surplus(&group) {
        let mut stable = false;
        let first = asked.take();
        let following = first.is_some();
        let entries = first.into_iter().chain(agent.config().pools.clone());
        for (n, entry) in entries.enumerate() {
            if surplus(&group) {
                return;
            }
            if passthrough::is_passthrough(&entry) {
                continue; // each miner dials it for itself
            }
            let user = connection_user(&agent, &group, &entry);
            let label = format!(
                "pool {} ({})",
                crate::upstream::proxy_url::host_port(&entry.host, entry.port),
                user.as_deref().unwrap_or("?")
            );
            let opened = match user {
                Ok(user) => open(&agent, &group, &entry, user).await,
                Err(why) => Err(why),
            };
            match opened {
                Ok((session, mut reader, mut frames)) => {
                    agent.dial_succeeded(&label);
                    if surplus(&group) {
                        session.kill("not needed any more");
                        session.shut(&agent);
                        return;
                    }
                    log::info!(
                        "{}: up via {} (extranonce1 {}, version mask {:08x}, share responses {})",
                        session.name(),
                        session.route,
                        session.extranonce1(),
                        session.version_mask(),
                        if session.share_responses() {
                            "on"
                        } else {
                            "off"
                        }
                    );
                    group.by_slot.borrow_mut().push((slot, session.clone()));
                    agent.status.pool_event(pool_event(&session, "up", ""));
                    group.session_up(&agent, &session);
                    let started = Instant::now();
                    let why = session
                        .read_loop(&agent, &mut reader, &mut frames, None)
                        .await
                        .err()
                        .unwrap_or_default();
                    if group.is_closed() {
                        log::info!("{}: closed: {why}", session.name());
                    } else {
                        log::warn!("{}: down: {why}", session.name());
                    }
                    if session.reconnect_wait().is_some() {
                        // The pool asked to go, and still takes what was sent before
                        // (ckpool drops the client 60 s later): shares already
                        // forwarded, waiting in the buffer, are written first.
                        session.drain(Duration::from_secs(2)).await;
                    }
                    agent.status.pool_event(pool_event(&session, "down", &why));
                    group.session_down(&agent, &session);
                    stable = started.elapsed() >= STABLE_AFTER;
                    if let Some(r) = session.take_reconnect() {
                        let mut target = session.entry.clone();
                        target.host = r.host.unwrap_or(target.host);
                        target.port = r.port.unwrap_or(target.port);
                        let wait = Duration::from_secs(r.wait_seconds.unwrap_or(0).into());
                        log::info!(
                            "{}: following the pool's client.reconnect: dialling {} in {} s (this once; the proxy and TLS settings of the entry stay)",
                            session.name(),
                            crate::upstream::proxy_url::host_port(&target.host, target.port),
                            wait.as_secs()
                        );
                        asked = Some(target);
                        Timer::after(wait).await;
                    }
                    break; // start again from the first pool of the list
                }
                Err(why) => {
                    agent.status.pool_event(PoolEvent::new(
                        unix_seconds(SystemTime::now()),
                        "dial_failed",
                        0,
                        format!("{}:{}", entry.host, entry.port),
                        connection_user(&agent, &group, &entry).unwrap_or_default(),
                        &why,
                    ));
                    agent.dial_failed(&label, &why);
                    if following && n == 0 {
                        log::warn!(
                            "{label}: the pool's client.reconnect could not be followed ({why}): dialling the pool list"
                        );
                    }
                }
            }
        }
        if surplus(&group) {
            return;
        }
        if stable {
            backoff = Duration::from_secs(1);
        } else {
            // While miners are held, a pool that is back must be found before the hold
            // runs out: the backoff would otherwise sleep through its last 15 s.
            let wait = if group.is_holding() {
                backoff.min(HOLD_RETRY)
            } else {
                backoff
            };
            Timer::after(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// How long a connection handing its miners over keeps taking their shares on its
/// jobs: an ASIC takes a moment to drop its old work after a clean job.
const HAND_OVER: Duration = Duration::from_secs(2);

/// [`PoolGroup::redial`]'s work, slot by slot.
async fn redial_slots(agent: Rc<Agent>, group: Rc<PoolGroup>, epoch: u32) {
    let current = |group: &PoolGroup| !group.is_closed() && group.redial_epoch.get() == epoch;
    let mut slots: Vec<u16> = group.by_slot.borrow().iter().map(|(s, _)| *s).collect();
    slots.sort_unstable();
    for slot in slots {
        if !current(&group) {
            return;
        }
        let Some(old) = group.slot_session(slot) else {
            continue; // dialling already: it reads the new list on its next round
        };
        if group.hand_over(&agent, &old) {
            Timer::after(HAND_OVER).await;
            if !current(&group) {
                group.retiring.borrow_mut().retain(|s| !Rc::ptr_eq(s, &old));
                return;
            }
            old.clone()
                .retire("config reloaded: dialling the pool list again")
                .await;
        } else {
            // The only connection: its miners are held (failover hold) until the
            // slot is up again on the new list.
            old.kill("config reloaded: dialling the pool list again");
        }
        // The next connection goes only once this slot is back, or could not be.
        let cfg = agent.config();
        let give_up = Instant::now()
            + cfg.advanced.pool_connection_dial_timeout * cfg.pools.len().max(1) as u32;
        while current(&group) && Instant::now() < give_up {
            match group.slot_session(slot) {
                Some(s) if !Rc::ptr_eq(&s, &old) => break,
                _ => {
                    Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

type OpenSession = passthrough::Opened;

/// Dials one pool entry and completes the handshake within the dial timeout.
async fn open(
    agent: &Rc<Agent>,
    group: &Rc<PoolGroup>,
    entry: &PoolEntry,
    subaccount: String,
) -> Result<OpenSession, String> {
    let dial_timeout = agent.config().advanced.pool_connection_dial_timeout;
    let deadline = Instant::now() + dial_timeout;
    let connector = agent.connector();
    let stratum_probe = StratumConnection::first_request();
    let probe = match entry.stratum {
        Some(_) => Probe::session_request(&stratum_probe),
        None => Probe::CAPABILITIES,
    };
    let connect = connector.connect_with(&entry.host, entry.port, probe);
    let timeout = async {
        Timer::at(deadline).await;
        Err(format!("no connection within {} s", dial_timeout.as_secs()))
    };
    let Connected {
        stream,
        leftover,
        route,
    } = smol::future::or(
        async {
            connect
                .await
                .map_err(|e| format!("cannot connect: {}", e.failures_text()))
        },
        timeout,
    )
    .await?;
    let id = agent.next_pool_id();
    let stratum = entry
        .stratum
        .as_ref()
        .map(|s| stratum_connection(agent, id, &subaccount, s));
    let (session, wake_rx) = PoolSession::new(id, entry.clone(), subaccount, route, group, stratum);
    let (mut reader, writer) = smol::io::split(stream);
    let writer = agent.spawn_task(session.clone().write_loop(
        writer,
        wake_rx,
        agent.config().advanced.submit_coalesce,
    ));
    session.set_writer(writer);
    session.send_handshake();
    let mut frames = FrameReader::new(256 * 1024);
    frames.extend(&leftover);
    match session
        .read_loop(agent, &mut reader, &mut frames, Some(deadline))
        .await
    {
        Ok(()) => Ok((session, reader, frames)),
        Err(why) => {
            session.kill("handshake failed");
            session.shut(agent);
            Err(format!("handshake via {} failed: {why}", session.route))
        }
    }
}

/// The protocol state of a new connection to a Stratum pool, authorizing as `user`.
fn stratum_connection(
    agent: &Agent,
    id: u32,
    user: &str,
    entry: &StratumEntry,
) -> StratumConnection {
    let a = &agent.config().advanced;
    StratumConnection::new(Settings {
        connection: id,
        user: user.to_string(),
        password: entry.password.clone(),
        user_agent: STRATUM_USER_AGENT.to_string(),
        extranonce_subscribe: entry.extranonce_subscribe,
        vardiff: VardiffConfig::for_interval(60.0 / f64::from(a.stratum_shares_per_minute.max(1))),
        start_difficulty: a.stratum_start_difficulty,
        min_difficulty: a.stratum_min_difficulty,
        passthrough: entry.identity_passthrough,
    })
}

/// What a Stratum pool sees as the agent's user agent (a btcpool server needs
/// `btccom-agent/`, which only its agent-protocol port speaks).
const STRATUM_USER_AGENT: &str = concat!("btcagent/", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::rebalance_margin;

    #[test]
    fn small_differences_are_left_alone() {
        assert_eq!(rebalance_margin(1, 5), 2);
        assert_eq!(rebalance_margin(40, 5), 2);
        assert_eq!(rebalance_margin(1000, 5), 20);
        assert_eq!(rebalance_margin(10_000, 0), 1000);
    }
}
