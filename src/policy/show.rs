//! `umbra policy show --node NAME`: one node's compiled view.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::model::NodeId;
use super::ports::PortRange;
use super::table::Allowed;
use super::Policy;
use crate::time::{format_rfc3339, unix_secs};

const MAX_LISTED: usize = 12;

fn names(p: &Policy, ids: &[NodeId]) -> String {
    let mut shown: Vec<&str> = ids
        .iter()
        .take(MAX_LISTED)
        .filter_map(|id| p.node(*id))
        .map(|n| n.name.as_str())
        .collect();
    shown.sort_unstable();
    let mut s = shown.join(", ");
    if ids.len() > MAX_LISTED {
        let _ = write!(s, " and {} more", ids.len() - MAX_LISTED);
    }
    s
}

fn allowed_text(p: &Policy, a: &Allowed) -> String {
    let what = match a.proto {
        None if a.others => "any other protocol".to_string(),
        None => "any protocol".to_string(),
        Some(proto) => PortRange {
            proto,
            lo: a.lo,
            hi: a.hi,
        }
        .to_string(),
    };
    let by = a
        .verdict
        .rule
        .and_then(|r| p.rule(r))
        .map_or_else(String::new, |r| format!(" (by {})", r.label));
    let audit = a
        .verdict
        .audit
        .and_then(|r| p.rule(r))
        .map_or_else(String::new, |r| format!(" [audit {}]", r.label));
    format!("{what}{by}{audit}")
}

/// Renders what `node` accepts, whom it may reach, and its peers, at `now`.
pub fn show(p: &Policy, node: NodeId, now: SystemTime) -> String {
    let t = p.compile_for(node, now);
    let mut out = format!("policy {} ({})\n", p.id(), p.file_name());
    let Some(n) = p.node(node) else { return out };
    let addrs: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "node {}\n  key        {}\n  addresses  {}",
        n.name,
        n.key,
        addrs.join(", ")
    );
    if !n.roles.is_empty() {
        let _ = writeln!(out, "  roles      {}", n.roles.join(", "));
    }
    if !n.serves.is_empty() {
        let s: Vec<String> = n.serves.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  serves     {}", s.join(", "));
    }
    if let Some(e) = &n.endpoint {
        let _ = writeln!(out, "  endpoint   {e}");
    }
    if let Some(k) = n.keepalive {
        let _ = writeln!(out, "  keepalive  {k}s");
    }
    if let Some(psk) = &n.psk_file {
        let _ = writeln!(out, "  psk        {}", psk.display());
    }
    out.push_str("accepts (ingress):\n");
    let ingress = t.ingress_view();
    if ingress.is_empty() {
        out.push_str("  nothing\n");
    }
    for (mut members, segs) in ingress {
        // Traffic to itself never crosses the tunnel.
        members.retain(|m| *m != node);
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  from {}:", names(p, &members));
        for (net, allowed) in segs {
            let list: Vec<String> = allowed.iter().map(|a| allowed_text(p, a)).collect();
            let _ = writeln!(out, "    to {net}: {}", list.join(", "));
        }
    }
    out.push_str("may reach (egress):\n");
    let egress = t.egress_view();
    if egress.is_empty() {
        out.push_str("  nothing\n");
    }
    for (via, net, allowed) in egress {
        let list: Vec<String> = allowed.iter().map(|a| allowed_text(p, a)).collect();
        let via = p.node(via).map_or("?", |n| n.name.as_str());
        let _ = writeln!(out, "  {via} {net}: {}", list.join(", "));
    }
    let _ = writeln!(
        out,
        "peers answered (all others are cloaked): {}",
        if t.peers().is_empty() {
            "none".into()
        } else {
            names(p, t.peers())
        }
    );
    if let Some(e) = t.next_expiry() {
        let _ = writeln!(
            out,
            "next rule expiry: {} (recompile then)",
            format_rfc3339(unix_secs(e))
        );
    }
    let _ = writeln!(out, "compiled table: {} bytes", t.memory_bytes());
    out
}
