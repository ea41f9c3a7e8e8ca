//! The node's sans-IO core: the tunnel device, cryptokey routing, the
//! compiled policy and the connection tracker, glued into two packet paths.
//!
//! - [`Engine::outbound`]: a packet from the local tunnel (TUN device or
//!   userspace stack). Routed to a peer by destination; a new flow must
//!   pass the *receiver's* policy (egress check) so nothing is sent that
//!   the other side would drop; then encrypted.
//! - [`Engine::inbound`]: a datagram from the network. Handshakes are
//!   answered only for peers the policy lets us talk to (everything else is
//!   cloaked: no answer at all); decrypted packets must come from an address
//!   the sending peer owns, must be for this node, and a new flow must pass
//!   this node's policy (ingress check). Return traffic of admitted flows
//!   passes through the connection tracker without a rule.
//!
//! Reloading swaps the policy without disturbing unchanged peers' sessions,
//! drops removed or quarantined peers at once and cuts tracked flows the
//! new policy no longer allows.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

pub use super::action::{Action, Datagram, DropCounters, DropReason};
use super::events::{Event, EventQueue};
use super::flows::{EndReason, FlowItem, FlowQueue, PolicyMeta};
pub use super::reload::{PeerResolver, ReloadError};
use super::routes::Routes;
use crate::conntrack::{self, Conntrack, Direction, Match};
use crate::keys::PrivateKey;
use crate::net::{IpNet, IpProtocol};
use crate::policy::{Action as PolicyAction, Node, NodeId, NodeTable, Policy, Verdict};
use crate::tunnel::{self, Device, PeerId, Received, SendError, Sent, Transmit};
use crate::wire::reject::{reject, RejectWith, MAX_REPLY_LEN};
use crate::wire::wg::DATA_HEADER_LEN;
use crate::wire::{classify, PacketInfo};

/// Buffer size the engine's callers should use for packets and replies:
/// room for a 1500-byte inner packet plus WireGuard's overhead.
pub const BUF_LEN: usize = 2048;

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tunnel: tunnel::Config,
    pub conntrack: conntrack::Config,
    /// Queue flow records (start, end, denied, audit) for
    /// [`Engine::poll_flow`]; off, the engine builds none.
    pub flow_records: bool,
}

pub struct Engine {
    pub(super) device: Device,
    pub(super) policy: Policy,
    pub(super) me: NodeId,
    pub(super) table: NodeTable,
    pub(super) routes: Routes,
    /// Policy node of each tunnel peer, indexed by `PeerId`.
    pub(super) peer_node: Vec<Option<NodeId>>,
    /// The inverse: each node's tunnel peer, by node index (O(1) per
    /// outbound packet).
    pub(super) node_peer: Vec<Option<PeerId>>,
    pub(super) conntrack: Conntrack,
    /// The names flow records and status refer to, for `policy`.
    pub(super) meta: std::sync::Arc<PolicyMeta>,
    /// Flow records for the flow log, when asked for.
    pub(super) flows: Option<FlowQueue>,
    /// The latest `now` the engine was given (reloads take none).
    pub(super) last_now: Instant,
    /// Handshake responses and cookie replies sent.
    pub(super) replies: super::flows::ReplyCounters,
    /// Decisions on new flows, by verdict and rule.
    pub(super) decisions: super::flows::Decisions,
    pub(super) events: EventQueue,
    pub(super) drops: DropCounters,
    /// Replies the engine builds itself (`reject` answers and local
    /// refusals) are written here: [`BUF_LEN`] bytes.
    pub(super) scratch: Box<[u8; BUF_LEN]>,
    /// Wall-clock time of the last tick or reload, for rule expiry.
    pub(super) wall: SystemTime,
    /// Per-flow events (audit, denied) still allowed this second.
    pub(super) flow_event_budget: u32,
    pub(super) flow_events_suppressed: u64,
    pub(super) budget_refilled: Option<Instant>,
}

/// Per-flow events recorded per second at most; the rest are counted.
pub const FLOW_EVENTS_PER_SECOND: u32 = 100;

