//! Every file in policy-examples/ parses, passes its own expect lines and
//! yields exactly the lints it is meant to.

use std::time::SystemTime;

use umbra::policy::{Policy, Severity};

fn example(name: &str) -> (String, String) {
    let path = format!("{}/policy-examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (path, text)
}

fn clean_example(name: &str, expects: usize) -> Policy {
    let (path, text) = example(name);
    let report = Policy::check(&text, &path, SystemTime::now());
    let rendered: Vec<String> = report.diagnostics.iter().map(|d| d.render(&path)).collect();
    assert!(report.diagnostics.is_empty(), "{}", rendered.join(""));
    assert_eq!(report.expects.len(), expects);
    assert!(report.expects.iter().all(|e| e.passed));
    Policy::load(&text, &path, SystemTime::now()).expect("loads with its expects")
}

#[test]
fn every_example_file_is_covered() {
    let dir = format!("{}/policy-examples", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "docker-host.policy",
            "kubernetes-ingress.policy",
            "learn-flows.jsonl",
            "learn.policy",
            "lint-showcase.policy",
            "three-tier.policy"
        ]
    );
}

#[test]
fn kubernetes_ingress() {
    let p = clean_example("kubernetes-ingress.policy", 11);
    assert_eq!(p.nodes().len(), 7);
    // Users are cloaked from each other and from what they may not use:
    // alice's only peers are the two ingress gateways.
    let alice = p.node_by_name("alice").unwrap();
    let t = p.compile_for(alice.id, SystemTime::now());
    let peers: Vec<&str> = t
        .peers()
        .iter()
        .map(|id| p.node(*id).unwrap().name.as_str())
        .collect();
    assert_eq!(peers, ["ingress-a", "ingress-b"]);
    let bob = p.node_by_name("bob").unwrap();
    assert!(!t.is_peer(bob.id));
}

#[test]
fn three_tier() {
    let p = clean_example("three-tier.policy", 15);
    let db2 = p.node_by_name("db-2").unwrap();
    let t = p.compile_for(db2.id, SystemTime::now());
    assert!(t.peers().is_empty(), "a quarantined node answers nobody");
    let ops = p.node_by_name("ops-laptop").unwrap();
    let t = p.compile_for(ops.id, SystemTime::now());
    let expiry = t.next_expiry().expect("the ssh grant expires");
    assert_eq!(umbra::time::unix_secs(expiry), 4_070_908_800);
}

#[test]
fn docker_host() {
    let p = clean_example("docker-host.policy", 15);
    assert!(matches!(
        &p.node_by_name("shop-api").unwrap().endpoint,
        Some(umbra::policy::Endpoint { host: umbra::policy::Host::Name(h), port: 51822 }) if h == "host-1.lan"
    ));
}

#[test]
fn lint_showcase_triggers_every_lint() {
    let (path, text) = example("lint-showcase.policy");
    assert!(
        Policy::parse(&text, &path).is_err(),
        "the showcase has errors too"
    );
    let report = Policy::check(&text, &path, SystemTime::now());
    let got: Vec<(u32, Severity, &str)> = report
        .diagnostics
        .iter()
        .map(|d| (d.span.line, d.severity, d.code))
        .collect();
    use Severity::{Error, Warning};
    let want = [
        (5, Warning, "overlapping-address"),
        (6, Error, "duplicate-name"),
        (7, Error, "duplicate-key"),
        (8, Error, "duplicate-address"),
        (10, Warning, "overlapping-address"),
        (12, Warning, "unused-role"),
        (16, Warning, "unused-service"),
        (17, Error, "unserved-cidr"),
        (19, Warning, "shadowed-rule"),
        (21, Warning, "allow-all"),
        (22, Error, "unknown-name"),
        (23, Warning, "expired-rule"),
        (24, Warning, "unknown-key"),
        (26, Error, "expect-failed"),
    ];
    assert_eq!(got, want);
    // Each line's trailing comment names the lint it triggers.
    for d in &report.diagnostics {
        assert!(
            d.source_line.contains(d.code),
            "line {} should mention {}: {}",
            d.span.line,
            d.code,
            d.source_line
        );
    }
    let shadow = report
        .diagnostics
        .iter()
        .find(|d| d.code == "shadowed-rule")
        .unwrap();
    assert_eq!(
        shadow.message,
        "rule app-db never allows anything: deny rules cover every flow it allows"
    );
    let expired = report
        .diagnostics
        .iter()
        .find(|d| d.code == "expired-rule")
        .unwrap();
    assert_eq!(expired.span.col, 36);
    assert!(expired.message.contains("2020-01-01T00:00:00Z"));
}
