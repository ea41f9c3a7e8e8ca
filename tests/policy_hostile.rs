//! Hostile policy text (issue 9, defect 4 and the sanitising defect):
//! diagnostics stay bounded however large the file, and nothing a policy
//! contains can put raw control characters on a terminal or into a log.

use std::time::SystemTime;

use umbra::keys::PrivateKey;
use umbra::policy::{Policy, Severity};

fn key(i: u8) -> String {
    PrivateKey::from_bytes([i; 32]).public_key().to_string()
}

fn rendered(text: &str) -> (usize, String) {
    let report = Policy::check(text, "hostile.policy", SystemTime::now());
    let out: String = report
        .diagnostics
        .iter()
        .map(|d| d.render("hostile.policy"))
        .collect();
    (report.diagnostics.len(), out)
}

#[test]
fn a_huge_line_is_not_copied_into_each_finding() {
    // One 4 MB line, and errors on it and after it.
    let mut text = format!("node {} key", "n".repeat(4 << 20));
    text.push_str("\nbogus\n");
    let (n, out) = rendered(&text);
    assert!(n >= 1);
    assert!(out.len() < 4000, "{} bytes of diagnostics", out.len());
}

#[test]
fn warnings_are_capped() {
    let mut text = format!("node a key {} addr 10.0.0.1/24 roles r0\n", key(1));
    for i in 0..5000 {
        text += &format!("role r{i}\n");
    }
    let report = Policy::check(&text, "roles.policy", SystemTime::now());
    let warnings = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    assert!(warnings <= 1001, "{warnings} warnings");
    assert!(report
        .diagnostics
        .iter()
        .any(|d| d.code == "too-many-warnings" && d.message.contains("more warnings")));
}

#[test]
fn control_characters_are_refused_and_never_echoed_raw() {
    for evil in ["\u{1b}[31mred", "nul\0byte", "bidi\u{202e}txt", "bell\u{7}"] {
        let text = format!("node {evil} key {} addr 10.0.0.1/24 roles r\n", key(1));
        let err = Policy::parse(&text, "evil.policy").unwrap_err().to_string();
        assert!(err.contains("is not allowed in a policy"), "{err:?}");
        let (_, out) = rendered(&text);
        for s in [&err, &out] {
            assert!(
                !s.chars().any(|c| c.is_control() && c != '\n'),
                "raw control character in {s:?}"
            );
            assert!(!s.contains('\u{202e}'), "{s:?}");
        }
    }
}

#[test]
fn a_byte_order_mark_is_named_not_a_mystery() {
    let text = format!("\u{feff}node a key {} addr 10.0.0.1/24 roles r\n", key(1));
    let err = Policy::parse(&text, "bom.policy").unwrap_err().to_string();
    assert!(err.contains("u{feff}"), "{err}");
}
