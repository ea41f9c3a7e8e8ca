//! The `handshake_responder` target: R fed handshake traffic from I,
//! genuine, replayed or mutated, with and without load.

use std::time::{Duration, Instant};

use super::{fixture, i_addr, responder, sender_of, MAX_OPS, PRESHARED_KEY};
use crate::fuzzing::{epoch, Input};
use crate::keys::PresharedKey;
use crate::tunnel::cookie::{CookieChecker, CookieJar};
use crate::tunnel::handshake::ReceivedInitiation;
use crate::tunnel::timers::REKEY_TIMEOUT;
use crate::tunnel::{Device, Dropped, Received};
use crate::wire::wg::{self, Message, INITIATION_LEN, RESPONSE_LEN};

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
