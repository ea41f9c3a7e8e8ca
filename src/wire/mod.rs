//! Wire formats: typed, zero-copy views over untrusted bytes.
//!
//! Every view is built with a constructor that validates the lengths its
//! accessors rely on, so accessors never panic and nothing here allocates.
//! `wg` covers WireGuard's own messages; the rest is the inner IP traffic
//! the enforcement path classifies.

pub mod checksum;
pub mod classify;
mod error;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod offload;
pub mod reject;
pub mod tcp;
pub mod udp;
pub mod wg;

pub use classify::{classify, PacketInfo};
pub use error::Error;
