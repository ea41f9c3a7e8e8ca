//! Differential test: the compiled per-node tables agree with the reference
//! evaluator on random policies (written as text, so the parser is in the
//! loop) and random packets; and hostile text never panics the parser.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use umbra::keys::PublicKey;
use umbra::net::IpProtocol;
use umbra::policy::{Flow, NodeId, Policy};

const NOW: u64 = 1_800_000_000;

/// Kind, sources, services, exceptions, expiry choice, reject.
type RuleSpec = (usize, Vec<usize>, Vec<usize>, Vec<usize>, usize, bool);

#[derive(Debug, Clone)]
struct Spec {
    nodes: Vec<(Vec<usize>, Option<usize>, bool)>,
    services: Vec<(Vec<usize>, Vec<usize>)>,
    rules: Vec<RuleSpec>,
}

const PORTS: &[&str] = &[
    "tcp/80",
    "tcp/443,8443",
    "tcp/1000-2000",
    "udp/53",
    "udp/1500-1600",
    "icmp/8",
    "icmp",
    "icmp6/128",
    "proto/47",
    "any",
    "ping",
    "tcp",
];

fn subject(i: usize, n_nodes: usize) -> String {
    match i % 4 {
        0 => "*".into(),
        1 | 2 => format!("role:r{}", i % 3),
        _ => format!("node:n{}", i % n_nodes),
    }
}

fn target(i: usize, n_nodes: usize) -> String {
    match i % 7 {
        0 => "*".into(),
        1 | 2 => format!("role:r{}", i % 3),
        3 => format!("node:n{}", i % n_nodes),
        4 => "10.100.1.0/24".into(),
        5 => "10.100.0.0/16".into(),
        _ => "10.0.0.0/29".into(),
    }
}

fn render(spec: &Spec) -> String {
    let n = spec.nodes.len();
    let mut t = String::from("role r0, r1, r2\n");
    for (i, (roles, serves, v6)) in spec.nodes.iter().enumerate() {
        let key = PublicKey([i as u8 + 1; 32]).to_base64();
        let mut addr = format!("10.0.0.{}/24", i + 1);
        if *v6 {
            addr.push_str(&format!(",fd00::{:x}/64", i + 1));
        }
        t.push_str(&format!("node n{i} key {key} addr {addr}"));
        let roles: Vec<String> = roles.iter().map(|r| format!("r{}", r % 3)).collect();
        if !roles.is_empty() {
            t.push_str(&format!(" roles {}", roles.join(",")));
        }
        match serves {
            Some(0) => t.push_str(" serves 10.100.0.0/16"),
            Some(1) => t.push_str(" serves 10.100.1.0/24,fd99::/32"),
            _ => {}
        }
        t.push('\n');
    }
    // Every node serves nothing unless asked; make sure CIDR targets resolve.
    for (i, (targets, ports)) in spec.services.iter().enumerate() {
        let tg: Vec<String> = targets.iter().map(|x| target(*x, n)).collect();
        let ps: Vec<&str> = ports.iter().map(|p| PORTS[p % PORTS.len()]).collect();
        t.push_str(&format!("service s{i} {} {}\n", tg.join(","), ps.join(" ")));
    }
    let ns = spec.services.len();
    for (kind, from, to, except, until, reject) in &spec.rules {
        let from: Vec<String> = from.iter().map(|x| subject(*x, n)).collect();
        let until = match until % 3 {
            0 => String::new(),
            1 => " until 2020-01-01T00:00:00Z".into(),
            _ => " until 2030-06-01T00:00:00Z".into(),
        };
        if kind % 9 == 8 {
            t.push_str(&format!("quarantine node:n{}{until}\n", from.len() % n));
            continue;
        }
        let word = [
            "allow",
            "allow",
            "allow",
            "deny",
            "deny",
            "audit allow",
            "audit deny",
            "allow",
        ][kind % 8];
        let mut to: Vec<String> = to.iter().map(|s| format!("s{}", s % ns)).collect();
        if kind % 8 == 7 {
            to.push("*".into());
        }
        let mut line = format!("{word} {} -> {}", from.join(","), to.join(","));
        if !except.is_empty() {
            let ex: Vec<String> = except.iter().map(|x| subject(*x + 1, n)).collect();
            line.push_str(&format!(" except {}", ex.join(",")));
        }
        line.push_str(&until);
        if *reject && word == "deny" {
            line.push_str(" reject");
        }
        t.push_str(&line);
        t.push('\n');
    }
    t
}

fn spec() -> impl Strategy<Value = Spec> {
    let node = (
        prop::collection::vec(0usize..3, 0..3),
        prop::option::of(0usize..3),
        any::<bool>(),
    );
    let service = (
        prop::collection::vec(0usize..7, 1..3),
        prop::collection::vec(0usize..12, 1..3),
    );
    let rule = (
        0usize..9,
        prop::collection::vec(0usize..8, 1..3),
        prop::collection::vec(0usize..8, 1..3),
        prop::collection::vec(0usize..8, 0..2),
        0usize..3,
        any::<bool>(),
    );
    (
        prop::collection::vec(node, 2..7),
        prop::collection::vec(service, 1..6),
        prop::collection::vec(rule, 1..12),
    )
        .prop_map(|(mut nodes, services, rules)| {
            // CIDR services need a gateway: node 0 always serves 10.100.0.0/16.
            if let Some(first) = nodes.first_mut() {
                first.1 = Some(0);
            }
            Spec {
                nodes,
                services,
                rules,
            }
        })
}

