//! The WireGuard protocol engine, as a sans-IO library.
//!
//! [`Device`] holds our static key and every peer. The edge feeds it
//! datagrams from the UDP socket ([`Device::handle_datagram`]), packets
//! from the tunnel ([`Device::encapsulate`]) and the passage of time
//! ([`Device::tick`]), and drains what it wants sent with
//! [`Device::poll_transmit`]. It never reads a clock, opens a socket or
//! spawns a thread, so tests can jump minutes ahead instantly and fuzzers
//! can drive it with arbitrary bytes.
//!
//! One file per concern, as in the WireGuard kernel sources: `handshake`
//! (Noise), `cookie` (mac1/mac2), `ratelimit`, `session` (one keypair's
//! transport keys), `keypairs` (a peer's current/previous/next keypairs and
//! their rotation), `replay`, `timers`, `peer` (one peer's state, changed
//! through event methods), and `device`: the types and peer table in
//! `device/mod.rs`, the receive path in `device/receive.rs`, the send path
//! and timers in `device/send.rs`, the handshake gate in `device/gate.rs`.

pub mod cookie;
pub mod crypto;
pub mod device;
pub mod handshake;
pub(crate) mod keypairs;
pub mod peer;
pub mod ratelimit;
pub mod replay;
pub mod session;
pub mod timers;
pub mod x25519;

pub use device::{Config, Device, Dropped, Received, SendError, Sent, Transmit};
pub use peer::{PeerConfig, PeerId, PeerStats};

/// Where the engine gets its randomness (ephemeral keys, indices, cookie
/// secrets, jitter). Injected so tests are reproducible.
pub trait Entropy: Send {
    fn fill(&mut self, buf: &mut [u8]);

    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }
}

/// The operating system's random source.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if getrandom::fill(buf).is_err() {
            // Continuing without randomness would mean predictable keys.
            eprintln!("umbra: the operating system random source failed; stopping");
            std::process::abort();
        }
    }
}

/// Deterministic randomness for tests, fuzzing and benchmarks: BLAKE2s in
/// counter mode over a seed. Never use it for real keys.
pub struct SeededEntropy {
    seed: u64,
    counter: u64,
}

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        SeededEntropy { seed, counter: 0 }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let block = crypto::hash(&[&self.seed.to_le_bytes(), &self.counter.to_le_bytes()]);
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}
