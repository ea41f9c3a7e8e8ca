//! The node engine (policy + conntrack + tunnel) between several in-process
//! nodes: enforcement, cloaking, return traffic, spoofing, reload.

mod flow_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use flow_support::{echo, tcp, udp};
use umbra::keys::{PresharedKey, PrivateKey};
use umbra::node::engine::{DropReason, BUF_LEN};
use umbra::node::events::Event;
use umbra::node::{Action, Engine, Options, PeerResolver};
use umbra::policy::{Host, Node, Policy};
use umbra::tunnel::{Dropped, SeededEntropy};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;

struct Resolver;
impl PeerResolver for Resolver {
    fn preshared_key(&mut self, _: &Node) -> Result<PresharedKey, String> {
        Ok(PresharedKey::none())
    }
    fn endpoint(&mut self, node: &Node) -> Result<Option<SocketAddr>, String> {
        Ok(node.endpoint.as_ref().and_then(|e| match e.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, e.port)),
            Host::Name(_) => None,
        }))
    }
}

fn key(i: u8) -> PrivateKey {
    PrivateKey::from_bytes([i + 1; 32])
}

fn tun(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 0, i + 1)
}

fn underlay(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i + 1)), 51820)
}

const NAMES: [&str; 4] = ["web", "api", "db", "evil"];

/// The shared policy; `extra` lines are appended (rules under test).
fn policy_text(extra: &str) -> String {
    let mut t = String::new();
    for (i, name) in NAMES.iter().enumerate() {
        let i = i as u8;
        t += &format!(
            "node {name} key {} addr {}/24 endpoint {} roles {name}\n",
            key(i).public_key(),
            tun(i),
            underlay(i)
        );
    }
    t += "service api-http role:api tcp/8080\n";
    t += "service pg role:db tcp/5432 ping\n";
    t += "service evil-svc role:evil tcp/1\n";
    t += "allow role:web -> api-http as web-api\n";
    t += "allow role:api -> pg as api-db\n";
    t += "allow role:evil -> evil-svc as evil-self\n";
    t += "allow role:db -> evil-svc as db-evil\n";
    t += "deny role:web -> pg reject as web-never-db\n";
    t += extra;
    t
}

fn load(text: &str) -> Policy {
    Policy::load(text, "test.policy", SystemTime::now()).unwrap_or_else(|e| panic!("{e}"))
}

struct Mesh {
    nodes: Vec<Engine>,
    now: Instant,
    /// Packets each node delivered to its tunnel.
    delivered: Vec<Vec<Vec<u8>>>,
    /// Datagrams that arrived at each node.
    arrived: Vec<usize>,
    /// Datagrams sent back to unknown addresses (not a mesh node).
    stray: Vec<(SocketAddr, Vec<u8>)>,
}

impl Mesh {
    fn new(text: &str) -> Mesh {
        Mesh::with_options(text, Options::default())
    }

    fn with_options(text: &str, options: Options) -> Mesh {
        let policy = load(text);
        let now = Instant::now();
        let nodes: Vec<Engine> = (0..NAMES.len() as u8)
            .map(|i| {
                Engine::new(
                    policy.clone(),
                    key(i),
                    options.clone(),
                    Box::new(SeededEntropy::new(u64::from(i))),
                    &mut Resolver,
                    now,
                    SystemTime::now(),
                )
                .unwrap()
            })
            .collect();
        let n = nodes.len();
        Mesh {
            nodes,
            now,
            delivered: vec![Vec::new(); n],
            arrived: vec![0; n],
            stray: Vec::new(),
        }
    }

    fn index_of(addr: SocketAddr) -> Option<usize> {
        (0..NAMES.len() as u8).position(|i| underlay(i) == addr)
    }

    /// Node `from` writes `packet` into its tunnel; runs the network until
    /// quiet. Returns what the sender got back locally (reject replies).
    fn send(&mut self, from: usize, packet: &[u8]) -> Result<(), DropReason> {
        let mut buf = vec![0u8; BUF_LEN];
        buf[16..16 + packet.len()].copy_from_slice(packet);
        let mut wire = Vec::new();
        let result = match self.nodes[from].outbound(self.now, &mut buf, packet.len()) {
            Action::Send(d) => {
                wire.push((underlay(from as u8), d.to, d.bytes.to_vec()));
                Ok(())
            }
            Action::Nothing => Ok(()),
            Action::Deliver { packet, .. } => {
                self.delivered[from].push(packet.to_vec());
                Ok(())
            }
            Action::Dropped(d) => Err(d),
        };
        self.run(wire);
        result
    }

