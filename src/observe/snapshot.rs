//! Builds the answers to `status` and `flows` from a running engine: a
//! read-only walk over the tunnel's peers and the connection table, done
//! when asked, never on the packet path.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::community_id::community_id_v1;
use super::proto::{Count, Decision, Flow, Flows, PeerStatus, Status, MAX_FLOWS_LISTED};
use crate::conntrack::{Direction, FlowState, TcpState};
use crate::node::engine::DropReason;
use crate::node::Engine;
use crate::policy::RuleId;
use crate::tunnel::Dropped;

/// What the edge knows about the node that the engine does not.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `tun` or `userspace`.
    pub data_plane: &'static str,
    pub interface: Option<String>,
    pub data_plane_up: bool,
    pub listen_port: u16,
    pub started: Instant,
    pub policy_loaded: SystemTime,
    pub reloads_ok: u64,
    pub reloads_rejected: u64,
    pub flow_log: Option<(u64, u64)>,
    /// Offloads in use (`udp-gso`, `udp-gro`, `tun-tso`, `tun-uso`).
    pub offloads: Vec<&'static str>,
    /// Packet I/O counters of the UDP sockets and the packet device, by
    /// name (see docs/observability.md); refreshed every tick.
    pub io: Vec<(&'static str, u64)>,
}

/// The stable name of a drop reason, as status and metrics show it.
pub fn drop_name(d: &DropReason) -> String {
    match d {
        DropReason::Tunnel(t) => match t {
            Dropped::Malformed => "malformed_datagram",
            Dropped::Mac1 => "bad_mac1",
            Dropped::UnknownPeer => "unknown_key",
            Dropped::RateLimited => "rate_limited",
            Dropped::UnknownIndex => "unknown_index",
            Dropped::Replay => "replay",
            Dropped::Flood => "handshake_flood",
            Dropped::Crypto => "decrypt_failed",
            Dropped::Expired => "session_expired",
            Dropped::BadInner => "bad_inner_packet",
        }
        .to_string(),
        DropReason::Malformed => "malformed_packet".into(),
        DropReason::NoRoute => "no_route".into(),
        DropReason::Spoofed => "spoofed_source".into(),
        DropReason::NotForUs => "not_for_this_node".into(),
        DropReason::Invalid => "conntrack_invalid".into(),
        DropReason::Denied => "policy".into(),
        DropReason::NoEndpoint => "no_endpoint".into(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}").to_lowercase(),
    }
}

