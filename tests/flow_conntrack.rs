//! Connection tracking driven by fake time: flows, timeouts, related ICMP,
//! fragments, capacity and policy reloads.

mod flow_support;

use std::time::{Duration, Instant};

use flow_support::*;
use umbra::conntrack::drive::drive;
use umbra::conntrack::{
    Config, Conntrack, Direction, FlowState, Match, NotTracked, PeerId, RuleId, TcpState,
};
use umbra::wire::classify;
use umbra::wire::reject::{reject, RejectWith, MAX_REPLY_LEN};

use Direction::{Inbound, Outbound};

const P: PeerId = PeerId(1);
const R: RuleId = RuleId(42);

struct Node {
    ct: Conntrack,
    now: Instant,
}

impl Node {
    /// A tracker where one peer may fill the whole table (the per-peer
    /// share has tests of its own).
    fn new(capacity: usize) -> Node {
        Node::with(Config {
            capacity,
            max_per_peer: Some(capacity),
            ..Config::default()
        })
    }

    fn with(config: Config) -> Node {
        Node {
            ct: Conntrack::new(config),
            now: Instant::now(),
        }
    }

    fn see(&mut self, peer: PeerId, dir: Direction, p: &[u8]) -> Match {
        let m = self.ct.lookup(self.now, peer, dir, &classify(p).unwrap());
        self.ct.check_invariants().unwrap();
        m
    }

    /// A new flow the policy allows with `rule`.
    fn open(&mut self, peer: PeerId, dir: Direction, p: &[u8], rule: RuleId) {
        assert_eq!(self.see(peer, dir, p), Match::New);
        let info = classify(p).unwrap();
        self.ct.admit(self.now, peer, dir, &info, rule).unwrap();
        self.ct.check_invariants().unwrap();
    }

    fn wait(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }

    fn only_state(&self) -> FlowState {
        let mut it = self.ct.iter();
        let s = it.next().expect("one flow").state();
        assert!(it.next().is_none());
        s
    }
}

#[test]
fn tcp_handshake_data_fin_and_time_wait() {
    let mut n = Node::new(16);
    let c = (40000, 80);
    let s = (80, 40000);
    n.open(P, Outbound, &tcp(A4, B4, c, SYN, 100, 0, b""), R);
    assert_eq!(n.only_state(), FlowState::Tcp(TcpState::SynSent));
    assert_eq!(
        n.see(P, Inbound, &tcp(B4, A4, s, SYN | ACK, 900, 101, b"")),
        Match::Reply(R)
    );
    assert_eq!(n.only_state(), FlowState::Tcp(TcpState::SynRecv));
    assert_eq!(
        n.see(P, Outbound, &tcp(A4, B4, c, ACK, 101, 901, b"")),
        Match::Original(R)
    );
    assert_eq!(n.only_state(), FlowState::Tcp(TcpState::Established));
    n.see(P, Outbound, &tcp(A4, B4, c, PSH | ACK, 101, 901, b"GET /"));
    n.see(P, Inbound, &tcp(B4, A4, s, PSH | ACK, 901, 106, b"200 OK"));
    n.see(P, Inbound, &tcp(B4, A4, s, FIN | ACK, 907, 106, b""));
    assert_eq!(
        n.only_state(),
        FlowState::Tcp(TcpState::FinWait {
            from_original: false
        })
    );
    n.see(P, Outbound, &tcp(A4, B4, c, FIN | ACK, 106, 908, b""));
    assert_eq!(
        n.see(P, Inbound, &tcp(B4, A4, s, ACK, 908, 107, b"")),
        Match::Reply(R)
    );
    assert_eq!(n.only_state(), FlowState::Tcp(TcpState::TimeWait));
    let e = n.ct.iter().next().unwrap();
    assert_eq!(e.packets(), (4, 4));
    assert_eq!((e.src(), e.dst()), (A4.into(), B4.into()));
    assert_eq!((e.src_port(), e.dst_port()), (Some(40000), Some(80)));
    assert_eq!((e.initiator(), e.rule(), e.peer()), (Outbound, R, P));
    // TIME_WAIT lasts two minutes; then the ports are free.
    n.wait(119);
    assert_eq!(n.ct.expire(n.now), 0);
    n.wait(2);
    assert_eq!(n.ct.expire(n.now), 1);
    assert!(n.ct.is_empty());
}