    /// Sends a packet the policy denies: the refusal comes straight back
    /// into `from`'s own tunnel (fail fast locally) and nothing reaches
    /// any other node. Returns the refusal.
    fn refused_locally(&mut self, from: usize, packet: &[u8]) -> Vec<u8> {
        for i in 0..self.nodes.len() {
            self.take(i);
        }
        assert_eq!(self.send(from, packet), Ok(()));
        for i in (0..self.nodes.len()).filter(|&i| i != from) {
            assert!(self.take(i).is_empty(), "node {i} received something");
        }
        let mut back = self.take(from);
        assert_eq!(back.len(), 1, "one refusal comes back: {back:?}");
        back.remove(0)
    }

    fn run(&mut self, mut wire: Vec<(SocketAddr, SocketAddr, Vec<u8>)>) {
        for _ in 0..50 {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let mut buf = vec![0u8; BUF_LEN];
                while let Some(d) = node.poll_transmit(self.now, &mut buf) {
                    wire.push((underlay(i as u8), d.to, d.bytes.to_vec()));
                }
            }
            if wire.is_empty() {
                return;
            }
            for (src, dst, mut d) in std::mem::take(&mut wire) {
                let Some(j) = Self::index_of(dst) else {
                    self.stray.push((dst, d));
                    continue;
                };
                self.arrived[j] += 1;
                let mut reply = vec![0u8; BUF_LEN];
                match self.nodes[j].inbound(self.now, src, &mut d, &mut reply) {
                    Action::Deliver { packet, .. } => self.delivered[j].push(packet.to_vec()),
                    Action::Send(s) => wire.push((dst, s.to, s.bytes.to_vec())),
                    Action::Nothing | Action::Dropped(_) => {}
                }
            }
        }
        panic!("network never went quiet");
    }

    fn take(&mut self, i: usize) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.delivered[i])
    }

    fn events(&mut self, i: usize) -> Vec<Event> {
        std::iter::from_fn(|| self.nodes[i].poll_event()).collect()
    }
}

const WEB: usize = 0;
const API: usize = 1;
const DB: usize = 2;
const EVIL: usize = 3;

#[test]
fn allowed_flow_and_its_return_traffic_pass() {
    let mut m = Mesh::new(&policy_text(""));
    let syn = tcp(tun(0), tun(1), (40000, 8080), SYN, 1, 0, b"");
    m.send(WEB, &syn).unwrap();
    assert_eq!(m.take(API), vec![syn]);
    // No rule lets api open connections to web: only conntrack admits this.
    let synack = tcp(tun(1), tun(0), (8080, 40000), SYNACK, 7, 2, b"");
    m.send(API, &synack).unwrap();
    assert_eq!(m.take(WEB), vec![synack]);
    let data = tcp(
        tun(0),
        tun(1),
        (40000, 8080),
        ACK,
        2,
        8,
        b"GET / HTTP/1.1\r\n",
    );
    m.send(WEB, &data).unwrap();
    assert_eq!(m.take(API), vec![data]);
    // A new connection from api to web is refused at api before sending.
    let rogue = tcp(tun(1), tun(0), (8081, 22), SYN, 1, 0, b"");
    let rst = m.refused_locally(API, &rogue);
    assert_eq!(rst[9], 6, "a TCP segment");
    assert_eq!(rst[20 + 13] & 0x04, 0x04, "with RST set");
    assert_eq!(&rst[12..16], &rogue[16..20], "from the destination");
}

#[test]
fn udp_and_ping_follow_the_rules() {
    let mut m = Mesh::new(&policy_text(""));
    let ping = echo(tun(1), tun(2), true, 9, 1);
    m.send(API, &ping).unwrap();
    assert_eq!(m.take(DB), vec![ping]);
    let pong = echo(tun(2), tun(1), false, 9, 1);
    m.send(DB, &pong).unwrap();
    assert_eq!(m.take(API), vec![pong]);
    let dns = udp(tun(1), tun(2), (5000, 53), b"q");
    let icmp = m.refused_locally(API, &dns);
    assert_eq!(icmp[9], 1, "ICMP");
    assert_eq!(
        (icmp[20], icmp[21]),
        (3, 13),
        "destination unreachable, administratively prohibited"
    );
}

