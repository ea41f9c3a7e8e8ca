//! The cloaked load mode (issue 9, defect 1), in simulated time: under a
//! handshake flood a node answers only addresses associated with a peer,
//! budgets those answers, and a restarting peer still gets in at once.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use umbra::keys::PublicKey;
use umbra::tunnel::cookie::CookieJar;
use umbra::tunnel::{Config, Dropped};
use umbra::wire::wg::{write_initiation, INITIATION_LEN, INITIATION_NOISE_LEN, MSG_COOKIE_REPLY};

fn pkt(n: u8) -> Vec<u8> {
    ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], &[n; 64])
}

/// What anyone holding the policy file can make: an initiation with a valid
/// mac1 (it needs only the responder's public key) and garbage Noise.
fn forged_initiation(to: &PublicKey, i: u32) -> Vec<u8> {
    let mut msg = [0u8; INITIATION_LEN];
    let noise = [i as u8; INITIATION_NOISE_LEN];
    write_initiation(&mut msg, i, &noise);
    CookieJar::new(to).stamp(Instant::now(), &mut msg);
    msg.to_vec()
}

fn low_threshold() -> Config {
    Config {
        handshake_load_threshold: 10,
        ..Config::default()
    }
}

/// Floods `b` with `n` forged initiations from `src`, spread over `secs`
/// simulated seconds; returns how many datagrams `b` sent back.
fn flood(b: &mut UmbraSide, src: SocketAddr, n: u32, secs: u64) -> usize {
    let b_key = b.dev.public_key().to_owned();
    let step = Duration::from_secs(secs) / n;
    let mut replies = 0;
    for i in 0..n {
        let (out, _) = b.recv_datagram(src, &forged_initiation(&b_key, i));
        replies += out.len();
        b.advance(step);
    }
    replies
}

#[test]
fn strangers_get_no_reply_however_hard_they_flood() {
    let (_a, mut b) = umbra_pair(low_threshold());
    for src in ["203.0.113.9:40000", "[2001:db8::9]:40000"] {
        let replies = flood(&mut b, addr(src), 20_000, 2);
        assert_eq!(replies, 0, "replies to the stranger {src}");
    }
    // Also with a real Noise initiation from a key b does not know.
    let mut stranger = UmbraSide::new(
        key(9),
        *b.dev.public_key(),
        None,
        addr("203.0.113.10:40000"),
        Some(addr(B)),
        low_threshold(),
        9,
    );
    let init = stranger.send_packet(&pkt(1));
    b.dev.report_load(b.now);
    let (out, _) = b.recv_datagram(stranger.addr(), &init[0]);
    assert!(out.is_empty());
    assert!(b.drops.contains(&Dropped::RateLimited));
}

#[test]
fn a_restarting_peer_gets_in_at_once_during_a_flood() {
    let (_old_a, mut b) = umbra_pair(low_threshold());
    flood(&mut b, addr("203.0.113.9:40000"), 5_000, 1);
    // a restarts (fresh keys state, same identity) while b is under load.
    let (mut a, _) = umbra_pair(low_threshold());
    a.now = b.now;
    b.dev.report_load(b.now);
    let init = a.send_packet(&pkt(1));
    assert_eq!(init.len(), 1);
    let (cookie, _) = b.recv_datagram(a.addr(), &init[0]);
    assert_eq!(cookie.len(), 1, "b asks a's known address for a cookie");
    assert_eq!(cookie[0][0], MSG_COOKIE_REPLY);
    // a answers the cookie with a fresh initiation carrying mac2 at once,
    // not REKEY_TIMEOUT (5 s) later; the queued packet arrives.
    let (_, got_b) = pump(&mut a, &mut b, vec![], cookie);
    assert_eq!(got_b, vec![pkt(1)], "no simulated time passed");
}

/// The immediate resend after a cookie reply happens once per handshake:
/// more cookie replies (forged by someone who saw the initiation, or
/// duplicated) do not make the initiator send more.
#[test]
fn only_one_immediate_resend_per_handshake() {
    let (mut a, mut b) = umbra_pair(low_threshold());
    b.dev.report_load(b.now);
    let init = a.send_packet(&pkt(1));
    let (cookie, _) = b.recv_datagram(a.addr(), &init[0]);
    assert_eq!(cookie[0][0], MSG_COOKIE_REPLY);
    let (first, _) = a.recv_datagram(b.addr(), &cookie[0]);
    assert_eq!(first.len(), 1, "resent at once");
    // b answers the resend with a cookie again (say it restarted and has
    // a new cookie secret: another seed).
    let mut fresh = UmbraSide::new(
        key(2),
        key(1).public_key(),
        None,
        addr(B),
        Some(addr(A)),
        low_threshold(),
        99,
    );
    fresh.dev.report_load(fresh.now);
    let (cookie2, _) = fresh.recv_datagram(a.addr(), &first[0]);
    assert_eq!(cookie2[0][0], MSG_COOKIE_REPLY);
    let (second, _) = a.recv_datagram(b.addr(), &cookie2[0]);
    assert!(second.is_empty(), "a second immediate resend");
}

#[test]
fn cookie_replies_are_budgeted_per_source() {
    let (a, mut b) = umbra_pair(low_threshold());
    // Someone spoofs a's address (another port): the replies go to a, not to
    // the spoofer, and at most a burst of them.
    let spoofed = SocketAddr::new(a.addr().ip(), 1);
    b.dev.report_load(b.now);
    let b_key = *b.dev.public_key();
    let replies: usize = (0..1000)
        .map(|i| {
            b.recv_datagram(spoofed, &forged_initiation(&b_key, i))
                .0
                .len()
        })
        .sum();
    assert!(
        (1..=5).contains(&replies),
        "{replies} cookie replies at once"
    );
    // And over ten seconds of flood, about 20 a second.
    let replies = flood(&mut b, spoofed, 100_000, 10);
    assert!((150..=260).contains(&replies), "{replies} in 10 s");
}

#[test]
fn a_roamed_peer_still_gets_in_under_load_without_a_cookie() {
    let (mut a, mut b) = umbra_pair(low_threshold());
    b.dev.report_load(b.now);
    let init = a.send_packet(&pkt(1));
    let roamed = addr("203.0.113.50:9999");
    let (out, _) = b.recv_datagram(roamed, &init[0]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0][0], 2, "a handshake response, not a cookie reply");
}

#[test]
fn stranger_budget_is_global() {
    let (_a, mut b) = umbra_pair(Config {
        handshake_load_threshold: 0,
        stranger_handshakes_per_second: 50,

        ..Config::default()
    });
    let b_key = *b.dev.public_key();
    b.dev.report_load(b.now);
    let t0 = b.now;
    let mut crypto = 0;
    // 10,000 spoofed sources in one second: at most ~50 reach the Noise work.
    for i in 0..10_000u32 {
        b.now = t0 + Duration::from_micros(u64::from(i) * 100);
        let src = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000));
        b.drops.clear();
        let (out, _) = b.recv_datagram(src, &forged_initiation(&b_key, i));
        assert!(out.is_empty());
        crypto += usize::from(b.drops.first() != Some(&Dropped::RateLimited));
    }
    assert!((45..=60).contains(&crypto), "{crypto} processed");
}
