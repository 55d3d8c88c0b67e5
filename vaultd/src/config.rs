//! `vaultd.toml`: the daemon's non-secret settings. Everything secret, and the
//! whole policy, lives in the sealed vault instead: an agent that can edit
//! this file can at most weaken local settings it could weaken anyway (it runs
//! as the same user), never grant itself a capability.

use std::path::Path;

use serde::Deserialize;

use crate::error::Error;

/// Most runtime threads `worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 256;

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
    /// Threads of the async runtime that serves calls; 0 means one per CPU.
    /// One is the default: a call costs vaultd about 0.1 ms of CPU, so one
    /// thread serves thousands of calls a second, and on a machine where
    /// vaultd shares the cores with its agents a second thread measured
    /// slower (cross-thread wake-ups), not faster (README, Performance).
    /// Argon2 and vault writes run on separate blocking threads either way.
    pub worker_threads: usize,
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
            worker_threads: 1,
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
        let config: Config = toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: {}; fix the file or remove it to use defaults",
                path.display(),
                e.to_string().trim()
            ))
        })?;
        if config.worker_threads > MAX_WORKER_THREADS {
            return Err(Error::Config(format!(
                "{}: worker_threads = {} is more than {MAX_WORKER_THREADS}; set 1 (the default) or 0 for one per CPU",
                path.display(),
                config.worker_threads
            )));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_worker_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vaultd.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.worker_threads, 1);
        assert_eq!(c.upstream_ports, vec![443]);

        std::fs::write(&path, "worker_threads = 0\nmax_connections = 8\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!((c.worker_threads, c.max_connections), (0, 8));

        std::fs::write(&path, "worker_threads = -1\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("worker_threads") && e.contains("fix the file"),
            "{e}"
        );

        std::fs::write(&path, "worker_threads = 100000\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("more than 256") && e.contains("set 1"), "{e}");

        std::fs::write(&path, "worker_thread = 2\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
