//! The handshake gate: what every handshake message passes before any
//! Diffie-Hellman work, and the cloaked load mode.
//!
//! Stock WireGuard, under load, answers every mac1-valid handshake message
//! without a valid mac2 with a cookie reply. mac1 only proves the sender
//! knows our public key, and in a mesh with one shared policy file everyone
//! holding the file knows it: a flood of such messages would make the node
//! answer strangers, breaking the promise that it stays silent to anyone
//! without an allowed path. Under load umbra therefore only ever replies
//! towards source addresses the configuration or live sessions associate
//! with a peer (endpoints in the policy, last authenticated endpoints), and
//! budgets those replies per source and in total. Everyone else gets
//! silence; their messages are still processed — without a reply unless
//! they authenticate as a peer — up to a small per-source rate and a global
//! budget, so a peer that roamed to an address we never saw can still get
//! in, if slowly, while the flood lasts. docs/security.md discusses the
//! trade-off.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{Device, Dropped};
use crate::wire::wg::COOKIE_REPLY_LEN;

/// Source addresses associated with a peer. Grows only on configuration
/// and on authenticated traffic, so an attacker cannot fill it; rebuilt
/// from the peers when peers go away or roaming left stale entries.
#[derive(Default)]
pub(super) struct KnownSources {
    set: HashSet<IpAddr>,
    dirty: bool,
}

impl KnownSources {
    pub fn insert(&mut self, ip: IpAddr) {
        self.set.insert(ip.to_canonical());
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.set.contains(&ip.to_canonical())
    }

    /// Something was removed: rebuild at the next maintenance tick.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn needs_rebuild(&self, peers: usize) -> bool {
        self.dirty || self.set.len() > 2 * peers + 16
    }

    pub fn rebuild(&mut self, ips: impl Iterator<Item = IpAddr>) {
        self.set.clear();
        for ip in ips {
            self.insert(ip);
        }
        self.dirty = false;
    }
}

impl Device {
    /// mac1 must prove the sender knows our key. Not under load, the message
    /// goes on to the Noise handshake (which answers only peers). Under load:
    /// from a source associated with a peer, a message without a valid mac2
    /// earns a (budgeted) cookie reply and one with it passes the per-source
    /// rate limit; from any other source, no reply ever, and only a small,
    /// rate-limited budget of messages goes on. Returns true when a cookie
    /// reply was written to `reply`.
    pub(super) fn handshake_gate(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: &[u8],
        sender: u32,
        reply: &mut [u8],
    ) -> Result<bool, Dropped> {
        if !self.cookies.check_mac1(msg) {
            return Err(Dropped::Mac1);
        }
        if !self.load.record(now) {
            return Ok(false);
        }
        let ip = src.ip().to_canonical();
        if !self.known.contains(ip) {
            if self.limiter.allow(now, ip) && self.stranger_budget.take(now) {
                return Ok(false);
            }
            return Err(Dropped::RateLimited);
        }
        if self
            .cookies
            .check_mac2(now, self.entropy.as_mut(), msg, &src)
        {
            return match self.known_limiter.allow(now, ip) {
                true => Ok(false),
                false => Err(Dropped::RateLimited),
            };
        }
        if !self.reply_limiter.allow(now, ip) || !self.reply_budget.take(now) {
            return Err(Dropped::RateLimited);
        }
        let out: &mut [u8; COOKIE_REPLY_LEN] = reply
            .get_mut(..COOKIE_REPLY_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Dropped::Malformed)?;
        if !self
            .cookies
            .write_reply(now, self.entropy.as_mut(), msg, sender, &src, out)
        {
            return Err(Dropped::Malformed);
        }
        Ok(true)
    }

    /// Periodic upkeep of the gate's tables (from `tick`).
    pub(super) fn gate_maintenance(&mut self, now: Instant) {
        self.limiter.gc(now);
        self.known_limiter.gc(now);
        self.reply_limiter.gc(now);
        let live = self.peers.iter().flatten().count();
        if self.known.needs_rebuild(live) {
            let ips = self
                .peers
                .iter()
                .flatten()
                .flat_map(|p| p.endpoints())
                .flatten()
                .map(|e| e.ip());
            self.known.rebuild(ips);
        }
    }
}
