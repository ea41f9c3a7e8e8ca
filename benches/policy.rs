//! Policy benchmark: a mesh of 10,000 nodes, 1,000 services and 5,000
//! rules. Prints parse and per-node compile time, table memory and
//! nanoseconds per lookup. Then the tools at the sizes of issue 9: `check`
//! of 80 nodes x 800 services with fan-out expects, `diff` of a 100k-node
//! policy with itself, and a fan-out `diff` of 3k vs 10k nodes (with the
//! process's peak memory). Run with `cargo bench --bench policy`.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use umbra::keys::PublicKey;
use umbra::net::IpProtocol;
use umbra::policy::{NodeId, NodeTable, Policy};

use common::Rng;

const NODES: usize = 10_000;
const SERVICES: usize = 1_000;
const RULES: usize = 5_000;
const ROLES: usize = 100;
const GATEWAYS: usize = 20;

fn addr(i: usize) -> Ipv4Addr {
    let n = (i + 1) as u32;
    Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

fn key(i: usize) -> String {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    PublicKey(k).to_base64()
}

fn mesh() -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t = String::with_capacity(2 << 20);
    for i in 0..NODES {
        let (a, b) = (i % ROLES, (i * 7 + 3) % ROLES);
        t.push_str(&format!("node n{i} key {} addr {}/8", key(i), addr(i)));
        if i % 2 == 0 {
            t.push_str(&format!(",fd00::{:x}/64", i + 1));
        }
        t.push_str(&format!(" roles r{a},r{b}"));
        if i < GATEWAYS {
            t.push_str(&format!(" serves 172.16.{i}.0/24"));
        }
        t.push('\n');
    }
    for j in 0..SERVICES {
        let target = match j % 10 {
            0 => format!("node:n{}", rng.below(NODES)),
            1 => format!("172.16.{}.{}/28", j % GATEWAYS, (j / GATEWAYS % 16) * 16),
            _ => format!("role:r{}", j % ROLES),
        };
        let ports = match j % 7 {
            0 => format!("tcp/{}-{} udp/{}", 2000 + j, 2010 + j, 5000 + j),
            1 => format!("tcp/{},{}", 1000 + j, 30000 + j),
            2 => "icmp/8 tcp/22".to_string(),
            _ => format!("tcp/{}", 1000 + j),
        };
        t.push_str(&format!("service s{j} {target} {ports}\n"));
    }
    for r in 0..RULES {
        let from = match r % 50 {
            0 => "*".to_string(),
            1 => format!("node:n{}", rng.below(NODES)),
            _ => format!("role:r{}", rng.below(ROLES)),
        };
        let svc = format!("s{}", rng.below(SERVICES));
        let line = match r % 20 {
            0 | 1 => format!("deny {from} -> {svc}"),
            2 => format!("deny {from} -> {svc} reject"),
            3 => format!("allow {from} -> {svc} except role:r{}", rng.below(ROLES)),
            4 => format!("allow {from} -> {svc} until 2031-01-01T00:00:00Z"),
            5 => format!("audit deny {from} -> {svc}"),
            _ => format!("allow {from} -> {svc}"),
        };
        t.push_str(&line);
        t.push('\n');
    }
    for q in 0..5 {
        t.push_str(&format!("quarantine node:n{}\n", q * 1999 + 7));
    }
    t
}

fn queries(
    p: &Policy,
    table: &NodeTable,
    rng: &mut Rng,
    n: usize,
) -> Vec<(bool, NodeId, IpAddr, IpProtocol, u16)> {
    let me = p.node(table.node()).expect("node");
    let mut mine: Vec<IpAddr> = me.addresses.iter().map(|a| a.addr()).collect();
    for s in &me.serves {
        if let IpAddr::V4(v4) = s.addr() {
            mine.push(IpAddr::V4(Ipv4Addr::from(u32::from(v4) + 17)));
        }
    }
    let peers = table.peers();
    let flows = [
        (6u8, 22u16),
        (6, 1000),
        (6, 1500),
        (6, 2005),
        (17, 5100),
        (1, 8),
        (6, 443),
    ];
    (0..n)
        .map(|i| {
            let (proto, base) = flows[i % flows.len()];
            let proto = IpProtocol(proto);
            let port = if base >= 1000 {
                base + rng.below(1000) as u16
            } else {
                base
            };
            if i % 2 == 0 {
                let src = NodeId(rng.below(NODES) as u32);
                (true, src, mine[rng.below(mine.len())], proto, port)
            } else {
                // Egress mostly towards peers (real traffic), some to strangers.
                let via = if !peers.is_empty() && i % 4 == 1 {
                    peers[rng.below(peers.len())]
                } else {
                    NodeId(rng.below(NODES) as u32)
                };
                (false, via, IpAddr::V4(addr(via.index())), proto, port)
            }
        })
        .collect()
}