impl Engine {
    /// Starts a node: finds itself in `policy` by `private`'s public key and
    /// configures every peer the policy lets it talk to.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Policy,
        private: PrivateKey,
        options: Options,
        entropy: Box<dyn tunnel::Entropy>,
        resolver: &mut dyn PeerResolver,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Engine, ReloadError> {
        let public = private.public_key();
        let me = policy
            .node_by_key(&public)
            .ok_or(ReloadError::NotInPolicy(public))?
            .id;
        let table = policy.compile_for(me, wall);
        let mut conntrack = Conntrack::new(options.conntrack);
        if options.flow_records {
            conntrack.report_ended(super::flows::FLOW_QUEUE);
        }
        let mut engine = Engine {
            device: Device::new(private, options.tunnel, entropy, now, wall),
            table,
            me,
            policy: policy.clone(),
            routes: Routes::default(),
            peer_node: Vec::new(),
            node_peer: Vec::new(),
            conntrack,
            meta: std::sync::Arc::new(PolicyMeta::of(&policy)),
            flows: options.flow_records.then(FlowQueue::new),
            last_now: now,
            replies: Default::default(),
            decisions: Default::default(),
            events: EventQueue::default(),
            drops: DropCounters::new(),
            scratch: Box::new([0u8; BUF_LEN]),
            wall,
            flow_event_budget: FLOW_EVENTS_PER_SECOND,
            flow_events_suppressed: 0,
            budget_refilled: None,
        };
        engine.reload(policy, resolver, wall)?;
        Ok(engine)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn me(&self) -> &Node {
        // `me` was looked up in this very policy; the fallback is unreachable.
        self.policy
            .node(self.me)
            .unwrap_or_else(|| &self.policy.nodes()[0])
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    /// The next flow-log record, if flow records are on.
    pub fn poll_flow(&mut self) -> Option<FlowItem> {
        self.flows.as_mut()?.pop()
    }

    /// The next operator-visible event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Counts a drop and says so.
    fn dropped<'x>(&mut self, why: DropReason) -> Action<'x> {
        *self.drops.entry(why).or_insert(0) += 1;
        Action::Dropped(why)
    }

    /// Handles a packet read from the local side, at
    /// `buf[DATA_HEADER_LEN..][..len]`; `buf` should be [`BUF_LEN`] long.
    /// An allowed packet is encrypted in place and comes back as
    /// [`Action::Send`] of a prefix of `buf`; a refused one as the refusal
    /// to write back locally ([`Action::Deliver`]) or a drop.
    pub fn outbound<'a>(&'a mut self, now: Instant, buf: &'a mut [u8], len: usize) -> Action<'a> {
        self.last_now = now;
        let Some(packet) = buf.get(DATA_HEADER_LEN..DATA_HEADER_LEN + len) else {
            return self.dropped(DropReason::Malformed);
        };
        let Ok(info) = classify(packet) else {
            return self.dropped(DropReason::Malformed);
        };
        let Some(node) = self.routes.lookup(info.dst) else {
            return self.dropped(DropReason::NoRoute);
        };
        // A node we have no session with is judged like any other, so a
        // `reject` rule still answers; with no peer nothing can be allowed.
        let peer = self.peer_of(node);
        let ct_peer = conntrack::PeerId(peer.map_or(u32::MAX, |p| p.0));
        let tracked = match peer {
            Some(_) => self
                .conntrack
                .lookup(now, ct_peer, Direction::Outbound, &info),
            None => Match::New,
        };
        match tracked {
            Match::Invalid => return self.dropped(DropReason::Invalid),
            Match::New => {
                let (proto, port) = policy_key(&info);
                let verdict = match peer {
                    Some(_) => self.table.egress(node, info.dst, proto, port),
                    None => self.table_verdict_without_peer(node, &info),
                };
                self.note_audit(&verdict, node, &info, true);
                self.decisions.count(&verdict);
                if !verdict.allowed() {
                    return self.refuse_locally(&verdict, node, &info, packet);
                }
                // Untrackable protocols pass on the rule alone.
                let admitted = self.conntrack.admit(
                    now,
                    ct_peer,
                    Direction::Outbound,
                    &info,
                    rule_id(&verdict),
                );
                if self.flows.is_some() {
                    self.record_start(now, admitted.is_ok(), node, &info, &verdict, false);
                }
            }
            _ => {}
        }
        let Some(peer) = peer else {
            return self.dropped(DropReason::Denied);
        };
        match self.device.encapsulate(now, peer, buf, len) {
            Ok(Sent::Now(t)) => Action::Send(Datagram {
                to: t.endpoint,
                // The device wrote the datagram at the start of `buf`.
                bytes: &buf[..t.len],
            }),
            Ok(Sent::Queued) => Action::Nothing,
            Err(SendError::NoEndpoint) => self.dropped(DropReason::NoEndpoint),
            Err(_) => self.dropped(DropReason::Malformed),
        }
    }

    /// Fail fast locally: the local application gets the refusal of a
    /// flow the policy denies at once (a `reject` rule's answer, else a
    /// TCP RST or ICMP administratively prohibited) instead of waiting out
    /// its timeouts. Only local packets come through here; remote peers
    /// still get silence.
    fn refuse_locally<'a>(
        &'a mut self,
        verdict: &Verdict,
        node: NodeId,
        info: &PacketInfo,
        packet: &[u8],
    ) -> Action<'a> {
        let with = if verdict.action == PolicyAction::Reject {
            self.note_denied(verdict, node, info, true);
            reject_with(info)
        } else {
            // Counted as denied like any drop (nothing left).
            *self.drops.entry(DropReason::Denied).or_insert(0) += 1;
            self.note_refused_locally(verdict, node, info);
            refuse_locally_with(info)
        };
        let Some(room) = self.scratch.get_mut(..MAX_REPLY_LEN) else {
            return Action::Dropped(DropReason::Denied);
        };
        match reject(packet, with, room) {
            Ok(Some(n)) => Action::Deliver {
                packet: &self.scratch[..n],
                info: None,
            },
            _ if verdict.action == PolicyAction::Reject => self.dropped(DropReason::Denied),
            _ => Action::Dropped(DropReason::Denied),
        }
    }

