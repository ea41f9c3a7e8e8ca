//! A small rtnetlink client: just what a node needs to configure its TUN
//! device (link up/down, MTU, addresses, routes, index by name).
//!
//! It talks to the kernel over a raw `NETLINK_ROUTE` socket with messages
//! built by hand, so the static binary needs no `ip` command and no extra
//! crate. Every request asks for an acknowledgement, and a failure comes back
//! as an [`Error`] that names what was being done and the kernel's errno (and,
//! where the kernel gives one, its extended-ack explanation).
//!
//! The wire format lives in `codec` (pure: bytes in, bytes out); this
//! file owns the socket and the requests a node makes.
//!
//! # Why hand-written (measured, issue 13)
//!
//! The same client on `netlink-packet-route` 0.34 + `netlink-packet-core`
//! 0.9 + `netlink-sys` 0.9, used synchronously, was prototyped with this
//! API and measured against it (static release build,
//! `scripts/build-static.sh`, fat LTO): the binary grew from 2,858,560 to
//! 3,632,928 bytes (+774,368, +27 %), the dependency tree from 74 to 81
//! crates (those three plus `bytes`, `bitflags` 2, `zerocopy` and
//! `zerocopy-derive`: ~143,000 lines of source), and umbra's own code
//! shrank from 675 to 372 non-test lines, with 1 `unsafe` block
//! (SO_RCVTIMEO, which netlink-sys does not offer) instead of 10 — while
//! netlink-sys brings 22 of its own. The crates also drop the kernel's
//! extended-ack message (their error type keeps only the errno), so that
//! parsing stayed ours either way. Four request kinds do not pay for
//! three quarters of a megabyte: the codec stays here, small and tested.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use self::codec::{Op, IFF_UP, NLMSG_DONE, NLMSG_ERROR, RTM_NEWLINK};
use super::sockopt::set_option;
use crate::net::IpNet;

mod codec;

// <linux/netlink.h> socket options
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

/// How long to wait for the kernel's answer before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed netlink request: what was being done, and why it failed.
#[derive(Debug)]
pub struct Error {
    doing: String,
    source: io::Error,
    detail: Option<String>,
}

impl Error {
    fn new(doing: String, source: io::Error) -> Self {
        Error {
            doing,
            source,
            detail: None,
        }
    }

