//! Warnings about policies that load but are probably not what was meant.

use std::collections::{BTreeSet, HashMap};

use super::ast::RuleKind;
use super::diag::{Diagnostic, Span};
use super::eval::service;
use super::model::{Dest, Model, Rule, SvcRef};
use super::ports::PortSet;
use crate::net::IpNet;
use crate::time::format_rfc3339;

/// Every lint, at `now` (epoch seconds).
pub fn lint(m: &Model, now: i64) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    overlapping(m, &mut out);
    unused(m, &mut out);
    for span in &m.stray_keys {
        out.push(Diagnostic::warning(
            "unknown-key",
            *span,
            "no node has this key, so quarantining it changes nothing",
        ));
    }
    for r in &m.rules {
        if let (Some(u), Some(span)) = (r.until, r.until_span) {
            if u <= now {
                out.push(Diagnostic::warning(
                    "expired-rule",
                    span,
                    format!(
                        "rule {} expired at {}; it no longer applies, remove it",
                        r.label,
                        format_rfc3339(u)
                    ),
                ));
            }
        }
        if r.kind == RuleKind::Allow
            && !r.audit
            && r.from.all
            && r.except.is_empty()
            && allows_everything(m, r)
        {
            out.push(Diagnostic::warning(
                "allow-all",
                r.span,
                format!(
                    "rule {} allows every node to reach everything; this is no segmentation at all",
                    r.label
                ),
            ));
        }
    }
    shadowed(m, now, &mut out);
    out
}

fn allows_everything(m: &Model, r: &Rule) -> bool {
    r.services.iter().any(|sref| match sref {
        SvcRef::Everything => true,
        SvcRef::Named(_) => service(m, *sref).is_some_and(|s| {
            s.ports.any
                && !m.nodes.is_empty()
                && m.nodes.iter().all(|n| {
                    n.addresses
                        .iter()
                        .all(|a| s.dests_at(n.id).iter().any(|d| d.net.contains(a.addr())))
                })
        }),
    })
}

fn overlapping(m: &Model, out: &mut Vec<Diagnostic>) {
    let serves: Vec<(usize, IpNet)> = m
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.serves.iter().map(move |s| (i, *s)))
        .collect();
    let mut networks: HashMap<IpNet, usize> = HashMap::new();
    for (i, n) in m.nodes.iter().enumerate() {
        let span = Span {
            line: n.line,
            col: 1,
            len: 4,
        };
        for a in &n.addresses {
            if let Some((g, s)) = serves.iter().find(|(g, s)| *g != i && s.contains(a.addr())) {
                let gw = m.nodes.get(*g).map_or("?", |n| n.name.as_str());
                out.push(Diagnostic::warning(
                    "overlapping-address",
                    span,
                    format!("tunnel address {} of node `{}` lies in {s}, which node `{gw}` serves; routing is ambiguous", a.addr(), n.name),
                ));
            }
            // A host route (/32, /128) names one address, not a network.
            if a.prefix() < IpNet::host(a.addr()).prefix() {
                networks.entry(a.network()).or_insert(i);
            }
        }
    }
    let mut nets: Vec<(&IpNet, &usize)> = networks.iter().collect();
    nets.sort();
    for (a, ai) in &nets {
        for (b, bi) in &nets {
            if a.prefix() < b.prefix() && a.contains_net(b) {
                let (na, nb) = (m.nodes.get(**ai), m.nodes.get(**bi));
                let line = na.map_or(0, |n| n.line);
                out.push(Diagnostic::warning(
                    "overlapping-address",
                    Span { line, col: 1, len: 4 },
                    format!(
                        "tunnel network {a} of node `{}` contains tunnel network {b} of node `{}`; expected one prefix length per tunnel network",
                        na.map_or("?", |n| n.name.as_str()),
                        nb.map_or("?", |n| n.name.as_str()),
                    ),
                ));
            }
        }
    }
}

