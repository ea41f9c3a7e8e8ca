//! Segmentation of what a TUN device with offloads hands over: TCP
//! super-packets (TSO, up to 64 KiB), UDP super-datagrams (USO), and plain
//! packets whose checksum the kernel left for us to complete.
//!
//! [`Segments::new`] validates a header + packet once; [`Segments::write`]
//! then writes segment `i` into the caller's buffer as a complete IP packet:
//! IPv4 total length, identification (+i) and header checksum; IPv6 payload
//! length; TCP sequence number advanced by `i * gso_size`, FIN and PSH only
//! on the last segment, CWR only on the first; the full TCP or UDP checksum.
//! The kernel's partial checksum is not trusted for segments: each one's is
//! computed from scratch.
//!
//! Limits, each a drop ([`OffloadError`]), never a panic: IPv6 packets with
//! extension headers before the transport header are not segmented (Linux
//! does not produce TSO/USO packets with them on a TUN device), nor are
//! IPv4 fragments, UFO (`GSO_UDP`) or unknown GSO types.

use std::net::IpAddr;

use super::{OffloadError, VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6};
use super::{GSO_UDP_L4, MAX_PACKET};
use crate::wire::checksum::{self, Checksum};
use crate::wire::ip::IpProtocol;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::tcp::{TcpFlags, TcpPacket};
use crate::wire::udp;

/// What [`Segments::write`] does to produce each segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain packet, copied as is.
    Whole,
    /// A plain packet whose checksum at `start + offset` must be completed
    /// over `start..` (the field holds the pseudo-header sum).
    Complete { start: usize, offset: usize },
    /// TCP segmentation; `v6` tells the IP family.
    Tcp { v6: bool },
    /// UDP segmentation (USO).
    Udp { v6: bool },
}

/// A validated plan for cutting one packet from the kernel into segments.
///
/// It does not borrow the packet (the TUN backend keeps both in one
/// struct), so [`Segments::write`] takes the packet again and re-checks
/// every range it reads: given another packet it fails, it does not panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    kind: Kind,
    /// Offset of the transport header (0 for `Whole`/`Complete`).
    l4: usize,
    /// Bytes of headers repeated in every segment (IP + transport).
    hdr_len: usize,
    /// Payload bytes per segment (the whole packet for plain ones).
    gso_size: usize,
    /// Length of the packet (IP total length; link padding excluded).
    len: usize,
    count: usize,
}

impl Segments {
    /// Validates `hdr` against `packet` (the bytes after the header).
    pub fn new(hdr: &VnetHdr, packet: &[u8]) -> Result<Segments, OffloadError> {
        let gso_type = hdr.gso_type & !GSO_ECN;
        if gso_type == GSO_NONE {
            return Self::plain(hdr, packet);
        }
        let (v6, tcp) = match gso_type {
            GSO_TCPV4 => (false, true),
            GSO_TCPV6 => (true, true),
            GSO_UDP_L4 => (packet.first().is_some_and(|b| b >> 4 == 6), false),
            _ => return Err(OffloadError::GsoType),
        };
        if hdr.gso_size == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        if usize::from(hdr.hdr_len) > packet.len() {
            return Err(OffloadError::HeaderLen);
        }
        let want = if tcp {
            IpProtocol::TCP
        } else {
            IpProtocol::UDP
        };
        let (l4, len) = if v6 {
            ip6_transport(packet, want)?
        } else {
            ip4_transport(packet, want)?
        };
        let transport = packet.get(l4..len).ok_or(OffloadError::Truncated)?;
        let (l4_len, csum_field) = if tcp {
            let t = TcpPacket::new_checked(transport).map_err(|_| OffloadError::Protocol)?;
            (t.header_len(), 16)
        } else {
            udp_header(transport)?;
            (udp::HEADER_LEN, 6)
        };
        if hdr.flags & F_NEEDS_CSUM != 0
            && (usize::from(hdr.csum_start) != l4 || usize::from(hdr.csum_offset) != csum_field)
        {
            return Err(OffloadError::ChecksumRange);
        }
        let hdr_len = l4 + l4_len;
        let gso_size = usize::from(hdr.gso_size);
        let payload = len - hdr_len;
        Ok(Segments {
            kind: if tcp {
                Kind::Tcp { v6 }
            } else {
                Kind::Udp { v6 }
            },
            l4,
            hdr_len,
            gso_size,
            len,
            count: payload.div_ceil(gso_size).max(1),
        })
    }

