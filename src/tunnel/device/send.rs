//! The sending half of the device: packets from the tunnel, timers, and
//! the datagrams the device wants sent (handshakes, keepalives, queued
//! packets).

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Device, SendError, Sent, Transmit};
use crate::tunnel::handshake::{Identity, InitiatorHandshake};
use crate::tunnel::peer::{PeerId, PendingHandshake};
use crate::tunnel::timers::{MAX_HANDSHAKE_ATTEMPTS, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX_MS};
use crate::wire::wg::{self, DATA_HEADER_LEN, INITIATION_LEN};

impl Device {
    /// Encrypts the inner packet at `buf[DATA_HEADER_LEN..][..len]` in place
    /// for `peer`. `buf` needs room for `session::sealed_len(len)` bytes.
    /// Without a usable session the packet is queued and a handshake started.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        id: PeerId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Sent, SendError> {
        if buf.len() < crate::tunnel::session::sealed_len(len) {
            return Err(SendError::BufferTooSmall);
        }
        let queue_limit = self.config.queue_limit;
        let peer = self
            .peers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(SendError::UnknownPeer)?;
        if let (Some(endpoint), Some(keypair)) = (peer.config.endpoint, peer.current.as_mut()) {
            if let Some(n) = keypair.seal(buf, len, now) {
                let rekey = keypair.wants_rekey_on_send(now);
                peer.stats.tx_bytes += n as u64;
                peer.stats.tx_packets += 1;
                peer.timers.any_authenticated_sent();
                peer.timers.any_authenticated_traversal(now);
                peer.timers.data_sent(now);
                if rekey {
                    peer.want_initiation = true;
                    Self::mark_pending(&mut self.pending, id, peer);
                }
                return Ok(Sent::Now(Transmit {
                    peer: id,
                    endpoint,
                    len: n,
                }));
            }
        }
        if peer.config.endpoint.is_none() {
            return Err(SendError::NoEndpoint);
        }
        let packet = buf
            .get(DATA_HEADER_LEN..DATA_HEADER_LEN + len)
            .ok_or(SendError::BufferTooSmall)?;
        if !peer.enqueue(packet, queue_limit) {
            self.queue_dropped += 1;
        }
        peer.want_initiation = true;
        Self::mark_pending(&mut self.pending, id, peer);
        Ok(Sent::Queued)
    }

    /// Runs the timers. Call at least every [`super::timers::TICK`].
    pub fn tick(&mut self, now: Instant) {
        if self
            .last_gc
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.gate_maintenance(now);
            self.last_gc = Some(now);
        }
        for (slot, entry) in self.peers.iter_mut().enumerate() {
            let Some(peer) = entry.as_mut() else { continue };
            let id = PeerId(slot as u32);
            let due = peer.timers.due(now);
            if due.retransmit_handshake {
                if peer.attempts >= MAX_HANDSHAKE_ATTEMPTS {
                    // Give up: drop what waited and let the keys age out.
                    if let Some(h) = peer.handshake.take() {
                        self.indices.remove(&h.local_index);
                    }
                    while let Some(b) = peer.queue.pop_front() {
                        peer.recycle(b);
                    }
                    peer.timers.handshake_abandoned(now);
                    peer.cookie_retried = false;
                } else {
                    peer.attempts += 1;
                    peer.want_initiation = true;
                    Self::mark_pending(&mut self.pending, id, peer);
                }
            }
            if due.new_handshake {
                peer.want_initiation = true;
                Self::mark_pending(&mut self.pending, id, peer);
            }
            if due.send_keepalive || due.persistent_keepalive {
                peer.want_keepalive = true;
                Self::mark_pending(&mut self.pending, id, peer);
            }
            if due.zero_keys {
                for index in peer.indices().collect::<Vec<_>>() {
                    self.indices.remove(&index);
                }
                peer.zero_keys();
            }
        }
    }

    /// The earliest moment a timer needs `tick`.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .filter_map(|p| p.timers.next_deadline())
            .min()
    }

    /// Writes the next datagram the device wants sent into `buf` (which must
    /// hold an MTU-sized packet plus 32 bytes). Call until it returns `None`
    /// after every other call.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(&id) = self.pending.front() {
            if let Some(t) = self.transmit_for(now, id, buf) {
                return Some(t);
            }
            self.pending.pop_front();
            if let Some(peer) = self.peer_mut(id) {
                peer.in_pending = false;
            }
        }
        None
    }

    fn transmit_for(&mut self, now: Instant, id: PeerId, buf: &mut [u8]) -> Option<Transmit> {
        let peer = self.peer_mut(id)?;
        let endpoint = peer.config.endpoint?;
        if std::mem::take(&mut peer.want_initiation) {
            if let Some(len) = self.write_initiation(now, id, buf) {
                return Some(Transmit {
                    peer: id,
                    endpoint,
                    len,
                });
            }
        }
        let peer = self.peer_mut(id)?;
        let keypair = peer.current.as_mut().filter(|k| k.can_send(now))?;
        let (len, data) = match peer.queue.pop_front() {
            Some(packet) => {
                let n = packet.len();
                let fits = buf
                    .get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + n)
                    .map(|dst| dst.copy_from_slice(&packet));
                peer.spare.push(packet);
                (fits.map(|_| n)?, true)
            }
            None if std::mem::take(&mut peer.want_keepalive) => (0, false),
            None => return None,
        };
        let n = keypair.seal(buf, len, now)?;
        peer.want_keepalive = false;
        peer.stats.tx_bytes += n as u64;
        peer.stats.tx_packets += 1;
        peer.timers.any_authenticated_sent();
        peer.timers.any_authenticated_traversal(now);
        if data {
            peer.timers.data_sent(now);
        }
        Some(Transmit {
            peer: id,
            endpoint,
            len: n,
        })
    }

    /// Builds a handshake initiation to `id` into `buf`, at most one per
    /// REKEY_TIMEOUT, replacing any initiation still in flight.
    fn write_initiation(&mut self, now: Instant, id: PeerId, buf: &mut [u8]) -> Option<usize> {
        let recent = self
            .peer(id)?
            .last_initiation_sent
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT);
        if recent {
            return None;
        }
        let out: &mut [u8; INITIATION_LEN] = buf.get_mut(..INITIATION_LEN)?.try_into().ok()?;
        let mut seed = Zeroizing::new([0u8; 32]);
        self.entropy.fill(&mut seed[..]);
        let jitter = Duration::from_millis(u64::from(
            self.entropy.next_u32() % REKEY_TIMEOUT_JITTER_MAX_MS,
        ));
        let timestamp = self.timestamp(now);
        let local_index = self.new_index(id);
        let identity = Identity {
            private: &self.private,
            public: &self.public,
            static_shared: &self.static_shared,
        };
        let peer = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut)?;
        let mut noise = [0u8; wg::INITIATION_NOISE_LEN];
        let started = InitiatorHandshake::start(
            identity,
            &peer.config.public_key,
            &peer.config.preshared_key,
            *seed,
            timestamp,
            &mut noise,
        );
        let Ok(state) = started else {
            self.indices.remove(&local_index);
            return None;
        };
        wg::write_initiation(out, local_index, &noise);
        peer.jar.stamp(now, out);
        if let Some(old) = peer.handshake.replace(PendingHandshake {
            state,
            local_index,
            seed,
            timestamp,
        }) {
            self.indices.remove(&old.local_index);
        }
        peer.last_initiation_sent = Some(now);
        peer.stats.tx_bytes += INITIATION_LEN as u64;
        peer.timers.handshake_initiated(now, jitter);
        peer.timers.any_authenticated_sent();
        peer.timers.any_authenticated_traversal(now);
        Some(INITIATION_LEN)
    }

    /// Starts a handshake with `id` now, if it has an endpoint (used at
    /// start-up so sessions exist before the first packet).
    pub fn initiate(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) {
            peer.want_initiation = true;
            Self::mark_pending(&mut self.pending, id, peer);
        }
    }
}
