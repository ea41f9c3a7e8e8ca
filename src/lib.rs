//! umbra: a zero-trust, micro-segmenting mesh VPN speaking the WireGuard protocol.
//!
//! The library is a sans-IO core: protocol and policy logic take bytes and
//! time as inputs and return actions. Sockets, TUN devices, clocks and
//! threads live in the binary's edge modules.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod keys;
pub mod policy;
