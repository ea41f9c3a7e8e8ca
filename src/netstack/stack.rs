//! The userspace stack itself: a smoltcp interface over the two packet
//! queues of [`Queues`], with this node's tunnel addresses (and AnyIP
//! routes for the networks it serves), and its [`PacketIo`] face towards
//! the daemon's event loop: packets in and out, readiness events for the
//! host sockets, and one `poll` that runs the interface and every proxy.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};
use smoltcp::iface::{Config as IfaceConfig, Interface, Route, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{HardwareAddress, IpCidr};

use super::conn::TcpConn;
use super::device::Queues;
use super::forward::Forwarder;
use super::observe::Accepts;
use super::ports::Alloc;
use super::udp::UdpInbound;
use super::{ip_of, Config, Stats};
use crate::debug;
use crate::io::PacketIo;
use crate::wire::classify::{classify, PacketInfo};

/// The longest the stack waits between two polls.
const MAX_POLL_DELAY: Duration = Duration::from_secs(1);

/// Interface poll and proxy rounds per `poll`, at most.
const ROUNDS: usize = 4;

/// A TCP socket as every proxied connection gets it.
pub(crate) fn tcp_socket(size: usize) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; size]),
        tcp::SocketBuffer::new(vec![0u8; size]),
    );
    s.set_nagle_enabled(false);
    // Without congestion control (smoltcp's default when no controller is
    // compiled in) every connection sends its whole window at once: N
    // connections burst N x 64 KiB into the mesh, the receiving node's UDP
    // socket buffer overflows, and smoltcp (1 s minimum RTO, doubling, no
    // SACK recovery) retransmits the whole window again in step with every
    // other connection -- lost again, so transfers stall for a minute.
    s.set_congestion_control(tcp::CongestionControl::Reno);
    // smoltcp aborts a connection after `timeout` without a packet from the
    // remote end, even an idle established one; keep-alives well inside it
    // keep quiet connections open (their lifetime is --idle-timeout's call).
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(60)));
    s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(20)));
    s
}

pub(super) fn udp_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0u8; 64 * 1024]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0u8; 64 * 1024]),
    )
}

/// Registers a host socket with the event loop (which must have called
/// [`PacketIo::register`] first).
pub(super) fn register_host(
    registry: &Option<Registry>,
    src: &mut impl mio::event::Source,
    t: Token,
    interest: Interest,
) -> io::Result<()> {
    match registry {
        Some(r) => r.register(src, t, interest),
        None => Err(io::Error::other("userspace stack not registered yet")),
    }
}

/// The userspace backend. Create with [`Userspace::new`], bind the
/// forwards, then hand to the daemon's event loop as its [`PacketIo`].
pub struct Userspace {
    pub(super) cfg: Config,
    pub(super) iface: Interface,
    dev: Queues,
    pub(super) sockets: SocketSet<'static>,
    /// smoltcp's clock starts here.
    epoch: Instant,
    pub(super) registry: Option<Registry>,
    pub(super) alloc: Alloc,
    pub(super) forwards: HashMap<Token, Forwarder>,
    pub(super) conns: HashMap<Token, TcpConn>,
    pub(super) accepts: Accepts,
    pub(super) udp: UdpInbound,
    /// Sockets to free after the next interface poll (their RST or last
    /// ACK goes out first), and those freed after this one.
    pub(super) reap: Vec<SocketHandle>,
    reaping: Vec<SocketHandle>,
    next_sweep: Instant,
    pub(super) scratch: Vec<u8>,
    /// Interface polls and proxy rounds so far (each touches every
    /// socket), and the device counters as last logged.
    iface_polls: u64,
    rounds: u64,
    logged: [u64; 6],
    pub stats: Stats,
}

impl Userspace {
    /// A stack for `cfg`; `now` starts its clock.
    pub fn new(cfg: Config, now: Instant) -> Result<Userspace, String> {
        if cfg.addresses.is_empty() {
            return Err("this node has no tunnel address".into());
        }
        let epoch = now;
        let mut dev = Queues::new(cfg.queue, cfg.mtu);
        let mut ic = IfaceConfig::new(HardwareAddress::Ip);
        ic.random_seed = getrandom::u64().map_err(|e| format!("no randomness: {e}"))?;
        let mut iface = Interface::new(ic, &mut dev, smoltcp::time::Instant::ZERO);
        let mut overflow = false;
        iface.update_ip_addrs(|addrs| {
            for a in &cfg.addresses {
                if addrs
                    .push(IpCidr::new(ip_of(a.addr()), a.prefix()))
                    .is_err()
                {
                    overflow = true;
                }
            }
        });
        if overflow {
            return Err("too many tunnel addresses for the userspace stack".into());
        }
        // Served networks are delivered locally (AnyIP) via our address of
        // the same family.
        if !cfg.serves.is_empty() {
            iface.set_any_ip(true);
            let mut full = false;
            iface.routes_mut().update(|routes| {
                for net in &cfg.serves {
                    let Some(via) = cfg.addresses.iter().find(|a| a.is_ipv4() == net.is_ipv4())
                    else {
                        continue;
                    };
                    let route = Route {
                        cidr: IpCidr::new(ip_of(net.network().addr()), net.prefix()),
                        via_router: ip_of(via.addr()),
                        preferred_until: None,
                        expires_at: None,
                    };
                    if routes.push(route).is_err() {
                        full = true;
                    }
                }
            });
            if full {
                return Err("too many served networks for the userspace stack (max 64)".into());
            }
        }
        Ok(Userspace {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            epoch,
            registry: None,
            alloc: Alloc::new(),
            forwards: HashMap::new(),
            conns: HashMap::new(),
            accepts: Accepts::default(),
            udp: UdpInbound::default(),
            reap: Vec::new(),
            reaping: Vec::new(),
            next_sweep: epoch,
            scratch: vec![0u8; 65536],
            iface_polls: 0,
            rounds: 0,
            logged: [0; 6],
            stats: Stats::default(),
            cfg,
        })
    }

