//! Applying a policy to a running engine: resolve every peer first (a bad
//! entry leaves the old state intact), then swap peers, routes and the
//! compiled table, and cut tracked flows the new policy no longer allows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use super::engine::{rule_id, Engine};
use super::events::Event;
use super::flows::{EndReason, PolicyMeta};
use super::routes::Routes;
use crate::conntrack::{self, Direction};
use crate::keys::{PresharedKey, PublicKey};
use crate::net::IpProtocol;
use crate::policy::{Node, NodeId, Policy};
use crate::tunnel::{PeerConfig, PeerId};

/// What the engine needs from the outside world to configure a peer: file
/// and name lookups stay at the edge.
pub trait PeerResolver {
    /// The preshared key for `node` (all-zero when it names none).
    fn preshared_key(&mut self, node: &Node) -> Result<PresharedKey, String>;
    /// The UDP endpoint for `node`, if it has one.
    fn endpoint(&mut self, node: &Node) -> Result<Option<SocketAddr>, String>;
}

/// Why a reload was refused; the old state stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// Our public key is not in the policy.
    NotInPolicy(PublicKey),
    /// A peer's preshared key could not be loaded.
    Peer { name: String, problem: String },
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NotInPolicy(k) => write!(
                f,
                "this node's public key {k} is not in the policy: add a `node` line with `key {k}`"
            ),
            ReloadError::Peer { name, problem } => write!(f, "peer {name}: {problem}"),
        }
    }
}

impl std::error::Error for ReloadError {}

impl Engine {
    /// Applies a new policy. On error nothing changes.
    pub fn reload(
        &mut self,
        policy: Policy,
        resolver: &mut dyn PeerResolver,
        wall: SystemTime,
    ) -> Result<(), ReloadError> {
        let public = *self.device.public_key();
        let me = policy
            .node_by_key(&public)
            .ok_or(ReloadError::NotInPolicy(public))?
            .id;
        let table = policy.compile_for(me, wall);
        // Resolve every peer first so a bad entry leaves the old state intact.
        let mut wanted: Vec<(NodeId, PeerConfig)> = Vec::new();
        for &id in table.peers() {
            let Some(node) = policy.node(id) else {
                continue;
            };
            let psk = resolver
                .preshared_key(node)
                .map_err(|problem| ReloadError::Peer {
                    name: node.name.clone(),
                    problem,
                })?;
            let endpoint = match resolver.endpoint(node) {
                Ok(e) => e,
                Err(problem) => {
                    // An unresolvable endpoint is not fatal: the peer can
                    // still contact us, and roaming will teach us where it is.
                    self.events.push(Event::PeerProblem {
                        name: node.name.clone(),
                        problem,
                    });
                    None
                }
            };
            let mut pc = PeerConfig::new(node.key);
            pc.preshared_key = psk;
            pc.endpoint = endpoint;
            pc.persistent_keepalive = node
                .keepalive
                .map(|s| std::time::Duration::from_secs(u64::from(s)));
            wanted.push((id, pc));
        }

        let wanted_keys: HashMap<PublicKey, NodeId> =
            wanted.iter().map(|(id, pc)| (pc.public_key, *id)).collect();
        let old_meta = self.meta.clone();
        self.decisions.fold(&old_meta);
        let mut removed = 0;
        let mut flows_of_removed = 0;
        for peer in self.device.peer_ids().collect::<Vec<_>>() {
            let Some(key) = self.device.peer_key(peer) else {
                continue;
            };
            if !wanted_keys.contains_key(&key) {
                let name = self.node_name(peer);
                self.device.remove_peer(peer);
                flows_of_removed += self.conntrack.remove_peer(conntrack::PeerId(peer.0));
                self.record_ended(EndReason::PeerRemoved, policy.id(), &old_meta);
                self.events.push(Event::PeerRemoved { name });
                removed += 1;
            }
        }
        let mut routes = Routes::default();
        for node in policy.nodes() {
            if node.id != me {
                for net in node.space() {
                    routes.insert(net, node.id);
                }
            }
        }
        let mut peer_node = Vec::new();
        for (node_id, pc) in wanted {
            let fresh = self.device.peer_id(&pc.public_key).is_none();
            let peer = self.device.upsert_peer(pc);
            if fresh && !self.peer_node.is_empty() {
                if let Some(n) = policy.node(node_id) {
                    self.events.push(Event::PeerAdded {
                        name: n.name.clone(),
                    });
                }
            }
            let slot = peer.0 as usize;
            if peer_node.len() <= slot {
                peer_node.resize(slot + 1, None);
            }
            if let Some(s) = peer_node.get_mut(slot) {
                *s = Some(node_id);
            }
        }
        self.routes = routes;
        let mut node_peer = vec![None; policy.nodes().len()];
        for (slot, node) in peer_node.iter().enumerate() {
            if let Some(n) = node.and_then(|n| node_peer.get_mut(n.index())) {
                *n = Some(PeerId(slot as u32));
            }
        }
        self.node_peer = node_peer;
        self.peer_node = peer_node;
        self.table = table;
        self.me = me;
        self.policy = policy;
        self.meta = std::sync::Arc::new(PolicyMeta::of(&self.policy));
        self.wall = wall;
        let cut = self.recheck_flows();
        self.record_ended(EndReason::Policy, self.policy.id(), &old_meta);
        self.events.push(Event::PolicyApplied {
            id: self.policy.id(),
            peers: self.table.peers().len(),
            flows_cut: cut + flows_of_removed,
            peers_removed: removed,
        });
        Ok(())
    }

    /// Re-evaluates every tracked flow against the current table; returns
    /// how many were cut.
    pub(super) fn recheck_flows(&mut self) -> usize {
        let (table, peer_node) = (&self.table, &self.peer_node);
        self.conntrack.rejudge(|e| {
            let node = peer_node.get(e.peer().0 as usize).copied().flatten()?;
            let proto = e.protocol();
            let echo = IpProtocol::icmp_for(e.dst()).echo_request_type();
            let port = match (e.dst_port(), proto.is_icmp()) {
                (Some(p), _) => p,
                (None, true) => echo.map_or(0, u16::from),
                (None, false) => 0,
            };
            let verdict = match e.initiator() {
                Direction::Inbound => table.ingress(node, e.dst(), proto, port),
                Direction::Outbound => table.egress(node, e.dst(), proto, port),
            };
            verdict.allowed().then(|| rule_id(&verdict))
        })
    }

    pub(super) fn node_name(&self, peer: PeerId) -> String {
        self.peer_node
            .get(peer.0 as usize)
            .copied()
            .flatten()
            .and_then(|n| self.policy.node(n))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("peer#{}", peer.0))
    }
}
