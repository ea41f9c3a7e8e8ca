//! The OS edge against a real kernel: TUN device, rtnetlink and the packets
//! that cross them, each test inside its own network namespace.
//!
//! These need root (CAP_NET_ADMIN, /dev/net/tun, `ip netns`). Run as
//! another user they print why and skip; under CI (CI set) they fail
//! instead, because CI runs as root and a skipped check there hides a gap.
//!
//! How a test gets into its namespace: `ip netns add` creates a named
//! namespace, and the test body runs on a dedicated thread that first calls
//! `setns(2)`. A network namespace switch applies to the calling thread only;
//! doing it on a harness thread would leak the namespace into whatever test
//! that thread runs next, while a thread of our own ends with the test.
//! Sockets and the TUN device created on that thread stay in the namespace
//! for their whole life. A guard deletes the namespace when the test ends,
//! also when it fails.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::netlink::Netlink;
use super::tun::Tun;
use crate::net::IpNet;
use mio::{Events, Interest, Poll, Token};

const TUN_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const TUN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 2);

// ---------------------------------------------------------------- harness

/// True when the test may go on; prints why not otherwise.
fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = "needs root (network namespaces, /dev/net/tun); run the tests as root to include it";
    if std::env::var_os("CI").is_some() {
        panic!("this test {why}; CI must run as root");
    }
    // Written straight to stderr: the harness would swallow eprintln! output
    // of a passing test, and a skip must be visible.
    let _ = writeln!(std::io::stderr(), "SKIPPED: this test {why}");
    false
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd} ({e}); run scripts/ci-deps.sh to install test tools")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "umbra-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }

    /// Runs `f` on a fresh thread that has entered this namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: `ns` is an open namespace file that outlives the
                // call; setns only changes this thread's network namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {path}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `ip -n NS ARGS...`, stdout.
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn net(addr: IpAddr, prefix: u8) -> IpNet {
    IpNet::new(addr, prefix).unwrap()
}

/// A TUN device named `umbra0`, up, MTU 1420, with 10.99.0.1/24 and
/// fd00:99::1/64 — so 10.99.0.2 and fd00:99::2 are routed into it.
fn configured_tun() -> (Tun, Netlink, u32) {
    let tun = Tun::create("umbra0").expect("create TUN");
    let mut nl = Netlink::open().expect("netlink socket");
    let index = nl.link_index(tun.name()).expect("index");
    nl.set_mtu(index, 1420).expect("mtu");
    nl.add_address(index, net(TUN_V4.into(), 24))
        .expect("add v4 address");
    nl.add_address(index, net(TUN_V6.into(), 64))
        .expect("add v6 address");
    nl.set_link_up(index).expect("link up");
    wait_until_ipv6_ready();
    (tun, nl, index)
}

/// Even with IFA_F_NODAD, the kernel finishes setting up an IPv6 address
/// on a workqueue after link-up: for a moment the address is tentative (no
/// bind) and its local route missing (no replies). Wait until both are done.
fn wait_until_ipv6_ready() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bound = UdpSocket::bind((TUN_V6, 0)).is_ok();
        let local = run("ip", &["-6", "route", "show", "table", "local"]).contains("fd00:99::1 ");
        let prefix = run("ip", &["-6", "route", "show"]).contains("fd00:99::/64");
        if bound && local && prefix {
            return;
        }
        assert!(Instant::now() < deadline, "IPv6 address not ready after 5 s (bind {bound}, local route {local}, prefix route {prefix})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads packets from the TUN (through mio, as the daemon will) until one
/// matches, skipping others (e.g. the kernel's IPv6 router solicitations).
fn wait_for_packet(tun: &mut Tun, what: &str, matches: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(tun, Token(0), Interest::READABLE)
        .expect("register TUN");
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(200)))
            .expect("poll");
        loop {
            match tun.recv(&mut buf) {
                Ok(n) => {
                    if matches(&buf[..n]) {
                        poll.registry().deregister(tun).expect("deregister");
                        return buf[..n].to_vec();
                    }
                    seen.push(describe(&buf[..n]));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the TUN: {e}"),
            }
        }
    }
    panic!("no {what} came out of the TUN within 5 s; saw: {seen:?}");
}

fn describe(p: &[u8]) -> String {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => format!(
            "IPv4 proto {} to {}",
            p[9],
            Ipv4Addr::new(p[16], p[17], p[18], p[19])
        ),
        Some(6) if p.len() >= 41 => match v6_fields(p) {
            Some((next, _, dst, rest)) => format!(
                "IPv6 next header {next} (first byte {:?}) to {dst}",
                rest.first()
            ),
            None => format!("IPv6, {} bytes", p.len()),
        },
        _ => format!("{} bytes", p.len()),
    }
}

