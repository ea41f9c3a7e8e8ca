//! The mesh policy: one compact text file, shared unchanged by every node,
//! that says who is who, what each segment may reach, and proves it with
//! in-file tests. See `docs/policy.md` for the language.
//!
//! # Use from the node daemon
//!
//! ```no_run
//! use std::time::SystemTime;
//! use umbra::net::IpProtocol;
//! use umbra::policy::Policy;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let my_key = umbra::keys::PublicKey([0; 32]);
//! let text = std::fs::read_to_string("/etc/umbra/mesh.policy")?;
//! // Parses, resolves names and runs the file's `expect` lines.
//! let policy = Policy::load(&text, "mesh.policy", SystemTime::now())?;
//! let me = policy.node_by_key(&my_key).ok_or("this node is not in the policy")?;
//! let table = policy.compile_for(me.id, SystemTime::now());
//! // Per packet, no allocation:
//! # let (peer, dst) = (me.id, "10.0.0.1".parse()?);
//! let verdict = table.ingress(peer, dst, IpProtocol::TCP, 443);
//! if !verdict.allowed() { /* drop, or answer RST/ICMP if verdict.action == Action::Reject */ }
//! // Recompile when a rule expires:
//! let _when = table.next_expiry();
//! # Ok(()) }
//! ```

pub mod ast;
mod atoms;
pub mod compile;
pub mod diag;
pub mod diff;
pub mod eval;
mod expects;
pub mod explain;
pub mod flowlog;
pub mod flowlog_agg;
mod lexer;
pub mod lint;
pub mod model;
pub mod ports;
pub mod replay;
mod resolve;
pub mod show;
pub mod suggest;
pub mod suggest_cover;
pub mod suggest_group;
pub mod suggest_render;
pub mod syntax;
pub mod table;
use crate::time;

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use blake2::{Blake2s256, Digest};

pub use crate::net::IpNet;
pub use ast::{Endpoint, Host, RuleKind};
pub use compile::NodeTable;
pub use diag::{Diagnostic, PolicyError, Severity, Span};
pub use eval::{Action, Verdict};
pub use model::{Dest, Node, NodeId, Role, Rule, RuleId, Service};
pub use ports::Flow;

use crate::keys::PublicKey;
use crate::net::IpProtocol;
use ast::Want;
use model::Model;

/// The policy's content hash: BLAKE2s-256 of its canonical text (every
/// statement with comments and extra blanks removed), so reformatting or
/// commenting keeps the id while any change of meaning or order changes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(pub [u8; 32]);

impl PolicyId {
    /// All 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The largest policy file umbra reads (CLI and daemon alike). Policy files
/// are small; refusing absurd ones keeps a bad deploy from exhausting memory.
pub const MAX_POLICY_BYTES: u64 = 16 << 20;

/// The short form: the first 16 hex digits, as tools print and logs stamp.
impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyId({self})")
    }
}

/// A parsed and resolved policy.
#[derive(Debug, Clone)]
pub struct Policy {
    file: String,
    id: PolicyId,
    pub(crate) model: Model,
}

/// The outcome of one `expect` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectOutcome {
    pub line: u32,
    pub text: String,
    pub passed: bool,
    /// On failure: the first flow that did not behave as expected.
    pub detail: String,
    pub(crate) span: Span,
}

/// Everything `check` reports: the (possibly partial) policy and all findings.
#[derive(Debug, Clone)]
pub struct Report {
    pub policy: Policy,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    pub expects: Vec<ExpectOutcome>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

impl Policy {
    /// Parses and resolves a policy. `file_name` only labels diagnostics.
    /// Hostile input yields errors, never a panic. Does not run `expect`
    /// lines; [`Policy::load`] does.
    pub fn parse(text: &str, file_name: &str) -> Result<Policy, PolicyError> {
        let (policy, mut errs) = Self::build(text, file_name);
        if errs.is_empty() {
            return Ok(policy);
        }
        diag::attach_sources(&mut errs, text);
        Err(PolicyError {
            file: file_name.to_string(),
            diagnostics: errs,
        })
    }

