//! The running node's event loop: one thread, one mio poll over the
//! packet device (TUN or userspace stack), the UDP sockets, a signalfd and
//! the observability sockets; timers run every [`TICK`]. Everything
//! protocol- and policy-shaped happens in the [`Engine`]; this file only
//! moves bytes and reads the clock.

use std::io;
use std::time::{Instant, SystemTime};

use mio::{Events, Interest, Poll, Token};

use super::resolve::FileResolver;
use super::watch::Watcher;
use super::{one_line, sync_routes, Kernel, UpConfig};
use crate::io::signals::{Signal, Signals};
use crate::io::udp::UdpPair;
use crate::io::udp_batch::{UdpRx, UdpTx};
use crate::io::PacketIo;
use crate::net::IpNet;
use crate::node::engine::{Action, Engine, BUF_LEN};
use crate::observe::server::Observe;
use crate::policy::Policy;
use crate::tunnel::timers::TICK;
use crate::wire::wg::DATA_HEADER_LEN;
use crate::{info, warn};

const PACKETS: Token = Token(0);
const UDP4: Token = Token(1);
const UDP6: Token = Token(2);
const SIGNALS: Token = Token(3);

/// Packets taken from one source (the local side, one UDP socket) per
/// loop turn before the others get their turn. The sockets are
/// edge-triggered, so a source left with packets is remembered and served
/// again without waiting; a flood on one socket cannot starve the rest.
const BUDGET: usize = 1024;

/// Both sides are flushed after this many packets, so a long drain does
/// not hold answers (a handshake response behind a flood) or coalesced
/// packets back.
const FLUSH_EVERY: usize = 64;

/// Sources with packets left over from the last turn.
#[derive(Default)]
struct Backlog {
    local: bool,
    udp4: bool,
    udp6: bool,
}

/// The event loop over any packet backend.
#[allow(clippy::too_many_arguments)]
pub(super) fn event_loop<P: PacketIo>(
    config: &UpConfig,
    engine: &mut Engine,
    packets: &mut P,
    udp: &mut UdpPair,
    mut signals: Signals,
    mut kernel: Option<Kernel>,
    text: &str,
    observe: &mut Observe,
) -> Result<(), String> {
    let own = engine.me().addresses.clone();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    packets
        .register(poll.registry(), PACKETS)
        .map_err(|e| e.to_string())?;
    udp.register(poll.registry(), UDP4, UDP6)
        .map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    observe
        .register(poll.registry())
        .map_err(|e| e.to_string())?;

    let mut watcher = Watcher::new(&config.policy, text);
    let gro = config.offload && udp.enable_gro();
    let mut lp = Loop {
        engine,
        local: packets,
        udp: &*udp,
        rx: UdpRx::new(),
        tx: UdpTx::new(udp, config.offload),
        buf: vec![0u8; BUF_LEN],
        reply: vec![0u8; BUF_LEN],
    };
    lp.engine.connect_all();
    lp.flush(Instant::now());
    lp.log_events();
    let (gso4, gso6) = lp.tx.gso();
    let mut offloads = Vec::new();
    if gso4 || gso6 {
        offloads.push("udp-gso");
    }
    if gro {
        offloads.push("udp-gro");
    }
    offloads.extend(lp.local.offloads());
    info!(
        "packet i/o: {}",
        if offloads.is_empty() {
            "one system call per packet (no offloads)".to_string()
        } else {
            format!("batched, offloads: {}", offloads.join(", "))
        }
    );
    observe.info.offloads = offloads;

    let mut events = Events::with_capacity(1024);
    let mut next_tick = Instant::now() + TICK;
    let mut stack_due: Option<Instant> = None;
    let mut backlog = Backlog::default();
    loop {
        let wake = stack_due.map_or(next_tick, |d| d.min(next_tick));
        let timeout = if backlog.local || backlog.udp4 || backlog.udp6 {
            std::time::Duration::ZERO
        } else {
            wake.saturating_duration_since(Instant::now())
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("event loop failed: {e}"));
            }
        }
        let now = Instant::now();
        for ev in events.iter() {
            match ev.token() {
                PACKETS => backlog.local = true,
                UDP4 => backlog.udp4 = true,
                UDP6 => backlog.udp6 = true,
                SIGNALS => loop {
                    match signals.read() {
                        Ok(Some(Signal::Stop)) => {
                            info!("stopping: removing {}", lp.local.label());
                            observe.shutdown(lp.engine, now);
                            return Ok(());
                        }
                        Ok(Some(Signal::Reload)) => {
                            info!("SIGHUP: re-reading {}", config.policy.display());
                            match watcher.force() {
                                Some(read) => {
                                    let ok = lp.reload(config, read, kernel.as_mut(), &own);
                                    observe.reloaded(ok);
                                }
                                None => info!("policy unchanged ({})", lp.engine.policy().id()),
                            }
                        }
                        Ok(Some(Signal::Reopen)) => observe.reopen(),
                        Ok(None) => break,
                        Err(e) => return Err(format!("reading signals failed: {e}")),
                    }
                },
                t if Observe::owns(t) => observe.ready(poll.registry(), t, lp.engine, now),
                _ => lp.local.ready(now, ev),
            }
        }
        if backlog.local {
            backlog.local = lp.drain_local(now) == BUDGET;
        }
        if backlog.udp4 {
            backlog.udp4 = lp.drain_network(now, false);
        }
        if backlog.udp6 {
            backlog.udp6 = lp.drain_network(now, true);
        }
        stack_due = lp.run_stack(now);
        lp.flush(now);
        observe.drain_flows(lp.engine, now);
        if now >= next_tick {
            lp.engine.tick(now, SystemTime::now());
            if let Some(read) = watcher.poll(now) {
                if read.is_ok() {
                    info!("{} changed: reloading", config.policy.display());
                }
                let ok = lp.reload(config, read, kernel.as_mut(), &own);
                observe.reloaded(ok);
            }
            lp.flush(now);
            lp.log_events();
            observe.drain_flows(lp.engine, now);
            lp.io_counters(&mut observe.info.io);
            if let Some(k) = kernel.as_mut() {
                // What the kernel dropped before umbra read it: the TUN
                // queue was full (daemon::TUN_TX_QUEUE_LEN).
                if let Ok(n) = k.net.link_tx_dropped(k.index) {
                    observe.info.io.push(("tun_queue_dropped", n));
                }
            }
            observe.tick(poll.registry(), now);
            next_tick = now + TICK;
        }
    }
}

