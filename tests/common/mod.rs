//! A tiny simulated network for driving two WireGuard implementations
//! against each other in process: umbra's sans-IO `Device` and boringtun's
//! `Tunn`, behind one trait so every scenario runs on every pairing.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use umbra::keys::{PresharedKey, PrivateKey, PublicKey};
use umbra::tunnel::{Config, Device, PeerConfig, PeerId, Received, SeededEntropy, Sent};

pub const MTU_BUF: usize = 2048;

/// Underlay addresses of the two sides in every two-party test.
pub const A: &str = "192.0.2.1:51820";
pub const B: &str = "192.0.2.2:51821";

/// One side of a point-to-point tunnel.
pub trait Side {
    fn addr(&self) -> SocketAddr;
    /// A tunnel packet to send: the datagrams that go out now.
    fn send_packet(&mut self, packet: &[u8]) -> Vec<Vec<u8>>;
    /// A datagram arrived: (datagrams to send back, packets delivered).
    fn recv_datagram(&mut self, from: SocketAddr, datagram: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>);
    /// Time passed: datagrams the timers want sent.
    fn tick(&mut self) -> Vec<Vec<u8>>;
}

pub fn key(seed: u8) -> PrivateKey {
    PrivateKey::from_bytes([seed; 32])
}

/// An umbra device with one peer, driven by a simulated clock.
pub struct UmbraSide {
    pub dev: Device,
    pub peer: PeerId,
    pub now: Instant,
    addr: SocketAddr,
    pub drops: Vec<umbra::tunnel::Dropped>,
}

impl UmbraSide {
    pub fn new(
        private: PrivateKey,
        peer_key: PublicKey,
        psk: Option<[u8; 32]>,
        addr: SocketAddr,
        peer_addr: Option<SocketAddr>,
        config: Config,
        seed: u64,
    ) -> Self {
        let now = Instant::now();
        let mut dev = Device::new(
            private,
            config,
            Box::new(SeededEntropy::new(seed)),
            now,
            SystemTime::now(),
        );
        let mut pc = PeerConfig::new(peer_key);
        pc.preshared_key = psk.map(PresharedKey::from_bytes).unwrap_or_default();
        pc.endpoint = peer_addr;
        let peer = dev.upsert_peer(pc);
        UmbraSide {
            dev,
            peer,
            now,
            addr,
            drops: Vec::new(),
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; MTU_BUF];
        while let Some(t) = self.dev.poll_transmit(self.now, &mut buf) {
            out.push(buf[..t.len].to_vec());
        }
        out
    }
}

impl Side for UmbraSide {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn send_packet(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; MTU_BUF];
        buf[16..16 + packet.len()].copy_from_slice(packet);
        let mut out = Vec::new();
        match self
            .dev
            .encapsulate(self.now, self.peer, &mut buf, packet.len())
        {
            Ok(Sent::Now(t)) => out.push(buf[..t.len].to_vec()),
            Ok(Sent::Queued) => {}
            Err(e) => panic!("encapsulate: {e:?}"),
        }
        out.extend(self.drain());
        out
    }

    fn recv_datagram(&mut self, from: SocketAddr, datagram: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut d = datagram.to_vec();
        let mut reply = vec![0u8; MTU_BUF];
        let mut out = Vec::new();
        let mut delivered = Vec::new();
        match self.dev.handle_datagram(self.now, from, &mut d, &mut reply) {
            Ok(Received::Packet { packet, .. }) => delivered.push(packet.to_vec()),
            Ok(Received::Reply(r)) => out.push(r.to_vec()),
            Ok(Received::Done) => {}
            Err(e) => self.drops.push(e),
        }
        out.extend(self.drain());
        (out, delivered)
    }

    fn tick(&mut self) -> Vec<Vec<u8>> {
        self.dev.tick(self.now);
        self.drain()
    }
}

/// boringtun's `Tunn`, which reads the real clock itself.
pub struct BoringSide {
    pub tunn: Tunn,
    addr: SocketAddr,
    pub errors: Vec<String>,
}

