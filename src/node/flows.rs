//! Flow records: what the engine tells the flow log about each decision on
//! a flow (admitted, refused, audited) and each flow's end, stamped with
//! the policy it was decided under.
//!
//! Records never allocate on the packet path: the names, keys, roles and
//! rule labels they refer to live in a [`PolicyMeta`] built once per
//! policy load and shared by `Arc`; the queue is bounded and allocated up
//! front, and a per-second budget turns a storm into one `suppressed`
//! count.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys::PublicKey;
use crate::net::IpProtocol;
use crate::policy::{NodeId, Policy, PolicyId, RuleId, RuleKind};

/// A policy's names, as records need them.
#[derive(Debug)]
pub struct PolicyMeta {
    pub id: PolicyId,
    /// Indexed by [`NodeId`].
    pub nodes: Vec<NodeMeta>,
    /// Indexed by [`RuleId`].
    pub rules: Vec<RuleMeta>,
}

#[derive(Debug)]
pub struct NodeMeta {
    pub name: String,
    pub key: PublicKey,
    pub roles: Vec<String>,
}

#[derive(Debug)]
pub struct RuleMeta {
    pub label: String,
    pub kind: RuleKind,
    pub reject: bool,
}

impl PolicyMeta {
    pub fn of(policy: &Policy) -> PolicyMeta {
        PolicyMeta {
            id: policy.id(),
            nodes: policy
                .nodes()
                .iter()
                .map(|n| NodeMeta {
                    name: n.name.clone(),
                    key: n.key,
                    roles: n.roles.clone(),
                })
                .collect(),
            rules: policy
                .rules()
                .iter()
                .map(|r| RuleMeta {
                    label: r.label.clone(),
                    kind: r.kind,
                    reject: r.reject,
                })
                .collect(),
        }
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeMeta> {
        self.nodes.get(id.index())
    }

    /// The rule's label, or `default-deny` when no rule decided.
    pub fn rule_label(&self, rule: Option<RuleId>) -> &str {
        match rule {
            None => "default-deny",
            Some(r) => self.rules.get(r.index()).map_or("?", |m| m.label.as_str()),
        }
    }
}

/// What a record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    Start,
    End(FlowEnd),
    Denied,
    Audit,
}

/// The verdict a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowVerdict {
    Allow,
    Drop,
    Reject,
    Quarantine,
    /// An audit rule matched; it would have allowed (true) or denied.
    Audit {
        would_allow: bool,
    },
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Fin,
    Rst,
    Idle,
    /// Cut by a policy reload or a rule's expiry.
    Policy,
    PeerRemoved,
    /// Pushed out of a full connection table.
    Evicted,
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Idle => "idle",
            EndReason::Policy => "policy",
            EndReason::PeerRemoved => "peer-removed",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// A flow's totals when it ended; index 0 is the initiator's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEnd {
    pub reason: EndReason,
    pub duration: Duration,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// One flow, as the initiator sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTuple {
    pub proto: IpProtocol,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// ICMP type and code of the packet that opened (or tried to open) it.
    pub icmp: Option<(u8, u8)>,
}

/// One flow-log record.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    /// When it happened, on the engine's monotonic clock.
    pub at: Instant,
    pub action: FlowAction,
    /// The policy in force when this was decided.
    pub policy: PolicyId,
    /// Names of the peer (the policy whose node ids `peer` indexes).
    pub meta: Arc<PolicyMeta>,
    /// Names of the rule: an older policy than `policy` for a flow cut by
    /// a reload, which names the rule that had admitted it.
    pub rule_meta: Arc<PolicyMeta>,
    pub peer: NodeId,
    /// True when the peer initiated the flow.
    pub ingress: bool,
    pub tuple: FlowTuple,
    pub verdict: FlowVerdict,
    pub rule: Option<RuleId>,
}

/// What the engine queues for the flow log.
#[derive(Debug, Clone)]
pub enum FlowItem {
    Record(FlowRecord),
    /// Records the budget or the full queue swallowed since the last one.
    Suppressed {
        at: Instant,
        policy: PolicyId,
        count: u64,
    },
}

