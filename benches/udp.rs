//! The node's UDP underlay I/O over loopback: one system call per datagram
//! versus `sendmmsg`/`recvmmsg` batches versus batches with UDP GSO/GRO.
//!
//! `cargo bench --bench udp` sends full-size WireGuard datagrams (1452
//! bytes: a 1420-byte MTU packet plus 32 bytes of header and tag) from one
//! UDP socket pair to another over 127.0.0.1, 64 at a time, and reads each
//! burst back on the same thread (loopback delivers during the send call),
//! so the figure is the CPU cost of both ends per datagram. Prints the
//! median of several rounds per mode.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use umbra::io::udp::{recv_from, UdpPair};
use umbra::io::udp_batch::{UdpRx, UdpTx};

const DATAGRAM: usize = 1452;
const BURST: usize = 64;
const ROUND: Duration = Duration::from_millis(700);

fn rounds() -> usize {
    std::env::var("UMBRA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Single,
    Batched,
    GsoOnly,
    GsoGro,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Single => "sendto/recvfrom per datagram",
            Mode::Batched => "sendmmsg/recvmmsg",
            Mode::GsoOnly => "sendmmsg+GSO, recvmmsg (no GRO)",
            Mode::GsoGro => "sendmmsg+GSO, recvmmsg+GRO",
        }
    }
}

/// Datagrams per second through one round of `mode`.
fn round(mode: Mode) -> f64 {
    let a = UdpPair::bind(0).unwrap();
    let b = UdpPair::bind(0).unwrap();
    if mode == Mode::GsoGro {
        assert!(b.enable_gro(), "this kernel has no UDP GRO");
    }
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, b.port()));
    let payload = vec![0x5a; DATAGRAM];
    let mut buf = vec![0u8; 2048];
    let mut tx = UdpTx::new(&a, matches!(mode, Mode::GsoOnly | Mode::GsoGro));
    let mut rx = UdpRx::new();
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < ROUND {
        for _ in 0..BURST {
            if mode == Mode::Single {
                if a.send_to(&payload, to).is_ok() {
                    sent += 1;
                }
            } else {
                tx.queue(&a, &payload, to);
            }
        }
        if mode != Mode::Single {
            tx.flush(&a);
            sent = tx.stats().datagrams;
        }
        loop {
            if mode == Mode::Single {
                match recv_from(b.v4(), &mut buf) {
                    Ok((n, _)) => got += u64::from(n == DATAGRAM),
                    Err(_) => break,
                }
            } else {
                match rx.next(b.v4()).unwrap() {
                    Some((_, d)) => got += u64::from(d.len() == DATAGRAM),
                    None => break,
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(got > 0 && got == sent, "{sent} sent, {got} received");
    got as f64 / secs
}

fn main() {
    println!("udp loopback, {DATAGRAM}-byte datagrams in bursts of {BURST}, send and receive on one thread; median of {} rounds", rounds());
    let mut base = 0.0;
    for mode in [Mode::Single, Mode::Batched, Mode::GsoOnly, Mode::GsoGro] {
        let mut v: Vec<f64> = (0..rounds()).map(|_| round(mode)).collect();
        v.sort_by(|x, y| x.total_cmp(y));
        let rate = v[v.len() / 2];
        if mode == Mode::Single {
            base = rate;
        }
        println!(
            "{:<34} {:>10.0} datagrams/s {:>6.2} Gbit/s  {:.2}x",
            mode.name(),
            rate,
            rate * (DATAGRAM * 8) as f64 / 1e9,
            rate / base
        );
    }
}
