//! Curve25519 keys in wireguard-tools' format: 32 raw bytes, written as
//! standard base64 with padding (44 characters).
//!
//! Private and preshared keys are wiped from memory when dropped and never
//! appear in `Debug` output, so a stray `{:?}` in a log line cannot leak them.

use std::fmt;
use std::path::Path;

use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every key umbra handles.
pub const KEY_LEN: usize = 32;

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not 44 characters of base64 encoding 32 bytes.
    BadEncoding,
    /// The key file could not be read.
    Io(String),
    /// The key file can be read by group or others.
    Permissions { path: String, mode: u32 },
    /// The key file can be read by others (where its group may).
    OthersCanRead { path: String, mode: u32 },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::BadEncoding => {
                f.write_str("a key must be 44 characters of base64 encoding 32 bytes (as `umbra genkey` or `wg genkey` print)")
            }
            KeyError::Io(e) => write!(f, "{e}"),
            KeyError::Permissions { path, mode } => write!(
                f,
                "private key file {path} is accessible by group or others (mode {mode:04o}); \
                 it must be readable by its owner only: run `chmod 600 {path}`"
            ),
            KeyError::OthersCanRead { path, mode } => write!(
                f,
                "key file {path} is accessible by others (mode {mode:04o}): the key is \
                 exposed; fix the mode where the file comes from (for a Kubernetes Secret, \
                 `defaultMode: 0400`) and use a new key"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// An X25519 private key, clamped as WireGuard stores it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes)?;
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// Wraps raw bytes, clamping them the way `wg genkey` does.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        let key = PrivateKey(bytes);
        bytes.zeroize();
        key
    }

    /// Parses wireguard-tools' base64 form (surrounding whitespace allowed).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        decode_key(text.trim(), &mut raw)?;
        Ok(Self::from_bytes(*raw))
    }

    /// The base64 form, in a buffer that is wiped when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(encode_key(&self.0))
    }

    /// Reads a key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_base64(&read_secret_file(path, 0o077)?)
    }

    /// Reads a key file that its group may read but others may not: a
    /// Kubernetes Secret, which the kubelet mounts `root:fsGroup` mode 0440
    /// when the pod sets `fsGroup`. Only for copying it with
    /// [`PrivateKey::save`] (`umbra installkey`); the node loads its key with
    /// [`PrivateKey::load`].
    pub fn load_group_readable(path: &Path) -> Result<Self, KeyError> {
        Self::from_base64(&read_secret_file(path, 0o007)?)
    }

    /// Writes the key to `path`, readable and writable by this user only:
    /// created with mode 0600, or an existing file truncated and set to
    /// 0600 before the key is written; never through a symbolic link;
    /// synced before returning.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| {
            KeyError::Io(format!("cannot write key file {}: {e}", path.display()))
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        // Two writes, not a push: growing the string could move the key
        // and leave the old copy unwiped.
        f.write_all(self.to_base64().as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// The raw scalar, for handing to the handshake.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// An X25519 public key; it names a node everywhere in umbra.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses wireguard-tools' base64 form.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let mut raw = [0u8; KEY_LEN];
        decode_key(text.trim(), &mut raw)?;
        Ok(PublicKey(raw))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        encode_key(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first characters identify a key in logs, like `wg show` does.
        let b64 = self.to_base64();
        write!(f, "PublicKey({}…)", &b64[..8])
    }
}

/// An optional symmetric key mixed into the handshake (post-quantum hedge).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// The all-zero key WireGuard uses when none is configured.
    pub const fn none() -> Self {
        PresharedKey([0u8; KEY_LEN])
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PresharedKey(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        decode_key(text.trim(), &mut raw)?;
        Ok(PresharedKey(*raw))
    }

    /// Reads a preshared key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_base64(&read_secret_file(path, 0o077)?)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl Default for PresharedKey {
    fn default() -> Self {
        Self::none()
    }
}

/// Reads a file holding a secret, after checking its permissions; the text
/// is wiped when dropped.
/// Only regular files of at most 4 KiB are read: a FIFO at the path must not
/// hang the node, nor a character device exhaust its memory.
fn read_secret_file(path: &Path, forbidden: u32) -> Result<Zeroizing<String>, KeyError> {
    check_private_file(path, forbidden)?;
    let io =
        |e: std::io::Error| KeyError::Io(format!("cannot read key file {}: {e}", path.display()));
    let bytes = Zeroizing::new(crate::io::files::read_regular_file(path, 4096).map_err(io)?);
    std::str::from_utf8(&bytes)
        .map(|t| Zeroizing::new(t.to_string()))
        .map_err(|_| KeyError::Io(format!("key file {} is not text", path.display())))
}

