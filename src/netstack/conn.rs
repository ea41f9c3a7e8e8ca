//! The TCP connection pump: every proxied connection is a host socket, a
//! smoltcp socket and a [`Pipe`] between them. This file wraps both sockets
//! for the pipe, pumps every connection after each stack poll, applies the
//! idle timeouts and frees finished connections.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Token;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;

use super::pipe::{HostSide, MeshSide, MeshState, Pipe, Status};
use super::stack::Userspace;
use crate::debug;

/// A connection closed in both directions is freed after this long even if
/// the mesh side never reaches a final state.
const HALF_CLOSED_LINGER: Duration = Duration::from_secs(30);

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
pub(super) struct TcpConn {
    pub(super) stream: TcpStream,
    pub(super) handle: SocketHandle,
    pub(super) pipe: Pipe,
    fin_seen: bool,
    /// Host-side connect (expose, gateway) not finished yet.
    connecting: bool,
    last_active: Instant,
    /// Ephemeral port to release (forward).
    port: Option<u16>,
    /// The SYN that created it (expose, gateway), to forget on release.
    syn: Option<(IpEndpoint, IpEndpoint)>,
}

impl TcpConn {
    /// A forward: the host side is an accepted, connected socket (ready
    /// both ways); the mesh side is connecting from `port`.
    pub(super) fn forward(
        stream: TcpStream,
        handle: SocketHandle,
        port: u16,
        now: Instant,
    ) -> TcpConn {
        let mut pipe = Pipe::new();
        pipe.host_readable = true;
        pipe.host_writable = true;
        TcpConn {
            stream,
            handle,
            pipe,
            fin_seen: false,
            connecting: false,
            last_active: now,
            port: Some(port),
            syn: None,
        }
    }

    /// An inbound connection (expose, gateway): the mesh side is
    /// established, the host side still connecting.
    pub(super) fn inbound(
        stream: TcpStream,
        handle: SocketHandle,
        syn: Option<(IpEndpoint, IpEndpoint)>,
        now: Instant,
    ) -> TcpConn {
        TcpConn {
            stream,
            handle,
            pipe: Pipe::new(),
            fin_seen: false,
            connecting: true,
            last_active: now,
            port: None,
            syn,
        }
    }
}

impl Userspace {
    /// A readiness event for a proxied connection's host socket; `false`
    /// if `t` is not one.
    pub(super) fn conn_ready(&mut self, t: Token, event: &mio::event::Event) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            c.pipe.host_readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            c.pipe.host_writable = true;
        }
        true
    }

    /// Pumps every proxied TCP connection; frees finished ones. Returns
    /// whether any byte or FIN moved.
    pub(super) fn pump_conns(&mut self, now: Instant) -> bool {
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
            match c.pipe.pump(&mut Host(&mut c.stream), &mut mesh) {
                Status::Running { moved: true } => {
                    c.last_active = now;
                    moved_any = true;
                }
                Status::Running { moved: false } => {
                    let idle = now.duration_since(c.last_active);
                    if idle > self.cfg.tcp_idle
                        || (c.pipe.half_closed_both() && idle > HALF_CLOSED_LINGER)
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
            self.free_conn(t, s);
        }
        moved_any
    }

    fn free_conn(&mut self, t: Token, s: Status) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        match s {
            Status::Done => self.stats.tcp_done += 1,
            _ => self.stats.tcp_reset += 1,
        }
        if let Some(r) = &self.registry {
            let _ = r.deregister(&mut c.stream);
        }
        // An aborted socket still has its RST to send: free it after the
        // next interface poll.
        self.reap.push(c.handle);
        if let Some(p) = c.port {
            self.alloc.release(p);
        }
        if let Some(syn) = c.syn {
            self.accepts.forget_syn(&syn);
        }
    }
}
