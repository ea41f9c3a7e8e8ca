//! The rtnetlink wire format, sans I/O: the requests a node sends (built
//! as bytes) and the replies it reads (parsed from bytes, never trusted).
//!
//! Layouts follow `<linux/netlink.h>` and `<linux/rtnetlink.h>`; all
//! integers are in host byte order except addresses (network order).

use std::io;
use std::net::IpAddr;

use crate::net::IpNet;

// <linux/netlink.h>
pub(super) const NLMSG_HDR_LEN: usize = 16;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// In an NLMSG_ERROR: extended-ack attributes follow the capped header.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// In an NLMSG_ERROR: the original request was not echoed back.
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;

// <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>
pub(super) const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFLA_IFNAME: u16 = 3;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_STATS64: u16 = 23;
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
pub(super) const IFF_UP: u32 = 1;
/// struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
const IFINFOMSG_LEN: usize = 16;

/// Whether a request adds (and must not find it already there) or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Del,
}

/// A request under construction: header first, length filled in at the end.
pub(super) struct Message {
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

    /// The finished bytes, numbered `seq`.
    pub(super) fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// Asks for the link called `name` (the caller has checked the name).
pub(super) fn get_link(name: &str) -> Message {
    let mut msg = Message::new(RTM_GETLINK, 0);
    msg.ifinfomsg(0, 0, 0);
    let mut name_z = name.as_bytes().to_vec();
    name_z.push(0);
    msg.attr(IFLA_IFNAME, &name_z);
    msg.attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    msg
}

/// Asks for interface `index` with its counters.
pub(super) fn get_link_stats(index: u32) -> Message {
    let mut msg = Message::new(RTM_GETLINK, 0);
    msg.ifinfomsg(index, 0, 0);
    msg
}

/// `tx_dropped` from an RTM_NEWLINK reply's `IFLA_STATS64` (a struct
/// rtnl_link_stats64 of u64s: rx_packets, tx_packets, rx_bytes, tx_bytes,
/// rx_errors, tx_errors, rx_dropped, tx_dropped, ...); `None` if the reply
/// carries no such counters.
pub(super) fn link_tx_dropped(payload: &[u8]) -> Option<u64> {
    const TX_DROPPED: usize = 7 * 8;
    let (_, stats) = attrs(payload.get(IFINFOMSG_LEN..)?).find(|(k, _)| *k == IFLA_STATS64)?;
    let raw = stats.get(TX_DROPPED..TX_DROPPED + 8)?;
    Some(u64::from_ne_bytes(raw.try_into().ok()?))
}

/// Sets the interface flags in `change` to their values in `flags`.
pub(super) fn set_link_flags(index: u32, flags: u32, change: u32) -> Message {
    let mut msg = Message::new(RTM_NEWLINK, 0);
    msg.ifinfomsg(index, flags, change);
    msg
}

pub(super) fn set_link_mtu(index: u32, mtu: u32) -> Message {
    set_link_u32(index, IFLA_MTU, mtu)
}

pub(super) fn set_link_tx_queue_len(index: u32, packets: u32) -> Message {
    set_link_u32(index, IFLA_TXQLEN, packets)
}

fn set_link_u32(index: u32, attr: u16, value: u32) -> Message {
    let mut msg = Message::new(RTM_NEWLINK, 0);
    msg.ifinfomsg(index, 0, 0);
    msg.attr(attr, &value.to_ne_bytes());
    msg
}

/// The index in an RTM_NEWLINK reply's ifinfomsg (family u8, pad u8,
/// type u16, index i32, ...).
pub(super) fn link_index(payload: &[u8]) -> Option<u32> {
    (payload.len() >= 16).then(|| read_u32(payload, 4))
}

/// Adds `addr` (host bits kept: they are the address) to or removes it
/// from interface `index`. IPv6 addresses skip duplicate address detection.
pub(super) fn address(op: Op, index: u32, addr: IpNet) -> Message {
    let mut msg = match op {
        Op::Add => Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL),
        Op::Del => Message::new(RTM_DELADDR, 0),
    };
    let (family, bytes) = family_and_bytes(addr.addr());
    // ifaddrmsg: family, prefixlen, flags, scope, index
    msg.push(&[family, addr.prefix(), 0, RT_SCOPE_UNIVERSE]);
    msg.push(&index.to_ne_bytes());
    msg.attr(IFA_LOCAL, &bytes);
    msg.attr(IFA_ADDRESS, &bytes);
    if addr.addr().is_ipv6() {
        msg.attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    msg
}

/// Adds or removes the main-table route to `dest` (host bits cleared) out
/// of interface `index`.
pub(super) fn route(op: Op, index: u32, dest: IpNet) -> Message {
    let mut msg = match op {
        Op::Add => Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL),
        Op::Del => Message::new(RTM_DELROUTE, 0),
    };
    let dest = dest.network();
    let (family, bytes) = family_and_bytes(dest.addr());
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
        dest.prefix(),
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
    msg
}

fn family_and_bytes(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

/// One message of a kernel reply.
pub(super) struct Reply<'a> {
    pub(super) kind: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

/// The next message in `rest` (advanced past it); `None` at the end, an
/// error if the datagram is malformed.
pub(super) fn next_reply<'a>(rest: &mut &'a [u8]) -> Option<io::Result<Reply<'a>>> {
    let data: &'a [u8] = rest;
    if data.len() < NLMSG_HDR_LEN {
        return None;
    }
    let len = read_u32(data, 0) as usize;
    let Some(payload) = data
        .get(NLMSG_HDR_LEN..len)
        .filter(|_| len >= NLMSG_HDR_LEN)
    else {
        *rest = &[];
        let e = io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply");
        return Some(Err(e));
    };
    *rest = data.get(align4(len)..).unwrap_or_default();
    Some(Ok(Reply {
        kind: read_u16(data, 4),
        flags: read_u16(data, 6),
        seq: read_u32(data, 8),
        payload,
    }))
}

