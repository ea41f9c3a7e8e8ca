//! WireGuard's four message types, byte for byte as the protocol defines them.
//!
//! All integers are little-endian. The first four bytes are the message type
//! as a 32-bit integer, so the three "reserved" bytes must be zero.
//!
//! ```text
//! initiation (148):  type | sender | ephemeral 32 | static 32+16 | timestamp 12+16 | mac1 16 | mac2 16
//! response    (92):  type | sender | receiver | ephemeral 32 | empty 0+16 | mac1 16 | mac2 16
//! cookie      (64):  type | receiver | nonce 24 | cookie 16+16
//! data      (≥ 32):  type | receiver | counter 8 | packet n+16
//! ```

use std::fmt;

pub const MSG_INITIATION: u8 = 1;
pub const MSG_RESPONSE: u8 = 2;
pub const MSG_COOKIE_REPLY: u8 = 3;
pub const MSG_DATA: u8 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header of a data message: type, receiver index and counter.
pub const DATA_HEADER_LEN: usize = 16;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Smallest valid data message: an encrypted empty keepalive.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;

/// The noise part of an initiation: ephemeral, encrypted static, encrypted timestamp.
pub const INITIATION_NOISE_LEN: usize = 32 + 48 + 28;
/// The noise part of a response: ephemeral and an encrypted empty payload.
pub const RESPONSE_NOISE_LEN: usize = 32 + 16;
pub const MAC_LEN: usize = 16;
pub const COOKIE_NONCE_LEN: usize = 24;
pub const ENCRYPTED_COOKIE_LEN: usize = 32;

const INIT_MAC1: usize = INITIATION_LEN - 2 * MAC_LEN;
const RESP_MAC1: usize = RESPONSE_LEN - 2 * MAC_LEN;

/// Why bytes are not a WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than four bytes, or shorter than its type requires.
    Truncated,
    /// Longer than a fixed-size message type allows.
    WrongLength,
    /// The type byte names no WireGuard message.
    UnknownType(u8),
    /// The three reserved bytes are not zero.
    Reserved,
    /// The caller's output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("message truncated"),
            WireError::WrongLength => f.write_str("message has the wrong length for its type"),
            WireError::UnknownType(t) => write!(f, "unknown message type {t}"),
            WireError::Reserved => f.write_str("reserved bytes are not zero"),
            WireError::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl std::error::Error for WireError {}

/// A parsed message, borrowing the datagram.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Initiation(Initiation<'a>),
    Response(Response<'a>),
    CookieReply(CookieReply<'a>),
    Data(Data<'a>),
}

/// Classifies a datagram and checks its length. Never panics, never allocates.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let (ty, _) = message_type(buf)?;
    match ty {
        MSG_INITIATION => Ok(Message::Initiation(Initiation { b: exact(buf)? })),
        MSG_RESPONSE => Ok(Message::Response(Response { b: exact(buf)? })),
        MSG_COOKIE_REPLY => Ok(Message::CookieReply(CookieReply { b: exact(buf)? })),
        MSG_DATA => Data::parse(buf).map(Message::Data),
        other => Err(WireError::UnknownType(other)),
    }
}

/// The type byte, after checking the reserved bytes.
pub fn message_type(buf: &[u8]) -> Result<(u8, &[u8]), WireError> {
    match buf {
        [ty, 0, 0, 0, rest @ ..] => Ok((*ty, rest)),
        [_, _, _, _, ..] => Err(WireError::Reserved),
        _ => Err(WireError::Truncated),
    }
}

fn exact<const N: usize>(buf: &[u8]) -> Result<&[u8; N], WireError> {
    if buf.len() < N {
        return Err(WireError::Truncated);
    }
    buf.try_into().map_err(|_| WireError::WrongLength)
}

/// Copies a fixed-size field out of a fixed-size message. The bounds are
/// constants checked when the message was parsed, so this cannot fail; the
/// fallback only exists so the compiler need not take our word for it.
fn field<const N: usize, const L: usize>(b: &[u8; N], at: usize) -> [u8; L] {
    let mut out = [0u8; L];
    if let Some(src) = b.get(at..at + L) {
        out.copy_from_slice(src);
    }
    out
}

fn le32(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

/// Handshake initiation (type 1).
#[derive(Clone, Copy)]
pub struct Initiation<'a> {
    b: &'a [u8; INITIATION_LEN],
}

impl<'a> Initiation<'a> {
    pub fn sender(&self) -> u32 {
        le32(field(self.b, 4))
    }
    /// Ephemeral, encrypted static and encrypted timestamp: the Noise message.
    pub fn noise(&self) -> &'a [u8] {
        // The length was checked when the view was made.
        &self.b[8..8 + INITIATION_NOISE_LEN]
    }
    pub fn mac1(&self) -> [u8; MAC_LEN] {
        field(self.b, INIT_MAC1)
    }
    pub fn mac2(&self) -> [u8; MAC_LEN] {
        field(self.b, INIT_MAC1 + MAC_LEN)
    }
    /// The whole message, for MAC computation.
    pub fn bytes(&self) -> &'a [u8] {
        self.b
    }
}

