//! A small rtnetlink client: just what a node needs to configure its TUN
//! device (link up/down, MTU, addresses, routes, index by name).
//!
//! It talks to the kernel over a raw `NETLINK_ROUTE` socket with messages
//! built by hand, so the static binary needs no `ip` command and no extra
//! crate. Every request asks for an acknowledgement, and a failure comes back
//! as an [`Error`] that names what was being done and the kernel's errno (and,
//! where the kernel gives one, its extended-ack explanation).
//!
//! Message layouts follow `<linux/netlink.h>` and `<linux/rtnetlink.h>`; all
//! integers are in host byte order except addresses (network order).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::net::IpNet;

// <linux/netlink.h>
const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// In an NLMSG_ERROR: extended-ack attributes follow the capped header.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// In an NLMSG_ERROR: the original request was not echoed back.
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

// <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
#[cfg(test)]
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const IFLA_MTU: u16 = 4;
const IFLA_IFNAME: u16 = 3;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 1;

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
        let _ = set_int_option(&fd, libc::SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = set_int_option(&fd, libc::SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO takes a `struct timeval`; we pass a valid one and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
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
        let mut msg = Message::new(RTM_GETLINK, 0);
        msg.ifinfomsg(0, 0, 0);
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        msg.attr(IFLA_IFNAME, &name_z);
        msg.attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        let mut index = None;
        self.request(msg, &doing, |kind, payload| {
            // ifinfomsg: family u8, pad u8, type u16, index i32, ...
            if kind == RTM_NEWLINK && payload.len() >= 16 {
                index = Some(read_u32(payload, 4));
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
        let mut msg = Message::new(RTM_NEWLINK, 0);
        msg.ifinfomsg(index, flags, change);
        self.request(msg, &|| format!("{what} interface {index}"), |_, _| {})
    }

    /// Sets the MTU of interface `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut msg = Message::new(RTM_NEWLINK, 0);
        msg.ifinfomsg(index, 0, 0);
        msg.attr(IFLA_MTU, &mtu.to_ne_bytes());
        self.request(
            msg,
            &|| format!("setting MTU {mtu} on interface {index}"),
            |_, _| {},
        )
    }

    /// Adds `addr/prefix_len` to interface `index` (fails with EEXIST if it
    /// is already there). IPv6 addresses skip duplicate address detection,
    /// so they are usable at once.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let doing = || format!("adding address {addr}/{prefix_len} to interface {index}");
        let msg = address_message(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            index,
            addr,
            prefix_len,
        )
        .map_err(|e| Error::new(doing(), e))?;
        self.request(msg, &doing, |_, _| {})
    }

    /// Removes `addr/prefix_len` from interface `index`.
    #[cfg(test)]
    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let doing = || format!("removing address {addr}/{prefix_len} from interface {index}");
        let msg = address_message(RTM_DELADDR, 0, index, addr, prefix_len)
            .map_err(|e| Error::new(doing(), e))?;
        self.request(msg, &doing, |_, _| {})
    }

    /// Routes `dest/prefix_len` (main table) out of interface `index`. Host
    /// bits below the prefix are cleared, so 10.1.2.3/16 means 10.1.0.0/16.
    pub fn add_route(&mut self, index: u32, dest: IpAddr, prefix_len: u8) -> Result<()> {
        let doing = || format!("adding route {dest}/{prefix_len} via interface {index}");
        let msg = route_message(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_EXCL,
            index,
            dest,
            prefix_len,
        )
        .map_err(|e| Error::new(doing(), e))?;
        self.request(msg, &doing, |_, _| {})
    }

    /// Removes the route to `dest/prefix_len` out of interface `index`.
    pub fn del_route(&mut self, index: u32, dest: IpAddr, prefix_len: u8) -> Result<()> {
        let doing = || format!("removing route {dest}/{prefix_len} via interface {index}");
        let msg = route_message(RTM_DELROUTE, 0, index, dest, prefix_len)
            .map_err(|e| Error::new(doing(), e))?;
        self.request(msg, &doing, |_, _| {})
    }

    /// Sends one request and reads replies until the kernel acknowledges
    /// it. `on_reply` sees every other message answering this request.
    fn request(
        &mut self,
        mut msg: Message,
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
            let mut rest = &self.buf[..len];
            while rest.len() >= NLMSG_HDR_LEN {
                let msg_len = read_u32(rest, 0) as usize;
                if msg_len < NLMSG_HDR_LEN || msg_len > rest.len() {
                    let e = io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply");
                    return Err(Error::new(doing(), e));
                }
                let kind = read_u16(rest, 4);
                let flags = read_u16(rest, 6);
                let reply_seq = read_u32(rest, 8);
                let payload = &rest[NLMSG_HDR_LEN..msg_len];
                rest = &rest[align4(msg_len).min(rest.len())..];
                if reply_seq != seq {
                    continue; // a late answer to an earlier request
                }
                match kind {
                    NLMSG_ERROR => {
                        return parse_ack(flags, payload).map_err(|(e, detail)| Error {
                            detail,
                            ..Error::new(doing(), e)
                        })
                    }
                    NLMSG_DONE => return Ok(()),
                    _ => on_reply(kind, payload),
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

fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int that lives across the call, and
    // its size is passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads an NLMSG_ERROR payload: errno 0 is an acknowledgement.
fn parse_ack(flags: u16, payload: &[u8]) -> std::result::Result<(), (io::Error, Option<String>)> {
    if payload.len() < 4 {
        return Err((
            io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink error message",
            ),
            None,
        ));
    }
    let errno = -(read_u32(payload, 0) as i32);
    if errno == 0 {
        return Ok(());
    }
    // After the errno comes the header of our request (and its body too,
    // unless capped), then extended-ack attributes if flagged.
    let mut detail = None;
    if flags & NLM_F_ACK_TLVS != 0 && payload.len() >= 4 + NLMSG_HDR_LEN {
        let echoed = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDR_LEN
        } else {
            read_u32(payload, 4) as usize
        };
        if let Some(tlvs) = payload.get(4 + align4(echoed)..) {
            detail = attrs(tlvs)
                .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
                .map(|(_, v)| {
                    String::from_utf8_lossy(v.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
                })
                .filter(|s| !s.is_empty());
        }
    }
    Err((io::Error::from_raw_os_error(errno), detail))
}

/// Iterates over route attributes (type, payload), stopping at the first
/// malformed one.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = read_u16(data, 0) as usize;
        let kind = read_u16(data, 2) & 0x3fff; // strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((kind, value))
    })
}

