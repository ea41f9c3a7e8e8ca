//! The JSON-lines flow log: one record per line in the schema of
//! docs/observability.md, written without blocking the event loop.
//!
//! [`render`] is pure (a record and its wall-clock time in, a line out);
//! [`FlowLog`] is the edge: a file opened in append mode (reopened on
//! SIGUSR1, for logrotate) or standard output, written through a bounded
//! buffer. A reader that stops reading (a full pipe on standard output)
//! costs whole records, counted, never a stalled node.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::community_id::community_id_v1;
use super::json::Obj;
use crate::node::flows::{FlowAction, FlowItem, FlowRecord, FlowVerdict};

/// The schema version in every record.
pub const SCHEMA: u64 = 1;

/// Most bytes buffered for a slow destination; past it records are lost.
const MAX_PENDING: usize = 1 << 20;

/// The Community ID of a record's flow (ICMP hashed by type and code).
pub fn community_id(r: &FlowRecord) -> String {
    let t = &r.tuple;
    let (sp, dp) = match (t.proto.is_icmp(), t.icmp) {
        (true, Some((ty, code))) => (u16::from(ty), u16::from(code)),
        _ => (t.src_port, t.dst_port),
    };
    community_id_v1(0, t.src, t.dst, t.proto, sp, dp)
}

/// Appends one record line (with its `\n`) to `out`. `wall` is when it
/// happened; `observer` this node's name.
pub fn render(out: &mut String, item: &FlowItem, wall: SystemTime, observer: &str) {
    let mut o = Obj::new(out);
    o.str("@timestamp", &crate::time::format_rfc3339_millis(wall))
        .num("umbra.schema", SCHEMA);
    let r = match item {
        FlowItem::Suppressed { policy, count, .. } => {
            o.str("event.action", "flow-suppressed")
                .str("observer.name", observer)
                .display("umbra.policy_id", policy)
                .num("umbra.suppressed", *count);
            o.end();
            out.push('\n');
            return;
        }
        FlowItem::Record(r) => r,
    };
    let action = match r.action {
        FlowAction::Start => "flow-start",
        FlowAction::End(_) => "flow-end",
        FlowAction::Denied => "flow-denied",
        FlowAction::Audit => "flow-audit",
    };
    o.str("event.action", action)
        .str("observer.name", observer)
        .display("umbra.policy_id", r.policy);
    match r.meta.node(r.peer) {
        Some(n) => {
            o.str("umbra.peer.name", &n.name)
                .display("umbra.peer.key", n.key)
                .strs("umbra.peer.roles", &n.roles);
        }
        None => {
            o.str("umbra.peer.name", "")
                .str("umbra.peer.key", "")
                .strs::<&str>("umbra.peer.roles", &[]);
        }
    }
    let t = &r.tuple;
    o.str(
        "network.direction",
        if r.ingress { "ingress" } else { "egress" },
    )
    .str("network.transport", &t.proto.transport())
    .num("network.iana_number", u64::from(t.proto.number()))
    .str("network.community_id", &community_id(r))
    .display("source.ip", t.src)
    .num("source.port", u64::from(t.src_port))
    .display("destination.ip", t.dst)
    .num("destination.port", u64::from(t.dst_port));
    if let (true, Some((ty, code))) = (t.proto.is_icmp(), t.icmp) {
        o.num("icmp.type", u64::from(ty))
            .num("icmp.code", u64::from(code));
    }
    let verdict = match r.verdict {
        FlowVerdict::Allow => "allow",
        FlowVerdict::Drop => "drop",
        FlowVerdict::Reject => "reject",
        FlowVerdict::Quarantine => "quarantine",
        FlowVerdict::Audit { .. } => "audit",
    };
    o.str("umbra.verdict", verdict);
    if let FlowVerdict::Audit { would_allow } = r.verdict {
        o.str(
            "umbra.audit_would",
            if would_allow { "allow" } else { "deny" },
        );
    }
    o.str("rule.name", r.rule_meta.rule_label(r.rule));
    if let FlowAction::End(end) = r.action {
        o.str("umbra.end_reason", end.reason.as_str())
            .num(
                "event.duration",
                u64::try_from(end.duration.as_nanos()).unwrap_or(u64::MAX),
            )
            .num("source.bytes", end.bytes[0])
            .num("source.packets", end.packets[0])
            .num("destination.bytes", end.bytes[1])
            .num("destination.packets", end.packets[1]);
    }
    o.end();
    out.push('\n');
}

/// When a record's monotonic instant happened on the wall clock, given
/// both clocks read at one moment.
pub fn wall_of(at: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    let ago = now.saturating_duration_since(at);
    wall_now.checked_sub(ago).unwrap_or(wall_now)
}

enum Sink {
    Stdout,
    File(File),
}

/// Where records go.
pub struct FlowLog {
    path: Option<PathBuf>,
    sink: Sink,
    observer: String,
    pending: Vec<u8>,
    line: String,
    /// Records dropped because the destination could not keep up.
    pub lost: u64,
    /// Records written.
    pub written: u64,
}

/// Opens for appending, creating the file with mode 0640 (records name
/// peers and addresses) if missing.
fn open_append(path: &PathBuf) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl FlowLog {
    /// `-` is standard output (made non-blocking); anything else a file
    /// opened for appending.
    pub fn open(target: &str, observer: &str) -> io::Result<FlowLog> {
        let (path, sink) = if target == "-" {
            let fd = io::stdout().as_raw_fd();
            crate::io::sockopt::set_nonblocking(fd)?;
            (None, Sink::Stdout)
        } else {
            let path = PathBuf::from(target);
            let f = open_append(&path)?;
            (Some(path), Sink::File(f))
        };
        Ok(FlowLog {
            path,
            sink,
            observer: observer.to_string(),
            pending: Vec::with_capacity(64 * 1024),
            line: String::with_capacity(1024),
            lost: 0,
            written: 0,
        })
    }

    /// Reopens the file (logrotate moved it away); standard output stays.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush();
        if let Some(path) = &self.path {
            self.sink = Sink::File(open_append(path)?);
        }
        Ok(())
    }

    /// Renders and buffers one record; writes when enough is buffered.
    pub fn push(&mut self, item: &FlowItem, now: Instant, wall_now: SystemTime) {
        let at = match item {
            FlowItem::Record(r) => r.at,
            FlowItem::Suppressed { at, .. } => *at,
        };
        self.line.clear();
        render(
            &mut self.line,
            item,
            wall_of(at, now, wall_now),
            &self.observer,
        );
        if self.pending.len() + self.line.len() > MAX_PENDING {
            self.flush();
            if self.pending.len() + self.line.len() > MAX_PENDING {
                self.lost += 1;
                return;
            }
        }
        self.pending.extend_from_slice(self.line.as_bytes());
        self.written += 1;
        if self.pending.len() >= 32 * 1024 {
            self.flush();
        }
    }

    /// Writes what the destination takes now; keeps the rest.
    pub fn flush(&mut self) {
        let mut done = 0;
        while done < self.pending.len() {
            let chunk = &self.pending[done..];
            let r = match &mut self.sink {
                Sink::Stdout => io::stdout().lock().write(chunk),
                Sink::File(f) => f.write(chunk),
            };
            match r {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    crate::debug!("flow log write failed: {e}");
                    break;
                }
            }
        }
        self.pending.drain(..done);
    }
}
