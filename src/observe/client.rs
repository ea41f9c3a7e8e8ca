//! The client side of the control socket: where a node's socket is, and
//! one request/answer exchange with it (what `umbra status` and `umbra flows`
//! use; the binary renders the answers).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{self, Request, Response, MAX_RESPONSE};

/// The control socket path `umbra up` uses by default for `interface`:
/// `/run/umbra/<interface>.sock` when running as root (TUN mode needs
/// root), else under `$XDG_RUNTIME_DIR/umbra/`, else `/tmp/umbra-<uid>/`.
pub fn default_path(interface: &str, root: bool) -> PathBuf {
    let file = format!("{interface}.sock");
    if root {
        return Path::new("/run/umbra").join(file);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("umbra").join(file),
        _ => PathBuf::from(format!("/tmp/umbra-{}", uid())).join(file),
    }
}

/// The effective user id.
pub fn uid() -> u32 {
    crate::io::euid()
}

/// Where a client looks when not told: the first candidate that exists.
pub fn find_socket(interface: &str) -> PathBuf {
    let candidates = [
        default_path(interface, true),
        default_path(interface, false),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| default_path(interface, uid() == 0))
}

/// Sends one request and reads the answer.
pub fn ask(path: &Path, req: &Request) -> Result<Response, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is `umbra up` running with its control socket there? give --control PATH)",
            path.display()
        )
    })?;
    let timeout = Some(Duration::from_secs(10));
    let _ = s.set_read_timeout(timeout);
    let _ = s.set_write_timeout(timeout);
    s.write_all(&proto::encode(req))
        .map_err(|e| format!("sending to {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some((resp, _)) =
            proto::decode_frame::<Response>(&buf, MAX_RESPONSE).map_err(|e| e.to_string())?
        {
            return Ok(resp);
        }
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("reading from {}: {e}", path.display()))?;
        if n == 0 {
            return Err(format!(
                "{} closed the connection without an answer",
                path.display()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
