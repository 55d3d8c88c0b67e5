//! Issue 2's acceptance tests: the foundation (vaultd, the sealed vault,
//! vaultctl), each run on the real binaries through the harness.
//!
//! - [`readme_first_use_on_a_fresh_home`]: the README's "First use", step by step.
//! - [`canary_never_leaves_the_vault`]: a secret set through vaultctl is in no
//!   file, output or log (daemon at `log = "trace"`).
//! - [`other_uid_is_refused_by_the_peer_check`]: a client running as `nobody`
//!   reaches the socket and is refused by SO_PEERCRED (root only).
//! - [`changes_without_the_passphrase_are_refused`]: an open socket alone
//!   changes nothing, through vaultctl and through raw gRPC.
//! - [`one_flipped_byte_is_reported_as_tampering`]: any flipped byte fails
//!   unlock as tampering and the file is never rewritten.
//! - [`lock_ends_a_stopped_daemon`]: `vaultctl lock` ends a SIGSTOPped daemon.
//! - `bad_input_*`: each mistake gives one line on stderr saying what to do.
//!
//! The kill -9 test lives in `foundation_crash.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vault_proto::v1::*;
use vaultd_tests::{CmdOutput, PASSPHRASE, VaultEnv, assert_absent, assert_no_canary};

// ---------------------------------------------------------------------------
// Helpers.

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The one line vaultctl printed on stderr (panics unless there is exactly one).
#[track_caller]
fn one_line(out: &CmdOutput) -> String {
    let lines: Vec<&str> = out
        .stderr
        .trim()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr:\n{out}"
    );
    lines[0].to_string()
}

/// Asserts a failure exit with exactly one stderr line containing every `needle`.
#[track_caller]
fn fails_with(out: &CmdOutput, needles: &[&str]) -> String {
    out.assert_fail();
    let line = one_line(out);
    for n in needles {
        assert!(line.contains(n), "stderr does not mention {n:?}:\n{out}");
    }
    line
}

/// A current-thread runtime for raw gRPC calls from the test.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn grpc(env: &VaultEnv) -> vault_proto::client::Client {
    vault_proto::client::connect(&env.socket_path(), Duration::from_secs(10))
        .await
        .expect("connect to vaultd")
}

