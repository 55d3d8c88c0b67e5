//! Issue 3: every refusal code of DESIGN.md ("MCP tools"), produced on the real
//! binaries through a real MCP client, as `CODE: message` with `isError`, and a
//! message that names what to do next. Refusals that come before the upstream
//! call leave the upstream untouched.

use std::time::{Duration, Instant};

use serde_json::json;
use vaultd_tests::{
    McpOptions, TlsKind, ToolResult, Upstream, VaultEnv, assert_absent, assert_no_canary,
};

const CANARY: &str = "CANARY-refusals-5b8e2a9c41f7";

fn policy(up: &Upstream, env: &VaultEnv) -> String {
    format!(
        r#"
[[service]]
name = "up"
base_url = "{url}/api"
auth = {{ type = "bearer", secret = "tok" }}
ca_file = "{ca}"
allow_private_network = true
timeout = "1s"

[[agent]]
name = "a"

[[agent]]
name = "b"

[[capability]]
name = "open"
service = "up"
agents = ["a"]
allow = ["GET /v1/**", "POST /v1/**"]
deny = ["* /v1/admin/**"]

[[capability]]
name = "theirs"
service = "up"
agents = ["b"]
allow = ["GET /v1/**"]

[[capability]]
name = "limited"
service = "up"
agents = ["a"]
allow = ["GET /v1/**"]
rate_limit = "2/min"

[[capability]]
name = "why"
service = "up"
agents = ["a"]
allow = ["GET /v1/**"]
requires_reason = true
"#,
        url = up.url(),
        ca = env.ca_file().display()
    )
}

fn setup(up: &Upstream, env: &VaultEnv) -> (vaultd_tests::Daemon, String) {
    let d = env.start_serving(up, CANARY.as_bytes(), &policy(up, env));
    let token = env.add_agent("a");
    (d, token)
}

/// Asserts `r` is refused with `code` and that its message contains every one of `next`.
#[track_caller]
fn refused_with(r: &ToolResult, code: &str, next: &[&str]) {
    r.assert_refused(code);
    for n in next {
        assert!(
            r.text.contains(n),
            "`{code}` refusal does not say {n:?}: {}",
            r.text
        );
    }
    assert_absent(r.text.as_bytes(), CANARY.as_bytes(), "a refusal");
    println!("{}", r.text);
}

fn get(cap: &str, path: &str) -> serde_json::Value {
    json!({"capability": cap, "method": "GET", "path": path})
}

