//! `umbra policy replay`: observed flows re-decided under a new policy.

mod policy_suggest_support;

use std::collections::BTreeSet;
use std::process::Command;

use policy_suggest_support::{now, policy, policy_text, scratch, Log, NODES};
use umbra::policy::replay::replay;

const TCP: u8 = 6;

const OLD: &str = "service api role:api tcp/8080\nservice postgres role:db tcp/5432\n\
                   service ssh * tcp/22\n\
                   allow role:web -> api as web-to-api\n\
                   allow role:api -> postgres as api-to-db\n\
                   allow role:ops -> ssh as ops-ssh\n";

/// Flows recorded under OLD: what was allowed, and prom's refused scrapes.
fn recorded() -> Log {
    let mut log = Log::default();
    for round in 0..3 {
        for web in ["web-1", "web-2", "web-3"] {
            for api in ["api-1", "api-2"] {
                log.flow(web, api, TCP, 8080, "allow", "web-to-api");
            }
        }
        for _ in 0..=round {
            log.flow("api-1", "db-1", TCP, 5432, "allow", "api-to-db");
        }
        log.flow("api-2", "db-1", TCP, 5432, "allow", "api-to-db");
        log.flow("ops", "db-1", TCP, 22, "allow", "ops-ssh");
        log.flow("prom", "api-1", TCP, 9100, "drop", "default-deny");
    }
    log
}

/// (source, receiver, port, flows) of a change list.
fn changes(list: &[umbra::policy::replay::Change]) -> BTreeSet<(String, String, u16, u64)> {
    list.iter()
        .map(|c| (c.src.clone(), c.via.clone(), c.flow.port, c.tally.flows))
        .collect()
}

fn set(items: &[(&str, &str, u16, u64)]) -> BTreeSet<(String, String, u16, u64)> {
    items
        .iter()
        .map(|(a, b, p, n)| (a.to_string(), b.to_string(), *p, *n))
        .collect()
}

#[test]
fn the_unchanged_policy_cuts_nothing() {
    let o = recorded().observed();
    let r = replay(&policy(OLD), &o, now());
    assert!(r.cut.is_empty() && r.newly_allowed.is_empty());
    assert_eq!(r.still_allowed.flows, 18 + 6 + 3 + 3);
    assert_eq!(r.still_denied.flows, 3);
}

#[test]
fn replay_finds_exactly_the_flows_a_broken_policy_cuts() {
    let o = recorded().observed();
    // Broken on purpose: api-2 loses the database, web's port moved to
    // 8081, and (a fix) prometheus may now scrape.
    let broken = OLD.replace("tcp/8080", "tcp/8081")
        + "deny node:api-2 -> postgres as api-2-drained\n\
           service metrics role:api tcp/9100\nallow node:prom -> metrics as scrape\n";
    let r = replay(&policy(&broken), &o, now());
    let mut want = vec![("api-2", "db-1", 5432, 3)];
    for web in ["web-1", "web-2", "web-3"] {
        for api in ["api-1", "api-2"] {
            want.push((web, api, 8080, 3));
        }
    }
    assert_eq!(changes(&r.cut), set(&want));
    assert_eq!(r.cut_flows(), 21);
    let api2 = r.cut.iter().find(|c| c.src == "api-2").unwrap();
    assert!(
        api2.now.starts_with("drop by api-2-drained (line 16"),
        "{}",
        api2.now
    );
    assert_eq!(api2.recorded_rule, "api-to-db");
    let web = r.cut.iter().find(|c| c.src == "web-1").unwrap();
    assert_eq!(web.now, "drop (no rule allows it)");
    assert_eq!(
        changes(&r.newly_allowed),
        set(&[("prom", "api-1", 9100, 3)])
    );
    assert_eq!((r.still_allowed.flows, r.still_denied.flows), (6 + 3, 0));
}

#[test]
fn a_node_missing_from_the_new_policy_has_its_flows_cut() {
    let o = recorded().observed();
    let text = policy_text(OLD);
    let without_ops: String = text
        .lines()
        .filter(|l| !l.starts_with("node ops "))
        .map(|l| format!("{l}\n"))
        .chain(["role ops\n".to_string()])
        .collect();
    let p = umbra::policy::Policy::parse(&without_ops, "new.policy").unwrap();
    let r = replay(&p, &o, now());
    assert_eq!(changes(&r.cut), set(&[("ops", "db-1", 22, 3)]));
    assert_eq!(r.cut[0].now, "drop: `ops` is not a node of this policy");
    assert_eq!(r.coverage.unknown.flows, 3);
    assert!(NODES.iter().any(|n| n.0 == "ops"));
}

#[test]
fn the_cli_exits_non_zero_when_anything_observed_would_be_cut() {
    let log = scratch("replay.log", &recorded().text);
    let old = scratch("old.policy", &policy_text(OLD));
    let broken = scratch(
        "broken.policy",
        &policy_text(&format!(
            "{OLD}deny node:api-2 -> postgres as api-2-drained\n"
        )),
    );
    let run = |p: &str| {
        Command::new(env!("CARGO_BIN_EXE_umbra"))
            .args(["policy", "replay", p, &log])
            .output()
            .unwrap()
    };
    let ok = run(&old);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("\ncut: 0 flows, 0 B (allowed when recorded, refused now)\n"),
        "{stdout}"
    );
    let bad = run(&broken);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("\ncut: 3 flows, 3.0 kB,"), "{stdout}");
    assert!(
        stdout.contains("  api-2 -> db-1 10.9.0.31 5432/tcp: 3 flows, 3.0 kB, 2026-12-01T"),
        "{stdout}"
    );
    assert!(stdout.contains("; recorded allow by api-to-db, now drop by api-2-drained (line 16: deny node:api-2 -> postgres as api-2-drained)\n"), "{stdout}");
    assert!(
        stdout.contains("explicit rules allow 81.8% (90.0% of bytes)"),
        "{stdout}"
    );
}

/// Names and values in a flow log are attacker-influenced: whatever they
/// hold, suggest's and replay's reports and the malformed-line messages
/// print them escaped (no terminal escape sequences, no NUL), and the
/// suggested text still appends to the policy.
#[test]
fn escape_sequences_in_a_flow_log_are_never_echoed_raw() {
    let p = policy(OLD);
    let mut log = Log::default();
    log.flow("intruder", "api-1", TCP, 8080, "drop", "default-deny");
    let hostile = "\\u001b[2J\\u001b]0;pwned\\u0007\\u0000x";
    let mut text = log.text.replace("intruder", hostile);
    text.push_str(&format!(
        "{{\"umbra.schema\":1,\"event.action\":\"{hostile}\"}}\n"
    ));
    let mut o = umbra::policy::flowlog_agg::Observed::new();
    o.read(text.as_bytes(), "hostile.log").unwrap();
    assert_eq!(o.stats.malformed, 1, "{:?}", o.stats.errors);
    let printable = |s: &str| !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
    assert!(
        o.stats.errors.iter().all(|e| printable(e)),
        "{:?}",
        o.stats.errors
    );

    let s = umbra::policy::suggest::suggest(&p, &o, false, now());
    let out = umbra::policy::suggest_render::render(&p, &s, &o.stats);
    assert!(
        out.contains("\\u{1b}[2J"),
        "the name is shown, escaped: {out}"
    );
    assert!(printable(&out), "{out:?}");
    let combined = format!("{}{out}", policy_text(OLD));
    assert!(umbra::policy::Policy::parse(&combined, "combined").is_ok());

    let r = replay(&p, &o, now());
    let out = umbra::policy::replay::render(&r, &o);
    assert!(printable(&out), "{out:?}");
}