// ---------------------------------------------------------------- packets

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&[&p]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// ICMP (v4: type 8) or ICMPv6 (type 128) echo request with id/seq/data.
fn echo_request(v6: Option<(Ipv6Addr, Ipv6Addr)>, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut icmp = vec![if v6.is_some() { 128 } else { 8 }, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(data);
    let sum = match v6 {
        None => checksum(&[&icmp]),
        Some((src, dst)) => {
            // ICMPv6 checksums cover a pseudo-header.
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            checksum(&[&pseudo, &icmp])
        }
    };
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

fn v4_fields(p: &[u8]) -> Option<(u8, Ipv4Addr, Ipv4Addr, &[u8])> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0xf) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Some((p[9], src, dst, p.get(ihl..)?))
}

fn v6_fields(p: &[u8]) -> Option<(u8, Ipv6Addr, Ipv6Addr, &[u8])> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let src: [u8; 16] = p[8..24].try_into().ok()?;
    let dst: [u8; 16] = p[24..40].try_into().ok()?;
    Some((p[6], src.into(), dst.into(), &p[40..]))
}

// ---------------------------------------------------------------- tests

#[test]
fn netlink_configures_a_tun_device() {
    if !have_root() {
        return;
    }
    let ns = Netns::new();
    ns.enter(|| {
        let (tun, mut nl, index) = configured_tun();
        assert_eq!(tun.name(), "umbra0");
        // Host bits in a route are cleared: 10.98.7.7/16 is 10.98.0.0/16.
        let dest4: IpNet = "10.98.7.7/16".parse().unwrap();
        let dest6: IpNet = "fd00:98::1/48".parse().unwrap();
        nl.add_route(index, dest4).expect("v4 route");
        nl.add_route(index, dest6).expect("v6 route");

        let link = ns.ip(&["-j", "link", "show", "dev", "umbra0"]);
        assert!(link.contains("\"mtu\":1420"), "MTU not set: {link}");
        assert!(link.contains("\"UP\""), "link not up: {link}");
        assert!(
            link.contains(&format!("\"ifindex\":{index}")),
            "index mismatch: {link}"
        );
        let addrs = ns.ip(&["-j", "addr", "show", "dev", "umbra0"]);
        assert!(
            addrs.contains("\"local\":\"10.99.0.1\",\"prefixlen\":24"),
            "v4 address missing: {addrs}"
        );
        assert!(
            addrs.contains("\"local\":\"fd00:99::1\",\"prefixlen\":64"),
            "v6 address missing: {addrs}"
        );
        let routes4 = ns.ip(&["route", "show", "dev", "umbra0"]);
        assert!(
            routes4.contains("10.98.0.0/16"),
            "v4 route missing: {routes4}"
        );
        let routes6 = ns.ip(&["-6", "route", "show", "dev", "umbra0"]);
        assert!(
            routes6.contains("fd00:98::/48"),
            "v6 route missing: {routes6}"
        );

        // Failures say what was being done and carry the errno.
        let dup = nl.add_address(index, net(TUN_V4.into(), 24)).unwrap_err();
        assert_eq!(dup.errno(), Some(libc::EEXIST), "{dup}");
        assert!(
            dup.to_string().contains("adding address 10.99.0.1/24"),
            "{dup}"
        );
        let missing = nl.link_index("nosuch0").unwrap_err();
        assert_eq!(missing.errno(), Some(libc::ENODEV), "{missing}");
        assert!(missing.to_string().contains("nosuch0"), "{missing}");
        // A prefix too long for its family cannot even be expressed.
        assert_eq!(IpNet::new(dest4.addr(), 33), None);

        // And everything can be taken back.
        nl.del_route(index, dest4).expect("del v4 route");
        nl.del_route(index, dest6).expect("del v6 route");
        nl.del_address(index, net(TUN_V4.into(), 24))
            .expect("del v4 address");
        nl.del_address(index, net(TUN_V6.into(), 64))
            .expect("del v6 address");
        nl.set_link_down(index).expect("link down");
        let addrs = ns.ip(&["-j", "addr", "show", "dev", "umbra0"]);
        assert!(
            !addrs.contains("10.99.0.1") && !addrs.contains("fd00:99::1"),
            "addresses left: {addrs}"
        );
        assert!(!ns
            .ip(&["route", "show", "dev", "umbra0"])
            .contains("10.98.0.0"));
        assert!(!ns
            .ip(&["-6", "route", "show", "dev", "umbra0"])
            .contains("fd00:98::"));
        assert!(!ns
            .ip(&["-j", "link", "show", "dev", "umbra0"])
            .contains("\"UP\""));
        let gone = nl.del_route(index, dest4).unwrap_err();
        assert_eq!(gone.errno(), Some(libc::ESRCH), "{gone}");

        // Not persistent: dropping the device removes it.
        drop(tun);
        let err = nl.link_index("umbra0").unwrap_err();
        assert_eq!(
            err.errno(),
            Some(libc::ENODEV),
            "device still there after drop: {err}"
        );
    });
}

