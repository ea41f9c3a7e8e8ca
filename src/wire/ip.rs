//! Definitions shared by IPv4 and IPv6.

use std::fmt;

use super::Error;

/// An IP protocol / IPv6 next-header number (IANA "Assigned Internet
/// Protocol Numbers"). A newtype rather than an enum because any of the 256
/// values can appear on the wire and policy may name any of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    /// ICMP for IPv4.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 routing header.
    pub const IPV6_ROUTING: IpProtocol = IpProtocol(43);
    /// IPv6 fragment header.
    pub const IPV6_FRAGMENT: IpProtocol = IpProtocol(44);
    /// Encapsulating security payload.
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication header.
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMP for IPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 "no next header".
    pub const IPV6_NO_NEXT: IpProtocol = IpProtocol(59);
    /// IPv6 destination options.
    pub const IPV6_DEST_OPTS: IpProtocol = IpProtocol(60);

    /// Whether this is ICMP of either family.
    pub fn is_icmp(self) -> bool {
        self == Self::ICMP || self == Self::ICMPV6
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("icmp"),
            Self::TCP => f.write_str("tcp"),
            Self::UDP => f.write_str("udp"),
            Self::ICMPV6 => f.write_str("icmpv6"),
            IpProtocol(n) => write!(f, "proto-{n}"),
        }
    }
}

impl From<u8> for IpProtocol {
    fn from(n: u8) -> Self {
        IpProtocol(n)
    }
}

/// IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpVersion {
    /// Reads the version nibble of a packet's first byte.
    pub fn of(packet: &[u8]) -> Result<IpVersion, Error> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => Ok(IpVersion::V4),
            Some(6) => Ok(IpVersion::V6),
            Some(_) => Err(Error::UnknownVersion),
            None => Err(Error::Truncated),
        }
    }
}

/// Reads a big-endian u16 at `at`, or `None` past the end.
pub(crate) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    match buf.get(at..at.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

/// Reads a big-endian u32 at `at`, or `None` past the end.
pub(crate) fn be32(buf: &[u8], at: usize) -> Option<u32> {
    match buf.get(at..at.checked_add(4)?) {
        Some(&[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

/// Writes a big-endian u16 at `at`; `BufferTooSmall` past the end.
pub(crate) fn put16(buf: &mut [u8], at: usize, v: u16) -> Result<(), Error> {
    buf.get_mut(at..at + 2)
        .ok_or(Error::BufferTooSmall)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Writes a big-endian u32 at `at`; `BufferTooSmall` past the end.
pub(crate) fn put32(buf: &mut [u8], at: usize, v: u32) -> Result<(), Error> {
    buf.get_mut(at..at + 4)
        .ok_or(Error::BufferTooSmall)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}