#[test]
fn policy_and_request_refusals_name_the_next_step() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);

    // The happy path works, so each refusal below is the refusal's doing.
    mcp.execute(get("open", "/v1/echo")).assert_ok();
    assert_eq!(up.request_count(), 1);
    up.clear();

    // no_such_capability: one text for "does not exist" and "not granted to you".
    let missing = mcp.execute(get("nope00", "/v1/echo"));
    refused_with(&missing, "no_such_capability", &["list_services"]);
    let not_granted = mcp.execute(get("theirs", "/v1/echo"));
    refused_with(&not_granted, "no_such_capability", &["list_services"]);
    assert_eq!(
        missing.text.replace("nope00", "NAME"),
        not_granted.text.replace("theirs", "NAME"),
        "a capability that exists but is not granted must look like one that does not exist"
    );
    let listed = mcp.call("list_services", json!({})).text;
    assert!(!listed.contains("theirs"), "{listed}");

    // denied_by_rule: a deny rule, and no allow rule.
    refused_with(
        &mcp.execute(get("open", "/v1/admin/echo")),
        "denied_by_rule",
        &["denied by rule", "ask the user"],
    );
    refused_with(
        &mcp.execute(get("open", "/v2/echo")),
        "denied_by_rule",
        &["GET /v1/**", "Ask the user to extend the policy"],
    );
    refused_with(
        &mcp.execute(json!({"capability": "open", "method": "DELETE", "path": "/v1/echo"})),
        "denied_by_rule",
        &["policy"],
    );

    // reason_required, then the same call with a reason goes through.
    refused_with(
        &mcp.execute(get("why", "/v1/echo")),
        "reason_required",
        &["`reason`"],
    );
    refused_with(
        &mcp.execute(
            json!({"capability": "why", "method": "GET", "path": "/v1/echo", "reason": "  "}),
        ),
        "reason_required",
        &["`reason`"],
    );
    assert_eq!(up.request_count(), 0);
    mcp.execute(
        json!({"capability": "why", "method": "GET", "path": "/v1/echo",
                       "reason": "checking the echo for issue 3"}),
    )
    .assert_ok();
    assert_eq!(up.request_count(), 1);
    up.clear();

    // rate_limited: 2/min, the third call is refused with the wait time.
    mcp.execute(get("limited", "/v1/echo")).assert_ok();
    mcp.execute(get("limited", "/v1/echo")).assert_ok();
    let r = mcp.execute(get("limited", "/v1/echo"));
    refused_with(&r, "rate_limited", &["retry in", "2 calls per 1m"]);
    let wait: f64 = r
        .text
        .split("retry in ")
        .nth(1)
        .and_then(|s| s.split(" s").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wait time in {}", r.text));
    assert!(wait > 0.0 && wait <= 60.0, "wait {wait} s: {}", r.text);
    println!("rate_limited: retry in {wait} s");
    assert_eq!(up.request_count(), 2, "the refused call was not sent");
    // The agent can run `vaultctl lock` itself: the user's next unlock must
    // not refill its bucket.
    env.lock();
    env.unlock();
    refused_with(
        &mcp.execute(get("limited", "/v1/echo")),
        "rate_limited",
        &["retry in"],
    );
    assert_eq!(up.request_count(), 2, "lock and unlock refilled the bucket");
    up.clear();

    // bad_request: path, method, header, query, and a body over 10 MiB.
    refused_with(
        &mcp.execute(get("open", "/v1/../admin")),
        "bad_request",
        &["send the resolved path"],
    );
    refused_with(
        &mcp.execute(json!({"capability": "open", "method": "TRACE", "path": "/v1/echo"})),
        "bad_request",
        &["use GET, HEAD, POST"],
    );
    refused_with(
        &mcp.execute(
            json!({"capability": "open", "method": "GET", "path": "/v1/echo",
                           "headers": {"Authorization": "Bearer x"}}),
        ),
        "bad_request",
        &["remove it"],
    );
    refused_with(
        &mcp.execute(json!({"capability": "open", "method": "GET", "path": "/v1/echo?x=1"})),
        "bad_request",
        &["`query` field"],
    );
    let conns = up.connections();
    let big = "a".repeat(10 * 1024 * 1024 + 1);
    let t = Instant::now();
    refused_with(
        &mcp.execute(
            json!({"capability": "open", "method": "POST", "path": "/v1/status/201", "body": big}),
        ),
        "bad_request",
        &["10 MiB"],
    );
    println!("10 MiB + 1 body refused in {:?}", t.elapsed());
    assert_eq!(up.request_count(), 0, "{:?}", up.requests().len());
    assert_eq!(
        up.connections(),
        conns,
        "no new connection for refused calls"
    );
    // Exactly 10 MiB is accepted and arrives whole.
    let exact = "b".repeat(10 * 1024 * 1024);
    let r = mcp
        .execute(json!({"capability": "open", "method": "POST", "path": "/v1/status/201", "body": exact}))
        .assert_ok();
    assert_eq!(r["status"], 201, "{r}");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body.len(), 10 * 1024 * 1024);
    up.clear();

    // The daemon refuses an over-size body itself too (a client other than vault-mcp).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let mut c = vault_proto::client::connect(&env.socket_path(), Duration::from_secs(5))
            .await
            .expect("connect to vaultd");
        c.execute(vault_proto::v1::ExecuteRequest {
            agent_token: token.clone(),
            capability: "open".into(),
            method: "POST".into(),
            path: "/v1/echo".into(),
            body: vec![b'c'; 10 * 1024 * 1024 + 1].into(),
            ..Default::default()
        })
        .await
        .expect_err("an 10 MiB + 1 body is refused")
    });
    assert!(
        status.message().starts_with("bad_request: ") && status.message().contains("10 MiB"),
        "{status:?}"
    );
    assert_eq!(up.request_count(), 0);

    // upstream_error: no answer within the service's 1 s timeout; a reset.
    let t = Instant::now();
    let r = mcp.execute(get("open", "/v1/hang"));
    let took = t.elapsed();
    refused_with(&r, "upstream_error", &["timeout", "retry later"]);
    println!("hang with timeout 1s -> upstream_error after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    refused_with(
        &mcp.execute(get("open", "/v1/reset")),
        "upstream_error",
        &["retry later"],
    );

    // unknown_agent: a made-up token, no token at all, a removed agent.
    let bogus = env.mcp("vaultd-agent-made-up-token-0000000000000000");
    refused_with(
        &bogus.execute(get("open", "/v1/echo")),
        "unknown_agent",
        &["vaultctl agent add"],
    );
    drop(bogus);
    let none = env.mcp_with(McpOptions::default());
    refused_with(
        &none.execute(get("open", "/v1/echo")),
        "unknown_agent",
        &["vaultctl agent add"],
    );
    drop(none);
    let b_token = env.add_agent("b");
    let b = env.mcp(&b_token);
    b.execute(get("theirs", "/v1/echo")).assert_ok();
    env.ctl_pass(&["agent", "rm", "b"]).assert_ok();
    let before = up.request_count();
    refused_with(
        &b.execute(get("theirs", "/v1/echo")),
        "unknown_agent",
        &["vaultctl agent add"],
    );
    assert_eq!(up.request_count(), before);
    drop(b);

    drop(mcp);
    assert_no_canary(&env, CANARY);
}