    fn plain(hdr: &VnetHdr, packet: &[u8]) -> Result<Segments, OffloadError> {
        let len = packet.len().min(MAX_PACKET);
        let kind = if hdr.flags & F_NEEDS_CSUM != 0 {
            let start = usize::from(hdr.csum_start);
            let offset = usize::from(hdr.csum_offset);
            // The field (2 bytes) must lie inside the checksummed region.
            if start.saturating_add(offset).saturating_add(2) > len {
                return Err(OffloadError::ChecksumRange);
            }
            Kind::Complete { start, offset }
        } else {
            Kind::Whole
        };
        Ok(Segments {
            kind,
            l4: 0,
            hdr_len: 0,
            gso_size: len,
            len,
            count: 1,
        })
    }

    /// How many segments the packet yields (at least 1).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether this was a GSO super-packet (as opposed to a plain packet).
    pub fn is_gso(&self) -> bool {
        matches!(self.kind, Kind::Tcp { .. } | Kind::Udp { .. })
    }

    /// The length of the longest segment (the first): what the caller's
    /// buffer must hold.
    pub fn max_segment_len(&self) -> usize {
        self.hdr_len + self.gso_size.min(self.len - self.hdr_len)
    }

    /// Writes segment `i` of `packet` into `out`; returns its length.
    pub fn write(&self, packet: &[u8], i: usize, out: &mut [u8]) -> Result<usize, OffloadError> {
        if i >= self.count {
            return Err(OffloadError::NoSuchSegment);
        }
        let packet = packet.get(..self.len).ok_or(OffloadError::Truncated)?;
        let start = self.hdr_len + i * self.gso_size;
        let take = self.gso_size.min(self.len - start.min(self.len));
        let n = self.hdr_len + take;
        let out = out.get_mut(..n).ok_or(OffloadError::SegmentTooBig)?;
        let (headers, payload) = out.split_at_mut(self.hdr_len);
        headers.copy_from_slice(packet.get(..self.hdr_len).ok_or(OffloadError::Truncated)?);
        payload.copy_from_slice(
            packet
                .get(start..start + take)
                .ok_or(OffloadError::Truncated)?,
        );
        match self.kind {
            Kind::Whole => {}
            Kind::Complete { start, offset } => complete(out, start, offset)?,
            Kind::Tcp { v6 } | Kind::Udp { v6 } => {
                let (src, dst) = if v6 {
                    fix_ipv6(out)?
                } else {
                    fix_ipv4(out, i)?
                };
                let tcp = matches!(self.kind, Kind::Tcp { .. });
                let l4 = out.get_mut(self.l4..).ok_or(OffloadError::Truncated)?;
                let last = i + 1 == self.count;
                if tcp {
                    fix_tcp(l4, i, self.gso_size, last, src, dst)?;
                } else {
                    fix_udp(l4, src, dst)?;
                }
            }
        }
        Ok(n)
    }
}

/// The transport offset and IP total length of an IPv4 packet carrying
/// `want`, unfragmented.
fn ip4_transport(packet: &[u8], want: IpProtocol) -> Result<(usize, usize), OffloadError> {
    let ip = Ipv4Packet::new_truncated(packet).map_err(|_| OffloadError::Protocol)?;
    let len = usize::from(ip.total_len());
    if len > packet.len() {
        return Err(OffloadError::Truncated);
    }
    if len < ip.header_len() || ip.protocol() != want || ip.is_fragment() {
        return Err(OffloadError::Protocol);
    }
    Ok((ip.header_len(), len))
}

/// The same for IPv6, the transport header right after the fixed header.
fn ip6_transport(packet: &[u8], want: IpProtocol) -> Result<(usize, usize), OffloadError> {
    let ip = Ipv6Packet::new_checked(packet).map_err(|e| match e {
        crate::wire::Error::Truncated => OffloadError::Truncated,
        _ => OffloadError::Protocol,
    })?;
    if ip.next_header() != want {
        return Err(OffloadError::Protocol);
    }
    Ok((ipv6::HEADER_LEN, ip.as_bytes().len()))
}

