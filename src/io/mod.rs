//! The OS edge: the only place umbra touches the kernel (TUN device,
//! rtnetlink, UDP sockets). Everything here is Linux-specific, and every
//! `unsafe` block in the crate lives here with a `SAFETY:` comment.
//!
//! The protocol and policy cores never import this module; the node daemon
//! wires them to these devices through its mio event loop.

pub mod confine;
pub mod files;
pub mod landlock;
pub mod netlink;
pub mod seccomp;
pub mod signals;
pub mod sockopt;
pub mod tun;
pub mod tun_offload;
pub mod udp;
pub mod udp_batch;

// Tests against the real kernel (root, network namespaces) and of the
// confinement (in a child process): inside the crate, because the OS edge
// is not library surface.
#[cfg(test)]
mod confine_test;
#[cfg(test)]
mod netns_test;

use std::io;
use std::time::Instant;

use crate::wire::classify::PacketInfo;

/// The effective user id (to pick per-user default paths).
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Where decrypted packets leave the node and local packets enter it: the
/// kernel TUN device, or a userspace TCP/IP stack. The event loop treats
/// both alike.
pub trait PacketIo {
    /// Registers for readiness with the event loop.
    fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()>;
    /// Reads one outgoing packet; `WouldBlock` when there is none.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Hands one decrypted packet to the local side at `now`. `info` is
    /// the engine's classification of it, when it has one, so the
    /// backend need not parse the packet again.
    fn send(&mut self, now: Instant, packet: &[u8], info: Option<&PacketInfo>) -> io::Result<()>;
    /// Writes whatever [`PacketIo::send`] still holds. A backend that
    /// coalesces (the TUN device with offloads) may hold sent packets until
    /// this is called: call it after every batch of sends, before waiting
    /// for events again. Backends that write at once need nothing here.
    fn flush(&mut self, _now: Instant) -> io::Result<()> {
        Ok(())
    }
    /// Lets an in-process stack do its own work (timers, socket proxying);
    /// returns when it next needs to be polled. A kernel device needs none.
    fn poll(&mut self, _now: Instant) -> Option<Instant> {
        None
    }
    /// A readiness event for a token this backend registered itself
    /// (anything other than the one given to [`PacketIo::register`]).
    fn ready(&mut self, _now: Instant, _event: &mio::event::Event) {}
    /// A name for logs.
    fn label(&self) -> String;
    /// Offloads this backend uses (`tun-tso`, `tun-uso`), for status.
    fn offloads(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Appends this backend's packet I/O counters, by name, for status and
    /// metrics.
    fn io_counters(&self, _out: &mut Vec<(&'static str, u64)>) {}
}

impl PacketIo for tun::Tun {
    fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        registry.register(self, token, mio::Interest::READABLE)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tun::Tun::recv(self, buf)
    }
    fn send(&mut self, _now: Instant, packet: &[u8], _: Option<&PacketInfo>) -> io::Result<()> {
        tun::Tun::queue(self, packet)
    }
    fn flush(&mut self, _now: Instant) -> io::Result<()> {
        tun::Tun::flush(self)
    }
    fn label(&self) -> String {
        format!("interface {}", self.name())
    }
    fn offloads(&self) -> Vec<&'static str> {
        let o = tun::Tun::offloads(self);
        let mut v = Vec::new();
        if o.tso {
            v.push("tun-tso");
        }
        if o.uso {
            v.push("tun-uso");
        }
        v
    }
    fn io_counters(&self, out: &mut Vec<(&'static str, u64)>) {
        if !tun::Tun::offloads(self).tso {
            return; // one read and one write per packet: nothing to count
        }
        let s = self.offload_stats();
        out.extend([
            ("tun_rx_packets", s.segments),
            ("tun_rx_super_packets", s.super_packets),
            ("tun_rx_dropped", s.dropped),
            ("tun_tx_writes", s.writes),
            ("tun_tx_coalesced_writes", s.coalesced_writes),
            ("tun_tx_coalesced_segments", s.coalesced_segments),
        ]);
    }
}
