//! Reject replies: the TCP reset or ICMP "destination unreachable" a host
//! would send back, for policy rules whose action is `reject`.
//!
//! Denied packets normally vanish (cloaking); a `reject` rule instead makes
//! the refusal look like what the destination itself would answer, so the
//! reply is sourced from the offending packet's destination address.

use std::net::IpAddr;

use super::checksum::{self, Checksum};
use super::classify::{classify, IcmpKind, PacketInfo, Transport};
use super::icmp::{self, v4, v6};
use super::ip::{put16, put32, IpProtocol};
use super::tcp::TcpFlags;
use super::{ipv4, ipv6, tcp, Error};

/// Largest ICMPv4 error we build: RFC 1812 section 4.3.2.3 says to quote as
/// much as fits without the error exceeding 576 bytes.
pub const MAX_ICMPV4_REPLY: usize = 576;

/// Largest ICMPv6 error we build: the IPv6 minimum MTU (RFC 4443 section
/// 2.4 (c)).
pub const MAX_ICMPV6_REPLY: usize = 1280;

/// Buffer size that always suffices for [`reject`].
pub const MAX_REPLY_LEN: usize = MAX_ICMPV6_REPLY;

/// How to refuse a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RejectWith {
    /// Look like a host with nothing listening: a TCP RST for TCP, ICMP
    /// port unreachable for UDP, administratively prohibited otherwise.
    #[default]
    Closed,
    /// ICMP port unreachable for every protocol.
    PortUnreachable,
    /// ICMP administratively prohibited for every protocol (ICMPv4 type 3
    /// code 13, ICMPv6 type 1 code 1).
    AdminProhibited,
}

/// Writes into `out` the reply refusing `offending`, and returns its
/// length; `Ok(None)` when no reply may be sent at all.
///
/// No reply is sent (RFC 1122 section 3.2.2, RFC 4443 section 2.4 (e),
/// RFC 9293) to: a later fragment, an ICMP error, a TCP RST, a packet from
/// an unspecified, multicast, broadcast or loopback source, or to a
/// multicast or broadcast destination. Fails if `offending` does not
/// classify, or if `out` cannot hold even a minimal reply; an ICMP error
/// quotes as much of the offending packet as `out` and the size limits
/// allow. [`MAX_REPLY_LEN`] bytes always suffice.
pub fn reject(offending: &[u8], with: RejectWith, out: &mut [u8]) -> Result<Option<usize>, Error> {
    let info = classify(offending)?;
    if !may_reply(&info) {
        return Ok(None);
    }
    match (info.transport, with) {
        (Transport::Tcp { .. }, RejectWith::Closed) => tcp_reset(&info, out).map(Some),
        _ => {
            let quote = offending.get(..info.packet_len).ok_or(Error::Truncated)?;
            icmp_unreachable(&info, with, quote, out).map(Some)
        }
    }
}

fn may_reply(info: &PacketInfo) -> bool {
    if info.is_later_fragment() {
        return false;
    }
    match info.transport {
        Transport::Icmp {
            kind: IcmpKind::Error(_),
            ..
        } => return false,
        Transport::Tcp { flags, .. } if flags.contains(TcpFlags::RST) => return false,
        _ => {}
    }
    let bad_src = match info.src {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || a.is_loopback(),
    };
    let bad_dst = match info.dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    };
    !bad_src && !bad_dst
}

/// Writes the IP header of a reply from `info.dst` to `info.src`; returns
/// the header length.
fn reply_header(
    info: &PacketInfo,
    protocol: IpProtocol,
    payload_len: usize,
    out: &mut [u8],
) -> Result<usize, Error> {
    match (info.dst, info.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4::emit_header(out, s, d, protocol, payload_len)?;
            Ok(ipv4::HEADER_LEN)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6::emit_header(out, s, d, protocol, payload_len)?;
            Ok(ipv6::HEADER_LEN)
        }
        _ => Err(Error::Malformed),
    }
}