fn udp_header(transport: &[u8]) -> Result<(), OffloadError> {
    if transport.len() < udp::HEADER_LEN {
        return Err(OffloadError::Protocol);
    }
    Ok(())
}

fn get2(buf: &[u8], at: usize) -> Result<u16, OffloadError> {
    crate::wire::ip::be16(buf, at).ok_or(OffloadError::Truncated)
}

fn put2(buf: &mut [u8], at: usize, v: u16) -> Result<(), OffloadError> {
    crate::wire::ip::put16(buf, at, v).map_err(|_| OffloadError::Truncated)
}

/// Completes a partial checksum: the field holds the pseudo-header sum, the
/// result covers `start..` of the packet. A zero result is stored as
/// 0xffff (the same value in one's complement, and the only one UDP allows).
pub(crate) fn complete(out: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let region = out.get(start..).ok_or(OffloadError::ChecksumRange)?;
    let mut c = Checksum::new();
    c.add_bytes(region);
    let v = match c.finish() {
        0 => 0xffff,
        v => v,
    };
    put2(out, start + offset, v).map_err(|_| OffloadError::ChecksumRange)
}

/// Sets an IPv4 segment's total length, identification and header
/// checksum; returns its addresses.
fn fix_ipv4(out: &mut [u8], i: usize) -> Result<(IpAddr, IpAddr), OffloadError> {
    let total = u16::try_from(out.len()).map_err(|_| OffloadError::SegmentTooBig)?;
    put2(out, 2, total)?;
    let id = get2(out, 4)?.wrapping_add(i as u16);
    put2(out, 4, id)?;
    put2(out, 10, 0)?;
    let ip = Ipv4Packet::new_truncated(out).map_err(|_| OffloadError::Protocol)?;
    let sum = checksum::of(ip.header());
    let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
    put2(out, 10, sum)?;
    Ok((src, dst))
}

/// Sets an IPv6 segment's payload length; returns its addresses.
fn fix_ipv6(out: &mut [u8]) -> Result<(IpAddr, IpAddr), OffloadError> {
    let payload = out
        .len()
        .checked_sub(ipv6::HEADER_LEN)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(OffloadError::SegmentTooBig)?;
    put2(out, 4, payload)?;
    let ip = Ipv6Packet::new_truncated(out).map_err(|_| OffloadError::Protocol)?;
    Ok((ip.src_addr().into(), ip.dst_addr().into()))
}

fn fix_tcp(
    l4: &mut [u8],
    i: usize,
    gso_size: usize,
    last: bool,
    src: IpAddr,
    dst: IpAddr,
) -> Result<(), OffloadError> {
    let seq = crate::wire::ip::be32(l4, 4).ok_or(OffloadError::Truncated)?;
    let seq = seq.wrapping_add((i as u32).wrapping_mul(gso_size as u32));
    crate::wire::ip::put32(l4, 4, seq).map_err(|_| OffloadError::Truncated)?;
    let flags = l4.get_mut(13).ok_or(OffloadError::Truncated)?;
    if !last {
        *flags &= !(TcpFlags::FIN.0 | TcpFlags::PSH.0);
    }
    if i != 0 {
        *flags &= !TcpFlags::CWR.0;
    }
    transport_checksum(l4, 16, IpProtocol::TCP, src, dst)
}

fn fix_udp(l4: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<(), OffloadError> {
    let len = u16::try_from(l4.len()).map_err(|_| OffloadError::SegmentTooBig)?;
    put2(l4, 4, len)?;
    transport_checksum(l4, 6, IpProtocol::UDP, src, dst)
}

/// Computes a transport checksum from scratch over pseudo-header + `l4`.
fn transport_checksum(
    l4: &mut [u8],
    field: usize,
    proto: IpProtocol,
    src: IpAddr,
    dst: IpAddr,
) -> Result<(), OffloadError> {
    put2(l4, field, 0)?;
    let mut c = checksum::pseudo_header(src, dst, proto.0, l4.len() as u32);
    c.add_bytes(l4);
    let v = match c.finish() {
        // UDP reserves 0 for "no checksum"; 0xffff is the same value.
        0 if proto == IpProtocol::UDP => 0xffff,
        v => v,
    };
    put2(l4, field, v)
}
