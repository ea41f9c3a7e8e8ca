//! The umbra command line: argument parsing and the command front-ends.
//! Everything here is binary-only; the library (`umbra`) does the work.
//!
//! - `up`: up.rs (settings layering, then `umbra::daemon::run`)
//! - `status`, `flows`: status.rs (control-socket client and text rendering)
//! - `policy ...`: policy.rs (offline policy tools)
//! - `genkey`, `pubkey`, `installkey`: below

mod policy;
mod status;
mod up;

use std::io::{Read, Write};
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
    InstallKey(InstallKey),
    Policy(policy::PolicyCmd),
    Up(Box<up::Up>),
    Status(status::Status),
    Flows(status::Flows),
}

/// Print a new private key (base64, as `wg genkey` does).
#[derive(FromArgs)]
#[argh(subcommand, name = "genkey")]
struct GenKey {}

/// Read a private key on standard input and print its public key (as `wg pubkey`).
#[derive(FromArgs)]
#[argh(subcommand, name = "pubkey")]
struct PubKey {}

/// Copy a private key into a file only this user can read (mode 600): for a
/// Kubernetes Secret, which the kubelet mounts group-readable (0440) when the
/// pod sets fsGroup, and which `umbra up` therefore refuses. Run it in an
/// init container with the umbra image; the source may be readable by its
/// group, never by others. Prints the public key.
#[derive(FromArgs)]
#[argh(subcommand, name = "installkey")]
struct InstallKey {
    /// the key file to read (e.g. /etc/umbra/secret/key)
    #[argh(positional)]
    from: std::path::PathBuf,
    /// the file to write (e.g. /run/umbra/key on a memory-backed volume)
    #[argh(positional)]
    to: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::GenKey(_) => genkey(),
        Command::PubKey(_) => pubkey(),
        Command::InstallKey(k) => installkey(&k),
        Command::Policy(cmd) => return policy::run(cmd),
        Command::Up(up) => up::run(*up),
        Command::Status(s) => return status::status(s),
        Command::Flows(f) => status::flows(f),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("umbra: {msg}");
            ExitCode::FAILURE
        }
    }
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

fn installkey(k: &InstallKey) -> Result<(), String> {
    let key = PrivateKey::load_group_readable(&k.from).map_err(|e| format!("installkey: {e}"))?;
    key.save(&k.to).map_err(|e| format!("installkey: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "installed the key of {} as {} (mode 600)",
        key.public_key(),
        k.to.display()
    )
    .map_err(|e| e.to_string())
}
