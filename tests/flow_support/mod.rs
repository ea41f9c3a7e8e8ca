//! Packet builders and fixtures shared by the `flow_*` tests.
//!
//! The hex fixtures were produced by an independent Python implementation
//! (struct + RFC 1071 checksum), so they cross-check our checksum code
//! rather than agree with it by construction.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use umbra::net::IpProtocol;
use umbra::wire::checksum::{self, Checksum};
use umbra::wire::{ipv4, ipv6};

/// Linux-style SYN 10.0.0.1:43210 -> 10.0.0.2:22, MSS/SACK/TS/WS options, DF.
pub const V4_TCP_SYN: &str = "4500003c1c46400040060a740a0000010a000002a8ca00161234567800000000a002faf0453e0000020405b40402080a0001e2400000000001030307";
/// DNS query fd00::1:53000 -> fd00::2:53 behind hop-by-hop and destination options headers.
pub const V6_UDP_EXT: &str = "6000000000350040fd000000000000000000000000000001fd0000000000000000000000000000023c000104000000001100010400000000cf0800350025bb26abcd01000001000000000000076578616d706c6503636f6d0000010001";
/// ping 10.0.0.1 -> 10.0.0.2, id 1234 seq 1, 56 bytes.
pub const V4_ECHO_REQUEST: &str = "45000054beef4000400167b70a0000010a0000020800fc1904d20001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637";
/// ping fd00::1 -> fd00::2, id 0x77 seq 3, 56 bytes.
pub const V6_ECHO_REQUEST: &str = "6000000000403a40fd000000000000000000000000000001fd00000000000000000000000000000280008df300770003000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637";
/// 10.0.0.2 -> 10.0.0.1 port unreachable quoting UDP 10.0.0.1:5353 -> 10.0.0.2:9999.
pub const V4_PORT_UNREACHABLE: &str = "4500003802024000400124c10a0000020a000001030354f0000000004500002101014000401125c90a0000010a00000214e9270f000d6c07";

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub const A4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const B4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Wraps a transport payload in an IP header of the addresses' family.
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20 + payload.len()];
            ipv4::emit_header(&mut p, s, d, IpProtocol(proto), payload.len()).unwrap();
            p[20..].copy_from_slice(payload);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40 + payload.len()];
            ipv6::emit_header(&mut p, s, d, IpProtocol(proto), payload.len()).unwrap();
            p[40..].copy_from_slice(payload);
            p
        }
        _ => panic!("mixed families"),
    }
}

/// An IPv4 fragment: `offset` in bytes, `more` the MF flag.
pub fn v4_fragment(proto: u8, ident: u16, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let mut p = ip(A4.into(), B4.into(), proto, data);
    let field = (offset / 8) | if more { 0x2000 } else { 0 };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&field.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::of(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// An IPv6 fragment from A6 to B6 carrying `data` after a fragment header.
pub fn v6_fragment(proto: u8, ident: u32, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let mut ext = vec![proto, 0];
    ext.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    ext.extend_from_slice(&ident.to_be_bytes());
    ext.extend_from_slice(data);
    ip(A6.into(), B6.into(), 44, &ext)
}

fn finish_transport(src: IpAddr, dst: IpAddr, proto: u8, seg: &mut [u8], at: usize) {
    let mut c = checksum::pseudo_header(src, dst, proto, seg.len() as u32);
    c.add_bytes(seg);
    seg[at..at + 2].copy_from_slice(&c.finish().to_be_bytes());
}

pub fn tcp_segment(
    src: IpAddr,
    dst: IpAddr,
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut s = vec![0u8; 20];
    s[0..2].copy_from_slice(&ports.0.to_be_bytes());
    s[2..4].copy_from_slice(&ports.1.to_be_bytes());
    s[4..8].copy_from_slice(&seq.to_be_bytes());
    s[8..12].copy_from_slice(&ack.to_be_bytes());
    s[12] = 5 << 4;
    s[13] = flags;
    s[14..16].copy_from_slice(&65535u16.to_be_bytes());
    s.extend_from_slice(data);
    finish_transport(src, dst, 6, &mut s, 16);
    s
}

/// A whole TCP packet.
pub fn tcp(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    ports: (u16, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    let (src, dst) = (src.into(), dst.into());
    ip(
        src,
        dst,
        6,
        &tcp_segment(src, dst, ports, seq, ack, flags, data),
    )
}

pub fn udp_datagram(src: IpAddr, dst: IpAddr, ports: (u16, u16), data: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; 8];
    s[0..2].copy_from_slice(&ports.0.to_be_bytes());
    s[2..4].copy_from_slice(&ports.1.to_be_bytes());
    s[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    s.extend_from_slice(data);
    finish_transport(src, dst, 17, &mut s, 6);
    s
}

/// A whole UDP packet.
pub fn udp(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    ports: (u16, u16),
    data: &[u8],
) -> Vec<u8> {
    let (src, dst) = (src.into(), dst.into());
    ip(src, dst, 17, &udp_datagram(src, dst, ports, data))
}

/// An ICMP or ICMPv6 message (by the addresses' family).
pub fn icmp(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let (src, dst) = (src.into(), dst.into());
    let mut m = vec![msg_type, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let proto = if src.is_ipv4() { 1 } else { 58 };
    let mut c = if src.is_ipv4() {
        Checksum::new()
    } else {
        checksum::pseudo_header(src, dst, 58, m.len() as u32)
    };
    c.add_bytes(&m);
    m[2..4].copy_from_slice(&c.finish().to_be_bytes());
    ip(src, dst, proto, &m)
}

/// An echo request or reply of the addresses' family.
pub fn echo(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    request: bool,
    ident: u16,
    seq: u16,
) -> Vec<u8> {
    let src = src.into();
    let t = match (src.is_ipv4(), request) {
        (true, true) => 8,
        (true, false) => 0,
        (false, true) => 128,
        (false, false) => 129,
    };
    let [i0, i1] = ident.to_be_bytes();
    let [s0, s1] = seq.to_be_bytes();
    icmp(src, dst, t, 0, [i0, i1, s0, s1], b"abcdefgh")
}
