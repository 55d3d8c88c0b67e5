//! Connecting to vaultd over its unix socket, with the protocol handshake.
//!
//! [`connect`] dials the socket, calls `Hello`, and refuses to go on when the
//! daemon speaks another protocol version: the error says exactly what to run.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::PROTOCOL_VERSION;
use crate::v1::HelloRequest;
use crate::v1::vault_client::VaultClient;

/// A connected, version-checked client.
pub type Client = VaultClient<Channel>;

/// The command that starts the daemon, named in every "not running" message.
pub const START_HINT: &str =
    "start it with `systemctl --user start vaultd` (or run `vaultd` in a terminal)";

/// Why the daemon could not be reached or spoken to.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens at the socket path.
    #[error("vaultd is not running (no socket at {path}): {START_HINT}")]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket exists but could not be opened.
    #[error(
        "cannot connect to vaultd at {path}: {source}; check the path and that it belongs to you"
    )]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Something answers at the socket but does not speak vault.v1.
    #[error(
        "{path} does not answer as vaultd protocol v{PROTOCOL_VERSION} ({detail}); it may be another program or an old vaultd: restart vaultd from this installation (`systemctl --user restart vaultd`)"
    )]
    NotVaultd {
        /// The socket path tried.
        path: PathBuf,
        /// What went wrong, without secrets.
        detail: String,
    },
    /// The daemon speaks another protocol version.
    #[error(
        "vaultd at {path} speaks protocol v{daemon} (vaultd {daemon_version}) but this client speaks v{PROTOCOL_VERSION}: run the same version of both; after upgrading, restart the daemon with `systemctl --user restart vaultd`"
    )]
    VersionMismatch {
        /// The socket path tried.
        path: PathBuf,
        /// The daemon's protocol version.
        daemon: u32,
        /// The daemon's software version.
        daemon_version: String,
    },
    /// The daemon runs as another user and closed the connection: its peer
    /// check (SO_PEERCRED) serves only its own uid and `allowed_uids`.
    #[error(
        "vaultd at {path} refused this connection: it runs as uid {daemon_uid} and serves only that user, and you are uid {uid}; run this as uid {daemon_uid}, or add {uid} to `allowed_uids` in that daemon's vaultd.toml and restart it"
    )]
    Refused {
        /// The socket path tried.
        path: PathBuf,
        /// The daemon's uid (from the socket's kernel credentials).
        daemon_uid: u32,
        /// Ours.
        uid: u32,
    },
    /// The daemon did not answer the handshake in time.
    #[error(
        "vaultd at {path} accepted the connection but did not answer within {secs} s; it may be stopped or hung: `vaultctl lock` ends it, and `systemctl --user restart vaultd` starts it again",
        secs = .timeout.as_secs_f64()
    )]
    Timeout {
        /// The socket path tried.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Opens a channel to the socket without any RPC. The channel dials lazily on
/// first use and redials after the daemon restarts.
pub fn channel(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    // The URI is required by the API but never used: the connector dials the socket.
    Endpoint::from_static("http://vaultd.invalid")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
}

/// Dials the socket and checks the protocol version within `timeout`.
pub async fn connect(socket: &Path, timeout: Duration) -> Result<Client, ConnectError> {
    match connect_once(socket, timeout).await {
        // The connection broke before any answer while the socket still accepts:
        // most likely the daemon was replaced between our dial and the handshake
        // (a restart). One more try tells that apart from a program that is not vaultd.
        Err(Failure::Broken(_)) => match connect_once(socket, timeout).await {
            Ok(c) => Ok(c),
            Err(Failure::Final(e) | Failure::Broken(e)) => Err(e),
        },
        Ok(c) => Ok(c),
        Err(Failure::Final(e)) => Err(e),
    }
}

/// Why one attempt failed.
enum Failure {
    /// For good.
    Final(ConnectError),
    /// The connection broke locally before any answer, and the socket still accepts.
    Broken(ConnectError),
}

async fn connect_once(socket: &Path, timeout: Duration) -> Result<Client, Failure> {
    // Dial once ourselves so that "not running" is told apart from other failures.
    let daemon_uid = match UnixStream::connect(socket).await {
        Ok(probe) => probe.peer_cred().ok().map(|c| c.uid()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Failure::Final(ConnectError::NotRunning {
                path: socket.to_path_buf(),
            }));
        }
        Err(source) => {
            return Err(Failure::Final(ConnectError::Connect {
                path: socket.to_path_buf(),
                source,
            }));
        }
    };
    let mut client = VaultClient::new(channel(socket));
    let hello = client.hello(HelloRequest {
        client_protocol: PROTOCOL_VERSION,
    });
    let reply = match tokio::time::timeout(timeout, hello).await {
        Err(_) => {
            return Err(Failure::Final(ConnectError::Timeout {
                path: socket.to_path_buf(),
                timeout,
            }));
        }
        Ok(Err(status)) => {
            if let Some(refused) = refused(socket, daemon_uid) {
                return Err(Failure::Final(refused));
            }
            let not_vaultd = ConnectError::NotVaultd {
                path: socket.to_path_buf(),
                detail: match status.code() {
                    tonic::Code::PermissionDenied => status.message().to_string(),
                    _ => format!("{:?}: {}", status.code(), status.message()),
                },
            };
            // A status with a local cause: the connection failed with no answer.
            if std::error::Error::source(&status).is_none() {
                return Err(Failure::Final(not_vaultd));
            }
            // If the socket no longer accepts connections, the daemon just went away.
            return Err(match UnixStream::connect(socket).await {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    Failure::Final(ConnectError::NotRunning {
                        path: socket.to_path_buf(),
                    })
                }
                _ => Failure::Broken(not_vaultd),
            });
        }
        Ok(Ok(reply)) => reply.into_inner(),
    };
    if reply.protocol != PROTOCOL_VERSION {
        return Err(Failure::Final(ConnectError::VersionMismatch {
            path: socket.to_path_buf(),
            daemon: reply.protocol,
            daemon_version: reply.daemon_version,
        }));
    }
    Ok(client)
}

/// When the handshake failed and the daemon behind the socket runs as another
/// uid (`daemon_uid`, from the connection's kernel credentials), the reason
/// is its peer check: say so instead of "not vaultd". Clients that dial
/// their own connection (vault-mcp) call this too.
pub fn refused(socket: &Path, daemon_uid: Option<u32>) -> Option<ConnectError> {
    let daemon_uid = daemon_uid?;
    // Our own uid, from the kernel's credentials of a socket pair (no unsafe code).
    let (ours, _other) = UnixStream::pair().ok()?;
    let uid = ours.peer_cred().ok()?.uid();
    (uid != daemon_uid).then(|| ConnectError::Refused {
        path: socket.to_path_buf(),
        daemon_uid,
        uid,
    })
}
