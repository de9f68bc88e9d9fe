//! One upstream Stratum connection's protocol state, free of I/O: the handshake, the
//! pool's jobs, extranonce and difficulty, every miner's own difficulty, and the
//! verdict on each share. The pool session (src/pool/session.rs) feeds it the pool's
//! lines and the miners' shares, and carries out what it returns.
//!
//! Miners' extranonces split the pool's extranonce2 (docs/stratum-upstream.md §3,
//! [`Split`]): on a pool of 8 bytes or more (ckpool's and most pools') they see what
//! they see on an agent-protocol one, an extranonce1 of `0000SSSS` (their session id)
//! and 4 bytes of extranonce2, so a miner moves between connections and pools of
//! either protocol without being told; 6-7 bytes give `SSSS` + 4, 4-5 bytes a prefix
//! unique on this connection ([`PrefixPool`], 256 miners) + 3-4. Below 4 the pool is
//! refused at subscribe, and the slot tries the next pool of the list.

use super::extranonce::{Layout, MinerExtranonce2, MinerLayout, PrefixPool, Split};
use super::hash::Target;
use super::job::{Share as PoolShare, UpstreamJob};
use super::messages::{Reconnect, UpstreamMessage, Verdict};
use super::requests::{self, Submit};
use super::vardiff::{start_difficulty, Vardiff, VardiffConfig, VardiffRules};
use crate::protocol::exmessage::Share;
use crate::protocol::job::{miner_job_id, Job};
use crate::protocol::stratum::{self, code};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The handshake's request ids; a submit's id is [`SUBMIT_ID_BASE`] + its index in
/// the session's list of shares waiting for a verdict.
pub const CONFIGURE_ID: u32 = 1;
pub const SUBSCRIBE_ID: u32 = 2;
pub const AUTHORIZE_ID: u32 = 3;
pub const EXTRANONCE_SUBSCRIBE_ID: u32 = 4;
/// `mining.suggest_difficulty`: never awaited (ckpool answers it with a
/// `mining.set_difficulty`, not a response); any answer is ignored.
pub const SUGGEST_DIFFICULTY_ID: u32 = 5;
pub const SUBMIT_ID_BASE: u32 = 16;

/// Jobs kept for share checks: a pool's jobs live until its next clean job, and
/// pools send a few a minute, so 16 covers several minutes (ckpool's simulator keeps
/// as many).
const JOBS_KEPT: usize = 16;

/// Share digests kept for duplicate detection, over all the connection's jobs: at
/// 1,000 shares/s (10,000 miners) a job lives some 30 s, so this covers the current
/// job of such a farm twice over, in about a megabyte at most. Beyond it shares are
/// not remembered (and a repeat of them not detected) until old jobs drop out.
const SHARES_REMEMBERED: usize = 65_536;

/// The silence allowed on a connection is this many times the longest gap between
/// two of the pool's jobs seen on it: pools send jobs on a timer (ckpool every 30 s,
/// `update_interval`) and on every block, so a pool silent for three of its own
/// intervals is gone.
const SILENCE_JOB_GAPS: u32 = 3;
/// The gap assumed before a second job has shown the pool's own (3 x 60 s = 3
/// minutes of silence allowed on a fresh connection).
const ASSUMED_JOB_GAP: Duration = Duration::from_secs(60);
/// The longest silence ever allowed.
const MAX_SILENCE: Duration = Duration::from_secs(3600);

/// The share interval pools aim their vardiff at, to turn the connection's hashrate
/// into the difficulty suggested: ckpool's (`add_submit`: 0.3 diff-1 shares per
/// second per unit of difficulty, a share every 3.33 s).
const POOL_SHARE_INTERVAL: f64 = 3.33;
/// A suggestion needs a window of at least this long...
const SUGGEST_MIN_WINDOW: Duration = Duration::from_secs(2);
/// ...with this many shares, or at least this long, to measure the hashrate.
const SUGGEST_SHARES: u32 = 16;
const SUGGEST_MAX_WINDOW: Duration = Duration::from_secs(30);
/// At most one suggestion this often, and only when the estimate moved more than
/// [`SUGGEST_CHANGE`] times from the last one.
const SUGGEST_MIN_GAP: Duration = Duration::from_secs(60);
const SUGGEST_CHANGE: f64 = 2.0;

/// Where a connection stands in its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    Sent,
    Subscribed,
    Up,
}

/// A miner's share as it submitted it, in the miner's own layout (the agent protocol
/// and the standard layout: a 4-byte extranonce2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinerShare {
    pub job_id: u8,
    pub session_id: u16,
    pub extranonce2: MinerExtranonce2,
    pub nonce: u32,
    /// Present only when it differs from the job's.
    pub ntime: Option<u32>,
    pub version_mask: Option<u32>,
}

impl MinerShare {
    /// The agent protocol's SUBMIT_SHARE, for a 4-byte extranonce2.
    pub fn for_agent_protocol(&self) -> Option<Share> {
        Some(Share {
            job_id: self.job_id,
            session_id: self.session_id,
            extranonce2: self.extranonce2.as_u32()?,
            nonce: self.nonce,
            ntime: self.ntime,
            version_mask: self.version_mask,
        })
    }
}

/// A miner taken onto the connection: its difficulty here and the layout it mines
/// with (its prefix, on a 4-5 byte pool).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    pub difficulty: f64,
    pub layout: MinerLayout,
}

/// What the pool entry and the config say about one connection.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The pool session's id: miners see job ids `"<connection>-<n>"`.
    pub connection: u32,
    /// The user the connection authorizes as (the entry's template filled in).
    pub user: String,
    pub password: String,
    pub user_agent: String,
    pub extranonce_subscribe: bool,
    pub vardiff: VardiffConfig,
    pub start_difficulty: f64,
    pub min_difficulty: f64,
    /// Identity pass-through (docs/stratum-upstream.md §8): the connection carries one
    /// miner, whose difficulty is the pool's as sent (no vardiff, no floor).
    pub passthrough: bool,
}

/// What the session must do after a line from the pool.
#[derive(Debug)]
pub enum Event {
    /// The handshake is done: the connection can take miners.
    Up,
    /// Bytes for the pool (an answer to its request, `mining.extranonce.subscribe`).
    Send(Vec<u8>),
    /// A new job for every miner of the connection.
    Job(Rc<Job>),
    /// These miners' difficulty changed (the pool lowered its own below theirs).
    MinerDifficulty(Vec<(u16, f64)>),
    /// The version-rolling mask changed (`mining.set_version_mask`, or a late configure
    /// answer).
    VersionMask(u32),
    /// The pool's verdict on the submit with this index.
    Verdict { index: u16, verdict: Verdict },
    /// `client.reconnect`: the connection is to end and be dialled again as asked
    /// (the host and port checked, the wait at most an hour).
    Reconnect(Reconnect),
    /// Worth a line in the log.
    Notice(String),
}

/// What becomes of one share.
#[derive(Debug, PartialEq)]
pub enum Judgement {
    /// It meets the pool's target: write `line` to the pool. It also met the miner's
    /// target, at `difficulty`.
    Forward {
        line: Vec<u8>,
        difficulty: f64,
    },
    /// It meets only the miner's target: accepted by the agent, at `difficulty`.
    Accept {
        difficulty: f64,
    },
    Reject {
        code: i32,
        message: &'static str,
    },
}

/// A judgement, and the miner's new difficulty when the share made the vardiff move.
#[derive(Debug, PartialEq)]
pub struct Judged {
    pub judgement: Judgement,
    pub new_difficulty: Option<f64>,
}

struct StoredJob {
    /// The miners' job number (`"<connection>-<number>"`).
    number: u8,
    /// Counts the connection's jobs, to tell jobs from before a difficulty change.
    seq: u32,
    job: UpstreamJob,
    extranonce1: Vec<u8>,
    split: Split,
    /// The pool's difficulty when the job arrived.
    pool_difficulty: f64,
    /// Digests of the shares judged valid on this job ([`share_digest`]).
    seen: SeenShares,
}

/// A set of share digests: already well mixed, so they are their own hash.
type SeenShares = HashSet<u64, BuildHasherDefault<DigestHasher>>;

#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 digests are hashed; this keeps any other use correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One share's 64-bit digest: what makes it the same share on one job (the miner's
/// session id, standing for its extranonce1, its extranonce2, ntime, nonce and
/// version bits; 112 bits), mixed by SplitMix64's finalizer so that two different
/// shares collide with a chance of 2^-64.
fn share_digest(session_id: u16, extranonce2: u64, ntime: u32, nonce: u32, bits: u32) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // A miner's extranonce2 is 4 bytes or fewer on every shared layout, so this is
    // the two side by side; a longer one (up to 8) overlaps the session id, which
    // only mixes one miner's shares with its own.
    let a = (u64::from(session_id) << 32) ^ extranonce2;
    let b = u64::from(ntime) << 32 | u64::from(nonce);
    mix(mix(mix(a ^ 0x9e37_79b9_7f4a_7c15) ^ b) ^ u64::from(bits))
}

/// One miner's difficulty on this connection.
struct MinerDifficulty {
    vardiff: Vardiff,
    /// Its difficulty before the last change, and the newest job then: shares on that
    /// job or older are judged at the easier of the two, as pools judge theirs.
    previous: f64,
    changed_after: u32,
    /// Its extranonce1 on a [`Layout::ConnectionPrefix`] connection (0 elsewhere).
    prefix: u8,
}

