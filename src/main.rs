//! The umbra command line.

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
    Policy(umbra::policy::cli::PolicyCmd),
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