#[test]
fn tcp_timeouts_by_state() {
    let mut n = Node::new(16);
    // An unanswered SYN is forgotten after 30 s.
    n.open(P, Outbound, &tcp(A4, B4, (1, 22), SYN, 0, 0, b""), R);
    n.wait(31);
    assert_eq!(
        n.see(P, Inbound, &tcp(B4, A4, (22, 1), SYN | ACK, 0, 1, b"")),
        Match::New
    );
    // An established connection survives an hour of silence, not three.
    let mut n = Node::new(16);
    n.open(P, Inbound, &tcp(B4, A4, (5, 443), SYN, 0, 0, b""), R);
    n.see(P, Outbound, &tcp(A4, B4, (443, 5), SYN | ACK, 0, 1, b""));
    n.see(P, Inbound, &tcp(B4, A4, (5, 443), ACK, 1, 1, b""));
    n.wait(3600);
    assert_eq!(
        n.see(P, Outbound, &tcp(A4, B4, (443, 5), ACK, 1, 1, b"x")),
        Match::Reply(R)
    );
    n.wait(3 * 3600);
    n.ct.expire(n.now);
    assert!(n.ct.is_empty());
    // RST closes; the entry lingers ten seconds for retransmitted RSTs.
    let mut n = Node::new(16);
    n.open(P, Outbound, &tcp(A4, B4, (7, 8), SYN, 0, 0, b""), R);
    assert_eq!(
        n.see(P, Inbound, &tcp(B4, A4, (8, 7), RST | ACK, 0, 1, b"")),
        Match::Reply(R)
    );
    assert_eq!(n.only_state(), FlowState::Tcp(TcpState::Close));
    n.wait(11);
    assert_eq!(n.ct.next_expiry().map(|t| t <= n.now), Some(true));
    assert_eq!(n.ct.expire(n.now), 1);
}

#[test]
fn tcp_refuses_reverse_syns_and_reopens_after_close() {
    let mut n = Node::new(16);
    n.open(P, Outbound, &tcp(A4, B4, (1000, 80), SYN, 0, 0, b""), R);
    // The responder opening a connection of its own on these ports.
    assert_eq!(
        n.see(P, Inbound, &tcp(B4, A4, (80, 1000), SYN, 0, 0, b"")),
        Match::Invalid
    );
    n.see(P, Inbound, &tcp(B4, A4, (80, 1000), SYN | ACK, 0, 1, b""));
    n.see(P, Outbound, &tcp(A4, B4, (1000, 80), ACK, 1, 1, b""));
    assert_eq!(
        n.see(P, Inbound, &tcp(B4, A4, (80, 1000), SYN, 0, 0, b"")),
        Match::Invalid
    );
    // The original tuple arriving from the wrong side of the node.
    assert_eq!(
        n.see(P, Inbound, &tcp(A4, B4, (1000, 80), ACK, 1, 1, b"")),
        Match::Invalid
    );
    // After a RST, a fresh SYN on the same ports is a new flow for the policy.
    n.see(P, Outbound, &tcp(A4, B4, (1000, 80), RST, 1, 0, b""));
    n.open(
        P,
        Outbound,
        &tcp(A4, B4, (1000, 80), SYN, 50, 0, b""),
        RuleId(2),
    );
    assert_eq!(n.ct.iter().next().unwrap().rule(), RuleId(2));
}

#[test]
fn tcp_mid_stream_pickup_is_unassured_until_answered() {
    let mut n = Node::new(16);
    n.open(P, Inbound, &tcp(B4, A4, (5, 22), ACK, 10, 10, b"ls"), R);
    assert_eq!(n.only_state(), FlowState::Tcp(TcpState::MidStream));
    n.see(P, Outbound, &tcp(A4, B4, (22, 5), ACK, 10, 12, b"ok"));
    assert_eq!(n.only_state(), FlowState::Tcp(TcpState::Established));
    // Packets that open no flow.
    let info = classify(&tcp(B4, A4, (6, 22), RST, 0, 0, b"")).unwrap();
    assert_eq!(
        n.ct.admit(n.now, P, Inbound, &info, R),
        Err(NotTracked::Stateless)
    );
    let info = classify(&echo(B4, A4, false, 1, 1)).unwrap();
    assert_eq!(
        n.ct.admit(n.now, P, Inbound, &info, R),
        Err(NotTracked::Stateless)
    );
}

