//! Running `expect` lines fast: from compiled tables, not the reference
//! evaluator, when an expectation fans out.
//!
//! An expectation names sources and targets; each (source, receiving node,
//! address) pair must behave as wanted for its flow, or for every probe
//! flow when it names none. The reference evaluator scans every rule for
//! every probe of every pair, which grew to minutes for fan-out expects
//! (issue 9: 80 nodes x 800 services took 75 s, and a heavy expect froze a
//! node's event loop for 7 s on reload). Here the pairs are grouped by
//! receiving node; a group with enough work compiles that node's table
//! once ([`NodeTable`], the same table the data path uses, tested equal to
//! the reference) and answers each pair with a lookup, and "every probe"
//! questions are answered once per port table, not once per pair. Small
//! groups still use the reference evaluator, where compiling would cost
//! more. Only the first failure found (in the order the reference would
//! report it) is then described with the reference evaluator.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::ast::Want;
use super::eval::{self, Action, Verdict};
use super::model::{Expect, NodeId};
use super::ports::Flow;
use super::Policy;
use crate::time::system_time;

/// Reference evaluations (pairs x flows) above which a receiving node's
/// table is compiled instead.
const COMPILE_ABOVE: usize = 20_000;

/// What a scan found: how many pairs it checked, and the first pair (in
/// source-major order) that failed.
pub(super) struct Scan {
    pub checked: usize,
    pub first_failure: Option<(NodeId, NodeId, IpAddr)>,
}

/// Whether a verdict, or the verdicts over all probes, satisfy `want`.
#[derive(Clone, Copy)]
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
pub(super) fn scan(p: &Policy, e: &Expect, t: i64, probes: &[Flow]) -> Scan {
    let flows: &[Flow] = match &e.flow {
        Some(f) => std::slice::from_ref(f),
        None => probes,
    };
    // Paths by receiving node, keeping each path's index for the order.
    let mut by_via: BTreeMap<NodeId, Vec<(usize, IpAddr)>> = BTreeMap::new();
    for (pi, &(via, ip)) in e.paths.iter().enumerate() {
        by_via.entry(via).or_default().push((pi, ip));
    }
    let mut checked = 0usize;
    // (source index, path index) of the first failure in source-major order.
    let mut first: Option<(usize, usize)> = None;
    for (via, paths) in by_via {
        let work = e
            .sources
            .len()
            .saturating_mul(paths.len())
            .saturating_mul(flows.len());
        let table = (work > COMPILE_ABOVE).then(|| p.compile_for(via, system_time(t)));
        let mut summaries: HashMap<Option<u32>, Summary> = HashMap::new();
        for &(pi, ip) in &paths {
            for (si, &src) in e.sources.iter().enumerate() {
                // A node's traffic to its own address never enters the tunnel.
                if src == via && p.node(src).is_some_and(|n| n.owns(ip)) {
                    continue;
                }
                checked += 1;
                if first.is_some_and(|f| f <= (si, pi)) {
                    continue;
                }
                let summary = match &table {
                    Some(tb) => {
                        let cell = tb.ingress_cell(src, ip);
                        *summaries.entry(cell).or_insert_with(|| {
                            flows.iter().fold(Summary::EMPTY, |s, f| {
                                s.add(&match cell {
                                    Some(c) => tb.port_lookup(c, f.proto, f.port),
                                    None => Verdict::DEFAULT_DENY,
                                })
                            })
                        })
                    }
                    None => flows.iter().fold(Summary::EMPTY, |s, f| {
                        s.add(&eval::evaluate(&p.model, src, via, ip, *f, t))
                    }),
                };
                if !summary.holds(e.want) {
                    first = Some((si, pi));
                }
            }
        }
    }
    Scan {
        checked,
        first_failure: first.and_then(|(si, pi)| {
            let src = *e.sources.get(si)?;
            let &(via, ip) = e.paths.get(pi)?;
            Some((src, via, ip))
        }),
    }
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
