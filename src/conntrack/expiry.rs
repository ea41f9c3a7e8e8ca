//! Expiry and eviction: the timeout lists walked from their heads, and
//! which flow makes room when a peer or the whole table is full.

use std::time::Instant;

use super::ended::EndCause;
use super::state::{Class, ALL_CLASSES};
use super::tracker::expired;
use super::{Conntrack, PeerId};

/// Entries an eviction examines at most (per class list, or of one peer).
const EVICTION_LOOKS: usize = 8;

impl Conntrack {
    /// The entry at the head of a class list, with the deadline its list
    /// position implies (from `queued`) and its real one (from
    /// `last_seen`); `None` deadlines mean never.
    fn head_deadline(&self, class: Class) -> Option<(u32, Option<Instant>, Option<Instant>)> {
        let i = self.conns.head(class as usize)?;
        let (_, c) = self.conns.get(i)?;
        let t = class.timeout(&self.config.timeouts);
        Some((i, c.queued.checked_add(t), c.last_seen.checked_add(t)))
    }

    /// The peer is at its share: one of its own flows makes room. Looks at
    /// up to [`EVICTION_LOOKS`] of its flows, oldest admitted first, and
    /// takes the expired, else unassured, else least recently seen one; the
    /// others move to the back of the peer's list, so the next eviction
    /// looks at different flows and an active flow is not picked again and
    /// again.
    pub(super) fn evict_of_peer(&mut self, now: Instant, peer: PeerId) {
        let timeouts = self.config.timeouts;
        let mut best: Option<(u32, (bool, bool, Instant))> = None;
        let looks = EVICTION_LOOKS.min(self.conns.group_len(peer.0));
        for _ in 0..looks {
            let Some(i) = self.conns.group_head(peer.0) else {
                break;
            };
            let Some((_, c)) = self.conns.get(i) else {
                break;
            };
            let class = c.state.class();
            let gone = expired(c.last_seen, class.timeout(&timeouts), now);
            let rank = (!gone, class.assured(), c.last_seen);
            if best.is_none_or(|(_, r)| rank < r) {
                best = Some((i, rank));
            }
            self.conns.group_rotate(i);
        }
        if let Some((i, (alive, _, _))) = best {
            match alive {
                true => {
                    self.take(i, EndCause::Evicted);
                    self.counters.evicted += 1;
                }
                false => {
                    self.take(i, EndCause::Expired);
                    self.counters.expired += 1;
                }
            }
        }
    }

    /// Eviction looks only at list heads, which are the least recently
    /// *queued* entries of each class: an approximation of least recently
    /// seen that costs O(classes) instead of a scan. A head refreshed since
    /// it was queued is requeued first (up to [`EVICTION_LOOKS`] per class),
    /// as `expire` does, so a flow that is still active is not taken
    /// because it is old.
    pub(super) fn evict_one(&mut self, now: Instant) {
        for class in ALL_CLASSES {
            for _ in 0..EVICTION_LOOKS {
                let Some(i) = self.conns.head(class as usize) else {
                    break;
                };
                let Some(c) = self.conns.get_mut(i) else {
                    break;
                };
                if c.last_seen <= c.queued {
                    break;
                }
                c.queued = c.last_seen;
                self.conns.touch(i, class as usize);
            }
        }
        let mut best: Option<(u32, Option<Instant>, bool)> = None;
        for class in ALL_CLASSES {
            let Some((i, _, deadline)) = self.head_deadline(class) else {
                continue;
            };
            // Rank: expired first, then unassured before assured, then the
            // earliest deadline (None means "never", the latest).
            let rank = |(d, assured): (Option<Instant>, bool)| {
                let gone = d.is_some_and(|d| d <= now);
                (!gone, assured, d.is_none(), d)
            };
            let cand = (deadline, class.assured());
            if best.is_none_or(|(_, d, a)| rank(cand) < rank((d, a))) {
                best = Some((i, deadline, class.assured()));
            }
        }
        if let Some((i, deadline, _)) = best {
            if deadline.is_some_and(|d| d <= now) {
                self.take(i, EndCause::Expired);
                self.counters.expired += 1;
            } else {
                self.take(i, EndCause::Evicted);
                self.counters.evicted += 1;
            }
        }
    }

    /// Removes every flow and fragment entry that has timed out; returns
    /// how many flows went.
    ///
    /// Walks each class list from its head while the list position says
    /// the entry may have expired: expired entries are removed, entries
    /// refreshed since they were queued are requeued at the tail with their
    /// real deadline. Each entry is requeued at most once per call, so the
    /// cost is O(removed + requeued + classes), amortised O(1) per flow per
    /// timeout period.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for class in ALL_CLASSES {
            while let Some((i, queued, real)) = self.head_deadline(class) {
                if real.is_some_and(|d| d <= now) {
                    self.take(i, EndCause::Expired);
                    n += 1;
                } else if queued.is_some_and(|d| d <= now) {
                    if let Some(c) = self.conns.get_mut(i) {
                        c.queued = c.last_seen;
                    }
                    self.conns.touch(i, class as usize);
                } else {
                    break;
                }
            }
        }
        self.counters.expired += n as u64;
        let t = self.config.timeouts.fragment;
        while let Some(i) = self.frags.head(0) {
            match self.frags.get(i) {
                Some((_, f)) if expired(f.first_seen, t, now) => {
                    self.frags.remove(i);
                }
                _ => break,
            }
        }
        n
    }

    /// The earliest instant at which some entry will expire, for a node
    /// that would rather arm a timer than poll.
    pub fn next_expiry(&self) -> Option<Instant> {
        let conns = ALL_CLASSES.iter().filter_map(|&c| self.head_deadline(c)?.1);
        let frags = self
            .frags
            .head(0)
            .and_then(|i| self.frags.get(i))
            .and_then(|(_, f)| f.first_seen.checked_add(self.config.timeouts.fragment));
        conns.chain(frags).min()
    }
}