#[test]
fn kernel_traffic_to_tunnel_addresses_comes_out_of_the_tun() {
    if !have_root() {
        return;
    }
    let ns = Netns::new();
    ns.enter(|| {
        let (mut tun, _nl, _) = configured_tun();

        // UDP over IPv4.
        let sock = UdpSocket::bind((TUN_V4, 0)).expect("bind in namespace");
        sock.send_to(b"hello over v4", (PEER_V4, 9999)).expect("send");
        let p = wait_for_packet(&mut tun, "IPv4 UDP datagram", |p| {
            matches!(v4_fields(p), Some((17, _, dst, _)) if dst == PEER_V4)
        });
        let (_, src, _, udp) = v4_fields(&p).unwrap();
        assert_eq!(src, TUN_V4);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 9999);
        assert_eq!(&udp[8..], b"hello over v4");

        // UDP over IPv6.
        let sock6 = UdpSocket::bind((TUN_V6, 0)).expect("bind v6 in namespace");
        sock6.send_to(b"hello over v6", (PEER_V6, 9999)).expect("send v6");
        let p = wait_for_packet(&mut tun, "IPv6 UDP datagram", |p| {
            matches!(v6_fields(p), Some((17, _, dst, _)) if dst == PEER_V6)
        });
        let (_, src, _, udp) = v6_fields(&p).unwrap();
        assert_eq!(src, TUN_V6);
        assert_eq!(&udp[8..], b"hello over v6");

        // ping, the real command, routed into the TUN.
        let mut ping = Command::new("ping")
            .args(["-c", "1", "-W", "2", "-p", "c0ffee", &PEER_V4.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("cannot run ping (iputils-ping); run scripts/ci-deps.sh");
        let p = wait_for_packet(&mut tun, "ICMP echo request from ping", |p| {
            matches!(v4_fields(p), Some((1, _, dst, icmp)) if dst == PEER_V4 && icmp.first() == Some(&8))
        });
        // Nobody answers it, so stop ping instead of waiting out its timeout.
        let _ = ping.kill();
        let _ = ping.wait();
        let (_, _, _, icmp) = v4_fields(&p).unwrap();
        assert!(icmp.windows(3).any(|w| w == [0xc0, 0xff, 0xee]), "ping's pattern missing");
    });
}

#[test]
fn packets_written_to_the_tun_reach_the_kernel() {
    if !have_root() {
        return;
    }
    let ns = Netns::new();
    ns.enter(|| {
        let (mut tun, _nl, _) = configured_tun();

        // An echo request from the "peer" gets the kernel's echo reply back.
        let request = ipv4_packet(PEER_V4, TUN_V4, 1, &echo_request(None, 0x1234, 7, b"umbra"));
        assert_eq!(tun.send(&request).expect("write to TUN"), request.len());
        let reply = wait_for_packet(&mut tun, "ICMP echo reply", |p| {
            matches!(v4_fields(p), Some((1, _, dst, icmp)) if dst == PEER_V4 && icmp.first() == Some(&0))
        });
        let (_, src, _, icmp) = v4_fields(&reply).unwrap();
        assert_eq!(src, TUN_V4);
        assert_eq!(&icmp[4..8], &[0x12, 0x34, 0, 7], "id/seq not echoed");
        assert_eq!(&icmp[8..], b"umbra");

        // The same over IPv6.
        let icmp6 = echo_request(Some((PEER_V6, TUN_V6)), 0x4321, 9, b"umbra6");
        let request = ipv6_packet(PEER_V6, TUN_V6, 58, &icmp6);
        tun.send(&request).expect("write v6 to TUN");
        let reply = wait_for_packet(&mut tun, "ICMPv6 echo reply", |p| {
            matches!(v6_fields(p), Some((58, _, dst, icmp)) if dst == PEER_V6 && icmp.first() == Some(&129))
        });
        let (_, _, _, icmp) = v6_fields(&reply).unwrap();
        assert_eq!(&icmp[4..8], &[0x43, 0x21, 0, 9]);
        assert_eq!(&icmp[8..], b"umbra6");

        // A UDP datagram written to the TUN is delivered to a local socket.
        let sock = UdpSocket::bind((TUN_V4, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let mut udp = Vec::new();
        udp.extend_from_slice(&5555u16.to_be_bytes());
        udp.extend_from_slice(&port.to_be_bytes());
        udp.extend_from_slice(&(8u16 + 8).to_be_bytes());
        udp.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
        udp.extend_from_slice(b"from tun");
        tun.send(&ipv4_packet(PEER_V4, TUN_V4, 17, &udp)).expect("write UDP to TUN");
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).expect("datagram from the TUN");
        assert_eq!(&buf[..n], b"from tun");
        assert_eq!(from, (PEER_V4, 5555).into());
    });
}

#[test]
fn tun_name_patterns_and_conflicts() {
    if !have_root() {
        return;
    }
    let ns = Netns::new();
    ns.enter(|| {
        let a = Tun::create("umb%d").expect("pattern name");
        assert!(
            a.name().starts_with("umb") && a.name() != "umb%d",
            "kernel name: {}",
            a.name()
        );
        let b = Tun::create("").expect("kernel-chosen name");
        assert!(!b.name().is_empty());
        assert_ne!(a.name(), b.name());
        let taken = Tun::create(a.name());
        // A second open of a name in use fails (EBUSY) rather than sharing.
        assert!(taken.is_err(), "two devices with one name");
        let err = Tun::create("much-too-long-name").unwrap_err();
        assert!(err.to_string().contains("longer than 15 bytes"), "{err}");
    });
}
