//! Loopback tests of the batched receiver and send queue: many datagrams
//! of mixed sizes both ways, IPv4 and IPv6, with and without the offloads.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{UdpRx, UdpTx, GSO_MAX_SEGMENTS};
use crate::io::udp::UdpPair;

fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// Datagram `seq`: its length (runs of equal sizes broken at irregular
/// places, a shorter tail now and then, sometimes empty) and a content
/// that names it, so a wrong boundary or order shows.
fn datagram(seq: u32, out: &mut Vec<u8>) {
    let len = match seq % 97 {
        0 => 0,
        1..=70 => 1452,
        71..=72 => 200 + (seq % 13) as usize,
        73..=90 => 148,
        _ => 1 + (seq % 1500) as usize,
    };
    out.clear();
    out.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    if len >= 4 {
        out[..4].copy_from_slice(&seq.to_be_bytes());
    }
}

/// Sends `count` datagrams from `tx_pair` to `to` in chunks of `chunk`,
/// and after each flush reads everything `rx` gets on `rx_socket`
/// (loopback delivers during the send call). Checks every datagram:
/// sender, bytes, order.
fn exchange(
    tx_pair: &UdpPair,
    tx: &mut UdpTx,
    rx: &mut UdpRx,
    rx_socket: &impl AsRawFd,
    (to, from): (SocketAddr, SocketAddr),
    count: u32,
    chunk: u32,
) {
    let mut want = Vec::new();
    let mut next_expected = 0u32;
    let mut seq = 0u32;
    while seq < count {
        for _ in 0..chunk.min(count - seq) {
            datagram(seq, &mut want);
            tx.queue(tx_pair, &want, to);
            seq += 1;
        }
        tx.flush(tx_pair);
        assert_eq!(tx.pending(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while next_expected < seq {
            match rx.next(rx_socket).unwrap() {
                Some((src, got)) => {
                    assert_eq!(src, from);
                    datagram(next_expected, &mut want);
                    assert_eq!(got.len(), want.len(), "datagram {next_expected}: length");
                    assert!(got == &want[..], "datagram {next_expected}: content");
                    next_expected += 1;
                }
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "only {next_expected} of {seq} datagrams arrived; tx {:?} rx {:?}",
                        tx.stats(),
                        rx.stats()
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    assert!(rx.next(rx_socket).unwrap().is_none(), "more than was sent");
    let s = tx.stats();
    assert_eq!((s.dropped_full, s.errors), (0, 0), "{s:?}");
}

/// Runs the exchange both ways between two pairs over `family`'s
/// loopback; returns the stats of the a -> b direction.
fn both_ways(v6: bool, offload: bool) -> (super::TxStats, super::RxStats) {
    let a = UdpPair::bind(0).unwrap();
    let b = UdpPair::bind(0).unwrap();
    if offload {
        assert!(a.enable_gro() && b.enable_gro(), "UDP GRO refused");
    }
    let addr = |p: &UdpPair| -> SocketAddr {
        if v6 {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p.port()))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, p.port()))
        }
    };
    let (mut tx_a, mut tx_b) = (UdpTx::new(&a, offload), UdpTx::new(&b, offload));
    let (mut rx_a, mut rx_b) = (UdpRx::new(), UdpRx::new());
    let sock = |p: &UdpPair| -> mio::net::UdpSocket {
        let s = if v6 { p.v6().unwrap() } else { p.v4() };
        // A second handle on the same socket, to pass by value below.
        mio::net::UdpSocket::from_std(std::net::UdpSocket::from(
            std::os::fd::AsFd::as_fd(s).try_clone_to_owned().unwrap(),
        ))
    };
    let (sa, sb) = (sock(&a), sock(&b));
    exchange(
        &a,
        &mut tx_a,
        &mut rx_b,
        &sb,
        (addr(&b), addr(&a)),
        3000,
        200,
    );
    exchange(
        &b,
        &mut tx_b,
        &mut rx_a,
        &sa,
        (addr(&a), addr(&b)),
        3000,
        37,
    );
    (tx_a.stats(), rx_b.stats())
}

#[test]
fn many_mixed_datagrams_both_ways_v4_with_offloads() {
    let (tx, rx) = both_ways(false, true);
    assert_eq!(tx.datagrams, 3000);
    assert_eq!(rx.datagrams, 3000);
    // GSO ran: far fewer messages than datagrams, and the receiver split
    // coalesced messages (loopback hands GSO messages to a GRO socket
    // whole).
    assert!(tx.messages < 1000, "{tx:?}");
    assert!(rx.coalesced > 0, "{rx:?}");
    assert!(rx.calls < 1000, "{rx:?}");
}

#[test]
fn many_mixed_datagrams_both_ways_v6_with_offloads() {
    if !has_ipv6_loopback() {
        eprintln!("skipping: this host has no ::1");
        return;
    }
    let (tx, rx) = both_ways(true, true);
    assert_eq!(tx.datagrams, 3000);
    assert!(tx.messages < 1000, "{tx:?}");
    assert!(rx.coalesced > 0, "{rx:?}");
}

#[test]
fn without_offloads_the_same_datagrams_arrive() {
    for v6 in [false, true] {
        if v6 && !has_ipv6_loopback() {
            continue;
        }
        let (tx, rx) = both_ways(v6, false);
        assert_eq!(tx.datagrams, 3000);
        assert_eq!(tx.messages, 3000, "no GSO: {tx:?}");
        assert_eq!(rx.coalesced, 0, "no GRO: {rx:?}");
        // Still batched: one call carries many messages.
        assert!(tx.calls < 100, "{tx:?}");
    }
}

#[test]
fn gso_refused_by_the_kernel_falls_back_without_loss() {
    let a = UdpPair::bind(0).unwrap();
    let b = UdpPair::bind(0).unwrap();
    assert!(b.enable_gro());
    // With UDP checksums off (SO_NO_CHECK) the kernel refuses every
    // segmented send with EINVAL, as it refuses one on a device without
    // checksum offload with EIO.
    let one: libc::c_int = 1;
    // SAFETY: (test) a live socket and a c_int option of its size.
    let rc = unsafe {
        libc::setsockopt(
            a.v4().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let mut tx = UdpTx::new(&a, true);
    assert!(tx.gso().0);
    let mut rx = UdpRx::new();
    let to = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, b.port()));
    let from = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()));
    exchange(&a, &mut tx, &mut rx, b.v4(), (to, from), 500, 100);
    let s = tx.stats();
    assert_eq!(s.gso_refused, 1, "{s:?}");
    assert!(!tx.gso().0);
    assert_eq!(s.datagrams, 500, "{s:?}");
}

