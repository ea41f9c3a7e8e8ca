//! The smoltcp device: two bounded packet queues between the node's
//! engine and the userspace stack. Buffers are recycled, so the steady
//! state allocates nothing per packet.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Bounded queues of IP packets. `rx`: decrypted packets for the stack;
/// `tx`: packets the stack wants sent into the mesh.
pub struct Queues {
    rx: VecDeque<Vec<u8>>,
    rx_free: Vec<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    tx_free: Vec<Vec<u8>>,
    cap: usize,
    mtu: usize,
    /// Packets dropped because a queue was full.
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    /// Packets queued for the stack, and sent by it.
    pub rx_packets: u64,
    pub tx_packets: u64,
}

impl Queues {
    pub fn new(cap: usize, mtu: usize) -> Queues {
        Queues {
            rx: VecDeque::with_capacity(cap),
            rx_free: Vec::new(),
            tx: VecDeque::with_capacity(cap),
            tx_free: Vec::new(),
            cap,
            mtu,
            rx_dropped: 0,
            tx_dropped: 0,
            rx_packets: 0,
            tx_packets: 0,
        }
    }

    /// Queues a packet for the stack; drops it (as a full NIC ring would)
    /// when the queue is full. Returns whether it was queued.
    pub fn push_rx(&mut self, packet: &[u8]) -> bool {
        if self.rx.len() >= self.cap || packet.len() > self.mtu.max(1500) {
            self.rx_dropped += 1;
            return false;
        }
        let mut b = self.rx_free.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(packet);
        self.rx.push_back(b);
        self.rx_packets += 1;
        true
    }

    /// Copies the next outgoing packet into `buf`; `None` when there is
    /// none (or it does not fit, in which case it is dropped).
    pub fn pop_tx(&mut self, buf: &mut [u8]) -> Option<Option<usize>> {
        let p = self.tx.pop_front()?;
        self.tx_packets += 1;
        let n = p.len();
        let r = match buf.get_mut(..n) {
            Some(dst) => {
                dst.copy_from_slice(&p);
                Some(n)
            }
            None => {
                self.tx_dropped += 1;
                None
            }
        };
        self.tx_free.push(p);
        Some(r)
    }

    pub fn rx_len(&self) -> usize {
        self.rx.len()
    }
}

/// Source of zeroes for transmit buffers (larger than any MTU).
static ZEROS: [u8; 65536] = [0; 65536];

pub struct RxToken<'a> {
    buf: Vec<u8>,
    free: &'a mut Vec<Vec<u8>>,
}

pub struct TxToken<'a> {
    tx: &'a mut VecDeque<Vec<u8>>,
    free: &'a mut Vec<Vec<u8>>,
    dropped: &'a mut u64,
    hard_cap: usize,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = f(&self.buf);
        self.free.push(self.buf);
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        // Zeroed (smoltcp may leave option padding unwritten: no byte of an
        // earlier packet goes out again), by a copy: `resize` fills byte by
        // byte and was 12 % of the userspace node's CPU time in the debug
        // build the netns tests run (perf, 1,000 two-way transfers).
        match ZEROS.get(..len) {
            Some(zeros) => b.extend_from_slice(zeros),
            None => b.resize(len, 0),
        }
        let r = f(&mut b);
        if self.tx.len() < self.hard_cap {
            self.tx.push_back(b);
        } else {
            *self.dropped += 1;
            self.free.push(b);
        }
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let buf = self.rx.pop_front()?;
        // Replies to received packets (ACKs, RSTs) may exceed the soft cap
        // a little so that receiving never stalls on a full transmit queue.
        Some((
            RxToken {
                buf,
                free: &mut self.rx_free,
            },
            TxToken {
                tx: &mut self.tx,
                free: &mut self.tx_free,
                dropped: &mut self.tx_dropped,
                hard_cap: self.cap + self.cap / 4,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        if self.tx.len() >= self.cap {
            return None; // backpressure: sockets keep their data
        }
        Some(TxToken {
            tx: &mut self.tx,
            free: &mut self.tx_free,
            dropped: &mut self.tx_dropped,
            hard_cap: self.cap,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};

    #[test]
    fn bounded_and_recycled() {
        let mut q = Queues::new(2, 1420);
        assert!(q.push_rx(&[1]));
        assert!(q.push_rx(&[2]));
        assert!(!q.push_rx(&[3]), "full");
        assert_eq!(q.rx_dropped, 1);
        let t = Instant::from_millis(0);
        let (rx, _) = q.receive(t).unwrap();
        assert_eq!(rx.consume(|b| b.to_vec()), vec![1]);
        q.transmit(t)
            .unwrap()
            .consume(3, |b| b.copy_from_slice(&[9, 9, 9]));
        q.transmit(t).unwrap().consume(1, |b| b[0] = 8);
        assert!(q.transmit(t).is_none(), "transmit queue full: backpressure");
        let mut out = [0u8; 8];
        assert_eq!(q.pop_tx(&mut out), Some(Some(3)));
        assert_eq!(&out[..3], &[9, 9, 9]);
        assert_eq!(q.pop_tx(&mut out[..0]), Some(None), "too big: dropped");
        assert_eq!(q.pop_tx(&mut out), None);
        assert_eq!(q.tx_free.len(), 2, "buffers recycled");
    }
}
