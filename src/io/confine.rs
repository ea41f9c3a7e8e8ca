//! Confinement after setup (issue 9): once the TUN device, netlink socket,
//! UDP sockets and signal handling exist, `umbra up` gives up what it no
//! longer needs, in this order:
//!
//! 1. capabilities: the bounding set is cut to what is kept — only
//!    `CAP_NET_ADMIN` in TUN mode (a reload may add or remove routes), none
//!    in userspace mode — and, with `--user`, the process becomes that user
//!    (groups, gid, uid) keeping only that set;
//! 2. no-new-privs: nothing it could execute gains privileges;
//! 3. Landlock (where the kernel has it): the file system becomes read-only
//!    and limited to what a reload reads — the policy file's directory (a
//!    ConfigMap swaps a symlink there) and the hosts file's directory;
//! 4. seccomp: an allow-list of the system calls the event loop makes.
//!    Anything else fails with `EPERM` — the node logs the failed operation
//!    and carries on — except `execve`/`execveat`, which kill the process:
//!    nothing in umbra ever runs a program, so that call is an attacker's.
//!    See docs/security.md for why not kill on everything.
//!
//! Every step is a plain system call through `libc`; the unsafe blocks are
//! here, each with its `SAFETY:` comment.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What to give up.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Become this user (a name from /etc/passwd, or `UID[:GID]`).
    pub user: Option<String>,
    /// Keep `CAP_NET_ADMIN` (TUN mode: routes change on reload).
    pub keep_net_admin: bool,
    /// Files a reload reads; their directories stay readable under Landlock.
    pub reads: Vec<PathBuf>,
    /// Directories the node writes to at run time (none today).
    pub writes: Vec<PathBuf>,
}

/// What was actually applied, for the start-up log line.
#[derive(Debug, Clone)]
pub struct Applied {
    pub uid: u32,
    pub gid: u32,
    pub capabilities: &'static str,
    pub landlock: String,
    pub seccomp: &'static str,
}

const CAP_NET_ADMIN: u32 = 12;

/// Resolves `--user`: a name from /etc/passwd (no NSS: the binary is
/// static), or numeric `UID[:GID]`. Call before confining (it reads a file).
pub fn resolve_user(user: &str) -> Result<(u32, u32), String> {
    if let Some((u, g)) = user.split_once(':') {
        if let (Ok(u), Ok(g)) = (u.parse(), g.parse()) {
            return Ok((u, g));
        }
    }
    if let Ok(u) = user.parse::<u32>() {
        return Ok((u, u));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| {
        format!("--user {user}: cannot read /etc/passwd: {e}; give UID:GID instead")
    })?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.first() == Some(&user) {
            if let (Some(Ok(u)), Some(Ok(g))) = (
                f.get(2).map(|s| s.parse::<u32>()),
                f.get(3).map(|s| s.parse::<u32>()),
            ) {
                return Ok((u, g));
            }
        }
    }
    Err(format!(
        "--user {user}: no such user in /etc/passwd; give a user name or UID:GID"
    ))
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// Applies the confinement. On error the process may be half confined;
/// the caller stops (a node that asked to be confined must not run open).
pub fn apply(c: &Confinement) -> Result<Applied, String> {
    let target = c.user.as_deref().map(resolve_user).transpose()?;
    // Directories to keep, resolved before Landlock takes effect.
    let reads = dirs_of(&c.reads);
    let keep: u64 = if c.keep_net_admin {
        1 << CAP_NET_ADMIN
    } else {
        0
    };
    drop_capabilities(keep, target)?;
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_err("cannot set no-new-privs"));
    }
    // Landlock and seccomp may be refused by the environment (an older
    // kernel, a container runtime's own seccomp profile): the node then
    // runs without that layer and says so, rather than not at all.
    let landlock = match super::landlock::restrict(&reads, &c.writes) {
        Ok(Some(abi)) => format!("landlock ABI {abi}: read-only {}", show(&reads)),
        Ok(None) => "landlock not available in this kernel".to_string(),
        Err(e) => format!("NO landlock ({e})"),
    };
    let seccomp = super::seccomp::install().unwrap_or_else(|e| {
        crate::warn!("{e}; running without a seccomp filter");
        "not installed"
    });
    // SAFETY: getuid/getgid cannot fail and take no arguments.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Ok(Applied {
        uid,
        gid,
        capabilities: if c.keep_net_admin {
            "CAP_NET_ADMIN only"
        } else {
            "none"
        },
        landlock,
        seccomp,
    })
}

fn show(dirs: &[PathBuf]) -> String {
    let v: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    v.join(", ")
}

/// The directories holding `files`, both as named and as their symlinks
/// resolve (a ConfigMap's file is a symlink into a versioned directory).
fn dirs_of(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for f in files {
        let named = f.parent().map(Path::to_path_buf);
        let real = std::fs::canonicalize(f)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        for d in [named, real].into_iter().flatten() {
            let d = if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            };
            let d = std::fs::canonicalize(&d).unwrap_or(d);
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// Cuts the bounding set to `keep`, becomes `target` if given, and leaves
/// exactly `keep` permitted and effective (nothing inheritable or ambient).
fn drop_capabilities(keep: u64, target: Option<(u32, u32)>) -> Result<(), String> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && keep != 0 && target.is_none() {
        // Already unprivileged with file capabilities or ambient ones: keep
        // what we have of `keep`, drop the rest below.
    }
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: integer arguments only; EINVAL past the last capability.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINVAL) => break,
                // Without CAP_SETPCAP the bounding set cannot shrink; the
                // capset below still leaves nothing usable.
                Some(libc::EPERM) => break,
                _ => return Err(format!("cannot drop capability {cap}: {e}")),
            }
        }
    }
    // SAFETY: integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    if let Some((uid, gid)) = target {
        // SAFETY: integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            return Err(os_err("cannot keep capabilities across the user change"));
        }
        // SAFETY: a zero-length group list with a null pointer is valid.
        if root && unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            return Err(os_err("cannot drop supplementary groups"));
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(os_err(&format!("cannot change to group {gid}")));
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(os_err(&format!("cannot change to user {uid}")));
        }
        // SAFETY: integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    }
    set_caps(keep)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn set_caps(keep: u64) -> Result<(), String> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, which live on
    // this stack frame for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r != 0 {
        return Err(os_err("cannot set capabilities"));
    }
    Ok(())
}

/// The effective capabilities, the no-new-privs flag and the seccomp mode
/// of the calling thread, asked of the kernel directly (under Landlock
/// /proc is out of reach); for tests.
#[cfg(test)]
pub fn status() -> (u64, bool, i32) {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data structs into `data`, which is large
    // enough and lives for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    let caps = if r == 0 {
        u64::from(data[0].effective) | (u64::from(data[1].effective) << 32)
    } else {
        u64::MAX
    };
    // SAFETY: integer arguments only.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1;
    // SAFETY: integer arguments only.
    let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    (caps, nnp, seccomp)
}

/// A C path for a system call.
pub(super) fn c_path(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("{}: path contains a NUL byte", p.display()))
}
