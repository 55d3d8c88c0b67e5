//! The built binary against a fake vaultd (a tonic server on a unix socket in a
//! tempdir): results and refusals as the agent sees them, and a daemon that
//! stops and comes back under one MCP session.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Session, command, is_error, text};
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use vault_proto::v1::vault_server::{Vault, VaultServer};
use vault_proto::v1::*;

const TOKEN: &str = "vt_fake_agent_token_77e1";

#[derive(Clone, Default)]
struct Counters {
    hellos: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct Fake {
    protocol: u32,
    counters: Counters,
}

/// Counts handler futures dropped before they finished (a call the client abandoned).
struct DropGuard(Arc<AtomicUsize>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn check_token(token: &str) -> Result<(), Status> {
    if token == TOKEN {
        Ok(())
    } else {
        Err(Status::unauthenticated(
            "unknown_agent: this agent token is unknown or revoked: create one with `vaultctl agent add NAME`",
        ))
    }
}

fn stub<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl Vault for Fake {
    type AuditTailStream = tokio_stream::Empty<Result<AuditLine, Status>>;

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        stub()
    }
    async fn unlock(&self, _: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        stub()
    }
    async fn lock(&self, _: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        stub()
    }
    async fn change_passphrase(
        &self,
        _: Request<ChangePassphraseRequest>,
    ) -> Result<Response<ChangePassphraseResponse>, Status> {
        stub()
    }
    async fn set_secret(
        &self,
        _: Request<SetSecretRequest>,
    ) -> Result<Response<SetSecretResponse>, Status> {
        stub()
    }
    async fn list_secrets(
        &self,
        _: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        stub()
    }
    async fn remove_secret(
        &self,
        _: Request<RemoveSecretRequest>,
    ) -> Result<Response<RemoveSecretResponse>, Status> {
        stub()
    }
    async fn apply_policy(
        &self,
        _: Request<ApplyPolicyRequest>,
    ) -> Result<Response<ApplyPolicyResponse>, Status> {
        stub()
    }
    async fn show_policy(
        &self,
        _: Request<ShowPolicyRequest>,
    ) -> Result<Response<ShowPolicyResponse>, Status> {
        stub()
    }
    async fn add_agent(
        &self,
        _: Request<AddAgentRequest>,
    ) -> Result<Response<AddAgentResponse>, Status> {
        stub()
    }
    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        stub()
    }
    async fn remove_agent(
        &self,
        _: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        stub()
    }
    async fn audit_tail(
        &self,
        _: Request<AuditTailRequest>,
    ) -> Result<Response<Self::AuditTailStream>, Status> {
        stub()
    }
    async fn audit_verify(
        &self,
        _: Request<AuditVerifyRequest>,
    ) -> Result<Response<AuditVerifyResponse>, Status> {
        stub()
    }

