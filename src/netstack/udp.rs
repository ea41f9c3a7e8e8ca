//! Inbound UDP flows (expose and gateway): one smoltcp UDP socket bound to
//! each (address, port) we terminate, and per remote endpoint one host
//! socket connected to the target, whose replies go back through the bound
//! socket to that remote. Both are forgotten after `udp_idle`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Interest, Token};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::stack::{register_host, udp_socket, Userspace};

/// (our address, port) of a bound socket.
type BindKey = (IpAddress, u16);

/// A smoltcp UDP socket bound to (address, port) for inbound flows.
struct UdpBind {
    handle: SocketHandle,
    target: SocketAddr,
    flows: HashMap<IpEndpoint, Token>,
}

/// The host socket of one inbound flow, connected to the target.
struct UdpFlow {
    sock: UdpSocket,
    bind: BindKey,
    remote: IpEndpoint,
    last_active: Instant,
}

/// Every inbound UDP flow.
#[derive(Default)]
pub(super) struct UdpInbound {
    binds: HashMap<BindKey, UdpBind>,
    flows: HashMap<Token, UdpFlow>,
    /// Flows per remote address.
    per_peer: HashMap<IpAddress, usize>,
}

impl UdpInbound {
    pub(super) fn is_bound(&self, key: &BindKey) -> bool {
        self.binds.contains_key(key)
    }

    /// Binds a smoltcp socket to `key` for flows to `target`.
    pub(super) fn bind(
        &mut self,
        sockets: &mut SocketSet<'static>,
        key: BindKey,
        target: SocketAddr,
    ) {
        let mut s = udp_socket();
        let ep = IpListenEndpoint {
            addr: Some(key.0),
            port: key.1,
        };
        if s.bind(ep).is_err() {
            return;
        }
        let handle = sockets.add(s);
        self.binds.insert(
            key,
            UdpBind {
                handle,
                target,
                flows: HashMap::new(),
            },
        );
    }

    /// Host sockets open for inbound flows.
    #[cfg(test)]
    pub(super) fn flows(&self) -> usize {
        self.flows.len()
    }

    pub(super) fn register_all(&mut self, r: &mio::Registry) -> std::io::Result<()> {
        for (t, f) in self.flows.iter_mut() {
            r.register(&mut f.sock, *t, Interest::READABLE)?;
        }
        Ok(())
    }
}

/// An unbound host socket of `target`'s family, connected to it.
fn connected_to(target: SocketAddr) -> Option<UdpSocket> {
    let any: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(any).ok()?;
    sock.connect(target).ok()?;
    Some(sock)
}

impl Userspace {
    /// Mesh -> host: datagrams the bound sockets received go out through
    /// their flow's host socket (opened on a remote's first datagram).
    pub(super) fn pump_udp_inbound(&mut self, now: Instant) -> bool {
        let Userspace {
            cfg,
            udp,
            sockets,
            alloc,
            registry,
            stats,
            ..
        } = self;
        let mut moved = false;
        for (key, b) in udp.binds.iter_mut() {
            let s = sockets.get_mut::<udp::Socket>(b.handle);
            while let Ok((data, meta)) = s.recv() {
                moved = true;
                if let Some(f) = b
                    .flows
                    .get(&meta.endpoint)
                    .and_then(|t| udp.flows.get_mut(t))
                {
                    let _ = f.sock.send(data);
                    f.last_active = now;
                    continue;
                }
                // Bounded: each flow holds a host descriptor, and remotes
                // choose their source ports freely.
                let of_peer = udp.per_peer.get(&meta.endpoint.addr).copied();
                if udp.flows.len() >= cfg.udp_flows
                    || of_peer.unwrap_or(0) >= cfg.udp_flows_per_peer
                {
                    stats.udp_refused += 1;
                    continue;
                }
                let Some(mut sock) = connected_to(b.target) else {
                    continue;
                };
                let t = alloc.token();
                if register_host(registry, &mut sock, t, Interest::READABLE).is_err() {
                    continue;
                }
                let _ = sock.send(data);
                b.flows.insert(meta.endpoint, t);
                *udp.per_peer.entry(meta.endpoint.addr).or_insert(0) += 1;
                udp.flows.insert(
                    t,
                    UdpFlow {
                        sock,
                        bind: *key,
                        remote: meta.endpoint,
                        last_active: now,
                    },
                );
                stats.udp_assocs += 1;
            }
        }
        moved
    }

    /// Host -> mesh for a flow's host socket; `false` if `t` is not one.
    pub(super) fn udp_flow_readable(&mut self, t: Token, now: Instant) -> bool {
        let Some(f) = self.udp.flows.get_mut(&t) else {
            return false;
        };
        let Some(b) = self.udp.binds.get(&f.bind) else {
            return true;
        };
        let s = self.sockets.get_mut::<udp::Socket>(b.handle);
        while let Ok(n) = f.sock.recv(&mut self.scratch) {
            f.last_active = now;
            let meta = udp::UdpMetadata {
                endpoint: f.remote,
                local_address: Some(f.bind.0),
                meta: Default::default(),
            };
            let _ = s.send_slice(&self.scratch[..n], meta);
        }
        true
    }

    /// Forgets flows idle for `udp_idle`, and binds left without flows.
    pub(super) fn sweep_udp_inbound(&mut self, now: Instant) {
        let idle = self.cfg.udp_idle;
        let dead: Vec<Token> = self
            .udp
            .flows
            .iter()
            .filter(|(_, f)| now.duration_since(f.last_active) >= idle)
            .map(|(t, _)| *t)
            .collect();
        for t in dead {
            let Some(mut f) = self.udp.flows.remove(&t) else {
                continue;
            };
            if let Some(r) = &self.registry {
                let _ = r.deregister(&mut f.sock);
            }
            if let Some(n) = self.udp.per_peer.get_mut(&f.remote.addr) {
                *n -= 1;
                if *n == 0 {
                    self.udp.per_peer.remove(&f.remote.addr);
                }
            }
            if let Some(b) = self.udp.binds.get_mut(&f.bind) {
                b.flows.remove(&f.remote);
                if b.flows.is_empty() {
                    let h = b.handle;
                    self.udp.binds.remove(&f.bind);
                    self.sockets.remove(h);
                }
            }
        }
    }
}
