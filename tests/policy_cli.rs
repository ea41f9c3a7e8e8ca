//! `umbra policy check|explain|diff|show` through the built binary.

use std::process::{Command, Output};

fn umbra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(args)
        .output()
        .expect("runs umbra")
}

fn example(name: &str) -> String {
    format!("{}/policy-examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn policy_id(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    umbra::policy::Policy::parse(&text, path)
        .unwrap()
        .id()
        .to_string()
}

#[test]
fn check_passes_clean_examples_and_prints_the_id() {
    for name in [
        "kubernetes-ingress.policy",
        "three-tier.policy",
        "docker-host.policy",
    ] {
        let path = example(name);
        let out = umbra(&["policy", "check", &path]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with(&format!("ok policy {} ({path})", policy_id(&path))),
            "{stdout}"
        );
        assert!(
            stdout.contains("expects passed, 0 errors, 0 warnings"),
            "{stdout}"
        );
    }
}

#[test]
fn check_fails_the_lint_showcase_with_located_diagnostics() {
    let path = example("lint-showcase.policy");
    let out = umbra(&["policy", "check", &path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{path}:22:7: error[unknown-name]: no role named `ghost`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(" 22 | allow role:ghost -> web"), "{stderr}");
    assert!(stderr.contains("    |       ^^^^^^^^^^\n"), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:19:7: warning[shadowed-rule]")),
        "{stderr}"
    );
    assert!(
        stderr.contains("0/1 expects passed, 6 errors, 8 warnings"),
        "{stderr}"
    );
}

#[test]
fn check_strict_fails_on_warnings_and_at_moves_time() {
    let path = example("three-tier.policy");
    // At the grant's expiry the ssh rule is expired (a warning) and the
    // expect that ops can ssh now fails (an error).
    let out = umbra(&["policy", "check", &path, "--at", "2099-06-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("warning[expired-rule]: rule ops-ssh-grant expired at 2099-01-01T00:00:00Z"),
        "{stderr}"
    );
    assert!(stderr.contains("error[expect-failed]"), "{stderr}");
    let dir = std::env::temp_dir().join(format!("umbra-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let warn = dir.join("warn.policy");
    std::fs::write(&warn, "role unused\n").unwrap();
    let warn = warn.to_str().unwrap();
    assert_eq!(umbra(&["policy", "check", warn]).status.code(), Some(0));
    assert_eq!(
        umbra(&["policy", "check", "--strict", warn]).status.code(),
        Some(1)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let out = umbra(&["policy", "check", "/nonexistent/mesh.policy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/mesh.policy"));
    let path = example("three-tier.policy");
    let out = umbra(&["policy", "explain", &path, "nobody", "db-1:5432/tcp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no node named `nobody`"),
        "{}",
        text(&out.stderr)
    );
    let out = umbra(&["policy", "check", &path, "--at", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let out = umbra(&["policy", "show", &path, "--node", "ghost"]);
    assert_eq!(out.status.code(), Some(2));
    // A broken policy cannot be explained: the errors are shown.
    let out = umbra(&[
        "policy",
        "explain",
        &example("lint-showcase.policy"),
        "a",
        "c:5432/tcp",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("error[duplicate-key]"));
}

#[test]
fn explain_traces_the_deciding_rules() {
    let path = example("three-tier.policy");
    let out = umbra(&[
        "policy",
        "explain",
        &path,
        "web-1",
        "10.20.0.31:5432/tcp",
        "--at",
        "2030-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let want = format!(
        "policy {id} ({path})\n\
         web-1 -> 10.20.0.31 tcp/5432 (received by db-1)\n  \
         verdict: REJECT (answered with RST/ICMP), decided by web-never-db at {path}:27: deny role:web -> postgres reject as web-never-db\n  \
         matching rules:\n    \
         web-never-db {path}:27   deny role:web -> postgres reject as web-never-db decides\n",
        id = policy_id(&path)
    );
    assert_eq!(text(&out.stdout), want);

    // Quarantine beats the allow; the audit rule is shown as dry-run.
    let key = "api-1";
    let out = umbra(&[
        "policy",
        "explain",
        &path,
        key,
        "[fd20::32]:5432/tcp",
        "--at",
        "2030-01-01T00:00:00Z",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("verdict: DROP (silently), decided by incident-4711"),
        "{stdout}"
    );
    assert!(
        stdout.contains("receiver db-2 is quarantined by incident-4711"),
        "{stdout}"
    );
    assert!(
        stdout.contains("allows, but overridden: quarantine beats everything"),
        "{stdout}"
    );
    let out = umbra(&[
        "policy",
        "explain",
        &path,
        "10.20.0.100",
        "db-1:5432/tcp",
        "--at",
        "2030-01-01T00:00:00Z",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("verdict: DROP (silently): no rule allows this flow (default deny)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("audit only: would allow (logged, not enforced)"),
        "{stdout}"
    );
    // FROM may be a key.
    let text_tt = std::fs::read_to_string(&path).unwrap();
    let ops_key = text_tt
        .lines()
        .find(|l| l.starts_with("node ops-laptop"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap();
    let out = umbra(&[
        "policy",
        "explain",
        &path,
        ops_key,
        "db-1:22/tcp",
        "--at",
        "2030-01-01T00:00:00Z",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ops-laptop -> 10.20.0.31 tcp/22 (received by db-1)\n  verdict: ALLOW, decided by ops-ssh-grant"), "{stdout}");
    // The expired grant is shown as ignored.
    let out = umbra(&[
        "policy",
        "explain",
        &path,
        "ops-laptop",
        "10.20.0.31:22/tcp",
        "--at",
        "2100-01-01T00:00:00Z",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("expired at 2099-01-01T00:00:00Z (ignored)"),
        "{stdout}"
    );
    // Without a port: every service port at the target.
    let out = umbra(&[
        "policy",
        "explain",
        &path,
        "web-1",
        "api-1",
        "--at",
        "2030-01-01T00:00:00Z",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("web-1 -> 10.20.0.21 (received by api-1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("api              tcp/8080         allow by web-to-api"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ssh              tcp/22           drop (no rule allows it)"),
        "{stdout}"
    );
    assert!(stdout.contains("reachable: yes"), "{stdout}");
}

#[test]
fn show_prints_the_compiled_view() {
    let path = example("kubernetes-ingress.policy");
    let out = umbra(&[
        "policy",
        "show",
        &path,
        "--node",
        "ingress-a",
        "--at",
        "2030-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for want in [
        format!("policy {} ({path})\nnode ingress-a\n", policy_id(&path)),
        "  serves     10.96.0.0/16\n".into(),
        "  from alice:\n    to 10.96.1.0/24: tcp/80 (by blue-users), tcp/443 (by blue-users)\n".into(),
        "  from bob:\n    to 10.96.2.0/24: tcp/80 (by red-users), tcp/443 (by red-users)\n".into(),
        "  from ingress-b, worker-1, worker-2, worker-3:\n    to 10.18.1.7/32: any protocol (by cluster-mesh)\n".into(),
        "  worker-1 10.18.2.1/32: any protocol (by cluster-mesh)\n".into(),
        "peers answered (all others are cloaked): alice, bob, ingress-b, worker-1, worker-2, worker-3\n".into(),
    ] {
        assert!(stdout.contains(&want), "missing {want:?} in\n{stdout}");
    }
}

#[test]
fn diff_reports_reachability_and_node_changes() {
    let dir = std::env::temp_dir().join(format!("umbra-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = example("three-tier.policy");
    let text_old = std::fs::read_to_string(&old).unwrap();
    let new_key = umbra::keys::PublicKey([42; 32]).to_base64();
    let web2_key = text_old
        .lines()
        .find(|l| l.starts_with("node web-2"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap();
    let text_new = text_old
        .replace(
            "quarantine node:db-2  as incident-4711",
            "quarantine node:api-2  as incident-4712",
        )
        .replace(web2_key, &new_key)
        .replace("allow role:monitoring -> metrics            as scrape", "");
    let new = dir.join("new.policy");
    std::fs::write(&new, text_new).unwrap();
    let new = new.to_str().unwrap();
    let out = umbra(&["policy", "diff", &old, new, "--at", "2030-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let want = format!(
        "old policy {} ({old})\nnew policy {} ({new})\n\
         nodes:\n  \
         ~ node web-2 re-keyed: {web2_key} -> {new_key}\n  \
         ! node api-2 quarantined\n  \
         ! node db-2 released from quarantine\n\
         reachability (+ gained, - lost):\n  \
         + https tcp/443 to web-1, web-2 from db-2\n  \
         + postgres tcp/5432 to db-2 from api-1\n  \
         + ssh tcp/22 to db-2 from ops-laptop\n  \
         - api tcp/8080 to api-2 from web-1, web-2\n  \
         - https tcp/443 to web-1, web-2 from api-2\n  \
         - metrics icmp/8 to api-1, api-2, db-1, ops-laptop, web-1, web-2 from prometheus\n  \
         - metrics icmp6/128 to api-1, api-2, db-1, web-1, web-2 from prometheus\n  \
         - metrics tcp/9100 to api-1, api-2, db-1, ops-laptop, web-1, web-2 from prometheus\n  \
         - postgres tcp/5432 to db-1 from api-2\n  \
         - ssh tcp/22 to api-2 from ops-laptop\n",
        policy_id(&old),
        policy_id(new),
    );
    assert_eq!(stdout, want);
    let same = umbra(&["policy", "diff", &old, &old]);
    assert!(text(&same.stdout).ends_with("nodes: no changes\nreachability: no changes\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
