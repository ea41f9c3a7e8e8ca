//! The device: our static identity, the peer table, and the types its API
//! speaks. Every datagram, tunnel packet and timer tick is dispatched from
//! here to the right peer: datagrams in `receive`, tunnel packets, timers
//! and transmits in `send`, the handshake gate in `gate`.

mod gate;
mod receive;
mod send;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cookie::CookieChecker;
use super::crypto::tai64n;
use super::handshake::{static_shared, Identity, StaticShared, TIMESTAMP_LEN};
use super::peer::{Peer, PeerConfig, PeerId, PeerStats};
use super::ratelimit::{Budget, LoadMonitor, RateLimiter};
use super::Entropy;
use crate::keys::{PrivateKey, PublicKey};

/// Tunable limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Handshake messages per second beyond which cookies are demanded.
    pub handshake_load_threshold: u32,
    /// Packets kept per peer while its handshake is in flight.
    pub queue_limit: usize,
    /// Under load: cookie replies per second in all (only ever sent towards
    /// addresses associated with a peer).
    pub cookie_replies_per_second: u32,
    /// Under load: handshake messages per second, in all, processed from
    /// sources no peer is associated with (never answered unless they
    /// authenticate as a peer).
    pub stranger_handshakes_per_second: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_load_threshold: 1000,
            queue_limit: 128,
            cookie_replies_per_second: 1000,
            stranger_handshakes_per_second: 100,
        }
    }
}

/// What a datagram turned out to be.
#[derive(Debug)]
pub enum Received<'d, 'r> {
    /// A decrypted inner IP packet from `peer`, trimmed to its IP length,
    /// borrowed from the datagram. Cryptokey routing (is the source address
    /// the peer's?) is the caller's.
    Packet { peer: PeerId, packet: &'d [u8] },
    /// Send these bytes, borrowed from the reply buffer, back to the
    /// datagram's source (a handshake response or a cookie reply).
    Reply(&'r [u8]),
    /// Consumed (keepalive, handshake completion, cookie). Poll for transmits.
    Done,
}

/// Why a datagram produced nothing. Every drop is silent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    Malformed,
    /// mac1 did not match our key: the sender does not know who we are.
    Mac1,
    /// The initiator's key is not one of our peers: cloaked.
    UnknownPeer,
    RateLimited,
    UnknownIndex,
    /// Handshake timestamp not newer than the last, or counter replayed.
    Replay,
    /// Initiations from this peer arrive too fast.
    Flood,
    /// Authentication failed.
    Crypto,
    /// The keypair is too old to use.
    Expired,
    /// The decrypted payload is not an IP packet of consistent length.
    BadInner,
}

/// Why a tunnel packet was not sent right away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    UnknownPeer,
    /// No session and no endpoint to start one: the peer must contact us first.
    NoEndpoint,
    /// The buffer has no room for header, padding and tag.
    BufferTooSmall,
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub peer: PeerId,
    pub endpoint: SocketAddr,
    pub len: usize,
}

/// Outcome of [`Device::encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// `buf[..len]` is ready to send to `endpoint`.
    Now(Transmit),
    /// Queued until a handshake completes; poll for transmits.
    Queued,
}

pub struct Device {
    private: PrivateKey,
    public: PublicKey,
    config: Config,
    peers: Vec<Option<Peer>>,
    by_key: HashMap<PublicKey, PeerId>,
    static_shared: StaticShared,
    /// Our receiver indices (keypairs and pending handshakes) to their peer.
    indices: HashMap<u32, PeerId>,
    cookies: CookieChecker,
    load: LoadMonitor,
    /// Per-source limit of handshakes from strangers under load.
    limiter: RateLimiter,
    /// Source addresses associated with a peer (see `gate`).
    known: gate::KnownSources,
    /// Per-source limits of mac2-valid handshakes and of cookie replies,
    /// for known sources only (so strangers cannot crowd them out).
    known_limiter: RateLimiter,
    reply_limiter: RateLimiter,
    reply_budget: Budget,
    stranger_budget: Budget,
    entropy: Box<dyn Entropy>,
    /// Peers with something to send, drained by `poll_transmit`.
    pending: VecDeque<PeerId>,
    /// Anchors the monotonic `now` the caller passes to wall-clock time,
    /// for handshake timestamps.
    epoch: (Instant, Duration),
    last_gc: Option<Instant>,
    /// Packets dropped from a full queue while waiting for a handshake.
    queue_dropped: u64,
}

