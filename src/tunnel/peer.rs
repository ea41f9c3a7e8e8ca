//! Everything the device remembers about one peer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::cookie::CookieJar;
use super::handshake::{InitiatorHandshake, TIMESTAMP_LEN};
use super::keypairs::{Keypairs, Opened, Rejected, Retired};
use super::session::Keypair;
use super::timers::{Timers, MAX_HANDSHAKE_ATTEMPTS, REKEY_TIMEOUT};
use crate::keys::{PresharedKey, PublicKey};
use crate::wire::wg::{DATA_HEADER_LEN, INITIATION_LEN, RESPONSE_LEN};

/// Initiations from one peer closer together than this are dropped (flood guard).
const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);

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

/// One peer's state. The device tells it what happened (an initiation
/// answered, a handshake completed, data sent or received, a timer due)
/// and it updates its keys, timers, counters and wishes together; the
/// device keeps what spans peers (the index table, the pending queue, the
/// known sources).
pub(crate) struct Peer {
    config: PeerConfig,
    /// The endpoint the configuration named (the policy file's), which
    /// `config.endpoint` forgets when the peer roams.
    configured_endpoint: Option<SocketAddr>,
    /// A cookie reply already made us resend the pending initiation once.
    cookie_retried: bool,
    /// Our MACs on messages to the peer, and the cookie it gave us.
    pub jar: CookieJar,
    handshake: Option<PendingHandshake>,
    last_initiation_sent: Option<Instant>,
    attempts: u32,
    last_timestamp: Option<[u8; TIMESTAMP_LEN]>,
    last_initiation_received: Option<Instant>,
    keypairs: Keypairs,
    timers: Timers,
    /// Packets waiting for a session, oldest first.
    queue: VecDeque<Vec<u8>>,
    /// Emptied queue buffers, reused so a busy peer stops allocating.
    spare: Vec<Vec<u8>>,
    want_initiation: bool,
    want_keepalive: bool,
    /// In the device's pending queue.
    in_pending: bool,
    /// A rekey close to REJECT_AFTER_TIME was already asked for.
    lastminute_handshake: bool,
    stats: PeerStats,
}

/// What an initiation from the peer is refused for, before any keys change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitiationRefused {
    /// Its timestamp is not newer than the last one accepted.
    Replay,
    /// It follows the last one too closely.
    Flood,
}

