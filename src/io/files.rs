//! Reading configuration files the daemon does not control: the policy
//! (possibly swapped in by a deploy tool or a ConfigMap) and key files.
//!
//! Whatever sits at the path, reading it must neither hang nor exhaust
//! memory: the file is opened with `O_NONBLOCK` (so opening a FIFO with no
//! writer does not block), checked to be a regular file on the opened
//! descriptor (so it cannot be swapped between check and read), and read
//! up to a cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Reads the regular file at `path`, refusing FIFOs, devices, sockets and
/// directories, and anything larger than `max` bytes.
pub fn read_regular_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(too_large(max));
    }
    let mut out = Vec::with_capacity(len as usize);
    // The file may grow after the check: read one byte past the cap to see.
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(out)
}

/// Reads a text file: a regular file of at most `max` bytes, UTF-8. A
/// leading UTF-8 byte order mark (some Windows editors write one) is
/// accepted and dropped.
pub fn read_text_file(path: &Path, max: u64) -> Result<String, String> {
    let bytes =
        read_regular_file(path, max).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read {}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Opens `path` for reading without blocking and checks it is a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file; refusing to read it"),
    ))
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {} bytes; refusing to read it", max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_and_oversized_files_without_hanging() {
        let dir = std::env::temp_dir().join(format!("umbra-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|s| s.success()) {
            let e = read_regular_file(&fifo, 100).unwrap_err();
            assert!(e.to_string().contains("FIFO"), "{e}");
        }
        let e = read_regular_file(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        assert!(read_regular_file(&dir, 100).is_err());
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        let e = read_regular_file(&big, 100).unwrap_err();
        assert!(e.to_string().contains("larger than 100 bytes"), "{e}");
        assert_eq!(read_regular_file(&big, 101).unwrap().len(), 101);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
