//! WireGuard's timer rules, per peer, as deadlines the device checks on each tick.
//!
//! The names follow the WireGuard paper (§6): each hook is called where the
//! protocol event happens, and `due` tells which deadlines have passed.

use std::time::{Duration, Instant};

use super::session::REJECT_AFTER_TIME;

pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retransmissions that fit in REKEY_ATTEMPT_TIME.
pub const MAX_HANDSHAKE_ATTEMPTS: u32 =
    (REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()) as u32;
/// Upper bound of the random delay added to each retransmission, so peers
/// that lost packets together do not retry in lockstep.
pub const REKEY_TIMEOUT_JITTER_MAX_MS: u32 = 334;
/// How often the edge should call `Device::tick`.
pub const TICK: Duration = Duration::from_millis(250);

/// What a passed deadline asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub retransmit_handshake: bool,
    pub send_keepalive: bool,
    pub new_handshake: bool,
    pub zero_keys: bool,
    pub persistent_keepalive: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Timers {
    retransmit_handshake: Option<Instant>,
    send_keepalive: Option<Instant>,
    new_handshake: Option<Instant>,
    zero_keys: Option<Instant>,
    persistent_keepalive: Option<Instant>,
    pub persistent_interval: Option<Duration>,
}

impl Timers {
    pub fn with_persistent_keepalive(interval: Option<Duration>) -> Self {
        Timers {
            persistent_interval: interval,
            ..Timers::default()
        }
    }

    pub fn handshake_initiated(&mut self, now: Instant, jitter: Duration) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter);
    }

    pub fn handshake_complete(&mut self) {
        self.retransmit_handshake = None;
    }

    pub fn session_derived(&mut self, now: Instant) {
        self.zero_keys = Some(now + 3 * REJECT_AFTER_TIME);
    }

    /// Giving up on a handshake: keys still expire even if nothing else happens.
    pub fn handshake_abandoned(&mut self, now: Instant) {
        self.retransmit_handshake = None;
        self.send_keepalive = None;
        self.zero_keys.get_or_insert(now + 3 * REJECT_AFTER_TIME);
    }

    /// A data packet (not a keepalive) was sent: expect an answer soon, or rekey.
    pub fn data_sent(&mut self, now: Instant) {
        self.new_handshake
            .get_or_insert(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    }

    /// A data packet (not a keepalive) arrived: answer within KEEPALIVE_TIMEOUT.
    pub fn data_received(&mut self, now: Instant) {
        self.send_keepalive.get_or_insert(now + KEEPALIVE_TIMEOUT);
    }

    pub fn any_authenticated_sent(&mut self) {
        self.send_keepalive = None;
    }

    pub fn any_authenticated_received(&mut self) {
        self.new_handshake = None;
    }

    pub fn any_authenticated_traversal(&mut self, now: Instant) {
        if let Some(interval) = self.persistent_interval {
            self.persistent_keepalive = Some(now + interval);
        }
    }

    pub fn keys_zeroed(&mut self) {
        *self = Timers {
            persistent_interval: self.persistent_interval,
            ..Timers::default()
        };
    }

    /// Which deadlines have passed; each fires once.
    pub fn due(&mut self, now: Instant) -> Due {
        fn take(slot: &mut Option<Instant>, now: Instant) -> bool {
            match slot {
                Some(at) if *at <= now => {
                    *slot = None;
                    true
                }
                _ => false,
            }
        }
        Due {
            retransmit_handshake: take(&mut self.retransmit_handshake, now),
            send_keepalive: take(&mut self.send_keepalive, now),
            new_handshake: take(&mut self.new_handshake, now),
            zero_keys: take(&mut self.zero_keys, now),
            persistent_keepalive: take(&mut self.persistent_keepalive, now),
        }
    }

    /// The earliest deadline, so an event loop can sleep until then.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_keys,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fire_once() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.data_sent(now);
        t.data_sent(now + Duration::from_secs(3));
        assert_eq!(
            t.next_deadline(),
            Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT),
            "not pushed back"
        );
        assert!(!t.due(now + Duration::from_secs(14)).new_handshake);
        assert!(t.due(now + Duration::from_secs(15)).new_handshake);
        assert!(!t.due(now + Duration::from_secs(16)).new_handshake);
    }

    #[test]
    fn received_packet_cancels_new_handshake() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.data_sent(now);
        t.any_authenticated_received();
        assert_eq!(t.due(now + Duration::from_secs(60)), Due::default());
    }

    #[test]
    fn persistent_keepalive_rearms_on_traffic() {
        let now = Instant::now();
        let mut t = Timers::with_persistent_keepalive(Some(Duration::from_secs(25)));
        t.any_authenticated_traversal(now);
        t.any_authenticated_traversal(now + Duration::from_secs(20));
        assert!(!t.due(now + Duration::from_secs(30)).persistent_keepalive);
        assert!(t.due(now + Duration::from_secs(45)).persistent_keepalive);
    }

    #[test]
    fn attempts_cover_rekey_attempt_time() {
        assert_eq!(MAX_HANDSHAKE_ATTEMPTS, 18);
    }
}
