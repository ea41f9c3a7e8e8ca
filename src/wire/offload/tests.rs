use proptest::prelude::*;

use super::build::{self, checksums_ok, tcp_segment, tcp_super, udp_super, Tcp};
use super::gro::{Coalescer, Push};
use super::gso::{self, Segments};
use super::*;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::tcp::{TcpFlags, TcpPacket};
use crate::wire::udp::UdpPacket;

const MTU: usize = 1500;

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Every segment of a header + packet, or the error.
fn segment(raw: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, OffloadError> {
    let (hdr, packet) = VnetHdr::split(raw)?;
    let plan = Segments::new(&hdr, packet)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; mtu];
    for i in 0..plan.count() {
        let n = plan.write(packet, i, &mut buf)?;
        out.push(buf[..n].to_vec());
    }
    Ok(out)
}

fn tcp_of(p: &[u8]) -> TcpPacket<'_> {
    let l4 = if p[0] >> 4 == 4 {
        Ipv4Packet::new_checked(p).unwrap().header_len()
    } else {
        40
    };
    TcpPacket::new_checked(&p[l4..]).unwrap()
}

#[test]
fn tso_segments_carry_the_byte_stream() {
    for v6 in [false, true] {
        let payload = data(60_000, 7);
        let mut t = Tcp::ack(v6, 12, 0xffff_f000); // the sequence wraps
        t.flags = (TcpFlags::ACK | TcpFlags::PSH | TcpFlags::CWR | TcpFlags::FIN).0;
        let mss = if v6 { 1368 } else { 1388 };
        let segs = segment(&tcp_super(&t, mss, &payload), MTU).unwrap();
        assert_eq!(segs.len(), 60_000usize.div_ceil(usize::from(mss)));
        let mut stream = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(s.len() <= MTU && checksums_ok(s), "segment {i}");
            let tcp = tcp_of(s);
            assert_eq!(tcp.seq(), t.seq.wrapping_add(stream.len() as u32));
            let last = i + 1 == segs.len();
            let f = tcp.flags();
            assert_eq!(f.contains(TcpFlags::PSH), last);
            assert_eq!(f.contains(TcpFlags::FIN), last);
            assert_eq!(f.contains(TcpFlags::CWR), i == 0);
            assert!(f.contains(TcpFlags::ACK));
            if !last {
                assert_eq!(tcp.payload().len(), usize::from(mss));
            }
            if v6 {
                assert_eq!(
                    Ipv6Packet::new_checked(s).unwrap().as_bytes().len(),
                    s.len()
                );
            } else {
                let ip = Ipv4Packet::new_checked(s).unwrap();
                assert_eq!(usize::from(ip.total_len()), s.len());
                assert_eq!(ip.ident(), 0x1234u16.wrapping_add(i as u16));
            }
            stream.extend_from_slice(tcp.payload());
        }
        assert_eq!(stream, payload);
    }
}

#[test]
fn uso_and_plain_checksums_are_completed() {
    for v6 in [false, true] {
        let payload = data(5000, 3);
        let segs = segment(&udp_super(v6, 1200, &payload), MTU).unwrap();
        assert_eq!(segs.len(), 5);
        let mut stream = Vec::new();
        for s in &segs {
            assert!(checksums_ok(s));
            let l4 = if v6 { 40 } else { 20 };
            let u = UdpPacket::new_checked(&s[l4..]).unwrap();
            assert_eq!(usize::from(u.len()), s.len() - l4);
            stream.extend_from_slice(u.payload());
        }
        assert_eq!(stream, payload);
        // A small TCP packet comes plain, with NEEDS_CSUM.
        let raw = tcp_super(&Tcp::ack(v6, 0, 9), 1400, &data(100, 1));
        let (hdr, pkt) = VnetHdr::split(&raw).unwrap();
        assert_eq!(hdr.gso_type, GSO_NONE);
        assert!(
            !checksums_ok(pkt),
            "the kernel's packet holds a partial sum"
        );
        let segs = segment(&raw, MTU).unwrap();
        assert_eq!(segs.len(), 1);
        assert!(checksums_ok(&segs[0]));
        assert_eq!(segs[0].len(), pkt.len());
    }
}