/// Flow records per second at most; the rest are counted.
pub const FLOW_RECORDS_PER_SECOND: u32 = 5000;
/// Records waiting for the edge at most.
pub const FLOW_QUEUE: usize = 8192;

/// The engine's bounded record queue with its per-second budget.
#[derive(Debug)]
pub struct FlowQueue {
    items: VecDeque<FlowItem>,
    budget: u32,
    suppressed: u64,
}

impl FlowQueue {
    pub fn new() -> FlowQueue {
        FlowQueue {
            items: VecDeque::with_capacity(FLOW_QUEUE),
            budget: FLOW_RECORDS_PER_SECOND,
            suppressed: 0,
        }
    }

    /// Queues a record if the budget and the queue allow; else counts it.
    pub fn push(&mut self, record: FlowRecord) {
        if self.budget == 0 || self.items.len() + 1 >= FLOW_QUEUE {
            self.suppressed += 1;
            return;
        }
        self.budget -= 1;
        self.items.push_back(FlowItem::Record(record));
    }

    /// Counts a record that was not even built (the event budget said no).
    pub fn count_suppressed(&mut self, n: u64) {
        self.suppressed += n;
    }

    /// Once a second: reports what was swallowed and refills the budget.
    pub fn refill(&mut self, at: Instant, policy: PolicyId) {
        if self.suppressed > 0 && self.items.len() < FLOW_QUEUE {
            self.items.push_back(FlowItem::Suppressed {
                at,
                policy,
                count: self.suppressed,
            });
            self.suppressed = 0;
        }
        self.budget = FLOW_RECORDS_PER_SECOND;
    }

    pub fn pop(&mut self) -> Option<FlowItem> {
        self.items.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Default for FlowQueue {
    fn default() -> Self {
        FlowQueue::new()
    }
}

/// Handshake answers the engine sent, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyCounters {
    /// Handshake responses (a peer's initiation was answered).
    pub responses: u64,
    /// Cookie replies (under load: the initiator must prove its address).
    pub cookies: u64,
}

impl ReplyCounters {
    /// Counts a datagram the tunnel answered with, by its message type.
    pub fn note(&mut self, reply: &[u8]) {
        match reply.first() {
            Some(2) => self.responses += 1,
            Some(3) => self.cookies += 1,
            _ => {}
        }
    }
}

use super::engine::Engine;
use crate::conntrack::{Direction, EndCause, Entry};
use crate::policy::{Action, Verdict};
use crate::wire::PacketInfo;

fn tuple_of(info: &PacketInfo) -> FlowTuple {
    FlowTuple {
        proto: info.protocol,
        src: info.src,
        src_port: info.ports().map_or(0, |(s, _)| s),
        dst: info.dst,
        dst_port: info.dst_port().unwrap_or(0),
        icmp: info.icmp_type_code(),
    }
}

fn tuple_of_entry(e: &Entry<'_>) -> FlowTuple {
    FlowTuple {
        proto: e.protocol(),
        src: e.src(),
        src_port: e.src_port().unwrap_or(0),
        dst: e.dst(),
        dst_port: e.dst_port().unwrap_or(0),
        icmp: e
            .icmp_ident()
            .and(IpProtocol::icmp_for(e.dst()).echo_request_type())
            .map(|echo| (echo, 0)),
    }
}

fn rule_of(e: &Entry<'_>) -> Option<RuleId> {
    let r = e.rule().0;
    (r != u32::MAX).then_some(RuleId(r))
}

impl Engine {
    /// The policy node of a tunnel peer.
    pub fn peer_node(&self, peer: crate::tunnel::PeerId) -> Option<NodeId> {
        self.peer_node.get(peer.0 as usize).copied().flatten()
    }

    /// The names of the policy in force, shared with status output.
    pub fn policy_meta(&self) -> &Arc<PolicyMeta> {
        &self.meta
    }

