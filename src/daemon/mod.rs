//! The edge that runs a node (`umbra up`): sets it up (key, policy,
//! [`crate::node::Engine`], UDP sockets, TUN device and routes or the
//! userspace stack, observability sockets), confines the process, then
//! hands over to the event loop (`event_loop.rs`), which moves packets
//! between the devices and the sans-IO engine. The layered settings
//! ([`settings`]), the policy-file watcher and the hosts-file resolver are
//! here too: everything that touches the OS on the node's behalf.

mod event_loop;
mod resolve;
pub mod settings;
mod watch;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::io::netlink::Netlink;
use crate::io::signals::Signals;
use crate::io::tun::Tun;
use crate::io::udp::UdpPair;
use crate::keys::PrivateKey;
use crate::net::IpNet;
use crate::node::engine::{Engine, Options, BUF_LEN};
use crate::observe::server::{Observe, ObserveConfig};
use crate::observe::snapshot::NodeInfo;
use crate::policy::{Policy, PolicyError};
use crate::tunnel::OsEntropy;
use crate::wire::wg::DATA_HEADER_LEN;
use crate::{info, warn};
use resolve::FileResolver;

/// The largest inner packet the buffers hold: what `drain_tunnel` reads
/// into, after the data header, leaving room for padding and the tag.
pub const MAX_MTU: u32 = (BUF_LEN - DATA_HEADER_LEN - 64) as u32;
/// IPv4's minimum datagram every host must accept.
pub const MIN_MTU: u32 = 576;

/// Packets the kernel holds in the TUN device's queue for the event loop
/// (the interface's `qlen`; Linux's default is 500). The TUN driver never
/// pushes back on the senders: when the queue is full it drops, so it is
/// the buffer in front of the node whenever the node is the bottleneck.
/// With many concurrent TCP flows each needs a few packets of it, or every
/// flow loses its retransmissions too and waits on its retransmission
/// timer: with 1,000 two-way transfers through a CPU-bound node, 500 made
/// the kernel drop a third of the packets (8,400 RTOs per batch and a
/// 15 s tail with the CPU idle), 10,000 dropped under 1 % (120-250 RTOs,
/// no idle tail); issue 10's note. The queue holds pointers, the packets
/// in it are bounded by the senders' windows, and it only fills while the
/// node cannot keep up.
pub const TUN_TX_QUEUE_LEN: u32 = 10_000;

/// Default UDP port, WireGuard's.
pub const DEFAULT_PORT: u16 = 51820;

/// What `umbra up` was asked to do.
#[derive(Debug, Clone)]
pub struct UpConfig {
    pub policy: PathBuf,
    pub key: PathBuf,
    pub interface: String,
    /// `None`: the port of this node's endpoint in the policy, else 51820.
    pub listen_port: Option<u16>,
    pub mtu: u32,
    pub hosts_file: PathBuf,
    /// `--userspace`: run a userspace TCP/IP stack instead of a TUN device.
    pub userspace: Option<UserspaceConfig>,
    /// Control socket, flow log, metrics, WireGuard UAPI.
    pub observe: ObserveConfig,
    /// After setup, confine the process (capabilities, no-new-privs,
    /// Landlock, seccomp); `--no-confine` turns it off.
    pub confine: bool,
    /// `--user`: the user to become after setup.
    pub user: Option<String>,
    /// Batched UDP I/O with GSO/GRO, and TUN offloads (TSO/GRO through a
    /// virtio-net header); off, one system call per packet.
    pub offload: bool,
}

/// What `umbra up --userspace` serves.
#[derive(Debug, Clone, Default)]
pub struct UserspaceConfig {
    pub forward: Vec<crate::netstack::options::Forward>,
    pub expose: Vec<crate::netstack::options::Expose>,
    pub idle_timeout: Option<std::time::Duration>,
    pub max_connections: Option<usize>,
}

/// The kernel side of TUN mode: the interface and the routes we installed.
struct Kernel {
    net: Netlink,
    index: u32,
    routes: BTreeSet<IpNet>,
}

/// Reads a policy file the way the node does, for the CLI and the daemon
/// alike: a regular file of at most [`crate::policy::MAX_POLICY_BYTES`]
/// (never blocking on a FIFO or device), UTF-8 text, a leading byte order
/// mark dropped.
pub fn read_policy_file(path: &Path) -> Result<String, String> {
    crate::io::files::read_text_file(path, crate::policy::MAX_POLICY_BYTES)
}

/// Reads and loads the policy file, rendering errors for the terminal.
pub fn load_policy(path: &Path) -> Result<(String, Policy), String> {
    let text = read_policy_file(path)?;
    let policy = Policy::load(&text, &path.display().to_string(), SystemTime::now())
        .map_err(|e| e.to_string())?;
    Ok((text, policy))
}

