//! Which extranonce layout a new miner is told at `mining.subscribe`, before its login
//! says which connection it gets (docs/stratum-upstream.md §3): that of the first pool
//! of the list with a connection up, each pool entry's extranonce2 size remembered
//! from its first connection.

use crate::config::PoolEntry;
use crate::protocol::stratum_upstream::extranonce::MinerLayout;

struct Known {
    entry: PoolEntry,
    /// `None`: the agent protocol (the standard layout).
    extranonce2_size: Option<usize>,
    /// Connections up to it now, across every group.
    up: u32,
}

/// One record per pool entry seen (bounded: entries gone from the config with no
/// connection up are dropped whenever a connection comes up).
#[derive(Default)]
pub struct PoolLayouts {
    known: Vec<Known>,
}

impl PoolLayouts {
    /// A connection to `entry` is up; its pool's extranonce2 is `extranonce2_size`
    /// bytes (`None` on the agent protocol). `pools` is the list in force.
    pub fn connection_up(
        &mut self,
        entry: &PoolEntry,
        extranonce2_size: Option<usize>,
        pools: &[PoolEntry],
    ) {
        self.known
            .retain(|k| k.up > 0 || &k.entry == entry || pools.contains(&k.entry));
        match self.known.iter_mut().find(|k| &k.entry == entry) {
            Some(k) => {
                k.up += 1;
                k.extranonce2_size = extranonce2_size;
            }
            None => self.known.push(Known {
                entry: entry.clone(),
                extranonce2_size,
                up: 1,
            }),
        }
    }

    /// A connection to `entry` that was up went down.
    pub fn connection_down(&mut self, entry: &PoolEntry) {
        if let Some(k) = self.known.iter_mut().find(|k| &k.entry == entry) {
            k.up = k.up.saturating_sub(1);
        }
    }

    /// The layout for a new miner of session `session_id`: the first pool of `pools`
    /// with a connection up, else the first whose size is known, else the standard.
    pub fn for_new_miner(&self, pools: &[PoolEntry], session_id: u16) -> MinerLayout {
        let known = |want_up: bool| {
            pools.iter().find_map(|entry| {
                self.known
                    .iter()
                    .find(|k| &k.entry == entry && (!want_up || k.up > 0))
            })
        };
        let size = known(true)
            .or_else(|| known(false))
            .and_then(|k| k.extranonce2_size);
        MinerLayout::for_new_miner(size, session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StratumEntry;

    fn entry(port: u16, stratum: bool) -> PoolEntry {
        PoolEntry {
            host: "pool".into(),
            port,
            subaccount: if stratum { String::new() } else { "sub".into() },
            stratum: stratum.then(|| StratumEntry {
                user: "acct.farm1".into(),
                password: "x".into(),
                extranonce_subscribe: true,
                identity_passthrough: false,
            }),
        }
    }

    #[test]
    fn the_first_pool_up_gives_the_layout() {
        let (agent, four, six) = (entry(1, false), entry(2, true), entry(3, true));
        let pools = vec![agent.clone(), four.clone(), six.clone()];
        let mut l = PoolLayouts::default();
        let sid = 0x0102;
        assert_eq!(
            l.for_new_miner(&pools, sid),
            MinerLayout::Standard,
            "nothing known"
        );
        l.connection_up(&six, Some(6), &pools);
        assert_eq!(l.for_new_miner(&pools, sid), MinerLayout::SessionId);
        l.connection_up(&four, Some(4), &pools);
        l.connection_up(&four, Some(4), &pools);
        let prefix = MinerLayout::Prefix {
            prefix: 2,
            extranonce2_size: 3,
        };
        assert_eq!(l.for_new_miner(&pools, sid), prefix, "earlier in the list");
        l.connection_up(&agent, None, &pools);
        assert_eq!(l.for_new_miner(&pools, sid), MinerLayout::Standard);
        l.connection_down(&agent);
        l.connection_down(&four);
        assert_eq!(l.for_new_miner(&pools, sid), prefix, "one connection left");
        l.connection_down(&four);
        l.connection_down(&six);
        // None up: the first of the list whose size is known (the agent pool's).
        assert_eq!(l.for_new_miner(&pools, sid), MinerLayout::Standard);
        assert_eq!(
            l.for_new_miner(&pools[1..], sid),
            prefix,
            "remembered from its first connection"
        );
        // A reload drops the entries it no longer lists once nothing is up to them.
        l.connection_up(&six, Some(6), std::slice::from_ref(&six));
        assert_eq!(l.known.len(), 1);
    }
}
