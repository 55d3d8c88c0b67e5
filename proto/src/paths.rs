//! Where the daemon's socket lives. The daemon's own `dirs` module uses the same
//! function, so client and daemon cannot disagree.

use std::path::PathBuf;

/// Socket file name inside `VAULTD_HOME` or `$XDG_RUNTIME_DIR/vaultd`.
pub const SOCKET_NAME: &str = "vaultd.sock";

/// Why no socket path could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Neither `VAULTD_SOCKET`, `VAULTD_HOME` nor `XDG_RUNTIME_DIR` is set.
    #[error(
        "cannot locate vaultd's socket: XDG_RUNTIME_DIR is not set; set VAULTD_SOCKET=PATH or VAULTD_HOME=DIR"
    )]
    NoRuntimeDir,
    /// A variable is set but is not an absolute path.
    #[error("{var} must be an absolute path, got {value:?}")]
    NotAbsolute {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// `VAULTD_HOME` names something that is not a directory.
    #[error(
        "VAULTD_HOME={0} is not a directory: point it at a directory (created if missing), or unset it for the default locations"
    )]
    HomeNotADirectory(String),
}

fn absolute_var(var: &'static str) -> Result<Option<PathBuf>, PathError> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(&v);
            if p.is_absolute() {
                Ok(Some(p))
            } else {
                Err(PathError::NotAbsolute {
                    var,
                    value: v.to_string_lossy().into_owned(),
                })
            }
        }
        _ => Ok(None),
    }
}

/// `VAULTD_HOME`, when set: one directory holding everything (tests, isolated instances).
pub fn vaultd_home() -> Result<Option<PathBuf>, PathError> {
    match absolute_var("VAULTD_HOME")? {
        Some(home) if home.exists() && !home.is_dir() => {
            Err(PathError::HomeNotADirectory(home.display().to_string()))
        }
        home => Ok(home),
    }
}

/// The socket path: `VAULTD_SOCKET`, else `VAULTD_HOME/vaultd.sock`, else
/// `$XDG_RUNTIME_DIR/vaultd/vaultd.sock`.
pub fn socket_path() -> Result<PathBuf, PathError> {
    if let Some(p) = absolute_var("VAULTD_SOCKET")? {
        return Ok(p);
    }
    if let Some(home) = vaultd_home()? {
        return Ok(home.join(SOCKET_NAME));
    }
    match absolute_var("XDG_RUNTIME_DIR")? {
        Some(run) => Ok(run.join("vaultd").join(SOCKET_NAME)),
        None => Err(PathError::NoRuntimeDir),
    }
}
