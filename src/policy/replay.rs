//! `umbra policy replay`: every observed flow re-decided under a new policy
//! with the reference evaluator and compared with the verdict recorded when
//! it happened: what the new policy would cut, what it newly allows, what
//! stays. Impact analysis before a rollout, and a CI gate.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::eval::evaluate;
use super::flowlog::Outcome;
use super::flowlog_agg::Observed;
use super::flowlog_agg::Tally;
use super::ports::Flow;
use super::suggest::{coverage, resolve, Coverage};
use super::suggest_render::{coverage_text, read_summary, tally_text};
use super::{Policy, PolicyId};
use crate::time::format_rfc3339;

/// One observed (source, receiver, address, flow, recorded verdict) whose fate changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub src: String,
    pub via: String,
    pub dst: IpAddr,
    pub flow: Flow,
    pub recorded: Outcome,
    pub recorded_rule: String,
    /// The new verdict, described (`drop by web-never-db (line 22: ...)`).
    pub now: String,
    pub tally: Tally,
}

#[derive(Debug, Clone)]
pub struct Replay {
    pub policy_id: PolicyId,
    pub file: String,
    pub at: i64,
    /// Allowed when recorded, refused under the new policy.
    pub cut: Vec<Change>,
    /// Refused when recorded, allowed under the new policy.
    pub newly_allowed: Vec<Change>,
    pub still_allowed: Tally,
    pub still_denied: Tally,
    pub coverage: Coverage,
}

impl Replay {
    pub fn cut_flows(&self) -> u64 {
        self.cut.iter().map(|c| c.tally.flows).sum()
    }
}

/// Re-decides every observed flow under `p` at `now`.
pub fn replay(p: &Policy, o: &Observed, now: i64) -> Replay {
    let mut r = Replay {
        policy_id: p.id(),
        file: p.file_name().to_string(),
        at: now,
        cut: Vec::new(),
        newly_allowed: Vec::new(),
        still_allowed: Tally::default(),
        still_denied: Tally::default(),
        coverage: coverage(p, o, now),
    };
    for (k, stats) in o.cells() {
        let (allowed, verdict) = match resolve(p, o, k) {
            Ok(x) => {
                let v = evaluate(&p.model, x.src, x.via, x.dst, x.flow, now);
                (v.allowed(), p.describe_verdict(&v))
            }
            Err(name) => (
                false,
                format!(
                    "drop: `{}` is not a node of this policy",
                    super::diag::sanitize(name, 64)
                ),
            ),
        };
        let was = k.outcome.allowed();
        let mut t = Tally::default();
        t.merge(stats);
        if t.flows == 0 {
            continue;
        }
        let change = || Change {
            src: o.name(k.src).to_string(),
            via: o.name(k.via).to_string(),
            dst: k.dst,
            flow: Flow {
                proto: k.proto,
                port: k.port,
            },
            recorded: k.outcome,
            recorded_rule: o.name(k.rule).to_string(),
            now: verdict.clone(),
            tally: t,
        };
        match (was, allowed) {
            (true, false) => r.cut.push(change()),
            (false, true) => r.newly_allowed.push(change()),
            (true, true) => r.still_allowed.merge(&t),
            (false, false) => r.still_denied.merge(&t),
        }
    }
    for list in [&mut r.cut, &mut r.newly_allowed] {
        list.sort_by(|a, b| {
            b.tally
                .flows
                .cmp(&a.tally.flows)
                .then_with(|| (&a.src, &a.via, a.dst, a.flow).cmp(&(&b.src, &b.via, b.dst, b.flow)))
        });
    }
    r
}

fn change_line(out: &mut String, c: &Change) {
    let _ = writeln!(
        out,
        "  {} -> {} {} {}: {}; recorded {} by {}, now {}",
        c.src,
        c.via,
        c.dst,
        c.flow,
        tally_text(&c.tally),
        c.recorded.as_str(),
        c.recorded_rule,
        c.now
    );
}

/// The report `umbra policy replay` prints.
pub fn render(r: &Replay, o: &Observed) -> String {
    let mut out = format!(
        "replay of the observed flows under policy {} ({}) at {}\n",
        r.policy_id,
        r.file,
        format_rfc3339(r.at)
    );
    let mut head = String::new();
    read_summary(&mut head, &o.stats);
    coverage_text(&mut head, &r.coverage);
    for l in head.lines() {
        let _ = writeln!(out, "{}", l.trim_start_matches("# "));
    }
    let sum = |l: &[Change]| {
        let mut t = Tally::default();
        for c in l {
            t.merge(&c.tally);
        }
        t
    };
    let _ = writeln!(
        out,
        "cut: {} (allowed when recorded, refused now)",
        tally_text(&sum(&r.cut))
    );
    for c in &r.cut {
        change_line(&mut out, c);
    }
    let _ = writeln!(
        out,
        "newly allowed: {} (refused when recorded, allowed now)",
        tally_text(&sum(&r.newly_allowed))
    );
    for c in &r.newly_allowed {
        change_line(&mut out, c);
    }
    let _ = writeln!(
        out,
        "unchanged: {} still allowed, {} still refused",
        tally_text(&r.still_allowed),
        tally_text(&r.still_denied)
    );
    out
}