fn secret_names(env: &VaultEnv) -> Vec<String> {
    env.ctl(&["secret", "list"])
        .assert_ok()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

/// The README's example policy, verbatim.
const README_POLICY: &str = r#"[[service]]
name = "github"
base_url = "https://api.github.com"
auth = { type = "bearer", secret = "github-token" }

[[agent]]
name = "claude-code"

[[capability]]
name = "github-issues-read"
service = "github"
agents = ["claude-code"]
allow = ["GET /repos/*/*/issues", "GET /repos/*/*/issues/**"]
rate_limit = "60/min"
"#;

// ---------------------------------------------------------------------------
// 1. The README's first use.

#[test]
fn readme_first_use_on_a_fresh_home() {
    const TOKEN: &str = "ghp_CANARYreadme0123456789abcdefABCDEF";
    let env = VaultEnv::new();

    // vaultctl init (the small KDF keeps the test fast; same code path).
    let out = env.ctl_pass(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    out.assert_ok();
    assert!(
        out.stdout.contains(&env.vault_path().display().to_string()),
        "{out}"
    );
    assert!(
        out.stderr.contains("vaultctl unlock"),
        "init names the next step:\n{out}"
    );
    let mode = std::fs::metadata(env.vault_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "vault.bin mode {mode:o}");

    // Before vaultd runs: status says so and fails.
    let st = env.ctl(&["status", "--json"]);
    st.assert_fail();
    assert_eq!(st.json()["state"], "unavailable", "{st}");

    // vaultd (foreground, starts locked).
    let mut daemon = env.start_daemon();
    assert_eq!(env.status_json()["state"], "locked");

    // vaultctl unlock
    let out = env.ctl_pass(&["unlock"]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "unlocked", "{out}");

    // printf '%s' "$GITHUB_TOKEN" | vaultctl secret set github-token --from-stdin
    let out = env
        .ctl_cmd(&["secret", "set", "github-token", "--from-stdin"])
        .passphrase(PASSPHRASE)
        .stdin(TOKEN.as_bytes())
        .run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "stored secret github-token", "{out}");

    // vaultctl policy apply policy.toml
    let policy = env.write_input("policy.toml", README_POLICY.as_bytes());
    let out = env.ctl_pass(&["policy", "apply", &policy.to_string_lossy()]);
    out.assert_ok();
    assert!(
        out.stdout.contains("1 service(s), 1 capability(ies)"),
        "{out}"
    );
    assert!(
        out.stderr.contains("vaultctl agent add claude-code"),
        "apply names the next step for the new agent:\n{out}"
    );

    // vaultctl agent add claude-code --token-file ~/.config/vaultd/agents/claude-code.token
    let token_file = env
        .root()
        .join("home/.config/vaultd/agents/claude-code.token");
    let out = env.ctl_pass(&[
        "agent",
        "add",
        "claude-code",
        "--token-file",
        &token_file.to_string_lossy(),
    ]);
    out.assert_ok();
    let token = std::fs::read_to_string(&token_file).expect("token file written");
    let token = token.trim_end();
    assert!(token.starts_with("vtk_") && token.len() > 40, "{token:?}");
    assert!(
        !out.stdout.contains(token) && !out.stderr.contains(token),
        "with --token-file the token is not printed:\n{out}"
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");

    // vaultctl mcp-config --agent claude-code --client claude-code
    let out = env.ctl(&[
        "mcp-config",
        "--agent",
        "claude-code",
        "--client",
        "claude-code",
    ]);
    out.assert_ok();
    let cfg = out.json();
    let server = &cfg["mcpServers"]["vault-claude-code"];
    assert_eq!(server["type"], "stdio", "{out}");
    assert!(
        server["command"]
            .as_str()
            .unwrap_or("")
            .ends_with("vault-mcp"),
        "{out}"
    );
    assert_eq!(
        server["env"]["VAULTD_SOCKET"],
        env.socket_path().display().to_string(),
        "{out}"
    );
    // The entry's token file: with VAULTD_HOME set it is VAULTD_HOME/agents/NAME.token,
    // not the README's ~/.config path; then vaultctl says how to create it.
    let entry_file = PathBuf::from(server["args"][1].as_str().unwrap_or_default());
    if entry_file != token_file {
        assert!(
            out.stderr.contains("does not exist yet")
                && out
                    .stderr
                    .contains("vaultctl agent add claude-code --token-file"),
            "mcp-config points at a missing token file without saying so:\n{out}"
        );
        eprintln!(
            "note: the README's token path {} differs from mcp-config's default {} under VAULTD_HOME",
            token_file.display(),
            entry_file.display()
        );
    }
    // With the README's path given explicitly, the entry uses it.
    let out = env.ctl(&[
        "mcp-config",
        "--agent",
        "claude-code",
        "--client",
        "claude-code",
        "--token-file",
        &token_file.to_string_lossy(),
    ]);
    out.assert_ok();
    assert_eq!(
        out.json()["mcpServers"]["vault-claude-code"]["args"][1],
        token_file.display().to_string()
    );

    // vaultctl status
    let out = env.ctl(&["status"]);
    out.assert_ok();
    assert!(out.stdout.contains(": unlocked"), "{out}");
    let st = env.status_json();
    assert_eq!(st["state"], "unlocked", "{st}");
    assert_eq!(st["secrets"], 1, "{st}");
    assert_eq!(st["services"], 1, "{st}");
    assert_eq!(st["capabilities"], 1, "{st}");
    assert_eq!(st["agents"], 1, "{st}");
    assert_eq!(st["pid"], daemon.pid(), "{st}");

    // vaultctl lock
    let out = env.ctl(&["lock"]);
    out.assert_ok();
    assert!(out.stdout.starts_with("locked"), "{out}");
    let st = env.status_json();
    assert_eq!(st["state"], "locked", "{st}");
    // Sealed contents: the counts are unknown, not zero.
    assert!(st["secrets"].is_null() && st["agents"].is_null(), "{st}");
    let out = env.ctl(&["secret", "list"]);
    fails_with(&out, &["locked", "vaultctl unlock"]);

    // Everything survives a daemon restart (SIGTERM exits 0).
    let st = daemon.sigterm_and_wait();
    assert_eq!(
        st.code(),
        Some(0),
        "vaultd exits 0 on SIGTERM:\n{}",
        daemon.stderr()
    );
    let _daemon = env.start_daemon();
    env.unlock();
    assert_eq!(secret_names(&env), ["github-token"]);
    let shown = env.ctl(&["policy", "show"]).assert_ok().stdout.clone();
    assert!(
        shown.contains("github-issues-read") && shown.contains("claude-code"),
        "{shown}"
    );
    let agents = env.ctl(&["agent", "list"]).assert_ok().stdout.clone();
    assert!(
        agents.starts_with("claude-code\tgithub-issues-read"),
        "{agents}"
    );

    assert_absent(&read(&env.vault_path()), TOKEN.as_bytes(), "vault.bin");
    assert_no_canary(&env, TOKEN);
}

// ---------------------------------------------------------------------------
// 2. A secret never leaves the vault.

#[test]
fn canary_never_leaves_the_vault() {
    const CANARY: &str = "CANARY-foundation-9c1e7b2a5d";
    const CANARY2: &str = "CANARY-replaced-4f0d8e6a31";
    let env = VaultEnv::new();
    // The most verbose log the daemon has: even then no secret.
    env.write_config("log = \"trace\"\n");
    env.init();
    let mut daemon = env.start_daemon();
    env.unlock();

    // From stdin, as the README does (no trailing newline)...
    env.ctl_cmd(&["secret", "set", "github-token", "--from-stdin"])
        .passphrase(PASSPHRASE)
        .stdin(CANARY.as_bytes())
        .run()
        .assert_ok();
    // ...from an fd, and a replacement from stdin with a newline.
    env.set_secret("other", CANARY2.as_bytes());
    let out = env
        .ctl_cmd(&["secret", "set", "other", "--from-stdin"])
        .passphrase(PASSPHRASE)
        .stdin(format!("{CANARY2}\n").as_bytes())
        .run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "replaced secret other", "{out}");
    env.apply_policy(README_POLICY);
    let _token = env.add_agent("claude-code");

    // Every read-only command a user might run.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["secret", "list"],
        &["policy", "show"],
        &["agent", "list"],
        &["audit", "tail", "-n", "0"],
        &["audit", "tail", "-n", "0", "--json"],
        &["audit", "verify"],
    ] {
        env.ctl(args).assert_ok();
    }
    // Refusals that name the secret (never its value).
    let out = env.ctl_pass(&["secret", "rm", "github-token"]);
    fails_with(&out, &["github-token", "used by service"]);
    // Lock, unlock, restart.
    env.lock();
    env.unlock();
    daemon.sigterm_and_wait();
    let _daemon = env.start_daemon();
    env.unlock();
    assert_eq!(secret_names(&env), ["github-token", "other"]);

    let vault = read(&env.vault_path());
    assert!(vault.len() > 200, "vault.bin holds the sealed secrets");
    for c in [CANARY, CANARY2] {
        assert_absent(&vault, c.as_bytes(), "vault.bin");
        assert_absent(&read(&env.audit_path()), c.as_bytes(), "audit.jsonl");
        assert_no_canary(&env, c);
    }
    // The trace log was really written (the check above looked at something).
    let log = std::fs::read_to_string(env.logs_dir().join("daemon-1.stderr")).unwrap();
    assert!(
        log.lines().count() > 20,
        "trace log is nearly empty:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 3. Another uid is refused by the peer check.

fn run_as_nobody(env: &VaultEnv, label: &str, args: &[&str]) -> Output {
    let out = env
        .command(Path::new("/usr/bin/setpriv"))
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(args)
        .output()
        .expect("run setpriv");
    env.record_output(&format!("{label} stdout"), &out.stdout);
    env.record_output(&format!("{label} stderr"), &out.stderr);
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn refusals_in_log(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("refused a connection from another user") && l.contains("uid=65534"))
        .count()
}

#[test]
fn other_uid_is_refused_by_the_peer_check() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    let env = VaultEnv::new();
    let daemon = env.start_unlocked();
    env.set_secret("s", b"CANARY-peercheck-0a1b2c3d");
    let vaultctl = env.bins().vaultctl.to_string_lossy().into_owned();
    let vault_before = read(&env.vault_path());

    // Control: with the default modes (0700 dirs, 0600 socket) the kernel's file
    // permissions stop nobody before the daemon sees anything.
    let out = run_as_nobody(
        &env,
        "nobody vaultctl status (0700)",
        &[&vaultctl, "status"],
    );
    assert!(!out.status.success());
    assert_eq!(refusals_in_log(&daemon.stderr()), 0, "{}", daemon.stderr());

    // Open the way: every directory o+x, the socket 0666. Now only the peer check stands.
    for d in [env.root(), env.home()] {
        let mut p = std::fs::metadata(d).unwrap().permissions();
        p.set_mode(p.mode() | 0o001);
        std::fs::set_permissions(d, p).unwrap();
    }
    std::fs::set_permissions(env.socket_path(), std::fs::Permissions::from_mode(0o666)).unwrap();

    // A raw connect as nobody succeeds at the socket level; the daemon then
    // closes the connection without sending a byte.
    let sock = env.socket_path().to_string_lossy().into_owned();
    let script = "import socket,sys\n\
s=socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
print('connected')\n\
s.settimeout(5)\n\
print('closed' if s.recv(100)==b'' else 'got bytes')\n";
    let out = run_as_nobody(
        &env,
        "nobody raw connect",
        &["/usr/bin/python3", "-c", script, &sock],
    );
    assert_eq!(
        text(&out.stdout),
        "connected\nclosed\n",
        "raw connect as nobody; stderr: {}",
        text(&out.stderr)
    );

    // vaultctl as nobody: refused, one clear line, not EACCES.
    let t0 = Instant::now();
    let out = run_as_nobody(&env, "nobody vaultctl status", &[&vaultctl, "status"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for n in ["refused", "uid 65534", "uid 0", "allowed_uids"] {
        assert!(err.contains(n), "stderr does not mention {n:?}: {err}");
    }
    assert!(
        !err.contains("os error 13"),
        "a file-permission error, not the peer check: {err}"
    );
    eprintln!(
        "nobody's vaultctl status: {:?} in {:?}",
        err.trim(),
        t0.elapsed()
    );

    // `lock` needs no passphrase: nobody must not be able to lock either, nor kill the daemon.
    let out = run_as_nobody(&env, "nobody vaultctl lock", &[&vaultctl, "lock"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );

    // vault-mcp as nobody: the agent is told the same, not "restart vaultd".
    let vault_mcp = env.bins().vault_mcp.to_string_lossy().into_owned();
    let lines = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"vault_status","arguments":{}}}"#,
    ];
    let script = format!(
        "(printf '%s\\n' '{}'; sleep 3) | {vault_mcp}",
        lines.join("' '")
    );
    let out = run_as_nobody(&env, "nobody vault-mcp", &["/bin/sh", "-c", &script]);
    let answer = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["id"] == 2)
        .unwrap_or_else(|| panic!("no answer to vault_status: {}", text(&out.stderr)));
    let said = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    for n in ["unavailable: ", "refused", "uid 65534", "allowed_uids"] {
        assert!(said.contains(n), "vault-mcp does not say {n:?}: {said}");
    }
    assert!(!said.contains("restart vaultd"), "{said}");

    // The daemon logged each refusal with the uid.
    let deadline = Instant::now() + Duration::from_secs(2);
    while refusals_in_log(&daemon.stderr()) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.stderr();
    assert!(
        refusals_in_log(&log) >= 3,
        "refusals not logged with uid 65534:\n{log}"
    );

    // The daemon's own uid still gets in; nothing changed.
    let st = env.status_json();
    assert_eq!(st["state"], "unlocked", "{st}");
    assert_eq!(st["pid"], daemon.pid(), "{st}");
    assert_eq!(read(&env.vault_path()), vault_before);
    assert_no_canary(&env, "CANARY-peercheck-0a1b2c3d");
}

