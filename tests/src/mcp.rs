//! [`McpClient`]: a real MCP client (Python's official SDK, `mcp` 2.x) driving
//! `vault-mcp` over stdio, the way an agent's MCP host does.
//!
//! ```no_run
//! # let env = vaultd_tests::VaultEnv::new();
//! # let token = String::new();
//! use serde_json::json;
//! let mcp = env.mcp(&token);
//! let tools = mcp.list_tools();
//! let r = mcp.call("execute", json!({"capability": "c", "method": "GET", "path": "/echo"}));
//! if r.is_error { assert_eq!(r.code(), Some("denied_by_rule")); } else { let _body = r.json(); }
//! ```
//!
//! One Python process (`tests/mcp_client.py`, run by `tests/.venv/bin/python`)
//! serves a whole test: it spawns vault-mcp with the SDK's stdio transport,
//! negotiates (`server/discover`, falling back to `initialize`), then takes one
//! JSON command per line from this crate and answers one line per command.
//! Calls can be issued from several threads at once ([`McpClient`] is `Sync`):
//! they run concurrently in the same MCP session, answers matched by id.
//!
//! The venv is created on first use by `tests/setup-venv.sh` (idempotent,
//! guarded by a lock, pip reaches PyPI). The Python client's stderr goes to
//! `ROOT/logs/mcp-client-N.stderr`, vault-mcp's to `ROOT/logs/vault-mcp-N.stderr`,
//! and every answer the agent got is recorded for [`crate::assert_no_canary`].

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::env::{Transcript, VaultEnv};

/// Default time limit of one tool call (the MCP request's read timeout too).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the session may take to start (Python imports, vault-mcp start, handshake).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/` of this crate.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python, creating the venv with `tests/setup-venv.sh` on first use
/// in this process (the script itself is idempotent and locked across processes).
/// Panics with the script's output if that fails.
pub fn venv_python() -> PathBuf {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = PY.get_or_init(|| {
        let dir = tests_dir();
        let out = Command::new("bash")
            .arg(dir.join("setup-venv.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash tests/setup-venv.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tests/setup-venv.sh failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let py = dir.join(".venv/bin/python");
        if py.is_file() {
            Ok(py)
        } else {
            Err(format!("{} missing after setup-venv.sh", py.display()))
        }
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// How to start an [`McpClient`] (see [`VaultEnv::mcp_with`]).
#[derive(Clone, Debug, Default)]
pub struct McpOptions {
    /// `VAULTD_AGENT_TOKEN` for vault-mcp (unset when `None`).
    pub token: Option<String>,
    /// Adds `--token-file FILE` to vault-mcp's arguments.
    pub token_file: Option<PathBuf>,
    /// More arguments for the server.
    pub args: Vec<String>,
    /// More environment variables for the server (and the Python client).
    pub env: Vec<(String, String)>,
    /// The SDK's connect mode: `auto` (default: discover, then initialize),
    /// `legacy` (initialize only) or a protocol version string.
    pub mode: Option<String>,
    /// Run this program as the server instead of vault-mcp (harness self-tests).
    pub server: Option<PathBuf>,
}

/// What a `tools/call` returned.
#[derive(Clone, Debug)]
pub struct ToolResult {
    /// `isError`.
    pub is_error: bool,
    /// The text blocks, joined with newlines.
    pub text: String,
    /// `structuredContent`, if sent.
    pub structured: Option<Value>,
    /// Every content block as JSON.
    pub content: Value,
}

impl ToolResult {
    /// The refusal code: for an error result, the text before the first `:`.
    pub fn code(&self) -> Option<&str> {
        if !self.is_error {
            return None;
        }
        Some(
            self.text
                .split_once(':')
                .map(|(c, _)| c)
                .unwrap_or(&self.text)
                .trim(),
        )
    }

    /// The text parsed as JSON (panics if it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("tool result text is not JSON ({e}): {}", self.text))
    }

    /// Panics unless it succeeded; returns the text as JSON.
    #[track_caller]
    pub fn assert_ok(&self) -> Value {
        assert!(!self.is_error, "tool call failed: {}", self.text);
        self.json()
    }

    /// Panics unless it is an error whose text starts with `CODE:`.
    #[track_caller]
    pub fn assert_refused(&self, code: &str) -> &Self {
        assert!(
            self.is_error && self.text.starts_with(&format!("{code}:")),
            "expected refusal `{code}:`, got isError={} text={}",
            self.is_error,
            self.text
        );
        self
    }
}

/// A tool as `tools/list` described it.
#[derive(Clone, Debug)]
pub struct ToolInfo {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// `inputSchema`.
    pub input_schema: Value,
    /// `outputSchema`, if any.
    pub output_schema: Option<Value>,
    /// The whole entry.
    pub raw: Value,
}

/// A request that got no tool result.
#[derive(Clone, Debug)]
pub enum McpError {
    /// The MCP request failed (JSON-RPC error, closed connection, invalid result...).
    Request {
        /// The SDK's description.
        message: String,
        /// The JSON-RPC error code, when there was one.
        code: Option<i64>,
    },
    /// No answer within the time limit.
    Timeout(Duration),
    /// The Python client is gone.
    Exited(String),
}

impl std::fmt::Display for McpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpError::Request { message, code } => {
                write!(f, "MCP request failed (code {code:?}): {message}")
            }
            McpError::Timeout(d) => write!(f, "no MCP answer within {d:?}"),
            McpError::Exited(s) => write!(f, "the MCP client exited: {s}"),
        }
    }
}

impl std::error::Error for McpError {}

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>>;

/// A live MCP session with vault-mcp. Dropping it closes the session (vault-mcp
/// gets end of file on stdin and is stopped by the SDK).
pub struct McpClient {
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    pending: Pending,
    next_id: AtomicU64,
    ready: Value,
    client_stderr: PathBuf,
    server_stderr: PathBuf,
    exited: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("server_stderr", &self.server_stderr)
            .finish_non_exhaustive()
    }
}

