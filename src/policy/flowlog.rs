//! Reading umbra flow logs: JSON lines in the v1 schema the nodes write
//! (docs/observability.md). One record per line, flat dotted keys; unknown
//! keys are ignored so newer writers stay readable.
//!
//! Reading is streaming: a line is parsed into a borrowed, typed view and
//! handed on; nothing of it is kept. A line longer than [`MAX_LINE`] or one
//! that is not a valid v1 record is reported with its line number and
//! skipped, never a panic.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::net::IpAddr;

use serde::Deserialize;

use crate::net::IpProtocol;
use crate::time::parse_rfc3339;

/// Longest line accepted; a record is a few hundred bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// What a record says happened (`event.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// An admitted new flow.
    Start,
    /// The end of an admitted flow, with its byte counts.
    End,
    /// A refused new flow.
    Denied,
    /// An audit rule matched (an annotation beside the real decision).
    Audit,
    /// The writer's rate budget swallowed `suppressed` records.
    Suppressed,
}

/// The verdict recorded (`umbra.verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Allow,
    Drop,
    Reject,
    Quarantine,
    Audit,
}

impl Outcome {
    pub fn allowed(self) -> bool {
        self == Outcome::Allow
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Drop => "drop",
            Outcome::Reject => "reject",
            Outcome::Quarantine => "quarantine",
            Outcome::Audit => "audit",
        }
    }
}

/// Which side of the flow the writing node (`observer.name`) was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer initiated the flow towards the observer.
    Ingress,
    /// The observer's side initiated it.
    Egress,
}

/// The flow part of a record (absent on `flow-suppressed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowPart<'a> {
    pub peer: Cow<'a, str>,
    pub direction: Direction,
    pub proto: IpProtocol,
    pub community_id: Cow<'a, str>,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    /// The responder's port; for ICMP the type (from `icmp.type`), for
    /// protocols without ports 0. `None` for ICMP without `icmp.type`.
    pub dst_port: Option<u16>,
    pub outcome: Outcome,
    pub rule: Cow<'a, str>,
    /// `source.bytes + destination.bytes` (flow-end only, else 0).
    pub bytes: u64,
}

impl FlowPart<'_> {
    /// The initiating node's name and the receiving node's name.
    pub fn ends<'s>(&'s self, observer: &'s str) -> (&'s str, &'s str) {
        match self.direction {
            Direction::Ingress => (&self.peer, observer),
            Direction::Egress => (observer, &self.peer),
        }
    }
}

/// One record, borrowed from its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// `@timestamp`, whole seconds since the epoch.
    pub time: i64,
    pub event: Event,
    pub observer: Cow<'a, str>,
    pub policy_id: Cow<'a, str>,
    pub flow: Option<FlowPart<'a>>,
    /// `umbra.suppressed` (flow-suppressed only, else 0).
    pub suppressed: u64,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "@timestamp", borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(rename = "umbra.schema")]
    schema: Option<u64>,
    #[serde(rename = "event.action", borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(rename = "observer.name", borrow)]
    observer: Option<Cow<'a, str>>,
    #[serde(rename = "umbra.policy_id", borrow)]
    policy_id: Option<Cow<'a, str>>,
    #[serde(rename = "umbra.peer.name", borrow)]
    peer: Option<Cow<'a, str>>,
    #[serde(rename = "network.direction", borrow)]
    direction: Option<Cow<'a, str>>,
    #[serde(rename = "network.transport", borrow)]
    transport: Option<Cow<'a, str>>,
    #[serde(rename = "network.iana_number")]
    iana: Option<u64>,
    #[serde(rename = "network.community_id", borrow)]
    community_id: Option<Cow<'a, str>>,
    #[serde(rename = "source.ip", borrow)]
    src_ip: Option<Cow<'a, str>>,
    #[serde(rename = "source.port")]
    src_port: Option<u64>,
    #[serde(rename = "destination.ip", borrow)]
    dst_ip: Option<Cow<'a, str>>,
    #[serde(rename = "destination.port")]
    dst_port: Option<u64>,
    #[serde(rename = "icmp.type")]
    icmp_type: Option<u64>,
    #[serde(rename = "umbra.verdict", borrow)]
    verdict: Option<Cow<'a, str>>,
    #[serde(rename = "rule.name", borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(rename = "source.bytes")]
    src_bytes: Option<u64>,
    #[serde(rename = "destination.bytes")]
    dst_bytes: Option<u64>,
    #[serde(rename = "umbra.suppressed")]
    suppressed: Option<u64>,
}

fn need<T>(v: Option<T>, key: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("missing `{key}`"))
}

