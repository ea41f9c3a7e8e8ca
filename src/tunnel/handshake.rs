//! The Noise_IKpsk2 handshake WireGuard performs, carried out by `snow`.
//!
//! WireGuard's handshake is exactly Noise IKpsk2 over X25519, ChaCha20-Poly1305
//! and BLAKE2s with WireGuard's identifier as prologue; the message framing,
//! indices and MACs around it live in `wire::wg` and `cookie`. This module
//! adds what snow leaves to its caller:
//! - all-zero Diffie-Hellman results are rejected (a low-order public key
//!   would otherwise force a known shared secret);
//! - randomness comes from the caller, so the core stays deterministic
//!   under test and never reads the OS itself;
//! - the responder learns the initiator's static key from message 1 and
//!   returns it *before* producing anything, so the caller can decide not to
//!   answer at all (cloaking).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::{Zeroize, Zeroizing};

use super::x25519::{x25519, x25519_base};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::wire::wg::{INITIATION_NOISE_LEN, RESPONSE_NOISE_LEN};

/// The Noise protocol name WireGuard hashes into its initial chaining key.
pub const CONSTRUCTION: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's prologue.
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// Length of the decrypted timestamp payload of message 1.
pub const TIMESTAMP_LEN: usize = 12;

/// Why a handshake message was not accepted. Deliberately coarse: the
/// details would only help an attacker, and the peer never hears of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Decryption or authentication failed, or a DH result was all zero.
    Crypto,
    /// The message has the wrong shape for this step.
    Malformed,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Crypto => f.write_str("handshake authentication failed"),
            HandshakeError::Malformed => f.write_str("malformed handshake message"),
        }
    }
}

impl From<snow::Error> for HandshakeError {
    fn from(e: snow::Error) -> Self {
        match e {
            snow::Error::Input => HandshakeError::Malformed,
            _ => HandshakeError::Crypto,
        }
    }
}

/// DH(our static key, peer's static key) for every peer, computed once when
/// the peer is added (as the WireGuard kernel module does), so a handshake
/// pays for three variable-base multiplications instead of four.
pub type StaticShared = Arc<HashMap<PublicKey, Zeroizing<[u8; 32]>>>;

/// Computes the entry of [`StaticShared`] for one peer.
pub fn static_shared(local: &PrivateKey, remote: &PublicKey) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(x25519(*local.as_bytes(), remote.0))
}

/// Our identity as the handshake needs it.
#[derive(Clone, Copy)]
pub struct Identity<'a> {
    pub private: &'a PrivateKey,
    pub public: &'a PublicKey,
    pub static_shared: &'a StaticShared,
}

/// Transport keys a finished handshake yields, wiped on drop.
pub struct SessionKeys {
    pub send: Zeroizing<[u8; 32]>,
    pub recv: Zeroizing<[u8; 32]>,
}

/// An initiation we sent and whose response we await.
pub struct InitiatorHandshake {
    state: snow::HandshakeState,
}

impl InitiatorHandshake {
    /// Builds message 1's Noise part (ephemeral, encrypted static, encrypted
    /// timestamp) into `out`. `ephemeral_seed` is fresh randomness.
    pub fn start(
        local: Identity<'_>,
        remote: &PublicKey,
        psk: &PresharedKey,
        ephemeral_seed: [u8; 32],
        timestamp: [u8; TIMESTAMP_LEN],
        out: &mut [u8; INITIATION_NOISE_LEN],
    ) -> Result<Self, HandshakeError> {
        let resolver = Resolver::new(local, ephemeral_seed);
        let mut state = snow::Builder::with_resolver(params()?, Box::new(resolver))
            .prologue(IDENTIFIER)?
            .local_private_key(local.private.as_bytes())?
            .remote_public_key(remote.as_bytes())?
            .psk(2, psk.as_bytes())?
            .build_initiator()?;
        let n = state.write_message(&timestamp, out)?;
        if n != INITIATION_NOISE_LEN {
            return Err(HandshakeError::Malformed);
        }
        Ok(InitiatorHandshake { state })
    }

    /// Consumes message 2's Noise part and yields the session keys.
    pub fn finish(mut self, response_noise: &[u8]) -> Result<SessionKeys, HandshakeError> {
        let mut empty = [0u8; 0];
        let n = self.state.read_message(response_noise, &mut empty)?;
        if n != 0 || !self.state.is_handshake_finished() {
            return Err(HandshakeError::Malformed);
        }
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok(SessionKeys {
            send: Zeroizing::new(i2r),
            recv: Zeroizing::new(r2i),
        })
    }
}

/// Message 1, decrypted: who sent it and when, with the state needed to answer.
pub struct ReceivedInitiation {
    state: snow::HandshakeState,
    /// The initiator's static key, authenticated by the handshake.
    pub remote: PublicKey,
    /// TAI64N timestamp, for the strictly-increasing replay rule.
    pub timestamp: [u8; TIMESTAMP_LEN],
}

