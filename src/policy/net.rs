//! IP networks in CIDR notation, shared by the policy and the data path.

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
        (prefix <= max_prefix(addr)).then_some(IpNet { addr, prefix })
    }

    /// The single-address network (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        IpNet {
            addr,
            prefix: max_prefix(addr),
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
            addr: from_bits(self.addr, self.first_bits()),
            prefix: self.prefix,
        }
    }

    /// True when the host bits are zero, as a route or `serves` entry should be.
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && {
            let (lo, hi) = self.range_bits();
            let v = to_bits(ip);
            lo <= v && v <= hi
        }
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
        let lo = self.first_bits();
        let span = host_bits(self.addr, self.prefix);
        let hi = if span >= 128 {
            u128::MAX
        } else {
            lo | ((1u128 << span) - 1)
        };
        (lo, hi)
    }

    fn first_bits(&self) -> u128 {
        let span = host_bits(self.addr, self.prefix);
        let mask = if span >= 128 {
            0
        } else {
            !((1u128 << span) - 1)
        };
        to_bits(self.addr) & mask
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn host_bits(addr: IpAddr, prefix: u8) -> u32 {
    u32::from(max_prefix(addr).saturating_sub(prefix))
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
        let max = max_prefix(addr);
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
}