// ---------------------------------------------------------------------------
// 4. No passphrase, no change.

#[test]
fn changes_without_the_passphrase_are_refused() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("github-token", b"CANARY-nopass-5e6f7a8b9c");
    env.apply_policy(README_POLICY);
    env.add_agent("claude-code");
    let before = read(&env.vault_path());
    let status_before = env.status_json();
    let policy = env.write_input("policy.toml", README_POLICY.as_bytes());
    let policy = policy.to_string_lossy();

    let value = b"CANARY-nopass-new-value-0d1e2f";
    // Through vaultctl: the passphrase fd is empty, or not open at all.
    type Case<'a> = (&'a str, Vec<&'a str>, Option<&'a [u8]>);
    let cases: Vec<Case> = vec![
        (
            "secret set",
            vec!["secret", "set", "new", "--from-stdin"],
            Some(&value[..]),
        ),
        ("policy apply", vec!["policy", "apply", &policy], None),
        ("agent add", vec!["agent", "add", "intruder"], None),
        ("passwd", vec!["passwd", "--new-passphrase-fd", "4"], None),
        ("secret rm", vec!["secret", "rm", "github-token"], None),
        ("agent rm", vec!["agent", "rm", "claude-code"], None),
    ];
    for (what, args, stdin) in &cases {
        // Empty passphrase on fd 3.
        let mut c = env.ctl_cmd(args).passphrase_bytes(b"");
        if let Some(s) = stdin {
            c = c.stdin(s);
        }
        if *what == "passwd" {
            c = c.fd(4, b"new passphrase\n");
        }
        let out = c.run();
        fails_with(&out, &["passphrase is empty", "nothing"]);
        // --passphrase-fd 9, never opened.
        let mut full = vec!["--passphrase-fd", "9"];
        full.extend(args.iter().copied());
        let mut c = env.ctl_cmd(&full);
        if let Some(s) = stdin {
            c = c.stdin(s);
        }
        if *what == "passwd" {
            c = c.fd(4, b"new passphrase\n");
        }
        let out = c.run();
        fails_with(&out, &["file descriptor 9 is not open"]);
    }

    // Raw gRPC, as an agent on the same socket could send: empty and wrong
    // passphrases. Each is refused with PermissionDenied by the daemon itself.
    let refused = rt().block_on(async {
        let mut c = grpc(&env).await;
        let mut n = 0;
        for pass in [&b""[..], b"not the passphrase"] {
            let p = || pass.to_vec();
            let mut results: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
            // After each refusal a good unlock (a no-op: already unlocked) resets
            // the daemon's wrong-passphrase throttle, which would otherwise double
            // the wait each time.
            macro_rules! attempt {
                ($rpc:literal, $call:expr) => {{
                    results.push(($rpc, $call.await.map(drop)));
                    c.unlock(UnlockRequest {
                        passphrase: PASSPHRASE.as_bytes().to_vec(),
                        lock_after_secs: 0,
                    })
                    .await
                    .expect("unlock with the right passphrase");
                }};
            }
            attempt!(
                "SetSecret",
                c.set_secret(SetSecretRequest {
                    passphrase: p(),
                    name: "new".into(),
                    value: value.to_vec(),
                })
            );
            attempt!(
                "ApplyPolicy",
                c.apply_policy(ApplyPolicyRequest {
                    passphrase: p(),
                    policy_toml: String::new(),
                    source_name: "p".into(),
                    ca_files: Default::default(),
                    dry_run: false,
                })
            );
            attempt!(
                "AddAgent",
                c.add_agent(AddAgentRequest {
                    passphrase: p(),
                    name: "intruder".into(),
                })
            );
            attempt!(
                "ChangePassphrase",
                c.change_passphrase(ChangePassphraseRequest {
                    passphrase: p(),
                    new_passphrase: b"attacker's".to_vec(),
                })
            );
            attempt!(
                "RemoveSecret",
                c.remove_secret(RemoveSecretRequest {
                    passphrase: p(),
                    name: "github-token".into(),
                })
            );
            attempt!(
                "RemoveAgent",
                c.remove_agent(RemoveAgentRequest {
                    passphrase: p(),
                    name: "claude-code".into(),
                })
            );
            for (rpc, r) in results {
                let s = r.expect_err(rpc);
                assert_eq!(s.code(), tonic::Code::PermissionDenied, "{rpc}: {s:?}");
                assert!(s.message().contains("wrong passphrase"), "{rpc}: {s:?}");
                n += 1;
            }
        }
        n
    });
    assert_eq!(refused, 12);

    // Nothing changed: the file byte for byte, and what the daemon serves.
    assert_eq!(read(&env.vault_path()), before, "vault.bin changed");
    let st = env.status_json();
    for k in ["state", "secrets", "services", "capabilities", "agents"] {
        assert_eq!(st[k], status_before[k], "{k}: {st}");
    }
    assert_eq!(secret_names(&env), ["github-token"]);
    let agents = env.ctl(&["agent", "list"]).assert_ok().stdout.clone();
    assert!(!agents.contains("intruder"), "{agents}");
    // The passphrase is still the old one.
    env.lock();
    env.unlock();
    assert_no_canary(&env, "CANARY-nopass-5e6f7a8b9c");
    assert_no_canary(&env, "CANARY-nopass-new-value-0d1e2f");
}

