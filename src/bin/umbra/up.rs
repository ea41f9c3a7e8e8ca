//! `umbra up`: layers the settings (config file, environment, command line)
//! and runs the node.

use std::path::PathBuf;

use argh::FromArgs;
use umbra::daemon::settings::Settings;
use umbra::daemon::{UpConfig, UserspaceConfig};
use umbra::observe::ObserveConfig;

/// Run this node of the mesh: find it in the policy by its key, bring up the
/// tunnel interface (or, with --userspace, an unprivileged userspace TCP/IP
/// stack), and enforce the policy until SIGINT/SIGTERM. SIGHUP or any change
/// to the policy file reloads it; a bad policy is refused and the running one
/// kept. Every option but --no-confine can also come from --config FILE
/// (`key = value` lines) or an UMBRA_* environment variable (UMBRA_POLICY,
/// UMBRA_KEY, UMBRA_USERSPACE, UMBRA_FORWARD, UMBRA_METRICS, ...); the command
/// line wins, then the environment, then the file.
#[derive(FromArgs)]
#[argh(subcommand, name = "up")]
pub struct Up {
    /// the mesh policy file, shared by every node
    #[argh(option)]
    policy: Option<String>,
    /// this node's private key file (mode 600), as `umbra genkey` writes it
    #[argh(option)]
    key: Option<String>,
    /// settings file: `key = value` lines (policy, key, userspace, forward,
    /// expose, ...); default: $UMBRA_CONFIG if set
    #[argh(option)]
    config: Option<PathBuf>,
    /// TUN interface name (default: umbra0)
    #[argh(option)]
    interface: Option<String>,
    /// UDP port to listen on (default: this node's endpoint port in the
    /// policy, else 51820)
    #[argh(option)]
    listen_port: Option<u16>,
    /// tunnel MTU (default: 1420)
    #[argh(option)]
    mtu: Option<u32>,
    /// log level: debug, info or warn (default: info)
    #[argh(option)]
    log_level: Option<String>,
    /// hosts file used to resolve endpoint names (default: /etc/hosts)
    #[argh(option)]
    hosts_file: Option<String>,
    /// no TUN device: run a userspace TCP/IP stack (no privileges needed)
    #[argh(switch)]
    userspace: bool,
    /// userspace: [ADDR:]LOCALPORT=TARGET:PORT[/tcp|/udp]: carry a local
    /// listener's connections into the mesh; repeatable
    #[argh(option)]
    forward: Vec<String>,
    /// userspace: PORT[/tcp|/udp]=LOCALADDR:LOCALPORT: serve a port on this
    /// node's tunnel address from a local socket; repeatable
    #[argh(option)]
    expose: Vec<String>,
    /// userspace: seconds without traffic before a proxied TCP connection
    /// is reset (default: 600)
    #[argh(option)]
    idle_timeout: Option<u64>,
    /// userspace: most concurrent proxied TCP connections (default: 4096)
    #[argh(option)]
    max_connections: Option<usize>,
    /// control socket for `umbra status`/`flows`, or `none` (default:
    /// /run/umbra/INTERFACE.sock as root, else under $XDG_RUNTIME_DIR/umbra/)
    #[argh(option)]
    control: Option<String>,
    /// write a JSON-lines flow log to PATH (`-`: standard output);
    /// SIGUSR1 reopens it
    #[argh(option)]
    flow_log: Option<String>,
    /// serve Prometheus /metrics and /healthz on ADDR:PORT (default: off)
    #[argh(option)]
    metrics: Option<String>,
    /// TUN mode: WireGuard UAPI socket for `wg show`, or `none` (default:
    /// /var/run/wireguard/INTERFACE.sock)
    #[argh(option)]
    uapi: Option<String>,
    /// after setup, become this user (name or UID:GID; default: stay, or
    /// $UMBRA_USER), keeping only CAP_NET_ADMIN (TUN mode) or nothing
    #[argh(option)]
    user: Option<String>,
    /// do not confine the running node (no capability drop, no-new-privs,
    /// Landlock or seccomp); for debugging only
    #[argh(switch)]
    no_confine: bool,
    /// move packets one system call each: no UDP GSO/GRO batching and no
    /// TUN segmentation offload (same as UMBRA_OFFLOAD=false)
    #[argh(switch)]
    no_offload: bool,
}

