//! The node's UDP underlay: one IPv4 and one IPv6 socket on the same port.
//!
//! The IPv6 socket is IPV6_V6ONLY, so the two can bind the same port and
//! every datagram arrives with a plain IPv4 or IPv6 peer address (never a
//! v4-mapped one). Both sockets are non-blocking mio sockets.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

/// How many ephemeral ports to try when asked for "any port" and the port
/// the kernel chose for IPv4 is taken for IPv6.
const EPHEMERAL_TRIES: usize = 16;

/// Socket buffer each way asked for (see [`super::sockopt::grow_buffers`]).
/// 4 MiB halved the receive-buffer drops of a CPU-bound node carrying 1,000
/// two-way transfers against 1 MiB (BENCHMARKS.md, "the TUN queue"); an
/// unprivileged node gets at most `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds a non-blocking IPv4 UDP socket.
pub fn bind_v4(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    super::sockopt::grow_buffers(&socket, SOCKET_BUFFER);
    Ok(UdpSocket::from_std(socket))
}

/// Binds a non-blocking IPv6-only UDP socket (IPV6_V6ONLY set before bind).
pub fn bind_v6(addr: SocketAddrV6) -> io::Result<UdpSocket> {
    // SAFETY: plain system call with constant arguments; checked below.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    super::sockopt::set_option(
        &fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        &1 as &libc::c_int,
    )?;

    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = addr.port().to_be();
    sa.sin6_flowinfo = addr.flowinfo().to_be();
    sa.sin6_addr.s6_addr = addr.ip().octets();
    sa.sin6_scope_id = addr.scope_id();
    // SAFETY: `sa` is a valid sockaddr_in6 and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    super::sockopt::grow_buffers(&fd, SOCKET_BUFFER);
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(fd)))
}

/// The node's listening sockets: IPv4 always, IPv6 when the kernel has it.
#[derive(Debug)]
pub struct UdpPair {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    port: u16,
}

impl UdpPair {
    /// Binds `0.0.0.0:port` and `[::]:port`. With port 0 the kernel picks a
    /// port that is free for both. A kernel without IPv6 gives an IPv4-only
    /// pair; any other IPv6 failure is an error.
    pub fn bind(port: u16) -> io::Result<UdpPair> {
        let tries = if port == 0 { EPHEMERAL_TRIES } else { 1 };
        let mut last_err = None;
        for _ in 0..tries {
            let v4 = bind_v4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
                .map_err(|e| with_context(e, format!("binding UDP 0.0.0.0:{port}")))?;
            let port = v4.local_addr()?.port();
            match bind_v6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)) {
                Ok(v6) => {
                    return Ok(UdpPair {
                        v4,
                        v6: Some(v6),
                        port,
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    return Ok(UdpPair { v4, v6: None, port });
                }
                Err(e) => last_err = Some(with_context(e, format!("binding UDP [::]:{port}"))),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no UDP port free for both IPv4 and IPv6")))
    }

    /// The port both sockets are bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn v4(&self) -> &UdpSocket {
        &self.v4
    }

    /// The IPv6 socket, absent when the kernel has no IPv6.
    pub fn v6(&self) -> Option<&UdpSocket> {
        self.v6.as_ref()
    }

    /// Turns UDP GRO on for both sockets where the kernel has it (Linux
    /// 5.0+); returns whether it is on for every socket. Only for a pair
    /// read with [`super::udp_batch::UdpRx`], which splits coalesced
    /// messages; [`recv_from`] would hand them over whole.
    pub fn enable_gro(&self) -> bool {
        let mut all = true;
        for socket in std::iter::once(&self.v4).chain(self.v6.as_ref()) {
            if let Err(e) = super::sockopt::set_udp_gro(socket, true) {
                crate::debug!("UDP GRO not available: {e}");
                all = false;
            }
        }
        all
    }

    /// Registers both sockets for reading with their own tokens, so the
    /// event loop knows which one to drain.
    pub fn register(
        &mut self,
        registry: &Registry,
        v4_token: Token,
        v6_token: Token,
    ) -> io::Result<()> {
        registry.register(&mut self.v4, v4_token, Interest::READABLE)?;
        if let Some(v6) = &mut self.v6 {
            registry.register(v6, v6_token, Interest::READABLE)?;
        }
        Ok(())
    }

    /// Sends one datagram to `to` from the socket of its family (a
    /// v4-mapped IPv6 address goes out over IPv4). `WouldBlock` means the
    /// socket buffer is full: WireGuard-style protocols just drop the packet.
    /// (The node sends through `udp_batch::UdpTx`; this one-call-per-datagram
    /// path is for tests and the I/O benchmark's baseline.)
    #[cfg(any(test, feature = "internals"))]
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match canonical(to) {
            to @ SocketAddr::V4(_) => self.v4.send_to(buf, to),
            to @ SocketAddr::V6(_) => match &self.v6 {
                Some(v6) => v6.send_to(buf, to),
                None => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot send to {to}: no IPv6 here"),
                )),
            },
        }
    }
}

