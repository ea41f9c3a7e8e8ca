//! umbra: a zero-trust, micro-segmenting mesh VPN speaking the WireGuard protocol.
//!
//! The library is a sans-IO core: protocol and policy logic take bytes and
//! time as inputs and return actions. Sockets, TUN devices and netlink live
//! in the OS edge, [`io`]; clocks and threads in the binary.

#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod conntrack;
pub mod fuzzing;
pub mod io;
pub mod keys;
pub mod log;
pub mod netstack;
pub mod node;
pub mod observe;
pub mod policy;
pub mod time;
pub mod tunnel;
pub mod wire;
