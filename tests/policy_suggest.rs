//! `umbra policy suggest` on synthetic flow logs with known answers.

mod policy_suggest_support;

use std::process::Command;
use std::time::SystemTime;

use policy_suggest_support::{ip, now, policy, policy_text, scratch, Log};
use umbra::policy::suggest::{suggest, Misfit, Suggestion};
use umbra::policy::suggest_render::render;
use umbra::policy::Policy;

const TCP: u8 = 6;

/// Every rule as `subject -> service [ports]`, and every new service.
fn rules(p: &Policy, s: &Suggestion) -> Vec<String> {
    let text = render(p, s, &Default::default());
    text.lines()
        .filter(|l| {
            l.starts_with("audit allow") || l.starts_with("allow") || l.starts_with("service")
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_role_whose_members_all_call_one_service_gives_one_role_rule() {
    let p = policy("");
    let mut log = Log::default();
    for round in 0..5 {
        for web in ["web-1", "web-2", "web-3"] {
            let api = if round % 2 == 0 { "api-1" } else { "api-2" };
            log.flow(web, api, TCP, 8080, "drop", "default-deny");
            // Each web node reaches both api nodes over the rounds.
            let other = if api == "api-1" { "api-2" } else { "api-1" };
            log.flow(web, other, TCP, 8080, "drop", "default-deny");
        }
    }
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service api-tcp8080 role:api tcp/8080",
            "audit allow role:web -> api-tcp8080 as web-to-api-tcp8080"
        ]
    );
    let r = &s.grouped.rules[0];
    assert_eq!((r.tally.flows, r.tally.bytes), (30, 0));
    assert_eq!(r.sources.len(), 3);
    assert!(s.misfits.is_empty());
}

#[test]
fn a_single_odd_node_gets_a_node_rule_and_is_reported() {
    let p = policy("");
    let mut log = Log::default();
    for web in ["web-1", "web-2", "web-3"] {
        for api in ["api-1", "api-2"] {
            log.flow(web, api, TCP, 8080, "drop", "default-deny");
        }
    }
    log.flow("web-3", "db-1", TCP, 5432, "drop", "default-deny");
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service api-tcp8080 role:api tcp/8080",
            "audit allow role:web -> api-tcp8080 as web-to-api-tcp8080",
            "service db-tcp5432 role:db tcp/5432",
            "audit allow node:web-3 -> db-tcp5432 as web-3-to-db-tcp5432"
        ]
    );
    let text = render(&p, &s, &Default::default());
    assert!(
        text.contains("# flows that fit no role cleanly:\n#   web-3 (role web) makes flows the other members of its roles do not: 1 flow"),
        "{text}"
    );
}

#[test]
fn destinations_stay_single_nodes_unless_every_member_is_called_alike() {
    let p = policy("");
    let mut log = Log::default();
    // api-1 serves 8080 to web, api-2 to monitoring: not alike.
    for web in ["web-1", "web-2", "web-3"] {
        log.flow(web, "api-1", TCP, 8080, "drop", "default-deny");
    }
    log.flow("prom", "api-2", TCP, 8080, "drop", "default-deny");
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service api-1-tcp8080 node:api-1 tcp/8080",
            "audit allow role:web -> api-1-tcp8080 as web-to-api-1-tcp8080",
            "service api-2-tcp8080 node:api-2 tcp/8080",
            "audit allow role:monitoring -> api-2-tcp8080 as monitoring-to-api-2-tcp8080"
        ]
    );
    // Sticky sessions, web-3 idle: web-1 only calls api-1, web-2 only
    // api-2. Not every web node calls api: node rules, to single nodes.
    let mut log = Log::default();
    log.flow("web-1", "api-1", TCP, 8080, "drop", "default-deny");
    log.flow("web-2", "api-2", TCP, 8080, "drop", "default-deny");
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service api-1-tcp8080 node:api-1 tcp/8080",
            "audit allow node:web-1 -> api-1-tcp8080 as web-1-to-api-1-tcp8080",
            "service api-2-tcp8080 node:api-2 tcp/8080",
            "audit allow node:web-2 -> api-2-tcp8080 as web-2-to-api-2-tcp8080"
        ]
    );
    // Once web-3 calls too, every web node reaches the api role and every
    // api node serves the web role: one role rule, though no web node was
    // seen calling both api nodes.
    log.flow("web-3", "api-1", TCP, 8080, "drop", "default-deny");
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service api-tcp8080 role:api tcp/8080",
            "audit allow role:web -> api-tcp8080 as web-to-api-tcp8080"
        ]
    );
}

