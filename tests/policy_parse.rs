//! The parser and resolver: error positions, messages, rendering, the
//! content hash, and the resolved model the daemon reads.

use std::time::SystemTime;

use umbra::keys::PublicKey;
use umbra::policy::{Policy, Severity};

fn key(i: u8) -> String {
    PublicKey([i; 32]).to_base64()
}

fn errors(text: &str) -> Vec<(u32, u32, &'static str, String)> {
    let err = Policy::parse(text, "t.policy").expect_err("should not parse");
    err.diagnostics
        .iter()
        .map(|d| (d.span.line, d.span.col, d.code, d.message.clone()))
        .collect()
}

#[test]
fn syntax_errors_point_at_the_offending_token_and_say_what_was_expected() {
    let text = format!(
        "# comment\n\
         node a key {k1} addr 10.0.0.1/24\n\
         node b key {k2} addr 10.0.0.300/24\n\
         service web role:x tcp/99999\n\
         allow role:a web\n\
         frobnicate\n\
         deny * -> web reject until tomorrow\n\
         expect a -> b:80 is allow\n\
         allow * -> web reject\n",
        k1 = key(1),
        k2 = key(2)
    );
    let got = errors(&text);
    let k = key(2).len() as u32;
    let want: Vec<(u32, u32, &str)> = vec![
        (3, 18 + k, "syntax"),
        (4, 20, "syntax"),
        (5, 14, "syntax"),
        (6, 1, "syntax"),
        (7, 28, "syntax"),
        (8, 13, "syntax"),
        (9, 16, "syntax"),
    ];
    let positions: Vec<(u32, u32, &str)> =
        got.iter().map(|(l, c, code, _)| (*l, *c, *code)).collect();
    assert_eq!(positions, want, "{got:#?}");
    assert!(
        got[0].3.contains("expected an IPv4 or IPv6 address"),
        "{}",
        got[0].3
    );
    assert_eq!(
        got[1].3,
        "expected a port number from 0 to 65535, found `99999`"
    );
    assert_eq!(got[2].3, "expected `->`, found `web`");
    assert!(
        got[3]
            .3
            .starts_with("expected a statement (node, role, service"),
        "{}",
        got[3].3
    );
    assert!(got[4].3.contains("RFC 3339"));
    assert!(got[5].3.contains("expected PORT/PROTO"), "{}", got[5].3);
    assert_eq!(got[6].3, "`reject` only applies to deny rules");
}

#[test]
fn rendering_names_file_line_col_and_draws_a_caret() {
    let text = "node a key nope addr 10.0.0.1\n";
    let err = Policy::parse(text, "mesh.policy").unwrap_err();
    let shown = err.to_string();
    assert_eq!(
        shown,
        "mesh.policy:1:12: error[syntax]: bad key: a key must be 44 characters of base64 encoding 32 bytes \
         (as `umbra genkey` or `wg genkey` print)\n \
         1 | node a key nope addr 10.0.0.1\n   \
         |            ^^^^\nmesh.policy: 1 error"
    );
}

#[test]
fn resolution_errors_are_all_reported() {
    let text = format!(
        "node a key {k1} addr 10.0.0.1/24 roles web\n\
         node b key {k2} addr 10.0.0.2/24\n\
         service s role:wbe tcp/80\n\
         service t node:c tcp/80\n\
         allow role:web,node:zz -> s,nosuch\n\
         expect a -> 10.9.9.9:80/tcp is deny\n",
        k1 = key(1),
        k2 = key(2)
    );
    let got = errors(&text);
    let brief: Vec<(u32, u32, &str)> = got.iter().map(|(l, c, code, _)| (*l, *c, *code)).collect();
    assert_eq!(
        brief,
        [
            (3, 11, "unknown-name"),
            (4, 11, "unknown-name"),
            (5, 16, "unknown-name"),
            (5, 29, "unknown-name"),
            (6, 13, "unknown-name")
        ]
    );
    assert_eq!(
        got[0].3,
        "no role named `wbe`; expected a defined role (known: web)"
    );
    assert_eq!(
        got[3].3,
        "no service named `nosuch`; expected a defined service (known: s, t)"
    );
}

#[test]
fn content_hash_ignores_comments_and_spacing_but_not_meaning() {
    let base = format!(
        "node a key {} addr 10.0.0.1/24 roles web\nservice s role:web tcp/80\nallow * -> s\n",
        key(1)
    );
    let id = Policy::parse(&base, "a").unwrap().id();
    let spaced = format!("# hello\n\nnode   a key {}   addr 10.0.0.1/24 roles web # x\nservice s role:web tcp/80\nallow * ->s\n", key(1));
    assert_eq!(Policy::parse(&spaced, "b").unwrap().id(), id);
    let changed = base.replace("tcp/80", "tcp/81");
    assert_ne!(Policy::parse(&changed, "a").unwrap().id(), id);
    assert_eq!(id.to_string().len(), 16);
    assert_eq!(id.to_hex().len(), 64);
    assert!(id.to_hex().starts_with(&id.to_string()));
}

