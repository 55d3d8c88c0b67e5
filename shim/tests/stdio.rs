//! The built binary over raw JSON-RPC lines, with no daemon behind it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Session, command, initialize_params, is_error, text};
use serde_json::{Value, json};

const TOKEN: &str = "vt_test_token_4f3a9c";

fn no_daemon() -> (tempfile::TempDir, Command) {
    let dir = tempfile::tempdir().unwrap();
    let cmd = command(&dir.path().join("missing").join("vaultd.sock"), Some(TOKEN));
    (dir, cmd)
}

#[test]
fn mcp_session_without_a_daemon() {
    let (dir, mut cmd) = no_daemon();
    let mut s = Session::spawn(&mut cmd);

    // A stray notification before `initialize` is ignored, not fatal.
    s.notify(
        "notifications/cancelled",
        json!({"requestId": 0, "reason": "probe abandoned"}),
    );

    // The Python SDK 2.x probes this before `initialize`, with the full 2026 `_meta`.
    let discover = s.request(
        0,
        "server/discover",
        json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "probe", "version": "2"},
            "io.modelcontextprotocol/clientCapabilities": {}
        }}),
    );
    assert!(
        discover["error"]["code"].is_i64(),
        "server/discover must be an error: {discover}"
    );
    assert!(discover.get("result").is_none());
    // Bare, and with an unknown method name: errors too, never silence.
    let bare = s.request("d", "server/discover", json!({}));
    assert!(bare["error"]["code"].is_i64(), "{bare}");
    let unknown = s.request("u", "vault/whatever", json!({}));
    assert!(unknown["error"]["code"].is_i64(), "{unknown}");

    let init = s.request(1, "initialize", initialize_params());
    let result = &init["result"];
    assert_eq!(result["serverInfo"]["name"], "vault-mcp");
    assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert!(result["capabilities"]["tools"].is_object());
    let instructions = result["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("list_services")
            && instructions.contains("Never ask the user for an API key")
    );
    s.notify("notifications/initialized", json!({}));

    // After initialize, an unknown method is "method not found".
    let unknown = s.request("u2", "vault/whatever", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let discover = s.request("d2", "server/discover", json!({}));
    assert!(discover["error"]["code"].is_i64(), "{discover}");

    let tools = s.request(2, "tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["list_services", "execute", "vault_status"]);
    for tool in tools {
        assert!(tool["description"].as_str().unwrap().len() > 80, "{tool}");
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    let execute = &tools[1]["inputSchema"];
    assert_eq!(execute["required"], json!(["capability", "method", "path"]));
    for (arg, ty) in [
        ("query", "object"),
        ("headers", "object"),
        ("body", "string"),
        ("reason", "string"),
    ] {
        assert_eq!(execute["properties"][arg]["type"], ty, "{arg}");
    }
    assert_eq!(tools[0]["inputSchema"]["properties"], json!({}));
    assert_eq!(
        tools[0]["outputSchema"]["required"],
        json!(["agent", "capabilities"])
    );
    assert_eq!(
        tools[2]["outputSchema"]["required"],
        json!(["state", "agent"])
    );

    let r = s.call_tool(
        3,
        "execute",
        json!({"capability": "github", "method": "GET", "path": "/user"}),
    );
    assert!(is_error(&r), "{r}");
    let t = text(&r);
    assert!(t.starts_with("unavailable:"), "{t}");
    assert!(t.contains("systemctl --user start vaultd"), "{t}");
    assert!(
        t.contains(
            &dir.path()
                .join("missing")
                .join("vaultd.sock")
                .display()
                .to_string()
        ),
        "{t}"
    );
    assert!(r.get("structuredContent").is_none());

    for (id, tool) in [(4, "list_services"), (5, "vault_status")] {
        let r = s.call_tool(id, tool, json!({}));
        assert!(
            is_error(&r) && text(&r).starts_with("unavailable: vaultd is not running"),
            "{r}"
        );
    }

    // Bad arguments are a tool error the model can read, not a protocol error.
    let r = s.call_tool(
        6,
        "execute",
        json!({"capability": "github", "method": "GET"}),
    );
    assert!(is_error(&r));
    assert!(
        text(&r).starts_with("bad_request: execute argument \"path\" is required: a string"),
        "{r}"
    );
    // An unknown tool is a protocol error.
    let r = s.request(
        7,
        "tools/call",
        json!({"name": "reveal_secret", "arguments": {}}),
    );
    assert!(r["error"]["code"].is_i64(), "{r}");

    // Syntactically broken input is answered -32700 with id null, and the session goes on.
    s.send_raw("{not json");
    let parse_error = s.response(&Value::Null);
    assert_eq!(parse_error["error"]["code"], -32700, "{parse_error}");
    let ping = s.request(8, "ping", json!({}));
    assert_eq!(ping["result"], json!({}));

    let (status, stderr) = s.finish();
    assert!(status.success(), "exit {status}; stderr: {stderr}");
    // stdout held the 14 responses and nothing else (check_line validated each one).
    assert_eq!(s.stdout.len(), 14, "{:#?}", s.stdout);
    assert!(
        !stderr.contains(TOKEN) && s.stdout.iter().all(|l| !l.contains(TOKEN)),
        "the token must never be printed"
    );
}

/// Sends `line` and returns the error response with `id` (`null` when the line
/// has no readable id), checking its code and that its message holds `says`.
fn answered(s: &mut Session, line: &[u8], id: Value, code: i64, says: &str) -> String {
    s.send_bytes(line);
    let r = s.response(&id);
    assert_eq!(
        r["error"]["code"],
        code,
        "{r} for {}",
        String::from_utf8_lossy(line)
    );
    assert!(r.get("result").is_none(), "{r}");
    let message = r["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(says), "{message:?} should say {says:?}");
    message
}

/// Every request line vault-mcp cannot take is answered once, with the request's
/// id when it can be read, and the session goes on (rmcp alone drops such lines
/// and leaves the client waiting for ever).
#[test]
fn every_unreadable_request_line_is_answered_with_its_id() {
    let (_dir, mut cmd) = no_daemon();
    let mut s = Session::spawn(&mut cmd);
    // Before `initialize` too; then `initialize` still works.
    answered(
        &mut s,
        b"{garbage",
        Value::Null,
        -32700,
        "Parse error: the line is not valid JSON",
    );
    let init = s.request(1, "initialize", initialize_params());
    assert_eq!(init["result"]["serverInfo"]["name"], "vault-mcp", "{init}");
    s.notify("notifications/initialized", json!({}));

    answered(&mut s, b"not json", Value::Null, -32700, "not valid JSON");
    // A lone surrogate in a tool argument: the id is readable, the params are not.
    let call = |id: &str, arguments: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"execute","arguments":{arguments}}}}}"#
        )
    };
    let line = call(
        "7",
        r#"{"capability":"x","method":"POST","path":"/","body":"a\ud800b"}"#,
    );
    let column = line.find("\\ud800").unwrap() + 1;
    let message = answered(&mut s, line.as_bytes(), json!(7), -32602, "Invalid params");
    assert!(
        message.contains(&format!("lone surrogate \\ud800 at line 1 column {column}"))
            && message.contains("send strings as valid Unicode"),
        "{message}"
    );
    let line = call(
        r#""p8""#,
        r#"{"capability":"x","method":"GET","path":"/a\uDC00"}"#,
    );
    answered(
        &mut s,
        line.as_bytes(),
        json!("p8"),
        -32602,
        "lone surrogate \\uDC00",
    );
    // A lone surrogate outside params (in the method name): a parse error, with the id.
    answered(
        &mut s,
        br#"{"jsonrpc":"2.0","id":9,"method":"ping\ud800"}"#,
        json!(9),
        -32700,
        "lone surrogate \\ud800",
    );
    // Bytes that are not UTF-8.
    let mut line = call(
        "10",
        r#"{"capability":"x","method":"POST","path":"/","body":"#,
    )
    .into_bytes();
    line.truncate(line.len() - 3);
    line.extend_from_slice(b"\"\xff\xfe\"}}}");
    answered(
        &mut s,
        &line,
        json!(10),
        -32700,
        "not UTF-8 text: byte 0xff at offset",
    );
    answered(&mut s, b"\xff\xfe", Value::Null, -32700, "not UTF-8");
    // A line cut short still has a readable id.
    answered(
        &mut s,
        br#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"#,
        json!(11),
        -32700,
        "EOF while parsing",
    );
    // JSON that is not a JSON-RPC 2.0 request: -32600, "id" present.
    answered(
        &mut s,
        br#"[{"jsonrpc":"2.0","id":12,"method":"ping"}]"#,
        Value::Null,
        -32600,
        "batch",
    );
    answered(
        &mut s,
        br#"{"jsonrpc":"1.0","id":13,"method":"ping"}"#,
        json!(13),
        -32600,
        "\"jsonrpc\" must be \"2.0\"",
    );
    answered(
        &mut s,
        br#"{"id":14,"method":"ping"}"#,
        json!(14),
        -32600,
        "\"jsonrpc\" must be \"2.0\"",
    );
    answered(
        &mut s,
        br#""a string""#,
        Value::Null,
        -32600,
        "must be a JSON object",
    );
    // An array whose strings look like member names is not a notification.
    answered(&mut s, br#"["method"]"#, Value::Null, -32600, "batch");
    // A tools/call whose params do not fit is invalid params, not "method not found".
    for (id, arguments, says) in [
        (15, "[1]", "\"arguments\" must be an object"),
        (16, r#""x""#, "\"arguments\" must be an object"),
    ] {
        let line = call(&id.to_string(), arguments);
        answered(&mut s, line.as_bytes(), json!(id), -32602, says);
    }
    answered(
        &mut s,
        br#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"arguments":{}}}"#,
        json!(17),
        -32602,
        "\"name\" is required",
    );
    // An unknown method is "method not found", naming what is served.
    let r = s.request(20, "vault/whatever", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    assert_eq!(
        r["error"]["message"],
        "Method not found: \"vault/whatever\" (vault-mcp serves initialize, ping, tools/list and \
         tools/call)"
    );
    // A notification is never answered, readable or not; the next request is.
    s.send_raw(
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"reason":"a\ud800"}}"#,
    );
    s.send_raw(r#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#);
    // Blank lines are skipped.
    s.send_raw("");
    s.send_raw("  \r");
    let ping = s.request(18, "ping", json!({}));
    assert_eq!(ping["result"], json!({}), "{ping}");
    // Tool calls still work on the same session.
    let r = s.call_tool(19, "vault_status", json!({}));
    assert!(text(&r).starts_with("unavailable: "), "{r}");

    let (status, stderr) = s.finish();
    assert!(status.success(), "exit {status}; stderr: {stderr}");
    // One line per answered request, nothing else (check_line validated each):
    // 17 errors, initialize, ping, tools/call.
    assert_eq!(s.stdout.len(), 20, "{:#?}", s.stdout);
    assert!(
        stderr.contains("answered a request line with error -32602 (id 7)")
            && stderr.contains("ignoring a notification"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN) && s.stdout.iter().all(|l| !l.contains(TOKEN)));
}

/// A line over the 16 MiB limit is skipped as it arrives, answered with an error
/// naming the limit and carrying the request's id, and the session goes on.
#[test]
fn a_line_over_the_limit_is_answered_and_the_session_goes_on() {
    let (_dir, mut cmd) = no_daemon();
    let mut s = Session::ready(&mut cmd);
    let body = "a".repeat(17 << 20);
    let line = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "execute",
        "arguments": {"capability": "x", "method": "POST", "path": "/", "body": body}}})
    .to_string();
    let message = answered(
        &mut s,
        line.as_bytes(),
        json!(2),
        -32600,
        "16777216 bytes (16 MiB)",
    );
    assert!(
        message.contains(&format!("the message is {} bytes", line.len()))
            && message.contains("send a smaller request"),
        "{message}"
    );
    // The id last, after the huge params: still found.
    let line = format!(
        r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"execute","arguments":{{"body":"{body}"}}}},"id":"last"}}"#
    );
    answered(
        &mut s,
        line.as_bytes(),
        json!("last"),
        -32600,
        "over vault-mcp's limit",
    );
    let ping = s.request(3, "ping", json!({}));
    assert_eq!(ping["result"], json!({}), "{ping}");
    // The skipped lines were not held in memory.
    let (_, peak_kib) = s.rss_kib();
    eprintln!("vault-mcp peak RSS after two 17 MiB lines: {peak_kib} KiB");
    // (Holding a 17 MiB line whole would peak over 40 MiB.)
    assert!(peak_kib < 40 << 10, "peak RSS {peak_kib} KiB");
    let (status, _) = s.finish();
    assert!(status.success());
    assert_eq!(
        s.stdout.len(),
        4,
        "{:#?}",
        s.stdout
            .iter()
            .map(|l| &l[..l.len().min(200)])
            .collect::<Vec<_>>()
    );
}

