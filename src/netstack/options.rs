//! `--forward` / `--expose` specifications and the layered settings of
//! `umbra up` (config file < environment < command line). Pure parsing:
//! no I/O except reading the config file's text, which the caller does.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

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

/// Settings for `umbra up`, each optional so sources can be layered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub policy: Option<String>,
    pub key: Option<String>,
    pub interface: Option<String>,
    pub listen_port: Option<u16>,
    pub mtu: Option<u32>,
    pub log_level: Option<String>,
    pub hosts_file: Option<String>,
    pub userspace: Option<bool>,
    pub forward: Vec<Forward>,
    pub expose: Vec<Expose>,
    pub idle_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
}

/// The keys a config file (and, upper-cased with `UMBRA_` and `_` for
/// `-`, the environment) may set.
pub const KEYS: &[&str] = &[
    "policy",
    "key",
    "interface",
    "listen-port",
    "mtu",
    "log-level",
    "hosts-file",
    "userspace",
    "forward",
    "expose",
    "idle-timeout",
    "max-connections",
];

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean (true/false)")),
    }
}

impl Settings {
    /// Sets one key. `forward` and `expose` accept several specs separated
    /// by commas or whitespace, and append.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        let num = |what: &str| format!("{key}: '{v}' is not {what}");
        match key {
            "policy" => self.policy = Some(v.to_string()),
            "key" => self.key = Some(v.to_string()),
            "interface" => self.interface = Some(v.to_string()),
            "listen-port" => self.listen_port = Some(v.parse().map_err(|_| num("a port"))?),
            "mtu" => self.mtu = Some(v.parse().map_err(|_| num("a number"))?),
            "log-level" => self.log_level = Some(v.to_string()),
            "hosts-file" => self.hosts_file = Some(v.to_string()),
            "userspace" => self.userspace = Some(parse_bool(v).map_err(|e| format!("{key}: {e}"))?),
            "forward" => {
                for s in v.split(|c: char| c == ',' || c.is_whitespace()) {
                    if !s.is_empty() {
                        self.forward.push(s.parse()?);
                    }
                }
            }
            "expose" => {
                for s in v.split(|c: char| c == ',' || c.is_whitespace()) {
                    if !s.is_empty() {
                        self.expose.push(s.parse()?);
                    }
                }
            }
            "idle-timeout" => {
                self.idle_timeout = Some(Duration::from_secs(
                    v.parse().map_err(|_| num("a number of seconds"))?,
                ))
            }
            "max-connections" => {
                self.max_connections = Some(v.parse().map_err(|_| num("a number"))?)
            }
            _ => {
                return Err(format!(
                    "unknown setting '{key}' (known: {})",
                    KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// Parses a config file: `key = value` lines, `#` comments, blank
    /// lines; keys as in [`KEYS`] (`_` accepted for `-`).
    pub fn from_config(text: &str, file: &str) -> Result<Settings, String> {
        let mut s = Settings::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{file}:{}: expected 'key = value'", n + 1))?;
            let k = k.trim().replace('_', "-");
            s.set(&k, v).map_err(|e| format!("{file}:{}: {e}", n + 1))?;
        }
        Ok(s)
    }

    /// Reads `UMBRA_POLICY`, `UMBRA_KEY`, `UMBRA_FORWARD`, ... through
    /// `get` (the environment, or a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let mut s = Settings::default();
        for key in KEYS {
            let var = format!("UMBRA_{}", key.to_uppercase().replace('-', "_"));
            if let Some(v) = get(&var) {
                s.set(key, &v).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        Ok(s)
    }

    /// Layers `over` on top of `self`: its set values win; its forward
    /// and expose lists, when not empty, replace ours.
    pub fn overlay(mut self, over: Settings) -> Settings {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            policy,
            key,
            interface,
            listen_port,
            mtu,
            log_level,
            hosts_file,
            userspace,
            idle_timeout,
            max_connections
        );
        if !over.forward.is_empty() {
            self.forward = over.forward;
        }
        if !over.expose.is_empty() {
            self.expose = over.expose;
        }
        self
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

    #[test]
    fn config_file() {
        let s = Settings::from_config(
            "# pod\npolicy = /etc/umbra/mesh.policy\nkey=/k\n\nuserspace = true\nforward = 8080=10.20.0.1:80, 53=10.20.0.1:53/udp\nexpose = 80=127.0.0.1:8000 # web\nidle_timeout = 30\n",
            "f",
        )
        .unwrap();
        assert_eq!(s.policy.as_deref(), Some("/etc/umbra/mesh.policy"));
        assert_eq!(s.key.as_deref(), Some("/k"));
        assert_eq!(s.userspace, Some(true));
        assert_eq!(s.forward.len(), 2);
        assert_eq!(s.expose.len(), 1);
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(30)));
        let e = Settings::from_config("policy /x\n", "f").unwrap_err();
        assert!(e.starts_with("f:1:"), "{e}");
        let e = Settings::from_config("\nbogus = 1\n", "f").unwrap_err();
        assert!(e.starts_with("f:2: unknown setting"), "{e}");
        assert!(Settings::from_config("mtu = big", "f").is_err());
        assert!(Settings::from_config("userspace = maybe", "f").is_err());
    }

    #[test]
    fn env_and_layering() {
        let env = |k: &str| match k {
            "UMBRA_KEY" => Some("/env/key".to_string()),
            "UMBRA_FORWARD" => Some("9000=10.20.0.2:22".to_string()),
            "UMBRA_LISTEN_PORT" => Some("5000".to_string()),
            _ => None,
        };
        let e = Settings::from_env(env).unwrap();
        let file =
            Settings::from_config("policy=/p\nkey=/file/key\nforward=1=10.0.0.1:1", "f").unwrap();
        let mut cli = Settings::default();
        cli.set("listen-port", "6000").unwrap();
        let s = file.overlay(e).overlay(cli);
        assert_eq!(s.policy.as_deref(), Some("/p"));
        assert_eq!(s.key.as_deref(), Some("/env/key"));
        assert_eq!(s.listen_port, Some(6000));
        assert_eq!(s.forward, vec!["9000=10.20.0.2:22".parse().unwrap()]);
        assert!(Settings::from_env(|k| (k == "UMBRA_MTU").then(|| "x".into())).is_err());
    }
}
