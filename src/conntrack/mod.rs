//! A sans-IO connection tracker for the enforcement path.
//!
//! # Who calls what
//!
//! The node classifies every packet ([`crate::wire::classify()`]) and, in
//! both directions, calls [`Conntrack::lookup`]:
//!
//! - *outbound*: a packet read from the local TUN device, about to be
//!   encrypted to the peer that cryptokey routing chose;
//! - *inbound*: a packet just decrypted from a peer (after the check that
//!   its inner source address belongs to that peer).
//!
//! Then, by [`Match`]:
//!
//! - [`Match::Original`], [`Match::Reply`], [`Match::Related`],
//!   [`Match::Fragment`]: part of an admitted flow; forward it without
//!   consulting the policy.
//! - [`Match::New`]: evaluate the policy. If it allows the packet, forward
//!   it and call [`Conntrack::admit`] with the id of the rule that allowed
//!   it; if it denies, drop (or reject) and do not admit.
//! - [`Match::Invalid`]: drop without consulting the policy. This covers
//!   later fragments of datagrams whose first fragment was not passed (they
//!   carry no ports, so no rule can judge them), ICMP errors about flows we
//!   do not track, and TCP segments that contradict the connection's state
//!   (a SYN from the responder's side).
//!
//! Periodically (say once a second, or at [`Conntrack::next_expiry`]) call
//! [`Conntrack::expire`]. On a policy reload call [`Conntrack::retain`] with
//! a closure that re-evaluates each entry against the new policy, and when a
//! peer is removed or quarantined call [`Conntrack::remove_peer`].
//!
//! Time is always an argument; the tracker never reads a clock. The tables
//! are allocated once, in [`Conntrack::new`], and the per-packet calls
//! (`lookup`, `admit`, `expire`) never allocate; `retain`, a reload-time
//! operation, builds a scratch list of the entries it removes.
//!
//! # Capacity
//!
//! Each peer may hold at most its share of the table
//! ([`Config::max_per_peer`], half the capacity by default). A peer at its
//! share admits a new flow only by evicting one of its own: an expired one,
//! else an unassured one, else the least recently seen of the few it looks
//! at. So one peer opening flows without end recycles its own slots and
//! cannot push another peer's connections out (issue 9).
//!
//! When the whole table is full and a new flow is admitted, one entry is
//! evicted: an expired one if any; otherwise the unassured entry (a TCP
//! connection not yet established or already closing, a UDP or other flow
//! never answered, an ICMP echo) closest to expiry; only if every entry is
//! assured (established TCP, answered UDP or other), the assured entry
//! closest to expiry — judged by when it was last seen, not when it was
//! admitted, so an old but active connection is spared.

mod config;
pub mod drive;
mod ended;
mod entry;
mod expiry;
mod frag;
mod key;
mod reload;
mod state;
mod table;
mod tracker;

pub use config::{Config, Timeouts};
pub use ended::{Closed, EndCause, Ended};
pub use entry::Entry;
pub use state::{FlowState, TcpState};
pub use tracker::Conntrack;

/// Opaque identifier of a peer, chosen by the node (e.g. its index in the
/// compiled policy). Part of every flow key: flows of different peers never
/// match each other, even with identical addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// Identifier of the policy rule that admitted a flow, kept so a reload can
/// tell which flows a changed rule affects and audit logs can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

/// Which way a packet crosses this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a peer, decrypted, towards the local TUN device.
    Inbound,
    /// From the local TUN device towards a peer.
    Outbound,
}

impl Direction {
    /// The other direction.
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Inbound => Direction::Outbound,
            Direction::Outbound => Direction::Inbound,
        }
    }
}

/// The tracker's verdict on a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Match {
    /// Travels like the packet that opened the flow. Forward.
    Original(RuleId),
    /// Travels against it: return traffic. Forward.
    Reply(RuleId),
    /// An ICMP error about a tracked flow, addressed to the endpoint that
    /// sent the packet it quotes. Forward.
    Related(RuleId),
    /// A later fragment of a datagram whose first fragment was forwarded.
    /// Forward.
    Fragment(RuleId),
    /// Not part of any flow: ask the policy, then [`Conntrack::admit`].
    New,
    /// Drop without asking the policy.
    Invalid,
}

impl Match {
    /// Whether the packet may be forwarded without consulting the policy.
    pub fn is_tracked(self) -> bool {
        matches!(
            self,
            Match::Original(_) | Match::Reply(_) | Match::Related(_) | Match::Fragment(_)
        )
    }

    /// The rule of the flow the packet belongs to.
    pub fn rule(self) -> Option<RuleId> {
        match self {
            Match::Original(r) | Match::Reply(r) | Match::Related(r) | Match::Fragment(r) => {
                Some(r)
            }
            Match::New | Match::Invalid => None,
        }
    }
}

/// Why [`Conntrack::admit`] created no entry. The packet was allowed by the
/// policy and may still be forwarded; it just opens no flow, so the next
/// such packet is judged by the policy again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotTracked {
    /// ICMP errors and informational ICMP, echo replies without a request,
    /// TCP RST and SYN-ACK without a connection, and later fragments never
    /// open flows.
    Stateless,
}

/// Event counters since construction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls to `lookup`.
    pub lookups: u64,
    /// Lookups that matched in the original direction.
    pub original: u64,
    /// Lookups that matched in the reply direction.
    pub reply: u64,
    /// ICMP errors related to a tracked flow.
    pub related: u64,
    /// Later fragments of passed datagrams.
    pub fragments: u64,
    /// Lookups that found no flow.
    pub new: u64,
    /// Lookups that said drop.
    pub invalid: u64,
    /// Flows created by `admit`.
    pub admitted: u64,
    /// Calls to `admit` that created no flow.
    pub not_tracked: u64,
    /// Flows removed because they timed out.
    pub expired: u64,
    /// Flows removed to make room.
    pub evicted: u64,
    /// Flows removed by `retain` or `remove_peer`.
    pub removed: u64,
    /// Fragment entries dropped to make room.
    pub fragments_evicted: u64,
}
