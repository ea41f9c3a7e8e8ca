//! Seed inputs for the fuzz targets, built from real handshakes (umbra and
//! boringtun), real data messages and well-formed inner packets.
//!
//! `scripts/fuzz-seeds.sh` runs the ignored `write_seeds` test to write them
//! to `$UMBRA_FUZZ_SEEDS_OUT/<target>/`, then minimizes them into
//! `fuzz/corpus/`. The other test runs every seed through its target, so a
//! seed that stopped reaching deep code (a handshake the harness no longer
//! completes, say) fails here, not silently in the fuzzer.

mod common;
mod flow_support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::BoringSide;
use flow_support::*;
use umbra::fuzzing::{self, INITIATOR_KEY, PRESHARED_KEY, RESPONDER_KEY, STRANGER_KEY};
use umbra::keys::{PresharedKey, PrivateKey};
use umbra::tunnel::{Config, Device, PeerConfig, Received, SeededEntropy};
use umbra::wire::reject::{reject, RejectWith, MAX_REPLY_LEN};

type Seeds = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A device with `key` that knows R, as the fuzz harness's R knows I.
fn device(key: [u8; 32], psk: bool) -> (Device, umbra::tunnel::PeerId, Instant) {
    let now = Instant::now();
    let mut dev = Device::new(
        PrivateKey::from_bytes(key),
        Config::default(),
        Box::new(SeededEntropy::new(u64::from(key[0]))),
        now,
        wall(),
    );
    let mut pc = PeerConfig::new(PrivateKey::from_bytes(RESPONDER_KEY).public_key());
    pc.endpoint = Some("192.0.2.2:51820".parse().unwrap());
    if psk {
        pc.preshared_key = PresharedKey::from_bytes(PRESHARED_KEY);
    }
    let peer = dev.upsert_peer(pc);
    (dev, peer, now)
}

/// A genuine initiation to R from the device with `key`.
fn initiation(key: [u8; 32], after: Duration) -> Vec<u8> {
    let (mut dev, peer, now) = device(key, false);
    dev.initiate(peer);
    let mut buf = vec![0u8; 2048];
    let t = dev
        .poll_transmit(now + after, &mut buf)
        .expect("initiation");
    buf[..t.len].to_vec()
}

/// One real exchange between I and R: initiation, response, I's keepalive,
/// a data packet each way, and a cookie reply from a loaded R.
fn real_messages() -> Vec<(&'static str, Vec<u8>)> {
    let (mut i, ipeer, now) = device(INITIATOR_KEY, false);
    let mut r = Device::new(
        PrivateKey::from_bytes(RESPONDER_KEY),
        Config::default(),
        Box::new(SeededEntropy::new(7)),
        now,
        wall(),
    );
    let rpeer = r.upsert_peer(PeerConfig::new(
        PrivateKey::from_bytes(INITIATOR_KEY).public_key(),
    ));
    let from = "192.0.2.1:51820".parse().unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut reply = vec![0u8; 256];

    i.initiate(ipeer);
    let t = i.poll_transmit(now, &mut buf).unwrap();
    let init = buf[..t.len].to_vec();
    out.push(("initiation", init.clone()));

    let mut loaded = Device::new(
        PrivateKey::from_bytes(RESPONDER_KEY),
        Config::default(),
        Box::new(SeededEntropy::new(8)),
        now,
        wall(),
    );
    // Under load, cookie replies go only to addresses associated with a
    // peer (issue 9): the initiator is one, at `from`.
    let mut known = PeerConfig::new(PrivateKey::from_bytes(INITIATOR_KEY).public_key());
    known.endpoint = Some(from);
    loaded.upsert_peer(known);
    loaded.report_load(now);
    let mut d = init.clone();
    match loaded.handle_datagram(now, from, &mut d, &mut reply) {
        Ok(Received::Reply(c)) => out.push(("cookie_reply", c.to_vec())),
        other => panic!("{other:?}"),
    }

    let mut d = init;
    let resp = match r.handle_datagram(now, from, &mut d, &mut reply) {
        Ok(Received::Reply(m)) => m.to_vec(),
        other => panic!("{other:?}"),
    };
    out.push(("response", resp.clone()));
    let mut d = resp;
    i.handle_datagram(now, "192.0.2.2:51820".parse().unwrap(), &mut d, &mut reply)
        .unwrap();
    let t = i.poll_transmit(now, &mut buf).unwrap();
    out.push(("keepalive", buf[..t.len].to_vec()));
    let mut d = buf[..t.len].to_vec();
    r.handle_datagram(now, from, &mut d, &mut reply).unwrap();

    let packet = udp(A4, B4, (1000, 53), b"query");
    buf[16..16 + packet.len()].copy_from_slice(&packet);
    match r.encapsulate(now, rpeer, &mut buf, packet.len()) {
        Ok(umbra::tunnel::Sent::Now(t)) => out.push(("data", buf[..t.len].to_vec())),
        other => panic!("{other:?}"),
    }
    out
}

