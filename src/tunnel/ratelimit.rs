//! Handshake load detection and per-source rate limiting.
//!
//! A responder counts the handshake messages it receives. Past a threshold
//! per second it is "under load" for at least a second: it then demands
//! mac2 (a cookie round trip proves the source address is real), and
//! limits each real source to a small steady rate with a short burst, as
//! WireGuard's ratelimiter does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const PACKETS_PER_SECOND: u64 = 20;
const PACKETS_BURSTABLE: u64 = 5;
const PACKET_COST_NS: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const TOKEN_MAX_NS: u64 = PACKET_COST_NS * PACKETS_BURSTABLE;
/// Upper bound on tracked sources; beyond it new sources are refused while
/// under load rather than growing memory without bound.
pub const MAX_SOURCES: usize = 8192;

/// Decides when the device is under load.
pub struct LoadMonitor {
    threshold: u32,
    window_start: Option<Instant>,
    count: u32,
    until: Option<Instant>,
}

impl LoadMonitor {
    /// `threshold`: handshake messages per second beyond which cookies are demanded.
    pub fn new(threshold: u32) -> Self {
        LoadMonitor {
            threshold,
            window_start: None,
            count: 0,
            until: None,
        }
    }

    /// Counts one handshake message; returns whether we are under load.
    pub fn record(&mut self, now: Instant) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1));
        if fresh {
            self.window_start = Some(now);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.threshold {
            self.force(now);
        }
        self.under_load(now)
    }

    /// The edge reports a backlog of handshake work: be under load for a second.
    pub fn force(&mut self, now: Instant) {
        self.until = Some(now + Duration::from_secs(1));
    }

    pub fn under_load(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4([u8; 4]),
    /// IPv6 sources are limited per /64: one host usually owns a whole /64.
    V6([u8; 8]),
}

struct Bucket {
    tokens_ns: u64,
    last: Instant,
}

/// Token buckets per source address.
#[derive(Default)]
pub struct RateLimiter {
    buckets: HashMap<SourceKey, Bucket>,
}

impl RateLimiter {
    /// Whether one more handshake from `ip` may be processed now.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = match ip {
            IpAddr::V4(a) => SourceKey::V4(a.octets()),
            IpAddr::V6(a) => {
                let mut k = [0u8; 8];
                k.copy_from_slice(&a.octets()[..8]);
                SourceKey::V6(k)
            }
        };
        if let Some(b) = self.buckets.get_mut(&key) {
            let elapsed = now
                .saturating_duration_since(b.last)
                .as_nanos()
                .min(u128::from(TOKEN_MAX_NS)) as u64;
            b.tokens_ns = (b.tokens_ns + elapsed).min(TOKEN_MAX_NS);
            b.last = now;
            if b.tokens_ns >= PACKET_COST_NS {
                b.tokens_ns -= PACKET_COST_NS;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_SOURCES {
            self.gc(now);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        self.buckets.insert(
            key,
            Bucket {
                tokens_ns: TOKEN_MAX_NS - PACKET_COST_NS,
                last: now,
            },
        );
        true
    }

    /// Forgets sources idle for a second: their buckets would be full anyway.
    pub fn gc(&mut self, now: Instant) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(1));
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// A global token bucket: at most `per_second` events a second, with a
/// burst of a tenth of a second's worth (at least one).
pub struct Budget {
    per_second: u32,
    tokens_ns: u64,
    last: Option<Instant>,
}

impl Budget {
    pub fn new(per_second: u32) -> Self {
        let mut b = Budget {
            per_second,
            tokens_ns: 0,
            last: None,
        };
        b.tokens_ns = b.max_ns();
        b
    }

    fn cost_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.per_second.max(1))
    }

    fn max_ns(&self) -> u64 {
        self.cost_ns() * (u64::from(self.per_second) / 10).max(1)
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let max = self.max_ns();
        if let Some(last) = self.last {
            let elapsed = now
                .saturating_duration_since(last)
                .as_nanos()
                .min(u128::from(max)) as u64;
            self.tokens_ns = (self.tokens_ns + elapsed).min(max);
        }
        self.last = Some(now);
        let cost = self.cost_ns();
        if self.tokens_ns >= cost {
            self.tokens_ns -= cost;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_caps_a_second_at_its_rate() {
        let mut b = Budget::new(100);
        let t0 = Instant::now();
        let burst = (0..1000).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 10, "a tenth of a second's worth at once");
        let mut total = 0;
        for ms in 1..=1000u64 {
            let t = t0 + Duration::from_millis(ms);
            total += (0..100).filter(|_| b.take(t)).count();
        }
        assert!((99..=101).contains(&total), "{total} in one second");
        assert!(!Budget::new(0).take(t0));
    }

    #[test]
    fn burst_then_steady_rate() {
        let mut rl = RateLimiter::default();
        let now = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let allowed = (0..20).filter(|_| rl.allow(now, ip)).count();
        assert_eq!(allowed as u64, PACKETS_BURSTABLE);
        let later = now + Duration::from_millis(50);
        assert!(rl.allow(later, ip));
        assert!(!rl.allow(later, ip));
        assert!(
            rl.allow(now, "198.51.100.8".parse().unwrap()),
            "other sources unaffected"
        );
        rl.gc(now + Duration::from_secs(2));
        assert_eq!(rl.tracked(), 0);
    }

    #[test]
    fn ipv6_limited_per_64() {
        let mut rl = RateLimiter::default();
        let now = Instant::now();
        let allowed = (0..20u16)
            .filter(|i| rl.allow(now, IpAddr::V6(format!("2001:db8::{i:x}").parse().unwrap())))
            .count();
        assert_eq!(allowed as u64, PACKETS_BURSTABLE);
    }

    #[test]
    fn load_monitor_hysteresis() {
        let mut lm = LoadMonitor::new(3);
        let now = Instant::now();
        assert!(!lm.record(now));
        assert!(!lm.record(now));
        assert!(!lm.record(now));
        assert!(lm.record(now));
        assert!(lm.under_load(now + Duration::from_millis(999)));
        assert!(!lm.under_load(now + Duration::from_secs(1)));
        let mut always = LoadMonitor::new(0);
        assert!(always.record(now));
    }
}