// ---------------------------------------------------------------------------
// 5. One flipped byte is tampering, and the file is left alone.

#[test]
fn one_flipped_byte_is_reported_as_tampering() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("github-token", b"CANARY-tamper-1f2e3d4c5b");
    env.apply_policy(README_POLICY);
    env.lock();
    let path = env.vault_path();
    let good = read(&path);
    let len = good.len();
    assert!(len > 300, "vault.bin is {len} bytes");
    // Layout (vault.rs): magic 0..8, version 8..10, KDF 10..24, salt 24..56,
    // wrap nonce 56..80, wrapped key 80..112, wrap tag 112..128, body nonce
    // 128..152, body ciphertext, body tag (16), SHA-256 (32).
    let positions = [
        ("magic (first byte)", 0),
        ("magic (last byte)", 7),
        ("format version", 8),
        ("KDF id", 10),
        ("KDF memory", 13),
        ("salt", 40),
        ("wrap nonce", 60),
        ("wrapped key", 90),
        ("wrap tag", 127),
        ("body nonce", 140),
        ("body (first byte)", 152),
        ("body (middle)", (152 + len - 48) / 2),
        ("body tag", len - 40),
        ("checksum (first byte)", len - 32),
        ("checksum (last byte = last byte of the file)", len - 1),
    ];
    for (what, pos) in positions {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let out = env.ctl_pass(&["unlock"]);
        let line = fails_with(
            &out,
            &[
                "tampered with or corrupted",
                "was not changed",
                "restore it from a backup",
            ],
        );
        assert!(line.contains(&path.display().to_string()), "{what}: {line}");
        assert_eq!(
            read(&path),
            bad,
            "{what} (byte {pos}): the file was rewritten"
        );
        assert_eq!(env.status_json()["state"], "locked", "{what}");
    }
    // A truncated file too.
    std::fs::write(&path, &good[..100]).unwrap();
    let out = env.ctl_pass(&["unlock"]);
    fails_with(&out, &["tampered with or corrupted", "truncated"]);
    assert_eq!(read(&path), &good[..100]);

    // While unlocked, a change finds the damage too and does not overwrite the
    // damaged file with a fresh copy.
    std::fs::write(&path, &good).unwrap();
    env.unlock();
    for pos in [0, 90, len - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x80;
        std::fs::write(&path, &bad).unwrap();
        let out = env
            .ctl_cmd(&["secret", "set", "x", "--from-stdin"])
            .passphrase(PASSPHRASE)
            .stdin(b"CANARY-tamper-new-77aa88bb")
            .run();
        fails_with(&out, &["tampered with or corrupted"]);
        assert_eq!(
            read(&path),
            bad,
            "byte {pos}: the damaged file was rewritten"
        );
    }

    // The original still opens and holds everything.
    std::fs::write(&path, &good).unwrap();
    env.lock();
    env.unlock();
    assert_eq!(secret_names(&env), ["github-token"]);
    assert_no_canary(&env, "CANARY-tamper-1f2e3d4c5b");
    assert_no_canary(&env, "CANARY-tamper-new-77aa88bb");
}

