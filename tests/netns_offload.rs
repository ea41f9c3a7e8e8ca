//! TUN offloads against a real kernel: two namespaces, each with a TUN
//! device opened with `IFF_VNET_HDR` + TSO, bridged by this test the way
//! the daemon's loop uses them (recv segments from one, queue them on the
//! other, flush at the end of each batch), with a TCP transfer each way
//! through the bridge.
//!
//! What it proves: the kernel hands over GSO super-packets longer than the
//! MTU (so segmentation runs), it accepts the coalesced super-packets we
//! write (a write it refused fails the test; one with a wrong checksum or
//! header would stall or corrupt the stream), and every byte arrives intact
//! and in order (each side checks the stream against the same generator),
//! over IPv4 and over IPv6.
//!
//! Needs root; skips with a message otherwise, fails under CI.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use umbra::io::tun::Tun;
use umbra::io::tun_offload::OffloadStats;

const MTU: usize = 1420;
/// Bytes sent A -> B and B -> A: far more than every buffer on the path.
const UP: usize = 24 << 20;
const DOWN: usize = 6 << 20;

fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = "needs root (network namespaces, /dev/net/tun)";
    assert!(
        std::env::var_os("CI").is_none(),
        "this test {why}; CI must run as root"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED: this test {why}");
    false
}

fn run(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip ({e})"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("umbra-o{}-{tag}{n}", std::process::id());
        run(&["netns", "add", &name]);
        Netns(name)
    }

    /// Runs `f` on a thread that entered this namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&self.0);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Moves the calling thread into namespace `name`.
fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: `ns` is an open namespace file that outlives the call; setns
    // only changes this thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A TUN with offloads in `ns`, up, with `addr`/`prefix`.
fn tun_in(ns: &Netns, addr: &str, prefix: u8) -> Tun {
    let tun = ns.enter(|| Tun::create_offload("uo0").expect("create TUN"));
    assert!(tun.offloads().tso, "the kernel refused TSO on a TUN device");
    let n = &ns.0;
    run(&["-n", n, "link", "set", "lo", "up"]);
    run(&[
        "-n",
        n,
        "link",
        "set",
        tun.name(),
        "mtu",
        &MTU.to_string(),
        "up",
    ]);
    let cidr = format!("{addr}/{prefix}");
    let mut args = vec!["-n", n, "addr", "add", &cidr, "dev", tun.name()];
    if addr.contains(':') {
        args.push("nodad");
    }
    run(&args);
    tun
}

/// The byte at `i` of the stream both ends generate.
fn byte(seed: u64, i: usize) -> u8 {
    let x = (i as u64 / 8)
        .wrapping_add(seed)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> ((i % 8) * 8)) as u8
}

fn send_stream(s: &mut TcpStream, seed: u64, len: usize) {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0;
    while at < len {
        let n = buf.len().min(len - at);
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = byte(seed, at + k);
        }
        s.write_all(&buf[..n]).expect("send");
        at += n;
    }
}

fn check_stream(s: &mut TcpStream, seed: u64, len: usize) {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0;
    while at < len {
        let n = s.read(&mut buf).expect("receive");
        assert!(n > 0, "stream ended after {at} of {len} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte(seed, at + k), "byte {} corrupted", at + k);
        }
        at += n;
    }
}

/// Moves packets between the two devices until `done`: each wake-up drains
/// one device into the other's coalescer, then flushes both.
fn bridge(a: &mut Tun, b: &mut Tun, done: &AtomicBool) {
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(a, Token(0), Interest::READABLE)
        .expect("register");
    poll.registry()
        .register(b, Token(1), Interest::READABLE)
        .expect("register");
    let mut events = Events::with_capacity(4);
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "transfer still running after 120 s"
        );
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .expect("poll");
        drain(a, b, &mut buf);
        drain(b, a, &mut buf);
        a.flush().expect("flush");
        b.flush().expect("flush");
    }
}

/// Accepts one connection within 15 s.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match listener.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false).unwrap();
                return c;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection within 15 s");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Connects through the bridge, retrying while the new addresses settle.
fn connect(server: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&server, Duration::from_secs(5)) {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect to {server}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Reads every waiting packet from `from` and queues it on `to`.
fn drain(from: &mut Tun, to: &mut Tun, buf: &mut [u8]) {
    loop {
        match from.recv(buf) {
            Ok(n) => {
                assert!(n <= MTU, "a segment of {n} bytes, MTU {MTU}");
                to.queue(&buf[..n]).expect("write to TUN");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read from TUN: {e}"),
        }
    }
}

fn transfer(a_addr: &str, b_addr: &str, prefix: u8) -> (OffloadStats, OffloadStats) {
    let (na, nb) = (Netns::new("a"), Netns::new("b"));
    let mut ta = tun_in(&na, a_addr, prefix);
    let mut tb = tun_in(&nb, b_addr, prefix);
    let server: SocketAddr = (b_addr.parse::<IpAddr>().unwrap(), 5201).into();
    let listener = nb.enter(|| TcpListener::bind(server).expect("listen"));
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let srv = s.spawn(|| {
            let mut c = accept(&listener);
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            check_stream(&mut c, 1, UP);
            send_stream(&mut c, 2, DOWN);
        });
        let cli = s.spawn(|| {
            enter(&na.0);
            let mut c = connect(server);
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            send_stream(&mut c, 1, UP);
            check_stream(&mut c, 2, DOWN);
        });
        let br = s.spawn(|| bridge(&mut ta, &mut tb, &done));
        let results = [srv.join(), cli.join()];
        done.store(true, Ordering::Relaxed);
        br.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        for r in results {
            r.unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    (ta.offload_stats(), tb.offload_stats())
}

fn check(family: &str, a: OffloadStats, b: OffloadStats) {
    eprintln!("{family}: A {a:?}\n{family}: B {b:?}");
    for (side, st) in [("A", a), ("B", b)] {
        assert_eq!(st.dropped, 0, "{family} {side}: dropped {:?}", st.last_drop);
        assert!(
            st.super_packets > 0,
            "{family} {side}: the kernel sent no GSO packet"
        );
        assert!(
            st.largest_read > 2 * MTU,
            "{family} {side}: largest read {} bytes, not a super-packet",
            st.largest_read
        );
        assert!(
            st.coalesced_writes > 0,
            "{family} {side}: nothing coalesced"
        );
    }
    // The bulk direction coalesces well: many segments per write.
    assert!(
        b.coalesced_segments >= 4 * b.coalesced_writes,
        "{family}: {} segments in {} coalesced writes",
        b.coalesced_segments,
        b.coalesced_writes
    );
}

#[test]
fn tcp_through_offloading_tuns() {
    if !have_root() {
        return;
    }
    let (a, b) = transfer("10.98.0.1", "10.98.0.2", 24);
    check("IPv4", a, b);
    let (a, b) = transfer("fd00:98::1", "fd00:98::2", 64);
    check("IPv6", a, b);
}
