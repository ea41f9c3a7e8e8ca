//! `umbra policy diff`: what changes between two versions of a policy.
//!
//! Reachability is compared per *source class*, not per source: nodes that
//! the same rules match as a source (the same quarantine, the same rules by
//! role or name, in both versions) reach every destination alike, so each
//! class is evaluated once, against only the rules that match it, and its
//! members are listed only where something changed. A policy diffed with
//! itself, or one where thousands of nodes share a few roles, then costs
//! about (classes x destination cells) instead of (nodes x cells x rules),
//! and memory holds classes, not every source of every changed cell
//! (issue 9: 100k nodes against itself ran > 300 s; 3k vs 10k took 1.9 GB).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use super::ast::RuleKind;
use super::eval::{decide, quarantine_of, rule_covers, Action, Verdict};
use super::model::{Model, Node, NodeId, RuleId};
use super::ports::{Flow, PortRange};
use super::Policy;
use crate::net::IpNet;
use crate::net::IpProtocol;

/// One service port range at one destination network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CellKey {
    service: String,
    via: String,
    /// `None`: the node's own tunnel addresses.
    net: Option<IpNet>,
    /// `None`: any protocol.
    range: Option<PortRange>,
}

/// Gained or lost (`+`/`-`), service, ports, and how reach changed.
type Change = (char, String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    None,
    Partial,
    Full,
}

struct Cell {
    via: NodeId,
    probes: Vec<(std::net::IpAddr, Flow)>,
}

/// Every port where some service's range starts or ends (+1), per protocol,
/// sorted: the probes that split a range into stretches alike for all rules.
fn boundaries(m: &Model) -> HashMap<IpProtocol, Vec<u16>> {
    let mut out: HashMap<IpProtocol, BTreeSet<u16>> = HashMap::new();
    for o in m.services.iter().flat_map(|o| o.ports.ranges.iter()) {
        let b = out.entry(o.proto).or_default();
        b.insert(o.lo);
        if let Some(p) = o.hi.checked_add(1) {
            b.insert(p);
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}

fn cells(m: &Model) -> BTreeMap<CellKey, Cell> {
    let mut out = BTreeMap::new();
    let bounds = boundaries(m);
    // Every destination network at each node, gathered once.
    let mut nets_at: HashMap<NodeId, Vec<IpNet>> = HashMap::new();
    for d in m.services.iter().flat_map(|s| s.dests.iter()) {
        nets_at.entry(d.node).or_default().push(d.net);
    }
    for s in &m.services {
        for d in &s.dests {
            let Some(via) = m.nodes.get(d.node.index()) else {
                continue;
            };
            let own = via.owns(d.net.addr()) && d.net == IpNet::host(d.net.addr());
            // Probe the first address of every destination network nested in
            // this one, so a deny on part of a network shows as partial.
            let mut addrs: BTreeSet<std::net::IpAddr> = BTreeSet::from([d.net.network().addr()]);
            for other in nets_at.get(&d.node).map_or(&[][..], Vec::as_slice) {
                if d.net.contains_net(other) {
                    addrs.insert(other.network().addr());
                }
            }
            let mut ranges: Vec<Option<PortRange>> =
                s.ports.ranges.iter().copied().map(Some).collect();
            if s.ports.any {
                ranges.push(None);
            }
            for range in ranges {
                // ICMPv4 never reaches an IPv6 address, nor ICMPv6 an IPv4 one.
                let v6 = !d.net.is_ipv4();
                if range.is_some_and(|r| {
                    (r.proto == IpProtocol::ICMP && v6) || (r.proto == IpProtocol::ICMPV6 && !v6)
                }) {
                    continue;
                }
                let flows: Vec<Flow> = match range {
                    None => vec![Flow {
                        proto: IpProtocol(0),
                        port: 0,
                    }],
                    Some(r) => {
                        let b = bounds.get(&r.proto).map_or(&[][..], Vec::as_slice);
                        let from = b.partition_point(|&p| p <= r.lo);
                        let to = b.partition_point(|&p| p <= r.hi);
                        std::iter::once(r.lo)
                            .chain(b.get(from..to).unwrap_or(&[]).iter().copied())
                            .map(|port| Flow {
                                proto: r.proto,
                                port,
                            })
                            .collect()
                    }
                };
                let probes: Vec<_> = addrs
                    .iter()
                    .flat_map(|a| flows.iter().map(move |f| (*a, *f)))
                    .collect();
                let net = (!own).then_some(d.net);
                let key = CellKey {
                    service: s.name.clone(),
                    via: via.name.clone(),
                    net,
                    range,
                };
                let cell = out.entry(key).or_insert_with(|| Cell {
                    via: d.node,
                    probes: Vec::new(),
                });
                cell.probes.extend(probes);
            }
        }
    }
    out
}

/// How one model treats one source: its quarantine, and the rules (active,
/// not quarantines) that match it as a source, in rule order. Everything
/// the evaluator asks about a source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SourceView {
    quarantine: Option<RuleId>,
    rules: Vec<RuleId>,
}

/// How the old and the new version see one source (`None`: not in it).
type Views = (Option<SourceView>, Option<SourceView>);

fn source_view(m: &Model, n: &Node, now: i64) -> SourceView {
    SourceView {
        quarantine: quarantine_of(m, n, now),
        rules: m
            .rules
            .iter()
            .filter(|r| r.kind != RuleKind::Quarantine && r.active(now) && r.matches_source(n))
            .map(|r| r.id)
            .collect(),
    }
}

/// One model's evaluator for sources seen through their [`SourceView`]:
/// the reference evaluation (`eval::evaluate`), with the per-source and
/// per-receiver work done once.
struct Judge<'m> {
    m: &'m Model,
    now: i64,
    /// Quarantine of each receiving node, by index.
    quarantined: Vec<Option<RuleId>>,
}

