//! UDP headers (RFC 768).

use std::net::IpAddr;

use super::checksum;
use super::ip::{be16, IpProtocol};
use super::Error;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A read-only view of a UDP datagram, covering exactly its length field.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<'a> {
    hdr: &'a [u8; HEADER_LEN],
    buf: &'a [u8],
}

impl<'a> UdpPacket<'a> {
    /// Validates the header and that the length field is at least 8 and
    /// within the buffer.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let hdr: &[u8; HEADER_LEN] = buf.first_chunk().ok_or(Error::Truncated)?;
        let len = usize::from(be16(hdr, 4).unwrap_or(0));
        if len < HEADER_LEN {
            // Includes the IPv6 jumbogram convention of length 0, which a
            // tunnel never carries.
            return Err(Error::Malformed);
        }
        let buf = buf.get(..len).ok_or(Error::Truncated)?;
        Ok(UdpPacket { hdr, buf })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// The checksum field (0 means "none" over IPv4).
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.hdr[6], self.hdr[7]])
    }

    /// The data after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Verifies the checksum; an absent (zero) checksum passes over IPv4
    /// and fails over IPv6, where it is mandatory.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let mut c = checksum::pseudo_header(src, dst, IpProtocol::UDP.0, self.buf.len() as u32);
        c.add_bytes(self.buf);
        c.verifies()
    }
}
