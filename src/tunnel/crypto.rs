//! The primitives WireGuard uses outside the Noise handshake itself:
//! BLAKE2s hashing and keyed MACs, and TAI64N timestamps.

use std::time::Duration;

use blake2::digest::{Digest, FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac};

/// Output of keyed BLAKE2s-128 as WireGuard's mac1, mac2 and cookie use it.
pub type Mac = [u8; 16];

/// BLAKE2s-256 over the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// Keyed BLAKE2s with a 16-byte output over the concatenation of `parts`.
/// `key` is at most 32 bytes in every WireGuard use; a longer one yields a
/// MAC that matches nothing rather than a panic.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> Mac {
    let Ok(mut m) = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
    else {
        return [0xff; 16];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize_fixed().into()
}

/// A TAI64N label for a wall-clock time given as time since the Unix epoch:
/// 8 bytes of big-endian seconds offset by 2^62 (plus the 10 s TAI−UTC
/// offset of 1970, as wireguard-tools writes it), then 4 bytes of big-endian
/// nanoseconds.
pub fn tai64n(since_epoch: Duration) -> [u8; 12] {
    let secs = (1u64 << 62) + 10 + since_epoch.as_secs();
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&secs.to_be_bytes());
    out[8..].copy_from_slice(&since_epoch.subsec_nanos().to_be_bytes());
    out
}

/// Compares secrets without leaking where they differ through timing.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2s_known_answers() {
        // RFC 7693 appendix B: BLAKE2s-256("abc").
        assert_eq!(hash(&[b"ab", b"c"])[..4], [0x50, 0x8C, 0x5E, 0x8C]);
        assert_ne!(mac(&[1; 32], &[b"x"]), mac(&[2; 32], &[b"x"]));
        assert_eq!(mac(&[1; 32], &[b"xy"]), mac(&[1; 32], &[b"x", b"y"]));
    }

    #[test]
    fn tai64n_orders_like_time() {
        let a = tai64n(Duration::new(1_700_000_000, 5));
        let b = tai64n(Duration::new(1_700_000_000, 6));
        let c = tai64n(Duration::new(1_700_000_001, 0));
        assert!(a < b && b < c);
        assert_eq!(a[0], 0x40);
    }
}
