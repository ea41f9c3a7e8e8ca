//! Aggregating flow logs as they are read: every record lands in a cell
//! (initiator, receiving node, destination address, protocol, responder
//! port, recorded verdict and rule) and only the cells are kept, so memory
//! follows the mesh's shape, not the log's length.
//!
//! A flow is counted once although both of its ends write records: records
//! sharing a `network.community_id` pair up. Per community id the reader
//! keeps how many flow starts and ends each side (ingress, egress) wrote;
//! the k-th start on one side is the same flow as the k-th on the other, so
//! a 5-tuple reused later still counts as a new flow. When the two ends
//! disagree on the verdict (a rollout in progress), the receiving end's
//! record wins: that node decides. Repeated `flow-denied` records of one
//! refused flow (retransmitted SYNs) count once.
//!
//! Every table is capped: names, cells and the pairing table. The pairing
//! table is a window: when it is full it is cleared (and the report says
//! so); only ends more than that many distinct flows apart in the input can
//! then be counted twice.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::BufRead;
use std::net::IpAddr;

use super::flowlog::{parse_line, Direction, Event, Lines, Outcome, Record};
use crate::net::IpProtocol;

/// Distinct node names and rule names kept.
pub const MAX_NAMES: usize = 1 << 16;
/// Distinct cells kept; records beyond are counted as not aggregated.
pub const MAX_CELLS: usize = 1 << 20;
/// Community ids remembered for pairing the two ends of a flow.
pub const MAX_PAIRING: usize = 1 << 20;
/// Distinct policy ids listed in the report.
const MAX_POLICY_IDS: usize = 64;
/// Malformed lines quoted in full; the rest are counted.
const MAX_QUOTED_ERRORS: usize = 20;

/// One aggregate: everything the tools need to re-decide these flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellKey {
    /// Interned name of the initiating node.
    pub src: u32,
    /// Interned name of the receiving node (the one that decides).
    pub via: u32,
    pub dst: IpAddr,
    pub proto: IpProtocol,
    /// Responder port, ICMP type, or 0 for protocols without ports.
    pub port: u16,
    pub outcome: Outcome,
    /// Interned name of the recorded deciding rule.
    pub rule: u32,
}

/// Flows, bytes and when they were seen: one cell's counts, or a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub flows: u64,
    pub bytes: u64,
    /// Earliest and latest record time, epoch seconds.
    pub first: i64,
    pub last: i64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            flows: 0,
            bytes: 0,
            first: i64::MAX,
            last: i64::MIN,
        }
    }
}

impl Tally {
    pub fn merge(&mut self, t: &Tally) {
        self.flows = self.flows.saturating_add(t.flows);
        self.bytes = self.bytes.saturating_add(t.bytes);
        self.first = self.first.min(t.first);
        self.last = self.last.max(t.last);
    }
}

/// Per community id: which cell its flow is counted in and how far each
/// side's records have got. Index 0 is ingress, 1 egress.
#[derive(Debug, Clone, Copy)]
struct Pairing {
    cell: u32,
    starts: [u16; 2],
    ends: [u16; 2],
    /// The side's last record was a refusal (repeats of it are one flow).
    denied: [bool; 2],
}

/// The fingerprints are already keyed SipHash values; hash them as is.
#[derive(Default)]
struct Pass(u64);

impl Hasher for Pass {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// What reading reports besides the cells.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    pub files: usize,
    pub lines: u64,
    pub records: u64,
    /// Distinct flows counted (both ends of one flow count once).
    pub flows: u64,
    pub malformed: u64,
    /// `file:line: reason` for the first malformed lines.
    pub errors: Vec<String>,
    /// Records the writers' rate budgets swallowed (counts are lower bounds).
    pub suppressed: u64,
    pub audit_records: u64,
    /// ICMP records without `icmp.type`: their service cannot be told.
    pub untyped_icmp: u64,
    /// Records dropped because a table was full.
    pub not_aggregated: u64,
    /// How often the pairing window was cleared.
    pub pairing_resets: u64,
    /// Records per recorded policy id (the first few ids).
    pub policy_ids: BTreeMap<String, u64>,
}

