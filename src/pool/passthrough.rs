//! Identity pass-through (docs/stratum-upstream.md §8): a Stratum pool entry with
//! `identity_passthrough` gives each miner a connection of its own, opened when the miner
//! authorizes and authorized as the entry's user template filled in with the miner's
//! `{worker}` (and `{sub}`), so the pool sees every worker and sets each one's difficulty.
//!
//! Each such miner has a task of its own that walks the pool list the way a group's slot
//! does: a pass-through entry is dialled for this miner alone; an entry the miners share
//! (an aggregated Stratum pool or an agent-protocol one) is taken when the group has a
//! shared connection up, and the miner then stays with the group as any other miner (the
//! task ends). The connection itself is a [`PoolSession`] like any other: the same share
//! check, routes, status and shutdown; its protocol state gives the miner the pool's
//! difficulty as sent instead of a vardiff. Miners keep the `0000SSSS` + 4 layout, so only
//! pools with an extranonce2 of 8 bytes or more can carry them (smaller ones are refused
//! at subscribe, and the walk goes on to the next entry).

use super::session::{Departure, PoolSession};
use crate::agent::Agent;
use crate::config::PoolEntry;
use crate::miner::{MinerSession, MinerState};
use crate::protocol::framing::FrameReader;
use crate::protocol::stratum_upstream::user::UserTemplate;
use crate::status::history::PoolEvent;
use crate::status::unix_seconds;
use async_io::Timer;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

/// A connection that dies sooner than this after coming up is retried with backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Descriptors kept for everything but miners and their connections: the listener,
/// the status server, logs, the shared pool connections, a reload's dials.
const RESERVED_DESCRIPTORS: u64 = 64;

/// A connection just dialled, its handshake done: the session, its read half and what
/// was read past the handshake.
pub type Opened = (
    Rc<PoolSession>,
    smol::io::ReadHalf<crate::upstream::PoolStream>,
    FrameReader,
);

/// What a miner's walk needs of its group. The group (src/pool/group.rs) implements
/// it and calls this file's hooks; this file does not depend on the group's.
pub(super) trait Group: 'static {
    /// Its sub-account; `None` in single-user mode.
    fn subaccount(&self) -> Option<&str>;
    fn is_closed(&self) -> bool;
    /// Its miners' own connections.
    fn connections(&self) -> &Connections;
    /// The shared connection a miner would join now, if one is up.
    fn shared(&self) -> Option<Rc<PoolSession>>;
    /// `miner` is placed by its walk: it no longer waits, is held or on fake jobs.
    fn take_back(&self, miner: &Rc<MinerSession>);
    /// No connection for `miner` within the hold: fake jobs or a disconnect.
    fn no_pool_for(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>, why: &str);
    /// Answers the miner's authorize: it mines from now on.
    fn accept_login(&self, agent: &Rc<Agent>, miner: &Rc<MinerSession>, auth_id: &str);
    /// A status history record of `session` coming up or going down.
    fn pool_event(&self, session: &PoolSession, event: &str, why: &str) -> PoolEvent;
    /// Dials `entry`, authorizing as `user`, within the dial timeout.
    async fn open(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        entry: &PoolEntry,
        user: String,
    ) -> Result<Opened, String>;
}

/// True when an entry gives each miner its own connection.
pub fn is_passthrough(entry: &PoolEntry) -> bool {
    entry
        .stratum
        .as_ref()
        .is_some_and(|s| s.identity_passthrough)
}

/// True when the pool list has a pass-through entry: its miners walk the list one by
/// one instead of waiting for the group's shared connections.
pub fn in_use(agent: &Agent) -> bool {
    agent.config().pools.iter().any(is_passthrough)
}

/// How many pass-through connections the open-files limit `nofile` allows: each takes
/// two descriptors (the miner's and its pool's), and a quarter of the limit stays for
/// handshakes (what `agent.rs` lets strangers take) besides [`RESERVED_DESCRIPTORS`].
pub fn connection_cap(nofile: Option<u64>) -> usize {
    match nofile {
        None => usize::MAX,
        Some(n) => {
            let for_miners = (n - n / 4).saturating_sub(RESERVED_DESCRIPTORS);
            usize::try_from(for_miners / 2).unwrap_or(usize::MAX)
        }
    }
}

/// A group's pass-through connections, by the session id of their miner.
#[derive(Default)]
pub struct Connections {
    up: RefCell<HashMap<u16, Rc<PoolSession>>>,
    /// Dials under way (each holds a descriptor too).
    dialling: Cell<usize>,
    /// The open-files cap was logged, and nothing was opened since.
    cap_logged: Cell<bool>,
}

