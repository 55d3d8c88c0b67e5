//! `vaultd.toml`: the daemon's non-secret settings. Everything secret, and the
//! whole policy, lives in the sealed vault instead: an agent that can edit
//! this file can at most weaken local settings it could weaken anyway (it runs
//! as the same user), never grant itself a capability.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;

/// Daemon settings, all optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Extra uids (besides the daemon's own) allowed to connect to the socket.
    pub allowed_uids: Vec<u32>,
    /// Refuse to hold secrets on pages that cannot be mlocked.
    pub require_mlock: bool,
    /// Refuse to start when landlock or seccomp cannot be enforced.
    pub require_sandbox: bool,
    /// TCP ports upstream connections may use (landlock ConnectTcp). A new
    /// port takes effect when vaultd restarts.
    pub upstream_ports: Vec<u16>,
    /// Log filter for stderr (`info`, `debug`, `vaultd=debug`...). Never logs secrets.
    pub log: String,
    /// Most gRPC connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            allowed_uids: Vec::new(),
            require_mlock: false,
            require_sandbox: false,
            upstream_ports: vec![443],
            log: "info".to_string(),
            max_connections: 1024,
        }
    }
}

impl Config {
    /// Reads `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(Error::io("read config", path, e)),
        };
        toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: {}; fix the file or remove it to use defaults",
                path.display(),
                e.to_string().trim()
            ))
        })
    }
}
