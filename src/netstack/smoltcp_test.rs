//! Pins the behaviour of the vendored smoltcp patch (vendor/smoltcp,
//! PATCHES.md) on one socket as the userspace data plane makes it
//! ([`super::tcp_socket`]), talking to a peer whose segments the test
//! writes by hand. Each test fails on stock smoltcp 0.14.0.

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, IpProtocol, Ipv4Address,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::device::Queues;
use super::tcp_socket;

const US: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const PEER: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const US_PORT: u16 = 40000;
const PEER_PORT: u16 = 7;
const PEER_ISS: TcpSeqNumber = TcpSeqNumber(1000);

/// A TCP segment our socket sent, as the test needs it.
#[derive(Debug)]
struct Seg {
    seq: TcpSeqNumber,
    ack: Option<TcpSeqNumber>,
    len: usize,
    control: TcpControl,
}

/// Our stack with one socket connected to a scripted peer.
struct Harness {
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    /// Our initial sequence number + 1: the first data byte.
    first: TcpSeqNumber,
    now: i64,
}

impl Harness {
    /// Connects and completes the handshake (peer window 64 KiB, MSS 1380).
    fn established() -> Harness {
        let mut dev = Queues::new(256, 1420);
        let mut ic = IfaceConfig::new(HardwareAddress::Ip);
        ic.random_seed = 7;
        let mut iface = Interface::new(ic, &mut dev, Instant::from_millis(0));
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(US), 24)).unwrap());
        let mut sockets = SocketSet::new(Vec::new());
        let mut s = tcp_socket(64 * 1024);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(US)),
            port: US_PORT,
        };
        s.connect(
            iface.context(),
            IpEndpoint::new(IpAddress::Ipv4(PEER), PEER_PORT),
            local,
        )
        .unwrap();
        let handle = sockets.add(s);
        let mut h = Harness {
            iface,
            dev,
            sockets,
            handle,
            first: TcpSeqNumber(0),
            now: 0,
        };
        let syn = h.poll(0);
        assert_eq!(syn.len(), 1);
        assert_eq!(syn[0].control, TcpControl::Syn);
        h.first = syn[0].seq + 1;
        let mut synack = h.peer(PEER_ISS, h.first, 65535, &[]);
        synack.control = TcpControl::Syn;
        synack.max_seg_size = Some(1380);
        h.inject(&synack);
        h.poll(1);
        assert_eq!(h.sock().state(), tcp::State::Established);
        h
    }

    fn sock(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    /// A segment from the peer (no window scaling was negotiated).
    fn peer(
        &self,
        seq: TcpSeqNumber,
        ack: TcpSeqNumber,
        window: u16,
        payload: &'static [u8],
    ) -> TcpRepr<'static> {
        TcpRepr {
            src_port: PEER_PORT,
            dst_port: US_PORT,
            control: TcpControl::None,
            seq_number: seq,
            ack_number: Some(ack),
            window_len: window,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        }
    }

    fn inject(&mut self, repr: &TcpRepr) {
        let ip = Ipv4Repr {
            src_addr: PEER,
            dst_addr: US,
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + repr.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        repr.emit(&mut t, &IpAddress::Ipv4(PEER), &IpAddress::Ipv4(US), &caps);
        assert!(self.dev.push_rx(&buf));
    }

    /// Polls at `ms` and returns the segments our socket sent.
    fn poll(&mut self, ms: i64) -> Vec<Seg> {
        self.now = ms;
        self.iface
            .poll(Instant::from_millis(ms), &mut self.dev, &mut self.sockets);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2048];
        while let Some(r) = self.dev.pop_tx(&mut buf) {
            let n = r.expect("fits");
            let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            let repr = TcpRepr::parse(
                &t,
                &IpAddress::Ipv4(US),
                &IpAddress::Ipv4(PEER),
                &ChecksumCapabilities::default(),
            )
            .unwrap();
            out.push(Seg {
                seq: repr.seq_number,
                ack: repr.ack_number,
                len: repr.payload.len(),
                control: repr.control,
            });
        }
        out
    }

    /// Polls every 10 ms from now until `until` ms; returns every segment.
    fn run(&mut self, until: i64) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut t = self.now + 10;
        while t <= until {
            out.extend(self.poll(t));
            t += 10;
        }
        out
    }

    /// Queues `n` bytes and sends what the congestion window allows now.
    fn send(&mut self, n: usize) -> Vec<Seg> {
        let data = vec![0x5au8; n];
        assert_eq!(self.sock().send_slice(&data).unwrap(), n);
        let t = self.now + 1;
        self.poll(t)
    }
}

