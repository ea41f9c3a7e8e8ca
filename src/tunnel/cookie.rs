//! mac1, mac2 and cookie replies: WireGuard's defence against handshake floods.
//!
//! Every handshake message carries mac1, keyed by the receiver's public key,
//! so a node that does not know our key cannot make us do any Diffie-Hellman
//! work — and gets no answer. Under load, a responder also demands mac2,
//! keyed by a cookie bound to the sender's address; a sender without one gets
//! a cookie reply (encrypted to the key it claims to know) instead of a
//! handshake response.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::crypto::{ct_eq, hash, mac, Mac};
use super::Entropy;
use crate::keys::PublicKey;
use crate::wire::wg::{
    mac1_offset, write_cookie_reply, COOKIE_NONCE_LEN, COOKIE_REPLY_LEN, MAC_LEN,
};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";
/// How long a responder's cookie secret, and so a cookie, lives.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// Margin so an initiator stops using a cookie before the responder does.
const COOKIE_SECRET_LATENCY: Duration = Duration::from_secs(5);

/// The two keys derived from one static public key: mac1 on messages sent
/// to that key, and the key of cookie replies sent by its owner.
#[derive(Clone)]
struct MacKeys {
    mac1: [u8; 32],
    cookie: [u8; 32],
}

impl MacKeys {
    fn new(key: &PublicKey) -> Self {
        MacKeys {
            mac1: hash(&[LABEL_MAC1, key.as_bytes()]),
            cookie: hash(&[LABEL_COOKIE, key.as_bytes()]),
        }
    }
}

fn source_bytes(src: &SocketAddr, out: &mut [u8; 18]) -> usize {
    let port = src.port().to_be_bytes();
    match src.ip() {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            out[4..6].copy_from_slice(&port);
            6
        }
        IpAddr::V6(a) => {
            out[..16].copy_from_slice(&a.octets());
            out[16..].copy_from_slice(&port);
            18
        }
    }
}

/// Responder side: checks the MACs of handshake messages sent to us and
/// makes cookies.
pub struct CookieChecker {
    keys: MacKeys,
    secret: Zeroizing<[u8; 32]>,
    secret_born: Option<Instant>,
}

impl CookieChecker {
    pub fn new(local: &PublicKey) -> Self {
        CookieChecker {
            keys: MacKeys::new(local),
            secret: Zeroizing::new([0u8; 32]),
            secret_born: None,
        }
    }

    /// Whether mac1 proves the sender knows our public key. Cheap; done
    /// before anything else.
    pub fn check_mac1(&self, msg: &[u8]) -> bool {
        let Some(at) = mac1_offset(msg.len()) else {
            return false;
        };
        match (msg.get(..at), msg.get(at..at + MAC_LEN)) {
            (Some(body), Some(got)) => ct_eq(&mac(&self.keys.mac1, &[body]), got),
            _ => false,
        }
    }

    /// Whether mac2 proves the sender holds a current cookie for its address.
    pub fn check_mac2(
        &mut self,
        now: Instant,
        entropy: &mut dyn Entropy,
        msg: &[u8],
        src: &SocketAddr,
    ) -> bool {
        let at = msg.len().saturating_sub(MAC_LEN);
        let cookie = self.cookie(now, entropy, src);
        match (msg.get(..at), msg.get(at..)) {
            (Some(body), Some(got)) => ct_eq(&mac(&cookie, &[body]), got),
            _ => false,
        }
    }

    /// The cookie for `src` under the current secret, rotating a stale secret.
    fn cookie(&mut self, now: Instant, entropy: &mut dyn Entropy, src: &SocketAddr) -> Mac {
        let stale = self
            .secret_born
            .is_none_or(|born| now.saturating_duration_since(born) >= COOKIE_SECRET_MAX_AGE);
        if stale {
            entropy.fill(&mut self.secret[..]);
            self.secret_born = Some(now);
        }
        let mut addr = [0u8; 18];
        let n = source_bytes(src, &mut addr);
        mac(&self.secret[..], &[&addr[..n]])
    }

    /// Writes a cookie reply to the handshake message `msg` from `src`.
    pub fn write_reply(
        &mut self,
        now: Instant,
        entropy: &mut dyn Entropy,
        msg: &[u8],
        sender_index: u32,
        src: &SocketAddr,
        out: &mut [u8; COOKIE_REPLY_LEN],
    ) -> bool {
        let Some(mac1) = mac1_offset(msg.len()).and_then(|at| msg.get(at..at + MAC_LEN)) else {
            return false;
        };
        let mut cookie = self.cookie(now, entropy, src);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        entropy.fill(&mut nonce);
        let Ok(cipher) = XChaCha20Poly1305::new_from_slice(&self.keys.cookie) else {
            return false;
        };
        let Ok(tag) =
            cipher.encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut cookie)
        else {
            return false;
        };
        let mut sealed = [0u8; 32];
        sealed[..16].copy_from_slice(&cookie);
        sealed[16..].copy_from_slice(&tag);
        write_cookie_reply(out, sender_index, &nonce, &sealed);
        true
    }
}