impl Up {
    /// The command line as a settings layer.
    fn settings(&self) -> Result<Settings, String> {
        let mut s = Settings {
            policy: self.policy.clone(),
            key: self.key.clone(),
            interface: self.interface.clone(),
            listen_port: self.listen_port,
            mtu: self.mtu,
            log_level: self.log_level.clone(),
            hosts_file: self.hosts_file.clone(),
            userspace: self.userspace.then_some(true),
            offload: self.no_offload.then_some(false),
            idle_timeout: self.idle_timeout.map(std::time::Duration::from_secs),
            max_connections: self.max_connections,
            control: self.control.clone(),
            flow_log: self.flow_log.clone(),
            metrics: self.metrics.clone(),
            uapi: self.uapi.clone(),
            user: self.user.clone(),
            ..Settings::default()
        };
        for f in &self.forward {
            s.set("forward", f)?;
        }
        for e in &self.expose {
            s.set("expose", e)?;
        }
        Ok(s)
    }
}

pub fn run(up: Up) -> Result<(), String> {
    let config = up
        .config
        .clone()
        .or_else(|| std::env::var_os("UMBRA_CONFIG").map(PathBuf::from));
    let file = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
            Settings::from_config(&text, &path.display().to_string())?
        }
        None => Settings::default(),
    };
    let env = Settings::from_env(|k| std::env::var(k).ok())?;
    let s = file.overlay(env).overlay(up.settings()?);
    s.validate()?;
    umbra::log::set_level(umbra::log::parse_level(
        s.log_level.as_deref().unwrap_or("info"),
    )?);
    let userspace = s.userspace.unwrap_or(false);
    let interface = s.interface.clone().unwrap_or_else(|| "umbra0".into());
    let observe = observe_config(&s, &interface, userspace)?;
    let policy = s
        .policy
        .ok_or("no policy: give --policy, UMBRA_POLICY or `policy =` in --config")?;
    let key = s
        .key
        .ok_or("no key: give --key, UMBRA_KEY or `key =` in --config")?;
    if !userspace && (!s.forward.is_empty() || !s.expose.is_empty()) {
        return Err("--forward and --expose need --userspace".into());
    }
    let user = s.user;
    umbra::daemon::run(UpConfig {
        confine: !up.no_confine,
        offload: s.offload.unwrap_or(true),
        user,
        policy: PathBuf::from(policy),
        key: PathBuf::from(key),
        interface,
        listen_port: s.listen_port,
        mtu: s.mtu.unwrap_or(1420),
        hosts_file: PathBuf::from(s.hosts_file.unwrap_or_else(|| "/etc/hosts".into())),
        userspace: userspace.then_some(UserspaceConfig {
            forward: s.forward,
            expose: s.expose,
            idle_timeout: s.idle_timeout,
            max_connections: s.max_connections,
        }),
        observe,
    })
}

fn observe_config(s: &Settings, interface: &str, userspace: bool) -> Result<ObserveConfig, String> {
    use umbra::observe::client::default_path;
    let off = |v: &Option<String>| v.as_deref() == Some("none");
    let root = umbra::observe::client::uid() == 0;
    let control = match &s.control {
        _ if off(&s.control) => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(default_path(interface, root && !userspace)),
    };
    let uapi = match &s.uapi {
        _ if off(&s.uapi) => None,
        Some(p) => Some(PathBuf::from(p)),
        None if userspace => None,
        None => Some(PathBuf::from(format!(
            "/var/run/wireguard/{interface}.sock"
        ))),
    };
    let metrics = match &s.metrics {
        None => None,
        Some(a) => Some(
            a.parse()
                .map_err(|_| format!("metrics {a}: give ADDR:PORT, e.g. 127.0.0.1:9586"))?,
        ),
    };
    Ok(ObserveConfig {
        control,
        flow_log: s.flow_log.clone(),
        metrics,
        uapi,
        control_is_default: s.control.is_none(),
        uapi_is_default: s.uapi.is_none(),
    })
}