#[test]
fn a_full_queue_sends_itself() {
    let a = UdpPair::bind(0).unwrap();
    let b = UdpPair::bind(0).unwrap();
    let mut tx = UdpTx::new(&a, true);
    let to = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, b.port()));
    for _ in 0..300 {
        tx.queue(&a, &[7u8; 1000], to);
    }
    assert!(tx.pending() < 300);
    assert!(tx.stats().datagrams >= 128, "{:?}", tx.stats());
    let mut rx = UdpRx::new();
    let mut n = 0;
    while let Some((_, d)) = rx.next(b.v4()).unwrap() {
        assert_eq!(d, &[7u8; 1000][..]);
        n += 1;
    }
    assert_eq!(n as u64, tx.stats().datagrams);
    tx.flush(&a);
    assert_eq!(tx.pending(), 0);
}

#[test]
fn a_gso_message_of_64_segments_is_split_exactly() {
    let a = UdpPair::bind(0).unwrap();
    let b = UdpPair::bind(0).unwrap();
    assert!(b.enable_gro());
    let mut tx = UdpTx::new(&a, true);
    let to = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, b.port()));
    // 64 segments of 1000 bytes then a 999-byte tail: two messages.
    for i in 0..=GSO_MAX_SEGMENTS {
        let len = if i == GSO_MAX_SEGMENTS { 999 } else { 1000 };
        tx.queue(&a, &vec![i as u8; len], to);
    }
    tx.flush(&a);
    assert_eq!(tx.stats().messages, 2, "{:?}", tx.stats());
    let mut rx = UdpRx::new();
    for i in 0..=GSO_MAX_SEGMENTS {
        let (_, d) = rx.next(b.v4()).unwrap().expect("datagram");
        let len = if i == GSO_MAX_SEGMENTS { 999 } else { 1000 };
        assert_eq!(d.len(), len);
        assert!(d.iter().all(|&x| x == i as u8), "datagram {i}");
        // In place: the caller may write into it.
        d.fill(0xff);
    }
    assert!(rx.next(b.v4()).unwrap().is_none());
    assert_eq!(rx.stats().calls, 1, "{:?}", rx.stats());
    assert_eq!(rx.stats().coalesced, 1, "{:?}", rx.stats());
}

#[test]
fn ipv6_to_a_pair_without_ipv6_is_counted_not_sent() {
    let a = UdpPair::bind(0).unwrap();
    let mut tx = UdpTx::new(&a, true);
    if a.v6().is_some() {
        return;
    }
    tx.queue(&a, b"x", "[2001:db8::1]:9".parse().unwrap());
    tx.flush(&a);
    assert_eq!(tx.stats().errors, 1);
}
