//! The userspace data plane (`umbra up --userspace`): instead of a TUN
//! device, decrypted packets feed a smoltcp interface owned by the node,
//! and host sockets are proxied to and from it. No privileges, no
//! `/dev/net/tun`.
//!
//! - `--forward`: a host listener; each connection (or UDP client) gets a
//!   smoltcp socket that connects into the mesh from our tunnel address.
//! - `--expose`: a port on our tunnel address, proxied to a host socket.
//! - gateway (`serves` in the policy): flows to served networks are
//!   terminated here (AnyIP) and proxied to the real destination.
//!
//! smoltcp has no wildcard listen, so inbound TCP is accepted by watching
//! for SYNs on their way into the stack and opening one listening socket
//! per new (remote, local) pair; inbound UDP likewise gets a socket bound
//! to each (address, port) on first sight.
//!
//! Everything the engine does (policy, conntrack, cloaking, reload)
//! happens before packets get here: this backend only replaces where
//! packets go, behind [`PacketIo`].

pub mod device;
pub mod options;
pub mod pipe;

#[cfg(test)]
mod load_test;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use smoltcp::iface::{Config as IfaceConfig, Interface, Route, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::io::PacketIo;
use crate::policy::IpNet;
use crate::wire::classify::Transport;
use crate::wire::tcp::TcpFlags;
use crate::{debug, info, warn};
use device::Queues;
use options::{Expose, Forward, Proto};
use pipe::{HostSide, MeshSide, MeshState, Pipe, Status};

/// First mio token this backend uses; the daemon's own are below.
pub const FIRST_TOKEN: usize = 16;

/// Tunables of the userspace stack.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's tunnel addresses (with their network prefix).
    pub addresses: Vec<IpNet>,
    /// Networks this node serves as a gateway.
    pub serves: Vec<IpNet>,
    pub mtu: usize,
    pub forward: Vec<Forward>,
    pub expose: Vec<Expose>,
    /// A TCP connection with no traffic for this long is reset.
    pub tcp_idle: Duration,
    /// A UDP association with no traffic for this long is forgotten.
    pub udp_idle: Duration,
    /// Concurrent proxied TCP connections (plus pending accepts).
    pub max_connections: usize,
    /// Size of each smoltcp TCP socket buffer (one receive, one send).
    pub tcp_buffer: usize,
    /// Packets per device queue.
    pub queue: usize,
}

impl Config {
    pub fn new(addresses: Vec<IpNet>, serves: Vec<IpNet>, mtu: usize) -> Config {
        Config {
            addresses,
            serves,
            mtu,
            forward: Vec::new(),
            expose: Vec::new(),
            tcp_idle: Duration::from_secs(600),
            udp_idle: Duration::from_secs(60),
            max_connections: 4096,
            tcp_buffer: 64 * 1024,
            queue: 1024,
        }
    }
}

/// Counters for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub tcp_opened: u64,
    pub tcp_done: u64,
    pub tcp_reset: u64,
    pub tcp_idle: u64,
    pub tcp_refused: u64,
    pub udp_assocs: u64,
}

/// A host socket wrapped for the pipe.
struct Host<'a>(&'a mut TcpStream);

impl HostSide for Host<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn shutdown_write(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
    fn reset(&mut self) {
        let _ = crate::io::sockopt::set_linger_zero(self.0);
    }
}

/// A smoltcp socket wrapped for the pipe. `fin_seen` remembers that the
/// other side closed cleanly, to tell a graceful CLOSED from a reset.
struct Mesh<'a> {
    sock: &'a mut tcp::Socket<'static>,
    fin_seen: bool,
}

