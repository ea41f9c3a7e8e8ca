//! Noticing that the policy file changed, however it was replaced.
//!
//! Editors rewrite in place, deploy tools rename a new file over the old
//! one, and Kubernetes swaps a symlink (`..data`) to a new directory when a
//! ConfigMap changes. Following the path with `stat` on every tick catches
//! all three: the identity (device, inode), size or modification time of
//! whatever the path resolves to changes. The content hash then filters out
//! touches that changed nothing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
}

impl Watcher {
    /// Starts watching `path`, whose current `content` is in force.
    pub fn new(path: &Path, content: &str) -> Self {
        Watcher {
            path: path.to_path_buf(),
            last: stamp(path),
            last_hash: Some(crate::tunnel::crypto::hash(&[content.as_bytes()])),
        }
    }

    /// The new content if the file changed since the last call; `None` if
    /// it did not (or cannot be read right now — a swap in progress).
    pub fn poll(&mut self) -> Option<String> {
        let now = stamp(&self.path);
        if now == self.last || now.is_none() {
            return None;
        }
        self.last = now;
        self.take_if_new()
    }

    /// Reads the file regardless of its stamp (SIGHUP); `None` if unchanged.
    pub fn force(&mut self) -> Option<String> {
        self.last = stamp(&self.path);
        self.take_if_new()
    }

    fn take_if_new(&mut self) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let hash = crate::tunnel::crypto::hash(&[text.as_bytes()]);
        if Some(hash) == self.last_hash {
            return None;
        }
        self.last_hash = Some(hash);
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_in_place_edits_renames_and_symlink_swaps() {
        let dir = std::env::temp_dir().join(format!("umbra-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("v1")).unwrap();
        std::fs::create_dir_all(dir.join("v2")).unwrap();
        std::fs::write(dir.join("v1/p"), "one").unwrap();
        std::fs::write(dir.join("v2/p"), "two").unwrap();
        // ConfigMap layout: p -> ..data/p, ..data -> v1
        std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/p", dir.join("p")).unwrap();
        let path = dir.join("p");
        let mut w = Watcher::new(&path, "one");
        assert_eq!(w.poll(), None);

        std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_eq!(w.poll().as_deref(), Some("two"), "symlink swap");

        std::fs::write(dir.join("new"), "three").unwrap();
        std::fs::remove_file(dir.join("p")).unwrap();
        std::fs::rename(dir.join("new"), dir.join("p")).unwrap();
        assert_eq!(w.poll().as_deref(), Some("three"), "atomic rename");

        std::fs::write(dir.join("p"), "three").unwrap();
        assert_eq!(w.poll(), None, "same content is not a change");
        assert_eq!(w.force(), None);
        std::fs::write(dir.join("p"), "four!").unwrap();
        assert_eq!(w.poll().as_deref(), Some("four!"), "in-place edit");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