/// Well-formed inner packets of every kind the classifier knows.
fn packets() -> Vec<(&'static str, Vec<u8>)> {
    let a6: IpAddr = A6.into();
    let b6: IpAddr = B6.into();
    let udp4 = udp(A4, B4, (1000, 53), b"query");
    let tcp6 = tcp(A6, B6, (40000, 443), SYN, 1, 0, b"");
    let mut reply = [0u8; MAX_REPLY_LEN];
    let unreach6 = match reject(&udp(a6, b6, (5, 6), b"x"), RejectWith::Closed, &mut reply) {
        Ok(Some(n)) => reply[..n].to_vec(),
        other => panic!("{other:?}"),
    };
    let rst4 = match reject(
        &tcp(A4, B4, (1, 2), SYN, 9, 0, b""),
        RejectWith::Closed,
        &mut reply,
    ) {
        Ok(Some(n)) => reply[..n].to_vec(),
        other => panic!("{other:?}"),
    };
    let mut padded = udp4.clone();
    padded.extend_from_slice(&[0xee; 11]);
    vec![
        ("v4_tcp_syn", hex(V4_TCP_SYN)),
        ("v6_udp_ext", hex(V6_UDP_EXT)),
        ("v4_echo", hex(V4_ECHO_REQUEST)),
        ("v6_echo", hex(V6_ECHO_REQUEST)),
        ("v4_port_unreachable", hex(V4_PORT_UNREACHABLE)),
        ("v4_udp", udp4),
        ("v4_udp_trailing", padded),
        ("v6_tcp_syn", tcp6),
        (
            "v4_tcp_data",
            tcp(A4, B4, (1, 2), PSH | ACK, 5, 6, b"hello"),
        ),
        ("v6_echo_reply", echo(A6, B6, false, 1, 2)),
        ("v6_unreachable", unreach6),
        ("v4_rst", rst4),
        ("v4_first_fragment", v4_fragment(17, 1, 0, true, &[0; 16])),
        ("v4_later_fragment", v4_fragment(17, 1, 16, false, &[0; 8])),
        ("v6_first_fragment", v6_fragment(6, 1, 0, true, &[0; 24])),
        ("v6_later_fragment", v6_fragment(6, 1, 24, false, &[0; 8])),
        ("v4_gre", ip(A4.into(), B4.into(), 47, b"gre-ish")),
    ]
}

