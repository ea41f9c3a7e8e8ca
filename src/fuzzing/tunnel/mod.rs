//! Fuzz targets for the WireGuard engine: the responder's handshake path and
//! an established session's transport path.
//!
//! Both run a real [`Device`] ("R", the responder) against a harness that
//! plays the peer ("I") with the handshake and cookie code directly, so it
//! can build genuine messages, mutate them where the input says, and check
//! R's answers cryptographically. Keys are fixed constants and randomness is
//! seeded, so a run depends only on its input.
//!
//! This file holds what both share (the fixed keys, I's identity, R's
//! construction); `handshake` and `transport` hold one target each.

mod handshake;
mod transport;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::epoch;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::tunnel::crypto::tai64n;
use crate::tunnel::handshake::{static_shared, Identity, StaticShared};
use crate::tunnel::{Config, Device, PeerConfig, PeerId, SeededEntropy};
use crate::wire::wg::{self, Message};

pub use handshake::handshake_responder;
pub use transport::transport;

/// R's private key (the device under test).
pub const RESPONDER_KEY: [u8; 32] = [0x52; 32];
/// I's private key: the peer R knows, played by the harness.
pub const INITIATOR_KEY: [u8; 32] = [0x49; 32];
/// A key R does not know: initiations from it must get no answer (cloaking).
pub const STRANGER_KEY: [u8; 32] = [0x53; 32];
/// The preshared key R holds for I when the input asks for one.
pub const PRESHARED_KEY: [u8; 32] = [0x50; 32];

/// Bounds the work one input can ask for: a handshake costs about half a
/// millisecond under the sanitizer, and short inputs mean more executions.
const MAX_OPS: usize = 32;
/// Where I's datagrams come from.
const I_ADDR: &str = "192.0.2.1:51820";

struct Fixture {
    responder_public: PublicKey,
    initiator: PrivateKey,
    initiator_public: PublicKey,
    initiator_shared: StaticShared,
}

/// Key material computed once per process: scalar multiplications would
/// otherwise dominate every run.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let responder_public = PrivateKey::from_bytes(RESPONDER_KEY).public_key();
        let initiator = PrivateKey::from_bytes(INITIATOR_KEY);
        let shared = static_shared(&initiator, &responder_public);
        Fixture {
            responder_public,
            initiator_public: initiator.public_key(),
            initiator,
            initiator_shared: Arc::new([(responder_public, shared)].into_iter().collect()),
        }
    })
}

impl Fixture {
    fn identity(&self) -> Identity<'_> {
        Identity {
            private: &self.initiator,
            public: &self.initiator_public,
            static_shared: &self.initiator_shared,
        }
    }
}

fn i_addr() -> SocketAddr {
    I_ADDR.parse().expect("constant address")
}

/// Wall-clock time the device is told it started at: fixed, so handshake
/// timestamps depend only on the input.
fn wall_at_epoch() -> Duration {
    Duration::from_secs(1_700_000_000)
}

/// A TAI64N timestamp for `now` on the same wall clock the device uses.
fn timestamp(now: Instant) -> [u8; 12] {
    tai64n(wall_at_epoch() + now.saturating_duration_since(epoch()))
}

/// R, knowing I (with or without the preshared key), able to reach I.
fn responder(psk: bool, now: Instant) -> (Device, PeerId) {
    let mut dev = Device::new(
        PrivateKey::from_bytes(RESPONDER_KEY),
        Config::default(),
        Box::new(SeededEntropy::new(0x5eed)),
        now,
        UNIX_EPOCH + wall_at_epoch(),
    );
    let mut pc = PeerConfig::new(fixture().initiator_public);
    if psk {
        pc.preshared_key = PresharedKey::from_bytes(PRESHARED_KEY);
    }
    pc.endpoint = Some(i_addr());
    let peer = dev.upsert_peer(pc);
    (dev, peer)
}

/// The sender index of a handshake message, which R's answer must name.
fn sender_of(datagram: &[u8]) -> Option<u32> {
    match wg::parse(datagram) {
        Ok(Message::Initiation(m)) => Some(m.sender()),
        Ok(Message::Response(m)) => Some(m.sender()),
        _ => None,
    }
}