    async fn hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        self.counters.hellos.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(HelloResponse {
            protocol: self.protocol,
            daemon_version: "0.0.0-fake".into(),
        }))
    }

    async fn agent_status(
        &self,
        req: Request<AgentStatusRequest>,
    ) -> Result<Response<AgentStatusResponse>, Status> {
        let known = req.get_ref().agent_token == TOKEN;
        Ok(Response::new(AgentStatusResponse {
            state: "unlocked".into(),
            agent: if known {
                "claude-code".into()
            } else {
                String::new()
            },
            locks_in_secs: 0,
        }))
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        check_token(&req.get_ref().agent_token)?;
        Ok(Response::new(ListServicesResponse {
            agent: "claude-code".into(),
            capabilities: vec![CapabilityInfo {
                name: "github-issues-read".into(),
                service: "github".into(),
                base_url: "https://api.github.com".into(),
                allow: vec![
                    "GET /repos/*/*/issues".into(),
                    "GET /repos/*/*/issues/**".into(),
                ],
                deny: vec![],
                rate_limit: "60/min".into(),
                requires_reason: false,
            }],
        }))
    }

    async fn execute(
        &self,
        req: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let req = req.into_inner();
        check_token(&req.agent_token)?;
        match req.capability.as_str() {
            // Echoes what arrived, as the upstream would see it.
            "echo" => {
                let pairs = |v: &[Header]| {
                    v.iter()
                        .map(|h| json!([h.name, h.value]))
                        .collect::<Vec<_>>()
                };
                let seen = json!({
                    "method": req.method, "path": req.path, "query": pairs(&req.query),
                    "headers": pairs(&req.headers), "body": String::from_utf8_lossy(&req.body), "reason": req.reason,
                });
                Ok(Response::new(ExecuteResponse {
                    status: 201,
                    headers: vec![
                        Header {
                            name: "content-type".into(),
                            value: "application/json".into(),
                        },
                        Header {
                            name: "link".into(),
                            value: "<a>; rel=next".into(),
                        },
                        Header {
                            name: "Link".into(),
                            value: "<b>; rel=last".into(),
                        },
                    ],
                    body: seen.to_string().into_bytes(),
                    truncated: false,
                    audit_seq: 42,
                }))
            }
            "binary" => Ok(Response::new(ExecuteResponse {
                status: 200,
                headers: vec![Header {
                    name: "content-type".into(),
                    value: "image/png".into(),
                }],
                body: vec![0x89, b'P', b'N', b'G', 0xff, 0x00],
                truncated: true,
                audit_seq: 43,
            })),
            // 1 MiB of JSON text, the default `max_response_bytes`.
            "large" => Ok(Response::new(ExecuteResponse {
                status: 200,
                headers: vec![],
                body: format!("[{}0]", "1234567,\"\\u00e9\",".repeat(1024 * 1024 / 16))
                    .into_bytes(),
                truncated: false,
                audit_seq: 44,
            })),
            "denied" => Err(Status::permission_denied(
                "denied_by_rule: DELETE /repos/o/r matches no allow rule of capability `denied`; ask the user to change the policy",
            )),
            "leaky" => Err(Status::invalid_argument(format!(
                "bad_request: token {TOKEN} may not be sent as a header"
            ))),
            "internal" => Err(Status::internal("worker pool exhausted")),
            "hang" => {
                let _guard = DropGuard(self.counters.dropped.clone());
                tokio::time::sleep(Duration::from_secs(120)).await;
                Err(Status::internal("not cancelled"))
            }
            _ => Err(Status::not_found(
                "no_such_capability: no capability of that name is granted to this agent: call list_services",
            )),
        }
    }
}

/// A fake vaultd serving on `path` until stopped.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

fn start(rt: &tokio::runtime::Runtime, path: &Path, protocol: u32, counters: &Counters) -> Running {
    let _ = std::fs::remove_file(path);
    let listener = rt
        .block_on(async { UnixListener::bind(path) })
        .expect("bind fake vaultd");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let fake = Fake {
        protocol,
        counters: counters.clone(),
    };
    let task = rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(VaultServer::new(fake))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .expect("fake vaultd");
    });
    Running {
        stop: Some(stop),
        task,
        path: path.to_path_buf(),
    }
}

