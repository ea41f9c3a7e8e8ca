//! Turning observed (source node, destination, port) triples into the
//! rules an operator would write.
//!
//! Per protocol and responder port, [`super::suggest_cover`] decides which
//! role or node rule explains each observed (source, destination) pair. Port lists are merged per (source segment,
//! destination) and contiguous ports become ranges; identical (destination,
//! ports) pairs share one service, an existing one when the policy already
//! has exactly that service. One rule per (source segment, service).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use super::ast::MAX_NAME;
use super::flowlog_agg::Tally;
use super::model::{Dest, Model, NodeId, RuleId};
use super::ports::{Flow, PortRange};
use super::suggest_cover::{cover, roles_by_size};
use super::Policy;
use crate::net::IpNet;
use crate::net::IpProtocol;

pub use super::suggest_cover::{Segment, Target, Unit};

/// Observed triples needing a rule: stats, one destination address seen,
/// and the audit allow rule already matching them (if any).
pub type Needs = BTreeMap<(NodeId, Unit, Flow), (Tally, IpAddr, Option<RuleId>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewService {
    pub name: String,
    /// Already defined in the policy (not printed again).
    pub existing: bool,
    pub target: Target,
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRule {
    pub name: String,
    pub segment: Segment,
    /// Index into [`Grouped::services`].
    pub service: usize,
    pub tally: Tally,
    /// Nodes that made these flows, and where they went.
    pub sources: BTreeSet<NodeId>,
    pub units: BTreeSet<Unit>,
    /// The busiest observed flow, for an `expect` line: source, address, flow.
    pub example: (NodeId, IpAddr, Flow),
    /// Audit allow rules that already matched these flows.
    pub replaces: BTreeSet<RuleId>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grouped {
    pub services: Vec<NewService>,
    pub rules: Vec<NewRule>,
    /// (destination, source segment, port) left out for too few flows,
    /// and what they covered.
    pub rare: (usize, Tally),
}

/// Sorted, merged port ranges: adjacent and overlapping ranges joined.
pub fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if l.proto == r.proto && u32::from(r.lo) <= u32::from(l.hi) + 1 => {
                l.hi = l.hi.max(r.hi);
            }
            _ => out.push(r),
        }
    }
    out
}

fn flow_range(f: Flow) -> PortRange {
    if f.proto.has_ports() {
        PortRange {
            proto: f.proto,
            lo: f.port,
            hi: f.port,
        }
    } else {
        PortRange {
            proto: f.proto,
            lo: 0,
            hi: u16::MAX,
        }
    }
}

