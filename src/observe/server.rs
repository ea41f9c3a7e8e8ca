//! The node's observability edge, owned by the event loop: the control
//! socket, the metrics listener, the WireGuard UAPI socket and the flow
//! log. All are opened during setup (before any privilege drop) and then
//! only accepted on, read and written.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use mio::{Registry, Token};

use super::conns::{Listener, Server, Step, MAX_CLIENTS};
use super::flowlog::FlowLog;
use super::proto::{self, Request, Response, MAX_REQUEST};
use super::snapshot::{self, NodeInfo};
use crate::node::Engine;

/// Where the observability servers' tokens start: far above the tokens
/// the userspace stack hands out (it counts up from 16).
const TOKEN_BASE: usize = usize::MAX / 2;
const CONTROL: usize = TOKEN_BASE;
const METRICS: usize = TOKEN_BASE + 2 * MAX_CLIENTS;
const UAPI: usize = TOKEN_BASE + 4 * MAX_CLIENTS;

/// What `umbra up` was asked to expose.
#[derive(Debug, Clone, Default)]
pub struct ObserveConfig {
    /// The control socket path; `None`: off.
    pub control: Option<PathBuf>,
    /// `-` or a file path; `None`: off.
    pub flow_log: Option<String>,
    /// Address for `/metrics` and `/healthz`; `None`: off.
    pub metrics: Option<SocketAddr>,
    /// The WireGuard UAPI socket path (TUN mode); `None`: off.
    pub uapi: Option<PathBuf>,
    /// `control` / `uapi` are defaults, not asked for: if another node
    /// already serves that path (nodes in several network namespaces of
    /// one host share the file system), run without it and say so.
    pub control_is_default: bool,
    pub uapi_is_default: bool,
}

/// Binds `path`. A default path that cannot be used (in use by another
/// node, a read-only or missing directory in a container, a directory
/// someone else could write) is warned about and gone without; a path the
/// operator asked for must work.
fn bind_or_skip(
    path: &Path,
    default: bool,
    what: &str,
) -> Result<Option<mio::net::UnixListener>, String> {
    match bind_unix(path, default) {
        Ok(l) => Ok(Some(l)),
        Err(e) if default => {
            crate::warn!("{what}: {e}; running without it (give a path of its own to have one)");
            Ok(None)
        }
        Err(e) => Err(format!("{what}: {e}")),
    }
}

pub struct Observe {
    control: Option<(Server, PathBuf)>,
    metrics: Option<Server>,
    uapi: Option<(Server, PathBuf)>,
    flow_log: Option<FlowLog>,
    pub info: NodeInfo,
}

/// Binds a Unix stream socket at `path`, mode 0600, creating its
/// directory (0700 when it creates it). A stale socket file (nobody
/// listening) is replaced; a live one is an error.
/// `check`: refuse a directory others could swap the socket in (for
/// default paths; an explicit path is the operator's choice).
pub fn bind_unix(path: &Path, check: bool) -> io::Result<mio::net::UnixListener> {
    let ctx = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| ctx(e, "cannot create the directory of"))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        if check {
            check_dir(dir)?;
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: remove it or choose another path",
                    path.display()
                ),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: is another umbra running on this interface?",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path).map_err(|e| ctx(e, "cannot remove stale socket"))?;
    }
    let l = mio::net::UnixListener::bind(path).map_err(|e| ctx(e, "cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ctx(e, "cannot set mode 0600 on"))?;
    Ok(l)
}

/// Refuses a socket directory someone else could swap the socket in: it
/// must belong to us or root, and not be writable by others unless sticky.
fn check_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir)?;
    let me = crate::io::euid();
    let foreign_owner = m.uid() != me && m.uid() != 0;
    let open = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
    if foreign_owner || open {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {} or is writable by others: use a directory only you can write",
                dir.display(),
                m.uid()
            ),
        ));
    }
    Ok(())
}

impl Observe {
    /// Opens everything asked for. `observer` is this node's name.
    pub fn open(config: &ObserveConfig, observer: &str, info: NodeInfo) -> Result<Observe, String> {
        let control = match &config.control {
            Some(p) => bind_or_skip(p, config.control_is_default, "control socket")?.map(|l| {
                (
                    Server::new(Listener::Unix(l), CONTROL, MAX_REQUEST + 4),
                    p.clone(),
                )
            }),
            None => None,
        };
        let metrics = match config.metrics {
            Some(a) => {
                let l = mio::net::TcpListener::bind(a)
                    .map_err(|e| format!("metrics: cannot listen on {a}: {e}"))?;
                Some(Server::new(
                    Listener::Tcp(l),
                    METRICS,
                    super::metrics::MAX_HTTP_REQUEST,
                ))
            }
            None => None,
        };
        let uapi = match &config.uapi {
            Some(p) => bind_or_skip(p, config.uapi_is_default, "WireGuard UAPI socket")?.map(|l| {
                (
                    Server::new(Listener::Unix(l), UAPI, super::uapi::MAX_REQUEST),
                    p.clone(),
                )
            }),
            None => None,
        };
        if let Some((_, p)) = &control {
            crate::info!("control socket {}", p.display());
        }
        if let Some((_, p)) = &uapi {
            crate::info!("WireGuard UAPI socket {} (`wg show` reads it)", p.display());
        }
        if let Some(a) = config.metrics {
            crate::info!("metrics on http://{a}/metrics");
        }
        let flow_log = match &config.flow_log {
            Some(t) => {
                Some(FlowLog::open(t, observer).map_err(|e| format!("flow log: cannot open {e}"))?)
            }
            None => None,
        };
        Ok(Observe {
            control,
            metrics,
            uapi,
            flow_log,
            info,
        })
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        if let Some((s, _)) = &mut self.control {
            s.register(registry)?;
        }
        if let Some(s) = &mut self.metrics {
            s.register(registry)?;
        }
        if let Some((s, _)) = &mut self.uapi {
            s.register(registry)?;
        }
        Ok(())
    }

