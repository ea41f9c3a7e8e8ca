//! The device: our static identity, all peers, and the dispatch of every
//! datagram, tunnel packet and timer tick to the right peer.

mod gate;
mod send;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::cookie::CookieChecker;
use super::crypto::tai64n;
use super::handshake::{
    static_shared, HandshakeError, Identity, InitiatorHandshake, ReceivedInitiation, StaticShared,
    TIMESTAMP_LEN,
};
use super::peer::{Peer, PeerConfig, PeerId, PeerStats, PendingHandshake};
use super::ratelimit::{Budget, LoadMonitor, RateLimiter};
use super::session::{Keypair, OpenError, REJECT_AFTER_TIME};
use super::timers::{KEEPALIVE_TIMEOUT, REKEY_TIMEOUT};
use super::Entropy;
use crate::keys::{PrivateKey, PublicKey};
use crate::wire::wg::{self, Message, COOKIE_REPLY_LEN, DATA_HEADER_LEN, RESPONSE_LEN};

/// Initiations from one peer closer together than this are dropped (flood guard).
const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);

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
                if peer.configured_endpoint != config.endpoint {
                    self.known.mark_dirty();
                }
                peer.configured_endpoint = config.endpoint;
                let endpoint = config.endpoint.or(peer.config.endpoint);
                peer.timers.persistent_interval = config.persistent_keepalive;
                peer.config = PeerConfig { endpoint, ..config };
                peer.stats.endpoint = endpoint;
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
        self.by_key.remove(&peer.config.public_key);
        std::sync::Arc::make_mut(&mut self.static_shared).remove(&peer.config.public_key);
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
        self.peer(id).map(|p| p.config.public_key)
    }

    pub fn peer_stats(&self, id: PeerId, now: Instant) -> Option<PeerStats> {
        self.peer(id).map(|p| PeerStats {
            has_session: p.current.as_ref().is_some_and(|k| k.can_send(now)),
            ..p.stats.clone()
        })
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

    fn mark_pending(pending: &mut VecDeque<PeerId>, id: PeerId, peer: &mut Peer) {
        if !peer.in_pending {
            peer.in_pending = true;
            pending.push_back(id);
        }
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

    /// Handles one UDP datagram from `src`. Data is decrypted in place in
    /// `datagram`; handshake answers are written to `reply` (≥ 92 bytes).
    pub fn handle_datagram<'d, 'r>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &'d mut [u8],
        reply: &'r mut [u8],
    ) -> Result<Received<'d, 'r>, Dropped> {
        let (receiver, counter) = match wg::parse(datagram).map_err(|_| Dropped::Malformed)? {
            Message::Data(d) => (d.receiver(), d.counter()),
            Message::Initiation(m) => return self.on_initiation(now, src, m, reply),
            Message::Response(m) => return self.on_response(now, src, m, reply),
            Message::CookieReply(m) => {
                let id = *self
                    .indices
                    .get(&m.receiver())
                    .ok_or(Dropped::UnknownIndex)?;
                let peer = self
                    .peers
                    .get_mut(id.0 as usize)
                    .and_then(Option::as_mut)
                    .ok_or(Dropped::UnknownIndex)?;
                if !peer
                    .jar
                    .consume_reply(now, &m.nonce(), &m.encrypted_cookie())
                {
                    return Err(Dropped::Crypto);
                }
                // The responder is under load and will now take our
                // address as proven: resend the initiation, with mac2, at
                // once rather than after REKEY_TIMEOUT — once per handshake,
                // so forged cookie replies cannot make us chatty.
                let pending = peer
                    .handshake
                    .as_ref()
                    .is_some_and(|h| h.local_index == m.receiver());
                if pending && !peer.cookie_retried {
                    peer.cookie_retried = true;
                    peer.last_initiation_sent = None;
                    peer.want_initiation = true;
                    Self::mark_pending(&mut self.pending, id, peer);
                }
                return Ok(Received::Done);
            }
        };
        let sealed = datagram
            .get_mut(DATA_HEADER_LEN..)
            .ok_or(Dropped::Malformed)?;
        self.on_data(now, src, receiver, counter, sealed)
    }

    fn on_initiation<'d, 'r>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: wg::Initiation<'_>,
        reply: &'r mut [u8],
    ) -> Result<Received<'d, 'r>, Dropped> {
        if self.handshake_gate(now, src, msg.bytes(), msg.sender(), reply)? {
            return Ok(Received::Reply(
                reply.get(..COOKIE_REPLY_LEN).unwrap_or_default(),
            ));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        self.entropy.fill(&mut seed[..]);
        let received =
            ReceivedInitiation::read(self.identity(), msg.noise(), *seed).map_err(map_hs)?;
        // Cloaking: an initiator we do not know gets no answer at all.
        let id = *self
            .by_key
            .get(&received.remote)
            .ok_or(Dropped::UnknownPeer)?;
        let peer = self.peer(id).ok_or(Dropped::UnknownPeer)?;
        if peer
            .last_timestamp
            .is_some_and(|last| received.timestamp <= last)
        {
            return Err(Dropped::Replay);
        }
        if peer
            .last_initiation_received
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return Err(Dropped::Flood);
        }
        let psk = peer.config.preshared_key.clone();
        let timestamp = received.timestamp;
        let mut noise = [0u8; wg::RESPONSE_NOISE_LEN];
        let keys = received.respond(&psk, &mut noise).map_err(map_hs)?;
        let local_index = self.new_index(id);
        let keypair = Keypair::new(
            &keys.send,
            &keys.recv,
            local_index,
            msg.sender(),
            now,
            false,
        );
        let out: &mut [u8; RESPONSE_LEN] = reply
            .get_mut(..RESPONSE_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(Dropped::Malformed)?;
        let (Some(keypair), Some(peer)) = (
            keypair,
            self.peers.get_mut(id.0 as usize).and_then(Option::as_mut),
        ) else {
            self.indices.remove(&local_index);
            return Err(Dropped::Crypto);
        };
        wg::write_response(out, local_index, msg.sender(), &noise);
        peer.jar.stamp(now, out);
        // A responder holds the new keys as `next` until the initiator proves
        // it has them too, by sending data with them.
        for old in [peer.next.replace(keypair), peer.previous.take()]
            .into_iter()
            .flatten()
        {
            self.indices.remove(&old.local_index);
        }
        peer.last_timestamp = Some(timestamp);
        peer.last_initiation_received = Some(now);
        if peer.set_endpoint(src) {
            self.known.insert(src.ip());
        }
        peer.stats.handshakes += 1;
        peer.timers.session_derived(now);
        peer.timers.any_authenticated_sent();
        peer.timers.any_authenticated_traversal(now);
        peer.stats.tx_bytes += RESPONSE_LEN as u64;
        Ok(Received::Reply(&out[..]))
    }

    fn on_response<'d, 'r>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: wg::Response<'_>,
        reply: &'r mut [u8],
    ) -> Result<Received<'d, 'r>, Dropped> {
        if self.handshake_gate(now, src, msg.bytes(), msg.sender(), reply)? {
            return Ok(Received::Reply(
                reply.get(..COOKIE_REPLY_LEN).unwrap_or_default(),
            ));
        }
        let id = *self
            .indices
            .get(&msg.receiver())
            .ok_or(Dropped::UnknownIndex)?;
        let identity = Identity {
            private: &self.private,
            public: &self.public,
            static_shared: &self.static_shared,
        };
        let peer = self
            .peers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(Dropped::UnknownIndex)?;
        let pending = match peer.handshake.take() {
            Some(h) if h.local_index == msg.receiver() => h,
            other => {
                peer.handshake = other;
                return Err(Dropped::UnknownIndex);
            }
        };
        let PendingHandshake {
            state,
            local_index,
            seed,
            timestamp,
        } = pending;
        let keys = match state.finish(msg.noise()) {
            Ok(keys) => keys,
            Err(e) => {
                // A forged response spoils snow's state; rebuild the identical
                // initiator state so the genuine response can still land.
                let mut scratch = [0u8; wg::INITIATION_NOISE_LEN];
                if let Ok(state) = InitiatorHandshake::start(
                    identity,
                    &peer.config.public_key,
                    &peer.config.preshared_key,
                    *seed,
                    timestamp,
                    &mut scratch,
                ) {
                    peer.handshake = Some(PendingHandshake {
                        state,
                        local_index,
                        seed,
                        timestamp,
                    });
                }
                return Err(map_hs(e));
            }
        };
        let keypair = Keypair::new(&keys.send, &keys.recv, local_index, msg.sender(), now, true)
            .ok_or(Dropped::Crypto)?;
        // As initiator the new keys are confirmed: use them at once.
        let retired = match peer.next.take() {
            Some(next) => [peer.previous.replace(next), peer.current.replace(keypair)],
            None => {
                let old = peer.current.replace(keypair);
                [
                    peer.previous.take(),
                    std::mem::replace(&mut peer.previous, old),
                ]
            }
        };
        for old in retired.into_iter().flatten() {
            self.indices.remove(&old.local_index);
        }
        if peer.set_endpoint(src) {
            self.known.insert(src.ip());
        }
        peer.attempts = 0;
        peer.cookie_retried = false;
        peer.lastminute_handshake = false;
        peer.stats.last_handshake = Some(now);
        peer.stats.handshakes += 1;
        peer.timers.handshake_complete();
        peer.timers.session_derived(now);
        peer.timers.any_authenticated_received();
        peer.timers.any_authenticated_traversal(now);
        // Send what waited for this session, or a keepalive to confirm it.
        if peer.queue.is_empty() {
            peer.want_keepalive = true;
        }
        Self::mark_pending(&mut self.pending, id, peer);
        Ok(Received::Done)
    }

    fn on_data<'d, 'r>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        counter: u64,
        sealed: &'d mut [u8],
    ) -> Result<Received<'d, 'r>, Dropped> {
        let id = *self.indices.get(&receiver).ok_or(Dropped::UnknownIndex)?;
        let peer = self
            .peers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(Dropped::UnknownIndex)?;
        let is_next = peer
            .next
            .as_ref()
            .is_some_and(|k| k.local_index == receiver);
        let keypair = [
            peer.current.as_mut(),
            peer.previous.as_mut(),
            peer.next.as_mut(),
        ]
        .into_iter()
        .flatten()
        .find(|k| k.local_index == receiver)
        .ok_or(Dropped::UnknownIndex)?;
        let padded = keypair.open(counter, sealed, now).map_err(|e| match e {
            OpenError::Replayed => Dropped::Replay,
            OpenError::Expired => Dropped::Expired,
            OpenError::Tampered => Dropped::Crypto,
        })?;
        if is_next {
            // The initiator used the keys we answered with: promote them.
            let next = peer.next.take();
            let old_previous = std::mem::replace(&mut peer.previous, peer.current.take());
            peer.current = next;
            if let Some(old) = old_previous {
                self.indices.remove(&old.local_index);
            }
            peer.stats.last_handshake = Some(now);
        }
        if peer.set_endpoint(src) {
            self.known.insert(src.ip());
        }
        peer.stats.rx_bytes += (DATA_HEADER_LEN + sealed.len()) as u64;
        peer.stats.rx_packets += 1;
        peer.timers.any_authenticated_received();
        peer.timers.any_authenticated_traversal(now);
        if padded == 0 {
            return Ok(Received::Done);
        }
        peer.timers.data_received(now);
        // Keys we initiated are about to expire and nothing rekeyed: ask now.
        let stale = peer.current.as_ref().is_some_and(|k| {
            k.we_initiated && k.age(now) >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        });
        if stale && !peer.lastminute_handshake {
            peer.lastminute_handshake = true;
            peer.want_initiation = true;
            Self::mark_pending(&mut self.pending, id, peer);
        }
        let plain = sealed.get(..padded).ok_or(Dropped::BadInner)?;
        let len = inner_ip_len(plain).ok_or(Dropped::BadInner)?;
        let packet = plain.get(..len).ok_or(Dropped::BadInner)?;
        Ok(Received::Packet { peer: id, packet })
    }
}

fn map_hs(e: HandshakeError) -> Dropped {
    match e {
        HandshakeError::Crypto => Dropped::Crypto,
        HandshakeError::Malformed => Dropped::Malformed,
    }
}

/// The length an inner IPv4/IPv6 packet claims, if it fits the plaintext.
fn inner_ip_len(plain: &[u8]) -> Option<usize> {
    let len = match plain.first()? >> 4 {
        4 => usize::from(u16::from_be_bytes([*plain.get(2)?, *plain.get(3)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*plain.get(4)?, *plain.get(5)?])),
        _ => return None,
    };
    (len <= plain.len() && len >= 20).then_some(len)
}
