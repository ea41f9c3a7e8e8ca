//! umbra's tunnel engine versus boringtun, in the same process and run.
//!
//! `cargo bench --bench tunnel` prints, for each workload, the median of
//! several rounds for both implementations and the ratio umbra / boringtun
//! (above 1.0 means umbra is faster). Workloads:
//! - responder handshakes per second (the same initiations fed to both);
//! - transport seal+open throughput with 1420-byte packets;
//! - the AEAD candidates alone (ring vs RustCrypto ChaCha20-Poly1305).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use umbra::keys::PrivateKey;
use umbra::tunnel::{Config, Device, PeerConfig, Received, SeededEntropy, Sent};

const ROUNDS: usize = 9;
// Fewer rounds under a profiler: `UMBRA_BENCH_ROUNDS=1`.
fn rounds() -> usize {
    std::env::var("UMBRA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}
const PACKET: usize = 1420;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(name: &str, unit: &str, umbra: f64, boring: f64) {
    println!("{name:<34} umbra {umbra:>10.2} {unit:<10} boringtun {boring:>10.2} {unit:<10} ratio {:.2}x", umbra / boring);
}

fn device(
    seed: u8,
    peer: &PrivateKey,
    endpoint: SocketAddr,
    now: Instant,
) -> (Device, umbra::tunnel::PeerId) {
    let config = Config {
        handshake_load_threshold: u32::MAX,
        ..Config::default()
    };
    let mut d = Device::new(
        PrivateKey::from_bytes([seed; 32]),
        config,
        Box::new(SeededEntropy::new(u64::from(seed))),
        now,
        SystemTime::now(),
    );
    let mut pc = PeerConfig::new(peer.public_key());
    pc.endpoint = Some(endpoint);
    let id = d.upsert_peer(pc);
    (d, id)
}

fn ip_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0xab; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

fn boring(private: &PrivateKey, peer: &PrivateKey) -> Tunn {
    let secret = boringtun::x25519::StaticSecret::from(*private.as_bytes());
    let public = boringtun::x25519::PublicKey::from(&secret);
    let limiter = Arc::new(RateLimiter::new(&public, u64::MAX));
    Tunn::new(
        secret,
        boringtun::x25519::PublicKey::from(peer.public_key().0),
        None,
        None,
        1,
        Some(limiter),
    )
}

fn handshakes() {
    const N: usize = 400;
    let (ki, kr) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:2".parse().unwrap();
    let mut umbra_rates = Vec::new();
    let mut boring_rates = Vec::new();
    for round in 0..rounds() {
        // The same initiations, from one initiator with rising timestamps.
        let start = Instant::now();
        let (mut init, pid) = device(1, &kr, b, start);
        let mut now = start;
        let mut buf = vec![0u8; 2048];
        let mut inits = Vec::with_capacity(N);
        for _ in 0..N {
            now += Duration::from_secs(6);
            init.initiate(pid);
            let t = init.poll_transmit(now, &mut buf).unwrap();
            inits.push(buf[..t.len].to_vec());
        }

        let run_umbra = || {
            let (mut resp, _) = device(2, &ki, a, start);
            let mut reply = vec![0u8; 256];
            let mut datagrams = inits.clone();
            let mut rnow = start;
            let t0 = Instant::now();
            for d in &mut datagrams {
                rnow += Duration::from_secs(1);
                match resp.handle_datagram(rnow, a, d, &mut reply) {
                    Ok(Received::Reply(r)) => assert_eq!(r.len(), 92),
                    other => panic!("umbra responder: {other:?}"),
                }
            }
            N as f64 / t0.elapsed().as_secs_f64()
        };
        let run_boring = || {
            let mut bt = boring(&kr, &ki);
            let mut out = vec![0u8; 2048];
            let t0 = Instant::now();
            for m in &inits {
                match bt.decapsulate(Some(a.ip()), m, &mut out) {
                    TunnResult::WriteToNetwork(r) => assert_eq!(r.len(), 92),
                    other => panic!("boringtun responder: {other:?}"),
                }
            }
            N as f64 / t0.elapsed().as_secs_f64()
        };
        // Alternate who goes first so neither always runs on a warmer or
        // quieter machine.
        if round % 2 == 0 {
            umbra_rates.push(run_umbra());
            boring_rates.push(run_boring());
        } else {
            boring_rates.push(run_boring());
            umbra_rates.push(run_umbra());
        }
    }
    report(
        "responder handshakes",
        "per s",
        median(umbra_rates),
        median(boring_rates),
    );
}

fn transport() {
    const N: usize = 200_000;
    let (ka, kb) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:2".parse().unwrap();
    let packet = ip_packet(PACKET);
    let mut umbra_rates = Vec::new();
    let mut boring_rates = Vec::new();
    for _ in 0..rounds() {
        let now = Instant::now();
        let (mut da, pa) = device(1, &kb, b, now);
        let (mut db, _) = device(2, &ka, a, now);
        let mut buf = vec![0u8; 2048];
        let mut reply = vec![0u8; 256];
        // Handshake and confirm the session.
        buf[16..16 + PACKET].copy_from_slice(&packet);
        assert_eq!(da.encapsulate(now, pa, &mut buf, PACKET), Ok(Sent::Queued));
        let t = da.poll_transmit(now, &mut buf).unwrap();
        let resp = match db.handle_datagram(now, a, &mut buf[..t.len], &mut reply) {
            Ok(Received::Reply(r)) => r.to_vec(),
            other => panic!("{other:?}"),
        };
        let mut resp = resp;
        da.handle_datagram(now, b, &mut resp, &mut reply).unwrap();
        while let Some(t) = da.poll_transmit(now, &mut buf) {
            db.handle_datagram(now, a, &mut buf[..t.len], &mut reply)
                .unwrap();
        }
        let t0 = Instant::now();
        for _ in 0..N {
            buf[16..16 + PACKET].copy_from_slice(&packet);
            let Ok(Sent::Now(t)) = da.encapsulate(now, pa, &mut buf, PACKET) else {
                panic!()
            };
            match db.handle_datagram(now, a, &mut buf[..t.len], &mut reply) {
                Ok(Received::Packet { packet, .. }) => {
                    black_box(packet);
                }
                other => panic!("{other:?}"),
            }
        }
        umbra_rates.push((N * PACKET * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9);

        let mut ta = boring(&ka, &kb);
        let mut tb = boring(&kb, &ka);
        let mut out = vec![0u8; 2048];
        let mut out2 = vec![0u8; 2048];
        // Handshake, then flush the queued packet.
        let TunnResult::WriteToNetwork(init) = ta.encapsulate(&packet, &mut out) else {
            panic!()
        };
        let init = init.to_vec();
        let TunnResult::WriteToNetwork(resp) = tb.decapsulate(Some(a.ip()), &init, &mut out) else {
            panic!()
        };
        let resp = resp.to_vec();
        let mut input: &[u8] = &resp;
        while let TunnResult::WriteToNetwork(d) = ta.decapsulate(Some(b.ip()), input, &mut out) {
            let d = d.to_vec();
            let _ = tb.decapsulate(Some(a.ip()), &d, &mut out2);
            input = &[];
        }
        let t0 = Instant::now();
        for _ in 0..N {
            let TunnResult::WriteToNetwork(d) = ta.encapsulate(&packet, &mut out) else {
                panic!()
            };
            match tb.decapsulate(Some(a.ip()), d, &mut out2) {
                TunnResult::WriteToTunnelV4(p, _) => {
                    black_box(p);
                }
                other => panic!("{other:?}"),
            }
        }
        boring_rates.push((N * PACKET * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    report(
        "transport seal+open 1420 B",
        "Gbit/s",
        median(umbra_rates),
        median(boring_rates),
    );
}

fn aead_candidates() {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    const N: usize = 200_000;
    let key = [7u8; 32];
    let mut ring_rates = Vec::new();
    let mut rc_rates = Vec::new();
    for _ in 0..rounds() {
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
        let mut buf = vec![0u8; PACKET + 16];
        let t0 = Instant::now();
        for i in 0..N as u64 {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_le_bytes());
            let tag = k
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(n),
                    Aad::empty(),
                    &mut buf[..PACKET],
                )
                .unwrap();
            buf[PACKET..].copy_from_slice(tag.as_ref());
            black_box(
                k.open_in_place(Nonce::assume_unique_for_key(n), Aad::empty(), &mut buf)
                    .unwrap(),
            );
        }
        ring_rates.push((N * PACKET * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9);

        let c = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&key).unwrap();
        let mut buf = vec![0u8; PACKET];
        let t0 = Instant::now();
        for i in 0..N as u64 {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&i.to_le_bytes());
            let nonce = chacha20poly1305::Nonce::from_slice(&n);
            let tag = c.encrypt_in_place_detached(nonce, &[], &mut buf).unwrap();
            c.decrypt_in_place_detached(nonce, &[], &mut buf, &tag)
                .unwrap();
            black_box(&buf);
        }
        rc_rates.push((N * PACKET * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    let (r, c) = (median(ring_rates), median(rc_rates));
    println!(
        "{:<34} ring  {r:>10.2} Gbit/s     RustCrypto {c:>9.2} Gbit/s     ratio {:.2}x",
        "AEAD seal+open 1420 B (1 core)",
        r / c
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with --test-ish args; keep it quick then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    // `--only handshakes|transport` runs one workload (for profilers).
    match std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .as_deref()
    {
        Some("handshakes") => return handshakes(),
        Some("transport") => return transport(),
        _ => {}
    }
    println!(
        "umbra vs boringtun, median of {} rounds, same process (ratio > 1.0: umbra faster)",
        rounds()
    );
    handshakes();
    transport();
    aead_candidates();
}