// ---------------------------------------------------------------------------
// 7. `lock` ends a daemon that does not answer.

/// Pids of running `vaultd` processes (any) whose environment names this
/// env's VAULTD_HOME (readable for processes of our uid, or all as root).
fn vaultd_processes_of(env: &VaultEnv) -> Vec<u32> {
    let mut needle = b"VAULTD_HOME=".to_vec();
    needle.extend_from_slice(env.home().as_os_str().as_encoded_bytes());
    needle.push(0);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            exe.is_some_and(|p| p.file_name().is_some_and(|n| n == "vaultd"))
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

#[test]
fn lock_ends_a_stopped_daemon() {
    let env = VaultEnv::new();
    let mut daemon = env.start_unlocked();
    env.set_secret("github-token", b"CANARY-stopped-6a5b4c3d2e");
    let pid = daemon.pid();
    // vaultd is not dumpable: only root can read its /proc entries.
    let scan = rustix::process::geteuid().is_root();
    if scan {
        assert_eq!(
            vaultd_processes_of(&env),
            [pid],
            "the /proc scan finds the daemon"
        );
    }
    daemon.sigstop();

    let t0 = Instant::now();
    let mut lock = env.ctl_cmd(&["lock"]).spawn();
    let exited = daemon.wait_exit(Duration::from_secs(3));
    let gone_after = t0.elapsed();
    let st = exited.unwrap_or_else(|| {
        panic!("vaultd (pid {pid}) still exists {gone_after:?} after `vaultctl lock`")
    });
    assert_eq!(st.signal(), Some(9), "vaultd ended by SIGKILL: {st:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock.try_wait().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lock_took = t0.elapsed();
    let out = lock.wait(Duration::from_secs(1));
    out.assert_ok();
    assert!(
        out.stdout.contains(&format!("pid {pid}")) && out.stdout.contains("killed"),
        "{out}"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    if scan {
        let left = vaultd_processes_of(&env);
        assert!(
            left.is_empty(),
            "vaultd processes of this vault still run: {left:?}"
        );
    }
    eprintln!(
        "lock of a stopped vaultd: process gone after {:.0} ms, vaultctl lock returned after {:.0} ms",
        gone_after.as_secs_f64() * 1e3,
        lock_took.as_secs_f64() * 1e3
    );
    assert!(
        lock_took < Duration::from_secs(4),
        "vaultctl lock took {lock_took:?}"
    );

    // A new daemon starts locked; the vault is intact.
    let _d = env.start_daemon();
    assert_eq!(env.status_json()["state"], "locked");
    env.unlock();
    assert_eq!(secret_names(&env), ["github-token"]);
    assert_no_canary(&env, "CANARY-stopped-6a5b4c3d2e");
}

// ---------------------------------------------------------------------------
// 8. Bad input: one clear line and a non-zero exit.

#[test]
fn bad_input_daemon_not_running() {
    let env = VaultEnv::new();
    env.init();
    for args in [
        &["status"][..],
        &["unlock"],
        &["secret", "list"],
        &["secret", "set", "x", "--from-stdin"],
    ] {
        let out = env
            .ctl_cmd(args)
            .passphrase(PASSPHRASE)
            .stdin(b"some value")
            .run();
        fails_with(
            &out,
            &["vaultd is not running", "systemctl --user start vaultd"],
        );
    }
    // status --json: the JSON on stdout, the line on stderr.
    let out = env.ctl(&["status", "--json"]);
    fails_with(&out, &["vaultd is not running"]);
    assert_eq!(out.json()["state"], "unavailable");
    // lock with no daemon: nothing holds the keys, which is success.
    let out = env.ctl(&["lock"]);
    out.assert_ok();
    assert!(out.stdout.contains("not running"), "{out}");
}

#[test]
fn bad_input_no_vault_yet() {
    let env = VaultEnv::new();
    let _d = env.start_daemon();
    let out = env.ctl(&["status", "--json"]);
    out.assert_ok();
    assert_eq!(out.json()["state"], "uninitialized", "{out}");
    let out = env.ctl_pass(&["unlock"]);
    fails_with(&out, &["no vault", "vaultctl init"]);
    let out = env
        .ctl_cmd(&["secret", "set", "x", "--from-stdin"])
        .passphrase(PASSPHRASE)
        .stdin(b"some value 123")
        .run();
    fails_with(&out, &["no vault", "vaultctl init"]);
    assert!(!env.vault_path().exists());
}

#[test]
fn bad_input_second_init() {
    let env = VaultEnv::new();
    env.init();
    let before = read(&env.vault_path());
    let out = env.ctl_pass(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    fails_with(&out, &["already exists", "left untouched", "move it away"]);
    assert_eq!(read(&env.vault_path()), before);
}

#[test]
fn bad_input_wrong_passphrase() {
    let env = VaultEnv::new();
    env.init();
    let _d = env.start_daemon();
    let out = env.ctl_cmd(&["unlock"]).passphrase("not it").run();
    fails_with(&out, &["wrong passphrase", "try again"]);
    assert_eq!(env.status_json()["state"], "locked");
    env.unlock();
}

#[test]
fn bad_input_malformed_policy() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("github-token", b"CANARY-policy-8e7d6c5b4a");
    let before = read(&env.vault_path());

    // A TOML syntax error on line 3.
    let out = env.try_apply_policy("[[service]]\nname = \"github\"\nbase_url = \n");
    let line = fails_with(&out, &["not applied", ":3:"]);
    eprintln!("syntax error: {line}");
    // A valid TOML that names an unknown service on line 6.
    let out = env.try_apply_policy(
        "[[agent]]\nname = \"a\"\n\n[[capability]]\nname = \"c\"\nservice = \"nope\"\nagents = [\"a\"]\nallow = [\"GET /x\"]\n",
    );
    let line = fails_with(&out, &["not applied", ":6:", "nope"]);
    eprintln!("unknown service: {line}");
    // Several problems: one line each (with its line number), then a summary.
    let out = env.try_apply_policy(
        "[[service]]\nname = \"s\"\nbase_url = \"ftp://x\"\nauth = { type = \"bearer\", secret = \"missing\" }\n",
    );
    out.assert_fail();
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert!(lines.len() >= 3, "{out}");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.contains(".toml:")),
        "{out}"
    );
    assert!(lines[lines.len() - 1].contains("not applied"), "{out}");
    assert_eq!(
        read(&env.vault_path()),
        before,
        "a refused policy changed the vault"
    );
    assert_no_canary(&env, "CANARY-policy-8e7d6c5b4a");
}

/// A `vault.v1` server that answers Hello with another protocol version.
struct WrongVersion {
    protocol: u32,
    /// Set when it gets `Lock` (which answers; see [`wrong_version_impl`]).
    locked: Arc<AtomicBool>,
}

/// The whole `Vault` impl: Hello and Lock answer, every other RPC is
/// unimplemented. (`async_trait` must see the methods, so the macro writes
/// the impl block.)
macro_rules! wrong_version_impl {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl vault_server::Vault for WrongVersion {
            async fn hello(
                &self,
                _: tonic::Request<HelloRequest>,
            ) -> Result<tonic::Response<HelloResponse>, tonic::Status> {
                Ok(tonic::Response::new(HelloResponse {
                    protocol: self.protocol,
                    daemon_version: "9.9.9".into(),
                }))
            }
            async fn lock(
                &self,
                _: tonic::Request<LockRequest>,
            ) -> Result<tonic::Response<LockResponse>, tonic::Status> {
                self.locked.store(true, Ordering::SeqCst);
                Ok(tonic::Response::new(LockResponse { aborted_calls: 0 }))
            }
            $(
                async fn $name(
                    &self,
                    _: tonic::Request<$req>,
                ) -> Result<tonic::Response<$resp>, tonic::Status> {
                    Err(tonic::Status::unimplemented("fake"))
                }
            )*
            type AuditTailStream = tokio_stream::Empty<Result<AuditLine, tonic::Status>>;
            async fn audit_tail(
                &self,
                _: tonic::Request<AuditTailRequest>,
            ) -> Result<tonic::Response<Self::AuditTailStream>, tonic::Status> {
                Err(tonic::Status::unimplemented("fake"))
            }
        }
    };
}