#[test]
fn stdout_is_only_the_responses() {
    let (_dir, mut cmd) = no_daemon();
    let mut s = Session::ready(&mut cmd);
    s.call_tool(
        2,
        "execute",
        json!({"capability": "x", "method": "GET", "path": "/"}),
    );
    s.request(3, "tools/list", json!({}));
    let (status, _) = s.finish();
    assert!(status.success());
    // initialize, tools/call, tools/list: exactly three lines, all JSON-RPC responses.
    let ids: Vec<Value> = s
        .stdout
        .iter()
        .map(|l| common::check_line(l)["id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!(2), json!(3)], "{:?}", s.stdout);
    assert!(s.stdout.iter().all(|l| !l.contains(TOKEN)));
}

#[test]
fn without_a_token_the_tools_are_unknown_agent_and_vault_status_asks_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&dir.path().join("vaultd.sock"), None);
    let mut s = Session::ready(&mut cmd);
    for (id, tool, args) in [
        (2, "list_services", json!({})),
        (
            4,
            "execute",
            json!({"capability": "x", "method": "GET", "path": "/"}),
        ),
    ] {
        let r = s.call_tool(id, tool, args);
        assert!(is_error(&r));
        assert!(
            text(&r).starts_with("unknown_agent: no agent token: ")
                && text(&r).ends_with("then restart the MCP client"),
            "{r}"
        );
    }
    // vault_status reports the vault's state with no token too; here no daemon runs.
    let r = s.call_tool(3, "vault_status", json!({}));
    assert!(
        text(&r).starts_with("unavailable: vaultd is not running"),
        "{r}"
    );
    let (status, stderr) = s.finish();
    assert!(status.success());
    assert!(stderr.contains("no agent token"), "{stderr}");
}

