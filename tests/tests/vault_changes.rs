//! Changes to the vault (DESIGN.md, "Vault file" and "Command line"): a
//! refused change leaves the file byte-identical and the vault usable.

use vaultd_tests::{VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-changes-7d20b9e4c1a6";

fn vault_bytes(env: &VaultEnv) -> Vec<u8> {
    std::fs::read(env.vault_path()).expect("read vault.bin")
}

/// A `ca_file` that looks like a PEM certificate but is not one: the TLS
/// stack rejects it when the service's client is built. Such a policy used
/// to be sealed into the file before that failed, so the next unlock failed
/// too.
#[test]
fn a_policy_whose_ca_the_tls_stack_rejects_changes_nothing() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    let bad_ca = env.write_input(
        "bad-ca.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let policy = format!(
        r#"
[[service]]
name = "up"
base_url = "https://api.example.com"
auth = {{ type = "bearer", secret = "tok" }}
ca_file = "{}"
"#,
        bad_ca.display()
    );
    let before = vault_bytes(&env);
    for dry_run in [true, false] {
        let n = if dry_run { "dry" } else { "real" };
        let path = env.write_input(&format!("policy-{n}.toml"), policy.as_bytes());
        let path = path.to_string_lossy().into_owned();
        let mut args = vec!["policy", "apply"];
        if dry_run {
            args.push("--dry-run");
        }
        args.push(&path);
        let out = env.ctl_pass(&args);
        out.assert_fail();
        assert!(
            out.stderr.contains("ca_file"),
            "the error names the ca_file:\n{out}"
        );
        assert_eq!(
            vault_bytes(&env),
            before,
            "a refused apply ({n}) wrote the vault"
        );
    }
    // The vault still unlocks, with its old (empty) policy.
    env.lock();
    env.unlock();
    assert_eq!(env.status_json()["state"], "unlocked");
    let shown = env.ctl(&["policy", "show"]);
    shown.assert_ok();
    assert!(!shown.stdout.contains("[[service]]"), "{shown}");
    assert_no_canary(&env, CANARY);
}

/// `agent rm` takes the agent out of every capability too: `policy show`
/// then prints a policy that `policy apply` accepts, and an agent added
/// again under the same name starts with no grants.
#[test]
fn agent_rm_removes_its_grants_and_policy_show_round_trips() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    env.apply_policy(
        r#"
[[service]]
name = "up"
base_url = "https://api.example.com"
auth = { type = "bearer", secret = "tok" }

[[agent]]
name = "a"

[[agent]]
name = "b"

[[capability]]
name = "read"
service = "up"
agents = ["a", "b"]
allow = ["GET /**"]
"#,
    );
    env.add_agent("a");
    env.ctl_pass(&["agent", "rm", "a"]).assert_ok();

    let shown = env.ctl(&["policy", "show"]);
    shown.assert_ok();
    assert!(shown.stdout.contains(r#"agents = ["b"]"#), "{shown}");
    let path = env.write_input("shown.toml", shown.stdout.as_bytes());
    env.ctl_pass(&["policy", "apply", "--dry-run", &path.to_string_lossy()])
        .assert_ok();

    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    let listed = mcp.call("list_services", serde_json::json!({}));
    assert!(!listed.is_error, "{}", listed.text);
    assert!(!listed.text.contains("\"read\""), "{}", listed.text);
    assert_no_canary(&env, CANARY);
}

/// A change made while the vault is locked (the passphrase is in the
/// request, so it is allowed) is audited like one made while unlocked, and
/// the chain still verifies, also on a daemon that was never unlocked.
#[test]
fn changes_made_while_locked_are_audited() {
    let env = VaultEnv::new();
    env.init();
    let mut d = env.start_daemon(); // locked, never unlocked
    env.set_secret("tok", CANARY.as_bytes());
    env.unlock();
    env.lock();
    env.ctl_pass(&["agent", "add", "late"]).assert_ok();
    env.ctl_pass(&["secret", "rm", "tok"]).assert_ok();
    env.unlock();

    let events: Vec<String> = std::fs::read_to_string(env.audit_path())
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON record"))
        .filter_map(|r| r["event"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        events,
        [
            "secret set tok",
            "unlock",
            "lock",
            "agent add late",
            "secret rm tok",
            "unlock"
        ],
        "every change is audited, locked or not"
    );
    env.ctl(&["audit", "verify"]).assert_ok();
    // Across a restart too.
    d.sigterm_and_wait();
    let _d = env.start_daemon();
    env.set_secret("again", b"another-value-1234");
    env.unlock();
    env.ctl(&["audit", "verify"]).assert_ok();
    assert_no_canary(&env, CANARY);
}

/// The agent makes a vault of its own (`vaultctl init` with a passphrase it
/// picks), swaps it in for `vault.bin` and runs `unlock` or a change with
/// that passphrase. vaultd used to check the passphrase against whatever
/// file was there: the agent's unlock cancelled the user's `unlock --for`
/// timer (the vault stayed unlocked past it), and unlocked a locked vaultd
/// with the agent's own vault. A vault that opens with another data key
/// than the one this vaultd unlocked is now refused, and nothing changes.
#[test]
fn a_vault_the_agent_swapped_in_is_refused_by_unlock_and_changes() {
    const AGENTS: &str = "the agent's own passphrase";
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    env.ctl_pass(&["unlock", "--for", "1h"]).assert_ok();
    assert!(env.ctl(&["status"]).stdout.contains("locks by itself in"));

    // The agent's vault, past the user's generation (the rollback check).
    let theirs = VaultEnv::new();
    theirs
        .ctl_cmd(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"])
        .passphrase(AGENTS)
        .run()
        .assert_ok();
    let d2 = theirs.start_daemon();
    theirs
        .ctl_cmd(&["unlock"])
        .passphrase(AGENTS)
        .run()
        .assert_ok();
    for i in 0..20 {
        theirs
            .ctl_cmd(&["secret", "set", &format!("s{i}"), "--from-stdin"])
            .passphrase(AGENTS)
            .stdin(b"agent-value")
            .run()
            .assert_ok();
    }
    drop(d2);

    let mine = vault_bytes(&env);
    std::fs::write(
        env.vault_path(),
        std::fs::read(theirs.vault_path()).unwrap(),
    )
    .unwrap();
    let swapped = vault_bytes(&env);
    for args in [&["unlock"][..], &["secret", "set", "x", "--from-stdin"][..]] {
        let out = env.ctl_cmd(args).passphrase(AGENTS).stdin(b"v").run();
        out.assert_fail();
        assert!(
            out.stderr
                .contains("is not the vault this vaultd opened before"),
            "{args:?}: {out}"
        );
        assert_eq!(vault_bytes(&env), swapped, "{args:?} changed the file");
    }
    let status = env.ctl(&["status"]).stdout;
    assert!(
        status.contains("locks by itself in"),
        "the timer is gone:\n{status}"
    );

    // Locked, the same swap does not unlock it either.
    env.lock();
    let out = env.ctl_cmd(&["unlock"]).passphrase(AGENTS).run();
    out.assert_fail();
    assert!(
        out.stderr
            .contains("is not the vault this vaultd opened before"),
        "{out}"
    );
    assert_eq!(env.status_json()["state"], "locked");

    // The user's own vault, put back, unlocks as before.
    std::fs::write(env.vault_path(), mine).unwrap();
    env.unlock();
    assert_eq!(env.status_json()["state"], "unlocked");
    assert_no_canary(&env, CANARY);
}
