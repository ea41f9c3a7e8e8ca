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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use super::events::{Event, EventQueue, FlowDesc};
use super::flows::{EndReason, FlowItem, FlowQueue, PolicyMeta};
use super::routes::Routes;
use crate::conntrack::{self, Conntrack, Direction, Match};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::policy::{Action, Node, NodeId, NodeTable, Policy, Verdict};
use crate::tunnel::{
    self, Device, Dropped, PeerConfig, PeerId, Received, SendError, Sent, Transmit,
};
use crate::wire::reject::{reject, RejectWith, MAX_REPLY_LEN};
use crate::wire::wg::DATA_HEADER_LEN;
use crate::wire::{classify, PacketInfo};

/// Buffer size the engine's callers should use for packets and replies:
/// room for a 1500-byte inner packet plus WireGuard's overhead.
pub const BUF_LEN: usize = 2048;

/// What the engine needs from the outside world to configure a peer: file
/// and name lookups stay at the edge.
pub trait PeerResolver {
    /// The preshared key for `node` (all-zero when it names none).
    fn preshared_key(&mut self, node: &Node) -> Result<PresharedKey, String>;
    /// The UDP endpoint for `node`, if it has one.
    fn endpoint(&mut self, node: &Node) -> Result<Option<SocketAddr>, String>;
}

/// Why a reload was refused; the old state stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// Our public key is not in the policy.
    NotInPolicy(PublicKey),
    /// A peer's preshared key could not be loaded.
    Peer { name: String, problem: String },
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NotInPolicy(k) => write!(
                f,
                "this node's public key {k} is not in the policy: add a `node` line with `key {k}`"
            ),
            ReloadError::Peer { name, problem } => write!(f, "peer {name}: {problem}"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// Why a packet went nowhere. Counted, never answered (unless a rule says
/// `reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The tunnel engine refused the datagram (see [`Dropped`]).
    Tunnel(Dropped),
    /// Not an IP packet we can classify.
    Malformed,
    /// No peer owns the destination.
    NoRoute,
    /// The inner source address does not belong to the sending peer.
    Spoofed,
    /// The destination is not this node (we do not relay between peers).
    NotForUs,
    /// The connection tracker found the packet inconsistent with its flow.
    Invalid,
    /// The policy refused the new flow.
    Denied,
    /// The peer has no endpoint yet: it must contact us first.
    NoEndpoint,
}

/// Outcome of [`Engine::outbound`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Send `buf[..len]` to the endpoint.
    Send(Transmit),
    /// Waiting for a handshake; poll for transmits.
    Queued,
    /// Write this reply (a policy `reject`) back into the local tunnel.
    Local(&'a [u8]),
    Dropped(DropReason),
}