impl MeshSide for Mesh<'_> {
    fn state(&self) -> MeshState {
        use tcp::State::*;
        match self.sock.state() {
            Listen | SynSent | SynReceived => MeshState::Opening,
            Established | FinWait1 | FinWait2 | CloseWait | Closing | LastAck => MeshState::Open,
            TimeWait => MeshState::Finished,
            Closed if self.fin_seen => MeshState::Finished,
            Closed => MeshState::Broken,
        }
    }
    fn may_send(&self) -> bool {
        self.sock.may_send()
    }
    fn may_recv(&self) -> bool {
        self.sock.may_recv() || self.sock.recv_queue() > 0
    }
    fn send_with(
        &mut self,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.sock.send_queue() >= self.sock.send_capacity() {
            return Ok(0);
        }
        match self.sock.send(|room| {
            if room.is_empty() {
                return (0, Ok(0));
            }
            match fill(room) {
                Ok(n) => (n.min(room.len()), Ok(n)),
                Err(e) => (0, Err(e)),
            }
        }) {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn recv_with(
        &mut self,
        drain: &mut dyn FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.sock.recv_queue() == 0 {
            return Ok(0);
        }
        match self.sock.recv(|data| {
            if data.is_empty() {
                return (0, Ok(0));
            }
            match drain(data) {
                Ok(n) => (n.min(data.len()), Ok(n)),
                Err(e) => (0, Err(e)),
            }
        }) {
            Ok(r) => r,
            Err(_) => Ok(0),
        }
    }
    fn close(&mut self) {
        self.sock.close();
    }
    fn abort(&mut self) {
        self.sock.abort();
    }
}

/// A proxied TCP connection.
struct TcpConn {
    stream: TcpStream,
    handle: SocketHandle,
    pipe: Pipe,
    fin_seen: bool,
    /// Host-side connect (expose, gateway) not finished yet.
    connecting: bool,
    last_active: Instant,
    /// Ephemeral port to release (forward).
    port: Option<u16>,
    /// The SYN that created it (expose, gateway), to forget on release.
    syn: Option<(IpEndpoint, IpEndpoint)>,
}

/// A listening smoltcp socket created for an observed SYN.
struct Accepting {
    handle: SocketHandle,
    target: SocketAddr,
    syn: Option<(IpEndpoint, IpEndpoint)>,
    since: Instant,
}

/// Sockets to free after the next interface poll (their RST or last ACK
/// goes out first).
type Reap = Vec<SocketHandle>;

/// A `--forward .../udp` client association.
struct UdpAssoc {
    handle: SocketHandle,
    port: u16,
    last_active: Instant,
}

/// A host-side socket of ours: forward listeners and UDP sockets.
enum HostSock {
    TcpListen {
        listener: TcpListener,
        fwd: Forward,
        pending: bool,
    },
    UdpForward {
        sock: UdpSocket,
        fwd: Forward,
        assocs: HashMap<SocketAddr, UdpAssoc>,
    },
    /// Host socket of one inbound UDP flow (expose, gateway), connected to
    /// the target; replies go back through `bind` to `remote`.
    UdpFlow {
        sock: UdpSocket,
        bind: (IpAddress, u16),
        remote: IpEndpoint,
        last_active: Instant,
    },
}

/// A smoltcp UDP socket bound to (address, port) for inbound flows.
struct UdpBind {
    handle: SocketHandle,
    target: SocketAddr,
    flows: HashMap<IpEndpoint, Token>,
}

/// The userspace backend. Create with [`Userspace::new`], then hand to
/// the daemon's event loop as its [`PacketIo`].
pub struct Userspace {
    cfg: Config,
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    epoch: Instant,
    registry: Option<Registry>,
    next_token: usize,
    hosts: HashMap<Token, HostSock>,
    conns: HashMap<Token, TcpConn>,
    accepting: Vec<Accepting>,
    reap: Reap,
    reaping: Reap,
    syns: HashSet<(IpEndpoint, IpEndpoint)>,
    udp_binds: HashMap<(IpAddress, u16), UdpBind>,
    ports: HashSet<u16>,
    next_port: u16,
    next_sweep: Instant,
    scratch: Vec<u8>,
    dropped_logged: (u64, u64),
    pub stats: Stats,
}

fn ip_of(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => IpAddress::Ipv4(v),
        IpAddr::V6(v) => IpAddress::Ipv6(v),
    }
}

