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
use super::ports::PortSet;
pub use super::table::NodeTable;
use super::table::{PortTable, ProtoEntry};
use super::PolicyId;
use crate::net::{IpNet, IpProtocol};
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
type TableKey = (Vec<(IpProtocol, Vec<(u16, u32)>)>, u32);

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

    /// Whether port table `t` allows anything at all.
    fn allows(&self, t: u32) -> bool {
        self.table_allows.get(t as usize).copied().unwrap_or(false)
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

/// Which rules a source node matches at this node: nodes in one class share
/// every ingress verdict, so the matrix has a row per class, not per node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ClassKey {
    /// Indexes into the relevant ingress rules that match the source.
    Rules(Vec<u32>),
    /// The source, or this node, is quarantined by this rule: drop everything.
    Quarantined(RuleId),
}

/// One node's compilation, phase by phase: [`Compiler::quarantines`],
/// [`Compiler::ingress`], [`Compiler::egress`], [`Compiler::finish`].
struct Compiler<'m> {
    b: Builder<'m>,
    me: &'m Node,
    node: NodeId,
    now: i64,
    /// The earliest `until` among the rules in force that shaped the table.
    expiry: Option<i64>,
    /// First quarantine rule in force, per node.
    quarantine: Vec<Option<RuleId>>,
    /// Whether each node has some allowed path to or from this node.
    peer: Vec<bool>,
}

/// Compiles the table for `node` at `now`; see [`super::Policy::compile_for`].
pub fn compile(m: &Model, policy_id: PolicyId, node: NodeId, now: SystemTime) -> NodeTable {
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
    let mut c = Compiler {
        b: Builder {
            m,
            t: empty,
            verdict_ids: HashMap::new(),
            table_ids: HashMap::new(),
            table_allows: Vec::new(),
        },
        me,
        node,
        now: unix_secs(now),
        expiry: None,
        quarantine: vec![None; n_nodes],
        peer: vec![false; n_nodes],
    };
    c.quarantines();
    c.ingress();
    c.egress();
    c.finish()
}

impl<'m> Compiler<'m> {
    fn note_expiry(&mut self, r: &Rule) {
        if let Some(u) = r.until {
            self.expiry = Some(self.expiry.map_or(u, |e| e.min(u)));
        }
    }

    fn q_of(&self, id: NodeId) -> Option<RuleId> {
        self.quarantine.get(id.index()).copied().flatten()
    }

    /// Rules enforced now (quarantine is handled on its own).
    fn enforced(&self) -> impl Iterator<Item = &'m Rule> + 'm {
        let now = self.now;
        self.b
            .m
            .rules
            .iter()
            .filter(move |r| r.kind != RuleKind::Quarantine && r.active(now))
    }

    /// Phase 1: the first quarantine rule in force per node.
    fn quarantines(&mut self) {
        let (m, now) = (self.b.m, self.now);
        for r in m
            .rules
            .iter()
            .filter(|r| r.kind == RuleKind::Quarantine && r.active(now))
        {
            self.note_expiry(r);
            for id in members(m, &r.from) {
                if let Some(q @ None) = self.quarantine.get_mut(id.index()) {
                    *q = Some(r.id);
                }
            }
        }
    }