pub struct StratumConnection {
    settings: Settings,
    handshake: Handshake,
    authorized: bool,
    extranonce1: Vec<u8>,
    split: Split,
    /// A `mining.set_extranonce` waiting for the next notify.
    next_extranonce: Option<(Vec<u8>, Split)>,
    /// The pool's difficulty; 1 until it sets one (Stratum's default).
    difficulty: f64,
    version_mask: Option<u32>,
    /// Every miner's vardiff aim, floor and ceiling (the pool's difficulty).
    rules: VardiffRules,
    jobs: VecDeque<StoredJob>,
    seq: u32,
    next_number: u8,
    miners: HashMap<u16, MinerDifficulty>,
    /// Share digests kept over all jobs (bounded by [`SHARES_REMEMBERED`]).
    shares_remembered: usize,
    /// When the last job came, and the longest gap between two (the silence rule).
    last_job_at: Option<Instant>,
    longest_job_gap: Option<Duration>,
    /// The pool's first difficulty: what it starts a connection at.
    start_difficulty: Option<f64>,
    /// The work (sum of credited difficulties) of the valid shares since `window_start`.
    window_start: Option<Instant>,
    window_shares: u32,
    window_work: f64,
    /// The last `mining.suggest_difficulty` sent, and when.
    suggested: Option<(f64, Instant)>,
    /// The miners' prefixes on a [`Layout::ConnectionPrefix`] connection.
    prefixes: PrefixPool,
}

impl StratumConnection {
    pub fn new(settings: Settings) -> StratumConnection {
        // In pass-through the floor is the ceiling: the vardiff can only ever give the
        // pool's difficulty, and follows it both ways.
        let rules = VardiffRules {
            config: settings.vardiff,
            floor: if settings.passthrough {
                1.0
            } else {
                settings.min_difficulty
            },
            ceiling: 1.0,
        };
        StratumConnection {
            rules,
            settings,
            handshake: Handshake::Sent,
            authorized: false,
            extranonce1: Vec::new(),
            split: Split {
                layout: Layout::Standard,
                pool_extranonce2_size: 8,
            },
            next_extranonce: None,
            difficulty: 1.0,
            version_mask: None,
            jobs: VecDeque::new(),
            seq: 0,
            next_number: 0,
            miners: HashMap::new(),
            shares_remembered: 0,
            last_job_at: None,
            longest_job_gap: None,
            start_difficulty: None,
            window_start: None,
            window_shares: 0,
            window_work: 0.0,
            suggested: None,
            prefixes: PrefixPool::new(),
        }
    }

    /// The first request, `mining.configure` (BIP 310: "SHOULD be the first message"),
    /// sent as the connection test of each route, its answer kept for [`Self::on_line`].
    pub fn first_request() -> Vec<u8> {
        requests::configure(CONFIGURE_ID)
    }

    /// The rest of the handshake after [`Self::first_request`]: subscribe and authorize
    /// in one write (pools answer in order; ckpool takes both before it answers).
    pub fn handshake(&self) -> Vec<u8> {
        let s = &self.settings;
        let mut out = requests::subscribe(SUBSCRIBE_ID, &s.user_agent);
        out.extend(requests::authorize(AUTHORIZE_ID, &s.user, &s.password));
        out
    }

    pub fn user(&self) -> &str {
        &self.settings.user
    }

    pub fn is_up(&self) -> bool {
        self.handshake == Handshake::Up
    }

    pub fn extranonce1_hex(&self) -> String {
        super::hex::encode(&self.extranonce1)
    }

    /// The pool's extranonce2 size.
    pub fn extranonce2_size(&self) -> usize {
        self.split.pool_extranonce2_size
    }

    /// How the pool's extranonce2 is shared among the miners.
    pub fn split(&self) -> Split {
        self.split
    }

    /// True while one more miner can join: a 4-5 byte pool's connection carries 256
    /// at most (prefixes of miners gone cool until the next clean job).
    pub fn has_room(&self) -> bool {
        match self.split.layout {
            Layout::ConnectionPrefix => self.prefixes.free() > 0,
            _ => self.miners.len() < self.split.miners_per_connection(),
        }
    }

    /// The prefix to tell a miner that subscribes now and most likely joins this
    /// connection ([`PrefixPool::suggest`]); `None` but on a 4-5 byte pool with a
    /// prefix free.
    pub fn suggest_prefix(&mut self) -> Option<u8> {
        match self.split.layout {
            Layout::ConnectionPrefix => self.prefixes.suggest(),
            _ => None,
        }
    }

    /// True when miner `sid` would keep prefix `p` here ([`Self::place_miner`]): it is
    /// free, or the miner still holds it (back before its grace period ended).
    pub fn keeps_prefix(&self, sid: u16, p: u8) -> bool {
        self.split.layout == Layout::ConnectionPrefix
            && (self.prefixes.is_free(p) || self.miners.get(&sid).is_some_and(|m| m.prefix == p))
    }

    /// The bits miners may roll; 0 without version rolling.
    pub fn version_mask(&self) -> u32 {
        self.version_mask.unwrap_or(0)
    }

    /// The pool's current difficulty for this connection.
    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    /// The ntime of job `number` while the pool still takes shares on it.
    pub fn live_ntime(&self, number: u8) -> Option<u32> {
        self.job(number).map(|j| j.job.ntime)
    }

    fn job(&self, number: u8) -> Option<&StoredJob> {
        self.jobs.iter().rev().find(|j| j.number == number)
    }

    /// A miner joins: its difficulty here, from the one it had (`current`, 0 for none)
    /// or the configured start, never above the pool's; a new prefix on a 4-5 byte
    /// pool (0 when none is free: see [`Self::place_miner`]).
    pub fn add_miner(&mut self, sid: u16, current: f64, now: Instant) -> f64 {
        self.place_miner(sid, MinerLayout::Standard, current, now)
            .map_or(0.0, |p| p.difficulty)
    }

    /// A miner joins with the layout it has (`had`): it keeps it where it fits (on a
    /// 4-5 byte pool: its prefix is free here), else gets this connection's (a new
    /// prefix), which the miner must then be told. `None`: the connection is full.
    /// Its difficulty as [`Self::add_miner`] says.
    pub fn place_miner(
        &mut self,
        sid: u16,
        had: MinerLayout,
        current: f64,
        now: Instant,
    ) -> Option<Placed> {
        // Back before its grace period after a move ended: it still holds its prefix.
        let returning = self.miners.remove(&sid).map(|m| m.prefix);
        let prefix = match self.split.layout {
            Layout::ConnectionPrefix => {
                let fits = had.fits(&self.split);
                match returning {
                    Some(p) if fits && had.prefix() == Some(p) => p,
                    _ => {
                        if let Some(p) = returning {
                            self.prefixes.release(p);
                        }
                        let kept = had
                            .prefix()
                            .filter(|&p| fits && self.prefixes.take_exact(p));
                        match kept {
                            Some(p) => p,
                            None => self.prefixes.take()?,
                        }
                    }
                }
            }
            _ if self.miners.len() >= self.split.miners_per_connection() => return None,
            _ => 0,
        };
        let s = &self.settings;
        let start = if current > 0.0 {
            current
        } else {
            s.start_difficulty
        };
        let start = start_difficulty(start, self.rules.floor, self.difficulty);
        let vardiff = Vardiff::new(&self.rules, start, now);
        let difficulty = vardiff.difficulty();
        self.miners.insert(
            sid,
            MinerDifficulty {
                vardiff,
                previous: difficulty,
                changed_after: 0,
                prefix,
            },
        );
        Some(Placed {
            difficulty,
            layout: MinerLayout::for_split(&self.split, prefix),
        })
    }

    /// The miner left, or its grace period after a move is over: its prefix cools
    /// until the next clean job.
    pub fn remove_miner(&mut self, sid: u16) {
        if let Some(m) = self.miners.remove(&sid) {
            self.release_prefix(m.prefix);
        }
    }

    fn release_prefix(&mut self, prefix: u8) {
        if self.split.layout == Layout::ConnectionPrefix {
            self.prefixes.release(prefix);
        }
    }

    pub fn miner_count(&self) -> usize {
        self.miners.len()
    }