fn chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    let init = initiation(INITIATOR_KEY, Duration::ZERO);
    let later = initiation(INITIATOR_KEY, Duration::from_secs(30));
    let stranger = initiation(STRANGER_KEY, Duration::ZERO);
    let boring = {
        let private = PrivateKey::from_bytes(INITIATOR_KEY);
        let r_pub = PrivateKey::from_bytes(RESPONDER_KEY).public_key();
        let mut b = BoringSide::new(&private, r_pub, None, common::addr("192.0.2.1:1"), None);
        b.force_initiation().remove(0)
    };
    let deliver = |flags: u8, msgs: &[&[u8]]| {
        let mut s = vec![flags];
        for m in msgs {
            s.push(0);
            chunk(&mut s, m);
            s.extend_from_slice(&[1, 30, 0]); // 30 ms later
        }
        s
    };
    let mut seeds = vec![
        ("initiation_restamped".into(), deliver(1, &[&init])),
        ("initiation_as_sent".into(), deliver(0, &[&init])),
        ("initiation_psk".into(), deliver(5, &[&init])),
        (
            "initiation_replayed".into(),
            deliver(1, &[&init, &init, &later]),
        ),
        ("initiation_boringtun".into(), deliver(1, &[&boring])),
        ("initiation_stranger".into(), deliver(1, &[&stranger])),
        // Under load: a cookie reply, then the same initiation with mac2.
        ("initiation_under_load".into(), deliver(3, &[&init, &init])),
    ];
    // R initiates; I answers genuinely, then with a forged byte.
    seeds.push((
        "r_initiates".into(),
        vec![1, 2, 3, 0, 0, 1, 100, 0, 3, 40, 1],
    ));
    seeds.push((
        "r_initiates_psk_forged".into(),
        vec![5, 2, 3, 40, 0x80, 3, 0, 0],
    ));
    seeds.push((
        "r_retries".into(),
        vec![0, 2, 1, 0x88, 0x13, 1, 0x88, 0x13, 3, 0, 0],
    ));
    seeds
}

fn transport_seeds() -> Vec<(String, Vec<u8>)> {
    let send = |s: &mut Vec<u8>, sel: u8, delta: u16, payload: &[u8]| {
        s.extend_from_slice(&[0, sel]);
        s.extend_from_slice(&delta.to_le_bytes());
        chunk(s, payload);
    };
    let mut seeds = Vec::new();
    for (name, p) in packets() {
        let mut s = Vec::new();
        send(&mut s, 0, 0, &p);
        seeds.push((format!("send_{name}"), s));
    }
    let udp4 = udp(A4, B4, (1000, 53), b"query");
    let mut s = Vec::new();
    send(&mut s, 0, 0, b""); // keepalive
    send(&mut s, 0x08, 0, &udp4); // unpadded
    send(&mut s, 0x30, 5000, &udp4); // jump ahead
    send(&mut s, 0x20, 3, &udp4); // behind, inside the window
    send(&mut s, 0x50, 0, &udp4); // at the window's edge
    send(&mut s, 0x40, 200, &udp4); // far ahead: the old window is gone
    send(&mut s, 0x80, 0, &udp4); // corrupted tag
    s.extend_from_slice(&[5, 0, 5, 2]); // replays
    seeds.push(("counters".into(), s));
    let mut s = Vec::new();
    send(&mut s, 0, 0, &udp4);
    s.extend_from_slice(&[4, 5, 0]);
    s.extend_from_slice(b"hello"); // R answers
    s.extend_from_slice(&[2, 3, 0, 0]); // 12 s: R's keepalive
    s.push(3); // rekey
    send(&mut s, 1, 0, &udp4); // old session
    send(&mut s, 0, 0, &udp4); // new session: promoted
    s.extend_from_slice(&[4, 3, 0, 1, 2, 3]);
    s.extend_from_slice(&[2, 46, 0, 0]); // 184 s: expired
    send(&mut s, 0, 0, &udp4);
    s.extend_from_slice(&[2, 100, 0, 0]); // keys zeroed
    send(&mut s, 0, 0, &udp4);
    seeds.push(("rekey_and_expiry".into(), s));
    let mut s = Vec::new();
    send(&mut s, 0x60, 10, &udp4); // near the message limit
    send(&mut s, 0x70, 1, b"");
    s.push(1);
    chunk(&mut s, &real_messages()[4].1);
    seeds.push(("limits_and_raw".into(), s));
    seeds
}

