//! The `transport` target: an established session between I and R, with
//! I's data checked against a model of R's replay window and key lifetime.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use super::{fixture, i_addr, responder, timestamp, MAX_OPS};
use crate::fuzzing::{epoch, Input};
use crate::keys::PresharedKey;
use crate::tunnel::cookie::CookieJar;
use crate::tunnel::handshake::InitiatorHandshake;
use crate::tunnel::replay::{REJECT_AFTER_MESSAGES, WINDOW};
use crate::tunnel::session::{PADDING, REJECT_AFTER_TIME};
use crate::tunnel::{Device, Dropped, PeerId, Received, Sent};
use crate::wire::wg::{self, Message, DATA_HEADER_LEN, INITIATION_LEN, TAG_LEN};

/// One handshake's keys, from I's side, and a model of what R has seen.
struct Session {
    send: LessSafeKey,
    recv: LessSafeKey,
    /// I's index (R writes it in the data it sends).
    local: u32,
    /// R's index (I writes it in the data it sends).
    remote: u32,
    created: Instant,
    /// Counters R accepted from I, and one more than the highest.
    accepted: BTreeSet<u64>,
    next: u64,
    /// The counter R's next data message on this session must carry.
    r_counter: u64,
}

impl Session {
    /// Would R's replay window accept `counter`?
    fn fresh(&self, counter: u64) -> bool {
        counter < REJECT_AFTER_MESSAGES
            && (counter >= self.next
                || (counter + WINDOW >= self.next && !self.accepted.contains(&counter)))
    }
    fn accept(&mut self, counter: u64) {
        self.accepted.insert(counter);
        self.next = self.next.max(counter + 1);
    }
}

fn aead_key(k: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).expect("32-byte key"))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The length R must trim a decrypted packet to: the inner IP header's own
/// length, if it is sane and fits.
fn inner_len(plain: &[u8]) -> Option<usize> {
    let len = match plain.first()? >> 4 {
        4 => usize::from(u16::from_be_bytes([*plain.get(2)?, *plain.get(3)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*plain.get(4)?, *plain.get(5)?])),
        _ => return None,
    };
    (20..=plain.len()).contains(&len).then_some(len)
}