#[test]
fn token_file_is_used_and_never_echoed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = command(&dir.path().join("vaultd.sock"), None);
    cmd.arg("--token-file").arg(&file);
    let mut s = Session::ready(&mut cmd);
    let r = s.call_tool(2, "vault_status", json!({}));
    // The token was accepted: the refusal is about the daemon, not the agent.
    assert!(text(&r).starts_with("unavailable: "), "{r}");
    let (status, stderr) = s.finish();
    assert!(status.success());
    assert!(
        stderr.contains("accessible by other users (mode 644)"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN) && s.stdout.iter().all(|l| !l.contains(TOKEN)));
}

#[test]
fn a_token_on_the_command_line_is_refused() {
    let out = Command::new(common::BIN)
        .args(["--token", TOKEN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--token is not accepted"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

#[test]
fn version_and_help() {
    let out = Command::new(common::BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("vault-mcp {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(common::BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--token-file") && help.contains("--socket") && !help.contains("--token <"),
        "{help}"
    );
}

/// Spawn to `initialize` answered, 20 times; the median is printed.
#[test]
fn starts_in_milliseconds() {
    let (_dir, mut cmd) = no_daemon();
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let start = Instant::now();
            let mut s = Session::spawn(&mut cmd);
            let init = s.request(1, "initialize", initialize_params());
            let took = start.elapsed();
            assert_eq!(init["result"]["serverInfo"]["name"], "vault-mcp");
            s.finish();
            took
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "vault-mcp spawn -> initialize answered over {} runs: median {:.2} ms, min {:.2} ms, max {:.2} ms",
        times.len(),
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    // Generous: a debug build on a loaded 2-core CI machine.
    assert!(
        median < Duration::from_millis(500),
        "median start {median:?}"
    );
}
