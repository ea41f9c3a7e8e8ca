//! The sending half of the device: packets from the tunnel, timers, and
//! the datagrams the device wants sent (handshakes, keepalives, queued
//! packets).

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Device, SendError, Sent, Transmit};
use crate::tunnel::handshake::{Identity, InitiatorHandshake};
use crate::tunnel::peer::{Peer, PeerId, PendingHandshake, Retransmit};
use crate::tunnel::timers::REKEY_TIMEOUT_JITTER_MAX_MS;
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
        let Some(endpoint) = peer.endpoint() else {
            return Err(SendError::NoEndpoint);
        };
        if let Some((n, rekey)) = peer.seal(now, buf, len) {
            if rekey && peer.want_initiation() {
                self.pending.push_back(id);
            }
            return Ok(Sent::Now(Transmit {
                peer: id,
                endpoint,
                len: n,
            }));
        }
        let packet = buf
            .get(DATA_HEADER_LEN..DATA_HEADER_LEN + len)
            .ok_or(SendError::BufferTooSmall)?;
        if !peer.enqueue(packet, queue_limit) {
            self.queue_dropped += 1;
        }
        if peer.want_initiation() {
            self.pending.push_back(id);
        }
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
            let due = peer.due(now);
            if due.retransmit_handshake {
                match peer.retransmit_due(now) {
                    Retransmit::Again => {
                        if peer.want_initiation() {
                            self.pending.push_back(id);
                        }
                    }
                    Retransmit::GaveUp(index) => {
                        if let Some(index) = index {
                            self.indices.remove(&index);
                        }
                    }
                }
            }
            if due.new_handshake && peer.want_initiation() {
                self.pending.push_back(id);
            }
            if (due.send_keepalive || due.persistent_keepalive) && peer.want_keepalive() {
                self.pending.push_back(id);
            }
            if due.zero_keys {
                for index in peer.indices() {
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
            .filter_map(Peer::next_deadline)
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
                peer.left_pending();
            }
        }
        None
    }

    fn transmit_for(&mut self, now: Instant, id: PeerId, buf: &mut [u8]) -> Option<Transmit> {
        let peer = self.peer_mut(id)?;
        let endpoint = peer.endpoint()?;
        if peer.take_want_initiation() {
            if let Some(len) = self.write_initiation(now, id, buf) {
                return Some(Transmit {
                    peer: id,
                    endpoint,
                    len,
                });
            }
        }
        let len = self.peer_mut(id)?.seal_waiting(now, buf)?;
        Some(Transmit {
            peer: id,
            endpoint,
            len,
        })
    }

    /// Builds a handshake initiation to `id` into `buf`, at most one per
    /// REKEY_TIMEOUT, replacing any initiation still in flight.
    fn write_initiation(&mut self, now: Instant, id: PeerId, buf: &mut [u8]) -> Option<usize> {
        if self.peer(id)?.initiated_recently(now) {
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
            &peer.config().public_key,
            &peer.config().preshared_key,
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
        let pending = PendingHandshake {
            state,
            local_index,
            seed,
            timestamp,
        };
        if let Some(old) = peer.initiation_sent(now, jitter, pending) {
            self.indices.remove(&old);
        }
        Some(INITIATION_LEN)
    }

    /// Starts a handshake with `id` now, if it has an endpoint (used at
    /// start-up so sessions exist before the first packet).
    pub fn initiate(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) {
            if peer.want_initiation() {
                self.pending.push_back(id);
            }
        }
    }
}
