//! The umbra command line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use umbra::keys::PrivateKey;
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
/// tunnel interface, and enforce the policy until SIGINT/SIGTERM. SIGHUP or
/// any change to the policy file reloads it; a bad policy is refused and the
/// running one kept.
#[derive(FromArgs)]
#[argh(subcommand, name = "up")]
struct Up {
    /// the mesh policy file, shared by every node
    #[argh(option)]
    policy: PathBuf,
    /// this node's private key file (mode 600), as `umbra genkey` writes it
    #[argh(option)]
    key: PathBuf,
    /// TUN interface name (default: umbra0)
    #[argh(option, default = "String::from(\"umbra0\")")]
    interface: String,
    /// UDP port to listen on (default: this node's endpoint port in the
    /// policy, else 51820)
    #[argh(option)]
    listen_port: Option<u16>,
    /// tunnel MTU (default: 1420)
    #[argh(option, default = "1420")]
    mtu: u32,
    /// log level: debug, info or warn (default: info)
    #[argh(option, default = "String::from(\"info\")")]
    log_level: String,
    /// hosts file used to resolve endpoint names (default: /etc/hosts)
    #[argh(option, default = "PathBuf::from(\"/etc/hosts\")")]
    hosts_file: PathBuf,
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
    umbra::log::set_level(umbra::log::parse_level(&up.log_level)?);
    umbra::node::daemon::run(umbra::node::daemon::UpConfig {
        policy: up.policy,
        key: up.key,
        interface: up.interface,
        listen_port: up.listen_port,
        mtu: up.mtu,
        hosts_file: up.hosts_file,
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
