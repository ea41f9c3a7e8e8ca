//! What the engine reports to its operator: the edge drains these and logs
//! them, tests assert on them. Bounded so a flood cannot grow memory.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;

use crate::net::IpProtocol;
use crate::policy::PolicyId;

pub use crate::log::Level;

/// One flow, as logs show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDesc {
    /// The peer node's name on the other end.
    pub peer: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: IpProtocol,
    /// Destination port, or ICMP type.
    pub port: u16,
    /// True for packets from the local tunnel towards the peer.
    pub outbound: bool,
}

impl fmt::Display for FlowDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.proto;
        let arrow = if self.outbound { "to" } else { "from" };
        write!(
            f,
            "{proto} {} -> {} port {} ({arrow} {})",
            self.src, self.dst, self.port, self.peer
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A policy took effect.
    PolicyApplied {
        id: PolicyId,
        peers: usize,
        flows_cut: usize,
        peers_removed: usize,
    },
    /// An audit rule matched a new flow; it was not enforced.
    Audit {
        /// The policy in force when the rule matched.
        policy: PolicyId,
        rule: String,
        would: &'static str,
        flow: FlowDesc,
    },
    /// A new flow was refused by the policy.
    Denied {
        /// The policy in force when the flow was refused.
        policy: PolicyId,
        rule: Option<String>,
        rejected: bool,
        flow: FlowDesc,
    },
    /// A locally originated new flow the policy denies, refused back to the
    /// local application at once (TCP RST / ICMP administratively
    /// prohibited); nothing was sent to the peer.
    RefusedLocally {
        rule: Option<String>,
        policy: String,
        flow: FlowDesc,
    },
    /// A peer's sessions were dropped because the policy removed or
    /// quarantined it.
    PeerRemoved {
        name: String,
    },
    PeerAdded {
        name: String,
    },
    /// A peer's endpoint or preshared key could not be resolved.
    PeerProblem {
        name: String,
        problem: String,
    },
    /// Audit and denied events over the per-second budget, not recorded.
    Suppressed {
        count: u64,
    },
}

impl Event {
    pub fn level(&self) -> Level {
        match self {
            Event::Denied { .. } => Level::Debug,
            Event::PeerProblem { .. } => Level::Warn,
            Event::PolicyApplied {
                peers: 0,
                peers_removed: 1..,
                ..
            } => Level::Warn,
            _ => Level::Info,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PolicyApplied {
                id,
                peers,
                flows_cut,
                peers_removed,
            } => {
                write!(
                    f,
                    "policy {id} applied: {peers} peers, {peers_removed} removed, {flows_cut} flows no longer allowed were cut"
                )?;
                if *peers == 0 && *peers_removed > 0 {
                    write!(f, "; this policy removes EVERY peer of this node: all its tunnels are down (check the file is complete and its rules intended)")?;
                }
                Ok(())
            }
            Event::Audit {
                policy,
                rule,
                would,
                flow,
            } => {
                write!(
                    f,
                    "audit rule '{rule}' (policy {policy}) would {would}: {flow}"
                )
            }
            Event::Denied {
                policy,
                rule,
                rejected,
                flow,
            } => {
                let how = if *rejected { "rejected" } else { "dropped" };
                match rule {
                    Some(r) => write!(f, "{how} by rule '{r}' (policy {policy}): {flow}"),
                    None => write!(f, "{how} (no rule allows it; policy {policy}): {flow}"),
                }
            }
            Event::RefusedLocally { rule, policy, flow } => {
                let rule = rule.as_deref().unwrap_or("default-deny");
                write!(
                    f,
                    "refused locally by rule '{rule}' of policy {policy}: {flow}"
                )
            }
            Event::PeerRemoved { name } => {
                write!(f, "peer {name} removed; its sessions were dropped")
            }
            Event::PeerAdded { name } => write!(f, "peer {name} added"),
            Event::PeerProblem { name, problem } => write!(f, "peer {name}: {problem}"),
            Event::Suppressed { count } => {
                write!(
                    f,
                    "{count} more audit/denied flow events in the last second were not logged"
                )
            }
        }
    }
}

/// A bounded queue of events; the oldest are dropped (and counted) when full.
#[derive(Debug, Default)]
pub struct EventQueue {
    queue: VecDeque<Event>,
    pub lost: u64,
}

const CAPACITY: usize = 1024;

impl EventQueue {
    pub fn push(&mut self, e: Event) {
        if self.queue.len() >= CAPACITY {
            self.queue.pop_front();
            self.lost += 1;
        }
        self.queue.push_back(e);
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }
}
