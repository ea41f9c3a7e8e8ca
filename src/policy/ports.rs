//! Protocols and ports: what a service offers and what a packet carries.

use std::fmt;

use crate::net::IpProtocol;

/// One protocol with an inclusive range of ports (or ICMP types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: IpProtocol,
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, proto: IpProtocol, port: u16) -> bool {
        self.proto == proto && self.lo <= port && port <= self.hi
    }
}

/// What a service offers: every protocol, or a list of protocol/port ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PortSet {
    pub any: bool,
    pub ranges: Vec<PortRange>,
}

impl PortSet {
    pub fn contains(&self, proto: IpProtocol, port: u16) -> bool {
        self.any || self.ranges.iter().any(|r| r.contains(proto, port))
    }
}

/// Parses a decimal number up to `max`, refusing signs and leading junk.
pub fn parse_num(s: &str, max: u32) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|v| *v <= max)
}

/// Parses `N` or `N-M` bounded by `max`.
pub fn parse_range(s: &str, max: u32) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let what = if max == 255 { "type" } else { "port" };
    let lo = parse_num(a, max)
        .ok_or_else(|| format!("expected a {what} number from 0 to {max}, found `{a}`"))?;
    let hi = parse_num(b, max)
        .ok_or_else(|| format!("expected a {what} number from 0 to {max}, found `{b}`"))?;
    if lo > hi {
        return Err(format!("a range must go from low to high, found `{s}`"));
    }
    Ok((lo as u16, hi as u16))
}

/// One item of a service's port list, as written.
pub enum PortItem {
    Any,
    /// `ping`: ICMP echo request on both IPv4 and IPv6.
    Ping,
    /// A protocol with no port list: every port (or type).
    Proto(IpProtocol),
    /// A protocol and one range of ports (or ICMP types).
    Range(IpProtocol, u16, u16),
}

/// Parses one written item such as `tcp/80`, `udp/5000-5100`, `icmp/8`,
/// `proto/47`, `ping` or `any`. `prev` is the protocol of the previous
/// item so that `tcp/80,443` reads `443` as a TCP port.
pub fn parse_port_item(s: &str, prev: Option<IpProtocol>) -> Result<PortItem, String> {
    const EXPECTED: &str =
        "expected `any`, `ping`, a protocol (tcp, udp, sctp, icmp, icmp6, gre, esp, proto/N) \
                            optionally followed by /PORT, /PORT-PORT or /TYPE";
    match s {
        "any" => return Ok(PortItem::Any),
        "ping" => return Ok(PortItem::Ping),
        _ => {}
    }
    let (proto_text, ports) = match s.split_once('/') {
        Some(("proto", rest)) => match rest.split_once('/') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        },
        Some((p, rest)) => (p, Some(rest)),
        None => (s, None),
    };
    let proto = match IpProtocol::from_name(proto_text) {
        Some(p) => p,
        None if s.bytes().next().is_some_and(|b| b.is_ascii_digit()) => {
            let Some(p) = prev.filter(|p| p.has_ports()) else {
                return Err(format!(
                    "a bare port `{s}` must follow a protocol, as in tcp/80,{s}"
                ));
            };
            let (lo, hi) = parse_range(s, u32::from(p.max_port()))?;
            return Ok(PortItem::Range(p, lo, hi));
        }
        None => return Err(format!("{EXPECTED}, found `{s}`")),
    };
    match ports {
        None => Ok(PortItem::Proto(proto)),
        Some(p) if !proto.has_ports() => Err(format!(
            "protocol {proto} has no ports, write just `{proto}` (found `/{p}`)"
        )),
        Some(p) => {
            let (lo, hi) = parse_range(p, u32::from(proto.max_port()))?;
            Ok(PortItem::Range(proto, lo, hi))
        }
    }
}

