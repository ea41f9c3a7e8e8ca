//! Batched I/O on the node's UDP underlay sockets: `recvmmsg` with UDP GRO
//! ([`UdpRx`]) and `sendmmsg` with UDP GSO ([`UdpTx`]).
//!
//! One system call moves up to a batch of datagrams, and with the offloads
//! one message carries up to 64 datagrams of one size between one pair of
//! addresses: the kernel splits (GSO) or joins (GRO) them below the socket,
//! and across a veth or loopback they travel as one packet. Buffers are
//! allocated once, when the receiver or the send queue is made; nothing is
//! allocated per datagram.
//!
//! Both work on the IPv4 and the IPv6 (V6ONLY) socket of a
//! [`super::udp::UdpPair`]; addresses come out canonical
//! ([`super::udp::canonical`]), as from [`super::udp::recv_from`].

mod rx;
mod tx;

#[cfg(test)]
mod tests;

pub use rx::UdpRx;
#[cfg(any(test, feature = "internals"))]
pub use rx::{RxStats, RX_BATCH};
pub use tx::UdpTx;
#[cfg(any(test, feature = "internals"))]
pub use tx::{TxStats, GSO_MAX_SEGMENTS};

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Room for the control messages of one datagram: the single `c_int` of
/// `UDP_GRO` on receive, the `u16` of `UDP_SEGMENT` on send, with slack
/// for one more the kernel might add (flagged `MSG_CTRUNC` if it does not
/// fit; the datagram itself is unaffected).
const CONTROL_LEN: usize = 64;

/// A control-message buffer aligned for `cmsghdr` (a `size_t` first field).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

impl Control {
    const ZERO: Control = Control([0; CONTROL_LEN]);
}

/// A socket address in the C layout the kernel takes, either family.
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    /// The C form of `addr` and its length.
    fn new(addr: SocketAddr) -> (RawAddr, libc::socklen_t) {
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                (
                    RawAddr { v4: sin },
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                (
                    RawAddr { v6: sin6 },
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }
}

/// Reads the sender address the kernel wrote into `ss` (`len` bytes of
/// it); `None` for a family other than IPv4/IPv6 or a short length.
fn read_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, the
            // kernel wrote at least its size, and sockaddr_storage is
            // larger than and at least as aligned as sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod addr_tests {
    use super::*;

    #[test]
    fn raw_addresses_round_trip() {
        for s in ["192.0.2.7:51820", "[2001:db8::1]:443", "[fe80::1%3]:9"] {
            let addr: SocketAddr = s.parse().unwrap();
            let (raw, len) = RawAddr::new(addr);
            // SAFETY: (test) sockaddr_storage is plain old data; all-zero
            // is a valid value.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            // SAFETY: (test) copies `len` bytes of a RawAddr, which is no
            // larger than sockaddr_storage, into it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&raw as *const RawAddr).cast::<u8>(),
                    (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                    len as usize,
                )
            };
            assert_eq!(read_addr(&ss, len), Some(addr), "{s}");
            assert_eq!(read_addr(&ss, len - 1), None, "short {s}");
        }
    }
}
