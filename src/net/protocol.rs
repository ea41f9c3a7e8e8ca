//! IP protocol numbers and their names: the one table that says `6` is
//! `tcp`, which protocols carry ports, and how each output spells them.
//!
//! Two spellings exist on purpose, both fixed by documents users rely on:
//! the policy language's ([`IpProtocol::name`], also in log lines and CLI
//! output: `icmp6`, `proto/47`) and the flow log's `network.transport`
//! ([`IpProtocol::transport`], Elastic Common Schema: `ipv6-icmp`, `47`).
//! Parsing ([`IpProtocol::from_name`]) accepts both.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP protocol / IPv6 next-header number (IANA "Assigned Internet
/// Protocol Numbers"). A newtype rather than an enum because any of the 256
/// values can appear on the wire and policy may name any of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    /// ICMP for IPv4.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 routing header.
    pub const IPV6_ROUTING: IpProtocol = IpProtocol(43);
    /// IPv6 fragment header.
    pub const IPV6_FRAGMENT: IpProtocol = IpProtocol(44);
    /// Generic routing encapsulation.
    pub const GRE: IpProtocol = IpProtocol(47);
    /// Encapsulating security payload.
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication header.
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMP for IPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 "no next header".
    pub const IPV6_NO_NEXT: IpProtocol = IpProtocol(59);
    /// IPv6 destination options.
    pub const IPV6_DEST_OPTS: IpProtocol = IpProtocol(60);
    /// SCTP.
    pub const SCTP: IpProtocol = IpProtocol(132);

    /// The protocol number.
    pub const fn number(self) -> u8 {
        self.0
    }

    /// Whether this is ICMP of either family.
    pub const fn is_icmp(self) -> bool {
        self.0 == Self::ICMP.0 || self.0 == Self::ICMPV6.0
    }

    /// True for protocols whose packets carry a port (TCP, UDP, SCTP) or an
    /// ICMP type that policy matches on.
    pub const fn has_ports(self) -> bool {
        matches!(
            self,
            Self::TCP | Self::UDP | Self::SCTP | Self::ICMP | Self::ICMPV6
        )
    }

    /// The largest "port" policy can name: an ICMP type is one byte.
    pub const fn max_port(self) -> u16 {
        if self.is_icmp() {
            255
        } else {
            u16::MAX
        }
    }

    /// The ICMP of `addr`'s family.
    pub const fn icmp_for(addr: IpAddr) -> IpProtocol {
        match addr {
            IpAddr::V4(_) => Self::ICMP,
            IpAddr::V6(_) => Self::ICMPV6,
        }
    }

    /// The echo request type of this ICMP (8, or 128 for ICMPv6): what
    /// `ping` means; `None` for anything but ICMP.
    pub const fn echo_request_type(self) -> Option<u8> {
        match self {
            Self::ICMP => Some(8),
            Self::ICMPV6 => Some(128),
            _ => None,
        }
    }

    /// The policy language's name, for the protocols it names.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Self::TCP => Some("tcp"),
            Self::UDP => Some("udp"),
            Self::ICMP => Some("icmp"),
            Self::ICMPV6 => Some("icmp6"),
            Self::SCTP => Some("sctp"),
            Self::GRE => Some("gre"),
            Self::ESP => Some("esp"),
            _ => None,
        }
    }

    /// A protocol from its policy name, its flow-log `network.transport`
    /// name (`ipv6-icmp`), or a decimal number up to 255.
    pub fn from_name(name: &str) -> Option<IpProtocol> {
        match name {
            "tcp" => Some(Self::TCP),
            "udp" => Some(Self::UDP),
            "icmp" => Some(Self::ICMP),
            "icmp6" | "ipv6-icmp" => Some(Self::ICMPV6),
            "sctp" => Some(Self::SCTP),
            "gre" => Some(Self::GRE),
            "esp" => Some(Self::ESP),
            _ if !name.is_empty()
                && name.len() <= 3
                && name.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name.parse().ok().map(IpProtocol)
            }
            _ => None,
        }
    }

    /// The flow log's `network.transport` (docs/observability.md): `tcp`,
    /// `udp`, `icmp`, `ipv6-icmp`, or the number in decimal. Also the
    /// protocol column of `umbra status`.
    pub fn transport(self) -> Cow<'static, str> {
        match self {
            Self::TCP => "tcp".into(),
            Self::UDP => "udp".into(),
            Self::ICMP => "icmp".into(),
            Self::ICMPV6 => "ipv6-icmp".into(),
            IpProtocol(n) => n.to_string().into(),
        }
    }
}

/// The policy language's spelling: the name, or `proto/N`.
impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "proto/{}", self.0),
        }
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<u8> for IpProtocol {
    fn from(n: u8) -> Self {
        IpProtocol(n)
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        p.0
    }
}

/// Why text is not a protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProtocol;

impl fmt::Display for UnknownProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a protocol name (tcp, udp, sctp, icmp, icmp6, gre, esp) or number")
    }
}

impl std::error::Error for UnknownProtocol {}

impl FromStr for IpProtocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpProtocol::from_name(s).ok_or(UnknownProtocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in 0..=255u8 {
            let p = IpProtocol(n);
            // The policy spelling parses back (through `proto/N`'s number).
            let text = p.to_string();
            let back = match text.strip_prefix("proto/") {
                Some(num) => IpProtocol::from_name(num),
                None => IpProtocol::from_name(&text),
            };
            assert_eq!(back, Some(p), "{text}");
            // So does the flow log's, and the bare number.
            assert_eq!(IpProtocol::from_name(&p.transport()), Some(p));
            assert_eq!(n.to_string().parse::<IpProtocol>(), Ok(p));
            assert_eq!(u8::from(p), n);
        }
        assert_eq!(IpProtocol::TCP.to_string(), "tcp");
        assert_eq!(IpProtocol::ICMPV6.to_string(), "icmp6");
        assert_eq!(IpProtocol(47).to_string(), "gre");
        assert_eq!(IpProtocol(99).to_string(), "proto/99");
        assert_eq!(IpProtocol::ICMPV6.transport(), "ipv6-icmp");
        assert_eq!(IpProtocol::SCTP.transport(), "132");
        assert_eq!(IpProtocol::from_name("ipv6-icmp"), Some(IpProtocol::ICMPV6));
        for bad in ["", "TCP", "256", "0006", "+6", "-1", "icmpv6", "proto/6"] {
            assert_eq!(IpProtocol::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn ports_and_icmp() {
        let with_ports = [
            IpProtocol::TCP,
            IpProtocol::UDP,
            IpProtocol::SCTP,
            IpProtocol::ICMP,
            IpProtocol::ICMPV6,
        ];
        for n in 0..=255u8 {
            let p = IpProtocol(n);
            assert_eq!(p.has_ports(), with_ports.contains(&p), "{p}");
            assert_eq!(p.is_icmp(), n == 1 || n == 58);
            assert_eq!(p.max_port(), if p.is_icmp() { 255 } else { 65535 });
            assert_eq!(p.echo_request_type().is_some(), p.is_icmp());
        }
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(IpProtocol::icmp_for(v4).echo_request_type(), Some(8));
        assert_eq!(IpProtocol::icmp_for(v6).echo_request_type(), Some(128));
    }
}
