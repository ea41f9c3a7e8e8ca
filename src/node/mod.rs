//! The mesh node's sans-IO core: the [`Engine`] (cryptokey routing, policy,
//! connection tracking, cloaking, reload) and what it reports (events, flow
//! records). The `daemon` module is the edge that runs it over a TUN device
//! or the userspace stack, UDP sockets, signals and the policy file.

mod action;
pub mod engine;
pub mod events;
pub mod flows;
mod reload;
mod report;
pub mod routes;

pub use engine::{Action, Datagram, DropReason, Engine, Options, PeerResolver, ReloadError};
