//! Flow-log benchmark: `policy suggest` and `policy replay` over a
//! generated log of 1,000,000 records (both ends of every admitted flow
//! write a start and an end, refused flows one or two `flow-denied`).
//! The mesh: 500 nodes in 25 roles; role j calls role j+1 on two ports
//! (a third of the role pairs have no rule yet, role 0 only a broad one);
//! 1% of flows go to a random role, 0.2% to a random port (one-off noise
//! that becomes node rules).
//! Prints records/s and each phase's peak memory (VmHWM of a child
//! process that does only that phase). Run with `cargo bench --bench learn`;
//! RECORDS=N changes the size, KEEP=1 keeps the generated log and the
//! policies (for `umbra policy suggest/replay` by hand).

mod common;

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::process::Command;
use std::time::Instant;

use umbra::keys::PublicKey;
use umbra::policy::flowlog_agg::Observed;
use umbra::policy::Policy;

use common::Rng;

const NODES: usize = 500;
const ROLES: usize = 25;

fn addr(i: usize) -> String {
    let n = i + 1;
    format!("10.{}.{}.{}", 50 + n / 65536, (n / 256) % 256, n % 256)
}

/// Role `j`'s members call role `j+1` on its two ports; every third role
/// has no rule for it yet, and role 0 may reach anything (a broad rule).
fn policy_text(drop_rule: Option<usize>) -> String {
    let mut t = String::new();
    for i in 0..NODES {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let _ = writeln!(
            t,
            "node n{i} key {} addr {}/8 roles r{}",
            PublicKey(k).to_base64(),
            addr(i),
            i % ROLES
        );
    }
    for j in 0..ROLES {
        let _ = writeln!(t, "service s{j} role:r{j} tcp/{},{}", 8000 + j, 9000 + j);
    }
    t.push_str("service everything * any\nallow role:r0 -> everything as r0-anything\n");
    for j in (0..ROLES).filter(|j| j % 3 != 0 && Some(*j) != drop_rule) {
        let _ = writeln!(t, "allow role:r{j} -> s{} as r{j}-calls", (j + 1) % ROLES);
    }
    t
}

fn allowed(src_role: usize, dst_role: usize, port: u16) -> bool {
    let svc = port == 8000 + dst_role as u16 || port == 9000 + dst_role as u16;
    src_role == 0 || (dst_role == (src_role + 1) % ROLES && !src_role.is_multiple_of(3) && svc)
}

/// Writes at least `records` records; returns (records, flows).
fn generate(path: &str, records: usize) -> std::io::Result<(usize, usize)> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let (mut written, mut flows, mut ms) = (0usize, 0usize, 1_796_083_200_000i64);
    let mut line = String::with_capacity(1024);
    while written < records {
        let src = rng.below(NODES);
        let (sr, dr) = (
            src % ROLES,
            if rng.below(100) != 0 {
                (src % ROLES + 1) % ROLES
            } else {
                rng.below(ROLES)
            },
        );
        let dst = dr + ROLES * rng.below(NODES / ROLES);
        if dst == src {
            continue;
        }
        let port = match rng.below(500) {
            0 => 1 + rng.below(30000) as u16,
            n if n % 2 == 0 => 8000 + dr as u16,
            _ => 9000 + dr as u16,
        };
        let sport = 32768 + rng.below(28000) as u16;
        flows += 1;
        ms += 1 + rng.below(3) as i64;
        let ok = allowed(sr, dr, port);
        let (verdict, rule) = if !ok {
            ("drop", "default-deny".to_string())
        } else if sr == 0 {
            ("allow", "r0-anything".to_string())
        } else {
            ("allow", format!("r{sr}-calls"))
        };
        let mut rec = |action: &str,
                       obs: usize,
                       peer: usize,
                       dir: &str,
                       bytes: Option<(u64, u64)>,
                       ms: i64| {
            line.clear();
            let secs = ms.div_euclid(1000);
            let stamp =
                umbra::time::format_rfc3339(secs).replace('Z', &format!(".{:03}Z", ms % 1000));
            let _ = write!(
                line,
                "{{\"@timestamp\":\"{stamp}\",\"umbra.schema\":1,\"event.action\":\"{action}\",\"observer.name\":\"n{obs}\",\"umbra.policy_id\":\"5f0e2d4c3b2a1908\",\"umbra.peer.name\":\"n{peer}\",\"umbra.peer.key\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\",\"umbra.peer.roles\":[\"r{}\"],\"network.direction\":\"{dir}\",\"network.transport\":\"tcp\",\"network.iana_number\":6,\"network.community_id\":\"1:{flows:027x}=\",\"source.ip\":\"{}\",\"source.port\":{sport},\"destination.ip\":\"{}\",\"destination.port\":{port},\"umbra.verdict\":\"{verdict}\",\"rule.name\":\"{rule}\"",
                peer % ROLES,
                addr(src),
                addr(dst)
            );
            if let Some((a, b)) = bytes {
                let _ = write!(
                    line,
                    ",\"umbra.end_reason\":\"fin\",\"event.duration\":{},\"source.bytes\":{a},\"source.packets\":{},\"destination.bytes\":{b},\"destination.packets\":{}",
                    a * 1000,
                    a / 500 + 1,
                    b / 500 + 1
                );
            }
            line.push_str("}\n");
            w.write_all(line.as_bytes())
        };
        if ok {
            let bytes = Some((
                200 + rng.below(5000) as u64,
                200 + rng.below(200_000) as u64,
            ));
            for (action, obs, peer, dir, b, t) in [
                ("flow-start", src, dst, "egress", None, ms),
                ("flow-start", dst, src, "ingress", None, ms),
                ("flow-end", dst, src, "ingress", bytes, ms + 40),
                ("flow-end", src, dst, "egress", bytes, ms + 41),
            ] {
                rec(action, obs, peer, dir, b, t)?;
            }
            written += 4;
        } else {
            // A refused open, sometimes retried once.
            for _ in 0..1 + usize::from(rng.below(4) == 0) {
                rec("flow-denied", dst, src, "ingress", None, ms)?;
                written += 1;
            }
        }
    }
    w.flush()?;
    Ok((written, flows))
}

