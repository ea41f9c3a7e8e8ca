//! `umbra policy suggest`: least-privilege rules learnt from flow logs.
//!
//! Every observed flow is re-decided under the current policy with the
//! reference evaluator. Flows no rule allows (and that no deny rule or
//! quarantine refuses on purpose), and flows allowed only by a broad rule
//! (`*` as a service, or a service open to `any` protocol), need a rule;
//! [`super::suggest_group`] turns them into the narrowest rules an operator
//! would write. The same pass measures coverage and finds rules no observed
//! flow used.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use super::ast::{RuleKind, Want};
use super::eval::Verdict;
use super::eval::{evaluate, rule_covers};
use super::flowlog_agg::{Observed, Tally};
use super::model::{Model, NodeId, Rule, RuleId, SvcRef};
use super::ports::Flow;
use super::suggest_group::{self, Grouped, Needs, Unit};
use super::{Policy, PolicyId};

/// How observed flows fare under one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Allowed by a rule naming specific services.
    pub explicit: Tally,
    /// Allowed only by a broad rule (`*` or `any`).
    pub broad: Tally,
    /// Refused by a deny rule or a quarantine.
    pub denied: Tally,
    /// No rule allows them (including addresses behind no node).
    pub unallowed: Tally,
    /// An end is a node the policy does not know.
    pub unknown: Tally,
}

impl Coverage {
    pub fn total(&self) -> Tally {
        let mut t = self.explicit;
        for x in [&self.broad, &self.denied, &self.unallowed, &self.unknown] {
            t.merge(x);
        }
        t
    }
}

/// A rule that allows everything at some address (`*`) or every protocol.
pub fn is_broad(m: &Model, r: &Rule) -> bool {
    r.services.iter().any(|s| match s {
        SvcRef::Everything => true,
        SvcRef::Named(i) => m.services.get(*i as usize).is_some_and(|s| s.ports.any),
    })
}

/// True when the verdict allows the flow only through broad rules: its
/// deciding rule is broad and no narrower allow rule in force matches.
pub fn only_broad(m: &Model, v: &Verdict, r: &Resolved, now: i64) -> bool {
    let Some(rule) = v.rule.and_then(|id| m.rules.get(id.index())) else {
        return false;
    };
    if !v.allowed() || !is_broad(m, rule) {
        return false;
    }
    let Some(src) = m.nodes.get(r.src.index()) else {
        return true;
    };
    !m.rules.iter().any(|x| {
        x.kind == RuleKind::Allow
            && !x.audit
            && x.active(now)
            && !is_broad(m, x)
            && x.matches_source(src)
            && rule_covers(m, x, r.via, r.dst, r.flow)
    })
}

/// One observed cell resolved against a policy.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    pub src: NodeId,
    pub via: NodeId,
    pub dst: IpAddr,
    pub flow: Flow,
}

/// Looks the cell's two ends up by name; `Err` names the first unknown one.
pub fn resolve<'o>(
    p: &Policy,
    o: &'o Observed,
    k: &super::flowlog_agg::CellKey,
) -> Result<Resolved, &'o str> {
    let src = p.node_by_name(o.name(k.src)).ok_or(o.name(k.src))?.id;
    let via = p.node_by_name(o.name(k.via)).ok_or(o.name(k.via))?.id;
    Ok(Resolved {
        src,
        via,
        dst: k.dst,
        flow: Flow {
            proto: k.proto,
            port: k.port,
        },
    })
}

/// Share of observed flows explained by explicit rules, broad rules, or none.
pub fn coverage(p: &Policy, o: &Observed, now: i64) -> Coverage {
    let m = &p.model;
    let mut c = Coverage::default();
    for (k, s) in o.cells().iter().filter(|(_, s)| s.flows > 0) {
        let Ok(r) = resolve(p, o, k) else {
            c.unknown.merge(s);
            continue;
        };
        let v = evaluate(m, r.src, r.via, r.dst, r.flow, now);
        let bucket = match v.rule {
            Some(_) if only_broad(m, &v, &r, now) => &mut c.broad,
            Some(_) if v.allowed() => &mut c.explicit,
            Some(_) => &mut c.denied,
            None => &mut c.unallowed,
        };
        bucket.merge(s);
    }
    c
}

/// Why observed flows got no suggestion, or were suggested oddly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Misfit {
    /// A node named in the log that the policy does not have.
    UnknownNode(String),
    /// The destination is neither the receiving node's address nor served by it.
    NotBehind { via: NodeId, dst: IpAddr },
    /// Suggesting them would break an `expect` line of the policy.
    Expected {
        line: u32,
        src: NodeId,
        dst: IpAddr,
        flow: Flow,
    },
    /// ICMP records without `icmp.type`.
    UntypedIcmp,
}

/// Everything `suggest` finds.
#[derive(Debug, Clone)]
pub struct Suggestion {
    pub min_flows: u64,
    pub policy_id: PolicyId,
    pub file: String,
    pub enforce: bool,
    pub now: i64,
    pub grouped: Grouped,
    pub coverage: Coverage,
    /// Flows refused on purpose, per deciding deny rule or quarantine.
    pub deliberate: BTreeMap<RuleId, Tally>,
    /// Audit mode: flows already matched by an audit allow rule (staged).
    pub staged: BTreeMap<RuleId, Tally>,
    pub misfits: BTreeMap<Misfit, Tally>,
    /// Allow and audit rules no observed flow matched.
    pub unused: Vec<RuleId>,
    /// Deny rules no observed flow matched (kept: a deny protects anyway).
    pub unused_denies: Vec<RuleId>,
}

