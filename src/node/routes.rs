//! Cryptokey routing: which mesh node an inner address belongs to.
//!
//! Outbound, the longest prefix containing the destination picks the node
//! (and so the peer) to encrypt to; inbound, a decrypted packet is only
//! accepted if the longest prefix containing its *source* belongs to the
//! node that sent it — so a peer cannot speak for addresses that are not its
//! own (WireGuard's AllowedIPs rule). Prefixes are every node's tunnel
//! addresses (as host routes) and the CIDRs it `serves`; nodes this one has
//! no session with are included too, so traffic for them is judged (dropped
//! or rejected) instead of falling through to the underlay.
//!
//! One hash map per prefix length in use, probed from the longest: a mesh
//! uses few distinct lengths (host routes plus a handful of served
//! networks), so a lookup is a few hash probes and never allocates.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::net::{addr_len, masked_bits, prefix_mask, to_bits, IpNet};
use crate::policy::NodeId as PeerId;

#[derive(Default, Clone)]
struct Family {
    /// (prefix length, masked address → peer), longest prefix first.
    by_len: Vec<(u8, HashMap<u128, PeerId>)>,
}

impl Family {
    fn insert(&mut self, net: IpNet, peer: PeerId) -> Option<PeerId> {
        let len = net.prefix();
        let masked = masked_bits(net.addr(), len);
        let slot = match self.by_len.iter().position(|(l, _)| *l == len) {
            Some(i) => i,
            None => {
                let at = self
                    .by_len
                    .iter()
                    .position(|(l, _)| *l < len)
                    .unwrap_or(self.by_len.len());
                self.by_len.insert(at, (len, HashMap::new()));
                at
            }
        };
        let map = &mut self.by_len.get_mut(slot)?.1;
        match map.get(&masked) {
            // First writer wins: the policy linter reports overlapping
            // addresses; routing stays deterministic meanwhile.
            Some(existing) => Some(*existing),
            None => {
                map.insert(masked, peer);
                None
            }
        }
    }

    fn lookup(&self, ip: IpAddr) -> Option<PeerId> {
        let (bits, len) = (to_bits(ip), addr_len(ip));
        self.by_len
            .iter()
            .find_map(|(prefix, map)| map.get(&(bits & prefix_mask(len, *prefix))).copied())
    }
}

/// Longest-prefix map from inner addresses to peers.
#[derive(Default, Clone)]
pub struct Routes {
    v4: Family,
    v6: Family,
    len: usize,
}

impl Routes {
    /// Adds `net` for `peer`; returns the peer already holding exactly that
    /// prefix, if any (the new entry is then ignored).
    pub fn insert(&mut self, net: IpNet, peer: PeerId) -> Option<PeerId> {
        let family = if net.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        let clash = family.insert(net, peer);
        if clash.is_none() {
            self.len += 1;
        }
        clash
    }

    /// The peer whose longest prefix contains `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<PeerId> {
        if ip.is_ipv4() {
            self.v4.lookup(ip)
        } else {
            self.v6.lookup(ip)
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut r = Routes::default();
        r.insert(net("10.0.0.0/8"), PeerId(1));
        r.insert(net("10.1.0.0/16"), PeerId(2));
        r.insert(net("10.1.2.3/32"), PeerId(3));
        r.insert(net("fd00::/64"), PeerId(4));
        r.insert(net("0.0.0.0/0"), PeerId(5));
        assert_eq!(r.lookup("10.1.2.3".parse().unwrap()), Some(PeerId(3)));
        assert_eq!(r.lookup("10.1.2.4".parse().unwrap()), Some(PeerId(2)));
        assert_eq!(r.lookup("10.9.9.9".parse().unwrap()), Some(PeerId(1)));
        assert_eq!(r.lookup("192.0.2.1".parse().unwrap()), Some(PeerId(5)));
        assert_eq!(r.lookup("fd00::1".parse().unwrap()), Some(PeerId(4)));
        assert_eq!(
            r.lookup("fd01::1".parse().unwrap()),
            None,
            "families are separate"
        );
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn duplicate_prefix_keeps_the_first() {
        let mut r = Routes::default();
        assert_eq!(r.insert(net("10.0.0.1/32"), PeerId(1)), None);
        assert_eq!(r.insert(net("10.0.0.1/32"), PeerId(2)), Some(PeerId(1)));
        assert_eq!(r.lookup("10.0.0.1".parse().unwrap()), Some(PeerId(1)));
    }

    #[test]
    fn edge_prefixes_per_family() {
        let mut r = Routes::default();
        r.insert(net("::/0"), PeerId(1));
        r.insert(net("fd00::7/128"), PeerId(2));
        r.insert(net("10.0.0.7/32"), PeerId(3));
        // Host bits in a route are ignored: 10.1.2.3/16 is 10.1.0.0/16.
        r.insert(net("10.1.2.3/16"), PeerId(4));
        assert_eq!(r.lookup("fd00::7".parse().unwrap()), Some(PeerId(2)));
        assert_eq!(r.lookup("fd00::8".parse().unwrap()), Some(PeerId(1)));
        assert_eq!(r.lookup("ffff::".parse().unwrap()), Some(PeerId(1)));
        assert_eq!(r.lookup("10.0.0.7".parse().unwrap()), Some(PeerId(3)));
        assert_eq!(
            r.lookup("10.0.0.6".parse().unwrap()),
            None,
            "::/0 is IPv6 only"
        );
        assert_eq!(r.lookup("10.1.200.1".parse().unwrap()), Some(PeerId(4)));
        assert_eq!(r.insert(net("10.1.0.0/16"), PeerId(5)), Some(PeerId(4)));
    }
}
