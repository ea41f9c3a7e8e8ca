//! A peer's three keypair slots and their rotation, as in the kernel's
//! `noise.c` (`wg_noise_handshake_begin_session`,
//! `wg_noise_received_with_keypair`):
//!
//! - `current` sends and receives;
//! - `previous` still receives, for packets already in flight when the
//!   keys changed;
//! - `next` is a responder's new keypair, which only receives until the
//!   initiator proves it derived the same keys by sending data under it.
//!
//! The initiator's new keys are confirmed by the response it just opened,
//! so they become `current` at once. The responder's wait in `next`, and
//! the first data packet that opens under them makes them `current`
//! (the confirmation rule). Each rotation lets older keypairs go; their
//! local indices come back as [`Retired`] so the device can forget them.

use std::time::Instant;

use super::session::{Keypair, OpenError, REJECT_AFTER_TIME};
use super::timers::{KEEPALIVE_TIMEOUT, REKEY_TIMEOUT};

/// Local indices of keypairs a rotation let go; the device must remove
/// them from its index table.
#[must_use = "retired indices must leave the device's index table"]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retired([Option<u32>; 2]);

impl Retired {
    fn of(a: Option<Keypair>, b: Option<Keypair>) -> Self {
        Retired([a.map(|k| k.local_index), b.map(|k| k.local_index)])
    }
}

impl IntoIterator for Retired {
    type Item = u32;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<u32>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

/// A data message that opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Padded plaintext length, at the start of the sealed buffer.
    pub padded: usize,
    /// The message confirmed the responder's `next` keypair, which is now
    /// `current`.
    pub confirmed: bool,
    pub retired: Retired,
}

/// Why a data message did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// No keypair of this peer has the receiver index.
    UnknownIndex,
    Open(OpenError),
}

#[derive(Default)]
pub(crate) struct Keypairs {
    current: Option<Keypair>,
    previous: Option<Keypair>,
    next: Option<Keypair>,
}

impl Keypairs {
    /// The keypair data is sent with (whether it may still send or not).
    #[cfg(test)]
    pub fn current(&self) -> Option<&Keypair> {
        self.current.as_ref()
    }

    pub fn current_mut(&mut self) -> Option<&mut Keypair> {
        self.current.as_mut()
    }

    /// The current keypair, if it may still encrypt at `now`.
    pub fn sendable(&mut self, now: Instant) -> Option<&mut Keypair> {
        self.current.as_mut().filter(|k| k.can_send(now))
    }