/// This process's peak resident memory in KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs one phase in this (child) process and prints one result line.
fn phase(which: &str, log: &str) {
    let start = Instant::now();
    let text = policy_text(if which == "replay" { Some(4) } else { None });
    let p = Policy::parse(&text, "bench.policy").expect("bench policy parses");
    let mut o = Observed::new();
    o.read_files(&[log.to_string()]).expect("reads the log");
    let read = start.elapsed();
    let now = umbra::time::unix_secs(std::time::SystemTime::now());
    let summary = if which == "suggest" {
        let s = umbra::policy::suggest::suggest(&p, &o, false, now);
        let out = umbra::policy::suggest_render::render(&p, &s, &o.stats);
        format!(
            "{} rules, {} bytes of output",
            s.grouped.rules.len(),
            out.len()
        )
    } else {
        let r = umbra::policy::replay::replay(&p, &o, now);
        let out = umbra::policy::replay::render(&r, &o);
        format!(
            "{} cut flows in {} cells, {} bytes of output",
            r.cut_flows(),
            r.cut.len(),
            out.len()
        )
    };
    let total = start.elapsed();
    println!(
        "{which}: {} records ({} flows, {} cells) in {:.2} s (reading {:.2} s) = {:.2} M records/s, peak RSS {:.1} MiB; {summary}",
        o.stats.records,
        o.stats.flows,
        o.cells().len(),
        total.as_secs_f64(),
        read.as_secs_f64(),
        o.stats.records as f64 / total.as_secs_f64() / 1e6,
        peak_kib() as f64 / 1024.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        phase(&args[i + 1], &args[i + 2]);
        return;
    }
    let records: usize = std::env::var("RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let log = std::env::temp_dir()
        .join(format!("umbra-learn-bench-{}.jsonl", std::process::id()))
        .to_string_lossy()
        .into_owned();
    let start = Instant::now();
    let (written, flows) = generate(&log, records).expect("writes the log");
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {written} records ({flows} flows, {:.0} MiB) in {:.1} s: {log}",
        size as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().expect("own path");
    for which in ["suggest", "replay"] {
        let out = Command::new(&exe)
            .args(["--phase", which, &log])
            .output()
            .expect("runs the phase");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_file(&log);
    } else {
        for (name, drop) in [("policy", None), ("new.policy", Some(4))] {
            let path = format!("{log}.{name}");
            std::fs::write(&path, policy_text(drop)).expect("writes the policy");
            println!("kept {log} and {path}");
        }
    }
}
