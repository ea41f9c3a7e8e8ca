//! Sending: datagrams are copied into a preallocated queue per address
//! family and sent with `sendmmsg`, runs of equal-size datagrams to one
//! destination as one UDP GSO message.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use super::rx::cmsg_len;
use super::{Control, RawAddr, CONTROL_LEN};
use crate::io::sockopt;
use crate::io::udp::{canonical, UdpPair};

/// Most datagrams in one GSO message (the kernel's `UDP_MAX_SEGMENTS`).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// Datagrams a queue holds before it sends itself.
const QUEUE_DATAGRAMS: usize = 128;
/// Bytes a queue holds before it sends itself (128 full-size WireGuard
/// packets fit).
const QUEUE_BYTES: usize = 256 * 1024;
/// Messages per `sendmmsg` call.
const MAX_MSGS: usize = 64;
/// Largest UDP payload of one message (IP length field minus headers).
const MAX_PAYLOAD_V4: usize = 65_535 - 20 - 8;
const MAX_PAYLOAD_V6: usize = 65_535 - 8;

/// What the send queue has done since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxStats {
    /// Datagrams the kernel accepted.
    pub datagrams: u64,
    /// Messages they went in (fewer than datagrams with GSO).
    pub messages: u64,
    /// `sendmmsg` calls.
    pub calls: u64,
    /// Datagrams dropped because the socket buffer was full (`EAGAIN`,
    /// `ENOBUFS`), as a router drops.
    pub dropped_full: u64,
    /// Datagrams the kernel refused for another reason (no route, no
    /// IPv6 socket, ...).
    pub errors: u64,
    /// Sockets on which the kernel refused GSO, which is now off there.
    pub gso_refused: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    len: usize,
    to: SocketAddr,
}

/// The queue of one socket (one address family).
struct Queue {
    buf: Vec<u8>,
    used: usize,
    entries: Vec<Entry>,
    gso: bool,
    max_payload: usize,
}

impl Queue {
    fn new(gso: bool, max_payload: usize) -> Queue {
        Queue {
            buf: vec![0u8; QUEUE_BYTES],
            used: 0,
            entries: Vec::with_capacity(QUEUE_DATAGRAMS),
            gso,
            max_payload,
        }
    }

    fn has_room(&self, len: usize) -> bool {
        self.entries.len() < QUEUE_DATAGRAMS && self.used + len <= self.buf.len()
    }
}

/// A send queue for the event loop: [`UdpTx::queue`] copies a datagram in,
/// [`UdpTx::flush`] sends everything queued (call it before waiting for
/// events again). A full queue sends itself.
pub struct UdpTx {
    v4: Queue,
    v6: Queue,
    stats: TxStats,
}

impl UdpTx {
    /// A queue for `udp`'s sockets. With `gso`, runs of equal-size
    /// datagrams to one destination go out as one message wherever the
    /// kernel supports `UDP_SEGMENT`; without, one message per datagram
    /// (same datagrams on the wire).
    pub fn new(udp: &UdpPair, gso: bool) -> UdpTx {
        let v6_gso = gso && udp.v6().is_some_and(sockopt::udp_segment_supported);
        UdpTx {
            v4: Queue::new(
                gso && sockopt::udp_segment_supported(udp.v4()),
                MAX_PAYLOAD_V4,
            ),
            v6: Queue::new(v6_gso, MAX_PAYLOAD_V6),
            stats: TxStats::default(),
        }
    }

    pub fn stats(&self) -> TxStats {
        self.stats
    }

    /// Whether segmentation offload is in use for IPv4 and IPv6.
    pub fn gso(&self) -> (bool, bool) {
        (self.v4.gso, self.v6.gso)
    }

