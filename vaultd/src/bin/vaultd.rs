//! vaultd: the credential vault daemon. Runs in the foreground, logs to
//! stderr, starts locked, exits 0 on SIGTERM (locking first: keys wiped, calls
//! aborted; open connections get SHUTDOWN_GRACE). See ARCHITECTURE.md.
//!
//! Start-up order (each step before the next):
//! 1. close inherited fds, not dumpable, no core files;
//! 2. config, directories, the single-instance lock, the socket bound (a std
//!    listener), the system trust roots read;
//! 3. the sandbox ([`vaultd::sandbox::apply`]): landlock, then seccomp, while
//!    the process still has one thread;
//! 4. only then the tokio runtime (its threads inherit the sandbox), the
//!    daemon, and the first secret.
//!
//! `vaultd check` reports which of these protections this machine enforces.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use vaultd::cli::{Args, Cmd};
use vaultd::config::Config;
use vaultd::daemon::Daemon;
use vaultd::dirs::{Dirs, ensure_private_dir};
use vaultd::sandbox::{LandlockSupport, PINNED_ABI_NUMBER, SeccompSupport};
use vaultd::server::{VaultService, accept_loop};

/// How long open connections may keep vaultd alive after SIGTERM (the vault
/// is already locked by then).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[global_allocator]
static ALLOC: vaultd::sys::ZeroingAllocator = vaultd::sys::ZeroingAllocator;

fn main() {
    // Before anything else: no inherited fds, not dumpable, no core files.
    let early = vaultd::sys::close_inherited_fds()
        .and_then(|_| vaultd::sys::harden_process())
        .and_then(|_| vaultd::sys::raise_nofile_limit().map(|_| ()));
    let args = Args::parse();
    if let Err(e) = early {
        eprintln!("vaultd: cannot harden the process: {e}");
        std::process::exit(1);
    }
    let result = match args.command {
        None => run(args.config),
        Some(Cmd::Check) => check(args.config).map(|ok| {
            if !ok {
                std::process::exit(1)
            }
        }),
    };
    if let Err(e) = result {
        eprintln!("vaultd: {e:#}");
        std::process::exit(1);
    }
}

fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let dirs = Dirs::from_env(config_path.as_deref())?;
    let config = load_config(&dirs, config_path.is_some())?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    vaultd::secret::set_require_mlock(config.require_mlock);
    // Probe: can secret pages be locked here?
    drop(vaultd::secret::SecretBuf::zeroed(32)?);
    if !vaultd::sys::mlock_ok() {
        tracing::warn!(
            "secret pages cannot be locked in RAM (mlock failed): raise LimitMEMLOCK or `ulimit -l`"
        );
    }
    // Before the sandbox, which closes /proc/self/uid_map (the answer is kept).
    if let Some(why) = vaultd::sys::user_namespace_exposure() {
        if config.require_sandbox {
            bail!("{why}; vaultd refuses to start (require_sandbox = true)");
        }
        tracing::warn!("{why} (set require_sandbox = true to refuse to start like this)");
    }
    dirs.create_all()?;
    let sock_dir = dirs
        .socket
        .parent()
        .context("the socket path has no directory")?;
    ensure_private_dir(sock_dir)?;

    // One instance per socket and one per vault: hold exclusive locks for our
    // whole life. (A second daemon on the same vault, reached through another
    // VAULTD_SOCKET, would interleave its audit records with ours and serve a
    // stale copy of the policy.)
    let lock_file = hold_instance_lock(&dirs.socket, &format!("on {}", dirs.socket.display()))?;
    let vault_lock = hold_instance_lock(
        &dirs.vault_file,
        &format!("for {}", dirs.vault_file.display()),
    )?;
    // We hold the lock, so a socket left here is stale. Anything else at that
    // path (a mistyped VAULTD_SOCKET naming a file of the user's) is not ours
    // to remove.
    match std::fs::symlink_metadata(&dirs.socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(&dirs.socket)
                .with_context(|| format!("cannot remove stale socket {}", dirs.socket.display()))?;
            tracing::info!("removed stale socket {}", dirs.socket.display());
        }
        Ok(_) => bail!(
            "{} exists and is not a socket, so vaultd will not replace it: point VAULTD_SOCKET \
             at a free path (or unset it for the default), or move that file away",
            dirs.socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect {}", dirs.socket.display()));
        }
    }

    // Everything that needs the open filesystem happens here, before the sandbox.
    let listener = std::os::unix::net::UnixListener::bind(&dirs.socket)
        .with_context(|| format!("cannot bind {}", dirs.socket.display()))?;
    std::fs::set_permissions(&dirs.socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", dirs.socket.display()))?;
    let bound = file_id(&dirs.socket)
        .with_context(|| format!("cannot inspect {}", dirs.socket.display()))?;
    let roots = vaultd::proxy::upstream::load_system_roots();
    // Reads cgroup files, which the sandbox closes.
    let workers = match config.worker_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };

    // Still one thread: sandbox now, so every thread the runtime starts inherits it.
    let sandbox = vaultd::sandbox::apply(&dirs, &config).context("cannot sandbox vaultd")?;
    for (enforced, layer, line) in [
        (sandbox.landlock_enforced, "landlock", &sandbox.landlock),
        (sandbox.seccomp_enforced, "seccomp", &sandbox.seccomp),
    ] {
        if enforced {
            tracing::info!("{layer}: {line}");
        } else {
            tracing::warn!(
                "{layer}: {line} (set require_sandbox = true to refuse to start without it)"
            );
        }
    }

    listener
        .set_nonblocking(true)
        .context("cannot make the socket non-blocking")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("vaultd")
        .build()
        .context("cannot start the async runtime")?;
    let served = rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener).context("cannot register the socket")?;
        let mut allowed = config.allowed_uids.clone();
        allowed.push(vaultd::sys::getuid());
        let socket_path = dirs.socket.clone();
        let mut daemon = Daemon::new(dirs, config, roots);
        daemon.landlock_status = sandbox.landlock;
        daemon.landlock_enforced = sandbox.landlock_enforced;
        daemon.seccomp_status = sandbox.seccomp;
        let daemon = Arc::new(daemon);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let max_connections = daemon.config.max_connections;
        tokio::spawn(accept_loop(listener, allowed.clone(), max_connections, tx));
        let service = VaultService { daemon: daemon.clone(), allowed };
        // On SIGTERM or Ctrl-C the vault is locked first: keys wiped, calls
        // aborted, `audit tail -f` streams ended. Only then does the server
        // stop taking connections and wait for the open ones, at most
        // SHUTDOWN_GRACE: a client that keeps a stream open cannot keep the
        // daemon (or its keys) alive.
        //
        // A socket removed or replaced (which the agent can do: same uid)
        // leaves `vaultctl lock` unable to reach this daemon: it locks and
        // exits non-zero, so that systemd starts it again, locked, on a new
        // socket.
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
        let shutdown = {
            let daemon = daemon.clone();
            let socket_path = socket_path.clone();
            async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                    why = socket_lost(&socket_path, bound) => {
                        tracing::error!("{why}: `vaultctl lock` can no longer reach this daemon, so it locks and exits (systemd starts it again, locked)");
                        let _ = lost_tx.send(why);
                    }
                }
                tracing::info!("shutting down: locking the vault");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                daemon.lock().await;
                let _ = stopping_tx.send(());
            }
        };
        let grace = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(socket = %socket_path.display(), "vaultd {} ready (locked)", env!("CARGO_PKG_VERSION"));
        let serve = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            // Each connection bounded in memory (DESIGN.md rule 10): tonic's default is no limit.
            .max_concurrent_streams(vaultd::server::MAX_CONCURRENT_STREAMS)
            .add_service(
                // Bodies up to 10 MiB must reach the proxy's own check (bad_request), not tonic's 4 MiB default.
                vault_proto::v1::vault_server::VaultServer::new(service)
                    .max_decoding_message_size(vault_proto::MAX_REQUEST_BYTES)
                    .max_encoding_message_size(vault_proto::MAX_REPLY_BYTES),
            )
            .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown);
        tokio::select! {
            r = serve => r.context("the gRPC server failed")?,
            () = grace => tracing::warn!(
                "connections still open {} s after the shutdown began; exiting anyway",
                SHUTDOWN_GRACE.as_secs()
            ),
        }
        daemon.lock().await;
        if let Ok(why) = lost_rx.await {
            // Whatever is at the path now is not ours to remove.
            anyhow::bail!("{why}; locked and exiting: start vaultd again");
        }
        let _ = std::fs::remove_file(&socket_path);
        drop(lock_file);
        drop(vault_lock);
        Ok::<_, anyhow::Error>(())
    });
    // Locked and the socket gone: do not wait for a key derivation still
    // running for an unlock whose caller went away (argon2 cannot be
    // stopped, and a large KDF takes many seconds).
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    served
}

