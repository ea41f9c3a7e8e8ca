//! Coalescing (GRO) towards a TUN device with offloads: in-order TCP
//! segments of one flow become one super-packet and one `write`.
//!
//! [`Coalescer::push`] takes the packets the engine passed, one at a time.
//! A segment joins the pending super-packet when it continues it exactly:
//! - same IP family, addresses, TOS/traffic class, TTL/hop limit, DF (or
//!   flow label), no IPv4 options, no IPv6 extension headers, not a
//!   fragment; IPv4 identification one more than the previous segment's;
//! - same ports, acknowledgment number, window, TCP header length and
//!   option bytes; sequence number right after the pending data;
//! - flags ACK, or ACK|PSH (which closes the super-packet); no SYN, FIN,
//!   RST, URG, ECE or CWR;
//! - a valid TCP checksum (a segment that fails it is held alone and
//!   written with a zero header, so the kernel checks and drops it as it
//!   would have without umbra: a super-packet's checksum is *not* verified
//!   by the kernel);
//! - the same payload size as the first segment, or less, which closes the
//!   super-packet; the result stays within 64 KiB.
//!
//! Anything else (UDP, ICMP, a SYN, a pure ACK, another flow) is held alone
//! and written unchanged with a zero header (`GSO_NONE`, no flags). A push
//! that cannot join the pending packet answers [`Push::FlushFirst`]: write
//! [`Coalescer::take`]'s bytes, then push again. Packets leave in the order
//! they came.
//!
//! A super-packet of n >= 2 segments is written with `GSO_TCPV4`/`TCPV6`,
//! `gso_size` = the first segment's payload, `F_NEEDS_CSUM` with
//! `csum_start` at the TCP header and `csum_offset` 16, the IPv4 total
//! length and header checksum (or IPv6 payload length) of the whole, the
//! TCP flags of the first segment plus the last one's PSH, and in the TCP
//! checksum field the folded (not complemented) pseudo-header sum over the
//! whole TCP length, which is what Linux keeps there for a
//! `CHECKSUM_PARTIAL` GSO skb (it adjusts it per segment when it has to
//! segment again, e.g. when forwarding).

use std::net::IpAddr;

use super::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, MAX_PACKET, VNET_HDR_LEN};
use crate::wire::checksum;
use crate::wire::ip::{put16, IpProtocol};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::tcp::{TcpFlags, TcpPacket};

/// What [`Coalescer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The packet is held (joined the pending super-packet, or started a
    /// new pending packet).
    Held,
    /// The packet cannot join what is pending: write [`Coalescer::take`]'s
    /// bytes first, then push it again.
    FlushFirst,
    /// Longer than any IP packet ([`MAX_PACKET`]): not held; the caller
    /// drops it.
    TooBig,
}

/// The pending TCP run's fixed facts.
#[derive(Debug, Clone, Copy)]
struct Run {
    v6: bool,
    /// Offset of the TCP header in the packet.
    l4: usize,
    /// IP + TCP header bytes.
    hdr_len: usize,
    /// The first segment's payload length.
    gso_size: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// IPv4 identification the next segment must carry (the segmenter,
    /// Linux's included, numbers segments consecutively; requiring it keeps
    /// coalesce-then-segment exact).
    next_id: u16,
    segments: usize,
    /// A shorter or PSH segment joined: nothing more may.
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Empty,
    /// One packet that can never be joined; written as is.
    Alone,
    Run(Run),
}

/// Holds the pending super-packet, in one buffer allocated once.
pub struct Coalescer {
    /// Virtio header, then the packet.
    buf: Box<[u8]>,
    /// Packet bytes after the header.
    len: usize,
    state: State,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("len", &self.len)
            .field("state", &self.state)
            .finish()
    }
}

/// A TCP segment that may be coalesced, with what joining needs.
struct Candidate {
    v6: bool,
    l4: usize,
    hdr_len: usize,
    /// IP length of the packet (link padding excluded).
    len: usize,
    seq: u32,
    /// IPv4 identification (0 for IPv6).
    id: u16,
    psh: bool,
}