    /// Datagrams queued and not yet sent.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.v4.entries.len() + self.v6.entries.len()
    }

    /// Queues one datagram to `to` (a v4-mapped address goes out over
    /// IPv4), sending the queue first if it is full.
    pub fn queue(&mut self, udp: &UdpPair, bytes: &[u8], to: SocketAddr) {
        let to = canonical(to);
        let (q, socket) = match to {
            SocketAddr::V4(_) => (&mut self.v4, Some(udp.v4())),
            SocketAddr::V6(_) => (&mut self.v6, udp.v6()),
        };
        let Some(socket) = socket else {
            self.stats.errors += 1;
            crate::debug!("udp send to {to} failed: no IPv6 socket here");
            return;
        };
        if !q.has_room(bytes.len()) {
            send_queue(q, socket, &mut self.stats);
        }
        let Some(room) = q.buf.get_mut(q.used..q.used + bytes.len()) else {
            // Larger than the whole queue: no UDP datagram is.
            self.stats.errors += 1;
            return;
        };
        room.copy_from_slice(bytes);
        q.entries.push(Entry {
            start: q.used,
            len: bytes.len(),
            to,
        });
        q.used += bytes.len();
    }

    /// Sends everything queued. Datagrams the kernel cannot take now (full
    /// socket buffer) are dropped and counted, never retried in a loop.
    pub fn flush(&mut self, udp: &UdpPair) {
        if !self.v4.entries.is_empty() {
            send_queue(&mut self.v4, udp.v4(), &mut self.stats);
        }
        if !self.v6.entries.is_empty() {
            match udp.v6() {
                Some(v6) => send_queue(&mut self.v6, v6, &mut self.stats),
                None => {
                    self.stats.errors += self.v6.entries.len() as u64;
                    self.v6.entries.clear();
                    self.v6.used = 0;
                }
            }
        }
    }
}

/// How many datagrams from the start of `entries` one GSO message can
/// carry: same destination, same size (the last may be shorter), at most
/// [`GSO_MAX_SEGMENTS`] and `max_payload` bytes. At least 1.
fn run_len(entries: &[Entry], max_payload: usize) -> usize {
    let Some(first) = entries.first() else {
        return 0;
    };
    if first.len == 0 {
        return 1;
    }
    let mut n = 1;
    let mut total = first.len;
    for e in &entries[1..] {
        if n == GSO_MAX_SEGMENTS
            || e.to != first.to
            || e.len == 0
            || e.len > first.len
            || total + e.len > max_payload
        {
            break;
        }
        n += 1;
        total += e.len;
        if e.len < first.len {
            break;
        }
    }
    n
}

/// Whether a failed segmented send means the kernel will not do GSO on
/// this socket: no checksum offload on the device (`EIO`), a segment
/// larger than the path MTU or checksums off (`EINVAL`), no support.
fn refuses_gso(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

fn send_queue(q: &mut Queue, socket: &impl AsRawFd, stats: &mut TxStats) {
    let total = q.entries.len();
    let mut next = 0;
    while next < total {
        // SAFETY: mmsghdr and iovec are plain C structs (integers and
        // pointers) for which all-zero is a valid value.
        let mut hdrs: [libc::mmsghdr; MAX_MSGS] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; MAX_MSGS] = unsafe { std::mem::zeroed() };
        let mut names = [RawAddr::new(q.entries[next].to).0; MAX_MSGS];
        let mut controls = [Control::ZERO; MAX_MSGS];
        // (first entry, datagrams) of each message.
        let mut spans = [(0usize, 0usize); MAX_MSGS];
        let mut m = 0;
        let mut e = next;
        while m < MAX_MSGS && e < total {
            let n = if q.gso {
                run_len(&q.entries[e..], q.max_payload)
            } else {
                1
            };
            let first = q.entries[e];
            let last = q.entries[e + n - 1];
            // Entries are laid out back to back in queue order, so a run
            // is one contiguous range of the buffer.
            let bytes = &q.buf[first.start..last.start + last.len];
            iovs[m] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            let (raw, raw_len) = RawAddr::new(first.to);
            names[m] = raw;
            let h = &mut hdrs[m].msg_hdr;
            h.msg_name = (&mut names[m] as *mut RawAddr).cast();
            h.msg_namelen = raw_len;
            h.msg_iov = &mut iovs[m];
            h.msg_iovlen = 1;
            if n > 1 {
                set_segment(h, &mut controls[m], first.len as u16);
            }
            spans[m] = (e, n);
            e += n;
            m += 1;
        }
        // SAFETY: the first `m` headers point at live buffers that outlive
        // the call: a range of `q.buf` (read only by the kernel), a RawAddr
        // of the length given, and for GSO messages a control buffer
        // holding one complete UDP_SEGMENT message.
        let r =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), m as libc::c_uint, 0) };
        stats.calls += 1;
        if r > 0 {
            let r = (r as usize).min(m);
            let (first, n) = spans[r - 1];
            let sent = first + n - next;
            stats.datagrams += sent as u64;
            stats.messages += r as u64;
            next += sent;
            continue;
        }
        let err = io::Error::last_os_error();
        let (first, n) = spans[0];
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN | libc::ENOBUFS) => {
                stats.dropped_full += (total - next) as u64;
                break;
            }
            _ if n > 1 && refuses_gso(&err) => {
                // Sent again below, one datagram per message.
                q.gso = false;
                stats.gso_refused += 1;
                crate::debug!(
                    "UDP segmentation offload refused ({err}); sending datagrams one by one on this socket"
                );
            }
            _ => {
                stats.errors += n as u64;
                crate::debug!("udp send to {} failed: {err}", q.entries[first].to);
                next += n;
            }
        }
    }
    q.entries.clear();
    q.used = 0;
}