impl ReceivedInitiation {
    /// Decrypts message 1's Noise part. Nothing is sent: the caller looks at
    /// `remote` and decides whether this peer gets any answer.
    ///
    /// `ephemeral_seed` is the randomness for our response's ephemeral key,
    /// drawn now because snow binds its randomness when the state is built.
    pub fn read(
        local: Identity<'_>,
        noise: &[u8],
        ephemeral_seed: [u8; 32],
    ) -> Result<Self, HandshakeError> {
        let resolver = Resolver::new(local, ephemeral_seed);
        let mut state = snow::Builder::with_resolver(params()?, Box::new(resolver))
            .prologue(IDENTIFIER)?
            .local_private_key(local.private.as_bytes())?
            .build_responder()?;
        let mut timestamp = [0u8; TIMESTAMP_LEN];
        let n = state.read_message(noise, &mut timestamp)?;
        let remote = state
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .map(PublicKey);
        match (n, remote) {
            (TIMESTAMP_LEN, Some(remote)) => Ok(ReceivedInitiation {
                state,
                remote,
                timestamp,
            }),
            _ => Err(HandshakeError::Malformed),
        }
    }

    /// Writes message 2's Noise part and yields the session keys.
    pub fn respond(
        mut self,
        psk: &PresharedKey,
        out: &mut [u8; RESPONSE_NOISE_LEN],
    ) -> Result<SessionKeys, HandshakeError> {
        self.state.set_psk(2, psk.as_bytes())?;
        let n = self.state.write_message(&[], out)?;
        if n != RESPONSE_NOISE_LEN || !self.state.is_handshake_finished() {
            return Err(HandshakeError::Malformed);
        }
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        Ok(SessionKeys {
            send: Zeroizing::new(r2i),
            recv: Zeroizing::new(i2r),
        })
    }
}

fn params() -> Result<NoiseParams, HandshakeError> {
    // Parsed once: snow's parser allocates, and this runs per handshake.
    static PARAMS: OnceLock<Option<NoiseParams>> = OnceLock::new();
    PARAMS
        .get_or_init(|| CONSTRUCTION.parse().ok())
        .clone()
        .ok_or(HandshakeError::Malformed)
}

/// Supplies snow with our checked X25519 and with the caller's randomness;
/// hashing and the handshake cipher come from snow's default resolver.
struct Resolver {
    seed: Cell<[u8; 32]>,
    static_private: Zeroizing<[u8; 32]>,
    static_public: [u8; 32],
    static_shared: StaticShared,
}

