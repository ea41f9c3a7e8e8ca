//! Reject replies parse back, carry correct checksums, and are withheld
//! where the RFCs forbid them.

mod flow_support;

use std::net::IpAddr;

use flow_support::*;
use umbra::wire::classify::{EmbeddedTransport, IcmpKind, Transport};
use umbra::wire::icmp::IcmpPacket;
use umbra::wire::ipv4::Ipv4Packet;
use umbra::wire::reject::{reject, RejectWith, MAX_ICMPV4_REPLY, MAX_REPLY_LEN};
use umbra::wire::tcp::{TcpFlags, TcpPacket};
use umbra::wire::{classify, Error};

fn build(p: &[u8], with: RejectWith) -> Vec<u8> {
    let mut out = [0u8; MAX_REPLY_LEN];
    let n = reject(p, with, &mut out).unwrap().expect("a reply");
    out[..n].to_vec()
}

fn tcp_view(reply: &[u8]) -> TcpPacket<'_> {
    let info = classify(reply).unwrap();
    let t = TcpPacket::new_checked(&reply[info.transport_offset..]).unwrap();
    assert!(t.verify_checksum(info.src, info.dst), "bad TCP checksum");
    t
}

#[test]
fn rst_answers_a_syn_v4_and_v6() {
    for (a, b) in [(IpAddr::from(A4), IpAddr::from(B4)), (A6.into(), B6.into())] {
        let syn = tcp(a, b, (40000, 22), SYN, 1000, 0, b"");
        let reply = build(&syn, RejectWith::Closed);
        let info = classify(&reply).unwrap();
        assert_eq!((info.src, info.dst), (b, a), "reply comes from the target");
        assert_eq!(info.ports(), Some((22, 40000)));
        let t = tcp_view(&reply);
        assert_eq!(t.flags(), TcpFlags::RST | TcpFlags::ACK);
        assert_eq!((t.seq(), t.ack()), (0, 1001), "acknowledges the SYN");
        if a.is_ipv4() {
            assert!(
                Ipv4Packet::new_checked(&reply).is_ok(),
                "IPv4 header checksum"
            );
        }
    }
}

#[test]
fn rst_answers_data_at_its_ack() {
    let p = tcp(A4, B4, (40000, 22), PSH | ACK, 5000, 777, b"hello");
    let reply = build(&p, RejectWith::Closed);
    let t = tcp_view(&reply);
    assert_eq!(t.flags(), TcpFlags::RST);
    assert_eq!(t.seq(), 777);
    // Without ACK: acknowledge data plus FIN.
    let p = tcp(A4, B4, (40000, 22), FIN, u32::MAX - 1, 0, b"abc");
    let t_reply = build(&p, RejectWith::Closed);
    assert_eq!(tcp_view(&t_reply).ack(), 2, "sequence space wraps");
}

#[test]
fn icmp_unreachable_for_udp_quotes_the_packet() {
    let p = udp(A4, B4, (5353, 9999), b"hello");
    let reply = build(&p, RejectWith::Closed);
    let info = classify(&reply).unwrap();
    assert_eq!((info.src, info.dst), (IpAddr::from(B4), IpAddr::from(A4)));
    let Transport::Icmp {
        msg_type: 3,
        code: 3,
        kind: IcmpKind::Error(e),
    } = info.transport
    else {
        panic!("{info:?}");
    };
    assert_eq!(
        e.transport,
        EmbeddedTransport::Ports {
            src_port: 5353,
            dst_port: 9999
        }
    );
    assert_eq!(&reply[28..], &p[..], "whole small packet quoted");
    assert!(IcmpPacket::new_checked(&reply[20..])
        .unwrap()
        .verify_checksum(info.src, info.dst));

    let p = udp(A6, B6, (5353, 9999), b"hello");
    let reply = build(&p, RejectWith::AdminProhibited);
    let info = classify(&reply).unwrap();
    assert_eq!(info.icmp_type_code(), Some((1, 1)));
    assert!(IcmpPacket::new_checked(&reply[40..])
        .unwrap()
        .verify_checksum(info.src, info.dst));
}

#[test]
fn codes_by_choice() {
    let t = tcp(A4, B4, (1, 2), SYN, 0, 0, b"");
    let r = build(&t, RejectWith::AdminProhibited);
    assert_eq!(classify(&r).unwrap().icmp_type_code(), Some((3, 13)));
    let r = build(&t, RejectWith::PortUnreachable);
    assert_eq!(classify(&r).unwrap().icmp_type_code(), Some((3, 3)));
    let ping = echo(A6, B6, true, 1, 1);
    let r = build(&ping, RejectWith::Closed);
    assert_eq!(classify(&r).unwrap().icmp_type_code(), Some((1, 1)));
    let r = build(&ping, RejectWith::PortUnreachable);
    assert_eq!(classify(&r).unwrap().icmp_type_code(), Some((1, 4)));
}

#[test]
fn quotes_are_capped() {
    let big = udp(A4, B4, (1, 2), &[0x5a; 1200]);
    let r = build(&big, RejectWith::Closed);
    assert_eq!(r.len(), MAX_ICMPV4_REPLY);
    assert!(IcmpPacket::new_checked(&r[20..])
        .unwrap()
        .verify_checksum(B4.into(), A4.into()));
    let big6 = udp(A6, B6, (1, 2), &[0x5a; 1400]);
    assert_eq!(build(&big6, RejectWith::Closed).len(), 1280);
    // A small output buffer quotes less, but never less than headers + 8.
    let mut out = [0u8; 64];
    let n = reject(&big, RejectWith::Closed, &mut out).unwrap().unwrap();
    assert_eq!(n, 64);
    let mut tiny = [0u8; 55];
    assert_eq!(
        reject(&big, RejectWith::Closed, &mut tiny),
        Err(Error::BufferTooSmall)
    );
    let mut tiny = [0u8; 30];
    let syn = tcp(A4, B4, (1, 2), SYN, 0, 0, b"");
    assert_eq!(
        reject(&syn, RejectWith::Closed, &mut tiny),
        Err(Error::BufferTooSmall)
    );
}

#[test]
fn no_reply_where_forbidden() {
    let mut out = [0u8; MAX_REPLY_LEN];
    let cases = [
        tcp(A4, B4, (1, 2), RST, 0, 0, b""),
        tcp(A4, B4, (1, 2), RST | ACK, 0, 0, b""),
        hex(V4_PORT_UNREACHABLE),
        v4_fragment(17, 9, 64, false, &[0; 16]),
        udp(
            A4,
            std::net::Ipv4Addr::new(224, 0, 0, 251),
            (5353, 5353),
            b"",
        ),
        udp(A4, std::net::Ipv4Addr::BROADCAST, (68, 67), b""),
        udp(std::net::Ipv4Addr::UNSPECIFIED, B4, (68, 67), b""),
        udp(
            A6,
            "ff02::1".parse::<std::net::Ipv6Addr>().unwrap(),
            (1, 2),
            b"",
        ),
    ];
    for p in cases {
        assert_eq!(
            reject(&p, RejectWith::Closed, &mut out),
            Ok(None),
            "{:?}",
            classify(&p)
        );
    }
    assert!(reject(&[0x45, 0], RejectWith::Closed, &mut out).is_err());
}