impl<'m> Judge<'m> {
    fn new(m: &'m Model, now: i64) -> Self {
        Judge {
            m,
            now,
            quarantined: m.nodes.iter().map(|n| quarantine_of(m, n, now)).collect(),
        }
    }

    fn evaluate(&self, src: &SourceView, via: NodeId, dst: std::net::IpAddr, f: Flow) -> Verdict {
        let Some(v) = self.m.nodes.get(via.index()) else {
            return Verdict::DEFAULT_DENY;
        };
        if !v.accepts(dst) {
            return Verdict::DEFAULT_DENY;
        }
        let via_q = self.quarantined.get(via.index()).copied().flatten();
        if let Some(q) = src.quarantine.or(via_q) {
            return Verdict {
                action: Action::Drop,
                rule: Some(q),
                audit: None,
            };
        }
        let _ = self.now;
        decide(
            src.rules
                .iter()
                .filter_map(|r| self.m.rules.get(r.0 as usize))
                .filter(|r| rule_covers(self.m, r, via, dst, f)),
        )
    }

    fn reach(&self, src: Option<&SourceView>, cell: Option<&Cell>) -> Reach {
        let (Some(src), Some(cell)) = (src, cell) else {
            return Reach::None;
        };
        let allowed = cell
            .probes
            .iter()
            .filter(|(ip, f)| self.evaluate(src, cell.via, *ip, *f).allowed())
            .count();
        match allowed {
            0 => Reach::None,
            n if n == cell.probes.len() => Reach::Full,
            _ => Reach::Partial,
        }
    }
}

fn node_line(p: &Policy, id: NodeId) -> String {
    let Some(n) = p.node(id) else {
        return String::new();
    };
    let addrs: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
    format!("{} ({}, key {})", n.name, addrs.join(","), n.key)
}

