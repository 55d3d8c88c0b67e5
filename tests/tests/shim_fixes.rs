//! vault-mcp defects found by the acceptance audit (/tmp/audit-report-mcp.md),
//! each driven through the real binaries: Python MCP SDK -> vault-mcp -> vaultd
//! (-> the TLS upstream where a call goes through).
//!
//! - item 5: a wrongly typed `execute` argument is refused naming the argument,
//!   what it must be and what it got; nothing reaches the upstream;

use serde_json::{Value, json};
use vaultd_tests::{Daemon, TlsKind, Upstream, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-shimfix-5e0b7c13a9";

/// A daemon serving service `up` (the upstream), capability `echo` (GET /echo/**) for agent `a`.
fn setup(up: &Upstream, env: &VaultEnv) -> Daemon {
    env.allow_ports(&[up.port()]);
    let d = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    env.apply_policy(&vaultd_tests::policy::one_service(
        env,
        &up.url(),
        "",
        "echo",
        r#"allow = ["GET /echo/**", "POST /echo/**"]"#,
    ));
    d
}

fn echo() -> Value {
    json!({"capability": "echo", "method": "GET", "path": "/echo/x"})
}

#[test]
fn execute_type_errors_name_the_argument_and_the_expected_type() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = setup(&up, &env);
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    mcp.execute(echo()).assert_ok();
    let sent = up.request_count();

    let with = |field: &str, value: Value| {
        let mut args = echo();
        args[field] = value;
        mcp.execute(args)
    };
    // The likely LLM mistake: a JSON object as the body.
    let r = with("body", json!({"a": 1}));
    r.assert_refused("bad_request");
    assert_eq!(
        r.text,
        "bad_request: execute argument \"body\" must be a string (the request body as UTF-8 text; \
         JSON-encode an object first), got an object"
    );
    for (field, value, got) in [
        ("capability", json!(5), "a number"),
        ("method", json!(["GET"]), "an array"),
        ("path", json!(123), "a number"),
        ("reason", json!(5), "a number"),
    ] {
        let r = with(field, value);
        r.assert_refused("bad_request");
        assert!(
            r.text.starts_with(&format!(
                "bad_request: execute argument \"{field}\" must be a string ("
            )) && r.text.ends_with(&format!("got {got}")),
            "{field}: {}",
            r.text
        );
    }
    for field in ["query", "headers"] {
        let r = with(field, json!({"Accept": 5}));
        r.assert_refused("bad_request");
        assert!(
            r.text
                .contains(&format!("argument \"{field}\" must map names to strings"))
                && r.text.contains("\"Accept\" is a number")
                && r.text.contains("as strings, e.g. \"5\""),
            "{field}: {}",
            r.text
        );
        let r = with(field, json!(["a=1"]));
        r.assert_refused("bad_request");
        assert!(
            r.text.contains(&format!(
                "argument \"{field}\" must be an object mapping names to string values"
            )) && r.text.ends_with("got an array"),
            "{field}: {}",
            r.text
        );
    }
    let r = mcp.execute(json!({"capability": "echo", "method": "GET"}));
    r.assert_refused("bad_request");
    assert!(
        r.text.contains("argument \"path\" is required"),
        "{}",
        r.text
    );
    assert_eq!(
        up.request_count(),
        sent,
        "a refused call reached the upstream"
    );

    // The corrected call goes through.
    let mut fixed = echo();
    fixed["method"] = json!("POST");
    fixed["body"] = json!("{\"a\":1}");
    fixed["headers"] = json!({"Content-Type": "application/json"});
    fixed["query"] = json!({"page": "5"});
    assert_eq!(mcp.execute(fixed).assert_ok()["status"], 200);
    assert_eq!(up.request_count(), sent + 1);

    drop(mcp);
    assert_no_canary(&env, CANARY);
}
