//! The packet tracer behind `umbra policy explain`.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::ast::{EndRef, RuleKind};
use super::atoms::{end_ref, split_target};
use super::diag::Span;
use super::eval::{evaluate, quarantine_of, rule_covers};
use super::model::{NodeId, Rule};
use super::ports::{Flow, PortRange};
use super::{Action, Policy, Verdict};
use crate::net::IpProtocol;
use crate::time::format_rfc3339;

fn resolve_source(p: &Policy, text: &str) -> Result<NodeId, String> {
    let span = Span::default();
    let e = end_ref(text, span).map_err(|d| d.message)?;
    let mut errs = Vec::new();
    let nodes = p.model.end_sources(&e, span, &mut errs);
    if let Some(e) = errs.first() {
        return Err(e.message.clone());
    }
    match nodes.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!(
            "FROM must name one node (a name, tunnel address or key), `{text}` names {}",
            nodes.len()
        )),
    }
}

/// Explains what happens to flows from `from` to `to` (`TARGET[:PORT/PROTO]`).
pub fn explain(p: &Policy, from: &str, to: &str, now: i64) -> Result<String, String> {
    let src = resolve_source(p, from)?;
    let (target, flow) = split_target(to, Span::default()).map_err(|d| d.message)?;
    if matches!(target, EndRef::Everyone) {
        return Err("TO must be a node, role:NAME, address or key, not *".into());
    }
    let mut errs = Vec::new();
    let paths = p.model.end_paths(&target, Span::default(), &mut errs);
    if let Some(e) = errs.first() {
        return Err(e.message.clone());
    }
    let mut out = format!("policy {} ({})\n", p.id(), p.file_name());
    for (via, ip) in paths {
        if via == src && p.node(src).is_some_and(|n| n.owns(ip)) {
            continue;
        }
        match flow {
            Some(f) => trace(p, &mut out, src, via, ip, f, now),
            None => summary(p, &mut out, src, via, ip, now),
        }
    }
    Ok(out)
}

fn name(p: &Policy, id: NodeId) -> &str {
    p.node(id).map_or("?", |n| n.name.as_str())
}

fn action_text(v: &Verdict) -> &'static str {
    match v.action {
        Action::Allow => "ALLOW",
        Action::Drop => "DROP (silently)",
        Action::Reject => "REJECT (answered with RST/ICMP)",
    }
}

fn rule_ref(p: &Policy, r: &Rule) -> String {
    format!("{} at {}:{}: {}", r.label, p.file_name(), r.line, r.text)
}

fn trace(p: &Policy, out: &mut String, src: NodeId, via: NodeId, ip: IpAddr, f: Flow, now: i64) {
    let m = &p.model;
    let v = evaluate(m, src, via, ip, f, now);
    let _ = writeln!(
        out,
        "{} -> {ip} {} (received by {})",
        name(p, src),
        flow_text(f),
        name(p, via)
    );
    let _ = write!(out, "  verdict: {}", action_text(&v));
    match v.rule.and_then(|r| p.rule(r)) {
        Some(r) => {
            let _ = writeln!(out, ", decided by {}", rule_ref(p, r));
        }
        None => {
            let _ = writeln!(out, ": no rule allows this flow (default deny)");
        }
    }
    let (Some(s), Some(d)) = (m.nodes.get(src.index()), m.nodes.get(via.index())) else {
        return;
    };
    for (who, node) in [("source", s), ("receiver", d)] {
        if let Some(q) = quarantine_of(m, node, now).and_then(|q| p.rule(q)) {
            let _ = writeln!(
                out,
                "  {who} {} is quarantined by {}",
                node.name,
                rule_ref(p, q)
            );
        }
    }
    let mut any = false;
    for r in &m.rules {
        if r.kind == RuleKind::Quarantine || !r.matches_source(s) || !rule_covers(m, r, via, ip, f)
        {
            continue;
        }
        if !any {
            let _ = writeln!(out, "  matching rules:");
            any = true;
        }
        let role = if !r.active(now) {
            format!(
                "expired at {} (ignored)",
                r.until.map_or_else(String::new, format_rfc3339)
            )
        } else if r.audit {
            format!(
                "audit only: would {} (logged, not enforced)",
                if r.kind == RuleKind::Deny {
                    "deny"
                } else {
                    "allow"
                }
            )
        } else if Some(r.id) == v.rule {
            "decides".into()
        } else if r.kind == RuleKind::Deny {
            "denies (another deny decides)".into()
        } else if v.allowed() {
            "allows (another allow decides)".into()
        } else if v
            .rule
            .and_then(|q| p.rule(q))
            .is_some_and(|q| q.kind == RuleKind::Quarantine)
        {
            "allows, but overridden: quarantine beats everything".into()
        } else {
            "allows, but overridden: deny beats allow".into()
        };
        let _ = writeln!(
            out,
            "    {:<10} {}:{:<4} {:<48} {role}",
            r.label,
            p.file_name(),
            r.line,
            r.text
        );
    }
    if !any {
        let _ = writeln!(out, "  matching rules: none");
    }
}

fn flow_text(f: Flow) -> String {
    PortRange {
        proto: f.proto,
        lo: f.port,
        hi: f.port,
    }
    .to_string()
}

/// Without a port: every service port at this address and its verdict.
fn summary(p: &Policy, out: &mut String, src: NodeId, via: NodeId, ip: IpAddr, now: i64) {
    let m = &p.model;
    let _ = writeln!(
        out,
        "{} -> {ip} (received by {})",
        name(p, src),
        name(p, via)
    );
    let mut reachable = false;
    let mut lines = Vec::new();
    for s in &m.services {
        if !s.dests_at(via).iter().any(|d| d.net.contains(ip)) {
            continue;
        }
        let mut probes: Vec<(String, Flow)> = s
            .ports
            .ranges
            .iter()
            .map(|r| {
                (
                    r.to_string(),
                    Flow {
                        proto: r.proto,
                        port: r.lo,
                    },
                )
            })
            .collect();
        if s.ports.any {
            probes.push((
                "any".into(),
                Flow {
                    proto: IpProtocol(0),
                    port: 0,
                },
            ));
        }
        for (label, f) in probes {
            let v = evaluate(m, src, via, ip, f, now);
            reachable |= v.allowed();
            lines.push(format!(
                "    {:<16} {label:<16} {}",
                s.name,
                p.describe_verdict(&v)
            ));
        }
    }
    if lines.is_empty() {
        let _ = writeln!(out, "  no service lives at this address");
    } else {
        let _ = writeln!(out, "  services at this address:");
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
    let _ = writeln!(out, "  reachable: {}", if reachable { "yes" } else { "no" });
}
