//! Remembering passed first fragments, so later fragments can follow.
//!
//! A later fragment has no transport header: no rule can judge it. It is
//! forwarded only if the first fragment of the same datagram (same peer,
//! addresses, protocol and identification) was forwarded as part of a
//! tracked flow, within [`super::Timeouts::fragment`], and that flow still
//! exists. Later fragments that arrive before their first fragment are
//! dropped; the sender's retransmission recovers, and tunnels rarely
//! reorder. Overlapping fragments that would rewrite the first fragment's
//! transport header are left to the receiving host's reassembly, which
//! discards overlaps (RFC 5722, and Linux for IPv4 since 4.19); the
//! classifier already refuses the TCP offsets that could do it.

use std::net::IpAddr;
use std::time::Instant;

use super::key::addr_bytes;
use super::{Direction, PeerId, RuleId};
use crate::net::IpProtocol;
use crate::wire::classify::PacketInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    peer: u32,
    ident: u32,
    protocol: IpProtocol,
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
}

impl FragKey {
    /// The key of a fragment; `None` if the packet is not one.
    pub(crate) fn of(peer: PeerId, info: &PacketInfo) -> Option<FragKey> {
        Some(FragKey {
            peer: peer.0,
            ident: info.fragment_ident()?,
            protocol: info.protocol,
            v6: matches!(info.src, IpAddr::V6(_)),
            src: addr_bytes(info.src),
            dst: addr_bytes(info.dst),
        })
    }
}

/// A passed first fragment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frag {
    /// Slot and generation of the owning flow, to notice it is gone.
    pub(crate) owner: u32,
    pub(crate) owner_generation: u32,
    pub(crate) rule: RuleId,
    pub(crate) direction: Direction,
    pub(crate) first_seen: Instant,
}
