//! umbra: a zero-trust, micro-segmenting mesh VPN speaking the WireGuard protocol.
//!
//! The library is a sans-IO core: protocol and policy logic take bytes and
//! time as inputs and return actions; sockets, the TUN device, netlink,
//! clocks and threads stay at the edge. `docs/architecture.md` walks a
//! packet through it file by file.
//!
//! # Layers, bottom up
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | vocabulary | [`net`], [`wire`], [`keys`], [`time`], [`log`] | IP networks, prefix masking and protocol names, zero-copy views over untrusted packets, Curve25519 keys, RFC 3339 time, the log level |
//! | protocol and policy | [`tunnel`], [`policy`], [`conntrack`] | the WireGuard engine ([`tunnel::Device`]), the policy language and its compiler ([`policy::Policy`], [`policy::NodeTable`]), the connection tracker ([`conntrack::Conntrack`]) |
//! | node | [`node`] | [`node::Engine`]: one node's enforcement path (cryptokey routing, policy, conntrack, cloaking, reload) over the three above, still sans-IO |
//! | observation | [`observe`] | the control-socket protocol and client, flow-log records, metrics |
//! | edge | [`daemon`] | [`daemon::run`] runs a whole node: TUN device or userspace TCP/IP stack, UDP sockets, signals, confinement; [`daemon::settings`] is `umbra up`'s configuration |
//!
//! The OS edge (TUN, rtnetlink, UDP, seccomp/Landlock; the only `unsafe`
//! code), the userspace TCP/IP stack and the daemon's event loop are not
//! library surface: [`daemon::run`] is their one entry point (umbra's own
//! integration tests and benchmarks reach the OS edge through the
//! undocumented `internals` cargo feature). The `umbra` command line lives in
//! the binary (`src/bin/umbra/`). The fuzz-target bodies (`fuzzing`) exist
//! only with the `fuzzing` cargo feature.

#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod conntrack;
pub mod daemon;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
// The OS edge: crate-internal, reached through `daemon::run`. The
// `internals` feature opens it, undocumented, to umbra's own integration
// tests and benchmarks (see Cargo.toml).
#[cfg(not(feature = "internals"))]
mod io;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod io;
pub mod keys;
pub mod log;
pub mod net;
// The userspace data plane, reached through `daemon::run` too.
mod netstack;
pub mod node;
pub mod observe;
pub mod policy;
pub mod time;
pub mod tunnel;
pub mod wire;

pub(crate) use log::{debug, info, warn};
