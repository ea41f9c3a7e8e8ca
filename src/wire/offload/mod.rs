//! TUN offloads, sans-IO: the `virtio_net_hdr` that a TUN device opened
//! with `IFF_VNET_HDR` puts in front of every packet, the segmentation of
//! the kernel's TCP/UDP super-packets into MTU-sized packets ([`gso`]), and
//! the coalescing of in-order TCP segments of one flow into one super-packet
//! for the kernel ([`gro`]).
//!
//! Pure functions over bytes: no I/O, no allocation per packet, no panic on
//! hostile input (the kernel's header is trusted no more than a peer's
//! packet; the fuzz target `offload` drives both halves).
//!
//! # Where policy sees the packets
//!
//! The engine (policy, conntrack, spoof check) runs on every *segment's*
//! real headers, never on a super-packet:
//! - outbound (TUN -> peers): the TUN backend segments first
//!   ([`gso::Segments`]); the engine then sees one ordinary IP packet per
//!   segment, each with its own sequence number, flags and checksum;
//! - inbound (peers -> TUN): the engine judges every decrypted segment
//!   first; only the packets it passes are handed to the coalescer
//!   ([`gro::Coalescer`]), which merges them for the one `write` towards the
//!   kernel. Nothing the engine did not see is ever written.
//!
//! # The header
//!
//! `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), 10 bytes,
//! without the 2-byte `num_buffers` of the mergeable-buffers variant (the
//! TUN backend sets `TUNSETVNETHDRSZ` to 10; it has no use for
//! `num_buffers`, which TUN leaves zero anyway). Fields are in virtio
//! "legacy" byte order, which a TUN device without `TUNSETVNETBE` uses: the
//! host's, little-endian on every platform umbra ships for (x86-64,
//! aarch64).

pub mod build;
pub mod gro;
pub mod gso;

use std::fmt;

/// Length of the header umbra uses (`virtio_net_hdr` without
/// `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// The largest IP packet either direction handles: an IPv6 header plus the
/// largest payload length, which is also more than any IPv4 datagram.
pub const MAX_PACKET: usize = 40 + 65535;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` holds only the pseudo-header sum; the receiver completes it
/// over `csum_start..`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO, fragmenting UDP; never enabled by umbra).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO: UDP segmentation, either family).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP super-packet carries CWR (a bit on
/// top of the type).
pub const GSO_ECN: u8 = 0x80;

/// One `virtio_net_hdr`, decoded. Any 10 bytes decode; whether the fields
/// make sense for the packet behind them is [`gso::Segments::new`]'s call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers in front of the segmented payload (the
    /// kernel's value is only a hint: `skb_headlen`, which may be more).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed region starts (the transport header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header of a plain packet: no GSO, checksum complete.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Splits `buf` into its header and the packet behind it.
    pub fn split(buf: &[u8]) -> Result<(VnetHdr, &[u8]), OffloadError> {
        let (h, rest) = buf
            .split_first_chunk::<VNET_HDR_LEN>()
            .ok_or(OffloadError::Truncated)?;
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Ok((
            VnetHdr {
                flags: h[0],
                gso_type: h[1],
                hdr_len: u16_at(2),
                gso_size: u16_at(4),
                csum_start: u16_at(6),
                csum_offset: u16_at(8),
            },
            rest,
        ))
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut o = [0u8; VNET_HDR_LEN];
        o[0] = self.flags;
        o[1] = self.gso_type;
        o[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        o[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        o[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        o[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        o
    }
}

/// Why a packet from the kernel was dropped instead of segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffloadError {
    /// Shorter than the virtio header, or than a header the packet declares.
    Truncated,
    /// A `gso_type` umbra does not segment (UFO, or an unknown value).
    GsoType,
    /// A GSO packet with `gso_size` 0.
    ZeroGsoSize,
    /// `hdr_len` beyond the packet.
    HeaderLen,
    /// `csum_start`/`csum_offset` outside the packet, or not where the
    /// transport's checksum field is.
    ChecksumRange,
    /// The packet is not what `gso_type` says: wrong IP version or
    /// transport, an IPv4 fragment or options-bearing IPv6 (extension
    /// headers), a malformed IP or transport header.
    Protocol,
    /// A segment does not fit the caller's buffer (bigger than the MTU the
    /// caller sized it for).
    SegmentTooBig,
    /// Asked for a segment past the last.
    NoSuchSegment,
}

impl OffloadError {
    /// A short name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OffloadError::Truncated => "truncated",
            OffloadError::GsoType => "gso_type",
            OffloadError::ZeroGsoSize => "gso_size_zero",
            OffloadError::HeaderLen => "hdr_len",
            OffloadError::ChecksumRange => "csum_range",
            OffloadError::Protocol => "protocol",
            OffloadError::SegmentTooBig => "segment_too_big",
            OffloadError::NoSuchSegment => "no_such_segment",
        }
    }
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadError::Truncated => "packet shorter than its virtio or IP header declares",
            OffloadError::GsoType => "unsupported gso_type",
            OffloadError::ZeroGsoSize => "GSO packet with gso_size 0",
            OffloadError::HeaderLen => "hdr_len beyond the packet",
            OffloadError::ChecksumRange => "csum_start/csum_offset out of range",
            OffloadError::Protocol => "packet does not match its gso_type",
            OffloadError::SegmentTooBig => "segment larger than the output buffer",
            OffloadError::NoSuchSegment => "segment index past the last segment",
        })
    }
}

impl std::error::Error for OffloadError {}

#[cfg(test)]
mod tests;