wrong_version_impl! {
    status(StatusRequest) -> StatusResponse;
    unlock(UnlockRequest) -> UnlockResponse;
    change_passphrase(ChangePassphraseRequest) -> ChangePassphraseResponse;
    set_secret(SetSecretRequest) -> SetSecretResponse;
    list_secrets(ListSecretsRequest) -> ListSecretsResponse;
    remove_secret(RemoveSecretRequest) -> RemoveSecretResponse;
    apply_policy(ApplyPolicyRequest) -> ApplyPolicyResponse;
    show_policy(ShowPolicyRequest) -> ShowPolicyResponse;
    add_agent(AddAgentRequest) -> AddAgentResponse;
    list_agents(ListAgentsRequest) -> ListAgentsResponse;
    remove_agent(RemoveAgentRequest) -> RemoveAgentResponse;
    audit_verify(AuditVerifyRequest) -> AuditVerifyResponse;
    agent_status(AgentStatusRequest) -> AgentStatusResponse;
    list_services(ListServicesRequest) -> ListServicesResponse;
    execute(ExecuteRequest) -> ExecuteResponse;
}

/// Serves [`WrongVersion`] on `path` until the returned sender is dropped;
/// `locked` is set when it gets `Lock`.
fn serve_wrong_version(
    path: &Path,
    protocol: u32,
    locked: Arc<AtomicBool>,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind fake socket");
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(vault_server::VaultServer::new(WrongVersion {
                    protocol,
                    locked,
                }))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
    });
    tx
}

