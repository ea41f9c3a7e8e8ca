//! Builders for well-formed packets in the shapes the kernel exchanges with
//! a TUN device that has offloads: TSO/USO super-packets with their virtio
//! header, and ordinary TCP segments. For the unit tests, the `offload`
//! fuzz target's seeds and the offload benchmark; not used on the data
//! path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{VnetHdr, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use crate::wire::checksum;
use crate::wire::ip::IpProtocol;
use crate::wire::{ipv4, ipv6};

/// Source address of built IPv4 packets.
pub const SRC4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Destination address of built IPv4 packets.
pub const DST4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Source address of built IPv6 packets.
pub const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
/// Destination address of built IPv6 packets.
pub const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);

/// The TCP fields of a built segment or super-packet.
#[derive(Debug, Clone, Copy)]
pub struct Tcp {
    /// IPv6 rather than IPv4.
    pub v6: bool,
    /// Option bytes (a multiple of 4, at most 40), NOPs and a timestamp.
    pub options: usize,
    /// Sequence number of the first payload byte.
    pub seq: u32,
    /// TCP flags.
    pub flags: u8,
}

impl Tcp {
    /// An ACK of the test flow with `options` option bytes.
    pub fn ack(v6: bool, options: usize, seq: u32) -> Tcp {
        Tcp {
            v6,
            options,
            seq,
            flags: 0x10,
        }
    }

    fn addrs(&self) -> (IpAddr, IpAddr) {
        if self.v6 {
            (SRC6.into(), DST6.into())
        } else {
            (SRC4.into(), DST4.into())
        }
    }
}

/// Appends an IP header for `l4_len` bytes of `proto` to `out`.
fn ip_header(out: &mut Vec<u8>, v6: bool, proto: IpProtocol, l4_len: usize) {
    let at = out.len();
    if v6 {
        out.resize(at + ipv6::HEADER_LEN, 0);
        let _ = ipv6::emit_header(&mut out[at..], SRC6, DST6, proto, l4_len);
    } else {
        out.resize(at + ipv4::HEADER_LEN, 0);
        let _ = ipv4::emit_header(&mut out[at..], SRC4, DST4, proto, l4_len);
        // A non-zero identification, so segments' increments show.
        out[at + 4] = 0x12;
        out[at + 5] = 0x34;
        out[at + 10] = 0;
        out[at + 11] = 0;
        let sum = checksum::of(&out[at..at + ipv4::HEADER_LEN]);
        out[at + 10..at + 12].copy_from_slice(&sum.to_be_bytes());
    }
}

/// A TCP packet (IP header, TCP header, payload) with its checksum field
/// holding `partial`'s result: the full checksum, or the pseudo-header sum
/// the kernel leaves with `F_NEEDS_CSUM`.
fn tcp_packet(t: &Tcp, payload: &[u8], full: bool) -> Vec<u8> {
    let options = t.options.min(40) & !3;
    let l4_len = 20 + options + payload.len();
    let mut p = Vec::with_capacity(60 + l4_len);
    ip_header(&mut p, t.v6, IpProtocol::TCP, l4_len);
    let l4 = p.len();
    p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports 40000 -> 5201
    p.extend_from_slice(&t.seq.to_be_bytes());
    p.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    p.push((((20 + options) / 4) << 4) as u8);
    p.push(t.flags);
    p.extend_from_slice(&[0x02, 0x00, 0, 0, 0, 0]); // window, checksum, urgent
    for i in 0..options {
        // NOP, NOP, timestamp (kind 8, length 10), then NOPs.
        p.push(match i {
            2 => 8,
            3 => 10,
            4..=11 => i as u8,
            _ => 1,
        });
    }
    p.extend_from_slice(payload);
    let (src, dst) = t.addrs();
    let mut c = checksum::pseudo_header(src, dst, IpProtocol::TCP.0, l4_len as u32);
    let v = if full {
        c.add_bytes(&p[l4..]);
        c.finish()
    } else {
        c.fold()
    };
    p[l4 + 16..l4 + 18].copy_from_slice(&v.to_be_bytes());
    p
}

/// One ordinary TCP segment with a correct checksum.
pub fn tcp_segment(t: &Tcp, payload: &[u8]) -> Vec<u8> {
    tcp_packet(t, payload, true)
}

/// What the kernel's TSO hands a TUN reader: virtio header, then one TCP
/// packet of up to 64 KiB with the pseudo-header sum in its checksum field.
/// A payload of `mss` or less comes as a plain packet needing its
/// checksum, as Linux sends it.
pub fn tcp_super(t: &Tcp, mss: u16, payload: &[u8]) -> Vec<u8> {
    let packet = tcp_packet(t, payload, false);
    let l4 = if t.v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let gso = payload.len() > usize::from(mss);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: match (gso, t.v6) {
            (false, _) => GSO_NONE,
            (true, false) => GSO_TCPV4,
            (true, true) => GSO_TCPV6,
        },
        hdr_len: (packet.len() - payload.len()) as u16,
        gso_size: if gso { mss } else { 0 },
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    let mut out = hdr.to_bytes().to_vec();
    out.extend_from_slice(&packet);
    out
}

/// What USO hands over: virtio header, then one UDP datagram to be cut
/// into `seg`-byte datagrams.
pub fn udp_super(v6: bool, seg: u16, payload: &[u8]) -> Vec<u8> {
    let l4_len = 8 + payload.len();
    let mut p = Vec::with_capacity(48 + l4_len);
    ip_header(&mut p, v6, IpProtocol::UDP, l4_len);
    let l4 = p.len();
    p.extend_from_slice(&[0xc3, 0x50, 0x14, 0x51]);
    p.extend_from_slice(&(l4_len as u16).to_be_bytes());
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (SRC6.into(), DST6.into())
    } else {
        (SRC4.into(), DST4.into())
    };
    let partial = checksum::pseudo_header(src, dst, IpProtocol::UDP.0, l4_len as u32).fold();
    p.extend_from_slice(&partial.to_be_bytes());
    p.extend_from_slice(payload);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: (l4 + 8) as u16,
        gso_size: seg,
        csum_start: l4 as u16,
        csum_offset: 6,
    };
    let mut out = hdr.to_bytes().to_vec();
    out.extend_from_slice(&p);
    out
}

/// Whether `packet` is a complete IP packet whose IPv4 header checksum and
/// TCP/UDP checksum verify (other transports: only the IP layer).
pub fn checksums_ok(packet: &[u8]) -> bool {
    let Ok(info) = crate::wire::classify(packet) else {
        return false;
    };
    let Some(l4) = packet.get(info.transport_offset..info.packet_len) else {
        return false;
    };
    let proto = match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9).copied(),
        _ => packet.get(6).copied(),
    };
    match proto.map(IpProtocol) {
        Some(IpProtocol::TCP) | Some(IpProtocol::UDP) => {
            let proto = proto.unwrap_or(0);
            let mut c = checksum::pseudo_header(info.src, info.dst, proto, l4.len() as u32);
            c.add_bytes(l4);
            c.verifies() || (proto == 17 && info.src.is_ipv4() && l4.get(6..8) == Some(&[0, 0]))
        }
        _ => true,
    }
}
