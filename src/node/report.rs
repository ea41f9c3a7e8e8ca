//! What the engine tells the operator about its decisions on new flows:
//! audit and denial events and flow-log decision records, at most
//! [`super::engine::FLOW_EVENTS_PER_SECOND`] a second (a flood of refused flows must not
//! become an allocation storm), each naming the rule and the policy id.

use super::engine::{policy_key, Engine};
use super::events::{Event, FlowDesc};
use crate::policy::{Action, NodeId, Verdict};
use crate::wire::PacketInfo;

impl Engine {
    pub(super) fn flow(&self, node: NodeId, info: &PacketInfo, outbound: bool) -> FlowDesc {
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
    pub(super) fn table_verdict_without_peer(&self, node: NodeId, info: &PacketInfo) -> Verdict {
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

    pub(super) fn rule_label(&self, id: crate::policy::RuleId) -> String {
        self.policy
            .rule(id)
            .map(|r| r.label.clone())
            .unwrap_or_else(|| format!("#{}", id.0))
    }

    /// Whether one more per-flow event (audit, denied) may be recorded this
    /// second. Building one allocates; a flood of refused flows must not
    /// turn into an allocation storm on the packet path.
    pub(super) fn flow_event_allowed(&mut self) -> bool {
        if self.flow_event_budget == 0 {
            self.flow_events_suppressed += 1;
            return false;
        }
        self.flow_event_budget -= 1;
        true
    }

    pub(super) fn note_audit(
        &mut self,
        verdict: &Verdict,
        node: NodeId,
        info: &PacketInfo,
        outbound: bool,
    ) {
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

    pub(super) fn note_denied(
        &mut self,
        verdict: &Verdict,
        node: NodeId,
        info: &PacketInfo,
        outbound: bool,
    ) {
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

    pub(super) fn note_refused_locally(
        &mut self,
        verdict: &Verdict,
        node: NodeId,
        info: &PacketInfo,
    ) {
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
}
