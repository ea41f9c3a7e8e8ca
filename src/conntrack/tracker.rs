//! The tracker itself: lookup, admission, expiry, eviction, retain.

use std::time::{Duration, Instant};

use super::ended::{EndCause, Ended, EndedQueue};
use super::entry::{Conn, Entry};
use super::frag::{Frag, FragKey};
use super::key::Key;
use super::state::{tcp_step, Class, FlowState, TcpState, TcpStep, ALL_CLASSES, CLASSES};
use super::table::Table;
use super::{Config, Counters, Direction, Match, NotTracked, PeerId, RuleId};
use crate::wire::classify::{Embedded, IcmpKind, PacketInfo, Transport};
use crate::wire::tcp::TcpFlags;

/// A fixed-capacity connection tracker. See the [module docs](super) for
/// the calling protocol.
pub struct Conntrack {
    config: Config,
    conns: Table<Key, Conn>,
    frags: Table<FragKey, Frag>,
    counters: Counters,
    ended: EndedQueue,
}

/// Entries an eviction examines at most (per class list, or of one peer).
const EVICTION_LOOKS: usize = 8;

fn expired(last: Instant, timeout: Duration, now: Instant) -> bool {
    now.saturating_duration_since(last) >= timeout
}

impl Conntrack {
    /// A tracker with all its memory allocated up front.
    pub fn new(config: Config) -> Self {
        Conntrack {
            conns: Table::new(config.capacity, CLASSES),
            frags: Table::new(config.fragment_capacity, 1),
            config,
            counters: Counters::default(),
            ended: EndedQueue::default(),
        }
    }

    /// Keeps up to `capacity` removed flows for [`Conntrack::pop_ended`]
    /// (for flow-end records); further ones are counted in
    /// [`Conntrack::ended_lost`]. Allocates the queue now.
    pub fn report_ended(&mut self, capacity: usize) {
        self.ended.enable(capacity);
    }

    /// The oldest removed flow not yet taken, if reporting is on.
    pub fn pop_ended(&mut self) -> Option<Ended> {
        self.ended.queue.pop_front()
    }

    /// Removed flows that did not fit in the queue.
    pub fn ended_lost(&self) -> u64 {
        self.ended.lost
    }

