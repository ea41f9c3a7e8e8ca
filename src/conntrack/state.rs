//! Per-flow state and its transitions.
//!
//! TCP is tracked by flags only, the way a stateful filter needs it: enough
//! to know when a connection was opened properly, is established, and is
//! closing, so each phase gets its own timeout. Sequence numbers and windows
//! are not checked: every packet has already been authenticated as coming
//! from the peer it claims, and a peer injecting into its own flows gains
//! nothing the policy did not already grant it.

use std::time::Duration;

use super::config::Timeouts;
use crate::wire::tcp::TcpFlags;

/// The state of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// The originator sent SYN.
    SynSent,
    /// The responder answered SYN-ACK.
    SynRecv,
    /// Picked up mid-stream (first packet had no SYN); becomes established
    /// once the other side answers.
    MidStream,
    /// Handshake complete.
    Established,
    /// One side sent FIN.
    FinWait {
        /// Whether it was the originator.
        from_original: bool,
    },
    /// Both sides sent FIN.
    TimeWait,
    /// A RST was seen.
    Close,
}

/// The state of a tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// A TCP connection.
    Tcp(TcpState),
    /// A UDP flow.
    Udp {
        /// Whether the responder has sent anything.
        replied: bool,
    },
    /// An ICMP echo exchange.
    IcmpEcho {
        /// Whether a reply has been seen.
        replied: bool,
    },
    /// Any other protocol, keyed by addresses alone.
    Other {
        /// Whether the responder has sent anything.
        replied: bool,
    },
}

/// Timeout classes: one recency list each, so a list's head always expires
/// first. The numbering is the list index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    SynSent = 0,
    SynRecv,
    Established,
    FinWait,
    TimeWait,
    Close,
    UdpUnreplied,
    UdpReplied,
    IcmpEcho,
    OtherUnreplied,
    OtherReplied,
}

pub(crate) const CLASSES: usize = 11;

pub(crate) const ALL_CLASSES: [Class; CLASSES] = [
    Class::SynSent,
    Class::SynRecv,
    Class::Established,
    Class::FinWait,
    Class::TimeWait,
    Class::Close,
    Class::UdpUnreplied,
    Class::UdpReplied,
    Class::IcmpEcho,
    Class::OtherUnreplied,
    Class::OtherReplied,
];

impl Class {
    pub(crate) fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            Class::SynSent => t.tcp_syn_sent,
            Class::SynRecv => t.tcp_syn_recv,
            Class::Established => t.tcp_established,
            Class::FinWait => t.tcp_fin_wait,
            Class::TimeWait => t.tcp_time_wait,
            Class::Close => t.tcp_close,
            Class::UdpUnreplied => t.udp_unreplied,
            Class::UdpReplied => t.udp_replied,
            Class::IcmpEcho => t.icmp_echo,
            Class::OtherUnreplied => t.other_unreplied,
            Class::OtherReplied => t.other_replied,
        }
    }

    /// Assured flows have proven two-way traffic and are evicted only when
    /// no other entry can be. This is what stops a flood of new flows (SYNs,
    /// unanswered UDP) from pushing working connections out of a full table.
    pub(crate) fn assured(self) -> bool {
        matches!(
            self,
            Class::Established | Class::UdpReplied | Class::OtherReplied
        )
    }
}

impl FlowState {
    pub(crate) fn class(self) -> Class {
        match self {
            FlowState::Tcp(TcpState::SynSent) => Class::SynSent,
            FlowState::Tcp(TcpState::SynRecv | TcpState::MidStream) => Class::SynRecv,
            FlowState::Tcp(TcpState::Established) => Class::Established,
            FlowState::Tcp(TcpState::FinWait { .. }) => Class::FinWait,
            FlowState::Tcp(TcpState::TimeWait) => Class::TimeWait,
            FlowState::Tcp(TcpState::Close) => Class::Close,
            FlowState::Udp { replied: false } => Class::UdpUnreplied,
            FlowState::Udp { replied: true } => Class::UdpReplied,
            FlowState::IcmpEcho { .. } => Class::IcmpEcho,
            FlowState::Other { replied: false } => Class::OtherUnreplied,
            FlowState::Other { replied: true } => Class::OtherReplied,
        }
    }
}

