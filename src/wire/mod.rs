//! Wire formats: typed, zero-copy views over untrusted packet bytes.
//!
//! Every view is built with a `new_checked`-style constructor that validates
//! the lengths the accessors rely on, so accessors never panic and nothing
//! here allocates.

pub mod checksum;
pub mod classify;
mod error;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod reject;
pub mod tcp;
pub mod udp;

pub use classify::{classify, PacketInfo};
pub use error::Error;