    /// Phase 2: what this node accepts. Cuts its address space at every
    /// service destination, groups sources into classes and fills the
    /// class x segment matrix of port tables.
    fn ingress(&mut self) {
        let (m, node) = (self.b.m, self.node);
        let relevant: Vec<&Rule> = self
            .enforced()
            .filter(|r| {
                r.services
                    .iter()
                    .filter_map(|s| service(m, *s))
                    .any(|s| !s.dests_at(node).is_empty())
            })
            .collect();
        let mut cuts: Vec<IpNet> = Vec::new();
        for r in &relevant {
            self.note_expiry(r);
            for s in r.services.iter().filter_map(|s| service(m, *s)) {
                cuts.extend(s.dests_at(node).iter().map(|d| d.net));
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let space: Vec<IpNet> = self.me.space().collect();
        self.b.t.seg_v4 = segments(&space, &cuts, false);
        self.b.t.seg_v6 = segments(&space, &cuts, true);

        let class_keys = self.source_classes(&relevant);
        let segs: Vec<(bool, u128)> = self
            .b
            .t
            .seg_v4
            .iter()
            .map(|s| (false, s.0))
            .chain(self.b.t.seg_v6.iter().map(|s| (true, s.0)))
            .collect();
        let mut class_allows = vec![false; class_keys.len()];
        for (c, key) in class_keys.iter().enumerate() {
            for &(v6, lo) in &segs {
                let t = match key {
                    ClassKey::Quarantined(q) => self.b.quarantine_table(*q),
                    ClassKey::Rules(sig) => {
                        let mut contribs: Vec<Contrib<'_>> = Vec::new();
                        for r in sig.iter().filter_map(|i| relevant.get(*i as usize)) {
                            for s in r.services.iter().filter_map(|s| service(m, *s)) {
                                if s.dests_at(node).iter().any(|d| net_has(&d.net, v6, lo)) {
                                    contribs.push((r, &s.ports));
                                }
                            }
                        }
                        self.b.table(&contribs)
                    }
                };
                if self.b.allows(t) {
                    if let Some(a) = class_allows.get_mut(c) {
                        *a = true;
                    }
                }
                self.b.t.matrix.push(t);
            }
        }
        for (i, c) in self.b.t.src_class.iter().enumerate() {
            if class_allows.get(*c as usize).copied().unwrap_or(false) {
                if let Some(p) = self.peer.get_mut(i) {
                    *p = true;
                }
            }
        }
    }

    /// Assigns every node its source class (`src_class`); returns the classes.
    fn source_classes(&mut self, relevant: &[&Rule]) -> Vec<ClassKey> {
        let m = self.b.m;
        let mut sigs: Vec<Vec<u32>> = vec![Vec::new(); m.nodes.len()];
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
        let my_q = self.q_of(self.node);
        let mut class_of: HashMap<ClassKey, u32> = HashMap::new();
        let mut class_keys: Vec<ClassKey> = Vec::new();
        self.b.t.src_class = Vec::with_capacity(sigs.len());
        for (i, sig) in sigs.into_iter().enumerate() {
            let key = match self.q_of(NodeId(i as u32)).or(my_q) {
                Some(q) => ClassKey::Quarantined(q),
                None => ClassKey::Rules(sig),
            };
            let next = class_keys.len() as u32;
            let c = *class_of.entry(key).or_insert_with_key(|k| {
                class_keys.push(k.clone());
                next
            });
            self.b.t.src_class.push(c);
        }
        class_keys
    }

    /// Phase 3: what the receivers would decide for flows from this node,
    /// per receiving peer, so the sender can skip what would be dropped.
    fn egress(&mut self) {
        let (m, node) = (self.b.m, self.node);
        let my_q = self.q_of(node);
        let mut grants: Vec<(NodeId, RuleId, SvcRef)> = Vec::new();
        if my_q.is_none() {
            let me = self.me;
            let rules: Vec<&Rule> = self.enforced().filter(|r| r.matches_source(me)).collect();
            for r in rules {
                self.note_expiry(r);
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
            if let Some(q) = my_q.or(self.q_of(via.id)) {
                let t = self.b.quarantine_table(q);
                let space: Vec<IpNet> = via.space().collect();
                for v6 in [false, true] {
                    for (lo, hi) in segments(&space, &[], v6) {
                        let seg = EgressSeg {
                            via: via.id.0,
                            lo,
                            hi,
                            table: t,
                        };
                        egress.push((v6, seg));
                    }
                }
            }
        }
        for run in grants.chunk_by(|a, b| a.0 == b.0) {
            let Some(via) = run.first().and_then(|g| m.nodes.get(g.0.index())) else {
                continue;
            };
            if self.q_of(via.id).is_some() {
                continue;
            }
            egress_for(&mut self.b, via, run, &mut egress, &mut self.peer);
        }
        self.index_egress(egress);
    }

    /// Lays the egress ranges out per peer with start offsets.
    fn index_egress(&mut self, mut egress: Vec<(bool, EgressSeg)>) {
        let t = &mut self.b.t;
        let n_nodes = self.b.m.nodes.len();
        egress.sort_unstable_by_key(|(_, s)| (s.via, s.lo));
        t.egress_v4_at = vec![0; n_nodes + 1];
        t.egress_v6_at = vec![0; n_nodes + 1];
        for (v6, s) in egress {
            // Counts per peer first; turned into start offsets below.
            if v6 {
                t.egress_v6.push((s.lo, s.hi, s.table));
                if let Some(c) = t.egress_v6_at.get_mut(s.via as usize + 1) {
                    *c += 1;
                }
            } else {
                t.egress_v4.push((
                    (s.lo & 0xffff_ffff) as u32,
                    (s.hi & 0xffff_ffff) as u32,
                    s.table,
                ));
                if let Some(c) = t.egress_v4_at.get_mut(s.via as usize + 1) {
                    *c += 1;
                }
            }
        }
        for at in [&mut t.egress_v4_at, &mut t.egress_v6_at] {
            for i in 1..at.len() {
                let prev = at.get(i - 1).copied().unwrap_or(0);
                if let Some(c) = at.get_mut(i) {
                    *c += prev;
                }
            }
        }
    }

    /// Phase 4: the peer set and the next moment the table must be rebuilt.
    fn finish(mut self) -> NodeTable {
        if let Some(p) = self.peer.get_mut(self.node.index()) {
            *p = false;
        }
        let t = &mut self.b.t;
        for (i, p) in self.peer.iter().enumerate() {
            if *p {
                t.peers.push(NodeId(i as u32));
                if let Some(w) = t.peer_bits.get_mut(i / 64) {
                    *w |= 1u64 << (i % 64);
                }
            }
        }
        t.next_expiry = self.expiry.filter(|e| *e > self.now);
        t.matrix.shrink_to_fit();
        self.b.t
    }
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
            if b.allows(t) {
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
