//! Flows the tracker let go of, kept (when asked for) so the node can write
//! a flow-end record for each: what the flow was, its counters, and why it
//! went. Off by default; when on, a bounded queue allocated up front, so
//! the per-packet calls still never allocate.

use std::collections::VecDeque;

use super::entry::{Conn, Entry};
use super::key::Key;
use super::state::{FlowState, TcpState};

/// Why the tracker removed a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// Timed out (its state decides whether that was after FIN, RST or
    /// just silence: see [`Ended::closed_by`]).
    Expired,
    /// Made room for a new flow in a full table.
    Evicted,
    /// A new flow with the same key replaced it (a SYN on a closed
    /// connection, or a re-admission).
    Replaced,
    /// `retain` / `remove_peer` / `rejudge` dropped it (the caller knows why).
    Removed,
}

/// How a TCP connection had closed when it went; `None` when it had not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Closed {
    Fin,
    Rst,
}

/// A removed flow: a copy of its entry and the cause.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub(crate) key: Key,
    pub(crate) conn: Conn,
    pub cause: EndCause,
}

impl Ended {
    /// The flow as it was when removed.
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            key: &self.key,
            conn: &self.conn,
        }
    }

    /// Whether the connection had been closed by FIN or RST.
    pub fn closed_by(&self) -> Option<Closed> {
        match self.conn.state {
            FlowState::Tcp(TcpState::FinWait { .. } | TcpState::TimeWait) => Some(Closed::Fin),
            FlowState::Tcp(TcpState::Close) => Some(Closed::Rst),
            _ => None,
        }
    }
}

/// The bounded queue of ended flows; past its capacity further ones are
/// only counted.
#[derive(Debug, Default)]
pub(crate) struct EndedQueue {
    pub(crate) on: bool,
    pub(crate) queue: VecDeque<Ended>,
    pub(crate) lost: u64,
}

impl EndedQueue {
    pub(crate) fn enable(&mut self, capacity: usize) {
        self.on = true;
        self.queue = VecDeque::with_capacity(capacity.max(1));
    }

    pub(crate) fn push(&mut self, key: Key, conn: Conn, cause: EndCause) {
        if !self.on {
            return;
        }
        if self.queue.len() >= self.queue.capacity() {
            self.lost += 1;
            return;
        }
        self.queue.push_back(Ended { key, conn, cause });
    }
}
