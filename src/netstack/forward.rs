//! `--forward` listeners: host sockets whose TCP connections and UDP
//! clients are carried into the mesh from this node's tunnel address.
//! TCP: each accepted connection gets a smoltcp socket that connects to the
//! target from an ephemeral port. UDP: one smoltcp socket per client
//! address, forgotten after `udp_idle`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpListener, UdpSocket};
use mio::{Interest, Token};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use super::conn::TcpConn;
use super::ip_of;
use super::options::{Forward, Proto};
use super::stack::{register_host, tcp_socket, udp_socket, Userspace};
use crate::{debug, warn};

/// A `--forward .../udp` client association.
pub(super) struct UdpAssoc {
    handle: SocketHandle,
    port: u16,
    last_active: Instant,
}

/// One `--forward`'s host socket.
pub(super) enum Forwarder {
    Tcp {
        listener: TcpListener,
        fwd: Forward,
        /// Connections may be waiting to be accepted.
        pending: bool,
    },
    Udp {
        sock: UdpSocket,
        fwd: Forward,
        assocs: HashMap<SocketAddr, UdpAssoc>,
    },
}

impl Forwarder {
    pub(super) fn register(&mut self, r: &mio::Registry, t: Token) -> io::Result<()> {
        match self {
            Forwarder::Tcp { listener, .. } => r.register(listener, t, Interest::READABLE),
            Forwarder::Udp { sock, .. } => r.register(sock, t, Interest::READABLE),
        }
    }
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

fn endpoint(a: SocketAddr) -> IpEndpoint {
    IpEndpoint::new(ip_of(a.ip()), a.port())
}

impl Userspace {
    /// Binds the `--forward` listeners. Call before `register`.
    pub fn bind_forwards(&mut self) -> Result<(), String> {
        for &fwd in &self.cfg.forward {
            let sock = match fwd.proto {
                Proto::Tcp => Forwarder::Tcp {
                    listener: listen_tcp(fwd.listen, self.cfg.max_connections)
                        .map_err(|e| format!("--forward: cannot listen on {}: {e}", fwd.listen))?,
                    fwd,
                    pending: false,
                },
                Proto::Udp => Forwarder::Udp {
                    sock: UdpSocket::bind(fwd.listen)
                        .map_err(|e| format!("--forward: cannot bind {}/udp: {e}", fwd.listen))?,
                    fwd,
                    assocs: HashMap::new(),
                },
            };
            self.forwards.insert(self.alloc.token(), sock);
        }
        Ok(())
    }

    /// A readiness event for a forward's host socket; `false` if `t` is
    /// not one.
    pub(super) fn forward_ready(&mut self, t: Token, now: Instant) -> bool {
        match self.forwards.get_mut(&t) {
            Some(Forwarder::Tcp { pending, .. }) => *pending = true,
            Some(Forwarder::Udp { .. }) => self.forward_udp_readable(t, now),
            None => return false,
        }
        true
    }