fn unused(m: &Model, out: &mut Vec<Diagnostic>) {
    for (role, used) in m.roles.iter().zip(&m.used_roles) {
        if !used {
            out.push(Diagnostic::warning(
                "unused-role",
                role.span,
                format!("role `{}` is not used by any service or rule", role.name),
            ));
        }
    }
    for (svc, used) in m.services.iter().zip(&m.used_services) {
        if !used {
            out.push(Diagnostic::warning(
                "unused-service",
                svc.span,
                format!("service `{}` is not used by any rule", svc.name),
            ));
        }
    }
}

/// True when the union of `denies` covers every port of `ports`.
fn ports_covered(ports: &PortSet, denies: &[&PortSet]) -> bool {
    if denies.iter().any(|d| d.any) {
        return true;
    }
    if ports.any {
        return false;
    }
    ports.ranges.iter().all(|want| {
        let mut spans: Vec<(u32, u32)> = denies
            .iter()
            .flat_map(|d| d.ranges.iter())
            .filter(|r| r.proto == want.proto)
            .map(|r| (u32::from(r.lo), u32::from(r.hi)))
            .collect();
        spans.sort_unstable();
        let mut next = u32::from(want.lo);
        for (lo, hi) in spans {
            if lo > next {
                break;
            }
            next = next.max(hi + 1);
        }
        next > u32::from(want.hi)
    })
}

/// Allow rules none of whose flows survive the deny rules.
fn shadowed(m: &Model, now: i64, out: &mut Vec<Diagnostic>) {
    let enforced = |r: &&Rule| !r.audit && r.active(now);
    let denies: Vec<&Rule> = m
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Deny)
        .filter(enforced)
        .collect();
    if denies.is_empty() {
        return;
    }
    // Sources matching the same denies behave alike: intern each node's
    // set of matching denies once, then check every allow per distinct set.
    let mut group_ids: HashMap<Vec<usize>, usize> = HashMap::new();
    let mut group_of: Vec<usize> = Vec::with_capacity(m.nodes.len());
    for n in &m.nodes {
        let g: Vec<usize> = denies
            .iter()
            .enumerate()
            .filter(|(_, d)| d.matches_source(n))
            .map(|(i, _)| i)
            .collect();
        let next = group_ids.len();
        group_of.push(*group_ids.entry(g).or_insert(next));
    }
    let mut group_list: Vec<Vec<usize>> = vec![Vec::new(); group_ids.len()];
    for (g, id) in group_ids {
        if let Some(slot) = group_list.get_mut(id) {
            *slot = g;
        }
    }
    for a in m
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Allow)
        .filter(enforced)
    {
        let ids: BTreeSet<usize> = m
            .nodes
            .iter()
            .zip(&group_of)
            .filter(|(n, _)| a.matches_source(n))
            .map(|(_, g)| *g)
            .collect();
        let groups = ids.iter().filter_map(|i| group_list.get(*i));
        let mut checked = false;
        let all_denied = groups.into_iter().all(|g| {
            let ds: Vec<&Rule> = g.iter().filter_map(|i| denies.get(*i).copied()).collect();
            a.services.iter().filter_map(|s| service(m, *s)).all(|s| {
                s.dests.iter().all(|d| {
                    checked = true;
                    let covering: Vec<&PortSet> = ds
                        .iter()
                        .flat_map(|r| r.services.iter().filter_map(|s| service(m, *s)))
                        .filter(|ds| {
                            ds.dests_at(d.node)
                                .iter()
                                .any(|x: &Dest| x.net.contains_net(&d.net))
                        })
                        .map(|ds| &ds.ports)
                        .collect();
                    ports_covered(&s.ports, &covering)
                })
            })
        });
        if all_denied && checked {
            out.push(Diagnostic::warning(
                "shadowed-rule",
                a.span,
                format!(
                    "rule {} never allows anything: deny rules cover every flow it allows",
                    a.label
                ),
            ));
        }
    }
}