    /// Number of live proxied TCP connections (including pending accepts).
    pub fn connections(&self) -> usize {
        self.conns.len() + self.accepts.pending()
    }

    /// Host sockets held open for UDP (forward clients are smoltcp sockets
    /// behind one host socket; inbound flows have one each).
    #[cfg(test)]
    pub fn udp_host_sockets(&self) -> usize {
        self.udp.flows()
    }

    fn smol_now(&self, now: Instant) -> smoltcp::time::Instant {
        let us = now.saturating_duration_since(self.epoch).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(us).unwrap_or(i64::MAX))
    }

    fn poll_iface(&mut self, now: Instant) {
        let ts = self.smol_now(now);
        self.iface_polls += 1;
        self.iface.poll(ts, &mut self.dev, &mut self.sockets);
    }

    /// Once a second: idle UDP flows, and (at debug level) the device's
    /// packet and drop counts and the polls it took.
    fn sweep(&mut self, now: Instant) {
        let d = &self.dev;
        let counts = [
            d.rx_packets,
            d.tx_packets,
            self.iface_polls,
            self.rounds,
            d.rx_dropped,
            d.tx_dropped,
        ];
        if counts[..2] != self.logged[..2] || counts[4..] != self.logged[4..] {
            let c: Vec<u64> = counts
                .iter()
                .zip(self.logged)
                .map(|(a, b)| a.saturating_sub(b))
                .collect();
            debug!(
                "userspace stack since the last line: {} packets in, {} out, {} interface polls, {} proxy rounds, {} conns; dropped at full queues: {} in, {} out (total)",
                c[0], c[1], c[2], c[3], self.conns.len(), counts[4], counts[5]
            );
            self.logged = counts;
        }
        self.sweep_udp_forwards(now);
        self.sweep_udp_inbound(now);
    }
}

impl PacketIo for Userspace {
    fn register(&mut self, registry: &Registry, _token: Token) -> io::Result<()> {
        let r = registry.try_clone()?;
        for (t, f) in self.forwards.iter_mut() {
            f.register(&r, *t)?;
        }
        self.udp.register_all(&r)?;
        self.registry = Some(r);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.dev.pop_tx(buf) {
                None => return Err(io::ErrorKind::WouldBlock.into()),
                Some(Some(n)) => return Ok(n),
                Some(None) => continue,
            }
        }
    }

    fn send(&mut self, now: Instant, packet: &[u8], info: Option<&PacketInfo>) -> io::Result<()> {
        if self.dev.rx_len() >= self.cfg.queue {
            // Let the stack catch up rather than drop.
            self.poll_iface(now);
        }
        // The engine classified what it delivers; only its own replies
        // (local refusals) come without.
        match info {
            Some(info) => self.observe(info, now),
            None => {
                if let Ok(info) = classify(packet) {
                    self.observe(&info, now);
                }
            }
        }
        if self.dev.push_rx(packet) {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn ready(&mut self, now: Instant, event: &mio::event::Event) {
        let t = event.token();
        let _ = self.conn_ready(t, event)
            || self.forward_ready(t, now)
            || self.udp_flow_readable(t, now);
    }

    fn poll(&mut self, now: Instant) -> Option<Instant> {
        for _ in 0..ROUNDS {
            self.poll_iface(now);
            for h in self.reaping.drain(..) {
                self.sockets.remove(h);
            }
            std::mem::swap(&mut self.reap, &mut self.reaping);
            self.rounds += 1;
            self.accept_forwards(now);
            self.promote_accepted(now);
            let tcp = self.pump_conns(now);
            let udp = self.pump_udp_forwards(now) | self.pump_udp_inbound(now);
            if !tcp && !udp {
                break;
            }
        }
        self.poll_iface(now);
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + Duration::from_secs(1);
        }
        let delay = self
            .iface
            .poll_delay(self.smol_now(now), &self.sockets)
            .map_or(MAX_POLL_DELAY, |d| Duration::from_micros(d.total_micros()));
        Some(now + delay.min(MAX_POLL_DELAY))
    }

    fn label(&self) -> String {
        format!(
            "userspace stack ({} forwards, {} exposed)",
            self.cfg.forward.len(),
            self.cfg.expose.len()
        )
    }
}