#[test]
fn ephemeral_client_ports_are_ignored() {
    let p = policy("");
    let mut log = Log::default();
    // 500 flows, each from a different ephemeral port, to one responder port.
    for i in 0..500 {
        let src = ["web-1", "web-2", "web-3"][i % 3];
        log.flow(src, "api-1", TCP, 443, "drop", "default-deny");
        log.flow(src, "api-2", TCP, 443, "drop", "default-deny");
    }
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service api-tcp443 role:api tcp/443",
            "audit allow role:web -> api-tcp443 as web-to-api-tcp443"
        ]
    );
    assert_eq!(s.grouped.rules[0].tally.flows, 1000);
}

#[test]
fn port_lists_merge_into_ranges_per_segment_and_destination() {
    let p = policy("");
    let mut log = Log::default();
    for port in [9100, 9101, 9102, 9200] {
        for api in ["api-1", "api-2"] {
            log.flow("prom", api, TCP, port, "drop", "default-deny");
        }
    }
    for port in [53, 123] {
        log.flow("web-1", "gw", 17, port, "drop", "default-deny");
    }
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service api-tcp9100-9102_tcp9200 role:api tcp/9100-9102,tcp/9200",
            "audit allow role:monitoring -> api-tcp9100-9102_tcp9200 as monitoring-to-api-tcp9100-9102_tcp9200",
            "service gateway-udp53_udp123 role:gateway udp/53,udp/123",
            "audit allow node:web-1 -> gateway-udp53_udp123 as web-1-to-gateway-udp53_udp123"
        ]
    );
}

#[test]
fn served_addresses_icmp_and_existing_services_are_used() {
    let p = policy("service https role:api tcp/443\n");
    let mut log = Log::default();
    log.flow_via(
        "ops",
        "gw",
        "192.168.7.20",
        TCP,
        22,
        "drop",
        "default-deny",
        0,
    );
    log.flow("prom", "db-1", 1, 8, "drop", "default-deny");
    for web in ["web-1", "web-2", "web-3"] {
        for api in ["api-1", "api-2"] {
            log.flow(web, api, TCP, 443, "drop", "default-deny");
        }
    }
    let s = suggest(&p, &log.observed(), false, now());
    assert_eq!(
        rules(&p, &s),
        [
            "audit allow role:web -> https as web-to-https",
            "service db-icmp8 role:db icmp/8",
            "audit allow role:monitoring -> db-icmp8 as monitoring-to-db-icmp8",
            "service 192.168.7.20-tcp22 192.168.7.20/32 tcp/22",
            "audit allow role:ops -> 192.168.7.20-tcp22 as ops-to-192.168.7.20-tcp22"
        ]
    );
}

#[test]
fn flows_allowed_only_by_broad_rules_get_narrow_rules_explicit_ones_do_not() {
    let rest = "service everything * any\nservice api role:api tcp/8080\n\
                allow role:ops -> everything as ops-anything\n\
                allow role:web -> api as web-to-api\n\
                allow role:ops -> api as ops-to-api\n";
    let p = policy(rest);
    let mut log = Log::default();
    log.flow("ops", "db-1", TCP, 22, "allow", "ops-anything");
    log.flow("ops", "api-1", TCP, 8080, "allow", "ops-anything");
    log.flow("web-1", "api-1", TCP, 8080, "allow", "web-to-api");
    let s = suggest(&p, &log.observed(), true, now());
    assert_eq!(
        rules(&p, &s),
        [
            "service db-tcp22 role:db tcp/22",
            "allow role:ops -> db-tcp22 as ops-to-db-tcp22"
        ]
    );
    // ops -> api:8080 is decided by the broad rule but also allowed by
    // ops-to-api, so it counts as explicit.
    assert_eq!(s.coverage.explicit.flows, 2);
    assert_eq!(s.coverage.broad.flows, 1);
    assert_eq!(s.coverage.explicit.bytes, 2000);
}