    /// Removes slot `i`, reporting the flow if asked to.
    fn take(&mut self, i: u32, cause: EndCause) {
        if let Some((key, conn)) = self.conns.remove(i) {
            self.ended.push(key, conn, cause);
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Flows currently tracked (expired ones included until reaped).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.len() == 0
    }

    /// Most flows tracked at once.
    pub fn capacity(&self) -> usize {
        self.conns.capacity()
    }

    /// Fragmented datagrams currently remembered.
    pub fn fragment_len(&self) -> usize {
        self.frags.len()
    }

    /// Event counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Judges a packet crossing the node in `dir`, to or from `peer`, and
    /// advances the state of the flow it belongs to.
    pub fn lookup(
        &mut self,
        now: Instant,
        peer: PeerId,
        dir: Direction,
        info: &PacketInfo,
    ) -> Match {
        self.counters.lookups += 1;
        let m = self.lookup_inner(now, peer, dir, info);
        let c = &mut self.counters;
        match m {
            Match::Original(_) => c.original += 1,
            Match::Reply(_) => c.reply += 1,
            Match::Related(_) => c.related += 1,
            Match::Fragment(_) => c.fragments += 1,
            Match::New => c.new += 1,
            Match::Invalid => c.invalid += 1,
        }
        m
    }

    fn lookup_inner(
        &mut self,
        now: Instant,
        peer: PeerId,
        dir: Direction,
        info: &PacketInfo,
    ) -> Match {
        if info.is_later_fragment() {
            return self.lookup_fragment(now, peer, dir, info);
        }
        if let Transport::Icmp {
            kind: IcmpKind::Error(quoted),
            ..
        } = info.transport
        {
            return self.lookup_related(now, peer, dir, info, &quoted);
        }
        let Some((key, orient)) = Key::of_packet(peer, info) else {
            return Match::New;
        };
        let Some(i) = self.conns.find(&key) else {
            return Match::New;
        };
        let timeouts = self.config.timeouts;
        let Some(conn) = self.conns.get_mut(i) else {
            return Match::New;
        };
        if expired(conn.last_seen, conn.state.class().timeout(&timeouts), now) {
            self.take(i, EndCause::Expired);
            self.counters.expired += 1;
            return Match::New;
        }
        let original = orient == conn.orig;
        let class_before = conn.state.class();
        if original != (dir == conn.initiator) {
            // The tuple matches but the packet crosses the node the wrong
            // way: someone is replaying our side's addresses at us.
            return Match::Invalid;
        }
        let next = match conn.state {
            FlowState::Tcp(s) => {
                let flags = info.tcp_flags().unwrap_or_default();
                match tcp_step(s, original, flags) {
                    TcpStep::To(s) => FlowState::Tcp(s),
                    TcpStep::Invalid => return Match::Invalid,
                    TcpStep::Reopen => {
                        self.take(i, EndCause::Replaced);
                        return Match::New;
                    }
                }
            }
            FlowState::Udp { replied } => FlowState::Udp {
                replied: replied || !original,
            },
            FlowState::IcmpEcho { replied } => FlowState::IcmpEcho {
                replied: replied || !original,
            },
            FlowState::Other { replied } => FlowState::Other {
                replied: replied || !original,
            },
        };
        conn.state = next;
        conn.last_seen = now;
        let d = usize::from(!original);
        if let (Some(p), Some(b)) = (conn.packets.get_mut(d), conn.bytes.get_mut(d)) {
            *p += 1;
            *b += info.packet_len as u64;
        }
        let rule = conn.rule;
        // Only a change of timeout class relinks the entry. A plain refresh
        // just stamps `last_seen`: relinking on every packet would touch
        // three more cache lines (neighbours and tail) per packet, which at
        // 100k flows costs more than the lookup itself. `expire` requeues
        // entries whose position is stale instead.
        if next.class() != class_before {
            conn.queued = now;
            self.conns.touch(i, next.class() as usize);
        }
        self.note_first_fragment(now, peer, dir, info, i, rule);
        if original {
            Match::Original(rule)
        } else {
            Match::Reply(rule)
        }
    }

    fn lookup_fragment(
        &mut self,
        now: Instant,
        peer: PeerId,
        dir: Direction,
        info: &PacketInfo,
    ) -> Match {
        let Some(i) = FragKey::of(peer, info).and_then(|k| self.frags.find(&k)) else {
            return Match::Invalid;
        };
        let Some((_, f)) = self.frags.get(i) else {
            return Match::Invalid;
        };
        let f = *f;
        if expired(f.first_seen, self.config.timeouts.fragment, now)
            || self.conns.generation(f.owner) != Some(f.owner_generation)
        {
            self.frags.remove(i);
            return Match::Invalid;
        }
        if f.direction != dir {
            return Match::Invalid;
        }
        Match::Fragment(f.rule)
    }

    /// An ICMP error is related to a flow if the packet it quotes belongs
    /// to the flow, travelled the opposite way to the error, and was sent by
    /// the endpoint the error is addressed to. Errors never refresh a flow.
    fn lookup_related(
        &mut self,
        now: Instant,
        peer: PeerId,
        dir: Direction,
        info: &PacketInfo,
        quoted: &Embedded,
    ) -> Match {
        if quoted.src != info.dst {
            return Match::Invalid;
        }
        let Some((key, orient)) = Key::of_embedded(peer, quoted) else {
            return Match::Invalid;
        };
        let Some((_, conn)) = self.conns.find(&key).and_then(|i| self.conns.get(i)) else {
            return Match::Invalid;
        };
        if expired(
            conn.last_seen,
            conn.state.class().timeout(&self.config.timeouts),
            now,
        ) {
            return Match::Invalid;
        }
        let quoted_dir = if orient == conn.orig {
            conn.initiator
        } else {
            conn.initiator.opposite()
        };
        if quoted_dir != dir.opposite() {
            return Match::Invalid;
        }
        Match::Related(conn.rule)
    }

    /// Records a flow the policy just allowed, from the packet `lookup`
    /// returned [`Match::New`] for. `rule` is the rule that allowed it.
    ///
    /// A TCP flow opened by a segment without SYN (say, after the node
    /// restarted) is picked up mid-stream and counts as unassured until the
    /// other side answers. If the table is full an entry is evicted (see
    /// the module docs). An existing entry with the same key is replaced.
    pub fn admit(
        &mut self,
        now: Instant,
        peer: PeerId,
        dir: Direction,
        info: &PacketInfo,
        rule: RuleId,
    ) -> Result<(), NotTracked> {
        let Some(state) = initial_state(info) else {
            self.counters.not_tracked += 1;
            return Err(NotTracked::Stateless);
        };
        let Some((key, orient)) = Key::of_packet(peer, info) else {
            self.counters.not_tracked += 1;
            return Err(NotTracked::Stateless);
        };
        if let Some(old) = self.conns.find(&key) {
            self.take(old, EndCause::Replaced);
        }
        if self.conns.group_len(peer.0) >= self.config.per_peer() {
            self.evict_of_peer(now, peer);
        }
        if self.conns.is_full() {
            self.evict_one(now);
        }
        let conn = Conn {
            orig: orient,
            initiator: dir,
            state,
            rule,
            created: now,
            last_seen: now,
            queued: now,
            packets: [1, 0],
            bytes: [info.packet_len as u64, 0],
        };
        let Some(i) = self.conns.insert(key, conn, state.class() as usize, peer.0) else {
            self.counters.not_tracked += 1;
            return Err(NotTracked::Stateless);
        };
        self.counters.admitted += 1;
        self.note_first_fragment(now, peer, dir, info, i, rule);
        Ok(())
    }

    fn note_first_fragment(
        &mut self,
        now: Instant,
        peer: PeerId,
        dir: Direction,
        info: &PacketInfo,
        owner: u32,
        rule: RuleId,
    ) {
        let Some(key) = FragKey::of(peer, info) else {
            return;
        };
        let Some(owner_generation) = self.conns.generation(owner) else {
            return;
        };
        if let Some(old) = self.frags.find(&key) {
            self.frags.remove(old);
        }
        if self.frags.is_full() {
            // One timeout for all: the head is the oldest, expired or not.
            if let Some(h) = self.frags.head(0) {
                self.frags.remove(h);
                self.counters.fragments_evicted += 1;
            }
        }
        let frag = Frag {
            owner,
            owner_generation,
            rule,
            direction: dir,
            first_seen: now,
        };
        self.frags.insert(key, frag, 0, 0);
    }

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
    fn evict_of_peer(&mut self, now: Instant, peer: PeerId) {
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
    fn evict_one(&mut self, now: Instant) {
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

    /// Keeps only the flows for which `keep` returns true; returns how many
    /// were removed. Fragment entries of removed flows go too, so a cut
    /// flow's fragments stop at once. O(capacity): meant for policy reloads.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry<'_>) -> bool) -> usize {
        let doomed: Vec<u32> = self
            .conns
            .occupied()
            .filter(|&i| match self.conns.get(i) {
                Some((key, conn)) => !keep(&Entry { key, conn }),
                None => false,
            })
            .collect();
        for &i in &doomed {
            self.take(i, EndCause::Removed);
        }
        self.drop_orphan_fragments();
        self.counters.removed += doomed.len() as u64;
        doomed.len()
    }

    /// Forgets fragment entries whose flow is gone.
    fn drop_orphan_fragments(&mut self) {
        let orphans: Vec<u32> = self
            .frags
            .occupied()
            .filter(|&i| match self.frags.get(i) {
                Some((_, f)) => self.conns.generation(f.owner) != Some(f.owner_generation),
                None => false,
            })
            .collect();
        for i in orphans {
            self.frags.remove(i);
        }
    }

    /// Like [`Conntrack::retain`], but `judge` also names the rule a kept
    /// flow is now admitted by (`None` removes it), so after a policy
    /// reload every flow points at a rule of the policy in force.
    pub fn rejudge(&mut self, mut judge: impl FnMut(&Entry<'_>) -> Option<RuleId>) -> usize {
        let verdicts: Vec<(u32, Option<RuleId>)> = self
            .conns
            .occupied()
            .filter_map(|i| {
                let (key, conn) = self.conns.get(i)?;
                Some((i, judge(&Entry { key, conn })))
            })
            .collect();
        let mut removed = 0;
        for (i, verdict) in verdicts {
            match verdict {
                Some(r) => {
                    if let Some(c) = self.conns.get_mut(i) {
                        c.rule = r;
                    }
                }
                None => {
                    self.take(i, EndCause::Removed);
                    removed += 1;
                }
            }
        }
        self.counters.removed += removed as u64;
        if removed > 0 {
            self.drop_orphan_fragments();
        }
        removed
    }

    /// Removes every flow of a peer (removed from the policy, quarantined).
    pub fn remove_peer(&mut self, peer: PeerId) -> usize {
        self.retain(|e| e.peer() != peer)
    }

    /// All tracked flows, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        self.conns
            .occupied()
            .filter_map(|i| self.conns.get(i))
            .map(|(key, conn)| Entry { key, conn })
    }

    /// Checks the internal structures (O(capacity)); for tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        self.conns.check()?;
        self.frags.check()?;
        for i in self.conns.occupied() {
            let Some((_, c)) = self.conns.get(i) else {
                return Err("occupied slot without entry");
            };
            if self.conns.list_of(i) != Some(c.state.class() as usize) {
                return Err("flow on the wrong timeout list");
            }
        }
        Ok(())
    }
}

/// The state a flow starts in, or `None` for packets that open no flow.
fn initial_state(info: &PacketInfo) -> Option<FlowState> {
    if info.is_later_fragment() {
        return None;
    }
    match info.transport {
        Transport::Tcp { flags, .. } => {
            if flags.contains(TcpFlags::RST) || flags.contains(TcpFlags::SYN | TcpFlags::ACK) {
                None
            } else if flags.is_syn_only() {
                Some(FlowState::Tcp(TcpState::SynSent))
            } else {
                Some(FlowState::Tcp(TcpState::MidStream))
            }
        }
        Transport::Udp { .. } => Some(FlowState::Udp { replied: false }),
        Transport::Icmp {
            kind: IcmpKind::EchoRequest { .. },
            ..
        } => Some(FlowState::IcmpEcho { replied: false }),
        Transport::Icmp { .. } => None,
        Transport::None => Some(FlowState::Other { replied: false }),
    }
}
