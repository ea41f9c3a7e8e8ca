//! Minimal levelled logging to standard error, for the daemon's edge.
//!
//! One line per event: an RFC 3339 UTC timestamp, the level, the message.
//! Messages never contain key material: only public keys and names are
//! ever formatted, and secret types print as `<redacted>`.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

/// How loud a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

static LEVEL: AtomicU8 = AtomicU8::new(1);

fn rank(level: Level) -> u8 {
    match level {
        Level::Debug => 0,
        Level::Info => 1,
        Level::Warn => 2,
    }
}

/// Sets the least severe level that is printed.
pub fn set_level(level: Level) {
    LEVEL.store(rank(level), Ordering::Relaxed);
}

/// Parses `debug`, `info` or `warn`.
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s {
        "debug" => Ok(Level::Debug),
        "info" => Ok(Level::Info),
        "warn" | "warning" => Ok(Level::Warn),
        other => Err(format!(
            "unknown log level '{other}': use debug, info or warn"
        )),
    }
}

pub fn enabled(level: Level) -> bool {
    rank(level) >= LEVEL.load(Ordering::Relaxed)
}

pub fn log(level: Level, msg: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tag = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO ",
        Level::Warn => "WARN ",
    };
    let ts = crate::time::format_rfc3339(secs);
    let _ = writeln!(std::io::stderr().lock(), "{ts} {tag} {msg}");
}

macro_rules! log_info {
    ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($t)*)) };
}

macro_rules! log_warn {
    ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($t)*)) };
}

macro_rules! log_debug {
    ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($t)*)) };
}

// Crate-internal (the node's edge logs; the library's users bring their
// own logging): `crate::info!` etc., re-exported at the crate root.
pub(crate) use {log_debug as debug, log_info as info, log_warn as warn};