#[test]
fn the_model_the_daemon_reads() {
    let text = format!(
        "node gw key {k1} addr 10.0.0.1/24,fd00::1/64 endpoint [2001:db8::1]:51820 roles edge,web \
         serves 192.168.0.0/16 keepalive 25 psk /etc/umbra/gw.psk\n\
         node laptop key {k2} addr 10.0.0.2 endpoint laptop.lan:4000\n\
         service lan 192.168.1.0/24 tcp/22,80-90 udp/53 icmp/8 proto/47\n\
         allow node:laptop -> lan as laptop-lan\n\
         quarantine {k3}\n",
        k1 = key(1),
        k2 = key(2),
        k3 = key(3)
    );
    let p = Policy::parse(&text, "m.policy").unwrap();
    let gw = p.node_by_name("gw").unwrap();
    assert_eq!(p.node_by_key(&PublicKey([1; 32])).unwrap().name, "gw");
    assert_eq!(p.find_node("10.0.0.2").unwrap().name, "laptop");
    assert_eq!(p.find_node(&key(2)).unwrap().name, "laptop");
    assert_eq!(
        gw.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.1/24", "fd00::1/64"]
    );
    assert_eq!(
        gw.endpoint.as_ref().unwrap().to_string(),
        "[2001:db8::1]:51820"
    );
    assert_eq!(gw.roles, ["edge", "web"]);
    assert_eq!(gw.serves[0].to_string(), "192.168.0.0/16");
    assert_eq!(gw.keepalive, Some(25));
    assert_eq!(
        gw.psk_file.as_deref(),
        Some(std::path::Path::new("/etc/umbra/gw.psk"))
    );
    let laptop = p.node_by_name("laptop").unwrap();
    assert_eq!(laptop.addresses[0].prefix(), 32);
    assert_eq!(
        laptop.endpoint.as_ref().unwrap().to_string(),
        "laptop.lan:4000"
    );
    let lan = &p.services()[0];
    assert_eq!(lan.ports.to_string(), "tcp/22,tcp/80-90,udp/53,icmp/8,gre");
    assert_eq!(lan.dests.len(), 1);
    assert_eq!(p.rules()[0].label, "laptop-lan");
    assert_eq!(p.rules()[1].label, "r2");
    // A quarantined key that no node has is only a warning.
    // (A host-only address like laptop's /32 is no overlapping network.)
    let lints: Vec<_> = p
        .lint(SystemTime::now())
        .into_iter()
        .map(|d| (d.code, d.severity, d.span.line))
        .collect();
    assert_eq!(
        lints,
        [
            ("unused-role", Severity::Warning, 1),
            ("unused-role", Severity::Warning, 1),
            ("unknown-key", Severity::Warning, 5)
        ]
    );
}

#[test]
fn failing_expectations_refuse_the_load() {
    let text = format!(
        "node a key {} addr 10.0.0.1/24\nnode b key {} addr 10.0.0.2/24\nservice s node:b tcp/80\n\
         allow node:a -> s\nexpect a -> b:80/tcp is allow\nexpect b -> a:80/tcp is allow\n\
         expect a -> b:80/tcp is deny at 2000-01-01T00:00:00Z\n",
        key(1),
        key(2)
    );
    let err = Policy::load(&text, "e.policy", SystemTime::now()).unwrap_err();
    let lines: Vec<(u32, &str)> = err
        .diagnostics
        .iter()
        .map(|d| (d.span.line, d.code))
        .collect();
    assert_eq!(lines, [(6, "expect-failed"), (7, "expect-failed")]);
    assert_eq!(
        err.diagnostics[0].message,
        "expectation failed: b -> 10.0.0.1 (via a) 80/tcp is drop (no rule allows it), expected allow"
    );
    assert!(
        err.diagnostics[1].message.contains("is allow by r1"),
        "{}",
        err.diagnostics[1].message
    );
}

#[test]
fn hostile_inputs_are_errors_not_panics() {
    let nasty = [
        "node",
        "node \u{0}",
        "node a key",
        "service s",
        "service s * tcp/",
        "service s * tcp/5-",
        "service s * ,,,",
        "allow -> ->",
        "expect -> is",
        "expect a -> [::1",
        "expect a -> [::1]x",
        "expect a -> fd00::1:80/tcp is allow",
        "node a key AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= addr 10.0.0.1/24 endpoint [zz]:1",
        "node a key AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= addr 10.0.0.1/24 keepalive 99999999999",
        "allow * -> x until 9999-12-31T23:59:60+23:59",
        "→→→ ,,, ### ",
        "\u{feff}node ü",
        "service s 10.0.0.1/24 tcp/1",
    ];
    for text in nasty {
        assert!(
            Policy::parse(text, "n").is_err(),
            "{text:?} should be rejected"
        );
    }
    let long = "a".repeat(100_000);
    assert!(Policy::parse(&long, "n").is_err());
    let many = "x\n".repeat(10_000);
    let err = Policy::parse(&many, "n").unwrap_err();
    assert_eq!(err.diagnostics.len(), 100, "errors are capped");
}
