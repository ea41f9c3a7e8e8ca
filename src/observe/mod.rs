//! Seeing into a running node: the control socket (`umbra status`,
//! `umbra flows`), the JSON-lines flow log, Prometheus metrics and the
//! WireGuard UAPI that `wg show` reads. Everything is served from the
//! node's one mio loop; see docs/observability.md.

pub mod client;
pub mod community_id;
pub(crate) mod conns;
pub mod flowlog;
pub(crate) mod json;
pub(crate) mod metrics;
pub mod proto;
pub(crate) mod server;
pub(crate) mod snapshot;
pub(crate) mod uapi;

pub use server::ObserveConfig;
