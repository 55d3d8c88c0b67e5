//! Policy and `vaultd.toml` validation through the real binaries (audit items
//! 1, 9, 12 and 13): what used to be accepted, or rewritten, or explained in
//! terms the user cannot act on, is refused with FILE:LINE (or the config
//! path) and what to write instead.
//!
//! - [`unusable_ca_file_is_refused_by_dry_run_and_apply`]: a PEM-armoured
//!   ca_file that is not a certificate is refused by `--dry-run` and by the
//!   real apply alike, the vault file is not rewritten, and the vault still
//!   unlocks; a real CA is accepted and survives lock/unlock.
//! - [`policy_mistakes_are_refused_with_what_to_write`]: foreign auth keys,
//!   reserved header names, base URLs the URL parser would rewrite, and TOML
//!   type errors, each on its line.
//! - [`vaultd_refuses_a_bad_config`]: `log = "loud"`, `upstream_ports = [0]`
//!   and a directory as `--config` stop vaultd at start with one clear line.
//! - [`a_credential_that_cannot_go_in_a_header_is_refused`]: a secret with a
//!   line break is refused as a bearer or header credential, by `policy
//!   apply` and by `secret set` of a secret such a service uses, and accepted
//!   for basic auth (which base64-encodes it); refused changes change nothing.
//! - [`apply_warns_of_services_vaultd_cannot_reach`]: a base URL port outside
//!   `upstream_ports` or a private literal address without
//!   `allow_private_network` is applied, with a warning saying what to do.

use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use vaultd_tests::{CmdOutput, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-policy-validation-5f1e2d3c";

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Asserts a failure exit whose stderr has a line containing all of `needles`.
#[track_caller]
fn refused_with(out: &CmdOutput, needles: &[&str]) {
    out.assert_fail();
    assert!(
        out.stderr
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n))),
        "no stderr line with all of {needles:?}:\n{out}"
    );
    assert!(out.stderr.contains("not applied"), "{out}");
}

fn bearer_service(ca_file: &Path) -> String {
    format!(
        "[[service]]\nname = \"s\"\nbase_url = \"https://api.example.com\"\n\
         auth = {{ type = \"bearer\", secret = \"t\" }}\nca_file = \"{}\"\n",
        ca_file.display()
    )
}

#[test]
fn unusable_ca_file_is_refused_by_dry_run_and_apply() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("t", CANARY.as_bytes());
    let bad = env.write_input(
        "bad.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let policy = env.write_input("bad-ca.toml", bearer_service(&bad).as_bytes());
    let p = policy.to_string_lossy().to_string();
    let before = read(&env.vault_path());
    let at_line = format!("{p}:5: ca_file \"{}\"", bad.display());
    for args in [
        vec!["policy", "apply", "--dry-run", &p],
        vec!["policy", "apply", &p],
    ] {
        let out = env.ctl_pass(&args);
        refused_with(
            &out,
            &[
                &at_line,
                "cannot be used as a CA certificate",
                "or remove ca_file",
            ],
        );
        assert_eq!(
            read(&env.vault_path()),
            before,
            "a refused policy rewrote the vault: {out}"
        );
    }
    env.lock();
    env.unlock();

    // A real CA passes the same check, and the sealed PEM builds at unlock.
    let good = env.write_input("good-ca.toml", bearer_service(&env.ca_file()).as_bytes());
    let g = good.to_string_lossy().to_string();
    env.ctl_pass(&["policy", "apply", "--dry-run", &g])
        .assert_ok();
    env.ctl_pass(&["policy", "apply", &g]).assert_ok();
    env.lock();
    env.unlock();
    let shown = env.ctl(&["policy", "show"]);
    shown.assert_ok();
    assert!(shown.stdout.contains("ca_file = "), "{shown}");
    assert_no_canary(&env, CANARY);
}

