//! vaultd: the credential vault daemon. Runs in the foreground, logs to
//! stderr, starts locked, exits 0 on SIGTERM. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::UnixListener;
use vaultd::config::Config;
use vaultd::daemon::Daemon;
use vaultd::dirs::{Dirs, ensure_private_dir};
use vaultd::server::{VaultService, accept_loop};

#[global_allocator]
static ALLOC: vaultd::sys::ZeroingAllocator = vaultd::sys::ZeroingAllocator;

/// vaultd: credential vault daemon for AI agents.
#[derive(Debug, Parser)]
#[command(name = "vaultd", version, about)]
struct Args {
    /// Config file (default: $XDG_CONFIG_HOME/vaultd/vaultd.toml, or VAULTD_HOME/vaultd.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() {
    // Before anything else: no inherited fds, not dumpable, no core files.
    let early = vaultd::sys::close_inherited_fds().and_then(|_| vaultd::sys::harden_process());
    let args = Args::parse();
    if let Err(e) = early {
        eprintln!("vaultd: cannot harden the process: {e}");
        std::process::exit(1);
    }
    if let Err(e) = run(args) {
        eprintln!("vaultd: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let dirs = Dirs::from_env(args.config.as_deref())?;
    let config = Config::load(&dirs.config_file)?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    vaultd::secret::set_require_mlock(config.require_mlock);
    // Probe: can secret pages be locked here?
    drop(vaultd::secret::SecretBuf::zeroed(32)?);
    if !vaultd::sys::mlock_ok() {
        tracing::warn!("secret pages cannot be locked in RAM (mlock failed): raise LimitMEMLOCK or `ulimit -l`");
    }
    dirs.create_all()?;
    let sock_dir = dirs.socket.parent().context("the socket path has no directory")?;
    ensure_private_dir(sock_dir)?;

    // One instance per socket: hold an exclusive lock for our whole life.
    let lock_path = sock_dir.join(format!(
        "{}.lock",
        dirs.socket.file_name().and_then(|n| n.to_str()).unwrap_or("vaultd.sock")
    ));
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if lock_file.try_lock().is_err() {
        bail!(
            "another vaultd is already running on {} (lock {} is held): stop it first (`systemctl --user stop vaultd` or `vaultctl lock`)",
            dirs.socket.display(),
            lock_path.display()
        );
    }
    // We hold the lock, so a socket file left here is stale.
    match std::fs::remove_file(&dirs.socket) {
        Ok(()) => tracing::info!("removed stale socket {}", dirs.socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove stale socket {}", dirs.socket.display())),
    }

    let roots = vaultd::proxy::upstream::load_system_roots();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("vaultd").build()?;
    rt.block_on(async move {
        let listener = UnixListener::bind(&dirs.socket).with_context(|| format!("cannot bind {}", dirs.socket.display()))?;
        std::fs::set_permissions(&dirs.socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", dirs.socket.display()))?;
        let mut allowed = config.allowed_uids.clone();
        allowed.push(vaultd::sys::getuid());
        let socket_path = dirs.socket.clone();
        let daemon = Arc::new(Daemon::new(dirs, config, roots));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(accept_loop(listener, allowed.clone(), tx));
        let service = VaultService { daemon: daemon.clone(), allowed };
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            tracing::info!("shutting down");
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(socket = %socket_path.display(), "vaultd {} ready (locked)", env!("CARGO_PKG_VERSION"));
        tonic::transport::Server::builder()
            .add_service(vault_proto::v1::vault_server::VaultServer::new(service))
            .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown)
            .await
            .context("the gRPC server failed")?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        daemon.lock().await;
        let _ = std::fs::remove_file(&socket_path);
        drop(lock_file);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
