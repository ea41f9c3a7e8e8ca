//! A Linux TUN device: the kernel hands umbra the IP packets routed to the
//! interface, and takes back the packets umbra writes.
//!
//! The device is created with `IFF_TUN | IFF_NO_PI` (bare IP packets, no
//! 4-byte packet-information header) and is *not* persistent: it disappears
//! when the [`Tun`] is dropped, so a crashed or stopped node leaves nothing
//! behind. The file descriptor is non-blocking and can be registered with a
//! mio `Poll`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// Longest interface name Linux accepts (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

const CLONE_DEVICE: &str = "/dev/net/tun";

/// An open TUN device. Reads and writes move one whole IP packet each.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates a TUN device called `name` (or lets the kernel pick a name
    /// when `name` is empty; a `%d` in the name is replaced by a number).
    /// Needs CAP_NET_ADMIN. The device starts down and without addresses:
    /// configure it with [`super::netlink`].
    pub fn create(name: &str) -> io::Result<Tun> {
        let ifr_name = encode_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(CLONE_DEVICE)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open {CLONE_DEVICE} (is the tun module available, and are we root?): {e}"),
                )
            })?;

        // SAFETY: `ifreq` is plain old data (a byte array and a union of
        // integers, socket addresses and a raw pointer); all-zero is a valid
        // value for each of them.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = ifr_name;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;

        // SAFETY: TUNSETIFF reads and writes one `struct ifreq` through the
        // pointer; `ifr` is a live, properly aligned ifreq owned by this
        // frame, and `file` keeps the descriptor open for the call.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut ifr as *mut libc::ifreq,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create TUN device {name:?}: {e}"),
            ));
        }
        // The kernel wrote the device's real name back (it matters when the
        // caller asked for a pattern or for no name).
        let name = decode_name(&ifr.ifr_name);
        Ok(Tun { file, name })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet into `buf` and returns its length. The buffer
    /// should hold at least the MTU: the kernel truncates longer packets.
    /// Returns `WouldBlock` when no packet is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one IP packet (v4 or v6, told apart by its version nibble)
    /// for the kernel to deliver. Returns `WouldBlock` when the device
    /// queue is full.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl mio::event::Source for Tun {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.file.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.file.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.file.as_raw_fd()).deregister(registry)
    }
}

/// Checks an interface name and lays it out as the kernel wants it.
pub(crate) fn encode_name(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}: {why}"),
        )
    };
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 15 bytes"));
    }
    if name
        .bytes()
        .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(invalid("contains NUL, '/' or whitespace"));
    }
    if name == "." || name == ".." {
        return Err(invalid("reserved"));
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (slot, b) in out.iter_mut().zip(name.bytes()) {
        *slot = b as libc::c_char;
    }
    Ok(out)
}

fn decode_name(raw: &[libc::c_char; libc::IFNAMSIZ]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(encode_name("umbra0").is_ok());
        assert!(encode_name("").is_ok());
        assert!(encode_name("umbra%d").is_ok());
        assert!(encode_name("123456789012345").is_ok());
        for bad in ["1234567890123456", "a/b", "a b", "a\0b", ".", ".."] {
            let err = encode_name(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("bad interface name"));
        }
        let raw = encode_name("tun7").unwrap();
        assert_eq!(decode_name(&raw), "tun7");
    }
}
