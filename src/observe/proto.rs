//! The control-socket protocol: what `umbra status` and `umbra flows` ask
//! a running node and what it answers.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: a 2-byte
//! big-endian protocol version, then the message encoded with `postcard`.
//! The version is checked before the body is decoded, so a client and a
//! node of different versions get a clear error, not garbage. Requests are
//! small ([`MAX_REQUEST`]); a longer length prefix is refused before any of
//! the body is read.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Largest request frame body a node accepts.
pub const MAX_REQUEST: usize = 4096;
/// Largest response frame body a client accepts.
pub const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status,
    /// The connection table, optionally of one peer only.
    Flows {
        peer: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Status(Box<Status>),
    Flows(Flows),
    /// The request was understood but cannot be answered.
    Error(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub public_key: String,
    /// `tun` or `userspace`.
    pub data_plane: String,
    /// The TUN interface name (TUN mode).
    pub interface: Option<String>,
    /// Whether the packet device is up and being served.
    pub data_plane_up: bool,
    pub listen_port: u16,
    pub policy_id: String,
    pub policy_file: String,
    /// Unix seconds when the policy in force was loaded.
    pub policy_loaded: u64,
    pub uptime_secs: u64,
    pub peers: Vec<PeerStatus>,
    /// Tracked flows by (protocol, state).
    pub flows: Vec<Count>,
    pub flows_total: u64,
    pub flows_capacity: u64,
    /// Drops by reason (see docs/observability.md for the names).
    pub drops: Vec<Count>,
    /// Handshake outcomes by result.
    pub handshakes: Vec<Count>,
    /// Policy reloads by result (`ok`, `rejected`).
    pub reloads: Vec<Count>,
    /// Decisions on new flows by (verdict, rule).
    pub decisions: Vec<Decision>,
    /// Flow-log records written and lost, when the flow log is on.
    pub flow_log: Option<(u64, u64)>,
    /// Offloads in use: `udp-gso`, `udp-gro`, `tun-tso`, `tun-uso`.
    pub offloads: Vec<String>,
    /// Packet I/O counters by name (system calls, datagrams, segments).
    pub io: Vec<Count>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub name: String,
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: String,
    pub rule: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: String,
    pub roles: Vec<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Milliseconds since the latest handshake completed.
    pub latest_handshake_ms: Option<u64>,
    /// Unix seconds of the latest handshake (for `wg show`-style output).
    pub latest_handshake_unix: Option<u64>,
    /// Whether a session can send now.
    pub session: bool,
    pub handshakes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub keepalive_secs: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flows {
    pub flows: Vec<Flow>,
    /// Flows matching the request (may exceed `flows.len()`).
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub proto: String,
    pub src: String,
    pub src_port: u16,
    pub dst: String,
    pub dst_port: u16,
    pub peer: String,
    /// `ingress` (the peer opened it) or `egress`.
    pub direction: String,
    pub rule: String,
    pub state: String,
    pub age_ms: u64,
    pub idle_ms: u64,
    /// Initiator's side first.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub community_id: String,
}

/// Most flows one `Flows` answer lists.
pub const MAX_FLOWS_LISTED: usize = 100_000;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is over the limit.
    TooLong(usize),
    /// Shorter than the version field.
    Truncated,
    /// Another protocol version.
    Version(u16),
    /// The body is not a valid message.
    Garbage,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong(n) => write!(f, "message of {n} bytes is over the limit"),
            FrameError::Truncated => write!(f, "message too short"),
            FrameError::Version(v) => write!(
                f,
                "control protocol version {v}, this umbra speaks {VERSION}: use the same umbra version for the node and the command"
            ),
            FrameError::Garbage => write!(f, "not a valid control message"),
        }
    }
}

/// Encodes a message as a whole frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Our own message types always serialize; a failure is a bug.
    let body = postcard::to_allocvec(msg).expect("control message serializes");
    let len = body.len() + 2;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The body length a frame's 4-byte prefix announces, checked against
