//! Tracked flows and the read-only view of them given to callers.

use std::net::IpAddr;
use std::time::Instant;

use super::key::{bytes_addr, Key, Orient};
use super::state::FlowState;
use super::{Direction, PeerId, RuleId};
use crate::net::IpProtocol;

/// What the tracker stores per flow, next to its key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn {
    /// Orientation of the packet that opened the flow.
    pub(crate) orig: Orient,
    /// Direction of that packet across this node.
    pub(crate) initiator: Direction,
    pub(crate) state: FlowState,
    pub(crate) rule: RuleId,
    pub(crate) created: Instant,
    pub(crate) last_seen: Instant,
    /// `last_seen` as of when the entry was last placed at its list's
    /// tail; lists are ordered by it (see `Conntrack::expire`).
    pub(crate) queued: Instant,
    /// Packets and bytes, [original, reply].
    pub(crate) packets: [u64; 2],
    pub(crate) bytes: [u64; 2],
}

/// A tracked flow, as seen by [`super::Conntrack::retain`] and
/// [`super::Conntrack::iter`]: everything needed to re-evaluate it against
/// a new policy, plus its counters.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub(crate) key: &'a Key,
    pub(crate) conn: &'a Conn,
}

impl Entry<'_> {
    /// The peer the flow runs to or from.
    pub fn peer(&self) -> PeerId {
        PeerId(self.key.peer)
    }

    /// Protocol.
    pub fn protocol(&self) -> IpProtocol {
        self.key.protocol
    }

    /// Direction across this node of the packet that opened the flow:
    /// `Inbound` if the peer initiated it (this node's policy admitted it),
    /// `Outbound` if the local side did (the egress check admitted it).
    pub fn initiator(&self) -> Direction {
        self.conn.initiator
    }

    fn endpoints(&self) -> ((IpAddr, u16), (IpAddr, u16)) {
        let a = (bytes_addr(self.key.v6, self.key.a), self.key.a_port);
        let b = (bytes_addr(self.key.v6, self.key.b), self.key.b_port);
        match self.conn.orig {
            Orient::AtoB => (a, b),
            Orient::BtoA => (b, a),
        }
    }

    fn ported(&self) -> bool {
        let p = self.protocol();
        p == IpProtocol::TCP || p == IpProtocol::UDP
    }

    /// Address of the endpoint that opened the flow.
    pub fn src(&self) -> IpAddr {
        self.endpoints().0 .0
    }

    /// Address of the endpoint the flow was opened to: what the policy's
    /// destination matched.
    pub fn dst(&self) -> IpAddr {
        self.endpoints().1 .0
    }

    /// Source port, for TCP and UDP.
    pub fn src_port(&self) -> Option<u16> {
        self.ported().then(|| self.endpoints().0 .1)
    }

    /// Destination port, for TCP and UDP.
    pub fn dst_port(&self) -> Option<u16> {
        self.ported().then(|| self.endpoints().1 .1)
    }

    /// Echo identifier, for an ICMP echo flow.
    pub fn icmp_ident(&self) -> Option<u16> {
        matches!(self.conn.state, FlowState::IcmpEcho { .. }).then_some(self.key.a_port)
    }

    /// The rule that admitted the flow.
    pub fn rule(&self) -> RuleId {
        self.conn.rule
    }

    /// Current state.
    pub fn state(&self) -> FlowState {
        self.conn.state
    }

    /// When the flow was admitted.
    pub fn created(&self) -> Instant {
        self.conn.created
    }

    /// When a packet last matched it.
    pub fn last_seen(&self) -> Instant {
        self.conn.last_seen
    }

    /// Packets seen (original, reply), the admitting packet included.
    pub fn packets(&self) -> (u64, u64) {
        (self.conn.packets[0], self.conn.packets[1])
    }

    /// IP bytes seen (original, reply).
    pub fn bytes(&self) -> (u64, u64) {
        (self.conn.bytes[0], self.conn.bytes[1])
    }
}