/// Initiator side, one per peer: stamps MACs on messages we send to the peer
/// and keeps the cookie it last gave us.
#[derive(Clone)]
pub struct CookieJar {
    keys: MacKeys,
    cookie: Option<(Mac, Instant)>,
    /// mac1 of the last message we sent: a cookie reply is bound to it.
    last_mac1: Option<Mac>,
}

impl CookieJar {
    pub fn new(remote: &PublicKey) -> Self {
        CookieJar {
            keys: MacKeys::new(remote),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills in mac1 and, with a fresh cookie, mac2 (zero otherwise).
    pub fn stamp(&mut self, now: Instant, msg: &mut [u8]) {
        let Some(at) = mac1_offset(msg.len()) else {
            return;
        };
        let Some(body) = msg.get(..at) else { return };
        let mac1 = mac(&self.keys.mac1, &[body]);
        if let Some(dst) = msg.get_mut(at..at + MAC_LEN) {
            dst.copy_from_slice(&mac1);
        }
        self.last_mac1 = Some(mac1);
        let fresh = self.cookie.filter(|(_, got)| {
            now.saturating_duration_since(*got) < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY
        });
        let mac2 = match (fresh, msg.get(..at + MAC_LEN)) {
            (Some((cookie, _)), Some(body)) => mac(&cookie, &[body]),
            _ => [0u8; MAC_LEN],
        };
        if let Some(dst) = msg.get_mut(at + MAC_LEN..) {
            dst.copy_from_slice(&mac2);
        }
    }

    /// Accepts a cookie reply if it decrypts against our last message.
    pub fn consume_reply(
        &mut self,
        now: Instant,
        nonce: &[u8; COOKIE_NONCE_LEN],
        sealed: &[u8; 32],
    ) -> bool {
        let Some(mac1) = self.last_mac1 else {
            return false;
        };
        let Ok(cipher) = XChaCha20Poly1305::new_from_slice(&self.keys.cookie) else {
            return false;
        };
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(&sealed[..16]);
        let tag = Tag::from_slice(&sealed[16..]);
        if cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), &mac1, &mut cookie, tag)
            .is_err()
        {
            return false;
        }
        self.cookie = Some((cookie, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::SeededEntropy;
    use crate::wire::wg::{self, INITIATION_LEN};

    #[test]
    fn mac1_then_cookie_round_trip() {
        let mut rng = SeededEntropy::new(1);
        let responder = PublicKey([5; 32]);
        let mut checker = CookieChecker::new(&responder);
        let mut jar = CookieJar::new(&responder);
        let now = Instant::now();
        let src: SocketAddr = "192.0.2.1:51820".parse().unwrap();

        let mut msg = [0u8; INITIATION_LEN];
        wg::write_initiation(&mut msg, 77, &[3; wg::INITIATION_NOISE_LEN]);
        jar.stamp(now, &mut msg);
        assert!(checker.check_mac1(&msg));
        assert!(
            !checker.check_mac2(now, &mut rng, &msg, &src),
            "no cookie yet"
        );

        let mut reply = [0u8; COOKIE_REPLY_LEN];
        assert!(checker.write_reply(now, &mut rng, &msg, 77, &src, &mut reply));
        let Ok(wg::Message::CookieReply(r)) = wg::parse(&reply) else {
            panic!()
        };
        assert_eq!(r.receiver(), 77);
        assert!(jar.consume_reply(now, &r.nonce(), &r.encrypted_cookie()));

        jar.stamp(now, &mut msg);
        assert!(checker.check_mac1(&msg));
        assert!(checker.check_mac2(now, &mut rng, &msg, &src));
        let other: SocketAddr = "192.0.2.2:51820".parse().unwrap();
        assert!(
            !checker.check_mac2(now, &mut rng, &msg, &other),
            "cookie is bound to the address"
        );

        // After the secret rotates the old cookie no longer counts.
        let later = now + COOKIE_SECRET_MAX_AGE;
        assert!(!checker.check_mac2(later, &mut rng, &msg, &src));
    }

    #[test]
    fn mac1_rejects_wrong_key_and_tampering() {
        let checker = CookieChecker::new(&PublicKey([5; 32]));
        let mut jar = CookieJar::new(&PublicKey([6; 32]));
        let mut msg = [0u8; INITIATION_LEN];
        jar.stamp(Instant::now(), &mut msg);
        assert!(!checker.check_mac1(&msg));
        let mut jar = CookieJar::new(&PublicKey([5; 32]));
        jar.stamp(Instant::now(), &mut msg);
        msg[10] ^= 1;
        assert!(!checker.check_mac1(&msg));
        assert!(!checker.check_mac1(&[]));
    }

    #[test]
    fn forged_cookie_reply_is_ignored() {
        let mut jar = CookieJar::new(&PublicKey([5; 32]));
        let now = Instant::now();
        assert!(
            !jar.consume_reply(now, &[0; 24], &[0; 32]),
            "nothing sent yet"
        );
        let mut msg = [0u8; INITIATION_LEN];
        jar.stamp(now, &mut msg);
        assert!(!jar.consume_reply(now, &[0; 24], &[0; 32]));
    }
}
