//! The bodies of umbra's fuzz targets.
//!
//! Each function here takes the fuzzer's bytes and drives one parser or
//! state machine with them, checking invariants that must hold whatever the
//! input. The cargo-fuzz harnesses in `fuzz/fuzz_targets/` are one-line
//! wrappers around them, and `tests/fuzz_corpus.rs` replays every committed
//! corpus file through the same functions, so each `cargo test` re-checks the
//! corpus without libFuzzer.
//!
//! Unlike the rest of the library these functions *panic* on purpose: a panic
//! is how a broken invariant reaches the fuzzer. They never panic on input
//! the code under test is entitled to reject.
//!
//! Input formats are documented per target; the seed generator
//! (`tests/fuzz_seeds.rs`) writes inputs in these formats from real
//! handshakes and packets.

mod offload;
mod tunnel;

use std::time::Instant;

use crate::conntrack::{self, drive::drive, Conntrack};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::net::IpProtocol;
use crate::wire::classify::{PacketInfo, Transport};
use crate::wire::reject::{reject, RejectWith, MAX_ICMPV4_REPLY, MAX_REPLY_LEN};
use crate::wire::wg::{self, Message, MAC_LEN};
use crate::wire::{icmp::IcmpPacket, tcp::TcpPacket};

pub use offload::{offload, seeds as offload_seeds};
pub use tunnel::{
    handshake_responder, transport, INITIATOR_KEY, PRESHARED_KEY, RESPONDER_KEY, STRANGER_KEY,
};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("wg_parse", wg_parse),
    ("handshake_responder", handshake_responder),
    ("transport", transport),
    ("replay", replay),
    ("classify", classify),
    ("conntrack", conntrack),
    ("keys", keys),
    ("policy", policy),
    ("flowlog", flowlog),
    ("control", control),
    ("offload", offload),
];

/// A cursor over the fuzzer's bytes. Every read returns `None` once the
/// input runs out, which ends the run.
pub(crate) struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let (b, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_le_bytes(*b))
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (b, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(b)
    }
    /// A `u16` length, then that many bytes (or all that is left).
    pub(crate) fn chunk(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        let n = n.min(self.0.len());
        self.bytes(n)
    }
}

/// `wg_parse`: the input is one datagram. Whatever parses must be rebuilt
/// byte for byte by the writers (emit/parse round trip).
pub fn wg_parse(data: &[u8]) {
    let Ok(msg) = wg::parse(data) else {
        return;
    };
    let ty = wg::message_type(data).map(|(t, _)| t);
    let mut out = vec![0u8; data.len()];
    match msg {
        Message::Initiation(m) => {
            assert_eq!(ty, Ok(wg::MSG_INITIATION));
            let noise: &[u8; wg::INITIATION_NOISE_LEN] =
                m.noise().try_into().expect("initiation noise length");
            let fixed: &mut [u8; wg::INITIATION_LEN] =
                out.as_mut_slice().try_into().expect("initiation length");
            wg::write_initiation(fixed, m.sender(), noise);
            put_macs(&mut out, m.mac1(), m.mac2());
            assert_eq!(m.bytes(), data);
        }
        Message::Response(m) => {
            assert_eq!(ty, Ok(wg::MSG_RESPONSE));
            let noise: &[u8; wg::RESPONSE_NOISE_LEN] =
                m.noise().try_into().expect("response noise length");
            let fixed: &mut [u8; wg::RESPONSE_LEN] =
                out.as_mut_slice().try_into().expect("response length");
            wg::write_response(fixed, m.sender(), m.receiver(), noise);
            put_macs(&mut out, m.mac1(), m.mac2());
            assert_eq!(m.bytes(), data);
        }
        Message::CookieReply(m) => {
            assert_eq!(ty, Ok(wg::MSG_COOKIE_REPLY));
            let fixed: &mut [u8; wg::COOKIE_REPLY_LEN] =
                out.as_mut_slice().try_into().expect("cookie reply length");
            wg::write_cookie_reply(fixed, m.receiver(), &m.nonce(), &m.encrypted_cookie());
        }
        Message::Data(d) => {
            assert_eq!(ty, Ok(wg::MSG_DATA));
            assert!(d.sealed().len() >= wg::TAG_LEN);
            assert_eq!(wg::DATA_HEADER_LEN + d.sealed().len(), data.len());
            let (header, rest) = out
                .split_first_chunk_mut::<{ wg::DATA_HEADER_LEN }>()
                .expect("data header");
            wg::write_data_header(header, d.receiver(), d.counter());
            rest.copy_from_slice(d.sealed());
        }
    }
    assert_eq!(out, data, "writers do not reproduce the parsed message");
}

