//! Per-node compilation of the policy into a [`NodeTable`].
//!
//! Sources are grouped into classes of nodes that match the same rules at
//! this node, so the table grows with the number of distinct roles, not
//! with the size of the mesh.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use super::ast::RuleKind;
use super::eval::{decide, service, Action, Verdict};
use super::model::{Model, Node, NodeId, Rule, RuleId, SourceSet, SvcRef};
use super::net::IpNet;
use super::ports::PortSet;
pub use super::table::NodeTable;
use super::table::{PortTable, ProtoEntry};
use super::PolicyId;
use crate::time::unix_secs;

#[derive(Debug, Clone, Copy)]
struct EgressSeg {
    via: u32,
    lo: u128,
    hi: u128,
    table: u32,
}

/// Builds tables; shared interning of verdicts and port tables.
struct Builder<'m> {
    m: &'m Model,
    t: NodeTable,
    verdict_ids: HashMap<Verdict, u32>,
    table_ids: HashMap<TableKey, u32>,
    table_allows: Vec<bool>,
}

type Contrib<'a> = (&'a Rule, &'a PortSet);
/// A port table's content: per protocol (start port, verdict) steps, and the verdict for other protocols.
type TableKey = (Vec<(u8, Vec<(u16, u32)>)>, u32);

impl<'m> Builder<'m> {
    fn verdict(&mut self, v: Verdict) -> u32 {
        let next = self.t.verdicts.len() as u32;
        *self.verdict_ids.entry(v).or_insert_with(|| {
            self.t.verdicts.push(v);
            next
        })
    }

