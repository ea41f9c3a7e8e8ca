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

/// Reads a policy file the way the node does, for the CLI and the daemon
/// alike: a regular file of at most [`crate::policy::MAX_POLICY_BYTES`]
/// (never blocking on a FIFO or device), UTF-8 text, a leading byte order
/// mark dropped.
pub fn read_policy_file(path: &std::path::Path) -> Result<String, String> {
    crate::io::files::read_text_file(path, crate::policy::MAX_POLICY_BYTES)
}
pub use daemon::{run, UpConfig, UserspaceConfig};
pub use engine::{Action, Datagram, DropReason, Engine, Options, PeerResolver, ReloadError};
pub(crate) mod resolve;
pub(crate) mod watch;