fn put_macs(msg: &mut [u8], mac1: [u8; MAC_LEN], mac2: [u8; MAC_LEN]) {
    let at = wg::mac1_offset(msg.len()).expect("handshake message holds its MACs");
    msg[at..at + MAC_LEN].copy_from_slice(&mac1);
    msg[at + MAC_LEN..].copy_from_slice(&mac2);
}

/// `replay`: the anti-replay window against a model that remembers every
/// counter ever accepted. The input is records of `[mode u8][value u16]`,
/// turned into a counter relative to the highest one accepted so far.
pub fn replay(data: &[u8]) {
    use crate::tunnel::replay::{ReplayWindow, REJECT_AFTER_MESSAGES, WINDOW};
    use std::collections::BTreeSet;

    let mut window = ReplayWindow::default();
    let mut seen = BTreeSet::new();
    let mut next = 0u64;
    let mut input = Input(data);
    while let (Some(mode), Some(v)) = (input.u8(), input.u16()) {
        let v = u64::from(v);
        let counter = match mode & 7 {
            0 => next.saturating_add(v),
            1 => next.saturating_sub(v),
            2 => next.saturating_sub(WINDOW).saturating_add(v % 128),
            3 => next.saturating_add(v * 64),
            4 => next.saturating_sub(v * 64),
            5 => REJECT_AFTER_MESSAGES - 64 + (v % 128),
            6 => u64::MAX - v,
            _ => v,
        };
        let fresh = counter < REJECT_AFTER_MESSAGES
            && (counter >= next || (counter + WINDOW >= next && !seen.contains(&counter)));
        assert_eq!(
            window.check(counter),
            fresh,
            "check({counter}), next {next}"
        );
        // Bit 3: a forged packet fails its tag after the check and is never
        // committed; the window must not move.
        if mode & 8 != 0 {
            continue;
        }
        assert_eq!(
            window.commit(counter),
            fresh,
            "commit({counter}), next {next}"
        );
        if fresh {
            seen.insert(counter);
            next = next.max(counter + 1);
        }
        assert!(
            !window.check(counter),
            "a committed counter is accepted again"
        );
    }
}

/// `classify`: byte 0 sizes the reject reply buffer, the rest is an inner
/// IP packet. Classification must describe bytes inside the packet, and
/// every reject reply must be a well-formed packet going back to the sender.
pub fn classify(data: &[u8]) {
    let Some((&size, packet)) = data.split_first() else {
        return;
    };
    let Ok(info) = crate::wire::classify(packet) else {
        let mut out = [0u8; MAX_REPLY_LEN];
        assert!(
            reject(packet, RejectWith::Closed, &mut out).is_err(),
            "a packet that does not classify is rejected anyway"
        );
        return;
    };
    assert!(info.packet_len <= packet.len());
    assert!(info.transport_offset <= info.packet_len);
    assert!(info.transport_offset + info.payload_len <= info.packet_len);
    let _ = (info.ports(), info.tcp_flags(), info.icmp_type_code());
    let _ = (info.fragment_ident(), info.is_later_fragment());
    for with in [
        RejectWith::Closed,
        RejectWith::PortUnreachable,
        RejectWith::AdminProhibited,
    ] {
        let mut out = [0u8; MAX_REPLY_LEN];
        if let Ok(Some(n)) = reject(packet, with, &mut out) {
            check_reply(&info, with, &out[..n]);
        }
        // A short buffer may make reject fail, never write past it.
        let short = usize::from(size) * 5;
        let mut small = vec![0u8; short.min(MAX_REPLY_LEN)];
        if let Ok(Some(n)) = reject(packet, with, &mut small) {
            assert!(n <= small.len());
            check_reply(&info, with, &small[..n]);
        }
    }
}