fn contradicting_expect(m: &Model, r: &Resolved) -> Option<u32> {
    m.expects
        .iter()
        .find(|e| {
            e.want != Want::Allow
                && e.flow.is_none_or(|f| f == r.flow)
                && e.sources.contains(&r.src)
                && e.paths.contains(&(r.via, r.dst))
        })
        .map(|e| e.line)
}

/// What `suggest` is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Emit allow rules (with expect lines) instead of audit rules.
    pub enforce: bool,
    /// Evaluate at this time (epoch seconds).
    pub now: i64,
    /// Leave out rules covering fewer flows than this (one-off probes).
    pub min_flows: u64,
}

/// Suggests rules for the observed flows `o` under policy `p` at `now`.
pub fn suggest(p: &Policy, o: &Observed, enforce: bool, now: i64) -> Suggestion {
    suggest_with(
        p,
        o,
        &Options {
            enforce,
            now,
            min_flows: 1,
        },
    )
}

/// [`suggest`] with every option.
pub fn suggest_with(p: &Policy, o: &Observed, opts: &Options) -> Suggestion {
    let (enforce, now) = (opts.enforce, opts.now);
    let m = &p.model;
    let mut needs: Needs = BTreeMap::new();
    let mut s = Suggestion {
        min_flows: opts.min_flows,
        policy_id: p.id(),
        file: p.file_name().to_string(),
        enforce,
        now,
        grouped: Grouped::default(),
        coverage: coverage(p, o, now),
        deliberate: BTreeMap::new(),
        staged: BTreeMap::new(),
        misfits: BTreeMap::new(),
        unused: Vec::new(),
        unused_denies: Vec::new(),
    };
    if o.stats.untyped_icmp > 0 {
        s.misfits.insert(
            Misfit::UntypedIcmp,
            Tally {
                flows: o.stats.untyped_icmp,
                ..Tally::default()
            },
        );
    }
    let mut unused: BTreeSet<RuleId> = m
        .rules
        .iter()
        .filter(|r| r.kind != RuleKind::Quarantine && r.active(now))
        .map(|r| r.id)
        .collect();
    let mut seen: HashSet<(NodeId, NodeId, IpAddr, Flow)> = HashSet::new();
    // A cell can hold no flow when the other end's record decided where
    // its flow counts.
    for (k, stats) in o.cells().iter().filter(|(_, s)| s.flows > 0) {
        let r = match resolve(p, o, k) {
            Ok(r) => r,
            Err(name) => {
                s.misfits
                    .entry(Misfit::UnknownNode(name.to_string()))
                    .or_default()
                    .merge(stats);
                continue;
            }
        };
        let v = evaluate(m, r.src, r.via, r.dst, r.flow, now);
        if !unused.is_empty() && seen.insert((r.src, r.via, r.dst, r.flow)) {
            for id in [v.rule, v.audit].into_iter().flatten() {
                unused.remove(&id);
            }
            if let Some(src) = p.node(r.src) {
                unused.retain(|id| {
                    p.rule(*id).is_none_or(|rule| {
                        !(rule.matches_source(src) && rule_covers(m, rule, r.via, r.dst, r.flow))
                    })
                });
            }
        }
        let decider = v.rule.and_then(|id| p.rule(id));
        match decider {
            Some(_) if v.allowed() && !only_broad(m, &v, &r, now) => continue,
            Some(rule) if !v.allowed() => {
                s.deliberate.entry(rule.id).or_default().merge(stats);
                continue;
            }
            _ => {}
        }
        let Some(via) = p.node(r.via).filter(|n| n.accepts(r.dst)) else {
            s.misfits
                .entry(Misfit::NotBehind {
                    via: r.via,
                    dst: r.dst,
                })
                .or_default()
                .merge(stats);
            continue;
        };
        if let Some(line) = contradicting_expect(m, &r) {
            s.misfits
                .entry(Misfit::Expected {
                    line,
                    src: r.src,
                    dst: r.dst,
                    flow: r.flow,
                })
                .or_default()
                .merge(stats);
            continue;
        }
        let staged = v
            .audit
            .filter(|a| p.rule(*a).is_some_and(|a| a.kind == RuleKind::Allow));
        if let (Some(a), false) = (staged, enforce) {
            s.staged.entry(a).or_default().merge(stats);
            continue;
        }
        let unit = if via.owns(r.dst) {
            Unit::Node(r.via)
        } else {
            Unit::Host(r.dst)
        };
        let e = needs
            .entry((r.src, unit, r.flow))
            .or_insert((Tally::default(), r.dst, staged));
        e.0.merge(stats);
    }
    for id in unused {
        match p.rule(id).map(|r| r.kind) {
            Some(RuleKind::Deny) => s.unused_denies.push(id),
            Some(_) => s.unused.push(id),
            None => {}
        }
    }
    s.grouped = suggest_group::group(p, &needs, opts.min_flows);
    s
}