fn smol_now(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}

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

/// A host TCP listener whose accept queue holds `backlog` connections.
///
/// mio (like std) listens with a backlog of 128. A burst of more connects
/// than that, while the event loop is busy, overflows the accept queue:
/// the kernel then answers SYNs with SYN cookies and drops the handshake's
/// final ACK, and the client's next data segment, which no longer
/// validates as a cookie, is answered with a RST -- the client sees its
/// connection reset (ENOTCONN on shutdown) before the proxy ever saw it.
/// So the queue is as long as the connection cap (capped by the kernel at
/// `net.core.somaxconn`).
fn listen_tcp(addr: SocketAddr, backlog: usize) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    crate::io::sockopt::set_listen_backlog(&listener, backlog.max(128))?;
    Ok(listener)
}

fn udp_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0u8; 64 * 1024]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0u8; 64 * 1024]),
    )
}

impl Userspace {
    pub fn new(cfg: Config) -> Result<Userspace, String> {
        if cfg.addresses.is_empty() {
            return Err("this node has no tunnel address".into());
        }
        let epoch = Instant::now();
        let mut dev = Queues::new(cfg.queue, cfg.mtu);
        let mut ic = IfaceConfig::new(HardwareAddress::Ip);
        ic.random_seed = getrandom::u64().map_err(|e| format!("no randomness: {e}"))?;
        let mut iface = Interface::new(ic, &mut dev, smol_now(epoch, epoch));
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
            next_token: FIRST_TOKEN,
            hosts: HashMap::new(),
            conns: HashMap::new(),
            accepting: Vec::new(),
            reap: Vec::new(),
            reaping: Vec::new(),
            syns: HashSet::new(),
            udp_binds: HashMap::new(),
            ports: HashSet::new(),
            next_port: 49152,
            next_sweep: epoch,
            scratch: vec![0u8; 65536],
            dropped_logged: (0, 0),
            stats: Stats::default(),
            cfg,
        })
    }

    /// Binds the `--forward` listeners. Call before `register`.
    pub fn bind_forwards(&mut self) -> Result<(), String> {
        for fwd in self.cfg.forward.clone() {
            let sock = match fwd.proto {
                Proto::Tcp => HostSock::TcpListen {
                    listener: listen_tcp(fwd.listen, self.cfg.max_connections)
                        .map_err(|e| format!("--forward: cannot listen on {}: {e}", fwd.listen))?,
                    fwd,
                    pending: false,
                },
                Proto::Udp => HostSock::UdpForward {
                    sock: UdpSocket::bind(fwd.listen)
                        .map_err(|e| format!("--forward: cannot bind {}/udp: {e}", fwd.listen))?,
                    fwd,
                    assocs: HashMap::new(),
                },
            };
            let t = self.token();
            self.hosts.insert(t, sock);
        }
        Ok(())
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_TOKEN);
        t
    }

    /// An unused ephemeral port for a socket of ours.
    fn port(&mut self) -> Option<u16> {
        for _ in 0..16384 {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
            if self.ports.insert(p) {
                return Some(p);
            }
        }
        None
    }

    fn source_for(&self, dst: IpAddr) -> Option<IpAddress> {
        self.cfg
            .addresses
            .iter()
            .find(|a| a.is_ipv4() == dst.is_ipv4())
            .map(|a| ip_of(a.addr()))
    }

    /// Where an inbound flow to `dst:port` goes on the host side, if this
    /// node terminates it.
    fn inbound_target(&self, dst: IpAddr, port: u16, proto: Proto) -> Option<SocketAddr> {
        if self.cfg.addresses.iter().any(|a| a.addr() == dst) {
            return self
                .cfg
                .expose
                .iter()
                .find(|e| e.port == port && e.proto == proto)
                .map(|e| e.target);
        }
        if self.cfg.serves.iter().any(|n| n.contains(dst)) {
            return Some(SocketAddr::new(dst, port));
        }
        None
    }

    /// Number of live proxied TCP connections (including pending accepts).
    pub fn connections(&self) -> usize {
        self.conns.len() + self.accepting.len()
    }

    /// Looks at a packet on its way into the stack and opens the socket
    /// that will take it, if it starts a flow we terminate.
    fn observe(&mut self, packet: &[u8], now: Instant) {
        let Ok(info) = crate::wire::classify(packet) else {
            return;
        };
        match info.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                ..
            } if flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK) => {
                let remote = IpEndpoint::new(ip_of(info.src), src_port);
                let local = IpEndpoint::new(ip_of(info.dst), dst_port);
                if self.syns.contains(&(remote, local)) {
                    return; // retransmitted SYN: its socket exists
                }
                let Some(target) = self.inbound_target(info.dst, dst_port, Proto::Tcp) else {
                    return;
                };
                if self.connections() >= self.cfg.max_connections {
                    self.stats.tcp_refused += 1;
                    return; // the stack answers RST
                }
                let mut s = tcp_socket(self.cfg.tcp_buffer);
                let ep = IpListenEndpoint {
                    addr: Some(local.addr),
                    port: dst_port,
                };
                if s.listen(ep).is_err() {
                    return;
                }
                let handle = self.sockets.add(s);
                self.syns.insert((remote, local));
                self.accepting.push(Accepting {
                    handle,
                    target,
                    syn: Some((remote, local)),
                    since: now,
                });
            }
            Transport::Udp { dst_port, .. } => {
                let key = (ip_of(info.dst), dst_port);
                if self.udp_binds.contains_key(&key) {
                    return;
                }
                let Some(target) = self.inbound_target(info.dst, dst_port, Proto::Udp) else {
                    return;
                };
                let mut s = udp_socket();
                if s.bind(IpListenEndpoint {
                    addr: Some(key.0),
                    port: dst_port,
                })
                .is_err()
                {
                    return;
                }
                let handle = self.sockets.add(s);
                self.udp_binds.insert(
                    key,
                    UdpBind {
                        handle,
                        target,
                        flows: HashMap::new(),
                    },
                );
            }
            _ => {}
        }
    }

    fn register_host(
        registry: &Option<Registry>,
        src: &mut impl mio::event::Source,
        t: Token,
        interest: Interest,
    ) -> bool {
        match registry {
            Some(r) => r.register(src, t, interest).is_ok(),
            None => false,
        }
    }

    /// Accepts host connections on forward listeners.
    fn accept_forwards(&mut self, now: Instant) {
        let tokens: Vec<Token> = self
            .hosts
            .iter()
            .filter(|(_, h)| matches!(h, HostSock::TcpListen { pending: true, .. }))
            .map(|(t, _)| *t)
            .collect();
        for lt in tokens {
            loop {
                if self.connections() >= self.cfg.max_connections {
                    break; // stays pending: accepted once a slot frees
                }
                let Some(HostSock::TcpListen {
                    listener,
                    fwd,
                    pending,
                }) = self.hosts.get_mut(&lt)
                else {
                    break;
                };
                let fwd = *fwd;
                let (mut stream, from) = match listener.accept() {
                    Ok(s) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        *pending = false;
                        break;
                    }
                    Err(e) => {
                        debug!("accept on {} failed: {e}", fwd.listen);
                        *pending = false;
                        break;
                    }
                };
                let (Some(src), Some(port)) = (self.source_for(fwd.target.ip()), self.port())
                else {
                    warn!(
                        "--forward {}: no tunnel address for {}",
                        fwd.listen, fwd.target
                    );
                    continue;
                };
                let mut s = tcp_socket(self.cfg.tcp_buffer);
                if s.connect(
                    self.iface.context(),
                    IpEndpoint::new(ip_of(fwd.target.ip()), fwd.target.port()),
                    IpListenEndpoint {
                        addr: Some(src),
                        port,
                    },
                )
                .is_err()
                {
                    self.ports.remove(&port);
                    continue;
                }
                let t = self.token();
                if !Self::register_host(
                    &self.registry,
                    &mut stream,
                    t,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.ports.remove(&port);
                    continue;
                }
                let handle = self.sockets.add(s);
                debug!("forward {from} -> {}: connecting", fwd.target);
                let mut pipe = Pipe::new();
                pipe.host_readable = true;
                pipe.host_writable = true;
                self.conns.insert(
                    t,
                    TcpConn {
                        stream,
                        handle,
                        pipe,
                        fin_seen: false,
                        connecting: false,
                        last_active: now,
                        port: Some(port),
                        syn: None,
                    },
                );
                self.stats.tcp_opened += 1;
            }
        }
    }

    /// Turns established inbound sockets into proxied connections.
    fn promote_accepted(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.accepting.len() {
            let a = &self.accepting[i];
            let state = self.sockets.get::<tcp::Socket>(a.handle).state();
            use tcp::State::*;
            match state {
                Listen | SynReceived if now.duration_since(a.since) < Duration::from_secs(30) => {
                    i += 1;
                    continue;
                }
                Listen | SynReceived | Closed | TimeWait => {
                    let a = self.accepting.swap_remove(i);
                    self.sockets.remove(a.handle);
                    if let Some(syn) = a.syn {
                        self.syns.remove(&syn);
                    }
                    continue;
                }
                _ => {}
            }
            let a = self.accepting.swap_remove(i);
            let t = self.token();
            let stream = TcpStream::connect(a.target).and_then(|mut s| {
                if Self::register_host(
                    &self.registry,
                    &mut s,
                    t,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(s)
                } else {
                    Err(io::ErrorKind::Other.into())
                }
            });
            match stream {
                Ok(stream) => {
                    debug!("accepted -> {}", a.target);
                    self.conns.insert(
                        t,
                        TcpConn {
                            stream,
                            handle: a.handle,
                            pipe: Pipe::new(),
                            fin_seen: false,
                            connecting: true,
                            last_active: now,
                            port: None,
                            syn: a.syn,
                        },
                    );
                    self.stats.tcp_opened += 1;
                }
                Err(e) => {
                    debug!("cannot connect to {}: {e}", a.target);
                    self.sockets.get_mut::<tcp::Socket>(a.handle).abort();
                    if let Some(syn) = a.syn {
                        self.syns.remove(&syn);
                    }
                    // Let the RST go out before freeing the socket.
                    self.reap.push(a.handle);
                }
            }
        }
    }

    /// Pumps every proxied TCP connection; frees finished ones.
    fn pump_conns(&mut self, now: Instant) -> bool {
        let mut moved_any = false;
        let mut finished = Vec::new();
        for (t, c) in self.conns.iter_mut() {
            if c.connecting {
                if !c.pipe.host_writable {
                    continue;
                }
                match (c.stream.take_error(), c.stream.peer_addr()) {
                    (Ok(None), Ok(_)) => c.connecting = false,
                    (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {
                        c.pipe.host_writable = false;
                        continue;
                    }
                    _ => {
                        // Target refused: reset the mesh side.
                        self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
                        finished.push((*t, Status::Reset));
                        continue;
                    }
                }
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            use tcp::State::*;
            if matches!(sock.state(), CloseWait | LastAck | Closing | TimeWait) {
                c.fin_seen = true;
            }
            let mut mesh = Mesh {
                sock,
                fin_seen: c.fin_seen,
            };
            let status = c.pipe.pump(&mut Host(&mut c.stream), &mut mesh);
            match status {
                Status::Running { moved } => {
                    if moved {
                        c.last_active = now;
                        moved_any = true;
                    } else if now.duration_since(c.last_active) > self.cfg.tcp_idle
                        || (c.pipe.half_closed_both()
                            && now.duration_since(c.last_active) > Duration::from_secs(30))
                    {
                        mesh.abort();
                        Host(&mut c.stream).reset();
                        self.stats.tcp_idle += 1;
                        finished.push((*t, Status::Reset));
                    }
                }
                s => {
                    if s == Status::Reset {
                        debug!(
                            "tcp proxy reset (mesh {}, {} bytes up, {} down)",
                            mesh.sock.state(),
                            c.pipe.up,
                            c.pipe.down
                        );
                    }
                    moved_any = true;
                    finished.push((*t, s));
                }
            }
        }
        for (t, s) in finished {
            if let Some(mut c) = self.conns.remove(&t) {
                match s {
                    Status::Done => self.stats.tcp_done += 1,
                    _ => self.stats.tcp_reset += 1,
                }
                if let Some(r) = &self.registry {
                    let _ = r.deregister(&mut c.stream);
                }
                // An aborted socket still has its RST to send: free it
                // after the next interface poll.
                self.reap.push(c.handle);
                if let Some(p) = c.port {
                    self.ports.remove(&p);
                }
                if let Some(syn) = c.syn {
                    self.syns.remove(&syn);
                }
            }
        }
        moved_any
    }

    /// Moves UDP datagrams between host sockets and the stack.
    fn pump_udp(&mut self, now: Instant) -> bool {
        let mut moved = false;
        let buf = &mut self.scratch;
        // Forwards: host -> mesh for readable sockets is done in `ready`;
        // here mesh -> host replies.
        for h in self.hosts.values_mut() {
            if let HostSock::UdpForward {
                sock, fwd, assocs, ..
            } = h
            {
                let target = IpEndpoint::new(ip_of(fwd.target.ip()), fwd.target.port());
                for (client, a) in assocs.iter_mut() {
                    let s = self.sockets.get_mut::<udp::Socket>(a.handle);
                    while let Ok((data, meta)) = s.recv() {
                        if meta.endpoint != target {
                            continue;
                        }
                        let _ = sock.send_to(data, *client);
                        a.last_active = now;
                        moved = true;
                    }
                }
            }
        }
        // Inbound binds: mesh -> host flows.
        let mut new_flows = Vec::new();
        for (key, b) in self.udp_binds.iter_mut() {
            let s = self.sockets.get_mut::<udp::Socket>(b.handle);
            while let Ok((data, meta)) = s.recv() {
                moved = true;
                let t = match b.flows.get(&meta.endpoint) {
                    Some(t) => *t,
                    None => {
                        let any: SocketAddr = if b.target.is_ipv4() {
                            SocketAddr::from(([0, 0, 0, 0], 0))
                        } else {
                            SocketAddr::from(([0u16; 8], 0))
                        };
                        let Ok(sock) = UdpSocket::bind(any) else {
                            continue;
                        };
                        if sock.connect(b.target).is_err() {
                            continue;
                        }
                        let t = Token(self.next_token);
                        self.next_token = self.next_token.wrapping_add(1).max(FIRST_TOKEN);
                        b.flows.insert(meta.endpoint, t);
                        new_flows.push((t, sock, *key, meta.endpoint));
                        self.stats.udp_assocs += 1;
                        // Send after registration below; keep the datagram.
                        let len = data.len().min(buf.len());
                        buf[..len].copy_from_slice(&data[..len]);
                        if let Some((_, s, _, _)) = new_flows.last() {
                            let _ = s.send(&buf[..len]);
                        }
                        continue;
                    }
                };
                if let Some(HostSock::UdpFlow {
                    sock, last_active, ..
                }) = self.hosts.get_mut(&t)
                {
                    let _ = sock.send(data);
                    *last_active = now;
                }
            }
        }
        for (t, mut sock, bind, remote) in new_flows {
            if Self::register_host(&self.registry, &mut sock, t, Interest::READABLE) {
                self.hosts.insert(
                    t,
                    HostSock::UdpFlow {
                        sock,
                        bind,
                        remote,
                        last_active: now,
                    },
                );
            }
        }
        moved
    }

    /// Host UDP socket readable: carry its datagrams into the stack.
    fn udp_host_readable(&mut self, t: Token, now: Instant) {
        let Some(h) = self.hosts.get_mut(&t) else {
            return;
        };
        match h {
            HostSock::UdpForward { sock, fwd, assocs } => {
                while let Ok((n, from)) = sock.recv_from(&mut self.scratch) {
                    let target = IpEndpoint::new(ip_of(fwd.target.ip()), fwd.target.port());
                    let handle = match assocs.get_mut(&from) {
                        Some(a) => {
                            a.last_active = now;
                            a.handle
                        }
                        None => {
                            let src = self
                                .cfg
                                .addresses
                                .iter()
                                .find(|a| a.is_ipv4() == fwd.target.is_ipv4())
                                .map(|a| ip_of(a.addr()));
                            let port = (0..16384).find_map(|_| {
                                let p = self.next_port;
                                self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
                                self.ports.insert(p).then_some(p)
                            });
                            let (Some(src), Some(port)) = (src, port) else {
                                continue;
                            };
                            let mut s = udp_socket();
                            if s.bind(IpListenEndpoint {
                                addr: Some(src),
                                port,
                            })
                            .is_err()
                            {
                                self.ports.remove(&port);
                                continue;
                            }
                            let handle = self.sockets.add(s);
                            assocs.insert(
                                from,
                                UdpAssoc {
                                    handle,
                                    port,
                                    last_active: now,
                                },
                            );
                            self.stats.udp_assocs += 1;
                            handle
                        }
                    };
                    let s = self.sockets.get_mut::<udp::Socket>(handle);
                    let _ = s.send_slice(self.scratch.get(..n).unwrap_or_default(), target);
                }
            }
            HostSock::UdpFlow {
                sock,
                bind,
                remote,
                last_active,
            } => {
                let Some(b) = self.udp_binds.get(bind) else {
                    return;
                };
                let s = self.sockets.get_mut::<udp::Socket>(b.handle);
                while let Ok(n) = sock.recv(&mut self.scratch) {
                    *last_active = now;
                    let meta = udp::UdpMetadata {
                        endpoint: *remote,
                        local_address: Some(bind.0),
                        meta: Default::default(),
                    };
                    let _ = s.send_slice(self.scratch.get(..n).unwrap_or_default(), meta);
                }
            }
            HostSock::TcpListen { .. } => {}
        }
    }

    /// Forgets idle UDP associations and flows, and stale sockets.
    fn sweep(&mut self, now: Instant) {
        let idle = self.cfg.udp_idle;
        let mut dead_flows = Vec::new();
        for (t, h) in self.hosts.iter_mut() {
            match h {
                HostSock::UdpForward { assocs, .. } => {
                    assocs.retain(|_, a| {
                        let keep = now.duration_since(a.last_active) < idle;
                        if !keep {
                            self.sockets.remove(a.handle);
                            self.ports.remove(&a.port);
                        }
                        keep
                    });
                }
                HostSock::UdpFlow {
                    last_active,
                    bind,
                    remote,
                    ..
                } if now.duration_since(*last_active) >= idle => {
                    dead_flows.push((*t, *bind, *remote));
                }
                _ => {}
            }
        }
        for (t, bind, remote) in dead_flows {
            if let Some(HostSock::UdpFlow { mut sock, .. }) = self.hosts.remove(&t) {
                if let Some(r) = &self.registry {
                    let _ = r.deregister(&mut sock);
                }
            }
            if let Some(b) = self.udp_binds.get_mut(&bind) {
                b.flows.remove(&remote);
                if b.flows.is_empty() {
                    let h = b.handle;
                    self.udp_binds.remove(&bind);
                    self.sockets.remove(h);
                }
            }
        }
    }
}

impl PacketIo for Userspace {
    fn register(&mut self, registry: &Registry, _token: Token) -> io::Result<()> {
        let r = registry.try_clone()?;
        for (t, h) in self.hosts.iter_mut() {
            match h {
                HostSock::TcpListen { listener, .. } => {
                    r.register(listener, *t, Interest::READABLE)?
                }
                HostSock::UdpForward { sock, .. } | HostSock::UdpFlow { sock, .. } => {
                    r.register(sock, *t, Interest::READABLE)?
                }
            }
        }
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

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        let now = Instant::now();
        if self.dev.rx_len() >= self.cfg.queue {
            // Let the stack catch up rather than drop.
            let ts = smol_now(self.epoch, now);
            self.iface.poll(ts, &mut self.dev, &mut self.sockets);
        }
        self.observe(packet, now);
        if self.dev.push_rx(packet) {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn ready(&mut self, event: &mio::event::Event) {
        let t = event.token();
        let now = Instant::now();
        if let Some(c) = self.conns.get_mut(&t) {
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                c.pipe.host_readable = true;
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                c.pipe.host_writable = true;
            }
            return;
        }
        match self.hosts.get_mut(&t) {
            Some(HostSock::TcpListen { pending, .. }) => *pending = true,
            Some(_) => self.udp_host_readable(t, now),
            None => {}
        }
    }

    fn poll(&mut self, now: Instant) -> Option<Instant> {
        for _ in 0..4 {
            let ts = smol_now(self.epoch, now);
            self.iface.poll(ts, &mut self.dev, &mut self.sockets);
            for h in self.reaping.drain(..) {
                self.sockets.remove(h);
            }
            std::mem::swap(&mut self.reap, &mut self.reaping);
            self.accept_forwards(now);
            self.promote_accepted(now);
            let a = self.pump_conns(now);
            let b = self.pump_udp(now);
            if !a && !b {
                break;
            }
        }
        let ts = smol_now(self.epoch, now);
        self.iface.poll(ts, &mut self.dev, &mut self.sockets);
        if now >= self.next_sweep {
            let dropped = (self.dev.rx_dropped, self.dev.tx_dropped);
            if dropped != self.dropped_logged {
                debug!(
                    "userspace stack: packets dropped at full queues: {} in, {} out",
                    dropped.0, dropped.1
                );
                self.dropped_logged = dropped;
            }
            self.sweep(now);
            self.next_sweep = now + Duration::from_secs(1);
        }
        let delay = self
            .iface
            .poll_delay(ts, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_secs(1));
        Some(now + delay.min(Duration::from_secs(1)))
    }

    fn label(&self) -> String {
        format!(
            "userspace stack ({} forwards, {} exposed)",
            self.cfg.forward.len(),
            self.cfg.expose.len()
        )
    }
}

/// Logs what the stack serves, once at start.
pub fn describe(cfg: &Config) {
    for f in &cfg.forward {
        info!("forward {} -> {}/{}", f.listen, f.target, f.proto);
    }
    for e in &cfg.expose {
        info!("expose {}/{} -> {}", e.port, e.proto, e.target);
    }
    for s in &cfg.serves {
        info!("gateway for {s} (userspace proxy)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `n` connections to `addr` without accepting any, then counts
    /// how many the kernel queued for accept.
    fn queued_after_burst(listener: &TcpListener, n: usize) -> usize {
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..n {
            // Loopback handshakes complete (or are dropped) synchronously.
            if let Ok(s) = TcpStream::connect(addr) {
                clients.push(s);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut accepted = 0;
        while listener.accept().is_ok() {
            accepted += 1;
        }
        accepted
    }

    #[test]
    fn forward_listener_queues_a_burst_beyond_128() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // What mio gives by default: the burst overflows the queue.
        let short = TcpListener::bind(any).unwrap();
        assert!(queued_after_burst(&short, 300) < 300);
        // Ours: the whole burst waits to be accepted.
        let long = listen_tcp(any, 1024).unwrap();
        assert_eq!(queued_after_burst(&long, 300), 300);
    }
}
