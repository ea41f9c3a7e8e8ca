//! The mesh node: [`engine`] is the sans-IO core; the rest is the edge that
//! runs it over a TUN device, UDP sockets, signals and the policy file
//! ([`run`] is that edge's one entry point).

mod action;
mod daemon;
pub mod engine;
mod event_loop;
pub mod events;
pub mod flows;
mod reload;
mod report;
pub mod routes;
pub mod settings;

/// Reads a policy file the way the node does: a regular file, bounded
/// ([`crate::policy::MAX_POLICY_BYTES`]), never blocking on a FIFO or device.
pub use crate::io::files::read_policy_file;
pub use daemon::{run, UpConfig, UserspaceConfig};
pub use engine::{Action, Datagram, DropReason, Engine, Options, PeerResolver, ReloadError};
pub(crate) mod resolve;
pub(crate) mod watch;
