//! The TCP proxy state machine: copies bytes between a host socket and a
//! mesh (smoltcp) socket with no buffer of its own — host reads go straight
//! into the mesh socket's send buffer and mesh data straight into host
//! writes — so the two bounded socket buffers are all the memory a
//! connection holds, and a full buffer on either side stops reading on the
//! other (backpressure both ways). Half-close (FIN / `shutdown(SHUT_WR)`)
//! and resets propagate. Sans-IO: both sides are traits, faked in tests.

use std::io;

/// The host (kernel socket) side of a proxied connection.
pub trait HostSide {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Sends FIN (`shutdown(SHUT_WR)`).
    fn shutdown_write(&mut self);
    /// Drops the connection with a RST.
    fn reset(&mut self);
}

/// The mesh side's connection state, as the pipe needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshState {
    /// Handshake not finished.
    Opening,
    /// Data may flow (in one or both directions).
    Open,
    /// Closed after a FIN exchange (or lingering in TIME-WAIT).
    Finished,
    /// Closed without a FIN from the other side: reset, refused or timed out.
    Broken,
}

/// The mesh (userspace TCP) side of a proxied connection.
pub trait MeshSide {
    fn state(&self) -> MeshState;
    /// Whether we may still queue data (our FIN not yet sent).
    fn may_send(&self) -> bool;
    /// Whether the other side may still send (its FIN not yet received), or
    /// received data is still queued.
    fn may_recv(&self) -> bool;
    /// Offers the free part of the send buffer to `fill`, which returns how
    /// many bytes it wrote; `Ok(0)` when the buffer is full.
    fn send_with(
        &mut self,
        fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize>;
    /// Offers queued received data to `drain`, which returns how many
    /// bytes it consumed; `Ok(0)` when nothing is queued.
    fn recv_with(&mut self, drain: &mut dyn FnMut(&[u8]) -> io::Result<usize>)
        -> io::Result<usize>;
    /// Queues our FIN after the data already queued.
    fn close(&mut self);
    /// Sends a RST and forgets the connection.
    fn abort(&mut self);
}

/// What [`Pipe::pump`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still running; `moved` tells whether any byte or FIN moved.
    Running { moved: bool },
    /// Both directions finished cleanly; the connection can be freed.
    Done,
    /// One side reset; the other has been reset too. Free it.
    Reset,
}

