//! Landlock: after setup the node's file system view becomes read-only and
//! limited to the directories a reload reads (the policy's, the hosts
//! file's). Kernels without Landlock (before 5.13, or with it disabled) are
//! left as they are and the log says so.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::confine::c_path;

// From <linux/landlock.h>.
const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
/// ABI 1: everything from EXECUTE to MAKE_SYM (bits 0..=12).
const ABI1_ALL: u64 = (1 << 13) - 1;
/// ABI 2 adds REFER (bit 13), ABI 3 TRUNCATE (bit 14), ABI 5 IOCTL_DEV (15).
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Restricts the process to reading beneath `reads` and writing beneath
/// `writes`. Returns the Landlock ABI used, or `None` if the kernel has no
/// Landlock.
pub fn restrict(reads: &[PathBuf], writes: &[PathBuf]) -> Result<Option<i64>, String> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // only returns the ABI version; no memory is read.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Ok(None);
    }
    let mut handled = ABI1_ALL;
    if abi >= 2 {
        handled |= REFER;
    }
    if abi >= 3 {
        handled |= TRUNCATE;
    }
    if abi >= 5 {
        handled |= IOCTL_DEV;
    }
    let attr = RulesetAttr {
        handled_access_fs: handled,
    };
    // SAFETY: `attr` is a valid ruleset attribute of the size passed, alive
    // for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot create a Landlock ruleset: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for d in reads {
        allow(&ruleset, d, READ_FILE | READ_DIR)?;
    }
    let write_access = handled & !EXECUTE;
    for d in writes {
        allow(&ruleset, d, write_access)?;
    }
    // SAFETY: integer arguments and a descriptor we own; no-new-privs is
    // already set, as the kernel requires.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    if r != 0 {
        return Err(format!(
            "cannot enforce the Landlock ruleset: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Some(abi))
}

fn allow(ruleset: &OwnedFd, dir: &Path, access: u64) -> Result<(), String> {
    let path = c_path(dir)?;
    // SAFETY: `path` is a NUL-terminated string alive for the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "cannot open {} for Landlock: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let is_dir = dir.is_dir();
    let access = if is_dir {
        access
    } else {
        access & (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE)
    };
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: fd.as_raw_fd(),
    };
    // SAFETY: `attr` is a valid path-beneath attribute alive for the call;
    // both descriptors are ours and open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot add a Landlock rule for {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