    /// Parses, resolves and runs the file's `expect` lines at `now`; what a
    /// node calls on every (re)load. Any failing expectation is an error.
    pub fn load(text: &str, file_name: &str, now: SystemTime) -> Result<Policy, PolicyError> {
        let policy = Self::parse(text, file_name)?;
        let mut errs: Vec<Diagnostic> = policy
            .run_expects(now)
            .into_iter()
            .filter(|e| !e.passed)
            .map(|e| Diagnostic::error("expect-failed", e.span, e.detail))
            .take(syntax::MAX_ERRORS)
            .collect();
        if errs.is_empty() {
            return Ok(policy);
        }
        diag::attach_sources(&mut errs, text);
        Err(PolicyError {
            file: file_name.to_string(),
            diagnostics: errs,
        })
    }

    /// Everything `umbra policy check` reports: syntax and resolution
    /// errors, lint warnings and expectation results, all at once.
    pub fn check(text: &str, file_name: &str, now: SystemTime) -> Report {
        let (policy, mut diags) = Self::build(text, file_name);
        let syntax_ok = !diags.iter().any(|d| d.code == "syntax");
        let mut expects = Vec::new();
        if syntax_ok {
            diags.extend(lint::lint(&policy.model, time::unix_secs(now)));
            expects = policy.run_expects(now);
            diags.extend(
                expects
                    .iter()
                    .filter(|e| !e.passed)
                    .map(|e| Diagnostic::error("expect-failed", e.span, e.detail.clone())),
            );
        }
        diags.sort_by_key(|d| (d.span, d.severity));
        diag::cap_warnings(&mut diags);
        diag::attach_sources(&mut diags, text);
        Report {
            policy,
            diagnostics: diags,
            expects,
        }
    }

    fn build(text: &str, file_name: &str) -> (Policy, Vec<Diagnostic>) {
        let (stmts, mut errs) = syntax::parse_statements(text);
        let (model, res_errs) = Model::build(&stmts);
        errs.extend(res_errs);
        errs.truncate(syntax::MAX_ERRORS);
        let mut h = Blake2s256::new();
        h.update(b"umbra-policy-v1\n");
        for s in &stmts {
            h.update(s.canonical.as_bytes());
            h.update(b"\n");
        }
        let id = PolicyId(h.finalize().into());
        (
            Policy {
                file: file_name.to_string(),
                id,
                model,
            },
            errs,
        )
    }

    /// The stable content hash.
    pub fn id(&self) -> PolicyId {
        self.id
    }

    pub fn file_name(&self) -> &str {
        &self.file
    }

    pub fn nodes(&self) -> &[Node] {
        &self.model.nodes
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.model.nodes.get(id.index())
    }

    pub fn node_by_key(&self, key: &PublicKey) -> Option<&Node> {
        self.model.by_key.get(key).and_then(|id| self.node(*id))
    }

    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.model.by_name.get(name).and_then(|id| self.node(*id))
    }

    /// The node whose tunnel address is `ip`.
    pub fn node_by_addr(&self, ip: IpAddr) -> Option<&Node> {
        self.model.nodes.iter().find(|n| n.owns(ip))
    }

    /// Finds a node by name, tunnel address or base64 key.
    pub fn find_node(&self, text: &str) -> Option<&Node> {
        self.node_by_name(text)
            .or_else(|| text.parse().ok().and_then(|ip| self.node_by_addr(ip)))
            .or_else(|| {
                PublicKey::from_base64(text)
                    .ok()
                    .and_then(|k| self.node_by_key(&k))
            })
    }

    pub fn roles(&self) -> &[Role] {
        &self.model.roles
    }

    pub fn services(&self) -> &[Service] {
        &self.model.services
    }

