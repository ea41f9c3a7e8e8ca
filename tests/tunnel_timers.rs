//! WireGuard's timer rules, driven by simulated time between two umbra devices.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use umbra::tunnel::{Config, Dropped, SendError};

fn pkt(n: u8) -> Vec<u8> {
    ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], &[n; 64])
}

fn connected() -> (UmbraSide, UmbraSide) {
    let (mut a, mut b) = umbra_pair(Config::default());
    let out = a.send_packet(&pkt(0));
    let (_, got) = pump(&mut a, &mut b, out, vec![]);
    assert_eq!(got.len(), 1);
    (a, b)
}

fn advance_both(a: &mut UmbraSide, b: &mut UmbraSide, d: Duration) {
    a.advance(d);
    b.advance(d);
}

#[test]
fn receiver_sends_keepalive_after_ten_quiet_seconds() {
    let (mut a, mut b) = connected();
    b.advance(Duration::from_secs(9));
    assert!(b.tick().is_empty());
    b.advance(Duration::from_secs(1));
    let out = b.tick();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 32, "an empty data message");
    let (got_a, _) = pump(&mut a, &mut b, vec![], out);
    assert!(
        got_a.is_empty(),
        "keepalives are not delivered to the tunnel"
    );
    assert!(a.drops.is_empty());
}

#[test]
fn sender_rehandshakes_when_nothing_comes_back() {
    let (mut a, mut b) = connected();
    // b answers, so a's clock for "no reply" starts from its next send.
    let out = b.send_packet(&pkt(9));
    pump(&mut a, &mut b, vec![], out);
    a.advance(Duration::from_secs(6));
    // Send data, then hear nothing for KEEPALIVE + REKEY_TIMEOUT.
    let out = a.send_packet(&pkt(1));
    assert_eq!(out.len(), 1);
    a.advance(Duration::from_secs(14));
    assert!(a.tick().is_empty());
    a.advance(Duration::from_secs(1));
    let out = a.tick();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0][0], 1, "a handshake initiation");
}

#[test]
fn retransmits_then_gives_up_after_ninety_seconds() {
    let (mut a, _b) = umbra_pair(Config::default());
    let first = a.send_packet(&pkt(1));
    assert_eq!(first.len(), 1);
    let mut initiations = 1;
    for _ in 0..200 {
        a.advance(Duration::from_millis(500));
        initiations += a.tick().iter().filter(|d| d[0] == 1).count();
    }
    // One initial attempt plus MAX_HANDSHAKE_ATTEMPTS retries, then silence.
    assert_eq!(initiations, 19);
    // The packet that waited was dropped with the handshake.
    a.advance(Duration::from_secs(10));
    assert!(a.tick().is_empty());
}

#[test]
fn keys_are_zeroed_after_three_reject_times() {
    let (mut a, mut b) = connected();
    assert!(a.dev.peer_stats(a.peer, a.now).unwrap().has_session);
    advance_both(&mut a, &mut b, Duration::from_secs(179));
    assert!(a.dev.peer_stats(a.peer, a.now).unwrap().has_session);
    advance_both(&mut a, &mut b, Duration::from_secs(1));
    assert!(
        !a.dev.peer_stats(a.peer, a.now).unwrap().has_session,
        "expired at REJECT_AFTER_TIME"
    );
    advance_both(&mut a, &mut b, Duration::from_secs(361));
    a.tick();
    // After zeroing, an old data message finds no keys at all.
    let d = b.send_packet(&pkt(3));
    assert!(
        d.iter().all(|d| d[0] == 1),
        "b has no usable keys either and rehandshakes"
    );
}

#[test]
fn persistent_keepalive_fires_on_an_idle_link() {
    let (mut a, mut b) = umbra_pair(Config::default());
    let mut pc = umbra::tunnel::PeerConfig::new(key(2).public_key());
    pc.endpoint = Some(addr(B));
    pc.persistent_keepalive = Some(Duration::from_secs(25));
    a.dev.upsert_peer(pc);
    let out = a.send_packet(&pkt(0));
    pump(&mut a, &mut b, out, vec![]);
    let mut sent_by_a = Vec::new();
    for second in 1..=100 {
        advance_both(&mut a, &mut b, Duration::from_secs(1));
        let (oa, ob) = (a.tick(), b.tick());
        sent_by_a.extend(oa.iter().map(|d| (second, d.len())));
        pump(&mut a, &mut b, oa, ob);
    }
    // b answers the first data packet with a keepalive at 10 s; from then on
    // a's only traffic is its persistent keepalive every 25 s.
    assert_eq!(sent_by_a, vec![(35, 32), (60, 32), (85, 32)]);
}

