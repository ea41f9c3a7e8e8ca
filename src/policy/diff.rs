//! `umbra policy diff`: what changes between two versions of a policy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::eval::{evaluate, quarantine_of};
use super::model::{Model, NodeId};
use super::net::IpNet;
use super::ports::{Flow, PortRange, ICMP, ICMP6};
use super::Policy;

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

fn cells(m: &Model) -> BTreeMap<CellKey, Cell> {
    let mut out = BTreeMap::new();
    for s in &m.services {
        for d in &s.dests {
            let Some(via) = m.nodes.get(d.node.index()) else {
                continue;
            };
            let own = via.owns(d.net.addr()) && d.net == IpNet::host(d.net.addr());
            // Probe the first address of every destination network nested in
            // this one, so a deny on part of a network shows as partial.
            let mut addrs: BTreeSet<std::net::IpAddr> = BTreeSet::from([d.net.network().addr()]);
            for other in m.services.iter().flat_map(|o| o.dests_at(d.node)) {
                if d.net.contains_net(&other.net) {
                    addrs.insert(other.net.network().addr());
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
                if range.is_some_and(|r| (r.proto == ICMP && v6) || (r.proto == ICMP6 && !v6)) {
                    continue;
                }
                let flows: Vec<Flow> = match range {
                    None => vec![Flow { proto: 0, port: 0 }],
                    Some(r) => {
                        let mut ports: BTreeSet<u16> = BTreeSet::from([r.lo]);
                        for o in m
                            .services
                            .iter()
                            .flat_map(|o| o.ports.ranges.iter())
                            .filter(|o| o.proto == r.proto)
                        {
                            for p in [Some(o.lo), o.hi.checked_add(1)].into_iter().flatten() {
                                if r.lo < p && p <= r.hi {
                                    ports.insert(p);
                                }
                            }
                        }
                        ports
                            .into_iter()
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

fn reach(m: &Model, src: Option<NodeId>, cell: Option<&Cell>, now: i64) -> Reach {
    let (Some(src), Some(cell)) = (src, cell) else {
        return Reach::None;
    };
    let allowed = cell
        .probes
        .iter()
        .filter(|(ip, f)| evaluate(m, src, cell.via, *ip, *f, now).allowed())
        .count();
    match allowed {
        0 => Reach::None,
        n if n == cell.probes.len() => Reach::Full,
        _ => Reach::Partial,
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
                let q_old = quarantine_of(&old.model, n, now).is_some();
                let q_new = quarantine_of(&new.model, m, now).is_some();
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
            if quarantine_of(&new.model, n, now).is_some() {
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
    let sources: BTreeSet<&str> = old
        .nodes()
        .iter()
        .chain(new.nodes())
        .map(|n| n.name.as_str())
        .collect();
    // (sign, service, ports, change, destination) -> sources
    let mut changes: BTreeMap<(char, String, String, String, String), Vec<&str>> = BTreeMap::new();
    for src in &sources {
        let (so, sn) = (
            old.node_by_name(src).map(|n| n.id),
            new.node_by_name(src).map(|n| n.id),
        );
        for k in &keys {
            if **src == k.via && k.net.is_none() {
                continue;
            }
            let before = reach(&old.model, so, old_cells.get(*k), now);
            let after = reach(&new.model, sn, new_cells.get(*k), now);
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
            changes
                .entry((sign, k.service.clone(), what, change, dest))
                .or_default()
                .push(src);
        }
    }
    // Destinations that changed for the same sources read as one line.
    let mut grouped: BTreeMap<(Change, Vec<&str>), Vec<String>> = BTreeMap::new();
    for ((sign, svc, what, change, dest), srcs) in changes {
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