fn state_name(s: FlowState) -> &'static str {
    match s {
        FlowState::Tcp(t) => match t {
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv => "syn-recv",
            TcpState::MidStream => "mid-stream",
            TcpState::Established => "established",
            TcpState::FinWait { .. } => "fin-wait",
            TcpState::TimeWait => "time-wait",
            TcpState::Close => "close",
        },
        FlowState::Udp { replied: true } | FlowState::Other { replied: true } => "replied",
        FlowState::Udp { replied: false } | FlowState::Other { replied: false } => "unreplied",
        FlowState::IcmpEcho { replied: true } => "replied",
        FlowState::IcmpEcho { replied: false } => "unreplied",
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `status`.
pub fn status(engine: &Engine, info: &NodeInfo, now: Instant, wall: SystemTime) -> Status {
    let meta = engine.policy_meta();
    let policy = engine.policy();
    let device = engine.device();
    let mut peers = Vec::new();
    for id in device.peer_ids() {
        let Some(stats) = device.peer_stats(id, now) else {
            continue;
        };
        let node = engine.peer_node(id);
        let pn = node.and_then(|n| policy.node(n));
        let ago = stats
            .last_handshake
            .map(|t| now.saturating_duration_since(t));
        peers.push(PeerStatus {
            name: pn.map_or_else(|| format!("peer#{}", id.0), |n| n.name.clone()),
            public_key: device
                .peer_key(id)
                .map(|k| k.to_string())
                .unwrap_or_default(),
            roles: pn.map(|n| n.roles.clone()).unwrap_or_default(),
            endpoint: stats.endpoint.map(|e| e.to_string()),
            allowed_ips: pn
                .map(|n| n.space().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            latest_handshake_ms: ago.map(|d| d.as_millis() as u64),
            latest_handshake_unix: ago.map(|d| unix_secs(wall.checked_sub(d).unwrap_or(wall))),
            session: stats.has_session,
            handshakes: stats.handshakes,
            rx_bytes: stats.rx_bytes,
            tx_bytes: stats.tx_bytes,
            rx_packets: stats.rx_packets,
            tx_packets: stats.tx_packets,
            keepalive_secs: pn.and_then(|n| n.keepalive),
        });
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));

    let mut flows = std::collections::BTreeMap::<String, u64>::new();
    let ct = engine.conntrack();
    for e in ct.iter() {
        let key = format!("{}/{}", e.protocol().transport(), state_name(e.state()));
        *flows.entry(key).or_insert(0) += 1;
    }

    let decisions = engine.decision_totals();
    let mut drops = std::collections::BTreeMap::<String, u64>::new();
    for (d, n) in engine.drops() {
        if *d != DropReason::Denied {
            *drops.entry(drop_name(d)).or_insert(0) += n;
        }
    }
    drops.insert("queue_full".into(), engine.device().queue_dropped());
    // Policy refusals, by why: no rule, a deny rule, reject, quarantine.
    for (verdict, rule, n) in &decisions {
        let reason = match (*verdict, rule.as_str()) {
            ("drop", "default-deny") => "no_rule",
            ("drop", _) => "denied_by_rule",
            ("reject", _) => "reject",
            ("quarantine", _) => "quarantine",
            _ => continue,
        };
        *drops.entry(reason.to_string()).or_insert(0) += n;
    }
    let replies = engine.replies();
    let completed: u64 = peers.iter().map(|p| p.handshakes).sum();
    let count = |name: &str, value: u64| Count {
        name: name.to_string(),
        value,
    };
    Status {
        node: engine.me().name.clone(),
        public_key: engine.device().public_key().to_string(),
        data_plane: info.data_plane.to_string(),
        interface: info.interface.clone(),
        data_plane_up: info.data_plane_up,
        listen_port: info.listen_port,
        policy_id: meta.id.to_string(),
        policy_file: policy.file_name().to_string(),
        policy_loaded: unix_secs(info.policy_loaded),
        uptime_secs: now.saturating_duration_since(info.started).as_secs(),
        peers,
        flows: flows
            .into_iter()
            .map(|(name, value)| Count { name, value })
            .collect(),
        flows_total: ct.len() as u64,
        flows_capacity: ct.capacity() as u64,
        drops: drops
            .into_iter()
            .map(|(name, value)| Count { name, value })
            .collect(),
        handshakes: vec![
            count("completed", completed),
            count("response_sent", replies.responses),
            count("cookie_sent", replies.cookies),
        ],
        reloads: vec![
            count("ok", info.reloads_ok),
            count("rejected", info.reloads_rejected),
        ],
        decisions: decisions
            .into_iter()
            .map(|(verdict, rule, count)| Decision {
                verdict: verdict.to_string(),
                rule,
                count,
            })
            .collect(),
        flow_log: info.flow_log,
        offloads: info.offloads.iter().map(|o| o.to_string()).collect(),
        io: info.io.iter().map(|&(n, v)| count(n, v)).collect(),
    }
}

/// `flows`, optionally of the peer named `peer` only.
pub fn flows(engine: &Engine, peer: Option<&str>, now: Instant) -> Result<Flows, String> {
    let meta = engine.policy_meta();
    let want = match peer {
        None => None,
        Some(name) => {
            let node = engine
                .policy()
                .node_by_name(name)
                .ok_or_else(|| format!("no node named '{name}' in the policy"))?;
            Some(node.id)
        }
    };
    let mut out = Flows::default();
    for e in engine.conntrack().iter() {
        let node = engine.peer_node(crate::tunnel::PeerId(e.peer().0));
        if want.is_some() && node != want {
            continue;
        }
        out.total += 1;
        if out.flows.len() >= MAX_FLOWS_LISTED {
            continue;
        }
        let name = node
            .and_then(|n| meta.node(n))
            .map_or_else(String::new, |n| n.name.clone());
        let rule = (e.rule().0 != u32::MAX).then_some(RuleId(e.rule().0));
        let (sp, dp) = (e.src_port().unwrap_or(0), e.dst_port().unwrap_or(0));
        let proto = e.protocol();
        let (cs, cd) = match (proto.echo_request_type(), e.icmp_ident()) {
            (Some(echo), Some(_)) => (u16::from(echo), 0),
            _ => (sp, dp),
        };
        let (p0, p1) = e.packets();
        let (b0, b1) = e.bytes();
        out.flows.push(Flow {
            proto: proto.transport().into_owned(),
            src: addr(e.src()),
            src_port: sp,
            dst: addr(e.dst()),
            dst_port: dp,
            peer: name,
            direction: match e.initiator() {
                Direction::Inbound => "ingress",
                Direction::Outbound => "egress",
            }
            .into(),
            rule: meta.rule_label(rule).to_string(),
            state: state_name(e.state()).into(),
            age_ms: now.saturating_duration_since(e.created()).as_millis() as u64,
            idle_ms: now.saturating_duration_since(e.last_seen()).as_millis() as u64,
            packets: [p0, p1],
            bytes: [b0, b1],
            community_id: community_id_v1(0, e.src(), e.dst(), proto, cs, cd),
        });
    }
    out.flows.sort_by(|a, b| a.age_ms.cmp(&b.age_ms).reverse());
    Ok(out)
}

fn addr(a: IpAddr) -> String {
    a.to_string()
}
