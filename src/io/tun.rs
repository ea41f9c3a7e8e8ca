//! A Linux TUN device: the kernel hands umbra the IP packets routed to the
//! interface, and takes back the packets umbra writes.
//!
//! The device is created with `IFF_TUN | IFF_NO_PI` (bare IP packets, no
//! 4-byte packet-information header) and is *not* persistent: it disappears
//! when the [`Tun`] is dropped, so a crashed or stopped node leaves nothing
//! behind. The file descriptor is non-blocking and can be registered with a
//! mio `Poll`.
//!
//! [`Tun::create_offload`] also asks for offloads: `IFF_VNET_HDR` (every
//! read and write starts with a 10-byte `virtio_net_hdr`, see
//! [`crate::wire::offload`]) and `TUNSETOFFLOAD` with checksum offload,
//! TSO for IPv4 and IPv6 and, where the kernel has it (Linux 6.2+), USO.
//! The kernel then hands over TCP super-packets of up to 64 KiB, which
//! [`Tun::recv`] cuts into MTU-sized packets one call at a time, and
//! [`Tun::queue`] coalesces in-order TCP segments into one write
//! ([`super::tun_offload`]). What the kernel refuses is logged and left
//! out: without USO, without TSO (plain `IFF_TUN`, as [`Tun::create`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::tun_offload::{OffloadStats, VnetIo};
use crate::wire::offload::VNET_HDR_LEN;

/// Longest interface name Linux accepts (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

const CLONE_DEVICE: &str = "/dev/net/tun";

/// Which offloads a device got from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Reads and writes carry a `virtio_net_hdr`; checksum offload and
    /// TCP segmentation offload (IPv4 and IPv6) are on.
    pub tso: bool,
    /// UDP segmentation offload is on too.
    pub uso: bool,
}

/// An open TUN device. [`Tun::recv`] returns one IP packet per call and
/// [`Tun::send`] writes one; with offloads ([`Tun::create_offload`]) the
/// device exchanges super-packets with the kernel behind those calls.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    offloads: Offloads,
    /// Segmentation and coalescing state, with offloads.
    vnet: Option<Box<VnetIo>>,
}

impl Tun {
    /// Creates a TUN device called `name` (or lets the kernel pick a name
    /// when `name` is empty; a `%d` in the name is replaced by a number).
    /// Needs CAP_NET_ADMIN. The device starts down and without addresses:
    /// configure it with [`super::netlink`].
    pub fn create(name: &str) -> io::Result<Tun> {
        let (file, name) = open(name, libc::IFF_TUN | libc::IFF_NO_PI)?;
        Ok(Tun {
            file,
            name,
            offloads: Offloads::default(),
            vnet: None,
        })
    }

    /// Like [`Tun::create`], with TSO/checksum offload (and USO where the
    /// kernel has it); falls back to a plain device when the kernel
    /// refuses, and logs which it got. With offloads, packets passed to
    /// [`Tun::queue`] may be held until [`Tun::flush`].
    pub fn create_offload(name: &str) -> io::Result<Tun> {
        let flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        let (file, real) = match open(name, flags) {
            Ok(v) => v,
            Err(e) => {
                crate::warn!("TUN {name:?}: no virtio-net header ({e}); offloads off");
                return Tun::create(name);
            }
        };
        let offloads = match enable_offloads(&file) {
            Ok(o) => o,
            Err(e) => {
                crate::warn!("TUN {real}: kernel refused TSO/checksum offload ({e}); offloads off");
                // Dropping the non-persistent device removes it; start over
                // plain under the name it had.
                drop(file);
                return Tun::create(&real);
            }
        };
        crate::info!(
            "TUN {real}: offloads on (virtio-net header, checksum, TSO4/6{})",
            if offloads.uso {
                ", USO4/6"
            } else {
                "; no USO: kernel older than 6.2"
            }
        );
        Ok(Tun {
            file,
            name: real,
            offloads,
            vnet: Some(Box::default()),
        })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The offloads in force.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Segmentation and coalescing counters (all zero without offloads).
    pub fn offload_stats(&self) -> OffloadStats {
        self.vnet
            .as_ref()
            .map_or_else(OffloadStats::default, |v| v.stats)
    }

    /// Reads one IP packet into `buf` and returns its length. The buffer
    /// should hold at least the MTU: the kernel truncates longer packets,
    /// and with offloads a segment that does not fit is dropped (counted).
    /// With offloads, one `read` fetches a super-packet and the calls after
    /// it return its segments. Returns `WouldBlock` when no packet is
    /// waiting.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.vnet {
            Some(v) => v.recv(&self.file, buf),
            None => (&self.file).read(buf),
        }
    }

    /// Writes one IP packet (v4 or v6, told apart by its version nibble)
    /// for the kernel to deliver, now (behind whatever [`Tun::queue`]
    /// holds: that is flushed first). Returns `WouldBlock` when the device
    /// queue is full. (The node writes through [`Tun::queue`]; for tests.)
    #[cfg(test)]
    pub fn send(&mut self, packet: &[u8]) -> io::Result<usize> {
        match &mut self.vnet {
            Some(v) => {
                v.flush(&self.file)?;
                let hdr = [0u8; VNET_HDR_LEN];
                let n = writev(&self.file, &hdr, packet)?;
                Ok(n.saturating_sub(VNET_HDR_LEN))
            }
            None => (&self.file).write(packet),
        }
    }

    /// Hands one packet to the kernel, coalescing in-order TCP segments of
    /// a flow into one super-packet when offloads are on: the packet may be
    /// held until a later call or [`Tun::flush`]. Without offloads it is
    /// written at once.
    pub fn queue(&mut self, packet: &[u8]) -> io::Result<()> {
        match &mut self.vnet {
            Some(v) => v.queue(&self.file, packet),
            None => (&self.file).write(packet).map(|_| ()),
        }
    }

    /// Writes whatever [`Tun::queue`] holds.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.vnet {
            Some(v) => v.flush(&self.file),
            None => Ok(()),
        }
    }
}

/// Opens the clone device and creates the interface with `flags`.
fn open(name: &str, flags: libc::c_int) -> io::Result<(File, String)> {
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
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;

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
    Ok((file, name))
}

/// Sets the virtio header size and asks for offloads, with USO first.
fn enable_offloads(file: &File) -> io::Result<Offloads> {
    let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer; `size`
    // lives on this frame for the call and `file` keeps the fd open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    let set = |flags: libc::c_uint| {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned
        // long of TUN_F_* bits); no memory is passed.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if set(base | libc::TUN_F_USO4 | libc::TUN_F_USO6).is_ok() {
        return Ok(Offloads {
            tso: true,
            uso: true,
        });
    }
    set(base)?;
    Ok(Offloads {
        tso: true,
        uso: false,
    })
}

/// One `writev` of a header and a packet; the bytes written.
#[cfg(test)]
fn writev(file: &File, hdr: &[u8], packet: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        },
    ];
    // SAFETY: both iovecs point into slices borrowed for the whole call
    // (writev only reads through them), the count matches the array, and
    // `file` keeps the descriptor open.
    let n = unsafe { libc::writev(file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
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