impl BoringSide {
    pub fn new(
        private: &PrivateKey,
        peer_key: PublicKey,
        psk: Option<[u8; 32]>,
        addr: SocketAddr,
        rate_limit: Option<u64>,
    ) -> Self {
        let secret = boringtun::x25519::StaticSecret::from(*private.as_bytes());
        let public = boringtun::x25519::PublicKey::from(&secret);
        let limiter = rate_limit.map(|l| Arc::new(RateLimiter::new(&public, l)));
        let tunn = Tunn::new(
            secret,
            boringtun::x25519::PublicKey::from(peer_key.0),
            psk,
            None,
            7,
            limiter,
        );
        BoringSide {
            tunn,
            addr,
            errors: Vec::new(),
        }
    }

    /// Starts a handshake now, even if one is in flight.
    pub fn force_initiation(&mut self) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; MTU_BUF];
        match self.tunn.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(p) => vec![p.to_vec()],
            _ => vec![],
        }
    }
}

impl Side for BoringSide {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn send_packet(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; MTU_BUF];
        match self.tunn.encapsulate(packet, &mut buf) {
            TunnResult::WriteToNetwork(p) => vec![p.to_vec()],
            TunnResult::Err(e) => panic!("boringtun encapsulate: {e:?}"),
            _ => vec![],
        }
    }

    fn recv_datagram(&mut self, from: SocketAddr, datagram: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let mut delivered = Vec::new();
        let mut buf = vec![0u8; MTU_BUF];
        let mut input: &[u8] = datagram;
        loop {
            match self.tunn.decapsulate(Some(from.ip()), input, &mut buf) {
                TunnResult::WriteToNetwork(p) => out.push(p.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    delivered.push(p.to_vec());
                    break;
                }
                TunnResult::Done => break,
                TunnResult::Err(e) => {
                    self.errors.push(format!("{e:?}"));
                    break;
                }
            }
            // boringtun asks to be called again with an empty datagram to
            // flush packets queued during the handshake.
            input = &[];
        }
        (out, delivered)
    }

    fn tick(&mut self) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; MTU_BUF];
        match self.tunn.update_timers(&mut buf) {
            TunnResult::WriteToNetwork(p) => vec![p.to_vec()],
            _ => vec![],
        }
    }
}

/// Delivers datagrams back and forth until both sides are quiet. Returns the
/// packets each side delivered to its tunnel: (at a, at b).
pub fn pump(
    a: &mut dyn Side,
    b: &mut dyn Side,
    from_a: Vec<Vec<u8>>,
    from_b: Vec<Vec<u8>>,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut to_b, mut to_a) = (from_a, from_b);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        if to_a.is_empty() && to_b.is_empty() {
            return (got_a, got_b);
        }
        let mut next_to_a = Vec::new();
        let mut next_to_b = Vec::new();
        for d in to_b.drain(..) {
            let (replies, delivered) = b.recv_datagram(a.addr(), &d);
            next_to_a.extend(replies);
            got_b.extend(delivered);
        }
        for d in to_a.drain(..) {
            let (replies, delivered) = a.recv_datagram(b.addr(), &d);
            next_to_b.extend(replies);
            got_a.extend(delivered);
        }
        to_a = next_to_a;
        to_b = next_to_b;
    }
    panic!("the two sides never went quiet");
}

/// A minimal IPv4/UDP packet carrying `payload` (the tunnel only needs the
/// IP length fields to be right).
pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let mut sum: u32 = 0;
    for i in (0..20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([p[i], p[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Two umbra devices that know each other's keys and endpoints.
pub fn umbra_pair(config: Config) -> (UmbraSide, UmbraSide) {
    let (ka, kb) = (key(1), key(2));
    let a = UmbraSide::new(
        ka.clone(),
        kb.public_key(),
        None,
        addr(A),
        Some(addr(B)),
        config.clone(),
        1,
    );
    let b = UmbraSide::new(kb, ka.public_key(), None, addr(B), Some(addr(A)), config, 2);
    (a, b)
}
