//! The execute path: an agent's request, checked, audited, sent with the
//! credential, and its answer scrubbed (DESIGN.md, "Rules of the proxy path").
//!
//! Order of checks, each refusal with its stable code: vault unlocked
//! (`locked`) -> agent token (`unknown_agent`) -> capability granted to this
//! agent (`no_such_capability`, same text whether it exists or not) -> method,
//! path, headers, query, body size (`bad_request`) -> deny rules, then allow
//! rules (`denied_by_rule`) -> reason (`reason_required`) -> rate limit
//! (`rate_limited`) -> decision record written (`audit_unavailable`) -> the
//! upstream call (`upstream_error`), raced against `lock` (`locked`) and
//! `agent rm` (`unknown_agent`). Those two aborts travel as gRPC `Aborted`
//! (the call may have reached the API); every refusal before the upstream
//! call keeps its own status code, so a client can tell that nothing was
//! sent (vault-mcp repeats a call refused `Unauthenticated` once it has a new
//! token).
//!
//! # Layout
//! - [`request`]: method/path canonicalization, header and query rules, policy rules.
//! - [`scrub`]: redaction of every credential form from responses.
//! - [`upstream`]: HTTP clients, name resolution and address checks.

pub mod request;
pub mod scrub;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use vault_proto::codes;
use vault_proto::v1::{ExecuteRequest, ExecuteResponse, Header};

use crate::audit::{self, Record, is_hidden};
use crate::daemon::{Daemon, ServiceRuntime, Unlocked, token_hash};
use crate::policy::Auth;

/// Largest request body accepted from an agent.
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;

/// A refusal: a stable code and a message that says what the user can do.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// One of `vault_proto::codes`.
    pub code: &'static str,
    /// Human text (never a secret).
    pub message: String,
    /// The call was running, and may have reached the upstream, when it was
    /// aborted (`lock`, `agent rm`): sent as gRPC `Aborted`, so that no
    /// client takes it for a refusal of a call that was never sent.
    pub aborted: bool,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            aborted: false,
        }
    }

    /// `self`, for a call aborted while it ran (see [`Refusal::aborted`]).
    fn in_flight(self) -> Refusal {
        Refusal {
            aborted: true,
            ..self
        }
    }

    /// The locked refusal (one text everywhere).
    pub fn locked() -> Refusal {
        Refusal::new(
            codes::LOCKED,
            "the vault is locked; ask the user to run `vaultctl unlock`, then retry",
        )
    }

    /// The refusal of a daemon that has no vault file yet: code `locked` (the
    /// stable code of "nothing is unlocked"), but the next step is `init`.
    pub fn uninitialized() -> Refusal {
        Refusal::new(
            codes::LOCKED,
            "no vault has been created yet; ask the user to run `vaultctl init`, then `vaultctl unlock`, then retry",
        )
    }

    /// The unknown-agent refusal.
    pub fn unknown_agent() -> Refusal {
        Refusal::new(
            codes::UNKNOWN_AGENT,
            "this agent token is not known to the vault (missing, mistyped or revoked); ask the user to create one with `vaultctl agent add NAME` and configure it with `vaultctl mcp-config --agent NAME`",
        )
    }

    /// The refusal of a call aborted by `vaultctl agent rm` while it ran.
    pub fn agent_removed() -> Refusal {
        Refusal::new(
            codes::UNKNOWN_AGENT,
            "this agent was removed (`vaultctl agent rm`) while the call ran: it was aborted, and may or may not have reached the API; ask the user for a new agent token (`vaultctl agent add NAME`) before calling again",
        )
        .in_flight()
    }
}

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> tonic::Status {
        let code = match r.code {
            _ if r.aborted => tonic::Code::Aborted,
            codes::LOCKED => tonic::Code::FailedPrecondition,
            codes::UNKNOWN_AGENT => tonic::Code::Unauthenticated,
            codes::NO_SUCH_CAPABILITY => tonic::Code::NotFound,
            codes::DENIED_BY_RULE => tonic::Code::PermissionDenied,
            codes::RATE_LIMITED => tonic::Code::ResourceExhausted,
            codes::REASON_REQUIRED | codes::BAD_REQUEST => tonic::Code::InvalidArgument,
            codes::AUDIT_UNAVAILABLE => tonic::Code::Unavailable,
            _ => tonic::Code::Aborted,
        };
        tonic::Status::new(code, format!("{}: {}", r.code, r.message))
    }
}

/// Who is calling, from the kernel's socket credentials.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Process id.
    pub pid: Option<u32>,
    /// User id.
    pub uid: Option<u32>,
    /// Executable path (best effort).
    pub exe: Option<String>,
}

/// The agent named by `token` in `u`, looked up by the token's SHA-256
/// (see [`Unlocked::agents_by_token`]).
pub fn find_agent(u: &Unlocked, token: &str) -> Option<String> {
    if token.is_empty() {
        return None;
    }
    u.agents_by_token.get(&token_hash(token)).cloned()
}

fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Agent input for an audit record: control characters (CR, LF, ESC...) and
/// invisible or bidirectional formatting characters escaped
/// ([`audit::escape_hidden`]), so a field can never start a forged line or
/// rewrite the user's terminal in `audit tail`; then clipped to `max`
/// characters.
fn for_audit(s: &str, max: usize) -> String {
    // Escaping only lengthens: the first `max + 1` characters are all that
    // can show (an 11 MiB field of ESC bytes was escaped whole, 66 MiB, before
    // its length was checked).
    let head = match s.char_indices().nth(max + 1) {
        Some((end, _)) => &s[..end],
        None => s,
    };
    clip(&audit::escape_hidden(head), max)
}

/// Whether `s` has a character a person reading the audit log would see
/// (a zero-width space is not a reason).
fn has_visible_text(s: &str) -> bool {
    s.chars().any(|c| !c.is_whitespace() && !is_hidden(c))
}