    pub fn rules(&self) -> &[Rule] {
        &self.model.rules
    }

    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.model.rules.get(id.index())
    }

    /// Compiles the data-path table for `node` at `now` (expired rules are
    /// left out; see [`NodeTable::next_expiry`]).
    pub fn compile_for(&self, node: NodeId, now: SystemTime) -> NodeTable {
        compile::compile(&self.model, self.id, node, now)
    }

    /// The reference evaluator: the verdict for a packet from `src` to `dst`
    /// received by `via` (the node owning `dst` or a gateway serving it).
    /// Slow and simple; the compiled table must agree with it.
    pub fn evaluate(
        &self,
        src: NodeId,
        via: NodeId,
        dst: IpAddr,
        flow: Flow,
        now: SystemTime,
    ) -> Verdict {
        eval::evaluate(&self.model, src, via, dst, flow, time::unix_secs(now))
    }

    /// Lint warnings at `now` (expired rules depend on the time).
    pub fn lint(&self, now: SystemTime) -> Vec<Diagnostic> {
        lint::lint(&self.model, time::unix_secs(now))
    }

    /// Runs every `expect` line (each at its own `at` time, else `now`).
    pub fn run_expects(&self, now: SystemTime) -> Vec<ExpectOutcome> {
        let now = time::unix_secs(now);
        let probes = eval::probe_flows(&self.model);
        let mut tables = expects::Tables::default();
        self.model
            .expects
            .iter()
            .map(|e| self.run_expect(e, now, &probes, &mut tables))
            .collect()
    }

    fn run_expect(
        &self,
        e: &model::Expect,
        now: i64,
        probes: &[Flow],
        tables: &mut expects::Tables,
    ) -> ExpectOutcome {
        let t = e.at.unwrap_or(now);
        let mut outcome = ExpectOutcome {
            line: e.line,
            text: e.text.clone(),
            passed: true,
            detail: String::new(),
            span: e.span,
        };
        // Which pair fails, found fast; then described by the reference.
        let scan = expects::scan(self, e, t, probes, tables);
        if let Some((src, via, ip)) = scan.first_failure {
            let flows: Vec<Flow> = e.flow.map_or_else(|| probes.to_vec(), |f| vec![f]);
            let verdicts: Vec<(Flow, Verdict)> = flows
                .iter()
                .map(|f| (*f, eval::evaluate(&self.model, src, via, ip, *f, t)))
                .collect();
            let shown = verdicts
                .iter()
                .find(|(_, v)| match e.want {
                    Want::Allow => true,
                    Want::Deny => v.allowed(),
                    Want::Drop => v.action != Action::Drop,
                    Want::Reject => v.action != Action::Reject,
                })
                .copied();
            let (flow, v) = shown.unwrap_or((
                Flow {
                    proto: IpProtocol(0),
                    port: 0,
                },
                Verdict::DEFAULT_DENY,
            ));
            let flow_text = if e.flow.is_some() {
                format!(" {flow}")
            } else {
                String::new()
            };
            outcome.passed = false;
            outcome.detail = format!(
                "expectation failed: {} -> {ip} (via {}){flow_text} is {}, expected {}",
                self.node(src).map_or("?", |n| n.name.as_str()),
                self.node(via).map_or("?", |n| n.name.as_str()),
                self.describe_verdict(&v),
                want_text(e.want),
            );
            return outcome;
        }
        if scan.checked == 0 {
            outcome.passed = false;
            outcome.detail =
                "expectation failed: it names no flow between two different nodes".into();
        }
        outcome
    }

    /// `allow by r3`, `drop by r5`, `drop (no rule allows it)`.
    pub fn describe_verdict(&self, v: &Verdict) -> String {
        let action = match v.action {
            Action::Allow => "allow",
            Action::Drop => "drop",
            Action::Reject => "reject",
        };
        let mut s = match v.rule.and_then(|r| self.rule(r)) {
            Some(r) => format!("{action} by {} (line {}: {})", r.label, r.line, r.text),
            None => format!("{action} (no rule allows it)"),
        };
        if let Some(a) = v.audit.and_then(|r| self.rule(r)) {
            s.push_str(&format!(", audited by {}", a.label));
        }
        s
    }
}

fn want_text(w: Want) -> &'static str {
    match w {
        Want::Allow => "allow",
        Want::Deny => "deny",
        Want::Drop => "drop",
        Want::Reject => "reject",
    }
}