fn conntrack_seeds() -> Vec<(String, Vec<u8>)> {
    let rec = |s: &mut Vec<u8>, advance: u8, control: u8, p: &[u8]| {
        s.extend_from_slice(&[advance, control]);
        s.extend_from_slice(&(p.len() as u16).to_be_bytes());
        s.extend_from_slice(p);
    };
    let mut tcp_flow = vec![0x17];
    rec(&mut tcp_flow, 0, 0x08, &tcp(A4, B4, (1, 2), SYN, 0, 0, b""));
    rec(
        &mut tcp_flow,
        1,
        0x01,
        &tcp(B4, A4, (2, 1), SYN | ACK, 0, 1, b""),
    );
    rec(&mut tcp_flow, 1, 0x00, &tcp(A4, B4, (1, 2), ACK, 1, 1, b""));
    rec(
        &mut tcp_flow,
        0,
        0x00,
        &tcp(A4, B4, (1, 2), FIN | ACK, 1, 1, b""),
    );
    rec(
        &mut tcp_flow,
        0,
        0x01,
        &tcp(B4, A4, (2, 1), FIN | ACK, 1, 2, b""),
    );
    rec(
        &mut tcp_flow,
        200,
        0x91,
        &tcp(B4, A4, (2, 1), ACK, 1, 1, b""),
    );
    let mut udp_flow = vec![0x03];
    rec(&mut udp_flow, 0, 0x0a, &udp(A6, B6, (5, 53), b"q"));
    rec(&mut udp_flow, 0, 0x03, &udp(B6, A6, (53, 5), b"a"));
    let mut reply = [0u8; MAX_REPLY_LEN];
    let q = udp(A4, B4, (7, 9), b"x");
    rec(&mut udp_flow, 0, 0x08, &q);
    if let Ok(Some(n)) = reject(&q, RejectWith::Closed, &mut reply) {
        rec(&mut udp_flow, 0, 0x01, &reply[..n]);
    }
    rec(&mut udp_flow, 40, 0x10, &echo(A4, B4, true, 1, 1));
    let mut frags = vec![0x11];
    rec(
        &mut frags,
        0,
        0x08,
        &v4_fragment(
            17,
            9,
            0,
            true,
            &udp_datagram(A4.into(), B4.into(), (1, 2), &[0; 8]),
        ),
    );
    rec(&mut frags, 0, 0x00, &v4_fragment(17, 9, 16, false, &[0; 8]));
    rec(&mut frags, 0, 0x08, &v6_fragment(6, 3, 0, true, &[0; 24]));
    rec(&mut frags, 0, 0x00, &v6_fragment(6, 3, 24, false, &[0; 8]));
    let mut many = vec![0x00];
    for port in 0..6u16 {
        rec(
            &mut many,
            1,
            0x08 | ((port as u8 & 3) << 1),
            &udp(A4, B4, (port, 9), b""),
        );
    }
    vec![
        ("tcp_lifecycle".into(), tcp_flow),
        ("udp_icmp".into(), udp_flow),
        ("fragments".into(), frags),
        ("eviction".into(), many),
    ]
}

