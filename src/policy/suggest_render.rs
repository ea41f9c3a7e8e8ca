//! The text `umbra policy suggest` prints: policy lines to append, every
//! finding as a `#` comment so the whole output can be appended as is.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::flowlog_agg::ReadStats;
use super::flowlog_agg::Tally;
use super::model::NodeId;
use super::ports::Flow;
use super::suggest::{Coverage, Misfit, Suggestion};
use super::suggest_group::{segment_label, Segment, Target, Unit};
use super::Policy;
use crate::time::format_rfc3339;

/// `1.2 MB`, decimal units.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if b < 1000 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1000.0;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

fn pct(part: u64, total: u64) -> String {
    if total == 0 {
        "0.0%".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / total as f64)
    }
}

/// `12 flows, 3.4 kB, 2026-...Z .. 2026-...Z`
pub fn tally_text(t: &Tally) -> String {
    let mut s = format!(
        "{} flow{}, {}",
        t.flows,
        if t.flows == 1 { "" } else { "s" },
        human_bytes(t.bytes)
    );
    if t.first <= t.last {
        let _ = write!(
            s,
            ", {} .. {}",
            format_rfc3339(t.first),
            format_rfc3339(t.last)
        );
    }
    s
}

/// At most `max` names, then `and N more`.
pub fn name_list(names: impl Iterator<Item = String>, max: usize) -> String {
    let all: Vec<String> = names.collect();
    if all.len() <= max {
        return all.join(", ");
    }
    format!("{} and {} more", all[..max].join(", "), all.len() - max)
}

/// What reading found, as comment lines.
pub fn read_summary(out: &mut String, st: &ReadStats) {
    let _ = writeln!(
        out,
        "# read {} records from {} file{}: {} flows; {} malformed line{} skipped",
        st.records,
        st.files,
        if st.files == 1 { "" } else { "s" },
        st.flows,
        st.malformed,
        if st.malformed == 1 { "" } else { "s" },
    );
    if st.suppressed > 0 {
        let _ = writeln!(
            out,
            "# the writers' rate budgets suppressed {} records: counts are lower bounds",
            st.suppressed
        );
    }
    if st.not_aggregated > 0 {
        let _ = writeln!(
            out,
            "# {} records not aggregated: too many distinct names or cells",
            st.not_aggregated
        );
    }
    if st.pairing_resets > 0 {
        let _ = writeln!(
            out,
            "# the flow pairing window was full {} times: a flow whose two ends' records lie far apart may count twice",
            st.pairing_resets
        );
    }
}

/// The coverage line(s).
pub fn coverage_text(out: &mut String, c: &Coverage) {
    let t = c.total();
    let _ = writeln!(
        out,
        "# coverage: of {} observed flows ({}), explicit rules allow {} ({} of bytes), broad rules only {} ({}), refused by deny/quarantine {} ({}), no rule {} ({}), unknown nodes {} ({})",
        t.flows,
        human_bytes(t.bytes),
        pct(c.explicit.flows, t.flows),
        pct(c.explicit.bytes, t.bytes),
        pct(c.broad.flows, t.flows),
        pct(c.broad.bytes, t.bytes),
        pct(c.denied.flows, t.flows),
        pct(c.denied.bytes, t.bytes),
        pct(c.unallowed.flows, t.flows),
        pct(c.unallowed.bytes, t.bytes),
        pct(c.unknown.flows, t.flows),
        pct(c.unknown.bytes, t.bytes),
    );
}

fn node_name(p: &Policy, n: NodeId) -> String {
    p.node(n).map_or_else(|| "?".into(), |n| n.name.clone())
}

fn target_text(p: &Policy, t: Target) -> String {
    match t {
        Target::Role(r) => format!("role:{}", p.roles()[r as usize].name),
        Target::Node(n) => format!("node:{}", node_name(p, n)),
        Target::Host(ip) => crate::net::IpNet::host(ip).to_string(),
    }
}

fn subject_text(p: &Policy, s: Segment) -> String {
    match s {
        Segment::Role(r) => format!("role:{}", p.roles()[r as usize].name),
        Segment::Node(n) => format!("node:{}", node_name(p, n)),
    }
}

fn unit_text(p: &Policy, u: &Unit) -> String {
    match u {
        Unit::Node(n) => node_name(p, *n),
        Unit::Host(ip) => ip.to_string(),
    }
}

fn expect_target(ip: IpAddr, f: Flow) -> String {
    match ip {
        IpAddr::V6(a) => format!("[{a}]:{f}"),
        IpAddr::V4(a) => format!("{a}:{f}"),
    }
}

fn rule_line(p: &Policy, id: super::RuleId) -> String {
    p.rule(id).map_or_else(String::new, |r| {
        format!("{} (line {}: {})", r.label, r.line, r.text)
    })
}