/// What a due retransmission timer led to.
pub(crate) enum Retransmit {
    /// Send the initiation again.
    Again,
    /// REKEY_ATTEMPT_TIME is over: the handshake (with this index, if one
    /// was pending) and the queued packets were dropped.
    GaveUp(Option<u32>),
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
            keypairs: Keypairs::default(),
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

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.config.public_key
    }

    /// Where to send now: the configured endpoint, or where the peer last
    /// spoke from.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.config.endpoint
    }

    /// Both endpoints the peer is known by (configured, current).
    pub fn endpoints(&self) -> [Option<SocketAddr>; 2] {
        [self.configured_endpoint, self.config.endpoint]
    }

    /// A configuration update for the same key, keeping the session and a
    /// roamed endpoint unless the configuration names one. Returns true if
    /// the configured endpoint changed.
    pub fn reconfigure(&mut self, config: PeerConfig) -> bool {
        let changed = self.configured_endpoint != config.endpoint;
        self.configured_endpoint = config.endpoint;
        let endpoint = config.endpoint.or(self.config.endpoint);
        self.timers.persistent_interval = config.persistent_keepalive;
        self.config = PeerConfig { endpoint, ..config };
        self.stats.endpoint = endpoint;
        changed
    }

    /// Counters, with whether the current keys can send at `now`.
    pub fn stats(&self, now: Instant) -> PeerStats {
        PeerStats {
            has_session: self.keypairs.has_session(now),
            ..self.stats.clone()
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Every local index this peer owns, to remove from the device's table.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.keypairs
            .indices()
            .chain(self.handshake.as_ref().map(|h| h.local_index))
    }

    /// Records where authenticated traffic came from; true if it moved.
    pub fn set_endpoint(&mut self, addr: SocketAddr) -> bool {
        let moved = self.config.endpoint != Some(addr);
        self.config.endpoint = Some(addr);
        self.stats.endpoint = Some(addr);
        moved
    }

    // --- What the peer wants sent, and the device's pending queue.

    /// Asks for a handshake initiation; true if the peer must join the
    /// device's pending queue.
    pub fn want_initiation(&mut self) -> bool {
        self.want_initiation = true;
        self.schedule()
    }

    /// Asks for a keepalive (or the queued packets) to be sent; true if the
    /// peer must join the device's pending queue.
    pub fn want_keepalive(&mut self) -> bool {
        self.want_keepalive = true;
        self.schedule()
    }

    /// Has something to send (queued packets, a wish already recorded);
    /// true if the peer must join the device's pending queue.
    pub fn schedule(&mut self) -> bool {
        !std::mem::replace(&mut self.in_pending, true)
    }

    /// Takes the wish for an initiation.
    pub fn take_want_initiation(&mut self) -> bool {
        std::mem::take(&mut self.want_initiation)
    }

    /// Left the device's pending queue: nothing more to send for now.
    pub fn left_pending(&mut self) {
        self.in_pending = false;
    }

    // --- Packets waiting for a session.

    /// Queues a packet for after the handshake, dropping the oldest when
    /// full; false if one was dropped.
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

    /// Seals the next thing waiting to be sent into `buf` with the current
    /// keys: the oldest queued packet, else a wanted keepalive. Returns the
    /// message length, or `None` if there is nothing to send, no usable
    /// session, or `buf` is too small for the packet (which is dropped).
    pub fn seal_waiting(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let keypair = self.keypairs.sendable(now)?;
        let (len, data) = match self.queue.pop_front() {
            Some(packet) => {
                let n = packet.len();
                let fits = buf
                    .get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + n)
                    .map(|dst| dst.copy_from_slice(&packet));
                self.spare.push(packet);
                (fits.map(|_| n)?, true)
            }
            None if std::mem::take(&mut self.want_keepalive) => (0, false),
            None => return None,
        };
        let n = keypair.seal(buf, len, now)?;
        self.want_keepalive = false;
        self.sent(now, n, data);
        Some(n)
    }

    /// Seals the inner packet at `buf[DATA_HEADER_LEN..][..len]` with the
    /// current keys, if they can send. Returns the message length and
    /// whether the keys want a rekey now.
    pub fn seal(&mut self, now: Instant, buf: &mut [u8], len: usize) -> Option<(usize, bool)> {
        let keypair = self.keypairs.current_mut()?;
        let n = keypair.seal(buf, len, now)?;
        let rekey = keypair.wants_rekey_on_send(now);
        self.sent(now, n, true);
        Some((n, rekey))
    }

    /// A data message (`data`) or keepalive of `n` bytes went out.
    fn sent(&mut self, now: Instant, n: usize, data: bool) {
        self.stats.tx_bytes += n as u64;
        self.stats.tx_packets += 1;
        self.timers.any_authenticated_sent();
        self.timers.any_authenticated_traversal(now);
        if data {
            self.timers.data_sent(now);
        }
    }

    // --- Handshakes.

    /// Whether an initiation was sent less than REKEY_TIMEOUT ago.
    pub fn initiated_recently(&self, now: Instant) -> bool {
        self.last_initiation_sent
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
    }

    /// We sent an initiation; returns the index of one it replaced.
    pub fn initiation_sent(
        &mut self,
        now: Instant,
        jitter: Duration,
        pending: PendingHandshake,
    ) -> Option<u32> {
        let old = self.handshake.replace(pending).map(|h| h.local_index);
        self.last_initiation_sent = Some(now);
        self.stats.tx_bytes += INITIATION_LEN as u64;
        self.timers.handshake_initiated(now, jitter);
        self.timers.any_authenticated_sent();
        self.timers.any_authenticated_traversal(now);
        old
    }

    /// The pending initiation if `index` is its sender index.
    pub fn take_handshake(&mut self, index: u32) -> Option<PendingHandshake> {
        match self.handshake.take() {
            Some(h) if h.local_index == index => Some(h),
            other => {
                self.handshake = other;
                None
            }
        }
    }

    /// Puts back a pending initiation (rebuilt after a forged response).
    pub fn restore_handshake(&mut self, pending: PendingHandshake) {
        self.handshake = Some(pending);
    }

    /// A cookie reply to our initiation `index` decrypted: the responder is
    /// under load and will now take our address as proven. Returns true if
    /// the initiation should go again at once, with mac2, rather than after
    /// REKEY_TIMEOUT — once per handshake, so forged cookie replies cannot
    /// make us chatty.
    pub fn cookie_received(&mut self, index: u32) -> bool {
        let pending = self
            .handshake
            .as_ref()
            .is_some_and(|h| h.local_index == index);
        if !pending || self.cookie_retried {
            return false;
        }
        self.cookie_retried = true;
        self.last_initiation_sent = None;
        true
    }

    /// Checks an authenticated initiation's timestamp and spacing.
    pub fn check_initiation(
        &self,
        now: Instant,
        timestamp: &[u8; TIMESTAMP_LEN],
    ) -> Result<(), InitiationRefused> {
        if self.last_timestamp.is_some_and(|last| *timestamp <= last) {
            return Err(InitiationRefused::Replay);
        }
        if self
            .last_initiation_received
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return Err(InitiationRefused::Flood);
        }
        Ok(())
    }

    /// We answered the peer's initiation with `keypair`, which waits for
    /// the peer's first data to confirm it.
    pub fn initiation_answered(
        &mut self,
        now: Instant,
        timestamp: [u8; TIMESTAMP_LEN],
        keypair: Keypair,
    ) -> Retired {
        let retired = self.keypairs.unconfirmed(keypair);
        self.last_timestamp = Some(timestamp);
        self.last_initiation_received = Some(now);
        self.stats.handshakes += 1;
        self.timers.session_derived(now);
        self.timers.any_authenticated_sent();
        self.timers.any_authenticated_traversal(now);
        self.stats.tx_bytes += RESPONSE_LEN as u64;
        retired
    }

    /// The peer's response completed our handshake: `keypair` sends at once.
    /// Afterwards the queued packets go, or a keepalive confirms the keys to
    /// the peer; the caller puts the peer in the pending queue.
    pub fn handshake_completed(&mut self, now: Instant, keypair: Keypair) -> Retired {
        let retired = self.keypairs.confirmed(keypair);
        self.attempts = 0;
        self.cookie_retried = false;
        self.lastminute_handshake = false;
        self.stats.last_handshake = Some(now);
        self.stats.handshakes += 1;
        self.timers.handshake_complete();
        self.timers.session_derived(now);
        self.timers.any_authenticated_received();
        self.timers.any_authenticated_traversal(now);
        if self.queue.is_empty() {
            self.want_keepalive = true;
        }
        retired
    }

    // --- Receiving data.

    /// Opens a data message of `wire_len` bytes sent to our index
    /// `receiver` and updates counters and timers. A message under the
    /// keys we answered with completes the handshake on our side.
    #[inline]
    pub fn open(
        &mut self,
        now: Instant,
        receiver: u32,
        counter: u64,
        sealed: &mut [u8],
        wire_len: usize,
    ) -> Result<Opened, Rejected> {
        let opened = self.keypairs.open(receiver, counter, sealed, now)?;
        if opened.confirmed {
            self.stats.last_handshake = Some(now);
        }
        self.stats.rx_bytes += wire_len as u64;
        self.stats.rx_packets += 1;
        self.timers.any_authenticated_received();
        self.timers.any_authenticated_traversal(now);
        if opened.padded > 0 {
            self.timers.data_received(now);
        }
        Ok(opened)
    }

    /// After data arrived: our keys are about to be rejected and no rekey
    /// was asked for yet. True once, until the next handshake completes.
    pub fn wants_lastminute_rekey(&mut self, now: Instant) -> bool {
        if self.lastminute_handshake || !self.keypairs.nearly_rejected(now) {
            return false;
        }
        self.lastminute_handshake = true;
        true
    }

    // --- Timers.

    /// Which timers have fired since the last call.
    pub fn due(&mut self, now: Instant) -> super::timers::Due {
        self.timers.due(now)
    }

    /// The retransmission timer fired.
    pub fn retransmit_due(&mut self, now: Instant) -> Retransmit {
        if self.attempts < MAX_HANDSHAKE_ATTEMPTS {
            self.attempts += 1;
            return Retransmit::Again;
        }
        // Give up: drop what waited and let the keys age out.
        let index = self.handshake.take().map(|h| h.local_index);
        while let Some(b) = self.queue.pop_front() {
            self.recycle(b);
        }
        self.timers.handshake_abandoned(now);
        self.cookie_retried = false;
        Retransmit::GaveUp(index)
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 16 {
            self.spare.push(buf);
        }
    }

    /// Forgets every key and pending handshake (the zero-keys timer, removal).
    pub fn zero_keys(&mut self) {
        self.keypairs.clear();
        self.handshake = None;
        self.timers.keys_zeroed();
        self.lastminute_handshake = false;
    }
}