fn read_file(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

impl McpClient {
    pub(crate) fn start(env: &VaultEnv, n: usize, opts: McpOptions) -> Result<McpClient, String> {
        let python = venv_python();
        let server = opts
            .server
            .clone()
            .unwrap_or_else(|| env.bins().vault_mcp.clone());
        let client_stderr = env.logs_dir().join(format!("mcp-client-{n}.stderr"));
        let server_stderr = env.logs_dir().join(format!("vault-mcp-{n}.stderr"));
        let mut server_args = opts.args.clone();
        if let Some(tf) = &opts.token_file {
            server_args.push("--token-file".into());
            server_args.push(tf.to_string_lossy().into_owned());
        }
        let mut cmd = env.command(&python);
        cmd.arg(tests_dir().join("mcp_client.py"))
            .arg("--server")
            .arg(&server)
            .arg("--server-stderr")
            .arg(&server_stderr)
            .arg("--mode")
            .arg(opts.mode.as_deref().unwrap_or("auto"))
            .arg("--")
            .args(&server_args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&client_stderr).map_err(|e| format!("create log: {e}"))?);
        if let Some(t) = &opts.token {
            cmd.env("VAULTD_AGENT_TOKEN", t);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", python.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");

        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let exited = Arc::new(Mutex::new(None));
        let (ready_tx, ready_rx) = mpsc::channel::<Value>();
        {
            let (pending, exited, transcript) = (pending.clone(), exited.clone(), env.transcript());
            std::thread::spawn(move || {
                reader_loop(stdout, pending, exited, ready_tx, transcript, n)
            });
        }
        let describe = |why: &str| {
            format!(
                "MCP session did not start: {why}\n--- mcp_client.py stderr ({}) ---\n{}\n--- {} stderr ({}) ---\n{}",
                client_stderr.display(),
                read_file(&client_stderr),
                server.display(),
                server_stderr.display(),
                read_file(&server_stderr)
            )
        };
        let ready = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(v) if v.get("ready") == Some(&Value::Bool(true)) => v,
            Ok(v) => {
                let _ = child.wait();
                return Err(describe(&format!("{}", v.get("fatal").unwrap_or(&v))));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(describe(&format!("no handshake within {START_TIMEOUT:?}")));
            }
        };
        Ok(McpClient {
            child: Mutex::new(child),
            stdin: Mutex::new(Some(stdin)),
            pending,
            next_id: AtomicU64::new(1),
            ready,
            client_stderr,
            server_stderr,
            exited,
        })
    }

    /// The handshake's outcome: `protocol_version`, `server_info`, `capabilities`, `instructions`.
    pub fn server_info(&self) -> &Value {
        &self.ready
    }

    /// Path of vault-mcp's stderr log.
    pub fn server_stderr_path(&self) -> &Path {
        &self.server_stderr
    }

    /// vault-mcp's stderr so far.
    pub fn server_stderr(&self) -> String {
        read_file(&self.server_stderr)
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- mcp_client.py stderr ---\n{}\n--- vault-mcp stderr ---\n{}",
            read_file(&self.client_stderr),
            read_file(&self.server_stderr)
        )
    }

    /// Sends one command and waits for its answer.
    fn request(&self, mut cmd: Value, timeout: Duration) -> Result<Value, McpError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        cmd["id"] = json!(id);
        let (tx, rx) = mpsc::channel();
        self.pending.lock().unwrap().insert(id, tx);
        if let Some(why) = self.exited.lock().unwrap().clone() {
            self.pending.lock().unwrap().remove(&id);
            return Err(McpError::Exited(why));
        }
        {
            let mut stdin = self.stdin.lock().unwrap();
            let Some(w) = stdin.as_mut() else {
                return Err(McpError::Exited("session closed".into()));
            };
            let mut line = serde_json::to_vec(&cmd).expect("serialize command");
            line.push(b'\n');
            if let Err(e) = w.write_all(&line).and_then(|_| w.flush()) {
                self.pending.lock().unwrap().remove(&id);
                return Err(McpError::Exited(format!("write to mcp_client.py: {e}")));
            }
        }
        // Python enforces `timeout` on the MCP request itself; allow it time to report.
        let answer = rx.recv_timeout(timeout + Duration::from_secs(5));
        self.pending.lock().unwrap().remove(&id);
        let v = match answer {
            Ok(v) => v,
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(McpError::Timeout(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let why = self.exited.lock().unwrap().clone().unwrap_or_default();
                return Err(McpError::Exited(why));
            }
        };
        if let Some(err) = v.get("error") {
            return Err(McpError::Request {
                message: err.as_str().unwrap_or_default().to_string(),
                code: v.get("code").and_then(Value::as_i64),
            });
        }
        Ok(v)
    }

    /// `tools/list`. Panics on failure.
    #[track_caller]
    pub fn list_tools(&self) -> Vec<ToolInfo> {
        let v = self
            .request(json!({"op": "list_tools"}), CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("tools/list: {e}\n{}", self.diagnostics()));
        v["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|t| ToolInfo {
                name: t["name"].as_str().unwrap_or_default().to_string(),
                description: t["description"].as_str().map(str::to_string),
                input_schema: t["inputSchema"].clone(),
                output_schema: Some(t["outputSchema"].clone()).filter(|s| !s.is_null()),
                raw: t,
            })
            .collect()
    }

    /// `tools/call` with a time limit, without panicking on protocol failures.
    pub fn try_call(
        &self,
        tool: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<ToolResult, McpError> {
        let v = self.request(
            json!({"op": "call", "tool": tool, "args": args, "timeout": timeout.as_secs_f64()}),
            timeout,
        )?;
        Ok(ToolResult {
            is_error: v["isError"].as_bool().unwrap_or(false),
            text: v["text"].as_str().unwrap_or_default().to_string(),
            structured: Some(v["structured"].clone()).filter(|s| !s.is_null()),
            content: v["content"].clone(),
        })
    }

    /// `tools/call` with a time limit; panics (with both stderr logs) if no tool result came back.
    /// A refusal is a tool result (`is_error`), not a panic.
    #[track_caller]
    pub fn call_timeout(&self, tool: &str, args: Value, timeout: Duration) -> ToolResult {
        self.try_call(tool, args, timeout)
            .unwrap_or_else(|e| panic!("tools/call {tool}: {e}\n{}", self.diagnostics()))
    }

    /// `tools/call` with [`CALL_TIMEOUT`].
    #[track_caller]
    pub fn call(&self, tool: &str, args: Value) -> ToolResult {
        self.call_timeout(tool, args, CALL_TIMEOUT)
    }

    /// `call("execute", args)`.
    #[track_caller]
    pub fn execute(&self, args: Value) -> ToolResult {
        self.call("execute", args)
    }

    /// MCP `ping`.
    pub fn ping(&self) -> Result<(), McpError> {
        self.request(json!({"op": "ping"}), CALL_TIMEOUT)
            .map(|_| ())
    }

    /// Transport-level problems the SDK saw so far, e.g. a line on vault-mcp's
    /// stdout that is not JSON-RPC. Empty for a well-behaved server.
    #[track_caller]
    pub fn protocol_errors(&self) -> Vec<String> {
        let v = self
            .request(json!({"op": "stats"}), CALL_TIMEOUT)
            .unwrap_or_else(|e| panic!("stats: {e}\n{}", self.diagnostics()));
        v["protocol_errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session: closes the client's stdin (the SDK then stops vault-mcp)
    /// and waits up to 10 s for the Python process (killed after that).
    pub fn close(&self) -> Option<ExitStatus> {
        drop(self.stdin.lock().unwrap().take());
        let mut child = self.child.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        self.close();
    }
}

fn reader_loop(
    stdout: std::process::ChildStdout,
    pending: Pending,
    exited: Arc<Mutex<Option<String>>>,
    ready_tx: mpsc::Sender<Value>,
    transcript: Transcript,
    n: usize,
) {
    let mut ready_tx = Some(ready_tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        transcript.push(format!("mcp-client #{n} answer"), line.as_bytes());
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                json!({"fatal": format!("mcp_client.py printed a non-JSON line ({e}): {line}")})
            }
        };
        if let Some(tx) = ready_tx.take() {
            let _ = tx.send(v);
            continue;
        }
        let id = v.get("id").and_then(Value::as_u64);
        if let Some(tx) = id.and_then(|id| pending.lock().unwrap().remove(&id)) {
            let _ = tx.send(v);
        }
    }
    *exited.lock().unwrap() = Some("mcp_client.py closed its stdout".into());
    // Wake every waiter: their senders are dropped.
    pending.lock().unwrap().clear();
}
