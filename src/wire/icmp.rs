//! ICMP for IPv4 (RFC 792) and IPv6 (RFC 4443). Both share the 8-byte
//! header layout (type, code, checksum, four message-specific bytes); only
//! the type numbers differ.

use std::net::IpAddr;

use super::checksum;
use super::ip::{IpProtocol, IpVersion};
use super::Error;

/// Length of the ICMP header, including the four message-specific bytes.
pub const HEADER_LEN: usize = 8;

/// ICMPv4 message types and codes used here.
pub mod v4 {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, still an error).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Destination unreachable code: protocol unreachable.
    pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
    /// Destination unreachable code: port unreachable.
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    /// Destination unreachable code: communication administratively
    /// prohibited (RFC 1812).
    pub const CODE_ADMIN_PROHIBITED: u8 = 13;
}

/// ICMPv6 message types and codes used here.
pub mod v6 {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Destination unreachable code: administratively prohibited.
    pub const CODE_ADMIN_PROHIBITED: u8 = 1;
    /// Destination unreachable code: port unreachable.
    pub const CODE_PORT_UNREACHABLE: u8 = 4;
}

/// What an ICMP message is, as far as flow tracking cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpClass {
    /// Echo request (ping).
    EchoRequest,
    /// Echo reply.
    EchoReply,
    /// An error carrying (part of) the packet that caused it.
    Error,
    /// Anything else (timestamps, neighbour discovery, router adverts, ...).
    Other,
}

impl IcmpClass {
    /// Classifies a message type of the given IP version.
    pub fn of(version: IpVersion, msg_type: u8) -> IcmpClass {
        match (version, msg_type) {
            (IpVersion::V4, v4::ECHO_REQUEST) | (IpVersion::V6, v6::ECHO_REQUEST) => {
                IcmpClass::EchoRequest
            }
            (IpVersion::V4, v4::ECHO_REPLY) | (IpVersion::V6, v6::ECHO_REPLY) => {
                IcmpClass::EchoReply
            }
            (
                IpVersion::V4,
                v4::DEST_UNREACHABLE
                | v4::SOURCE_QUENCH
                | v4::REDIRECT
                | v4::TIME_EXCEEDED
                | v4::PARAMETER_PROBLEM,
            ) => IcmpClass::Error,
            // RFC 4443 section 2.1: types 0-127 are errors.
            (IpVersion::V6, t) if t < 128 => IcmpClass::Error,
            _ => IcmpClass::Other,
        }
    }
}

/// A read-only view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<'a> {
    hdr: &'a [u8; HEADER_LEN],
    buf: &'a [u8],
}

impl<'a> IcmpPacket<'a> {
    /// Validates that the 8-byte header is present.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let hdr = buf.first_chunk().ok_or(Error::Truncated)?;
        Ok(IcmpPacket { hdr, buf })
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.hdr[0]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.hdr[1]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.hdr[2], self.hdr[3]])
    }

    /// Echo identifier (meaningful for echo request and reply).
    pub fn echo_ident(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    /// Echo sequence number (meaningful for echo request and reply).
    pub fn echo_seq(&self) -> u16 {
        u16::from_be_bytes([self.hdr[6], self.hdr[7]])
    }

    /// The four message-specific bytes (MTU for packet-too-big, pointer for
    /// parameter problem, unused for destination unreachable).
    pub fn rest_of_header(&self) -> u32 {
        u32::from_be_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    /// Everything after the 8-byte header: echo data, or for an error the
    /// start of the offending packet.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Verifies the checksum. ICMPv4 covers the message alone; ICMPv6 adds
    /// the pseudo-header.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let mut c = match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => checksum::Checksum::new(),
            _ => checksum::pseudo_header(src, dst, IpProtocol::ICMPV6.0, self.buf.len() as u32),
        };
        c.add_bytes(self.buf);
        c.verifies()
    }
}