impl Running {
    /// Stops serving and closes every connection, as a stopped vaultd does.
    fn stop(mut self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.take().unwrap().send(());
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), &mut self.task).await })
            .expect("fake vaultd stops")
            .unwrap();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn results_and_refusals() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let mut s = Session::ready(&mut command(&sock, Some(TOKEN)));
    // Nothing dialled before the first tool call.
    assert_eq!(counters.hellos.load(Ordering::SeqCst), 0);

    let r = s.call_tool(2, "list_services", json!({}));
    assert!(!is_error(&r), "{r}");
    let listed: Value = serde_json::from_str(text(&r)).unwrap();
    assert_eq!(
        listed, r["structuredContent"],
        "text and structuredContent are the same object"
    );
    assert_eq!(
        listed,
        json!({"agent": "claude-code", "capabilities": [{
            "name": "github-issues-read", "service": "github", "base_url": "https://api.github.com",
            "allow": ["GET /repos/*/*/issues", "GET /repos/*/*/issues/**"], "deny": [],
            "rate_limit": "60/min", "requires_reason": false
        }]})
    );

    let r = s.call_tool(3, "vault_status", json!({}));
    assert_eq!(
        serde_json::from_str::<Value>(text(&r)).unwrap(),
        json!({"state": "unlocked", "agent": "claude-code"})
    );
    assert_eq!(
        r["structuredContent"],
        json!({"state": "unlocked", "agent": "claude-code"})
    );

    let r = s.call_tool(
        4,
        "execute",
        json!({
            "capability": "echo", "method": "POST", "path": "/repos/o/r/issues",
            "query": {"per_page": "5", "state": "open"}, "headers": {"Accept": "application/json"},
            "body": "{\"title\":\"héllo\"}", "reason": "file the bug the user described"
        }),
    );
    assert!(!is_error(&r), "{r}");
    assert!(r.get("structuredContent").is_none());
    let out: Value = serde_json::from_str(text(&r)).unwrap();
    assert_eq!(out["status"], 201);
    assert_eq!(out["body_encoding"], "utf8");
    assert_eq!(out["truncated"], false);
    assert_eq!(
        out["headers"],
        json!({"content-type": "application/json", "link": "<a>; rel=next, <b>; rel=last"})
    );
    assert_eq!(out.as_object().unwrap().len(), 5, "{out}");
    let seen: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen,
        json!({
            "method": "POST", "path": "/repos/o/r/issues",
            "query": [["per_page", "5"], ["state", "open"]], "headers": [["Accept", "application/json"]],
            "body": "{\"title\":\"héllo\"}", "reason": "file the bug the user described"
        })
    );

    let r = s.call_tool(
        5,
        "execute",
        json!({"capability": "binary", "method": "GET", "path": "/logo.png"}),
    );
    let out: Value = serde_json::from_str(text(&r)).unwrap();
    assert_eq!(
        (out["body"].as_str(), out["body_encoding"].as_str()),
        (Some("iVBOR/8A"), Some("base64")),
        "{out}"
    );
    assert_eq!(out["truncated"], true);

    // The daemon's coded refusals reach the agent unchanged.
    let r = s.call_tool(
        6,
        "execute",
        json!({"capability": "denied", "method": "DELETE", "path": "/repos/o/r"}),
    );
    assert!(is_error(&r));
    assert_eq!(
        text(&r),
        "denied_by_rule: DELETE /repos/o/r matches no allow rule of capability `denied`; ask the user to change the policy"
    );
    let r = s.call_tool(
        7,
        "execute",
        json!({"capability": "nope", "method": "GET", "path": "/"}),
    );
    assert!(text(&r).starts_with("no_such_capability: "), "{r}");
    // ...except the agent token, which is never shown.
    let r = s.call_tool(
        8,
        "execute",
        json!({"capability": "leaky", "method": "GET", "path": "/"}),
    );
    assert_eq!(
        text(&r),
        "bad_request: token [REDACTED] may not be sent as a header"
    );
    // A status without one of our codes is `unavailable` with the message only.
    let r = s.call_tool(
        9,
        "execute",
        json!({"capability": "internal", "method": "GET", "path": "/"}),
    );
    assert_eq!(
        text(&r),
        "unavailable: vaultd failed the call: worker pool exhausted"
    );
    // A too-large body is refused before it is sent.
    let big = "x".repeat(10 * 1024 * 1024 + 1);
    let r = s.call_tool(
        10,
        "execute",
        json!({"capability": "echo", "method": "POST", "path": "/", "body": big}),
    );
    assert!(
        text(&r).starts_with("bad_request: the request body is 10485761 bytes"),
        "{}",
        text(&r)
    );

    // One connection, one handshake, for all of the above: refusals keep it.
    let r = s.call_tool(11, "vault_status", json!({}));
    assert!(!is_error(&r), "{r}");
    assert_eq!(counters.hellos.load(Ordering::SeqCst), 1);

    let (status, stderr) = s.finish();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(TOKEN) && s.stdout.iter().all(|l| !l.contains(TOKEN)));
    daemon.stop(&rt);
}