#[test]
fn policy_mistakes_are_refused_with_what_to_write() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("t", CANARY.as_bytes());
    let before = read(&env.vault_path());

    // Several mistakes in one file: each is listed on its own line.
    let out = env.try_apply_policy(
        r#"[[service]]
name = "a"
base_url = "https://h.example/a/../b/%2e%2e/c"
auth = { type = "bearer", secret = "t", username = "me" }

[[service]]
name = "b"
base_url = "https://h.example/v1//x"
auth = { type = "header", name = "Host", secret = "t" }

[[service]]
name = "c"
base_url = "https://h.example/v1?x=1"
auth = { type = "header", name = "Transfer-Encoding", secret = "t" }
"#,
    );
    for needles in [
        &[
            ":3: base_url",
            "\".\" or \"..\" path segment",
            "e.g. \"https://h.example/c\"",
        ][..],
        &[
            ":4: auth type \"bearer\" does not use username: remove it",
            "{ type = \"bearer\", secret = \"NAME\" }",
        ],
        &[
            ":8: base_url",
            "empty path segment (//): write \"https://h.example/v1/x\"",
        ],
        &[":9: auth header name \"Host\" cannot carry a credential"],
        &[":13: base_url", "must not contain ? or #"],
        &[":14: auth header name \"Transfer-Encoding\" cannot carry a credential"],
    ] {
        refused_with(&out, needles);
    }

    // A TOML type error says what the field takes and where the format is.
    let out = env.try_apply_policy(
        "[[service]]\nname = \"s\"\nbase_url = \"https://h.example\"\n\
         auth = { type = \"bearer\", secret = \"t\" }\nmax_response_bytes = \"1MB\"\n",
    );
    refused_with(
        &out,
        &[
            ":5: max_response_bytes must be a whole number of bytes without quotes, like 1048576",
            "README.md",
            "vaultctl policy show",
        ],
    );
    assert!(
        !out.stderr.contains("i64") && !out.stderr.contains("DESIGN.md"),
        "{out}"
    );

    // Authorization with a custom prefix is a legitimate header auth.
    env.apply_policy(
        "[[service]]\nname = \"s\"\nbase_url = \"https://h.example/v1/\"\n\
         auth = { type = \"header\", name = \"Authorization\", secret = \"t\", prefix = \"Token \" }\n",
    );
    assert_ne!(read(&env.vault_path()), before);
    assert_no_canary(&env, CANARY);
}

#[test]
fn a_credential_that_cannot_go_in_a_header_is_refused() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    // A value pasted with a line break inside (or two trailing newlines, of
    // which `secret set` drops one) is stored: no service uses it yet.
    env.set_secret("t", format!("{CANARY}\r\nX-Injected: 1").as_bytes());
    env.set_secret("h", CANARY.as_bytes());
    let before = read(&env.vault_path());

    let out = env.try_apply_policy(
        "[[service]]\nname = \"s\"\nbase_url = \"https://h.example/\"\n\
         auth = { type = \"bearer\", secret = \"t\" }\n\n\
         [[service]]\nname = \"u\"\nbase_url = \"https://h.example/\"\n\
         auth = { type = \"header\", name = \"X-Key\", secret = \"t\" }\n",
    );
    for line in [":4: ", ":9: "] {
        refused_with(
            &out,
            &[
                line,
                "secret \"t\" holds a line break or another control character, which cannot go in an HTTP header",
                "`vaultctl secret set t`",
            ],
        );
    }
    assert_eq!(
        read(&env.vault_path()),
        before,
        "a refused policy changed the vault"
    );
    // Bytes outside ASCII: a server reads them as Latin-1 and may echo
    // `\u00e9` or its UTF-8, which the scrubber does not know.
    env.set_secret("latin", format!("{CANARY}\u{e9}").as_bytes());
    let before = read(&env.vault_path());
    let out = env.try_apply_policy(
        "[[service]]\nname = \"s\"\nbase_url = \"https://h.example/\"\n\
         auth = { type = \"bearer\", secret = \"latin\" }\n",
    );
    refused_with(
        &out,
        &[
            "secret \"latin\" holds bytes outside ASCII",
            "`vaultctl secret set latin`",
        ],
    );
    assert_eq!(
        read(&env.vault_path()),
        before,
        "a refused policy changed the vault"
    );

    // Basic auth sends base64(username:secret): any byte can go there.
    env.apply_policy(
        "[[service]]\nname = \"s\"\nbase_url = \"https://h.example/\"\n\
         auth = { type = \"basic\", username = \"me\", secret = \"t\" }\n\n\
         [[service]]\nname = \"u\"\nbase_url = \"https://h.example/\"\n\
         auth = { type = \"header\", name = \"X-Key\", secret = \"h\" }\n",
    );

    // A secret a header service uses cannot be set to such a value either.
    let before = read(&env.vault_path());
    let out = env.ctl_with(
        &["secret", "set", "h", "--from-fd", "4"],
        Some(vaultd_tests::PASSPHRASE),
        None,
        &[(4, format!("{CANARY}\n\n").as_bytes())],
    );
    out.assert_fail();
    assert!(
        out.stderr.contains("service u uses this secret")
            && out.stderr.contains("holds a line break")
            && out.stderr.contains("nothing was stored"),
        "{out}"
    );
    assert_eq!(
        read(&env.vault_path()),
        before,
        "a refused secret set changed the vault"
    );
    // ... and one with a single trailing newline is stored without it.
    env.ctl_with(
        &["secret", "set", "h", "--from-fd", "4"],
        Some(vaultd_tests::PASSPHRASE),
        None,
        &[(4, format!("{CANARY}\n").as_bytes())],
    )
    .assert_ok();
    assert_no_canary(&env, CANARY);
}

