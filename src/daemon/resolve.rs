//! Turning a policy's peer references into keys and socket addresses:
//! preshared key files and endpoint host names. A static binary has no
//! working NSS, so names resolve through /etc/hosts only (documented in
//! docs/node.md); IP literals need nothing.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::keys::PresharedKey;
use crate::node::engine::PeerResolver;
use crate::policy::{Host, Node};

/// Resolves against the file system, relative to the policy's directory.
pub struct FileResolver {
    base: PathBuf,
    hosts: Vec<(String, IpAddr)>,
}

impl FileResolver {
    /// `policy_path`'s directory anchors relative `psk` paths; `hosts_file`
    /// is read now (a missing file just means no names resolve).
    pub fn new(policy_path: &Path, hosts_file: &Path) -> Self {
        let base = policy_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let hosts = std::fs::read_to_string(hosts_file)
            .map(|t| parse_hosts(&t))
            .unwrap_or_default();
        FileResolver { base, hosts }
    }
}

/// Parses /etc/hosts: `ADDRESS NAME [ALIAS…]`, `#` comments.
pub fn parse_hosts(text: &str) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        out.extend(words.map(|name| (name.to_ascii_lowercase(), ip)));
    }
    out
}

impl PeerResolver for FileResolver {
    fn preshared_key(&mut self, node: &Node) -> Result<PresharedKey, String> {
        match &node.psk_file {
            None => Ok(PresharedKey::none()),
            Some(path) => {
                let full = if path.is_absolute() {
                    path.clone()
                } else {
                    self.base.join(path)
                };
                PresharedKey::load(&full).map_err(|e| e.to_string())
            }
        }
    }

    fn endpoint(&mut self, node: &Node) -> Result<Option<SocketAddr>, String> {
        let Some(ep) = &node.endpoint else {
            return Ok(None);
        };
        match &ep.host {
            Host::Ip(ip) => Ok(Some(SocketAddr::new(*ip, ep.port))),
            Host::Name(name) => {
                let lower = name.to_ascii_lowercase();
                // Prefer IPv4 when a name has both, like most resolvers.
                let mut found: Vec<IpAddr> = self
                    .hosts
                    .iter()
                    .filter(|(n, _)| *n == lower)
                    .map(|(_, ip)| *ip)
                    .collect();
                found.sort_by_key(|ip| ip.is_ipv6());
                match found.first() {
                    Some(ip) => Ok(Some(SocketAddr::new(*ip, ep.port))),
                    None => Err(format!(
                        "endpoint host '{name}' is not in /etc/hosts (umbra resolves names only there); \
                         use an IP address or add the name to /etc/hosts"
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_parsing() {
        let h = parse_hosts(
            "# c\n127.0.0.1 localhost\n10.0.0.5  db db.internal # x\nbad line\n::1 ip6-localhost\n",
        );
        assert!(h.contains(&("db.internal".to_string(), "10.0.0.5".parse().unwrap())));
        assert!(h.contains(&("ip6-localhost".to_string(), "::1".parse().unwrap())));
        assert_eq!(h.len(), 4);
    }
}
