//! The `umbra genkey` / `umbra pubkey` commands, run as a user would, and
//! compared with wireguard-tools' `wg` (installed by scripts/ci-deps.sh).

use std::io::Write;
use std::process::{Command, Output, Stdio};

const UMBRA: &str = env!("CARGO_BIN_EXE_umbra");

fn run(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    // umbra may stop reading early (it caps its input), so a broken pipe
    // here is expected; the exit status is what the tests check.
    if let Err(e) = child.stdin.take().expect("stdin is piped").write_all(stdin) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing to {program}: {e}"
        );
    }
    child.wait_with_output().expect("wait for child")
}

fn stdout_line(out: &Output) -> String {
    String::from_utf8(out.stdout.clone())
        .expect("utf-8 output")
        .trim_end()
        .to_string()
}

fn decode_b64(s: &str) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|&b| b == c).expect("base64 alphabet") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn genkey() -> String {
    let out = run(UMBRA, &["genkey"], b"");
    assert!(
        out.status.success(),
        "umbra genkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_line(&out)
}

/// Runs wireguard-tools' `wg`. It is a test dependency: if it is missing the
/// comparison cannot be made, and the test must fail, not pass quietly.
fn wg(args: &[&str], stdin: &[u8]) -> String {
    let found = Command::new("wg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`wg` (wireguard-tools) is needed to check umbra against it but could not be run; \
         run scripts/ci-deps.sh to install the test dependencies"
    );
    let out = run("wg", args, stdin);
    assert!(
        out.status.success(),
        "wg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_line(&out)
}

#[test]
fn genkey_prints_a_clamped_base64_key() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let key = genkey();
        assert_eq!(key.len(), 44, "key {key:?} is not 44 characters");
        assert!(
            key.ends_with('=') && !key.ends_with("=="),
            "key {key:?} is not padded like wg's"
        );
        let raw = decode_b64(&key);
        assert_eq!(raw.len(), 32);
        assert_eq!(raw[0] & 7, 0, "low 3 bits of the first byte must be clear");
        assert_eq!(raw[31] & 0x80, 0, "top bit of the last byte must be clear");
        assert_eq!(
            raw[31] & 0x40,
            0x40,
            "second-highest bit of the last byte must be set"
        );
        assert!(seen.insert(key), "genkey repeated a key");
    }
}

#[test]
fn pubkey_matches_wireguard_tools() {
    let mut keys: Vec<String> = (0..5).map(|_| genkey()).collect();
    // Keys from `wg genkey` too, and an unclamped one: both tools clamp on input.
    keys.push(wg(&["genkey"], b""));
    keys.push("/////////////////////////////////////////38=".to_string());
    keys.push("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string());
    for private in &keys {
        let ours = run(UMBRA, &["pubkey"], format!("{private}\n").as_bytes());
        assert!(
            ours.status.success(),
            "umbra pubkey rejected {private}: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert_eq!(
            stdout_line(&ours),
            wg(&["pubkey"], format!("{private}\n").as_bytes()),
            "public keys differ for private key {private}"
        );
    }
}

#[test]
fn pubkey_accepts_input_without_trailing_newline() {
    let private = genkey();
    let a = run(UMBRA, &["pubkey"], private.as_bytes());
    let b = run(UMBRA, &["pubkey"], format!("{private}\n").as_bytes());
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn pubkey_rejects_bad_input_with_a_helpful_message() {
    let cases: &[&[u8]] = &[
        b"",
        b"not a key\n",
        b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", // missing padding
        b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", // too long
        b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!=\n", // bad character
        b"\xff\xfe\xfd\n",                                // not UTF-8
    ];
    for input in cases {
        let out = run(UMBRA, &["pubkey"], input);
        assert!(
            !out.status.success(),
            "pubkey accepted {:?}",
            String::from_utf8_lossy(input)
        );
        assert!(
            out.stdout.is_empty(),
            "pubkey printed something for bad input"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("umbra"),
            "error should name the program: {err}"
        );
        assert!(
            err.contains("44 characters") || err.contains("standard input"),
            "error should say what a key looks like: {err}"
        );
    }
    // A huge input is refused rather than read forever.
    let out = run(UMBRA, &["pubkey"], &vec![b'A'; 1 << 20]);
    assert!(!out.status.success());
}