    /// The errno the kernel (or a system call) returned, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// What was being attempted, e.g. "adding address 10.0.0.1/24 to interface 7".
    pub fn doing(&self) -> &str {
        &self.doing
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netlink: {}: {}", self.doing, self.source)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A NETLINK_ROUTE socket. Requests are synchronous: each waits for the
/// kernel's acknowledgement.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace (it stays
    /// in that namespace for its whole life, whichever thread uses it).
    pub fn open() -> Result<Netlink> {
        let fail = |e| Error::new("opening a NETLINK_ROUTE socket".into(), e);
        // SAFETY: plain system call with constant arguments; the result is
        // checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: sockaddr_nl is plain old data; all-zero is valid (and
        // nl_pid 0 asks the kernel to assign our port id).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // Ask for error strings and for errors without our request echoed
        // back. Old kernels lack these; errors then just carry less detail.
        let _ = set_option(&fd, libc::SOL_NETLINK, NETLINK_EXT_ACK, &1 as &libc::c_int);
        let _ = set_option(&fd, libc::SOL_NETLINK, NETLINK_CAP_ACK, &1 as &libc::c_int);
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout).map_err(fail)?;
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0; 32 * 1024],
        })
    }

    /// The index of the interface called `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        let doing = || format!("looking up interface {name:?}");
        super::tun::encode_name(name).map_err(|e| Error::new(doing(), e))?;
        if name.is_empty() {
            return Err(Error::new(
                doing(),
                io::Error::new(io::ErrorKind::InvalidInput, "empty interface name"),
            ));
        }
        let mut index = None;
        self.request(codec::get_link(name), &doing, |kind, payload| {
            if let Some(i) = codec::link_index(payload).filter(|_| kind == RTM_NEWLINK) {
                index = Some(i);
            }
        })?;
        index.filter(|&i| i != 0).ok_or_else(|| {
            Error::new(
                doing(),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the kernel's reply carried no interface",
                ),
            )
        })
    }

    /// Brings interface `index` up.
    pub fn set_link_up(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, IFF_UP, IFF_UP, "bringing up")
    }

    /// Takes interface `index` down.
    #[cfg(test)]
    pub fn set_link_down(&mut self, index: u32) -> Result<()> {
        self.set_flags(index, 0, IFF_UP, "taking down")
    }

    fn set_flags(&mut self, index: u32, flags: u32, change: u32, what: &str) -> Result<()> {
        let msg = codec::set_link_flags(index, flags, change);
        self.request(msg, &|| format!("{what} interface {index}"), |_, _| {})
    }

    /// Sets the MTU of interface `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let msg = codec::set_link_mtu(index, mtu);
        self.request(
            msg,
            &|| format!("setting MTU {mtu} on interface {index}"),
            |_, _| {},
        )
    }

    /// Sets the transmit queue length of interface `index`: for a TUN
    /// device, how many packets the kernel holds for the reader before it
    /// drops (the queue is resized at once, packets already in it kept).
    pub fn set_tx_queue_len(&mut self, index: u32, packets: u32) -> Result<()> {
        let msg = codec::set_link_tx_queue_len(index, packets);
        self.request(
            msg,
            &|| format!("setting transmit queue length {packets} on interface {index}"),
            |_, _| {},
        )
    }

    /// Packets the kernel dropped on their way out of interface `index`
    /// (`tx_dropped`): for a TUN device, those it could not queue for the
    /// reader because the queue was full.
    pub fn link_tx_dropped(&mut self, index: u32) -> Result<u64> {
        let doing = || format!("reading the counters of interface {index}");
        let mut dropped = None;
        self.request(codec::get_link_stats(index), &doing, |kind, payload| {
            if kind == RTM_NEWLINK {
                dropped = dropped.or(codec::link_tx_dropped(payload));
            }
        })?;
        dropped.ok_or_else(|| {
            Error::new(
                doing(),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the kernel's reply carried no counters",
                ),
            )
        })
    }

    /// Adds `addr` (an address with its prefix length) to interface
    /// `index`; fails with EEXIST if it is already there. IPv6 addresses
    /// skip duplicate address detection, so they are usable at once.
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let doing = || format!("adding address {addr} to interface {index}");
        self.request(codec::address(Op::Add, index, addr), &doing, |_, _| {})
    }

    /// Removes `addr` from interface `index`.
    #[cfg(test)]
    pub fn del_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let doing = || format!("removing address {addr} from interface {index}");
        self.request(codec::address(Op::Del, index, addr), &doing, |_, _| {})
    }

    /// Routes `dest` (main table) out of interface `index`. Host bits
    /// below the prefix are cleared, so 10.1.2.3/16 means 10.1.0.0/16.
    pub fn add_route(&mut self, index: u32, dest: IpNet) -> Result<()> {
        let doing = || format!("adding route {} via interface {index}", dest.network());
        self.request(codec::route(Op::Add, index, dest), &doing, |_, _| {})
    }

    /// Removes the route to `dest` out of interface `index`.
    pub fn del_route(&mut self, index: u32, dest: IpNet) -> Result<()> {
        let doing = || format!("removing route {} via interface {index}", dest.network());
        self.request(codec::route(Op::Del, index, dest), &doing, |_, _| {})
    }

    /// Sends one request and reads replies until the kernel acknowledges
    /// it. `on_reply` sees every other message answering this request.
    fn request(
        &mut self,
        mut msg: codec::Message,
        doing: &dyn Fn() -> String,
        mut on_reply: impl FnMut(u16, &[u8]),
    ) -> Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        self.send(bytes).map_err(|e| Error::new(doing(), e))?;
        loop {
            let len = match self.recv() {
                Ok(len) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "no answer from the kernel");
                    return Err(Error::new(doing(), e));
                }
                Err(e) => return Err(Error::new(doing(), e)),
            };
            let mut rest = self.buf.get(..len).unwrap_or_default();
            while let Some(reply) = codec::next_reply(&mut rest) {
                let reply = reply.map_err(|e| Error::new(doing(), e))?;
                if reply.seq != seq {
                    continue; // a late answer to an earlier request
                }
                match reply.kind {
                    NLMSG_ERROR => {
                        return codec::parse_ack(reply.flags, reply.payload).map_err(
                            |(e, detail)| Error {
                                detail,
                                ..Error::new(doing(), e)
                            },
                        )
                    }
                    NLMSG_DONE => return Ok(()),
                    kind => on_reply(kind, reply.payload),
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; all-zero (port 0) addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `bytes` is a live slice of the given length and `kernel`
        // a valid sockaddr_nl of the given size; the fd is open.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
                &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "netlink request only partly sent",
            ));
        }
        Ok(())
    }

    /// Receives one datagram from the kernel into `self.buf`, skipping any
    /// that another process sent to our port.
    fn recv(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: sockaddr_nl is plain old data; all-zero is valid.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `self.buf` is a live, writable buffer of the given
            // length; `from`/`from_len` describe a writable sockaddr_nl.
            // MSG_TRUNC makes the call return the datagram's full length.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    &mut from as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if from.nl_pid != 0 {
                continue; // not from the kernel
            }
            if n > self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "netlink reply larger than the buffer",
                ));
            }
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_what_was_being_done() {
        let e = Error {
            detail: Some("Nexthop device is not up".into()),
            ..Error::new(
                "adding route 10.9.0.0/16 via interface 3".into(),
                io::Error::from_raw_os_error(libc::ENETDOWN),
            )
        };
        let shown = e.to_string();
        assert!(
            shown.contains("adding route 10.9.0.0/16 via interface 3"),
            "{shown}"
        );
        assert!(shown.contains("Nexthop device is not up"), "{shown}");
        assert_eq!(e.errno(), Some(libc::ENETDOWN));
    }
}