    /// Handles one line from the pool. `Err` ends the connection (the pool refused the
    /// handshake, sent what is not Stratum, or changed what miners cannot follow).
    pub fn on_line(&mut self, line: &[u8], now: Instant) -> Result<Vec<Event>, String> {
        let msg = match UpstreamMessage::parse(line) {
            Ok(msg) => msg,
            Err(e) if e.context == "line" => return Err(format!("pool sent garbage: {e}")),
            // A reconnect that cannot be followed still says the pool wants the
            // connection gone: it ends, and the slot dials the list as for a loss.
            Err(e) if e.context == "client.reconnect" => {
                return Err(format!(
                    "the pool asked to reconnect, not followed ({}): dialling the pool list",
                    e.what
                ))
            }
            // A known message with a bad field: skipped, as a bad job is on the agent
            // protocol, but said.
            Err(e) => return Ok(vec![Event::Notice(format!("ignored: {e}"))]),
        };
        let mut events = Vec::new();
        match msg {
            UpstreamMessage::Response(r) => {
                let id: Option<u32> = r.id.parse().ok();
                match id {
                    Some(CONFIGURE_ID) => {
                        let mask = r.version_rolling().map_err(|e| e.to_string())?;
                        let before = self.version_mask;
                        self.version_mask = mask;
                        if self.is_up() && before != mask {
                            events.push(Event::VersionMask(self.version_mask()));
                        }
                    }
                    Some(SUBSCRIBE_ID) => {
                        let sub = r.subscribed().map_err(|e| e.to_string())?;
                        let passthrough = self.settings.passthrough;
                        let split =
                            Split::for_pool(&sub.extranonce1, sub.extranonce2_size, passthrough)
                                .map_err(|e| e.to_string())?;
                        // A pass-through connection of 4-7 bytes splits as a shared one
                        // (its one miner is told its layout as on any move); below 4 the
                        // miner would need the pool's own extranonce1, known only after
                        // its subscribe was answered.
                        if split.layout == Layout::Direct {
                            return Err(format!(
                                "the pool's extranonce2 is {} bytes: identity pass-through needs 4 or more in this version (below that the miner would need the pool's own extranonce1 before its subscribe is answered); the miner goes on to the next pool entry",
                                sub.extranonce2_size
                            ));
                        }
                        self.extranonce1 = sub.extranonce1;
                        self.split = split;
                        self.handshake = Handshake::Subscribed;
                        self.maybe_up(&mut events);
                    }
                    Some(AUTHORIZE_ID) => {
                        let verdict = r.verdict();
                        if !verdict.accepted {
                            return Err(format!(
                                "pool refused user {:?}: {}",
                                self.settings.user,
                                verdict.reason.as_deref().unwrap_or("no reason given")
                            ));
                        }
                        self.authorized = true;
                        self.window_start = Some(now);
                        if self.settings.extranonce_subscribe {
                            events.push(Event::Send(requests::extranonce_subscribe(
                                EXTRANONCE_SUBSCRIBE_ID,
                            )));
                        }
                        self.maybe_up(&mut events);
                    }
                    Some(EXTRANONCE_SUBSCRIBE_ID) => {}
                    Some(id) if id >= SUBMIT_ID_BASE && id - SUBMIT_ID_BASE <= 0xffff => {
                        events.push(Event::Verdict {
                            index: (id - SUBMIT_ID_BASE) as u16,
                            verdict: r.verdict(),
                        });
                    }
                    _ => {}
                }
            }
            UpstreamMessage::Notify(job) => {
                if self.handshake == Handshake::Sent {
                    return Ok(events); // no extranonce yet: nothing can be built
                }
                if let Some(at) = self.last_job_at {
                    let gap = now.saturating_duration_since(at);
                    self.longest_job_gap = Some(self.longest_job_gap.map_or(gap, |g| g.max(gap)));
                }
                self.last_job_at = Some(now);
                events.push(Event::Job(self.add_job(job)));
            }
            UpstreamMessage::SetDifficulty(d) => {
                self.start_difficulty.get_or_insert(d);
                self.difficulty = d;
                self.rules.ceiling = d;
                if self.settings.passthrough {
                    self.rules.floor = d;
                }
                let rules = self.rules;
                let changed: Vec<(u16, f64)> = self
                    .miners
                    .iter_mut()
                    .filter_map(|(&sid, m)| {
                        let before = m.vardiff.difficulty();
                        let now_d = m.vardiff.follow(&rules, now)?;
                        m.previous = before;
                        m.changed_after = self.seq;
                        Some((sid, now_d))
                    })
                    .collect();
                if !changed.is_empty() {
                    events.push(Event::MinerDifficulty(changed));
                }
            }
            UpstreamMessage::SetExtranonce {
                extranonce1,
                extranonce2_size,
            } => {
                let split = Split::for_pool(&extranonce1, extranonce2_size, false)
                    .map_err(|e| e.to_string())?;
                // The same split keeps every miner's extranonce1, prefixes included.
                if split != self.split && !split.keeps_miners_on(&self.split) {
                    return Err(format!(
                        "the pool changed the extranonce2 to {extranonce2_size} bytes: dialling again"
                    ));
                }
                self.next_extranonce = Some((extranonce1, split));
            }
            UpstreamMessage::SetVersionMask(mask) => {
                self.version_mask = Some(mask);
                events.push(Event::VersionMask(mask));
            }
            UpstreamMessage::Reconnect(r) => events.push(Event::Reconnect(r)),
            UpstreamMessage::ShowMessage(text) => {
                events.push(Event::Notice(format!("the pool says: {text}")));
            }
            UpstreamMessage::GetVersion { id } => {
                let ua = serde_json::to_string(&self.settings.user_agent).unwrap_or_default();
                events.push(Event::Send(stratum::result_line(&id, &ua)));
            }
            UpstreamMessage::Ping { id } => {
                events.push(Event::Send(stratum::result_line(&id, "\"pong\"")));
            }
            UpstreamMessage::Unknown { .. } => {}
        }
        Ok(events)
    }

    fn maybe_up(&mut self, events: &mut Vec<Event>) {
        if self.handshake == Handshake::Subscribed && self.authorized {
            self.handshake = Handshake::Up;
            events.push(Event::Up);
        }
    }