/// How often the socket's path is checked to still name the bound socket.
const SOCKET_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// A file's (device, inode), not following a link.
fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Returns (why) once `path` no longer names the socket vaultd bound.
async fn socket_lost(path: &Path, bound: (u64, u64)) -> String {
    loop {
        tokio::time::sleep(SOCKET_CHECK).await;
        // Any error counts: a directory replaced by a file (ENOTDIR), made
        // unreadable (EACCES) or a link loop (ELOOP) hides the socket as
        // well as removing it does.
        match file_id(path) {
            Ok(id) if id == bound => {}
            Ok(_) => return format!("the socket {} was replaced by another file", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return format!("the socket {} was removed or moved", path.display());
            }
            Err(e) => {
                return format!(
                    "the socket {} can no longer be reached ({e})",
                    path.display()
                );
            }
        }
    }
}

/// Opens `guarded`'s lock file (`NAME.lock` beside it) and takes an
/// exclusive lock on it, held while the returned file lives; writes this
/// process's pid into it, so that a second vaultd can say which process to
/// stop. `what` completes "another vaultd is already running ...".
fn hold_instance_lock(guarded: &Path, what: &str) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = &vaultd::dirs::instance_lock_path(guarded);
    let mut file = vaultd::sys::open_regular(
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600),
        path,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    if file.try_lock().is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        let stop = if pid.is_empty() {
            "`systemctl --user stop vaultd`, or end that vaultd process".to_string()
        } else {
            format!("`systemctl --user stop vaultd`, or `kill {pid}`")
        };
        bail!(
            "another vaultd (pid {}) is already running {what} (lock {} is held): stop it first ({stop})",
            if pid.is_empty() { "unknown" } else { pid },
            path.display()
        );
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// vaultd.toml: a file named with `--config` must exist; the default one may
/// be absent (defaults).
fn load_config(dirs: &Dirs, explicit: bool) -> Result<Config, vaultd::error::Error> {
    if explicit {
        Config::load_required(&dirs.config_file)
    } else {
        Config::load(&dirs.config_file)
    }
}

/// One line of `vaultd check`.
fn line(ok: bool, what: &str, detail: &str) -> bool {
    println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
    ok
}