fn target_dests(m: &Model, t: Target) -> Vec<Dest> {
    let mut out = Vec::new();
    let host = |n: NodeId, out: &mut Vec<Dest>| {
        if let Some(node) = m.nodes.get(n.index()) {
            out.extend(node.addresses.iter().map(|a| Dest {
                node: n,
                net: IpNet::host(a.addr()),
            }));
        }
    };
    match t {
        Target::Role(r) => {
            for n in &m.roles[r as usize].members {
                host(*n, &mut out);
            }
        }
        Target::Node(n) => host(n, &mut out),
        Target::Host(ip) => {
            for n in &m.nodes {
                if n.owns(ip) || n.serves.iter().any(|s| s.contains(ip)) {
                    out.push(Dest {
                        node: n.id,
                        net: IpNet::host(ip),
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The policy's own service with exactly these destinations and ports.
fn existing_service(m: &Model, t: Target, ports: &[PortRange]) -> Option<String> {
    let dests = target_dests(m, t);
    m.services
        .iter()
        .find(|s| {
            let mut d = s.dests.clone();
            d.sort();
            d.dedup();
            !s.ports.any && merge_ranges(s.ports.ranges.clone()) == ports && d == dests
        })
        .map(|s| s.name.clone())
}

pub fn target_label(m: &Model, t: Target) -> String {
    match t {
        Target::Role(r) => m.roles[r as usize].name.clone(),
        Target::Node(n) => m.nodes[n.index()].name.clone(),
        Target::Host(ip) => ip.to_string().replace(':', "-"),
    }
}

pub fn segment_label(m: &Model, s: Segment) -> String {
    match s {
        Segment::Role(r) => m.roles[r as usize].name.clone(),
        Segment::Node(n) => m.nodes[n.index()].name.clone(),
    }
}

fn ports_label(ports: &[PortRange]) -> String {
    let one = |r: &PortRange| {
        // Labels become parts of names: `proto47`, not the policy's `proto/47`.
        let proto = r.proto.to_string().replace('/', "");
        if !r.proto.has_ports() || (r.lo == 0 && r.hi == u16::MAX) {
            proto
        } else if r.lo == r.hi {
            format!("{proto}{}", r.lo)
        } else {
            format!("{proto}{}-{}", r.lo, r.hi)
        }
    };
    let all: Vec<String> = ports.iter().map(one).collect();
    let joined = all.join("_");
    if joined.len() <= 40 || all.len() < 2 {
        joined
    } else {
        format!("{}_and-{}-more", all[0], all.len() - 1)
    }
}

/// `base` cut to a valid length and made unique among `taken`.
fn unique(base: &str, taken: &mut HashSet<String>) -> String {
    let cut = |s: &str, n: usize| {
        s.get(..n.min(s.len()))
            .unwrap_or(s)
            .trim_end_matches(['-', '_', '.'])
            .to_string()
    };
    let mut name = cut(base, MAX_NAME);
    let mut i = 2;
    while taken.contains(&name) {
        let suffix = format!("-{i}");
        name = format!("{}{suffix}", cut(base, MAX_NAME - suffix.len()));
        i += 1;
    }
    taken.insert(name.clone());
    name
}

type PairAcc = (
    BTreeSet<Flow>,
    Tally,
    BTreeSet<NodeId>,
    BTreeSet<Unit>,
    Option<(u64, NodeId, IpAddr, Flow)>,
    BTreeSet<RuleId>,
);

/// Groups the triples into services and rules.
/// A port that fewer than `min_flows` flows of one source segment went to
/// (at one destination) is left out and counted in [`Grouped::rare`].
pub fn group(p: &Policy, needs: &Needs, min_flows: u64) -> Grouped {
    let m = &p.model;
    let order = roles_by_size(m);
    let mut by_flow: BTreeMap<Flow, BTreeMap<Unit, BTreeSet<NodeId>>> = BTreeMap::new();
    for (src, unit, flow) in needs.keys() {
        by_flow
            .entry(*flow)
            .or_default()
            .entry(*unit)
            .or_default()
            .insert(*src);
    }
    // Which (target, segment) each observed triple ends up in.
    let mut home: BTreeMap<(NodeId, Unit, Flow), (Target, Segment)> = BTreeMap::new();
    for (flow, dests) in &by_flow {
        for ((s, u), (seg, target)) in cover(m, &order, dests) {
            home.insert((s, u, *flow), (target, seg));
        }
    }
    // Flows per (destination, source segment, port): the unit --min-flows counts.
    let mut per_port: BTreeMap<(Target, Segment, Flow), Tally> = BTreeMap::new();
    for (triple, (tally, ..)) in needs {
        if let Some((t, seg)) = home.get(triple) {
            per_port
                .entry((*t, *seg, triple.2))
                .or_default()
                .merge(tally);
        }
    }
    let mut out = Grouped::default();
    for t in per_port.values().filter(|t| t.flows < min_flows) {
        out.rare.0 += 1;
        out.rare.1.merge(t);
    }
    let mut pairs: BTreeMap<(Target, Segment), PairAcc> = BTreeMap::new();
    for (triple, (tally, ip, staged)) in needs {
        let Some(key) = home.get(triple) else {
            continue;
        };
        if per_port
            .get(&(key.0, key.1, triple.2))
            .is_some_and(|t| t.flows < min_flows)
        {
            continue;
        }
        let acc = pairs.entry(*key).or_default();
        acc.0.insert(triple.2);
        acc.1.merge(tally);
        acc.2.insert(triple.0);
        acc.3.insert(triple.1);
        if acc.4.is_none_or(|(f, ..)| tally.flows > f) {
            acc.4 = Some((tally.flows, triple.0, *ip, triple.2));
        }
        acc.5.extend(staged.iter().copied());
    }
    let mut taken_services: HashSet<String> = m.services.iter().map(|s| s.name.clone()).collect();
    // An allow rule that replaces a staged audit rule may take its name:
    // the operator deletes the audit line when enforcing.
    let replaced: BTreeSet<RuleId> = pairs.values().flat_map(|a| a.5.iter().copied()).collect();
    let mut taken_rules: HashSet<String> = m
        .rules
        .iter()
        .filter(|r| !replaced.contains(&r.id))
        .map(|r| r.label.clone())
        .collect();
    let mut service_ids: BTreeMap<(Target, Vec<PortRange>), usize> = BTreeMap::new();
    for ((target, seg), (flows, tally, sources, units, example, replaces)) in pairs {
        let ports = merge_ranges(flows.iter().map(|f| flow_range(*f)).collect());
        let service = *service_ids
            .entry((target, ports.clone()))
            .or_insert_with(|| {
                let (name, existing) = match existing_service(m, target, &ports) {
                    Some(name) => (name, true),
                    None => {
                        let base = format!("{}-{}", target_label(m, target), ports_label(&ports));
                        (unique(&base, &mut taken_services), false)
                    }
                };
                out.services.push(NewService {
                    name,
                    existing,
                    target,
                    ports,
                });
                out.services.len() - 1
            });
        let base = format!(
            "{}-to-{}",
            segment_label(m, seg),
            out.services[service].name
        );
        let (_, src, ip, flow) = example.unwrap_or((
            0,
            NodeId(0),
            IpAddr::from([0, 0, 0, 0]),
            Flow {
                proto: IpProtocol(0),
                port: 0,
            },
        ));
        out.rules.push(NewRule {
            name: unique(&base, &mut taken_rules),
            segment: seg,
            service,
            tally,
            sources,
            units,
            example: (src, ip, flow),
            replaces,
        });
    }
    out.rules.sort_by_key(|r| (r.service, r.segment));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    const TCP: IpProtocol = IpProtocol::TCP;
    const UDP: IpProtocol = IpProtocol::UDP;

    fn r(proto: IpProtocol, lo: u16, hi: u16) -> PortRange {
        PortRange { proto, lo, hi }
    }

    #[test]
    fn ranges_merge_when_adjacent_only() {
        let got = merge_ranges(vec![
            r(TCP, 8082, 8082),
            r(TCP, 8080, 8080),
            r(TCP, 8081, 8081),
            r(TCP, 9000, 9000),
            r(UDP, 53, 53),
            r(TCP, 8083, 8090),
        ]);
        assert_eq!(
            got,
            [r(TCP, 8080, 8090), r(TCP, 9000, 9000), r(UDP, 53, 53)]
        );
        assert_eq!(ports_label(&got), "tcp8080-8090_tcp9000_udp53");
    }

    #[test]
    fn names_are_valid_and_unique() {
        let mut taken = HashSet::from(["web-to-api".to_string()]);
        assert_eq!(unique("web-to-api", &mut taken), "web-to-api-2");
        assert_eq!(unique("web-to-api", &mut taken), "web-to-api-3");
        let long = "x".repeat(80);
        let a = unique(&long, &mut taken);
        let b = unique(&long, &mut taken);
        assert_eq!((a.len(), b.len()), (63, 63));
        assert!(b.ends_with("-2"));
    }
}