#[test]
fn an_unknown_token_is_refused_by_the_daemon() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let mut s = Session::ready(&mut command(&sock, Some("vt_revoked")));
    let r = s.call_tool(2, "list_services", json!({}));
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("unknown_agent: this agent token is unknown or revoked"),
        "{r}"
    );
    let r = s.call_tool(3, "vault_status", json!({}));
    let st = &r["structuredContent"];
    assert_eq!(
        (&st["state"], &st["agent"]),
        (&json!("unlocked"), &Value::Null),
        "{r}"
    );
    // Why, and that a token from the environment needs a client restart.
    let hint = st["hint"].as_str().unwrap_or_default();
    assert!(
        hint.starts_with("unknown_agent: ") && hint.contains("restart the MCP client"),
        "{r}"
    );
    s.finish();
    daemon.stop(&rt);
}

#[test]
fn a_restarted_daemon_serves_the_same_session() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let hellos = || counters.hellos.load(Ordering::SeqCst);
    let mut s = Session::ready(&mut command(&sock, Some(TOKEN)));

    // Not running yet.
    let r = s.call_tool(2, "list_services", json!({}));
    assert!(
        text(&r).starts_with("unavailable: vaultd is not running (no socket at"),
        "{r}"
    );

    // Started: served, with one handshake.
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let r = s.call_tool(3, "list_services", json!({}));
    assert!(!is_error(&r), "{r}");
    s.call_tool(4, "vault_status", json!({}));
    assert_eq!(hellos(), 1);

    // Stopped: `unavailable`, naming the start command, for every tool.
    daemon.stop(&rt);
    for (id, tool, args) in [
        (
            5,
            "execute",
            json!({"capability": "echo", "method": "GET", "path": "/"}),
        ),
        (6, "list_services", json!({})),
        (7, "vault_status", json!({})),
    ] {
        let r = s.call_tool(id, tool, args);
        assert!(is_error(&r));
        let t = text(&r);
        assert!(
            t.starts_with("unavailable: vaultd is not running")
                && t.contains("systemctl --user start vaultd"),
            "{t}"
        );
    }

    // Back: the same session is served again, after a new handshake.
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let r = s.call_tool(
        8,
        "execute",
        json!({"capability": "echo", "method": "GET", "path": "/again"}),
    );
    assert!(!is_error(&r), "{r}");
    assert_eq!(hellos(), 2);

    // Restarted between two calls, with no failed call in between: the closed
    // connection is noticed, and the next call dials and handshakes first.
    daemon.stop(&rt);
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let r = s.call_tool(
        9,
        "execute",
        json!({"capability": "echo", "method": "GET", "path": "/restarted"}),
    );
    assert!(!is_error(&r), "{r}");
    assert_eq!(hellos(), 3);

    let (status, stderr) = s.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("connected to vaultd 0.0.0-fake"),
        "{stderr}"
    );
    daemon.stop(&rt);
}

#[test]
fn a_daemon_of_another_protocol_version_is_unavailable() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION + 1, &counters);
    let mut s = Session::ready(&mut command(&sock, Some(TOKEN)));
    let r = s.call_tool(
        2,
        "execute",
        json!({"capability": "echo", "method": "GET", "path": "/"}),
    );
    assert!(is_error(&r));
    let t = text(&r);
    let expected = format!(
        "unavailable: vaultd at {} speaks protocol v{} (vaultd 0.0.0-fake) but this client speaks v{}",
        sock.display(),
        vault_proto::PROTOCOL_VERSION + 1,
        vault_proto::PROTOCOL_VERSION
    );
    assert!(t.starts_with(&expected), "{t}");
    // Nothing but the handshake reached the daemon, and the next call checks again.
    s.call_tool(3, "list_services", json!({}));
    assert_eq!(counters.hellos.load(Ordering::SeqCst), 2);
    s.finish();
    daemon.stop(&rt);
}

