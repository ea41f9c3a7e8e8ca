//! `umbra policy ...`: offline tools for policy files.

use std::process::ExitCode;
use std::time::SystemTime;

use argh::FromArgs;

use umbra::policy::flowlog_agg::Observed;
use umbra::policy::{self as pol, Policy};
use umbra::time::{parse_rfc3339, system_time, unix_secs};

/// Check, explain, compare and show mesh policy files; learn rules from flow
/// logs and replay logs against a new policy (offline).
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "policy")]
pub struct PolicyCmd {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
enum Sub {
    Check(Check),
    Explain(Explain),
    Diff(Diff),
    Show(Show),
    Suggest(Suggest),
    Replay(Replay),
}

/// Parse, resolve, run the expect lines and lint; exit 1 on any error.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "check")]
struct Check {
    /// policy file
    #[argh(positional)]
    file: String,
    /// treat warnings as errors
    #[argh(switch)]
    strict: bool,
    /// evaluate at this RFC 3339 time instead of now
    #[argh(option)]
    at: Option<String>,
}

/// Trace flows from one node to a target: the verdict and every rule behind it.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "explain")]
struct Explain {
    /// policy file
    #[argh(positional)]
    file: String,
    /// source: node name, tunnel address or key
    #[argh(positional)]
    from: String,
    /// target: node name, address, key or role:NAME, optionally :PORT/PROTO
    #[argh(positional)]
    to: String,
    /// evaluate at this RFC 3339 time instead of now
    #[argh(option)]
    at: Option<String>,
}

/// Reachability gained and lost, and node changes, between two policies.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "diff")]
struct Diff {
    /// old policy file
    #[argh(positional)]
    old: String,
    /// new policy file
    #[argh(positional)]
    new: String,
    /// evaluate at this RFC 3339 time instead of now
    #[argh(option)]
    at: Option<String>,
}

/// Show one node's compiled view: what it accepts and whom it may reach.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "show")]
struct Show {
    /// policy file
    #[argh(positional)]
    file: String,
    /// node name, tunnel address or key
    #[argh(option)]
    node: String,
    /// evaluate at this RFC 3339 time instead of now
    #[argh(option)]
    at: Option<String>,
}

/// Suggest least-privilege rules from flow logs: policy lines to append
/// (audit rules unless --enforce), with coverage, unused rules and misfits.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "suggest")]
struct Suggest {
    /// current policy file
    #[argh(positional)]
    file: String,
    /// flow log files (JSON lines as nodes write them; `-` reads stdin)
    #[argh(positional)]
    logs: Vec<String>,
    /// emit allow rules with expect lines instead of audit rules
    #[argh(switch)]
    enforce: bool,
    /// leave out rules that would cover fewer flows than this (one-off
    /// probes and scans; default 1: suggest for every flow)
    #[argh(option, default = "1")]
    min_flows: u64,
    /// evaluate at this RFC 3339 time instead of now
    #[argh(option)]
    at: Option<String>,
}

/// Re-decide every observed flow under a new policy: what it would cut,
/// what it newly allows. Exit 1 when any observed flow would be cut.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "replay")]
struct Replay {
    /// the new policy file
    #[argh(positional)]
    file: String,
    /// flow log files (JSON lines as nodes write them; `-` reads stdin)
    #[argh(positional)]
    logs: Vec<String>,
    /// evaluate at this RFC 3339 time instead of now
    #[argh(option)]
    at: Option<String>,
}

/// Exit status for a policy with errors or failed expectations.
const EXIT_POLICY: u8 = 1;
/// Exit status for bad usage or unreadable files.
const EXIT_USAGE: u8 = 2;

/// Runs a `policy` subcommand, printing to stdout/stderr.
pub fn run(cmd: PolicyCmd) -> ExitCode {
    let result = match cmd.command {
        Sub::Check(c) => check(&c),
        Sub::Explain(e) => explain(&e),
        Sub::Diff(d) => diff(&d),
        Sub::Show(s) => show(&s),
        Sub::Suggest(s) => suggest(&s),
        Sub::Replay(r) => replay(&r),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("umbra policy: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn when(at: &Option<String>) -> Result<SystemTime, String> {
    match at {
        None => Ok(SystemTime::now()),
        Some(t) => parse_rfc3339(t).map(system_time).ok_or_else(|| {
            format!("--at: expected an RFC 3339 time such as 2026-05-01T17:00:00Z, found `{t}`")
        }),
    }
}

fn read(path: &str) -> Result<String, String> {
    umbra::daemon::read_policy_file(std::path::Path::new(path))
}

fn load(path: &str) -> Result<Policy, String> {
    let text = read(path)?;
    Policy::parse(&text, path).map_err(|e| e.to_string())
}

fn check(c: &Check) -> Result<u8, String> {
    let now = when(&c.at)?;
    let text = read(&c.file)?;
    let report = Policy::check(&text, &c.file, now);
    for d in &report.diagnostics {
        eprint!("{}", d.render(&c.file));
    }
    let passed = report.expects.iter().filter(|e| e.passed).count();
    let (errors, warnings) = (report.errors(), report.warnings());
    let p = &report.policy;
    let summary = format!(
        "policy {} ({}): {} nodes, {} roles, {} services, {} rules, {passed}/{} expects passed, {errors} errors, {warnings} warnings",
        p.id(),
        c.file,
        p.nodes().len(),
        p.roles().len(),
        p.services().len(),
        p.rules().len(),
        report.expects.len(),
    );
    if errors > 0 || (c.strict && warnings > 0) {
        eprintln!("FAILED {summary}");
        Ok(EXIT_POLICY)
    } else {
        println!("ok {summary}");
        Ok(0)
    }
}

fn explain(e: &Explain) -> Result<u8, String> {
    let now = when(&e.at)?;
    let p = load(&e.file)?;
    let out = pol::explain::explain(&p, &e.from, &e.to, unix_secs(now))?;
    print!("{out}");
    Ok(0)
}

fn diff(d: &Diff) -> Result<u8, String> {
    let now = when(&d.at)?;
    let (old, new) = (load(&d.old)?, load(&d.new)?);
    print!("{}", pol::diff::diff(&old, &new, unix_secs(now)));
    Ok(0)
}

fn show(s: &Show) -> Result<u8, String> {
    let now = when(&s.at)?;
    let p = load(&s.file)?;
    let node = p.find_node(&s.node).ok_or_else(|| {
        format!(
            "no node `{}` (name, tunnel address or key) in {}",
            s.node, s.file
        )
    })?;
    print!("{}", pol::show::show(&p, node.id, now));
    Ok(0)
}

/// Reads the flow logs, reporting malformed lines on stderr.
fn observe(logs: &[String]) -> Result<Observed, String> {
    if logs.is_empty() {
        return Err("expected at least one flow log file after the policy file".into());
    }
    let mut o = Observed::new();
    o.read_files(logs)?;
    for e in &o.stats.errors {
        eprintln!("{e}");
    }
    let more = o
        .stats
        .malformed
        .saturating_sub(o.stats.errors.len() as u64);
    if more > 0 {
        eprintln!("... and {more} more malformed lines");
    }
    Ok(o)
}

fn suggest(s: &Suggest) -> Result<u8, String> {
    let now = unix_secs(when(&s.at)?);
    let p = load(&s.file)?;
    let o = observe(&s.logs)?;
    let opts = pol::suggest::Options {
        enforce: s.enforce,
        now,
        min_flows: s.min_flows,
    };
    let found = pol::suggest::suggest_with(&p, &o, &opts);
    print!("{}", pol::suggest_render::render(&p, &found, &o.stats));
    Ok(0)
}

fn replay(r: &Replay) -> Result<u8, String> {
    let now = unix_secs(when(&r.at)?);
    let p = load(&r.file)?;
    let o = observe(&r.logs)?;
    let result = pol::replay::replay(&p, &o, now);
    print!("{}", pol::replay::render(&result, &o));
    Ok(if result.cut.is_empty() {
        0
    } else {
        EXIT_POLICY
    })
}