#[test]
fn malformed_headers_are_refused() {
    let good = tcp_super(&Tcp::ack(false, 0, 1), 1000, &data(5000, 0));
    let with = |f: &dyn Fn(&mut VnetHdr, &mut Vec<u8>)| {
        let (mut h, p) = VnetHdr::split(&good).unwrap();
        let mut p = p.to_vec();
        f(&mut h, &mut p);
        let mut raw = h.to_bytes().to_vec();
        raw.extend_from_slice(&p);
        segment(&raw, MTU).unwrap_err()
    };
    assert_eq!(with(&|h, _| h.gso_size = 0), OffloadError::ZeroGsoSize);
    assert_eq!(with(&|h, _| h.hdr_len = 6000), OffloadError::HeaderLen);
    assert_eq!(with(&|h, _| h.csum_start = 21), OffloadError::ChecksumRange);
    assert_eq!(with(&|h, _| h.csum_offset = 6), OffloadError::ChecksumRange);
    assert_eq!(with(&|h, _| h.gso_type = GSO_TCPV6), OffloadError::Protocol);
    assert_eq!(with(&|h, _| h.gso_type = GSO_UDP), OffloadError::GsoType);
    assert_eq!(with(&|h, _| h.gso_type = 9), OffloadError::GsoType);
    assert_eq!(with(&|_, p| p[9] = 17), OffloadError::Protocol);
    assert_eq!(with(&|_, p| p.truncate(3000)), OffloadError::Truncated);
    assert_eq!(with(&|_, p| p[6] = 0x20), OffloadError::Protocol); // fragment
    assert_eq!(with(&|_, p| p[32] = 0x40), OffloadError::Protocol); // data offset 4
    assert_eq!(with(&|h, _| h.gso_size = 2000), OffloadError::SegmentTooBig);
    let mut plain = VnetHdr::split(&good).unwrap().0;
    plain.gso_type = GSO_NONE;
    plain.csum_start = 5030;
    plain.csum_offset = 40;
    let mut raw = plain.to_bytes().to_vec();
    raw.extend_from_slice(&good[VNET_HDR_LEN..]);
    assert_eq!(
        segment(&raw, 9000).unwrap_err(),
        OffloadError::ChecksumRange
    );
    assert_eq!(
        segment(&good[..9], MTU).unwrap_err(),
        OffloadError::Truncated
    );
    // A plan applied to another (shorter) packet fails, never panics.
    let (h, p) = VnetHdr::split(&good).unwrap();
    let plan = Segments::new(&h, p).unwrap();
    let mut buf = [0u8; MTU];
    assert!(plan.write(&p[..100], 0, &mut buf).is_err());
    assert_eq!(
        plan.write(p, 99, &mut buf),
        Err(OffloadError::NoSuchSegment)
    );
}

/// Pushes `segs` through a coalescer; returns every write's bytes.
fn coalesce(segs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut c = Coalescer::new();
    let mut writes = Vec::new();
    for s in segs {
        loop {
            match c.push(s) {
                Push::Held => break,
                Push::FlushFirst => writes.push(c.take().unwrap().to_vec()),
                Push::TooBig => panic!("too big"),
            }
        }
    }
    writes.extend(c.take().map(<[u8]>::to_vec));
    assert!(c.is_empty());
    writes
}

#[test]
fn coalesced_segments_segment_back_to_themselves() {
    for v6 in [false, true] {
        let mut t = Tcp::ack(v6, 12, 77);
        t.flags = (TcpFlags::ACK | TcpFlags::PSH).0;
        let segs = segment(&tcp_super(&t, 1000, &data(50_000, 9)), MTU).unwrap();
        let writes = coalesce(&segs);
        assert_eq!(writes.len(), 1, "one flow in order is one write");
        let (h, _) = VnetHdr::split(&writes[0]).unwrap();
        assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(
            (h.flags, h.gso_size, h.csum_offset),
            (F_NEEDS_CSUM, 1000, 16)
        );
        assert_eq!(segment(&writes[0], MTU).unwrap(), segs);
        // The partial sum is the one Linux expects: completed over the
        // whole super-packet, as the kernel does, the TCP checksum of the
        // super-packet as one packet verifies.
        let (h, p) = VnetHdr::split(&writes[0]).unwrap();
        let mut whole = p.to_vec();
        let (start, off) = (usize::from(h.csum_start), usize::from(h.csum_offset));
        gso::complete(&mut whole, start, off).unwrap();
        assert!(checksums_ok(&whole));
        assert!(tcp_of(&whole).verify_checksum(
            if v6 {
                build::SRC6.into()
            } else {
                build::SRC4.into()
            },
            if v6 {
                build::DST6.into()
            } else {
                build::DST4.into()
            },
        ));
    }
}

