//! The Community ID flow hash, version 1 (corelight/community-id-spec), so a
//! SIEM can join the records both ends of a tunnel write about one flow.
//!
//! `"1:" + base64(SHA-1(seed . addr_lo . addr_hi . proto . 0 . port_lo . port_hi))`,
//! the endpoints ordered so the numerically smaller address:port comes
//! first. ICMP types map to "ports" as Zeek does: request/reply pairs get
//! (type, counterpart type) and are ordered like any flow; other types get
//! (type, code) and keep their direction (one-way). Protocols without ports
//! hash the addresses and protocol only.

use std::net::IpAddr;

use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};

use crate::net::IpProtocol;

/// The Community ID string of a flow as its initiator sent it. `sport` and
/// `dport` are the ports for TCP, UDP and SCTP; for ICMP/ICMPv6 pass the
/// type and code instead; they are ignored for other protocols. Addresses
/// of mixed families hash nothing sensible and yield an empty string.
pub fn community_id_v1(
    seed: u16,
    src: IpAddr,
    dst: IpAddr,
    proto: IpProtocol,
    sport: u16,
    dport: u16,
) -> String {
    let (mut a, mut b) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        _ => return String::new(),
    };
    let (ports, one_way) = match proto {
        IpProtocol::TCP | IpProtocol::UDP | IpProtocol::SCTP => (Some((sport, dport)), false),
        IpProtocol::ICMP => {
            let (p, one_way) = icmp_ports(sport as u8, dport as u8, ICMP4_PAIRS);
            (Some(p), one_way)
        }
        IpProtocol::ICMPV6 => {
            let (p, one_way) = icmp_ports(sport as u8, dport as u8, ICMP6_PAIRS);
            (Some(p), one_way)
        }
        _ => (None, false),
    };
    let (mut pa, mut pb) = ports.unwrap_or((0, 0));
    if !one_way && (&b, pb) < (&a, pa) {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut pa, &mut pb);
    }
    let mut input = Vec::with_capacity(2 + 32 + 2 + 4);
    input.extend_from_slice(&seed.to_be_bytes());
    input.extend_from_slice(&a);
    input.extend_from_slice(&b);
    input.push(proto.number());
    input.push(0);
    if ports.is_some() {
        input.extend_from_slice(&pa.to_be_bytes());
        input.extend_from_slice(&pb.to_be_bytes());
    }
    let hash = digest(&SHA1_FOR_LEGACY_USE_ONLY, &input);
    format!("1:{}", crate::keys::base64_encode(hash.as_ref()))
}

/// ICMPv4 request/reply pairs (echo, router, timestamp, info, mask).
const ICMP4_PAIRS: &[(u8, u8)] = &[(8, 0), (10, 9), (13, 14), (15, 16), (17, 18)];
/// ICMPv6 request/reply pairs (echo, MLD, router, neighbour, node
/// information, home agent address discovery).
const ICMP6_PAIRS: &[(u8, u8)] = &[
    (128, 129),
    (130, 131),
    (133, 134),
    (135, 136),
    (139, 140),
    (144, 145),
];

/// (ports, one_way) for an ICMP type and code.
fn icmp_ports(ty: u8, code: u8, pairs: &[(u8, u8)]) -> ((u16, u16), bool) {
    for &(req, rep) in pairs {
        if ty == req {
            return ((u16::from(ty), u16::from(rep)), false);
        }
        if ty == rep {
            return ((u16::from(ty), u16::from(req)), false);
        }
    }
    ((u16::from(ty), u16::from(code)), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // Vectors from the spec's reference implementations (Zeek's
    // community_id_v1 tests, pycommunityid's baseline).
    #[test]
    fn published_vectors_seed_0() {
        let (a, b) = (ip("1.2.3.4"), ip("5.6.7.8"));
        assert_eq!(
            community_id_v1(0, a, b, IpProtocol(6), 1122, 3344),
            "1:wCb3OG7yAFWelaUydu0D+125CLM="
        );
        assert_eq!(
            community_id_v1(0, a, b, IpProtocol(17), 1122, 3344),
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="
        );
        assert_eq!(
            community_id_v1(0, a, b, IpProtocol(1), 8, 0),
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="
        );
        assert_eq!(
            community_id_v1(0, a, b, IpProtocol(46), 0, 0),
            "1:ikv3kmf89luf73WPz1jOs49S768="
        );
        let (c, d) = (
            ip("fe80:1:203:405:607:809:a0b:c0d"),
            ip("fe80:1011:1213:1415:1617:1819:1a1b:1c1d"),
        );
        assert_eq!(
            community_id_v1(0, c, d, IpProtocol(58), 128, 0),
            "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="
        );
    }

    #[test]
    fn published_vectors_seed_1() {
        let (a, b) = (ip("1.2.3.4"), ip("5.6.7.8"));
        assert_eq!(
            community_id_v1(1, a, b, IpProtocol(6), 1122, 3344),
            "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="
        );
        assert_eq!(
            community_id_v1(1, a, b, IpProtocol(17), 1122, 3344),
            "1:OShq+iKDAMVouh/4bMxB9Sz4amw="
        );
        assert_eq!(
            community_id_v1(1, a, b, IpProtocol(1), 8, 0),
            "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="
        );
        let (c, d) = (
            ip("fe80:1:203:405:607:809:a0b:c0d"),
            ip("fe80:1011:1213:1415:1617:1819:1a1b:1c1d"),
        );
        assert_eq!(
            community_id_v1(1, c, d, IpProtocol(58), 128, 0),
            "1:IO27GQzPuCtNnwFvjWALMHu5tJE="
        );
    }

    #[test]
    fn both_directions_hash_alike() {
        let (a, b) = (ip("1.2.3.4"), ip("5.6.7.8"));
        assert_eq!(
            community_id_v1(0, b, a, IpProtocol(6), 3344, 1122),
            community_id_v1(0, a, b, IpProtocol(6), 1122, 3344)
        );
        // An echo reply travelling back joins its request.
        assert_eq!(
            community_id_v1(0, b, a, IpProtocol(1), 0, 0),
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="
        );
        // One-way ICMP (destination unreachable) keeps its direction.
        assert_ne!(
            community_id_v1(0, a, b, IpProtocol(1), 3, 3),
            community_id_v1(0, b, a, IpProtocol(1), 3, 3)
        );
        assert_eq!(community_id_v1(0, a, ip("::1"), IpProtocol(6), 1, 2), "");
    }
}