/// Runs `vaultd ARGS` and returns (exit code, stderr); kills it after 10 s
/// (a vaultd that starts on a bad config never exits by itself).
fn run_vaultd(env: &VaultEnv, args: &[&str]) -> (Option<i32>, String) {
    let mut child = env
        .command(&env.bins().vaultd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vaultd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait vaultd") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    env.record_output("vaultd stderr", stderr.as_bytes());
    match status {
        Some(st) => (st.code(), stderr),
        None => panic!("vaultd {args:?} was still running after 10 s; stderr:\n{stderr}"),
    }
}

#[test]
fn vaultd_refuses_a_bad_config() {
    let env = VaultEnv::new();
    env.init();
    let config = env.config_path().display().to_string();
    for (toml, needles) in [
        (
            "log = \"loud\"\n",
            &[
                "\"loud\" is not a level",
                "off, error, warn, info, debug, trace",
            ][..],
        ),
        (
            "upstream_ports = [443, 0]\n",
            &["upstream_ports", "contains 0", "[443]"],
        ),
    ] {
        env.write_config(toml);
        let (code, stderr) = run_vaultd(&env, &[]);
        assert_eq!(code, Some(1), "{toml}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(&config))
            .unwrap_or_else(|| panic!("{toml}: no line names {config}:\n{stderr}"));
        for n in needles {
            assert!(line.contains(n), "{toml}: {n:?} missing in:\n{stderr}");
        }
    }

    // A directory given as --config: one message, the OS error not repeated.
    let dir = env.logs_dir().to_path_buf();
    let (code, stderr) = run_vaultd(&env, &["--config", &dir.to_string_lossy()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is a directory", dir.display()))
            && stderr.matches("directory").count() == 1,
        "{stderr}"
    );

    // A --config file that does not exist is an error, not the defaults.
    let missing = env.root().join("no-such-vaultd.toml");
    let (code, stderr) = run_vaultd(&env, &["--config", &missing.to_string_lossy()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("--config"),
        "{stderr}"
    );
}

/// A policy whose services vaultd cannot reach as it runs now is valid (the
/// user may be about to change `vaultd.toml`), but `policy apply` says so at
/// once instead of leaving it to the first call: a port outside
/// `upstream_ports`, and a private literal address without
/// `allow_private_network`. A reachable service gets no warning.
#[test]
fn apply_warns_of_services_vaultd_cannot_reach() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    env.set_secret("t", CANARY.as_bytes());
    let out = env.apply_policy(
        r#"[[service]]
name = "odd-port"
base_url = "https://api.example.com:8443/v1"
auth = { type = "bearer", secret = "t" }

[[service]]
name = "private"
base_url = "https://10.0.0.5"
auth = { type = "bearer", secret = "t" }

[[service]]
name = "fine"
base_url = "https://api.example.com"
auth = { type = "bearer", secret = "t" }
"#,
    );
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: service "))
        .collect();
    assert_eq!(warnings.len(), 2, "{out}");
    // The policy grants no capability yet: said once, apart.
    assert!(out.stderr.contains("grants no capability"), "{out}");
    assert!(
        warnings[0].contains("\"odd-port\" uses port 8443")
            && warnings[0].contains("upstream_ports = [443]")
            && warnings[0].contains("restart vaultd"),
        "{out}"
    );
    assert!(
        warnings[1].contains("\"private\" points at 10.0.0.5")
            && warnings[1].contains("allow_private_network = true"),
        "{out}"
    );
    assert!(out.stdout.contains("policy applied: 3 service(s)"), "{out}");
    assert_no_canary(&env, CANARY);
}