impl PortSet {
    pub fn add(&mut self, item: &PortItem) {
        match *item {
            PortItem::Any => self.any = true,
            PortItem::Ping => {
                for proto in [IpProtocol::ICMP, IpProtocol::ICMPV6] {
                    let echo = u16::from(proto.echo_request_type().unwrap_or_default());
                    self.ranges.push(PortRange {
                        proto,
                        lo: echo,
                        hi: echo,
                    });
                }
            }
            PortItem::Proto(p) => self.ranges.push(PortRange {
                proto: p,
                lo: 0,
                hi: u16::MAX,
            }),
            PortItem::Range(p, lo, hi) => self.ranges.push(PortRange { proto: p, lo, hi }),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.proto;
        if self.lo == 0 && self.hi == u16::MAX || !self.proto.has_ports() {
            write!(f, "{name}")
        } else if self.lo == self.hi {
            write!(f, "{name}/{}", self.lo)
        } else {
            write!(f, "{name}/{}-{}", self.lo, self.hi)
        }
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            return f.write_str("any");
        }
        let parts: Vec<String> = self.ranges.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A concrete packet's protocol and destination port (or ICMP type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub proto: IpProtocol,
    pub port: u16,
}

impl Flow {
    /// Parses `PORT/PROTO` (`443/tcp`, `8/icmp`, `0/gre`, `0/47`).
    pub fn parse(s: &str) -> Result<Flow, String> {
        let Some((port, proto)) = s.split_once('/') else {
            return Err(format!(
                "expected PORT/PROTO such as 443/tcp or 8/icmp, found `{s}`"
            ));
        };
        let proto = IpProtocol::from_name(proto)
            .ok_or_else(|| format!("{}, found `{proto}`", crate::net::UnknownProtocol))?;
        let max = u32::from(proto.max_port());
        let port = parse_num(port, max).ok_or_else(|| {
            format!(
                "expected a {} from 0 to {max}, found `{port}`",
                if max == 255 { "type" } else { "port" }
            )
        })?;
        // Protocols without ports are matched on the protocol alone.
        let port = if proto.has_ports() { port as u16 } else { 0 };
        Ok(Flow { proto, port })
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.proto.has_ports() {
            write!(f, "{}/{}", self.port, self.proto)
        } else {
            write!(f, "0/{}", self.proto.number())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> Result<String, String> {
        let mut s = PortSet::default();
        let mut prev = None;
        for i in items {
            let item = parse_port_item(i, prev)?;
            prev = match item {
                PortItem::Range(p, _, _) | PortItem::Proto(p) => Some(p),
                _ => None,
            };
            s.add(&item);
        }
        Ok(s.to_string())
    }

    #[test]
    fn port_items() {
        assert_eq!(
            set(&["tcp/80", "443", "8000-8100", "udp/53"]).unwrap(),
            "tcp/80,tcp/443,tcp/8000-8100,udp/53"
        );
        assert_eq!(
            set(&["ping", "proto/47", "icmp"]).unwrap(),
            "icmp/8,icmp6/128,gre,icmp"
        );
        assert_eq!(set(&["any"]).unwrap(), "any");
        assert!(set(&["443"])
            .unwrap_err()
            .contains("must follow a protocol"));
        assert!(set(&["gre/5"]).unwrap_err().contains("has no ports"));
        assert!(set(&["icmp/256"]).unwrap_err().contains("from 0 to 255"));
        assert!(set(&["tcp/90-80"]).unwrap_err().contains("low to high"));
        assert!(set(&["tcp/-1"]).is_err());
        assert!(set(&["http"]).unwrap_err().starts_with("expected `any`"));
        assert_eq!(
            Flow::parse("0/47").unwrap(),
            Flow {
                proto: IpProtocol::GRE,
                port: 0
            }
        );
        assert_eq!(
            Flow::parse("9/gre").unwrap(),
            Flow {
                proto: IpProtocol::GRE,
                port: 0
            }
        );
        assert_eq!(Flow::parse("8/icmp").unwrap().to_string(), "8/icmp");
        assert!(Flow::parse("300/icmp").is_err());
        assert!(Flow::parse("80").is_err());
    }
}
