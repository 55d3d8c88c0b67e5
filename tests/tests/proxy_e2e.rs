//! Issue 3's core promise, end to end: Python MCP SDK -> vault-mcp -> vaultd ->
//! a local HTTPS upstream trusted through the service's `ca_file`.

use serde_json::json;
use vaultd_tests::{TlsKind, Upstream, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-e2e-7f3a91c2d4b5";

fn policy(up: &Upstream, env: &VaultEnv, auth: &str) -> String {
    format!(
        r#"
[[service]]
name = "up"
base_url = "{url}/api"
auth = {auth}
ca_file = "{ca}"
allow_private_network = true

[[agent]]
name = "a"

[[capability]]
name = "echo"
service = "up"
agents = ["a"]
allow = ["GET /echo/**", "POST /echo/**"]
"#,
        url = up.url(),
        ca = env.ca_file().display()
    )
}

#[test]
fn mcp_client_calls_through_vault_mcp_and_never_sees_the_key() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(
        &up,
        CANARY.as_bytes(),
        &policy(&up, &env, r#"{ type = "bearer", secret = "tok" }"#),
    );
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);

    let names: Vec<String> = mcp.list_tools().into_iter().map(|t| t.name).collect();
    for t in ["list_services", "execute", "vault_status"] {
        assert!(names.iter().any(|n| n == t), "tool {t} missing: {names:?}");
    }
    let st = mcp.call("vault_status", json!({})).assert_ok();
    assert_eq!(st["state"], "unlocked", "{st}");

    let r = mcp
        .execute(json!({"capability": "echo", "method": "GET", "path": "/echo/hello", "query": {"q": "1"}}))
        .assert_ok();
    assert_eq!(r["status"], 200, "{r}");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path, "/api/echo/hello");
    assert_eq!(reqs[0].query.as_deref(), Some("q=1"));
    let auth: Vec<_> = reqs[0]
        .headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .collect();
    assert_eq!(
        auth.len(),
        1,
        "credential must be sent exactly once: {:?}",
        reqs[0].headers
    );
    assert_eq!(auth[0].1, format!("Bearer {CANARY}"));
    assert!(!r.to_string().contains(CANARY), "{r}");

    // HTTP/2 by ALPN, and the pool keeps the connection for the next call.
    mcp.execute(
        json!({"capability": "echo", "method": "POST", "path": "/echo/again", "body": "x"}),
    )
    .assert_ok();
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].version, hyper::Version::HTTP_2);
    assert_eq!(
        reqs[1].connection, reqs[0].connection,
        "keep-alive: one connection for both calls"
    );

    drop(mcp);
    assert_no_canary(&env, CANARY);
}
