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
//! packets go, behind [`crate::io::PacketIo`].
//!
//! Files, one concern each: `stack` (the interface and the `PacketIo`
//! face), `device` (packet queues), `observe` (inbound SYNs and first
//! datagrams, shared by expose and gateway), `forward` (`--forward`
//! listeners), `conn` + `pipe` (the TCP connection pump), `udp` (inbound
//! UDP flows), `ports` (token and port allocation), `options` (flag
//! syntax).

mod conn;
pub mod device;
mod forward;
mod observe;
pub mod options;
pub mod pipe;
mod ports;
mod stack;
mod udp;

#[cfg(test)]
mod limits_test;
#[cfg(test)]
mod load_test;
#[cfg(test)]
mod smoltcp_test;

use std::net::IpAddr;
use std::time::Duration;

use smoltcp::wire::IpAddress;

use crate::info;
use crate::net::IpNet;
use options::{Expose, Forward};

#[cfg(test)]
use stack::tcp_socket;
pub use stack::Userspace;

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
    /// Concurrent proxied TCP connections (plus pending accepts). One
    /// remote address may hold at most half of them (inbound), so one
    /// peer cannot take every slot.
    pub max_connections: usize,
    /// Host UDP sockets for inbound UDP flows (one per remote endpoint):
    /// in total, and per remote address. `udp_flows` also bounds the
    /// clients (source addresses) of all UDP `--forward`s together.
    pub udp_flows: usize,
    pub udp_flows_per_peer: usize,
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
            udp_flows: 1024,
            udp_flows_per_peer: 256,
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
    /// Inbound SYNs refused: at --max-connections, or the peer at its share.
    pub tcp_refused: u64,
    /// Inbound UDP flows not opened: at the total or per-peer bound.
    pub udp_refused: u64,
    pub udp_assocs: u64,
}

fn ip_of(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => IpAddress::Ipv4(v),
        IpAddr::V6(v) => IpAddress::Ipv6(v),
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
