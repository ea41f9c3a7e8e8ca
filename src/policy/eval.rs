//! Verdicts and the reference evaluator.
//!
//! The evaluator is the semantics written as plainly as possible: it scans
//! every rule for every question. It is the oracle the compiled per-node
//! tables are tested against, and what `explain` and `expect` use.

use std::net::IpAddr;

use super::ast::RuleKind;
use super::model::{Model, Node, NodeId, Rule, RuleId, Service, SvcRef};
use super::ports::Flow;
use crate::net::IpProtocol;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Allow,
    /// Denied silently (the default: the peer learns nothing).
    Drop,
    /// Denied with a TCP RST or ICMP unreachable, for debugging.
    Reject,
}

/// The decision for one flow, with the rules behind it for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    pub action: Action,
    /// The rule that decided; `None` for the default deny (no rule allows).
    pub rule: Option<RuleId>,
    /// The first audit rule that matched; logged only, never enforced.
    pub audit: Option<RuleId>,
}

impl Verdict {
    /// Nothing allows the flow, or the address is not behind the peer at all.
    pub const DEFAULT_DENY: Verdict = Verdict {
        action: Action::Drop,
        rule: None,
        audit: None,
    };

    pub fn allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// The service a rule reference points at.
pub fn service(m: &Model, s: SvcRef) -> Option<&Service> {
    match s {
        SvcRef::Named(i) => m.services.get(i as usize),
        SvcRef::Everything => m.everything.as_ref(),
    }
}

/// True when the rule's services cover `dst` behind `via` for this flow.
pub fn rule_covers(m: &Model, r: &Rule, via: NodeId, dst: IpAddr, flow: Flow) -> bool {
    r.services
        .iter()
        .filter_map(|s| service(m, *s))
        .any(|s| s.covers(via, dst, flow))
}

/// The first quarantine rule in force that names `node`.
pub fn quarantine_of(m: &Model, node: &Node, now: i64) -> Option<RuleId> {
    m.rules
        .iter()
        .find(|r| r.kind == RuleKind::Quarantine && r.active(now) && r.from.contains(node))
        .map(|r| r.id)
}

/// Combines the matching allow/deny/audit rules, given in file order:
/// any deny beats every allow; the first rejecting deny (else the first
/// deny, else the first allow) is reported as the deciding rule.
pub fn decide<'a>(matching: impl Iterator<Item = &'a Rule>) -> Verdict {
    let (mut allow, mut deny, mut reject, mut audit) = (None, None, None, None);
    for r in matching {
        if r.audit {
            audit = audit.or(Some(r.id));
        } else if r.kind == RuleKind::Deny {
            deny = deny.or(Some(r.id));
            if r.reject {
                reject = reject.or(Some(r.id));
            }
        } else if r.kind == RuleKind::Allow {
            allow = allow.or(Some(r.id));
        }
    }
    let (action, rule) = match (reject, deny, allow) {
        (Some(r), _, _) => (Action::Reject, Some(r)),
        (None, Some(d), _) => (Action::Drop, Some(d)),
        (None, None, Some(a)) => (Action::Allow, Some(a)),
        (None, None, None) => (Action::Drop, None),
    };
    Verdict {
        action,
        rule,
        audit,
    }
}

/// The verdict for a packet from `src` to `dst`, delivered to node `via`
/// (the node owning `dst`, or a gateway serving it), at `now` (epoch seconds).
///
/// Quarantine of the source, then of the receiving node, beats everything.
pub fn evaluate(m: &Model, src: NodeId, via: NodeId, dst: IpAddr, flow: Flow, now: i64) -> Verdict {
    let (Some(s), Some(v)) = (m.nodes.get(src.index()), m.nodes.get(via.index())) else {
        return Verdict::DEFAULT_DENY;
    };
    if !v.accepts(dst) {
        return Verdict::DEFAULT_DENY;
    }
    if let Some(q) = quarantine_of(m, s, now).or_else(|| quarantine_of(m, v, now)) {
        return Verdict {
            action: Action::Drop,
            rule: Some(q),
            audit: None,
        };
    }
    decide(m.rules.iter().filter(|r| {
        r.kind != RuleKind::Quarantine
            && r.active(now)
            && r.matches_source(s)
            && rule_covers(m, r, via, dst, flow)
    }))
}

/// Candidate flows that together exercise every distinct verdict region:
/// the start of every port range any service names, per protocol, plus one
/// protocol no service names.
pub fn probe_flows(m: &Model) -> Vec<Flow> {
    let mut flows = Vec::new();
    let mut named = [false; 256];
    for s in &m.services {
        for r in &s.ports.ranges {
            named[usize::from(r.proto.number())] = true;
            flows.push(Flow {
                proto: r.proto,
                port: r.lo,
            });
            if let Some(next) = r.hi.checked_add(1) {
                flows.push(Flow {
                    proto: r.proto,
                    port: next,
                });
            }
        }
    }
    for (p, n) in named.iter().enumerate() {
        if *n {
            flows.push(Flow {
                proto: IpProtocol(p as u8),
                port: 0,
            });
        }
    }
    if let Some(p) = named.iter().position(|n| !n) {
        flows.push(Flow {
            proto: IpProtocol(p as u8),
            port: 0,
        });
    }
    flows.sort_unstable();
    flows.dedup();
    flows
}