#[test]
fn bad_input_wrong_protocol_version() {
    assert_ne!(vault_proto::PROTOCOL_VERSION, 999);
    let env = VaultEnv::new();
    env.init();
    let sock = env.root().join("old-vaultd.sock");
    let locked = Arc::new(AtomicBool::new(false));
    let _server = serve_wrong_version(&sock, 999, locked.clone());
    let sock_s = sock.to_string_lossy().into_owned();
    for args in [&["status"][..], &["unlock"], &["secret", "list"]] {
        let out = env
            .ctl_cmd(args)
            .passphrase(PASSPHRASE)
            .env("VAULTD_SOCKET", &sock_s)
            .run();
        let line = fails_with(
            &out,
            &[
                "protocol v999",
                &format!("v{}", vault_proto::PROTOCOL_VERSION),
                "systemctl --user restart vaultd",
                &sock_s,
            ],
        );
        if args == ["status"] {
            eprintln!("wrong version: {line}");
        }
    }
    // `lock` still locks it (after an upgrade, before the daemon's restart,
    // the emergency stop must work) and names the mismatch; it kills nothing.
    assert!(!locked.load(Ordering::SeqCst));
    let out = env.ctl_cmd(&["lock"]).env("VAULTD_SOCKET", &sock_s).run();
    out.assert_ok();
    assert!(
        out.stdout.contains("locked (0 call(s) in flight aborted)")
            && out.stderr.contains("protocol v999")
            && out.stderr.contains("systemctl --user restart vaultd"),
        "{out}"
    );
    assert!(locked.load(Ordering::SeqCst), "the daemon never got Lock");
}

#[test]
fn bad_input_socket_of_another_program() {
    let env = VaultEnv::new();
    // Something that accepts and closes at once.
    let sock = env.root().join("other.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let out = env
        .ctl_cmd(&["status"])
        .env("VAULTD_SOCKET", &sock.to_string_lossy())
        .run();
    let line = fails_with(&out, &["does not answer as vaultd", "restart vaultd"]);
    eprintln!("another program: {line}");
}

// ---------------------------------------------------------------------------
// 5b. An attacker who also fixes up the trailing checksum gets only a refusal.

/// SHA-256 through coreutils' `sha256sum` (the tests crate has no hash crate).
fn sha256(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn fixed_up_checksum_is_still_refused() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("github-token", b"CANARY-fixup-2b3c4d5e6f");
    env.lock();
    let path = env.vault_path();
    let good = read(&path);
    let len = good.len();
    assert_eq!(
        sha256(&good[..len - 32]),
        &good[len - 32..],
        "trailer is SHA-256"
    );
    // (what, byte, whether the refusal can name tampering: a changed salt or
    // wrapped key is indistinguishable from a wrong passphrase)
    let cases = [
        ("magic", 0, true),
        ("format version", 8, true),
        ("KDF id", 10, true),
        ("salt", 40, false),
        ("wrapped key", 90, false),
        ("wrap tag", 120, false),
        ("body nonce", 140, true),
        ("body", 160, true),
        ("body tag", len - 33, true),
    ];
    for (what, pos, names_tampering) in cases {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        let sum = sha256(&bad[..len - 32]);
        bad[len - 32..].copy_from_slice(&sum);
        std::fs::write(&path, &bad).unwrap();
        let out = env.ctl_pass(&["unlock"]);
        let line = fails_with(&out, &["was not changed"]);
        if names_tampering {
            assert!(
                line.contains("tampered") || line.contains("not a vaultd vault file"),
                "{what}: {line}"
            );
        } else {
            assert!(line.contains("wrong passphrase"), "{what}: {line}");
        }
        assert_eq!(read(&path), bad, "{what}: the file was rewritten");
        assert_eq!(env.status_json()["state"], "locked", "{what}");
        // A good unlock resets the wrong-passphrase throttle.
        std::fs::write(&path, &good).unwrap();
        env.unlock();
        env.lock();
    }
    assert_no_canary(&env, "CANARY-fixup-2b3c4d5e6f");
}

// ---------------------------------------------------------------------------
// A full disk: the write fails naming the OS error, the old vault stays.

/// A tmpfs mounted over a directory, unmounted (lazily) on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn disk_full_keeps_the_old_vault() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let env = VaultEnv::new();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(env.home())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    // Declared before the daemon: dropped (unmounted) after it is killed.
    let _mnt = Tmpfs(env.home().to_path_buf());
    let _d = env.start_unlocked();
    env.set_secret("github-token", b"CANARY-diskfull-3c4d5e6f70");
    let before = read(&env.vault_path());

    // Fill the file system.
    let filler = env.home().join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let big = vec![b'v'; 64 * 1024];
    let out = env
        .ctl_cmd(&["secret", "set", "big", "--from-stdin"])
        .passphrase(PASSPHRASE)
        .stdin(&big)
        .run();
    let line = fails_with(&out, &["No space left on device"]);
    eprintln!("disk full: {line}");
    assert_eq!(
        read(&env.vault_path()),
        before,
        "the old vault was not kept"
    );
    let temps: Vec<_> = std::fs::read_dir(env.home())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "temporary file left: {temps:?}");
    assert_eq!(secret_names(&env), ["github-token"]);

    // Space again: the same write succeeds, and the vault still opens.
    std::fs::remove_file(&filler).unwrap();
    env.ctl_cmd(&["secret", "set", "big", "--from-stdin"])
        .passphrase(PASSPHRASE)
        .stdin(&big)
        .run()
        .assert_ok();
    env.lock();
    env.unlock();
    assert_eq!(secret_names(&env), ["big", "github-token"]);
    assert_no_canary(&env, "CANARY-diskfull-3c4d5e6f70");
}