#[test]
fn reject_rule_answers_locally_and_sends_nothing() {
    let mut m = Mesh::new(&policy_text(""));
    let syn = tcp(tun(0), tun(2), (40000, 5432), SYN, 1, 0, b"");
    m.send(WEB, &syn).unwrap();
    let replies = m.take(WEB);
    assert_eq!(replies.len(), 1, "a RST comes back into web's own tunnel");
    let rst = umbra::wire::classify(&replies[0]).unwrap();
    assert_eq!((rst.src, rst.dst), (IpAddr::V4(tun(2)), IpAddr::V4(tun(0))));
    assert_eq!(m.arrived[DB], 0, "db never saw a thing");
    let denied = m
        .events(WEB)
        .into_iter()
        .any(|e| matches!(e, Event::Denied { rejected: true, .. }));
    assert!(denied);
}

#[test]
fn receiver_enforces_even_if_the_sender_does_not() {
    // evil runs a doctored policy that lets it reach db; db's copy does not.
    let mut m = Mesh::new(&policy_text(""));
    let doctored = load(&policy_text("allow role:evil -> pg as doctored\n"));
    m.nodes[EVIL] = Engine::new(
        doctored,
        key(3),
        Options::default(),
        Box::new(SeededEntropy::new(77)),
        &mut Resolver,
        m.now,
        SystemTime::now(),
    )
    .unwrap();
    let syn = tcp(tun(3), tun(2), (1234, 5432), SYN, 1, 0, b"");
    m.send(EVIL, &syn).unwrap();
    assert!(m.arrived[DB] > 0, "the packet reached db");
    assert!(m.take(DB).is_empty(), "and db dropped it");
    assert_eq!(m.nodes[DB].drops().get(&DropReason::Denied), Some(&1));
    assert!(m.take(EVIL).is_empty(), "no RST, no ICMP: silence");
}

#[test]
fn spoofed_inner_source_is_dropped() {
    let mut m = Mesh::new(&policy_text(""));
    // evil runs a doctored policy that lets it reach db, and claims to be web.
    let doctored = load(&policy_text("allow role:evil -> pg as doctored\n"));
    let mut evil = Engine::new(
        doctored,
        key(3),
        Options::default(),
        Box::new(SeededEntropy::new(77)),
        &mut Resolver,
        m.now,
        SystemTime::now(),
    )
    .unwrap();
    let spoofed = tcp(tun(0), tun(2), (1234, 5432), SYN, 1, 0, b"");
    let mut buf = vec![0u8; BUF_LEN];
    buf[16..16 + spoofed.len()].copy_from_slice(&spoofed);
    assert_eq!(
        evil.outbound(m.now, &mut buf, spoofed.len()),
        Action::Nothing
    );
    let t = evil.poll_transmit(m.now, &mut buf).unwrap();
    let t = (t.to, t.bytes.to_vec());
    m.nodes[EVIL] = evil;
    m.run(vec![(underlay(3), t.0, t.1)]);
    assert!(m.arrived[DB] >= 2, "handshake and data reached db");
    assert!(m.take(DB).is_empty());
    assert_eq!(m.nodes[DB].drops().get(&DropReason::Spoofed), Some(&1));
}

