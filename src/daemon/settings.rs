//! The layered settings of `umbra up` (config file < environment < command
//! line), and their checks that need no policy. Pure parsing: no I/O except
//! reading the config file's text, which the caller does.

use std::time::Duration;

use crate::netstack::options::{Expose, Forward};

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
    /// Batched UDP with GSO/GRO and TUN offloads (default on).
    pub offload: Option<bool>,
    pub forward: Vec<Forward>,
    pub expose: Vec<Expose>,
    pub idle_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    /// Control socket path, or `none`.
    pub control: Option<String>,
    /// JSON-lines flow log path (`-`: standard output).
    pub flow_log: Option<String>,
    /// ADDR:PORT for /metrics and /healthz.
    pub metrics: Option<String>,
    /// WireGuard UAPI socket path, or `none`.
    pub uapi: Option<String>,
    /// The user to become after setup (name or UID:GID).
    pub user: Option<String>,
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
    "offload",
    "forward",
    "expose",
    "idle-timeout",
    "max-connections",
    "control",
    "flow-log",
    "metrics",
    "uapi",
    "user",
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
            "control" => self.control = Some(v.to_string()),
            "flow-log" => self.flow_log = Some(v.to_string()),
            "metrics" => self.metrics = Some(v.to_string()),
            "uapi" => self.uapi = Some(v.to_string()),
            "user" => self.user = Some(v.to_string()),
            "userspace" => self.userspace = Some(parse_bool(v).map_err(|e| format!("{key}: {e}"))?),
            "offload" => self.offload = Some(parse_bool(v).map_err(|e| format!("{key}: {e}"))?),
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
            offload,
            idle_timeout,
            max_connections,
            control,
            flow_log,
            metrics,
            uapi,
            user
        );
        if !over.forward.is_empty() {
            self.forward = over.forward;
        }
        if !over.expose.is_empty() {
            self.expose = over.expose;
        }
        self
    }

    /// Refuses settings that would be accepted silently yet cannot mean
    /// what they say: `max-connections 0` (nothing could ever connect), the
    /// same port exposed twice, two forwards on the same listener.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == Some(0) {
            return Err(
                "--max-connections 0 would refuse every connection (give at least 1)".into(),
            );
        }
        if let Some((first, e)) =
            given_twice(&self.expose, |a, b| (a.port, a.proto) == (b.port, b.proto))
        {
            return Err(format!(
                "--expose {}/{} is given twice (to {} and to {}): each port can go to one place",
                e.port, e.proto, first.target, e.target
            ));
        }
        if let Some((first, f)) = given_twice(&self.forward, |a, b| {
            (a.listen, a.proto) == (b.listen, b.proto)
        }) {
            return Err(format!(
                "--forward {}/{} is given twice (to {} and to {}): each listener can go to one place",
                f.listen, f.proto, first.target, f.target
            ));
        }
        Ok(())
    }
}

/// The first item that `same` matches with an earlier one, with that
/// earlier one: `(earlier, later)`.
fn given_twice<T>(items: &[T], same: impl Fn(&T, &T) -> bool) -> Option<(&T, &T)> {
    items.iter().enumerate().find_map(|(i, later)| {
        items[..i]
            .iter()
            .find(|e| same(e, later))
            .map(|e| (e, later))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "UMBRA_METRICS" => Some("0.0.0.0:9586".to_string()),
            "UMBRA_FLOW_LOG" => Some("-".to_string()),
            _ => None,
        };
        let e = Settings::from_env(env).unwrap();
        let file = Settings::from_config(
            "policy=/p\nkey=/file/key\nforward=1=10.0.0.1:1\ncontrol = none\nuser = nobody\nmetrics = 127.0.0.1:1",
            "f",
        )
        .unwrap();
        let mut cli = Settings::default();
        cli.set("listen-port", "6000").unwrap();
        let s = file.overlay(e).overlay(cli);
        assert_eq!(s.policy.as_deref(), Some("/p"));
        assert_eq!(s.key.as_deref(), Some("/env/key"));
        assert_eq!(s.listen_port, Some(6000));
        assert_eq!(s.forward, vec!["9000=10.20.0.2:22".parse().unwrap()]);
        assert_eq!(s.control.as_deref(), Some("none"));
        assert_eq!(s.user.as_deref(), Some("nobody"));
        assert_eq!(s.metrics.as_deref(), Some("0.0.0.0:9586"));
        assert_eq!(s.flow_log.as_deref(), Some("-"));
        assert_eq!(s.uapi, None);
        assert!(Settings::from_env(|k| (k == "UMBRA_MTU").then(|| "x".into())).is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let ok = Settings::from_config(
            "forward = 1=10.0.0.1:1, 2=10.0.0.1:1\nexpose = 80=127.0.0.1:1, 80/udp=127.0.0.1:1",
            "f",
        )
        .unwrap();
        assert_eq!(ok.validate(), Ok(()));
        let e = Settings::from_config("max-connections = 0", "f")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("--max-connections 0"), "{e}");
        let e = Settings::from_config("expose = 80=127.0.0.1:1, 80=127.0.0.1:2", "f")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.contains("--expose 80/tcp is given twice (to 127.0.0.1:1 and to 127.0.0.1:2)"),
            "{e}"
        );
        let e = Settings::from_config("forward = 1=10.0.0.1:1, 1=10.0.0.2:1", "f")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.contains("--forward 127.0.0.1:1/tcp is given twice"),
            "{e}"
        );
    }
}