    /// Accepts host connections on forward listeners, each with a mesh
    /// socket connecting to the target.
    pub(super) fn accept_forwards(&mut self, now: Instant) {
        let Userspace {
            cfg,
            iface,
            sockets,
            registry,
            alloc,
            forwards,
            conns,
            accepts,
            stats,
            ..
        } = self;
        for f in forwards.values_mut() {
            let Forwarder::Tcp {
                listener,
                fwd,
                pending: pending @ true,
            } = f
            else {
                continue;
            };
            // At the cap, stays pending: accepted once a slot frees.
            while conns.len() + accepts.pending() < cfg.max_connections {
                let (mut stream, from) = match listener.accept() {
                    Ok(s) => s,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            debug!("accept on {} failed: {e}", fwd.listen);
                        }
                        *pending = false;
                        break;
                    }
                };
                let src = cfg
                    .addresses
                    .iter()
                    .find(|a| a.is_ipv4() == fwd.target.is_ipv4());
                let Some(src) = src.map(|a| ip_of(a.addr())) else {
                    warn!(
                        "--forward {}: no tunnel address for {}",
                        fwd.listen, fwd.target
                    );
                    continue;
                };
                let Some(port) = alloc.port() else {
                    warn!("--forward {}: no ephemeral port free", fwd.listen);
                    continue;
                };
                let mut s = tcp_socket(cfg.tcp_buffer);
                let local = IpListenEndpoint {
                    addr: Some(src),
                    port,
                };
                let t = alloc.token();
                let opened = s
                    .connect(iface.context(), endpoint(fwd.target), local)
                    .map_err(|e| io::Error::other(e.to_string()))
                    .and_then(|()| {
                        register_host(
                            registry,
                            &mut stream,
                            t,
                            Interest::READABLE | Interest::WRITABLE,
                        )
                    });
                if opened.is_err() {
                    alloc.release(port);
                    continue;
                }
                debug!("forward {from} -> {}: connecting", fwd.target);
                let handle = sockets.add(s);
                conns.insert(t, TcpConn::forward(stream, handle, port, now));
                stats.tcp_opened += 1;
            }
        }
    }

    /// A UDP forward's host socket is readable: carry its datagrams into
    /// the stack, each client through its own mesh socket.
    fn forward_udp_readable(&mut self, t: Token, now: Instant) {
        let Userspace {
            cfg,
            sockets,
            alloc,
            forwards,
            scratch,
            stats,
            ..
        } = self;
        // Bounded like inbound flows: each client source port gets a mesh
        // socket with its own buffers and an ephemeral port, and a local
        // program can pick source ports freely.
        let mut clients: usize = forwards
            .values()
            .map(|f| match f {
                Forwarder::Udp { assocs, .. } => assocs.len(),
                Forwarder::Tcp { .. } => 0,
            })
            .sum();
        let Some(Forwarder::Udp { sock, fwd, assocs }) = forwards.get_mut(&t) else {
            return;
        };
        while let Ok((n, from)) = sock.recv_from(scratch) {
            let handle = match assocs.get_mut(&from) {
                Some(a) => {
                    a.last_active = now;
                    a.handle
                }
                None if clients >= cfg.udp_flows => {
                    stats.udp_refused += 1;
                    continue;
                }
                None => {
                    let src = cfg
                        .addresses
                        .iter()
                        .find(|a| a.is_ipv4() == fwd.target.is_ipv4());
                    let (Some(src), Some(port)) = (src.map(|a| ip_of(a.addr())), alloc.port())
                    else {
                        continue;
                    };
                    let mut s = udp_socket();
                    let local = IpListenEndpoint {
                        addr: Some(src),
                        port,
                    };
                    if s.bind(local).is_err() {
                        alloc.release(port);
                        continue;
                    }
                    let handle = sockets.add(s);
                    let a = UdpAssoc {
                        handle,
                        port,
                        last_active: now,
                    };
                    assocs.insert(from, a);
                    clients += 1;
                    stats.udp_assocs += 1;
                    handle
                }
            };
            let s = sockets.get_mut::<udp::Socket>(handle);
            let _ = s.send_slice(&scratch[..n], endpoint(fwd.target));
        }
    }

    /// Mesh -> host: replies from a UDP forward's target go back to the
    /// client that sent to it.
    pub(super) fn pump_udp_forwards(&mut self, now: Instant) -> bool {
        let mut moved = false;
        for f in self.forwards.values_mut() {
            let Forwarder::Udp { sock, fwd, assocs } = f else {
                continue;
            };
            let target = endpoint(fwd.target);
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
        moved
    }

    /// Forgets UDP forward clients idle for `udp_idle`.
    pub(super) fn sweep_udp_forwards(&mut self, now: Instant) {
        let idle = self.cfg.udp_idle;
        for f in self.forwards.values_mut() {
            let Forwarder::Udp { assocs, .. } = f else {
                continue;
            };
            assocs.retain(|_, a| {
                let keep = now.duration_since(a.last_active) < idle;
                if !keep {
                    self.sockets.remove(a.handle);
                    self.alloc.release(a.port);
                }
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::TcpStream;
    use std::time::Duration;

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