    /// Handshake responses and cookie replies sent so far.
    pub fn replies(&self) -> ReplyCounters {
        self.replies
    }

    /// A flow was admitted (`tracked`: it opened a conntrack entry; the
    /// rest pass on their rule alone and get no start record).
    pub(super) fn record_start(
        &mut self,
        now: Instant,
        tracked: bool,
        node: NodeId,
        info: &PacketInfo,
        verdict: &Verdict,
        ingress: bool,
    ) {
        let id = self.policy().id();
        let meta = self.meta.clone();
        self.record_ended(EndReason::Idle, id, &meta);
        if !tracked {
            return;
        }
        let record = FlowRecord {
            at: now,
            action: FlowAction::Start,
            policy: id,
            meta: meta.clone(),
            rule_meta: meta,
            peer: node,
            ingress,
            tuple: tuple_of(info),
            verdict: FlowVerdict::Allow,
            rule: verdict.rule,
        };
        if let Some(q) = self.flows.as_mut() {
            q.push(record);
        }
    }

    /// A new flow was refused (`audit` false) or an audit rule matched it.
    pub(super) fn record_decision(
        &mut self,
        node: NodeId,
        info: &PacketInfo,
        verdict: &Verdict,
        ingress: bool,
        audit: bool,
    ) {
        if self.flows.is_none() {
            return;
        }
        let meta = self.meta.clone();
        let (action, verdict_out, rule) = if audit {
            let would_allow = verdict
                .audit
                .and_then(|r| meta.rules.get(r.index()))
                .is_some_and(|m| m.kind == RuleKind::Allow);
            (
                FlowAction::Audit,
                FlowVerdict::Audit { would_allow },
                verdict.audit,
            )
        } else {
            let quarantine = verdict
                .rule
                .and_then(|r| meta.rules.get(r.index()))
                .is_some_and(|m| m.kind == RuleKind::Quarantine);
            let v = if quarantine {
                FlowVerdict::Quarantine
            } else if verdict.action == Action::Reject {
                FlowVerdict::Reject
            } else {
                FlowVerdict::Drop
            };
            (FlowAction::Denied, v, verdict.rule)
        };
        let record = FlowRecord {
            at: self.last_now,
            action,
            policy: meta.id,
            meta: meta.clone(),
            rule_meta: meta,
            peer: node,
            ingress,
            tuple: tuple_of(info),
            verdict: verdict_out,
            rule,
        };
        if let Some(q) = self.flows.as_mut() {
            q.push(record);
        }
    }

    /// Turns the flows conntrack let go of into flow-end records. `removed`
    /// is the reason for flows the engine itself removed (reload, peer
    /// removal); `rule_meta` names their admitting rules.
    pub(super) fn record_ended(
        &mut self,
        removed: EndReason,
        policy: PolicyId,
        rule_meta: &Arc<PolicyMeta>,
    ) {
        if self.flows.is_none() {
            return;
        }
        let now = self.last_now;
        while let Some(ended) = self.conntrack.pop_ended() {
            let e = ended.entry();
            let reason = match (ended.cause, ended.closed_by()) {
                (EndCause::Removed, _) => removed,
                (EndCause::Evicted, _) => EndReason::Evicted,
                (_, Some(crate::conntrack::Closed::Fin)) => EndReason::Fin,
                (_, Some(crate::conntrack::Closed::Rst)) => EndReason::Rst,
                (_, None) => EndReason::Idle,
            };
            let Some(node) = self.peer_node(crate::tunnel::PeerId(e.peer().0)) else {
                continue;
            };
            let (p0, p1) = e.packets();
            let (b0, b1) = e.bytes();
            let record = FlowRecord {
                at: now,
                action: FlowAction::End(FlowEnd {
                    reason,
                    duration: now.saturating_duration_since(e.created()),
                    packets: [p0, p1],
                    bytes: [b0, b1],
                }),
                policy,
                meta: self.meta.clone(),
                rule_meta: rule_meta.clone(),
                peer: node,
                ingress: e.initiator() == Direction::Inbound,
                tuple: tuple_of_entry(&e),
                verdict: FlowVerdict::Allow,
                rule: rule_of(&e),
            };
            if let Some(q) = self.flows.as_mut() {
                q.push(record);
            }
        }
    }