/// The data path: moves packets between the local side, the engine and
/// the UDP underlay. Every packet takes the same way out, [`dispatch`].
struct Loop<'a, P: PacketIo> {
    engine: &'a mut Engine,
    /// Where decrypted packets go and local packets come from: the TUN
    /// device or the userspace stack.
    local: &'a mut P,
    udp: &'a UdpPair,
    /// Datagrams come in a batch per `recvmmsg` (coalesced by UDP GRO
    /// where the kernel does it) and are decrypted in place there.
    rx: UdpRx,
    /// Datagrams go out through this queue: one `sendmmsg` per batch, runs
    /// of equal-size datagrams to one peer as one UDP GSO message.
    tx: UdpTx,
    /// Local packets: read at `DATA_HEADER_LEN`, encrypted in place.
    buf: Vec<u8>,
    /// Handshake answers.
    reply: Vec<u8>,
}

/// Carries out what the engine asked for one packet. Both sides may hold
/// what they are given until [`Loop::flush_io`].
fn dispatch<P: PacketIo>(
    local: &mut P,
    tx: &mut UdpTx,
    udp: &UdpPair,
    now: Instant,
    action: Action<'_>,
) {
    match action {
        // A full socket buffer drops the datagram (counted), as a router
        // would.
        Action::Send(d) => tx.queue(udp, d.bytes, d.to),
        Action::Deliver { packet, info } => {
            if let Err(e) = local.send(now, packet, info.as_ref()) {
                crate::debug!("writing to {} failed: {e}", local.label());
            }
        }
        Action::Nothing | Action::Dropped(_) => {}
    }
}

