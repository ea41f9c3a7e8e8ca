//! One-pass classification of an inner (decrypted or TUN-read) IP packet
//! into the fields the enforcement path decides on.
//!
//! [`classify`] validates the IP header (and the IPv6 extension-header
//! chain), reads the transport header if this packet carries one, and
//! returns a [`PacketInfo`] holding copies of the fields, so the caller can
//! drop the borrow of the buffer before deciding what to do with it.
//! Transport checksums are not verified: the receiving host does that, and
//! classification must stay cheap enough to run on every packet.

use std::net::IpAddr;

use super::icmp::{IcmpClass, IcmpPacket};
use super::ip::{be16, IpProtocol, IpVersion};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::tcp::{TcpFlags, TcpPacket};
use super::udp::UdpPacket;
use super::{tcp, udp, Error};

/// Everything enforcement needs to know about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Source address. On the inbound path this is what the spoofing check
    /// compares against the sending peer's allowed addresses.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after any IPv6 extension headers).
    pub protocol: IpProtocol,
    /// The transport header's fields, if this packet carries one.
    pub transport: Transport,
    /// Whether and how this packet is a fragment.
    pub fragment: Fragment,
    /// Length of the datagram (this fragment), IP headers included.
    pub packet_len: usize,
    /// Offset of the transport header (for a later fragment: of its data).
    pub transport_offset: usize,
    /// Bytes after the transport header: TCP or UDP data, ICMP body; for
    /// other protocols and later fragments, everything after the IP headers.
    pub payload_len: usize,
}

/// The transport-layer fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags.
        flags: TcpFlags,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
    },
    /// A UDP datagram.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// An ICMP message of the packet's own family (ICMP in IPv4, ICMPv6 in
    /// IPv6).
    Icmp {
        /// Message type.
        msg_type: u8,
        /// Message code.
        code: u8,
        /// What the message means for flow tracking.
        kind: IcmpKind,
    },
    /// No transport header to read: a protocol without ports (or ICMP of
    /// the wrong family), or a later fragment.
    None,
}

/// ICMP messages as flow tracking sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    /// Echo request.
    EchoRequest {
        /// Identifier, which pairs requests with replies.
        ident: u16,
        /// Sequence number.
        seq: u16,
    },
    /// Echo reply.
    EchoReply {
        /// Identifier, copied from the request.
        ident: u16,
        /// Sequence number, copied from the request.
        seq: u16,
    },
    /// An error about an earlier packet, described by what it quotes.
    Error(Embedded),
    /// Any other message.
    Other,
}

/// The original packet quoted in an ICMP error: its IP header and at least
/// the first 8 bytes after it, enough for ports or an echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedded {
    /// Source of the original packet (the receiver of the error, normally).
    pub src: IpAddr,
    /// Destination of the original packet.
    pub dst: IpAddr,
    /// Protocol of the original packet.
    pub protocol: IpProtocol,
    /// What could be read of its transport header.
    pub transport: EmbeddedTransport,
}

/// The part of the quoted transport header that identifies a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddedTransport {
    /// TCP or UDP ports.
    Ports {
        /// Source port of the original packet.
        src_port: u16,
        /// Destination port of the original packet.
        dst_port: u16,
    },
    /// An ICMP echo request or reply.
    Echo {
        /// Whether the quoted message was a request.
        request: bool,
        /// Its identifier.
        ident: u16,
    },
    /// Nothing usable (other protocol, later fragment, other ICMP).
    None,
}

/// Fragmentation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// A whole datagram (including IPv6 atomic fragments).
    None,
    /// The first fragment: offset 0, more fragments follow. It carries the
    /// transport header, so it is classified like a whole packet.
    First {
        /// Identification (IPv4's 16 bits widened, or IPv6's 32).
        ident: u32,
    },
    /// A later fragment: no transport header, so no ports. Enforcement may
    /// only pass it if the first fragment with the same (source,
    /// destination, protocol, ident) was passed.
    Later {
        /// Identification.
        ident: u32,
        /// Offset of the data in bytes.
        offset: u16,
        /// Whether more fragments follow.
        more: bool,
    },
}

