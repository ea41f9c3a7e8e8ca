//! The per-node lookup table the data path consults per packet.
//!
//! Lookups are a few binary searches over small sorted arrays and never
//! allocate: every field is a flat vector indexed by small integers.

use std::net::IpAddr;
use std::time::SystemTime;

use super::eval::Verdict;
use super::model::NodeId;
use super::PolicyId;
use crate::net::IpProtocol;
use crate::net::{to_bits, IpNet};
use crate::time::system_time;

/// Per destination network, the allowed port ranges.
pub(crate) type SegmentView = Vec<(IpNet, Vec<Allowed>)>;

#[derive(Debug, Clone, Copy)]
pub(super) struct PortTable {
    pub(super) protos: (u32, u32),
    pub(super) other: u32,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct ProtoEntry {
    pub(super) proto: IpProtocol,
    pub(super) segs: (u32, u32),
}

/// An allowed stretch of one protocol's ports, as `show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// `None`: every protocol not listed on its own.
    pub proto: Option<IpProtocol>,
    /// With `proto: None`: whether some protocols are listed on their own.
    pub others: bool,
    pub lo: u16,
    pub hi: u16,
    pub verdict: Verdict,
}

/// One node's compiled view of the policy: verdicts for every flow that
/// enters or leaves this node through the tunnel.
#[derive(Debug, Clone)]
pub struct NodeTable {
    pub(super) node: NodeId,
    pub(super) policy_id: PolicyId,
    pub(super) src_class: Vec<u32>,
    pub(super) seg_v4: Vec<(u128, u128)>,
    pub(super) seg_v6: Vec<(u128, u128)>,
    pub(super) matrix: Vec<u32>,
    /// Egress ranges per receiving peer: peer `i`'s ranges are
    /// `egress_v4[egress_v4_at[i]..egress_v4_at[i + 1]]`, sorted and disjoint.
    pub(super) egress_v4: Vec<(u32, u32, u32)>,
    pub(super) egress_v4_at: Vec<u32>,
    pub(super) egress_v6: Vec<(u128, u128, u32)>,
    pub(super) egress_v6_at: Vec<u32>,
    pub(super) tables: Vec<PortTable>,
    pub(super) protos: Vec<ProtoEntry>,
    pub(super) seg_starts: Vec<u16>,
    pub(super) seg_verdicts: Vec<u32>,
    pub(super) verdicts: Vec<Verdict>,
    pub(super) peers: Vec<NodeId>,
    pub(super) peer_bits: Vec<u64>,
    pub(super) next_expiry: Option<i64>,
}

fn find_seg(segs: &[(u128, u128)], v: u128) -> Option<usize> {
    let i = segs.partition_point(|s| s.0 <= v).checked_sub(1)?;
    segs.get(i).filter(|s| v <= s.1).map(|_| i)
}

/// The table of the range holding `v` among peer `i`'s ranges.
fn find_range<T: Copy + Ord>(ranges: &[(T, T, u32)], at: &[u32], i: usize, v: T) -> Option<u32> {
    let (lo, hi) = (*at.get(i)? as usize, *at.get(i + 1)? as usize);
    let mine = ranges.get(lo..hi)?;
    let k = mine.partition_point(|r| r.0 <= v).checked_sub(1)?;
    mine.get(k).filter(|r| v <= r.1).map(|r| r.2)
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
    pub fn ingress(&self, src: NodeId, dst: IpAddr, proto: IpProtocol, port: u16) -> Verdict {
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
    pub fn egress(&self, via: NodeId, dst: IpAddr, proto: IpProtocol, port: u16) -> Verdict {
        let table = match dst {
            IpAddr::V4(a) => find_range(
                &self.egress_v4,
                &self.egress_v4_at,
                via.index(),
                u32::from(a),
            ),
            IpAddr::V6(a) => find_range(
                &self.egress_v6,
                &self.egress_v6_at,
                via.index(),
                u128::from(a),
            ),
        };
        match table {
            Some(t) => self.port_lookup(t, proto, port),
            None => Verdict::DEFAULT_DENY,
        }
    }

    fn port_lookup(&self, table: u32, proto: IpProtocol, port: u16) -> Verdict {
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
            + self.egress_v4.capacity() * size_of::<(u32, u32, u32)>()
            + self.egress_v6.capacity() * size_of::<(u128, u128, u32)>()
            + (self.egress_v4_at.capacity() + self.egress_v6_at.capacity()) * 4
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
        let v4 = self
            .egress_v4
            .iter()
            .map(|s| (false, u128::from(s.0), u128::from(s.1), s.2));
        let v6 = self.egress_v6.iter().map(|s| (true, s.0, s.1, s.2));
        let vias =
            |at: &[u32], k: usize| at.partition_point(|x| *x as usize <= k).saturating_sub(1);
        for (k, (is_v6, lo, hi, table)) in v4.enumerate().chain(v6.enumerate()) {
            let via = if is_v6 {
                vias(&self.egress_v6_at, k)
            } else {
                vias(&self.egress_v4_at, k)
            };
            let allowed = self.allowed_ranges(table);
            if !allowed.is_empty() {
                for n in range_to_nets(is_v6, (lo, hi)) {
                    out.push((NodeId(via as u32), n, allowed.clone()));
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
                    e.proto.max_port()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_the_fewest_cidrs() {
        let show = |v6, lo, hi| {
            range_to_nets(v6, (lo, hi))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(show(false, 0x0a00_0000, 0x0a00_00ff), ["10.0.0.0/24"]);
        assert_eq!(
            show(false, 0x0a00_0001, 0x0a00_0006),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(show(false, 0, 0xffff_ffff), ["0.0.0.0/0"]);
        assert_eq!(show(true, 0, u128::MAX), ["::/0"]);
    }
}
