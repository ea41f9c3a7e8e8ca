//! One set of transport keys from one handshake: what WireGuard calls a keypair.
//!
//! Data messages are sealed and opened in place with ChaCha20-Poly1305 from
//! `ring` (chosen by benchmark; see BENCHMARKS.md). The nonce is the 64-bit
//! counter, little-endian, after four zero bytes.

use std::time::{Duration, Instant};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroizing;

use super::replay::{ReplayWindow, REJECT_AFTER_MESSAGES};
use crate::wire::wg::{write_data_header, DATA_HEADER_LEN, TAG_LEN};

/// Inner packets are padded to a multiple of this, hiding their exact length.
pub const PADDING: usize = 16;
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// Bytes a buffer needs beyond the inner packet: header, worst-case padding, tag.
pub const fn sealed_len(packet_len: usize) -> usize {
    DATA_HEADER_LEN + packet_len.next_multiple_of(PADDING) + TAG_LEN
}

/// Why a data message could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    Replayed,
    Expired,
    Tampered,
}

pub struct Keypair {
    send: LessSafeKey,
    recv: LessSafeKey,
    send_counter: u64,
    replay: ReplayWindow,
    /// Our index: peers put it in the receiver field of what they send us.
    pub local_index: u32,
    /// The peer's index: we put it in the receiver field.
    pub remote_index: u32,
    pub created: Instant,
    pub we_initiated: bool,
}

impl Keypair {
    pub fn new(
        send: &Zeroizing<[u8; 32]>,
        recv: &Zeroizing<[u8; 32]>,
        local_index: u32,
        remote_index: u32,
        created: Instant,
        we_initiated: bool,
    ) -> Option<Self> {
        // ring keeps its own copy of the key schedule and does not expose a
        // way to wipe it; the copies umbra holds are zeroized by the caller.
        let send = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &send[..]).ok()?);
        let recv = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &recv[..]).ok()?);
        Some(Keypair {
            send,
            recv,
            send_counter: 0,
            replay: ReplayWindow::default(),
            local_index,
            remote_index,
            created,
            we_initiated,
        })
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// Whether this keypair may still encrypt.
    pub fn can_send(&self, now: Instant) -> bool {
        self.age(now) < REJECT_AFTER_TIME && self.send_counter < REJECT_AFTER_MESSAGES
    }

    /// Whether this keypair may still decrypt.
    pub fn can_receive(&self, now: Instant) -> bool {
        self.age(now) < REJECT_AFTER_TIME
    }

    /// Whether the next send should also start a new handshake.
    pub fn wants_rekey_on_send(&self, now: Instant) -> bool {
        self.send_counter >= REKEY_AFTER_MESSAGES
            || (self.we_initiated && self.age(now) >= REKEY_AFTER_TIME)
    }

    pub fn messages_sent(&self) -> u64 {
        self.send_counter
    }

    /// Seals the inner packet at `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]`
    /// in place, padding it and writing header and tag around it. Returns the
    /// message length, or `None` if `buf` is too small or the keys are spent.
    pub fn seal(&mut self, buf: &mut [u8], len: usize, now: Instant) -> Option<usize> {
        if !self.can_send(now) {
            return None;
        }
        let padded = len.next_multiple_of(PADDING);
        let total = DATA_HEADER_LEN + padded + TAG_LEN;
        let msg = buf.get_mut(..total)?;
        let (header, rest) = msg.split_first_chunk_mut::<DATA_HEADER_LEN>()?;
        let (body, tag_out) = rest.split_at_mut(padded);
        body.get_mut(len..)?.fill(0);
        let counter = self.send_counter;
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), body)
            .ok()?;
        tag_out.copy_from_slice(tag.as_ref());
        write_data_header(header, self.remote_index, counter);
        self.send_counter += 1;
        Some(total)
    }

    /// Opens a data message's sealed part in place: checks the counter against
    /// the replay window, verifies and decrypts, then records the counter.
    /// Returns the padded plaintext length (at the start of `sealed`).
    pub fn open(
        &mut self,
        counter: u64,
        sealed: &mut [u8],
        now: Instant,
    ) -> Result<usize, OpenError> {
        if !self.can_receive(now) {
            return Err(OpenError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(OpenError::Replayed);
        }
        let plain = self
            .recv
            .open_in_place(nonce(counter), Aad::empty(), sealed)
            .map_err(|_| OpenError::Tampered)?
            .len();
        if !self.replay.commit(counter) {
            return Err(OpenError::Replayed);
        }
        Ok(plain)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(now: Instant) -> (Keypair, Keypair) {
        let a = Zeroizing::new([1u8; 32]);
        let b = Zeroizing::new([2u8; 32]);
        (
            Keypair::new(&a, &b, 10, 20, now, true).unwrap(),
            Keypair::new(&b, &a, 20, 10, now, false).unwrap(),
        )
    }

    #[test]
    fn seal_open_with_padding_and_replay() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = [0u8; 128];
        buf[16..21].copy_from_slice(b"hello");
        let n = a.seal(&mut buf, 5, now).unwrap();
        assert_eq!(n, 16 + 16 + 16);
        assert_eq!(&buf[..8], &[4, 0, 0, 0, 20, 0, 0, 0]);
        let copy = buf;
        let plain = b.open(0, &mut buf[16..n], now).unwrap();
        assert_eq!(plain, 16);
        assert_eq!(&buf[16..21], b"hello");
        assert!(buf[21..32].iter().all(|&x| x == 0));
        let mut again = copy;
        assert_eq!(b.open(0, &mut again[16..n], now), Err(OpenError::Replayed));
    }

    #[test]
    fn tampering_does_not_consume_the_counter() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = [0u8; 64];
        let n = a.seal(&mut buf, 0, now).unwrap();
        let mut bad = buf;
        bad[n - 1] ^= 1;
        assert_eq!(b.open(0, &mut bad[16..n], now), Err(OpenError::Tampered));
        assert_eq!(b.open(0, &mut buf[16..n], now), Ok(0));
    }

    #[test]
    fn keys_expire() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let later = now + REJECT_AFTER_TIME;
        let mut buf = [0u8; 64];
        assert!(a.seal(&mut buf, 0, later).is_none());
        let n = a.seal(&mut buf, 0, now).unwrap();
        assert_eq!(b.open(0, &mut buf[16..n], later), Err(OpenError::Expired));
        assert!(!a.wants_rekey_on_send(now));
        assert!(a.wants_rekey_on_send(now + REKEY_AFTER_TIME));
        assert!(
            !b.wants_rekey_on_send(now + REKEY_AFTER_TIME),
            "only the initiator rekeys on time"
        );
    }

    #[test]
    fn small_buffer_is_refused() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        let mut buf = [0u8; 40];
        assert!(a.seal(&mut buf, 10, now).is_none());
    }
}
