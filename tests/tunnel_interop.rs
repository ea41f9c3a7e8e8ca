//! umbra's tunnel engine against boringtun (the reference peer) and itself.

mod common;

use std::time::Duration;

use common::*;
use umbra::tunnel::{Config, Dropped};

fn umbra_and_boring(
    psk: Option<[u8; 32]>,
    umbra_config: Config,
    bt_limit: Option<u64>,
) -> (UmbraSide, BoringSide) {
    let (ka, kb) = (key(1), key(2));
    let u = UmbraSide::new(
        ka.clone(),
        kb.public_key(),
        psk,
        addr(A),
        Some(addr(B)),
        umbra_config,
        1,
    );
    let b = BoringSide::new(&kb, ka.public_key(), psk, addr(B), bt_limit);
    (u, b)
}

fn packet(n: u32, dir: u8) -> Vec<u8> {
    let mut payload = vec![dir; 100 + (n as usize % 1200)];
    payload[..4].copy_from_slice(&n.to_be_bytes());
    ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], &payload)
}

/// Sends one packet each way and checks both arrive intact.
fn exchange(a: &mut dyn Side, b: &mut dyn Side, n: u32) {
    let pa = packet(n, 0xa);
    let out = a.send_packet(&pa);
    let (_, got_b) = pump(a, b, out, vec![]);
    assert_eq!(got_b, vec![pa], "a → b packet {n}");
    let pb = packet(n, 0xb);
    let out = b.send_packet(&pb);
    let (got_a, _) = pump(a, b, vec![], out);
    assert_eq!(got_a, vec![pb], "b → a packet {n}");
}

#[test]
fn umbra_initiates_to_boringtun() {
    for psk in [None, Some([42u8; 32])] {
        let (mut u, mut b) = umbra_and_boring(psk, Config::default(), None);
        for n in 0..20 {
            exchange(&mut u, &mut b, n);
        }
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert!(u.drops.is_empty(), "{:?}", u.drops);
    }
}

#[test]
fn boringtun_initiates_to_umbra() {
    for psk in [None, Some([42u8; 32])] {
        let (mut u, mut b) = umbra_and_boring(psk, Config::default(), None);
        for n in 0..20 {
            exchange(&mut b, &mut u, n);
        }
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert!(u.drops.is_empty(), "{:?}", u.drops);
    }
}

#[test]
fn umbra_with_umbra_both_ways() {
    let (mut a, mut b) = umbra_pair(Config::default());
    for n in 0..10 {
        exchange(&mut a, &mut b, n);
        exchange(&mut b, &mut a, n + 100);
    }
    assert!(
        a.drops.is_empty() && b.drops.is_empty(),
        "{:?} {:?}",
        a.drops,
        b.drops
    );
}

#[test]
fn mismatched_psk_never_completes() {
    let (ka, kb) = (key(1), key(2));
    let mut u = UmbraSide::new(
        ka.clone(),
        kb.public_key(),
        Some([1; 32]),
        addr(A),
        Some(addr(B)),
        Config::default(),
        1,
    );
    let mut b = BoringSide::new(&kb, ka.public_key(), Some([2; 32]), addr(B), None);
    let out = u.send_packet(&packet(1, 1));
    let (_, got_b) = pump(&mut u, &mut b, out, vec![]);
    assert!(got_b.is_empty());
    assert_eq!(
        u.drops,
        vec![Dropped::Crypto],
        "the response fails to authenticate"
    );
}

#[test]
fn cookie_round_trip_with_umbra_as_responder_under_load() {
    let config = Config {
        handshake_load_threshold: 0,
        ..Config::default()
    };
    let (mut u, mut b) = umbra_and_boring(None, config, None);
    let p = packet(1, 0xb);
    let init = b.send_packet(&p);
    assert_eq!(init.len(), 1);
    // Under load, the initiation without mac2 earns a 64-byte cookie reply.
    let (replies, _) = u.recv_datagram(b.addr(), &init[0]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].len(), 64);
    assert_eq!(replies[0][0], 3);
    let (answer, _) = b.recv_datagram(u.addr(), &replies[0]);
    assert!(answer.is_empty() && b.errors.is_empty(), "{:?}", b.errors);
    // boringtun retries with mac2 and now gets a real response.
    let retry = b.force_initiation();
    let (got_u, got_b) = pump(&mut u, &mut b, vec![], retry);
    assert_eq!(
        got_u,
        vec![p],
        "the queued packet crosses after the cookie round trip"
    );
    assert!(got_b.is_empty());
    exchange(&mut u, &mut b, 2);
}

#[test]
fn cookie_round_trip_with_umbra_as_initiator() {
    // boringtun's limiter with a limit of 0 treats every handshake as load.
    let (mut u, mut b) = umbra_and_boring(None, Config::default(), Some(0));
    let p = packet(1, 0xa);
    let init = u.send_packet(&p);
    assert_eq!(init.len(), 1);
    let (replies, _) = b.recv_datagram(u.addr(), &init[0]);
    assert_eq!(replies.len(), 1, "boringtun answers with a cookie reply");
    assert_eq!(replies[0][0], 3);
    // umbra resends the initiation at once, with mac2 set, instead of
    // waiting for the retransmission timer (issue 9).
    let (retry, _) = u.recv_datagram(b.addr(), &replies[0]);
    assert!(u.drops.is_empty(), "{:?}", u.drops);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0][0], 1, "an initiation");
    assert_ne!(&retry[0][132..148], &[0u8; 16], "mac2 present");
    let (_, got_b) = pump(&mut u, &mut b, retry, vec![]);
    assert_eq!(got_b, vec![p]);
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}