/// One proxied TCP connection's state. The caller sets `host_readable` /
/// `host_writable` on readiness events (edge-triggered: they stay set until
/// an operation reports `WouldBlock`).
#[derive(Debug, Clone, Default)]
pub struct Pipe {
    pub host_readable: bool,
    pub host_writable: bool,
    /// The host sent FIN; our FIN to the mesh is queued.
    host_eof: bool,
    /// The mesh sent FIN; the host got `shutdown(SHUT_WR)`.
    mesh_eof: bool,
    /// Bytes copied host -> mesh and mesh -> host.
    pub up: u64,
    pub down: u64,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Pipe {
    pub fn new() -> Pipe {
        Pipe::default()
    }

    /// Whether both directions have ended cleanly (FINs both ways).
    pub fn half_closed_both(&self) -> bool {
        self.host_eof && self.mesh_eof
    }

    /// Moves what can be moved now. Never blocks; call again after any
    /// readiness event or mesh activity.
    pub fn pump(&mut self, host: &mut dyn HostSide, mesh: &mut dyn MeshSide) -> Status {
        match mesh.state() {
            MeshState::Opening => return Status::Running { moved: false },
            MeshState::Broken => {
                host.reset();
                return Status::Reset;
            }
            MeshState::Open | MeshState::Finished => {}
        }
        let mut moved = false;
        // Mesh -> host first: frees mesh receive window early.
        while self.host_writable {
            let r = mesh.recv_with(&mut |data| host.write(data));
            match r {
                Ok(0) => break,
                Ok(n) => {
                    self.down += n as u64;
                    moved = true;
                }
                Err(e) if would_block(&e) => self.host_writable = false,
                Err(_) => {
                    mesh.abort();
                    host.reset();
                    return Status::Reset;
                }
            }
        }
        if !self.mesh_eof && !mesh.may_recv() {
            // Everything the mesh sent has been written: pass its FIN on.
            host.shutdown_write();
            self.mesh_eof = true;
            moved = true;
        }
        // Host -> mesh.
        while self.host_readable && !self.host_eof && mesh.may_send() {
            let mut eof = false;
            let r = mesh.send_with(&mut |room| {
                if room.is_empty() {
                    // Not end of stream: just no room.
                    return Ok(0);
                }
                match host.read(room) {
                    Ok(0) => {
                        eof = true;
                        Ok(0)
                    }
                    other => other,
                }
            });
            match r {
                Ok(0) if eof => {
                    self.host_eof = true;
                    mesh.close();
                    moved = true;
                }
                // Send buffer full: leave host data in the kernel.
                Ok(0) => break,
                Ok(n) => {
                    self.up += n as u64;
                    moved = true;
                }
                Err(e) if would_block(&e) => self.host_readable = false,
                Err(_) => {
                    mesh.abort();
                    host.reset();
                    return Status::Reset;
                }
            }
        }
        if !self.host_eof && !mesh.may_send() && mesh.state() == MeshState::Finished {
            // Mesh side is fully closed yet host never sent FIN: nothing
            // more can be delivered.
            host.reset();
            return Status::Reset;
        }
        if self.host_eof && self.mesh_eof && mesh.state() == MeshState::Finished {
            return Status::Done;
        }
        Status::Running { moved }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A host socket: `incoming` is what the host application sends (None =
    /// FIN), `written` what it received; `room` bounds its receive buffer.
    #[derive(Default)]
    struct FakeHost {
        incoming: VecDeque<Option<Vec<u8>>>,
        written: Vec<u8>,
        room: usize,
        shut: bool,
        reset: bool,
        read_error: bool,
    }
    impl HostSide for FakeHost {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.read_error {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            match self.incoming.front_mut() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(None) => Ok(0),
                Some(Some(v)) => {
                    let n = v.len().min(buf.len());
                    buf[..n].copy_from_slice(&v[..n]);
                    v.drain(..n);
                    if v.is_empty() {
                        self.incoming.pop_front();
                    }
                    Ok(n)
                }
            }
        }
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn shutdown_write(&mut self) {
            self.shut = true;
        }
        fn reset(&mut self) {
            self.reset = true;
        }
    }

    /// A mesh socket with bounded buffers.
    struct FakeMesh {
        state: MeshState,
        tx: Vec<u8>,
        tx_cap: usize,
        rx: Vec<u8>,
        peer_fin: bool,
        closed: bool,
        aborted: bool,
    }
    impl FakeMesh {
        fn open(tx_cap: usize) -> FakeMesh {
            FakeMesh {
                state: MeshState::Open,
                tx: vec![],
                tx_cap,
                rx: vec![],
                peer_fin: false,
                closed: false,
                aborted: false,
            }
        }
    }
    impl MeshSide for FakeMesh {
        fn state(&self) -> MeshState {
            self.state
        }
        fn may_send(&self) -> bool {
            !self.closed && self.state == MeshState::Open
        }
        fn may_recv(&self) -> bool {
            !self.peer_fin || !self.rx.is_empty()
        }
        fn send_with(
            &mut self,
            fill: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
        ) -> io::Result<usize> {
            let mut room = vec![0u8; self.tx_cap - self.tx.len()];
            let n = fill(&mut room)?;
            self.tx.extend_from_slice(&room[..n]);
            Ok(n)
        }
        fn recv_with(
            &mut self,
            drain: &mut dyn FnMut(&[u8]) -> io::Result<usize>,
        ) -> io::Result<usize> {
            if self.rx.is_empty() {
                return Ok(0);
            }
            let n = drain(&self.rx)?;
            self.rx.drain(..n);
            Ok(n)
        }
        fn close(&mut self) {
            self.closed = true;
        }
        fn abort(&mut self) {
            self.aborted = true;
        }
    }

    fn ready() -> Pipe {
        let mut p = Pipe::new();
        p.host_readable = true;
        p.host_writable = true;
        p
    }

    #[test]
    fn waits_for_handshake() {
        let mut p = ready();
        let mut h = FakeHost::default();
        h.incoming.push_back(Some(b"hi".to_vec()));
        let mut m = FakeMesh::open(10);
        m.state = MeshState::Opening;
        assert_eq!(p.pump(&mut h, &mut m), Status::Running { moved: false });
        assert!(m.tx.is_empty());
    }

    #[test]
    fn backpressure_host_to_mesh() {
        let mut p = ready();
        let mut h = FakeHost::default();
        h.incoming.push_back(Some(vec![7u8; 100]));
        let mut m = FakeMesh::open(30);
        assert_eq!(p.pump(&mut h, &mut m), Status::Running { moved: true });
        // Only what fits was taken; the rest stays with the host.
        assert_eq!(m.tx.len(), 30);
        assert_eq!(h.incoming.front().unwrap().as_ref().unwrap().len(), 70);
        assert!(p.host_readable, "still readable: retried when room frees");
        m.tx.clear();
        p.pump(&mut h, &mut m);
        assert_eq!(p.up, 60);
    }

    #[test]
    fn backpressure_mesh_to_host() {
        let mut p = ready();
        let mut h = FakeHost {
            room: 5,
            ..FakeHost::default()
        };
        let mut m = FakeMesh::open(10);
        m.rx = b"0123456789".to_vec();
        p.pump(&mut h, &mut m);
        assert_eq!(h.written, b"01234");
        assert!(!p.host_writable);
        assert_eq!(
            m.rx, b"56789",
            "unread data stays in the mesh buffer (window closes)"
        );
        h.room = 100;
        p.host_writable = true;
        p.pump(&mut h, &mut m);
        assert_eq!(h.written, b"0123456789");
    }

    #[test]
    fn half_close_both_ways_then_done() {
        let mut p = ready();
        let mut h = FakeHost {
            room: 100,
            ..FakeHost::default()
        };
        h.incoming.push_back(Some(b"req".to_vec()));
        h.incoming.push_back(None);
        let mut m = FakeMesh::open(100);
        p.pump(&mut h, &mut m);
        assert_eq!(m.tx, b"req");
        assert!(m.closed, "host FIN became mesh FIN after the data");
        assert!(!h.shut, "the mesh direction is still open");
        // The mesh side answers and closes.
        m.rx = b"resp".to_vec();
        m.peer_fin = true;
        assert_eq!(p.pump(&mut h, &mut m), Status::Running { moved: true });
        assert_eq!(h.written, b"resp");
        assert!(h.shut);
        m.state = MeshState::Finished;
        assert_eq!(p.pump(&mut h, &mut m), Status::Done);
        assert!(!h.reset && !m.aborted);
    }

    #[test]
    fn mesh_fin_waits_for_queued_data() {
        let mut p = ready();
        let mut h = FakeHost::default();
        let mut m = FakeMesh::open(100);
        m.rx = b"tail".to_vec();
        m.peer_fin = true;
        p.pump(&mut h, &mut m);
        assert!(!h.shut, "no FIN before the data is written");
        h.room = 10;
        p.host_writable = true;
        p.pump(&mut h, &mut m);
        assert_eq!(h.written, b"tail");
        assert!(h.shut);
    }

    #[test]
    fn resets_propagate() {
        // Mesh reset -> host reset.
        let mut p = ready();
        let mut h = FakeHost::default();
        let mut m = FakeMesh::open(10);
        m.state = MeshState::Broken;
        assert_eq!(p.pump(&mut h, &mut m), Status::Reset);
        assert!(h.reset);
        // Host reset -> mesh abort.
        let mut p = ready();
        let mut h = FakeHost {
            read_error: true,
            ..FakeHost::default()
        };
        let mut m = FakeMesh::open(10);
        assert_eq!(p.pump(&mut h, &mut m), Status::Reset);
        assert!(m.aborted);
    }
}