/// The decision record of `req` as known before the decision (the decision,
/// its rule and code are added after it): every field the agent sent
/// escaped and clipped ([`for_audit`]), and its method the canonical one
/// (`head` is recorded as `HEAD`, as it is matched and sent) when it is one.
fn decision_record(agent: &str, peer: &Peer, req: &ExecuteRequest) -> Record {
    let method = match request::canonical_method(&req.method) {
        Ok(m) => m.to_owned(),
        Err(_) => for_audit(&req.method, 16),
    };
    Record {
        kind: "decision".into(),
        agent: Some(agent.to_owned()),
        peer_pid: peer.pid,
        peer_uid: peer.uid,
        peer_exe: peer.exe.clone(),
        capability: Some(for_audit(&req.capability, 64)),
        method: Some(method),
        path: Some(for_audit(&req.path, 256)),
        // Whole for any reason within the limit (longer ones are refused).
        reason: (!req.reason.is_empty())
            .then(|| for_audit(&req.reason, audit::MAX_RECORDED_REASON)),
        ..Default::default()
    }
}

/// Refuses a reason longer than [`audit::MAX_REASON_LEN`]: cut to fit the
/// record, it would no longer be the reason given (nor show that the text
/// that made it count as visible was there).
fn check_reason_len(reason: &str) -> Result<(), Refusal> {
    if reason.len() <= audit::MAX_REASON_LEN {
        return Ok(());
    }
    Err(Refusal::new(
        codes::BAD_REQUEST,
        format!(
            "the reason is {} bytes; the limit is {} bytes: say why this call is needed in one short sentence",
            reason.len(),
            audit::MAX_REASON_LEN
        ),
    ))
}

struct InFlight<'a>(&'a Daemon);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one `execute` call.
pub async fn execute(
    d: &Daemon,
    peer: &Peer,
    req: ExecuteRequest,
) -> Result<ExecuteResponse, Refusal> {
    let u = d.require_unlocked()?;
    let agent = find_agent(&u, &req.agent_token).ok_or_else(Refusal::unknown_agent)?;
    // `_agent_call` counts this call as the agent's until it returns.
    let (agent_cancel, _agent_call) = u.shared.agent_token(&agent);
    let lock_cancel = u.shared.lock_cancel.clone();

    let mut rec = decision_record(&agent, peer, &req);
    let decided = decide(&u, &d.limiter, &agent, &req);
    let (svc, method, url, headers) = match decided {
        Ok(ok) => ok,
        Err((refusal, rule)) => {
            rec.decision = Some("denied".into());
            rec.code = Some(refusal.code.into());
            rec.rule = rule;
            if let Err(e) = u.shared.audit(rec) {
                tracing::warn!("audit record for a refused call not written: {e}");
            }
            return Err(refusal);
        }
    };
    rec.method = Some(method.to_string());
    rec.path = Some(url.1.clone());
    rec.decision = Some("allowed".into());
    rec.rule = Some(url.2.clone());
    let decision_seq = u.shared.audit(rec.clone()).map_err(|e| {
        Refusal::new(
            codes::AUDIT_UNAVAILABLE,
            format!("the audit record could not be written, so nothing was sent ({e}); `vaultctl status` shows why"),
        )
    })?;

    d.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(d);
    let pending = PendingResult {
        shared: &u.shared,
        started: Instant::now(),
        record: Some(Record {
            kind: "result".into(),
            agent: Some(agent),
            capability: rec.capability.clone(),
            method: rec.method.clone(),
            path: rec.path.clone(),
            decision_seq: Some(decision_seq),
            ..Default::default()
        }),
    };
    // Boxed, like the handler's future in server.rs: `select!` and tonic move
    // these futures, and a move of a box is a pointer copy instead of a
    // memmove of several KiB (perf: memmove was ~12 % of vaultd's CPU).
    let call = Box::pin(call_upstream(&svc, method, url.0, headers, req.body));
    let outcome = tokio::select! {
        biased;
        _ = lock_cancel.cancelled() => Err(Refusal::new(codes::LOCKED, "the vault was locked while this call ran; it was aborted. Ask the user to run `vaultctl unlock`").in_flight()),
        _ = agent_cancel.cancelled() => Err(Refusal::agent_removed()),
        r = call => r,
    };
    pending.finish(&outcome);
    outcome.map(|mut r| {
        r.audit_seq = decision_seq;
        r
    })
}

/// The `code` of a result record whose caller went away before the call
/// ended (an MCP cancel, a killed vault-mcp): audit only, never sent.
pub const CANCELLED: &str = "cancelled";

/// The result record of an allowed call, written when the call ends, or when
/// its future is dropped first: tonic drops the handler when the caller
/// cancels or disconnects, and that call (which may have reached the
/// upstream) still gets its second record (DESIGN.md, rule 8).
struct PendingResult<'a> {
    shared: &'a crate::daemon::Shared,
    started: Instant,
    record: Option<Record>,
}

impl PendingResult<'_> {
    fn finish(mut self, outcome: &Result<ExecuteResponse, Refusal>) {
        let Some(mut rec) = self.record.take() else {
            return;
        };
        match outcome {
            Ok(resp) => {
                rec.status = Some(resp.status as u16);
                rec.bytes = Some(resp.body.len() as u64);
                rec.truncated = Some(resp.truncated);
            }
            Err(r) => {
                rec.code = Some(r.code.into());
                rec.error = Some(clip(&r.message, 300));
            }
        }
        self.write(rec);
    }

    fn write(&self, mut rec: Record) {
        rec.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        // After a lock the writer may be gone (the lock closed the chain with
        // its own record): best effort only.
        if let Err(e) = self.shared.audit_result(rec) {
            tracing::warn!("audit result record not written: {e}");
        }
    }
}

impl Drop for PendingResult<'_> {
    fn drop(&mut self) {
        if let Some(mut rec) = self.record.take() {
            rec.code = Some(CANCELLED.into());
            rec.error = Some(
                "the caller went away before the call ended (cancelled or disconnected); the upstream may have received the request"
                    .into(),
            );
            self.write(rec);
        }
    }
}

type Decided = (
    Arc<ServiceRuntime>,
    &'static str,
    (url::Url, String, String),
    Vec<(String, String)>,
);

