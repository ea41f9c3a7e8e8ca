//! Name resolution: turns parsed statements into the resolved [`Model`].
//!
//! Resolution is lenient: it always yields a model and collects errors
//! beside it, so `check` can lint a broken file and report everything at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::ast::{EndRef, RuleKind, Stmt, StmtKind, Subject, Target};
use super::diag::{Diagnostic, Span};
use super::model::{
    Dest, Expect, Model, Node, NodeId, Role, Rule, RuleId, Service, SourceSet, SvcRef,
};
use super::ports::PortSet;
use crate::net::IpNet;

fn unknown(span: Span, what: &str, name: &str, known: Vec<&str>) -> Diagnostic {
    let mut known = known;
    known.sort_unstable();
    let hint = if known.is_empty() {
        String::new()
    } else {
        let shown: Vec<&str> = known.iter().take(8).copied().collect();
        let more = if known.len() > 8 { ", ..." } else { "" };
        format!(" (known: {}{more})", shown.join(", "))
    };
    Diagnostic::error(
        "unknown-name",
        span,
        format!("no {what} named `{name}`; expected a defined {what}{hint}"),
    )
}

impl Model {
    /// Resolves statements; returns the model and every resolution error.
    pub fn build(stmts: &[Stmt]) -> (Model, Vec<Diagnostic>) {
        let mut m = Model::default();
        let mut errs = Vec::new();
        m.collect_nodes_and_roles(stmts, &mut errs);
        m.collect_services(stmts, &mut errs);
        m.collect_rules(stmts, &mut errs);
        m.collect_expects(stmts, &mut errs);
        (m, errs)
    }

    fn collect_nodes_and_roles(&mut self, stmts: &[Stmt], errs: &mut Vec<Diagnostic>) {
        let mut addr_owner: HashMap<IpAddr, NodeId> = HashMap::new();
        for st in stmts {
            match &st.kind {
                StmtKind::Role(names) => {
                    for n in names {
                        if self.role_by_name.contains_key(&n.value) {
                            errs.push(Diagnostic::error(
                                "duplicate-name",
                                n.span,
                                format!(
                                    "role `{}` is declared twice; expected each role once",
                                    n.value
                                ),
                            ));
                        } else {
                            self.add_role(&n.value, st.line, n.span);
                        }
                    }
                }
                StmtKind::Node(ns) => {
                    if let Some(prev) = self.by_name.get(&ns.name.value) {
                        let line = self.nodes.get(prev.index()).map_or(0, |n| n.line);
                        errs.push(Diagnostic::error(
                            "duplicate-name",
                            ns.name.span,
                            format!("node `{}` is already defined on line {line}; expected a unique name", ns.name.value),
                        ));
                        continue;
                    }
                    let Some(key) = &ns.key else { continue };
                    let id = NodeId(self.nodes.len() as u32);
                    if let Some(prev) = self.by_key.get(&key.value) {
                        let other = self
                            .nodes
                            .get(prev.index())
                            .map_or("?", |n| n.name.as_str());
                        errs.push(Diagnostic::error(
                            "duplicate-key",
                            key.span,
                            format!("node `{}` has the same key as node `{other}`; expected one key per node", ns.name.value),
                        ));
                    } else {
                        self.by_key.insert(key.value, id);
                    }
                    for a in &ns.addrs {
                        match addr_owner.get(&a.value.addr()) {
                            Some(prev) => {
                                let other = self
                                    .nodes
                                    .get(prev.index())
                                    .map_or(ns.name.value.as_str(), |n| n.name.as_str());
                                errs.push(Diagnostic::error(
                                    "duplicate-address",
                                    a.span,
                                    format!("address {} is also given to node `{other}`; expected unique tunnel addresses", a.value.addr()),
                                ));
                            }
                            None => {
                                addr_owner.insert(a.value.addr(), id);
                            }
                        }
                    }
                    let mut role_ids = Vec::new();
                    for r in &ns.roles {
                        let rid = match self.role_by_name.get(&r.value) {
                            Some(&rid) => rid,
                            None => self.add_role(&r.value, st.line, r.span),
                        };
                        if let Some(role) = self.roles.get_mut(rid as usize) {
                            if !role.members.contains(&id) {
                                role.members.push(id);
                            }
                        }
                        role_ids.push(rid);
                    }
                    role_ids.sort_unstable();
                    role_ids.dedup();
                    self.by_name.insert(ns.name.value.clone(), id);
                    self.nodes.push(Node {
                        id,
                        name: ns.name.value.clone(),
                        key: key.value,
                        addresses: ns.addrs.iter().map(|a| a.value).collect(),
                        endpoint: ns.endpoint.clone(),
                        roles: ns.roles.iter().map(|r| r.value.clone()).collect(),
                        serves: ns.serves.iter().map(|s| s.value).collect(),
                        keepalive: ns.keepalive,
                        psk_file: ns.psk.as_ref().map(PathBuf::from),
                        line: st.line,
                        role_ids,
                    });
                }
                _ => {}
            }
        }
        self.used_roles = vec![false; self.roles.len()];
    }