fn main() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let text = mesh();
    let t0 = Instant::now();
    let policy = Policy::parse(&text, "bench.policy").expect("generated policy parses");
    let parse = t0.elapsed();
    println!(
        "policy {}: {} nodes, {} services, {} rules, {} KiB of text",
        policy.id(),
        policy.nodes().len(),
        policy.services().len(),
        policy.rules().len(),
        text.len() / 1024
    );
    println!("parse + resolve: {:.1} ms", parse.as_secs_f64() * 1e3);
    let t0 = Instant::now();
    let lints = policy.lint(now);
    println!(
        "lint (what `check` adds): {:.1} ms, {} warnings",
        t0.elapsed().as_secs_f64() * 1e3,
        lints.len()
    );

    let mut rng = Rng(42);
    let samples: Vec<NodeId> = [0, 5, 19, 7, 1234, 5000, 9999]
        .into_iter()
        .chain((0..13).map(|_| rng.below(NODES)))
        .map(|i| NodeId(i as u32))
        .collect();
    let mut compile_times = Vec::new();
    let mut tables = Vec::new();
    for id in &samples {
        let t0 = Instant::now();
        let t = policy.compile_for(*id, now);
        compile_times.push(t0.elapsed());
        tables.push(t);
    }
    compile_times.sort();
    let total: Duration = compile_times.iter().sum();
    println!(
        "compile_for (one node, {} samples): median {:.2} ms, mean {:.2} ms, max {:.2} ms",
        compile_times.len(),
        compile_times[compile_times.len() / 2].as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / compile_times.len() as f64,
        compile_times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    let mems: Vec<usize> = tables.iter().map(NodeTable::memory_bytes).collect();
    let peers: Vec<usize> = tables.iter().map(|t| t.peers().len()).collect();
    println!(
        "table memory: median {} KiB, max {} KiB; peers per node: median {}, max {}",
        sorted(&mems)[mems.len() / 2] / 1024,
        mems.iter().max().unwrap_or(&0) / 1024,
        sorted(&peers)[peers.len() / 2],
        peers.iter().max().unwrap_or(&0)
    );

    const N: usize = 1 << 20;
    let mut best = f64::MAX;
    let mut allowed = 0usize;
    for table in &tables {
        let qs = queries(&policy, table, &mut rng, N);
        let t0 = Instant::now();
        for &(ingress, peer, dst, proto, port) in &qs {
            let v = if ingress {
                table.ingress(
                    black_box(peer),
                    black_box(dst),
                    black_box(proto),
                    black_box(port),
                )
            } else {
                table.egress(
                    black_box(peer),
                    black_box(dst),
                    black_box(proto),
                    black_box(port),
                )
            };
            allowed += usize::from(v.allowed());
        }
        let ns = t0.elapsed().as_nanos() as f64 / N as f64;
        best = best.min(ns);
    }
    let mut worst = 0f64;
    for table in &tables {
        let qs = queries(&policy, table, &mut rng, N);
        let t0 = Instant::now();
        for &(ingress, peer, dst, proto, port) in &qs {
            let v = if ingress {
                table.ingress(
                    black_box(peer),
                    black_box(dst),
                    black_box(proto),
                    black_box(port),
                )
            } else {
                table.egress(
                    black_box(peer),
                    black_box(dst),
                    black_box(proto),
                    black_box(port),
                )
            };
            allowed += usize::from(v.allowed());
        }
        worst = worst.max(t0.elapsed().as_nanos() as f64 / N as f64);
    }
    println!("lookup (ingress/egress mix, {N} per node): best node {best:.1} ns, worst node {worst:.1} ns ({allowed} allowed)");
    let _ = black_box(SystemTime::now());
    drop(tables);
    drop(policy);
    tools(now);
}

/// Nodes in `ROLES8` roles, one service per role and port, rules letting
/// each role reach the next one's services, and fan-out expects between
/// whole roles (each pair of nodes, every probe port).
fn fanout(nodes: usize, services: usize, expects: bool) -> String {
    const ROLES8: usize = 8;
    let mut t = String::new();
    for i in 0..nodes {
        t.push_str(&format!(
            "node n{i} key {} addr {}/8 roles r{}\n",
            key(i),
            addr(i),
            i % ROLES8
        ));
    }
    for j in 0..services {
        t.push_str(&format!(
            "service s{j} role:r{} tcp/{}\n",
            j % ROLES8,
            1000 + j
        ));
    }
    for j in 0..services {
        t.push_str(&format!("allow role:r{} -> s{j}\n", (j + 1) % ROLES8));
    }
    if expects {
        for a in 0..ROLES8 {
            let (to, deny) = ((a + 7) % ROLES8, (a + 3) % ROLES8);
            t.push_str(&format!("expect role:r{a} -> role:r{to} is allow\n"));
            t.push_str(&format!("expect role:r{a} -> role:r{deny} is deny\n"));
        }
    }
    t
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn tools(now: SystemTime) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Fan-out diff first, so the peak memory figure is its own.
    let (small, big) = (fanout(3_000, 100, false), fanout(10_000, 100, false));
    let a = Policy::parse(&small, "3k.policy").expect("parses");
    let b = Policy::parse(&big, "10k.policy").expect("parses");
    let t0 = Instant::now();
    let out = umbra::policy::diff::diff(&a, &b, secs);
    println!(
        "diff 3k vs 10k nodes (100 services): {:.2} s, {} KiB of output, peak RSS {} MiB",
        t0.elapsed().as_secs_f64(),
        out.len() / 1024,
        peak_rss_mib()
    );
    drop((a, b, out));

    let text = fanout(80, 800, true);
    let t0 = Instant::now();
    let report = Policy::check(&text, "fanout.policy", now);
    println!(
        "check 80 nodes x 800 services, 16 fan-out expects ({} KiB): {:.2} s, {} of {} expects passed",
        text.len() / 1024,
        t0.elapsed().as_secs_f64(),
        report.expects.iter().filter(|e| e.passed).count(),
        report.expects.len()
    );

    let huge = fanout(100_000, 100, false);
    let p = Policy::parse(&huge, "100k.policy").expect("parses");
    let t0 = Instant::now();
    let out = umbra::policy::diff::diff(&p, &p, secs);
    println!(
        "diff of a 100k-node policy ({} KiB) with itself: {:.2} s ({})",
        huge.len() / 1024,
        t0.elapsed().as_secs_f64(),
        out.lines().last().unwrap_or("")
    );
}

fn sorted(v: &[usize]) -> Vec<usize> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}