/// One line for a log: the first error and how many more there are.
fn one_line(e: &PolicyError) -> String {
    let mut errors = e.errors();
    let first = errors.next().map(|d| {
        let crate::policy::Span { line, col, .. } = d.span;
        format!("{}:{line}:{col}: {}", e.file, d.message)
    });
    let more = errors.count();
    match (first, more) {
        (Some(f), 0) => f,
        (Some(f), n) => format!("{f} (and {n} more errors)"),
        (None, _) => format!("{}: invalid policy", e.file),
    }
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(config: UpConfig) -> Result<(), String> {
    if !(MIN_MTU..=MAX_MTU).contains(&config.mtu) {
        return Err(format!(
            "--mtu {}: must be between {MIN_MTU} and {MAX_MTU} (umbra's packet buffers hold {BUF_LEN} bytes with the WireGuard header and tag)",
            config.mtu
        ));
    }
    // Key and policy first, with the default signal dispositions still in
    // place, so SIGTERM stops a node stuck on a slow file.
    let key = PrivateKey::load(&config.key).map_err(|e| e.to_string())?;
    let (text, policy) = load_policy(&config.policy)?;
    // Before any other thread exists, so every thread inherits the mask.
    let signals = Signals::new().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let mut resolver = FileResolver::new(&config.policy, &config.hosts_file);
    let now = Instant::now();
    let options = Options {
        flow_records: config.observe.flow_log.is_some(),
        ..Options::default()
    };
    let mut engine = Engine::new(
        policy,
        key,
        options,
        Box::new(OsEntropy),
        &mut resolver,
        now,
        SystemTime::now(),
    )
    .map_err(|e| e.to_string())?;
    let me = engine.me().clone();
    let port = config
        .listen_port
        .or(me.endpoint.as_ref().map(|e| e.port))
        .unwrap_or(DEFAULT_PORT);
    let mut udp = UdpPair::bind(port).map_err(|e| format!("cannot bind UDP port {port}: {e}"))?;
    let info = NodeInfo {
        data_plane: if config.userspace.is_some() {
            "userspace"
        } else {
            "tun"
        },
        interface: config.userspace.is_none().then(|| config.interface.clone()),
        data_plane_up: false,
        listen_port: udp.port(),
        started: now,
        policy_loaded: SystemTime::now(),
        reloads_ok: 0,
        reloads_rejected: 0,
        flow_log: None,
        offloads: Vec::new(),
        io: Vec::new(),
    };
    // Opened during setup, before anything could drop privileges.
    let mut observe = Observe::open(&config.observe, &me.name, info)?;

    if let Some(us) = &config.userspace {
        check_forwards(&us.forward, &engine.routed_networks(), &config.policy)?;
        let mut cfg = crate::netstack::Config::new(
            me.addresses.clone(),
            me.serves.clone(),
            config.mtu as usize,
        );
        cfg.forward = us.forward.clone();
        cfg.expose = us.expose.clone();
        if let Some(t) = us.idle_timeout {
            cfg.tcp_idle = t;
        }
        if let Some(m) = us.max_connections {
            cfg.max_connections = m;
        }
        crate::netstack::describe(&cfg);
        let mut stack = crate::netstack::Userspace::new(cfg, Instant::now())?;
        stack.bind_forwards()?;
        confine(&config, false, engine.policy())?;
        info!(
            "umbra up: node {} ({}), userspace stack mtu {}, udp port {}, policy {} with {} peers",
            me.name,
            me.key,
            config.mtu,
            udp.port(),
            engine.policy().id(),
            engine.device().peer_ids().count()
        );
        observe.info.data_plane_up = true;
        return event_loop::event_loop(
            &config,
            &mut engine,
            &mut stack,
            &mut udp,
            signals,
            None,
            &text,
            &mut observe,
        );
    }

    let create = if config.offload {
        Tun::create_offload
    } else {
        Tun::create
    };
    let mut tun = create(&config.interface).map_err(|e| {
        format!("cannot create TUN device '{}': {e} (umbra up needs root or CAP_NET_ADMIN and /dev/net/tun; --userspace needs neither)", config.interface)
    })?;
    let mut net = Netlink::open().map_err(|e| e.to_string())?;
    let index = net.link_index(tun.name()).map_err(|e| e.to_string())?;
    net.set_mtu(index, config.mtu).map_err(|e| e.to_string())?;
    net.set_tx_queue_len(index, TUN_TX_QUEUE_LEN)
        .map_err(|e| e.to_string())?;
    for a in &me.addresses {
        net.add_address(index, *a).map_err(|e| e.to_string())?;
    }
    net.set_link_up(index).map_err(|e| e.to_string())?;
    let mut routes = BTreeSet::new();
    sync_routes(
        &mut net,
        index,
        &me.addresses,
        &engine.routed_networks(),
        &mut routes,
    );

    info!(
        "umbra up: node {} ({}), interface {} mtu {} ({}), udp port {}, policy {} with {} peers",
        me.name,
        me.key,
        tun.name(),
        config.mtu,
        match tun.offloads() {
            o if o.uso => "offloads: TSO, USO, checksum",
            o if o.tso => "offloads: TSO, checksum",
            _ => "no offloads",
        },
        udp.port(),
        engine.policy().id(),
        engine.device().peer_ids().count()
    );
    confine(&config, true, engine.policy())?;
    let kernel = Kernel { net, index, routes };
    observe.info.data_plane_up = true;
    event_loop::event_loop(
        &config,
        &mut engine,
        &mut tun,
        &mut udp,
        signals,
        Some(kernel),
        &text,
        &mut observe,
    )
}

/// Refuses a `--forward` to an address that no other node of the policy
/// has or serves: nothing could ever answer it.
fn check_forwards(
    forwards: &[crate::netstack::options::Forward],
    mesh: &[IpNet],
    policy: &Path,
) -> Result<(), String> {
    for f in forwards {
        if !mesh.iter().any(|n| n.contains(f.target.ip())) {
            return Err(format!(
                "--forward {}={}/{}: no other node in {} has or serves {} (check the target against the policy's addresses and serves)",
                f.listen,
                f.target,
                f.proto,
                policy.display(),
                f.target.ip()
            ));
        }
    }
    Ok(())
}

/// Gives up what the running node does not need (see `io::confine`): in
/// TUN mode it keeps only CAP_NET_ADMIN, for route changes on reload.
fn confine(config: &UpConfig, tun: bool, policy: &Policy) -> Result<(), String> {
    if !config.confine {
        warn!("--no-confine: running with every privilege umbra up started with");
        return Ok(());
    }
    // What a reload reads: the policy, the hosts file, preshared keys
    // (relative paths are beside the policy).
    let base = config.policy.parent().unwrap_or(Path::new("."));
    let mut reads = vec![config.policy.clone(), config.hosts_file.clone()];
    reads.extend(
        policy
            .nodes()
            .iter()
            .filter_map(|n| n.psk_file.as_ref())
            .map(|p| base.join(p)),
    );
    // What the observability edge writes at run time: the flow log is
    // reopened (created) on SIGUSR1, the control and UAPI sockets are
    // unlinked at shutdown.
    let o = &config.observe;
    let dir_of = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut writes: Vec<PathBuf> = Vec::new();
    if let Some(f) = o.flow_log.as_deref().filter(|f| *f != "-") {
        writes.push(dir_of(Path::new(f)));
    }
    for sock in [&o.control, &o.uapi].into_iter().flatten() {
        writes.push(dir_of(sock));
    }
    let c = crate::io::confine::Confinement {
        user: config.user.clone(),
        keep_net_admin: tun,
        reads,
        writes,
    };
    let a = crate::io::confine::apply(&c)
        .map_err(|e| format!("cannot confine umbra: {e} (--no-confine runs without)"))?;
    info!(
        "confined: uid {} gid {}, capabilities: {}, no-new-privs, {}, seccomp {}",
        a.uid, a.gid, a.capabilities, a.landlock, a.seccomp
    );
    Ok(())
}

/// Installs routes for mesh networks not already on-link through one of
/// our own address prefixes, and removes routes no longer needed.
fn sync_routes(
    net: &mut Netlink,
    index: u32,
    own: &[IpNet],
    wanted: &[IpNet],
    installed: &mut BTreeSet<IpNet>,
) {
    let want: BTreeSet<IpNet> = wanted
        .iter()
        .filter(|n| !own.iter().any(|o| o.network().contains_net(n)))
        .map(IpNet::network)
        .collect();
    for route in installed.difference(&want) {
        if let Err(e) = net.del_route(index, *route) {
            warn!("cannot remove route {route}: {e}");
        }
    }
    for route in want.difference(installed) {
        if let Err(e) = net.add_route(index, *route) {
            warn!("cannot add route {route}: {e}");
        }
    }
    *installed = want;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_to_an_address_no_node_has_or_serves_is_refused() {
        let mesh: Vec<IpNet> = vec![
            "10.30.0.1/32".parse().unwrap(),
            "10.88.0.0/24".parse().unwrap(),
        ];
        let policy = Path::new("mesh.policy");
        let fwd = |s: &str| vec![s.parse().unwrap()];
        assert!(check_forwards(&fwd("1=10.30.0.1:80"), &mesh, policy).is_ok());
        assert!(check_forwards(&fwd("1=10.88.0.7:80/udp"), &mesh, policy).is_ok());
        let e = check_forwards(&fwd("1=10.30.0.9:80"), &mesh, policy).unwrap_err();
        assert!(
            e.contains("--forward 127.0.0.1:1=10.30.0.9:80/tcp: no other node in mesh.policy has or serves 10.30.0.9"),
            "{e}"
        );
    }
}