    /// Stores the pool's job and builds the one notify all miners get.
    fn add_job(&mut self, job: UpstreamJob) -> Rc<Job> {
        if let Some((extranonce1, split)) = self.next_extranonce.take() {
            self.extranonce1 = extranonce1;
            self.split = split;
        }
        if job.clean {
            self.jobs.clear();
            self.shares_remembered = 0;
            self.prefixes.clean_job();
        }
        if self.jobs.len() >= JOBS_KEPT {
            if let Some(old) = self.jobs.pop_front() {
                self.shares_remembered = self.shares_remembered.saturating_sub(old.seen.len());
            }
        }
        self.seq = self.seq.wrapping_add(1);
        let number = self.next_number;
        self.next_number = self.next_number.wrapping_add(1);
        let id = miner_job_id(self.settings.connection, number);
        let notify = requests::miner_notify(&job, &self.split, &self.extranonce1, &id);
        let params = serde_json::from_slice::<Value>(&notify.notify)
            .ok()
            .and_then(|v| v.get("params").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        let miner_job = Rc::new(Job {
            id: number,
            ntime: job.ntime,
            clean: job.clean,
            notify: notify.notify.into(),
            notify_clean: notify.notify_clean.into(),
            params,
        });
        self.jobs.push_back(StoredJob {
            number,
            seq: self.seq,
            job,
            extranonce1: self.extranonce1.clone(),
            split: self.split,
            pool_difficulty: self.difficulty,
            seen: SeenShares::default(),
        });
        miner_job
    }

    /// Judges a miner's share by rebuilding and hashing it: forwarded when it meets
    /// the pool's target for its job (the easier of the difficulty then and now, as
    /// ckpool judges), accepted here when it meets only the miner's. `submit_id` is the
    /// request id a forwarded share is written with.
    pub fn judge(&mut self, share: &MinerShare, submit_id: u32, now: Instant) -> Judged {
        let reject = |code, message| Judged {
            judgement: Judgement::Reject { code, message },
            new_difficulty: None,
        };
        let Some(stored) = self.jobs.iter().rev().find(|j| j.number == share.job_id) else {
            return reject(code::JOB_NOT_FOUND, "Job not found (=stale)");
        };
        let prefix = self.miners.get(&share.session_id).map_or(0, |m| m.prefix);
        let miner_extranonce1 =
            stored
                .split
                .miner_extranonce1(share.session_id, prefix, &stored.extranonce1);
        let Some(extranonce2) = stored
            .split
            .pool_extranonce2(&miner_extranonce1, share.extranonce2.as_bytes())
        else {
            return reject(code::OTHER, "Wrong extranonce2 size");
        };
        let ntime = share.ntime.unwrap_or(stored.job.ntime);
        let mask = self.version_mask();
        let pool_share = PoolShare {
            extranonce1: &stored.extranonce1,
            extranonce2: &extranonce2,
            ntime,
            nonce: share.nonce,
            version_bits: share.version_mask.map(|bits| (bits, mask)),
        };
        let pool_difficulty = stored.pool_difficulty.min(self.difficulty);
        let Some(miner) = self.miners.get_mut(&share.session_id) else {
            return reject(code::UNAUTHORIZED, "Unauthorized worker");
        };
        let current = miner.vardiff.difficulty();
        let credited = if stored.seq <= miner.changed_after {
            current.min(miner.previous)
        } else {
            current
        };
        let (Some(pool_target), Some(miner_target)) = (
            Target::from_difficulty(pool_difficulty),
            Target::from_difficulty(credited),
        ) else {
            return reject(code::OTHER, "No target");
        };
        let check = stored.job.check(&pool_share, &pool_target, &miner_target);
        if !check.meets_miner && !check.meets_pool {
            return reject(code::LOW_DIFFICULTY, "Low difficulty");
        }
        // A share sent again: refused here when it would be accepted here (nobody
        // else would notice); one for the pool goes there, whose verdict is the word
        // that counts (and which the miner gets with submit_response_from_server).
        let digest = share_digest(
            share.session_id,
            share
                .extranonce2
                .as_bytes()
                .iter()
                .fold(0u64, |v, &b| v << 8 | u64::from(b)),
            ntime,
            share.nonce,
            share.version_mask.unwrap_or(0),
        );
        let repeated = stored.seen.contains(&digest);
        if repeated && !check.meets_pool {
            return reject(code::DUPLICATE, "Duplicate share");
        }
        let line = check.meets_pool.then(|| {
            requests::submit(
                submit_id,
                &Submit {
                    user: &self.settings.user,
                    job_id: &stored.job.job_id,
                    extranonce2: &extranonce2,
                    ntime,
                    nonce: share.nonce,
                    version_bits: share.version_mask,
                },
            )
        });
        let new_difficulty = miner.vardiff.on_share(&self.rules, now, credited);
        if !repeated && self.shares_remembered < SHARES_REMEMBERED {
            if let Some(job) = self
                .jobs
                .iter_mut()
                .rev()
                .find(|j| j.number == share.job_id)
            {
                if job.seen.insert(digest) {
                    self.shares_remembered += 1;
                }
            }
        }
        if new_difficulty.is_some() {
            miner.previous = current;
            miner.changed_after = self.seq;
        }
        // A share for the pool that misses the miner's own target (the pool lowered
        // its difficulty below the miner's) counts for what it met.
        let credited = if check.meets_miner {
            credited
        } else {
            pool_difficulty
        };
        self.note_work(credited, now);
        let judgement = match line {
            Some(line) => Judgement::Forward {
                line,
                difficulty: credited,
            },
            None => Judgement::Accept {
                difficulty: credited,
            },
        };
        Judged {
            judgement,
            new_difficulty,
        }
    }

    /// How long the pool may stay silent before the connection counts as gone:
    /// [`SILENCE_JOB_GAPS`] times the longest gap between its jobs seen here (a
    /// minute assumed until two have come), at least `floor` (the configured read
    /// timeout), at most an hour. Everything the pool sends counts as a sign of life
    /// (verdicts too), so this only matters on a connection whose miners send it
    /// nothing. Pools are not probed: ckpool answers no method it does not know
    /// (`mining.ping` included), a second `mining.subscribe` starts a new session on
    /// some pools, and a made-up submit would count against the user; the pool's
    /// own job timer is the one signal every pool gives (docs/stratum-upstream.md §14).
    pub fn silence_limit(&self, floor: Duration) -> Duration {
        let gap = self.longest_job_gap.unwrap_or(ASSUMED_JOB_GAP);
        (gap * SILENCE_JOB_GAPS).min(MAX_SILENCE).max(floor)
    }

    /// A valid share's work, for the connection's hashrate.
    fn note_work(&mut self, credited: f64, now: Instant) {
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        if credited.is_finite() && credited > 0.0 {
            self.window_shares = self.window_shares.saturating_add(1);
            self.window_work += credited;
        }
    }

    /// `mining.suggest_difficulty` to send now, if any: the connection's hashrate
    /// (its miners' valid shares, at the difficulty each was credited at) as the
    /// difficulty that gives a share every [`POOL_SHARE_INTERVAL`]. ckpool takes it
    /// from an authorised client only, as an integer, sets it at once and keeps it as
    /// its vardiff floor (stratifier.c `suggest_diff`), so a fresh connection with
    /// fast miners does not sit at the pool's start difficulty (ckpool: 42) while the
    /// agent hashes their flood of shares. Sent first when the estimate is at least
    /// twice the pool's current difficulty (never below the pool's start, where it
    /// would only lower it), then when it moved more than 2x, at most once a minute,
    /// and never above the network's difficulty. Whole numbers from 1 up; a
    /// fraction only below 1 (test pools). Never awaited: pools that do not know
    /// the method ignore it or answer an error, which is dropped.
    pub fn suggestion(&mut self, now: Instant) -> Option<Vec<u8>> {
        let start = self.window_start?;
        if !self.is_up() {
            return None;
        }
        let elapsed = now.saturating_duration_since(start);
        if elapsed < SUGGEST_MIN_WINDOW
            || (self.window_shares < SUGGEST_SHARES && elapsed < SUGGEST_MAX_WINDOW)
            || self
                .suggested
                .is_some_and(|(_, at)| now.saturating_duration_since(at) < SUGGEST_MIN_GAP)
        {
            return None;
        }
        let rate = self.window_work / elapsed.as_secs_f64();
        self.window_start = Some(now);
        self.window_shares = 0;
        self.window_work = 0.0;
        let network = self
            .jobs
            .back()
            .and_then(|j| Target::from_nbits(j.job.nbits).ok())
            .map(|t| t.difficulty())?;
        let floor = self.start_difficulty.unwrap_or(self.difficulty);
        let wanted = (rate * POOL_SHARE_INTERVAL).min(network).max(floor);
        let wanted = if wanted >= 1.0 {
            wanted.floor()
        } else {
            wanted
        };
        if !wanted.is_finite() || wanted <= 0.0 {
            return None;
        }
        let worth_it = match self.suggested {
            None => wanted >= SUGGEST_CHANGE * self.difficulty,
            Some((last, _)) => wanted > SUGGEST_CHANGE * last || wanted * SUGGEST_CHANGE < last,
        };
        if !worth_it {
            return None;
        }
        self.suggested = Some((wanted, now));
        Some(requests::suggest_difficulty(SUGGEST_DIFFICULTY_ID, wanted))
    }

    /// Lowers the miners that sent no share for a whole vardiff window.
    pub fn tick(&mut self, now: Instant) -> Vec<(u16, f64)> {
        let (seq, rules) = (self.seq, self.rules);
        self.miners
            .iter_mut()
            .filter_map(|(&sid, m)| {
                let before = m.vardiff.difficulty();
                let d = m.vardiff.on_tick(&rules, now)?;
                m.previous = before;
                m.changed_after = seq;
                Some((sid, d))
            })
            .collect()
    }
}

/// The Stratum code and text a miner gets for the pool's verdict on its share
/// (docs/stratum-upstream.md §5): a code the miners know (20..=33) as it is, a reason
/// without a code mapped from its words (ckpool before 2025), anything else 20.
pub fn miner_rejection(verdict: &Verdict) -> (i32, String) {
    let reason = verdict
        .reason
        .clone()
        .unwrap_or_else(|| "Rejected by the pool".into());
    if let Some(code) = verdict.code {
        let code = i32::try_from(code)
            .ok()
            .filter(|c| (20..=33).contains(c))
            .unwrap_or(code::OTHER);
        return (code, reason);
    }
    let lower = reason.to_ascii_lowercase();
    let code = if lower.contains("stale") || lower.contains("invalid jobid") {
        code::JOB_NOT_FOUND
    } else if lower.contains("duplicate") {
        code::DUPLICATE
    } else if lower.contains("above target") || lower.contains("low difficulty") {
        code::LOW_DIFFICULTY
    } else {
        code::OTHER
    };
    (code, reason)
}

/// `mining.set_difficulty` for a miner: whole numbers without a fraction.
pub fn set_difficulty_line(difficulty: f64) -> Vec<u8> {
    let text = format!("[{}]", stratum::difficulty_text(difficulty));
    stratum::notification("mining.set_difficulty", &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stratum_upstream::job::tests::{block_881423, notify_881423};
    use std::time::Duration;

    fn settings() -> Settings {
        Settings {
            connection: 3,
            user: "acct.farm1".into(),
            password: "x".into(),
            user_agent: "btcagent/0.1.0".into(),
            extranonce_subscribe: true,
            vardiff: VardiffConfig::for_interval(10.0),
            start_difficulty: 16384.0,
            min_difficulty: 1e-12,
            passthrough: false,
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    /// A connection through its handshake with ckpool's answers (extranonce1
    /// `ee2c106b`, extranonce2 8 bytes), at pool difficulty `difficulty`, with the block
    /// 881,423 job as its first.
    fn up(difficulty: &str) -> StratumConnection {
        up_with(settings(), difficulty)
    }

    fn up_with(settings: Settings, difficulty: &str) -> StratumConnection {
        let mut c = StratumConnection::new(settings);
        let t = Instant::now();
        let feed = |c: &mut StratumConnection, s: &str| c.on_line(s.as_bytes(), t).unwrap();
        feed(
            &mut c,
            r#"{"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"id":1,"error":null}"#,
        );
        feed(
            &mut c,
            r#"{"result":[[["mining.notify","6b102cee"]],"ee2c106b",8],"id":2,"error":null}"#,
        );
        feed(
            &mut c,
            &format!(r#"{{"id":null,"method":"mining.set_difficulty","params":[{difficulty}]}}"#),
        );
        let notify =
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()});
        let events = feed(&mut c, &notify.to_string());
        assert!(matches!(events[..], [Event::Job(_)]));
        let events = feed(&mut c, r#"{"result":true,"error":null,"id":3}"#);
        assert!(
            matches!(&events[..], [Event::Send(s), Event::Up] if text(s) == "{\"id\":4,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n")
        );
        c
    }

    fn share(sid: u16, job: u8, nonce: u32) -> MinerShare {
        MinerShare {
            job_id: job,
            session_id: sid,
            extranonce2: MinerExtranonce2::from_u32(1),
            nonce,
            ntime: None,
            version_mask: None,
        }
    }

    /// A recorded run against ckpool (tests/data/ckpool/): fed ckpool's lines, the
    /// connection writes exactly what btcagent wrote there, and the share ckpool
    /// accepted (difficulty 1.98 at its difficulty 1) is judged for the pool and
    /// forwarded byte for byte as it was.
    /// A recorded run against ckpool with a 4-byte extranonce2 (tests/data/ckpool/):
    /// the connection writes what btcagent wrote there, comes up with one-byte miner
    /// prefixes and 3 bytes of miner extranonce2, and reads the three
    /// `client.reconnect` shapes ckpool sends (the port as a string).
    #[test]
    fn replays_the_4_byte_run_against_ckpool() {
        let recorded = include_str!("../../../tests/data/ckpool/session-n4-reconnect.txt");
        let mut c = StratumConnection::new(settings());
        let t = Instant::now();
        let mut written = [
            String::from_utf8(StratumConnection::first_request()).unwrap(),
            String::from_utf8(c.handshake()).unwrap(),
        ]
        .concat();
        let mut reconnects = Vec::new();
        for line in recorded.lines() {
            if let Some(from_pool) = line.strip_prefix("< ") {
                for event in c.on_line(from_pool.as_bytes(), t).unwrap() {
                    match event {
                        Event::Send(bytes) => written.push_str(text(&bytes)),
                        Event::Up | Event::Job(_) => {}
                        Event::Reconnect(r) => reconnects.push(r),
                        other => panic!("{other:?}"),
                    }
                }
            } else if let Some(to_pool) = line.strip_prefix("> ") {
                let expected = format!("{to_pool}\n");
                assert!(written.starts_with(&expected), "{expected:?} / {written:?}");
                written.drain(..expected.len());
            }
        }
        assert!(written.is_empty(), "{written}");
        assert!(c.is_up());
        assert_eq!(c.extranonce2_size(), 4);
        assert_eq!(c.split().layout, Layout::ConnectionPrefix);
        let placed = c
            .place_miner(0x0103, MinerLayout::for_new_miner(Some(4), 0x03), 0.001, t)
            .unwrap();
        assert_eq!(
            (
                placed.layout.extranonce1(0x0103),
                placed.layout.extranonce2_size()
            ),
            (vec![0x03], 3)
        );
        let to = |host: &str| Reconnect {
            host: Some(host.into()),
            port: Some(3401),
            wait_seconds: Some(0),
        };
        assert_eq!(
            reconnects,
            [
                Reconnect::default(),
                to("127.0.0.1"),
                to("pool.attacker.example")
            ]
        );
        // Only the first two are followed (the session checks the site).
        assert!(super::super::messages::reconnect_within_site(
            "127.0.0.1",
            "127.0.0.1"
        ));
        assert!(!super::super::messages::reconnect_within_site(
            "127.0.0.1",
            "pool.attacker.example"
        ));
    }

    #[test]
    fn replays_the_run_against_ckpool() {
        let recorded = include_str!("../../../tests/data/ckpool/session-bb7b0aeb.txt");
        let mut c = StratumConnection::new(settings());
        let t = Instant::now();
        let mut written = [
            String::from_utf8(StratumConnection::first_request()).unwrap(),
            String::from_utf8(c.handshake()).unwrap(),
        ]
        .concat();
        let mut up = false;
        let mut jobs = Vec::new();
        for line in recorded.lines() {
            if let Some(from_pool) = line.strip_prefix("< ") {
                for event in c.on_line(from_pool.as_bytes(), t).unwrap() {
                    match event {
                        Event::Send(bytes) => written.push_str(text(&bytes)),
                        Event::Up => up = true,
                        Event::Job(job) => jobs.push(job),
                        Event::Verdict { index: 0, verdict } => {
                            assert!(verdict.accepted, "{verdict:?}")
                        }
                        other => panic!("{other:?}"),
                    }
                }
                if !up && from_pool.contains("\"id\":3") {
                    panic!("not up after the authorize answer");
                }
                if c.is_up() && c.miner_count() == 0 {
                    c.add_miner(3, 0.001, t);
                }
            } else if let Some(to_pool) = line.strip_prefix("> ") {
                if to_pool.contains("mining.submit") {
                    let share = MinerShare {
                        job_id: jobs.last().unwrap().id,
                        session_id: 3,
                        extranonce2: MinerExtranonce2::from_u32(6),
                        nonce: 0x0039_61bf,
                        ntime: Some(0x6b11_86a8),
                        version_mask: Some(0x0000_c000),
                    };
                    let judged = c.judge(&share, SUBMIT_ID_BASE, t);
                    let Judgement::Forward { line, .. } = judged.judgement else {
                        panic!("ckpool took it, the agent must forward it: {judged:?}")
                    };
                    written.push_str(text(&line));
                }
                let expected = format!("{to_pool}\n");
                assert!(
                    written.starts_with(&expected),
                    "recorded {expected:?}, the connection wrote {written:?}"
                );
                written.drain(..expected.len());
            }
        }
        assert!(written.is_empty(), "{written}");
        assert_eq!(
            (
                c.extranonce1_hex().as_str(),
                c.version_mask(),
                c.difficulty()
            ),
            ("b885116b", 0x1fff_e000, 1.0)
        );
        assert_eq!(jobs.len(), 2);
    }

    /// Every miner of a Stratum connection carries this record: the vardiff's rules are
    /// the connection's, so it stays small.
    #[test]
    fn a_miners_record_is_small() {
        assert!(std::mem::size_of::<Vardiff>() <= 40);
        assert!(std::mem::size_of::<MinerDifficulty>() <= 56);
    }

    #[test]
    fn handshake_byte_exact() {
        assert_eq!(
            text(&StratumConnection::first_request()),
            "{\"id\":1,\"method\":\"mining.configure\",\"params\":[[\"version-rolling\"],{\"version-rolling.mask\":\"ffffffff\",\"version-rolling.min-bit-count\":0}]}\n"
        );
        assert_eq!(
            text(&StratumConnection::new(settings()).handshake()),
            "{\"id\":2,\"method\":\"mining.subscribe\",\"params\":[\"btcagent/0.1.0\"]}\n\
             {\"id\":3,\"method\":\"mining.authorize\",\"params\":[\"acct.farm1\",\"x\"]}\n"
        );
    }

    #[test]
    fn the_miners_notify_carries_the_pools_extranonce1() {
        let mut c = StratumConnection::new(settings());
        let t = Instant::now();
        c.on_line(
            br#"{"result":[[["mining.notify","1"]],"ee2c106b",8],"id":2,"error":null}"#,
            t,
        )
        .unwrap();
        let notify =
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()});
        let events = c.on_line(notify.to_string().as_bytes(), t).unwrap();
        let [Event::Job(job)] = &events[..] else {
            panic!("{events:?}")
        };
        let want = format!(
            "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"3-0\",\"{}\",\"{}ee2c106b\",\"{}\",[{}],\"{}\",\"{}\",\"{}\",true]}}\n",
            block_881423::PREVHASH_NOTIFY,
            block_881423::COINB1,
            block_881423::COINB2,
            block_881423::BRANCH.map(|h| format!("\"{h}\"")).join(","),
            block_881423::JOB_VERSION,
            block_881423::NBITS,
            block_881423::NTIME,
        );
        assert_eq!(text(&job.notify), want);
        assert_eq!(job.id, 0);
        assert_eq!(c.live_ntime(0), Some(0x679a_c169));
        assert_eq!(c.live_ntime(1), None);
        assert_eq!(c.extranonce1_hex(), "ee2c106b");
    }

    #[test]
    fn a_pool_extranonce2_below_4_bytes_is_refused() {
        for size in [1, 2, 3] {
            let mut c = StratumConnection::new(settings());
            let answer = format!(r#"{{"result":[[],"ee2c106b",{size}],"id":2,"error":null}}"#);
            let e = c.on_line(answer.as_bytes(), Instant::now()).unwrap_err();
            assert!(e.contains(&format!("extranonce2 is {size} bytes")), "{e}");
        }
        for (size, layout) in [
            (4, Layout::ConnectionPrefix),
            (5, Layout::ConnectionPrefix),
            (6, Layout::SessionId),
            (7, Layout::SessionId),
        ] {
            let mut c = StratumConnection::new(settings());
            let answer = format!(r#"{{"result":[[],"ee2c106b",{size}],"id":2,"error":null}}"#);
            c.on_line(answer.as_bytes(), Instant::now()).unwrap();
            assert_eq!((c.split().layout, c.extranonce2_size()), (layout, size));
        }
        let mut c = StratumConnection::new(settings());
        let e = c
            .on_line(br#"{"result":true,"error":null,"id":3}"#, Instant::now())
            .map(|_| ())
            .and_then(|_| {
                c.on_line(
                    br#"{"result":null,"error":[24,"Unauthorized",null],"id":3}"#,
                    Instant::now(),
                )
                .map(|_| ())
            })
            .unwrap_err();
        assert!(
            e.contains("refused user \"acct.farm1\": Unauthorized"),
            "{e}"
        );
    }

    fn passthrough() -> Settings {
        Settings {
            user: "acct.rig7".into(),
            passthrough: true,
            min_difficulty: 1.0,
            ..settings()
        }
    }

    #[test]
    fn passthrough_splits_4_to_7_bytes_as_shared_and_refuses_below_with_its_reason() {
        for size in [2, 3] {
            let mut c = StratumConnection::new(passthrough());
            let answer = format!(r#"{{"result":[[],"ee2c106b",{size}],"id":2,"error":null}}"#);
            let e = c.on_line(answer.as_bytes(), Instant::now()).unwrap_err();
            assert!(
                e.contains(&format!(
                    "extranonce2 is {size} bytes: identity pass-through needs 4 or more"
                )) && e.contains("next pool entry"),
                "{e}"
            );
        }
        for (size, layout) in [
            (4, Layout::ConnectionPrefix),
            (5, Layout::ConnectionPrefix),
            (6, Layout::SessionId),
            (7, Layout::SessionId),
            (8, Layout::Standard),
        ] {
            let mut c = StratumConnection::new(passthrough());
            let answer = format!(r#"{{"result":[[],"ee2c106b",{size}],"id":2,"error":null}}"#);
            c.on_line(answer.as_bytes(), Instant::now()).unwrap();
            assert_eq!(c.split().layout, layout, "{size}");
        }
    }

    /// A pass-through miner has the pool's difficulty, whatever the configured start
    /// and floor, follows it up and down at once, and no share or quiet spell moves it.
    #[test]
    fn passthrough_gives_the_miner_the_pools_difficulty_as_sent() {
        let t = Instant::now();
        let mut c = up_with(passthrough(), "0.000000000001");
        assert_eq!(c.add_miner(7, 0.0, t), 0.000000000001);
        let set = |c: &mut StratumConnection, d: &str| {
            let line = format!(r#"{{"id":null,"method":"mining.set_difficulty","params":[{d}]}}"#);
            c.on_line(line.as_bytes(), t).unwrap()
        };
        for _ in 0..40 {
            let judged = c.judge(&share(7, 0, 1), SUBMIT_ID_BASE, t);
            assert!(matches!(judged.judgement, Judgement::Forward { .. }));
            assert_eq!(judged.new_difficulty, None);
        }
        assert!(c.tick(t + Duration::from_secs(3600)).is_empty());
        let events = set(&mut c, "1000000000000");
        assert!(
            matches!(&events[..], [Event::MinerDifficulty(v)] if v == &[(7, 1e12)]),
            "raised: followed, {events:?}"
        );
        // Its share on the job from before the raise is judged at the old difficulty.
        assert!(matches!(
            c.judge(&share(7, 0, 1), SUBMIT_ID_BASE, t).judgement,
            Judgement::Forward { .. }
        ));
        let events = set(&mut c, "0.5");
        assert!(
            matches!(&events[..], [Event::MinerDifficulty(v)] if v == &[(7, 0.5)]),
            "lowered below the configured floor: followed, {events:?}"
        );
        assert_eq!(
            c.add_miner(8, 16384.0, t),
            0.5,
            "a moved miner's own is dropped"
        );
    }

    #[test]
    fn a_share_meeting_the_pools_target_is_forwarded_byte_exact() {
        let mut c = up("0.000000000001");
        let t = Instant::now();
        assert_eq!(
            c.add_miner(7, 0.0, t),
            0.000000000001,
            "the start, capped at the pool's"
        );
        let judged = c.judge(&share(7, 0, 0x1234_5678), SUBMIT_ID_BASE + 5, t);
        let Judgement::Forward { line, difficulty } = judged.judgement else {
            panic!("{judged:?}")
        };
        assert_eq!(difficulty, 0.000000000001);
        assert_eq!(
            text(&line),
            "{\"id\":21,\"method\":\"mining.submit\",\"params\":[\"acct.farm1\",\"67d5e1a400001a2b\",\"0000000700000001\",\"679ac169\",\"12345678\"]}\n"
        );
        let rolled = MinerShare {
            version_mask: Some(0x0000_6000),
            ntime: Some(0x679a_c16a),
            ..share(7, 0, 1)
        };
        let Judgement::Forward { line, .. } = c.judge(&rolled, SUBMIT_ID_BASE, t).judgement else {
            panic!()
        };
        assert!(text(&line)
            .ends_with("\"0000000700000001\",\"679ac16a\",\"00000001\",\"00006000\"]}\n"));
    }

    /// [`up`] on a pool whose extranonce2 is `size` bytes, at difficulty 1e-12.
    fn up_sized(size: usize) -> StratumConnection {
        let mut c = StratumConnection::new(settings());
        let t = Instant::now();
        for line in [
            format!(
                r#"{{"result":[[["mining.notify","1"]],"ee2c106b",{size}],"id":2,"error":null}}"#
            ),
            r#"{"id":null,"method":"mining.set_difficulty","params":[0.000000000001]}"#.into(),
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()})
                .to_string(),
            r#"{"result":true,"error":null,"id":3}"#.into(),
        ] {
            c.on_line(line.as_bytes(), t).unwrap();
        }
        assert!(c.is_up());
        c
    }

    fn ex2(hex: &str) -> MinerExtranonce2 {
        MinerExtranonce2::parse(hex, hex.len() / 2).unwrap()
    }

    fn forwarded_extranonce2(c: &mut StratumConnection, share: &MinerShare) -> String {
        let judged = c.judge(share, SUBMIT_ID_BASE, Instant::now());
        let Judgement::Forward { line, .. } = judged.judgement else {
            panic!("{judged:?}")
        };
        let v: Value = serde_json::from_slice(&line).unwrap();
        v["params"][2].as_str().unwrap().to_string()
    }

    #[test]
    fn a_6_byte_pool_gets_the_session_id_and_the_miners_4_bytes() {
        let mut c = up_sized(6);
        let t = Instant::now();
        let placed = c
            .place_miner(0x0a0b, MinerLayout::Standard, 0.0, t)
            .unwrap();
        assert_eq!(placed.layout, MinerLayout::SessionId, "to be told");
        let good = MinerShare {
            extranonce2: ex2("01020304"),
            ..share(0x0a0b, 0, 1)
        };
        assert_eq!(forwarded_extranonce2(&mut c, &good), "0a0b01020304");
        let wrong = MinerShare {
            extranonce2: ex2("010203"),
            ..good
        };
        assert_eq!(
            c.judge(&wrong, SUBMIT_ID_BASE, t).judgement,
            Judgement::Reject {
                code: code::OTHER,
                message: "Wrong extranonce2 size"
            }
        );
        // The miners' notify: coinb1 + E1, nothing in front of coinb2 (6 = 2 + 4).
        let mut c7 = up_sized(7);
        let job = c7
            .on_line(
                serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()})
                    .to_string()
                    .as_bytes(),
                t,
            )
            .unwrap();
        let [Event::Job(job)] = &job[..] else {
            panic!()
        };
        assert_eq!(
            job.params[3],
            format!("00{}", block_881423::COINB2),
            "N = 7: one zero"
        );
        c7.place_miner(5, MinerLayout::SessionId, 0.0, t).unwrap();
        let on_7 = MinerShare {
            job_id: job.id,
            extranonce2: ex2("0a0b0c0d"),
            ..share(5, 0, 1)
        };
        assert_eq!(forwarded_extranonce2(&mut c7, &on_7), "00050a0b0c0d00");
    }

    #[test]
    fn a_4_byte_pool_gives_each_miner_its_own_prefix() {
        let mut c = up_sized(4);
        let t = Instant::now();
        let told = MinerLayout::for_new_miner(Some(4), 0x0107);
        let first = c.place_miner(0x0107, told, 0.0, t).unwrap();
        assert_eq!(first.layout, told, "its prefix 07 is free: kept");
        let second = c.place_miner(0x0207, told, 0.0, t).unwrap();
        let MinerLayout::Prefix {
            prefix,
            extranonce2_size: 3,
        } = second.layout
        else {
            panic!("{second:?}")
        };
        assert_ne!(prefix, 7, "taken: another one");
        let share_of = |sid, hex: &str| MinerShare {
            extranonce2: ex2(hex),
            ..share(sid, 0, 1)
        };
        assert_eq!(
            forwarded_extranonce2(&mut c, &share_of(0x0107, "0a0b0c")),
            "070a0b0c"
        );
        assert_eq!(
            forwarded_extranonce2(&mut c, &share_of(0x0207, "0a0b0c")),
            format!("{prefix:02x}0a0b0c")
        );
        assert!(matches!(
            c.judge(&share_of(0x0107, "0a0b0c0d"), SUBMIT_ID_BASE, t)
                .judgement,
            Judgement::Reject {
                code: code::OTHER,
                ..
            }
        ));
        // A miner from a pool of another layout gets a prefix here, to be told.
        let moved = c
            .place_miner(0x0307, MinerLayout::Standard, 0.0, t)
            .unwrap();
        assert!(
            matches!(moved.layout, MinerLayout::Prefix { extranonce2_size: 3, prefix: p } if p != 7 && p != prefix)
        );
        // A 5-byte pool: 4 bytes of the miner's own.
        let mut c5 = up_sized(5);
        let placed = c5
            .place_miner(9, MinerLayout::for_new_miner(Some(5), 9), 0.0, t)
            .unwrap();
        assert_eq!(
            placed.layout,
            MinerLayout::Prefix {
                prefix: 9,
                extranonce2_size: 4
            }
        );
        assert_eq!(
            forwarded_extranonce2(
                &mut c5,
                &MinerShare {
                    extranonce2: ex2("01020304"),
                    ..share(9, 0, 1)
                }
            ),
            "0901020304"
        );
    }

    #[test]
    fn a_4_byte_connection_is_full_at_256_and_prefixes_cool_until_a_clean_job() {
        let mut c = up_sized(4);
        let t = Instant::now();
        for sid in 0..256u16 {
            assert!(c.has_room());
            c.place_miner(sid, MinerLayout::Standard, 0.0, t).unwrap();
        }
        assert!(!c.has_room());
        assert_eq!(c.place_miner(999, MinerLayout::Standard, 0.0, t), None);
        c.remove_miner(17);
        assert!(!c.has_room(), "its prefix cools");
        let clean =
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()});
        c.on_line(clean.to_string().as_bytes(), t).unwrap();
        assert!(c.has_room());
        assert!(c.place_miner(999, MinerLayout::Standard, 0.0, t).is_some());
        assert!(!c.has_room());
        // A miner back before its grace ended keeps its prefix.
        let layout = c
            .place_miner(
                999,
                MinerLayout::Prefix {
                    prefix: 17,
                    extranonce2_size: 3,
                },
                0.0,
                t,
            )
            .unwrap()
            .layout;
        assert_eq!(layout.prefix(), Some(17));
    }

    /// A miner told the prefix the connection suggested at its subscribe joins with
    /// it: no `mining.set_extranonce` or reconnect, even when many subscribe before
    /// any logs in.
    #[test]
    fn suggested_prefixes_are_kept_at_placement() {
        let mut c = up_sized(4);
        let t = Instant::now();
        let told: Vec<MinerLayout> = (0..200u16)
            .map(|_| MinerLayout::Prefix {
                prefix: c.suggest_prefix().unwrap(),
                extranonce2_size: 3,
            })
            .collect();
        for (sid, layout) in told.iter().enumerate().rev() {
            let sid = 0x0100 + sid as u16; // low bytes from 0: all would collide
            assert!(c.keeps_prefix(sid, layout.prefix().unwrap()));
            let placed = c.place_miner(sid, *layout, 0.0, t).unwrap();
            assert_eq!(placed.layout, *layout, "kept");
            assert!(c.keeps_prefix(sid, layout.prefix().unwrap()), "its own");
            assert!(!c.keeps_prefix(sid + 1, layout.prefix().unwrap()), "taken");
        }
        assert_eq!(c.miner_count(), 200);
        // The next one suggested is free, past those told.
        assert_eq!(c.suggest_prefix(), Some(200));
        // Other layouts suggest nothing and keep no prefix.
        let mut c8 = up_sized(8);
        assert_eq!(c8.suggest_prefix(), None);
        assert!(!c8.keeps_prefix(1, 0));
    }

    #[test]
    fn a_pools_new_extranonce1_of_the_same_size_keeps_the_prefixes() {
        let mut c = up_sized(4);
        let t = Instant::now();
        let placed = c
            .place_miner(7, MinerLayout::for_new_miner(Some(4), 7), 0.0, t)
            .unwrap();
        let set = |size: usize| {
            format!(
                r#"{{"id":null,"method":"mining.set_extranonce","params":["01020304",{size}]}}"#
            )
        };
        assert!(c.on_line(set(4).as_bytes(), t).unwrap().is_empty());
        let notify =
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()});
        c.on_line(notify.to_string().as_bytes(), t).unwrap();
        assert_eq!(c.extranonce1_hex(), "01020304");
        let share = MinerShare {
            job_id: 1,
            extranonce2: ex2("0a0b0c"),
            ..share(7, 0, 1)
        };
        assert_eq!(placed.layout.prefix(), Some(7));
        assert_eq!(forwarded_extranonce2(&mut c, &share), "070a0b0c");
        let e = c.on_line(set(5).as_bytes(), t).unwrap_err();
        assert!(e.contains("5 bytes"), "{e}");
    }