fn all_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    seeds.insert(
        "wg_parse",
        real_messages()
            .into_iter()
            .map(|(n, m)| (n.to_string(), m))
            .collect(),
    );
    seeds.insert("handshake_responder", handshake_seeds());
    seeds.insert("transport", transport_seeds());
    seeds.insert(
        "replay",
        vec![
            ("in_order".into(), vec![0, 0, 0, 0, 0, 0, 0, 0, 0]),
            (
                "jumps".into(),
                vec![3, 200, 0, 1, 10, 0, 2, 5, 0, 9, 1, 0, 4, 100, 0, 0, 0, 0],
            ),
            (
                "limit".into(),
                vec![5, 100, 0, 0, 0, 0, 6, 0, 0, 7, 0x10, 0x27],
            ),
        ],
    );
    seeds.insert(
        "classify",
        packets()
            .into_iter()
            .flat_map(|(n, p)| {
                let mut big = vec![255];
                big.extend_from_slice(&p);
                let mut small = vec![12];
                small.extend_from_slice(&p);
                [(n.to_string(), big), (format!("{n}_small_reply"), small)]
            })
            .collect(),
    );
    seeds.insert("conntrack", conntrack_seeds());
    let public = PrivateKey::from_bytes(INITIATOR_KEY)
        .public_key()
        .to_base64();
    let private = PrivateKey::from_bytes(RESPONDER_KEY)
        .to_base64()
        .to_string();
    seeds.insert(
        "keys",
        vec![
            ("public".into(), public.clone().into_bytes()),
            ("private_file".into(), format!("{private}\n").into_bytes()),
            ("spaces".into(), format!("  {public}\t\r\n").into_bytes()),
            ("short".into(), public.as_bytes()[..43].to_vec()),
            (
                "non_canonical".into(),
                format!("{}B=", &public[..42]).into_bytes(),
            ),
        ],
    );
    let mut policies: Vec<(String, Vec<u8>)> = Vec::new();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-examples");
    let mut flowlogs: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(examples).expect("policy-examples/") {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read(&path).unwrap();
        if path.extension().is_some_and(|e| e == "jsonl") {
            // The whole log, and a few lines at a time.
            for (i, chunk) in text
                .split_inclusive(|b| *b == b'\n')
                .collect::<Vec<_>>()
                .chunks(12)
                .enumerate()
            {
                flowlogs.push((format!("{name}-{i}"), chunk.concat()));
            }
            flowlogs.push((name, text));
        } else {
            policies.push((name, text));
        }
    }
    policies.sort();
    flowlogs.sort();
    seeds.insert("policy", policies);
    seeds.insert("flowlog", flowlogs);
    seeds.insert("control", control_seeds());
    seeds.insert("offload", fuzzing::offload_seeds());
    seeds
}

#[test]
fn seeds_pass_their_targets() {
    for (target, seeds) in all_seeds() {
        let (_, run) = fuzzing::TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .unwrap_or_else(|| panic!("no target {target}"));
        for (name, seed) in seeds {
            eprintln!("{target}/{name}");
            run(&seed);
        }
    }
}

#[test]
#[ignore = "writes files; run by scripts/fuzz-seeds.sh"]
fn write_seeds() {
    let dir = std::env::var_os("UMBRA_FUZZ_SEEDS_OUT").expect("set UMBRA_FUZZ_SEEDS_OUT");
    let dir = std::path::PathBuf::from(dir);
    for (target, seeds) in all_seeds() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        for (name, seed) in seeds {
            std::fs::write(d.join(name), seed).unwrap();
        }
    }
}

/// Whole control requests, HTTP requests and UAPI exchanges, so the fuzzer
/// starts from inputs that reach each decoder's end.
fn control_seeds() -> Vec<(String, Vec<u8>)> {
    use umbra::observe::proto::{encode, Request};
    vec![
        ("status".into(), encode(&Request::Status)),
        ("flows".into(), encode(&Request::Flows { peer: None })),
        (
            "flows-peer".into(),
            encode(&Request::Flows {
                peer: Some("db-1".into()),
            }),
        ),
        (
            "metrics".into(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("healthz".into(), b"GET /healthz HTTP/1.0\r\n\r\n".to_vec()),
        ("uapi-get".into(), b"get=1\n\n".to_vec()),
        (
            "uapi-set".into(),
            b"set=1\nlisten_port=1\nreplace_peers=true\n\n".to_vec(),
        ),
    ]
}