#[test]
fn udp_unreplied_and_replied_timeouts() {
    let mut n = Node::new(16);
    n.open(P, Outbound, &udp(A4, B4, (5000, 53), b"q"), R);
    n.wait(29);
    assert_eq!(
        n.see(P, Inbound, &udp(B4, A4, (53, 5000), b"a")),
        Match::Reply(R)
    );
    assert_eq!(n.only_state(), FlowState::Udp { replied: true });
    n.wait(170);
    assert_eq!(
        n.see(P, Outbound, &udp(A4, B4, (5000, 53), b"q")),
        Match::Original(R)
    );
    n.wait(181);
    assert_eq!(
        n.see(P, Inbound, &udp(B4, A4, (53, 5000), b"a")),
        Match::New
    );
    // Unanswered: gone after 30 s.
    n.open(P, Outbound, &udp(A6, B6, (6000, 123), b"ntp"), R);
    n.wait(31);
    assert_eq!(n.ct.expire(n.now), 1);
}

#[test]
fn refreshed_flows_survive_expiry_sweeps() {
    let mut n = Node::new(16);
    n.open(P, Outbound, &udp(A4, B4, (1, 2), b""), R);
    n.open(P, Outbound, &udp(A4, B4, (3, 4), b""), R);
    // Flow 1 is refreshed every 20 s and swept after each refresh; flow 2
    // is left alone and goes at its first sweep past 30 s.
    for step in 0..30 {
        n.wait(20);
        let gone = n.ct.expire(n.now);
        assert_eq!(gone, usize::from(step == 1));
        assert_eq!(
            n.see(P, Outbound, &udp(A4, B4, (1, 2), b"")),
            Match::Original(R)
        );
    }
    assert!(n.ct.next_expiry().is_some_and(|t| t > n.now));
    n.wait(31);
    assert_eq!(n.ct.expire(n.now), 1);
    assert!(n.ct.next_expiry().is_none());
}

#[test]
fn icmp_echo_v4_and_v6() {
    for (a, b) in [(A4.into(), B4.into()), (A6.into(), B6.into())] {
        let mut n = Node::new(16);
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (a, b);
        n.open(P, Outbound, &echo(a, b, true, 77, 1), R);
        assert_eq!(
            n.see(P, Inbound, &echo(b, a, false, 77, 1)),
            Match::Reply(R)
        );
        assert_eq!(
            n.see(P, Outbound, &echo(a, b, true, 77, 2)),
            Match::Original(R)
        );
        // Another identifier, or a request from the other side, is new.
        assert_eq!(n.see(P, Inbound, &echo(b, a, false, 78, 1)), Match::New);
        assert_eq!(n.see(P, Inbound, &echo(b, a, true, 77, 1)), Match::New);
        assert_eq!(n.ct.iter().next().unwrap().icmp_ident(), Some(77));
        n.wait(31);
        assert_eq!(n.see(P, Inbound, &echo(b, a, false, 77, 2)), Match::New);
    }
}

#[test]
fn peers_are_isolated() {
    let mut n = Node::new(16);
    n.open(P, Outbound, &udp(A4, B4, (1, 2), b""), R);
    assert_eq!(
        n.see(PeerId(2), Inbound, &udp(B4, A4, (2, 1), b"")),
        Match::New
    );
    assert_eq!(
        n.see(P, Inbound, &udp(B4, A4, (2, 1), b"")),
        Match::Reply(R)
    );
}

