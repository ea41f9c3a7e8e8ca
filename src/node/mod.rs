//! The mesh node: [`engine`] is the sans-IO core; the rest is the edge that
//! runs it over a TUN device, UDP sockets, signals and the policy file.

pub mod daemon;
pub mod engine;
pub mod events;
pub mod flows;
pub mod routes;
pub mod settings;

pub use engine::{Engine, Inbound, Options, Outbound, PeerResolver, ReloadError};
pub mod resolve;
pub mod watch;