#[test]
fn replayed_initiation_and_floods_are_refused() {
    let (mut a, mut b) = umbra_pair(Config::default());
    let init = a.send_packet(&pkt(1));
    let (r1, _) = b.recv_datagram(a.addr(), &init[0]);
    assert_eq!(r1.len(), 1);
    let (r2, _) = b.recv_datagram(a.addr(), &init[0]);
    assert!(r2.is_empty());
    b.advance(Duration::from_secs(1));
    let (r3, _) = b.recv_datagram(a.addr(), &init[0]);
    assert!(r3.is_empty());
    assert_eq!(b.drops, vec![Dropped::Replay, Dropped::Replay]);

    // Two fresh initiations 10 ms apart: the second is a flood.
    a.advance(Duration::from_secs(6));
    let second = a.tick();
    assert_eq!(second[0][0], 1);
    let (ok, _) = b.recv_datagram(a.addr(), &second[0]);
    assert_eq!(ok.len(), 1);
    a.advance(Duration::from_secs(6));
    let third = a.tick();
    b.advance(Duration::from_millis(10));
    let (flood, _) = b.recv_datagram(a.addr(), &third[0]);
    assert!(flood.is_empty());
    assert_eq!(b.drops.last(), Some(&Dropped::Flood));
}

#[test]
fn peer_without_endpoint_waits_then_roams() {
    let (ka, kb) = (key(1), key(2));
    let mut a = UmbraSide::new(
        ka.clone(),
        kb.public_key(),
        None,
        addr(A),
        None,
        Config::default(),
        1,
    );
    let mut b = UmbraSide::new(
        kb,
        ka.public_key(),
        None,
        addr(B),
        Some(addr(A)),
        Config::default(),
        2,
    );
    let mut buf = vec![0u8; MTU_BUF];
    let p = pkt(1);
    buf[16..16 + p.len()].copy_from_slice(&p);
    assert_eq!(
        a.dev.encapsulate(a.now, a.peer, &mut buf, p.len()),
        Err(SendError::NoEndpoint)
    );
    let out = b.send_packet(&pkt(2));
    let (got_a, _) = pump(&mut a, &mut b, vec![], out);
    assert_eq!(got_a, vec![pkt(2)]);
    assert_eq!(
        a.dev.peer_stats(a.peer, a.now).unwrap().endpoint,
        Some(addr(B))
    );
    // b moves to a new address: the next authenticated packet moves a's endpoint.
    let d = b.send_packet(&pkt(3));
    let (_, got) = a.recv_datagram(addr("198.51.100.5:4000"), &d[0]);
    assert_eq!(got, vec![pkt(3)]);
    assert_eq!(
        a.dev.peer_stats(a.peer, a.now).unwrap().endpoint,
        Some(addr("198.51.100.5:4000"))
    );
}

#[test]
fn queue_is_bounded_while_handshaking() {
    let config = Config {
        queue_limit: 4,
        ..Config::default()
    };
    let (mut a, mut b) = umbra_pair(config);
    let mut out = Vec::new();
    for n in 0..10 {
        out.extend(a.send_packet(&pkt(n)));
    }
    assert_eq!(out.len(), 1, "one initiation, everything else waits");
    let (_, got) = pump(&mut a, &mut b, out, vec![]);
    assert_eq!(
        got,
        (6..10).map(pkt).collect::<Vec<_>>(),
        "the newest four survive"
    );
    assert_eq!(
        a.dev.queue_dropped(),
        6,
        "the six oldest were dropped and counted"
    );
}

#[test]
fn removed_peer_is_forgotten_at_once() {
    let (mut a, mut b) = connected();
    let id = b.peer;
    assert!(b.dev.remove_peer(id));
    let d = a.send_packet(&pkt(5));
    let (_, got) = b.recv_datagram(a.addr(), &d[0]);
    assert!(got.is_empty());
    assert_eq!(b.drops, vec![Dropped::UnknownIndex]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Arbitrary datagrams, and mutations of real ones, never panic a device
    /// with a live session, and never produce a reply unless they carry a
    /// valid mac1.
    #[test]
    fn hostile_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..2000, kind in 0u8..6) {
        let (mut a, mut b) = connected();
        let mut d = match kind {
            0 => a.send_packet(&pkt(9)).remove(0),
            1 => { a.advance(Duration::from_secs(6)); a.dev.initiate(a.peer); a.tick().remove(0) }
            _ => bytes.clone(),
        };
        if kind < 2 && !d.is_empty() {
            let i = flip % d.len();
            d[i] ^= 1 << (flip % 8);
        } else if d.len() >= 4 && kind > 2 {
            d[0] = kind - 2;
            d[1..4].fill(0);
        }
        let (replies, _) = b.recv_datagram(a.addr(), &d);
        if kind >= 2 { prop_assert!(replies.is_empty()); }
    }
}
