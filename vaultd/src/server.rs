//! The gRPC front end on the unix socket.
//!
//! Connections are accepted by [`accept_loop`], which asks the kernel for the
//! peer's credentials (SO_PEERCRED) and drops any connection whose uid is not
//! the daemon's own or listed in `allowed_uids` *before* tonic sees it, and
//! logs the refusal. A connection then takes one of the daemon's connection
//! slots only once it has sent the whole HTTP/2 client preface, within
//! [`FIRST_BYTE_TIMEOUT`]: silent, slow or junk clients never hold a slot.
//! A connection has at most [`MAX_CONCURRENT_STREAMS`] calls open at once.
//! Each handler checks the credentials again from tonic's `UdsConnectInfo`
//! (defence in depth) and maps internal errors to wire statuses in one place
//! ([`status_of`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, UdsConnectInfo};
use tonic::{Request, Response, Status};
use vault_proto::v1::vault_server::Vault;
use vault_proto::v1::*;

use crate::daemon::{self, Daemon};
use crate::error::Error;
use crate::proxy::{self, Peer, Refusal};
use crate::secret::SecretBuf;

/// How long a new connection may take to send the HTTP/2 client preface
/// before it is dropped (a client that connects and sends nothing, or sends
/// it a byte at a time, holds nothing for long).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most HTTP/2 streams (calls) one connection may have open at once,
/// announced in vaultd's SETTINGS; a stream beyond it is refused
/// (REFUSED_STREAM). tonic sets no limit of its own: 8 connections each
/// opening 50 000 streams that never ended grew vaultd to 2.3 GB. Twice the
/// 64 concurrent calls per agent that DESIGN.md promises (an agent's
/// vault-mcp uses one connection, and its client waits for a free stream).
pub const MAX_CONCURRENT_STREAMS: u32 = 128;

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the client preface; false on junk, end of file or error. Reads no
/// byte past the preface. (`UnixStream::readable` alone is not enough: tokio
/// reports a freshly accepted socket readable at once.)
async fn read_preface(stream: &mut UnixStream) -> bool {
    let mut buf = [0u8; 24];
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]).await {
            Ok(n) if n > 0 && buf[got..got + n] == H2_PREFACE[got..got + n] => got += n,
            _ => return false,
        }
    }
    true
}

/// A connection that holds one of the daemon's connection slots until it
/// closes. The preface already read from it is replayed first.
pub struct SlotStream {
    inner: UnixStream,
    replayed: usize,
    _slot: OwnedSemaphorePermit,
}

impl Connected for SlotStream {
    type ConnectInfo = UdsConnectInfo;
    fn connect_info(&self) -> UdsConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for SlotStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < H2_PREFACE.len() {
            let n = (H2_PREFACE.len() - this.replayed).min(buf.remaining());
            buf.put_slice(&H2_PREFACE[this.replayed..this.replayed + n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

/// Not vectored, on purpose (`is_write_vectored` stays false): h2 then copies
/// DATA payloads of up to 1 KiB into its write buffer instead of chaining
/// those over 256 bytes, and a chained frame makes it write before it encodes
/// the next one. Under load many answers thus leave in one write.
impl AsyncWrite for SlotStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts connections and forwards those from allowed uids to tonic, at most
/// `max_connections` at once (more wait for a slot); a connection that does
/// not send the HTTP/2 preface within [`FIRST_BYTE_TIMEOUT`] is dropped
/// without taking a slot.
pub async fn accept_loop(
    listener: UnixListener,
    allowed: Vec<u32>,
    max_connections: usize,
    tx: mpsc::Sender<std::io::Result<SlotStream>>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if allowed.contains(&cred.uid()) => {
                let (tx, slots) = (tx.clone(), slots.clone());
                // A silent connection holds an fd for at most FIRST_BYTE_TIMEOUT and no slot.
                tokio::spawn(async move {
                    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, read_preface(&mut stream)).await
                    {
                        Ok(true) => {
                            let Ok(slot) = slots.acquire_owned().await else {
                                return;
                            };
                            let _ = tx
                                .send(Ok(SlotStream {
                                    inner: stream,
                                    replayed: 0,
                                    _slot: slot,
                                }))
                                .await;
                        }
                        _ => tracing::debug!(
                            "dropped a connection that did not send the HTTP/2 preface in time"
                        ),
                    }
                });
            }
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "refused a connection from another user"
                );
            }
            Err(e) => tracing::warn!("refused a connection without peer credentials: {e}"),
        }
    }
}

/// The tonic service.
pub struct VaultService {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// uids allowed to call.
    pub allowed: Vec<u32>,
}

