//! Anti-replay window for transport counters (RFC 6479 style).
//!
//! A ring of 64-bit words remembers which of the last `WINDOW` counters were
//! seen. Checking is separate from committing: the caller checks before
//! spending time on decryption and commits only once the tag verified, so a
//! forged packet can neither consume a counter nor slide the window.

/// Total bits in the ring; a power of two.
const BITS: u64 = 8192;
const WORD_BITS: u64 = 64;
const WORDS: usize = (BITS / WORD_BITS) as usize;
/// How far behind the highest counter a packet may arrive and still count.
pub const WINDOW: u64 = BITS - WORD_BITS;

/// Counters at or past this are never accepted (WireGuard's REJECT_AFTER_MESSAGES).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the highest counter committed; 0 when none was.
    next: u64,
    ring: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            ring: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Whether `counter` is new and inside the window. Does not record it.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if counter + WINDOW < self.next {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.ring[word] & bit == 0
    }

    /// Records `counter`, sliding the window forward if needed. Returns false
    /// if it was already recorded or is too old (a race the caller lost).
    pub fn commit(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // Clear the words the window slides over, at most the whole ring.
            let first_new = if self.next == 0 {
                0
            } else {
                (self.next - 1) / WORD_BITS + 1
            };
            let last_new = counter / WORD_BITS;
            if self.next == 0 || last_new >= first_new {
                let span = (last_new + 1).saturating_sub(first_new).min(WORDS as u64);
                for i in 0..span {
                    let w = ((last_new - i) % WORDS as u64) as usize;
                    self.ring[w] = 0;
                }
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::slot(counter);
        self.ring[word] |= bit;
        true
    }

    fn slot(counter: u64) -> (usize, u64) {
        (
            ((counter / WORD_BITS) % WORDS as u64) as usize,
            1u64 << (counter % WORD_BITS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::default();
        for c in 0..10_000 {
            assert!(w.commit(c));
            assert!(!w.commit(c));
        }
    }

    #[test]
    fn reordering_inside_the_window_is_accepted() {
        let mut w = ReplayWindow::default();
        let top = 20_000;
        assert!(w.commit(top));
        assert!(w.commit(top - 1000));
        assert!(w.commit(top - WINDOW + 1));
        assert!(!w.check(top - WINDOW));
        assert!(!w.commit(top - 1000));
        assert!(w.commit(1_000_000));
        assert!(!w.check(top));
        assert!(w.check(1_000_000 - 100));
    }

    #[test]
    fn rejects_the_last_counters() {
        let mut w = ReplayWindow::default();
        assert!(!w.commit(REJECT_AFTER_MESSAGES));
        assert!(w.commit(REJECT_AFTER_MESSAGES - 1));
    }

    #[test]
    fn check_does_not_record() {
        let w = ReplayWindow::default();
        assert!(w.check(7));
        assert!(w.check(7));
    }

    proptest! {
        /// The window agrees with an exact model: accept iff never seen and
        /// no more than WINDOW behind the highest seen.
        #[test]
        fn matches_a_set_model(ops in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            for c in ops {
                let highest = seen.iter().next_back().copied();
                let expect = !seen.contains(&c) && highest.is_none_or(|h| c + WINDOW > h);
                prop_assert_eq!(w.commit(c), expect, "counter {}", c);
                if expect { seen.insert(c); }
            }
        }
    }
}
