//! Every filesystem location vaultd and vaultctl use, in one place.
//!
//! With `VAULTD_HOME=DIR` everything lives in DIR (one isolated instance, as
//! tests use). Otherwise the XDG base directories: config in
//! `$XDG_CONFIG_HOME/vaultd`, vault in `$XDG_DATA_HOME/vaultd`, audit log in
//! `$XDG_STATE_HOME/vaultd`, socket in `$XDG_RUNTIME_DIR/vaultd` (or
//! `VAULTD_SOCKET`). Directories are created 0700 (atomically, by `mkdir`
//! with that mode, never chmod after the fact, and never chmod of one that
//! exists) and checked to be ours.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Resolved locations of one vaultd instance.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `vaultd.toml` (non-secret daemon settings).
    pub config_file: PathBuf,
    /// `vault.bin` (the sealed vault).
    pub vault_file: PathBuf,
    /// `audit.jsonl`.
    pub audit_file: PathBuf,
    /// `vaultd.sock`.
    pub socket: PathBuf,
}

fn xdg(var: &str, fallback_under_home: &str) -> Result<PathBuf, Error> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if p.is_absolute() {
            return Ok(p);
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "neither {var} nor HOME is set: set VAULTD_HOME=DIR"
            ))
        })?;
    Ok(PathBuf::from(home).join(fallback_under_home))
}

/// The instance lock beside `guarded` (`vault.bin.lock`, `vaultd.sock.lock`):
/// vaultd holds an exclusive flock on it for its whole life, and `vaultctl
/// lock` asks the kernel who holds the vault's.
pub fn instance_lock_path(guarded: &Path) -> PathBuf {
    let mut name = guarded.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    guarded.with_file_name(name)
}

impl Dirs {
    /// Locations from the environment. `config_override` is `--config FILE`.
    pub fn from_env(config_override: Option<&Path>) -> Result<Dirs, Error> {
        let socket = vault_proto::paths::socket_path().map_err(|e| Error::Config(e.to_string()))?;
        Self::with_socket(config_override, socket)
    }

    /// Locations for a command that never talks to the daemon (`vaultctl
    /// init`), which must not need `XDG_RUNTIME_DIR`: when the socket cannot
    /// be located, `socket` is a placeholder in the vault's own directory
    /// (only its directory is ever created from it, and that exists anyway).
    pub fn from_env_without_daemon() -> Result<Dirs, Error> {
        match vault_proto::paths::socket_path() {
            Ok(socket) => Self::with_socket(None, socket),
            Err(vault_proto::paths::PathError::NoRuntimeDir) => {
                let mut d = Self::with_socket(None, PathBuf::new())?;
                d.socket = d.vault_file.with_file_name(vault_proto::paths::SOCKET_NAME);
                Ok(d)
            }
            Err(e) => Err(Error::Config(e.to_string())),
        }
    }

    fn with_socket(config_override: Option<&Path>, socket: PathBuf) -> Result<Dirs, Error> {
        let home = vault_proto::paths::vaultd_home().map_err(|e| Error::Config(e.to_string()))?;
        let mut dirs = match home {
            Some(home) => Dirs {
                config_file: home.join("vaultd.toml"),
                vault_file: home.join("vault.bin"),
                audit_file: home.join("audit.jsonl"),
                socket,
            },
            None => Dirs {
                config_file: xdg("XDG_CONFIG_HOME", ".config")?.join("vaultd/vaultd.toml"),
                vault_file: xdg("XDG_DATA_HOME", ".local/share")?.join("vaultd/vault.bin"),
                audit_file: xdg("XDG_STATE_HOME", ".local/state")?.join("vaultd/audit.jsonl"),
                socket,
            },
        };
        if let Some(c) = config_override {
            dirs.config_file = c.to_path_buf();
        }
        Ok(dirs)
    }

    /// Directories vaultd writes to (created 0700): vault, audit and socket dirs.
    pub fn writable_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = [&self.vault_file, &self.audit_file, &self.socket]
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Creates every directory vaultd needs, 0700.
    pub fn create_all(&self) -> Result<(), Error> {
        for d in self.writable_dirs() {
            ensure_private_dir(&d)?;
        }
        Ok(())
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing; refuses a directory
/// owned by another user. An existing directory keeps its mode: it may be the
/// user's own (`VAULTD_SOCKET=$HOME/vaultd.sock`), and vaultd's files in it
/// are 0600 anyway; one open to others gets a warning.
pub fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create directory", dir, e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io("inspect directory", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != crate::sys::getuid() {
        return Err(Error::Config(format!(
            "{} belongs to uid {}, not to you (uid {}): choose another directory",
            dir.display(),
            meta.uid(),
            crate::sys::getuid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "{} is open to other users (mode {:o}): vaultd's files in it are 0600, but \
             `chmod 700 {}` would hide their names too",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        );
    }
    Ok(())
}