/// Adds a `UDP_SEGMENT` control message of `segment` bytes to `h`.
fn set_segment(h: &mut libc::msghdr, control: &mut Control, segment: u16) {
    let space = CONTROL_LEN.min(cmsg_space(size_of::<u16>()));
    h.msg_control = control.0.as_mut_ptr().cast();
    h.msg_controllen = space as _;
    // SAFETY: `h` now describes `control`, aligned for cmsghdr and at
    // least CMSG_SPACE(2) bytes long, so CMSG_FIRSTHDR is non-null and the
    // header plus its two data bytes fit inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = cmsg_len(size_of::<u16>()) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
    }
}

/// `CMSG_SPACE(len)`: header plus `len` data bytes plus padding.
fn cmsg_space(len: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument only.
    unsafe { libc::CMSG_SPACE(len as libc::c_uint) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(spec: &[(usize, &str)]) -> Vec<Entry> {
        let mut start = 0;
        spec.iter()
            .map(|&(len, to)| {
                let e = Entry {
                    start,
                    len,
                    to: to.parse().unwrap(),
                };
                start += len;
                e
            })
            .collect()
    }

    const A: &str = "192.0.2.1:1";
    const B: &str = "192.0.2.2:1";

    #[test]
    fn runs_break_where_gso_must() {
        // Equal sizes to one peer, then a shorter last one ends the run.
        let e = entries(&[(100, A), (100, A), (60, A), (100, A)]);
        assert_eq!(run_len(&e, MAX_PAYLOAD_V4), 3);
        // A larger datagram cannot follow.
        let e = entries(&[(100, A), (101, A)]);
        assert_eq!(run_len(&e, MAX_PAYLOAD_V4), 1);
        // Another destination ends it.
        let e = entries(&[(100, A), (100, A), (100, B)]);
        assert_eq!(run_len(&e, MAX_PAYLOAD_V4), 2);
        // Empty datagrams are never segments.
        let e = entries(&[(0, A), (0, A)]);
        assert_eq!(run_len(&e, MAX_PAYLOAD_V4), 1);
        let e = entries(&[(10, A), (0, A)]);
        assert_eq!(run_len(&e, MAX_PAYLOAD_V4), 1);
        // At most 64 segments and one full payload.
        let e = entries(&[(10, A); 100]);
        assert_eq!(run_len(&e, MAX_PAYLOAD_V4), GSO_MAX_SEGMENTS);
        let e = entries(&[(1452, A); 64]);
        assert_eq!(run_len(&e, MAX_PAYLOAD_V4), MAX_PAYLOAD_V4 / 1452);
        assert_eq!(run_len(&[], MAX_PAYLOAD_V4), 0);
    }
}