    fn add_role(&mut self, name: &str, line: u32, span: Span) -> u32 {
        let rid = self.roles.len() as u32;
        self.roles.push(Role {
            name: name.to_string(),
            members: Vec::new(),
            line,
            span,
        });
        self.role_by_name.insert(name.to_string(), rid);
        rid
    }

    fn role(&mut self, name: &str, span: Span, errs: &mut Vec<Diagnostic>) -> Option<u32> {
        match self.role_by_name.get(name) {
            Some(&r) => {
                if let Some(u) = self.used_roles.get_mut(r as usize) {
                    *u = true;
                }
                Some(r)
            }
            None => {
                errs.push(unknown(
                    span,
                    "role",
                    name,
                    self.role_by_name.keys().map(String::as_str).collect(),
                ));
                None
            }
        }
    }

    fn node_named(&self, name: &str, span: Span, errs: &mut Vec<Diagnostic>) -> Option<NodeId> {
        let found = self.by_name.get(name).copied();
        if found.is_none() {
            errs.push(unknown(
                span,
                "node",
                name,
                self.by_name.keys().map(String::as_str).collect(),
            ));
        }
        found
    }

    fn host_dests(&self, node: &Node, out: &mut Vec<Dest>) {
        out.extend(node.addresses.iter().map(|a| Dest {
            node: node.id,
            net: IpNet::host(a.addr()),
        }));
    }