impl Connections {
    /// The connections up, for the status, shutdown and handoff.
    pub fn sessions(&self) -> Vec<Rc<PoolSession>> {
        let mut v: Vec<_> = self.up.borrow().values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Connections up or being dialled.
    pub fn count(&self) -> usize {
        self.up.borrow().len() + self.dialling.get()
    }

    /// The miner left the agent: its connection closes once what is buffered for the
    /// pool (its last shares) is written.
    pub fn leave(&self, agent: &Rc<Agent>, sid: u16) {
        if let Some(session) = self.up.borrow_mut().remove(&sid) {
            agent.spawn(session.retire("its miner left"));
        }
    }

    /// Ends every connection: a reload (each miner walks the new list), or the group
    /// closing.
    pub fn kill_all(&self, why: &str) {
        for s in self.up.borrow().values() {
            s.kill(why.to_string());
        }
    }
}

/// Every pass-through connection of the agent, in all groups.
fn agent_wide_count(agent: &Agent) -> usize {
    agent.groups().iter().map(|g| g.connections().count()).sum()
}

/// An authorized miner (or one handed over by the previous process, without an
/// authorize to answer) starts its walk of the pool list.
pub(super) fn start<G: Group>(
    agent: &Rc<Agent>,
    group: &Rc<G>,
    miner: &Rc<MinerSession>,
    auth_id: Option<&str>,
) {
    if let Some(id) = auth_id {
        miner.state.set(MinerState::WaitingForPool);
        miner.set_pending_auth(id);
        // The group's wait for a first connection (`wait_expired`), long enough for a
        // dial of every entry.
        let cfg = agent.config();
        let wait = cfg.advanced.pool_connection_dial_timeout * cfg.pools.len().max(1) as u32;
        miner.set_deadline(Some(Instant::now() + wait));
    }
    let lost = auth_id.is_none();
    agent.spawn(walk(agent.clone(), group.clone(), miner.clone(), lost));
}

/// What one round of the pool list gave the miner.
enum Round {
    /// It is on the group's shared connections now: the walk is over.
    Shared,
    /// Its own connection came up, and is down again after `lasted`.
    Lost { lasted: Duration },
    /// Nothing took it.
    Nothing,
    /// It left, or the agent or its group is stopping.
    Over,
}

/// The miner's walk: round after round of the pool list until it leaves or settles on
/// a shared connection. A miner that `lost` its connection (or was handed over
/// without one) is held for `pool_failover_hold` meanwhile, as the group holds the
/// miners of a lost shared connection.
async fn walk<G: Group>(agent: Rc<Agent>, group: Rc<G>, miner: Rc<MinerSession>, lost: bool) {
    let mut backoff = Duration::from_secs(1);
    // Since when the miner has had no connection after losing one.
    let mut lost_since = lost.then(Instant::now);
    loop {
        match round(&agent, &group, &miner).await {
            Round::Shared | Round::Over => return,
            Round::Lost { lasted } => {
                lost_since = Some(Instant::now());
                if lasted >= STABLE_AFTER {
                    backoff = Duration::from_secs(1);
                    continue; // straight back to the top of the list
                }
            }
            Round::Nothing => {}
        }
        if let Some(since) = lost_since.filter(|_| miner.pool().is_none()) {
            let hold = agent.config().advanced.pool_failover_hold;
            if since.elapsed() >= hold && !miner.is_closed() {
                lost_since = None;
                // Fake jobs or a disconnect, as for the miners of a lost shared connection.
                group.no_pool_for(
                    &agent,
                    &miner,
                    &format!("{}: {} s failover hold", miner.name(), hold.as_secs()),
                );
            }
        }
        // Spread a farm's miners, which lost their pool at the same moment, over a second.
        let spread = Duration::from_millis(u64::from(miner.sid) % 1000);
        let wait = if lost_since.is_some() {
            backoff.min(Duration::from_secs(1))
        } else {
            backoff
        };
        Timer::after(wait + spread).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One round of the pool list for `miner`.
async fn round<G: Group>(agent: &Rc<Agent>, group: &Rc<G>, miner: &Rc<MinerSession>) -> Round {
    let over = || miner.is_closed() || group.is_closed() || agent.is_stopping();
    for entry in agent.config().pools.clone() {
        if over() {
            return Round::Over;
        }
        if !is_passthrough(&entry) {
            if let Some(shared) = group.shared() {
                group.take_back(miner);
                if let Some(id) = miner.take_pending_auth() {
                    group.accept_login(agent, miner, &id);
                }
                shared.adopt(agent, miner);
                log::info!("{}: on the shared {}", miner.name(), shared.name());
                return Round::Shared;
            }
            continue;
        }
        if let Some(round) = own_connection(agent, group, miner, &entry).await {
            return round;
        }
    }
    if over() {
        Round::Over
    } else {
        Round::Nothing
    }
}

/// Dials `entry` for `miner` alone and serves it until the connection ends; `None` when
/// it could not be had (the walk goes on to the next entry).
async fn own_connection<G: Group>(
    agent: &Rc<Agent>,
    group: &Rc<G>,
    miner: &Rc<MinerSession>,
    entry: &PoolEntry,
) -> Option<Round> {
    let cap = connection_cap(crate::fd_limit::current());
    if agent_wide_count(agent) >= cap {
        if !group.connections().cap_logged.replace(true) {
            log::warn!(
                "{}: the open-files limit allows {cap} pass-through connections (two descriptors each): miners beyond go on to the next pool entry",
                miner.name()
            );
        }
        return None;
    }
    group.connections().cap_logged.set(false);
    let user = user_for(agent, &**group, miner, entry);
    let label = format!(
        "pool {} ({})",
        crate::upstream::proxy_url::host_port(&entry.host, entry.port),
        user.as_deref().unwrap_or("?")
    );
    let connections = group.connections();
    connections.dialling.set(connections.dialling.get() + 1);
    let opened = match user.clone() {
        Ok(user) => group.open(agent, entry, user).await,
        Err(why) => Err(why),
    };
    connections.dialling.set(connections.dialling.get() - 1);
    let (session, mut reader, mut frames) = match opened {
        Ok(opened) => opened,
        Err(why) => {
            agent.status.pool_event(PoolEvent::new(
                unix_seconds(SystemTime::now()),
                "dial_failed",
                0,
                format!("{}:{}", entry.host, entry.port),
                user.unwrap_or_default(),
                &why,
            ));
            agent.dial_failed(&label, &why);
            return None;
        }
    };
    agent.dial_succeeded(&label);
    if miner.is_closed() || group.is_closed() || agent.is_stopping() {
        session.kill("its miner left");
        session.shut(agent);
        return Some(Round::Over);
    }
    log::info!(
        "{}: up via {} for {} alone (extranonce1 {}, version mask {:08x}, pool difficulty {})",
        session.name(),
        session.route,
        miner.name(),
        session.extranonce1(),
        session.version_mask(),
        session.pool_difficulty()
    );
    connections
        .up
        .borrow_mut()
        .insert(miner.sid, session.clone());
    // Its pool's extranonce2 size, for the layout the next miners are told at subscribe.
    agent.pool_connection_up(&session.entry, session.layout_extranonce2_size());
    agent
        .status
        .pool_event(group.pool_event(&session, "up", ""));
    group.take_back(miner);
    if let Some(id) = miner.take_pending_auth() {
        group.accept_login(agent, miner, &id);
    }
    if let Some(old) = miner.pool() {
        // Back from a shared connection (a reload): its shares there still count.
        old.release(miner, Departure::AfterGrace);
    }
    session.adopt(agent, miner);
    let started = Instant::now();
    let why = session
        .read_loop(agent, &mut reader, &mut frames, None)
        .await
        .err()
        .unwrap_or_default();
    connections
        .up
        .borrow_mut()
        .retain(|_, s| !Rc::ptr_eq(s, &session));
    agent.pool_connection_down(&session.entry);
    agent
        .status
        .pool_event(group.pool_event(&session, "down", &why));
    session.shut(agent);
    if miner.is_closed() || group.is_closed() || agent.is_stopping() {
        log::info!("{}: closed: {why}", session.name());
        return Some(Round::Over);
    }
    log::warn!(
        "{}: down: {why}; {} walks the pool list again",
        session.name(),
        miner.name()
    );
    Some(Round::Lost {
        lasted: started.elapsed(),
    })
}

/// The user `miner`'s own connection to `entry` authorizes as.
fn user_for<G: Group>(
    agent: &Agent,
    group: &G,
    miner: &MinerSession,
    entry: &PoolEntry,
) -> Result<String, String> {
    let Some(s) = &entry.stratum else {
        return Err("not a Stratum pool".into());
    };
    UserTemplate::parse(&s.user, agent.config().multi_user_mode, true)?
        .user_for(group.subaccount().unwrap_or(""), &miner.worker())
}

#[cfg(test)]
mod tests {
    use super::connection_cap;

    #[test]
    fn each_connection_takes_two_descriptors_beside_the_handshakes_quarter() {
        assert_eq!(connection_cap(None), usize::MAX);
        // procd's 65536: 49,152 for miners, less the reserve, two descriptors each.
        assert_eq!(connection_cap(Some(65536)), (49152 - 64) / 2);
        assert_eq!(connection_cap(Some(1024)), (768 - 64) / 2);
        assert_eq!(connection_cap(Some(64)), 0);
        assert_eq!(connection_cap(Some(0)), 0);
    }
}
