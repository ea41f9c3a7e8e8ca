//! IP networks in CIDR notation and prefix masking: the one place that
//! knows how a prefix length turns into a network. Policy, cryptokey
//! routing, the daemon's kernel routes and netlink all mask through here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with a prefix length, as in `10.0.0.1/24` or `fd00::/64`.
///
/// The address keeps its host bits: a node's tunnel address `10.0.0.1/24`
/// names the host `10.0.0.1` on the network `10.0.0.0/24`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why text is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpNetError {
    BadAddress,
    BadPrefix { max: u8 },
}

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpNetError::BadAddress => f.write_str("expected an IPv4 or IPv6 address"),
            IpNetError::BadPrefix { max } => write!(f, "expected a prefix length from 0 to {max}"),
        }
    }
}

impl std::error::Error for IpNetError {}

impl IpNet {
    /// Builds a network; `None` if the prefix is too long for the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= addr_len(addr)).then_some(IpNet { addr, prefix })
    }

    /// The single-address network (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        IpNet {
            addr,
            prefix: addr_len(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The same network with host bits cleared.
    pub fn network(&self) -> IpNet {
        IpNet {
            addr: mask(self.addr, self.prefix),
            prefix: self.prefix,
        }
    }

    /// True when the host bits are zero, as a route or `serves` entry should be.
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && masked_bits(ip, self.prefix) == self.first_bits()
    }

    /// True when every address of `other` is in `self`.
    pub fn contains_net(&self, other: &IpNet) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }

    /// First and last address as integers (IPv4 in the low 32 bits).
    pub fn range_bits(&self) -> (u128, u128) {
        let len = addr_len(self.addr);
        let host = low_ones(u32::from(len)) & !prefix_mask(len, self.prefix);
        let lo = self.first_bits();
        (lo, lo | host)
    }

    fn first_bits(&self) -> u128 {
        masked_bits(self.addr, self.prefix)
    }
}

/// Bits in an address of `ip`'s family: 32 or 128 (the longest prefix).
pub fn addr_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The mask keeping the first `prefix` bits of an address `len` bits long
/// (32 or 128), aligned like [`to_bits`]: IPv4 in the low 32 bits, the
/// bits above them clear. `/0` keeps nothing; a prefix of `len` or more
/// keeps the whole address. The only prefix arithmetic in umbra.
pub fn prefix_mask(len: u8, prefix: u8) -> u128 {
    let len = u32::from(len.min(128));
    let host = len.saturating_sub(u32::from(prefix));
    let family = low_ones(len);
    family & !low_ones(host)
}

/// The lowest `n` bits set (all of them from 128 on).
fn low_ones(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// `ip` with the bits past `prefix` cleared, as an integer (see [`to_bits`]).
pub fn masked_bits(ip: IpAddr, prefix: u8) -> u128 {
    to_bits(ip) & prefix_mask(addr_len(ip), prefix)
}

/// `ip` with the bits past `prefix` cleared: `10.1.2.3`, 16 → `10.1.0.0`.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    from_bits(ip, masked_bits(ip, prefix))
}