/// The policy decision: Ok with what to send, or the refusal and the rule that decided it.
fn decide(
    u: &Unlocked,
    limiter: &crate::ratelimit::Limiter,
    agent: &str,
    req: &ExecuteRequest,
) -> Result<Decided, (Refusal, Option<String>)> {
    let no_such = || {
        (
            Refusal::new(
                codes::NO_SUCH_CAPABILITY,
                format!(
                    "no capability named {:?} is available to this agent; call list_services to see the ones it may use, or ask the user to grant one in the policy",
                    clip(&req.capability, 64)
                ),
            ),
            None,
        )
    };
    let cap = u.capabilities.get(&req.capability).ok_or_else(no_such)?;
    if !cap.capability.agents.iter().any(|a| a == agent) {
        return Err(no_such());
    }
    let svc = u
        .services
        .get(&cap.capability.service)
        .ok_or_else(no_such)?
        .clone();
    let bad = |e: request::BadRequest| (Refusal::new(codes::BAD_REQUEST, e.0), None);
    let method = request::canonical_method(&req.method).map_err(bad)?;
    let path = request::canonical_path(&req.path).map_err(bad)?;
    let (cred_header, cred_query) = match &svc.service.auth {
        Auth::Header { name, .. } => (Some(name.as_str()), None),
        Auth::Query { name, .. } => (None, Some(name.as_str())),
        _ => (None, None),
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let headers = request::check_headers(&headers, cred_header).map_err(bad)?;
    let query: Vec<(String, String)> = req
        .query
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let query = request::check_query(&query, cred_query).map_err(bad)?;
    request::check_body(&headers, &req.body).map_err(bad)?;
    check_reason_len(&req.reason).map_err(|r| (r, None))?;
    if req.body.len() > MAX_REQUEST_BODY {
        return Err((
            Refusal::new(
                codes::BAD_REQUEST,
                format!(
                    "the request body is {} bytes; the limit is 10 MiB: send a smaller body (in parts, if the API allows)",
                    req.body.len()
                ),
            ),
            None,
        ));
    }
    if let Some(rule) = cap.deny.iter().find(|r| r.denies(method, &path)) {
        return Err((
            Refusal::new(
                codes::DENIED_BY_RULE,
                format!(
                    "{method} {path} is denied by rule {:?} of capability {:?}; this call is not permitted, ask the user if it should be",
                    rule.as_str(),
                    cap.capability.name
                ),
            ),
            Some(format!("deny {}", rule.as_str())),
        ));
    }
    let Some(rule) = cap.allow.iter().find(|r| r.matches(method, &path)) else {
        return Err((
            Refusal::new(
                codes::DENIED_BY_RULE,
                format!(
                    "no rule of capability {:?} allows {method} {path}; it allows: {}. Ask the user to extend the policy if this call is needed",
                    cap.capability.name,
                    cap.capability.allow.join(", ")
                ),
            ),
            Some("no allow rule matched".into()),
        ));
    };
    if cap.capability.requires_reason && !has_visible_text(&req.reason) {
        return Err((
            Refusal::new(
                codes::REASON_REQUIRED,
                format!(
                    "capability {:?} requires a reason: call execute again with `reason` saying why this call is needed",
                    cap.capability.name
                ),
            ),
            Some(format!("allow {}", rule.as_str())),
        ));
    }
    if let Some(limit) = cap.rate_limit
        && let Err(wait) = limiter.take(agent, &cap.capability.name, limit, Instant::now())
    {
        return Err((
            Refusal::new(
                codes::RATE_LIMITED,
                format!(
                    "capability {:?} allows {} calls per {}; retry in {:.1} s",
                    cap.capability.name,
                    limit.count,
                    humantime::format_duration(limit.per),
                    wait.as_secs_f64().max(0.1)
                ),
            ),
            Some(format!(
                "rate_limit {}",
                cap.capability.rate_limit.as_deref().unwrap_or_default()
            )),
        ));
    }
    let url =
        build_url(&svc, &path, &query).map_err(|m| (Refusal::new(codes::BAD_REQUEST, m), None))?;
    Ok((
        svc,
        method,
        (url, path, format!("allow {}", rule.as_str())),
        headers,
    ))
}

/// Base URL + canonical path (+ credential query, + agent query). Refuses if
/// the URL parser would send a different path than the one matched.
fn build_url(
    svc: &ServiceRuntime,
    path: &str,
    query: &[(String, String)],
) -> Result<url::Url, String> {
    let mut url = join_url(&svc.base, path)?;
    let mut pairs = Vec::new();
    if let Auth::Query { name, .. } = &svc.service.auth {
        let value: String = url::form_urlencoded::byte_serialize(svc.credential.expose()).collect();
        let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        pairs.push(format!("{name}={value}"));
    }
    for (k, v) in query {
        let k: String = url::form_urlencoded::byte_serialize(k.as_bytes()).collect();
        let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        pairs.push(format!("{k}={v}"));
    }
    if !pairs.is_empty() {
        url.set_query(Some(&pairs.join("&")));
    }
    Ok(url)
}

/// The service's base URL with a canonical `path` appended. Refuses (never
/// repairs) when the URL parser would put different bytes on the wire than
/// the ones the rules matched, so what is matched is what is sent, and the
/// result always stays under the base URL's scheme, host, port and prefix.
pub fn join_url(base: &url::Url, path: &str) -> Result<url::Url, String> {
    let base_path = base.path().trim_end_matches('/');
    let mut url = base.clone();
    let full = format!("{base_path}{path}");
    url.set_path(&full);
    if url.path() != full {
        return Err(format!(
            "the path {:?} contains characters that would be re-encoded on the wire; percent-encode them yourself",
            clip(path, 80)
        ));
    }
    Ok(url)
}

fn check_literal_host(svc: &ServiceRuntime) -> Result<(), Refusal> {
    if svc.service.allow_private_network {
        return Ok(());
    }
    match upstream::refused_literal_host(&svc.base) {
        None => Ok(()),
        Some((_, why)) => Err(Refusal::new(
            codes::UPSTREAM_ERROR,
            format!(
                "service {:?} points at an address that is {why}, which is refused unless the policy sets allow_private_network = true",
                svc.service.name
            ),
        )),
    }
}

fn upstream_error(svc: &ServiceRuntime, e: reqwest::Error) -> Refusal {
    let e = e.without_url();
    let what = if e.is_timeout() {
        format!(
            "service {:?} did not answer within its timeout ({} ms)",
            svc.service.name, svc.service.timeout_ms
        )
    } else if e.is_connect() && refused_by_sandbox(&e) {
        // Landlock answers a connect to a port outside `upstream_ports` with
        // EACCES: retrying cannot help, the user must allow the port.
        let port = svc.base.port_or_known_default().unwrap_or(443);
        return Refusal::new(
            codes::UPSTREAM_ERROR,
            format!(
                "vaultd may not connect to port {port} of service {:?}: ask the user to add {port} to upstream_ports in vaultd.toml and restart vaultd",
                svc.service.name
            ),
        );
    } else if e.is_connect() {
        format!("cannot connect to service {:?}", svc.service.name)
    } else if e.is_body() || e.is_decode() {
        format!(
            "the response of service {:?} broke off or was malformed",
            svc.service.name
        )
    } else {
        format!("the call to service {:?} failed", svc.service.name)
    };
    let mut chain = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    let (detail, _) = svc.scrubber.scrub_str(&chain);
    let detail = clip(&detail, 400);
    Refusal::new(
        codes::UPSTREAM_ERROR,
        format!("{what}{detail}; retry later or ask the user to check the service"),
    )
}

/// A body is decompressed to at most this many times the service's
/// `max_response_bytes` (and at least 1 MiB, at most 64 MiB) when it is
/// checked for credentials; a larger one is refused (fail closed). A bound
/// tied to what the user allows keeps a small "decompression bomb" from
/// costing much more work than a plain body of the allowed size.
const INFLATE_FACTOR: usize = 16;
const INFLATE_MIN: usize = 1 << 20;
const INFLATE_MAX: usize = 64 << 20;

/// Bodies up to this size are checked and scrubbed on the runtime thread;
/// larger ones, and any that looks compressed, on a blocking thread, so that
/// no body keeps the runtime from serving other calls or `lock` (which
/// must end every call within 100 ms).
const SCRUB_INLINE_MAX: usize = 256 << 10;

/// Whether `data` starts with a valid zlib header (RFC 1950: deflate, a
/// window of at most 32 KiB, the check bits right), whatever its window size.
fn zlib_header(data: &[u8]) -> bool {
    matches!(data, [cmf, flg, ..]
        if cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)).is_multiple_of(31))
}