    /// Whether data can be sent right now.
    pub fn has_session(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| k.can_send(now))
    }

    /// As initiator: the response proved the peer holds these keys, so they
    /// send at once. A responder keypair still waiting in `next` is kept as
    /// `previous` (the peer may already be sending under it) and the old
    /// `current` goes; otherwise the old `current` becomes `previous`.
    pub fn confirmed(&mut self, keypair: Keypair) -> Retired {
        match self.next.take() {
            Some(next) => Retired::of(self.previous.replace(next), self.current.replace(keypair)),
            None => {
                let old = self.current.replace(keypair);
                Retired::of(std::mem::replace(&mut self.previous, old), None)
            }
        }
    }

    /// As responder: the keys wait in `next` until data arrives under them;
    /// `current` keeps sending meanwhile. A `next` that was never confirmed
    /// and the `previous` keypair go.
    pub fn unconfirmed(&mut self, keypair: Keypair) -> Retired {
        Retired::of(self.next.replace(keypair), self.previous.take())
    }

    /// Opens a data message sent to our index `receiver`, in place. If it
    /// opens under `next`, that keypair is confirmed: it becomes `current`,
    /// the old `current` becomes `previous` and the old `previous` goes.
    /// Nothing rotates when the message fails to open.
    pub fn open(
        &mut self,
        receiver: u32,
        counter: u64,
        sealed: &mut [u8],
        now: Instant,
    ) -> Result<Opened, Rejected> {
        let is_next = self
            .next
            .as_ref()
            .is_some_and(|k| k.local_index == receiver);
        let keypair = [
            self.current.as_mut(),
            self.previous.as_mut(),
            self.next.as_mut(),
        ]
        .into_iter()
        .flatten()
        .find(|k| k.local_index == receiver)
        .ok_or(Rejected::UnknownIndex)?;
        let padded = keypair.open(counter, sealed, now).map_err(Rejected::Open)?;
        let mut retired = Retired::default();
        if is_next {
            let next = self.next.take();
            let old_previous = std::mem::replace(&mut self.previous, self.current.take());
            self.current = next;
            retired = Retired::of(old_previous, None);
        }
        Ok(Opened {
            padded,
            confirmed: is_next,
            retired,
        })
    }

    /// Keys we initiated are close to REJECT_AFTER_TIME: a handshake must
    /// start now, or the session lapses (the kernel's "last minute" rekey
    /// on receive).
    pub fn nearly_rejected(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| {
            k.we_initiated && k.age(now) >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        })
    }

    /// Every local index held.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        [
            self.current.as_ref(),
            self.previous.as_ref(),
            self.next.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|k| k.local_index)
    }

    /// Forgets every keypair.
    pub fn clear(&mut self) {
        *self = Keypairs::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use zeroize::Zeroizing;

    use super::*;
    use crate::wire::wg::DATA_HEADER_LEN;

    const NONE: [u32; 0] = [];

    /// Our keypair with local index `index` from one handshake, and the
    /// peer's mirror of it (keys swapped; its index is ours + 1000). Every
    /// handshake gets its own keys, so a message only opens under the
    /// keypair it was sealed for.
    fn handshake(index: u32, now: Instant, we_initiated: bool) -> (Keypair, Keypair) {
        let a = Zeroizing::new([index as u8; 32]);
        let b = Zeroizing::new([index as u8 ^ 0xff; 32]);
        let theirs = index + 1000;
        (
            Keypair::new(&a, &b, index, theirs, now, we_initiated).unwrap(),
            Keypair::new(&b, &a, theirs, index, now, !we_initiated).unwrap(),
        )
    }

    /// A keepalive the peer sealed: (receiver, counter, sealed part).
    fn from_peer(theirs: &mut Keypair, now: Instant) -> (u32, u64, Vec<u8>) {
        let mut buf = [0u8; 64];
        let n = theirs.seal(&mut buf, 0, now).expect("peer can send");
        let receiver = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        let counter = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        (receiver, counter, buf[DATA_HEADER_LEN..n].to_vec())
    }

    fn deliver(k: &mut Keypairs, theirs: &mut Keypair, now: Instant) -> Result<Opened, Rejected> {
        let (receiver, counter, mut sealed) = from_peer(theirs, now);
        k.open(receiver, counter, &mut sealed, now)
    }

    /// The index `current` sends to (the peer's index), if any.
    fn sends_to(k: &Keypairs) -> Option<u32> {
        k.current().map(|c| c.remote_index)
    }

    fn held(k: &Keypairs) -> BTreeSet<u32> {
        k.indices().collect()
    }

    /// Runs a rotation and checks that exactly the indices that stopped
    /// being held were reported as retired.
    fn rotate(k: &mut Keypairs, new: u32, f: impl FnOnce(&mut Keypairs) -> Retired) -> Vec<u32> {
        let mut before = held(k);
        before.insert(new);
        let retired: Vec<u32> = f(k).into_iter().collect();
        let after = held(k);
        assert!(after.contains(&new), "the new keypair is held");
        let gone: BTreeSet<u32> = before.difference(&after).copied().collect();
        assert_eq!(gone, retired.iter().copied().collect(), "retired = let go");
        retired
    }

    #[test]
    fn initiator_keys_send_at_once_and_the_old_ones_still_receive() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        let (a, mut pa) = handshake(1, now, true);
        assert_eq!(rotate(&mut k, 1, |k| k.confirmed(a)), NONE);
        assert_eq!(sends_to(&k), Some(1001));
        let (b, mut pb) = handshake(2, now, true);
        assert_eq!(rotate(&mut k, 2, |k| k.confirmed(b)), NONE);
        assert_eq!(sends_to(&k), Some(1002));
        // Packets in flight under the old keys still open, and change nothing.
        let opened = deliver(&mut k, &mut pa, now).unwrap();
        assert!(!opened.confirmed);
        assert_eq!(opened.retired.into_iter().count(), 0);
        assert_eq!(sends_to(&k), Some(1002));
        let (c, _) = handshake(3, now, true);
        assert_eq!(rotate(&mut k, 3, |k| k.confirmed(c)), [1]);
        assert_eq!(sends_to(&k), Some(1003));
        assert_eq!(held(&k), BTreeSet::from([2, 3]));
        assert_eq!(deliver(&mut k, &mut pa, now), Err(Rejected::UnknownIndex));
        assert!(deliver(&mut k, &mut pb, now).is_ok());
    }

    #[test]
    fn responder_keys_wait_for_the_first_data_under_them() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        let (a, mut pa) = handshake(1, now, false);
        assert_eq!(rotate(&mut k, 1, |k| k.unconfirmed(a)), NONE);
        assert_eq!(sends_to(&k), None, "unconfirmed keys do not send");
        assert!(!k.has_session(now));
        let opened = deliver(&mut k, &mut pa, now).unwrap();
        assert!(opened.confirmed);
        assert_eq!(sends_to(&k), Some(1001));
        assert!(k.has_session(now));

        // A rekey: `current` keeps sending until the initiator uses the new keys.
        let (b, mut pb) = handshake(2, now, false);
        assert_eq!(rotate(&mut k, 2, |k| k.unconfirmed(b)), NONE);
        assert_eq!(sends_to(&k), Some(1001));
        let opened = deliver(&mut k, &mut pa, now).unwrap();
        assert!(!opened.confirmed, "data under current confirms nothing");
        assert_eq!(sends_to(&k), Some(1001));
        let opened = deliver(&mut k, &mut pb, now).unwrap();
        assert!(opened.confirmed);
        assert_eq!(opened.retired.into_iter().count(), 0);
        assert_eq!(sends_to(&k), Some(1002));
        // The old current is now previous: still receives.
        assert!(!deliver(&mut k, &mut pa, now).unwrap().confirmed);
        assert_eq!(sends_to(&k), Some(1002));
        // Confirmed once only: more data under it is ordinary.
        assert!(!deliver(&mut k, &mut pb, now).unwrap().confirmed);

        // The next confirmation lets the oldest keypair go.
        let (c, mut pc) = handshake(3, now, false);
        assert_eq!(rotate(&mut k, 3, |k| k.unconfirmed(c)), [1]);
        let opened = deliver(&mut k, &mut pc, now).unwrap();
        assert!(opened.confirmed);
        assert_eq!(opened.retired.into_iter().collect::<Vec<_>>(), NONE);
        assert_eq!(held(&k), BTreeSet::from([2, 3]));
        // A new responder keypair drops `previous` at once (as the kernel
        // does): only current and the new next are held until it confirms.
        let (d, mut pd) = handshake(4, now, false);
        assert_eq!(rotate(&mut k, 4, |k| k.unconfirmed(d)), [2]);
        let opened = deliver(&mut k, &mut pd, now).unwrap();
        assert!(opened.confirmed);
        assert_eq!(opened.retired.into_iter().collect::<Vec<_>>(), NONE);
        assert_eq!(held(&k), BTreeSet::from([3, 4]));
        assert!(!deliver(&mut k, &mut pc, now).unwrap().confirmed);
        assert_eq!(sends_to(&k), Some(1004));
    }

    #[test]
    fn a_message_that_fails_to_open_confirms_nothing() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        let (a, _) = handshake(1, now, true);
        let _ = k.confirmed(a);
        let (b, mut pb) = handshake(2, now, false);
        let _ = k.unconfirmed(b);
        // Tampered under next.
        let (receiver, counter, mut sealed) = from_peer(&mut pb, now);
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert_eq!(
            k.open(receiver, counter, &mut bad, now),
            Err(Rejected::Open(OpenError::Tampered))
        );
        assert_eq!(sends_to(&k), Some(1001));
        // Sealed under other keys, sent to next's index.
        let (_, mut stranger) = handshake(9, now, false);
        let (_, c, mut forged) = from_peer(&mut stranger, now);
        assert_eq!(
            k.open(2, c, &mut forged, now),
            Err(Rejected::Open(OpenError::Tampered))
        );
        assert_eq!(sends_to(&k), Some(1001));
        // The genuine message still confirms, once; its replay is refused.
        let mut copy = sealed.clone();
        assert!(
            k.open(receiver, counter, &mut sealed, now)
                .unwrap()
                .confirmed
        );
        assert_eq!(sends_to(&k), Some(1002));
        assert_eq!(
            k.open(receiver, counter, &mut copy, now),
            Err(Rejected::Open(OpenError::Replayed))
        );
    }

    #[test]
    fn expired_keys_neither_send_nor_receive_nor_confirm() {
        let now = Instant::now();
        let later = now + REJECT_AFTER_TIME;
        let mut k = Keypairs::default();
        let (a, mut pa) = handshake(1, now, true);
        let _ = k.confirmed(a);
        let (b, mut pb) = handshake(2, now, false);
        let _ = k.unconfirmed(b);
        let (ra, ca, mut sa) = from_peer(&mut pa, now);
        let (rb, cb, mut sb) = from_peer(&mut pb, now);
        assert!(k.has_session(now));
        assert!(k.sendable(now).is_some());
        assert!(!k.has_session(later));
        assert!(k.sendable(later).is_none());
        assert!(k.current().is_some(), "kept until the zero-keys timer");
        assert_eq!(
            k.open(ra, ca, &mut sa, later),
            Err(Rejected::Open(OpenError::Expired))
        );
        assert_eq!(
            k.open(rb, cb, &mut sb, later),
            Err(Rejected::Open(OpenError::Expired))
        );
        assert_eq!(sends_to(&k), Some(1001), "expired next not promoted");
        assert_eq!(
            k.open(77, 0, &mut [0u8; 16], now),
            Err(Rejected::UnknownIndex)
        );
    }

    #[test]
    fn an_unconfirmed_next_is_replaced_by_a_newer_handshake() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        let (a, mut pa) = handshake(1, now, false);
        let _ = k.unconfirmed(a);
        let (b, mut pb) = handshake(2, now, false);
        assert_eq!(rotate(&mut k, 2, |k| k.unconfirmed(b)), [1]);
        assert_eq!(deliver(&mut k, &mut pa, now), Err(Rejected::UnknownIndex));
        assert!(deliver(&mut k, &mut pb, now).unwrap().confirmed);
    }

    #[test]
    fn initiating_while_a_responder_keypair_waits_keeps_it_as_previous() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        let (a, mut pa) = handshake(1, now, true);
        let _ = k.confirmed(a);
        let (b, mut pb) = handshake(2, now, false);
        let _ = k.unconfirmed(b);
        // Both sides initiated at once; our handshake completes first.
        let (c, _) = handshake(3, now, true);
        assert_eq!(rotate(&mut k, 3, |k| k.confirmed(c)), [1]);
        assert_eq!(sends_to(&k), Some(1003));
        assert_eq!(deliver(&mut k, &mut pa, now), Err(Rejected::UnknownIndex));
        // The peer may send under the keys we answered with: they open but,
        // no longer `next`, do not take over from ours.
        let opened = deliver(&mut k, &mut pb, now).unwrap();
        assert!(!opened.confirmed);
        assert_eq!(sends_to(&k), Some(1003));
    }

    #[test]
    fn rekey_is_asked_for_shortly_before_our_keys_are_rejected() {
        let now = Instant::now();
        let threshold = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT;
        let mut k = Keypairs::default();
        assert!(!k.nearly_rejected(now));
        let (a, _) = handshake(1, now, true);
        let _ = k.confirmed(a);
        assert!(!k.nearly_rejected(now + threshold - Duration::from_millis(1)));
        assert!(k.nearly_rejected(now + threshold));
        let mut r = Keypairs::default();
        let (b, mut pb) = handshake(2, now, false);
        let _ = r.unconfirmed(b);
        deliver(&mut r, &mut pb, now).unwrap();
        assert!(
            !r.nearly_rejected(now + threshold),
            "only the initiator's keys trigger it"
        );
    }

    #[test]
    fn clear_forgets_everything() {
        let now = Instant::now();
        let mut k = Keypairs::default();
        let (a, _) = handshake(1, now, true);
        let _ = k.confirmed(a);
        let (b, _) = handshake(2, now, true);
        let _ = k.confirmed(b);
        let (c, _) = handshake(3, now, false);
        let _ = k.unconfirmed(c);
        assert_eq!(held(&k), BTreeSet::from([2, 3]));
        k.clear();
        assert_eq!(held(&k), BTreeSet::new());
        assert!(k.current().is_none());
    }
}
