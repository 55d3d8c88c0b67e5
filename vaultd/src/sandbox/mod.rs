//! vaultd sandboxes itself: Landlock, then a seccomp allowlist.
//!
//! [`apply`] runs once, in `main`, after the socket is bound and the system
//! trust roots are read, before the tokio runtime starts any thread and
//! before any secret is read. Both layers are inherited by every thread
//! created later (and seccomp is installed with TSYNC besides), and both set
//! `no_new_privs`.
//!
//! - Landlock ([`landlock_rules`]): read-only the config file, the resolver
//!   files and the NSS modules getaddrinfo may load; read-write (no execve of files
//!   there) the vault, audit and socket directories; TCP connect only to
//!   `upstream_ports`; no TCP bind; abstract unix sockets and signals scoped
//!   to vaultd itself. Nothing else on the filesystem: not `$HOME`, not
//!   `~/.ssh`, not `/etc/shadow` (root included), execve of no file
//!   (Landlock's execute right governs execve, not mmap).
//! - seccomp ([`syscalls`], [`seccomp_filter`]): an allowlist for the whole
//!   process; a kill list (execve, ptrace, mount, namespaces, bpf, keyrings,
//!   io_uring...); anything else fails with EPERM.
//!
//! The policy is reviewed data; `docs/sandbox.md` says what is allowed and
//! why, and how to find a missing path or system call.

pub mod landlock_rules;
pub mod seccomp_filter;
pub mod syscalls;

use std::path::PathBuf;

use crate::config::Config;
use crate::dirs::Dirs;

pub use landlock_rules::{PINNED_ABI_NUMBER, Policy};

/// What [`apply`] enforced, as shown by `vaultctl status` and `vaultd check`.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    /// Whether the Landlock ruleset is enforced.
    pub landlock_enforced: bool,
    /// The Landlock status line ("enforced (landlock ABI 6 ...)" or "not enforced: why").
    pub landlock: String,
    /// Whether the seccomp filters are installed.
    pub seccomp_enforced: bool,
    /// The seccomp status line.
    pub seccomp: String,
}

/// Why the sandbox could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More than one thread runs: Landlock (before ABI 8) would miss the others.
    #[error(
        "cannot sandbox: {0} threads are already running, and the sandbox must be applied before any thread starts (this is a bug in vaultd)"
    )]
    Threads(usize),
    /// /proc/self/status could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Proc {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A path of the Landlock policy could not be opened.
    #[error("landlock: cannot open {} for a rule: {source}", path.display())]
    LandlockPath {
        /// The path.
        path: PathBuf,
        /// Why.
        source: landlock::PathFdError,
    },
    /// The Landlock ruleset could not be built or enforced.
    #[error("landlock: {0}")]
    Landlock(String),
    /// The seccomp filters could not be compiled (a bug in the tables).
    #[error("seccomp: cannot compile the filter: {0}")]
    SeccompCompile(String),
    /// A seccomp filter could not be installed.
    #[error("seccomp: cannot install the {filter} filter: {source}")]
    SeccompInstall {
        /// kill, enosys or allow.
        filter: &'static str,
        /// Why.
        source: seccompiler::Error,
    },
    /// `require_sandbox = true` and a layer is not available.
    #[error("{layer} is not available ({why}) and vaultd.toml sets require_sandbox = true: {fix}")]
    Required {
        /// landlock or seccomp.
        layer: &'static str,
        /// Why it is not available.
        why: String,
        /// What to do.
        fix: &'static str,
    },
}

/// Whether the kernel can enforce vaultd's Landlock rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandlockSupport {
    /// The kernel's ABI is at least [`PINNED_ABI_NUMBER`].
    Available {
        /// The kernel's Landlock ABI.
        kernel_abi: u32,
    },
    /// Landlock exists but its ABI is older than the pinned one.
    TooOld {
        /// The kernel's Landlock ABI.
        kernel_abi: u32,
    },
    /// Not built into the kernel, or disabled at boot.
    Missing {
        /// Why (ENOSYS: not built in; EOPNOTSUPP: disabled).
        why: String,
    },
}

impl LandlockSupport {
    /// Asks the kernel.
    pub fn probe() -> LandlockSupport {
        match crate::sys::landlock_abi_version() {
            Ok(v) if v >= PINNED_ABI_NUMBER => LandlockSupport::Available { kernel_abi: v },
            Ok(v) => LandlockSupport::TooOld { kernel_abi: v },
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => LandlockSupport::Missing {
                why: "landlock is disabled at boot (add landlock to the lsm= kernel parameter)"
                    .into(),
            },
            Err(_) => LandlockSupport::Missing {
                why: "kernel has no landlock".into(),
            },
        }
    }