#[test]
fn deliberate_denies_expect_lines_and_strangers_are_not_suggested() {
    let rest = "service postgres role:db tcp/5432\nservice api role:api tcp/8080\n\
                deny role:web -> postgres as web-never-db\n\
                allow role:web -> api as web-to-api\n\
                allow role:ops -> api as ops-api\n\
                expect prom -> db-1:5432/tcp is deny\n";
    let p = policy(rest);
    let mut log = Log::default();
    log.flow("web-1", "db-1", TCP, 5432, "drop", "web-never-db");
    log.flow("prom", "db-1", TCP, 5432, "drop", "default-deny");
    log.flow("web-1", "api-1", TCP, 8080, "allow", "web-to-api");
    log.flow_via(
        "stranger",
        "db-1",
        ip("db-1"),
        TCP,
        22,
        "drop",
        "default-deny",
        0,
    );
    let s = suggest(&p, &log.observed(), false, now());
    assert!(s.grouped.rules.is_empty(), "{:?}", s.grouped);
    let misfits: Vec<&Misfit> = s.misfits.keys().collect();
    assert!(
        matches!(misfits[..], [Misfit::UnknownNode(ref n), Misfit::Expected { line: 15, .. }] if n == "stranger"),
        "{misfits:?}"
    );
    let text = render(&p, &s, &Default::default());
    assert!(
        text.contains(
            "#   web-never-db (line 12: deny role:web -> postgres as web-never-db): 1 flow"
        ),
        "{text}"
    );
    assert!(
        text.contains("prom -> 10.9.0.31:5432/tcp would break the expect at line 15"),
        "{text}"
    );
    assert!(
        text.contains(
            "# rules no observed flow matched (candidates to remove):\n#   ops-api (line 14"
        ),
        "{text}"
    );
}

#[test]
fn audit_mode_skips_what_is_staged_and_enforce_replaces_it() {
    let rest =
        "service postgres role:db tcp/5432\naudit allow role:api -> postgres as api-db-dryrun\n";
    let p = policy(rest);
    let mut log = Log::default();
    log.flow("api-1", "db-1", TCP, 5432, "drop", "default-deny");
    log.flow("api-2", "db-1", TCP, 5432, "drop", "default-deny");
    let o = log.observed();
    let staged = suggest(&p, &o, false, now());
    assert!(staged.grouped.rules.is_empty());
    assert_eq!(staged.staged.values().map(|t| t.flows).sum::<u64>(), 2);
    let enforce = suggest(&p, &o, true, now());
    let text = render(&p, &enforce, &Default::default());
    assert!(text.contains("# replaces the staged audit rule api-db-dryrun (delete that line)\nallow role:api -> postgres  as api-to-postgres"), "{text}");
}