/// Renders everything `suggest` found.
pub fn render(p: &Policy, s: &Suggestion, st: &ReadStats) -> String {
    let mut out = String::new();
    let g = &s.grouped;
    let _ = writeln!(
        out,
        "# umbra policy suggest for policy {} ({}) at {}",
        s.policy_id,
        s.file,
        format_rfc3339(s.now)
    );
    read_summary(&mut out, st);
    coverage_text(&mut out, &s.coverage);
    let new_services = g.services.iter().filter(|x| !x.existing).count();
    if g.rules.is_empty() {
        let _ = writeln!(
            out,
            "# nothing to suggest: every observed flow is allowed by an explicit rule, refused on purpose, or listed below"
        );
    } else if s.enforce {
        let _ = writeln!(
            out,
            "# {} new services, {} allow rules (--enforce), each with an expect line",
            new_services,
            g.rules.len()
        );
    } else {
        let _ = writeln!(
            out,
            "# {} new services, {} audit rules: stage them, watch the flow log's flow-audit records, then run with --enforce",
            new_services,
            g.rules.len()
        );
    }
    let mut printed = vec![false; g.services.len()];
    for r in &g.rules {
        let svc = &g.services[r.service];
        out.push('\n');
        if !svc.existing && !printed[r.service] {
            printed[r.service] = true;
            let ports: Vec<String> = svc.ports.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "service {} {} {}",
                svc.name,
                target_text(p, svc.target),
                ports.join(",")
            );
        }
        let _ = writeln!(
            out,
            "# {}; {} -> {}",
            tally_text(&r.tally),
            name_list(r.sources.iter().map(|n| node_name(p, *n)), 6),
            name_list(r.units.iter().map(|u| unit_text(p, u)), 6)
        );
        if !r.replaces.is_empty() {
            let _ = writeln!(
                out,
                "# replaces the staged audit rule {} (delete that line)",
                name_list(
                    r.replaces
                        .iter()
                        .filter_map(|id| p.rule(*id))
                        .map(|x| x.label.clone()),
                    6
                )
            );
        }
        let _ = writeln!(
            out,
            "{}allow {} -> {}  as {}",
            if s.enforce { "" } else { "audit " },
            subject_text(p, r.segment),
            svc.name,
            r.name
        );
        if s.enforce {
            let (src, ip, flow) = r.example;
            let _ = writeln!(
                out,
                "expect {} -> {} is allow",
                node_name(p, src),
                expect_target(ip, flow)
            );
        }
    }
    if g.rare.0 > 0 {
        let _ = writeln!(
            out,
            "\n# left out: {} (source, destination, port) seen in fewer than {} flows each ({} in all; lower --min-flows to see them)",
            g.rare.0,
            s.min_flows,
            tally_text(&g.rare.1)
        );
    }
    misfits(&mut out, p, s);
    if !s.deliberate.is_empty() {
        let _ = writeln!(out, "\n# refused on purpose (not suggested):");
        for (id, t) in &s.deliberate {
            let _ = writeln!(out, "#   {}: {}", rule_line(p, *id), tally_text(t));
        }
    }
    if !s.staged.is_empty() {
        let _ = writeln!(
            out,
            "\n# already staged by audit rules (run with --enforce to turn them into allow rules):"
        );
        for (id, t) in &s.staged {
            let _ = writeln!(out, "#   {}: {}", rule_line(p, *id), tally_text(t));
        }
    }
    for (ids, what) in [
        (
            &s.unused,
            "rules no observed flow matched (candidates to remove)",
        ),
        (
            &s.unused_denies,
            "deny rules no observed flow matched (kept: a deny protects even when nothing tries)",
        ),
    ] {
        if !ids.is_empty() {
            let _ = writeln!(out, "\n# {what}:");
            for id in ids {
                let _ = writeln!(out, "#   {}", rule_line(p, *id));
            }
        }
    }
    out
}

fn misfits(out: &mut String, p: &Policy, s: &Suggestion) {
    let g = &s.grouped;
    let odd: Vec<&super::suggest_group::NewRule> = g
        .rules
        .iter()
        .filter(|r| matches!(r.segment, Segment::Node(_)))
        .collect();
    if odd.is_empty() && s.misfits.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n# flows that fit no role cleanly:");
    for r in odd {
        let Segment::Node(n) = r.segment else {
            continue;
        };
        let node = p.node(n);
        let roles = node.map(|n| n.roles.join(",")).unwrap_or_default();
        let why = if roles.is_empty() {
            format!("{} has no role", segment_label(&p.model, r.segment))
        } else {
            format!(
                "{} (role {roles}) makes flows the other members of its roles do not",
                segment_label(&p.model, r.segment)
            )
        };
        let _ = writeln!(
            out,
            "#   {why}: {} to {}, node rule {}",
            tally_text(&r.tally),
            g.services[r.service].name,
            r.name
        );
    }
    for (m, t) in &s.misfits {
        let why = match m {
            Misfit::UnknownNode(name) => {
                // From the flow log, not the policy: may hold anything.
                let name = super::diag::sanitize(name, 64);
                format!("`{name}` is not a node of this policy")
            }
            Misfit::NotBehind { via, dst } => format!(
                "{dst} is neither an address of {} nor in a network it serves",
                node_name(p, *via)
            ),
            Misfit::Expected {
                line,
                src,
                dst,
                flow,
            } => format!(
                "{} -> {} would break the expect at line {line}",
                node_name(p, *src),
                expect_target(*dst, *flow)
            ),
            Misfit::UntypedIcmp => "ICMP records without `icmp.type`".into(),
        };
        let _ = writeln!(out, "#   {why}: {}", tally_text(t));
    }
}
