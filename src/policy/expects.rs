//! Running `expect` lines fast, with the reference evaluator's semantics.
//!
//! An expectation names sources and targets; each (source, receiving node,
//! address) pair must behave as wanted for its flow, or for every probe
//! flow when it names none. Evaluating every rule for every probe of every
//! pair grew to minutes for fan-out expects (issue 9: 80 nodes x 800
//! services took 75 s, and a heavy expect froze a node's event loop for 7 s
//! on reload). Here the work is shared: sources are interned into classes
//! (the same quarantine and the same rules matching them as a source, as in
//! `diff`), a (class, receiving node, address) triple is judged once, and
//! it is judged against only the rules of the class whose services have a
//! destination at that node containing that address — the rules
//! `eval::evaluate` would find covering any flow there, in the same order,
//! so verdicts are identical. Only the first failing pair (in the order the
//! reference reports it) is then described with the reference evaluator.

use std::collections::HashMap;
use std::net::IpAddr;

use super::ast::{RuleKind, Want};
use super::eval::{self, Action, Verdict};
use super::model::{Expect, NodeId, Rule, RuleId};
use super::ports::Flow;
use super::Policy;

/// Shared work across the expectations of one run.
#[derive(Default)]
pub(super) struct Tables {
    /// (quarantine, matching rules) of each source at a time, interned.
    views: HashMap<(Option<RuleId>, Vec<RuleId>), usize>,
    by_class: Vec<(Option<RuleId>, Vec<RuleId>)>,
    class_of: HashMap<(NodeId, i64), usize>,
    summaries: HashMap<(usize, NodeId, IpAddr, Option<Flow>, i64), Summary>,
}

impl Tables {
    fn class(&mut self, p: &Policy, src: NodeId, t: i64) -> Option<usize> {
        if let Some(&c) = self.class_of.get(&(src, t)) {
            return Some(c);
        }
        let node = p.model.nodes.get(src.index())?;
        let view = (
            eval::quarantine_of(&p.model, node, t),
            p.model
                .rules
                .iter()
                .filter(|r| r.kind != RuleKind::Quarantine && r.active(t) && r.matches_source(node))
                .map(|r| r.id)
                .collect::<Vec<_>>(),
        );
        let c = match self.views.get(&view) {
            Some(&c) => c,
            None => {
                let c = self.by_class.len();
                self.by_class.push(view.clone());
                self.views.insert(view, c);
                c
            }
        };
        self.class_of.insert((src, t), c);
        Some(c)
    }

    fn view(&self, class: usize) -> Option<&(Option<RuleId>, Vec<RuleId>)> {
        self.by_class.get(class)
    }
}

/// What a scan found: how many pairs it checked, and the first pair (in
/// source-major order) that failed.
pub(super) struct Scan {
    pub checked: usize,
    pub first_failure: Option<(NodeId, NodeId, IpAddr)>,
}

/// Whether a verdict, or the verdicts over all probes, satisfy `want`.
#[derive(Clone, Copy, Debug)]
struct Summary {
    any_allow: bool,
    all_denied: bool,
    all_drop: bool,
    all_reject: bool,
}

impl Summary {
    const EMPTY: Summary = Summary {
        any_allow: false,
        all_denied: true,
        all_drop: true,
        all_reject: true,
    };

    fn add(mut self, v: &Verdict) -> Summary {
        self.any_allow |= v.allowed();
        self.all_denied &= !v.allowed();
        self.all_drop &= v.action == Action::Drop;
        self.all_reject &= v.action == Action::Reject;
        self
    }

    fn holds(&self, want: Want) -> bool {
        match want {
            Want::Allow => self.any_allow,
            Want::Deny => self.all_denied,
            Want::Drop => self.all_drop,
            Want::Reject => self.all_reject,
        }
    }
}

/// Checks every pair of `e` at time `t` against `probes`.
pub(super) fn scan(p: &Policy, e: &Expect, t: i64, probes: &[Flow], cache: &mut Tables) -> Scan {
    let flows: &[Flow] = match &e.flow {
        Some(f) => std::slice::from_ref(f),
        None => probes,
    };
    let mut checked = 0usize;
    for &src in &e.sources {
        for &(via, ip) in &e.paths {
            // A node's traffic to its own address never enters the tunnel.
            if src == via && p.node(src).is_some_and(|n| n.owns(ip)) {
                continue;
            }
            checked += 1;
            let summary = judge(p, cache, src, via, ip, e.flow, flows, t);
            if !summary.holds(e.want) {
                return Scan {
                    checked,
                    first_failure: Some((src, via, ip)),
                };
            }
        }
    }
    Scan {
        checked,
        first_failure: None,
    }
}

/// The summary of the verdicts for `src` -> `ip` via `via` over `flows`,
/// shared by every source of the same class.
#[allow(clippy::too_many_arguments)]
fn judge(
    p: &Policy,
    cache: &mut Tables,
    src: NodeId,
    via: NodeId,
    ip: IpAddr,
    flow: Option<Flow>,
    flows: &[Flow],
    t: i64,
) -> Summary {
    let Some(class) = cache.class(p, src, t) else {
        return Summary::EMPTY.add(&Verdict::DEFAULT_DENY);
    };
    let key = (class, via, ip, flow, t);
    if let Some(s) = cache.summaries.get(&key) {
        return *s;
    }
    let m = &p.model;
    let summary = match (m.nodes.get(via.index()), cache.view(class)) {
        (Some(v), Some((src_q, rules))) if v.accepts(ip) => {
            match src_q.or_else(|| eval::quarantine_of(m, v, t)) {
                Some(q) => Summary::EMPTY.add(&Verdict {
                    action: Action::Drop,
                    rule: Some(q),
                    audit: None,
                }),
                None => {
                    // The class's rules with a destination here, in order.
                    let here: Vec<&Rule> = rules
                        .iter()
                        .filter_map(|r| m.rules.get(r.0 as usize))
                        .filter(|r| {
                            r.services
                                .iter()
                                .filter_map(|s| eval::service(m, *s))
                                .any(|s| s.dests_at(via).iter().any(|d| d.net.contains(ip)))
                        })
                        .collect();
                    flows.iter().fold(Summary::EMPTY, |s, f| {
                        s.add(&eval::decide(
                            here.iter()
                                .copied()
                                .filter(|r| eval::rule_covers(m, r, via, ip, *f)),
                        ))
                    })
                }
            }
        }
        _ => flows
            .iter()
            .fold(Summary::EMPTY, |s, _| s.add(&Verdict::DEFAULT_DENY)),
    };
    cache.summaries.insert(key, summary);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_match_what_each_want_means() {
        let allow = Verdict {
            action: Action::Allow,
            rule: None,
            audit: None,
        };
        let s = Summary::EMPTY.add(&allow).add(&Verdict::DEFAULT_DENY);
        assert!(s.holds(Want::Allow) && !s.holds(Want::Deny) && !s.holds(Want::Drop));
        let s = Summary::EMPTY.add(&Verdict::DEFAULT_DENY);
        assert!(!s.holds(Want::Allow) && s.holds(Want::Deny) && s.holds(Want::Drop));
        assert!(!s.holds(Want::Reject));
    }
}