/// Receives one datagram and its sender's address (v4-mapped IPv6
/// addresses are turned into IPv4 ones). `WouldBlock` means drained. Not
/// for a socket with GRO on (see [`UdpPair::enable_gro`]). (The node
/// receives through `udp_batch::UdpRx`; this is for tests and benchmarks.)
#[cfg(any(test, feature = "internals"))]
pub fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let (n, from) = socket.recv_from(buf)?;
    Ok((n, canonical(from)))
}

/// An address in the form peers are keyed by: IPv4 as IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

fn with_context(e: io::Error, doing: String) -> io::Error {
    io::Error::new(e.kind(), format!("{doing}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv_blocking(socket: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
        for _ in 0..200 {
            match recv_from(socket, buf) {
                Ok(got) => return got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("recv_from: {e}"),
            }
        }
        panic!("no datagram within a second");
    }

    fn has_ipv6_loopback() -> bool {
        std::net::UdpSocket::bind("[::1]:0").is_ok()
    }

    #[test]
    fn pair_shares_one_port_and_receives_both_families() {
        let pair = UdpPair::bind(0).unwrap();
        assert_ne!(pair.port(), 0);
        assert_eq!(pair.v4().local_addr().unwrap().port(), pair.port());
        let mut buf = [0u8; 64];

        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(b"over v4", ("127.0.0.1", pair.port()))
            .unwrap();
        let (n, from) = recv_blocking(pair.v4(), &mut buf);
        assert_eq!(&buf[..n], b"over v4");
        assert_eq!(from, client.local_addr().unwrap());

        // Replies go back through the right socket.
        pair.send_to(b"back", from).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");

        if !has_ipv6_loopback() {
            eprintln!("skipping the IPv6 half: this host has no ::1");
            return;
        }
        let v6 = pair.v6().expect("IPv6 socket");
        assert_eq!(v6.local_addr().unwrap().port(), pair.port());
        let client6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client6.send_to(b"over v6", ("::1", pair.port())).unwrap();
        let (n, from) = recv_blocking(v6, &mut buf);
        assert_eq!(&buf[..n], b"over v6");
        assert_eq!(from, client6.local_addr().unwrap());
    }

    #[test]
    fn v6_only_socket_ignores_ipv4() {
        if !has_ipv6_loopback() {
            eprintln!("skipping: this host has no ::1");
            return;
        }
        // Without IPV6_V6ONLY this bind would take the IPv4 port too.
        let v6 = bind_v6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)).unwrap();
        let port = v6.local_addr().unwrap().port();
        let v4 = bind_v4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        assert!(
            v4.is_ok(),
            "IPv4 bind on the IPv6 socket's port failed: {v4:?}"
        );
    }

    #[test]
    fn fixed_port_in_use_is_a_clear_error() {
        let first = UdpPair::bind(0).unwrap();
        let err = UdpPair::bind(first.port()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains(&format!(":{}", first.port())),
            "{err}"
        );
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:51820".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "192.0.2.7:51820".parse::<SocketAddr>().unwrap()
        );
        let plain: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        assert_eq!(canonical(plain), plain);
    }

    #[test]
    fn readable_events_arrive_through_mio() {
        let mut pair = UdpPair::bind(0).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        pair.register(poll.registry(), Token(4), Token(6)).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"x", ("127.0.0.1", pair.port())).unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(2)))
            .unwrap();
        assert!(events
            .iter()
            .any(|e| e.token() == Token(4) && e.is_readable()));
    }
}
