//! Socket options std does not expose.

use std::io;
use std::os::fd::AsRawFd;

/// Sets `SO_LINGER` to zero, so closing the socket sends a RST instead of
/// a FIN: how a reset from the other side of a proxy is passed on.
pub fn set_linger_zero(sock: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(sock, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

/// Sets one socket option whose value is a plain C value (`c_int`,
/// `linger`, `timeval`, ...).
pub(super) fn set_option<T: Copy>(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `sock` is an open socket for the duration of the call, and
    // the option value points to a live `T` of the size passed; callers
    // pass the C type the option takes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a listening socket's accept-queue length (`listen(2)` again, which
/// Linux allows on a socket already listening; the kernel caps it at
/// `net.core.somaxconn`). Listeners bound by std or mio get 128.
pub fn set_listen_backlog(sock: &impl AsRawFd, backlog: usize) -> io::Result<()> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: `sock` is an open socket for the duration of the call.
    let rc = unsafe { libc::listen(sock.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_int(sock: &impl AsRawFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_option(sock, libc::SOL_SOCKET, name, &value)
}

/// Asks for `bytes` of socket receive and send buffer: beyond
/// `net.core.rmem_max` / `wmem_max` when privileged (`SO_*BUFFORCE`),
/// else up to those limits. Best effort: what the kernel grants is what
/// the socket gets.
///
/// A node's UDP socket takes the bursts of every tunnelled connection at
/// once; the default (~200 KiB, ~90 full-size datagrams) overflows while
/// the event loop is busy, and each drop costs a TCP retransmission.
pub fn grow_buffers(sock: &impl AsRawFd, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(sock, force, v).is_err() {
            let _ = set_int(sock, plain, v);
        }
    }
}

/// Puts a descriptor (standard output for `--flow-log -`) in non-blocking
/// mode, so a reader that stops reading cannot stall the event loop.
pub fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number only reads or sets its flags;
    // an invalid descriptor is reported as EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_udp_int(sock: &impl AsRawFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_option(sock, libc::SOL_UDP, name, &value)
}

/// Turns UDP generic receive offload on or off (`UDP_GRO`, Linux 5.0+):
/// with it on, the kernel may hand over several datagrams from one sender
/// as one message plus a `UDP_GRO` control message giving the segment
/// size. Only for sockets read with [`super::udp_batch::UdpRx`], which
/// splits them again; a plain `recv_from` would see the coalesced bytes.
pub fn set_udp_gro(sock: &impl AsRawFd, on: bool) -> io::Result<()> {
    set_udp_int(sock, libc::UDP_GRO, libc::c_int::from(on))
}

/// Whether the kernel knows UDP generic segmentation offload
/// (`UDP_SEGMENT`, Linux 4.18+) on this socket. A kernel without it would
/// silently ignore the control message and send one oversized datagram,
/// so the option is probed before any segmented send.
pub fn udp_segment_supported(sock: &impl AsRawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `sock` is an open socket for the duration of the call; the
    // kernel writes at most `len` bytes into the live c_int `value` and
    // updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}
