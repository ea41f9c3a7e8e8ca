//! Definitions shared by IPv4 and IPv6.

use super::Error;

/// The protocol numbers live with the rest of the IP vocabulary in
/// [`crate::net`]; the packet views here speak them.
pub use crate::net::IpProtocol;

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
