//! `vaultd.toml`: the daemon's non-secret settings. Everything secret, and the
//! whole policy, lives in the sealed vault instead: an agent that can edit
//! this file can at most weaken local settings it could weaken anyway (it runs
//! as the same user), never grant itself a capability.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    /// How long an unlock without `--for` lasts before the vault locks by
    /// itself, as `ssh-agent -t` sets the default lifetime of added keys.
    /// None: until `vaultctl lock`. `unlock --for` overrides it either way.
    #[serde(deserialize_with = "unlock_for")]
    pub unlock_for: Option<Duration>,
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
            unlock_for: None,
        }
    }
}

/// Longest time an unlock may last before it locks by itself (`unlock --for`,
/// `unlock_for`): a year and a day, a bound that still catches a typo of units.
pub const MAX_UNLOCK_FOR: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses how long an unlock lasts: a humantime duration ("8h", "1h 30m") of
/// whole seconds, from 1 s to [`MAX_UNLOCK_FOR`]. The error says what is
/// wrong, not where the value came from.
pub fn parse_unlock_for(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e}: give a duration such as 8h, 30m or \"1h 30m\""))?;
    if d.subsec_nanos() != 0 || d.is_zero() {
        return Err("give a whole number of seconds, at least 1s".into());
    }
    if d > MAX_UNLOCK_FOR {
        return Err(format!(
            "at most {}",
            humantime::format_duration(MAX_UNLOCK_FOR)
        ));
    }
    Ok(d)
}

/// `unlock_for = "8h"`, checked by [`parse_unlock_for`].
fn unlock_for<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(de)?;
    parse_unlock_for(&text)
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "unlock_for = {text:?}: {e} (or remove unlock_for to stay unlocked until `vaultctl lock`)"
            ))
        })
}

/// The levels `log` may name (alone, or after `TARGET=`).
pub const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl Config {
    /// Reads `path`; a missing file means all defaults (the default location,
    /// where the file is optional).
    pub fn load(path: &Path) -> Result<Config, Error> {
        match read(path)? {
            Some(text) => Config::parse(path, &text),
            None => Ok(Config::default()),
        }
    }

    /// Reads `path`, which must exist: the file named by `vaultd --config`.
    pub fn load_required(path: &Path) -> Result<Config, Error> {
        match read(path)? {
            Some(text) => Config::parse(path, &text),
            None => Err(Error::Config(format!(
                "config file {} does not exist: create it (every setting is optional, so an \
                 empty file means the defaults) or drop --config to use the default location",
                path.display()
            ))),
        }
    }

    /// Parses and checks the text of `path`.
    fn parse(path: &Path, text: &str) -> Result<Config, Error> {
        let bad = |what: String| Error::Config(format!("{}: {what}", path.display()));
        let config: Config = toml::from_str(text).map_err(|e| {
            bad(format!(
                "{}; fix the file or remove it to use defaults",
                e.to_string().trim()
            ))
        })?;
        if config.worker_threads > MAX_WORKER_THREADS {
            return Err(bad(format!(
                "worker_threads = {} is more than {MAX_WORKER_THREADS}; set 1 (the default) or 0 for one per CPU",
                config.worker_threads
            )));
        }
        if config.upstream_ports.contains(&0) {
            return Err(bad(format!(
                "upstream_ports = {:?} contains 0, which no connection can use: list the TCP \
                 ports of your services' base URLs, like [443] (the default) or [443, 8443]",
                config.upstream_ports
            )));
        }
        check_log(&config.log).map_err(bad)?;
        Ok(config)
    }
}

/// The file's text, or None when it does not exist.
fn read(path: &Path) -> Result<Option<String>, Error> {
    if path.is_dir() {
        return Err(Error::Config(format!(
            "config file {} is a directory: name a vaultd.toml file (or none, for the default location)",
            path.display()
        )));
    }
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // One message (an Io error would print its OS error twice through anyhow).
        Err(e) => Err(Error::Config(format!(
            "cannot read config file {}: {e}; make it readable by this user, or remove it to use defaults",
            path.display()
        ))),
    }
}