fn check_reply(orig: &PacketInfo, with: RejectWith, reply: &[u8]) {
    let info = crate::wire::classify(reply).expect("a reject reply classifies");
    assert_eq!(info.packet_len, reply.len());
    assert_eq!((info.src, info.dst), (orig.dst, orig.src));
    if orig.src.is_ipv4() {
        assert!(reply.len() <= MAX_ICMPV4_REPLY);
    }
    let l4 = &reply[info.transport_offset..];
    let checksum_ok = match info.transport {
        Transport::Tcp { .. } => {
            assert!(matches!(orig.transport, Transport::Tcp { .. }) && with == RejectWith::Closed);
            TcpPacket::new_checked(l4)
                .expect("RST header")
                .verify_checksum(info.src, info.dst)
        }
        Transport::Icmp { .. } => IcmpPacket::new_checked(l4)
            .expect("ICMP header")
            .verify_checksum(info.src, info.dst),
        other => panic!("reject reply carries {other:?}"),
    };
    assert!(checksum_ok, "reject reply checksum");
}

/// `conntrack`: byte 0 sizes the tables (small, so eviction happens), the
/// rest is [`conntrack::drive`]'s record format.
pub fn conntrack(data: &[u8]) {
    let Some((&sizes, records)) = data.split_first() else {
        return;
    };
    let mut ct = Conntrack::new(conntrack::Config {
        capacity: 1 + usize::from(sizes & 15),
        fragment_capacity: 1 + usize::from((sizes >> 4) & 3),
        ..conntrack::Config::default()
    });
    if let Err(broken) = drive(&mut ct, epoch(), records) {
        panic!("conntrack invariant broken: {broken}");
    }
}

/// `keys`: the input is key text (a key file, or a key in policy). The
/// three decoders must agree, and a key that decodes must re-encode to the
/// same text.
pub fn keys(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let public = PublicKey::from_base64(text);
    let private = PrivateKey::from_base64(text);
    let psk = PresharedKey::from_base64(text);
    assert_eq!(public.is_ok(), private.is_ok());
    assert_eq!(public.is_ok(), psk.is_ok());
    let (Ok(public), Ok(private), Ok(psk)) = (public, private, psk) else {
        return;
    };
    assert_eq!(public.to_base64(), text.trim(), "decoding is not canonical");
    assert_eq!(psk.as_bytes(), public.as_bytes());
    let clamped = PrivateKey::from_bytes(public.0);
    assert_eq!(private.as_bytes(), clamped.as_bytes());
    let again = PrivateKey::from_base64(&private.to_base64()).expect("re-encoded private key");
    assert_eq!(again.as_bytes(), private.as_bytes());
    let _ = (format!("{public:?}"), public.to_string());
}