/// Reads an NLMSG_ERROR payload: errno 0 is an acknowledgement; otherwise
/// the error and the kernel's extended-ack explanation, if it gave one.
pub(super) fn parse_ack(flags: u16, payload: &[u8]) -> Result<(), (io::Error, Option<String>)> {
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
        let value = data.get(4..len)?;
        data = data.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
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

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn address_message_layout() {
        let mut msg = address(Op::Add, 7, net("10.0.0.1/24"));
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
        let mut del = address(Op::Del, 7, net("fd00::1/64"));
        let bytes = del.finish(1).to_vec();
        assert_eq!(read_u16(&bytes, 4), RTM_DELADDR);
        assert_eq!(read_u16(&bytes, 6), NLM_F_REQUEST | NLM_F_ACK);
        let kinds: Vec<u16> = attrs(&bytes[24..]).map(|(k, _)| k).collect();
        assert_eq!(kinds, [IFA_LOCAL, IFA_ADDRESS, IFA_FLAGS], "IPv6 skips DAD");
    }

    #[test]
    fn link_counters_are_read_from_stats64_and_bounded() {
        let mut reply = vec![0u8; IFINFOMSG_LEN];
        // An unrelated attribute first, then IFLA_STATS64 with counters 1..=24.
        reply.extend_from_slice(&8u16.to_ne_bytes());
        reply.extend_from_slice(&IFLA_MTU.to_ne_bytes());
        reply.extend_from_slice(&1420u32.to_ne_bytes());
        let stats: Vec<u8> = (1..=24u64).flat_map(u64::to_ne_bytes).collect();
        reply.extend_from_slice(&((4 + stats.len()) as u16).to_ne_bytes());
        reply.extend_from_slice(&IFLA_STATS64.to_ne_bytes());
        reply.extend_from_slice(&stats);
        assert_eq!(link_tx_dropped(&reply), Some(8));
        // Truncated anywhere: no answer, no panic.
        for cut in 0..reply.len() {
            let got = link_tx_dropped(&reply[..cut]);
            assert!(got.is_none() || got == Some(8), "cut {cut}: {got:?}");
        }
        assert_eq!(link_tx_dropped(&reply[..IFINFOMSG_LEN + 8]), None);
    }

    #[test]
    fn routes_are_masked() {
        let dst = |s: &str| {
            let mut msg = route(Op::Add, 1, net(s));
            let bytes = msg.finish(1).to_vec();
            assert_eq!(read_u16(&bytes, 4), RTM_NEWROUTE);
            // rtmsg (12 bytes) follows the header; RTA_DST comes first.
            let (kind, value) = attrs(&bytes[28..]).next().unwrap();
            assert_eq!(kind, RTA_DST);
            (bytes[17], value.to_vec())
        };
        assert_eq!(dst("10.1.2.3/16"), (16, vec![10, 1, 0, 0]));
        assert_eq!(dst("10.1.2.3/0"), (0, vec![0, 0, 0, 0]));
        assert_eq!(dst("10.1.2.3/32"), (32, vec![10, 1, 2, 3]));
        let IpAddr::V6(v6) = "fd00:1:2::".parse().unwrap() else {
            unreachable!()
        };
        assert_eq!(dst("fd00:1:2:3::9/48"), (48, v6.octets().to_vec()));
        let mut del = route(Op::Del, 1, net("10.0.0.0/8"));
        assert_eq!(read_u16(del.finish(1), 4), RTM_DELROUTE);
    }

    #[test]
    fn replies_are_split_and_malformed_ones_refused() {
        let mut two = Vec::new();
        for (seq, body) in [(5u32, &[1u8, 2, 3][..]), (6, &[])] {
            let len = (NLMSG_HDR_LEN + body.len()) as u32;
            two.extend_from_slice(&len.to_ne_bytes());
            two.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
            two.extend_from_slice(&0u16.to_ne_bytes());
            two.extend_from_slice(&seq.to_ne_bytes());
            two.extend_from_slice(&0u32.to_ne_bytes());
            two.extend_from_slice(body);
            two.resize(align4(two.len()), 0);
        }
        let mut rest = &two[..];
        let a = next_reply(&mut rest).unwrap().unwrap();
        assert_eq!(
            (a.kind, a.seq, a.payload),
            (NLMSG_DONE, 5, &[1u8, 2, 3][..])
        );
        let b = next_reply(&mut rest).unwrap().unwrap();
        assert_eq!((b.seq, b.payload.len()), (6, 0));
        assert!(next_reply(&mut rest).is_none());
        // A length past the datagram or shorter than a header is an error;
        // no prefix of a datagram panics.
        let mut long = two.clone();
        long[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(next_reply(&mut &long[..]).unwrap().is_err());
        long[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(next_reply(&mut &long[..]).unwrap().is_err());
        for n in 0..two.len() {
            let mut rest = &two[..n];
            while let Some(Ok(_)) = next_reply(&mut rest) {}
        }
        assert_eq!(link_index(&[0; 15]), None);
        let mut ifinfo = [0u8; 16];
        ifinfo[4..8].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(link_index(&ifinfo), Some(9));
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
}
