//! The umbra command line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use umbra::keys::PrivateKey;
use umbra::node::daemon::UserspaceConfig;
use umbra::node::settings::Settings;
use zeroize::Zeroizing;

/// umbra: a zero-trust, micro-segmenting mesh VPN speaking the WireGuard protocol.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    GenKey(GenKey),
    PubKey(PubKey),
    Policy(umbra::policy::cli::PolicyCmd),
    Up(Up),
}

/// Run this node of the mesh: find it in the policy by its key, bring up the
/// tunnel interface (or, with --userspace, an unprivileged userspace TCP/IP
/// stack), and enforce the policy until SIGINT/SIGTERM. SIGHUP or any change
/// to the policy file reloads it; a bad policy is refused and the running one
/// kept. Every option can also come from --config FILE (`key = value` lines)
/// or an UMBRA_* environment variable (UMBRA_POLICY, UMBRA_KEY,
/// UMBRA_USERSPACE, UMBRA_FORWARD, UMBRA_EXPOSE, ...); the command line wins,
/// then the environment, then the file.
#[derive(FromArgs)]
#[argh(subcommand, name = "up")]
struct Up {
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
    /// after setup, become this user (name or UID:GID; default: stay, or
    /// $UMBRA_USER), keeping only CAP_NET_ADMIN (TUN mode) or nothing
    #[argh(option)]
    user: Option<String>,
    /// do not confine the running node (no capability drop, no-new-privs,
    /// Landlock or seccomp); for debugging only
    #[argh(switch)]
    no_confine: bool,
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
            idle_timeout: self.idle_timeout.map(std::time::Duration::from_secs),
            max_connections: self.max_connections,
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

/// Print a new private key (base64, as `wg genkey` does).
#[derive(FromArgs)]
#[argh(subcommand, name = "genkey")]
struct GenKey {}

/// Read a private key on standard input and print its public key (as `wg pubkey`).
#[derive(FromArgs)]
#[argh(subcommand, name = "pubkey")]
struct PubKey {}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::GenKey(_) => genkey(),
        Command::PubKey(_) => pubkey(),
        Command::Policy(cmd) => return umbra::policy::cli::run(cmd),
        Command::Up(up) => run_up(up),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("umbra: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run_up(up: Up) -> Result<(), String> {
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
    let policy = s
        .policy
        .ok_or("no policy: give --policy, UMBRA_POLICY or `policy =` in --config")?;
    let key = s
        .key
        .ok_or("no key: give --key, UMBRA_KEY or `key =` in --config")?;
    let userspace = s.userspace.unwrap_or(false);
    if !userspace && (!s.forward.is_empty() || !s.expose.is_empty()) {
        return Err("--forward and --expose need --userspace".into());
    }
    let user = up.user.clone().or_else(|| std::env::var("UMBRA_USER").ok());
    umbra::node::daemon::run(umbra::node::daemon::UpConfig {
        confine: !up.no_confine,
        user,
        policy: PathBuf::from(policy),
        key: PathBuf::from(key),
        interface: s.interface.unwrap_or_else(|| "umbra0".into()),
        listen_port: s.listen_port,
        mtu: s.mtu.unwrap_or(1420),
        hosts_file: PathBuf::from(s.hosts_file.unwrap_or_else(|| "/etc/hosts".into())),
        userspace: userspace.then_some(UserspaceConfig {
            forward: s.forward,
            expose: s.expose,
            idle_timeout: s.idle_timeout,
            max_connections: s.max_connections,
        }),
    })
}

fn genkey() -> Result<(), String> {
    let key = PrivateKey::generate().map_err(|e| format!("no randomness available: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.to_base64().as_str()).map_err(|e| e.to_string())
}

fn pubkey() -> Result<(), String> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let key = PrivateKey::from_base64(&text).map_err(|e| format!("pubkey: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.public_key()).map_err(|e| e.to_string())
}
