//! The tracker itself: its tables, lookup and admission. Expiry and
//! eviction are in `expiry`, reload-time pruning in `reload`.

use std::time::{Duration, Instant};

use super::ended::{EndCause, Ended, EndedQueue};
use super::entry::{Conn, Entry};
use super::frag::{Frag, FragKey};
use super::key::Key;
use super::state::{tcp_step, FlowState, TcpState, TcpStep, CLASSES};
use super::table::Table;
use super::{Config, Counters, Direction, Match, NotTracked, PeerId, RuleId};
use crate::wire::classify::{Embedded, IcmpKind, PacketInfo, Transport};
use crate::wire::tcp::TcpFlags;

/// A fixed-capacity connection tracker. See the [module docs](super) for
/// the calling protocol.
pub struct Conntrack {
    pub(super) config: Config,
    pub(super) conns: Table<Key, Conn>,
    pub(super) frags: Table<FragKey, Frag>,
    pub(super) counters: Counters,
    ended: EndedQueue,
}

/// Whether an entry last seen at `last` has outlived `timeout` at `now`.
pub(super) fn expired(last: Instant, timeout: Duration, now: Instant) -> bool {
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
    pub(super) fn take(&mut self, i: u32, cause: EndCause) {
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