impl Device {
    /// Packets dropped, since start, because a peer's queue was full while
    /// its handshake was in flight (the oldest go first).
    pub fn queue_dropped(&self) -> u64 {
        self.queue_dropped
    }

    /// `now` and `wall` are the caller's clocks at the same moment; the
    /// device never reads a clock itself.
    pub fn new(
        private: PrivateKey,
        config: Config,
        entropy: Box<dyn Entropy>,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let public = private.public_key();
        let budgets = (
            Budget::new(config.cookie_replies_per_second),
            Budget::new(config.stranger_handshakes_per_second),
        );
        Device {
            cookies: CookieChecker::new(&public),
            load: LoadMonitor::new(config.handshake_load_threshold),
            private,
            public,
            config,
            peers: Vec::new(),
            by_key: HashMap::new(),
            static_shared: StaticShared::default(),
            indices: HashMap::new(),
            limiter: RateLimiter::default(),
            known: gate::KnownSources::default(),
            known_limiter: RateLimiter::default(),
            reply_limiter: RateLimiter::default(),
            reply_budget: budgets.0,
            stranger_budget: budgets.1,
            entropy,
            pending: VecDeque::new(),
            epoch: (now, wall.duration_since(UNIX_EPOCH).unwrap_or_default()),
            last_gc: None,
            queue_dropped: 0,
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Adds a peer, or updates the configuration of an existing one without
    /// disturbing its session (a policy reload with unchanged keys).
    pub fn upsert_peer(&mut self, config: PeerConfig) -> PeerId {
        if let Some(e) = config.endpoint {
            self.known.insert(e.ip());
        }
        if let Some(&id) = self.by_key.get(&config.public_key) {
            if let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) {
                if peer.reconfigure(config) {
                    self.known.mark_dirty();
                }
            }
            return id;
        }
        let key = config.public_key;
        let shared = static_shared(&self.private, &key);
        std::sync::Arc::make_mut(&mut self.static_shared).insert(key, shared);
        let slot = self
            .peers
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.peers.len());
        let id = PeerId(slot as u32);
        let peer = Some(Peer::new(config));
        match self.peers.get_mut(slot) {
            Some(s) => *s = peer,
            None => self.peers.push(peer),
        }
        self.by_key.insert(key, id);
        id
    }

    /// Removes a peer and forgets its keys at once.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::take) else {
            return false;
        };
        for index in peer.indices() {
            self.indices.remove(&index);
        }
        self.by_key.remove(peer.public_key());
        std::sync::Arc::make_mut(&mut self.static_shared).remove(peer.public_key());
        self.pending.retain(|p| *p != id);
        self.known.mark_dirty();
        true
    }

    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| PeerId(i as u32))
    }

    pub fn peer_key(&self, id: PeerId) -> Option<PublicKey> {
        self.peer(id).map(|p| *p.public_key())
    }

    pub fn peer_stats(&self, id: PeerId, now: Instant) -> Option<PeerStats> {
        self.peer(id).map(|p| p.stats(now))
    }

    /// The edge saw a backlog of handshake work: demand cookies for a while.
    pub fn report_load(&mut self, now: Instant) {
        self.load.force(now);
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            private: &self.private,
            public: &self.public,
            static_shared: &self.static_shared,
        }
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(id.0 as usize).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    fn new_index(&mut self, id: PeerId) -> u32 {
        loop {
            let index = self.entropy.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.indices.entry(index) {
                e.insert(id);
                return index;
            }
        }
    }

    fn timestamp(&self, now: Instant) -> [u8; TIMESTAMP_LEN] {
        let wall = self.epoch.1 + now.saturating_duration_since(self.epoch.0);
        // Rounded down (as the kernel does) so timestamps do not leak precise
        // clock readings; retries are seconds apart, far coarser than this.
        let coarse = Duration::new(wall.as_secs(), wall.subsec_nanos() & !((1 << 24) - 1));
        tai64n(coarse)
    }
}