    /// Flow-end records for every tracked flow, for a node shutting down.
    pub fn shutdown_records(&self, now: Instant) -> Vec<FlowRecord> {
        self.conntrack
            .iter()
            .filter_map(|e| {
                let node = self.peer_node(crate::tunnel::PeerId(e.peer().0))?;
                let (p0, p1) = e.packets();
                let (b0, b1) = e.bytes();
                Some(FlowRecord {
                    at: now,
                    action: FlowAction::End(FlowEnd {
                        reason: EndReason::Shutdown,
                        duration: now.saturating_duration_since(e.created()),
                        packets: [p0, p1],
                        bytes: [b0, b1],
                    }),
                    policy: self.meta.id,
                    meta: self.meta.clone(),
                    rule_meta: self.meta.clone(),
                    peer: node,
                    ingress: e.initiator() == Direction::Inbound,
                    tuple: tuple_of_entry(&e),
                    verdict: FlowVerdict::Allow,
                    rule: rule_of(&e),
                })
            })
            .collect()
    }
}

/// Decisions on new flows, by verdict and rule: counted by rule id while a
/// policy is in force, folded into labels when it is replaced (rule ids
/// mean nothing across policies). Bounded by the rules of the policies.
#[derive(Debug, Default)]
pub struct Decisions {
    /// (verdict, rule id or u32::MAX for the default deny) → count.
    current: std::collections::HashMap<(u8, u32), u64>,
    folded: std::collections::BTreeMap<(&'static str, String), u64>,
}

const VERDICT_NAMES: [&str; 5] = ["allow", "drop", "reject", "quarantine", "audit"];

impl Decisions {
    /// Counts a verdict (and its audit match, if any).
    pub fn count(&mut self, v: &Verdict) {
        let kind = match v.action {
            Action::Allow => 0,
            Action::Drop => 1,
            Action::Reject => 2,
        };
        *self
            .current
            .entry((kind, v.rule.map_or(u32::MAX, |r| r.0)))
            .or_insert(0) += 1;
        if let Some(a) = v.audit {
            *self.current.entry((4, a.0)).or_insert(0) += 1;
        }
    }

    /// Moves the counts of the policy being replaced under their labels.
    pub fn fold(&mut self, meta: &PolicyMeta) {
        for ((kind, rule), n) in self.current.drain() {
            let key = Self::label(meta, kind, rule);
            *self.folded.entry(key).or_insert(0) += n;
        }
    }

    fn label(meta: &PolicyMeta, kind: u8, rule: u32) -> (&'static str, String) {
        let rule = (rule != u32::MAX).then_some(RuleId(rule));
        let quarantine = rule
            .and_then(|r| meta.rules.get(r.index()))
            .is_some_and(|m| m.kind == RuleKind::Quarantine);
        let verdict = if quarantine && kind != 4 {
            "quarantine"
        } else {
            VERDICT_NAMES.get(usize::from(kind)).copied().unwrap_or("?")
        };
        (verdict, meta.rule_label(rule).to_string())
    }

    /// Every (verdict, rule label, count), the current policy's counts
    /// named by `meta`.
    pub fn totals(&self, meta: &PolicyMeta) -> Vec<(&'static str, String, u64)> {
        let mut all = self.folded.clone();
        for (&(kind, rule), &n) in &self.current {
            *all.entry(Self::label(meta, kind, rule)).or_insert(0) += n;
        }
        all.into_iter().map(|((v, r), n)| (v, r, n)).collect()
    }
}

impl Engine {
    /// Decisions on new flows so far: (verdict, rule label, count).
    pub fn decision_totals(&self) -> Vec<(&'static str, String, u64)> {
        self.decisions.totals(&self.meta)
    }
}
