//! The client side of the control socket: `umbra status` and `umbra flows`
//! ask a running node and print its answer, as text or JSON.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{self, Flows, Request, Response, Status, MAX_RESPONSE};

/// The control socket path `umbra up` uses by default for `interface`:
/// `/run/umbra/<interface>.sock` when running as root (TUN mode needs
/// root), else under `$XDG_RUNTIME_DIR/umbra/`, else `/tmp/umbra-<uid>/`.
pub fn default_path(interface: &str, root: bool) -> PathBuf {
    let file = format!("{interface}.sock");
    if root {
        return Path::new("/run/umbra").join(file);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("umbra").join(file),
        _ => PathBuf::from(format!("/tmp/umbra-{}", uid())).join(file),
    }
}

/// The effective user id.
pub fn uid() -> u32 {
    crate::io::euid()
}

/// Where a client looks when not told: the first candidate that exists.
pub fn find_socket(interface: &str) -> PathBuf {
    let candidates = [
        default_path(interface, true),
        default_path(interface, false),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| default_path(interface, uid() == 0))
}

/// Sends one request and reads the answer.
pub fn ask(path: &Path, req: &Request) -> Result<Response, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is `umbra up` running with its control socket there? give --control PATH)",
            path.display()
        )
    })?;
    let timeout = Some(Duration::from_secs(10));
    let _ = s.set_read_timeout(timeout);
    let _ = s.set_write_timeout(timeout);
    s.write_all(&proto::encode(req))
        .map_err(|e| format!("sending to {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some((resp, _)) =
            proto::decode_frame::<Response>(&buf, MAX_RESPONSE).map_err(|e| e.to_string())?
        {
            return Ok(resp);
        }
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("reading from {}: {e}", path.display()))?;
        if n == 0 {
            return Err(format!(
                "{} closed the connection without an answer",
                path.display()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m {}s ago", s / 60, s % 60),
        _ => format!("{}h {}m ago", s / 3600, s % 3600 / 60),
    }
}

/// `umbra status` as text.
pub fn status_text(s: &Status) -> String {
    let mut o = String::new();
    let plane = match &s.interface {
        Some(i) => format!("{} ({i})", s.data_plane),
        None => s.data_plane.clone(),
    };
    let _ = writeln!(o, "node: {}", s.node);
    let _ = writeln!(o, "  public key: {}", s.public_key);
    let _ = writeln!(
        o,
        "  data plane: {plane}, {}",
        if s.data_plane_up { "up" } else { "DOWN" }
    );
    let _ = writeln!(o, "  listening port: {}", s.listen_port);
    let _ = writeln!(
        o,
        "  policy: {} ({}), loaded at {}",
        s.policy_id,
        s.policy_file,
        crate::time::format_rfc3339(s.policy_loaded as i64)
    );
    let _ = writeln!(o, "  uptime: {}s", s.uptime_secs);
    for p in &s.peers {
        let _ = writeln!(o, "\npeer: {} ({})", p.name, p.public_key);
        if !p.roles.is_empty() {
            let _ = writeln!(o, "  roles: {}", p.roles.join(", "));
        }
        let _ = writeln!(
            o,
            "  endpoint: {}",
            p.endpoint.as_deref().unwrap_or("(none)")
        );
        let _ = writeln!(o, "  allowed ips: {}", p.allowed_ips.join(", "));
        let hs = p
            .latest_handshake_ms
            .map_or_else(|| "never".to_string(), ago);
        let _ = writeln!(
            o,
            "  latest handshake: {hs}{}",
            if p.session { "" } else { " (no session)" }
        );
        let _ = writeln!(
            o,
            "  transfer: {} received ({} packets), {} sent ({} packets)",
            bytes(p.rx_bytes),
            p.rx_packets,
            bytes(p.tx_bytes),
            p.tx_packets
        );
        if let Some(k) = p.keepalive_secs {
            let _ = writeln!(o, "  persistent keepalive: every {k}s");
        }
    }
    let _ = writeln!(o, "\nflows: {} of {}", s.flows_total, s.flows_capacity);
    for c in &s.flows {
        let _ = writeln!(o, "  {}: {}", c.name, c.value);
    }
    let _ = writeln!(o, "drops:");
    if s.drops.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for c in &s.drops {
        let _ = writeln!(o, "  {}: {}", c.name, c.value);
    }
    let list = |v: &[proto::Count]| {
        v.iter()
            .map(|c| format!("{} {}", c.value, c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(o, "handshakes: {}", list(&s.handshakes));
    let _ = writeln!(o, "policy reloads: {}", list(&s.reloads));
    if let Some((w, l)) = s.flow_log {
        let _ = writeln!(o, "flow log: {w} records written, {l} lost");
    }
    let offloads = if s.offloads.is_empty() {
        "none".to_string()
    } else {
        s.offloads.join(", ")
    };
    let _ = writeln!(o, "offloads: {offloads}");
    if !s.io.is_empty() {
        let _ = writeln!(o, "packet i/o: {}", list(&s.io));
    }
    o
}

/// `umbra flows` as text.
pub fn flows_text(f: &Flows) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<5} {:<44} {:<12} {:<7} {:<16} {:<12} {:>8} {:>22} {:>22}",
        "PROTO", "FLOW", "PEER", "DIR", "RULE", "STATE", "AGE", "INITIATOR SENT", "RESPONDER SENT"
    );
    for x in &f.flows {
        let ends = |a: &str, p: u16| {
            if a.contains(':') {
                format!("[{a}]:{p}")
            } else {
                format!("{a}:{p}")
            }
        };
        let flow = format!(
            "{} -> {}",
            ends(&x.src, x.src_port),
            ends(&x.dst, x.dst_port)
        );
        let _ = writeln!(
            o,
            "{:<5} {:<44} {:<12} {:<7} {:<16} {:<12} {:>7}s {:>22} {:>22}",
            x.proto,
            flow,
            x.peer,
            x.direction,
            x.rule,
            x.state,
            x.age_ms / 1000,
            format!("{} / {} pkts", bytes(x.bytes[0]), x.packets[0]),
            format!("{} / {} pkts", bytes(x.bytes[1]), x.packets[1]),
        );
    }
    if f.total as usize > f.flows.len() {
        let _ = writeln!(o, "({} more not listed)", f.total as usize - f.flows.len());
    }
    o
}
