//! Per-node compilation: the lookup table the data path consults per packet.
//!
//! Lookups are a few binary searches over small sorted arrays and never
//! allocate. Sources are grouped into classes of nodes that match the same
//! rules here, so the table grows with the number of distinct roles, not
//! with the size of the mesh.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;

use super::eval::{decide, service, Action, Verdict};
use super::model::{Model, Node, NodeId, Rule, RuleId, SourceSet, SvcRef};
use super::net::{to_bits, IpNet};
use super::ports::{PortSet, ICMP, ICMP6};
use super::syntax::RuleKind;
use super::time::{system_time, unix_secs};
use super::PolicyId;

#[derive(Debug, Clone, Copy)]
struct PortTable {
    protos: (u32, u32),
    other: u32,
}

#[derive(Debug, Clone, Copy)]
struct ProtoEntry {
    proto: u8,
    segs: (u32, u32),
}

/// An allowed stretch of one protocol's ports, as `show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// `None`: every protocol not listed on its own.
    pub proto: Option<u8>,
    /// With `proto: None`: whether some protocols are listed on their own.
    pub others: bool,
    pub lo: u16,
    pub hi: u16,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy)]
struct EgressSeg {
    via: u32,
    lo: u128,
    hi: u128,
    table: u32,
}

/// One node's compiled view of the policy: verdicts for every flow that
/// enters or leaves this node through the tunnel.
#[derive(Debug, Clone)]
pub struct NodeTable {
    node: NodeId,
    policy_id: PolicyId,
    src_class: Vec<u32>,
    seg_v4: Vec<(u128, u128)>,
    seg_v6: Vec<(u128, u128)>,
    matrix: Vec<u32>,
    egress_v4: Vec<EgressSeg>,
    egress_v6: Vec<EgressSeg>,
    tables: Vec<PortTable>,
    protos: Vec<ProtoEntry>,
    seg_starts: Vec<u16>,
    seg_verdicts: Vec<u32>,
    verdicts: Vec<Verdict>,
    peers: Vec<NodeId>,
    peer_bits: Vec<u64>,
    next_expiry: Option<i64>,
}

fn find_seg(segs: &[(u128, u128)], v: u128) -> Option<usize> {
    let i = segs.partition_point(|s| s.0 <= v).checked_sub(1)?;
    segs.get(i).filter(|s| v <= s.1).map(|_| i)
}

fn family_split(dst: IpAddr) -> (bool, u128) {
    (dst.is_ipv6(), to_bits(dst))
}

impl NodeTable {
    /// The node this table belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The policy this table was compiled from (stamp it on logs).
    pub fn policy_id(&self) -> PolicyId {
        self.policy_id
    }

    /// Verdict for a packet that peer `src` sent to this node, for `dst`
    /// (one of this node's tunnel addresses or an address in a network it
    /// serves). `port` is the destination port, or the ICMP type for ICMP;
    /// it is ignored for protocols without ports.
    pub fn ingress(&self, src: NodeId, dst: IpAddr, proto: u8, port: u16) -> Verdict {
        let Some(&class) = self.src_class.get(src.index()) else {
            return Verdict::DEFAULT_DENY;
        };
        let (v6, bits) = family_split(dst);
        let seg = if v6 {
            find_seg(&self.seg_v6, bits).map(|i| i + self.seg_v4.len())
        } else {
            find_seg(&self.seg_v4, bits)
        };
        let nseg = self.seg_v4.len() + self.seg_v6.len();
        match seg.and_then(|s| self.matrix.get(class as usize * nseg + s)) {
            Some(&t) => self.port_lookup(t, proto, port),
            None => Verdict::DEFAULT_DENY,
        }
    }

