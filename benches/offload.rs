//! TUN offload packet work, sans-IO: what segmenting the kernel's TSO
//! super-packets and coalescing decrypted segments costs per byte.
//!
//! `cargo bench --bench offload` prints, for 64 KiB IPv4 TCP super-packets
//! cut into 1380-byte segments (MTU 1420 less IP/TCP headers and
//! timestamps), the median of several rounds: segmentation (one super-packet
//! into segments written to a caller's buffer, each with its checksums), and
//! coalescing (the segments pushed into a coalescer and taken as one
//! super-packet, checksums verified on the way in), in GB/s of TCP payload
//! and nanoseconds per segment.

use std::hint::black_box;
use std::time::Instant;

use umbra::wire::offload::build::{tcp_super, Tcp};
use umbra::wire::offload::gro::{Coalescer, Push};
use umbra::wire::offload::gso::Segments;
use umbra::wire::offload::VnetHdr;

const ROUNDS: usize = 9;
const MSS: u16 = 1368;
const PAYLOAD: usize = 47 * MSS as usize; // 64,296 bytes: a full TSO packet
const ITERS: usize = 2000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 131) as u8).collect();
    let raw = tcp_super(&Tcp::ack(false, 12, 1), MSS, &payload);
    let (hdr, packet) = VnetHdr::split(&raw).expect("built");
    let plan = Segments::new(&hdr, packet).expect("built");
    let count = plan.count();
    let mut buf = vec![0u8; 1500];
    let segs: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let n = plan.write(packet, i, &mut buf).expect("segment");
            buf[..n].to_vec()
        })
        .collect();

    let mut seg_rounds = Vec::new();
    let mut gro_rounds = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..ITERS {
            let plan = Segments::new(&hdr, black_box(packet)).expect("plan");
            for i in 0..plan.count() {
                black_box(plan.write(packet, i, &mut buf).expect("segment"));
            }
        }
        seg_rounds.push(t.elapsed().as_secs_f64());

        let mut c = Coalescer::new();
        let t = Instant::now();
        for _ in 0..ITERS {
            for s in &segs {
                assert_eq!(c.push(black_box(s)), Push::Held);
            }
            black_box(c.take().expect("super-packet").len());
        }
        gro_rounds.push(t.elapsed().as_secs_f64());
    }
    let bytes = (PAYLOAD * ITERS) as f64;
    let segments = (count * ITERS) as f64;
    for (name, secs) in [
        ("segment (TSO -> MTU packets)", median(seg_rounds)),
        ("coalesce (segments -> GRO write)", median(gro_rounds)),
    ] {
        println!(
            "{name:<34} {:>6.2} GB/s payload  {:>6.1} ns/segment  {:>5.3} s CPU per GB",
            bytes / secs / 1e9,
            secs / segments * 1e9,
            secs / bytes * 1e9
        );
    }
}