/// Checks `log` with the parser vaultd's logger uses (`EnvFilter`), and
/// refuses what that parser would accept but silence everything with: a bare
/// word that is not a level ("loud") is read as a module name to trace, which
/// turns every other log line off.
fn check_log(log: &str) -> Result<(), String> {
    let usage = || {
        format!(
            "use a level ({}) or TARGET=LEVEL filters separated by commas, like \"info\" or \"info,vaultd=debug\"",
            LOG_LEVELS.join(", ")
        )
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(log) {
        return Err(format!(
            "log = {log:?} is not a log filter ({e}): {}",
            usage()
        ));
    }
    let directives: Vec<&str> = log
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!("log = {log:?} is empty: {}", usage()));
    }
    for d in directives {
        let level = LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d))
            || matches!(d, "0" | "1" | "2" | "3" | "4" | "5");
        if !d.contains('=') && !level {
            return Err(format!(
                "log = {log:?}: {d:?} is not a level (as written it would log only the module {d:?} \
                 and silence everything else): {}",
                usage()
            ));
        }
    }
    Ok(())
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

    #[test]
    fn unlock_for_is_a_duration_of_whole_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vaultd.toml");
        assert_eq!(Config::load(&path).unwrap().unlock_for, None);
        std::fs::write(&path, "unlock_for = \"1h 30m\"\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().unlock_for,
            Some(Duration::from_secs(5400))
        );
        for (bad, says) in [
            ("\"0s\"", "at least 1s"),
            ("\"1500ms\"", "whole number of seconds"),
            ("\"eight hours\"", "such as 8h"),
            ("\"400days\"", "at most 1year"),
            ("28800", "invalid type"),
        ] {
            std::fs::write(&path, format!("unlock_for = {bad}\n")).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(
                e.contains("unlock_for") && e.contains(says) && e.contains("vaultd.toml"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn log_must_be_a_level_or_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vaultd.toml");
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,vaultd=debug",
            "info,vaultd::proxy=trace",
            "2",
        ] {
            std::fs::write(&path, format!("log = {ok:?}\n")).unwrap();
            assert_eq!(Config::load(&path).unwrap().log, ok);
        }
        for (bad, needle) in [
            ("loud", "\"loud\" is not a level"),
            ("info,loud", "\"loud\" is not a level"),
            ("vaultd=loud", "is not a log filter"),
            ("", "is empty"),
            (" , ", "is not a log filter"),
        ] {
            std::fs::write(&path, format!("log = {bad:?}\n")).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(
                e.starts_with(&path.display().to_string())
                    && e.contains(needle)
                    && e.contains("off, error, warn, info, debug, trace"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn upstream_ports_refuse_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vaultd.toml");
        std::fs::write(&path, "upstream_ports = [443, 0]\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string())
                && e.contains("contains 0")
                && e.contains("[443]"),
            "{e}"
        );
        std::fs::write(&path, "upstream_ports = [443, 8443, 443]\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().upstream_ports,
            vec![443, 8443, 443]
        );
    }

    #[test]
    fn required_file_missing_or_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such.toml");
        // The default location may be missing: defaults.
        assert_eq!(Config::load(&missing).unwrap().upstream_ports, vec![443]);
        // A file named with --config must exist.
        let e = Config::load_required(&missing).unwrap_err().to_string();
        assert!(
            e.contains(&missing.display().to_string())
                && e.contains("does not exist")
                && e.contains("create it")
                && e.contains("drop --config"),
            "{e}"
        );
        std::fs::write(&missing, "").unwrap();
        assert_eq!(Config::load_required(&missing).unwrap().worker_threads, 1);
        // A directory: one message, no OS error repeated.
        for e in [
            Config::load(dir.path()).unwrap_err().to_string(),
            Config::load_required(dir.path()).unwrap_err().to_string(),
        ] {
            assert!(
                e.contains(&dir.path().display().to_string())
                    && e.contains("is a directory: name a vaultd.toml file")
                    && !e.contains("os error"),
                "{e}"
            );
        }
    }
}
