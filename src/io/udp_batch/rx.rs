//! Receiving: one `recvmmsg` fills a batch, UDP GRO messages are split
//! into their datagrams, and the caller takes them one at a time.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use super::{read_addr, Control, CONTROL_LEN};
use crate::io::udp::canonical;

/// Messages one `recvmmsg` call asks for.
pub const RX_BATCH: usize = 32;

/// Bytes per message: with GRO one message holds up to 64 datagrams of
/// one sender, at most a full UDP payload. The buffer is allocated zeroed
/// (pages the kernel never writes stay unmapped), so without GRO only the
/// first page of each slot is ever touched.
const SLOT: usize = 1 << 16;

/// What the receiver has seen since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxStats {
    /// Datagrams handed to the caller.
    pub datagrams: u64,
    /// `recvmmsg` calls that returned data.
    pub calls: u64,
    /// Messages that carried more than one datagram (UDP GRO).
    pub coalesced: u64,
    /// Messages dropped because the kernel cut them short (`MSG_TRUNC`)
    /// or gave a sender that is neither IPv4 nor IPv6.
    pub dropped: u64,
}

#[derive(Clone, Copy)]
struct Msg {
    /// Index of the buffer slot the message is in.
    slot: usize,
    /// Bytes received (at most [`SLOT`]).
    len: usize,
    /// Size of each datagram in it; the last may be shorter. Never 0.
    segment: usize,
    from: SocketAddr,
}

const NO_MSG: Msg = Msg {
    slot: 0,
    len: 0,
    segment: 1,
    from: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
};

/// A batch receiver for the event loop: owns [`RX_BATCH`] message buffers
/// and hands out one datagram at a time, in arrival order.
///
/// One receiver may serve both sockets of a pair: datagrams left in its
/// batch are handed out before it reads from the socket passed next, and
/// each carries its own sender address.
pub struct UdpRx {
    buf: Vec<u8>,
    msgs: [Msg; RX_BATCH],
    count: usize,
    index: usize,
    offset: usize,
    stats: RxStats,
}

impl Default for UdpRx {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpRx {
    pub fn new() -> UdpRx {
        UdpRx {
            buf: vec![0u8; RX_BATCH * SLOT],
            msgs: [NO_MSG; RX_BATCH],
            count: 0,
            index: 0,
            offset: 0,
            stats: RxStats::default(),
        }
    }

    pub fn stats(&self) -> RxStats {
        self.stats
    }

    /// The next datagram and its (canonical) sender, reading a new batch
    /// with one `recvmmsg` when the current one is used up. `Ok(None)`
    /// once the socket has nothing more (it would block). The datagram is
    /// mutable so the caller can decrypt it in place; it stays valid until
    /// the next call.
    pub fn next(&mut self, socket: &impl AsRawFd) -> io::Result<Option<(SocketAddr, &mut [u8])>> {
        while self.index >= self.count {
            if !self.fill(socket)? {
                return Ok(None);
            }
        }
        let m = self.msgs[self.index];
        let take = (m.len - self.offset).min(m.segment);
        let start = m.slot * SLOT + self.offset;
        self.offset += take;
        if self.offset >= m.len {
            self.index += 1;
            self.offset = 0;
        }
        self.stats.datagrams += 1;
        // In bounds: slot < RX_BATCH and offset + take <= len <= SLOT.
        Ok(Some((m.from, &mut self.buf[start..start + take])))
    }

    /// Reads one batch. `Ok(false)` when the socket has nothing.
    fn fill(&mut self, socket: &impl AsRawFd) -> io::Result<bool> {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs
        // (integers and pointers) for which all-zero is a valid value.
        let mut names: [libc::sockaddr_storage; RX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; RX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; RX_BATCH] = unsafe { std::mem::zeroed() };
        let mut controls = [Control::ZERO; RX_BATCH];
        for (i, chunk) in self.buf.chunks_exact_mut(SLOT).enumerate().take(RX_BATCH) {
            iovs[i] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = controls[i].0.as_mut_ptr().cast();
            h.msg_controllen = CONTROL_LEN as _;
        }
        let n = loop {
            // SAFETY: every header points at live buffers of the sizes
            // given (a SLOT-long chunk of `self.buf`, a sockaddr_storage,
            // a CONTROL_LEN control buffer), all outliving the call; the
            // kernel writes at most RX_BATCH headers.
            let r = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    RX_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break (r as usize).min(RX_BATCH);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(false),
                _ => return Err(e),
            }
        };
        if n == 0 {
            return Ok(false);
        }
        self.stats.calls += 1;
        self.count = 0;
        self.index = 0;
        self.offset = 0;
        for (slot, hdr) in hdrs.iter_mut().enumerate().take(n) {
            let h = &mut hdr.msg_hdr;
            let from = read_addr(&names[slot], h.msg_namelen);
            let (Some(from), false) = (from, h.msg_flags & libc::MSG_TRUNC != 0) else {
                self.stats.dropped += 1;
                continue;
            };
            let len = (hdr.msg_len as usize).min(SLOT);
            let segment = match gro_segment(h) {
                Some(s) if s < len => {
                    self.stats.coalesced += 1;
                    s
                }
                _ => len.max(1),
            };
            self.msgs[self.count] = Msg {
                slot,
                len,
                segment,
                from: canonical(from),
            };
            self.count += 1;
        }
        Ok(true)
    }
}

/// The segment size of a UDP GRO message, from its control messages.
// Lengths are size_t with glibc but socklen_t with musl: the casts are
// not the same on every target.
#[allow(clippy::unnecessary_cast)]
fn gro_segment(h: &mut libc::msghdr) -> Option<usize> {
    // The kernel sets msg_controllen to what it wrote; never trust it
    // beyond the buffer it was given.
    let controllen = (h.msg_controllen as usize).min(CONTROL_LEN);
    h.msg_controllen = controllen as _;
    let base = h.msg_control as usize;
    let want = CONTROL_LEN.min(cmsg_len(size_of::<libc::c_int>()));
    // SAFETY: `h` describes a control buffer of `controllen` valid bytes;
    // CMSG_FIRSTHDR returns null when it cannot hold a header.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
    // A bounded walk: CONTROL_LEN holds at most a few headers.
    for _ in 0..CONTROL_LEN / size_of::<libc::cmsghdr>() {
        if c.is_null() {
            return None;
        }
        // SAFETY: `c` is non-null and points inside the control buffer
        // with room for a header (CMSG_FIRSTHDR/CMSG_NXTHDR check this).
        let hdr = unsafe { std::ptr::read_unaligned(c) };
        let end = (c as usize - base).saturating_add(hdr.cmsg_len as usize);
        if hdr.cmsg_level == libc::SOL_UDP
            && hdr.cmsg_type == libc::UDP_GRO
            && hdr.cmsg_len as usize >= want
            && end <= controllen
        {
            // SAFETY: the header says its data holds a c_int, and the
            // whole message lies inside the control buffer (checked).
            let v = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) };
            return usize::try_from(v).ok().filter(|&s| s > 0);
        }
        // SAFETY: `h` and `c` are as above; CMSG_NXTHDR returns null
        // when the next header would not fit in `controllen` bytes.
        c = unsafe { libc::CMSG_NXTHDR(h, c) };
    }
    None
}

/// `CMSG_LEN(len)`: header plus `len` data bytes.
pub(super) fn cmsg_len(len: usize) -> usize {
    // SAFETY: CMSG_LEN is arithmetic on its argument only.
    unsafe { libc::CMSG_LEN(len as libc::c_uint) as usize }
}
