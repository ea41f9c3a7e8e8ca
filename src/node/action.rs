//! What the engine asks the I/O edge to do with one packet: the single
//! result type of the packet path ([`Action`]), and why a packet went
//! nowhere ([`DropReason`]).
//!
//! Every slice is borrowed from a buffer the caller passed in (or from the
//! engine's own scratch space for replies it builds), so the edge sends or
//! writes it as is and nothing is copied or parsed twice.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::tunnel::Dropped;
use crate::wire::PacketInfo;

/// One encrypted datagram for the UDP underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Where to send it.
    pub to: SocketAddr,
    /// The whole datagram (WireGuard message).
    pub bytes: &'a [u8],
}

/// What to do with the outcome of [`super::Engine::outbound`],
/// [`super::Engine::inbound`] or [`super::Engine::poll_transmit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send this datagram over UDP: an encrypted packet, a handshake
    /// answer or a `reject` reply to a peer.
    Send(Datagram<'a>),
    /// Hand this IP packet to the local side (TUN device or userspace
    /// stack): a decrypted packet from a peer, or the refusal of a local
    /// packet the policy denies. `info` is the engine's classification of
    /// it, when it has one, so the local side need not parse it again.
    Deliver {
        packet: &'a [u8],
        info: Option<PacketInfo>,
    },
    /// Nothing to do now: consumed (keepalive, handshake), or queued until
    /// a handshake completes (poll for transmits).
    Nothing,
    /// Dropped and counted; nothing is ever answered for it.
    Dropped(DropReason),
}

/// Why a packet went nowhere. Counted, never answered (unless a rule says
/// `reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The tunnel engine refused the datagram (see [`Dropped`]).
    Tunnel(Dropped),
    /// Not an IP packet we can classify.
    Malformed,
    /// No peer owns the destination.
    NoRoute,
    /// The inner source address does not belong to the sending peer.
    Spoofed,
    /// The destination is not this node (we do not relay between peers).
    NotForUs,
    /// The connection tracker found the packet inconsistent with its flow.
    Invalid,
    /// The policy refused the new flow.
    Denied,
    /// The peer has no endpoint yet: it must contact us first.
    NoEndpoint,
}

/// Drop counters, by reason, for status output.
pub type DropCounters = HashMap<DropReason, u64>;