#[test]
fn unknown_key_gets_no_answer_at_all() {
    let mut m = Mesh::new(&policy_text(""));
    // A stranger with its own policy naming db, but db does not know it.
    let stranger_text = format!(
        "{}node stranger key {} addr 10.9.0.99/24 endpoint 192.0.2.99:51820 roles x\n\
         service all role:db any\nallow role:x -> all\n",
        policy_text(""),
        key(50).public_key()
    );
    let mut s = Engine::new(
        load(&stranger_text),
        key(50),
        Options::default(),
        Box::new(SeededEntropy::new(5)),
        &mut Resolver,
        m.now,
        SystemTime::now(),
    )
    .unwrap();
    let mut buf = vec![0u8; BUF_LEN];
    let p = tcp(
        Ipv4Addr::new(10, 9, 0, 99),
        tun(2),
        (1, 5432),
        SYN,
        0,
        0,
        b"",
    );
    buf[16..16 + p.len()].copy_from_slice(&p);
    assert_eq!(s.outbound(m.now, &mut buf, p.len()), Action::Nothing);
    let t = s.poll_transmit(m.now, &mut buf).unwrap();
    assert_eq!(t.bytes[0], 1, "a handshake initiation");
    let mut d = t.bytes.to_vec();
    let mut reply = vec![0u8; BUF_LEN];
    assert_eq!(
        m.nodes[DB].inbound(
            m.now,
            SocketAddr::from(([192, 0, 2, 99], 51820)),
            &mut d,
            &mut reply
        ),
        Action::Dropped(DropReason::Tunnel(Dropped::UnknownPeer))
    );
    assert!(m.nodes[DB].poll_transmit(m.now, &mut buf).is_none());
}

#[test]
fn nodes_without_any_path_are_not_even_peers() {
    let m = Mesh::new(&policy_text(""));
    // web and db share only a deny rule: no handshake between them is answered.
    let web_key = key(0).public_key();
    assert!(m.nodes[DB].device().peer_id(&web_key).is_none());
    assert!(m.nodes[API].device().peer_id(&web_key).is_some());
}

#[test]
fn reload_cuts_flows_no_longer_allowed_and_keeps_others() {
    let mut m = Mesh::new(&policy_text(""));
    let syn = tcp(tun(0), tun(1), (40000, 8080), SYN, 1, 0, b"");
    m.send(WEB, &syn).unwrap();
    m.send(API, &tcp(tun(1), tun(0), (8080, 40000), SYNACK, 7, 2, b""))
        .unwrap();
    let ping = echo(tun(1), tun(2), true, 9, 1);
    m.send(API, &ping).unwrap();
    m.take(WEB);
    m.take(API);
    m.take(DB);

    // Remove web -> api everywhere.
    let text = policy_text("").replace("allow role:web -> api-http as web-api\n", "");
    let new = load(&text);
    for n in &mut m.nodes {
        n.reload(new.clone(), &mut Resolver, SystemTime::now())
            .unwrap();
    }
    let applied = m.events(API).into_iter().rev().find_map(|e| match e {
        Event::PolicyApplied { flows_cut, .. } => Some(flows_cut),
        _ => None,
    });
    assert!(applied.is_some_and(|c| c >= 1), "{applied:?}");
    let data = tcp(tun(0), tun(1), (40000, 8080), ACK, 2, 8, b"more");
    let rst = m.refused_locally(WEB, &data);
    assert_eq!(
        rst[20 + 13] & 0x04,
        0x04,
        "the open connection is cut: the local end gets a RST"
    );
    assert!(m.take(API).is_empty());
    // The unrelated api -> db flow still passes.
    let ping2 = echo(tun(1), tun(2), true, 9, 2);
    m.send(API, &ping2).unwrap();
    assert_eq!(m.take(DB), vec![ping2]);
}

#[test]
fn quarantine_drops_sessions_at_once() {
    let mut m = Mesh::new(&policy_text(""));
    let ping = echo(tun(1), tun(2), true, 9, 1);
    m.send(API, &ping).unwrap();
    assert_eq!(m.take(DB).len(), 1);
    let new = load(&policy_text("quarantine node:api as incident\n"));
    m.nodes[DB]
        .reload(new, &mut Resolver, SystemTime::now())
        .unwrap();
    assert!(m
        .events(DB)
        .contains(&Event::PeerRemoved { name: "api".into() }));
    // api still has its old session: its packets now die at db.
    m.send(API, &echo(tun(1), tun(2), true, 9, 2)).unwrap();
    assert!(m.take(DB).is_empty());
    assert_eq!(
        m.nodes[DB]
            .drops()
            .get(&DropReason::Tunnel(Dropped::UnknownIndex)),
        Some(&1)
    );
}