impl Coalescer {
    /// An empty coalescer (allocates its 64 KiB buffer once).
    pub fn new() -> Coalescer {
        Coalescer {
            buf: vec![0u8; VNET_HDR_LEN + MAX_PACKET].into_boxed_slice(),
            len: 0,
            state: State::Empty,
        }
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        matches!(self.state, State::Empty)
    }

    /// How many segments the pending packet holds (0 when empty).
    pub fn pending_segments(&self) -> usize {
        match self.state {
            State::Empty => 0,
            State::Alone => 1,
            State::Run(r) => r.segments,
        }
    }

    /// Offers one packet; see [`Push`].
    pub fn push(&mut self, packet: &[u8]) -> Push {
        if packet.len() > MAX_PACKET {
            return Push::TooBig;
        }
        let cand = candidate(packet);
        match (self.state, cand) {
            (State::Empty, Some(c)) => {
                self.start_run(packet, &c);
                Push::Held
            }
            (State::Empty, None) => {
                self.hold(packet);
                self.state = State::Alone;
                Push::Held
            }
            (State::Run(run), Some(c)) if self.joins(&run, packet, &c) => {
                self.append(run, packet, &c);
                Push::Held
            }
            _ => Push::FlushFirst,
        }
    }

    /// Finishes the pending packet and returns it, virtio header first,
    /// ready for one `write`; the coalescer is then empty. `None` when
    /// nothing is pending.
    pub fn take(&mut self) -> Option<&[u8]> {
        let state = std::mem::replace(&mut self.state, State::Empty);
        let hdr = match state {
            State::Empty => return None,
            State::Alone => VnetHdr::NONE,
            State::Run(run) if run.segments < 2 => VnetHdr::NONE,
            State::Run(run) => self.finish(&run)?,
        };
        let n = VNET_HDR_LEN + self.len;
        let out = self.buf.get_mut(..n)?;
        out.get_mut(..VNET_HDR_LEN)?
            .copy_from_slice(&hdr.to_bytes());
        Some(out)
    }

    fn hold(&mut self, packet: &[u8]) {
        if let Some(dst) = self.buf.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + packet.len()) {
            dst.copy_from_slice(packet);
            self.len = packet.len();
        }
    }

    fn start_run(&mut self, packet: &[u8], c: &Candidate) {
        self.hold(packet.get(..c.len).unwrap_or(packet));
        let gso_size = c.len - c.hdr_len;
        self.state = State::Run(Run {
            v6: c.v6,
            l4: c.l4,
            hdr_len: c.hdr_len,
            gso_size,
            next_seq: c.seq.wrapping_add(gso_size as u32),
            next_id: c.id.wrapping_add(1),
            segments: 1,
            closed: c.psh,
        });
    }

    fn joins(&self, run: &Run, packet: &[u8], c: &Candidate) -> bool {
        let payload = c.len - c.hdr_len;
        if run.closed
            || c.v6 != run.v6
            || c.hdr_len != run.hdr_len
            || c.seq != run.next_seq
            || (!run.v6 && c.id != run.next_id)
            || payload > run.gso_size
            || self.len + payload > max_len(run)
        {
            return false;
        }
        let Some(first) = self.buf.get(VNET_HDR_LEN..VNET_HDR_LEN + run.hdr_len) else {
            return false;
        };
        let Some(hdrs) = packet.get(..run.hdr_len) else {
            return false;
        };
        same_headers(first, hdrs, run)
    }

    fn append(&mut self, mut run: Run, packet: &[u8], c: &Candidate) {
        let payload = c.len - c.hdr_len;
        let at = VNET_HDR_LEN + self.len;
        let (Some(dst), Some(src)) = (
            self.buf.get_mut(at..at + payload),
            packet.get(c.hdr_len..c.len),
        ) else {
            return;
        };
        dst.copy_from_slice(src);
        self.len += payload;
        run.segments += 1;
        run.next_seq = run.next_seq.wrapping_add(payload as u32);
        run.next_id = run.next_id.wrapping_add(1);
        if payload < run.gso_size || c.psh {
            run.closed = true;
            if c.psh {
                // The super-packet's flags: the first segment's plus PSH.
                if let Some(f) = self.buf.get_mut(VNET_HDR_LEN + run.l4 + 13) {
                    *f |= TcpFlags::PSH.0;
                }
            }
        }
        self.state = State::Run(run);
    }

    /// Writes the IP lengths and the partial TCP checksum of a run of n >= 2
    /// segments, and returns its virtio header.
    fn finish(&mut self, run: &Run) -> Option<VnetHdr> {
        let pkt = self.buf.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + self.len)?;
        let (src, dst): (IpAddr, IpAddr) = if run.v6 {
            put16(pkt, 4, u16::try_from(self.len - ipv6::HEADER_LEN).ok()?).ok()?;
            let ip = Ipv6Packet::new_truncated(pkt).ok()?;
            (ip.src_addr().into(), ip.dst_addr().into())
        } else {
            put16(pkt, 2, u16::try_from(self.len).ok()?).ok()?;
            put16(pkt, 10, 0).ok()?;
            let ip = Ipv4Packet::new_truncated(pkt).ok()?;
            let sum = checksum::of(ip.header());
            let addrs = (ip.src_addr().into(), ip.dst_addr().into());
            put16(pkt, 10, sum).ok()?;
            addrs
        };
        let tcp_len = (self.len - run.l4) as u32;
        let partial = checksum::pseudo_header(src, dst, IpProtocol::TCP.0, tcp_len).fold();
        put16(pkt, run.l4 + 16, partial).ok()?;
        Some(VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if run.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: u16::try_from(run.hdr_len).ok()?,
            gso_size: u16::try_from(run.gso_size).ok()?,
            csum_start: u16::try_from(run.l4).ok()?,
            csum_offset: 16,
        })
    }
}