/// RFC 9293 section 3.10.7.1: answer a segment with ACK by a RST at its
/// acknowledgment number; answer one without by a RST|ACK acknowledging
/// everything it occupied, so the sender accepts the reset.
fn tcp_reset(info: &PacketInfo, out: &mut [u8]) -> Result<usize, Error> {
    let Transport::Tcp {
        src_port,
        dst_port,
        flags,
        seq,
        ack,
    } = info.transport
    else {
        return Err(Error::Malformed);
    };
    let (rst_seq, rst_ack, rst_flags) = if flags.contains(TcpFlags::ACK) {
        (ack, 0, TcpFlags::RST)
    } else {
        let occupied = info.payload_len as u32
            + u32::from(flags.contains(TcpFlags::SYN))
            + u32::from(flags.contains(TcpFlags::FIN));
        (0, seq.wrapping_add(occupied), TcpFlags::RST | TcpFlags::ACK)
    };
    let hl = reply_header(info, IpProtocol::TCP, tcp::HEADER_LEN, out)?;
    let seg = out
        .get_mut(hl..hl + tcp::HEADER_LEN)
        .ok_or(Error::BufferTooSmall)?;
    seg.fill(0);
    put16(seg, 0, dst_port)?;
    put16(seg, 2, src_port)?;
    put32(seg, 4, rst_seq)?;
    put32(seg, 8, rst_ack)?;
    put16(seg, 12, (5 << 12) | u16::from(rst_flags.0))?;
    let mut c = checksum::pseudo_header(
        info.dst,
        info.src,
        IpProtocol::TCP.0,
        tcp::HEADER_LEN as u32,
    );
    c.add_bytes(seg);
    put16(seg, 16, c.finish())?;
    Ok(hl + tcp::HEADER_LEN)
}

fn icmp_unreachable(
    info: &PacketInfo,
    with: RejectWith,
    quote: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    let udp = matches!(info.transport, Transport::Udp { .. });
    let port_unreachable = match with {
        RejectWith::PortUnreachable => true,
        RejectWith::Closed => udp,
        RejectWith::AdminProhibited => false,
    };
    let (protocol, hl, limit, msg_type, code) = match info.src {
        IpAddr::V4(_) => (
            IpProtocol::ICMP,
            ipv4::HEADER_LEN,
            MAX_ICMPV4_REPLY,
            v4::DEST_UNREACHABLE,
            if port_unreachable {
                v4::CODE_PORT_UNREACHABLE
            } else {
                v4::CODE_ADMIN_PROHIBITED
            },
        ),
        IpAddr::V6(_) => (
            IpProtocol::ICMPV6,
            ipv6::HEADER_LEN,
            MAX_ICMPV6_REPLY,
            v6::DEST_UNREACHABLE,
            if port_unreachable {
                v6::CODE_PORT_UNREACHABLE
            } else {
                v6::CODE_ADMIN_PROHIBITED
            },
        ),
    };
    // The quote must at least hold the offending IP headers and 8 bytes
    // more, or the receiver cannot match the error to its socket.
    let min_quote = (info.transport_offset + 8).min(quote.len());
    let room = limit.min(out.len()).saturating_sub(hl + icmp::HEADER_LEN);
    if room < min_quote {
        return Err(Error::BufferTooSmall);
    }
    let quote = quote.get(..quote.len().min(room)).ok_or(Error::Truncated)?;
    let icmp_len = icmp::HEADER_LEN + quote.len();
    reply_header(info, protocol, icmp_len, out)?;
    let msg = out
        .get_mut(hl..hl + icmp_len)
        .ok_or(Error::BufferTooSmall)?;
    let (head, body) = msg.split_at_mut(icmp::HEADER_LEN);
    head.copy_from_slice(&[msg_type, code, 0, 0, 0, 0, 0, 0]);
    body.copy_from_slice(quote);
    let mut c = match info.src {
        IpAddr::V4(_) => Checksum::new(),
        IpAddr::V6(_) => checksum::pseudo_header(info.dst, info.src, protocol.0, icmp_len as u32),
    };
    c.add_bytes(msg);
    put16(msg, 2, c.finish())?;
    Ok(hl + icmp_len)
}
