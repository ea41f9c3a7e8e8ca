//! IP vocabulary shared by every layer: addresses and networks ([`IpNet`],
//! prefix masking) and protocol numbers with their names ([`IpProtocol`]).
//!
//! The bottom of the crate: nothing here depends on any other umbra module.
//! Packet views (`wire`), policy, cryptokey routing (`node::routes`),
//! netlink and the flow log all speak these types.

mod ipnet;
mod protocol;

pub use ipnet::{addr_len, mask, masked_bits, prefix_mask, to_bits, IpNet, IpNetError};
pub use protocol::{IpProtocol, UnknownProtocol};
