//! Issue 3: `vaultctl mcp-config --agent NAME --client X` for every client it
//! knows. The snippet is valid JSON (TOML for Codex), runs the vault-mcp
//! binary with the agent's token file and the daemon's socket, never carries
//! the token itself, and works: an MCP client started exactly as the snippet
//! says is served as that agent. The command only prints: the clients'
//! existing configuration files are left byte for byte as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use vaultd_tests::mcp::venv_python;
use vaultd_tests::{McpOptions, TlsKind, Upstream, VaultEnv, assert_absent, assert_no_canary};

const CANARY: &str = "CANARY-mcpconfig-2a6f9e1c05d8";

/// (client name, where its servers live in the snippet, is TOML)
const CLIENTS: [(&str, &str, bool); 5] = [
    ("claude-desktop", "mcpServers", false),
    ("claude-code", "mcpServers", false),
    ("cursor", "mcpServers", false),
    ("vscode", "servers", false),
    ("codex", "mcp_servers", true),
];

/// TOML text to JSON, with Python's own TOML parser (tomllib).
fn toml_to_json(text: &str) -> Value {
    let mut child = std::process::Command::new(venv_python())
        .args([
            "-c",
            "import sys, json, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not valid TOML ({}):\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under `dir` (skipping `skip`), with its bytes.
fn snapshot(dir: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if skip.contains(&p) {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn mcp_config_snippets_are_valid_work_and_never_carry_the_token() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(
        &up,
        CANARY.as_bytes(),
        &format!(
            r#"
[[service]]
name = "up"
base_url = "{url}/api"
auth = {{ type = "bearer", secret = "tok" }}
ca_file = "{ca}"
allow_private_network = true

[[agent]]
name = "dev"

[[agent]]
name = "later"

[[capability]]
name = "echo"
service = "up"
agents = ["dev"]
allow = ["GET /echo/**"]
"#,
            url = up.url(),
            ca = env.ca_file().display()
        ),
    );

    // The token goes to the file mcp-config points at by default.
    let token_file = env.home().join("agents").join("dev.token");
    let out = env.ctl_pass(&[
        "agent",
        "add",
        "dev",
        "--token-file",
        &token_file.to_string_lossy(),
    ]);
    out.assert_ok();
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.len() >= 16, "token file holds a token");
    assert!(
        !out.stdout.contains(&token) && !out.stderr.contains(&token),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");

    // The clients' own configuration files, as a user would have them.
    let home = env.root().join("home");
    let originals: [(PathBuf, &str); 5] = [
        (
            home.join(".config/Claude/claude_desktop_config.json"),
            "{\"mcpServers\": {\"other\": {\"command\": \"x\"}}}\n",
        ),
        (home.join(".cursor/mcp.json"), "{\"mcpServers\": {}}\n"),
        (
            env.root().join(".mcp.json"),
            "{\"mcpServers\": {\"keep\": {}}}\n",
        ),
        (
            env.root().join(".vscode/mcp.json"),
            "{ \"servers\": {} } // user's\n",
        ),
        (
            home.join(".codex/config.toml"),
            "model = \"o3\"\n\n[mcp_servers.other]\ncommand = \"y\"\n",
        ),
    ];
    for (p, text) in &originals {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let skip = [env.logs_dir().to_path_buf(), env.home().to_path_buf()];
    let before = snapshot(env.root(), &skip);

    let mut snippets = Vec::new();
    for (client, key, is_toml) in CLIENTS {
        let out = env.ctl(&["mcp-config", "--agent", "dev", "--client", client]);
        out.assert_ok();
        assert!(
            !out.stdout.contains(&token),
            "{client}: token printed:\n{out}"
        );
        assert!(
            !out.stderr.contains(&token),
            "{client}: token printed:\n{out}"
        );
        let v = if is_toml {
            toml_to_json(&out.stdout)
        } else {
            serde_json::from_str::<Value>(&out.stdout)
                .unwrap_or_else(|e| panic!("{client}: not JSON ({e}):\n{out}"))
        };
        let entry = &v[key]["vault-dev"];
        assert!(entry.is_object(), "{client}: no {key}.vault-dev in {v}");
        let command = entry["command"].as_str().unwrap_or_default();
        assert_eq!(
            Path::new(command),
            env.bins().vault_mcp,
            "{client}: names the vault-mcp installed next to vaultctl"
        );
        assert_eq!(
            entry["args"],
            json!(["--token-file", token_file.to_string_lossy()]),
            "{client}: {entry}"
        );
        assert_eq!(
            entry["env"]["VAULTD_SOCKET"],
            json!(env.socket_path().to_string_lossy()),
            "{client}: {entry}"
        );
        if matches!(client, "claude-code" | "vscode") {
            assert_eq!(entry["type"], "stdio", "{client}: {entry}");
        }
        assert!(
            out.stderr.contains("merge this into"),
            "{client} says where it goes:\n{out}"
        );
        println!("{client}: OK ({} bytes)", out.stdout.len());
        snippets.push((client, entry.clone()));
    }
    // The default client is claude-code.
    let default = env.ctl(&["mcp-config", "--agent", "dev"]);
    default.assert_ok();
    let v: Value = serde_json::from_str(&default.stdout).unwrap();
    assert_eq!(v["mcpServers"]["vault-dev"]["type"], "stdio");

    // An agent whose token file does not exist yet: the snippet plus the next step.
    let later = env.ctl(&["mcp-config", "--agent", "later", "--client", "cursor"]);
    later.assert_ok();
    assert!(
        later
            .stderr
            .contains("vaultctl agent add later --token-file"),
        "{later}"
    );

    // Nothing was edited or created: the users' files are byte for byte the same.
    let after = snapshot(env.root(), &skip);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "mcp-config created or removed files"
    );
    for (p, text) in &originals {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            *text,
            "{} changed",
            p.display()
        );
    }
    assert_eq!(before, after);

    // Each snippet works: vault-mcp started exactly as it says (command, args,
    // env; no VAULTD_HOME, no token in the environment) is served as `dev`.
    for (client, entry) in snippets {
        let args: Vec<String> = entry["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let mut envs: Vec<(String, String)> = entry["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        envs.push(("VAULTD_HOME".into(), String::new()));
        let mcp = env.mcp_with(McpOptions {
            server: Some(PathBuf::from(entry["command"].as_str().unwrap())),
            args,
            env: envs,
            ..McpOptions::default()
        });
        let st = mcp.call("vault_status", json!({})).assert_ok();
        assert_eq!(st["agent"], "dev", "{client}: {st}");
        assert_eq!(st["state"], "unlocked", "{client}: {st}");
        let r = mcp
            .execute(json!({"capability": "echo", "method": "GET", "path": "/echo/x"}))
            .assert_ok();
        assert_eq!(r["status"], 200, "{client}: {r}");
    }
    assert_eq!(up.request_count(), CLIENTS.len());

    for (label, bytes) in env.output_sources() {
        if !label.contains("dev.token") {
            assert_absent(&bytes, token.as_bytes(), &label);
        }
    }
    assert_no_canary(&env, CANARY);
}

/// The client starts vault-mcp from a directory of its own: a relative (or
/// quoted `~/`) `--token-file` goes into the snippet as an absolute path, and
/// a directory is refused. A dotted agent name gets a server name Codex
/// accepts (A-Z a-z 0-9 _ -).
#[test]
fn mcp_config_paths_and_names_work_for_the_client() {
    let env = VaultEnv::new();
    // vaultctl runs in env.root(): the relative path is resolved there.
    let out = env.ctl(&[
        "mcp-config",
        "--agent",
        "dev",
        "--client",
        "cursor",
        "--token-file",
        "tokens/dev.token",
    ]);
    out.assert_ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let want = env.root().join("tokens/dev.token");
    assert_eq!(
        v["mcpServers"]["vault-dev"]["args"],
        json!(["--token-file", want.to_string_lossy()]),
        "{out}"
    );
    assert!(out.stderr.contains(&*want.to_string_lossy()), "{out}");

    let home = env.root().join("home");
    let out = env
        .ctl_cmd(&[
            "mcp-config",
            "--agent",
            "dev",
            "--client",
            "vscode",
            "--token-file",
            "~/dev.token",
        ])
        .env("HOME", &home.to_string_lossy())
        .run();
    out.assert_ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["servers"]["vault-dev"]["args"][1],
        json!(home.join("dev.token").to_string_lossy()),
        "{out}"
    );

    let out = env.ctl(&[
        "mcp-config",
        "--agent",
        "dev",
        "--token-file",
        "~other/dev.token",
    ]);
    out.assert_fail();
    assert!(out.stderr.contains("only ~/ is expanded"), "{out}");
    let out = env.ctl(&["mcp-config", "--agent", "dev", "--client", "claude-code"]);
    assert!(
        out.stderr.contains("`claude mcp add-json vault-dev`"),
        "{out}"
    );

    std::fs::create_dir_all(env.root().join("tokens")).unwrap();
    let out = env.ctl(&["mcp-config", "--agent", "dev", "--token-file", "tokens"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("is a directory") && out.stderr.contains("NAME.token"),
        "{out}"
    );

    let out = env.ctl(&["mcp-config", "--agent", "my.agent", "--client", "codex"]);
    out.assert_ok();
    let v = toml_to_json(&out.stdout);
    let servers = v["mcp_servers"].as_object().unwrap();
    assert_eq!(
        servers.keys().collect::<Vec<_>>(),
        ["vault-my_agent"],
        "{out}"
    );
    assert!(
        servers["vault-my_agent"]["args"][1]
            .as_str()
            .unwrap()
            .ends_with("my.agent.token"),
        "the token file keeps the agent's name: {out}"
    );
}
