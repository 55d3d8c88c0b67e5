//! vault-mcp on arbitrary stdin, in process: the input bytes are what an MCP
//! client writes to the shim's stdin. Each input runs one whole session of
//! the real server (`vault_mcp::server::VaultMcp` behind the real
//! `vault_mcp::stdio::PreInitTolerant` over `LineTransport`, exactly what `main` serves)
//! over an in-memory pipe instead of the process's stdin/stdout, on a fresh
//! current-thread runtime like `main`'s, with no daemon behind it (the
//! socket path does not exist, so every tool call is answered `unavailable`).
//!
//! Invariants: no panic; the session ends when the input ends (no hang);
//! every line written to "stdout" is one JSON-RPC 2.0 message (a response
//! with exactly one of result/error and an `id` member, `null` for a line whose
//! id cannot be read, or a notification/request with a method); the agent
//! token never appears on stdout. Each input line is
//! also decoded as `rmcp::model::ClientJsonRpcMessage` and, when it is a
//! `tools/call` of `execute`, its arguments as `server::ExecuteArgs`, the
//! shim's own decoding (neither may panic).

#![no_main]

use std::path::PathBuf;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vault_mcp::daemon::Daemon;
use vault_mcp::server::{ExecuteArgs, Token, VaultMcp};
use vault_mcp::stdio::{LineTransport, PreInitTolerant};

/// Long enough to be redacted if a message ever echoed it.
const TOKEN: &str = "vt_fuzz_agent_token_5b7d1e9c";
const SOCKET: &str = "/nonexistent-vaultd-fuzz/vaultd.sock";
/// A session whose input has ended must end well within this.
const SESSION_LIMIT: Duration = Duration::from_secs(20);

fn decode_lines(data: &[u8]) {
    for line in data.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(line) else {
            continue;
        };
        if let JsonRpcMessage::Request(req) = &message
            && let ClientRequest::CallToolRequest(call) = &req.request
            && call.params.name == "execute"
        {
            let arguments = call.params.arguments.clone().unwrap_or_default();
            let _ = serde_json::from_value::<ExecuteArgs>(Value::Object(arguments));
        }
    }
}

async fn session(input: Vec<u8>) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (server_read, server_write) = tokio::io::split(server);
    let transport = PreInitTolerant::new(LineTransport::new(server_read, server_write));
    let mcp = VaultMcp::new(
        Daemon::new(Ok(PathBuf::from(SOCKET))),
        Ok(Token::new(TOKEN.to_owned())),
    );
    let server_task = tokio::spawn(async move {
        if let Ok(running) = mcp.serve(transport).await {
            let _ = running.waiting().await;
        }
    });
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let write = async move {
        // The server may stop reading (a fatal message before `initialize`): a
        // broken pipe is then the expected outcome, as for the real process.
        let _ = client_write.write_all(&input).await;
        let _ = client_write.shutdown().await;
    };
    let read = async move {
        let mut out = Vec::new();
        client_read
            .read_to_end(&mut out)
            .await
            .expect("read from the in-memory pipe");
        out
    };
    let ((), out) = tokio::time::timeout(SESSION_LIMIT, async { tokio::join!(write, read) })
        .await
        .expect("the session did not end after its input ended");
    server_task.await.expect("server task");
    out
}

fn check_output(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with(b"\n"), "stdout ends with a partial line");
    let text = std::str::from_utf8(out).expect("stdout is UTF-8");
    assert!(!text.contains(TOKEN), "the agent token reached stdout");
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("stdout line is not a JSON object: {line}"));
        assert_eq!(
            obj.get("jsonrpc"),
            Some(&Value::String("2.0".into())),
            "not JSON-RPC 2.0: {line}"
        );
        if obj.contains_key("method") {
            assert!(obj["method"].is_string(), "method is not a string: {line}");
        } else {
            assert!(
                obj.contains_key("result") != obj.contains_key("error"),
                "a response needs exactly one of result/error: {line}"
            );
            // Every response names its request: a line whose id cannot be read
            // is answered with `"id": null`, as JSON-RPC 2.0 says.
            assert!(
                obj.contains_key("id"),
                "a response without an id member: {line}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode_lines(data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = runtime.block_on(session(data.to_vec()));
    runtime.shutdown_timeout(Duration::from_millis(500));
    check_output(&out);
});