    #[test]
    fn the_agent_protocol_takes_only_a_4_byte_extranonce2() {
        let standard = share(3, 1, 2);
        assert_eq!(
            standard.for_agent_protocol(),
            Some(Share {
                job_id: 1,
                session_id: 3,
                extranonce2: 1,
                nonce: 2,
                ntime: None,
                version_mask: None
            })
        );
        let short = MinerShare {
            extranonce2: ex2("000001"),
            ..standard
        };
        assert_eq!(short.for_agent_protocol(), None);
    }

    #[test]
    fn shares_below_the_pools_target_are_accepted_here_and_below_the_miners_refused() {
        let t = Instant::now();
        let mut c = up("1000000000000");
        c.add_miner(7, 0.000000000001, t);
        let judged = c.judge(&share(7, 0, 1), SUBMIT_ID_BASE, t);
        assert_eq!(
            judged.judgement,
            Judgement::Accept {
                difficulty: 0.000000000001
            }
        );
        c.add_miner(8, 1e12, t);
        let judged = c.judge(&share(8, 0, 1), SUBMIT_ID_BASE, t);
        assert_eq!(
            judged.judgement,
            Judgement::Reject {
                code: code::LOW_DIFFICULTY,
                message: "Low difficulty"
            }
        );
        assert_eq!(
            c.judge(&share(7, 9, 1), SUBMIT_ID_BASE, t).judgement,
            Judgement::Reject {
                code: code::JOB_NOT_FOUND,
                message: "Job not found (=stale)"
            }
        );
        assert_eq!(
            c.judge(&share(99, 0, 1), SUBMIT_ID_BASE, t).judgement,
            Judgement::Reject {
                code: code::UNAUTHORIZED,
                message: "Unauthorized worker"
            }
        );
    }

