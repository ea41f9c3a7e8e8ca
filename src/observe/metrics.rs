//! Prometheus metrics: `GET /metrics` in the text exposition format
//! (version 0.0.4) and `GET /healthz`, over plain HTTP/1.x on the node's
//! own loop. One request per connection, answered and closed.
//!
//! Label values come from the policy (peer names and keys, rule labels),
//! from fixed lists (drop reasons, verdicts, results) or from the protocol
//! names a flow table can hold, never from packet contents, so the number
//! of series is bounded by the policy.

use std::fmt::Write;

use super::conns::Step;
use super::proto::Status;

/// Largest HTTP request head accepted.
pub const MAX_HTTP_REQUEST: usize = 8192;

/// Escapes a label value (backslash, double quote, newline).
fn label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                label(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The exposition text for a status snapshot.
pub fn render(s: &Status) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let mut f = Family::new(
        o,
        "wireguard_peer_receive_bytes_total",
        "counter",
        "Bytes received from the peer (WireGuard datagrams).",
    );
    for p in &s.peers {
        f.sample(
            &[("public_key", &p.public_key), ("name", &p.name)],
            p.rx_bytes,
        );
    }
    let mut f = Family::new(
        o,
        "wireguard_peer_transmit_bytes_total",
        "counter",
        "Bytes sent to the peer (WireGuard datagrams).",
    );
    for p in &s.peers {
        f.sample(
            &[("public_key", &p.public_key), ("name", &p.name)],
            p.tx_bytes,
        );
    }
    let mut f = Family::new(
        o,
        "wireguard_peer_last_handshake_seconds",
        "gauge",
        "Unix time of the latest completed handshake, 0 if none.",
    );
    for p in &s.peers {
        f.sample(
            &[("public_key", &p.public_key), ("name", &p.name)],
            p.latest_handshake_unix.unwrap_or(0),
        );
    }
    let mut f = Family::new(
        o,
        "umbra_peer_receive_packets_total",
        "counter",
        "Transport data messages received from the peer.",
    );
    for p in &s.peers {
        f.sample(
            &[("public_key", &p.public_key), ("name", &p.name)],
            p.rx_packets,
        );
    }
    let mut f = Family::new(
        o,
        "umbra_peer_transmit_packets_total",
        "counter",
        "Transport data messages sent to the peer.",
    );
    for p in &s.peers {
        f.sample(
            &[("public_key", &p.public_key), ("name", &p.name)],
            p.tx_packets,
        );
    }
    let mut f = Family::new(
        o,
        "umbra_decisions_total",
        "counter",
        "Policy decisions on new flows, by verdict and deciding rule.",
    );
    for d in &s.decisions {
        f.sample(&[("verdict", &d.verdict), ("rule", &d.rule)], d.count);
    }
    let mut f = Family::new(
        o,
        "umbra_drops_total",
        "counter",
        "Packets and datagrams dropped, by reason.",
    );
    for d in &s.drops {
        f.sample(&[("reason", &d.name)], d.value);
    }
    let mut by_proto = std::collections::BTreeMap::<&str, u64>::new();
    for c in &s.flows {
        let proto = c.name.split('/').next().unwrap_or("");
        *by_proto.entry(proto).or_insert(0) += c.value;
    }
    let mut f = Family::new(
        o,
        "umbra_flows",
        "gauge",
        "Flows in the connection table, by protocol.",
    );
    for (p, n) in by_proto {
        f.sample(&[("proto", p)], n);
    }
    let mut f = Family::new(
        o,
        "umbra_flows_capacity",
        "gauge",
        "Size of the connection table.",
    );
    f.sample(&[], s.flows_capacity);
    let mut f = Family::new(
        o,
        "umbra_handshakes_total",
        "counter",
        "Handshake outcomes, by result.",
    );
    for c in &s.handshakes {
        f.sample(&[("result", &c.name)], c.value);
    }
    let mut f = Family::new(
        o,
        "umbra_policy_reloads_total",
        "counter",
        "Policy reloads, by result.",
    );
    for c in &s.reloads {
        f.sample(&[("result", &c.name)], c.value);
    }
    let mut f = Family::new(
        o,
        "umbra_policy_info",
        "gauge",
        "The policy in force (always 1), labelled with its id.",
    );
    f.sample(&[("id", &s.policy_id)], 1);
    let mut f = Family::new(
        o,
        "umbra_up",
        "gauge",
        "1 when the policy is loaded and the data plane is up.",
    );
    f.sample(&[], u64::from(s.data_plane_up));
    let mut f = Family::new(
        o,
        "umbra_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
    );
    f.sample(&[], s.uptime_secs);
    if let Some((written, lost)) = s.flow_log {
        let mut f = Family::new(
            o,
            "umbra_flow_log_records_total",
            "counter",
            "Flow-log records, by result.",
        );
        f.sample(&[("result", "written")], written);
        f.sample(&[("result", "lost")], lost);
    }
    let mut f = Family::new(
        o,
        "umbra_offload",
        "gauge",
        "Offloads in use (1 per offload in use).",
    );
    for off in &s.offloads {
        f.sample(&[("offload", off)], 1);
    }
    let mut f = Family::new(
        o,
        "umbra_packet_io_total",
        "counter",
        "Packet I/O on the UDP sockets and the packet device, by counter.",
    );
    for c in &s.io {
        f.sample(&[("counter", &c.name)], c.value);
    }
    out
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The HTTP side: waits for a whole request head, answers it.
/// `up`: whether the data plane is up (all `/healthz` needs).
pub fn step(req: &[u8], up: bool, status: impl FnOnce() -> Status) -> Step {
    let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Step::More;
    };
    let head = &req[..end];
    let Ok(head) = std::str::from_utf8(head) else {
        return Step::Reply(response("400 Bad Request", "text/plain", "bad request\n"));
    };
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Step::Reply(response("400 Bad Request", "text/plain", "bad request\n"));
    }
    if method != Some("GET") && method != Some("HEAD") {
        return Step::Reply(response(
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        ));
    }
    let path = target.unwrap_or("").split('?').next().unwrap_or("");
    match path {
        "/metrics" => Step::Reply(response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &render(&status()),
        )),
        "/healthz" => {
            if up {
                Step::Reply(response("200 OK", "text/plain", "ok\n"))
            } else {
                Step::Reply(response(
                    "503 Service Unavailable",
                    "text/plain",
                    "data plane down\n",
                ))
            }
        }
        _ => Step::Reply(response(
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::proto::{Count, Decision, PeerStatus};

    /// A strict reader of the text format: every sample belongs to the
    /// family declared just before it, names and labels are well formed,
    /// values parse, no series repeats.
    pub(crate) fn parse_exposition(text: &str) -> Result<usize, String> {
        let mut family: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut samples = 0;
        for (n, line) in text.lines().enumerate() {
            let err = |m: &str| Err(format!("line {}: {m}: {line}", n + 1));
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or("");
                if !matches!(it.next(), Some("counter" | "gauge")) {
                    return err("bad type");
                }
                family = Some(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let Some(fam) = &family else {
                return err("sample before TYPE");
            };
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => return err("no value"),
            };
            if value.parse::<f64>().is_err() {
                return err("bad value");
            }
            let name_end = series.find('{').unwrap_or(series.len());
            let name = &series[..name_end];
            if name != fam.as_str() {
                return err("sample outside its family");
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return err("bad name");
            }
            if name_end < series.len() {
                let labels = &series[name_end..];
                if !labels.ends_with('}') {
                    return err("unterminated labels");
                }
                // key="value" pairs with escapes.
                let body = &labels[1..labels.len() - 1];
                let mut chars = body.chars().peekable();
                loop {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return err("bad label name");
                    }
                    if chars.next() != Some('"') {
                        return err("label value not quoted");
                    }
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('\\' | '"' | 'n') => {}
                                _ => return err("bad escape"),
                            },
                            Some('"') => break,
                            Some('\n') | None => return err("unterminated value"),
                            Some(_) => {}
                        }
                    }
                    match chars.next() {
                        Some(',') => continue,
                        None => break,
                        _ => return err("junk after label"),
                    }
                }
            }
            if !seen.insert(series.to_string()) {
                return err("duplicate series");
            }
            samples += 1;
        }
        Ok(samples)
    }

    fn sample_status() -> Status {
        Status {
            policy_id: "0123456789abcdef".into(),
            data_plane_up: true,
            peers: vec![PeerStatus {
                name: "db \"1\"\\x\ny".into(),
                public_key: "abc=".into(),
                rx_bytes: 10,
                latest_handshake_unix: Some(1_700_000_000),
                ..Default::default()
            }],
            flows: vec![
                Count {
                    name: "tcp/established".into(),
                    value: 2,
                },
                Count {
                    name: "tcp/syn-sent".into(),
                    value: 1,
                },
                Count {
                    name: "udp/replied".into(),
                    value: 4,
                },
            ],
            drops: vec![Count {
                name: "no_rule".into(),
                value: 3,
            }],
            decisions: vec![Decision {
                verdict: "allow".into(),
                rule: "web-to-db".into(),
                count: 5,
            }],
            handshakes: vec![Count {
                name: "completed".into(),
                value: 1,
            }],
            reloads: vec![Count {
                name: "ok".into(),
                value: 0,
            }],
            flow_log: Some((7, 0)),
            offloads: vec!["udp-gso".into()],
            io: vec![Count {
                name: "udp_rx_calls".into(),
                value: 4,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn exposition_parses_and_escapes() {
        let text = render(&sample_status());
        let n = parse_exposition(&text).unwrap();
        assert!(n >= 12, "{text}");
        assert!(text.contains(
            "wireguard_peer_receive_bytes_total{public_key=\"abc=\",name=\"db \\\"1\\\"\\\\x\\ny\"} 10\n"
        ));
        assert!(text.contains("umbra_flows{proto=\"tcp\"} 3\n"));
        assert!(text.contains("umbra_policy_info{id=\"0123456789abcdef\"} 1\n"));
        assert!(text.contains("umbra_decisions_total{verdict=\"allow\",rule=\"web-to-db\"} 5\n"));
        assert!(text.contains("umbra_offload{offload=\"udp-gso\"} 1\n"));
        assert!(text.contains("umbra_packet_io_total{counter=\"udp_rx_calls\"} 4\n"));
    }

    #[test]
    fn the_parser_catches_broken_text() {
        for bad in [
            "x 1\n",
            "# TYPE a counter\nb 1\n",
            "# TYPE a counter\na{l=\"x} 1\n",
            "# TYPE a counter\na{l=\"x\\q\"} 1\n",
            "# TYPE a counter\na one\n",
            "# TYPE a counter\na 1\na 2\n",
        ] {
            assert!(parse_exposition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_requests() {
        let st = sample_status;
        let reply = |req: &[u8]| match step(req, true, st) {
            Step::Reply(r) => String::from_utf8(r).unwrap(),
            Step::More => "MORE".into(),
            Step::Close => "CLOSE".into(),
        };
        assert_eq!(reply(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), "MORE");
        let r = reply(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let body = r.split_once("\r\n\r\n").unwrap().1;
        parse_exposition(body).unwrap();
        assert!(reply(b"GET /healthz HTTP/1.0\r\n\r\n").ends_with("\r\n\r\nok\n"));
        assert!(reply(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let down = step(b"GET /healthz HTTP/1.1\r\n\r\n", false, st);
        assert!(matches!(down, Step::Reply(r) if r.starts_with(b"HTTP/1.1 503")));
        assert!(reply(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(reply(b"\xff\xfe\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(reply(b"garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    }
}
