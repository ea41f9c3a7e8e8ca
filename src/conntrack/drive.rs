//! Driving a tracker with a byte string, for fuzzing and corpus replay.
//!
//! The input is a sequence of records:
//!
//! ```text
//! [advance: u8] [control: u8] [len: u16 big-endian] [packet: len bytes]
//! ```
//!
//! `advance` moves the fake clock forward by that many seconds, times 16
//! if bit 7 of `control` is set (so a short input can cross every timeout).
//! Bit 0 of `control` picks the direction (1 = inbound), bits 1-2 the peer
//! id, bit 3 whether the stand-in policy allows new flows, bit 4 whether to
//! call `expire` before the packet. A truncated last record ends the input.
//!
//! After every step the driver checks invariants that must hold whatever
//! the input: the table never exceeds its capacity, its internal lists are
//! consistent, and a flow just admitted matches its own packet.

use std::time::{Duration, Instant};

use super::{Conntrack, Direction, Match, PeerId, RuleId};
use crate::wire::classify;

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriveStats {
    /// Records processed.
    pub packets: usize,
    /// Records that failed to classify.
    pub unparsed: usize,
    /// Lookups that matched a flow.
    pub tracked: usize,
    /// Flows admitted.
    pub admitted: usize,
}

/// Feeds `input` to `tracker` starting at `start`. Errors name the broken
/// invariant; a fuzz target should panic on them.
pub fn drive(
    tracker: &mut Conntrack,
    start: Instant,
    input: &[u8],
) -> Result<DriveStats, &'static str> {
    let mut now = start;
    let mut stats = DriveStats::default();
    let mut rest = input;
    while let [advance, control, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some((packet, next)) = tail.split_at_checked(len) else {
            break;
        };
        rest = next;
        let scale = if control & 0x80 != 0 { 16 } else { 1 };
        now += Duration::from_secs(u64::from(*advance) * scale);
        stats.packets += 1;
        if control & 0x10 != 0 {
            tracker.expire(now);
        }
        let Ok(info) = classify(packet) else {
            stats.unparsed += 1;
            continue;
        };
        let dir = if control & 1 != 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let peer = PeerId(u32::from((control >> 1) & 3));
        let allow = control & 0x08 != 0;
        match tracker.lookup(now, peer, dir, &info) {
            Match::New if allow && tracker.admit(now, peer, dir, &info, RuleId(7)).is_ok() => {
                stats.admitted += 1;
                if !tracker.lookup(now, peer, dir, &info).is_tracked() {
                    return Err("an admitted flow does not match its own packet");
                }
            }
            m if m.is_tracked() => stats.tracked += 1,
            _ => {}
        }
        if tracker.len() > tracker.capacity() {
            return Err("table over capacity");
        }
        tracker.check_invariants()?;
    }
    Ok(stats)
}