/// Flow logs read so far.
pub struct Observed {
    names: Vec<Box<str>>,
    name_ids: HashMap<Box<str>, u32>,
    cells: Vec<(CellKey, Tally)>,
    cell_ids: HashMap<CellKey, u32>,
    pairing: HashMap<u64, Pairing, BuildHasherDefault<Pass>>,
    fingerprint: RandomState,
    pairing_cap: usize,
    pub stats: ReadStats,
}

impl Default for Observed {
    fn default() -> Self {
        Self::new()
    }
}

impl Observed {
    pub fn new() -> Self {
        Self::with_pairing_cap(MAX_PAIRING)
    }

    /// With a smaller pairing window (tests).
    pub fn with_pairing_cap(cap: usize) -> Self {
        Observed {
            names: Vec::new(),
            name_ids: HashMap::new(),
            cells: Vec::new(),
            cell_ids: HashMap::new(),
            pairing: HashMap::default(),
            fingerprint: RandomState::new(),
            pairing_cap: cap.max(1),
            stats: ReadStats::default(),
        }
    }

    /// Reads one flow log; malformed lines are recorded as `file:line` and skipped.
    pub fn read<R: BufRead>(&mut self, input: R, file: &str) -> std::io::Result<()> {
        self.stats.files += 1;
        let mut lines = Lines::new(input);
        while let Some((n, line)) = lines.next_line()? {
            self.stats.lines += 1;
            let result = match line {
                None => Err(format!(
                    "line longer than {} KiB, skipped",
                    super::flowlog::MAX_LINE >> 10
                )),
                Some(l) if l.iter().all(u8::is_ascii_whitespace) => continue,
                Some(l) => parse_line(l).map(|r| self.add(&r)),
            };
            if let Err(e) = result {
                self.stats.malformed += 1;
                if self.stats.errors.len() < MAX_QUOTED_ERRORS {
                    // The reason quotes values from the log (JSON escapes can
                    // carry terminal escape sequences): print them escaped.
                    let e = super::diag::sanitize(&e, 300);
                    self.stats.errors.push(format!("{file}:{n}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Reads every file in turn (`-`: standard input).
    pub fn read_files(&mut self, paths: &[String]) -> Result<(), String> {
        for p in paths {
            if p == "-" {
                let stdin = std::io::stdin().lock();
                self.read(stdin, "<stdin>")
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                continue;
            }
            let f = std::fs::File::open(p).map_err(|e| format!("cannot read {p}: {e}"))?;
            self.read(std::io::BufReader::with_capacity(1 << 16, f), p)
                .map_err(|e| format!("cannot read {p}: {e}"))?;
        }
        Ok(())
    }

    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", |n| n)
    }

    /// Every cell, in first-seen order.
    pub fn cells(&self) -> &[(CellKey, Tally)] {
        &self.cells
    }

    fn intern(&mut self, s: &str) -> Option<u32> {
        if let Some(id) = self.name_ids.get(s) {
            return Some(*id);
        }
        if self.names.len() >= MAX_NAMES {
            return None;
        }
        let id = self.names.len() as u32;
        self.names.push(s.into());
        self.name_ids.insert(s.into(), id);
        Some(id)
    }

    fn cell(&mut self, key: CellKey) -> Option<u32> {
        if let Some(id) = self.cell_ids.get(&key) {
            return Some(*id);
        }
        if self.cells.len() >= MAX_CELLS {
            return None;
        }
        let id = self.cells.len() as u32;
        self.cells.push((key, Tally::default()));
        self.cell_ids.insert(key, id);
        Some(id)
    }

    fn touch(&mut self, cell: u32, time: i64, flows: i64, bytes: u64) {
        if let Some((_, s)) = self.cells.get_mut(cell as usize) {
            s.flows = s.flows.saturating_add_signed(flows);
            s.bytes = s.bytes.saturating_add(bytes);
            s.first = s.first.min(time);
            s.last = s.last.max(time);
        }
    }

    /// Adds one parsed record.
    pub fn add(&mut self, r: &Record<'_>) {
        self.stats.records += 1;
        if self.stats.policy_ids.len() < MAX_POLICY_IDS
            || self.stats.policy_ids.contains_key(r.policy_id.as_ref())
        {
            *self
                .stats
                .policy_ids
                .entry(r.policy_id.to_string())
                .or_default() += 1;
        }
        let f = match (&r.event, &r.flow) {
            (Event::Suppressed, _) => {
                self.stats.suppressed = self.stats.suppressed.saturating_add(r.suppressed);
                return;
            }
            (Event::Audit, _) => {
                self.stats.audit_records += 1;
                return;
            }
            (_, Some(f)) => f,
            (_, None) => return,
        };
        let Some(port) = f.dst_port else {
            self.stats.untyped_icmp += 1;
            return;
        };
        let (src, via) = f.ends(&r.observer);
        let (Some(src), Some(via), Some(rule)) =
            (self.intern(src), self.intern(via), self.intern(&f.rule))
        else {
            self.stats.not_aggregated += 1;
            return;
        };
        // A counted record with an audit verdict: what happened is the event.
        let outcome = match (r.event, f.outcome) {
            (Event::Denied, Outcome::Audit) => Outcome::Drop,
            (_, Outcome::Audit) => Outcome::Allow,
            (_, o) => o,
        };
        let key = CellKey {
            src,
            via,
            dst: f.dst_ip,
            proto: f.proto,
            port,
            outcome,
            rule,
        };
        let Some(cell) = self.cell(key) else {
            self.stats.not_aggregated += 1;
            return;
        };
        let side = match f.direction {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        };
        if self.pairing.len() >= self.pairing_cap {
            self.pairing.clear();
            self.stats.pairing_resets += 1;
        }
        let fp = self.fingerprint.hash_one(f.community_id.as_ref());
        let (new_flow, bytes) = match self.pairing.entry(fp) {
            Entry::Vacant(v) => {
                let mut p = Pairing {
                    cell,
                    starts: [0; 2],
                    ends: [0; 2],
                    denied: [false; 2],
                };
                p.starts[side] = 1;
                p.denied[side] = r.event == Event::Denied;
                if r.event == Event::End {
                    p.ends[side] = 1;
                }
                v.insert(p);
                (true, f.bytes)
            }
            Entry::Occupied(mut o) => {
                let p = o.get_mut();
                let other = 1 - side;
                let mut new_flow = false;
                let mut bytes = 0;
                let mut moved_from = None;
                match r.event {
                    Event::Denied if p.denied[side] => {}
                    Event::Start | Event::Denied => {
                        p.starts[side] = p.starts[side].saturating_add(1);
                        p.denied[side] = r.event == Event::Denied;
                        if p.starts[side] > p.starts[other] {
                            new_flow = true;
                            p.cell = cell;
                        } else if side == 0 && p.cell != cell {
                            moved_from = Some(p.cell);
                            p.cell = cell;
                        }
                    }
                    _ => {
                        p.ends[side] = p.ends[side].saturating_add(1);
                        p.denied[side] = false;
                        if p.starts[side] < p.ends[side] {
                            // The flow began before this log did.
                            p.starts[side] = p.ends[side];
                            if p.starts[side] > p.starts[other] {
                                new_flow = true;
                                p.cell = cell;
                            }
                        }
                        if p.ends[side] > p.ends[other] {
                            bytes = f.bytes;
                        }
                    }
                }
                let counted_in = p.cell;
                if let Some(old) = moved_from {
                    self.touch(old, r.time, -1, 0);
                    self.touch(counted_in, r.time, 1, 0);
                }
                if counted_in != cell {
                    // The other end's record decided where this flow counts.
                    self.touch(counted_in, r.time, 0, bytes);
                    self.touch(cell, r.time, 0, 0);
                    return;
                }
                (new_flow, bytes)
            }
        };
        if new_flow {
            self.stats.flows += 1;
        }
        self.touch(cell, r.time, i64::from(new_flow), bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn rec(
        ts: u32,
        action: &str,
        observer: &str,
        peer: &str,
        dir: &str,
        cid: &str,
        verdict: &str,
        bytes: u64,
    ) -> String {
        let (src, dst) = if dir == "ingress" {
            ("10.0.0.1", "10.0.0.2")
        } else {
            ("10.0.0.2", "10.0.0.1")
        };
        let end = if action == "flow-end" {
            format!(",\"source.bytes\":{bytes},\"destination.bytes\":0")
        } else {
            String::new()
        };
        format!(
            "{{\"@timestamp\":\"2026-11-29T20:00:{ts:02}Z\",\"umbra.schema\":1,\"event.action\":\"{action}\",\"observer.name\":\"{observer}\",\"umbra.policy_id\":\"ab\",\"umbra.peer.name\":\"{peer}\",\"network.direction\":\"{dir}\",\"network.iana_number\":6,\"network.community_id\":\"{cid}\",\"source.ip\":\"{src}\",\"source.port\":40000,\"destination.ip\":\"{dst}\",\"destination.port\":80,\"umbra.verdict\":\"{verdict}\",\"rule.name\":\"r1\"{end}}}\n"
        )
    }

    fn read(text: &str, cap: usize) -> Observed {
        let mut o = Observed::with_pairing_cap(cap);
        o.read(text.as_bytes(), "t.log").unwrap();
        o
    }

    fn totals(o: &Observed) -> (u64, u64) {
        o.cells()
            .iter()
            .fold((0, 0), |(f, b), (_, s)| (f + s.flows, b + s.bytes))
    }

    #[test]
    fn both_ends_of_a_flow_count_once_and_repeats_count_again() {
        // a (initiator, egress) and b (responder, ingress) both log start and end.
        let mut t = String::new();
        t += &rec(1, "flow-start", "a", "b", "egress", "1:X", "allow", 0);
        t += &rec(1, "flow-start", "b", "a", "ingress", "1:X", "allow", 0);
        t += &rec(2, "flow-end", "b", "a", "ingress", "1:X", "allow", 100);
        t += &rec(2, "flow-end", "a", "b", "egress", "1:X", "allow", 100);
        // The same 5-tuple again later, seen by a only.
        t += &rec(9, "flow-start", "a", "b", "egress", "1:X", "allow", 0);
        t += &rec(9, "flow-end", "a", "b", "egress", "1:X", "allow", 50);
        let o = read(&t, 100);
        assert_eq!(totals(&o), (2, 150));
        assert_eq!(o.stats.flows, 2);
        let (k, s) = o.cells()[0];
        assert_eq!((o.name(k.src), o.name(k.via)), ("a", "b"));
        assert_eq!((s.first, s.last - s.first), (s.first, 8));
    }

    #[test]
    fn the_receiving_end_decides_and_retried_refusals_count_once() {
        let mut t = String::new();
        // a's egress check still allowed it (older policy); b refused it, three SYNs.
        t += &rec(1, "flow-start", "a", "b", "egress", "1:Y", "allow", 0);
        for _ in 0..3 {
            t += &rec(1, "flow-denied", "b", "a", "ingress", "1:Y", "drop", 0);
        }
        let o = read(&t, 100);
        let counted: Vec<(Outcome, u64)> = o
            .cells()
            .iter()
            .map(|(k, s)| (k.outcome, s.flows))
            .collect();
        assert_eq!(counted, [(Outcome::Allow, 0), (Outcome::Drop, 1)]);
    }

    #[test]
    fn a_full_pairing_window_is_reported() {
        let mut t = String::new();
        t += &rec(1, "flow-start", "a", "b", "egress", "1:A", "allow", 0);
        t += &rec(1, "flow-start", "a", "b", "egress", "1:B", "allow", 0);
        t += &rec(1, "flow-start", "b", "a", "ingress", "1:A", "allow", 0);
        let o = read(&t, 2);
        assert_eq!(o.stats.pairing_resets, 1);
        assert_eq!(
            totals(&o).0,
            3,
            "ends further apart than the window count twice"
        );
        let o = read(&t, 3);
        assert_eq!((o.stats.pairing_resets, totals(&o).0), (0, 2));
    }

    #[test]
    fn malformed_lines_are_located_and_skipped() {
        let mut t = rec(1, "flow-start", "a", "b", "egress", "1:A", "allow", 0);
        t += "{\"umbra.schema\":1,\n\n";
        t += "\u{0}\u{ff}garbage\n";
        t += &rec(1, "flow-start", "a", "b", "egress", "1:B", "allow", 0);
        let o = read(&t, 10);
        assert_eq!(o.stats.malformed, 2);
        assert!(
            o.stats.errors[0].starts_with("t.log:2: not a JSON object"),
            "{:?}",
            o.stats.errors
        );
        assert!(o.stats.errors[1].starts_with("t.log:4: "));
        assert_eq!(totals(&o).0, 2);
    }
}
