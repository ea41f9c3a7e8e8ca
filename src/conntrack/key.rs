//! Flow keys: the identity of a flow, the same for both directions.
//!
//! A key holds the two endpoints in a canonical order (the smaller address
//! and port first), so a packet and its reply hash to the same key and one
//! hash lookup finds a flow whichever way a packet travels. The orientation
//! says which endpoint sent this packet; comparing it with the entry's
//! orientation tells original from reply.
//!
//! ICMP echo is the exception: its key is always (requester, responder,
//! identifier) and the message type gives the orientation, so an echo
//! request from the responder's side is a different flow and cannot ride on
//! the existing one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::PeerId;
use crate::net::IpProtocol;
use crate::wire::classify::{Embedded, EmbeddedTransport, IcmpKind, PacketInfo, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) peer: u32,
    pub(crate) protocol: IpProtocol,
    pub(crate) v6: bool,
    pub(crate) a_port: u16,
    pub(crate) b_port: u16,
    pub(crate) a: [u8; 16],
    pub(crate) b: [u8; 16],
}

impl std::hash::Hash for Key {
    /// One `write` of the packed fields: the derived impl would feed seven
    /// separate writes (plus length prefixes) through SipHash on every
    /// packet.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 42];
        b[..4].copy_from_slice(&self.peer.to_ne_bytes());
        b[4] = self.protocol.number();
        b[5] = u8::from(self.v6);
        b[6..8].copy_from_slice(&self.a_port.to_ne_bytes());
        b[8..10].copy_from_slice(&self.b_port.to_ne_bytes());
        b[10..26].copy_from_slice(&self.a);
        b[26..42].copy_from_slice(&self.b);
        state.write(&b);
    }
}

/// Which endpoint of a key sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orient {
    /// From `a` to `b`.
    AtoB,
    /// From `b` to `a`.
    BtoA,
}

/// The identifying fields of a packet's transport header.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ports {
    Pair(u16, u16),
    EchoRequest(u16),
    EchoReply(u16),
    None,
}

pub(crate) fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a.octets());
            o
        }
        IpAddr::V6(a) => a.octets(),
    }
}

pub(crate) fn bytes_addr(v6: bool, b: [u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

impl Key {
    /// The key and orientation of a packet from `src` to `dst`.
    pub(crate) fn new(
        peer: PeerId,
        protocol: IpProtocol,
        src: IpAddr,
        dst: IpAddr,
        ports: Ports,
    ) -> (Key, Orient) {
        let (s, d) = (addr_bytes(src), addr_bytes(dst));
        let mut key = Key {
            peer: peer.0,
            protocol,
            v6: src.is_ipv6(),
            a_port: 0,
            b_port: 0,
            a: s,
            b: d,
        };
        let (sp, dp) = match ports {
            Ports::EchoRequest(id) => {
                key.a_port = id;
                return (key, Orient::AtoB);
            }
            Ports::EchoReply(id) => {
                key.a = d;
                key.b = s;
                key.a_port = id;
                return (key, Orient::BtoA);
            }
            Ports::Pair(sp, dp) => (sp, dp),
            Ports::None => (0, 0),
        };
        if (s, sp) <= (d, dp) {
            key.a_port = sp;
            key.b_port = dp;
            (key, Orient::AtoB)
        } else {
            key.a = d;
            key.b = s;
            key.a_port = dp;
            key.b_port = sp;
            (key, Orient::BtoA)
        }
    }

    /// The key of a packet that can start or continue a flow; `None` for
    /// ICMP errors and informational ICMP, which never own state, and for
    /// later fragments, which have no ports.
    pub(crate) fn of_packet(peer: PeerId, info: &PacketInfo) -> Option<(Key, Orient)> {
        if info.is_later_fragment() {
            return None;
        }
        let ports = match info.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => Ports::Pair(src_port, dst_port),
            Transport::Icmp { kind, .. } => match kind {
                IcmpKind::EchoRequest { ident, .. } => Ports::EchoRequest(ident),
                IcmpKind::EchoReply { ident, .. } => Ports::EchoReply(ident),
                IcmpKind::Error(_) | IcmpKind::Other => return None,
            },
            // ICMP of the wrong family is not echo; TCP and UDP always parse
            // to ports. What is left is a protocol we key by addresses.
            Transport::None if is_ported(info.protocol) => return None,
            Transport::None => Ports::None,
        };
        Some(Key::new(peer, info.protocol, info.src, info.dst, ports))
    }

    /// The key of the packet an ICMP error quotes.
    pub(crate) fn of_embedded(peer: PeerId, e: &Embedded) -> Option<(Key, Orient)> {
        let ports = match e.transport {
            EmbeddedTransport::Ports { src_port, dst_port } => Ports::Pair(src_port, dst_port),
            EmbeddedTransport::Echo {
                request: true,
                ident,
            } => Ports::EchoRequest(ident),
            EmbeddedTransport::Echo {
                request: false,
                ident,
            } => Ports::EchoReply(ident),
            EmbeddedTransport::None if is_ported(e.protocol) => return None,
            EmbeddedTransport::None => Ports::None,
        };
        Some(Key::new(peer, e.protocol, e.src, e.dst, ports))
    }
}

/// Protocols whose flows need more than addresses to be identified.
fn is_ported(p: IpProtocol) -> bool {
    p == IpProtocol::TCP || p == IpProtocol::UDP || p.is_icmp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let (k1, o1) = Key::new(PeerId(1), IpProtocol::TCP, x, y, Ports::Pair(40000, 80));
        let (k2, o2) = Key::new(PeerId(1), IpProtocol::TCP, y, x, Ports::Pair(80, 40000));
        assert_eq!(k1, k2);
        assert_ne!(o1, o2);
        let (k3, _) = Key::new(PeerId(2), IpProtocol::TCP, x, y, Ports::Pair(40000, 80));
        assert_ne!(k1, k3, "peer is part of the key");
        // Echo: a request from the other side is another flow.
        let (e1, _) = Key::new(PeerId(1), IpProtocol::ICMP, x, y, Ports::EchoRequest(7));
        let (e2, o) = Key::new(PeerId(1), IpProtocol::ICMP, y, x, Ports::EchoReply(7));
        let (e3, _) = Key::new(PeerId(1), IpProtocol::ICMP, y, x, Ports::EchoRequest(7));
        assert_eq!(e1, e2);
        assert_eq!(o, Orient::BtoA);
        assert_ne!(e1, e3);
    }
}
