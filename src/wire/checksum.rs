//! The Internet checksum (RFC 1071) and the pseudo-headers TCP, UDP and
//! ICMPv6 include in theirs.

use std::net::IpAddr;

/// A running one's-complement sum.
///
/// Bytes are added in 16-bit big-endian words; every slice passed to
/// [`Checksum::add_bytes`] except the last must have even length, which is
/// how the checksummed structures are laid out anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum(u64);

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Checksum(0)
    }

    /// Adds a run of bytes, padding an odd final byte with zero.
    pub fn add_bytes(&mut self, data: &[u8]) -> &mut Self {
        // The one's-complement sum does not depend on byte order (RFC 1071
        // section 2(B)): sum native-endian 32-bit words, which the compiler
        // vectorises, fold, and swap the folded sum into network order. A
        // u64 cannot overflow for any packet we could be handed (it would
        // take 2^32 words).
        let mut words = data.chunks_exact(4);
        let mut native = 0u64;
        for w in &mut words {
            native += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        }
        let folded = fold64(native);
        self.0 += u64::from(if cfg!(target_endian = "little") {
            folded.swap_bytes()
        } else {
            folded
        });
        let mut pairs = words.remainder().chunks_exact(2);
        for p in &mut pairs {
            self.0 += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let [last] = pairs.remainder() {
            self.0 += u64::from(*last) << 8;
        }
        self
    }

    /// Adds one 16-bit word.
    pub fn add_u16(&mut self, v: u16) -> &mut Self {
        self.0 += u64::from(v);
        self
    }

    /// Adds a 32-bit value as two words.
    pub fn add_u32(&mut self, v: u32) -> &mut Self {
        self.0 += u64::from(v >> 16) + u64::from(v & 0xffff);
        self
    }

    /// Adds an address's bytes.
    pub fn add_addr(&mut self, addr: IpAddr) -> &mut Self {
        match addr {
            IpAddr::V4(a) => self.add_bytes(&a.octets()),
            IpAddr::V6(a) => self.add_bytes(&a.octets()),
        }
    }

    /// The folded sum, not complemented. A region whose checksum field is
    /// correct sums to `0xffff`.
    pub fn fold(self) -> u16 {
        fold64(self.0)
    }

    /// The value to store in a checksum field: the complemented fold.
    pub fn finish(self) -> u16 {
        !self.fold()
    }

    /// Whether a region that includes its own checksum field verifies.
    pub fn verifies(self) -> bool {
        // Both 0x0000 and 0xffff represent zero in one's complement.
        matches!(self.fold(), 0xffff | 0)
    }
}

/// Folds a sum of 16-bit words into 16 bits, end-around carry included.
fn fold64(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum of `data` alone (the IPv4 header and ICMPv4 case).
pub fn of(data: &[u8]) -> u16 {
    let mut c = Checksum::new();
    c.add_bytes(data);
    c.finish()
}

/// The sum of the pseudo-header that TCP, UDP and ICMPv6 prepend: addresses,
/// protocol and upper-layer length (RFC 793 / RFC 8200 section 8.1). The
/// two addresses must be of the same family.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: u32) -> Checksum {
    let mut c = Checksum::new();
    c.add_addr(src).add_addr(dst).add_u16(u16::from(protocol));
    c.add_u32(len);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let mut c = Checksum::new();
        c.add_bytes(&data);
        assert_eq!(c.fold(), 0xddf2);
    }

    #[test]
    fn odd_length_and_chunking_agree() {
        let data: Vec<u8> = (0..=250u8).collect();
        let mut whole = Checksum::new();
        whole.add_bytes(&data);
        let mut slow = 0u64;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u64::from(*b));
            slow += hi | lo;
        }
        assert_eq!(whole.fold(), Checksum(slow).fold());
    }

    /// The word-wise reference: 16-bit big-endian words, one at a time.
    fn reference(chunks: &[Vec<u8>]) -> u16 {
        let mut sum = 0u64;
        for data in chunks {
            for pair in data.chunks(2) {
                sum += (u64::from(pair[0]) << 8) | pair.get(1).map_or(0, |b| u64::from(*b));
            }
        }
        Checksum(sum).fold()
    }

    proptest::proptest! {
        #[test]
        fn sums_agree_with_the_word_by_word_reference(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..5),
            odd_tail in proptest::collection::vec(proptest::num::u8::ANY, 0..9),
        ) {
            // Every slice but the last has even length, as the contract says.
            let mut chunks: Vec<Vec<u8>> = chunks
                .into_iter()
                .map(|mut c| { c.truncate(c.len() & !1); c })
                .collect();
            chunks.push(odd_tail);
            let mut c = Checksum::new();
            for data in &chunks {
                c.add_bytes(data);
            }
            proptest::prop_assert_eq!(c.fold(), reference(&chunks));
        }

        #[test]
        fn all_ones_data_folds_to_0xffff(words in 1usize..2000) {
            let data = vec![0xffu8; words * 2];
            proptest::prop_assert_eq!(of(&data), 0);
        }
    }
}