/// What a TCP segment does to a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpStep {
    /// Accept the segment; the connection is now in this state.
    To(TcpState),
    /// Drop the segment; the connection is unchanged.
    Invalid,
    /// A new SYN reuses the ports of a connection that is over: forget the
    /// old one and judge the SYN as a new flow.
    Reopen,
}

/// The transition for a segment travelling in the original direction or
/// not. A SYN from the responder's side is never accepted on an existing
/// connection: it would be a new connection in the reverse direction, which
/// the policy has not approved (simultaneous open is not supported).
pub(crate) fn tcp_step(state: TcpState, original: bool, flags: TcpFlags) -> TcpStep {
    use TcpState::*;
    let syn_only = flags.is_syn_only();
    let syn_ack = flags.contains(TcpFlags::SYN | TcpFlags::ACK);
    let fin = flags.contains(TcpFlags::FIN);
    if syn_only && matches!(state, TimeWait | Close) {
        return TcpStep::Reopen;
    }
    if flags.contains(TcpFlags::RST) {
        return TcpStep::To(Close);
    }
    if (syn_only && !original) || (syn_ack && original) {
        return TcpStep::Invalid;
    }
    let next = match state {
        SynSent if original => SynSent,
        SynSent if syn_ack => SynRecv,
        SynSent => return TcpStep::Invalid,
        _ if syn_only && state != SynRecv => return TcpStep::Invalid,
        SynRecv if fin => FinWait {
            from_original: original,
        },
        SynRecv if original && flags.contains(TcpFlags::ACK) && !flags.contains(TcpFlags::SYN) => {
            Established
        }
        SynRecv => SynRecv,
        MidStream if syn_ack => return TcpStep::Invalid,
        MidStream if original => MidStream,
        MidStream | Established if fin => FinWait {
            from_original: original,
        },
        MidStream | Established => Established,
        FinWait { from_original } if fin && from_original != original => TimeWait,
        s @ (FinWait { .. } | TimeWait | Close) => s,
    };
    TcpStep::To(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    const SYN: TcpFlags = TcpFlags::SYN;
    const ACK: TcpFlags = TcpFlags::ACK;
    const FIN: TcpFlags = TcpFlags::FIN;
    const RST: TcpFlags = TcpFlags::RST;

    #[test]
    fn handshake_and_close() {
        assert_eq!(tcp_step(SynSent, true, SYN), TcpStep::To(SynSent));
        assert_eq!(tcp_step(SynSent, false, SYN | ACK), TcpStep::To(SynRecv));
        assert_eq!(tcp_step(SynRecv, true, ACK), TcpStep::To(Established));
        assert_eq!(tcp_step(Established, false, ACK), TcpStep::To(Established));
        let fw = FinWait {
            from_original: true,
        };
        assert_eq!(tcp_step(Established, true, FIN | ACK), TcpStep::To(fw));
        assert_eq!(tcp_step(fw, true, ACK), TcpStep::To(fw));
        assert_eq!(tcp_step(fw, false, FIN | ACK), TcpStep::To(TimeWait));
        assert_eq!(tcp_step(TimeWait, true, ACK), TcpStep::To(TimeWait));
        assert_eq!(tcp_step(TimeWait, true, SYN), TcpStep::Reopen);
    }

    #[test]
    fn refusals() {
        // The responder may not open a connection of its own on these ports.
        assert_eq!(tcp_step(SynSent, false, SYN), TcpStep::Invalid);
        assert_eq!(tcp_step(Established, false, SYN), TcpStep::Invalid);
        // Nor answer before it has been asked.
        assert_eq!(tcp_step(SynSent, false, ACK), TcpStep::Invalid);
        // The originator never sends SYN-ACK.
        assert_eq!(tcp_step(Established, true, SYN | ACK), TcpStep::Invalid);
        assert_eq!(tcp_step(Established, false, RST), TcpStep::To(Close));
        assert_eq!(tcp_step(Close, true, ACK), TcpStep::To(Close));
        assert_eq!(tcp_step(MidStream, true, ACK), TcpStep::To(MidStream));
        assert_eq!(tcp_step(MidStream, false, ACK), TcpStep::To(Established));
    }
}