/// Whether `body` starts as a gzip or zlib stream does (zlib with any
/// window size: `0x78` is only the 32 KiB window's first byte, and a 512-byte
/// window's `0x18` stream is as easy for the agent to decompress).
fn looks_compressed(body: &[u8]) -> bool {
    body.starts_with(&[0x1f, 0x8b]) || zlib_header(body)
}

/// Sets its flag when dropped: when the call that started a blocking body
/// check is dropped (aborted by `lock` or `agent rm`, or past its deadline),
/// the check stops at its next window, and the service's credential patterns
/// it holds are released with it.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Makes a response body fit for the agent: refuses a compressed copy of a
/// credential ([`refuse_compressed_credential`]) and scrubs the rest, with
/// [`scrub::Scrubber::scrub_truncated`] when it was cut at `max_response_bytes`.
/// Large or compressed bodies are handled off the runtime thread
/// ([`SCRUB_INLINE_MAX`]); if the call is dropped meanwhile, the decompression
/// stops within a window ([`StopOnDrop`]) and a scrub not yet begun is skipped.
async fn finish_body(
    svc: &Arc<ServiceRuntime>,
    body: Vec<u8>,
    truncated: bool,
    coding: Coding,
) -> Result<(Vec<u8>, bool), Refusal> {
    if coding == Coding::Identity && body.len() <= SCRUB_INLINE_MAX && !looks_compressed(&body) {
        return finish_body_now(svc, body, truncated, coding, &AtomicBool::new(false));
    }
    let svc = Arc::clone(svc);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    tokio::task::spawn_blocking(move || finish_body_now(&svc, body, truncated, coding, &stop))
        .await
        .unwrap_or_else(|_| {
            Err(Refusal::new(
                codes::UPSTREAM_ERROR,
                "the response could not be checked for credentials (an internal error); it was discarded. Retry, or ask the user to look at vaultd's log",
            ))
        })
}

/// [`finish_body`]'s work, after decoding a body the upstream compressed
/// ([`decode_body`]); returns the body and whether it was cut.
fn finish_body_now(
    svc: &ServiceRuntime,
    body: Vec<u8>,
    truncated: bool,
    coding: Coding,
    stop: &AtomicBool,
) -> Result<(Vec<u8>, bool), Refusal> {
    let (mut body, truncated) = decode_body(svc, body, truncated, coding, stop)?;
    refuse_compressed_credential(svc, &body, truncated, stop)?;
    if stop.load(Ordering::Relaxed) {
        return Err(abandoned());
    }
    if truncated {
        // Also redacts a trailing piece that starts a credential form: the
        // agent could pad its request so the cut falls inside an echo.
        svc.scrubber.scrub_truncated(&mut body);
    } else {
        svc.scrubber.scrub(&mut body);
    }
    Ok((body, truncated))
}

/// A response body's content coding, from every `Content-Encoding` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    /// zlib-wrapped, as HTTP means it, or raw deflate, as some servers send it.
    Deflate,
}

/// Reads the codings of every `Content-Encoding` line (reqwest's own
/// decoding is off: it reads only the first line, and drops the rest when it
/// decodes). vaultd sends `Accept-Encoding: identity`; a single gzip or
/// deflate sent anyway is decoded by [`decode_body`]. Anything else, or
/// codings stacked, could reach the agent as a compressed copy of a
/// credential (rule 6) and is refused: `Err` names what was sent.
fn content_coding(headers: &reqwest::header::HeaderMap) -> Result<Coding, String> {
    let mut codings = Vec::new();
    for value in headers.get_all(reqwest::header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        codings.extend(
            text.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != "identity")
                .map(str::to_owned),
        );
    }
    match codings.as_slice() {
        [] => Ok(Coding::Identity),
        [c] if c == "gzip" || c == "x-gzip" => Ok(Coding::Gzip),
        [c] if c == "deflate" => Ok(Coding::Deflate),
        _ => Err(format!(
            "Content-Encoding {:?}",
            clip(&codings.join(", "), 80)
        )),
    }
}