/// `max`; `None` until four bytes are there.
pub fn frame_len(buf: &[u8], max: usize) -> Option<Result<usize, FrameError>> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let n = u32::from_be_bytes(prefix) as usize;
    Some(if n > max {
        Err(FrameError::TooLong(n))
    } else if n < 2 {
        Err(FrameError::Truncated)
    } else {
        Ok(n)
    })
}

/// Decodes a frame body (after the length prefix).
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    let version: [u8; 2] = body
        .get(..2)
        .and_then(|v| v.try_into().ok())
        .ok_or(FrameError::Truncated)?;
    let version = u16::from_be_bytes(version);
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let rest = &body[2..];
    match postcard::take_from_bytes::<T>(rest) {
        Ok((msg, [])) => Ok(msg),
        _ => Err(FrameError::Garbage),
    }
}

/// Decodes a whole frame held in `buf`: `Ok(None)` when more bytes are
/// needed, else the message and how many bytes it took.
pub fn decode_frame<'a, T: Deserialize<'a>>(
    buf: &'a [u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let n = match frame_len(buf, max) {
        None => return Ok(None),
        Some(r) => r?,
    };
    let Some(body) = buf.get(4..4 + n) else {
        return Ok(None);
    };
    Ok(Some((decode(body)?, 4 + n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for req in [
            Request::Status,
            Request::Flows { peer: None },
            Request::Flows {
                peer: Some("db-1".into()),
            },
        ] {
            let f = encode(&req);
            let (back, used): (Request, usize) = decode_frame(&f, MAX_REQUEST).unwrap().unwrap();
            assert_eq!(back, req);
            assert_eq!(used, f.len());
            // Every strict prefix asks for more, never errors or panics.
            for cut in 0..f.len() {
                assert_eq!(decode_frame::<Request>(&f[..cut], MAX_REQUEST), Ok(None));
            }
        }
        let st = Response::Status(Box::new(Status {
            node: "a".into(),
            peers: vec![PeerStatus {
                name: "b".into(),
                rx_bytes: 1 << 40,
                ..Default::default()
            }],
            ..Default::default()
        }));
        let f = encode(&st);
        let (back, _): (Response, usize) = decode_frame(&f, MAX_RESPONSE).unwrap().unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn hostile_frames_are_errors() {
        // Over the limit: refused from the prefix alone.
        let big = [0x00, 0x10, 0x00, 0x01];
        assert_eq!(
            decode_frame::<Request>(&big, MAX_REQUEST),
            Err(FrameError::TooLong(0x100001))
        );
        // Too short for a version.
        assert_eq!(
            decode_frame::<Request>(&[0, 0, 0, 1, 0], MAX_REQUEST),
            Err(FrameError::Truncated)
        );
        // Wrong version.
        let mut f = encode(&Request::Status);
        f[5] = 9;
        assert_eq!(
            decode_frame::<Request>(&f, MAX_REQUEST),
            Err(FrameError::Version(9))
        );
        // Unknown variant, trailing bytes, truncated string.
        for body in [&[0, 1, 7][..], &[0, 1, 0, 0], &[0, 1, 1, 1, 200]] {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            assert_eq!(
                decode_frame::<Request>(&f, MAX_REQUEST),
                Err(FrameError::Garbage),
                "{body:?}"
            );
        }
        // A string length claiming more than the frame holds.
        let mut f = vec![0, 0, 0, 8, 0, 1, 1, 1, 0xff, 0xff, 0xff, 0x0f];
        f.truncate(12);
        assert!(decode_frame::<Request>(&f, MAX_REQUEST).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            for i in 0..len {
                buf.push((x >> (i % 8 * 8)) as u8 ^ i as u8);
            }
            let _ = decode_frame::<Request>(&buf, MAX_REQUEST);
            let _ = decode_frame::<Response>(&buf, MAX_RESPONSE);
        }
    }
}
