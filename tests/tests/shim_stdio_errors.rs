//! vault-mcp's answers to lines it cannot take, through the real binaries
//! (raw JSON-RPC lines -> vault-mcp -> vaultd -> the TLS upstream): audit items
//! /tmp/audit-report-proxy.md 5 and /tmp/audit-report-mcp.md 6. A request line
//! with a lone surrogate escape, bytes that are not UTF-8, or text that is not
//! JSON used to get no answer at all (rmcp drops such lines), so the MCP client
//! waited for ever. Now each is answered with a JSON-RPC error carrying the
//! request's id (`null` when it cannot be read), nothing reaches vaultd or the
//! upstream for it, and the next call on the same session goes through.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};
use vaultd_tests::{TlsKind, Upstream, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-stdioerr-7c2e9a41d0";
const WAIT: Duration = Duration::from_secs(10);

struct Lines {
    stdin: ChildStdin,
    stdout: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn send(&mut self, line: &[u8]) {
        self.stdin.write_all(line).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next stdout line, which must be a JSON-RPC 2.0 response.
    fn next(&mut self) -> Value {
        let line = self
            .stdout
            .recv_timeout(WAIT)
            .expect("vault-mcp answered within 10 s");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
        assert!(v.get("id").is_some(), "a response has an id member: {line}");
        assert!(
            v.get("result").is_some() != v.get("error").is_some(),
            "{line}"
        );
        self.seen.push(line);
        v
    }

    /// Sends `line` and checks the error that answers it.
    fn refused(&mut self, line: &[u8], id: Value, code: i64, says: &str) {
        self.send(line);
        let r = self.next();
        assert_eq!(r["id"], id, "{r}");
        assert_eq!(r["error"]["code"], code, "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
}

fn execute(id: u32, body_json: &[u8]) -> Vec<u8> {
    let mut line = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"execute","arguments":{{"capability":"echo","method":"POST","path":"/echo/x","reason":"test","body":"#
    )
    .into_bytes();
    line.extend_from_slice(body_json);
    line.extend_from_slice(b"}}}");
    line
}

#[test]
fn unreadable_request_lines_are_answered_and_nothing_is_sent() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _daemon = env.start_serving(
        &up,
        CANARY.as_bytes(),
        &vaultd_tests::policy::one_service(
            &env,
            &up.url(),
            "",
            "echo",
            r#"allow = ["POST /echo/**"]"#,
        ),
    );
    let token = env.add_agent("a");

    let mut child = env
        .command(&env.bins().vault_mcp)
        .env("VAULTD_AGENT_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vault-mcp");
    let (tx, stdout) = channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut s = Lines {
        stdin: child.stdin.take().unwrap(),
        stdout,
        seen: Vec::new(),
    };

    s.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(s.next()["result"]["serverInfo"]["name"], "vault-mcp");
    s.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    s.refused(
        &execute(2, br#""a\ud800b""#),
        json!(2),
        -32602,
        "lone surrogate \\ud800",
    );
    s.refused(
        &execute(3, b"\"\xff\xfe\""),
        json!(3),
        -32700,
        "not UTF-8 text",
    );
    s.refused(b"{garbage", Value::Null, -32700, "not valid JSON");
    s.refused(
        br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"execute","arguments":["echo"]}}"#,
        json!(4),
        -32602,
        "\"arguments\" must be an object",
    );
    assert_eq!(up.request_count(), 0, "nothing is sent for a refused line");

    // The same session still calls through.
    s.send(&execute(5, br#""{\"ok\":true}""#));
    let r = s.next();
    assert_eq!(r["id"], 5, "{r}");
    let result = &r["result"];
    assert_eq!(result["isError"], false, "{r}");
    let text = result["content"][0]["text"].as_str().unwrap();
    let answer: Value = serde_json::from_str(text).unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    let sent = up.requests();
    assert_eq!(sent.len(), 1, "only the good call reached the upstream");
    assert_eq!(sent[0].path, "/api/echo/x");

    drop(s.stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error -32602 (id 2)") && stderr.contains("error -32700 (id null)"),
        "{stderr}"
    );
    let stdout = s.seen.join("\n");
    env.record_output("vault-mcp stdout", stdout.as_bytes());
    env.record_output("vault-mcp stderr", &output.stderr);
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    assert_no_canary(&env, CANARY);
}