fn port(v: Option<u64>, key: &str) -> Result<u16, String> {
    let p = need(v, key)?;
    u16::try_from(p).map_err(|_| format!("`{key}` is {p}, expected 0 to 65535"))
}

/// Parses one line (without its `\n`) into a record.
pub fn parse_line(line: &[u8]) -> Result<Record<'_>, String> {
    let raw: Raw = serde_json::from_slice(line).map_err(|e| format!("not a JSON object: {e}"))?;
    match need(raw.schema, "umbra.schema")? {
        1 => {}
        v => return Err(format!("`umbra.schema` is {v}; this reader knows schema 1")),
    }
    let ts = need(raw.timestamp, "@timestamp")?;
    let time = parse_rfc3339(&ts)
        .ok_or_else(|| format!("`@timestamp` is `{ts}`, expected an RFC 3339 time"))?;
    let action = need(raw.action, "event.action")?;
    let event = match action.as_ref() {
        "flow-start" => Event::Start,
        "flow-end" => Event::End,
        "flow-denied" => Event::Denied,
        "flow-audit" => Event::Audit,
        "flow-suppressed" => Event::Suppressed,
        other => return Err(format!("unknown `event.action` `{other}`")),
    };
    let observer = need(raw.observer, "observer.name")?;
    let policy_id = need(raw.policy_id, "umbra.policy_id")?;
    if event == Event::Suppressed {
        return Ok(Record {
            time,
            event,
            observer,
            policy_id,
            flow: None,
            suppressed: need(raw.suppressed, "umbra.suppressed")?,
        });
    }
    let direction = match need(raw.direction, "network.direction")?.as_ref() {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        other => {
            return Err(format!(
                "`network.direction` is `{other}`, expected ingress or egress"
            ))
        }
    };
    let proto = match raw.iana {
        Some(n) => u8::try_from(n)
            .map(IpProtocol)
            .map_err(|_| format!("`network.iana_number` is {n}, expected 0 to 255"))?,
        None => {
            let t = need(raw.transport, "network.transport")?;
            IpProtocol::from_name(&t).ok_or_else(|| format!("unknown `network.transport` `{t}`"))?
        }
    };
    let ip = |v: Option<Cow<'_, str>>, key: &str| -> Result<IpAddr, String> {
        let s = need(v, key)?;
        s.parse()
            .map_err(|_| format!("`{key}` is `{s}`, expected an IP address"))
    };
    let src_ip = ip(raw.src_ip, "source.ip")?;
    let dst_ip = ip(raw.dst_ip, "destination.ip")?;
    let src_port = port(raw.src_port, "source.port")?;
    let responder = port(raw.dst_port, "destination.port")?;
    let dst_port = match proto {
        p if p.is_icmp() => match raw.icmp_type {
            Some(t) if t <= 255 => Some(t as u16),
            Some(t) => return Err(format!("`icmp.type` is {t}, expected 0 to 255")),
            None => None,
        },
        p if p.has_ports() => Some(responder),
        _ => Some(0),
    };
    let outcome = match need(raw.verdict, "umbra.verdict")?.as_ref() {
        "allow" => Outcome::Allow,
        "drop" => Outcome::Drop,
        "reject" => Outcome::Reject,
        "quarantine" => Outcome::Quarantine,
        "audit" => Outcome::Audit,
        other => return Err(format!("unknown `umbra.verdict` `{other}`")),
    };
    let bytes = if event == Event::End {
        need(raw.src_bytes, "source.bytes")?
            .saturating_add(need(raw.dst_bytes, "destination.bytes")?)
    } else {
        0
    };
    Ok(Record {
        time,
        event,
        observer,
        policy_id,
        flow: Some(FlowPart {
            peer: need(raw.peer, "umbra.peer.name")?,
            direction,
            proto,
            community_id: need(raw.community_id, "network.community_id")?,
            src_ip,
            src_port,
            dst_ip,
            dst_port,
            outcome,
            rule: need(raw.rule, "rule.name")?,
            bytes,
        }),
        suppressed: 0,
    })
}

/// Reads `\n`-terminated lines of at most [`MAX_LINE`] bytes without ever
/// holding more than that, whatever the input.
pub struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
}

/// One line: its 1-based number and its bytes, or `None` when it was too long.
pub type Line<'a> = (u64, Option<&'a [u8]>);

