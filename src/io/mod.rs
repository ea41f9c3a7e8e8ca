//! The OS edge: the only place umbra touches the kernel (TUN device,
//! rtnetlink, UDP sockets). Everything here is Linux-specific, and every
//! `unsafe` block in the crate lives here with a `SAFETY:` comment.
//!
//! The protocol and policy cores never import this module; the node daemon
//! wires them to these devices through its mio event loop.

pub mod netlink;
pub mod tun;
pub mod udp;