/// Issue 9: a policy that leaves a node without any peer (say the nodes of
/// a half-written file, without its rules) is applied, but never silently.
#[test]
fn a_policy_removing_every_peer_says_so_loudly() {
    let mut m = Mesh::new(&policy_text(""));
    m.events(DB);
    let nodes_only: String = policy_text("")
        .lines()
        .filter(|l| l.starts_with("node "))
        .map(|l| format!("{l}\n"))
        .collect();
    m.nodes[DB]
        .reload(load(&nodes_only), &mut Resolver, SystemTime::now())
        .unwrap();
    let applied = m
        .events(DB)
        .into_iter()
        .find(|e| matches!(e, Event::PolicyApplied { .. }))
        .unwrap();
    assert_eq!(applied.level(), umbra::log::Level::Warn);
    assert!(
        applied.to_string().contains("removes EVERY peer"),
        "{applied}"
    );
}

#[test]
fn a_policy_without_this_node_is_refused_and_the_old_one_stays() {
    let mut m = Mesh::new(&policy_text(""));
    let other = format!(
        "node solo key {} addr 10.1.1.1/32 roles x\n",
        key(60).public_key()
    );
    let err = m.nodes[API]
        .reload(load(&other), &mut Resolver, SystemTime::now())
        .unwrap_err();
    assert!(err.to_string().contains("not in the policy"), "{err}");
    let ping = echo(tun(1), tun(2), true, 9, 1);
    m.send(API, &ping).unwrap();
    assert_eq!(m.take(DB), vec![ping]);
}

#[test]
fn audit_rules_are_logged_not_enforced() {
    let mut m = Mesh::new(&policy_text(
        "service ssh role:api tcp/22\naudit allow role:web -> ssh as ssh-dryrun\n",
    ));
    let syn = tcp(tun(0), tun(1), (40000, 22), SYN, 1, 0, b"");
    m.refused_locally(WEB, &syn); // audit does not allow
    let audits: Vec<_> = m
        .events(WEB)
        .into_iter()
        .filter(|e| matches!(e, Event::Audit { .. }))
        .collect();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert!(audits[0].to_string().contains("ssh-dryrun"));
}

#[test]
fn a_flood_of_refused_flows_is_counted_not_logged_one_by_one() {
    let mut m = Mesh::new(&policy_text(""));
    m.events(API);
    for port in 0..300u16 {
        let syn = tcp(tun(1), tun(0), (10_000 + port, 22), SYN, 1, 0, b"");
        m.refused_locally(API, &syn);
    }
    let denied = m
        .events(API)
        .into_iter()
        .filter(|e| matches!(e, Event::RefusedLocally { .. }))
        .count();
    assert_eq!(denied, umbra::node::engine::FLOW_EVENTS_PER_SECOND as usize);
    let later = m.now + std::time::Duration::from_secs(1);
    m.nodes[API].tick(later, SystemTime::now());
    assert!(m.events(API).contains(&Event::Suppressed { count: 200 }));
    assert_eq!(
        m.nodes[API].drops().get(&DropReason::Denied),
        Some(&300),
        "every drop is still counted"
    );
}

// ---- flow records (the flow log's source) ----

use umbra::node::flows::FlowItem;
use umbra::observe::flowlog::render;

fn logging_mesh(extra: &str) -> Mesh {
    let options = Options {
        flow_records: true,
        ..Options::default()
    };
    Mesh::with_options(&policy_text(extra), options)
}

/// Every record node `i` queued, rendered and parsed back as JSON.
fn records(m: &mut Mesh, i: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(item) = m.nodes[i].poll_flow() {
        let mut line = String::new();
        render(&mut line, &item, SystemTime::now(), NAMES[i]);
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        // The flow-log reader of `umbra policy suggest/replay` takes it.
        if let Err(e) = umbra::policy::flowlog::parse_line(line.trim_end().as_bytes()) {
            panic!("the flow-log reader refuses {line}: {e}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let FlowItem::Record(_) = item {
            // The schema's keys, in its order, always present.
            let want = [
                "@timestamp",
                "umbra.schema",
                "event.action",
                "observer.name",
                "umbra.policy_id",
                "umbra.peer.name",
                "umbra.peer.key",
                "umbra.peer.roles",
                "network.direction",
                "network.transport",
                "network.iana_number",
                "network.community_id",
                "source.ip",
                "source.port",
                "destination.ip",
                "destination.port",
            ];
            let at: Vec<usize> = want
                .iter()
                .map(|k| {
                    line.find(&format!("\"{k}\":"))
                        .unwrap_or_else(|| panic!("{k} missing: {line}"))
                })
                .collect();
            assert!(
                at.windows(2).all(|w| w[0] < w[1]),
                "keys out of order: {line}"
            );
        }
        out.push(v);
    }
    out
}

fn with_action<'a>(v: &'a [serde_json::Value], action: &str) -> Vec<&'a serde_json::Value> {
    v.iter().filter(|r| r["event.action"] == action).collect()
}