/// Maps an internal error to a wire status. Messages carry no secrets.
pub fn status_of(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::WrongPassphrase => Status::permission_denied(msg),
        Error::NoVault { .. } | Error::AuditUnavailable(_) => Status::failed_precondition(msg),
        Error::VaultExists { .. } => Status::already_exists(msg),
        Error::Tampered { .. }
        | Error::BadFormat { .. }
        | Error::Rollback { .. }
        | Error::VaultReplaced { .. } => Status::data_loss(msg),
        Error::LockedMeanwhile => Status::aborted(msg),
        Error::Invalid(_) => Status::invalid_argument(msg),
        Error::NotFound { .. } => Status::not_found(msg),
        Error::Io { .. } | Error::Crypto(_) | Error::SecretAlloc(_) | Error::Config(_) => {
            tracing::error!("{msg}");
            Status::internal(msg)
        }
    }
}

fn peer_of<T>(req: &Request<T>, allowed: &[u32]) -> Result<Peer, Status> {
    let cred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred);
    let Some(cred) = cred else {
        return Err(Status::permission_denied(
            "no peer credentials on this connection",
        ));
    };
    if !allowed.contains(&cred.uid()) {
        tracing::warn!(uid = cred.uid(), "refused a call from another user");
        return Err(Status::permission_denied(
            "this socket serves its owner only",
        ));
    }
    Ok(Peer {
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
        uid: Some(cred.uid()),
        exe: None,
    })
}

