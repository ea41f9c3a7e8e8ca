//! The resolved model: nodes, roles, services with concrete destinations,
//! rules and expects, all referring to each other by index.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::ast::{Endpoint, RuleKind, Want};
use super::diag::Span;
use super::ports::{Flow, PortSet};
use crate::keys::PublicKey;
use crate::net::IpNet;

/// Index of a node in [`super::Policy::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a rule in [`super::Policy::rules`]; stamped on verdicts and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);

impl RuleId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A member of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub key: PublicKey,
    /// Tunnel addresses; the address is the node's own, the prefix its tunnel network.
    pub addresses: Vec<IpNet>,
    pub endpoint: Option<Endpoint>,
    pub roles: Vec<String>,
    /// Networks reachable through this node (it acts as their gateway).
    pub serves: Vec<IpNet>,
    pub keepalive: Option<u16>,
    pub psk_file: Option<PathBuf>,
    pub line: u32,
    pub(crate) role_ids: Vec<u32>,
}

impl Node {
    /// True when `ip` is one of the node's own tunnel addresses.
    pub fn owns(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.addr() == ip)
    }

    /// True when traffic for `ip` is delivered to this node: its own address or a served network.
    pub fn accepts(&self, ip: IpAddr) -> bool {
        self.owns(ip) || self.serves.iter().any(|s| s.contains(ip))
    }

    /// The networks this node answers for: its host addresses and `serves`.
    pub fn space(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.addresses
            .iter()
            .map(|a| IpNet::host(a.addr()))
            .chain(self.serves.iter().copied())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub members: Vec<NodeId>,
    pub line: u32,
    pub span: Span,
}

/// Part of a service's location: a network delivered to (and decided by) `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dest {
    pub node: NodeId,
    pub net: IpNet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub ports: PortSet,
    /// Sorted by node, so a node's share is found by binary search.
    pub dests: Vec<Dest>,
    pub line: u32,
    pub span: Span,
}

impl Service {
    pub fn dests_at(&self, node: NodeId) -> &[Dest] {
        let lo = self.dests.partition_point(|d| d.node < node);
        let hi = self.dests.partition_point(|d| d.node <= node);
        self.dests.get(lo..hi).unwrap_or(&[])
    }

    pub fn covers(&self, via: NodeId, dst: IpAddr, flow: Flow) -> bool {
        self.ports.contains(flow.proto, flow.port)
            && self.dests_at(via).iter().any(|d| d.net.contains(dst))
    }
}

/// A set of nodes given by roles, names and `*`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceSet {
    pub all: bool,
    pub roles: Vec<u32>,
    pub nodes: Vec<NodeId>,
}

impl SourceSet {
    pub fn contains(&self, node: &Node) -> bool {
        self.all
            || self.nodes.binary_search(&node.id).is_ok()
            || node.role_ids.iter().any(|r| self.roles.contains(r))
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.roles.is_empty() && self.nodes.is_empty()
    }
}

/// Which service a rule points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SvcRef {
    Named(u32),
    /// `*`: every address of every node and every served network, any protocol.
    Everything,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: RuleId,
    pub kind: RuleKind,
    /// Evaluated and logged, never enforced.
    pub audit: bool,
    pub reject: bool,
    /// Seconds since the epoch; the rule is in force strictly before this.
    pub until: Option<i64>,
    /// The `as NAME` name, or `r<N>` for the N-th rule in the file.
    pub label: String,
    pub line: u32,
    pub text: String,
    pub from: SourceSet,
    pub except: SourceSet,
    pub services: Vec<SvcRef>,
    pub(crate) until_span: Option<Span>,
    pub(crate) span: Span,
}

impl Rule {
    pub fn active(&self, now: i64) -> bool {
        self.until.is_none_or(|u| now < u)
    }

    pub fn matches_source(&self, node: &Node) -> bool {
        self.from.contains(node) && !self.except.contains(node)
    }
}

/// A resolved `expect` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub line: u32,
    pub span: Span,
    pub text: String,
    pub sources: Vec<NodeId>,
    /// Every (receiving node, address) the target stands for.
    pub paths: Vec<(NodeId, IpAddr)>,
    pub flow: Option<Flow>,
    pub want: Want,
    pub at: Option<i64>,
}

/// Everything resolution produces.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub nodes: Vec<Node>,
    pub roles: Vec<Role>,
    pub services: Vec<Service>,
    pub everything: Option<Service>,
    pub rules: Vec<Rule>,
    pub expects: Vec<Expect>,
    pub by_name: HashMap<String, NodeId>,
    pub by_key: HashMap<PublicKey, NodeId>,
    pub role_by_name: HashMap<String, u32>,
    pub service_by_name: HashMap<String, u32>,
    /// Roles and services referenced by services or rules (for the unused lints).
    pub used_roles: Vec<bool>,
    pub used_services: Vec<bool>,
    /// Quarantine lines naming keys that belong to no node.
    pub stray_keys: Vec<Span>,
}
