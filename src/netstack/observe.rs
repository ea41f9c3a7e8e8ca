//! Inbound flows (expose and gateway): smoltcp has no wildcard listen, so
//! each packet on its way into the stack is looked at, and the first SYN of
//! a flow we terminate opens one listening socket for that (remote, local)
//! pair; the first datagram to an (address, port) we terminate binds a UDP
//! socket to it. Once a listening socket is established, the host side
//! connects to the target and the pair becomes a proxied connection.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::conn::TcpConn;
use super::ip_of;
use super::options::Proto;
use super::stack::{register_host, tcp_socket, Userspace};
use crate::debug;
use crate::wire::classify::{PacketInfo, Transport};
use crate::wire::tcp::TcpFlags;

/// A listening socket not established within this long is dropped.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// (remote, local) of an observed SYN.
pub(super) type Syn = (IpEndpoint, IpEndpoint);

/// A listening smoltcp socket created for an observed SYN.
struct Accepting {
    handle: SocketHandle,
    target: SocketAddr,
    syn: Syn,
    since: Instant,
}

/// Inbound TCP flows being accepted.
#[derive(Default)]
pub(super) struct Accepts {
    /// SYNs that have a socket (retransmitted SYNs reuse it).
    syns: HashSet<Syn>,
    accepting: Vec<Accepting>,
    /// Inbound connections (pending or proxied) per remote address.
    per_peer: HashMap<IpAddress, usize>,
}

impl Accepts {
    /// Listening sockets not yet established.
    pub(super) fn pending(&self) -> usize {
        self.accepting.len()
    }

    fn remember_syn(&mut self, syn: Syn) {
        if self.syns.insert(syn) {
            *self.per_peer.entry(syn.0.addr).or_insert(0) += 1;
        }
    }

    /// Forgets a SYN whose connection ended (or never got established).
    pub(super) fn forget_syn(&mut self, syn: &Syn) {
        if self.syns.remove(syn) {
            if let Some(n) = self.per_peer.get_mut(&syn.0.addr) {
                *n -= 1;
                if *n == 0 {
                    self.per_peer.remove(&syn.0.addr);
                }
            }
        }
    }

    /// Inbound connections `addr` holds.
    pub(super) fn of_peer(&self, addr: &IpAddress) -> usize {
        self.per_peer.get(addr).copied().unwrap_or(0)
    }
}

impl Userspace {
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

    /// Looks at a packet on its way into the stack (already classified by
    /// the engine) and opens the socket that will take it, if it starts a
    /// flow we terminate.
    pub(super) fn observe(&mut self, info: &PacketInfo, now: Instant) {
        match info.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                flags,
                ..
            } if flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK) => {
                let remote = IpEndpoint::new(ip_of(info.src), src_port);
                let local = IpEndpoint::new(ip_of(info.dst), dst_port);
                if self.accepts.syns.contains(&(remote, local)) {
                    return; // retransmitted SYN: its socket exists
                }
                let Some(target) = self.inbound_target(info.dst, dst_port, Proto::Tcp) else {
                    return;
                };
                // At the cap, or this peer at its share: the stack answers
                // RST (no socket listens).
                let share = (self.cfg.max_connections / 2).max(1);
                if self.connections() >= self.cfg.max_connections
                    || self.accepts.of_peer(&remote.addr) >= share
                {
                    self.stats.tcp_refused += 1;
                    return;
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
                self.accepts.remember_syn((remote, local));
                self.accepts.accepting.push(Accepting {
                    handle,
                    target,
                    syn: (remote, local),
                    since: now,
                });
            }
            Transport::Udp { dst_port, .. } => {
                let key = (ip_of(info.dst), dst_port);
                if self.udp.is_bound(&key) {
                    return;
                }
                if let Some(target) = self.inbound_target(info.dst, dst_port, Proto::Udp) {
                    self.udp.bind(&mut self.sockets, key, target);
                }
            }
            _ => {}
        }
    }

    /// Turns established inbound sockets into proxied connections, and
    /// drops those that never got established.
    pub(super) fn promote_accepted(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.accepts.accepting.len() {
            let a = &self.accepts.accepting[i];
            use tcp::State::*;
            match self.sockets.get::<tcp::Socket>(a.handle).state() {
                Listen | SynReceived if now.duration_since(a.since) < ACCEPT_TIMEOUT => {
                    i += 1;
                    continue;
                }
                Listen | SynReceived | Closed | TimeWait => {
                    let a = self.accepts.accepting.swap_remove(i);
                    self.sockets.remove(a.handle);
                    self.accepts.forget_syn(&a.syn);
                    continue;
                }
                _ => {}
            }
            let a = self.accepts.accepting.swap_remove(i);
            let t = self.alloc.token();
            let stream = TcpStream::connect(a.target).and_then(|mut s| {
                register_host(
                    &self.registry,
                    &mut s,
                    t,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map(|()| s)
            });
            match stream {
                Ok(stream) => {
                    debug!("accepted -> {}", a.target);
                    let conn = TcpConn::inbound(stream, a.handle, Some(a.syn), now);
                    self.conns.insert(t, conn);
                    self.stats.tcp_opened += 1;
                }
                Err(e) => {
                    debug!("cannot connect to {}: {e}", a.target);
                    self.sockets.get_mut::<tcp::Socket>(a.handle).abort();
                    self.accepts.forget_syn(&a.syn);
                    // Let the RST go out before freeing the socket.
                    self.reap.push(a.handle);
                }
            }
        }
    }
}