    #[test]
    fn a_job_from_before_the_pool_raised_its_difficulty_is_judged_at_the_old_one() {
        let t = Instant::now();
        let mut c = up("0.000000000001");
        c.add_miner(7, 0.0, t);
        // Raised: the miners keep theirs (their ceiling only rose).
        let events = c
            .on_line(
                br#"{"id":null,"method":"mining.set_difficulty","params":[1000000000000]}"#,
                t,
            )
            .unwrap();
        assert!(events.is_empty(), "{events:?}");
        assert!(matches!(
            c.judge(&share(7, 0, 1), SUBMIT_ID_BASE, t).judgement,
            Judgement::Forward { .. }
        ));
        // Lowered below a miner's: it follows at once.
        c.add_miner(8, 0.5, t);
        let events = c
            .on_line(
                br#"{"id":null,"method":"mining.set_difficulty","params":[0.25]}"#,
                t,
            )
            .unwrap();
        assert!(
            matches!(&events[..], [Event::MinerDifficulty(v)] if v == &[(8, 0.25)]),
            "{events:?}"
        );
    }

    #[test]
    fn pool_requests_and_changes() {
        let t = Instant::now();
        let mut c = up("1");
        let on = |c: &mut StratumConnection, s: &str| c.on_line(s.as_bytes(), t);
        let events = on(&mut c, r#"{"id":9,"method":"mining.ping","params":[]}"#).unwrap();
        assert!(
            matches!(&events[..], [Event::Send(s)] if text(s) == "{\"id\":9,\"result\":\"pong\",\"error\":null}\n"),
            "{events:?}"
        );
        let events = on(
            &mut c,
            r#"{"result":false,"error":[23,"Above target",null],"id":21}"#,
        )
        .unwrap();
        let [Event::Verdict { index: 5, verdict }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(miner_rejection(verdict), (23, "Above target".into()));
        let events = on(
            &mut c,
            r#"{"id":null,"method":"mining.set_version_mask","params":["00ffe000"]}"#,
        )
        .unwrap();
        assert!(matches!(events[..], [Event::VersionMask(0x00ff_e000)]));
        assert_eq!(c.version_mask(), 0x00ff_e000);
        // A new extranonce1 of the same size waits for the next job.
        on(
            &mut c,
            r#"{"id":null,"method":"mining.set_extranonce","params":["01020304",8]}"#,
        )
        .unwrap();
        assert_eq!(c.extranonce1_hex(), "ee2c106b");
        let notify =
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()});
        let events = on(&mut c, &notify.to_string()).unwrap();
        let [Event::Job(job)] = &events[..] else {
            panic!()
        };
        assert!(
            text(&job.notify).contains("01020304\",\""),
            "{}",
            text(&job.notify)
        );
        assert!(text(&job.notify).contains("\"3-1\""));
        // One that would change the miners' extranonces ends the connection.
        let e = on(
            &mut c,
            r#"{"id":null,"method":"mining.set_extranonce","params":["01020304",4]}"#,
        )
        .unwrap_err();
        assert!(e.contains("4 bytes"), "{e}");
        let events = on(
            &mut c,
            r#"{"id":null,"method":"client.reconnect","params":[]}"#,
        )
        .unwrap();
        assert!(
            matches!(&events[..], [Event::Reconnect(r)] if *r == Reconnect::default()),
            "{events:?}"
        );
        assert!(on(&mut c, "not json").unwrap_err().contains("garbage"));
        let events = on(
            &mut c,
            r#"{"id":null,"method":"mining.notify","params":["x"]}"#,
        )
        .unwrap();
        assert!(
            matches!(&events[..], [Event::Notice(n)] if n.starts_with("ignored: mining.notify")),
            "{events:?}"
        );
        assert!(
            on(&mut c, r#"{"id":5,"method":"mining.unknown","params":[]}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_quiet_miner_is_lowered_and_a_busy_one_raised() {
        let t = Instant::now();
        let mut c = up("1000000000000");
        c.add_miner(7, 1024.0, t);
        assert!(c.tick(t + Duration::from_secs(10)).is_empty());
        assert_eq!(c.tick(t + Duration::from_secs(400)), vec![(7, 256.0)]);
        // Shares far faster than one per 10 s at a tiny difficulty: raised.
        let mut c = up("1000000000000");
        c.add_miner(8, 0.000000000001, t);
        let mut raised = None;
        for i in 0..16 {
            let judged = c.judge(
                &share(8, 0, i),
                SUBMIT_ID_BASE,
                t + Duration::from_millis(100 * i as u64),
            );
            raised = raised.or(judged.new_difficulty);
        }
        assert!(raised.is_some_and(|d| d > 0.000000000001), "{raised:?}");
    }

    #[test]
    fn verdict_words_map_to_the_codes_miners_know() {
        let v = |code: Option<i64>, reason: Option<&str>| Verdict {
            accepted: false,
            code,
            reason: reason.map(String::from),
        };
        assert_eq!(miner_rejection(&v(Some(21), Some("Stale"))).0, 21);
        assert_eq!(miner_rejection(&v(Some(-1), Some("x"))).0, 20);
        assert_eq!(miner_rejection(&v(None, Some("Invalid JobID"))).0, 21);
        assert_eq!(miner_rejection(&v(None, Some("Duplicate"))).0, 22);
        assert_eq!(miner_rejection(&v(None, Some("Above target"))).0, 23);
        assert_eq!(
            miner_rejection(&v(None, Some("Worker mismatch"))),
            (20, "Worker mismatch".into())
        );
        assert_eq!(miner_rejection(&v(None, None)).0, 20);
        assert_eq!(
            text(&set_difficulty_line(16384.0)),
            "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[16384]}\n"
        );
        assert_eq!(
            text(&set_difficulty_line(0.5)),
            "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[0.5]}\n"
        );
    }

    #[test]
    fn client_reconnect_is_handed_on_checked() {
        let t = Instant::now();
        let mut c = up("1");
        let mut on = |s: &str| c.on_line(s.as_bytes(), t);
        let events =
            on(r#"{"id":null,"method":"client.reconnect","params":["pool2.example","3334",5]}"#)
                .unwrap();
        let [Event::Reconnect(r)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (r.host.as_deref(), r.port, r.wait_seconds),
            (Some("pool2.example"), Some(3334), Some(5))
        );
        // Not followable: the connection ends (the slot dials the list), and says why.
        for (params, why) in [
            (r#"["pool2.example",0]"#, "port 0"),
            (r#"["bad host",3333]"#, "\"bad host\" is not a host name"),
        ] {
            let e = on(&format!(
                r#"{{"id":null,"method":"client.reconnect","params":{params}}}"#
            ))
            .unwrap_err();
            assert!(
                e.starts_with("the pool asked to reconnect, not followed (") && e.contains(why),
                "{e}"
            );
            assert!(e.ends_with("dialling the pool list"), "{e}");
        }
    }

    #[test]
    fn a_share_accepted_here_twice_is_a_duplicate() {
        let t = Instant::now();
        let mut c = up("1000000000000");
        c.add_miner(7, 0.000000000001, t);
        c.add_miner(8, 0.000000000001, t);
        let accepted = Judgement::Accept {
            difficulty: 0.000000000001,
        };
        let duplicate = Judgement::Reject {
            code: code::DUPLICATE,
            message: "Duplicate share",
        };
        let judge =
            |c: &mut StratumConnection, s: &MinerShare| c.judge(s, SUBMIT_ID_BASE, t).judgement;
        assert_eq!(judge(&mut c, &share(7, 0, 1)), accepted);
        assert_eq!(judge(&mut c, &share(7, 0, 1)), duplicate);
        // Anything different is another share: the nonce, the miner, the extranonce2,
        // ntime, the version bits.
        assert_eq!(judge(&mut c, &share(7, 0, 2)), accepted);
        assert_eq!(judge(&mut c, &share(8, 0, 1)), accepted);
        let other = |f: fn(&mut MinerShare)| {
            let mut s = share(7, 0, 1);
            f(&mut s);
            s
        };
        let variants = [
            other(|s| s.extranonce2 = MinerExtranonce2::from_u32(2)),
            other(|s| s.ntime = Some(0x679a_c16a)),
            other(|s| s.version_mask = Some(0x0000_2000)),
        ];
        for s in &variants {
            assert_eq!(judge(&mut c, s), accepted, "{s:?}");
            assert_eq!(judge(&mut c, s), duplicate, "{s:?}");
        }
        // The job's ntime written out is the same share as ntime left out.
        assert_eq!(
            judge(&mut c, &other(|s| s.ntime = Some(0x679a_c169))),
            duplicate
        );
        // A clean job voids the old ones and their digests.
        assert_eq!(c.shares_remembered, 6);
        let notify =
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()});
        c.on_line(notify.to_string().as_bytes(), t).unwrap();
        assert_eq!(c.shares_remembered, 0);
        assert_eq!(judge(&mut c, &share(7, 1, 1)), accepted);
        assert_eq!(judge(&mut c, &share(7, 1, 1)), duplicate);
    }

    /// A share for the pool sent twice goes to the pool twice: the pool's verdict
    /// (a duplicate) is what the miner gets.
    #[test]
    fn a_duplicate_for_the_pool_is_the_pools_to_judge() {
        let t = Instant::now();
        let mut c = up("0.000000000001");
        c.add_miner(7, 0.0, t);
        for _ in 0..2 {
            assert!(matches!(
                c.judge(&share(7, 0, 1), SUBMIT_ID_BASE, t).judgement,
                Judgement::Forward { .. }
            ));
        }
    }

    #[test]
    fn share_digests_are_bounded_and_spread() {
        let t = Instant::now();
        let mut c = up("1000000000000");
        c.add_miner(7, 0.000000000001, t);
        c.shares_remembered = SHARES_REMEMBERED - 1;
        c.judge(&share(7, 0, 1), SUBMIT_ID_BASE, t);
        c.judge(&share(7, 0, 2), SUBMIT_ID_BASE, t);
        assert_eq!(c.shares_remembered, SHARES_REMEMBERED, "no more once full");
        assert_eq!(c.jobs[0].seen.len(), 1);
        // Vectors: the digest is fixed (a change would be a new rule, on purpose).
        assert_eq!(share_digest(0, 0, 0, 0, 0), 0x33fe_8bd4_f9c5_7863);
        assert_eq!(share_digest(7, 1, 0x679a_c169, 1, 0), 0xf7ff_7ce8_1661_b288);
        let mut seen = HashSet::new();
        for sid in 0..16u16 {
            for x in 0..256u32 {
                for field in 0..4 {
                    let mut v = [0u32; 4];
                    v[field] = x;
                    seen.insert(share_digest(sid, v[0].into(), v[1], v[2], v[3]));
                }
            }
        }
        // Every (session, one field set) pair distinct, the zero field counted once.
        assert_eq!(seen.len(), 16 * (4 * 255 + 1));
    }

    #[test]
    fn the_silence_allowed_grows_from_the_pools_job_interval() {
        let mut c = up("1");
        let t = c.last_job_at.unwrap();
        let floor = Duration::from_secs(60);
        // One job seen (in up()): three minutes assumed.
        assert_eq!(c.silence_limit(floor), Duration::from_secs(180));
        let notify =
            serde_json::json!({"id": null, "method": "mining.notify", "params": notify_881423()})
                .to_string();
        let feed = |c: &mut StratumConnection, at: u64| {
            c.on_line(notify.as_bytes(), t + Duration::from_secs(at))
                .unwrap();
        };
        // ckpool's 30 s: 90 s of silence, above the configured 60.
        feed(&mut c, 30);
        assert_eq!(c.silence_limit(floor), Duration::from_secs(90));
        feed(&mut c, 40);
        assert_eq!(c.silence_limit(floor), Duration::from_secs(90));
        // A pool whose jobs come every 10 s: the configured timeout is the least.
        let mut quick = up("1");
        let base = quick.last_job_at.unwrap();
        for i in 1..4 {
            quick
                .on_line(notify.as_bytes(), base + Duration::from_secs(10 * i))
                .unwrap();
        }
        assert_eq!(quick.silence_limit(floor), floor);
        // Two minutes between jobs: six of silence; never more than an hour.
        feed(&mut c, 160);
        assert_eq!(c.silence_limit(floor), Duration::from_secs(360));
        feed(&mut c, 160 + 3000);
        assert_eq!(c.silence_limit(floor), Duration::from_secs(3600));
    }

    #[test]
    fn the_connections_hashrate_is_suggested_as_its_difficulty() {
        let mut c = up("42");
        let t = c.window_start.unwrap();
        let at = |s: f64| t + Duration::from_secs_f64(s);
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8(b).unwrap());
        // Not before a window of 2 s with 16 shares.
        for _ in 0..15 {
            c.note_work(65536.0, at(0.5));
        }
        assert_eq!(c.suggestion(at(1.0)), None);
        c.note_work(65536.0, at(1.5));
        assert_eq!(c.suggestion(at(1.9)), None);
        // 16 x 65536 in 2 s: 524288 diff-1 shares/s, one share per 3.33 s at 1745879.
        assert_eq!(
            text(c.suggestion(at(2.0))).as_deref(),
            Some("{\"id\":5,\"method\":\"mining.suggest_difficulty\",\"params\":[1745879]}\n")
        );
        // The same rate for the next minute: nothing more.
        for _ in 0..16 {
            c.note_work(524288.0 * 61.0 / 16.0, at(30.0));
        }
        assert_eq!(c.suggestion(at(63.0)), None);
        // More than 2x: again, but only once a minute has passed since the last one.
        for _ in 0..100 {
            c.note_work(65536.0, at(64.0));
        }
        assert_eq!(c.suggestion(at(64.5)), None, "a window of 2 s at least");
        assert!(c.suggestion(at(66.0)).is_some());
        // The miners leave: after the half-minute window, back down to the pool's
        // start, no lower.
        assert_eq!(c.suggestion(at(96.0)), None, "within a minute of the last");
        assert_eq!(
            text(c.suggestion(at(130.0))).as_deref(),
            Some("{\"id\":5,\"method\":\"mining.suggest_difficulty\",\"params\":[42]}\n")
        );
        // Never above the network's difficulty (nbits 17029a8a: about 1.1e14).
        let mut c = up("42");
        let at = |s: f64| c.window_start.unwrap() + Duration::from_secs_f64(s);
        let (one, two) = (at(1.0), at(2.0));
        for _ in 0..16 {
            c.note_work(1e18, one);
        }
        let line = text(c.suggestion(two)).unwrap();
        let d: f64 = serde_json::from_str::<Value>(&line).unwrap()["params"][0]
            .as_f64()
            .unwrap();
        assert!((1.0e14..1.2e14).contains(&d), "{line}");
        // Not worth it below twice the pool's current difficulty; never before up.
        let mut c = up("1000000");
        let two = c.window_start.unwrap() + Duration::from_secs(2);
        for _ in 0..16 {
            c.note_work(65536.0, two);
        }
        assert_eq!(c.suggestion(two), None);
        let mut c = StratumConnection::new(settings());
        let t = Instant::now();
        c.note_work(65536.0, t);
        assert_eq!(c.suggestion(t + Duration::from_secs(40)), None);
    }
}
