//! The TUN device's side of offloads: one `read` fetches a super-packet
//! that [`VnetIo::recv`] hands out segment by segment, and in-order TCP
//! segments given to [`VnetIo::queue`] leave in one `write`. The packet
//! work itself is sans-IO, in [`crate::wire::offload`].

use std::fs::File;
use std::io::{self, Read, Write};

use crate::wire::offload::gro::{Coalescer, Push};
use crate::wire::offload::gso::Segments;
use crate::wire::offload::{OffloadError, VnetHdr, MAX_PACKET, VNET_HDR_LEN};

/// Counters of a device with offloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Reads that returned a GSO super-packet.
    pub super_packets: u64,
    /// Packets returned by `recv` (segments, and plain packets).
    pub segments: u64,
    /// The longest packet one read returned (virtio header excluded).
    pub largest_read: usize,
    /// Reads dropped as malformed, or segments that did not fit the
    /// caller's buffer.
    pub dropped: u64,
    /// Why the last one was dropped.
    pub last_drop: Option<OffloadError>,
    /// Writes to the device.
    pub writes: u64,
    /// Writes that carried a coalesced super-packet (2 segments or more).
    pub coalesced_writes: u64,
    /// Segments those super-packets held.
    pub coalesced_segments: u64,
    /// Packets queued that were too long for any IP packet (dropped).
    pub too_big: u64,
}

/// Segmentation and coalescing state; two 64 KiB buffers allocated once.
pub struct VnetIo {
    /// The last read: virtio header, then the packet.
    rx: Box<[u8]>,
    rx_len: usize,
    /// How the packet in `rx` is cut, and the next segment to hand out.
    plan: Option<Segments>,
    next: usize,
    coalescer: Coalescer,
    /// Counters.
    pub stats: OffloadStats,
}

impl Default for VnetIo {
    fn default() -> Self {
        VnetIo {
            rx: vec![0u8; VNET_HDR_LEN + MAX_PACKET].into_boxed_slice(),
            rx_len: 0,
            plan: None,
            next: 0,
            coalescer: Coalescer::new(),
            stats: OffloadStats::default(),
        }
    }
}

impl std::fmt::Debug for VnetIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VnetIo")
            .field("plan", &self.plan)
            .field("next", &self.next)
            .field("stats", &self.stats)
            .finish()
    }
}

impl VnetIo {
    /// The next packet for the caller: the next segment of the current
    /// super-packet, or of a new one read from `file`.
    pub fn recv(&mut self, file: &File, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(plan) = self.plan {
                if self.next < plan.count() {
                    let i = self.next;
                    self.next += 1;
                    let packet = self.rx.get(VNET_HDR_LEN..self.rx_len).unwrap_or(&[]);
                    match plan.write(packet, i, buf) {
                        Ok(n) => {
                            self.stats.segments += 1;
                            return Ok(n);
                        }
                        Err(e) => {
                            // The rest of a super-packet that does not fit
                            // would not fit either: drop it whole.
                            self.drop_packet(e);
                            continue;
                        }
                    }
                }
                self.plan = None;
            }
            let n = (&*file).read(&mut self.rx)?;
            self.rx_len = n;
            self.next = 0;
            let raw = self.rx.get(..n).unwrap_or(&[]);
            let parsed =
                VnetHdr::split(raw).and_then(|(h, p)| Ok((Segments::new(&h, p)?, p.len())));
            match parsed {
                Ok((plan, len)) => {
                    self.stats.largest_read = self.stats.largest_read.max(len);
                    if plan.is_gso() {
                        self.stats.super_packets += 1;
                    }
                    self.plan = Some(plan);
                }
                Err(e) => self.drop_packet(e),
            }
        }
    }

    fn drop_packet(&mut self, why: OffloadError) {
        self.plan = None;
        self.stats.dropped += 1;
        self.stats.last_drop = Some(why);
    }

    /// Offers a packet to the coalescer, writing what it pushes out.
    pub fn queue(&mut self, file: &File, packet: &[u8]) -> io::Result<()> {
        loop {
            match self.coalescer.push(packet) {
                Push::Held => return Ok(()),
                Push::FlushFirst => self.flush(file)?,
                Push::TooBig => {
                    self.stats.too_big += 1;
                    return Ok(());
                }
            }
        }
    }

    /// Writes the pending packet, if any.
    pub fn flush(&mut self, file: &File) -> io::Result<()> {
        let segments = self.coalescer.pending_segments() as u64;
        let Some(bytes) = self.coalescer.take() else {
            return Ok(());
        };
        self.stats.writes += 1;
        if segments > 1 {
            self.stats.coalesced_writes += 1;
            self.stats.coalesced_segments += segments;
        }
        (&*file).write(bytes).map(|_| ())
    }
}