    /// Whether `token` is one of ours.
    pub fn owns(token: Token) -> bool {
        (TOKEN_BASE..TOKEN_BASE + 6 * MAX_CLIENTS).contains(&token.0)
    }

    fn refresh_info(&mut self) {
        self.info.flow_log = self.flow_log.as_ref().map(|f| (f.written, f.lost));
    }

    /// Serves a readiness event on one of our tokens.
    pub fn ready(&mut self, registry: &Registry, token: Token, engine: &Engine, now: Instant) {
        self.refresh_info();
        let info = &self.info;
        if let Some((s, _)) = self.control.as_mut().filter(|(s, _)| s.owns(token)) {
            s.ready(registry, token, now, &mut |req| {
                control_step(req, engine, info, now)
            });
        } else if let Some(s) = self.metrics.as_mut().filter(|s| s.owns(token)) {
            s.ready(registry, token, now, &mut |req| {
                super::metrics::step(req, info.data_plane_up, || {
                    snapshot::status(engine, info, now, SystemTime::now())
                })
            });
        } else if let Some((s, _)) = self.uapi.as_mut().filter(|(s, _)| s.owns(token)) {
            s.ready(registry, token, now, &mut |req| {
                super::uapi::step(req, || {
                    snapshot::status(engine, info, now, SystemTime::now())
                })
            });
        }
    }

    /// Writes the engine's pending flow records.
    pub fn drain_flows(&mut self, engine: &mut Engine, now: Instant) {
        let Some(log) = self.flow_log.as_mut() else {
            return;
        };
        let mut wall = None;
        while let Some(item) = engine.poll_flow() {
            let w = *wall.get_or_insert_with(SystemTime::now);
            log.push(&item, now, w);
        }
    }

    /// Once a tick: flush the flow log, drop clients past their deadline.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if let Some(log) = self.flow_log.as_mut() {
            log.flush();
        }
        if let Some((s, _)) = &mut self.control {
            s.sweep(registry, now);
        }
        if let Some(s) = &mut self.metrics {
            s.sweep(registry, now);
        }
        if let Some((s, _)) = &mut self.uapi {
            s.sweep(registry, now);
        }
    }

    /// A policy reload was applied (`ok`) or refused.
    pub fn reloaded(&mut self, ok: bool) {
        if ok {
            self.info.reloads_ok += 1;
            self.info.policy_loaded = SystemTime::now();
        } else {
            self.info.reloads_rejected += 1;
        }
    }

    /// SIGUSR1: reopen the flow log file.
    pub fn reopen(&mut self) {
        if let Some(log) = self.flow_log.as_mut() {
            match log.reopen() {
                Ok(()) => crate::info!("SIGUSR1: flow log reopened"),
                Err(e) => crate::warn!("SIGUSR1: cannot reopen the flow log: {e}"),
            }
        }
    }

    /// Stopping: flow-end records for every open flow, flushed; sockets
    /// removed.
    pub fn shutdown(&mut self, engine: &mut Engine, now: Instant) {
        self.drain_flows(engine, now);
        if let Some(log) = self.flow_log.as_mut() {
            let wall = SystemTime::now();
            for r in engine.shutdown_records(now) {
                log.push(&crate::node::flows::FlowItem::Record(r), now, wall);
            }
            log.flush();
        }
        for (_, p) in self.control.iter().chain(self.uapi.iter()) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The control protocol on the bytes a client sent so far.
fn control_step(req: &[u8], engine: &Engine, info: &NodeInfo, now: Instant) -> Step {
    let answer = match proto::decode_frame::<Request>(req, MAX_REQUEST) {
        Ok(None) => return Step::More,
        Err(e) => Response::Error(e.to_string()),
        Ok(Some((Request::Status, _))) => Response::Status(Box::new(snapshot::status(
            engine,
            info,
            now,
            SystemTime::now(),
        ))),
        Ok(Some((Request::Flows { peer }, _))) => {
            match snapshot::flows(engine, peer.as_deref(), now) {
                Ok(f) => Response::Flows(f),
                Err(e) => Response::Error(e),
            }
        }
    };
    Step::Reply(proto::encode(&answer))
}