impl PacketInfo {
    /// IP version.
    pub fn version(&self) -> IpVersion {
        match self.src {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    /// TCP or UDP (source, destination) ports.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// TCP or UDP destination port.
    pub fn dst_port(&self) -> Option<u16> {
        self.ports().map(|(_, d)| d)
    }

    /// TCP flags, for a TCP segment.
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        match self.transport {
            Transport::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }

    /// ICMP (type, code), for an ICMP message.
    pub fn icmp_type_code(&self) -> Option<(u8, u8)> {
        match self.transport {
            Transport::Icmp { msg_type, code, .. } => Some((msg_type, code)),
            _ => None,
        }
    }

    /// The fragment identification, for any fragment.
    pub fn fragment_ident(&self) -> Option<u32> {
        match self.fragment {
            Fragment::None => None,
            Fragment::First { ident } | Fragment::Later { ident, .. } => Some(ident),
        }
    }

    /// Whether this is a later fragment, which carries no ports and must
    /// not be judged by the policy on its own.
    pub fn is_later_fragment(&self) -> bool {
        matches!(self.fragment, Fragment::Later { .. })
    }
}

/// Classifies an IPv4 or IPv6 packet.
///
/// Fails on anything malformed or truncated, on an IPv4 header checksum
/// error, on a first fragment too short to hold its transport header, on a
/// TCP fragment at offset 8 or 16 (which could overwrite the first
/// fragment's header, RFC 1858), and on an ICMP error whose quoted packet
/// cannot be read. Enforcement drops every packet this rejects.
pub fn classify(packet: &[u8]) -> Result<PacketInfo, Error> {
    match IpVersion::of(packet)? {
        IpVersion::V4 => {
            let ip = Ipv4Packet::new_checked(packet)?;
            let ident = u32::from(ip.ident());
            let fragment = if ip.frag_offset() != 0 {
                Fragment::Later {
                    ident,
                    offset: ip.frag_offset(),
                    more: ip.more_frags(),
                }
            } else if ip.more_frags() {
                Fragment::First { ident }
            } else {
                Fragment::None
            };
            let src = IpAddr::V4(ip.src_addr());
            let dst = IpAddr::V4(ip.dst_addr());
            let (transport, payload_len) =
                transport(IpVersion::V4, ip.protocol(), ip.payload(), fragment)?;
            Ok(PacketInfo {
                src,
                dst,
                protocol: ip.protocol(),
                transport,
                fragment,
                packet_len: usize::from(ip.total_len()),
                transport_offset: ip.header_len(),
                payload_len,
            })
        }
        IpVersion::V6 => {
            let ip = Ipv6Packet::new_checked(packet)?;
            let up = ip.upper_layer()?;
            let fragment = match up.fragment {
                None => Fragment::None,
                Some(f) if f.offset == 0 => Fragment::First { ident: f.ident },
                Some(f) => Fragment::Later {
                    ident: f.ident,
                    offset: f.offset,
                    more: f.more,
                },
            };
            let bytes = ip.as_bytes();
            let payload = bytes.get(up.offset..).ok_or(Error::Truncated)?;
            let (transport, payload_len) =
                transport(IpVersion::V6, up.protocol, payload, fragment)?;
            Ok(PacketInfo {
                src: IpAddr::V6(ip.src_addr()),
                dst: IpAddr::V6(ip.dst_addr()),
                protocol: up.protocol,
                transport,
                fragment,
                packet_len: bytes.len(),
                transport_offset: up.offset,
                payload_len,
            })
        }
    }
}

fn icmp_protocol(version: IpVersion) -> IpProtocol {
    match version {
        IpVersion::V4 => IpProtocol::ICMP,
        IpVersion::V6 => IpProtocol::ICMPV6,
    }
}

/// Reads the transport header from `payload` (everything after the IP
/// headers). Returns the fields and the length of what follows them.
fn transport(
    version: IpVersion,
    protocol: IpProtocol,
    payload: &[u8],
    fragment: Fragment,
) -> Result<(Transport, usize), Error> {
    if let Fragment::Later { offset, .. } = fragment {
        if protocol == IpProtocol::TCP && usize::from(offset) < tcp::HEADER_LEN {
            return Err(Error::Malformed);
        }
        return Ok((Transport::None, payload.len()));
    }
    let first = matches!(fragment, Fragment::First { .. });
    let short = |e: Error| {
        if first && e == Error::Truncated {
            Error::FragmentTooShort
        } else {
            e
        }
    };
    match protocol {
        IpProtocol::TCP => {
            let t = TcpPacket::new_checked(payload).map_err(short)?;
            let transport = Transport::Tcp {
                src_port: t.src_port(),
                dst_port: t.dst_port(),
                flags: t.flags(),
                seq: t.seq(),
                ack: t.ack(),
            };
            Ok((transport, t.payload().len()))
        }
        IpProtocol::UDP if first => {
            // The length field covers the whole datagram, which a first
            // fragment by definition does not hold.
            let (Some(src_port), Some(dst_port)) = (be16(payload, 0), be16(payload, 2)) else {
                return Err(Error::FragmentTooShort);
            };
            if payload.len() < udp::HEADER_LEN {
                return Err(Error::FragmentTooShort);
            }
            Ok((
                Transport::Udp { src_port, dst_port },
                payload.len() - udp::HEADER_LEN,
            ))
        }
        IpProtocol::UDP => {
            let u = UdpPacket::new_checked(payload)?;
            let transport = Transport::Udp {
                src_port: u.src_port(),
                dst_port: u.dst_port(),
            };
            Ok((transport, u.payload().len()))
        }
        p if p == icmp_protocol(version) => {
            let m = IcmpPacket::new_checked(payload).map_err(short)?;
            let kind = match IcmpClass::of(version, m.msg_type()) {
                IcmpClass::EchoRequest => IcmpKind::EchoRequest {
                    ident: m.echo_ident(),
                    seq: m.echo_seq(),
                },
                IcmpClass::EchoReply => IcmpKind::EchoReply {
                    ident: m.echo_ident(),
                    seq: m.echo_seq(),
                },
                IcmpClass::Error => IcmpKind::Error(parse_embedded(version, m.payload())?),
                IcmpClass::Other => IcmpKind::Other,
            };
            let transport = Transport::Icmp {
                msg_type: m.msg_type(),
                code: m.code(),
                kind,
            };
            Ok((transport, m.payload().len()))
        }
        _ => Ok((Transport::None, payload.len())),
    }
}

/// Reads the original packet quoted by an ICMP error of the given family.
///
/// Lenient where the quote is legitimately incomplete (total length beyond
/// the quote, checksum unchecked) and strict about what identifies the
/// flow: the IP header must be whole and of the same family, and at least
/// 4 bytes of TCP/UDP or 8 of ICMP must follow it.
pub fn parse_embedded(version: IpVersion, quote: &[u8]) -> Result<Embedded, Error> {
    let (src, dst, protocol, later, rest) = match version {
        IpVersion::V4 => {
            let ip = Ipv4Packet::new_truncated(quote)?;
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.protocol(),
                ip.frag_offset() != 0,
                ip.payload(),
            )
        }
        IpVersion::V6 => {
            let ip = Ipv6Packet::new_truncated(quote)?;
            let up = ip.upper_layer()?;
            let later = up.fragment.is_some_and(|f| f.offset != 0);
            let rest = quote.get(up.offset..).unwrap_or(&[]);
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                up.protocol,
                later,
                rest,
            )
        }
    };
    let transport = if later {
        EmbeddedTransport::None
    } else if protocol == IpProtocol::TCP || protocol == IpProtocol::UDP {
        match (be16(rest, 0), be16(rest, 2)) {
            (Some(src_port), Some(dst_port)) => EmbeddedTransport::Ports { src_port, dst_port },
            _ => return Err(Error::Truncated),
        }
    } else if protocol == icmp_protocol(version) {
        let m = IcmpPacket::new_checked(rest)?;
        match IcmpClass::of(version, m.msg_type()) {
            IcmpClass::EchoRequest => EmbeddedTransport::Echo {
                request: true,
                ident: m.echo_ident(),
            },
            IcmpClass::EchoReply => EmbeddedTransport::Echo {
                request: false,
                ident: m.echo_ident(),
            },
            _ => EmbeddedTransport::None,
        }
    } else {
        EmbeddedTransport::None
    };
    Ok(Embedded {
        src,
        dst,
        protocol,
        transport,
    })
}