#[test]
fn audit_unavailable_when_the_log_is_removed_or_replaced() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    mcp.execute(get("open", "/v1/echo")).assert_ok();
    let sent = up.request_count();

    let audit = env.audit_path();
    let moved = env.home().join("audit.jsonl.moved");

    // Removed (moved away): refused, nothing sent, status says why.
    std::fs::rename(&audit, &moved).unwrap();
    refused_with(
        &mcp.execute(get("open", "/v1/echo")),
        "audit_unavailable",
        &["nothing was sent", "vaultctl status"],
    );
    assert_eq!(
        up.request_count(),
        sent,
        "nothing may leave without its record"
    );
    let st = env.status_json();
    let why = st["audit_error"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("removed or replaced"), "{st}");
    assert!(
        why.contains("vaultctl lock"),
        "status names the way out: {st}"
    );
    // A change to the vault is refused too, and nothing changes: it would
    // otherwise be made with no record of it.
    let vault_before = std::fs::read(env.vault_path()).unwrap();
    let out = env
        .ctl_cmd(&["secret", "set", "zz", "--from-fd", "4"])
        .passphrase(vaultd_tests::PASSPHRASE)
        .fd(4, b"CANARY-unaudited-71c0")
        .run();
    out.assert_fail();
    assert!(
        out.stderr.contains("the change was not made")
            && out.stderr.contains("removed or replaced"),
        "{out}"
    );
    assert_eq!(std::fs::read(env.vault_path()).unwrap(), vault_before);
    assert!(!env.ctl(&["secret", "list"]).stdout.contains("zz"));

    // Replaced by another file (an agent could swap in its own log): refused too.
    std::fs::copy(&moved, &audit).unwrap();
    refused_with(
        &mcp.execute(get("open", "/v1/echo")),
        "audit_unavailable",
        &["vaultctl status"],
    );
    assert_eq!(up.request_count(), sent);
    let replaced = std::fs::read(&audit).unwrap();
    assert_eq!(
        replaced,
        std::fs::read(&moved).unwrap(),
        "nothing was appended to the stand-in"
    );
    // The stand-in holds a valid chain, but `audit verify` does not call it
    // the log while calls are refused for it.
    let out = env.ctl(&["audit", "verify"]);
    out.assert_fail();
    assert!(out.stderr.contains("removed or replaced"), "{out}");

    // The real log back in place: calls and changes go through and the
    // chain is intact.
    std::fs::rename(&moved, &audit).unwrap();
    mcp.execute(get("open", "/v1/echo")).assert_ok();
    env.set_secret("zz", b"CANARY-unaudited-71c0");
    assert_eq!(up.request_count(), sent + 1);
    let st = env.status_json();
    assert!(st["audit_error"].is_null(), "{st}");
    env.ctl(&["audit", "verify"]).assert_ok();

    drop(mcp);
    assert_no_canary(&env, CANARY);
    assert_no_canary(&env, "CANARY-unaudited-71c0");
}

#[test]
fn locked_and_unavailable_then_the_same_session_recovers() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (mut d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    mcp.execute(get("open", "/v1/echo")).assert_ok();
    let sent = up.request_count();

    // locked
    env.lock();
    refused_with(
        &mcp.execute(get("open", "/v1/echo")),
        "locked",
        &["vaultctl unlock"],
    );
    assert_eq!(up.request_count(), sent);
    // The agent can still learn why: vault_status answers, it is not refused.
    let st = mcp.call("vault_status", json!({})).assert_ok();
    assert_eq!(st["state"], "locked", "{st}");
    env.unlock();
    mcp.execute(get("open", "/v1/echo")).assert_ok();

    // unavailable: the daemon stopped; vault-mcp stays up and says how to start it.
    d.sigterm_and_wait();
    let r = mcp.execute(get("open", "/v1/echo"));
    refused_with(&r, "unavailable", &["systemctl --user start vaultd"]);
    let st = mcp.call("vault_status", json!({}));
    refused_with(&st, "unavailable", &["start"]);

    // Restarted and unlocked: the same MCP session is served again.
    let _d2 = env.start_daemon();
    refused_with(
        &mcp.execute(get("open", "/v1/echo")),
        "locked",
        &["vaultctl unlock"],
    );
    env.unlock();
    let before = up.request_count();
    mcp.execute(get("open", "/v1/echo")).assert_ok();
    assert_eq!(up.request_count(), before + 1);

    drop(mcp);
    assert_no_canary(&env, CANARY);
}

/// A service on a port the sandbox does not allow: the kernel refuses the
/// connect (EACCES), and retrying never helps, so the refusal says which
/// setting to change instead of "retry later".
#[test]
fn a_port_outside_upstream_ports_names_the_setting() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new(); // upstream_ports: the default, [443]
    let _d = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    env.apply_policy(&vaultd_tests::policy::one_service(
        &env,
        &up.url(),
        "",
        "c",
        r#"allow = ["GET /**"]"#,
    ));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    refused_with(
        &mcp.execute(get("c", "/v1/echo")),
        "upstream_error",
        &[
            &format!("port {}", up.port()),
            "upstream_ports",
            "restart vaultd",
        ],
    );
    assert_eq!(up.request_count(), 0);
    drop(mcp);
    assert_no_canary(&env, CANARY);
}