/// The peer's executable, for the audit record. Not tried under Landlock,
/// where the readlink always fails (a syscall per call for nothing).
fn peer_exe(daemon: &Daemon, pid: Option<u32>) -> Option<String> {
    if daemon.landlock_enforced {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/{}/exe", pid?)).ok()?;
    Some(link.display().to_string())
}

/// A time left as the protocol's `locks_in_secs`: whole seconds, rounded
/// up, so that 0 means only "no timer".
fn whole_secs(left: Option<Duration>) -> u64 {
    left.map_or(0, |left| {
        (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
    })
}

fn secret(bytes: Vec<u8>) -> Result<SecretBuf, Status> {
    SecretBuf::take(bytes).map_err(|e| status_of(e.into()))
}

type TailStream = Pin<Box<dyn Stream<Item = Result<AuditLine, Status>> + Send>>;

/// What `status` (and `unlock`) tell the user to look at.
fn warnings(s: &crate::daemon::StatusInfo) -> Vec<String> {
    let mut warnings = Vec::new();
    if !crate::sys::mlock_ok() {
        warnings.push("secret pages could not be locked in RAM (mlock failed): they may be swapped out; raise LimitMEMLOCK or set require_mlock".to_string());
    }
    if let Some(why) = crate::sys::user_namespace_exposure() {
        warnings.push(why.to_string());
    }
    if let Some(e) = &s.audit_error {
        warnings.push(format!("audit log unavailable: {e}"));
    }
    if let Some(gap) = &s.audit_gap {
        warnings.push(format!(
            "audit log tampered with: {gap}; find what changed it (an agent can write your files), and see `vaultctl audit verify`"
        ));
    }
    warnings
}

#[tonic::async_trait]
impl Vault for VaultService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        Ok(Response::new(HelloResponse {
            protocol: vault_proto::PROTOCOL_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let d = &self.daemon;
        let s = d.status();
        let warnings = warnings(&s);
        Ok(Response::new(StatusResponse {
            state: s.state.to_string(),
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            mlock_ok: crate::sys::mlock_ok(),
            warnings,
            audit_error: s.audit_error.unwrap_or_default(),
            secrets: s.secrets,
            services: s.services,
            capabilities: s.capabilities,
            agents: s.agents,
            locks_in_secs: whole_secs(s.locks_in),
            vault_path: d.dirs.vault_file.display().to_string(),
            audit_path: d.dirs.audit_file.display().to_string(),
            socket_path: d.dirs.socket.display().to_string(),
            landlock: d.landlock_status.clone(),
            seccomp: d.seccomp_status.clone(),
            unlocked_for_secs: s.unlocked_for,
        }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        let lock_after = (r.lock_after_secs > 0).then(|| Duration::from_secs(r.lock_after_secs));
        let p = secret(r.passphrase)?;
        let lasts = self.daemon.unlock(p, lock_after).await.map_err(status_of)?;
        Ok(Response::new(UnlockResponse {
            locks_in_secs: whole_secs(lasts),
            warnings: warnings(&self.daemon.status()),
        }))
    }

    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let aborted = self.daemon.lock().await;
        Ok(Response::new(LockResponse {
            aborted_calls: aborted,
        }))
    }

    async fn change_passphrase(
        &self,
        req: Request<ChangePassphraseRequest>,
    ) -> Result<Response<ChangePassphraseResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        let (p, n) = (secret(r.passphrase)?, secret(r.new_passphrase)?);
        self.daemon
            .change_passphrase(p, n)
            .await
            .map_err(status_of)?;
        Ok(Response::new(ChangePassphraseResponse {}))
    }

    async fn set_secret(
        &self,
        req: Request<SetSecretRequest>,
    ) -> Result<Response<SetSecretResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        let (p, v) = (secret(r.passphrase)?, secret(r.value)?);
        let replaced = self
            .daemon
            .set_secret(p, r.name, v)
            .await
            .map_err(status_of)?;
        Ok(Response::new(SetSecretResponse { replaced }))
    }

    async fn list_secrets(
        &self,
        req: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let u = self.daemon.require_unlocked()?;
        Ok(Response::new(ListSecretsResponse {
            names: u.data.secrets.keys().cloned().collect(),
        }))
    }

    async fn remove_secret(
        &self,
        req: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        self.daemon
            .remove_secret(secret(r.passphrase)?, r.name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(RemoveSecretResponse {}))
    }

    async fn apply_policy(
        &self,
        req: Request<ApplyPolicyRequest>,
    ) -> Result<Response<ApplyPolicyResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        let cas: HashMap<String, String> = r.ca_files.into_iter().collect();
        let source = if r.source_name.is_empty() {
            "policy".to_string()
        } else {
            r.source_name
        };
        let applied = self
            .daemon
            .apply_policy(secret(r.passphrase)?, r.policy_toml, source, cas, r.dry_run)
            .await
            .map_err(status_of)?;
        Ok(Response::new(ApplyPolicyResponse {
            services: applied.services,
            capabilities: applied.capabilities,
            new_agents: applied.new_agents,
            warnings: applied.warnings,
        }))
    }

    async fn show_policy(
        &self,
        req: Request<ShowPolicyRequest>,
    ) -> Result<Response<ShowPolicyResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let u = self.daemon.require_unlocked()?;
        let agents: Vec<&str> = u.data.agents.keys().map(String::as_str).collect();
        Ok(Response::new(ShowPolicyResponse {
            policy_toml: crate::policy::render(&u.data.policy, &agents),
        }))
    }

    async fn add_agent(
        &self,
        req: Request<AddAgentRequest>,
    ) -> Result<Response<AddAgentResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        let token = self
            .daemon
            .add_agent(secret(r.passphrase)?, r.name.clone())
            .await
            .map_err(status_of)?;
        Ok(Response::new(AddAgentResponse {
            name: r.name,
            token,
        }))
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let u = self.daemon.require_unlocked()?;
        let agents = daemon::agent_names(&u)
            .into_iter()
            .map(|(name, has_token, capabilities)| AgentInfo {
                name,
                has_token,
                capabilities,
            })
            .collect();
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn remove_agent(
        &self,
        req: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        let aborted_calls = self
            .daemon
            .remove_agent(secret(r.passphrase)?, r.name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(RemoveAgentResponse { aborted_calls }))
    }

    type AuditTailStream = TailStream;

    async fn audit_tail(
        &self,
        req: Request<AuditTailRequest>,
    ) -> Result<Response<Self::AuditTailStream>, Status> {
        peer_of(&req, &self.allowed)?;
        let r = req.into_inner();
        let path = self.daemon.dirs.audit_file.clone();
        // Subscribe before reading so no line falls between the two.
        // With it, the writer's sequence number at that moment: only lines
        // past it can come both from the file and from the subscription.
        let rx = if r.follow {
            let unlocked = self.daemon.require_unlocked()?;
            let log = unlocked.shared.audit_log();
            Some((log.subscribe(), log.head().0))
        } else {
            None
        };
        // Read as bytes and decoded line by line: a line that is not UTF-8
        // (the agent can write this file) is sent marked, and the others
        // as they are.
        // Only a regular file: a FIFO in its place would block the read.
        let read = path.clone();
        let bytes = tokio::task::spawn_blocking(move || crate::sys::read_regular(&read))
            .await
            .map_err(|_| Status::internal("audit log reader panicked"))?;
        let bytes = match bytes {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(status_of(Error::io("read audit log", &path, e))),
        };
        let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let mut lines: Vec<AuditLine> = (!bytes.is_empty())
            .then(|| text.split(|&b| b == b'\n'))
            .into_iter()
            .flatten()
            .map(|l| match std::str::from_utf8(l) {
                Ok(json) => AuditLine {
                    json: json.to_owned(),
                    not_utf8: false,
                },
                Err(_) => AuditLine {
                    json: String::from_utf8_lossy(l).into_owned(),
                    not_utf8: true,
                },
            })
            .collect();
        drop(bytes);
        // Lines of the file written after the subscription, which the
        // subscription repeats: skipped there by their exact text. (Not by
        // the file's last sequence number: the agent can append a line
        // with any number, and one of u64::MAX hid every new record.)
        // Bounded by the writer's number after the read: forged lines with
        // any other number are not kept for the whole follow.
        let read_twice: std::collections::HashSet<String> = match &rx {
            Some((_, subscribed_at)) => {
                let read_at = self
                    .daemon
                    .require_unlocked()
                    .map_or(u64::MAX, |u| u.shared.audit_log().head().0);
                lines
                    .iter()
                    .filter(|l| !l.not_utf8)
                    .filter(|l| {
                        crate::audit::parse_line(&l.json)
                            .is_some_and(|r| r.seq > *subscribed_at && r.seq <= read_at)
                    })
                    .map(|l| l.json.clone())
                    .collect()
            }
            None => Default::default(),
        };
        let skip = if r.n == 0 {
            0
        } else {
            lines.len().saturating_sub(r.n as usize)
        };
        let initial: Vec<Result<AuditLine, Status>> = lines.drain(skip..).map(Ok).collect();
        let (tx, out) = mpsc::channel(256);
        tokio::spawn(async move {
            for item in initial {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            let Some((mut rx, _)) = rx else { return };
            loop {
                match rx.recv().await {
                    Ok(line) => {
                        if read_twice.contains(&line) {
                            continue;
                        }
                        if tx
                            .send(Ok(AuditLine {
                                json: line,
                                not_utf8: false,
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "{n} audit lines were skipped: the reader was too slow"
                            ))))
                            .await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn audit_verify(
        &self,
        req: Request<AuditVerifyRequest>,
    ) -> Result<Response<AuditVerifyResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let u = self.daemon.require_unlocked()?;
        let shared = u.shared.clone();
        drop(u);
        // The writer's lock is held only to take the head, not while the
        // file is read: calls and `lock` do not wait for verifications.
        let pending = shared.audit_log().verify_later();
        let v = tokio::task::spawn_blocking(move || pending.run())
            .await
            .map_err(|_| Status::internal("audit verification panicked"))?;
        Ok(Response::new(AuditVerifyResponse {
            ok: v.problem.is_none(),
            records: v.records,
            problem: v.problem.unwrap_or_default(),
        }))
    }

    async fn agent_status(
        &self,
        req: Request<AgentStatusRequest>,
    ) -> Result<Response<AgentStatusResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let token = req.into_inner().agent_token;
        let s = self.daemon.status();
        let agent = self
            .daemon
            .unlocked()
            .and_then(|u| proxy::find_agent(&u, &token))
            .unwrap_or_default();
        Ok(Response::new(AgentStatusResponse {
            state: s.state.to_string(),
            agent,
            locks_in_secs: whole_secs(s.locks_in),
        }))
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        peer_of(&req, &self.allowed)?;
        let token = req.into_inner().agent_token;
        let u = self.daemon.require_unlocked()?;
        let agent =
            proxy::find_agent(&u, &token).ok_or_else(|| Status::from(Refusal::unknown_agent()))?;
        let mut capabilities: Vec<CapabilityInfo> = u
            .data
            .policy
            .capabilities
            .iter()
            .filter(|c| c.agents.contains(&agent))
            .map(|c| CapabilityInfo {
                name: c.name.clone(),
                service: c.service.clone(),
                base_url: u
                    .services
                    .get(&c.service)
                    .map(|s| s.service.base_url.clone())
                    .unwrap_or_default(),
                allow: c.allow.clone(),
                deny: c.deny.clone(),
                rate_limit: c.rate_limit.clone().unwrap_or_default(),
                requires_reason: c.requires_reason,
            })
            .collect();
        capabilities.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListServicesResponse {
            agent,
            capabilities,
        }))
    }

    async fn execute(
        &self,
        req: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let mut peer = peer_of(&req, &self.allowed)?;
        peer.exe = peer_exe(&self.daemon, peer.pid);
        let r = Box::pin(proxy::execute(&self.daemon, &peer, req.into_inner())).await?;
        Ok(Response::new(r))
    }
}
