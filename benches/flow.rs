//! Plain timing of the enforcement path's per-packet work: classification,
//! and connection-tracker lookups in a table of 100k flows.
//!
//! Run with `cargo bench --bench flow`. Each figure is the best of several
//! rounds (the machine is shared; the best round is the least disturbed).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use umbra::conntrack::{Config, Conntrack, Direction, Match, PeerId, RuleId};
use umbra::net::IpProtocol;
use umbra::wire::checksum::{self, Checksum};
use umbra::wire::classify;
use umbra::wire::{ipv4, ipv6, PacketInfo};

const ROUNDS: usize = 3;

/// CPU time this thread has run, from /proc (10 ms ticks). The machine is
/// shared, so wall-clock time includes waiting for a core; on-CPU time does
/// not (cache pollution by neighbours still shows).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are 11 and 12 after the
    // state field; USER_HZ is 100 on Linux.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// (wall, cpu) nanoseconds per operation: the best of a few rounds of
/// `f`, each of which performs `ops` operations.
fn best_ns_per_op(ops: usize, mut f: impl FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let c = thread_cpu_time();
        let t = Instant::now();
        f();
        wall = wall.min(t.elapsed());
        if let (Some(a), Some(b)) = (c, thread_cpu_time()) {
            cpu = cpu.min(b.saturating_sub(a));
        }
    }
    let per = |d: Duration| d.as_nanos() as f64 / ops as f64;
    (
        per(wall),
        if cpu == Duration::MAX {
            f64::NAN
        } else {
            per(cpu)
        },
    )
}

fn report(name: &str, (wall, cpu): (f64, f64)) {
    println!("  {name:<26} {wall:7.1} wall {cpu:7.1} cpu");
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
    const N: usize = 20_000_000;
    for (name, p) in packets() {
        let ns = best_ns_per_op(N, || {
            for _ in 0..N {
                black_box(classify(black_box(&p)).ok());
            }
        });
        report(name, ns);
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
    // Visit flows in a scattered order so the table does not sit in cache,
    // but read the packets sequentially: a real packet is in cache already.
    let order = (0..FLOWS as usize).map(|i| (i * 48_271) % FLOWS as usize);
    let rev: Vec<_> = order.clone().map(|i| rev[i]).collect();
    let fwd: Vec<_> = order.map(|i| fwd[i]).collect();
    println!("conntrack, {} flows (ns/op):", ct.len());
    println!("  lookup New + admit (fill)  {fill:7.1} wall");
    const REPEAT: usize = 20;
    let n = rev.len() * REPEAT;
    let ns = best_ns_per_op(n, || {
        for _ in 0..REPEAT {
            now += Duration::from_millis(1);
            for (peer, r) in &rev {
                black_box(ct.lookup(now, *peer, Direction::Inbound, r));
            }
        }
    });
    report("lookup reply (hit)", ns);
    let ns = best_ns_per_op(n, || {
        for _ in 0..REPEAT {
            now += Duration::from_millis(1);
            for (peer, o) in &fwd {
                black_box(ct.lookup(now, *peer, Direction::Outbound, o));
            }
        }
    });
    report("lookup original (hit)", ns);
    let ns = best_ns_per_op(n, || {
        for _ in 0..REPEAT {
            for (_, o) in &fwd {
                black_box(ct.lookup(now, PeerId(999), Direction::Outbound, o));
            }
        }
    });
    report("lookup miss (New)", ns);
    // Churn at a full table: every admit evicts.
    let churn: Vec<(PeerId, PacketInfo)> = (0..FLOWS * REPEAT as u32)
        .map(|k| {
            let (p, s, d, sp, dp) = flow(FLOWS * 2 + k);
            (p, info(s, d, sp, dp.wrapping_add(1 + (k / FLOWS) as u16)))
        })
        .collect();
    let mut round = 0;
    let ns = best_ns_per_op(churn.len(), || {
        round += 1;
        for (peer, o) in &churn {
            black_box(
                ct.admit(now, *peer, Direction::Outbound, o, RuleId(round))
                    .ok(),
            );
        }
    });
    report("admit with eviction", ns);
    let t = Instant::now();
    let expired = ct.expire(now + Duration::from_secs(24 * 3600));
    println!(
        "  expire all ({expired} flows)   {:7.1} wall",
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