#[test]
fn a_cancelled_call_is_abandoned_at_the_daemon() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let mut s = Session::ready(&mut command(&sock, Some(TOKEN)));
    s.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "execute", "arguments": {"capability": "hang", "method": "GET", "path": "/slow"}}}));
    wait_for("the call to reach the daemon", || {
        counters.hellos.load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    s.notify(
        "notifications/cancelled",
        json!({"requestId": 2, "reason": "user pressed stop"}),
    );
    wait_for("the daemon to see the call dropped", || {
        counters.dropped.load(Ordering::SeqCst) == 1
    });
    // The session goes on.
    let r = s.call_tool(3, "vault_status", json!({}));
    assert!(!is_error(&r), "{r}");
    s.finish();
    daemon.stop(&rt);
}

#[test]
fn a_daemon_dying_mid_call_is_unavailable_then_redialled() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let mut s = Session::ready(&mut command(&sock, Some(TOKEN)));

    // Dropping the daemon's runtime kills it with its connections, as a crash would.
    let doomed = runtime();
    let _daemon = start(&doomed, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    s.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "execute", "arguments": {"capability": "hang", "method": "POST", "path": "/charge"}}}));
    wait_for("the call to reach the daemon", || {
        counters.hellos.load(Ordering::SeqCst) == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    doomed.shutdown_background();

    let r = s.response(&json!(2));
    let r = &r["result"];
    assert!(is_error(r), "{r}");
    let t = text(r);
    assert!(
        t.starts_with(&format!(
            "unavailable: vaultd is not running (the connection to {} was lost during the call",
            sock.display()
        )),
        "{t}"
    );
    assert!(t.contains("systemctl --user start vaultd"), "{t}");
    assert!(t.contains("may or may not have reached the API"), "{t}");
    eprintln!("mid-call refusal: {t}");

    // The socket file is left behind, refusing connections: still "not running".
    let r = s.call_tool(3, "list_services", json!({}));
    assert!(
        text(&r).starts_with("unavailable: vaultd is not running (no socket at"),
        "{r}"
    );

    let rt = runtime();
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let r = s.call_tool(4, "list_services", json!({}));
    assert!(!is_error(&r), "{r}");
    assert_eq!(counters.hellos.load(Ordering::SeqCst), 2);
    s.finish();
    daemon.stop(&rt);
}

/// Resident memory after start, after calls, and at peak after a 1 MiB response.
#[test]
fn memory_stays_small() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let mut s = Session::ready(&mut command(&sock, Some(TOKEN)));
    let (started, _) = s.rss_kib();
    for id in 2..50 {
        s.call_tool(id, "list_services", json!({}));
        s.call_tool(
            1000 + id,
            "execute",
            json!({"capability": "echo", "method": "GET", "path": "/x"}),
        );
    }
    let (after_calls, peak_small) = s.rss_kib();
    for id in 100..105 {
        let r = s.call_tool(
            id,
            "execute",
            json!({"capability": "large", "method": "GET", "path": "/big"}),
        );
        assert!(text(&r).len() > 1024 * 1024);
    }
    let (after_large, peak) = s.rss_kib();
    eprintln!(
        "vault-mcp RSS: {started} KiB after initialize, {after_calls} KiB after 96 calls (peak {peak_small} KiB), \
         {after_large} KiB after five 1 MiB responses (peak {peak} KiB)"
    );
    // Loose: a debug build; the release numbers are in the report.
    assert!(peak_small < 32 * 1024, "peak {peak_small} KiB");
    s.finish();
    daemon.stop(&rt);
}

#[test]
fn concurrent_calls_share_one_connection() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vaultd.sock");
    let counters = Counters::default();
    let daemon = start(&rt, &sock, vault_proto::PROTOCOL_VERSION, &counters);
    let mut s = Session::ready(&mut command(&sock, Some(TOKEN)));
    // All sent before any answer is read: the first ones race to dial.
    for id in 100..164 {
        s.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "execute",
            "arguments": {"capability": "echo", "method": "GET", "path": format!("/n/{id}")}}}),
        );
    }
    for id in 100..164 {
        let r = s.response(&json!(id));
        let r = &r["result"];
        assert!(!is_error(r), "{r}");
        let out: Value = serde_json::from_str(text(r)).unwrap();
        let seen: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
        assert_eq!(seen["path"], format!("/n/{id}"));
    }
    assert_eq!(counters.hellos.load(Ordering::SeqCst), 1);
    s.finish();
    daemon.stop(&rt);
}
