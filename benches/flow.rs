//! Plain timing of the enforcement path's per-packet work: classification,
//! and connection-tracker lookups in a table of 100k flows.
//!
//! Run with `cargo bench --bench flow`. Each figure is the best of several
//! rounds (the machine is shared; the best round is the least disturbed).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use umbra::conntrack::{Config, Conntrack, Direction, Match, PeerId, RuleId};
use umbra::wire::checksum::{self, Checksum};
use umbra::wire::classify;
use umbra::wire::ip::IpProtocol;
use umbra::wire::{ipv4, ipv6, PacketInfo};

const ROUNDS: usize = 7;

fn best_ns_per_op(ops: usize, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best.as_nanos() as f64 / ops as f64
}

fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let hl = if src.is_ipv4() { 20 } else { 40 };
    let mut p = vec![0u8; hl + l4.len()];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4::emit_header(&mut p, s, d, IpProtocol(proto), l4.len()).unwrap()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6::emit_header(&mut p, s, d, IpProtocol(proto), l4.len()).unwrap()
        }
        _ => unreachable!(),
    }
    p[hl..].copy_from_slice(l4);
    p
}

fn l4(proto: u8, src: IpAddr, dst: IpAddr, sp: u16, dp: u16, flags: u8, len: usize) -> Vec<u8> {
    let (hl, at) = if proto == 6 { (20, 16) } else { (8, 6) };
    let mut s = vec![0u8; hl + len];
    s[0..2].copy_from_slice(&sp.to_be_bytes());
    s[2..4].copy_from_slice(&dp.to_be_bytes());
    if proto == 6 {
        s[12] = 5 << 4;
        s[13] = flags;
    } else {
        s[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    }
    let mut c = checksum::pseudo_header(src, dst, proto, s.len() as u32);
    c.add_bytes(&s);
    s[at..at + 2].copy_from_slice(&c.finish().to_be_bytes());
    s
}

fn packets() -> Vec<(&'static str, Vec<u8>)> {
    let a4: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
    let b4: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
    let a6: IpAddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into();
    let b6: IpAddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).into();
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
    ext.extend(l4(17, a6, b6, 5000, 53, 0, 40));
    let mut echo = vec![8, 0, 0, 0, 0, 7, 0, 1];
    echo.extend([0u8; 56]);
    let c = {
        let mut c = Checksum::new();
        c.add_bytes(&echo);
        c.finish()
    };
    echo[2..4].copy_from_slice(&c.to_be_bytes());
    vec![
        (
            "v4 tcp syn",
            ip(a4, b4, 6, &l4(6, a4, b4, 40000, 22, 0x02, 0)),
        ),
        (
            "v4 tcp 1400B",
            ip(a4, b4, 6, &l4(6, a4, b4, 40000, 22, 0x18, 1400)),
        ),
        ("v6 udp + 2 ext hdrs", ip(a6, b6, 0, &ext)),
        ("v4 icmp echo", ip(a4, b4, 1, &echo)),
    ]
}

fn bench_classify() {
    println!("classify (ns/packet):");
    const N: usize = 1_000_000;
    for (name, p) in packets() {
        let ns = best_ns_per_op(N, || {
            for _ in 0..N {
                black_box(classify(black_box(&p)).ok());
            }
        });
        println!("  {name:<22} {ns:6.1}");
    }
}

/// A deterministic stream of distinct flows.
fn flow(i: u32) -> (PeerId, IpAddr, IpAddr, u16, u16) {
    let peer = PeerId(i % 100);
    let src = Ipv4Addr::from(0x0a00_0000 | (i >> 8)).into();
    let dst = Ipv4Addr::from(0x0a80_0000 | (i % 251)).into();
    (peer, src, dst, 1024 + (i & 0xff) as u16 * 7, 443)
}

fn info(src: IpAddr, dst: IpAddr, sp: u16, dp: u16) -> PacketInfo {
    classify(&ip(src, dst, 17, &l4(17, src, dst, sp, dp, 0, 32))).unwrap()
}

fn bench_conntrack() {
    const FLOWS: u32 = 100_000;
    let mut ct = Conntrack::new(Config {
        capacity: FLOWS as usize,
        ..Config::default()
    });
    let t0 = Instant::now();
    let mut now = t0;
    let mut fwd = Vec::with_capacity(FLOWS as usize);
    let mut rev = Vec::with_capacity(FLOWS as usize);
    for i in 0..FLOWS {
        let (peer, s, d, sp, dp) = flow(i);
        let o = info(s, d, sp, dp);
        let r = info(d, s, dp, sp);
        assert_eq!(ct.lookup(now, peer, Direction::Outbound, &o), Match::New);
        ct.admit(now, peer, Direction::Outbound, &o, RuleId(1))
            .unwrap();
        fwd.push((peer, o));
        rev.push((peer, r));
    }
    let fill = t0.elapsed().as_nanos() as f64 / f64::from(FLOWS);
    // Visit flows in a scattered order so the table does not sit in cache.
    let order: Vec<usize> = (0..FLOWS as usize)
        .map(|i| (i * 48_271) % FLOWS as usize)
        .collect();
    println!("conntrack, {} flows (ns/op):", ct.len());
    println!("  lookup New + admit (fill) {fill:6.1}");
    let n = order.len();
    let ns = best_ns_per_op(n, || {
        now += Duration::from_millis(1);
        for &i in &order {
            let (peer, ref r) = rev[i];
            black_box(ct.lookup(now, peer, Direction::Inbound, r));
        }
    });
    println!("  lookup reply (hit)        {ns:6.1}");
    let ns = best_ns_per_op(n, || {
        now += Duration::from_millis(1);
        for &i in &order {
            let (peer, ref o) = fwd[i];
            black_box(ct.lookup(now, peer, Direction::Outbound, o));
        }
    });
    println!("  lookup original (hit)     {ns:6.1}");
    let ns = best_ns_per_op(n, || {
        for &i in &order {
            let (_, ref o) = fwd[i];
            black_box(ct.lookup(now, PeerId(999), Direction::Outbound, o));
        }
    });
    println!("  lookup miss (New)         {ns:6.1}");
    // Churn at a full table: every admit evicts.
    let churn: Vec<(PeerId, PacketInfo)> = (0..n as u32)
        .map(|k| {
            let (p, s, d, sp, dp) = flow(FLOWS * 2 + k);
            (p, info(s, d, sp, dp.wrapping_add(1)))
        })
        .collect();
    let ns = best_ns_per_op(n, || {
        for (peer, o) in &churn {
            black_box(ct.admit(now, *peer, Direction::Outbound, o, RuleId(2)).ok());
        }
    });
    println!("  admit with eviction       {ns:6.1}");
    let t = Instant::now();
    let expired = ct.expire(now + Duration::from_secs(24 * 3600));
    println!(
        "  expire all {expired} flows     {:6.1}",
        t.elapsed().as_nanos() as f64 / expired.max(1) as f64
    );
}

fn main() {
    // `cargo test --benches` runs this too; keep that quick.
    if std::env::args().any(|a| a == "--bench") {
        bench_classify();
        bench_conntrack();
    } else {
        println!("flow bench: run with `cargo bench --bench flow`");
    }
}
