//! Fuzz targets for the WireGuard engine: the responder's handshake path and
//! an established session's transport path.
//!
//! Both run a real [`Device`] ("R", the responder) against a harness that
//! plays the peer ("I") with the handshake and cookie code directly, so it
//! can build genuine messages, mutate them where the input says, and check
//! R's answers cryptographically. Keys are fixed constants and randomness is
//! seeded, so a run depends only on its input.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use super::{epoch, Input};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::tunnel::cookie::{CookieChecker, CookieJar};
use crate::tunnel::crypto::tai64n;
use crate::tunnel::handshake::{
    static_shared, Identity, InitiatorHandshake, ReceivedInitiation, StaticShared,
};
use crate::tunnel::replay::{REJECT_AFTER_MESSAGES, WINDOW};
use crate::tunnel::session::{PADDING, REJECT_AFTER_TIME};
use crate::tunnel::timers::REKEY_TIMEOUT;
use crate::tunnel::{Config, Device, Dropped, PeerConfig, PeerId, Received, SeededEntropy, Sent};
use crate::wire::wg::{self, Message, DATA_HEADER_LEN, INITIATION_LEN, RESPONSE_LEN, TAG_LEN};

/// R's private key (the device under test).
pub const RESPONDER_KEY: [u8; 32] = [0x52; 32];
/// I's private key: the peer R knows, played by the harness.
pub const INITIATOR_KEY: [u8; 32] = [0x49; 32];
/// A key R does not know: initiations from it must get no answer (cloaking).
pub const STRANGER_KEY: [u8; 32] = [0x53; 32];
/// The preshared key R holds for I when the input asks for one.
pub const PRESHARED_KEY: [u8; 32] = [0x50; 32];

/// Bounds the work one input can ask for: a handshake costs about half a
/// millisecond under the sanitizer, and short inputs mean more executions.
const MAX_OPS: usize = 32;
/// Where I's datagrams come from.
const I_ADDR: &str = "192.0.2.1:51820";

struct Fixture {
    responder_public: PublicKey,
    initiator: PrivateKey,
    initiator_public: PublicKey,
    initiator_shared: StaticShared,
}

/// Key material computed once per process: scalar multiplications would
/// otherwise dominate every run.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let responder_public = PrivateKey::from_bytes(RESPONDER_KEY).public_key();
        let initiator = PrivateKey::from_bytes(INITIATOR_KEY);
        let shared = static_shared(&initiator, &responder_public);
        Fixture {
            responder_public,
            initiator_public: initiator.public_key(),
            initiator,
            initiator_shared: Arc::new([(responder_public, shared)].into_iter().collect()),
        }
    })
}

impl Fixture {
    fn identity(&self) -> Identity<'_> {
        Identity {
            private: &self.initiator,
            public: &self.initiator_public,
            static_shared: &self.initiator_shared,
        }
    }
}

fn i_addr() -> SocketAddr {
    I_ADDR.parse().expect("constant address")
}

/// Wall-clock time the device is told it started at: fixed, so handshake
/// timestamps depend only on the input.
fn wall_at_epoch() -> Duration {
    Duration::from_secs(1_700_000_000)
}

/// A TAI64N timestamp for `now` on the same wall clock the device uses.
fn timestamp(now: Instant) -> [u8; 12] {
    tai64n(wall_at_epoch() + now.saturating_duration_since(epoch()))
}

/// R, knowing I (with or without the preshared key), able to reach I.
fn responder(psk: bool, now: Instant) -> (Device, PeerId) {
    let mut dev = Device::new(
        PrivateKey::from_bytes(RESPONDER_KEY),
        Config::default(),
        Box::new(SeededEntropy::new(0x5eed)),
        now,
        UNIX_EPOCH + wall_at_epoch(),
    );
    let mut pc = PeerConfig::new(fixture().initiator_public);
    if psk {
        pc.preshared_key = PresharedKey::from_bytes(PRESHARED_KEY);
    }
    pc.endpoint = Some(i_addr());
    let peer = dev.upsert_peer(pc);
    (dev, peer)
}

/// The sender index of a handshake message, which R's answer must name.
fn sender_of(datagram: &[u8]) -> Option<u32> {
    match wg::parse(datagram) {
        Ok(Message::Initiation(m)) => Some(m.sender()),
        Ok(Message::Response(m)) => Some(m.sender()),
        _ => None,
    }
}