    /// Verdict the receiving peer `via` would give a packet this node sends
    /// to `dst` (an address of `via` or in a network `via` serves), so the
    /// sender can skip what would be dropped anyway.
    pub fn egress(&self, via: NodeId, dst: IpAddr, proto: u8, port: u16) -> Verdict {
        let (v6, bits) = family_split(dst);
        let segs = if v6 { &self.egress_v6 } else { &self.egress_v4 };
        let i = segs.partition_point(|s| (s.via, s.lo) <= (via.0, bits));
        match i.checked_sub(1).and_then(|i| segs.get(i)) {
            Some(s) if s.via == via.0 && bits <= s.hi => self.port_lookup(s.table, proto, port),
            _ => Verdict::DEFAULT_DENY,
        }
    }

    fn port_lookup(&self, table: u32, proto: u8, port: u16) -> Verdict {
        let Some(t) = self.tables.get(table as usize) else {
            return Verdict::DEFAULT_DENY;
        };
        let entries = self
            .protos
            .get(t.protos.0 as usize..t.protos.1 as usize)
            .unwrap_or(&[]);
        let vidx = match entries.iter().find(|e| e.proto == proto) {
            Some(e) => {
                let (lo, hi) = (e.segs.0 as usize, e.segs.1 as usize);
                let starts = self.seg_starts.get(lo..hi).unwrap_or(&[]);
                let k = starts.partition_point(|&s| s <= port).saturating_sub(1);
                self.seg_verdicts.get(lo + k).copied().unwrap_or(t.other)
            }
            None => t.other,
        };
        self.verdicts
            .get(vidx as usize)
            .copied()
            .unwrap_or(Verdict::DEFAULT_DENY)
    }

    /// Peers with any allowed flow to or from this node, sorted. Handshakes
    /// from any other key should get no answer at all (cloaking).
    pub fn peers(&self) -> &[NodeId] {
        &self.peers
    }

    /// True when `peer` has any allowed flow with this node, in either direction.
    pub fn is_peer(&self, peer: NodeId) -> bool {
        self.peer_bits
            .get(peer.index() / 64)
            .is_some_and(|w| w & (1u64 << (peer.index() % 64)) != 0)
    }

