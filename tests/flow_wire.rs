//! Classifier and views against real-shaped packets.

mod flow_support;

use std::net::IpAddr;

use flow_support::*;
use umbra::net::IpProtocol;
use umbra::wire::classify::{EmbeddedTransport, Fragment, IcmpKind, Transport};
use umbra::wire::icmp::IcmpPacket;
use umbra::wire::ipv4::Ipv4Packet;
use umbra::wire::tcp::{TcpFlags, TcpPacket};
use umbra::wire::udp::UdpPacket;
use umbra::wire::{classify, Error};

#[test]
fn linux_syn_fixture() {
    let p = hex(V4_TCP_SYN);
    let info = classify(&p).unwrap();
    assert_eq!(info.src, IpAddr::from(A4));
    assert_eq!(info.dst, IpAddr::from(B4));
    assert_eq!(info.protocol, IpProtocol::TCP);
    assert_eq!(info.ports(), Some((43210, 22)));
    assert_eq!(info.tcp_flags(), Some(TcpFlags::SYN));
    assert_eq!(info.fragment, Fragment::None);
    assert_eq!(
        (info.packet_len, info.transport_offset, info.payload_len),
        (60, 20, 0)
    );
    // The options count as header, not payload; the checksum computed by an
    // independent implementation verifies with ours.
    let ip = Ipv4Packet::new_checked(&p).unwrap();
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(t.header_len(), 40);
    assert_eq!(t.seq(), 0x1234_5678);
    assert!(t.verify_checksum(info.src, info.dst));
}

#[test]
fn ipv6_extension_headers_fixture() {
    let p = hex(V6_UDP_EXT);
    let info = classify(&p).unwrap();
    assert_eq!(info.protocol, IpProtocol::UDP);
    assert_eq!(info.ports(), Some((53000, 53)));
    assert_eq!(info.transport_offset, 40 + 16);
    assert_eq!(info.payload_len, 29);
    let u = UdpPacket::new_checked(&p[56..]).unwrap();
    assert!(u.verify_checksum(info.src, info.dst));
}

#[test]
fn echo_fixtures() {
    let p = hex(V4_ECHO_REQUEST);
    let info = classify(&p).unwrap();
    assert_eq!(
        info.transport,
        Transport::Icmp {
            msg_type: 8,
            code: 0,
            kind: IcmpKind::EchoRequest {
                ident: 1234,
                seq: 1
            }
        }
    );
    assert_eq!(info.payload_len, 56);
    assert!(IcmpPacket::new_checked(&p[20..])
        .unwrap()
        .verify_checksum(info.src, info.dst));

    let p = hex(V6_ECHO_REQUEST);
    let info = classify(&p).unwrap();
    assert_eq!(info.protocol, IpProtocol::ICMPV6);
    assert!(matches!(
        info.transport,
        Transport::Icmp {
            msg_type: 128,
            kind: IcmpKind::EchoRequest {
                ident: 0x77,
                seq: 3
            },
            ..
        }
    ));
    assert!(IcmpPacket::new_checked(&p[40..])
        .unwrap()
        .verify_checksum(info.src, info.dst));
}

#[test]
fn icmp_error_quotes_the_original_flow() {
    let p = hex(V4_PORT_UNREACHABLE);
    let info = classify(&p).unwrap();
    let Transport::Icmp {
        msg_type: 3,
        code: 3,
        kind: IcmpKind::Error(e),
    } = info.transport
    else {
        panic!("not an error: {info:?}");
    };
    assert_eq!((e.src, e.dst), (IpAddr::from(A4), IpAddr::from(B4)));
    assert_eq!(e.protocol, IpProtocol::UDP);
    assert_eq!(
        e.transport,
        EmbeddedTransport::Ports {
            src_port: 5353,
            dst_port: 9999
        }
    );
    // An ICMPv6 error quoting an echo request through an extension header.
    let orig = echo(A6, B6, true, 9, 1);
    let mut quoted = orig[..40].to_vec();
    quoted[6] = 60;
    quoted.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]);
    quoted.extend_from_slice(&orig[40..48]);
    let err = icmp(B6, A6, 3, 0, [0; 4], &quoted);
    let info = classify(&err).unwrap();
    let Transport::Icmp {
        kind: IcmpKind::Error(e),
        ..
    } = info.transport
    else {
        panic!("not an error");
    };
    assert_eq!(
        e.transport,
        EmbeddedTransport::Echo {
            request: true,
            ident: 9
        }
    );
}

#[test]
fn tcp_handshake_data_and_fin_classify() {
    let (a, b) = (IpAddr::from(A4), IpAddr::from(B4));
    let steps = [
        (tcp(a, b, (40000, 80), SYN, 100, 0, b""), a, SYN, 0),
        (
            tcp(b, a, (80, 40000), SYN | ACK, 900, 101, b""),
            b,
            SYN | ACK,
            0,
        ),
        (tcp(a, b, (40000, 80), ACK, 101, 901, b""), a, ACK, 0),
        (
            tcp(a, b, (40000, 80), PSH | ACK, 101, 901, b"GET /"),
            a,
            PSH | ACK,
            5,
        ),
        (
            tcp(b, a, (80, 40000), FIN | ACK, 901, 106, b""),
            b,
            FIN | ACK,
            0,
        ),
    ];
    for (p, src, flags, payload) in steps {
        let info = classify(&p).unwrap();
        assert_eq!(info.src, src);
        assert_eq!(info.tcp_flags(), Some(TcpFlags(flags)));
        assert_eq!(info.payload_len, payload);
    }
}

