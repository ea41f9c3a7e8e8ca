//! seccomp: after setup, only the system calls the running node makes are
//! allowed. Others fail with `EPERM` (the node logs the failed operation and
//! keeps forwarding); `execve` and `execveat` kill the process, since umbra
//! never runs a program. docs/security.md explains the choice.
//!
//! The list covers the event loop (mio/epoll, UDP, TUN reads and writes,
//! signalfd), reloads (stat, open and read the policy and hosts files,
//! rtnetlink route changes over the already open socket), the userspace
//! stack (new TCP/UDP sockets, connect, accept, non-blocking ioctls),
//! memory allocation, time, randomness, logging to stderr, and aborting.

use std::io;

#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// offsetof(struct seccomp_data, ...)
const NR: u32 = 0;
const ARCH: u32 = 4;
/// Low 32 bits of args[0] and args[1] (little-endian targets only).
const ARG0_LO: u32 = 16;
const ARG1_LO: u32 = 24;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const DENY: u32 = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);

/// System calls allowed with any arguments.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const ALLOWED: &[libc::c_long] = &[
    // files and descriptors (reloads read the policy and hosts files)
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_unlinkat,
    // sockets: UDP, rtnetlink, the userspace stack's host sockets
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    // the event loop
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_eventfd2,
    libc::SYS_pipe2,
    libc::SYS_signalfd4,
    // memory
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_madvise,
    // signals, threads, time, randomness
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_tgkill,
    libc::SYS_uname,
    libc::SYS_prlimit64,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_capget,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_select,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
];

/// ioctl requests allowed (std and mio set non-blocking and close-on-exec
/// this way); any other ioctl is denied.
const IOCTLS: &[libc::c_ulong] = &[libc::FIONBIO, libc::FIOCLEX, libc::FIONCLEX, libc::FIONREAD];

/// prctl options allowed: reading the confinement, naming threads.
const PRCTLS: &[libc::c_int] = &[
    libc::PR_SET_NAME,
    libc::PR_GET_NAME,
    libc::PR_GET_NO_NEW_PRIVS,
    libc::PR_GET_SECCOMP,
    libc::PR_CAPBSET_READ,
];

/// Calls that mean code execution was hijacked: kill at once.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const KILLED: &[libc::c_long] = &[libc::SYS_execve, libc::SYS_execveat];

fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The filter program.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn program() -> Vec<SockFilter> {
    let mut p = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, KILL),
        stmt(LD_W_ABS, NR),
        // x32 system calls (bit 30) on x86_64: not ours.
        jump(JGE_K, 0x4000_0000, 0, 1),
        stmt(RET_K, DENY),
    ];
    for &nr in ALLOWED {
        p.push(jump(JEQ_K, nr as u32, 0, 1));
        p.push(stmt(RET_K, ALLOW));
    }
    for &nr in KILLED {
        p.push(jump(JEQ_K, nr as u32, 0, 1));
        p.push(stmt(RET_K, KILL));
    }
    // prctl: check the option, then deny.
    p.push(jump(
        JEQ_K,
        libc::SYS_prctl as u32,
        0,
        (PRCTLS.len() * 2 + 2) as u8,
    ));
    p.push(stmt(LD_W_ABS, ARG0_LO));
    for &opt in PRCTLS {
        p.push(jump(JEQ_K, opt as u32, 0, 1));
        p.push(stmt(RET_K, ALLOW));
    }
    p.push(stmt(RET_K, DENY));
    p.push(stmt(LD_W_ABS, NR));
    // ioctl: check the request, then deny.
    p.push(jump(
        JEQ_K,
        libc::SYS_ioctl as u32,
        0,
        (IOCTLS.len() * 2 + 2) as u8,
    ));
    p.push(stmt(LD_W_ABS, ARG1_LO));
    for &req in IOCTLS {
        p.push(jump(JEQ_K, req as u32, 0, 1));
        p.push(stmt(RET_K, ALLOW));
    }
    p.push(stmt(RET_K, DENY));
    p.push(stmt(RET_K, DENY));
    p
}

/// Installs the filter on every thread of the process. Returns how it
/// treats a call not on the list, for the log.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn install() -> Result<&'static str, String> {
    let filter = program();
    let prog = SockFprog {
        len: u16::try_from(filter.len()).map_err(|_| "seccomp filter too long".to_string())?,
        filter: filter.as_ptr(),
    };
    // SAFETY: `prog` points at `filter`, a valid BPF program of `len`
    // instructions that outlives the call (the kernel copies it).
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const SockFprog,
        )
    };
    if r != 0 {
        return Err(format!(
            "cannot install the seccomp filter: {}",
            io::Error::last_os_error()
        ));
    }
    Ok("allow-list; other calls fail with EPERM, execve kills")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn install() -> Result<&'static str, String> {
    Ok("not available on this architecture (only x86_64 and aarch64 have a list)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let p = program();
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(i + 1 + (ins.jt as usize) < p.len(), "jt at {i}");
                assert!(i + 1 + (ins.jf as usize) < p.len(), "jf at {i}");
            }
        }
        assert_eq!(p.last().map(|i| i.k), Some(DENY));
    }
}