fn address_message(
    kind: u16,
    extra_flags: u16,
    index: u32,
    addr: IpAddr,
    prefix_len: u8,
) -> io::Result<Message> {
    let addr = checked(addr, prefix_len)?.addr();
    let mut msg = Message::new(kind, extra_flags);
    let (family, bytes) = family_and_bytes(addr);
    // ifaddrmsg: family, prefixlen, flags, scope, index
    msg.push(&[family, prefix_len, 0, RT_SCOPE_UNIVERSE]);
    msg.push(&index.to_ne_bytes());
    msg.attr(IFA_LOCAL, &bytes);
    msg.attr(IFA_ADDRESS, &bytes);
    if addr.is_ipv6() {
        msg.attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    Ok(msg)
}

fn route_message(
    kind: u16,
    extra_flags: u16,
    index: u32,
    dest: IpAddr,
    prefix_len: u8,
) -> io::Result<Message> {
    let dest = checked(dest, prefix_len)?.network().addr();
    let mut msg = Message::new(kind, extra_flags);
    let (family, bytes) = family_and_bytes(dest);
    // A route straight out of a point-to-point device has link scope;
    // IPv6 routes carry no scope.
    let scope = if dest.is_ipv4() {
        RT_SCOPE_LINK
    } else {
        RT_SCOPE_UNIVERSE
    };
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags u32
    msg.push(&[
        family,
        prefix_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        scope,
        RTN_UNICAST,
    ]);
    msg.push(&0u32.to_ne_bytes());
    msg.attr(RTA_DST, &bytes);
    msg.attr(RTA_OIF, &index.to_ne_bytes());
    Ok(msg)
}

fn checked(addr: IpAddr, prefix_len: u8) -> io::Result<IpNet> {
    IpNet::new(addr, prefix_len).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "prefix length {prefix_len} is longer than {}",
                crate::net::addr_len(addr)
            ),
        )
    })
}