#[test]
fn what_cannot_join_is_written_alone_in_order() {
    let id = std::cell::Cell::new(0u16);
    let seg = |seq: u32, len: usize, flags: TcpFlags| {
        let mut t = Tcp::ack(false, 0, seq);
        t.flags = flags.0;
        let mut p = tcp_segment(&t, &data(len, seq as u8));
        // Consecutive identifications, as a sender's segments carry.
        id.set(id.get() + 1);
        p[4..6].copy_from_slice(&id.get().to_be_bytes());
        p[10..12].fill(0);
        let sum = crate::wire::checksum::of(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    };
    let ack = TcpFlags::ACK;
    let mut bad = seg(3000, 1000, ack);
    bad[60] ^= 1; // payload byte: the checksum no longer verifies
    let udp = segment(&udp_super(false, 100, &data(50, 0)), MTU)
        .unwrap()
        .remove(0);
    let input = vec![
        seg(0, 1000, ack),
        seg(1000, 1000, ack),
        seg(3000, 1000, ack),                // gap: new run
        seg(4000, 400, ack),                 // shorter: closes
        seg(4400, 400, ack),                 // new run
        seg(4800, 400, ack | TcpFlags::PSH), // PSH: closes
        seg(5200, 400, ack | TcpFlags::FIN), // alone
        bad,                                 // alone
        udp,                                 // alone
        seg(6000, 0, ack),                   // pure ACK: alone
        seg(6000, 500, ack),
    ];
    let writes = coalesce(&input);
    let counts: Vec<usize> = writes
        .iter()
        .map(|w| segment(w, MTU).map_or(0, |s| s.len()))
        .collect();
    assert_eq!(counts, [2, 2, 2, 1, 1, 1, 1, 1]);
    let mut back = Vec::new();
    for w in &writes {
        let (h, p) = VnetHdr::split(w).unwrap();
        if h.gso_type == GSO_NONE {
            assert_eq!(h, VnetHdr::NONE);
            back.push(p.to_vec());
        } else {
            back.extend(segment(w, MTU).unwrap());
        }
    }
    assert_eq!(back, input, "every packet leaves once, in order, unchanged");
    // Identifications that do not follow on do not join.
    let mut writes = coalesce(&[seg(0, 100, ack), seg(100, 100, ack)]);
    assert_eq!(writes.len(), 1);
    id.set(id.get() + 5);
    writes = coalesce(&[seg(0, 100, ack), seg(100, 100, ack)]);
    assert_eq!(writes.len(), 1);
    let first = seg(0, 100, ack);
    id.set(id.get() + 5);
    assert_eq!(coalesce(&[first, seg(100, 100, ack)]).len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn segment_coalesce_segment_round_trips(
        v6: bool,
        options in 0usize..=10,
        seq: u32,
        mss in 200u16..1400,
        len in 1usize..60_000,
        psh: bool,
    ) {
        let mut t = Tcp::ack(v6, options * 4, seq);
        if psh {
            t.flags |= TcpFlags::PSH.0;
        }
        let payload = data(len, seq as u8);
        let segs = segment(&tcp_super(&t, mss, &payload), MTU).unwrap();
        let mut stream = Vec::new();
        for s in &segs {
            prop_assert!(checksums_ok(s));
            stream.extend_from_slice(tcp_of(s).payload());
        }
        prop_assert_eq!(&stream, &payload);
        let writes = coalesce(&segs);
        prop_assert_eq!(writes.len(), 1);
        prop_assert_eq!(segment(&writes[0], MTU).unwrap(), segs);
    }

    #[test]
    fn hostile_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400), mtu in 0usize..600) {
        let _ = segment(&raw, mtu);
        let mut c = Coalescer::new();
        for chunk in raw.chunks(97) {
            if c.push(chunk) == Push::FlushFirst {
                let _ = c.take();
                let _ = c.push(chunk);
            }
        }
        let _ = c.take();
    }

    #[test]
    fn mutated_super_packets_never_panic(
        v6: bool, at in 0usize..120, byte: u8, mtu in 60usize..2000
    ) {
        let mut raw = tcp_super(&Tcp::ack(v6, 12, 5), 500, &data(3000, 1));
        raw[at] = byte;
        if let Ok(segs) = segment(&raw, mtu) {
            for s in &segs {
                prop_assert!(s.len() <= mtu);
            }
        }
    }
}
