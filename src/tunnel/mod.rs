//! The per-peer WireGuard state machine, as a sans-IO library.

pub mod crypto;
pub mod handshake;
pub mod replay;
pub mod session;