impl fmt::Debug for Initiation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiation")
            .field("sender", &self.sender())
            .finish_non_exhaustive()
    }
}

/// Handshake response (type 2).
#[derive(Clone, Copy)]
pub struct Response<'a> {
    b: &'a [u8; RESPONSE_LEN],
}

impl<'a> Response<'a> {
    pub fn sender(&self) -> u32 {
        le32(field(self.b, 4))
    }
    pub fn receiver(&self) -> u32 {
        le32(field(self.b, 8))
    }
    /// Ephemeral and encrypted empty payload: the Noise message.
    pub fn noise(&self) -> &'a [u8] {
        &self.b[12..12 + RESPONSE_NOISE_LEN]
    }
    pub fn mac1(&self) -> [u8; MAC_LEN] {
        field(self.b, RESP_MAC1)
    }
    pub fn mac2(&self) -> [u8; MAC_LEN] {
        field(self.b, RESP_MAC1 + MAC_LEN)
    }
    pub fn bytes(&self) -> &'a [u8] {
        self.b
    }
}

impl fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("sender", &self.sender())
            .field("receiver", &self.receiver())
            .finish_non_exhaustive()
    }
}

/// Cookie reply (type 3), sent by a responder under load.
#[derive(Clone, Copy)]
pub struct CookieReply<'a> {
    b: &'a [u8; COOKIE_REPLY_LEN],
}

impl CookieReply<'_> {
    pub fn receiver(&self) -> u32 {
        le32(field(self.b, 4))
    }
    pub fn nonce(&self) -> [u8; COOKIE_NONCE_LEN] {
        field(self.b, 8)
    }
    pub fn encrypted_cookie(&self) -> [u8; ENCRYPTED_COOKIE_LEN] {
        field(self.b, 8 + COOKIE_NONCE_LEN)
    }
}

impl fmt::Debug for CookieReply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieReply")
            .field("receiver", &self.receiver())
            .finish_non_exhaustive()
    }
}

/// Transport data (type 4).
#[derive(Clone, Copy)]
pub struct Data<'a> {
    receiver: u32,
    counter: u64,
    sealed: &'a [u8],
}

impl<'a> Data<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let Some((header, sealed)) = buf.split_first_chunk::<DATA_HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if sealed.len() < TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Data {
            receiver: le32(field(header, 4)),
            counter: u64::from_le_bytes(field(header, 8)),
            sealed,
        })
    }
    pub fn receiver(&self) -> u32 {
        self.receiver
    }
    pub fn counter(&self) -> u64 {
        self.counter
    }
    /// Ciphertext followed by the tag.
    pub fn sealed(&self) -> &'a [u8] {
        self.sealed
    }
}

impl fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("receiver", &self.receiver)
            .field("counter", &self.counter)
            .field("len", &self.sealed.len())
            .finish()
    }
}

/// Offset of mac1 in a handshake message of `len` bytes (mac1 then mac2
/// end it); `None` if the message is too short to carry them.
pub const fn mac1_offset(len: usize) -> Option<usize> {
    len.checked_sub(2 * MAC_LEN)
}

/// Writes an initiation header and noise part; the MACs are filled in later
/// by the cookie code, which needs the finished prefix.
pub fn write_initiation(
    out: &mut [u8; INITIATION_LEN],
    sender: u32,
    noise: &[u8; INITIATION_NOISE_LEN],
) {
    out.fill(0);
    out[0] = MSG_INITIATION;
    out[4..8].copy_from_slice(&sender.to_le_bytes());
    out[8..8 + INITIATION_NOISE_LEN].copy_from_slice(noise);
}