/// Decodes a body sent with a gzip or deflate coding, to at most
/// `max_response_bytes` (the rest is cut, `truncated`). A damaged stream,
/// or bytes after its end, is refused: a partial body is never returned as
/// complete, and the agent must not get compressed data past the end
/// unchecked. A stream cut at `max_response_bytes` on the way in decodes as
/// far as it goes, and is returned truncated.
fn decode_body(
    svc: &ServiceRuntime,
    body: Vec<u8>,
    truncated: bool,
    coding: Coding,
    stop: &AtomicBool,
) -> Result<(Vec<u8>, bool), Refusal> {
    use flate2::bufread::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
    if coding == Coding::Identity || body.is_empty() {
        return Ok((body, truncated));
    }
    let max = svc.service.max_response_bytes as usize;
    let damaged = |why: String| {
        Refusal::new(
            codes::UPSTREAM_ERROR,
            format!(
                "service {:?} answered with a damaged {} body ({why}); it was discarded. Retry later or ask the user to check the service",
                svc.service.name,
                if coding == Coding::Gzip {
                    "gzip"
                } else {
                    "deflate"
                },
            ),
        )
    };
    let input: &[u8] = &body;
    let mut out = Vec::new();
    let mut cut = match coding {
        Coding::Gzip => inflate(MultiGzDecoder::new(input), &mut out, max, stop),
        _ if zlib_header(input) => inflate_to_end(
            ZlibDecoder::new(input),
            ZlibDecoder::into_inner,
            &mut out,
            max,
            stop,
        ),
        _ => Err(String::new()),
    };
    // HTTP's deflate is zlib-wrapped, but some servers send raw deflate,
    // whose first bytes can also pass for a zlib header. (A zlib stream cut
    // on the way in keeps what it decoded: see below.)
    if coding == Coding::Deflate && cut.is_err() && !(truncated && zlib_header(input)) {
        out.clear();
        cut = inflate_to_end(
            DeflateDecoder::new(input),
            DeflateDecoder::into_inner,
            &mut out,
            max,
            stop,
        );
    }
    if stop.load(Ordering::Relaxed) {
        return Err(abandoned());
    }
    match cut {
        Ok(cut) => Ok((out, cut || truncated)),
        // Cut on the way in: what decodes before the cut is the answer.
        Err(_) if truncated => Ok((out, true)),
        Err(why) => Err(damaged(why)),
    }
}

/// [`inflate`] of a stream that ends by itself (zlib, raw deflate), then
/// refuses input left after its end (`rest` gives it back): the agent must
/// not get bytes past the stream unchecked.
fn inflate_to_end<'a, D: std::io::Read>(
    mut decoder: D,
    rest: impl FnOnce(D) -> &'a [u8],
    out: &mut Vec<u8>,
    max: usize,
    stop: &AtomicBool,
) -> Result<bool, String> {
    let cut = inflate(&mut decoder, out, max, stop)?;
    match rest(decoder) {
        left if !cut && !left.is_empty() => Err(format!("{} bytes after its end", left.len())),
        _ => Ok(cut),
    }
}

/// Reads `decoder` into `out` up to `max` bytes; `Ok(true)` when there was
/// more (cut), `Err` when the stream is damaged.
fn inflate(
    mut decoder: impl std::io::Read,
    out: &mut Vec<u8>,
    max: usize,
    stop: &AtomicBool,
) -> Result<bool, String> {
    let mut chunk = zeroize::Zeroizing::new(vec![0u8; 64 << 10]);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let n = decoder.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(false);
        }
        let room = max - out.len();
        if n > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok(true);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// The result of a body check whose call is gone (nobody reads it).
fn abandoned() -> Refusal {
    Refusal::new(
        codes::UPSTREAM_ERROR,
        "the call ended while its response was being checked",
    )
}

/// A body the upstream did not label as compressed (a declared gzip or
/// deflate was decoded by [`decode_body`]) but that is a gzip or zlib stream by its magic
/// bytes (`Content-Type: application/gzip`, or gzip sent as `identity`):
/// the agent could decompress it, so it is decompressed here and refused if
/// any credential form is inside (DESIGN.md rule 6: the agent never gets a
/// compressed copy of a credential), if it decompresses to more than
/// [`INFLATE_FACTOR`] times `max_response_bytes`, or if it was cut at
/// `max_response_bytes` (the agent can decompress a cut stream up to the cut,
/// and could pad its request so that the cut falls inside an echoed
/// credential). Raw deflate and other formats have no magic to go by
/// (SECURITY.md).
fn refuse_compressed_credential(
    svc: &ServiceRuntime,
    body: &[u8],
    truncated: bool,
    stop: &AtomicBool,
) -> Result<(), Refusal> {
    use std::io::Read as _;
    if !looks_compressed(body) {
        return Ok(());
    }
    let gzip = body.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn std::io::Read + '_> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(body))
    } else {
        Box::new(flate2::read::ZlibDecoder::new(body))
    };
    let limit = (svc.service.max_response_bytes as usize)
        .saturating_mul(INFLATE_FACTOR)
        .clamp(INFLATE_MIN, INFLATE_MAX);
    let refuse = |why: String| {
        Err(Refusal::new(
            codes::UPSTREAM_ERROR,
            format!("service {:?} answered with {why}", svc.service.name),
        ))
    };
    // Windows of 64 KiB, each after the last `keep` bytes of the one before,
    // so a credential form across two windows is still seen whole.
    let keep = (svc.scrubber.longest_pattern() * 8).max(1024);
    let mut window = zeroize::Zeroizing::new(Vec::with_capacity(keep + (64 << 10)));
    let mut chunk = zeroize::Zeroizing::new(vec![0u8; 64 << 10]);
    let mut total = 0usize;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(abandoned());
        }
        // A stream that is not valid (a text starting like a zlib header, a
        // cut body) is checked as far as it decompresses.
        let n = reader.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        total += n;
        if total > limit {
            return refuse(format!(
                "compressed data larger than {} MiB once decompressed ({INFLATE_FACTOR} times its max_response_bytes); it was discarded, as it could not be checked for credentials. If this answer is expected, ask the user to raise the service's max_response_bytes",
                limit >> 20
            ));
        }
        let cut = window.len().saturating_sub(keep);
        window.drain(..cut);
        window.extend_from_slice(&chunk[..n]);
        let mut probe = zeroize::Zeroizing::new(window.to_vec());
        if svc.scrubber.scrub(&mut probe) > 0 {
            return refuse(
                "compressed data that holds a credential; it was discarded. Ask the user to check the service".to_owned(),
            );
        }
    }
    if truncated && total > 0 {
        return refuse(format!(
            "compressed data longer than its max_response_bytes ({} bytes); it was discarded, as a cut compressed body cannot be checked for a credential cut with it. If this answer is expected, ask the user to raise the service's max_response_bytes",
            svc.service.max_response_bytes
        ));
    }
    Ok(())
}