#[test]
fn icmp_errors_relate_to_their_flow() {
    let mut n = Node::new(16);
    let mut buf = [0u8; MAX_REPLY_LEN];
    // Outbound UDP; the far side answers port unreachable.
    let q = udp(A4, B4, (5354, 9999), b"hello");
    n.open(P, Outbound, &q, R);
    let len = reject(&q, RejectWith::Closed, &mut buf).unwrap().unwrap();
    assert_eq!(n.see(P, Inbound, &buf[..len]), Match::Related(R));
    // The same error sent the wrong way, or about another flow, is dropped.
    assert_eq!(n.see(P, Outbound, &buf[..len]), Match::Invalid);
    assert_eq!(n.see(P, Inbound, &hex(V4_PORT_UNREACHABLE)), Match::Invalid);
    // A TCP flow opened by the peer; our side's RST passes as a reply.
    let syn = tcp(B6, A6, (4000, 8080), SYN, 9, 0, b"");
    n.open(P, Inbound, &syn, R);
    let len = reject(&syn, RejectWith::AdminProhibited, &mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(n.see(P, Outbound, &buf[..len]), Match::Related(R));
    let len = reject(&syn, RejectWith::Closed, &mut buf).unwrap().unwrap();
    assert_eq!(n.see(P, Outbound, &buf[..len]), Match::Reply(R));
    // Ping, and a time-exceeded about it.
    let ping = echo(A4, B4, true, 5, 1);
    n.open(P, Outbound, &ping, R);
    let mut quote = ping[..28].to_vec();
    quote[8] = 1;
    let err = icmp(B4, A4, 11, 0, [0; 4], &quote);
    assert_eq!(n.see(P, Inbound, &err), Match::Related(R));
}

#[test]
fn fragments_follow_their_first() {
    let mut n = Node::new(16);
    let seg = udp_datagram(A4.into(), B4.into(), (1000, 2000), &[7; 100]);
    let first = v4_fragment(17, 0x4242, 0, true, &seg[..64]);
    let later = v4_fragment(17, 0x4242, 64, false, &seg[64..]);
    // Before its first fragment is passed, a later one is dropped unjudged.
    assert_eq!(n.see(P, Outbound, &later), Match::Invalid);
    n.open(P, Outbound, &first, R);
    assert_eq!(n.see(P, Outbound, &later), Match::Fragment(R));
    assert_eq!(n.see(P, Inbound, &later), Match::Invalid, "wrong way");
    let other = v4_fragment(17, 0x4243, 64, false, &seg[64..]);
    assert_eq!(n.see(P, Outbound, &other), Match::Invalid);
    // The reply's first fragment matches the flow and lets its rest through.
    let back = udp_datagram(B4.into(), A4.into(), (2000, 1000), &[1; 100]);
    let mut rfirst = v4_fragment(17, 7, 0, true, &back[..64]);
    let mut rlater = v4_fragment(17, 7, 64, false, &back[64..]);
    for p in [&mut rfirst, &mut rlater] {
        p[12..16].copy_from_slice(&B4.octets());
        p[16..20].copy_from_slice(&A4.octets());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = umbra::wire::checksum::of(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    assert_eq!(n.see(P, Inbound, &rfirst), Match::Reply(R));
    assert_eq!(n.see(P, Inbound, &rlater), Match::Fragment(R));
    // Fragments stop 30 s after the first.
    n.wait(31);
    n.see(P, Outbound, &udp(A4, B4, (1000, 2000), b"keep flow alive"));
    assert_eq!(n.see(P, Outbound, &later), Match::Invalid);
    // And when their flow is cut.
    let mut n = Node::new(16);
    let seg6 = tcp_segment(A6.into(), B6.into(), (5000, 443), 1, 0, SYN, &[0; 40]);
    n.open(P, Outbound, &v6_fragment(6, 99, 0, true, &seg6[..32]), R);
    let later6 = v6_fragment(6, 99, 32, false, &seg6[32..]);
    assert_eq!(n.see(P, Outbound, &later6), Match::Fragment(R));
    assert_eq!(n.ct.fragment_len(), 1);
    n.ct.retain(|_| false);
    assert_eq!(n.ct.fragment_len(), 0);
    assert_eq!(n.see(P, Outbound, &later6), Match::Invalid);
}

#[test]
fn full_table_evicts_unassured_first() {
    let mut n = Node::new(4);
    // Two answered UDP flows: assured.
    for port in [1, 2] {
        n.open(P, Outbound, &udp(A4, B4, (port, 53), b""), RuleId(1));
        n.see(P, Inbound, &udp(B4, A4, (53, port), b""));
    }
    // A flood of unanswered flows recycles the other two slots.
    for port in 100..300 {
        n.open(PeerId(9), Inbound, &udp(B4, A4, (port, 53), b""), RuleId(9));
    }
    assert_eq!(n.ct.len(), 4);
    assert_eq!(n.ct.counters().evicted, 198);
    assert_eq!(n.ct.iter().filter(|e| e.rule() == RuleId(1)).count(), 2);
    // Expired entries go before anything live.
    let mut n = Node::new(2);
    n.open(P, Outbound, &udp(A4, B4, (1, 53), b""), R);
    n.see(P, Inbound, &udp(B4, A4, (53, 1), b""));
    n.wait(100);
    n.open(P, Outbound, &udp(A4, B4, (2, 53), b""), R);
    n.see(P, Inbound, &udp(B4, A4, (53, 2), b""));
    n.wait(100);
    // Flow 1 (replied, 180 s) has expired; flow 2 has not.
    n.open(P, Outbound, &udp(A4, B4, (3, 53), b""), R);
    assert_eq!(n.ct.counters().expired, 1);
    assert_eq!(n.ct.counters().evicted, 0);
    // All assured and live: the one closest to expiry goes.
    n.see(P, Inbound, &udp(B4, A4, (53, 3), b""));
    n.wait(1);
    n.open(P, Outbound, &udp(A4, B4, (4, 53), b""), R);
    let ports: Vec<_> = n.ct.iter().filter_map(|e| e.src_port()).collect();
    assert!(ports.contains(&3) && ports.contains(&4), "{ports:?}");
}

/// Issue 9, defect 2: one peer opening flows without end must not evict
/// another peer's working connection — neither a live stream nor an idle
/// one where the server speaks next.
#[test]
fn one_peer_cannot_evict_another_peers_connections() {
    let mut n = Node::with(Config {
        capacity: 64,
        ..Config::default()
    });
    let victim = PeerId(1);
    let flooder = PeerId(2);
    // The victim's two established TCP connections: a stream, and an idle
    // session where the server (behind this node) speaks next.
    for port in [5000, 5001] {
        n.open(victim, Inbound, &tcp(B4, A4, (port, 22), SYN, 0, 0, b""), R);
        n.see(
            victim,
            Outbound,
            &tcp(A4, B4, (22, port), SYN | ACK, 0, 0, b""),
        );
        n.see(victim, Inbound, &tcp(B4, A4, (port, 22), ACK, 0, 0, b""));
    }
    // The flooder opens and establishes 10,000 connections, one a millisecond.
    for i in 0..10_000u32 {
        let port = 1024 + (i % 60_000) as u16;
        let dst = std::net::Ipv4Addr::new(10, 9, (i >> 8) as u8, i as u8);
        n.now += Duration::from_millis(1);
        n.open(
            flooder,
            Inbound,
            &tcp(dst, A4, (port, 80), SYN, 0, 0, b""),
            R,
        );
        n.see(
            flooder,
            Outbound,
            &tcp(A4, dst, (80, port), SYN | ACK, 0, 0, b""),
        );
        n.see(flooder, Inbound, &tcp(dst, A4, (port, 80), ACK, 0, 0, b""));
        if i % 100 == 0 {
            // The stream keeps flowing.
            let m = n.see(victim, Inbound, &tcp(B4, A4, (5000, 22), ACK, 0, 0, b""));
            assert_eq!(m, Match::Original(R), "the victim's stream was cut at {i}");
        }
    }
    assert_eq!(
        n.see(victim, Outbound, &tcp(A4, B4, (22, 5001), ACK, 0, 0, b"")),
        Match::Reply(R),
        "the server's next packet on the idle connection is still return traffic"
    );
    assert!(n.ct.len() <= 64);
    let flooders = n.ct.iter().filter(|e| e.peer() == flooder).count();
    assert_eq!(flooders, 32, "the flooder holds its share: half the table");
}

/// Eviction spares recently active flows: the entry refreshed a moment ago
/// is not taken because it was admitted first.
#[test]
fn eviction_spares_recently_active_flows() {
    let mut n = Node::new(4);
    for port in 1..=4 {
        n.open(P, Outbound, &udp(A4, B4, (port, 53), b""), R);
        n.see(P, Inbound, &udp(B4, A4, (53, port), b""));
        n.wait(1);
    }
    // Flow 1, the oldest, is the active one.
    n.see(P, Outbound, &udp(A4, B4, (1, 53), b""));
    n.wait(1);
    n.open(P, Outbound, &udp(A4, B4, (5, 53), b""), R);
    let ports: Vec<_> = n.ct.iter().filter_map(|e| e.src_port()).collect();
    assert!(ports.contains(&1), "the active flow was evicted: {ports:?}");
    assert!(
        !ports.contains(&2),
        "the least recently seen should go: {ports:?}"
    );
    // The same within one peer's share.
    let mut n = Node::with(Config {
        capacity: 100,
        max_per_peer: Some(4),
        ..Config::default()
    });
    for port in 1..=4 {
        n.open(P, Outbound, &udp(A4, B4, (port, 53), b""), R);
        n.see(P, Inbound, &udp(B4, A4, (53, port), b""));
        n.wait(1);
    }
    n.see(P, Outbound, &udp(A4, B4, (1, 53), b""));
    n.wait(1);
    n.open(P, Outbound, &udp(A4, B4, (5, 53), b""), R);
    let ports: Vec<_> = n.ct.iter().filter_map(|e| e.src_port()).collect();
    assert_eq!(ports.len(), 4);
    assert!(ports.contains(&1) && !ports.contains(&2), "{ports:?}");
}

#[test]
fn retain_cuts_flows_a_new_policy_denies() {
    let mut n = Node::new(64);
    for port in 0..10u16 {
        let rule = RuleId(u32::from(port % 2));
        n.open(
            P,
            Outbound,
            &tcp(A4, B4, (1000 + port, 22 + port), SYN, 0, 0, b""),
            rule,
        );
    }
    n.open(PeerId(2), Inbound, &udp(B6, A6, (9, 53), b""), RuleId(5));
    // New policy: rule 1 is gone, and nothing may reach port 25 any more.
    let cut =
        n.ct.retain(|e| e.rule() != RuleId(1) && e.dst_port() != Some(24));
    assert_eq!(cut, 5 + 1);
    assert_eq!(n.ct.len(), 5);
    assert_eq!(
        n.see(P, Outbound, &tcp(A4, B4, (1001, 23), ACK, 1, 1, b"")),
        Match::New
    );
    assert_eq!(
        n.see(P, Outbound, &tcp(A4, B4, (1000, 22), SYN, 0, 0, b"")),
        Match::Original(RuleId(0))
    );
    assert_eq!(n.ct.remove_peer(PeerId(2)), 1);
    assert_eq!(n.ct.counters().removed, 7);
    n.ct.check_invariants().unwrap();
}

#[test]
fn driver_runs_a_recorded_sequence() {
    let mut input = Vec::new();
    let mut rec = |advance: u8, control: u8, p: &[u8]| {
        input.extend_from_slice(&[advance, control]);
        input.extend_from_slice(&(p.len() as u16).to_be_bytes());
        input.extend_from_slice(p);
    };
    rec(0, 0x08, &tcp(A4, B4, (1, 2), SYN, 0, 0, b""));
    rec(1, 0x01, &tcp(B4, A4, (2, 1), SYN | ACK, 0, 1, b""));
    rec(1, 0x00, &tcp(A4, B4, (1, 2), ACK, 1, 1, b""));
    rec(0, 0x01, b"garbage");
    rec(200, 0x91, &tcp(B4, A4, (2, 1), ACK, 1, 1, b""));
    let mut ct = Conntrack::new(Config {
        capacity: 8,
        fragment_capacity: 4,
        ..Config::default()
    });
    let stats = drive(&mut ct, Instant::now(), &input).unwrap();
    assert_eq!(
        (stats.packets, stats.unparsed, stats.admitted, stats.tracked),
        (5, 1, 1, 3)
    );
}