/// `handshake_responder`: R fed handshake traffic.
///
/// Byte 0 is flags: bit 0 makes the harness recompute mac1 (and mac2, once
/// R gave it a cookie) on every handshake message it delivers, so mutated
/// initiations get past the MAC check into the Noise code; bit 1 puts R
/// under load from the start (cookie replies, mac2, rate limiting); bit 2
/// gives R the preshared key for I.
///
/// Then operations, selected by a byte modulo 5:
/// - 0 `[len u16][bytes]`: deliver a datagram from I's address.
/// - 1 `[ms u16]`: advance the clock, run R's timers.
/// - 2: R starts a handshake with I.
/// - 3 `[pos u8][xor u8]`: I answers R's last initiation with a genuine
///   response, one byte xored (xor 0 leaves it intact), and delivers it.
/// - 4: R sees load now.
pub fn handshake_responder(data: &[u8]) {
    let fx = fixture();
    let mut input = Input(data);
    let Some(flags) = input.u8() else {
        return;
    };
    let restamp = flags & 1 != 0;
    let psk = flags & 4 != 0;
    let mut now = epoch();
    let (mut dev, peer) = responder(psk, now);
    let mut loaded = flags & 2 != 0;
    if loaded {
        dev.report_load(now);
    }
    let mut h = HandshakeHarness {
        jar: CookieJar::new(&fx.responder_public),
        checker: CookieChecker::new(&fx.initiator_public),
        last_initiation: None,
        answered: 0,
    };
    let mut out = vec![0u8; 2048];
    for _ in 0..MAX_OPS {
        let Some(op) = input.u8() else { break };
        match op % 5 {
            0 => {
                let Some(bytes) = input.chunk() else { break };
                let mut d = bytes.to_vec();
                let stamped = restamp && sender_of(&d).is_some();
                if stamped {
                    h.jar.stamp(now, &mut d);
                }
                // Mutated messages are mostly refused; the checks are inside.
                let _ = h.deliver(&mut dev, now, &mut d, stamped);
            }
            1 => {
                let Some(ms) = input.u16() else { break };
                now += Duration::from_millis(u64::from(ms));
                dev.tick(now);
            }
            2 => dev.initiate(peer),
            3 => {
                let (Some(pos), Some(xor)) = (input.u8(), input.u8()) else {
                    break;
                };
                let Some((init, sent_at)) = h.last_initiation else {
                    continue;
                };
                let mut resp = h.answer(now, &init, psk);
                resp[usize::from(pos) % RESPONSE_LEN] ^= xor;
                if restamp {
                    h.jar.stamp(now, &mut resp);
                }
                let genuine = xor == 0
                    && h.answered == 0
                    && !loaded
                    && now.saturating_duration_since(sent_at) < REKEY_TIMEOUT;
                h.answered += 1;
                let result = h.deliver(&mut dev, now, &mut resp, restamp);
                if genuine {
                    assert_eq!(result, Ok(()), "R refused a genuine response");
                }
            }
            _ => {
                loaded = true;
                dev.report_load(now);
            }
        }
        // What R wants to send on its own: its initiations must carry a
        // valid mac1 for I, and the newest is what op 3 answers.
        while let Some(t) = dev.poll_transmit(now, &mut out) {
            let msg = &out[..t.len];
            assert_eq!(t.peer, peer);
            match wg::parse(msg) {
                Ok(Message::Initiation(_)) => {
                    assert!(h.checker.check_mac1(msg), "R's initiation has a bad mac1");
                    let mut copy = [0u8; INITIATION_LEN];
                    copy.copy_from_slice(msg);
                    h.last_initiation = Some((copy, now));
                    h.answered = 0;
                }
                Ok(Message::Data(_)) => {}
                other => panic!("R sent {other:?} unprompted"),
            }
        }
    }
}

struct HandshakeHarness {
    /// I's MAC state for messages to R.
    jar: CookieJar,
    /// Checks the MACs R puts on messages to I.
    checker: CookieChecker,
    last_initiation: Option<([u8; INITIATION_LEN], Instant)>,
    /// Responses delivered to the last initiation.
    answered: u32,
}

impl HandshakeHarness {
    /// Delivers `d`; checks any reply. `stamped`: the harness put the MACs
    /// on `d`, so a cookie reply to it must decrypt.
    fn deliver(
        &mut self,
        dev: &mut Device,
        now: Instant,
        d: &mut [u8],
        stamped: bool,
    ) -> Result<(), Dropped> {
        let sender = sender_of(d);
        let mut reply = [0u8; 256];
        match dev.handle_datagram(now, i_addr(), d, &mut reply) {
            Ok(Received::Reply(r)) => match wg::parse(r) {
                Ok(Message::Response(m)) => {
                    assert_eq!(r.len(), RESPONSE_LEN);
                    assert!(self.checker.check_mac1(r), "R's response has a bad mac1");
                    assert_eq!(Some(m.receiver()), sender, "response to the wrong index");
                }
                Ok(Message::CookieReply(c)) => {
                    assert_eq!(
                        Some(c.receiver()),
                        sender,
                        "cookie reply to the wrong index"
                    );
                    if stamped {
                        assert!(
                            self.jar
                                .consume_reply(now, &c.nonce(), &c.encrypted_cookie()),
                            "cookie reply does not decrypt"
                        );
                    }
                }
                other => panic!("R replied with {other:?}"),
            },
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// I's genuine response to R's initiation `init`, MACs stamped.
    fn answer(
        &mut self,
        now: Instant,
        init: &[u8; INITIATION_LEN],
        psk: bool,
    ) -> [u8; RESPONSE_LEN] {
        let Ok(Message::Initiation(m)) = wg::parse(init) else {
            panic!("R's initiation does not parse");
        };
        let received = ReceivedInitiation::read(fixture().identity(), m.noise(), [0x11; 32])
            .expect("R's initiation decrypts for I");
        assert_eq!(received.remote, fixture().responder_public);
        let psk = if psk {
            PresharedKey::from_bytes(PRESHARED_KEY)
        } else {
            PresharedKey::none()
        };
        let mut noise = [0u8; wg::RESPONSE_NOISE_LEN];
        received.respond(&psk, &mut noise).expect("I can respond");
        let mut resp = [0u8; RESPONSE_LEN];
        wg::write_response(&mut resp, 0x4949_0000 + self.answered, m.sender(), &noise);
        self.jar.stamp(now, &mut resp);
        resp
    }
}

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