/// Whether the connect failed with EACCES (the sandbox's port rule).
fn refused_by_sandbox(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        src = s.source();
    }
    false
}

async fn call_upstream(
    svc: &Arc<ServiceRuntime>,
    method: &'static str,
    url: url::Url,
    headers: Vec<(String, String)>,
    body: bytes::Bytes,
) -> Result<ExecuteResponse, Refusal> {
    check_literal_host(svc)?;
    let m = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| Refusal::new(codes::BAD_REQUEST, "bad method"))?;
    let lease = svc.pool.lease();
    let mut rb = lease.client.request(m, url);
    for (k, v) in &headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let auth_header = match &svc.service.auth {
        Auth::Bearer { .. } => {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(svc.credential.expose());
            Some((reqwest::header::AUTHORIZATION, v))
        }
        Auth::Basic { username, .. } => {
            let mut raw = username.as_bytes().to_vec();
            raw.push(b':');
            raw.extend_from_slice(svc.credential.expose());
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(&raw)
            )
            .into_bytes();
            zeroize::Zeroize::zeroize(&mut raw);
            Some((reqwest::header::AUTHORIZATION, v))
        }
        Auth::Header { name, prefix, .. } => {
            let mut v = prefix.as_bytes().to_vec();
            v.extend_from_slice(svc.credential.expose());
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Refusal::new(
                    codes::UPSTREAM_ERROR,
                    "the service's auth header name is invalid; fix the policy",
                )
            })?;
            Some((name, v))
        }
        Auth::Query { .. } => None,
    };
    if let Some((name, mut value)) = auth_header {
        let mut hv = reqwest::header::HeaderValue::from_bytes(&value).map_err(|_| {
            Refusal::new(codes::UPSTREAM_ERROR, "the credential cannot be sent as a header value (control characters?); fix the secret")
        })?;
        zeroize::Zeroize::zeroize(&mut value);
        hv.set_sensitive(true);
        rb = rb.header(name, hv);
    }
    if !body.is_empty() {
        rb = rb.body(body);
    }
    let timeout = Duration::from_millis(svc.service.timeout_ms);
    // Whether the response came on a shared (HTTP/2) connection: a call that
    // ends early there retires the pool (see `upstream::Pool`).
    let shared_connection = std::sync::atomic::AtomicBool::new(false);
    let exchange = async {
        let mut resp = rb.send().await.map_err(|e| upstream_error(svc, e))?;
        if resp.version() == reqwest::Version::HTTP_2 {
            shared_connection.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let status = resp.status().as_u16() as u32;
        let coding = content_coding(resp.headers()).map_err(|what| {
            Refusal::new(
                codes::UPSTREAM_ERROR,
                format!(
                    "service {:?} answered with {what}, which vaultd cannot decode (it asks for an uncompressed answer, and decodes only a single gzip or deflate); the body was discarded, as it could not be checked for credentials. Ask the user to check the service",
                    svc.service.name
                ),
            )
        })?;
        let mut out_headers = Vec::new();
        for (name, value) in resp.headers() {
            if matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "keep-alive"
            ) || (coding != Coding::Identity && name == reqwest::header::CONTENT_ENCODING)
            {
                // The body goes back decoded.
                continue;
            }
            // Scrub the raw bytes first: a lossy UTF-8 conversion could break a
            // credential's match and leak its valid part.
            let (n, _) = svc.scrubber.scrub_name(name.as_str());
            let mut raw = value.as_bytes().to_vec();
            svc.scrubber.scrub(&mut raw);
            out_headers.push(Header {
                name: n,
                value: String::from_utf8_lossy(&raw).into_owned(),
            });
        }
        let max = svc.service.max_response_bytes as usize;
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await.map_err(|e| upstream_error(svc, e))? {
            let room = max - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        drop(resp); // HTTP/1.1: a truncated body's connection is closed, not pooled
        let (body, truncated) = finish_body(svc, body, truncated, coding).await?;
        Ok(ExecuteResponse {
            status,
            headers: out_headers,
            body,
            truncated,
            audit_seq: 0,
        })
    };
    let result = tokio::time::timeout(timeout + Duration::from_millis(250), exchange).await;
    // Over HTTP/1.1 dropping the response closed a connection cut early;
    // over HTTP/2 only the stream was reset.
    let shared = shared_connection.load(std::sync::atomic::Ordering::Relaxed);
    let retire = match &result {
        Ok(Ok(r)) => r.truncated && shared,
        Ok(Err(_)) => shared,
        Err(_) => true, // timed out: whichever connection it was on may be shared
    };
    if retire {
        svc.pool.retire(&lease);
    }
    drop(lease);
    match result {
        Ok(r) => r,
        Err(_) => Err(Refusal::new(
            codes::UPSTREAM_ERROR,
            format!(
                "service {:?} did not finish within its timeout ({} ms); retry later",
                svc.service.name, svc.service.timeout_ms
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIAL: &[u8] = b"CANARY-unit-credential-5b1e";

    /// A service with `max_response_bytes = max` whose credential is [`CREDENTIAL`].
    fn service(max: u64) -> ServiceRuntime {
        let service = crate::policy::Service {
            name: "s".into(),
            base_url: "https://api.example.com".into(),
            auth: Auth::Bearer { secret: "t".into() },
            timeout_ms: 1000,
            max_response_bytes: max,
            ca_file: None,
            ca_pem: None,
            allow_private_network: false,
        };
        ServiceRuntime {
            pool: upstream::Pool::new(&service, Arc::new(rustls::RootCertStore::empty())).unwrap(),
            scrubber: scrub::Scrubber::new(&[CREDENTIAL]).unwrap(),
            credential: crate::secret::SecretBuf::copy_from(CREDENTIAL).unwrap(),
            base: url::Url::parse(&service.base_url).unwrap(),
            service,
        }
    }

    /// `data` as a zlib stream whose header announces a window of
    /// 2^`bits` bytes, around stored deflate blocks (valid for any window:
    /// they refer back to nothing).
    fn zlib_with_window(bits: u8, data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let cmf = (bits - 8) << 4 | 8;
        let flg = (0..=255u8)
            .find(|f| (u16::from(cmf) << 8 | u16::from(*f)).is_multiple_of(31) && f & 0x20 == 0)
            .unwrap();
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::none());
        raw.write_all(data).unwrap();
        let mut z = vec![cmf, flg];
        z.extend_from_slice(&raw.finish().unwrap());
        z.extend_from_slice(&(b << 16 | a).to_be_bytes());
        z
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// `decode_body`: a body decoded past `max_response_bytes` is cut and
    /// marked truncated; a stream cut on the way in decodes as far as it goes
    /// (truncated), but the same cut stream arriving whole is damaged; zlib
    /// with a small window and raw deflate both pass as `deflate`; bytes
    /// after a zlib or raw deflate stream are refused.
    #[test]
    fn labelled_bodies_decode_to_their_cap_or_are_refused_as_damaged() {
        use std::io::Write as _;
        let go = AtomicBool::new(false);
        let text = b"0123456789".repeat(100);
        let decode = |svc: &ServiceRuntime, body: &[u8], cut: bool, coding| {
            decode_body(svc, body.to_vec(), cut, coding, &go).map_err(|r| r.message)
        };
        let big = service(1 << 20);
        let small = service(300);
        let gz = gzip(&text);
        assert_eq!(
            decode(&big, &gz, false, Coding::Gzip).unwrap(),
            (text.clone(), false)
        );
        assert_eq!(
            decode(&small, &gz, false, Coding::Gzip).unwrap(),
            (text[..300].to_vec(), true)
        );
        let half = &gz[..gz.len() / 2];
        let (part, cut) = decode(&big, half, true, Coding::Gzip).unwrap();
        assert!(cut && text.starts_with(&part), "{}", part.len());
        let damaged = decode(&big, half, false, Coding::Gzip).unwrap_err();
        assert!(damaged.contains("damaged gzip body"), "{damaged}");
        let raw = |level: u32| {
            let mut w =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
            w.write_all(&text).unwrap();
            w.finish().unwrap()
        };
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&text).unwrap();
        // zlib with a 512-byte window (header 0x18, as Python's wbits=9 writes it).
        let small_window = zlib_with_window(9, &text);
        for body in [small_window, zlib.finish().unwrap(), raw(6), raw(0)] {
            assert_eq!(
                decode(&big, &body, false, Coding::Deflate).unwrap(),
                (text.clone(), false)
            );
            let mut trailing = body.clone();
            trailing.extend_from_slice(&gz);
            let refused = decode(&big, &trailing, false, Coding::Deflate).unwrap_err();
            assert!(refused.contains("damaged deflate body"), "{refused}");
        }
        assert_eq!(
            decode(&big, b"", false, Coding::Gzip).unwrap(),
            (Vec::new(), false)
        );
        // A zlib stream cut on the way in: what it decodes, not a raw retry.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::none());
        z.write_all(&text).unwrap();
        let z = z.finish().unwrap();
        let (part, cut) = decode(&big, &z[..z.len() / 2], true, Coding::Deflate).unwrap();
        assert!(
            cut && !part.is_empty() && text.starts_with(&part),
            "{}",
            part.len()
        );
    }

    /// An unlabelled gzip body: refused when it holds the credential, when
    /// it inflates past 16 times `max_response_bytes` (at least 1 MiB), when
    /// it was cut, and at once when its call is gone; passed otherwise.
    #[test]
    fn compressed_bodies_are_checked_within_bounds_and_stop_when_the_call_does() {
        let svc = service(64 << 10);
        let go = AtomicBool::new(false);
        let why = |r: Result<(), Refusal>| r.err().map(|e| e.message);

        let mut echo = b"{\"authorization\":\"Bearer ".to_vec();
        echo.extend_from_slice(CREDENTIAL);
        let refused = why(refuse_compressed_credential(&svc, &gzip(&echo), false, &go)).unwrap();
        assert!(refused.contains("holds a credential"), "{refused}");

        let harmless = gzip(b"hello, compressed world");
        assert_eq!(
            why(refuse_compressed_credential(&svc, &harmless, false, &go)),
            None
        );
        let cut = harmless.len() - 8; // the gzip trailer: all the text is there
        let cut = why(refuse_compressed_credential(
            &svc,
            &harmless[..cut],
            true,
            &go,
        ))
        .unwrap();
        assert!(
            cut.contains("a cut compressed body cannot be checked"),
            "{cut}"
        );

        // 64 KiB allowed: 1 MiB of inflation (the floor), not 4.
        let bomb = gzip(&vec![b'a'; 4 << 20]);
        let big = why(refuse_compressed_credential(&svc, &bomb, false, &go)).unwrap();
        assert!(big.contains("larger than 1 MiB once decompressed"), "{big}");
        assert_eq!(
            why(refuse_compressed_credential(
                &service(1 << 20),
                &bomb,
                false,
                &go
            )),
            None,
            "16 MiB allowed for 1 MiB"
        );

        // Unlabelled zlib of any window size (Python's zlib.compressobj(wbits=
        // 9..15)), here around stored blocks, which refer back to nothing.
        for bits in 8..=15u8 {
            let z = zlib_with_window(bits, &echo);
            assert!(looks_compressed(&z), "window 2^{bits}");
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&z[..]), &mut plain)
                .unwrap();
            assert_eq!(plain, echo, "a valid stream");
            let refused = why(refuse_compressed_credential(&svc, &z, false, &go)).unwrap();
            assert!(refused.contains("holds a credential"), "{bits}: {refused}");
        }

        let gone = AtomicBool::new(true);
        let stopped = why(refuse_compressed_credential(&svc, &bomb, false, &gone)).unwrap();
        assert!(stopped.contains("the call ended"), "{stopped}");
        assert!(!looks_compressed(b"plain text"));
    }

    /// vault-mcp makes a call again only on `Unauthenticated`: a call that
    /// may have reached the upstream must never come back with it.
    #[test]
    fn only_refusals_before_the_upstream_call_keep_their_status_code() {
        let status = |r: Refusal| {
            let s = tonic::Status::from(r);
            (s.code(), codes::code_of(s.message()))
        };
        assert_eq!(
            status(Refusal::unknown_agent()),
            (tonic::Code::Unauthenticated, Some(codes::UNKNOWN_AGENT))
        );
        assert_eq!(
            status(Refusal::agent_removed()),
            (tonic::Code::Aborted, Some(codes::UNKNOWN_AGENT))
        );
        assert_eq!(
            status(Refusal::locked()),
            (tonic::Code::FailedPrecondition, Some(codes::LOCKED))
        );
        assert_eq!(
            status(Refusal::locked().in_flight()),
            (tonic::Code::Aborted, Some(codes::LOCKED))
        );
    }

    #[test]
    fn a_reason_needs_visible_text() {
        for blank in [
            "",
            " ",
            "\t\n",
            "\u{200B}",
            "\u{FEFF}\u{2060}",
            "\u{00AD} \u{202E}",
        ] {
            assert!(!has_visible_text(blank), "{blank:?}");
        }
        for reason in ["x", " fix issue 12 ", "\u{200B}ok", "日本"] {
            assert!(has_visible_text(reason), "{reason:?}");
        }
    }

    fn call(method: &str, reason: &str) -> ExecuteRequest {
        ExecuteRequest {
            capability: "echo".into(),
            method: method.into(),
            path: "/echo/x".into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_reason_over_the_limit_is_refused_so_the_record_keeps_it_whole() {
        // Cut to fit, these would record only blanks or invisible characters.
        for long in [
            format!("{}x", " ".repeat(2000)),
            format!("{}x", "\u{200b}".repeat(400)),
            "y".repeat(audit::MAX_REASON_LEN + 1),
        ] {
            let r = check_reason_len(&long).expect_err("refused");
            assert_eq!(r.code, codes::BAD_REQUEST);
            assert!(
                r.message.contains("the limit is 1024 bytes"),
                "{}",
                r.message
            );
            // The refusal's own record stays bounded.
            let rec = decision_record("a", &Peer::default(), &call("GET", &long));
            assert!(rec.reason.unwrap().chars().count() <= audit::MAX_RECORDED_REASON + 1);
        }
        // Within the limit, every reason is recorded whole, escapes included,
        // so the visible text that let it through is in the record.
        let mut hidden = String::new();
        for c in ['\u{1b}', '\u{0}', '\u{9b}', '\u{200b}', '\u{202e}']
            .iter()
            .cycle()
        {
            if hidden.len() + c.len_utf8() >= audit::MAX_REASON_LEN {
                break;
            }
            hidden.push(*c);
        }
        for reason in [
            format!("{hidden}x"),
            format!("{}x", "\u{1b}".repeat(audit::MAX_REASON_LEN - 1)),
            format!("{}x", "\u{200b}".repeat(300)),
            format!("{}x", " ".repeat(audit::MAX_REASON_LEN - 1)),
        ] {
            assert!(reason.len() <= audit::MAX_REASON_LEN);
            check_reason_len(&reason).expect("within the limit");
            let rec = decision_record("a", &Peer::default(), &call("GET", &reason));
            let kept = rec.reason.unwrap();
            assert_eq!(kept, audit::escape_hidden(&reason), "cut");
            assert!(kept.ends_with('x'));
        }
    }

    #[test]
    fn decision_records_hold_the_canonical_method_and_escaped_reason() {
        let rec = decision_record("a", &Peer::default(), &call("head", "ok \u{202e}"));
        assert_eq!(rec.method.as_deref(), Some("HEAD"));
        assert_eq!(rec.reason.as_deref(), Some("ok \\u{202e}"));
        let rec = decision_record("a", &Peer::default(), &call("GeT", "why\r\nforged"));
        assert_eq!(rec.method.as_deref(), Some("GET"));
        assert_eq!(rec.reason.as_deref(), Some("why\\r\\nforged"));
        // Not a method: as given, escaped.
        let rec = decision_record("a", &Peer::default(), &call("GET\u{1b}[2K", ""));
        assert_eq!(rec.method.as_deref(), Some("GET\\u{1b}[2K"));
        assert_eq!(rec.reason, None);
    }

    #[test]
    fn audit_fields_never_carry_control_or_bidi_characters() {
        assert_eq!(for_audit("echo", 64), "echo");
        assert_eq!(for_audit("caf\u{e9}", 64), "caf\u{e9}");
        let forged = for_audit("x\r\n2026 #1 decision\u{1b}[2K\u{202e}\u{0}", 256);
        assert!(
            !forged.contains(|c: char| c.is_control() || c == '\u{202e}'),
            "{forged:?}"
        );
        assert_eq!(forged, "x\\r\\n2026 #1 decision\\u{1b}[2K\\u{202e}\\u{0}");
        assert_eq!(for_audit(&"a".repeat(100), 64).chars().count(), 65);
        // Every bidi control (embeddings, overrides, isolates, marks), C1
        // controls (CSI) and invisible characters.
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{061c}', '\u{9b}', '\u{7f}',
            '\u{200b}', '\u{2060}', '\u{feff}', '\u{ad}', '\u{2028}',
        ] {
            let field = for_audit(&format!("a{c}b"), 64);
            assert!(!field.contains(c), "{c:?} kept raw: {field:?}");
            assert!(field.starts_with("a\\u{"), "{field:?}");
        }
    }
}