#[test]
fn rekey_after_120_seconds_loses_nothing() {
    let (mut u, mut b) = umbra_and_boring(None, Config::default(), None);
    for second in 0..200u32 {
        for k in 0..5 {
            exchange(&mut u, &mut b, second * 10 + k);
        }
        u.advance(Duration::from_secs(1));
        let out = u.tick();
        let (_, got_b) = pump(&mut u, &mut b, out, vec![]);
        assert!(got_b.is_empty());
    }
    let stats = u.dev.peer_stats(u.peer, u.now).unwrap();
    assert!(stats.handshakes >= 2, "rekeyed at least once: {stats:?}");
    assert!(u.drops.is_empty(), "{:?}", u.drops);
    assert!(b.errors.is_empty(), "{:?}", b.errors);
}

#[test]
fn umbra_pair_rekeys_both_directions_over_ten_minutes() {
    let (mut a, mut b) = umbra_pair(Config::default());
    for second in 0..600u32 {
        exchange(&mut a, &mut b, second);
        exchange(&mut b, &mut a, second);
        a.advance(Duration::from_secs(1));
        b.advance(Duration::from_secs(1));
        let (oa, ob) = (a.tick(), b.tick());
        pump(&mut a, &mut b, oa, ob);
    }
    let handshakes = a.dev.peer_stats(a.peer, a.now).unwrap().handshakes;
    assert!(
        handshakes >= 5,
        "about one handshake per two minutes: {handshakes}"
    );
    assert!(
        a.drops.is_empty() && b.drops.is_empty(),
        "{:?} {:?}",
        a.drops,
        b.drops
    );
}

/// Captures datagrams boringtun sends umbra after a handshake.
fn established() -> (UmbraSide, BoringSide) {
    let (mut u, mut b) = umbra_and_boring(None, Config::default(), None);
    exchange(&mut u, &mut b, 0);
    (u, b)
}

#[test]
fn replayed_and_tampered_data_is_dropped() {
    let (mut u, mut b) = established();
    let d = b.send_packet(&packet(1, 1)).remove(0);
    let (_, got) = u.recv_datagram(b.addr(), &d);
    assert_eq!(got.len(), 1);
    let (_, got) = u.recv_datagram(b.addr(), &d);
    assert!(got.is_empty());
    assert_eq!(u.drops.pop(), Some(Dropped::Replay));

    let mut t = b.send_packet(&packet(2, 1)).remove(0);
    let last = t.len() - 1;
    t[last] ^= 0x80;
    let (_, got) = u.recv_datagram(b.addr(), &t);
    assert!(got.is_empty());
    assert_eq!(u.drops.pop(), Some(Dropped::Crypto));

    let mut wrong_index = b.send_packet(&packet(3, 1)).remove(0);
    wrong_index[4] ^= 0xff;
    let (_, got) = u.recv_datagram(b.addr(), &wrong_index);
    assert!(got.is_empty());
    assert_eq!(u.drops.pop(), Some(Dropped::UnknownIndex));
}

#[test]
fn reordering_inside_the_window_is_accepted_and_old_counters_are_not() {
    let (mut u, mut b) = established();
    let batch: Vec<Vec<u8>> = (0..9000)
        .map(|n| b.send_packet(&packet(n, 1)).remove(0))
        .collect();
    // Newest first, then a few in reverse: all inside the window.
    for d in batch[8990..].iter().rev() {
        assert_eq!(u.recv_datagram(b.addr(), d).1.len(), 1);
    }
    for d in batch[1000..1010].iter().rev() {
        assert_eq!(u.recv_datagram(b.addr(), d).1.len(), 1);
    }
    // More than the window behind the newest: refused without decryption.
    assert!(u.recv_datagram(b.addr(), &batch[10]).1.is_empty());
    assert_eq!(u.drops, vec![Dropped::Replay]);
}

#[test]
fn packets_from_another_key_are_dropped() {
    let (mut u, _) = established();
    // A peer with the right index space but different keys: a second boringtun
    // that umbra does not know at all.
    let stranger = key(9);
    let mut s = BoringSide::new(
        &stranger,
        u.dev.public_key().to_owned(),
        None,
        addr("192.0.2.9:1"),
        None,
    );
    let init = s.send_packet(&packet(1, 1));
    let (replies, got) = u.recv_datagram(s.addr(), &init[0]);
    assert!(
        replies.is_empty() && got.is_empty(),
        "cloaked: no answer at all"
    );
    assert_eq!(u.drops, vec![Dropped::UnknownPeer]);
}

#[test]
fn initiation_for_another_key_fails_mac1_before_any_dh() {
    let (mut u, _) = established();
    let other = key(8).public_key();
    let mut s = BoringSide::new(&key(9), other, None, addr("192.0.2.9:1"), None);
    let init = s.send_packet(&packet(1, 1));
    let (replies, _) = u.recv_datagram(s.addr(), &init[0]);
    assert!(replies.is_empty());
    assert_eq!(u.drops, vec![Dropped::Mac1]);
}