impl<R: BufRead> Lines<R> {
    pub fn new(inner: R) -> Self {
        Lines {
            inner,
            buf: Vec::with_capacity(1024),
            line_no: 0,
        }
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], i + 1),
                None => (avail, avail.len()),
            };
            if !too_long {
                if self.buf.len() + chunk.len() > MAX_LINE {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let newline = done > chunk.len();
            self.inner.consume(done);
            if newline {
                break;
            }
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some((
            self.line_no,
            (!too_long).then_some(self.buf.as_slice()),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"@timestamp":"2026-11-29T20:01:02.123Z","umbra.schema":1,"event.action":"flow-start","observer.name":"db-1","umbra.policy_id":"3f2a","umbra.peer.name":"web-1","umbra.peer.key":"k=","umbra.peer.roles":["web"],"network.direction":"ingress","network.transport":"tcp","network.iana_number":6,"network.community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","source.ip":"10.20.0.11","source.port":43210,"destination.ip":"10.20.0.31","destination.port":5432,"umbra.verdict":"allow","rule.name":"web-to-db","future.key":{"x":[1,2]}}"#;

    #[test]
    fn reads_the_schema_example_and_ignores_unknown_keys() {
        let r = parse_line(START.as_bytes()).unwrap();
        assert_eq!(r.event, Event::Start);
        assert_eq!(r.observer, "db-1");
        let f = r.flow.unwrap();
        assert_eq!(f.ends(&r.observer), ("web-1", "db-1"));
        assert_eq!(
            (f.proto, f.dst_port, f.src_port),
            (IpProtocol::TCP, Some(5432), 43210)
        );
        assert_eq!(f.outcome, Outcome::Allow);
        assert_eq!(f.rule, "web-to-db");
        assert_eq!(r.time, parse_rfc3339("2026-11-29T20:01:02Z").unwrap());
    }

    #[test]
    fn suppressed_records_need_only_their_keys() {
        let line = r#"{"@timestamp":"2026-11-29T20:01:02Z","umbra.schema":1,"event.action":"flow-suppressed","observer.name":"db-1","umbra.policy_id":"3f","umbra.suppressed":17}"#;
        let r = parse_line(line.as_bytes()).unwrap();
        assert_eq!(
            (r.event, r.suppressed, r.flow),
            (Event::Suppressed, 17, None)
        );
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let cases = [
            ("", "not a JSON object"),
            ("[1,2]", "not a JSON object"),
            ("{\"umbra.schema\":1", "not a JSON object"),
            (r#"{"umbra.schema":2}"#, "knows schema 1"),
            (r#"{"umbra.schema":1}"#, "missing `@timestamp`"),
            (&START.replace("43210", "70000"), "`source.port` is 70000"),
            (
                &START.replace("10.20.0.31", "10.20.0.999"),
                "`destination.ip` is",
            ),
            (
                &START.replace("flow-start", "flow-bogus"),
                "unknown `event.action`",
            ),
            (
                &START.replace("\"ingress\"", "\"sideways\""),
                "`network.direction`",
            ),
            (
                &START.replace("flow-start", "flow-end"),
                "missing `source.bytes`",
            ),
            (
                &START.replace("\"allow\"", "\"maybe\""),
                "unknown `umbra.verdict`",
            ),
        ];
        for (line, want) in cases {
            let err = parse_line(line.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn icmp_takes_its_type_and_portless_protocols_port_zero() {
        let icmp = START
            .replace("\"tcp\"", "\"icmp\"")
            .replace(":6,", ":1,")
            .replace(
                "\"destination.port\":5432",
                "\"destination.port\":0,\"icmp.type\":8",
            );
        assert_eq!(
            parse_line(icmp.as_bytes()).unwrap().flow.unwrap().dst_port,
            Some(8)
        );
        let untyped = START.replace(":6,", ":1,").replace(":5432", ":0");
        assert_eq!(
            parse_line(untyped.as_bytes())
                .unwrap()
                .flow
                .unwrap()
                .dst_port,
            None
        );
        let gre = START.replace(":6,", ":47,");
        assert_eq!(
            parse_line(gre.as_bytes()).unwrap().flow.unwrap().dst_port,
            Some(0)
        );
    }

    #[test]
    fn lines_are_bounded_and_numbered() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("a\r\n{long}\nb\n\nc");
        let mut l = Lines::new(io::BufReader::with_capacity(16, input.as_bytes()));
        let mut got = Vec::new();
        while let Some((n, line)) = l.next_line().unwrap() {
            got.push((n, line.map(|b| String::from_utf8_lossy(b).into_owned())));
        }
        assert_eq!(
            got,
            [
                (1, Some("a".into())),
                (2, None),
                (3, Some("b".into())),
                (4, Some(String::new())),
                (5, Some("c".into()))
            ]
        );
    }
}
