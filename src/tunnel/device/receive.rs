//! The receiving half of the device: every datagram from the UDP socket —
//! handshake initiations and responses (after the gate), cookie replies,
//! and transport data, opened in place.

use std::net::SocketAddr;
use std::time::Instant;

use zeroize::Zeroizing;

use super::{Device, Dropped, Received};
use crate::tunnel::handshake::{HandshakeError, Identity, InitiatorHandshake, ReceivedInitiation};
use crate::tunnel::keypairs::Rejected;
use crate::tunnel::peer::{InitiationRefused, PendingHandshake};
use crate::tunnel::session::{Keypair, OpenError};
use crate::wire::wg::{self, Message, COOKIE_REPLY_LEN, DATA_HEADER_LEN, RESPONSE_LEN};

impl Device {
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
            Message::CookieReply(m) => return self.on_cookie_reply(now, m),
        };
        let sealed = datagram
            .get_mut(DATA_HEADER_LEN..)
            .ok_or(Dropped::Malformed)?;
        self.on_data(now, src, receiver, counter, sealed)
    }

    fn on_cookie_reply<'d, 'r>(
        &mut self,
        now: Instant,
        m: wg::CookieReply<'_>,
    ) -> Result<Received<'d, 'r>, Dropped> {
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
        if peer.cookie_received(m.receiver()) && peer.want_initiation() {
            self.pending.push_back(id);
        }
        Ok(Received::Done)
    }

    fn on_initiation<'d, 'r>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: wg::Initiation<'_>,
        reply: &'r mut [u8],
    ) -> Result<Received<'d, 'r>, Dropped> {
        if self.handshake_gate(now, src, msg.bytes(), msg.sender(), reply)? {
            return Ok(Received::Reply(&reply[..COOKIE_REPLY_LEN]));
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
        peer.check_initiation(now, &received.timestamp)
            .map_err(|e| match e {
                InitiationRefused::Replay => Dropped::Replay,
                InitiationRefused::Flood => Dropped::Flood,
            })?;
        let psk = peer.config().preshared_key.clone();
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
        for old in peer.initiation_answered(now, timestamp, keypair) {
            self.indices.remove(&old);
        }
        if peer.set_endpoint(src) {
            self.known.insert(src.ip());
        }
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
            return Ok(Received::Reply(&reply[..COOKIE_REPLY_LEN]));
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
        let PendingHandshake {
            state,
            local_index,
            seed,
            timestamp,
        } = peer
            .take_handshake(msg.receiver())
            .ok_or(Dropped::UnknownIndex)?;
        let keys = match state.finish(msg.noise()) {
            Ok(keys) => keys,
            Err(e) => {
                // A forged response spoils snow's state; rebuild the identical
                // initiator state so the genuine response can still land.
                let mut scratch = [0u8; wg::INITIATION_NOISE_LEN];
                if let Ok(state) = InitiatorHandshake::start(
                    identity,
                    &peer.config().public_key,
                    &peer.config().preshared_key,
                    *seed,
                    timestamp,
                    &mut scratch,
                ) {
                    peer.restore_handshake(PendingHandshake {
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
        for old in peer.handshake_completed(now, keypair) {
            self.indices.remove(&old);
        }
        if peer.set_endpoint(src) {
            self.known.insert(src.ip());
        }
        // Send what waited for this session, or a keepalive to confirm it.
        if peer.schedule() {
            self.pending.push_back(id);
        }
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
        let wire_len = DATA_HEADER_LEN + sealed.len();
        let opened = peer
            .open(now, receiver, counter, sealed, wire_len)
            .map_err(|e| match e {
                Rejected::UnknownIndex => Dropped::UnknownIndex,
                Rejected::Open(OpenError::Replayed) => Dropped::Replay,
                Rejected::Open(OpenError::Expired) => Dropped::Expired,
                Rejected::Open(OpenError::Tampered) => Dropped::Crypto,
            })?;
        // The initiator used the keys we answered with: they are current now.
        for old in opened.retired {
            self.indices.remove(&old);
        }
        if peer.set_endpoint(src) {
            self.known.insert(src.ip());
        }
        if opened.padded == 0 {
            return Ok(Received::Done);
        }
        // Keys we initiated are about to expire and nothing rekeyed: ask now.
        if peer.wants_lastminute_rekey(now) && peer.want_initiation() {
            self.pending.push_back(id);
        }
        let plain = sealed.get(..opened.padded).ok_or(Dropped::BadInner)?;
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
