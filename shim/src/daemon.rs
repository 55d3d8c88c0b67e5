//! The one connection to vaultd: dialled on the first tool call, checked with
//! `Hello`, dropped on any transport failure and dialled again on the next call.
//!
//! Each connection is one unix stream that *we* dial, handed to a tonic
//! channel whose connector yields that stream once and refuses to redial. So
//! tonic can never reconnect behind our back, and every connection the shim
//! speaks on has passed the protocol handshake: a daemon restarted (or
//! upgraded) under a running shim is always re-checked. The stream also
//! notices end-of-file, so a daemon that went away between two calls is
//! re-dialled *before* the next request is sent, not after it failed.
//!
//! Deadlines: 10 s for the read calls, 300 s for `Execute` (above any
//! service's upstream timeout). While an `Execute` waits, a `Hello` probe
//! goes over the same connection every 10 s; a daemon that does not answer
//! one within 5 s (stopped, hung) ends the call after about 15 s with
//! `unavailable` and the time waited, instead of at the 300 s deadline.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use vault_proto::PROTOCOL_VERSION;
use vault_proto::client::ConnectError;
use vault_proto::v1::vault_client::VaultClient;
use vault_proto::v1::{
    AgentStatusRequest, AgentStatusResponse, ExecuteRequest, ExecuteResponse, HelloRequest,
    ListServicesRequest, ListServicesResponse,
};

use crate::render::{self, Refusal};

/// How long the handshake may take on a fresh connection.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of `ListServices` and `AgentStatus`.
pub const SHORT_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of `Execute`: above any per-service upstream timeout the daemon applies.
pub const EXECUTE_DEADLINE: Duration = Duration::from_secs(300);
/// While an `Execute` runs, how often vault-mcp checks that the daemon still
/// answers (a `Hello` on the same connection), so that a hung daemon is
/// reported in seconds instead of at [`EXECUTE_DEADLINE`].
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// How long that check may take before the daemon counts as hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

type Client = VaultClient<Channel>;

/// One handshaken connection.
#[derive(Clone)]
struct Conn {
    id: u64,
    client: Client,
    closed: Arc<AtomicBool>,
}

/// vaultd, as seen from the shim: where it listens and the current connection.
pub struct Daemon {
    socket: Result<PathBuf, Refusal>,
    conn: tokio::sync::Mutex<Slot>,
    next_id: AtomicU64,
}

/// The current connection, and how the last dial failed (and when).
#[derive(Default)]
struct Slot {
    conn: Option<Conn>,
    failed: Option<(Instant, Refusal)>,
}

/// Why a call to vaultd got no answer.
pub struct CallFailed {
    /// What to tell the agent.
    pub refusal: Refusal,
    /// vaultd knew no agent by the token when the call arrived (`unknown_agent`
    /// sent as gRPC `Unauthenticated`, see [`vault_proto::codes`]): nothing
    /// was done, so the call may be made again with another token. An
    /// `Execute` that `agent rm` aborted while it ran comes back `Aborted` instead.
    pub token_unknown: bool,
}

impl From<CallFailed> for Refusal {
    fn from(failed: CallFailed) -> Self {
        failed.refusal
    }
}

impl From<Refusal> for CallFailed {
    fn from(refusal: Refusal) -> Self {
        Self {
            refusal,
            token_unknown: false,
        }
    }
}

/// How a single attempt ended.
enum Failure {
    /// A refusal to hand to the agent as it is.
    Refused(Refusal),
    /// vaultd's `unknown_agent` refusal of a call it did not start (see
    /// [`CallFailed::token_unknown`]).
    TokenUnknown(Refusal),
    /// The connection broke; the detail is tonic's message.
    Lost(String),
    /// The stale channel refused to redial: the request was never sent.
    NotSent,
    /// The daemon did not answer for this long: the call's deadline, or
    /// the time an `Execute` had waited when a probe found the daemon hung.
    Deadline(Duration),
}

impl Failure {
    /// What the caller is told; `may_have_run`: the call may have changed
    /// something (an `Execute`) if the daemon got it.
    fn told(self, socket: &Path, may_have_run: bool) -> CallFailed {
        match self {
            Failure::TokenUnknown(refusal) => CallFailed {
                refusal,
                token_unknown: true,
            },
            Failure::Refused(r) => r.into(),
            Failure::NotSent => render::connection_closed_before_send(socket).into(),
            Failure::Lost(detail) => render::connection_lost(socket, &detail, may_have_run).into(),
            Failure::Deadline(waited) => render::deadline(socket, waited, may_have_run).into(),
        }
    }
}

impl Daemon {
    /// A daemon at `socket` (or the reason no socket path is known). Dials nothing.
    pub fn new(socket: Result<PathBuf, Refusal>) -> Self {
        Self {
            socket,
            conn: tokio::sync::Mutex::new(Slot::default()),
            next_id: AtomicU64::new(1),
        }
    }