/// After a retransmission timeout smoltcp rewinds the next sequence number
/// it sends (go-back-N). Stock 0.14 also stamped its pure ACKs with that
/// rewound number: a peer that had received the data beyond it finds the
/// ACK left of its window and drops it, ACK field included. When both ends
/// of a connection had rewound, each dropped every ACK of the other and the
/// connection hung until smoltcp's timeout reset it.
#[test]
fn after_a_retransmission_timeout_acks_carry_the_highest_sequence_sent() {
    let mut h = Harness::established();
    let sent = h.send(2000);
    let flight: usize = sent.iter().map(|s| s.len).sum();
    assert_eq!(flight, 2000, "all of it in flight: {sent:?}");
    let snd_max = h.first + 2000;
    // The peer acknowledges nothing: the retransmission timer fires and
    // smoltcp re-sends from the first unacknowledged byte.
    let rtx = h.run(1500);
    assert!(
        rtx.iter().any(|s| s.seq == h.first && s.len > 0),
        "no retransmission: {rtx:?}"
    );
    // The peer (which did get all 2000 bytes; its ACK was lost) now sends
    // data; our ACK of it must carry a sequence number inside its window.
    let data = h.peer(PEER_ISS + 1, h.first, 65535, b"hello from the peer");
    h.inject(&data);
    let acks = h.run(h.now + 100);
    let ack = acks
        .iter()
        .find(|s| s.len == 0 && s.ack == Some(PEER_ISS + 1 + 19))
        .unwrap_or_else(|| panic!("no ACK of the peer's data: {acks:?}"));
    assert_eq!(
        ack.seq, snd_max,
        "pure ACK seq {} is behind the highest sent {snd_max}",
        ack.seq
    );
}

/// A peer that acknowledges part of the data in flight with a zero window
/// made stock smoltcp 0.14 replace its retransmission timer with the
/// zero-window-probe timer; when the window reopened it set the timer idle,
/// with the rest still unacknowledged. Nothing then re-sent it (only a
/// keep-alive, 20 s later, or never without keep-alive).
#[test]
fn data_in_flight_is_retransmitted_after_a_zero_window_reopens() {
    let mut h = Harness::established();
    let sent = h.send(2000);
    assert_eq!(sent.iter().map(|s| s.len).sum::<usize>(), 2000, "{sent:?}");
    let first_len = sent[0].len;
    assert!(first_len < 2000);
    // The peer takes the first segment and closes its window; the rest was
    // lost.
    let acked = h.first + first_len;
    let zero = h.peer(PEER_ISS + 1, acked, 0, &[]);
    h.inject(&zero);
    h.poll(h.now + 1);
    // Its application reads: the window reopens.
    let open = h.peer(PEER_ISS + 1, acked, 65535, &[]);
    h.inject(&open);
    let after = h.run(h.now + 5000);
    assert!(
        after.iter().any(|s| s.seq == acked && s.len > 0),
        "the unacknowledged data was not re-sent within 5 s: {after:?}"
    );
}

/// A FIN that arrives while data before it is missing (the segment ahead of
/// it was lost) was forgotten by stock smoltcp 0.14: when the retransmitted
/// data filled the hole it acknowledged the data but not the FIN, so the
/// peer had to re-send the FIN after its retransmission timeout — under
/// load, with round trips inflated by queues, seconds with nothing else to
/// do (issue 10's last tail). Linux keeps such a FIN with the out-of-order
/// data; so does the patch.
#[test]
fn a_fin_ahead_of_a_hole_takes_effect_when_the_hole_is_filled() {
    static FIRST: [u8; 100] = [0x61; 100];
    static SECOND: [u8; 100] = [0x62; 100];
    let mut h = Harness::established();
    // The first 100 bytes are lost; the next 100 arrive with the FIN.
    let mut last = h.peer(PEER_ISS + 1 + 100, h.first, 65535, &SECOND);
    last.control = TcpControl::Fin;
    h.inject(&last);
    let dup = h.poll(h.now + 1);
    assert!(
        dup.iter().any(|s| s.ack == Some(PEER_ISS + 1)),
        "the out-of-order segment is acknowledged at the hole: {dup:?}"
    );
    assert_eq!(h.sock().state(), tcp::State::Established);
    // The peer retransmits the first 100 bytes (fast retransmit).
    let first = h.peer(PEER_ISS + 1, h.first, 65535, &FIRST);
    h.inject(&first);
    let acks = h.poll(h.now + 1);
    let fin_acked = PEER_ISS + 1 + 200 + 1;
    assert!(
        acks.iter().any(|s| s.ack == Some(fin_acked)),
        "the data and the FIN are acknowledged at once: {acks:?}"
    );
    assert_eq!(h.sock().state(), tcp::State::CloseWait);
    let mut got = vec![0u8; 300];
    let n = h.sock().recv_slice(&mut got).unwrap();
    assert_eq!(&got[..n], [FIRST, SECOND].concat().as_slice());
    assert!(
        !h.sock().may_recv(),
        "the receive half is closed after the data"
    );
}