fn destinations(p: &Policy, via: NodeId) -> Vec<IpAddr> {
    let n = p.node(via).unwrap();
    let mut out: Vec<IpAddr> = n.addresses.iter().map(|a| a.addr()).collect();
    for s in &n.serves {
        let base = s.addr();
        out.push(base);
        if let IpAddr::V4(v4) = base {
            let b = u32::from(v4);
            out.extend([b + 0x0105, b + 0x0201, b + 0xffff].map(|x| IpAddr::V4(x.into())));
        } else {
            out.push("fd99::7".parse().unwrap());
        }
    }
    out.push("10.0.0.200".parse().unwrap());
    out.push("fd00::99".parse().unwrap());
    out
}

const FLOWS: &[(u8, u16)] = &[
    (6, 0),
    (6, 80),
    (6, 81),
    (6, 443),
    (6, 999),
    (6, 1000),
    (6, 1500),
    (6, 2000),
    (6, 2001),
    (6, 8443),
    (17, 53),
    (17, 54),
    (17, 1550),
    (1, 8),
    (1, 0),
    (1, 300),
    (58, 128),
    (58, 8),
    (47, 0),
    (47, 9),
    (99, 0),
    (132, 80),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_tables_agree_with_reference(spec in spec()) {
        let text = render(&spec);
        let p = match Policy::parse(&text, "random.policy") {
            Ok(p) => p,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
        };
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let tables: Vec<_> = p.nodes().iter().map(|n| p.compile_for(n.id, now)).collect();
        let mut linked = std::collections::BTreeSet::new();
        for via in p.nodes() {
            for dst in destinations(&p, via.id) {
                for src in p.nodes() {
                    for &(proto, port) in FLOWS {
                        let proto = IpProtocol(proto);
                        let want = p.evaluate(src.id, via.id, dst, Flow { proto, port }, now);
                        let got = tables[via.id.index()].ingress(src.id, dst, proto, port);
                        prop_assert_eq!(got, want, "ingress {} -> {} via {} {}/{}\n{}", src.name, dst, via.name, port, proto, text);
                        if src.id != via.id {
                            let got = tables[src.id.index()].egress(via.id, dst, proto, port);
                            prop_assert_eq!(got, want, "egress {} -> {} via {} {}/{}\n{}", src.name, dst, via.name, port, proto, text);
                            if want.allowed() {
                                linked.insert((src.id, via.id));
                                linked.insert((via.id, src.id));
                            }
                        }
                    }
                }
            }
        }
        // The probes start every port range the generator can write and
        // cover every destination network, so they find every allowed path:
        // peers must be exactly the nodes linked by an allowed probe.
        for t in &tables {
            let want: Vec<NodeId> = linked.iter().filter(|(a, _)| *a == t.node()).map(|(_, b)| *b).collect();
            prop_assert_eq!(t.peers(), want.as_slice(), "peers of {:?}\n{}", t.node(), text);
            for peer in t.peers() {
                prop_assert!(t.is_peer(*peer));
            }
        }
        for t in &tables {
            let next = t.next_expiry();
            if let Some(when) = next {
                prop_assert!(when > now);
            }
        }
    }

    #[test]
    fn hostile_text_never_panics(text in "\\PC{0,300}") {
        let _ = Policy::parse(&text, "fuzz.policy");
        let _ = Policy::check(&text, "fuzz.policy", SystemTime::now());
    }

    #[test]
    fn mutated_policies_never_panic(spec in spec(), cut in 0usize..2000, junk in "[ a-z0-9:/,.*>#=-]{0,12}") {
        let text = render(&spec);
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{junk}{}", &text[..at], &text[at..]);
        if let Ok(p) = Policy::parse(&mutated, "m.policy") {
            let now = SystemTime::now();
            for n in p.nodes() {
                let t = p.compile_for(n.id, now);
                let _ = t.ingress(n.id, "10.0.0.1".parse().unwrap(), IpProtocol::TCP, 80);
            }
            let _ = p.lint(now);
            let _ = p.run_expects(now);
        }
    }
}

/// Guards against a vacuous differential test: random policies must
/// produce every kind of verdict.
#[test]
fn random_policies_exercise_every_verdict_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use umbra::policy::{Action, RuleKind};
    let mut runner = TestRunner::deterministic();
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let (mut allow, mut drop_rule, mut reject, mut default, mut quarantine, mut audit) =
        (0, 0, 0, 0, 0, 0);
    for _ in 0..150 {
        let spec = spec().new_tree(&mut runner).unwrap().current();
        let p = Policy::parse(&render(&spec), "r.policy").unwrap();
        for via in p.nodes() {
            for dst in destinations(&p, via.id) {
                for src in p.nodes() {
                    for &(proto, port) in FLOWS {
                        let proto = IpProtocol(proto);
                        let v = p.evaluate(src.id, via.id, dst, Flow { proto, port }, now);
                        match (v.action, v.rule.and_then(|r| p.rule(r)).map(|r| r.kind)) {
                            (Action::Allow, _) => allow += 1,
                            (Action::Reject, _) => reject += 1,
                            (Action::Drop, None) => default += 1,
                            (Action::Drop, Some(RuleKind::Quarantine)) => quarantine += 1,
                            (Action::Drop, Some(_)) => drop_rule += 1,
                        }
                        audit += usize::from(v.audit.is_some());
                    }
                }
            }
        }
    }
    for (what, n) in [
        ("allow", allow),
        ("deny", drop_rule),
        ("reject", reject),
        ("default", default),
        ("quarantine", quarantine),
        ("audit", audit),
    ] {
        assert!(n > 100, "{what}: only {n} verdicts");
    }
}