#[test]
fn fragments_v4() {
    // First fragment: ports readable.
    let seg = udp_datagram(A4.into(), B4.into(), (1000, 2000), &[7; 100]);
    let first = v4_fragment(17, 0x4242, 0, true, &seg[..64]);
    let info = classify(&first).unwrap();
    assert_eq!(info.fragment, Fragment::First { ident: 0x4242 });
    assert_eq!(info.ports(), Some((1000, 2000)));
    assert_eq!(info.payload_len, 56);
    // Later fragment: no ports, but everything needed to pair it.
    let later = v4_fragment(17, 0x4242, 64, false, &seg[64..]);
    let info = classify(&later).unwrap();
    assert_eq!(
        info.fragment,
        Fragment::Later {
            ident: 0x4242,
            offset: 64,
            more: false
        }
    );
    assert_eq!(info.transport, Transport::None);
    assert_eq!(info.fragment_ident(), Some(0x4242));
    assert!(info.is_later_fragment());
    // A first fragment too short for the TCP header (RFC 1858 tiny fragment).
    let tiny = v4_fragment(6, 1, 0, true, &[0; 8]);
    assert_eq!(classify(&tiny).unwrap_err(), Error::FragmentTooShort);
    // A TCP fragment at offset 8 could overwrite the flags: refused.
    let overlap = v4_fragment(6, 1, 8, false, &[0; 16]);
    assert_eq!(classify(&overlap).unwrap_err(), Error::Malformed);
}

#[test]
fn fragments_v6() {
    let seg = tcp_segment(A6.into(), B6.into(), (5000, 443), 1, 0, SYN, &[0; 40]);
    let first = v6_fragment(6, 0xabcd_0001, 0, true, &seg[..32]);
    let info = classify(&first).unwrap();
    assert_eq!(info.fragment, Fragment::First { ident: 0xabcd_0001 });
    assert_eq!(info.ports(), Some((5000, 443)));
    let later = v6_fragment(6, 0xabcd_0001, 32, false, &seg[32..]);
    let info = classify(&later).unwrap();
    assert!(matches!(info.fragment, Fragment::Later { offset: 32, .. }));
    assert_eq!(info.protocol, IpProtocol::TCP);
    // Atomic fragment: a whole packet.
    let atomic = v6_fragment(
        17,
        5,
        0,
        false,
        &udp_datagram(A6.into(), B6.into(), (1, 2), b"x"),
    );
    assert_eq!(classify(&atomic).unwrap().fragment, Fragment::None);
    // Upper-layer header cut by the first fragment (RFC 7112).
    let cut = v6_fragment(6, 3, 0, true, &seg[..16]);
    assert_eq!(classify(&cut).unwrap_err(), Error::FragmentTooShort);
}

#[test]
fn garbage_and_truncation() {
    assert_eq!(classify(&[]).unwrap_err(), Error::Truncated);
    assert_eq!(classify(&[0x50; 40]).unwrap_err(), Error::UnknownVersion);
    let p = hex(V4_TCP_SYN);
    for n in 0..p.len() {
        assert!(classify(&p[..n]).is_err(), "accepted {n}-byte prefix");
    }
    let p = hex(V6_UDP_EXT);
    for n in 0..p.len() {
        assert!(classify(&p[..n]).is_err(), "accepted {n}-byte prefix");
    }
    // A TCP data offset below 5.
    let mut p = tcp(A4, B4, (1, 2), SYN, 0, 0, b"");
    p[32] = 0x40;
    assert_eq!(classify(&p).unwrap_err(), Error::Malformed);
    // A UDP length beyond the datagram.
    let mut p = udp(A4, B4, (1, 2), b"abc");
    p[25] = 200;
    assert_eq!(classify(&p).unwrap_err(), Error::Truncated);
    // An ICMP error whose quote is not an IP header.
    let p = icmp(B4, A4, 3, 1, [0; 4], &[0xff; 28]);
    assert_eq!(classify(&p).unwrap_err(), Error::UnknownVersion);
}

#[test]
fn other_protocols_and_padding() {
    // GRE: no ports, but addresses and protocol.
    let p = ip(A4.into(), B4.into(), 47, &[0; 12]);
    let info = classify(&p).unwrap();
    assert_eq!(info.protocol, IpProtocol(47));
    assert_eq!(info.transport, Transport::None);
    assert_eq!(info.payload_len, 12);
    // Ethernet-style padding after the datagram is ignored.
    let mut p = tcp(A4, B4, (1, 2), ACK, 0, 0, b"");
    p.extend_from_slice(&[0; 6]);
    assert_eq!(classify(&p).unwrap().packet_len, 40);
    // IPv6 "no next header".
    let p = ip(A6.into(), B6.into(), 59, &[]);
    assert_eq!(classify(&p).unwrap().protocol, IpProtocol::IPV6_NO_NEXT);
}