fn family_and_bytes(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

/// A request under construction: header first, length filled in at the end.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, extra_flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | extra_flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by finish()
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        Message { buf }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// ifinfomsg: family (unspec), pad, type, index, flags, change mask.
    fn ifinfomsg(&mut self, index: u32, flags: u32, change: u32) {
        self.push(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        self.push(&index.to_ne_bytes());
        self.push(&flags.to_ne_bytes());
        self.push(&change.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads a host-order u16 at `at`; callers check the length first.
fn read_u16(b: &[u8], at: usize) -> u16 {
    let mut raw = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        raw.copy_from_slice(s);
    }
    u16::from_ne_bytes(raw)
}

/// Reads a host-order u32 at `at`; callers check the length first.
fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        raw.copy_from_slice(s);
    }
    u32::from_ne_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_message_layout() {
        let mut msg = address_message(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            7,
            "10.0.0.1".parse().unwrap(),
            24,
        )
        .unwrap();
        let bytes = msg.finish(42).to_vec();
        assert_eq!(read_u32(&bytes, 0) as usize, bytes.len());
        assert_eq!(read_u16(&bytes, 4), RTM_NEWADDR);
        assert_eq!(
            read_u16(&bytes, 6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(read_u32(&bytes, 8), 42);
        assert_eq!(&bytes[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(read_u32(&bytes, 20), 7);
        let found: Vec<(u16, Vec<u8>)> =
            attrs(&bytes[24..]).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(
            found,
            vec![
                (IFA_LOCAL, vec![10, 0, 0, 1]),
                (IFA_ADDRESS, vec![10, 0, 0, 1])
            ]
        );
    }

    #[test]
    fn route_prefix_is_checked_and_masked() {
        assert!(route_message(RTM_NEWROUTE, 0, 1, "10.0.0.0".parse().unwrap(), 33).is_err());
        assert!(route_message(RTM_NEWROUTE, 0, 1, "fd00::".parse().unwrap(), 129).is_err());
        let dst = |addr: &str, len| {
            let mut msg = route_message(RTM_NEWROUTE, 0, 1, addr.parse().unwrap(), len).unwrap();
            let bytes = msg.finish(1).to_vec();
            // rtmsg (12 bytes) follows the header; RTA_DST is the first attribute.
            let (kind, value) = attrs(&bytes[28..]).next().unwrap();
            assert_eq!(kind, RTA_DST);
            assert_eq!(bytes[17], len, "dst_len");
            value.to_vec()
        };
        assert_eq!(dst("10.1.2.3", 16), [10, 1, 0, 0]);
        assert_eq!(dst("10.1.2.3", 0), [0, 0, 0, 0]);
        assert_eq!(dst("10.1.2.3", 32), [10, 1, 2, 3]);
        let v6: IpAddr = "fd00:1:2::".parse().unwrap();
        let IpAddr::V6(v6) = v6 else { unreachable!() };
        assert_eq!(dst("fd00:1:2:3::9", 48), v6.octets());
    }

    #[test]
    fn ack_and_error_parsing() {
        assert!(parse_ack(0, &0i32.to_ne_bytes()).is_ok());
        assert!(parse_ack(0, &[0, 0]).is_err());

        // EEXIST with a capped header and an extended-ack message.
        let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; NLMSG_HDR_LEN]);
        let text = b"Address already assigned\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        payload.resize(align4(payload.len()), 0);
        let (e, detail) = parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(detail.as_deref(), Some("Address already assigned"));

        // Garbage after the errno must not panic.
        for n in 0..payload.len() {
            let _ = parse_ack(NLM_F_ACK_TLVS, &payload[..n]);
            let _ = parse_ack(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload[..n]);
        }
    }

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
