//! Which rule explains each observed (source, destination) pair of one
//! protocol and port, written the way an operator writes rules.
//!
//! In order of preference, each observed pair is explained by:
//! 1. role -> role, when every member of the source role reached some
//!    member of the destination role and every member of the destination
//!    role was reached by some member of the source role (both sides
//!    behave alike);
//! 2. role -> node, when every member of one of the source's roles reached
//!    that destination;
//! 3. node -> role, when the source reached every member of one of the
//!    destination's roles;
//! 4. node -> node (or node -> served address) otherwise: an odd one out.
//!
//! Larger roles are tried first; a rule is only proposed when it explains
//! a pair no earlier rule did, so overlapping roles add no redundant rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::model::{Model, NodeId};

/// Where observed flows went: a node's own address, or an address in a
/// network some node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Node(NodeId),
    Host(IpAddr),
}

/// A suggested service's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Role(u32),
    Node(NodeId),
    Host(IpAddr),
}

/// A suggested rule's sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    Role(u32),
    Node(NodeId),
}

/// For one protocol and port: every destination and the sources that reached it.
pub type Pairs = BTreeMap<Unit, BTreeSet<NodeId>>;

/// The rule each observed pair belongs to.
pub type Homes = BTreeMap<(NodeId, Unit), (Segment, Target)>;

fn target_of(u: Unit) -> Target {
    match u {
        Unit::Node(n) => Target::Node(n),
        Unit::Host(ip) => Target::Host(ip),
    }
}

fn in_role(m: &Model, n: NodeId, r: u32) -> bool {
    m.nodes
        .get(n.index())
        .is_some_and(|node| node.role_ids.contains(&r))
}

/// Roles sorted by size (largest first), then name.
pub fn roles_by_size(m: &Model) -> Vec<u32> {
    let mut order: Vec<u32> = (0..m.roles.len() as u32).collect();
    order.sort_by_key(|r| {
        let role = &m.roles[*r as usize];
        (std::cmp::Reverse(role.members.len()), role.name.clone())
    });
    order
}

/// Assigns every observed pair of `dests` to the rule that explains it.
pub fn cover(m: &Model, order: &[u32], dests: &Pairs) -> Homes {
    let mut by_src: BTreeMap<NodeId, BTreeSet<Unit>> = BTreeMap::new();
    for (u, srcs) in dests {
        for s in srcs {
            by_src.entry(*s).or_default().insert(*u);
        }
    }
    let has = |s: NodeId, u: Unit| dests.get(&u).is_some_and(|x| x.contains(&s));
    let members = |r: u32| &m.roles[r as usize].members;
    let mut homes = Homes::new();
    // 1. role -> role.
    let src_roles: Vec<u32> = order
        .iter()
        .copied()
        .filter(|r| !members(*r).is_empty() && members(*r).iter().all(|s| by_src.contains_key(s)))
        .collect();
    let dst_roles: Vec<u32> = order
        .iter()
        .copied()
        .filter(|r| {
            !members(*r).is_empty()
                && members(*r)
                    .iter()
                    .all(|n| dests.contains_key(&Unit::Node(*n)))
        })
        .collect();
    for &r in &src_roles {
        for &d in &dst_roles {
            let all_served = members(d).iter().all(|x| {
                dests
                    .get(&Unit::Node(*x))
                    .is_some_and(|srcs| srcs.iter().any(|s| in_role(m, *s, r)))
            });
            let all_call = members(r).iter().all(|s| {
                by_src.get(s).is_some_and(|us| {
                    us.iter()
                        .any(|u| matches!(u, Unit::Node(n) if in_role(m, *n, d)))
                })
            });
            if !(all_served && all_call) {
                continue;
            }
            for s in members(r) {
                for x in members(d) {
                    let u = Unit::Node(*x);
                    if has(*s, u) {
                        homes
                            .entry((*s, u))
                            .or_insert((Segment::Role(r), Target::Role(d)));
                    }
                }
            }
        }
    }
    for (u, srcs) in dests {
        for &s in srcs {
            if homes.contains_key(&(s, *u)) {
                continue;
            }
            // 2. role -> node: every member of one of s's roles reached u.
            let role_of_s = order
                .iter()
                .copied()
                .find(|r| in_role(m, s, *r) && members(*r).iter().all(|x| has(*x, *u)));
            if let Some(r) = role_of_s {
                for x in members(r) {
                    homes
                        .entry((*x, *u))
                        .or_insert((Segment::Role(r), target_of(*u)));
                }
                continue;
            }
            // 3. node -> role: s reached every member of one of u's roles.
            let role_of_u = match u {
                Unit::Node(n) => order.iter().copied().find(|d| {
                    in_role(m, *n, *d) && members(*d).iter().all(|y| has(s, Unit::Node(*y)))
                }),
                Unit::Host(_) => None,
            };
            if let Some(d) = role_of_u {
                for y in members(d) {
                    homes
                        .entry((s, Unit::Node(*y)))
                        .or_insert((Segment::Node(s), Target::Role(d)));
                }
                continue;
            }
            // 4. node -> node.
            homes.insert((s, *u), (Segment::Node(s), target_of(*u)));
        }
    }
    homes
}