/// An audit rule, and a second web -> api service so web and api stay
/// peers when `web-api` goes.
const EXTRA: &str = "service ssh role:api tcp/22\naudit allow role:web -> ssh as ssh-dryrun\n\
    service other role:api tcp/9090\nallow role:web -> other as web-other\n";

#[test]
fn flow_records_for_admitted_refused_audited_and_cut_flows() {
    let mut m = logging_mesh(EXTRA);
    let id1 = m.nodes[WEB].policy().id().to_string();
    // Allowed: both ends write a start record with the rule, same Community ID.
    m.send(WEB, &tcp(tun(0), tun(1), (40000, 8080), SYN, 1, 0, b""))
        .unwrap();
    m.send(API, &tcp(tun(1), tun(0), (8080, 40000), SYNACK, 7, 2, b""))
        .unwrap();
    let web = records(&mut m, WEB);
    let api = records(&mut m, API);
    let (ws, as_) = (
        with_action(&web, "flow-start"),
        with_action(&api, "flow-start"),
    );
    assert_eq!((ws.len(), as_.len()), (1, 1), "{web:?} {api:?}");
    let (ws, as_) = (ws[0], as_[0]);
    assert_eq!(ws["rule.name"], "web-api");
    assert_eq!(as_["rule.name"], "web-api");
    assert_eq!(ws["network.direction"], "egress");
    assert_eq!(as_["network.direction"], "ingress");
    assert_eq!(ws["umbra.peer.name"], "api");
    assert_eq!(as_["umbra.peer.name"], "web");
    assert_eq!(as_["umbra.peer.roles"], serde_json::json!(["web"]));
    assert_eq!(as_["umbra.peer.key"], key(0).public_key().to_string());
    assert_eq!(ws["umbra.verdict"], "allow");
    assert_eq!(ws["umbra.policy_id"], id1.as_str());
    assert_eq!(ws["source.port"], 40000);
    assert_eq!(ws["destination.port"], 8080);
    assert_eq!(ws["network.transport"], "tcp");
    let cid = ws["network.community_id"].as_str().unwrap();
    assert!(cid.starts_with("1:") && cid.len() == 30, "{cid}");
    assert_eq!(as_["network.community_id"], cid);

    // Refused by no rule (api -> web:22), rejected (web -> db), audited.
    let _ = m.send(API, &tcp(tun(1), tun(0), (8081, 22), SYN, 1, 0, b"")); // refused locally (fail fast) or dropped
    m.send(WEB, &tcp(tun(0), tun(2), (40001, 5432), SYN, 1, 0, b""))
        .unwrap();
    let _ = m.send(WEB, &tcp(tun(0), tun(1), (40002, 22), SYN, 1, 0, b"")); // refused locally (fail fast) or dropped
    let api = records(&mut m, API);
    let d = with_action(&api, "flow-denied");
    assert_eq!(d.len(), 1, "{api:?}");
    assert_eq!(d[0]["umbra.verdict"], "drop");
    assert_eq!(d[0]["rule.name"], "default-deny");
    let web = records(&mut m, WEB);
    let d = with_action(&web, "flow-denied");
    assert_eq!(d.len(), 2, "{web:?}");
    assert_eq!(d[0]["umbra.verdict"], "reject");
    assert_eq!(d[0]["rule.name"], "web-never-db");
    assert_eq!(d[1]["rule.name"], "default-deny");
    let a = with_action(&web, "flow-audit");
    assert_eq!(a.len(), 1, "{web:?}");
    assert_eq!(a[0]["umbra.verdict"], "audit");
    assert_eq!(a[0]["umbra.audit_would"], "allow");
    assert_eq!(a[0]["rule.name"], "ssh-dryrun");
    assert_eq!(a[0]["destination.port"], 22);

    // A reload that removes web-api cuts the flow on both ends: flow-end,
    // reason policy, the admitting rule, the new policy's id, the counters.
    m.send(
        WEB,
        &tcp(tun(0), tun(1), (40000, 8080), ACK, 2, 8, b"hello"),
    )
    .unwrap();
    let text = policy_text(EXTRA).replace("allow role:web -> api-http as web-api\n", "");
    let new = load(&text);
    let id2 = new.id().to_string();
    assert_ne!(id1, id2);
    for n in &mut m.nodes {
        n.reload(new.clone(), &mut Resolver, SystemTime::now())
            .unwrap();
    }
    for (node, initiator_packets) in [(WEB, 2), (API, 2)] {
        let recs = records(&mut m, node);
        let e = with_action(&recs, "flow-end");
        assert_eq!(e.len(), 1, "{recs:?}");
        let e = e[0];
        assert_eq!(e["umbra.end_reason"], "policy");
        assert_eq!(e["rule.name"], "web-api");
        assert_eq!(e["umbra.policy_id"], id2.as_str());
        assert_eq!(e["network.community_id"], cid);
        assert_eq!(e["source.packets"], initiator_packets);
        assert_eq!(e["destination.packets"], 1);
        assert!(e["source.bytes"].as_u64().unwrap() > 80);
        assert!(e["event.duration"].is_u64());
    }
}