/// Outcome of [`Engine::inbound`].
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'d, 'r> {
    /// Write this packet to the local tunnel (with what the engine
    /// learned of it).
    Deliver(&'d [u8], PacketInfo),
    /// Send these bytes back to the datagram's source (handshake answers).
    Reply(&'r [u8]),
    /// Send `reply[..len]` to the transmit's endpoint (a policy `reject`).
    Send(Transmit),
    /// Consumed; poll for transmits.
    Nothing,
    Dropped(DropReason),
}

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tunnel: tunnel::Config,
    pub conntrack: conntrack::Config,
    /// Queue flow records (start, end, denied, audit) for
    /// [`Engine::poll_flow`]; off, the engine builds none.
    pub flow_records: bool,
}

/// Drop counters, by reason, for status output.
pub type DropCounters = HashMap<DropReason, u64>;

pub struct Engine {
    device: Device,
    policy: Policy,
    me: NodeId,
    table: NodeTable,
    routes: Routes,
    /// Policy node of each tunnel peer, indexed by `PeerId`.
    pub(super) peer_node: Vec<Option<NodeId>>,
    /// The inverse: each node's tunnel peer, by node index (O(1) per
    /// outbound packet).
    node_peer: Vec<Option<PeerId>>,
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
    events: EventQueue,
    drops: DropCounters,
    /// Reject replies for the local tunnel are built here.
    scratch: Box<[u8; MAX_REPLY_LEN]>,
    /// Wall-clock time of the last tick or reload, for rule expiry.
    wall: SystemTime,
    /// Per-flow events (audit, denied) still allowed this second.
    flow_event_budget: u32,
    flow_events_suppressed: u64,
    budget_refilled: Option<Instant>,
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
            scratch: Box::new([0u8; MAX_REPLY_LEN]),
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

    /// Applies a new policy. On error nothing changes.
    pub fn reload(
        &mut self,
        policy: Policy,
        resolver: &mut dyn PeerResolver,
        wall: SystemTime,
    ) -> Result<(), ReloadError> {
        let public = *self.device.public_key();
        let me = policy
            .node_by_key(&public)
            .ok_or(ReloadError::NotInPolicy(public))?
            .id;
        let table = policy.compile_for(me, wall);
        // Resolve every peer first so a bad entry leaves the old state intact.
        let mut wanted: Vec<(NodeId, PeerConfig)> = Vec::new();
        for &id in table.peers() {
            let Some(node) = policy.node(id) else {
                continue;
            };
            let psk = resolver
                .preshared_key(node)
                .map_err(|problem| ReloadError::Peer {
                    name: node.name.clone(),
                    problem,
                })?;
            let endpoint = match resolver.endpoint(node) {
                Ok(e) => e,
                Err(problem) => {
                    // An unresolvable endpoint is not fatal: the peer can
                    // still contact us, and roaming will teach us where it is.
                    self.events.push(Event::PeerProblem {
                        name: node.name.clone(),
                        problem,
                    });
                    None
                }
            };
            let mut pc = PeerConfig::new(node.key);
            pc.preshared_key = psk;
            pc.endpoint = endpoint;
            pc.persistent_keepalive = node
                .keepalive
                .map(|s| std::time::Duration::from_secs(u64::from(s)));
            wanted.push((id, pc));
        }

        let wanted_keys: HashMap<PublicKey, NodeId> =
            wanted.iter().map(|(id, pc)| (pc.public_key, *id)).collect();
        let old_meta = self.meta.clone();
        self.decisions.fold(&old_meta);
        let mut removed = 0;
        let mut flows_of_removed = 0;
        for peer in self.device.peer_ids().collect::<Vec<_>>() {
            let Some(key) = self.device.peer_key(peer) else {
                continue;
            };
            if !wanted_keys.contains_key(&key) {
                let name = self.node_name(peer);
                self.device.remove_peer(peer);
                flows_of_removed += self.conntrack.remove_peer(conntrack::PeerId(peer.0));
                self.record_ended(EndReason::PeerRemoved, policy.id(), &old_meta);
                self.events.push(Event::PeerRemoved { name });
                removed += 1;
            }
        }
        let mut routes = Routes::default();
        for node in policy.nodes() {
            if node.id != me {
                for net in node.space() {
                    routes.insert(net, node.id);
                }
            }
        }
        let mut peer_node = Vec::new();
        for (node_id, pc) in wanted {
            let fresh = self.device.peer_id(&pc.public_key).is_none();
            let peer = self.device.upsert_peer(pc);
            if fresh && !self.peer_node.is_empty() {
                if let Some(n) = policy.node(node_id) {
                    self.events.push(Event::PeerAdded {
                        name: n.name.clone(),
                    });
                }
            }
            let slot = peer.0 as usize;
            if peer_node.len() <= slot {
                peer_node.resize(slot + 1, None);
            }
            if let Some(s) = peer_node.get_mut(slot) {
                *s = Some(node_id);
            }
        }
        self.routes = routes;
        let mut node_peer = vec![None; policy.nodes().len()];
        for (slot, node) in peer_node.iter().enumerate() {
            if let Some(n) = node.and_then(|n| node_peer.get_mut(n.index())) {
                *n = Some(PeerId(slot as u32));
            }
        }
        self.node_peer = node_peer;
        self.peer_node = peer_node;
        self.table = table;
        self.me = me;
        self.policy = policy;
        self.meta = std::sync::Arc::new(PolicyMeta::of(&self.policy));
        self.wall = wall;
        let cut = self.recheck_flows();
        self.record_ended(EndReason::Policy, self.policy.id(), &old_meta);
        self.events.push(Event::PolicyApplied {
            id: self.policy.id(),
            peers: self.table.peers().len(),
            flows_cut: cut + flows_of_removed,
            peers_removed: removed,
        });
        Ok(())
    }

    /// Re-evaluates every tracked flow against the current table; returns
    /// how many were cut.
    fn recheck_flows(&mut self) -> usize {
        let (table, peer_node) = (&self.table, &self.peer_node);
        self.conntrack.rejudge(|e| {
            let node = peer_node.get(e.peer().0 as usize).copied().flatten()?;
            let proto = e.protocol().0;
            let port = match (e.dst_port(), e.protocol().is_icmp()) {
                (Some(p), _) => p,
                (None, true) => echo_request_type(e.dst()),
                (None, false) => 0,
            };
            let verdict = match e.initiator() {
                Direction::Inbound => table.ingress(node, e.dst(), proto, port),
                Direction::Outbound => table.egress(node, e.dst(), proto, port),
            };
            verdict.allowed().then(|| rule_id(&verdict))
        })
    }

    fn node_name(&self, peer: PeerId) -> String {
        self.peer_node
            .get(peer.0 as usize)
            .copied()
            .flatten()
            .and_then(|n| self.policy.node(n))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("peer#{}", peer.0))
    }

    fn drop_with<T>(&mut self, why: DropReason, out: T) -> T {
        *self.drops.entry(why).or_insert(0) += 1;
        out
    }

    /// Handles a packet read from the local tunnel, at
    /// `buf[DATA_HEADER_LEN..][..len]`; `buf` should be [`BUF_LEN`] long.
    pub fn outbound(&mut self, now: Instant, buf: &mut [u8], len: usize) -> Outbound<'_> {
        self.last_now = now;
        let Some(packet) = buf.get(DATA_HEADER_LEN..DATA_HEADER_LEN + len) else {
            return self.drop_with(
                DropReason::Malformed,
                Outbound::Dropped(DropReason::Malformed),
            );
        };
        let Ok(info) = classify(packet) else {
            return self.drop_with(
                DropReason::Malformed,
                Outbound::Dropped(DropReason::Malformed),
            );
        };
        let Some(node) = self.routes.lookup(info.dst) else {
            return self.drop_with(DropReason::NoRoute, Outbound::Dropped(DropReason::NoRoute));
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
            Match::Invalid => {
                return self.drop_with(DropReason::Invalid, Outbound::Dropped(DropReason::Invalid))
            }
            Match::New => {
                let (proto, port) = policy_key(&info);
                let verdict = match peer {
                    Some(_) => self.table.egress(node, info.dst, proto, port),
                    None => self.table_verdict_without_peer(node, &info),
                };
                self.note_audit(&verdict, node, &info, true);
                self.decisions.count(&verdict);
                if !verdict.allowed() {
                    // Fail fast locally: the local application gets the
                    // refusal at once (a `reject` rule's answer, else a TCP
                    // RST or ICMP administratively prohibited) instead of
                    // waiting out its timeouts. Only local packets come
                    // through here; remote peers still get silence.
                    let with = if verdict.action == Action::Reject {
                        self.note_denied(&verdict, node, &info, true);
                        reject_with(&info)
                    } else {
                        // Counted as denied like any drop (nothing left).
                        self.drop_with(DropReason::Denied, ());
                        self.note_refused_locally(&verdict, node, &info);
                        refuse_locally_with(&info)
                    };
                    let packet = buf
                        .get(DATA_HEADER_LEN..DATA_HEADER_LEN + len)
                        .unwrap_or_default();
                    if let Ok(Some(n)) = reject(packet, with, &mut self.scratch[..]) {
                        return Outbound::Local(self.scratch.get(..n).unwrap_or_default());
                    }
                    if verdict.action == Action::Reject {
                        self.drop_with(DropReason::Denied, ());
                    }
                    return Outbound::Dropped(DropReason::Denied);
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
            return self.drop_with(DropReason::Denied, Outbound::Dropped(DropReason::Denied));
        };
        match self.device.encapsulate(now, peer, buf, len) {
            Ok(Sent::Now(t)) => Outbound::Send(t),
            Ok(Sent::Queued) => Outbound::Queued,
            Err(SendError::NoEndpoint) => self.drop_with(
                DropReason::NoEndpoint,
                Outbound::Dropped(DropReason::NoEndpoint),
            ),
            Err(_) => self.drop_with(
                DropReason::Malformed,
                Outbound::Dropped(DropReason::Malformed),
            ),
        }
    }

    /// Handles a datagram from `src`. Decrypts in place; answers and reject
    /// replies are written to `reply` (at least [`BUF_LEN`] bytes).
    pub fn inbound<'d, 'r>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &'d mut [u8],
        reply: &'r mut [u8],
    ) -> Inbound<'d, 'r> {
        self.last_now = now;
        // Only the length of a handshake answer is kept from this match, so
        // `reply` is free again afterwards for a reject reply.
        let (peer, packet) = match self.device.handle_datagram(now, src, datagram, reply) {
            Err(d) => {
                return self.drop_with(
                    DropReason::Tunnel(d),
                    Inbound::Dropped(DropReason::Tunnel(d)),
                )
            }
            Ok(Received::Reply(r)) => {
                self.replies.note(r);
                (None, Err(r.len()))
            }
            Ok(Received::Done) => return Inbound::Nothing,
            Ok(Received::Packet { peer, packet }) => (Some(peer), Ok(packet)),
        };
        let (peer, packet) = match (peer, packet) {
            (Some(peer), Ok(packet)) => (peer, packet),
            (_, Err(n)) => return Inbound::Reply(reply.get(..n).unwrap_or_default()),
            (None, Ok(_)) => return Inbound::Nothing,
        };
        let Ok(info) = classify(packet) else {
            return self.drop_with(
                DropReason::Malformed,
                Inbound::Dropped(DropReason::Malformed),
            );
        };
        let Some(node) = self.peer_node.get(peer.0 as usize).copied().flatten() else {
            return self.drop_with(DropReason::Denied, Inbound::Dropped(DropReason::Denied));
        };
        if self.routes.lookup(info.src) != Some(node) {
            return self.drop_with(DropReason::Spoofed, Inbound::Dropped(DropReason::Spoofed));
        }
        if !self.me().accepts(info.dst) {
            return self.drop_with(DropReason::NotForUs, Inbound::Dropped(DropReason::NotForUs));
        }
        let ct_peer = conntrack::PeerId(peer.0);
        match self
            .conntrack
            .lookup(now, ct_peer, Direction::Inbound, &info)
        {
            Match::Invalid => {
                self.drop_with(DropReason::Invalid, Inbound::Dropped(DropReason::Invalid))
            }
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
                    return Inbound::Deliver(packet, info);
                }
                self.note_denied(&verdict, node, &info, false);
                if verdict.action == Action::Reject {
                    if let Some(t) = self.reject_to_peer(now, peer, packet, &info, reply) {
                        return Inbound::Send(t);
                    }
                }
                self.drop_with(DropReason::Denied, Inbound::Dropped(DropReason::Denied))
            }
            _ => Inbound::Deliver(packet, info),
        }
    }

    fn reject_to_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        packet: &[u8],
        info: &PacketInfo,
        reply: &mut [u8],
    ) -> Option<Transmit> {
        let n = reject(packet, reject_with(info), reply.get_mut(DATA_HEADER_LEN..)?).ok()??;
        match self.device.encapsulate(now, peer, reply, n) {
            Ok(Sent::Now(t)) => Some(t),
            _ => None,
        }
    }

    fn flow(&self, node: NodeId, info: &PacketInfo, outbound: bool) -> FlowDesc {
        let (proto, port) = policy_key(info);
        let peer = self
            .policy
            .node(node)
            .map_or_else(|| format!("node#{}", node.0), |n| n.name.clone());
        FlowDesc {
            peer,
            src: info.src,
            dst: info.dst,
            proto,
            port,
            outbound,
        }
    }

    /// The verdict for a node that is not our peer: the policy's, which can
    /// only refuse (a peer is anyone with an allowed path), kept for its
    /// rule and `reject` flag.
    fn table_verdict_without_peer(&self, node: NodeId, info: &PacketInfo) -> Verdict {
        let (proto, port) = policy_key(info);
        let flow = crate::policy::Flow { proto, port };
        let v = self
            .policy
            .evaluate(self.me, node, info.dst, flow, self.wall);
        if v.allowed() {
            Verdict::DEFAULT_DENY
        } else {
            v
        }
    }

    fn rule_label(&self, id: crate::policy::RuleId) -> String {
        self.policy
            .rule(id)
            .map(|r| r.label.clone())
            .unwrap_or_else(|| format!("#{}", id.0))
    }

    /// Whether one more per-flow event (audit, denied) may be recorded this
    /// second. Building one allocates; a flood of refused flows must not
    /// turn into an allocation storm on the packet path.
    fn flow_event_allowed(&mut self) -> bool {
        if self.flow_event_budget == 0 {
            self.flow_events_suppressed += 1;
            return false;
        }
        self.flow_event_budget -= 1;
        true
    }

    fn note_audit(&mut self, verdict: &Verdict, node: NodeId, info: &PacketInfo, outbound: bool) {
        let Some(rule) = verdict.audit else { return };
        if !self.flow_event_allowed() {
            if let Some(q) = self.flows.as_mut() {
                q.count_suppressed(1);
            }
            return;
        }
        self.record_decision(node, info, verdict, !outbound, true);
        let would = match self.policy.rule(rule).map(|r| r.kind) {
            Some(crate::policy::RuleKind::Allow) => "allow",
            _ => "deny",
        };
        let flow = self.flow(node, info, outbound);
        self.events.push(Event::Audit {
            policy: self.policy.id(),
            rule: self.rule_label(rule),
            would,
            flow,
        });
    }

    fn note_denied(&mut self, verdict: &Verdict, node: NodeId, info: &PacketInfo, outbound: bool) {
        if !self.flow_event_allowed() {
            if let Some(q) = self.flows.as_mut() {
                q.count_suppressed(1);
            }
            return;
        }
        self.record_decision(node, info, verdict, !outbound, false);
        let flow = self.flow(node, info, outbound);
        let rule = verdict.rule.map(|r| self.rule_label(r));
        self.events.push(Event::Denied {
            policy: self.policy.id(),
            rule,
            rejected: verdict.action == Action::Reject,
            flow,
        });
    }

    fn note_refused_locally(&mut self, verdict: &Verdict, node: NodeId, info: &PacketInfo) {
        if !self.flow_event_allowed() {
            if let Some(q) = self.flows.as_mut() {
                q.count_suppressed(1);
            }
            return;
        }
        self.record_decision(node, info, verdict, false, false);
        let flow = self.flow(node, info, true);
        let rule = verdict.rule.map(|r| self.rule_label(r));
        self.events.push(Event::RefusedLocally {
            rule,
            policy: self.policy.id().to_string(),
            flow,
        });
    }

    /// Writes the next datagram the tunnel wants sent (handshakes,
    /// keepalives, queued packets) into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.device.poll_transmit(now, buf)
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
    pub fn routed_networks(&self) -> Vec<crate::policy::IpNet> {
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
fn policy_key(info: &PacketInfo) -> (u8, u16) {
    let port = info
        .dst_port()
        .or_else(|| info.icmp_type_code().map(|(t, _)| u16::from(t)))
        .unwrap_or(0);
    (info.protocol.0, port)
}

pub(super) fn echo_request_type(dst: IpAddr) -> u16 {
    match dst {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 128,
    }
}

fn reject_with(info: &PacketInfo) -> RejectWith {
    match info.protocol.0 {
        6 | 17 => RejectWith::Closed,
        _ => RejectWith::AdminProhibited,
    }
}

/// How a locally originated packet the policy denies is refused: a TCP
/// RST for TCP (the application sees "connection refused"), ICMP
/// administratively prohibited for everything else.
fn refuse_locally_with(info: &PacketInfo) -> RejectWith {
    match info.protocol.0 {
        6 => RejectWith::Closed,
        _ => RejectWith::AdminProhibited,
    }
}

pub(super) fn rule_id(v: &Verdict) -> conntrack::RuleId {
    conntrack::RuleId(v.rule.map_or(u32::MAX, |r| r.0))
}