    fn collect_services(&mut self, stmts: &[Stmt], errs: &mut Vec<Diagnostic>) {
        for st in stmts {
            let StmtKind::Service(s) = &st.kind else {
                continue;
            };
            if self.service_by_name.contains_key(&s.name.value) {
                errs.push(Diagnostic::error(
                    "duplicate-name",
                    s.name.span,
                    format!(
                        "service `{}` is defined twice; expected a unique name",
                        s.name.value
                    ),
                ));
                continue;
            }
            let mut dests = Vec::new();
            for t in &s.targets {
                match &t.value {
                    Target::Everyone => {
                        for n in &self.nodes {
                            self.host_dests(n, &mut dests);
                        }
                    }
                    Target::Role(r) => {
                        if let Some(rid) = self.role(r, t.span, errs) {
                            // `role` returned an index into `roles`.
                            let members = self.roles[rid as usize].members.clone();
                            for id in members {
                                if let Some(n) = self.nodes.get(id.index()) {
                                    self.host_dests(n, &mut dests);
                                }
                            }
                        }
                    }
                    Target::Node(n) => {
                        if let Some(id) = self.node_named(n, t.span, errs) {
                            if let Some(n) = self.nodes.get(id.index()) {
                                self.host_dests(n, &mut dests);
                            }
                        }
                    }
                    Target::Cidr(c) => {
                        let before = dests.len();
                        for n in &self.nodes {
                            for a in &n.addresses {
                                if c.contains(a.addr()) {
                                    dests.push(Dest {
                                        node: n.id,
                                        net: IpNet::host(a.addr()),
                                    });
                                }
                            }
                            for sv in &n.serves {
                                if sv.overlaps(c) {
                                    let narrower = if sv.prefix() >= c.prefix() { *sv } else { *c };
                                    dests.push(Dest {
                                        node: n.id,
                                        net: narrower,
                                    });
                                }
                            }
                        }
                        if dests.len() == before {
                            errs.push(Diagnostic::error(
                                "unserved-cidr",
                                t.span,
                                format!("no node has an address in {c} or serves it; expected a node with `serves` covering it"),
                            ));
                        }
                    }
                }
            }
            dests.sort_unstable();
            dests.dedup();
            self.service_by_name
                .insert(s.name.value.clone(), self.services.len() as u32);
            self.services.push(Service {
                name: s.name.value.clone(),
                ports: s.ports.clone(),
                dests,
                line: st.line,
                span: s.name.span,
            });
        }
        self.used_services = vec![false; self.services.len()];
        let mut all = Vec::new();
        for n in &self.nodes {
            self.host_dests(n, &mut all);
            all.extend(n.serves.iter().map(|s| Dest {
                node: n.id,
                net: *s,
            }));
        }
        all.sort_unstable();
        all.dedup();
        let ports = PortSet {
            any: true,
            ranges: Vec::new(),
        };
        self.everything = Some(Service {
            name: "*".into(),
            ports,
            dests: all,
            line: 0,
            span: Span::default(),
        });
    }

    fn sources(
        &mut self,
        subjects: &[super::ast::Loc<Subject>],
        quarantine: bool,
        errs: &mut Vec<Diagnostic>,
    ) -> SourceSet {
        let mut set = SourceSet::default();
        for s in subjects {
            match &s.value {
                Subject::Everyone => set.all = true,
                Subject::Role(r) => {
                    if let Some(rid) = self.role(r, s.span, errs) {
                        set.roles.push(rid);
                    }
                }
                Subject::Node(n) => {
                    if let Some(id) = self.node_named(n, s.span, errs) {
                        set.nodes.push(id);
                    }
                }
                Subject::Key(k) => match self.by_key.get(k) {
                    Some(&id) => set.nodes.push(id),
                    // A quarantined key that no node uses is harmless (its
                    // handshakes get no answer anyway), so only a warning.
                    None if quarantine => self.stray_keys.push(s.span),
                    None => errs.push(Diagnostic::error(
                        "unknown-name",
                        s.span,
                        "no node has this key; expected the key of a defined node",
                    )),
                },
            }
        }
        set.nodes.sort_unstable();
        set.nodes.dedup();
        set.roles.sort_unstable();
        set.roles.dedup();
        set
    }

    fn collect_rules(&mut self, stmts: &[Stmt], errs: &mut Vec<Diagnostic>) {
        let mut labels: HashMap<String, u32> = HashMap::new();
        for st in stmts {
            let StmtKind::Rule(r) = &st.kind else {
                continue;
            };
            let id = RuleId(self.rules.len() as u32);
            let quarantine = r.kind == RuleKind::Quarantine;
            let from = self.sources(&r.from, quarantine, errs);
            let except = self.sources(&r.except, quarantine, errs);
            let mut services = Vec::new();
            for t in &r.to {
                if t.value == "*" {
                    services.push(SvcRef::Everything);
                } else if let Some(&sid) = self.service_by_name.get(&t.value) {
                    if let Some(u) = self.used_services.get_mut(sid as usize) {
                        *u = true;
                    }
                    services.push(SvcRef::Named(sid));
                } else {
                    errs.push(unknown(
                        t.span,
                        "service",
                        &t.value,
                        self.service_by_name.keys().map(String::as_str).collect(),
                    ));
                }
            }
            let label = match &r.name {
                Some(n) => {
                    if let Some(line) = labels.get(&n.value) {
                        errs.push(Diagnostic::error(
                            "duplicate-name",
                            n.span,
                            format!("rule name `{}` is already used on line {line}; expected a unique name", n.value),
                        ));
                    }
                    labels.insert(n.value.clone(), st.line);
                    n.value.clone()
                }
                None => format!("r{}", id.0 + 1),
            };
            let span = r.from.first().map_or(
                Span {
                    line: st.line,
                    col: 1,
                    len: 1,
                },
                |f| f.span,
            );
            self.rules.push(Rule {
                id,
                kind: r.kind,
                audit: r.audit,
                reject: r.reject,
                until: r.until.as_ref().map(|u| u.value),
                label,
                line: st.line,
                text: st.canonical.clone(),
                from,
                except,
                services,
                until_span: r.until.as_ref().map(|u| u.span),
                span,
            });
        }
    }

