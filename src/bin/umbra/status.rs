//! `umbra status` and `umbra flows`: ask a running node over its control
//! socket and print the answer as text or JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use umbra::observe::client;
use umbra::observe::proto::{self, Flows as FlowList, Request, Response, Status as NodeStatus};

/// Show a running node: its key, data plane, policy, peers (handshakes,
/// traffic), tracked flows and drop counters.
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
pub struct Status {
    /// print JSON
    #[argh(switch)]
    json: bool,
    /// print nothing; exit 0 only if the node answers with its policy
    /// loaded and its data plane up (a liveness/readiness probe)
    #[argh(switch)]
    check: bool,
    /// the node's control socket (default: found from --interface)
    #[argh(option)]
    control: Option<PathBuf>,
    /// the node's interface name (default: umbra0)
    #[argh(option, default = "String::from(\"umbra0\")")]
    interface: String,
}

/// List a running node's tracked connections: 5-tuple, peer, direction,
/// admitting rule, age, bytes and packets each way.
#[derive(FromArgs)]
#[argh(subcommand, name = "flows")]
pub struct Flows {
    /// print JSON
    #[argh(switch)]
    json: bool,
    /// only the flows of this peer
    #[argh(option)]
    peer: Option<String>,
    /// the node's control socket (default: found from --interface)
    #[argh(option)]
    control: Option<PathBuf>,
    /// the node's interface name (default: umbra0)
    #[argh(option, default = "String::from(\"umbra0\")")]
    interface: String,
}

/// Prints to standard output; a closed pipe (`| head`) is not an error.
fn emit(out: &str) {
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

fn control_path(control: &Option<PathBuf>, interface: &str) -> PathBuf {
    control
        .clone()
        .unwrap_or_else(|| client::find_socket(interface))
}

pub fn status(s: Status) -> ExitCode {
    let path = control_path(&s.control, &s.interface);
    let answer = client::ask(&path, &Request::Status);
    let st = match answer {
        Ok(Response::Status(st)) => st,
        Ok(Response::Error(e)) => {
            eprintln!("umbra status: the node says: {e}");
            return ExitCode::FAILURE;
        }
        Ok(_) => {
            eprintln!("umbra status: unexpected answer from {}", path.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            if !s.check {
                eprintln!("umbra status: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if s.check {
        return if st.data_plane_up && !st.policy_id.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let out = if s.json {
        serde_json::to_string_pretty(&st).unwrap_or_default() + "\n"
    } else {
        status_text(&st)
    };
    emit(&out);
    ExitCode::SUCCESS
}

pub fn flows(f: Flows) -> Result<(), String> {
    let path = control_path(&f.control, &f.interface);
    let req = Request::Flows {
        peer: f.peer.clone(),
    };
    match client::ask(&path, &req)? {
        Response::Flows(list) => {
            let out = if f.json {
                serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
            } else {
                flows_text(&list)
            };
            emit(&out);
            Ok(())
        }
        Response::Error(e) => Err(format!("flows: the node says: {e}")),
        _ => Err(format!("flows: unexpected answer from {}", path.display())),
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
fn status_text(s: &NodeStatus) -> String {
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
        umbra::time::format_rfc3339(s.policy_loaded as i64)
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
fn flows_text(f: &FlowList) -> String {
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
