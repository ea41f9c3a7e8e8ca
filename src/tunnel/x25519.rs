//! X25519 (RFC 7748) Diffie-Hellman over curve25519-dalek's Montgomery ladder.
//!
//! One place for the curve arithmetic the handshake and the device use, with
//! the RFC's test vectors. (Lifting points to the Edwards curve to use the
//! AVX2 variable-base multiplication was measured: no faster here, see
//! BENCHMARKS.md, so the ladder stays.)

use curve25519_dalek::montgomery::MontgomeryPoint;

/// X25519(scalar, u): the shared secret, before any all-zero check.
pub fn x25519(scalar: [u8; 32], u: [u8; 32]) -> [u8; 32] {
    MontgomeryPoint(u).mul_clamped(scalar).to_bytes()
}

/// The public key for a private scalar (fixed-base, table-driven).
pub fn x25519_base(scalar: [u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(scalar).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_vectors() {
        // RFC 7748 §5.2, first test vector.
        let k = hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let out = hex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        assert_eq!(x25519(k, u), out);
        // §6.1: Alice and Bob agree.
        let a = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let b = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(x25519(a, x25519_base(b)), shared);
        assert_eq!(x25519(b, x25519_base(a)), shared);
    }

    #[test]
    fn low_order_points_give_zero() {
        // u = 0 and u = 1 are of small order: the result must be all zero
        // so the caller's check can refuse it.
        assert_eq!(x25519([9; 32], [0; 32]), [0; 32]);
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(x25519([9; 32], one), [0; 32]);
    }

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
