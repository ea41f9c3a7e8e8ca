//! What one peer can take of the userspace stack is bounded (issue 9):
//! inbound UDP flows (each holds a host descriptor) per remote address and
//! in total, and inbound TCP connections per remote address (half of
//! `max_connections`), so other peers keep being served; and the local
//! clients of UDP forwards (each holds a mesh socket and a port).

use std::net::Ipv4Addr;
use std::time::Instant;

use mio::{Poll, Token};

use super::options::{Expose, Forward, Proto};
use super::{Config, Userspace};
use crate::io::PacketIo;
use crate::wire::checksum::{self, Checksum};
use crate::wire::classify::classify;

const US: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 2);

fn peer(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 30, 0, 100 + n)
}

/// An IPv4 packet around `seg` (protocol `proto`, checksum at `at`).
fn ipv4(src: Ipv4Addr, proto: u8, mut seg: Vec<u8>, at: usize) -> Vec<u8> {
    let mut c = checksum::pseudo_header(src.into(), US.into(), proto, seg.len() as u32);
    c.add_bytes(&seg);
    seg[at..at + 2].copy_from_slice(&c.finish().to_be_bytes());
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&US.octets());
    let mut h = Checksum::new();
    h.add_bytes(&p);
    let sum = h.finish().to_be_bytes();
    p[10..12].copy_from_slice(&sum);
    p.extend_from_slice(&seg);
    p
}

fn udp(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut s = vec![0u8; 8];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..6].copy_from_slice(&9u16.to_be_bytes());
    s.push(b'q');
    ipv4(src, 17, s, 6)
}

fn syn(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut s = vec![0u8; 20];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..8].copy_from_slice(&1000u32.to_be_bytes());
    s[12] = 5 << 4;
    s[13] = 0x02;
    s[14..16].copy_from_slice(&65535u16.to_be_bytes());
    ipv4(src, 6, s, 16)
}

/// A stack exposing UDP 5353 and TCP 80 to local sockets, registered with
/// a poll of its own.
fn stack(max_connections: usize) -> (Userspace, Poll, std::net::UdpSocket, std::net::TcpListener) {
    let udp_target = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp_target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = Config::new(vec!["10.30.0.2/24".parse().unwrap()], vec![], 1420);
    cfg.expose = vec![
        Expose {
            port: 5353,
            proto: Proto::Udp,
            target: udp_target.local_addr().unwrap(),
        },
        Expose {
            port: 80,
            proto: Proto::Tcp,
            target: tcp_target.local_addr().unwrap(),
        },
    ];
    cfg.max_connections = max_connections;
    cfg.udp_flows = 64;
    cfg.udp_flows_per_peer = 16;
    let mut us = Userspace::new(cfg, Instant::now()).unwrap();
    let poll = Poll::new().unwrap();
    us.register(poll.registry(), Token(0)).unwrap();
    (us, poll, udp_target, tcp_target)
}

fn deliver(us: &mut Userspace, packet: &[u8]) {
    let info = classify(packet).unwrap();
    us.send(Instant::now(), packet, Some(&info)).unwrap();
    us.poll(Instant::now());
}

#[test]
fn inbound_udp_flows_are_bounded_per_peer_and_in_total() {
    let (mut us, _poll, target, _) = stack(16);
    // One peer, 100 source ports: only its share gets host sockets.
    for port in 0..100 {
        deliver(&mut us, &udp(peer(0), 20000 + port, 5353));
    }
    assert_eq!(us.udp_host_sockets(), 16);
    assert_eq!(us.stats.udp_refused, 84);
    // The datagrams of the flows it has still arrive.
    let mut buf = [0u8; 16];
    target.set_nonblocking(true).unwrap();
    assert_eq!(target.recv_from(&mut buf).unwrap().0, 1);
    // Other peers still get theirs, up to the total.
    for p in 1..6 {
        for port in 0..20 {
            deliver(&mut us, &udp(peer(p), 20000 + port, 5353));
        }
    }
    assert_eq!(
        us.udp_host_sockets(),
        64,
        "4 more peers x 16, then the total"
    );
}

#[test]
fn one_peer_cannot_take_every_connection() {
    let (mut us, _poll, _, _target) = stack(8);
    for port in 0..10 {
        deliver(&mut us, &syn(peer(0), 30000 + port, 80));
    }
    assert_eq!(us.connections(), 4, "half of --max-connections");
    assert_eq!(us.stats.tcp_refused, 6);
    // A retransmitted SYN of an admitted flow is no new connection.
    deliver(&mut us, &syn(peer(0), 30000, 80));
    assert_eq!(us.connections(), 4);
    // Another peer is still served.
    for port in 0..3 {
        deliver(&mut us, &syn(peer(1), 30000 + port, 80));
    }
    assert_eq!(us.connections(), 7);
}

#[test]
fn udp_forward_clients_are_bounded() {
    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap();
    drop(free);
    let mut cfg = Config::new(vec!["10.30.0.2/24".parse().unwrap()], vec![], 1420);
    cfg.forward = vec![Forward {
        listen,
        target: "10.30.0.1:7000".parse().unwrap(),
        proto: Proto::Udp,
    }];
    cfg.udp_flows = 64;
    let mut us = Userspace::new(cfg, Instant::now()).unwrap();
    us.bind_forwards().unwrap();
    let mut poll = Poll::new().unwrap();
    us.register(poll.registry(), Token(0)).unwrap();
    // 100 local clients, each from its own source port.
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            c.send_to(b"q", listen).unwrap();
            c
        })
        .collect();
    let mut events = mio::Events::with_capacity(64);
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while us.stats.udp_assocs + us.stats.udp_refused < 100 && Instant::now() < deadline {
        poll.poll(&mut events, Some(std::time::Duration::from_millis(50)))
            .unwrap();
        for ev in events.iter() {
            us.ready(Instant::now(), ev);
        }
        us.poll(Instant::now());
    }
    assert_eq!(us.stats.udp_assocs, 64, "up to udp_flows clients");
    assert_eq!(us.stats.udp_refused, 36, "the rest refused, counted");
    // A client it has keeps being served: no new association.
    clients[0].send_to(b"again", listen).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    poll.poll(&mut events, Some(std::time::Duration::from_millis(50)))
        .unwrap();
    for ev in events.iter() {
        us.ready(Instant::now(), ev);
    }
    assert_eq!((us.stats.udp_assocs, us.stats.udp_refused), (64, 36));
}
