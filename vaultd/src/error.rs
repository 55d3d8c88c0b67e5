//! The daemon library's error type: one variant per failed operation, each
//! carrying the path or name involved. Messages say what failed and what to
//! do; none ever contains a secret (values never reach an error).

use std::io;
use std::path::{Path, PathBuf};

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in vaultd and vaultctl.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {op} {}: {err}", path.display())]
    Io {
        /// What was being done ("write vault", "open audit log"...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error (its text names ENOSPC, EACCES...). Not a `source`:
        /// the message already carries it, and a chain printer
        /// (`{:#}`) would print it twice.
        err: io::Error,
    },
    /// There is no vault file yet.
    #[error("no vault at {}: create one with `vaultctl init`", path.display())]
    NoVault {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `init` found an existing vault.
    #[error("a vault already exists at {}: it was left untouched (to start over, move it away first)", path.display())]
    VaultExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The vault file is not something this version can read.
    #[error("{} is not a vaultd vault file ({why}); it was not changed", path.display())]
    BadFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The vault file was modified or corrupted.
    #[error(
        "vault file {} failed its integrity check: it has been tampered with or corrupted ({why}); it was not changed: restore it from a backup",
        path.display()
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// Which check failed.
        why: &'static str,
    },
    /// The passphrase does not open the vault.
    #[error(
        "wrong passphrase: the vault was not changed; try again (each failure makes the next answer slower)"
    )]
    WrongPassphrase,
    /// The file on disk is older than one this daemon already saw.
    #[error(
        "vault file {} is older (generation {found}) than one this vaultd already loaded (generation {seen}): it may have been rolled back; restore the newest copy",
        path.display()
    )]
    Rollback {
        /// The file.
        path: PathBuf,
        /// Generation in the file.
        found: u64,
        /// Highest generation seen.
        seen: u64,
    },
    /// The vault file opens, but it is not the vault this daemon unlocked
    /// before (another data key): it was replaced since.
    #[error(
        "vault file {} is not the vault this vaultd opened before (it was replaced since, by another vault of its own passphrase); nothing was changed and the running state stays as it is. Find what replaced it (an agent can write your files) and put your vault back; if you replaced it yourself, restart vaultd (`systemctl --user restart vaultd`)",
        path.display()
    )]
    VaultReplaced {
        /// The file.
        path: PathBuf,
    },
    /// `lock` (or the unlock timer) ran while this unlock derived its key.
    #[error(
        "vaultd was locked while this unlock ran (`vaultctl lock`, or the unlock timer): it stays locked; run `vaultctl unlock` again if you meant to unlock"
    )]
    LockedMeanwhile,
    /// Cryptographic failure that is not an authentication failure.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// Secret memory could not be allocated.
    #[error(transparent)]
    SecretAlloc(#[from] crate::secret::SecretAllocError),
    /// Bad configuration or environment.
    #[error("{0}")]
    Config(String),
    /// A request was invalid (message says why and what to do).
    #[error("{0}")]
    Invalid(String),
    /// A change to the vault was not made because its audit record could
    /// not be written (the message says why and what to do).
    #[error("the change was not made, since its audit record cannot be written: {0}")]
    AuditUnavailable(String),
    /// A name was not found.
    #[error("no {kind} named {name:?}{hint}")]
    NotFound {
        /// "secret", "agent"...
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// What to do (starts with "; ").
        hint: &'static str,
    },
}

impl Error {
    /// An I/O error on `path` while doing `op`.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            err: source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_names_the_os_error_once_in_a_chain() {
        let e = Error::io(
            "create directory",
            Path::new("/proc/self/x/vaultd"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        assert!(
            text.starts_with("cannot create directory /proc/self/x/vaultd: "),
            "{text}"
        );
    }
}