    /// "not enforced: ..." text, when not available.
    fn not_enforced(&self) -> Option<String> {
        match self {
            LandlockSupport::Available { .. } => None,
            LandlockSupport::TooOld { kernel_abi } => Some(format!(
                "kernel landlock ABI {kernel_abi} is older than ABI {PINNED_ABI_NUMBER} that vaultd's rules need (Linux 6.12 or later)"
            )),
            LandlockSupport::Missing { why } => Some(why.clone()),
        }
    }
}

/// Whether the kernel offers seccomp filters with the actions vaultd uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompSupport {
    /// Filters, KILL_PROCESS and ERRNO are available.
    Available,
    /// Why not.
    Missing(String),
}

impl SeccompSupport {
    /// Reads /proc (nothing is installed).
    pub fn probe() -> SeccompSupport {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if !status.lines().any(|l| l.starts_with("Seccomp_filters:")) {
            return SeccompSupport::Missing(
                "kernel has no seccomp filter support (CONFIG_SECCOMP_FILTER)".into(),
            );
        }
        match std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail") {
            Ok(a) => {
                let have: Vec<&str> = a.split_whitespace().collect();
                let missing: Vec<&str> = ["kill_process", "errno", "allow"]
                    .into_iter()
                    .filter(|x| !have.contains(x))
                    .collect();
                if missing.is_empty() {
                    SeccompSupport::Available
                } else {
                    SeccompSupport::Missing(format!(
                        "kernel lacks seccomp action(s) {}",
                        missing.join(", ")
                    ))
                }
            }
            // Older kernels have no actions_avail: filters are there, assume the
            // classic actions (installing would fail loudly otherwise).
            Err(_) => SeccompSupport::Available,
        }
    }
}

/// The value of a `Key:\tvalue` line of /proc/self/status.
pub fn proc_status_field(key: &str) -> Result<Option<String>, Error> {
    let path = PathBuf::from("/proc/self/status");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Proc { path, source })?;
    Ok(crate::sys::status_field(&text, key).map(str::to_string))
}

fn thread_count() -> Result<usize, Error> {
    Ok(proc_status_field("Threads")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Sandboxes the calling process: Landlock with the rules for `dirs` and
/// `config`, then the seccomp filters. Must run while the process has a
/// single thread. When the kernel cannot enforce a layer, that layer is
/// reported "not enforced: why" and skipped, or, with `require_sandbox =
/// true`, the whole call fails. Any other failure is an error.
pub fn apply(dirs: &Dirs, config: &Config) -> Result<SandboxStatus, Error> {
    let threads = thread_count()?;
    if threads > 1 {
        return Err(Error::Threads(threads));
    }
    // Inspect before restricting anything: every path is opened now.
    let policy = Policy::new(dirs, config)?;
    let seccomp_support = SeccompSupport::probe();
    let filters = seccomp_filter::compile()?;

    let support = LandlockSupport::probe();
    let (landlock_enforced, landlock) = match (&support, support.not_enforced()) {
        (LandlockSupport::Available { kernel_abi }, _) => {
            let summary = policy.summary();
            policy.enforce()?;
            (
                true,
                format!(
                    "enforced (landlock ABI {PINNED_ABI_NUMBER}, kernel ABI {kernel_abi}): {summary}"
                ),
            )
        }
        (_, why) => {
            let why = why.unwrap_or_default();
            if config.require_sandbox {
                return Err(Error::Required {
                    layer: "landlock",
                    why,
                    fix: "run vaultd on Linux 6.12 or later with landlock enabled, or set require_sandbox = false",
                });
            }
            (false, format!("not enforced: {why}"))
        }
    };

    let (seccomp_enforced, seccomp) = match seccomp_support {
        SeccompSupport::Available => {
            seccomp_filter::install(&filters)?;
            let (allowed, killed) = seccomp_filter::counts();
            (
                true,
                format!(
                    "enforced (filter mode 2, all threads): {allowed} syscalls allowed, {killed} kill the process, any other fails with EPERM"
                ),
            )
        }
        SeccompSupport::Missing(why) => {
            if config.require_sandbox {
                return Err(Error::Required {
                    layer: "seccomp",
                    why,
                    fix: "run vaultd on a kernel with CONFIG_SECCOMP_FILTER, or set require_sandbox = false",
                });
            }
            (false, format!("not enforced: {why}"))
        }
    };
    Ok(SandboxStatus {
        landlock_enforced,
        landlock,
        seccomp_enforced,
        seccomp,
    })
}