    /// Handles a datagram from `src`, decrypting it in place. Handshake
    /// answers are written to `reply` (at least [`BUF_LEN`] bytes) and come
    /// back as [`Action::Send`]; an admitted packet as [`Action::Deliver`]
    /// of a slice of `datagram`.
    pub fn inbound<'a>(
        &'a mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &'a mut [u8],
        reply: &'a mut [u8],
    ) -> Action<'a> {
        self.last_now = now;
        match self.device.handle_datagram(now, src, datagram, reply) {
            Err(d) => self.dropped(DropReason::Tunnel(d)),
            Ok(Received::Reply(r)) => {
                self.replies.note(r);
                Action::Send(Datagram { to: src, bytes: r })
            }
            Ok(Received::Done) => Action::Nothing,
            Ok(Received::Packet { peer, packet }) => self.admit_inbound(now, peer, packet),
        }
    }

    /// Cryptokey routing, the spoof check and this node's policy for a
    /// packet `peer` sent us.
    fn admit_inbound<'a>(&'a mut self, now: Instant, peer: PeerId, packet: &'a [u8]) -> Action<'a> {
        let Ok(info) = classify(packet) else {
            return self.dropped(DropReason::Malformed);
        };
        let Some(node) = self.peer_node.get(peer.0 as usize).copied().flatten() else {
            return self.dropped(DropReason::Denied);
        };
        if self.routes.lookup(info.src) != Some(node) {
            return self.dropped(DropReason::Spoofed);
        }
        if !self.me().accepts(info.dst) {
            return self.dropped(DropReason::NotForUs);
        }
        let ct_peer = conntrack::PeerId(peer.0);
        match self
            .conntrack
            .lookup(now, ct_peer, Direction::Inbound, &info)
        {
            Match::Invalid => self.dropped(DropReason::Invalid),
            Match::New => {
                let (proto, port) = policy_key(&info);
                let verdict = self.table.ingress(node, info.dst, proto, port);
                self.note_audit(&verdict, node, &info, false);
                self.decisions.count(&verdict);
                if verdict.allowed() {
                    let admitted = self.conntrack.admit(
                        now,
                        ct_peer,
                        Direction::Inbound,
                        &info,
                        rule_id(&verdict),
                    );
                    if self.flows.is_some() {
                        self.record_start(now, admitted.is_ok(), node, &info, &verdict, true);
                    }
                    return Action::Deliver {
                        packet,
                        info: Some(info),
                    };
                }
                self.note_denied(&verdict, node, &info, false);
                if verdict.action == PolicyAction::Reject {
                    if let Some(t) = self.reject_to_peer(now, peer, packet, &info) {
                        return Action::Send(Datagram {
                            to: t.endpoint,
                            bytes: &self.scratch[..t.len],
                        });
                    }
                }
                self.dropped(DropReason::Denied)
            }
            _ => Action::Deliver {
                packet,
                info: Some(info),
            },
        }
    }

    /// A `reject` rule's answer to a peer, encrypted at the start of the
    /// scratch buffer.
    fn reject_to_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        packet: &[u8],
        info: &PacketInfo,
    ) -> Option<Transmit> {
        let room = self.scratch.get_mut(DATA_HEADER_LEN..)?;
        let n = reject(packet, reject_with(info), room).ok()??;
        match self.device.encapsulate(now, peer, &mut self.scratch[..], n) {
            Ok(Sent::Now(t)) => Some(t),
            _ => None,
        }
    }

    /// Writes the next datagram the tunnel wants sent (handshakes,
    /// keepalives, queued packets) into `buf`.
    pub fn poll_transmit<'a>(&mut self, now: Instant, buf: &'a mut [u8]) -> Option<Datagram<'a>> {
        let t = self.device.poll_transmit(now, buf)?;
        Some(Datagram {
            to: t.endpoint,
            bytes: &buf[..t.len],
        })
    }

    /// Timers: tunnel, flow expiry and rule expiry. Call every
    /// [`tunnel::timers::TICK`].
    pub fn tick(&mut self, now: Instant, wall: SystemTime) {
        self.device.tick(now);
        self.last_now = now;
        self.conntrack.expire(now);
        self.record_ended(EndReason::Idle, self.policy.id(), &self.meta.clone());
        self.wall = wall;
        if self
            .budget_refilled
            .is_none_or(|t| now.saturating_duration_since(t) >= std::time::Duration::from_secs(1))
        {
            if self.flow_events_suppressed > 0 {
                self.events.push(Event::Suppressed {
                    count: self.flow_events_suppressed,
                });
                self.flow_events_suppressed = 0;
            }
            self.flow_event_budget = FLOW_EVENTS_PER_SECOND;
            self.budget_refilled = Some(now);
            let id = self.policy.id();
            if let Some(q) = self.flows.as_mut() {
                q.refill(now, id);
            }
        }
        if self.table.next_expiry().is_some_and(|t| wall >= t) {
            self.table = self.policy.compile_for(self.me, wall);
            let cut = self.recheck_flows();
            self.record_ended(EndReason::Policy, self.policy.id(), &self.meta.clone());
            self.events.push(Event::PolicyApplied {
                id: self.policy.id(),
                peers: self.table.peers().len(),
                flows_cut: cut,
                peers_removed: 0,
            });
        }
    }

    /// Starts handshakes with every peer that has an endpoint, so the first
    /// packet does not wait.
    pub fn connect_all(&mut self) {
        for peer in self.device.peer_ids().collect::<Vec<_>>() {
            self.device.initiate(peer);
        }
    }

    /// The networks this node must route into its tunnel: every other
    /// node's addresses and served networks, peer or not, so mesh traffic
    /// is judged here and never leaks to the underlay.
    pub fn routed_networks(&self) -> Vec<IpNet> {
        self.policy
            .nodes()
            .iter()
            .filter(|n| n.id != self.me)
            .flat_map(|n| n.space().collect::<Vec<_>>())
            .collect()
    }

    /// The tunnel peer that is `node`, if it is one.
    pub fn peer_of(&self, node: NodeId) -> Option<PeerId> {
        self.node_peer.get(node.index()).copied().flatten()
    }
}

/// The (protocol, port) pair the policy judges: destination port for TCP
/// and UDP, ICMP type for ICMP, 0 for anything else.
pub(super) fn policy_key(info: &PacketInfo) -> (IpProtocol, u16) {
    let port = info
        .dst_port()
        .or_else(|| info.icmp_type_code().map(|(t, _)| u16::from(t)))
        .unwrap_or(0);
    (info.protocol, port)
}

fn reject_with(info: &PacketInfo) -> RejectWith {
    match info.protocol {
        IpProtocol::TCP | IpProtocol::UDP => RejectWith::Closed,
        _ => RejectWith::AdminProhibited,
    }
}

/// How a locally originated packet the policy denies is refused: a TCP
/// RST for TCP (the application sees "connection refused"), ICMP
/// administratively prohibited for everything else.
fn refuse_locally_with(info: &PacketInfo) -> RejectWith {
    match info.protocol {
        IpProtocol::TCP => RejectWith::Closed,
        _ => RejectWith::AdminProhibited,
    }
}

pub(super) fn rule_id(v: &Verdict) -> conntrack::RuleId {
    conntrack::RuleId(v.rule.map_or(u32::MAX, |r| r.0))
}