    /// The next instant at which a rule this table depends on expires;
    /// compile again then.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.next_expiry.map(system_time)
    }

    /// Approximate heap memory held by the table, in bytes.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.src_class.capacity() * 4
            + (self.seg_v4.capacity() + self.seg_v6.capacity()) * size_of::<(u128, u128)>()
            + self.matrix.capacity() * 4
            + (self.egress_v4.capacity() + self.egress_v6.capacity()) * size_of::<EgressSeg>()
            + self.tables.capacity() * size_of::<PortTable>()
            + self.protos.capacity() * size_of::<ProtoEntry>()
            + self.seg_starts.capacity() * 2
            + self.seg_verdicts.capacity() * 4
            + self.verdicts.capacity() * size_of::<Verdict>()
            + self.peers.capacity() * 4
            + self.peer_bits.capacity() * 8
    }

    /// Ingress source classes, for `show`: each class's members and, per
    /// local segment, the allowed port ranges.
    pub(crate) fn ingress_view(&self) -> Vec<(Vec<NodeId>, SegmentView)> {
        let nseg = self.seg_v4.len() + self.seg_v6.len();
        let nclass = self
            .src_class
            .iter()
            .map(|c| *c as usize + 1)
            .max()
            .unwrap_or(0);
        let mut members = vec![Vec::new(); nclass];
        for (i, c) in self.src_class.iter().enumerate() {
            if let Some(m) = members.get_mut(*c as usize) {
                m.push(NodeId(i as u32));
            }
        }
        let segs: Vec<(bool, (u128, u128))> = self
            .seg_v4
            .iter()
            .map(|s| (false, *s))
            .chain(self.seg_v6.iter().map(|s| (true, *s)))
            .collect();
        let mut out = Vec::new();
        for (c, m) in members.into_iter().enumerate() {
            let mut per_seg = Vec::new();
            for (k, (v6, range)) in segs.iter().enumerate() {
                if let Some(&t) = self.matrix.get(c * nseg + k) {
                    let allowed = self.allowed_ranges(t);
                    if !allowed.is_empty() {
                        per_seg.extend(
                            range_to_nets(*v6, *range)
                                .into_iter()
                                .map(|n| (n, allowed.clone())),
                        );
                    }
                }
            }
            if !m.is_empty() && !per_seg.is_empty() {
                out.push((m, per_seg));
            }
        }
        out
    }

    /// Egress segments with any allowed flow, for `show`.
    pub(crate) fn egress_view(&self) -> Vec<(NodeId, IpNet, Vec<Allowed>)> {
        let mut out = Vec::new();
        for (v6, segs) in [(false, &self.egress_v4), (true, &self.egress_v6)] {
            for s in segs {
                let allowed = self.allowed_ranges(s.table);
                if !allowed.is_empty() {
                    for n in range_to_nets(v6, (s.lo, s.hi)) {
                        out.push((NodeId(s.via), n, allowed.clone()));
                    }
                }
            }
        }
        out
    }

    /// Allowed ranges of a port table; `None` as protocol means every
    /// protocol not listed separately.
    fn allowed_ranges(&self, table: u32) -> Vec<Allowed> {
        let mut out = Vec::new();
        let Some(t) = self.tables.get(table as usize) else {
            return out;
        };
        let other = self
            .verdicts
            .get(t.other as usize)
            .copied()
            .unwrap_or(Verdict::DEFAULT_DENY);
        if other.allowed() {
            let others = t.protos.0 != t.protos.1;
            out.push(Allowed {
                proto: None,
                others,
                lo: 0,
                hi: u16::MAX,
                verdict: other,
            });
        }
        for e in self
            .protos
            .get(t.protos.0 as usize..t.protos.1 as usize)
            .unwrap_or(&[])
        {
            let (lo, hi) = (e.segs.0 as usize, e.segs.1 as usize);
            for k in lo..hi {
                let start = self.seg_starts.get(k).copied().unwrap_or(0);
                let end = if k + 1 < hi {
                    self.seg_starts.get(k + 1).map_or(u16::MAX, |s| s - 1)
                } else {
                    max_port(e.proto)
                };
                let v = self
                    .seg_verdicts
                    .get(k)
                    .and_then(|i| self.verdicts.get(*i as usize))
                    .copied();
                if let Some(v) = v.filter(Verdict::allowed) {
                    out.push(Allowed {
                        proto: Some(e.proto),
                        others: false,
                        lo: start,
                        hi: end,
                        verdict: v,
                    });
                }
            }
        }
        out
    }
}

fn max_port(proto: u8) -> u16 {
    if proto == ICMP || proto == ICMP6 {
        255
    } else {
        u16::MAX
    }
}

/// Splits an address range into the fewest CIDR blocks covering it.
fn range_to_nets(v6: bool, (lo, hi): (u128, u128)) -> Vec<IpNet> {
    let bits: u32 = if v6 { 128 } else { 32 };
    let block_end = |cur: u128, size: u32| {
        if size >= 128 {
            u128::MAX
        } else {
            cur | ((1u128 << size) - 1)
        }
    };
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        let mut size = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        while size > 0 && block_end(cur, size) > hi {
            size -= 1;
        }
        let addr = if v6 {
            IpAddr::V6(std::net::Ipv6Addr::from(cur))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from((cur & 0xffff_ffff) as u32))
        };
        if let Some(n) = IpNet::new(addr, (bits - size) as u8) {
            out.push(n);
        }
        let end = block_end(cur, size);
        if end >= hi || out.len() >= 256 {
            return out;
        }
        cur = end + 1;
    }
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
/// Per destination network, the allowed port ranges.
pub(crate) type SegmentView = Vec<(IpNet, Vec<Allowed>)>;

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
        egress_v6: Vec::new(),
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
    for (v6, s) in egress {
        if v6 {
            b.t.egress_v6.push(s);
        } else {
            b.t.egress_v4.push(s);
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
