//! Property tests: no parser, classifier, reject builder or tracker input
//! can panic, and what they produce is consistent.

mod flow_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use flow_support::*;
use proptest::prelude::*;
use umbra::conntrack::drive::drive;
use umbra::conntrack::{Config, Conntrack};
use umbra::wire::classify::{parse_embedded, Transport};
use umbra::wire::icmp::IcmpPacket;
use umbra::wire::ip::IpVersion;
use umbra::wire::ipv4::Ipv4Packet;
use umbra::wire::ipv6::Ipv6Packet;
use umbra::wire::reject::{reject, RejectWith, MAX_REPLY_LEN};
use umbra::wire::tcp::TcpPacket;
use umbra::wire::{classify, PacketInfo};

fn seeds() -> Vec<Vec<u8>> {
    vec![
        hex(V4_TCP_SYN),
        hex(V6_UDP_EXT),
        hex(V4_ECHO_REQUEST),
        hex(V6_ECHO_REQUEST),
        hex(V4_PORT_UNREACHABLE),
        v6_fragment(6, 1, 0, true, &[0; 24]),
        v4_fragment(17, 1, 0, true, &[0; 16]),
    ]
}

/// A seed packet with a few bytes overwritten and possibly cut short: gets
/// past the version and length checks far more often than pure noise.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds().len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(i, edits, cut)| {
            let mut p = seeds()[i].clone();
            for (at, v) in edits {
                let at = at.index(p.len());
                p[at] = v;
            }
            let keep = cut.index(p.len() + 1);
            if keep > 20 {
                p.truncate(keep);
            }
            p
        })
}

fn check_info(p: &[u8], info: &PacketInfo) {
    assert!(info.packet_len <= p.len());
    assert!(info.transport_offset <= info.packet_len);
    assert!(info.transport_offset + info.payload_len <= info.packet_len);
}

fn check_reply(p: &[u8]) {
    for with in [
        RejectWith::Closed,
        RejectWith::PortUnreachable,
        RejectWith::AdminProhibited,
    ] {
        let mut out = [0u8; MAX_REPLY_LEN];
        let Ok(Some(n)) = reject(p, with, &mut out) else {
            continue;
        };
        let reply = &out[..n];
        let info = classify(reply).expect("reply parses back");
        let orig = classify(p).unwrap();
        assert_eq!((info.src, info.dst), (orig.dst, orig.src));
        let l4 = &reply[info.transport_offset..];
        let ok = match info.transport {
            Transport::Tcp { .. } => TcpPacket::new_checked(l4)
                .unwrap()
                .verify_checksum(info.src, info.dst),
            Transport::Icmp { .. } => IcmpPacket::new_checked(l4)
                .unwrap()
                .verify_checksum(info.src, info.dst),
            _ => false,
        };
        assert!(ok, "reply checksum");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(p in prop::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(info) = classify(&p) {
            check_info(&p, &info);
        }
        let _ = Ipv4Packet::new_truncated(&p).map(|v| (v.payload(), v.header()));
        let _ = Ipv6Packet::new_truncated(&p).map(|v| v.upper_layer());
        let _ = parse_embedded(IpVersion::V4, &p);
        let _ = parse_embedded(IpVersion::V6, &p);
        let mut out = [0u8; 100];
        let _ = reject(&p, RejectWith::Closed, &mut out);
    }

    #[test]
    fn mutated_packets_never_panic(p in mutated()) {
        if let Ok(info) = classify(&p) {
            check_info(&p, &info);
            check_reply(&p);
        }
    }

    #[test]
    fn tracker_survives_arbitrary_input(input in prop::collection::vec(any::<u8>(), 0..3000)) {
        let mut ct = Conntrack::new(Config { capacity: 8, fragment_capacity: 2, ..Config::default() });
        prop_assert!(drive(&mut ct, Instant::now(), &input).is_ok());
    }

    /// Sequences of valid packets among a few endpoints, so lookups really
    /// hit flows, states advance, tables fill and entries expire.
    #[test]
    fn tracker_survives_packet_sequences(
        steps in prop::collection::vec(
            (0u8..4, 0u8..255, 0usize..2, 0usize..2, 0u16..3, 0u16..3, 0u8..6, any::<u8>(), any::<bool>()),
            1..120,
        )
    ) {
        let hosts4 = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        let hosts6 = [Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)];
        let mut input = Vec::new();
        for (kind, control, s, d, sp, dp, flags, advance, v6) in steps {
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (hosts6[s].into(), hosts6[1 - d].into())
            } else {
                (hosts4[s].into(), hosts4[1 - d].into())
            };
            let flags = [SYN, SYN | ACK, ACK, FIN | ACK, RST, PSH | ACK][usize::from(flags)];
            let p = match kind {
                0 => tcp(src, dst, (sp, dp), flags, 1, 1, b"x"),
                1 => udp(src, dst, (sp, dp), b"y"),
                2 => echo(src, dst, flags & ACK == 0, sp, dp),
                _ => {
                    let q = udp(dst, src, (dp, sp), b"z");
                    let mut out = [0u8; MAX_REPLY_LEN];
                    match reject(&q, RejectWith::Closed, &mut out) {
                        Ok(Some(n)) => out[..n].to_vec(),
                        _ => q,
                    }
                }
            };
            input.extend_from_slice(&[advance % 40, control]);
            input.extend_from_slice(&(p.len() as u16).to_be_bytes());
            input.extend_from_slice(&p);
        }
        let mut ct = Conntrack::new(Config { capacity: 6, fragment_capacity: 2, ..Config::default() });
        let r = drive(&mut ct, Instant::now(), &input);
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    #[test]
    fn built_packets_classify_to_their_fields(
        a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>(),
        data in prop::collection::vec(any::<u8>(), 0..200), use_tcp in any::<bool>(),
    ) {
        let (a, b) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
        let p = if use_tcp { tcp(a, b, (sp, dp), ACK, 7, 8, &data) } else { udp(a, b, (sp, dp), &data) };
        let info = classify(&p).unwrap();
        prop_assert_eq!((info.src, info.dst), (IpAddr::from(a), IpAddr::from(b)));
        prop_assert_eq!(info.ports(), Some((sp, dp)));
        prop_assert_eq!(info.payload_len, data.len());
        check_reply(&p);
    }
}
