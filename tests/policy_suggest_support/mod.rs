//! Synthetic flow logs in the v1 schema with known contents, for the
//! `policy suggest` / `policy replay` tests, and the mesh they run on.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::time::SystemTime;

use umbra::keys::PublicKey;
use umbra::policy::flowlog_agg::Observed;
use umbra::policy::Policy;

/// Nodes of the test mesh: name, tunnel address, roles.
pub const NODES: &[(&str, &str, &str)] = &[
    ("web-1", "10.9.0.11", "web"),
    ("web-2", "10.9.0.12", "web"),
    ("web-3", "10.9.0.13", "web"),
    ("api-1", "10.9.0.21", "api"),
    ("api-2", "10.9.0.22", "api"),
    ("db-1", "10.9.0.31", "db"),
    ("prom", "10.9.0.50", "monitoring"),
    ("ops", "10.9.0.100", "ops"),
    ("gw", "10.9.0.1", "gateway"),
];

/// The network `gw` serves.
pub const SERVED: &str = "192.168.7.0/24";

/// A node's tunnel address; names not in the mesh get 10.9.0.200.
pub fn ip(name: &str) -> &'static str {
    NODES
        .iter()
        .find(|n| n.0 == name)
        .map_or("10.9.0.200", |n| n.1)
}

/// The mesh's node lines followed by `rest`.
pub fn policy_text(rest: &str) -> String {
    let mut t = String::new();
    for (i, (name, addr, roles)) in NODES.iter().enumerate() {
        let key = PublicKey([i as u8 + 1; 32]).to_base64();
        let serves = if *name == "gw" {
            format!(" serves {SERVED}")
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "node {name} key {key} addr {addr}/24 roles {roles}{serves}"
        );
    }
    t.push_str(rest);
    t
}

pub fn policy(rest: &str) -> Policy {
    Policy::parse(&policy_text(rest), "test.policy").expect("test policy parses")
}

/// 2026-12-01T00:00:00Z
pub const T0: i64 = 1_796_083_200;

fn ts(secs: i64) -> String {
    umbra::time::format_rfc3339(secs).replace('Z', ".250Z")
}

/// A flow log being written, as both ends of every flow would.
pub struct Log {
    pub text: String,
    sport: u16,
    n: u64,
    pub t: i64,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            text: String::new(),
            sport: 40_000,
            n: 0,
            t: T0,
        }
    }
}

impl Log {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        action: &str,
        observer: &str,
        peer: &str,
        direction: &str,
        cid: &str,
        (proto, sip, sport, dip, dport): (u8, &str, u16, &str, u16),
        verdict: &str,
        rule: &str,
        bytes: u64,
    ) {
        let transport = match proto {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            _ => "other",
        };
        let (port, icmp) = if proto == 1 {
            (0, format!(",\"icmp.type\":{dport},\"icmp.code\":0"))
        } else {
            (dport, String::new())
        };
        let end = if action == "flow-end" {
            format!(
                ",\"umbra.end_reason\":\"fin\",\"event.duration\":1000000,\"source.bytes\":{},\"source.packets\":3,\"destination.bytes\":{},\"destination.packets\":3",
                bytes / 4,
                bytes - bytes / 4
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            self.text,
            "{{\"@timestamp\":\"{}\",\"umbra.schema\":1,\"event.action\":\"{action}\",\"observer.name\":\"{observer}\",\"umbra.policy_id\":\"0123456789abcdef\",\"umbra.peer.name\":\"{peer}\",\"umbra.peer.key\":\"x\",\"umbra.peer.roles\":[],\"network.direction\":\"{direction}\",\"network.transport\":\"{transport}\",\"network.iana_number\":{proto},\"network.community_id\":\"{cid}\",\"source.ip\":\"{sip}\",\"source.port\":{sport},\"destination.ip\":\"{dip}\",\"destination.port\":{port}{icmp},\"umbra.verdict\":\"{verdict}\",\"rule.name\":\"{rule}\"{end}}}",
            ts(self.t),
        );
    }

    /// One flow from node `src` to `dst` (an address of, or served by,
    /// node `via`), as both ends record it: an admitted flow writes start
    /// and end on both nodes, a refused one `flow-denied` on the receiver.
    /// A fresh ephemeral source port every time.
    #[allow(clippy::too_many_arguments)]
    pub fn flow_via(
        &mut self,
        src: &str,
        via: &str,
        dst: &str,
        proto: u8,
        port: u16,
        verdict: &str,
        rule: &str,
        bytes: u64,
    ) {
        self.n += 1;
        self.t += 1;
        self.sport = if self.sport >= 60_999 {
            32_768
        } else {
            self.sport + 7
        };
        let cid = format!("1:test-{}", self.n);
        let tuple = (proto, ip(src), self.sport, dst, port);
        if verdict == "allow" {
            self.record(
                "flow-start",
                src,
                via,
                "egress",
                &cid,
                tuple,
                verdict,
                rule,
                0,
            );
            self.record(
                "flow-start",
                via,
                src,
                "ingress",
                &cid,
                tuple,
                verdict,
                rule,
                0,
            );
            self.t += 2;
            self.record(
                "flow-end", via, src, "ingress", &cid, tuple, verdict, rule, bytes,
            );
            self.record(
                "flow-end", src, via, "egress", &cid, tuple, verdict, rule, bytes,
            );
        } else {
            self.record(
                "flow-denied",
                via,
                src,
                "ingress",
                &cid,
                tuple,
                verdict,
                rule,
                0,
            );
        }
    }

    /// A flow to a node's own address.
    pub fn flow(&mut self, src: &str, dst: &str, proto: u8, port: u16, verdict: &str, rule: &str) {
        self.flow_via(src, dst, ip(dst), proto, port, verdict, rule, 1000);
    }

    pub fn observed(&self) -> Observed {
        let mut o = Observed::new();
        o.read(self.text.as_bytes(), "test.log").unwrap();
        assert_eq!(o.stats.malformed, 0, "{:?}", o.stats.errors);
        o
    }
}

pub fn now() -> i64 {
    umbra::time::unix_secs(SystemTime::now())
}

/// A unique scratch file with `contents`.
pub fn scratch(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("umbra-suggest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}
