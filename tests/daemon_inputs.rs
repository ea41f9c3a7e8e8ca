//! `umbra up` against hostile files and options (issue 9, defect 4 and the
//! MTU check): whatever sits at the key or policy path, the node refuses it
//! promptly with a clear error — it never hangs, never reads without bound.
//! Runs unprivileged (`--userspace`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UMBRA: &str = env!("CARGO_BIN_EXE_umbra");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("umbra-inputs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn genkey(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let out = Command::new(UMBRA).arg("genkey").output().unwrap();
    std::fs::write(path, &out.stdout).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = Command::new(UMBRA)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &out.stdout).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn mkfifo(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs `umbra up --userspace ARGS` for at most `limit`; returns its stderr
/// if it exited by itself, or panics naming what it was doing.
fn up_must_refuse(args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(UMBRA)
        .args(["up", "--userspace", "--listen-port", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "umbra up {args:?} succeeded: {err}");
            return err;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("umbra up {args:?} still running after {limit:?}: it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn policy_for(key: &str) -> String {
    format!("node me key {key} addr 10.9.0.1/24 roles x\n")
}

#[test]
fn a_fifo_as_key_is_refused_not_waited_on() {
    let dir = scratch("fifo-key");
    genkey(&dir.join("real.key"));
    mkfifo(&dir.join("key"));
    std::fs::write(dir.join("p"), "").unwrap();
    let err = up_must_refuse(
        &[
            "--key",
            dir.join("key").to_str().unwrap(),
            "--policy",
            dir.join("p").to_str().unwrap(),
        ],
        Duration::from_secs(5),
    );
    assert!(err.contains("FIFO"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_or_device_as_policy_is_refused() {
    let dir = scratch("fifo-policy");
    genkey(&dir.join("key"));
    mkfifo(&dir.join("p"));
    let key = dir.join("key");
    let err = up_must_refuse(
        &[
            "--key",
            key.to_str().unwrap(),
            "--policy",
            dir.join("p").to_str().unwrap(),
        ],
        Duration::from_secs(5),
    );
    assert!(err.contains("FIFO"), "{err}");
    let err = up_must_refuse(
        &["--key", key.to_str().unwrap(), "--policy", "/dev/zero"],
        Duration::from_secs(5),
    );
    assert!(err.contains("character device"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_huge_policy_is_refused_before_it_is_read() {
    let dir = scratch("huge");
    let public = genkey(&dir.join("key"));
    let mut text = policy_for(&public);
    text.push_str(&"#".repeat(17 << 20));
    std::fs::write(dir.join("p"), text).unwrap();
    let err = up_must_refuse(
        &[
            "--key",
            dir.join("key").to_str().unwrap(),
            "--policy",
            dir.join("p").to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert!(err.contains("larger than"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_mtu_the_buffers_cannot_hold_is_refused() {
    let dir = scratch("mtu");
    let public = genkey(&dir.join("key"));
    std::fs::write(dir.join("p"), policy_for(&public)).unwrap();
    for mtu in ["1969", "9000", "100"] {
        let err = up_must_refuse(
            &[
                "--key",
                dir.join("key").to_str().unwrap(),
                "--policy",
                dir.join("p").to_str().unwrap(),
                "--mtu",
                mtu,
            ],
            Duration::from_secs(5),
        );
        assert!(err.contains("--mtu"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_policy_with_a_byte_order_mark_loads() {
    let dir = scratch("bom");
    let public = genkey(&dir.join("key"));
    // A policy check on a file that starts with a UTF-8 BOM.
    std::fs::write(dir.join("p"), format!("\u{feff}{}", policy_for(&public))).unwrap();
    let out = Command::new(UMBRA)
        .args(["policy", "check", dir.join("p").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("error"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
