//! TCP headers (RFC 9293).

use std::fmt;
use std::net::IpAddr;

use super::checksum;
use super::ip::IpProtocol;
use super::Error;

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// The TCP flag bits (the low byte of the flags field; the historical NS
/// bit is ignored).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// SYN without ACK: the packet that opens a connection.
    pub fn is_syn_only(self) -> bool {
        self.contains(Self::SYN) && !self.contains(Self::ACK)
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// A read-only view of a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<'a> {
    hdr: &'a [u8; HEADER_LEN],
    buf: &'a [u8],
    header_len: usize,
}

impl<'a> TcpPacket<'a> {
    /// Validates that the header, options included, is within the buffer.
    /// The buffer is taken to be the whole segment (the IP layer has already
    /// cut it to the datagram's length).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let hdr: &[u8; HEADER_LEN] = buf.first_chunk().ok_or(Error::Truncated)?;
        let header_len = usize::from(hdr[12] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if buf.len() < header_len {
            return Err(Error::Truncated);
        }
        Ok(TcpPacket {
            hdr,
            buf,
            header_len,
        })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[0], self.hdr[1]])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        u32::from_be_bytes([self.hdr[8], self.hdr[9], self.hdr[10], self.hdr[11]])
    }

    /// Header length in bytes (data offset), options included.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.hdr[13])
    }

    /// Receive window.
    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.hdr[14], self.hdr[15]])
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.hdr[16], self.hdr[17]])
    }

    /// The data after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.header_len..).unwrap_or(&[])
    }

    /// How much sequence space the segment occupies: data plus one each for
    /// SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        self.payload().len() as u32
            + u32::from(f.contains(TcpFlags::SYN))
            + u32::from(f.contains(TcpFlags::FIN))
    }

    /// Verifies the checksum over the pseudo-header and the whole segment.
    /// Not done during classification: the receiving host checks it, and
    /// doing it on every forwarded packet would double the per-byte cost.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let mut c = checksum::pseudo_header(src, dst, IpProtocol::TCP.0, self.buf.len() as u32);
        c.add_bytes(self.buf);
        c.verifies()
    }
}