/// An address as an integer; IPv4 uses the low 32 bits.
pub fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((bits & 0xffff_ffff) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// Parses `ADDR` or `ADDR/PREFIX`; a bare address is a host network.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| IpNetError::BadAddress)?;
        let max = addr_len(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IpNetError::BadPrefix { max });
                }
                p.parse::<u8>().map_err(|_| IpNetError::BadPrefix { max })?
            }
        };
        IpNet::new(addr, prefix).ok_or(IpNetError::BadPrefix { max })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_contains_and_bounds() {
        let n: IpNet = "10.18.1.7/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.18.1.0/24");
        assert!(!n.is_network());
        assert!(n.contains("10.18.1.200".parse().unwrap()));
        assert!(!n.contains("10.18.2.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.range_bits(), (0, 0xffff_ffff));
        let all6: IpNet = "::/0".parse().unwrap();
        assert_eq!(all6.range_bits(), (0, u128::MAX));
        assert!(all.contains_net(&n));
        assert!("fd00::1".parse::<IpNet>().unwrap().prefix() == 128);
        for bad in [
            "10.0.0.1/33",
            "10.0.0.1/",
            "x/3",
            "::/129",
            "1.2.3.4/+1",
            "1.2.3.4/0008",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn masking_edges() {
        // /0 keeps nothing, the full length keeps everything, per family.
        assert_eq!(mask(ip("255.255.255.255"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 32), ip("10.1.2.3"));
        assert_eq!(mask(ip("10.1.2.3"), 31), ip("10.1.2.2"));
        assert_eq!(mask(ip("10.1.2.3"), 1), ip("0.0.0.0"));
        assert_eq!(mask(ip("200.1.2.3"), 1), ip("128.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 16), ip("10.1.0.0"));
        assert_eq!(mask(ip("ffff::ffff"), 0), ip("::"));
        assert_eq!(mask(ip("fd00::1:2"), 128), ip("fd00::1:2"));
        assert_eq!(mask(ip("fd00::1:3"), 127), ip("fd00::1:2"));
        assert_eq!(mask(ip("fd00:1:2:3::9"), 48), ip("fd00:1:2::"));
        assert_eq!(mask(ip("8000::1"), 1), ip("8000::"));
        // A prefix longer than the family keeps every bit (callers that
        // must refuse it go through IpNet::new).
        assert_eq!(mask(ip("10.1.2.3"), 33), ip("10.1.2.3"));
        assert_eq!(mask(ip("fd00::1"), 200), ip("fd00::1"));
        // IPv4 masks never reach above the low 32 bits.
        assert_eq!(prefix_mask(32, 0), 0);
        assert_eq!(prefix_mask(32, 32), 0xffff_ffff);
        assert_eq!(prefix_mask(32, 8), 0xff00_0000);
        assert_eq!(prefix_mask(128, 0), 0);
        assert_eq!(prefix_mask(128, 128), u128::MAX);
        assert_eq!(prefix_mask(128, 1), 1 << 127);
        assert_eq!(masked_bits(ip("10.9.8.7"), 8), 0x0a00_0000);
    }

    #[test]
    fn networks_at_the_edges() {
        let host4: IpNet = "10.1.2.3/32".parse().unwrap();
        assert_eq!(host4, IpNet::host(ip("10.1.2.3")));
        assert!(host4.is_network());
        assert_eq!(host4.range_bits(), (0x0a01_0203, 0x0a01_0203));
        assert!(host4.contains(ip("10.1.2.3")));
        assert!(!host4.contains(ip("10.1.2.2")));
        let host6: IpNet = "fd00::7/128".parse().unwrap();
        assert!(host6.is_network() && host6.contains(ip("fd00::7")));
        assert!(!host6.contains(ip("fd00::6")));
        assert_eq!(host6.range_bits().0, host6.range_bits().1);
        let all4: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all4.contains(ip("255.255.255.255")) && !all4.contains(ip("::")));
        let all6: IpNet = "::/0".parse().unwrap();
        assert!(all6.contains(ip("ffff::1")) && !all6.contains(ip("0.0.0.0")));
        let n: IpNet = "fd00:1::5/64".parse().unwrap();
        assert_eq!(n.network().to_string(), "fd00:1::/64");
        assert_eq!(
            n.range_bits(),
            (
                to_bits(ip("fd00:1::")),
                to_bits(ip("fd00:1::ffff:ffff:ffff:ffff"))
            )
        );
        assert!(n.overlaps(&"fd00::/16".parse().unwrap()));
        assert!(!n.overlaps(&"fd00:2::/64".parse().unwrap()));
        assert_eq!(IpNet::new(ip("10.0.0.0"), 33), None);
        assert_eq!(IpNet::new(ip("::"), 129), None);
        // Networks order by address then prefix, so they key sets directly.
        let mut v: Vec<IpNet> = ["10.0.0.0/16", "10.0.0.0/8", "9.0.0.0/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        assert_eq!(format!("{v:?}"), "[9.0.0.0/8, 10.0.0.0/8, 10.0.0.0/16]");
    }
}