#[test]
fn flow_records_for_removed_peers_and_floods() {
    let mut m = logging_mesh("");
    m.send(API, &echo(tun(1), tun(2), true, 9, 1)).unwrap();
    m.send(DB, &echo(tun(2), tun(1), false, 9, 1)).unwrap();
    let db = records(&mut m, DB);
    let s = with_action(&db, "flow-start");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["network.transport"], "icmp");
    assert_eq!(s[0]["icmp.type"], 8);
    assert_eq!(s[0]["rule.name"], "api-db");
    let new = load(&policy_text("quarantine node:api as incident\n"));
    m.nodes[DB]
        .reload(new, &mut Resolver, SystemTime::now())
        .unwrap();
    let db = records(&mut m, DB);
    let e = with_action(&db, "flow-end");
    assert_eq!(e.len(), 1, "{db:?}");
    assert_eq!(e[0]["umbra.end_reason"], "peer-removed");
    assert_eq!(e[0]["umbra.peer.name"], "api");
    assert_eq!(e[0]["rule.name"], "api-db");
    assert_eq!(e[0]["network.community_id"], s[0]["network.community_id"]);

    // A flood of refused flows: the budget's worth of records, then one
    // flow-suppressed record with the rest.
    for port in 0..300u16 {
        let syn = tcp(tun(1), tun(0), (10_000 + port, 22), SYN, 1, 0, b"");
        let _ = m.send(API, &syn); // refused locally (fail fast) or dropped
    }
    m.nodes[API].tick(m.now + std::time::Duration::from_secs(1), SystemTime::now());
    let api = records(&mut m, API);
    assert_eq!(with_action(&api, "flow-denied").len(), 100);
    let sup = with_action(&api, "flow-suppressed");
    assert_eq!(sup.len(), 1, "{api:?}");
    assert_eq!(sup[0]["umbra.suppressed"], 200);
}

#[test]
fn no_flow_records_unless_asked() {
    let mut m = Mesh::new(&policy_text(""));
    m.send(WEB, &tcp(tun(0), tun(1), (40000, 8080), SYN, 1, 0, b""))
        .unwrap();
    assert!(m.nodes[WEB].poll_flow().is_none());
    assert!(m.nodes[API].poll_flow().is_none());
}

#[test]
fn decision_lines_carry_the_policy_id() {
    let mut m = Mesh::new(&policy_text(""));
    let id = m.nodes[API].policy().id().to_string();
    m.events(API);
    let _ = m.send(API, &tcp(tun(1), tun(0), (8081, 22), SYN, 1, 0, b""));
    let lines: Vec<String> = m.events(API).iter().map(|e| e.to_string()).collect();
    assert!(
        lines.iter().any(
            |l| (l.contains("no rule allows it") || l.contains("refused locally"))
                && l.contains(&id)
        ),
        "{lines:?}"
    );
}
