//! Noticing that the policy file changed, however it was replaced.
//!
//! Editors rewrite in place, deploy tools rename a new file over the old
//! one, and Kubernetes swaps a symlink (`..data`) to a new directory when a
//! ConfigMap changes. Following the path with `stat` on every tick catches
//! all three: the identity (device, inode), size or modification time of
//! whatever the path resolves to changes. The content hash then filters out
//! touches that changed nothing.
//!
//! A file being written in place is not read until its stamp has stayed the
//! same for [`SETTLE`]: a writer that emits the nodes first and the rules a
//! moment later must not get its half-written file applied (issue 9). A
//! file swapped in whole (a rename, a symlink swap: a new inode) only has to
//! stay put for [`SETTLE_SWAPPED`], in case it was created at the path and
//! is still being written. The
//! stamp is taken again after reading, and a file that changed meanwhile
//! is read again later. Reads are capped at 16 MiB, and only
//! regular files are read (a FIFO or a device at the path would hang the
//! node or exhaust its memory).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a file changed in place must stay unchanged before it is read.
pub const SETTLE: Duration = Duration::from_millis(1000);
/// The same for a file that replaced the old one (another inode).
pub const SETTLE_SWAPPED: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

pub struct Watcher {
    path: PathBuf,
    last: Option<Stamp>,
    last_hash: Option<[u8; 32]>,
    /// A change seen but not yet settled: its stamp and when it was first seen.
    settling: Option<(Stamp, Instant)>,
}

impl Watcher {
    /// Starts watching `path`, whose current `content` is in force.
    pub fn new(path: &Path, content: &str) -> Self {
        Watcher {
            path: path.to_path_buf(),
            last: stamp(path),
            last_hash: Some(crate::tunnel::crypto::hash(&[content.as_bytes()])),
            settling: None,
        }
    }

    /// The new content once the file changed and then stayed unchanged for
    /// [`SETTLE`]; `None` if it did not change, is still settling, or
    /// cannot be read right now (a swap in progress). Call every tick.
    pub fn poll(&mut self, now: Instant) -> Option<Result<String, String>> {
        let current = stamp(&self.path)?;
        if Some(current) == self.last {
            self.settling = None;
            return None;
        }
        match self.settling {
            Some((s, since)) if s == current => {
                let swapped = self
                    .last
                    .is_none_or(|l| (l.dev, l.ino) != (current.dev, current.ino));
                let settle = if swapped { SETTLE_SWAPPED } else { SETTLE };
                if now.saturating_duration_since(since) < settle {
                    return None;
                }
            }
            _ => {
                self.settling = Some((current, now));
                return None;
            }
        }
        let read = self.read_if_new();
        if let Some(Ok(_)) | None = read {
            if stamp(&self.path) != Some(current) {
                // Written to while we read: settle again.
                self.settling = None;
                return None;
            }
        }
        self.settling = None;
        self.last = Some(current);
        read
    }

    /// Reads the file regardless of its stamp (SIGHUP); `None` if unchanged.
    pub fn force(&mut self) -> Option<Result<String, String>> {
        self.last = stamp(&self.path);
        self.settling = None;
        self.read_if_new()
    }

    fn read_if_new(&mut self) -> Option<Result<String, String>> {
        let text = match super::read_policy_file(&self.path) {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        let hash = crate::tunnel::crypto::hash(&[text.as_bytes()]);
        if Some(hash) == self.last_hash {
            return None;
        }
        self.last_hash = Some(hash);
        Some(Ok(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("umbra-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Polls as the event loop does, one tick at a time, for `d`.
    fn poll_for(w: &mut Watcher, t: &mut Instant, d: Duration) -> Option<Result<String, String>> {
        let end = *t + d;
        while *t < end {
            *t += crate::tunnel::timers::TICK;
            if let Some(r) = w.poll(*t) {
                return Some(r);
            }
        }
        None
    }

    #[test]
    fn sees_in_place_edits_renames_and_symlink_swaps() {
        let dir = scratch("kinds");
        std::fs::create_dir_all(dir.join("v1")).unwrap();
        std::fs::create_dir_all(dir.join("v2")).unwrap();
        std::fs::write(dir.join("v1/p"), "one").unwrap();
        std::fs::write(dir.join("v2/p"), "two").unwrap();
        // ConfigMap layout: p -> ..data/p, ..data -> v1
        std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/p", dir.join("p")).unwrap();
        let path = dir.join("p");
        let mut w = Watcher::new(&path, "one");
        let mut t = Instant::now();
        let settle = SETTLE * 2;
        assert_eq!(poll_for(&mut w, &mut t, settle), None);

        std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_eq!(
            poll_for(&mut w, &mut t, settle),
            Some(Ok("two".into())),
            "symlink swap"
        );

        std::fs::write(dir.join("new"), "three").unwrap();
        std::fs::remove_file(dir.join("p")).unwrap();
        std::fs::rename(dir.join("new"), dir.join("p")).unwrap();
        assert_eq!(
            poll_for(&mut w, &mut t, settle),
            Some(Ok("three".into())),
            "atomic rename"
        );

        std::fs::write(dir.join("p"), "three").unwrap();
        assert_eq!(
            poll_for(&mut w, &mut t, settle),
            None,
            "same content is not a change"
        );
        assert_eq!(w.force(), None);
        std::fs::write(dir.join("p"), "four!").unwrap();
        assert_eq!(
            poll_for(&mut w, &mut t, settle),
            Some(Ok("four!".into())),
            "in-place edit"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 9: a policy rewritten in place, nodes first and the rules
    /// 400 ms later, must never be applied half-written.
    #[test]
    fn a_file_written_in_two_steps_is_read_only_when_complete() {
        let dir = scratch("torn");
        let path = dir.join("p");
        std::fs::write(&path, "nodes\nrules\n").unwrap();
        let mut w = Watcher::new(&path, "nodes\nrules\n");
        let mut t = Instant::now();
        std::fs::write(&path, "nodes v2\n").unwrap();
        assert_eq!(
            poll_for(&mut w, &mut t, Duration::from_millis(400)),
            None,
            "the half-written file was read"
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"rules v2\n").unwrap();
        assert_eq!(
            poll_for(&mut w, &mut t, SETTLE * 2),
            Some(Ok("nodes v2\nrules v2\n".into()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fifo_or_device_swapped_in_is_refused_not_read() {
        let dir = scratch("fifo");
        let path = dir.join("p");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let mut w = Watcher::new(&path, "old");
        let e = w.force().unwrap().unwrap_err();
        assert!(e.contains("character device"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