/// `transport`: an established session between I (harness) and R.
///
/// The harness completes a handshake with R first (it must succeed), then
/// runs operations selected by a byte modulo 6:
/// - 0 `[sel u8][delta u16][len u16][payload]`: I seals `payload` (an inner
///   packet) and sends it. `sel` bits 0-1 pick a session (newest first),
///   bits 4-6 how the counter is chosen relative to the highest accepted
///   (next, behind, far ahead, at the message limit...), bit 3 skips the
///   padding, bit 7 corrupts the tag.
/// - 1 `[len u16][bytes]`: deliver raw bytes.
/// - 2 `[secs u8][ms u16]`: advance the clock by secs×4 s + ms, run R's timers.
/// - 3: a new handshake (rekey), at most 4 in all.
/// - 4 `[len u16][payload]`: R sends `payload` to I.
/// - 5 `[idx u8]`: deliver again one of the last data messages I sent.
///
/// R's verdicts are checked against a model: it accepts a counter only if it
/// is new and inside the window, never a corrupted message or expired keys;
/// on the newest session it must accept every fresh message, and trim the
/// plaintext to the inner IP length. What R sends must decrypt under I's
/// keys with consecutive counters.
pub fn transport(data: &[u8]) {
    let mut input = Input(data);
    let mut now = epoch();
    let (mut dev, peer) = responder(false, now);
    let mut h = TransportHarness {
        jar: CookieJar::new(&fixture().responder_public),
        sessions: Vec::new(),
        sent: VecDeque::new(),
        peer,
    };
    h.handshake(&mut dev, now);
    let mut out = vec![0u8; 4096];
    for _ in 0..MAX_OPS {
        let Some(op) = input.u8() else { break };
        match op % 6 {
            0 => {
                let (Some(sel), Some(delta), Some(payload)) =
                    (input.u8(), input.u16(), input.chunk())
                else {
                    break;
                };
                h.send(&mut dev, now, sel, delta, payload);
            }
            1 => {
                let Some(bytes) = input.chunk() else { break };
                h.raw(&mut dev, now, bytes);
            }
            2 => {
                let (Some(secs), Some(ms)) = (input.u8(), input.u16()) else {
                    break;
                };
                now += Duration::from_secs(u64::from(secs) * 4) + Duration::from_millis(ms.into());
                dev.tick(now);
            }
            3 => {
                if h.sessions.len() < 5 {
                    // Initiations closer than 20 ms apart are refused as a flood.
                    now += Duration::from_secs(1);
                    h.handshake(&mut dev, now);
                }
            }
            4 => {
                let Some(payload) = input.chunk() else { break };
                let mut buf = vec![0u8; crate::tunnel::session::sealed_len(payload.len())];
                buf[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
                match dev.encapsulate(now, peer, &mut buf, payload.len()) {
                    Ok(Sent::Now(t)) => {
                        let plain = h.receive(&mut buf[..t.len]);
                        assert_eq!(&plain[..payload.len()], payload, "R sent other bytes");
                    }
                    Ok(Sent::Queued) => {}
                    Err(e) => panic!("R cannot send to a configured peer: {e:?}"),
                }
            }
            _ => {
                let Some(idx) = input.u8() else { break };
                if let Some(d) = h.sent.get(usize::from(idx) % h.sent.len().max(1)) {
                    let mut d = d.clone();
                    let mut reply = [0u8; 256];
                    let r = dev.handle_datagram(now, i_addr(), &mut d, &mut reply);
                    assert!(
                        matches!(r, Err(e) if e != Dropped::BadInner),
                        "R accepted a replayed message: {r:?}"
                    );
                }
            }
        }
        while let Some(t) = dev.poll_transmit(now, &mut out) {
            let msg = &mut out[..t.len];
            match wg::parse(msg) {
                Ok(Message::Data(_)) => {
                    h.receive(msg);
                }
                // R retries a handshake when it sent data and heard nothing.
                Ok(Message::Initiation(_)) => {}
                other => panic!("R sent {other:?} unprompted"),
            }
        }
    }
}

struct TransportHarness {
    jar: CookieJar,
    /// Oldest first.
    sessions: Vec<Session>,
    /// The last data messages I sent, for replays.
    sent: VecDeque<Vec<u8>>,
    peer: PeerId,
}

impl TransportHarness {
    /// I initiates; R must answer, and its response must complete I's side.
    fn handshake(&mut self, dev: &mut Device, now: Instant) {
        let local = 0x4949_0000 + self.sessions.len() as u32;
        let mut noise = [0u8; wg::INITIATION_NOISE_LEN];
        let state = InitiatorHandshake::start(
            fixture().identity(),
            &fixture().responder_public,
            &PresharedKey::none(),
            [local as u8; 32],
            timestamp(now),
            &mut noise,
        )
        .expect("I can initiate");
        let mut msg = [0u8; INITIATION_LEN];
        wg::write_initiation(&mut msg, local, &noise);
        self.jar.stamp(now, &mut msg);
        let mut reply = [0u8; 256];
        let r = dev.handle_datagram(now, i_addr(), &mut msg, &mut reply);
        let Ok(Received::Reply(r)) = r else {
            panic!("R did not answer a genuine initiation: {r:?}");
        };
        let Ok(Message::Response(m)) = wg::parse(r) else {
            panic!("R answered an initiation with {r:?}");
        };
        assert_eq!(m.receiver(), local);
        let keys = state
            .finish(m.noise())
            .expect("R's response completes I's handshake");
        self.sessions.push(Session {
            send: aead_key(&keys.send),
            recv: aead_key(&keys.recv),
            local,
            remote: m.sender(),
            created: now,
            accepted: BTreeSet::new(),
            next: 0,
            r_counter: 0,
        });
    }

    fn send(&mut self, dev: &mut Device, now: Instant, sel: u8, delta: u16, payload: &[u8]) {
        let which = self.sessions.len() - 1 - (usize::from(sel & 3) % self.sessions.len());
        let newest = which + 1 == self.sessions.len();
        let s = &self.sessions[which];
        let delta = u64::from(delta);
        let counter = match (sel >> 4) & 7 {
            0 | 1 => s.next,
            2 => s.next.saturating_sub(delta),
            3 => s.next.saturating_add(delta),
            4 => s.next.saturating_add(delta * 64),
            5 => s.next.saturating_sub(WINDOW).saturating_add(delta % 128),
            6 => REJECT_AFTER_MESSAGES - 64 + delta % 128,
            _ => delta,
        };
        let tampered = sel & 0x80 != 0;
        let plain_len = if sel & 8 != 0 {
            payload.len()
        } else {
            payload.len().next_multiple_of(PADDING)
        };
        let mut d = vec![0u8; DATA_HEADER_LEN + plain_len + TAG_LEN];
        let (header, rest) = d
            .split_first_chunk_mut::<DATA_HEADER_LEN>()
            .expect("room for the header");
        wg::write_data_header(header, s.remote, counter);
        let (body, tag_out) = rest.split_at_mut(plain_len);
        body[..payload.len()].copy_from_slice(payload);
        let expected = inner_len(body);
        let padded = body.to_vec();
        let tag = s
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), body)
            .expect("sealing");
        tag_out.copy_from_slice(tag.as_ref());
        if tampered {
            tag_out[0] ^= 1;
        }
        self.sent.push_back(d.clone());
        if self.sent.len() > 16 {
            self.sent.pop_front();
        }

        let fresh = s.fresh(counter);
        let live = now.saturating_duration_since(s.created) < REJECT_AFTER_TIME;
        let mut reply = [0u8; 256];
        let r = dev.handle_datagram(now, i_addr(), &mut d, &mut reply);
        let ctx = || format!("counter {counter}, session {which}, result {r:?}");
        let opened = match &r {
            Ok(Received::Packet { peer, packet }) => {
                assert_eq!(*peer, self.peer);
                let len =
                    expected.unwrap_or_else(|| panic!("untrimmable packet accepted: {}", ctx()));
                assert_eq!(*packet, &padded[..len], "wrong trim: {}", ctx());
                true
            }
            Ok(Received::Done) => {
                assert_eq!(plain_len, 0, "a packet vanished: {}", ctx());
                true
            }
            Ok(Received::Reply(_)) => panic!("R replied to data: {}", ctx()),
            Err(Dropped::BadInner) => {
                assert!(expected.is_none() && plain_len > 0, "{}", ctx());
                true
            }
            Err(Dropped::Replay) => {
                assert!(!fresh, "fresh counter refused as replay: {}", ctx());
                false
            }
            Err(Dropped::Expired) => {
                assert!(!live, "live keys refused as expired: {}", ctx());
                false
            }
            Err(Dropped::Crypto) => {
                assert!(tampered, "genuine message failed to open: {}", ctx());
                false
            }
            Err(Dropped::UnknownIndex) => {
                assert!(!(newest && live), "newest session forgotten: {}", ctx());
                false
            }
            Err(e) => panic!("unexpected drop {e:?}: {}", ctx()),
        };
        if opened {
            assert!(!tampered, "corrupted message accepted: {}", ctx());
            assert!(fresh, "replayed counter accepted: {}", ctx());
            assert!(live, "expired keys accepted: {}", ctx());
            self.sessions[which].accept(counter);
        } else if newest && live && fresh && !tampered {
            panic!("newest session refused a good message: {}", ctx());
        }
    }

    /// Raw bytes can only be accepted if they happen to be a genuine
    /// message (keys are fixed, so a corpus could hold one): keep the
    /// model in step if so.
    fn raw(&mut self, dev: &mut Device, now: Instant, bytes: &[u8]) {
        let mut d = bytes.to_vec();
        let mut reply = [0u8; 256];
        let opened = matches!(
            dev.handle_datagram(now, i_addr(), &mut d, &mut reply),
            Ok(Received::Packet { .. } | Received::Done) | Err(Dropped::BadInner)
        );
        if let (true, Ok(Message::Data(m))) = (opened, wg::parse(bytes)) {
            if let Some(s) = self.sessions.iter_mut().find(|s| s.remote == m.receiver()) {
                s.accept(m.counter());
            }
        }
    }

    /// Opens a data message R sent to I; returns the padded plaintext.
    fn receive(&mut self, msg: &mut [u8]) -> Vec<u8> {
        let Ok(Message::Data(m)) = wg::parse(msg) else {
            panic!("R sent a malformed data message");
        };
        let (receiver, counter) = (m.receiver(), m.counter());
        let s = self
            .sessions
            .iter_mut()
            .find(|s| s.local == receiver)
            .unwrap_or_else(|| panic!("R sent data to unknown index {receiver:#x}"));
        assert_eq!(counter, s.r_counter, "R's counters are not consecutive");
        s.r_counter += 1;
        let sealed = &mut msg[DATA_HEADER_LEN..];
        let plain = s
            .recv
            .open_in_place(nonce(counter), Aad::empty(), sealed)
            .expect("R's data message opens under I's keys");
        assert_eq!(plain.len() % PADDING, 0, "R's padding");
        plain.to_vec()
    }
}
