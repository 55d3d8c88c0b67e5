//! A raw JSON-RPC session with the built `vault-mcp` binary: one JSON object
//! per line on stdin, every stdout line checked to be a JSON-RPC message.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_vault-mcp");
const WAIT: Duration = Duration::from_secs(20);

/// The `vault-mcp` command with a clean environment: only the variables given.
pub fn command(socket: &Path, token: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VAULTD_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("VAULTD_AGENT_TOKEN", token);
    }
    cmd
}

pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stdout line so far.
    pub stdout: Vec<String>,
    /// Responses read while waiting for another id.
    pending: Vec<Value>,
}

impl Session {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd.spawn().expect("spawn vault-mcp");
        let stdin = child.stdin.take();
        let lines = pump(child.stdout.take().unwrap());
        let stderr = pump(child.stderr.take().unwrap());
        Self {
            child,
            stdin,
            lines,
            stderr,
            stdout: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Spawned and past `initialize` + `notifications/initialized`.
    pub fn ready(cmd: &mut Command) -> Self {
        let mut s = Self::spawn(cmd);
        let init = s.request(1, "initialize", initialize_params());
        assert_eq!(init["result"]["serverInfo"]["name"], "vault-mcp", "{init}");
        s.notify("notifications/initialized", json!({}));
        s
    }

    pub fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{message}").expect("write to vault-mcp");
        stdin.flush().unwrap();
    }

    pub fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to vault-mcp");
        stdin.flush().unwrap();
    }

    /// Writes `bytes` and a newline as they are (for lines that are not UTF-8).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to vault-mcp");
        stdin.write_all(b"\n").expect("write to vault-mcp");
        stdin.flush().unwrap();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns the response with its id.
    pub fn request(&mut self, id: impl Into<Value>, method: &str, params: Value) -> Value {
        let id = id.into();
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&id)
    }

    /// The response to `id`, reading lines as needed; responses to other ids are
    /// kept for later, notifications are only recorded in `stdout`.
    pub fn response(&mut self, id: &Value) -> Value {
        if let Some(i) = self.pending.iter().position(|m| m.get("id") == Some(id)) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no response to {id} within {WAIT:?}; stderr: {}",
                    self.stderr_now()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("vault-mcp closed stdout; stderr: {}", self.stderr_now())
                }
            };
            let message = check_line(&line);
            self.stdout.push(line);
            if message.get("result").is_none() && message.get("error").is_none() {
                continue;
            }
            if message.get("id") == Some(id) {
                return message;
            }
            self.pending.push(message);
        }
    }

    /// `tools/call` and the result object.
    pub fn call_tool(&mut self, id: i64, name: &str, arguments: Value) -> Value {
        let r = self.request(
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        );
        assert!(r.get("error").is_none(), "tools/call {name} failed: {r}");
        r["result"].clone()
    }

    /// Closes stdin and waits for the exit; returns the status and all of stderr.
    pub fn finish(&mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("vault-mcp did not exit after stdin closed");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for line in self.lines.try_iter() {
            check_line(&line);
            self.stdout.push(line);
        }
        (status, self.stderr_now())
    }

    /// `VmRSS` and `VmHWM` (peak) of the running process, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn stderr_now(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Every stdout line is one JSON-RPC 2.0 message, and nothing else.
pub fn check_line(line: &str) -> Value {
    let message: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
    assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC 2.0: {line}");
    let kinds = ["result", "error", "method"]
        .iter()
        .filter(|k| message.get(**k).is_some())
        .count();
    assert_eq!(kinds, 1, "not a request, notification or response: {line}");
    message
}

pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "vault-mcp-test", "version": "0"}
    })
}

/// The one text block of a tool result.
pub fn text(result: &Value) -> &str {
    let content = result["content"].as_array().expect("content array");
    assert_eq!(content.len(), 1, "one content block: {result}");
    assert_eq!(content[0]["type"], "text");
    content[0]["text"].as_str().unwrap()
}

pub fn is_error(result: &Value) -> bool {
    result["isError"] == true
}