/// Appending `suggest --enforce` to the policy passes `check` with every
/// expect (old and new) holding, and then suggests nothing more.
#[test]
fn suggested_rules_pass_check_and_their_expects_hold() {
    let rest = "service api role:api tcp/8080\nallow role:web -> api as web-to-api\n\
                expect web-1 -> api-1:8080/tcp is allow\nexpect web-1 -> db-1 is deny\n";
    let text = policy_text(rest);
    let p = Policy::parse(&text, "test.policy").unwrap();
    let mut log = Log::default();
    for api in ["api-1", "api-2"] {
        log.flow(api, "db-1", TCP, 5432, "drop", "default-deny");
        for port in [9100, 9101] {
            log.flow("prom", api, TCP, port, "drop", "default-deny");
        }
    }
    log.flow("web-2", "api-2", TCP, 8080, "allow", "web-to-api");
    log.flow("ops", "web-1", 1, 8, "drop", "default-deny");
    log.flow_via(
        "ops",
        "gw",
        "192.168.7.9",
        17,
        161,
        "drop",
        "default-deny",
        0,
    );
    let o = log.observed();
    let s = suggest(&p, &o, true, now());
    assert_eq!(s.grouped.rules.len(), 4);
    let added = render(&p, &s, &o.stats);
    let combined = format!("{text}{added}");
    let report = Policy::check(&combined, "combined.policy", SystemTime::now());
    let diags: Vec<String> = report
        .diagnostics
        .iter()
        .map(|d| d.render("combined.policy"))
        .collect();
    assert_eq!(report.errors(), 0, "{}\n{combined}", diags.join(""));
    assert_eq!(report.expects.len(), 2 + 4);
    assert!(report.expects.iter().all(|e| e.passed));
    let again = suggest(&report.policy, &o, true, now());
    assert!(again.grouped.rules.is_empty(), "{:?}", again.grouped);
    assert_eq!(again.coverage.unallowed.flows, 0);
    // The CLI prints the same text.
    let policy_file = scratch("check.policy", &text);
    let log_file = scratch("check.log", &log.text);
    let out = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["policy", "suggest", &policy_file, &log_file, "--enforce"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().skip(1).collect::<Vec<_>>(),
        added.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn malformed_lines_are_reported_with_file_and_line_and_skipped() {
    let mut log = Log::default();
    log.flow("web-1", "db-1", TCP, 5432, "drop", "default-deny");
    let good = log.text.clone();
    let text =
        format!("{good}{{\"umbra.schema\":1,\"event.action\":\n\u{1}\u{2}not json at all\n{good}");
    let policy_file = scratch("bad.policy", &policy_text(""));
    let log_file = scratch("bad.log", &text);
    let out = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["policy", "suggest", &policy_file, &log_file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("{log_file}:2: not a JSON object")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{log_file}:3: not a JSON object")),
        "{stderr}"
    );
    // The same flow (same community id) after the bad lines counts once.
    assert!(
        stdout.contains("# read 2 records from 1 file: 1 flows; 2 malformed lines skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("audit allow node:web-1 -> db-tcp5432"),
        "{stdout}"
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["policy", "suggest", &policy_file, "/nonexistent/flows.log"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/flows.log"));
}

/// policy-examples/learn.policy with its recorded flow log: the worked
/// example of docs/policy.md, end to end through the binary.
#[test]
fn the_learn_example_round_trips() {
    let dir = format!("{}/policy-examples", env!("CARGO_MANIFEST_DIR"));
    let (policy_file, log_file) = (
        format!("{dir}/learn.policy"),
        format!("{dir}/learn-flows.jsonl"),
    );
    let text = std::fs::read_to_string(&policy_file).unwrap();
    let report = Policy::check(&text, &policy_file, SystemTime::now());
    let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["unused-role", "unused-role"]);
    let umbra = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_umbra"))
            .args(args)
            .output()
            .unwrap()
    };
    let staged = umbra(&["policy", "suggest", &policy_file, &log_file]);
    let stdout = String::from_utf8_lossy(&staged.stdout).into_owned();
    assert_eq!(staged.status.code(), Some(0));
    assert!(
        stdout.contains("# read 117 records from 1 file: 59 flows; 0 malformed lines skipped"),
        "{stdout}"
    );
    for line in [
        "service api-tcp9100-9101 role:api tcp/9100-9101",
        "audit allow role:monitoring -> api-tcp9100-9101  as monitoring-to-api-tcp9100-9101",
        "audit allow role:api -> db-tcp5432  as api-to-db-tcp5432",
        "audit allow role:ops -> db-tcp22  as ops-to-db-tcp22",
        "audit allow node:web-3 -> api-1-tcp8443  as web-3-to-api-1-tcp8443",
        "#   `old-laptop` is not a node of this policy: 1 flow",
        "#   ops-api-ssh (line 22: allow role:ops -> api-ssh as ops-api-ssh)",
    ] {
        assert!(stdout.contains(&format!("\n{line}")), "{line}\n{stdout}");
    }
    // Stage: the audit rules change no verdict, so replay cuts nothing.
    let staged_text = format!("{text}{stdout}");
    let staged_file = scratch("learn-staged.policy", &staged_text);
    assert_eq!(
        umbra(&["policy", "replay", &staged_file, &log_file])
            .status
            .code(),
        Some(0)
    );
    // Enforce: allow rules with expect lines; check is clean (the roles
    // are used now), every observed flow of a known node is allowed by an
    // explicit rule, and nothing observed is cut.
    let enforce = umbra(&["policy", "suggest", &staged_file, &log_file, "--enforce"]);
    let added = String::from_utf8_lossy(&enforce.stdout).into_owned();
    assert!(
        added.contains("# replaces the staged audit rule api-to-db-tcp5432 (delete that line)\nallow role:api -> db-tcp5432  as api-to-db-tcp5432\n"),
        "{added}"
    );
    let enforced: String = format!("{staged_text}{added}")
        .lines()
        .filter(|l| !l.starts_with("audit "))
        .map(|l| format!("{l}\n"))
        .collect();
    let enforced_file = scratch("learn-enforced.policy", &enforced);
    let check = umbra(&["policy", "check", &enforced_file, "--strict"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}\n{enforced}",
        String::from_utf8_lossy(&check.stderr)
    );
    let replayed = umbra(&["policy", "replay", &enforced_file, &log_file]);
    let out = String::from_utf8_lossy(&replayed.stdout);
    assert_eq!(replayed.status.code(), Some(0), "{out}");
    assert!(
        out.contains("explicit rules allow 98.3% (100.0% of bytes), broad rules only 0.0%"),
        "{out}"
    );
    assert!(out.contains("\ncut: 0 flows, 0 B"), "{out}");
}

#[test]
fn one_off_probes_can_be_left_out_with_min_flows() {
    let p = policy("");
    let mut log = Log::default();
    for web in ["web-1", "web-2", "web-3"] {
        for api in ["api-1", "api-2"] {
            log.flow(web, api, TCP, 8080, "drop", "default-deny");
        }
    }
    for port in [21, 23, 25, 110, 143, 3389, 5900] {
        log.flow("ops", "db-1", TCP, port, "drop", "default-deny");
    }
    let o = log.observed();
    let all = suggest(&p, &o, false, now());
    assert_eq!(all.grouped.rules.len(), 2, "{:?}", rules(&p, &all));
    let opts = umbra::policy::suggest::Options {
        enforce: false,
        now: now(),
        min_flows: 2,
    };
    let some = umbra::policy::suggest::suggest_with(&p, &o, &opts);
    assert_eq!(
        rules(&p, &some),
        [
            "service api-tcp8080 role:api tcp/8080",
            "audit allow role:web -> api-tcp8080 as web-to-api-tcp8080"
        ]
    );
    // Each of ops' seven probed ports saw one flow: all left out.
    assert_eq!(some.grouped.rare.0, 7);
    assert_eq!(some.grouped.rare.1.flows, 7);
    let text = render(&p, &some, &Default::default());
    assert!(text.contains("# left out: 7 (source, destination, port) seen in fewer than 2 flows each (7 flows, 0 B,"), "{text}");
    // web's port is left out too once the bar is above its 6 flows.
    let opts = umbra::policy::suggest::Options {
        min_flows: 7,
        ..opts
    };
    let none = umbra::policy::suggest::suggest_with(&p, &o, &opts);
    assert!(none.grouped.rules.is_empty());
    let mut both = all.grouped.rules[0].tally;
    both.merge(&all.grouped.rules[1].tally);
    assert_eq!(none.grouped.rare, (8, both));
}