/// `policy`: the input is policy text (invalid UTF-8 is replaced, so byte
/// mutations still reach the lexer). Whatever parses is linted, its
/// `expect` lines run, and it is compiled for every node; each table must
/// agree with the reference evaluator on probe flows (which start every
/// port range the policy names) for every node address and served network,
/// and peer sets must be symmetric.
pub fn policy(data: &[u8]) {
    use crate::policy::{eval, Flow, Policy};
    use std::time::{Duration, UNIX_EPOCH};

    let text = String::from_utf8_lossy(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = Policy::check(&text, "fuzz.policy", now);
    let Ok(p) = Policy::parse(&text, "fuzz.policy") else {
        return;
    };
    let nodes = p.nodes();
    // Bounds the cubic check below; real policies are not the point here.
    if nodes.len() > 12 {
        return;
    }
    let tables: Vec<_> = nodes.iter().map(|n| p.compile_for(n.id, now)).collect();
    let mut probes = eval::probe_flows(&p.model);
    probes.truncate(48);
    probes.extend(
        [(6, 0), (17, 65535), (1, 8), (58, 128), (47, 0)].map(|(proto, port)| Flow {
            proto: IpProtocol(proto),
            port,
        }),
    );
    for via in nodes {
        let mut dsts: Vec<_> = via.addresses.iter().map(|a| a.addr()).collect();
        dsts.extend(via.serves.iter().map(|s| s.addr()));
        for &dst in &dsts {
            for src in nodes {
                for &flow in &probes {
                    let want = p.evaluate(src.id, via.id, dst, flow, now);
                    let table = &tables[via.id.index()];
                    let got = table.ingress(src.id, dst, flow.proto, flow.port);
                    assert_eq!(
                        got, want,
                        "ingress {} -> {dst} via {} {flow:?}",
                        src.name, via.name
                    );
                    if src.id != via.id {
                        let got = tables[src.id.index()].egress(via.id, dst, flow.proto, flow.port);
                        assert_eq!(
                            got, want,
                            "egress {} -> {dst} via {} {flow:?}",
                            src.name, via.name
                        );
                        if want.allowed() {
                            assert!(
                                table.is_peer(src.id) && tables[src.id.index()].is_peer(via.id)
                            );
                        }
                    }
                }
            }
        }
    }
    for t in &tables {
        for peer in t.peers() {
            assert!(t.is_peer(*peer));
            assert!(
                tables[peer.index()].is_peer(t.node()),
                "peer sets are not symmetric"
            );
        }
        if let Some(when) = t.next_expiry() {
            assert!(when > now, "next expiry in the past");
        }
    }
}

/// One monotonic instant per process: targets measure time from here, so a
/// run depends only on its input.
pub(crate) fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The policy `flowlog` decides the fuzzed flows under: the worked example
/// whose flow log seeds the corpus.
const FLOWLOG_POLICY: &str = include_str!("../../policy-examples/learn.policy");

/// `flowlog`: the input is a flow log (JSON lines, schema v1). Reading never
/// panics; every non-blank line is either a record or a located error; the
/// cells add up to the flows counted (pairing, moves and window resets
/// included: the window is tiny here); suggest and replay run on whatever
/// was read, and the suggested lines appended to the policy still parse.
pub fn flowlog(data: &[u8]) {
    use crate::policy::flowlog_agg::Observed;
    use crate::policy::{replay, suggest, suggest_render, Policy};

    let mut o = Observed::with_pairing_cap(8);
    o.read(data, "fuzz.log")
        .expect("reading a slice cannot fail");
    let lines = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count() as u64;
    assert_eq!(o.stats.records + o.stats.malformed, lines);
    assert!(o.stats.errors.iter().all(|e| e.starts_with("fuzz.log:")));
    let in_cells: u64 = o.cells().iter().map(|(_, t)| t.flows).sum();
    assert_eq!(in_cells, o.stats.flows);
    let p = Policy::parse(FLOWLOG_POLICY, "learn.policy").expect("the example parses");
    let now = 1_800_000_000;
    for enforce in [false, true] {
        let s = suggest::suggest(&p, &o, enforce, now);
        let text = suggest_render::render(&p, &s, &o.stats);
        let combined = format!("{FLOWLOG_POLICY}{text}");
        if let Err(e) = Policy::parse(&combined, "combined.policy") {
            panic!("suggested lines do not parse: {e}\n{text}");
        }
    }
    let r = replay::replay(&p, &o, now);
    let _ = replay::render(&r, &o);
}

/// `control`: the bytes a local client sends to the node's control socket,
/// metrics listener or WireGuard UAPI socket. Nothing may panic; a control
/// request that decodes must survive a re-encode/decode round trip, and the
/// answers are well formed (an HTTP status line; a UAPI answer ending in an
/// `errno=` line and a blank line).
pub fn control(data: &[u8]) {
    use crate::observe::conns::Step;
    use crate::observe::proto::{self, Request, Response, Status};
    use crate::observe::{metrics, uapi};

    if let Ok(Some((req, used))) = proto::decode_frame::<Request>(data, proto::MAX_REQUEST) {
        assert!(used <= data.len());
        let again = proto::encode(&req);
        let back = proto::decode_frame::<Request>(&again, proto::MAX_REQUEST);
        assert_eq!(back, Ok(Some((req, again.len()))));
    }
    let _ = proto::decode_frame::<Response>(data, proto::MAX_RESPONSE);
    if let Step::Reply(r) = metrics::step(data, true, Status::default) {
        assert!(r.starts_with(b"HTTP/1.1 "));
    }
    if let Step::Reply(r) = uapi::step(data, Status::default) {
        let text = String::from_utf8(r).expect("UAPI answers are text");
        assert!(text.ends_with("\n\n") && text.contains("errno="), "{text}");
    }
}