    fn end_nodes(&self, e: &EndRef, span: Span, errs: &mut Vec<Diagnostic>) -> Vec<NodeId> {
        match e {
            EndRef::Everyone => self.nodes.iter().map(|n| n.id).collect(),
            EndRef::Role(r) => match self.role_by_name.get(r) {
                Some(&rid) => self.roles[rid as usize].members.clone(),
                None => {
                    errs.push(unknown(
                        span,
                        "role",
                        r,
                        self.role_by_name.keys().map(String::as_str).collect(),
                    ));
                    Vec::new()
                }
            },
            EndRef::Node(n) => self.node_named(n, span, errs).into_iter().collect(),
            EndRef::Key(k) => match self.by_key.get(k) {
                Some(&id) => vec![id],
                None => {
                    errs.push(Diagnostic::error(
                        "unknown-name",
                        span,
                        "no node has this key; expected a defined node's key",
                    ));
                    Vec::new()
                }
            },
            EndRef::Addr(ip) => {
                let found: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|n| n.owns(*ip))
                    .map(|n| n.id)
                    .collect();
                if found.is_empty() {
                    errs.push(Diagnostic::error(
                        "unknown-name",
                        span,
                        format!("no node has the tunnel address {ip}; expected a node's address"),
                    ));
                }
                found
            }
        }
    }

    /// Resolves an `explain`/`expect` destination into (receiving node, address) paths.
    pub fn end_paths(
        &self,
        e: &EndRef,
        span: Span,
        errs: &mut Vec<Diagnostic>,
    ) -> Vec<(NodeId, IpAddr)> {
        if let EndRef::Addr(ip) = e {
            let paths: Vec<(NodeId, IpAddr)> = self
                .nodes
                .iter()
                .filter(|n| n.accepts(*ip))
                .map(|n| (n.id, *ip))
                .collect();
            if paths.is_empty() {
                errs.push(Diagnostic::error(
                    "unknown-name",
                    span,
                    format!("no node has or serves the address {ip}; expected a tunnel address or an address in a served network"),
                ));
            }
            return paths;
        }
        let mut paths = Vec::new();
        for id in self.end_nodes(e, span, errs) {
            if let Some(n) = self.nodes.get(id.index()) {
                paths.extend(n.addresses.iter().map(|a| (id, a.addr())));
            }
        }
        paths
    }

    /// Resolves an `explain`/`expect` source into nodes.
    pub fn end_sources(&self, e: &EndRef, span: Span, errs: &mut Vec<Diagnostic>) -> Vec<NodeId> {
        self.end_nodes(e, span, errs)
    }

    fn collect_expects(&mut self, stmts: &[Stmt], errs: &mut Vec<Diagnostic>) {
        for st in stmts {
            let StmtKind::Expect(e) = &st.kind else {
                continue;
            };
            let sources = self.end_sources(&e.from.value, e.from.span, errs);
            let paths = self.end_paths(&e.to.value, e.to.span, errs);
            self.expects.push(Expect {
                line: st.line,
                span: e.from.span,
                text: st.canonical.clone(),
                sources,
                paths,
                flow: e.flow,
                want: e.want,
                at: e.at,
            });
        }
    }
}
