//! The confinement `umbra up` applies after setup (issue 9, defect 7),
//! exercised in a child process (it cannot be undone): unprivileged, as
//! userspace mode runs, so no root needed. The child confines itself like
//! the node does, then tries what the node does at run time — and what it
//! never does — and reports.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::confine::{apply, status, Confinement};

const CHILD: &str = "UMBRA_CONFINE_TEST_CHILD";

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("umbra-confine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cm/v1")).unwrap();
    std::fs::write(dir.join("cm/v1/mesh.policy"), "policy v1\n").unwrap();
    std::os::unix::fs::symlink("v1", dir.join("cm/..data")).unwrap();
    std::os::unix::fs::symlink("..data/mesh.policy", dir.join("cm/mesh.policy")).unwrap();
    std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    dir
}

/// Runs in the child: confine, then report each probe as `name=ok|err:...`.
fn child(dir: &Path, probe: &str) {
    let c = Confinement {
        user: None,
        keep_net_admin: false,
        reads: vec![dir.join("cm/mesh.policy"), dir.join("hosts")],
        writes: Vec::new(),
    };
    let applied = apply(&c).expect("confinement applies unprivileged");
    let r = |res: std::io::Result<()>| match res {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err:{}", e.raw_os_error().unwrap_or(0)),
    };
    let out = match probe {
        "status" => {
            let (caps, nnp, seccomp) = status();
            format!(
                "caps={caps:x} nnp={nnp} seccomp={seccomp} landlock={}",
                applied.landlock.starts_with("landlock ABI")
            )
        }
        "read-policy" => r(std::fs::read_to_string(dir.join("cm/mesh.policy")).map(drop)),
        "read-swapped" => {
            // A ConfigMap update: a new version directory and a symlink swap.
            std::fs::read_to_string(dir.join("cm/v2/mesh.policy")).map_or_else(
                |e| format!("err:{}", e.raw_os_error().unwrap_or(0)),
                |t| t.trim().to_string(),
            )
        }
        "read-hosts" => r(std::fs::read_to_string(dir.join("hosts")).map(drop)),
        "read-elsewhere" => r(std::fs::read_to_string("/etc/passwd").map(drop)),
        "write" => r(std::fs::write(dir.join("cm/v1/new"), "x")),
        "udp" => r(std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .and_then(|s| s.send_to(b"x", s.local_addr()?).map(drop))),
        "tcp" => r((|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let mut c = std::net::TcpStream::connect(l.local_addr()?)?;
            let (mut s, _) = l.accept()?;
            std::io::Write::write_all(&mut c, b"hello")?;
            let mut b = [0u8; 5];
            s.read_exact(&mut b)?;
            c.set_nonblocking(true)?;
            Ok(())
        })()),
        "ioctl" => {
            // TIOCSTI (inject terminal input) is not on the list: EPERM.
            // SAFETY: an ioctl on stdin with a pointer to a valid byte.
            let rc = unsafe { libc::ioctl(0, libc::TIOCSTI, b"x".as_ptr()) };
            format!(
                "rc={rc} errno={}",
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            )
        }
        "exec" => {
            let prog = std::ffi::CString::new("/bin/true").unwrap();
            let argv = [prog.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated program path and null-terminated
            // argument and environment arrays, alive for the call.
            let rc = unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            format!("returned rc={rc}")
        }
        _ => "unknown probe".into(),
    };
    println!("\n{probe}={out}");
}

fn run(dir: &Path, probe: &str) -> (String, std::process::ExitStatus) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "io::confine_test::confine_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{}\n{probe}", dir.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once(&format!("{probe}=")).map(|(_, v)| v))
        .unwrap_or("")
        .to_string();
    (line, out.status)
}

/// The child's entry point (does nothing unless started by `run`).
#[test]
fn confine_child() {
    if let Ok(v) = std::env::var(CHILD) {
        let (dir, probe) = v.split_once('\n').unwrap();
        child(Path::new(dir), probe);
    }
}

#[test]
fn confined_node_keeps_its_run_time_paths_and_loses_the_rest() {
    let dir = scratch();
    let (s, _) = run(&dir, "status");
    assert!(s.starts_with("caps=0 nnp=true seccomp=2"), "{s}");
    let landlock = s.ends_with("landlock=true");
    assert_eq!(run(&dir, "read-policy").0, "ok");
    assert_eq!(run(&dir, "read-hosts").0, "ok");
    assert_eq!(run(&dir, "udp").0, "ok");
    assert_eq!(run(&dir, "tcp").0, "ok");
    // An unlisted call fails with EPERM and the process lives on.
    let (s, status) = run(&dir, "ioctl");
    assert_eq!(s, format!("rc=-1 errno={}", libc::EPERM), "{status:?}");
    // Running a program kills the process (SIGSYS).
    let (s, status) = run(&dir, "exec");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{s} {status:?}");
    if landlock {
        assert_eq!(
            run(&dir, "read-elsewhere").0,
            format!("err:{}", libc::EACCES)
        );
        assert_eq!(run(&dir, "write").0, format!("err:{}", libc::EACCES));
        // A ConfigMap swap after confinement is still readable.
        std::fs::create_dir_all(dir.join("cm/v2")).unwrap();
        std::fs::write(dir.join("cm/v2/mesh.policy"), "policy v2\n").unwrap();
        assert_eq!(run(&dir, "read-swapped").0, "policy v2");
    } else {
        eprintln!("this kernel has no Landlock: file-system checks skipped");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
