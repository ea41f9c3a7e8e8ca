//! Tracker sizing and timeouts.

use std::time::Duration;

/// How long an idle flow is kept, by state. A flow's timer restarts on
/// every packet that matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP: SYN seen, no SYN-ACK yet. Short, so scans and SYN floods do not
    /// hold slots.
    pub tcp_syn_sent: Duration,
    /// TCP: SYN-ACK seen, handshake not complete; also a connection picked
    /// up mid-stream that has not yet seen a reply.
    pub tcp_syn_recv: Duration,
    /// TCP: handshake complete.
    pub tcp_established: Duration,
    /// TCP: one side has sent FIN.
    pub tcp_fin_wait: Duration,
    /// TCP: both sides have sent FIN.
    pub tcp_time_wait: Duration,
    /// TCP: a RST was seen. Kept briefly so a retransmitted RST still passes.
    pub tcp_close: Duration,
    /// UDP: nothing seen from the responder yet.
    pub udp_unreplied: Duration,
    /// UDP: the responder has answered.
    pub udp_replied: Duration,
    /// ICMP echo (ping) exchanges.
    pub icmp_echo: Duration,
    /// Other protocols, nothing seen from the responder yet.
    pub other_unreplied: Duration,
    /// Other protocols, the responder has answered.
    pub other_replied: Duration,
    /// How long after its first fragment the later fragments of a datagram
    /// are let through (Linux's `ipfrag_time` is also 30 s). Not refreshed.
    pub fragment: Duration,
}

impl Default for Timeouts {
    /// Close to Linux conntrack's defaults, except ESTABLISHED: 2 hours
    /// rather than 5 days, which matches TCP keepalive's default interval so
    /// a live connection with keepalives never expires.
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: Duration::from_secs(30),
            tcp_syn_recv: Duration::from_secs(30),
            tcp_established: Duration::from_secs(2 * 3600 + 5 * 60),
            tcp_fin_wait: Duration::from_secs(120),
            tcp_time_wait: Duration::from_secs(120),
            tcp_close: Duration::from_secs(10),
            udp_unreplied: Duration::from_secs(30),
            udp_replied: Duration::from_secs(180),
            icmp_echo: Duration::from_secs(30),
            other_unreplied: Duration::from_secs(30),
            other_replied: Duration::from_secs(600),
            fragment: Duration::from_secs(30),
        }
    }
}

/// Tracker configuration, fixed at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most flows tracked at once. All memory is allocated up front:
    /// roughly 270 bytes per flow
    /// (slab slot plus hash index).
    pub capacity: usize,
    /// Most flows one peer may hold; `None`: half the capacity. A peer at
    /// its share admits a new flow only by evicting one of its own, so one
    /// peer cannot push another's connections out.
    pub max_per_peer: Option<usize>,
    /// Most fragmented datagrams tracked at once.
    pub fragment_capacity: usize,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

impl Config {
    /// The per-peer share in force.
    pub fn per_peer(&self) -> usize {
        self.max_per_peer.unwrap_or(self.capacity / 2).max(1)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 65536,
            max_per_peer: None,
            fragment_capacity: 1024,
            timeouts: Timeouts::default(),
        }
    }
}