/// Refuses secrets stored in files whose mode has any `forbidden` bit:
/// 0o077 (only the owner may read, as ssh demands) or, for a Secret
/// mounted for a group, 0o007.
fn check_private_file(path: &Path, forbidden: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| KeyError::Io(format!("cannot read key file {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & forbidden != 0 {
        let path = path.display().to_string();
        return Err(if forbidden & 0o070 != 0 {
            KeyError::Permissions { path, mode }
        } else {
            KeyError::OthersCanRead { path, mode }
        });
    }
    Ok(())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn encode_key(key: &[u8; KEY_LEN]) -> String {
    base64_encode(key)
}

/// Standard base64 with padding (RFC 4648), for keys and digests.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64[*s as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes exactly 44 base64 characters (one `=` of padding) into 32 bytes.
fn decode_key(text: &str, out: &mut [u8; KEY_LEN]) -> Result<(), KeyError> {
    let bytes = text.as_bytes();
    if bytes.len() != 44 || bytes[43] != b'=' {
        return Err(KeyError::BadEncoding);
    }
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut pos = 0usize;
    for &c in &bytes[..43] {
        acc = (acc << 6) | sextet(c).ok_or(KeyError::BadEncoding)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let slot = out.get_mut(pos).ok_or(KeyError::BadEncoding)?;
            *slot = (acc >> bits) as u8;
            pos += 1;
        }
    }
    // 43 sextets carry 258 bits: 256 of key and 2 that must be zero
    // for the encoding to be canonical.
    if pos != KEY_LEN || acc & ((1 << bits) - 1) != 0 {
        return Err(KeyError::BadEncoding);
    }
    acc.zeroize();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_rejects() {
        let k = PublicKey([0xAB; 32]);
        let s = k.to_base64();
        assert_eq!(s.len(), 44);
        assert_eq!(PublicKey::from_base64(&s).unwrap(), k);
        assert_eq!(PublicKey::from_base64("short"), Err(KeyError::BadEncoding));
        // The last character carries 4 key bits and 2 bits that must be zero:
        // flipping one of those makes a non-canonical encoding.
        let last = s.as_bytes()[42];
        let idx = B64.iter().position(|&c| c == last).unwrap();
        let mut bad = s.clone();
        bad.replace_range(42..43, &char::from(B64[idx ^ 1]).to_string());
        assert_eq!(PublicKey::from_base64(&bad), Err(KeyError::BadEncoding));
        assert!(PublicKey::from_base64("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=").is_err());
    }

    #[test]
    fn known_wireguard_key_pair() {
        // From the wg(8) style: a private key and the public key `wg pubkey` derives.
        let private =
            PrivateKey::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        assert_eq!(
            private.public_key().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let private = PrivateKey::from_bytes([7; 32]);
        let shown = format!("{private:?}");
        assert!(!shown.contains(private.to_base64().as_str()));
        assert_eq!(shown, "PrivateKey(<redacted>)");
        assert_eq!(
            format!("{:?}", PresharedKey::from_bytes([9; 32])),
            "PresharedKey(<redacted>)"
        );
    }

    #[test]
    fn refuses_world_readable_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("umbra-keytest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        std::fs::write(
            &path,
            PrivateKey::from_bytes([3; 32]).to_base64().as_bytes(),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = PrivateKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(PrivateKey::load(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_group_readable_key_is_installed_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("umbra-keyinstall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src, dst) = (dir.join("secret"), dir.join("key"));
        let key = PrivateKey::from_bytes([5; 32]);
        std::fs::write(&src, key.to_base64().as_bytes()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        // What the kubelet mounts with fsGroup: the node refuses it...
        set(&src, 0o440);
        assert!(matches!(
            PrivateKey::load(&src),
            Err(KeyError::Permissions { mode: 0o440, .. })
        ));
        // ... installkey takes it, and writes a copy only its owner can read,
        // also over an existing file with a looser mode.
        std::fs::write(&dst, "old").unwrap();
        set(&dst, 0o644);
        let got = PrivateKey::load_group_readable(&src).unwrap();
        got.save(&dst).unwrap();
        assert_eq!(mode(&dst), 0o600);
        assert_eq!(
            PrivateKey::load(&dst).unwrap().public_key(),
            key.public_key()
        );
        // Readable by others: refused, with what to do.
        set(&src, 0o444);
        let err = PrivateKey::load_group_readable(&src).unwrap_err();
        assert!(matches!(err, KeyError::OthersCanRead { mode: 0o444, .. }));
        assert!(err.to_string().contains("defaultMode: 0400"), "{err}");
        // Not through a symbolic link.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        assert!(got.save(&link).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