/// Writes a response header and noise part; MACs are filled in later.
pub fn write_response(
    out: &mut [u8; RESPONSE_LEN],
    sender: u32,
    receiver: u32,
    noise: &[u8; RESPONSE_NOISE_LEN],
) {
    out.fill(0);
    out[0] = MSG_RESPONSE;
    out[4..8].copy_from_slice(&sender.to_le_bytes());
    out[8..12].copy_from_slice(&receiver.to_le_bytes());
    out[12..12 + RESPONSE_NOISE_LEN].copy_from_slice(noise);
}

/// Writes a complete cookie reply.
pub fn write_cookie_reply(
    out: &mut [u8; COOKIE_REPLY_LEN],
    receiver: u32,
    nonce: &[u8; COOKIE_NONCE_LEN],
    encrypted_cookie: &[u8; ENCRYPTED_COOKIE_LEN],
) {
    out.fill(0);
    out[0] = MSG_COOKIE_REPLY;
    out[4..8].copy_from_slice(&receiver.to_le_bytes());
    out[8..8 + COOKIE_NONCE_LEN].copy_from_slice(nonce);
    out[8 + COOKIE_NONCE_LEN..].copy_from_slice(encrypted_cookie);
}

/// Writes a data header in front of a sealed payload.
pub fn write_data_header(out: &mut [u8; DATA_HEADER_LEN], receiver: u32, counter: u64) {
    out[0] = MSG_DATA;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&receiver.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let mut init = [0u8; INITIATION_LEN];
        write_initiation(&mut init, 0xdead_beef, &[7; INITIATION_NOISE_LEN]);
        match parse(&init).unwrap() {
            Message::Initiation(m) => {
                assert_eq!(m.sender(), 0xdead_beef);
                assert_eq!(m.noise(), &[7; INITIATION_NOISE_LEN][..]);
                assert_eq!(m.mac1(), [0; 16]);
            }
            other => panic!("{other:?}"),
        }
        let mut resp = [0u8; RESPONSE_LEN];
        write_response(&mut resp, 1, 2, &[9; RESPONSE_NOISE_LEN]);
        match parse(&resp).unwrap() {
            Message::Response(m) => assert_eq!((m.sender(), m.receiver()), (1, 2)),
            other => panic!("{other:?}"),
        }
        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        write_cookie_reply(&mut cookie, 5, &[1; 24], &[2; 32]);
        match parse(&cookie).unwrap() {
            Message::CookieReply(m) => {
                assert_eq!(m.receiver(), 5);
                assert_eq!(m.nonce(), [1; 24]);
                assert_eq!(m.encrypted_cookie(), [2; 32]);
            }
            other => panic!("{other:?}"),
        }
        let mut data = [0u8; 48];
        write_data_header((&mut data[..16]).try_into().unwrap(), 9, 1 << 40);
        match parse(&data).unwrap() {
            Message::Data(d) => {
                assert_eq!(
                    (d.receiver(), d.counter(), d.sealed().len()),
                    (9, 1 << 40, 32)
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse(&[]).unwrap_err(), WireError::Truncated);
        assert_eq!(parse(&[1, 0, 0]).unwrap_err(), WireError::Truncated);
        assert_eq!(parse(&[1, 0, 1, 0]).unwrap_err(), WireError::Reserved);
        assert_eq!(parse(&[9, 0, 0, 0]).unwrap_err(), WireError::UnknownType(9));
        let mut init = [0u8; INITIATION_LEN + 1];
        init[0] = 1;
        assert_eq!(parse(&init).unwrap_err(), WireError::WrongLength);
        assert_eq!(
            parse(&init[..INITIATION_LEN - 1]).unwrap_err(),
            WireError::Truncated
        );
        let mut data = [0u8; DATA_MIN_LEN - 1];
        data[0] = 4;
        assert_eq!(parse(&data).unwrap_err(), WireError::Truncated);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), ty in 0u8..6) {
            let mut bytes = bytes;
            if bytes.len() >= 4 && ty != 0 {
                bytes[0] = ty;
                bytes[1..4].fill(0);
            }
            if let Ok(msg) = parse(&bytes) {
                match msg {
                    Message::Initiation(m) => { let _ = (m.sender(), m.noise(), m.mac1(), m.mac2()); }
                    Message::Response(m) => { let _ = (m.sender(), m.receiver(), m.noise(), m.mac2()); }
                    Message::CookieReply(m) => { let _ = (m.receiver(), m.nonce(), m.encrypted_cookie()); }
                    Message::Data(d) => prop_assert!(d.sealed().len() >= TAG_LEN),
                }
            }
        }
    }
}