impl<P: PacketIo> Loop<'_, P> {
    /// Lets an in-process stack work, sending what it produces; returns
    /// when it next needs polling.
    fn run_stack(&mut self, now: Instant) -> Option<Instant> {
        let mut due = None;
        for _ in 0..16 {
            due = self.local.poll(now);
            if due.is_none() || self.drain_local(now) == 0 {
                break;
            }
        }
        due
    }

    /// Reads and sends the packets the local side has, up to [`BUDGET`];
    /// returns how many.
    fn drain_local(&mut self, now: Instant) -> usize {
        let mut count = 0;
        while count < BUDGET {
            if count > 0 && count % FLUSH_EVERY == 0 {
                self.flush_io(now);
            }
            let room = &mut self.buf[DATA_HEADER_LEN..BUF_LEN - 64];
            let n = match self.local.recv(room) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return count,
                Err(e) => {
                    warn!("reading {} failed: {e}", self.local.label());
                    return count;
                }
            };
            count += 1;
            let action = self.engine.outbound(now, &mut self.buf, n);
            dispatch(self.local, &mut self.tx, self.udp, now, action);
        }
        count
    }

    /// Receives, decrypts and delivers the datagrams waiting on one of the
    /// UDP sockets, up to [`BUDGET`]; returns whether any may be left.
    fn drain_network(&mut self, now: Instant, v6: bool) -> bool {
        let socket = if v6 {
            self.udp.v6()
        } else {
            Some(self.udp.v4())
        };
        let Some(socket) = socket else { return false };
        for count in 0..BUDGET {
            if count > 0 && count % FLUSH_EVERY == 0 {
                self.flush_io(now);
            }
            let (src, datagram) = match self.rx.next(socket) {
                Ok(Some(r)) => r,
                Ok(None) => return false,
                Err(e) => {
                    crate::debug!("udp receive failed: {e}");
                    return false;
                }
            };
            let action = self.engine.inbound(now, src, datagram, &mut self.reply);
            dispatch(self.local, &mut self.tx, self.udp, now, action);
        }
        true
    }

    /// The packet I/O counters for status and metrics.
    fn io_counters(&self, out: &mut Vec<(&'static str, u64)>) {
        let (rx, tx) = (self.rx.stats(), self.tx.stats());
        out.clear();
        out.extend([
            ("udp_rx_datagrams", rx.datagrams),
            ("udp_rx_calls", rx.calls),
            ("udp_rx_gro_messages", rx.coalesced),
            ("udp_rx_dropped", rx.dropped),
            ("udp_tx_datagrams", tx.datagrams),
            ("udp_tx_messages", tx.messages),
            ("udp_tx_calls", tx.calls),
            ("udp_tx_dropped_full", tx.dropped_full),
            ("udp_tx_errors", tx.errors),
        ]);
        self.local.io_counters(out);
    }

    /// Sends everything the tunnel engine has queued, then writes out what
    /// both sides hold.
    fn flush(&mut self, now: Instant) {
        while let Some(d) = self.engine.poll_transmit(now, &mut self.buf) {
            dispatch(self.local, &mut self.tx, self.udp, now, Action::Send(d));
        }
        self.flush_io(now);
    }

    /// Writes what the UDP send queue and the local side hold (coalesced
    /// packets towards the TUN device). Called before every wait.
    fn flush_io(&mut self, now: Instant) {
        self.tx.flush(self.udp);
        if let Err(e) = self.local.flush(now) {
            crate::debug!("writing to {} failed: {e}", self.local.label());
        }
    }

    fn log_events(&mut self) {
        while let Some(e) = self.engine.poll_event() {
            crate::log::log(e.level(), format_args!("{e}"));
        }
    }

    fn reload(
        &mut self,
        config: &UpConfig,
        read: Result<String, String>,
        kernel: Option<&mut Kernel>,
        own: &[IpNet],
    ) -> bool {
        let old = self.engine.policy().id();
        let text = match read {
            Ok(text) => text,
            Err(e) => {
                warn!("policy reload rejected, still running policy {old}: {e}");
                return false;
            }
        };
        let old_serves = self.engine.me().serves.clone();
        let name = config.policy.display().to_string();
        let policy = match Policy::load(&text, &name, SystemTime::now()) {
            Ok(p) => p,
            Err(e) => {
                warn!(
                    "policy reload rejected, still running policy {old}: {}",
                    one_line(&e)
                );
                return false;
            }
        };
        let mut resolver = FileResolver::new(&config.policy, &config.hosts_file);
        if let Err(e) = self.engine.reload(policy, &mut resolver, SystemTime::now()) {
            warn!("policy reload rejected, still running policy {old}: {e}");
            return false;
        }
        if self.engine.me().addresses != own {
            warn!(
                "this node's tunnel addresses changed in the policy; restart umbra to apply them"
            );
        }
        if let Some(k) = kernel {
            sync_routes(
                &mut k.net,
                k.index,
                own,
                &self.engine.routed_networks(),
                &mut k.routes,
            );
        } else if self.engine.me().serves != old_serves {
            warn!("this node's served networks changed in the policy; restart umbra to apply them to the userspace stack");
        }
        self.log_events();
        true
    }
}
