//! The WireGuard cross-platform userspace API (the `get` half), so `wg show`
//! works against a TUN-mode node. Served on `/var/run/wireguard/<iface>.sock`
//! (root-only, as wireguard-go does).
//!
//! `get=1` answers with the listen port and every peer: public key,
//! endpoint, allowed IPs, latest handshake, byte counters, keepalive. The
//! private key and preshared keys are never sent (so `wg show` prints no
//! interface public key; `umbra status` does). `set=1` is refused with
//! `errno=-1` (EPERM): the policy file is the only way to configure a node.

use std::fmt::Write;

use super::conns::Step;
use super::proto::Status;
use crate::keys::PublicKey;

/// Largest request accepted (a `set` with many peers is refused anyway).
pub const MAX_REQUEST: usize = 64 * 1024;

/// What `set=1` gets: EPERM, negated as the protocol carries errors
/// (wireguard-go answers `errno=-22` for EINVAL; `wg` turns it back).
pub const SET_ERRNO: i32 = -libc::EPERM;

fn hex_key(b64: &str) -> Option<String> {
    let k = PublicKey::from_base64(b64).ok()?;
    Some(k.as_bytes().iter().map(|b| format!("{b:02x}")).collect())
}

/// The `get=1` answer for a status snapshot (blank line included).
pub fn render_get(s: &Status) -> String {
    let mut out = String::with_capacity(256 + 256 * s.peers.len());
    let _ = writeln!(out, "listen_port={}", s.listen_port);
    for p in &s.peers {
        let Some(key) = hex_key(&p.public_key) else {
            continue;
        };
        let _ = writeln!(out, "public_key={key}");
        if let Some(e) = &p.endpoint {
            let _ = writeln!(out, "endpoint={e}");
        }
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.keepalive_secs.unwrap_or(0)
        );
        for a in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={a}");
        }
        let _ = writeln!(
            out,
            "last_handshake_time_sec={}",
            p.latest_handshake_unix.unwrap_or(0)
        );
        let _ = writeln!(out, "last_handshake_time_nsec=0");
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "protocol_version=1");
    }
    out.push_str("errno=0\n\n");
    out
}

/// The protocol on the bytes a client sent so far: a request ends with
/// an empty line.
pub fn step(req: &[u8], status: impl FnOnce() -> Status) -> Step {
    if req.starts_with(b"get=1\n") {
        if req == b"get=1\n\n" {
            return Step::Reply(render_get(&status()).into_bytes());
        }
        return if req.len() > 7 {
            Step::Close
        } else {
            Step::More
        };
    }
    if req.starts_with(b"set=1\n") {
        if req.ends_with(b"\n\n") {
            return Step::Reply(format!("errno={SET_ERRNO}\n\n").into_bytes());
        }
        return Step::More;
    }
    // A prefix of either operation: wait; anything else: close.
    let ok_prefix = b"get=1\n".starts_with(req) || b"set=1\n".starts_with(req);
    if ok_prefix {
        Step::More
    } else {
        Step::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::proto::PeerStatus;

    fn st() -> Status {
        Status {
            listen_port: 51820,
            peers: vec![PeerStatus {
                name: "b".into(),
                public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=".into(),
                endpoint: Some("[fd00::1]:51821".into()),
                allowed_ips: vec!["10.0.0.2/32".into()],
                latest_handshake_unix: Some(1_700_000_000),
                rx_bytes: 5,
                tx_bytes: 6,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn reply(req: &[u8]) -> String {
        match step(req, st) {
            Step::Reply(r) => String::from_utf8(r).unwrap(),
            Step::More => "MORE".into(),
            Step::Close => "CLOSE".into(),
        }
    }

    #[test]
    fn get_lists_peers() {
        assert_eq!(reply(b"get=1\n"), "MORE");
        assert_eq!(reply(b"ge"), "MORE");
        let r = reply(b"get=1\n\n");
        assert!(r.starts_with("listen_port=51820\npublic_key=0000"), "{r}");
        assert!(r.contains("endpoint=[fd00::1]:51821\n"));
        assert!(r.contains("allowed_ip=10.0.0.2/32\n"));
        assert!(r.contains("last_handshake_time_sec=1700000000\n"));
        assert!(r.ends_with("tx_bytes=6\nprotocol_version=1\nerrno=0\n\n"));
        assert!(!r.contains("private_key"));
    }

    #[test]
    fn set_is_refused_and_garbage_closed() {
        assert_eq!(reply(b"set=1\nlisten_port=1\n"), "MORE");
        assert_eq!(reply(b"set=1\nlisten_port=1\n\n"), "errno=-1\n\n");
        assert_eq!(reply(b"hello\n\n"), "CLOSE");
        assert_eq!(reply(b"get=1\nextra\n\n"), "CLOSE");
        assert_eq!(reply(b"\x00\x01"), "CLOSE");
    }
}
