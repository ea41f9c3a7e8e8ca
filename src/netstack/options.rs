//! `--forward` / `--expose` specifications: pure parsing. (The layered
//! settings of `umbra up` that carry them are in `daemon::settings`.)

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Transport protocol of a forward or exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// `[ADDR:]LOCALPORT=TARGET:PORT[/tcp|/udp]`: a host-side listener whose
/// connections are carried into the mesh to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub target: SocketAddr,
    pub proto: Proto,
}

/// `PORT[/tcp|/udp]=LOCALADDR:LOCALPORT`: a port on this node's tunnel
/// address proxied to a host-side socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expose {
    pub port: u16,
    pub proto: Proto,
    pub target: SocketAddr,
}

/// Splits a trailing `/tcp` or `/udp` (default tcp).
fn split_proto(s: &str) -> Result<(&str, Proto), String> {
    match s.rsplit_once('/') {
        None => Ok((s, Proto::Tcp)),
        Some((rest, "tcp")) => Ok((rest, Proto::Tcp)),
        Some((rest, "udp")) => Ok((rest, Proto::Udp)),
        Some((_, p)) => Err(format!("unknown protocol '{p}' (tcp or udp)")),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{s}' is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

fn parse_sockaddr(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| format!("'{s}' is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"))?;
    if a.port() == 0 {
        return Err(format!("'{s}': port 0"));
    }
    Ok(a)
}

impl std::str::FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = |e: String| format!("--forward {s}: {e}");
        let (listen, target) = s
            .split_once('=')
            .ok_or_else(|| err("expected [ADDR:]LOCALPORT=TARGET:PORT[/tcp|/udp]".into()))?;
        let (target, proto) = split_proto(target).map_err(err)?;
        let target = parse_sockaddr(target).map_err(err)?;
        let listen = if listen.contains(':') {
            parse_sockaddr(listen).map_err(err)?
        } else {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                parse_port(listen).map_err(err)?,
            )
        };
        Ok(Forward {
            listen,
            target,
            proto,
        })
    }
}

impl std::str::FromStr for Expose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = |e: String| format!("--expose {s}: {e}");
        let (port, target) = s
            .split_once('=')
            .ok_or_else(|| err("expected PORT[/tcp|/udp]=LOCALADDR:LOCALPORT".into()))?;
        let (port, proto) = split_proto(port).map_err(err)?;
        Ok(Expose {
            port: parse_port(port).map_err(err)?,
            proto,
            target: parse_sockaddr(target).map_err(err)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forward_forms() {
        let f: Forward = "8080=10.20.0.1:80".parse().unwrap();
        assert_eq!(f.listen, sa("127.0.0.1:8080"));
        assert_eq!(f.target, sa("10.20.0.1:80"));
        assert_eq!(f.proto, Proto::Tcp);
        let f: Forward = "0.0.0.0:53=10.20.0.9:53/udp".parse().unwrap();
        assert_eq!(f.listen, sa("0.0.0.0:53"));
        assert_eq!(f.proto, Proto::Udp);
        let f: Forward = "[::1]:9000=[fd00::2]:22/tcp".parse().unwrap();
        assert_eq!(f.listen, sa("[::1]:9000"));
        assert_eq!(f.target, sa("[fd00::2]:22"));
    }

    #[test]
    fn forward_errors() {
        for bad in [
            "",
            "8080",
            "8080=10.0.0.1",
            "0=10.0.0.1:80",
            "70000=10.0.0.1:80",
            "8080=10.0.0.1:80/sctp",
            "8080=host:80",
            "8080=10.0.0.1:0",
            "x:80=10.0.0.1:80",
        ] {
            assert!(bad.parse::<Forward>().is_err(), "{bad}");
        }
    }

    #[test]
    fn expose_forms() {
        let e: Expose = "80=127.0.0.1:8000".parse().unwrap();
        assert_eq!(
            (e.port, e.proto, e.target),
            (80, Proto::Tcp, sa("127.0.0.1:8000"))
        );
        let e: Expose = "5353/udp=127.0.0.1:53".parse().unwrap();
        assert_eq!((e.port, e.proto), (5353, Proto::Udp));
        for bad in ["80", "80=8000", "0=127.0.0.1:1", "80/icmp=127.0.0.1:1"] {
            assert!(bad.parse::<Expose>().is_err(), "{bad}");
        }
    }
}