/// Renders the differences from `old` to `new` at `now` (epoch seconds).
pub fn diff(old: &Policy, new: &Policy, now: i64) -> String {
    let mut out = format!(
        "old policy {} ({})\nnew policy {} ({})\n",
        old.id(),
        old.file_name(),
        new.id(),
        new.file_name()
    );
    // Every source name with how each version sees it.
    let mut views: BTreeMap<&str, Views> = BTreeMap::new();
    for n in old.nodes() {
        views.entry(n.name.as_str()).or_default().0 = Some(source_view(&old.model, n, now));
    }
    for n in new.nodes() {
        views.entry(n.name.as_str()).or_default().1 = Some(source_view(&new.model, n, now));
    }
    let quarantined = |name: &str, new_side: bool| {
        views.get(name).is_some_and(|(o, n)| {
            let v = if new_side { n } else { o };
            v.as_ref().is_some_and(|v| v.quarantine.is_some())
        })
    };
    let mut node_changes = Vec::new();
    for n in old.nodes() {
        match new.node_by_name(&n.name) {
            None => node_changes.push(format!("  - node {} removed", node_line(old, n.id))),
            Some(m) => {
                if m.key != n.key {
                    node_changes.push(format!(
                        "  ~ node {} re-keyed: {} -> {}",
                        n.name, n.key, m.key
                    ));
                }
                if m.addresses != n.addresses {
                    let show = |a: &[IpNet]| {
                        a.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    node_changes.push(format!(
                        "  ~ node {} addresses: {} -> {}",
                        n.name,
                        show(&n.addresses),
                        show(&m.addresses)
                    ));
                }
                if m.roles != n.roles {
                    node_changes.push(format!(
                        "  ~ node {} roles: {} -> {}",
                        n.name,
                        n.roles.join(","),
                        m.roles.join(",")
                    ));
                }
                let q_old = quarantined(&n.name, false);
                let q_new = quarantined(&n.name, true);
                if q_new && !q_old {
                    node_changes.push(format!("  ! node {} quarantined", n.name));
                } else if q_old && !q_new {
                    node_changes.push(format!("  ! node {} released from quarantine", n.name));
                }
            }
        }
    }
    for n in new.nodes() {
        if old.node_by_name(&n.name).is_none() {
            node_changes.push(format!("  + node {} added", node_line(new, n.id)));
            if quarantined(&n.name, true) {
                node_changes.push(format!("  ! node {} quarantined", n.name));
            }
        }
    }
    if node_changes.is_empty() {
        out.push_str("nodes: no changes\n");
    } else {
        out.push_str("nodes:\n");
        for c in node_changes {
            let _ = writeln!(out, "{c}");
        }
    }

    let (old_cells, new_cells) = (cells(&old.model), cells(&new.model));
    let keys: BTreeSet<&CellKey> = old_cells.keys().chain(new_cells.keys()).collect();
    // Source classes: sources seen alike by both versions.
    let mut classes: BTreeMap<&Views, Vec<&str>> = BTreeMap::new();
    for (name, view) in &views {
        classes.entry(view).or_default().push(name);
    }
    let classes: Vec<(&Views, Vec<&str>)> = classes.into_iter().collect();
    let class_of: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .flat_map(|(ci, (_, members))| members.iter().map(move |m| (*m, ci)))
        .collect();
    let (judge_old, judge_new) = (Judge::new(&old.model, now), Judge::new(&new.model, now));
    // (sign, service, ports, change, destination) -> (classes, a source
    // excluded from them: the destination node itself, for its own address)
    type Who<'a> = (Vec<usize>, Option<&'a str>);
    let mut changes: BTreeMap<(char, String, String, String, String), Who<'_>> = BTreeMap::new();
    for k in &keys {
        let (co, cn) = (old_cells.get(*k), new_cells.get(*k));
        for (ci, ((vo, vn), members)) in classes.iter().enumerate() {
            // A node's traffic to its own address never enters the tunnel.
            let excluded = (k.net.is_none() && class_of.get(k.via.as_str()) == Some(&ci))
                .then_some(k.via.as_str());
            if excluded.is_some() && members.len() == 1 {
                continue;
            }
            let before = judge_old.reach(vo.as_ref(), co);
            let after = judge_new.reach(vn.as_ref(), cn);
            if before == after {
                continue;
            }
            let sign = if after > before { '+' } else { '-' };
            let word = |r: Reach| match r {
                Reach::None => "none",
                Reach::Partial => "partial",
                Reach::Full => "full",
            };
            let what = k.range.map_or_else(|| "any".to_string(), |r| r.to_string());
            let dest = match k.net {
                None => k.via.clone(),
                Some(n) => format!("{n} via {}", k.via),
            };
            let change = if before == Reach::None || after == Reach::None {
                String::new()
            } else {
                format!(" ({} -> {})", word(before), word(after))
            };
            let who = changes
                .entry((sign, k.service.clone(), what, change, dest))
                .or_default();
            who.0.push(ci);
            who.1 = who.1.or(excluded);
        }
    }
    // Destinations that changed for the same sources read as one line.
    let mut grouped: BTreeMap<(Change, Vec<&str>), Vec<String>> = BTreeMap::new();
    for ((sign, svc, what, change, dest), (cls, excluded)) in changes {
        let mut srcs: Vec<&str> = cls
            .iter()
            .filter_map(|&ci| classes.get(ci))
            .flat_map(|(_, members)| members.iter().copied())
            .filter(|s| Some(*s) != excluded)
            .collect();
        srcs.sort_unstable();
        grouped
            .entry(((sign, svc, what, change), srcs))
            .or_default()
            .push(dest);
    }
    if grouped.is_empty() {
        out.push_str("reachability: no changes\n");
    } else {
        out.push_str("reachability (+ gained, - lost):\n");
        for (((sign, svc, what, change), srcs), dests) in grouped {
            let _ = writeln!(
                out,
                "  {sign} {svc} {what}{change} to {} from {}",
                dests.join(", "),
                srcs.join(", ")
            );
        }
    }
    out
}