impl Resolver {
    fn new(local: Identity<'_>, seed: [u8; 32]) -> Self {
        Resolver {
            seed: Cell::new(seed),
            static_private: Zeroizing::new(*local.private.as_bytes()),
            static_public: local.public.0,
            static_shared: Arc::clone(local.static_shared),
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.seed.set([0u8; 32]);
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        let seed = self.seed.replace([0u8; 32]);
        Some(Box::new(SeededRandom {
            bytes: Zeroizing::new(seed),
            used: false,
        }))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(CheckedX25519 {
                private: Zeroizing::new([0u8; 32]),
                public: [0u8; 32],
                known: (self.static_private.clone(), self.static_public),
                is_static: false,
                static_shared: Arc::clone(&self.static_shared),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        snow::resolvers::RingResolver.resolve_cipher(choice)
    }
}

/// Hands out one ephemeral key's worth of caller-provided randomness.
struct SeededRandom {
    bytes: Zeroizing<[u8; 32]>,
    used: bool,
}

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.bytes.get(..dest.len()) {
            Some(src) if !self.used => {
                dest.copy_from_slice(src);
                self.used = true;
                self.bytes.zeroize();
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

/// X25519 that refuses all-zero shared secrets, as WireGuard requires.
struct CheckedX25519 {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    /// Our static key pair: setting this private key reuses the known public
    /// key instead of paying for a scalar multiplication on every handshake.
    known: (Zeroizing<[u8; 32]>, [u8; 32]),
    /// Whether this instance holds our static key, whose DH results with
    /// known peers are precomputed.
    is_static: bool,
    static_shared: StaticShared,
}

impl Dh for CheckedX25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let mut k = [0u8; 32];
        if let Some(src) = privkey.get(..32) {
            k.copy_from_slice(src);
        }
        self.is_static = crate::tunnel::crypto::ct_eq(&k, &self.known.0[..]);
        self.public = if self.is_static {
            self.known.1
        } else {
            x25519_base(k)
        };
        *self.private = k;
        k.zeroize();
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut k[..])?;
        self.set(&k[..]);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private[..]
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let point: [u8; 32] = pubkey
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let cached = match self.is_static {
            true => self.static_shared.get(&PublicKey(point)).map(|s| **s),
            false => None,
        };
        let mut shared = cached.unwrap_or_else(|| x25519(*self.private, point));
        let zero = crate::tunnel::crypto::ct_eq(&shared, &[0u8; 32]);
        let result = match out.get_mut(..32) {
            Some(dst) if !zero => {
                dst.copy_from_slice(&shared);
                Ok(())
            }
            _ => Err(snow::Error::Dh),
        };
        shared.zeroize();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(seed: u8) -> (PrivateKey, PublicKey) {
        let k = PrivateKey::from_bytes([seed; 32]);
        let p = k.public_key();
        (k, p)
    }

    fn id<'a>(k: &'a PrivateKey, p: &'a PublicKey, t: &'a StaticShared) -> Identity<'a> {
        Identity {
            private: k,
            public: p,
            static_shared: t,
        }
    }

    fn none() -> StaticShared {
        StaticShared::default()
    }

    #[test]
    fn both_sides_agree_on_keys() {
        let (ik, ip) = pair(1);
        let (rk, rp) = pair(2);
        let psk = PresharedKey::from_bytes([3; 32]);
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        let init =
            InitiatorHandshake::start(id(&ik, &ip, &none()), &rp, &psk, [4; 32], [5; 12], &mut m1)
                .unwrap();
        let recv = ReceivedInitiation::read(id(&rk, &rp, &none()), &m1, [6; 32]).unwrap();
        assert_eq!(recv.remote, ip);
        assert_eq!(recv.timestamp, [5; 12]);
        let mut m2 = [0u8; RESPONSE_NOISE_LEN];
        let rkeys = recv.respond(&psk, &mut m2).unwrap();
        let ikeys = init.finish(&m2).unwrap();
        assert_eq!(*ikeys.send, *rkeys.recv);
        assert_eq!(*ikeys.recv, *rkeys.send);
        assert_ne!(*ikeys.send, *ikeys.recv);
    }

    #[test]
    fn precomputed_static_shared_gives_the_same_keys() {
        let (ik, ip) = pair(1);
        let (rk, rp) = pair(2);
        let it: StaticShared = Arc::new([(rp, static_shared(&ik, &rp))].into_iter().collect());
        let rt: StaticShared = Arc::new([(ip, static_shared(&rk, &ip))].into_iter().collect());
        let psk = PresharedKey::none();
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        let mut plain_m1 = [0u8; INITIATION_NOISE_LEN];
        let init =
            InitiatorHandshake::start(id(&ik, &ip, &it), &rp, &psk, [4; 32], [5; 12], &mut m1)
                .unwrap();
        InitiatorHandshake::start(
            id(&ik, &ip, &none()),
            &rp,
            &psk,
            [4; 32],
            [5; 12],
            &mut plain_m1,
        )
        .unwrap();
        assert_eq!(m1, plain_m1, "same message with and without the table");
        let recv = ReceivedInitiation::read(id(&rk, &rp, &rt), &m1, [6; 32]).unwrap();
        let mut m2 = [0u8; RESPONSE_NOISE_LEN];
        let rkeys = recv.respond(&psk, &mut m2).unwrap();
        assert_eq!(*init.finish(&m2).unwrap().send, *rkeys.recv);
    }

    #[test]
    fn wrong_psk_fails_at_the_initiator() {
        let (ik, ip) = pair(1);
        let (rk, rp) = pair(2);
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        let init = InitiatorHandshake::start(
            id(&ik, &ip, &none()),
            &rp,
            &PresharedKey::none(),
            [4; 32],
            [5; 12],
            &mut m1,
        )
        .unwrap();
        let recv = ReceivedInitiation::read(id(&rk, &rp, &none()), &m1, [6; 32]).unwrap();
        let mut m2 = [0u8; RESPONSE_NOISE_LEN];
        recv.respond(&PresharedKey::from_bytes([9; 32]), &mut m2)
            .unwrap();
        assert_eq!(init.finish(&m2).err(), Some(HandshakeError::Crypto));
    }

    #[test]
    fn low_order_points_are_refused() {
        let (ik, ip) = pair(1);
        // The all-zero point is of low order: every DH with it is zero.
        let zero = PublicKey([0; 32]);
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        assert_eq!(
            InitiatorHandshake::start(
                id(&ik, &ip, &none()),
                &zero,
                &PresharedKey::none(),
                [4; 32],
                [5; 12],
                &mut m1
            )
            .err(),
            Some(HandshakeError::Crypto)
        );
        // A responder fed an initiation whose ephemeral is a low-order point.
        let (rk, rp) = pair(2);
        InitiatorHandshake::start(
            id(&ik, &ip, &none()),
            &rp,
            &PresharedKey::none(),
            [4; 32],
            [5; 12],
            &mut m1,
        )
        .unwrap();
        m1[..32].fill(0);
        assert_eq!(
            ReceivedInitiation::read(id(&rk, &rp, &none()), &m1, [6; 32]).err(),
            Some(HandshakeError::Crypto)
        );
    }

    #[test]
    fn tampered_initiation_is_rejected() {
        let (ik, ip) = pair(1);
        let (rk, rp) = pair(2);
        let mut m1 = [0u8; INITIATION_NOISE_LEN];
        InitiatorHandshake::start(
            id(&ik, &ip, &none()),
            &rp,
            &PresharedKey::none(),
            [4; 32],
            [5; 12],
            &mut m1,
        )
        .unwrap();
        for i in [0, 40, 100] {
            let mut bad = m1;
            bad[i] ^= 1;
            assert!(
                ReceivedInitiation::read(id(&rk, &rp, &none()), &bad, [6; 32]).is_err(),
                "byte {i}"
            );
        }
    }
}
