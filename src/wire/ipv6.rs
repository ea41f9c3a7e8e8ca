//! IPv6 headers (RFC 8200) and the walk over their extension headers.

use std::net::Ipv6Addr;

use super::ip::{be16, be32, IpProtocol};
use super::Error;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// The most extension headers [`Ipv6Packet::upper_layer`] walks before
/// giving up. Legitimate packets carry at most a handful (RFC 8200 section
/// 4.1 lists six kinds, each once, destination options at most twice); a
/// bound keeps a hostile chain from costing more than a few lookups.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A read-only view of an IPv6 packet.
///
/// Built by [`Ipv6Packet::new_checked`], the view covers exactly the fixed
/// header plus `payload_len` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<'a> {
    hdr: &'a [u8; HEADER_LEN],
    buf: &'a [u8],
}

/// Fragment header fields, for a packet that is really fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Fragment {
    /// Identification shared by all fragments of the datagram.
    pub ident: u32,
    /// Offset of this fragment's data in bytes.
    pub offset: u16,
    /// The M (more fragments) flag.
    pub more: bool,
}

/// Where the extension-header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol: TCP, UDP, ICMPv6, "no next header", ...
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    /// For a non-first fragment this is where the fragment's data starts,
    /// which is not a header.
    pub offset: usize,
    /// Fragment information; `None` for unfragmented and atomic fragments
    /// (offset 0, M clear, which RFC 6946 says to treat as whole packets).
    pub fragment: Option<Ipv6Fragment>,
}

impl<'a> Ipv6Packet<'a> {
    /// Validates version 6 and that the payload length fits in the buffer.
    ///
    /// Jumbograms (payload length 0 with a jumbo option) are not accepted
    /// as such: a tunnel with a 1420-byte MTU never carries them, so the
    /// view is simply empty past the fixed header.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, Error> {
        let p = Self::new_truncated(buf)?;
        let total = HEADER_LEN + usize::from(p.payload_len());
        let buf = buf.get(..total).ok_or(Error::Truncated)?;
        Ok(Ipv6Packet { buf, ..p })
    }

    /// Validates only the fixed header, for the copy of an original packet
    /// in an ICMPv6 error, which is usually cut short.
    pub fn new_truncated(buf: &'a [u8]) -> Result<Self, Error> {
        let hdr: &[u8; HEADER_LEN] = buf.first_chunk().ok_or(Error::Truncated)?;
        if hdr[0] >> 4 != 6 {
            return Err(Error::UnknownVersion);
        }
        Ok(Ipv6Packet { hdr, buf })
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        (self.hdr[0] << 4) | (self.hdr[1] >> 4)
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        u32::from_be_bytes([0, self.hdr[1] & 0x0f, self.hdr[2], self.hdr[3]])
    }

    /// Payload length field: everything after the fixed header.
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.hdr[4], self.hdr[5]])
    }

    /// Next header of the fixed header (the first extension header, if any).
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.hdr[6])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.hdr[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(self.hdr, 8)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(self.hdr, 24)
    }

    /// The whole packet the view covers.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Everything after the fixed header.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Walks the extension headers to the upper-layer protocol.
    ///
    /// Hop-by-hop, routing, fragment, destination options and AH are
    /// skipped; anything else (including ESP and "no next header") ends the
    /// walk. After a fragment header with a non-zero offset the rest is
    /// fragment data and the walk stops there. Fails on a truncated chain,
    /// a hop-by-hop header anywhere but first, two fragment headers, or more
    /// than [`MAX_EXTENSION_HEADERS`].
    pub fn upper_layer(&self) -> Result<UpperLayer, Error> {
        let mut next = self.next_header();
        let mut off = HEADER_LEN;
        let mut fragment = None;
        let mut seen_fragment = false;
        for i in 0..=MAX_EXTENSION_HEADERS {
            let len = match next {
                IpProtocol::HOP_BY_HOP if i != 0 => return Err(Error::Malformed),
                IpProtocol::HOP_BY_HOP | IpProtocol::IPV6_ROUTING | IpProtocol::IPV6_DEST_OPTS => {
                    (usize::from(*self.buf.get(off + 1).ok_or(Error::Truncated)?) + 1) * 8
                }
                IpProtocol::AH => {
                    (usize::from(*self.buf.get(off + 1).ok_or(Error::Truncated)?) + 2) * 4
                }
                IpProtocol::IPV6_FRAGMENT => {
                    if seen_fragment {
                        return Err(Error::Malformed);
                    }
                    seen_fragment = true;
                    let field = be16(self.buf, off + 2).ok_or(Error::Truncated)?;
                    let ident = be32(self.buf, off + 4).ok_or(Error::Truncated)?;
                    let frag = Ipv6Fragment {
                        ident,
                        offset: field & 0xfff8,
                        more: field & 1 != 0,
                    };
                    if frag.offset != 0 || frag.more {
                        fragment = Some(frag);
                    }
                    if frag.offset != 0 {
                        let protocol = IpProtocol(*self.buf.get(off).ok_or(Error::Truncated)?);
                        return Ok(UpperLayer {
                            protocol,
                            offset: off + 8,
                            fragment,
                        });
                    }
                    8
                }
                protocol => {
                    return Ok(UpperLayer {
                        protocol,
                        offset: off,
                        fragment,
                    })
                }
            };
            // The header must be wholly present; its first byte names the next.
            if self.buf.len() < off + len {
                return Err(Error::Truncated);
            }
            next = IpProtocol(*self.buf.get(off).ok_or(Error::Truncated)?);
            off += len;
        }
        Err(Error::TooManyExtensionHeaders)
    }
}