// ---------------------------------------------------------------------------
// A second vaultd on the same VAULTD_HOME, or on the same vault through another
// socket, is refused; the first keeps serving.

#[test]
fn second_daemon_is_refused_and_the_first_keeps_serving() {
    let env = VaultEnv::new();
    let first = env.start_unlocked();
    env.set_secret("github-token", b"CANARY-second-7d6c5b4a39");
    let out = env
        .command(&env.bins().vaultd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run a second vaultd");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    env.record_output("second vaultd stderr", &out.stderr);
    env.record_output("second vaultd stdout", &out.stdout);
    assert!(!out.status.success(), "a second vaultd started:\n{stderr}");
    assert!(
        stderr.contains("already running") && stderr.contains("stop it first"),
        "the refusal does not say what is wrong and what to do:\n{stderr}"
    );
    // Nor through another socket: one daemon per vault (two would interleave
    // their audit records and serve different copies of the policy). The
    // refusal names the running daemon's pid.
    let other_socket = env.root().join("other/vaultd.sock");
    let out = env
        .command(&env.bins().vaultd)
        .env("VAULTD_SOCKET", &other_socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run a second vaultd on another socket");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    env.record_output("second vaultd (other socket) stderr", &out.stderr);
    assert!(
        !out.status.success(),
        "a second vaultd served the same vault on another socket:\n{stderr}"
    );
    assert!(
        stderr.contains("already running") && stderr.contains(&format!("kill {}", first.pid())),
        "the refusal names the running daemon:\n{stderr}"
    );
    assert!(!other_socket.exists(), "the second vaultd bound its socket");
    // The first daemon, its socket and its keys are untouched.
    let st = env.status_json();
    assert_eq!(st["state"], "unlocked", "{st}");
    assert_eq!(st["pid"].as_u64(), Some(u64::from(first.pid())), "{st}");
    let list = env.ctl(&["secret", "list"]);
    list.assert_ok();
    assert!(list.stdout.contains("github-token"), "{list}");
    assert_no_canary(&env, "CANARY-second-7d6c5b4a39");
}

/// A mistyped `VAULTD_SOCKET` must not cost the user a file or a directory
/// mode: vaultd removes only a stale *socket* at that path and refuses to
/// start over anything else, leaving it as it was; an existing directory
/// that holds the socket keeps its mode (init does not touch it at all).
#[test]
fn vaultd_leaves_the_users_files_and_directories_alone() {
    let env = VaultEnv::new();
    let mine = env.root().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let notes = mine.join("notes.txt");
    std::fs::write(&notes, "important data").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let out = env
        .ctl_cmd(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"])
        .env("VAULTD_SOCKET", &mine.join("vaultd.sock").to_string_lossy())
        .passphrase(PASSPHRASE)
        .run();
    out.assert_ok();
    assert_eq!(
        mode(&mine),
        0o755,
        "init changed the socket directory's mode"
    );

    let out = env
        .command(&env.bins().vaultd)
        .env("VAULTD_SOCKET", &notes)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run vaultd");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    env.record_output("vaultd on a regular file stderr", &out.stderr);
    assert!(
        !out.status.success(),
        "vaultd started over a file:\n{stderr}"
    );
    assert!(
        stderr.contains("is not a socket") && stderr.contains("VAULTD_SOCKET"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "important data");

    // A socket there, in the user's 0755 directory: served, mode kept, and
    // the stale socket of a killed daemon is replaced at the next start.
    let sock = mine.join("vaultd.sock");
    for round in 0..2 {
        let mut child = env
            .command(&env.bins().vaultd)
            .env("VAULTD_SOCKET", &sock)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start vaultd");
        let started = Instant::now();
        loop {
            let st = env
                .ctl_cmd(&["status"])
                .env("VAULTD_SOCKET", &sock.to_string_lossy())
                .run();
            if st.status.success() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "round {round}: {st}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            mode(&mine),
            0o755,
            "round {round}: vaultd changed the directory's mode"
        );
        child.kill().unwrap(); // SIGKILL: the socket file stays behind
        child.wait().unwrap();
        assert!(sock.exists());
    }
}
