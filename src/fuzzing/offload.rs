//! The `offload` fuzz target: TUN segmentation and coalescing
//! ([`crate::wire::offload`]) on hostile bytes.

use super::Input;
use crate::wire::offload::build::{checksums_ok, tcp_super, udp_super, Tcp};
use crate::wire::offload::gro::{Coalescer, Push};
use crate::wire::offload::gso::Segments;
use crate::wire::offload::{VnetHdr, MAX_PACKET};

/// Output buffer sizes the segmenter is tried with (byte 0, bits 2-3).
const MTUS: [usize; 4] = [1500, 576, 9000, 60];

/// `offload`: byte 0 picks the mode.
/// - bits 0-1 = 0 or 2: the rest is a virtio header and a packet as a TUN
///   device hands them over. The segmenter must not panic; every segment of
///   a GSO packet must fit the buffer and be a valid IP packet with correct
///   checksums; those segments pushed through the coalescer must come back
///   out of the segmenter unchanged.
/// - 1 or 3: the rest is packets (u16 length + bytes each) pushed through
///   the coalescer; every packet must come back out, in order, unchanged
///   (up to link padding, and checksum fields in the other of their two
///   one's-complement forms).
pub fn offload(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        segment_one(rest, MTUS[usize::from(mode >> 2) & 3]);
    } else {
        let mut input = Input(rest);
        let mut packets = Vec::new();
        while let Some(p) = input.chunk() {
            packets.push(p.to_vec());
        }
        coalesce_round_trip(&packets);
    }
}

fn segment_one(raw: &[u8], mtu: usize) {
    let Ok((hdr, packet)) = VnetHdr::split(raw) else {
        return;
    };
    let Ok(plan) = Segments::new(&hdr, packet) else {
        return;
    };
    let mut buf = vec![0u8; mtu];
    let mut segs = Vec::new();
    for i in 0..plan.count() {
        let Ok(n) = plan.write(packet, i, &mut buf) else {
            // Only a segment too big for the buffer may fail, and then all
            // of them do (the first is the longest).
            assert!(plan.max_segment_len() > mtu, "segment {i} failed");
            return;
        };
        assert!(n <= mtu);
        let seg = &buf[..n];
        if plan.is_gso() {
            assert!(
                checksums_ok(seg),
                "segment {i} of {} is invalid",
                plan.count()
            );
        } else {
            assert_eq!(n, packet.len().min(MAX_PACKET));
        }
        segs.push(seg.to_vec());
    }
    if plan.is_gso() {
        let back = coalesce_round_trip(&segs);
        assert_eq!(back, segs, "coalescing the segments changed them");
    }
}

/// Pushes `packets` through a coalescer, segments every write again, and
/// checks each packet came back; returns what came back.
fn coalesce_round_trip(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut c = Coalescer::new();
    let mut writes = Vec::new();
    for p in packets {
        loop {
            match c.push(p) {
                Push::Held => break,
                Push::FlushFirst => writes.push(c.take().expect("pending").to_vec()),
                Push::TooBig => unreachable!("a u16-length chunk is never too big"),
            }
        }
    }
    writes.extend(c.take().map(<[u8]>::to_vec));
    assert!(c.is_empty() && c.take().is_none());
    let mut back = Vec::new();
    let mut buf = vec![0u8; MAX_PACKET];
    for w in &writes {
        let (hdr, packet) = VnetHdr::split(w).expect("a write starts with a header");
        let plan = Segments::new(&hdr, packet).expect("the segmenter takes what we coalesce");
        for i in 0..plan.count() {
            let n = plan.write(packet, i, &mut buf).expect("segment");
            back.push(buf[..n].to_vec());
        }
    }
    assert_eq!(back.len(), packets.len(), "packets lost or invented");
    for (i, (got, sent)) in back.iter().zip(packets).enumerate() {
        assert!(
            same(got, sent),
            "packet {i} changed:\n{got:02x?}\n{sent:02x?}"
        );
    }
    back
}

/// Equal up to link padding after the IP length, and (for packets whose
/// checksums verify either way) checksum fields holding the other zero.
fn same(got: &[u8], sent: &[u8]) -> bool {
    if sent.get(..got.len()) != Some(got) {
        if got.len() != sent.len() || !checksums_ok(got) || !checksums_ok(sent) {
            return false;
        }
        let mask = |p: &[u8]| {
            let mut p = p.to_vec();
            let l4 = if p[0] >> 4 == 4 { 20 } else { 40 };
            for at in [10, l4 + 16] {
                if p[0] >> 4 == 4 || at != 10 {
                    if let Some(f) = p.get_mut(at..at + 2) {
                        f.fill(0);
                    }
                }
            }
            p
        };
        return mask(got) == mask(sent);
    }
    true
}

/// Seeds: real-shaped TSO and USO packets of both families, plain packets
/// needing their checksum, and a run of segments to coalesce.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let mut out = Vec::new();
    for v6 in [false, true] {
        let fam = if v6 { "v6" } else { "v4" };
        let mut t = Tcp::ack(v6, 12, 0xffff_fe00);
        t.flags |= 0x08 | 0x01; // PSH, FIN
        let mut tso = vec![0];
        tso.extend(tcp_super(&t, 536, &payload));
        out.push((format!("tso_{fam}"), tso));
        let mut small = vec![4];
        small.extend(tcp_super(&Tcp::ack(v6, 0, 1), 536, &payload[..100]));
        out.push((format!("plain_csum_{fam}"), small));
        let mut uso = vec![8];
        uso.extend(udp_super(v6, 1000, &payload[..2500]));
        out.push((format!("uso_{fam}"), uso));
        // The segments of a TSO packet, as packets to coalesce.
        let raw = tcp_super(&Tcp::ack(v6, 12, 5), 400, &payload[..2000]);
        let (hdr, packet) = VnetHdr::split(&raw).expect("built");
        let plan = Segments::new(&hdr, packet).expect("built");
        let mut run = vec![1];
        let mut buf = [0u8; 1500];
        for i in 0..plan.count() {
            let n = plan.write(packet, i, &mut buf).expect("built");
            run.extend_from_slice(&(n as u16).to_le_bytes());
            run.extend_from_slice(&buf[..n]);
        }
        out.push((format!("run_{fam}"), run));
    }
    out
}