fn addr(hdr: &[u8; HEADER_LEN], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    if let Some(s) = hdr.get(at..at + 16) {
        o.copy_from_slice(s);
    }
    Ipv6Addr::from(o)
}

/// Writes a 40-byte IPv6 header. `payload_len` is the length of what
/// follows it.
pub fn emit_header(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: IpProtocol,
    payload_len: usize,
) -> Result<(), Error> {
    let len = u16::try_from(payload_len).map_err(|_| Error::BufferTooSmall)?;
    let hdr: &mut [u8; HEADER_LEN] = out.first_chunk_mut().ok_or(Error::BufferTooSmall)?;
    let [l0, l1] = len.to_be_bytes();
    hdr[..8].copy_from_slice(&[0x60, 0, 0, 0, l0, l1, next_header.0, 64]);
    hdr[8..24].copy_from_slice(&src.octets());
    hdr[24..40].copy_from_slice(&dst.octets());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, ext: &[u8], upper: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        emit_header(
            &mut p,
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            IpProtocol(next),
            ext.len() + upper.len(),
        )
        .unwrap();
        p.extend_from_slice(ext);
        p.extend_from_slice(upper);
        p
    }

    #[test]
    fn walks_hop_by_hop_routing_dest_opts() {
        let mut ext = vec![43, 0, 0, 0, 0, 0, 0, 0]; // HBH -> routing
        ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // routing -> dest opts
        ext.extend_from_slice(&[17, 1]); // dest opts (16 bytes) -> UDP
        ext.extend_from_slice(&[0; 14]);
        let p = packet(0, &ext, &[0; 8]);
        let v = Ipv6Packet::new_checked(&p).unwrap();
        let up = v.upper_layer().unwrap();
        assert_eq!(up.protocol, IpProtocol::UDP);
        assert_eq!(up.offset, HEADER_LEN + 32);
        assert_eq!(up.fragment, None);
    }

    #[test]
    fn fragment_header() {
        // First fragment: offset 0, M set.
        let p = packet(44, &[6, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef], &[0; 20]);
        let up = Ipv6Packet::new_checked(&p).unwrap().upper_layer().unwrap();
        assert_eq!(up.protocol, IpProtocol::TCP);
        let f = up.fragment.unwrap();
        assert_eq!((f.ident, f.offset, f.more), (0xdeadbeef, 0, true));
        // Later fragment: offset 1480, the walk stops at the data.
        let p = packet(44, &[6, 0, 0x05, 0xc8, 0, 0, 0, 7], &[0xff; 3]);
        let up = Ipv6Packet::new_checked(&p).unwrap().upper_layer().unwrap();
        assert_eq!(up.fragment.unwrap().offset, 1480);
        assert_eq!(up.offset, HEADER_LEN + 8);
        // Atomic fragment: treated as a whole packet.
        let p = packet(44, &[17, 0, 0, 0, 0, 0, 0, 9], &[0; 8]);
        let up = Ipv6Packet::new_checked(&p).unwrap().upper_layer().unwrap();
        assert_eq!(up.fragment, None);
    }

    #[test]
    fn hostile_chains() {
        // HBH not first.
        let p = packet(60, &[0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0], &[]);
        let v = Ipv6Packet::new_checked(&p).unwrap();
        assert_eq!(v.upper_layer().unwrap_err(), Error::Malformed);
        // An endless chain of destination options.
        let ext: Vec<u8> = (0..20).flat_map(|_| [60, 0, 0, 0, 0, 0, 0, 0]).collect();
        let p = packet(60, &ext, &[]);
        let v = Ipv6Packet::new_checked(&p).unwrap();
        assert_eq!(v.upper_layer().unwrap_err(), Error::TooManyExtensionHeaders);
        // A header whose length runs past the packet.
        let p = packet(60, &[17, 4, 0, 0, 0, 0, 0, 0], &[]);
        let v = Ipv6Packet::new_checked(&p).unwrap();
        assert_eq!(v.upper_layer().unwrap_err(), Error::Truncated);
        // Payload length beyond the buffer.
        let mut p = packet(17, &[], &[0; 8]);
        p.truncate(45);
        assert_eq!(Ipv6Packet::new_checked(&p).unwrap_err(), Error::Truncated);
    }
}