    /// Interns the port table for rules matching one (source class, destination segment).
    fn table(&mut self, contribs: &[Contrib<'_>]) -> u32 {
        let mut protos = BTreeSet::new();
        for (_, ps) in contribs {
            protos.extend(ps.ranges.iter().map(|r| r.proto));
        }
        let other_v = decide(contribs.iter().filter(|(_, ps)| ps.any).map(|(r, _)| *r));
        let other = self.verdict(other_v);
        let mut allows = other_v.allowed();
        let mut key_protos = Vec::new();
        for p in protos {
            let mut points = vec![0u16];
            for (_, ps) in contribs {
                for r in ps.ranges.iter().filter(|r| r.proto == p) {
                    points.push(r.lo);
                    if let Some(n) = r.hi.checked_add(1) {
                        points.push(n);
                    }
                }
            }
            points.sort_unstable();
            points.dedup();
            let mut segs: Vec<(u16, u32)> = Vec::new();
            for s in points {
                let v = decide(
                    contribs
                        .iter()
                        .filter(|(_, ps)| ps.contains(p, s))
                        .map(|(r, _)| *r),
                );
                allows |= v.allowed();
                let id = self.verdict(v);
                if segs.last().map(|l| l.1) != Some(id) {
                    segs.push((s, id));
                }
            }
            if !(segs.len() == 1 && segs.first().map(|s| s.1) == Some(other)) {
                key_protos.push((p, segs));
            }
        }
        let key = (key_protos, other);
        if let Some(&id) = self.table_ids.get(&key) {
            return id;
        }
        let id = self.t.tables.len() as u32;
        let p_lo = self.t.protos.len() as u32;
        for (p, segs) in &key.0 {
            let s_lo = self.t.seg_starts.len() as u32;
            for (s, v) in segs {
                self.t.seg_starts.push(*s);
                self.t.seg_verdicts.push(*v);
            }
            self.t.protos.push(ProtoEntry {
                proto: *p,
                segs: (s_lo, self.t.seg_starts.len() as u32),
            });
        }
        self.t.tables.push(PortTable {
            protos: (p_lo, self.t.protos.len() as u32),
            other,
        });
        self.table_allows.push(allows);
        self.table_ids.insert(key, id);
        id
    }

    fn quarantine_table(&mut self, q: RuleId) -> u32 {
        let v = Verdict {
            action: Action::Drop,
            rule: Some(q),
            audit: None,
        };
        let other = self.verdict(v);
        let key = (Vec::new(), other);
        if let Some(&id) = self.table_ids.get(&key) {
            return id;
        }
        let id = self.t.tables.len() as u32;
        let at = self.t.protos.len() as u32;
        self.t.tables.push(PortTable {
            protos: (at, at),
            other,
        });
        self.table_allows.push(false);
        self.table_ids.insert(key, id);
        id
    }
}

/// Nodes named by a set (before `except`), each once.
fn members<'a>(m: &'a Model, set: &'a SourceSet) -> Box<dyn Iterator<Item = NodeId> + 'a> {
    if set.all {
        return Box::new(m.nodes.iter().map(|n| n.id));
    }
    let from_roles = set
        .roles
        .iter()
        .filter_map(|r| m.roles.get(*r as usize))
        .flat_map(|r| r.members.iter().copied());
    Box::new(set.nodes.iter().copied().chain(from_roles))
}

/// Elementary address ranges: the pieces of `space` cut at every boundary of `cuts`.
fn segments(space: &[IpNet], cuts: &[IpNet], v6: bool) -> Vec<(u128, u128)> {
    let max = if v6 { u128::MAX } else { 0xffff_ffff };
    let mut points = Vec::new();
    for n in space.iter().chain(cuts).filter(|n| n.is_ipv4() != v6) {
        let (lo, hi) = n.range_bits();
        points.push(lo);
        if hi < max {
            points.push(hi + 1);
        }
    }
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    for (i, &lo) in points.iter().enumerate() {
        let hi = points.get(i + 1).map_or(max, |n| n - 1);
        let inside = space.iter().filter(|n| n.is_ipv4() != v6).any(|n| {
            let (a, b) = n.range_bits();
            a <= lo && hi <= b
        });
        if inside {
            out.push((lo, hi));
        }
    }
    out
}

fn net_has(net: &IpNet, v6: bool, bits: u128) -> bool {
    net.is_ipv4() != v6 && {
        let (a, b) = net.range_bits();
        a <= bits && bits <= b
    }
}

/// Compiles the table for `node` at `now`; see [`super::Policy::compile_for`].
pub fn compile(m: &Model, policy_id: PolicyId, node: NodeId, now: SystemTime) -> NodeTable {
    let now = unix_secs(now);
    let n_nodes = m.nodes.len();
    let empty = NodeTable {
        node,
        policy_id,
        src_class: Vec::new(),
        seg_v4: Vec::new(),
        seg_v6: Vec::new(),
        matrix: Vec::new(),
        egress_v4: Vec::new(),
        egress_v4_at: Vec::new(),
        egress_v6: Vec::new(),
        egress_v6_at: Vec::new(),
        tables: Vec::new(),
        protos: Vec::new(),
        seg_starts: Vec::new(),
        seg_verdicts: Vec::new(),
        verdicts: Vec::new(),
        peers: Vec::new(),
        peer_bits: vec![0; n_nodes.div_ceil(64)],
        next_expiry: None,
    };
    let Some(me) = m.nodes.get(node.index()) else {
        return empty;
    };
    let mut b = Builder {
        m,
        t: empty,
        verdict_ids: HashMap::new(),
        table_ids: HashMap::new(),
        table_allows: Vec::new(),
    };

    // First quarantine rule in force per node.
    let mut quarantine: Vec<Option<RuleId>> = vec![None; n_nodes];
    let mut expiry: Option<i64> = None;
    let mut note_expiry = |r: &Rule| {
        if let Some(u) = r.until {
            expiry = Some(expiry.map_or(u, |e: i64| e.min(u)));
        }
    };
    for r in m
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Quarantine && r.active(now))
    {
        note_expiry(r);
        for id in members(m, &r.from) {
            if let Some(q @ None) = quarantine.get_mut(id.index()) {
                *q = Some(r.id);
            }
        }
    }
    let q_of = |id: NodeId| quarantine.get(id.index()).copied().flatten();
    let enforced = |r: &&Rule| r.kind != RuleKind::Quarantine && r.active(now);