/// `vaultd check`: what this machine enforces; true when everything is available.
fn check(config_path: Option<PathBuf>) -> anyhow::Result<bool> {
    let mut all = true;
    // main() already hardened this process exactly as the daemon does.
    all &= if vaultd::sys::is_dumpable() {
        line(
            false,
            "dumpable",
            "PR_SET_DUMPABLE=0 did not hold: same-uid processes can ptrace vaultd and read its memory",
        )
    } else {
        line(
            true,
            "dumpable",
            "no (PR_SET_DUMPABLE=0: no ptrace by the same user, no /proc/PID/mem)",
        )
    };
    all &= match vaultd::sys::user_namespace_exposure() {
        None => line(
            true,
            "user namespace",
            "none (the initial one: no process of this uid can gain CAP_SYS_PTRACE over vaultd)",
        ),
        Some(why) => line(false, "user namespace", why),
    };
    all &= match vaultd::sys::core_limit() {
        0 => line(true, "core limit", "0 (no core files)"),
        n => line(
            false,
            "core limit",
            &format!("{n}: setrlimit(RLIMIT_CORE, 0) did not hold; set LimitCORE=0 in the unit"),
        ),
    };
    let probe = vaultd::secret::SecretBuf::zeroed(32);
    all &= if probe.is_ok() && vaultd::sys::mlock_ok() {
        line(true, "mlock", "secret pages can be locked in RAM")
    } else {
        line(
            false,
            "mlock",
            "secret pages cannot be locked in RAM: raise LimitMEMLOCK= in the unit or `ulimit -l` (e.g. 16M)",
        )
    };
    drop(probe);
    all &= match LandlockSupport::probe() {
        LandlockSupport::Available { kernel_abi } => line(
            true,
            "landlock",
            &format!("ABI {kernel_abi} available (vaultd's rules use ABI {PINNED_ABI_NUMBER})"),
        ),
        LandlockSupport::TooOld { kernel_abi } => line(
            false,
            "landlock",
            &format!(
                "ABI {kernel_abi} is older than ABI {PINNED_ABI_NUMBER} that vaultd needs: upgrade to Linux 6.12 or later"
            ),
        ),
        LandlockSupport::Missing { why } => line(
            false,
            "landlock",
            &format!(
                "{why}: use a kernel built with CONFIG_SECURITY_LANDLOCK and landlock in lsm="
            ),
        ),
    };
    all &= match SeccompSupport::probe() {
        SeccompSupport::Available => line(
            true,
            "seccomp",
            "filters available (kill_process, errno, TSYNC)",
        ),
        SeccompSupport::Missing(why) => line(
            false,
            "seccomp",
            &format!("{why}: use a kernel with CONFIG_SECCOMP_FILTER"),
        ),
    };
    // The rules a daemon started with this environment would get.
    let policy = Dirs::from_env(config_path.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|dirs| {
            let config = load_config(&dirs, config_path.is_some())?;
            Ok(vaultd::sandbox::Policy::new(&dirs, &config)?)
        });
    match policy {
        Ok(policy) => {
            println!("--   landlock policy: {}", policy.summary());
            for rule in policy.describe() {
                println!("--     {rule}");
            }
        }
        // Typically: vaultd never ran here, so its directories do not exist yet.
        Err(e) => println!("--   landlock policy: not computed ({e:#})"),
    }
    // The daemon, if one runs on our socket.
    let socket = vault_proto::paths::socket_path()?;
    if socket.exists() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        all &= rt.block_on(check_daemon(&socket));
    } else {
        println!(
            "--   daemon: not running (no socket at {})",
            socket.display()
        );
    }
    Ok(all)
}

async fn check_daemon(socket: &Path) -> bool {
    let mut ok = true;
    match std::fs::symlink_metadata(socket) {
        Ok(m) => {
            let mode = m.mode() & 0o777;
            let me = vaultd::sys::getuid();
            ok &= line(
                mode & 0o077 == 0 && m.uid() == me,
                "daemon socket",
                &format!(
                    "{} mode {mode:04o}, owner uid {}{}",
                    socket.display(),
                    m.uid(),
                    if m.uid() == me {
                        ""
                    } else {
                        " (not you: another user's daemon?)"
                    }
                ),
            );
        }
        Err(e) => {
            ok &= line(
                false,
                "daemon socket",
                &format!("{}: {e}", socket.display()),
            )
        }
    }
    let mut client = match vault_proto::client::connect(socket, Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => return line(false, "daemon", &e.to_string()) && ok,
    };
    match client.status(vault_proto::v1::StatusRequest {}).await {
        Ok(s) => {
            let s = s.into_inner();
            println!(
                "--   daemon: vaultd {} (pid {}), {}",
                s.daemon_version, s.pid, s.state
            );
            ok &= line(
                s.mlock_ok,
                "daemon mlock",
                if s.mlock_ok {
                    "secret pages locked"
                } else {
                    "FAILED: raise LimitMEMLOCK"
                },
            );
            ok &= line(
                s.landlock.starts_with("enforced"),
                "daemon landlock",
                &s.landlock,
            );
            ok &= line(
                s.seccomp.starts_with("enforced"),
                "daemon seccomp",
                &s.seccomp,
            );
        }
        Err(e) => ok &= line(false, "daemon", &format!("status failed: {}", e.message())),
    }
    ok
}