    fn socket(&self) -> Result<&Path, Refusal> {
        self.socket.as_deref().map_err(Clone::clone)
    }

    /// `ListServices`; retried once on a fresh connection if the old one broke.
    pub async fn list_services(&self, token: &str) -> Result<ListServicesResponse, CallFailed> {
        self.idempotent(|mut client| async move {
            let req = request(
                ListServicesRequest {
                    agent_token: token.to_owned(),
                },
                SHORT_DEADLINE,
            );
            client.list_services(req).await
        })
        .await
    }

    /// `AgentStatus`; retried once on a fresh connection if the old one broke.
    pub async fn agent_status(&self, token: &str) -> Result<AgentStatusResponse, CallFailed> {
        self.idempotent(|mut client| async move {
            let req = request(
                AgentStatusRequest {
                    agent_token: token.to_owned(),
                },
                SHORT_DEADLINE,
            );
            client.agent_status(req).await
        })
        .await
    }

    /// `Execute`, never retried here once it may have left: the call may
    /// change data upstream. A call waits for its upstream as long as the
    /// daemon still answers probes (see [`PROBE_EVERY`]), and no longer.
    pub async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, CallFailed> {
        let socket = self.socket()?;
        let mut conn = self.conn().await?;
        let probes = conn.client.clone();
        let started = Instant::now();
        let call = conn.client.execute(request(req, EXECUTE_DEADLINE));
        let outcome = tokio::select! {
            outcome = self.attempt(conn.id, EXECUTE_DEADLINE, call) => outcome,
            () = stops_answering(probes) => {
                self.forget(conn.id).await;
                Err(Failure::Deadline(started.elapsed()))
            }
        };
        outcome.map_err(|failure| failure.told(socket, true))
    }

    async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, CallFailed>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let socket = self.socket()?;
        let mut retried = false;
        loop {
            let conn = self.conn().await?;
            match self
                .attempt(conn.id, SHORT_DEADLINE, call(conn.client.clone()))
                .await
            {
                Ok(reply) => return Ok(reply),
                // Safe to repeat: nothing changes. The fresh dial then says
                // precisely what is wrong (not running, another version...).
                Err(Failure::Lost(_) | Failure::NotSent) if !retried => retried = true,
                Err(failure) => return Err(failure.told(socket, false)),
            }
        }
    }

    /// Runs one RPC; forgets the connection when it broke or the deadline passed.
    async fn attempt<T>(
        &self,
        conn_id: u64,
        limit: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Failure> {
        let status = match tokio::time::timeout(limit, call).await {
            Ok(Ok(reply)) => return Ok(reply.into_inner()),
            Ok(Err(status)) => status,
            Err(_) => {
                self.forget(conn_id).await;
                return Err(Failure::Deadline(limit));
            }
        };
        // tonic enforces the `grpc-timeout` it sends (see [`request`]) in the
        // channel itself, and that timer is polled before ours: its expiry is
        // our deadline, not a lost connection (which would be retried, and
        // the hung daemon then waited for again).
        if caused_by::<tonic::TimeoutExpired>(&status) {
            self.forget(conn_id).await;
            return Err(Failure::Deadline(limit));
        }
        if let Some(refusal) = Refusal::from_daemon(status.message()) {
            if status.code() == tonic::Code::Unauthenticated && refusal.is_unknown_agent() {
                return Err(Failure::TokenUnknown(refusal));
            }
            return Err(Failure::Refused(refusal));
        }
        // Statuses built from a local error (connect, I/O, HTTP/2) carry it as
        // their source; statuses sent by the daemon have none, and leave the
        // connection as good as it was.
        if std::error::Error::source(&status).is_none() {
            return Err(Failure::Refused(render::daemon_error(
                status.code(),
                status.message(),
            )));
        }
        self.forget(conn_id).await;
        if caused_by::<Redial>(&status) {
            return Err(Failure::NotSent);
        }
        eprintln!(
            "vault-mcp: lost the connection to vaultd: {}",
            status.message()
        );
        Err(Failure::Lost(status.message().to_owned()))
    }

    /// The current connection, or a fresh, handshaken one.
    /// A dial that fails while other calls wait for it answers them too:
    /// calls made together while the daemon hangs are all refused after one
    /// [`HELLO_TIMEOUT`], not one timeout after another.
    async fn conn(&self) -> Result<Conn, Refusal> {
        let socket = self.socket()?;
        let arrived = Instant::now();
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.conn.as_ref() {
            if !conn.closed.load(Ordering::Acquire) {
                return Ok(conn.clone());
            }
            eprintln!("vault-mcp: vaultd closed the connection; dialling again");
            slot.conn = None;
        }
        if let Some((at, refusal)) = &slot.failed
            && *at > arrived
        {
            return Err(refusal.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match dial(socket, id).await {
            Ok((conn, daemon_version)) => {
                eprintln!(
                    "vault-mcp: connected to vaultd {daemon_version} at {}",
                    socket.display()
                );
                slot.failed = None;
                slot.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let refusal = render::connect_failed(&e);
                slot.failed = Some((Instant::now(), refusal.clone()));
                Err(refusal)
            }
        }
    }

    /// Drops connection `id` if it is still the current one, so the next call dials.
    async fn forget(&self, id: u64) {
        let mut slot = self.conn.lock().await;
        if slot.conn.as_ref().is_some_and(|c| c.id == id) {
            slot.conn = None;
        }
    }
}

/// Ends when the daemon no longer answers on `client`: a `Hello` every
/// [`PROBE_EVERY`], each given [`PROBE_TIMEOUT`]. Pends for ever while it
/// answers, and when the connection itself breaks (the call in flight then
/// fails on its own, with the better message).
async fn stops_answering(mut client: Client) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let hello = HelloRequest {
            client_protocol: PROTOCOL_VERSION,
        };
        let probe = client.hello(request(hello, PROBE_TIMEOUT));
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) if !caused_by::<tonic::TimeoutExpired>(&status) => {
                std::future::pending::<()>().await;
            }
            _ => return,
        }
    }
}

fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    // Sent as `grpc-timeout`, so the daemon can give up too; we enforce it ourselves as well.
    req.set_timeout(deadline);
    req
}

fn caused_by<E: std::error::Error + 'static>(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<E>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Dials the socket, wraps the stream in a one-connection channel and checks
/// the protocol version, with vault-proto's error texts.
async fn dial(socket: &Path, id: u64) -> Result<(Conn, String), ConnectError> {
    let stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ConnectError::NotRunning {
                path: socket.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ConnectError::Connect {
                path: socket.to_path_buf(),
                source,
            });
        }
    };
    let daemon_uid = stream.peer_cred().ok().map(|c| c.uid());
    let closed = Arc::new(AtomicBool::new(false));
    let once = Arc::new(Mutex::new(Some(Watched {
        inner: stream,
        closed: closed.clone(),
    })));
    // The URI is required by the API but never used: the connector hands over our stream.
    let channel = Endpoint::from_static("http://vaultd.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_: Uri| {
            let stream = once.lock().unwrap_or_else(PoisonError::into_inner).take();
            async move { stream.map(TokioIo::new).ok_or(Redial) }
        }),
    );
    let mut client = VaultClient::new(channel)
        .max_decoding_message_size(vault_proto::MAX_REPLY_BYTES)
        .max_encoding_message_size(vault_proto::MAX_REQUEST_BYTES);

    let hello = client.hello(HelloRequest {
        client_protocol: PROTOCOL_VERSION,
    });
    let reply = match tokio::time::timeout(HELLO_TIMEOUT, hello).await {
        Err(_) => {
            return Err(ConnectError::Timeout {
                path: socket.to_path_buf(),
                timeout: HELLO_TIMEOUT,
            });
        }
        Ok(Err(status)) => {
            // A daemon of another uid closes the connection of a uid it
            // does not serve: say that, not "restart vaultd".
            if let Some(refused) = vault_proto::client::refused(socket, daemon_uid) {
                return Err(refused);
            }
            let detail = match status.code() {
                tonic::Code::PermissionDenied => status.message().to_owned(),
                code => format!("{code:?}: {}", status.message()),
            };
            return Err(ConnectError::NotVaultd {
                path: socket.to_path_buf(),
                detail,
            });
        }
        Ok(Ok(reply)) => reply.into_inner(),
    };
    if reply.protocol != PROTOCOL_VERSION {
        return Err(ConnectError::VersionMismatch {
            path: socket.to_path_buf(),
            daemon: reply.protocol,
            daemon_version: reply.daemon_version,
        });
    }
    Ok((Conn { id, client, closed }, reply.daemon_version))
}

/// The connector's answer once its one stream is used: this channel is done,
/// the shim dials (and handshakes) a new one.
#[derive(Debug)]
struct Redial;

impl std::fmt::Display for Redial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection to vaultd closed")
    }
}

impl std::error::Error for Redial {}

/// A unix stream that raises `closed` at end-of-file or on an I/O error.
/// hyper's connection task reads continuously, so the flag goes up as soon as
/// the daemon closes its end, even while no call is in flight.
struct Watched {
    inner: UnixStream,
    closed: Arc<AtomicBool>,
}

impl Watched {
    fn mark<T>(&self, result: &Poll<io::Result<T>>) {
        if let Poll::Ready(Err(_)) = result {
            self.closed.store(true, Ordering::Release);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && wanted && buf.filled().len() == before {
            self.closed.store(true, Ordering::Release);
        }
        self.mark(&result);
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.mark(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.mark(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.mark(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.closed.store(true, Ordering::Release);
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
