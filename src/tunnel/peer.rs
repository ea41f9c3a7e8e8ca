//! Everything the device remembers about one peer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::cookie::CookieJar;
use super::handshake::{InitiatorHandshake, TIMESTAMP_LEN};
use super::session::Keypair;
use super::timers::Timers;
use crate::keys::{PresharedKey, PublicKey};

/// A peer's handle inside one [`super::Device`]; stable while the peer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// What the caller configures for a peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: PresharedKey,
    /// Where to send handshakes; `None` waits to be contacted.
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<Duration>,
}

impl PeerConfig {
    pub fn new(public_key: PublicKey) -> Self {
        PeerConfig {
            public_key,
            preshared_key: PresharedKey::none(),
            endpoint: None,
            persistent_keepalive: None,
        }
    }
}

/// Counters for status output.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<Instant>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Transport data messages (keepalives included) received and sent.
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub handshakes: u64,
    /// Whether a keypair can send right now.
    pub has_session: bool,
}

/// An initiation in flight. The ephemeral seed and timestamp are kept so a
/// forged response, which spoils snow's state, costs us a rebuild instead of
/// the whole handshake.
pub(crate) struct PendingHandshake {
    pub state: InitiatorHandshake,
    pub local_index: u32,
    pub seed: Zeroizing<[u8; 32]>,
    pub timestamp: [u8; TIMESTAMP_LEN],
}

pub(crate) struct Peer {
    pub config: PeerConfig,
    /// The endpoint the configuration named (the policy file's), which
    /// `config.endpoint` forgets when the peer roams.
    pub configured_endpoint: Option<SocketAddr>,
    /// A cookie reply already made us resend the pending initiation once.
    pub cookie_retried: bool,
    pub jar: CookieJar,
    pub handshake: Option<PendingHandshake>,
    pub last_initiation_sent: Option<Instant>,
    pub attempts: u32,
    pub last_timestamp: Option<[u8; TIMESTAMP_LEN]>,
    pub last_initiation_received: Option<Instant>,
    pub current: Option<Keypair>,
    pub previous: Option<Keypair>,
    pub next: Option<Keypair>,
    pub timers: Timers,
    /// Packets waiting for a session, oldest first.
    pub queue: VecDeque<Vec<u8>>,
    /// Emptied queue buffers, reused so a busy peer stops allocating.
    pub spare: Vec<Vec<u8>>,
    pub want_initiation: bool,
    pub want_keepalive: bool,
    pub in_pending: bool,
    /// A rekey close to REJECT_AFTER_TIME was already asked for.
    pub lastminute_handshake: bool,
    pub stats: PeerStats,
}

impl Peer {
    pub fn new(config: PeerConfig) -> Self {
        let jar = CookieJar::new(&config.public_key);
        let timers = Timers::with_persistent_keepalive(config.persistent_keepalive);
        let stats = PeerStats {
            endpoint: config.endpoint,
            ..PeerStats::default()
        };
        Peer {
            configured_endpoint: config.endpoint,
            cookie_retried: false,
            config,
            jar,
            handshake: None,
            last_initiation_sent: None,
            attempts: 0,
            last_timestamp: None,
            last_initiation_received: None,
            current: None,
            previous: None,
            next: None,
            timers,
            queue: VecDeque::new(),
            spare: Vec::new(),
            want_initiation: false,
            want_keepalive: false,
            in_pending: false,
            lastminute_handshake: false,
            stats,
        }
    }

    /// Every local index this peer owns, to remove from the device's table.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        [
            self.current.as_ref(),
            self.previous.as_ref(),
            self.next.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|k| k.local_index)
        .chain(self.handshake.as_ref().map(|h| h.local_index))
    }

    /// Records where authenticated traffic came from; true if it moved.
    pub fn set_endpoint(&mut self, addr: SocketAddr) -> bool {
        let moved = self.config.endpoint != Some(addr);
        self.config.endpoint = Some(addr);
        self.stats.endpoint = Some(addr);
        moved
    }

    /// Queues a packet for after the handshake, dropping the oldest when full.
    pub fn enqueue(&mut self, packet: &[u8], limit: usize) -> bool {
        let mut dropped = false;
        while self.queue.len() >= limit.max(1) {
            if let Some(old) = self.queue.pop_front() {
                self.spare.push(old);
            }
            dropped = true;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.queue.push_back(buf);
        !dropped
    }

    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 16 {
            self.spare.push(buf);
        }
    }

    /// Forgets every key and pending handshake (the zero-keys timer, removal).
    pub fn zero_keys(&mut self) {
        self.current = None;
        self.previous = None;
        self.next = None;
        self.handshake = None;
        self.timers.keys_zeroed();
        self.lastminute_handshake = false;
    }
}
