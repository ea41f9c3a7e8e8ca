//! The policy language's statements as the parser produces them: the
//! vocabulary shared by the statement parser ([`super::syntax`]), the atom
//! parsers (`atoms.rs`) and the resolver.

use std::net::IpAddr;

use super::diag::Span;
use super::ports::{Flow, PortSet};
use crate::keys::PublicKey;
use crate::net::IpNet;

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc<T> {
    pub value: T,
    pub span: Span,
}

/// A node's `endpoint`: where to send handshakes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A name resolved later (through /etc/hosts) by the daemon.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            Host::Ip(a) => write!(f, "{a}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Everyone,
    Role(String),
    Node(String),
    Key(PublicKey),
}

/// Where a service lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Everyone,
    Role(String),
    Node(String),
    Cidr(IpNet),
}

/// One end of an `expect` (or of `explain`): a node, a role, an address or a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndRef {
    Everyone,
    Role(String),
    Node(String),
    Addr(IpAddr),
    Key(PublicKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Allow,
    Deny,
    Quarantine,
}

/// What an `expect` line wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Want {
    Allow,
    /// Dropped or rejected.
    Deny,
    Drop,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStmt {
    pub name: Loc<String>,
    pub key: Option<Loc<PublicKey>>,
    pub addrs: Vec<Loc<IpNet>>,
    pub endpoint: Option<Endpoint>,
    pub roles: Vec<Loc<String>>,
    pub serves: Vec<Loc<IpNet>>,
    pub keepalive: Option<u16>,
    pub psk: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStmt {
    pub name: Loc<String>,
    pub targets: Vec<Loc<Target>>,
    pub ports: PortSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStmt {
    pub kind: RuleKind,
    pub audit: bool,
    pub from: Vec<Loc<Subject>>,
    /// Service names; `*` means every address of every node, any protocol.
    pub to: Vec<Loc<String>>,
    pub except: Vec<Loc<Subject>>,
    pub until: Option<Loc<i64>>,
    pub reject: bool,
    pub name: Option<Loc<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectStmt {
    pub from: Loc<EndRef>,
    pub to: Loc<EndRef>,
    pub flow: Option<Flow>,
    pub want: Want,
    pub at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StmtKind {
    Node(NodeStmt),
    Role(Vec<Loc<String>>),
    Service(ServiceStmt),
    Rule(RuleStmt),
    Expect(ExpectStmt),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub line: u32,
    /// The statement's tokens joined by single spaces, comments dropped:
    /// what the content hash covers and what tools quote.
    pub canonical: String,
}

/// Longest accepted name; keeps output tidy and hostile input bounded.
pub(super) const MAX_NAME: usize = 63;