/// The longest packet a run may grow to: 64 KiB of IPv4 total length, or
/// of IPv6 payload length.
fn max_len(run: &Run) -> usize {
    if run.v6 {
        ipv6::HEADER_LEN + 65535
    } else {
        65535
    }
}

/// Whether `packet` is a TCP data segment that may start or join a run.
fn candidate(packet: &[u8]) -> Option<Candidate> {
    let (v6, l4, len, src, dst, id) = match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.header_len() != ipv4::HEADER_LEN
                || ip.protocol() != IpProtocol::TCP
                || ip.is_fragment()
            {
                return None;
            }
            let len = usize::from(ip.total_len());
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            (false, ip.header_len(), len, src, dst, ip.ident())
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::TCP {
                return None;
            }
            let len = ip.as_bytes().len();
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            (true, ipv6::HEADER_LEN, len, src, dst, 0)
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(packet.get(l4..len)?).ok()?;
    let flags = tcp.flags();
    let psh = flags == (TcpFlags::ACK | TcpFlags::PSH);
    if (flags != TcpFlags::ACK && !psh) || tcp.payload().is_empty() {
        return None;
    }
    if !tcp.verify_checksum(src, dst) {
        return None;
    }
    Some(Candidate {
        v6,
        l4,
        hdr_len: l4 + tcp.header_len(),
        len,
        seq: tcp.seq(),
        id,
        psh,
    })
}

/// Whether two segments' headers agree on everything but what varies per
/// segment (IP length, id and checksum; TCP sequence number, PSH and
/// checksum).
fn same_headers(a: &[u8], b: &[u8], run: &Run) -> bool {
    let eq =
        |from: usize, to: usize| a.get(from..to).is_some() && a.get(from..to) == b.get(from..to);
    let ip_same = if run.v6 {
        // Version, traffic class, flow label; next header, hop limit,
        // addresses.
        eq(0, 4) && eq(6, ipv6::HEADER_LEN)
    } else {
        // Version/IHL and TOS; flags (DF) and fragment offset; TTL and
        // protocol; addresses.
        eq(0, 2) && eq(6, 10) && eq(12, ipv4::HEADER_LEN)
    };
    let l4 = run.l4;
    ip_same
        // Ports; acknowledgment number, data offset; window, urgent
        // pointer and options.
        && eq(l4, l4 + 4)
        && eq(l4 + 8, l4 + 13)
        && eq(l4 + 14, l4 + 16)
        && eq(l4 + 18, run.hdr_len)
}