    // Ingress: rules whose services deliver to this node.
    let relevant: Vec<&Rule> = m
        .rules
        .iter()
        .filter(enforced)
        .filter(|r| {
            r.services
                .iter()
                .filter_map(|s| service(m, *s))
                .any(|s| !s.dests_at(node).is_empty())
        })
        .collect();
    let mut cuts: Vec<IpNet> = Vec::new();
    for r in &relevant {
        note_expiry(r);
        for s in r.services.iter().filter_map(|s| service(m, *s)) {
            cuts.extend(s.dests_at(node).iter().map(|d| d.net));
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let space: Vec<IpNet> = me.space().collect();
    b.t.seg_v4 = segments(&space, &cuts, false);
    b.t.seg_v6 = segments(&space, &cuts, true);

    let mut sigs: Vec<Vec<u32>> = vec![Vec::new(); n_nodes];
    for (i, r) in relevant.iter().enumerate() {
        for id in members(m, &r.from) {
            let Some(src) = m.nodes.get(id.index()) else {
                continue;
            };
            if let Some(sig) = sigs.get_mut(id.index()) {
                if sig.last() != Some(&(i as u32)) && !r.except.contains(src) {
                    sig.push(i as u32);
                }
            }
        }
    }
    let my_q = q_of(node);
    let mut class_of: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut class_keys: Vec<Vec<u32>> = Vec::new();
    b.t.src_class = Vec::with_capacity(n_nodes);
    for (i, sig) in sigs.into_iter().enumerate() {
        let key = match q_of(NodeId(i as u32)).or(my_q) {
            Some(q) => vec![u32::MAX, q.0],
            None => sig,
        };
        let next = class_keys.len() as u32;
        let c = *class_of.entry(key).or_insert_with_key(|k| {
            class_keys.push(k.clone());
            next
        });
        b.t.src_class.push(c);
    }
    let segs: Vec<(bool, u128)> =
        b.t.seg_v4
            .iter()
            .map(|s| (false, s.0))
            .chain(b.t.seg_v6.iter().map(|s| (true, s.0)))
            .collect();
    let mut class_allows = vec![false; class_keys.len()];
    for (c, key) in class_keys.iter().enumerate() {
        for &(v6, lo) in &segs {
            let t = match key.as_slice() {
                [u32::MAX, q] => b.quarantine_table(RuleId(*q)),
                sig => {
                    let mut contribs: Vec<Contrib<'_>> = Vec::new();
                    for r in sig.iter().filter_map(|i| relevant.get(*i as usize)) {
                        for s in r.services.iter().filter_map(|s| service(m, *s)) {
                            if s.dests_at(node).iter().any(|d| net_has(&d.net, v6, lo)) {
                                contribs.push((r, &s.ports));
                            }
                        }
                    }
                    b.table(&contribs)
                }
            };
            if b.table_allows.get(t as usize).copied().unwrap_or(false) {
                if let Some(a) = class_allows.get_mut(c) {
                    *a = true;
                }
            }
            b.t.matrix.push(t);
        }
    }
    let mut peer = vec![false; n_nodes];
    for (i, c) in b.t.src_class.iter().enumerate() {
        if class_allows.get(*c as usize).copied().unwrap_or(false) {
            if let Some(p) = peer.get_mut(i) {
                *p = true;
            }
        }
    }

    // Egress: what the receivers would decide for flows from this node.
    let mut grants: Vec<(NodeId, RuleId, SvcRef)> = Vec::new();
    if my_q.is_none() {
        for r in m
            .rules
            .iter()
            .filter(enforced)
            .filter(|r| r.matches_source(me))
        {
            note_expiry(r);
            for sref in &r.services {
                if let Some(s) = service(m, *sref) {
                    grants.extend(
                        s.dests
                            .iter()
                            .filter(|d| d.node != node)
                            .map(|d| (d.node, r.id, *sref)),
                    );
                }
            }
        }
    }
    grants.sort_unstable();
    grants.dedup();
    let mut egress: Vec<(bool, EgressSeg)> = Vec::new();
    for via in &m.nodes {
        if via.id == node {
            continue;
        }
        if let Some(q) = my_q.or(q_of(via.id)) {
            let t = b.quarantine_table(q);
            let space: Vec<IpNet> = via.space().collect();
            for v6 in [false, true] {
                for (lo, hi) in segments(&space, &[], v6) {
                    egress.push((
                        v6,
                        EgressSeg {
                            via: via.id.0,
                            lo,
                            hi,
                            table: t,
                        },
                    ));
                }
            }
        }
    }
    let mut start = 0;
    while let Some(&(via_id, _, _)) = grants.get(start) {
        let end = start
            + grants
                .get(start..)
                .map_or(0, |g| g.iter().take_while(|g| g.0 == via_id).count());
        let run = grants.get(start..end).unwrap_or(&[]);
        start = end;
        let Some(via) = m.nodes.get(via_id.index()) else {
            continue;
        };
        if q_of(via_id).is_some() {
            continue;
        }
        egress_for(&mut b, via, run, &mut egress, &mut peer);
    }
    egress.sort_unstable_by_key(|(_, s)| (s.via, s.lo));
    b.t.egress_v4_at = vec![0; n_nodes + 1];
    b.t.egress_v6_at = vec![0; n_nodes + 1];
    for (v6, s) in egress {
        // Counts per peer first; turned into start offsets below.
        if v6 {
            b.t.egress_v6.push((s.lo, s.hi, s.table));
            if let Some(c) = b.t.egress_v6_at.get_mut(s.via as usize + 1) {
                *c += 1;
            }
        } else {
            b.t.egress_v4.push((
                (s.lo & 0xffff_ffff) as u32,
                (s.hi & 0xffff_ffff) as u32,
                s.table,
            ));
            if let Some(c) = b.t.egress_v4_at.get_mut(s.via as usize + 1) {
                *c += 1;
            }
        }
    }
    for at in [&mut b.t.egress_v4_at, &mut b.t.egress_v6_at] {
        for i in 1..at.len() {
            let prev = at.get(i - 1).copied().unwrap_or(0);
            if let Some(c) = at.get_mut(i) {
                *c += prev;
            }
        }
    }

    if let Some(p) = peer.get_mut(node.index()) {
        *p = false;
    }
    for (i, p) in peer.iter().enumerate() {
        if *p {
            b.t.peers.push(NodeId(i as u32));
            if let Some(w) = b.t.peer_bits.get_mut(i / 64) {
                *w |= 1u64 << (i % 64);
            }
        }
    }
    b.t.next_expiry = expiry.filter(|e| *e > now);
    b.t.matrix.shrink_to_fit();
    b.t
}

fn egress_for(
    b: &mut Builder<'_>,
    via: &Node,
    run: &[(NodeId, RuleId, SvcRef)],
    out: &mut Vec<(bool, EgressSeg)>,
    peer: &mut [bool],
) {
    let m = b.m;
    let mut cuts: Vec<IpNet> = Vec::new();
    for (_, _, sref) in run {
        if let Some(s) = service(m, *sref) {
            cuts.extend(s.dests_at(via.id).iter().map(|d| d.net));
        }
    }
    let space: Vec<IpNet> = via.space().collect();
    let default = b.table(&[]);
    for v6 in [false, true] {
        for (lo, hi) in segments(&space, &cuts, v6) {
            let mut contribs: Vec<Contrib<'_>> = Vec::new();
            for (_, rid, sref) in run {
                let (Some(r), Some(s)) = (m.rules.get(rid.index()), service(m, *sref)) else {
                    continue;
                };
                if s.dests_at(via.id).iter().any(|d| net_has(&d.net, v6, lo)) {
                    contribs.push((r, &s.ports));
                }
            }
            let t = b.table(&contribs);
            if t == default {
                continue;
            }
            if b.table_allows.get(t as usize).copied().unwrap_or(false) {
                if let Some(p) = peer.get_mut(via.id.index()) {
                    *p = true;
                }
            }
            out.push((
                v6,
                EgressSeg {
                    via: via.id.0,
                    lo,
                    hi,
                    table: t,
                },
            ));
        }
    }
}
