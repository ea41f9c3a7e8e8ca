//! The one error type of the inner-packet parsers.

use std::fmt;

/// Why bytes could not be read as a packet.
///
/// The variants are coarse on purpose: the enforcement path drops every
/// packet that fails to parse, and the distinction only matters for counters
/// and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before a header, or before a length a header declares.
    Truncated,
    /// The IP version nibble is neither 4 nor 6.
    UnknownVersion,
    /// A header field holds an impossible value (IHL < 5, TCP data offset
    /// < 5, a UDP length shorter than its header, a hop-by-hop header that
    /// is not first, a TCP fragment at offset 8, ...).
    Malformed,
    /// The IPv4 header checksum does not verify.
    Checksum,
    /// An IPv6 packet chains more extension headers than we are willing to
    /// walk (see [`crate::wire::ipv6::MAX_EXTENSION_HEADERS`]).
    TooManyExtensionHeaders,
    /// The first fragment of a datagram does not hold the whole transport
    /// header, so its ports cannot be known (RFC 7112 forbids this for IPv6;
    /// for IPv4 it is the "tiny fragment" attack of RFC 1858).
    FragmentTooShort,
    /// The output buffer is too small for the packet to be written.
    BufferTooSmall,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "packet truncated",
            Error::UnknownVersion => "unknown IP version",
            Error::Malformed => "malformed header",
            Error::Checksum => "bad IPv4 header checksum",
            Error::TooManyExtensionHeaders => "too many IPv6 extension headers",
            Error::FragmentTooShort => "first fragment does not hold the transport header",
            Error::BufferTooSmall => "output buffer too small",
        })
    }
}

impl std::error::Error for Error {}
