//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::checksum;
use super::ip::IpProtocol;
use super::Error;

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// A read-only view of an IPv4 packet.
///
/// Built by [`Ipv4Packet::new_checked`], which validates everything the
/// accessors rely on; the view then covers exactly `total_len` bytes (link
/// padding after the datagram is not part of it).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    hdr: &'a [u8; HEADER_LEN],
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4Packet<'a> {
    /// Validates a complete datagram: version 4, IHL >= 5, header and total
    /// length within the buffer, and a correct header checksum.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let p = Self::parse_header(buf)?;
        let total = usize::from(p.total_len());
        if total < p.header_len {
            return Err(Error::Malformed);
        }
        let buf = buf.get(..total).ok_or(Error::Truncated)?;
        let header = buf.get(..p.header_len).ok_or(Error::Truncated)?;
        if !checksum_ok(header) {
            return Err(Error::Checksum);
        }
        Ok(Ipv4Packet { buf, ..p })
    }

    /// Validates only the header, for the copy of an original datagram that
    /// an ICMP error carries: that copy is cut short after 8 bytes of
    /// payload (or a few hundred), so its total length cannot be checked,
    /// and its header checksum is not ours to judge.
    pub fn new_truncated(buf: &'a [u8]) -> Result<Self, Error> {
        Self::parse_header(buf)
    }

    fn parse_header(buf: &'a [u8]) -> Result<Self, Error> {
        let hdr: &[u8; HEADER_LEN] = buf.first_chunk().ok_or(Error::Truncated)?;
        if hdr[0] >> 4 != 4 {
            return Err(Error::UnknownVersion);
        }
        let header_len = usize::from(hdr[0] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if buf.len() < header_len {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet {
            hdr,
            buf,
            header_len,
        })
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The DSCP/ECN byte.
    pub fn tos(&self) -> u8 {
        self.hdr[1]
    }

    /// The total length field.
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    /// The identification field, which groups the fragments of a datagram.
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.hdr[6] & 0x40 != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.hdr[6] & 0x20 != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (u16::from_be_bytes([self.hdr[6], self.hdr[7]]) & 0x1fff) << 3
    }

    /// Whether this datagram is a fragment (first or later).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.hdr[8]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.hdr[9])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.hdr[10], self.hdr[11]])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.hdr[12], self.hdr[13], self.hdr[14], self.hdr[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.hdr[16], self.hdr[17], self.hdr[18], self.hdr[19])
    }

    /// The header, options included.
    pub fn header(&self) -> &'a [u8] {
        self.buf.get(..self.header_len).unwrap_or(self.hdr)
    }

    /// The payload after the header (for a truncated view, whatever is left
    /// of the buffer).
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.header_len..).unwrap_or(&[])
    }
}

/// Whether an IPv4 header's checksum verifies.
pub fn checksum_ok(header: &[u8]) -> bool {
    let mut c = checksum::Checksum::new();
    c.add_bytes(header);
    c.verifies()
}

/// Writes a 20-byte IPv4 header without options, checksum included.
/// `payload_len` is the length of what follows the header.
pub fn emit_header(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    payload_len: usize,
) -> Result<(), Error> {
    let total = u16::try_from(HEADER_LEN + payload_len).map_err(|_| Error::BufferTooSmall)?;
    let hdr: &mut [u8; HEADER_LEN] = out.first_chunk_mut().ok_or(Error::BufferTooSmall)?;
    let [t0, t1] = total.to_be_bytes();
    // Version 4, IHL 5; DF set because nothing we originate needs splitting;
    // TTL 64 like a host stack.
    *hdr = [
        0x45, 0, t0, t1, 0, 0, 0x40, 0, 64, protocol.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    hdr[12..16].copy_from_slice(&src.octets());
    hdr[16..20].copy_from_slice(&dst.octets());
    let [c0, c1] = checksum::of(hdr).to_be_bytes();
    hdr[10] = c0;
    hdr[11] = c1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut p = vec![0u8; 28];
        emit_header(
            &mut p,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            IpProtocol::UDP,
            8,
        )
        .unwrap();
        p
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let v = Ipv4Packet::new_checked(&p).unwrap();
        assert_eq!(v.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(v.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(v.protocol(), IpProtocol::UDP);
        assert_eq!(v.payload().len(), 8);
        assert!(v.dont_frag() && !v.is_fragment());
    }

    #[test]
    fn rejects_bad_fields() {
        let mut p = sample();
        p[10] ^= 1;
        assert_eq!(Ipv4Packet::new_checked(&p).unwrap_err(), Error::Checksum);
        let p = sample();
        assert_eq!(
            Ipv4Packet::new_checked(&p[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut p = sample();
        p[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&p).unwrap_err(), Error::Malformed);
        // Trailing link padding is not part of the datagram.
        let mut p = sample();
        p.extend_from_slice(&[0xee; 6]);
        assert_eq!(Ipv4Packet::new_checked(&p).unwrap().payload().len(), 8);
    }
}
