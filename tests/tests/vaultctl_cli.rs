//! vaultctl's command line as a user meets it, on the real binaries
//! (acceptance audit, area "cli", items 4, 5, 8, 10, 11 and 12).
//!
//! - `fd_*` (4): `--passphrase-fd`, `--new-passphrase-fd` and `--from-fd` read the
//!   inherited descriptor itself: at its offset, from a socket, and one
//!   descriptor can carry the passphrase then the new passphrase or the secret.
//! - `token_file_*` (5): `agent add --token-file` opens the file before the
//!   agent is created.
//! - `audit_follow_*` (8): a follow ended by `lock` says so, exit 1.
//! - `init_without_xdg_runtime_dir` (10).
//! - `uninitialized_then_locked_*`, `mcp_config_advice_works` (11): next steps
//!   that work.
//! - `closed_stdout_*`, `kdf_*`, `oversized_*` (12).

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt as _, FdMapping};
use vaultd_tests::{CmdOutput, PASSPHRASE, TlsKind, Upstream, VaultEnv, assert_no_canary};

// ---------------------------------------------------------------------------
// Helpers.

/// Runs `vaultctl ARGS` with the given descriptors (files, sockets) as the
/// child's fds, stdin `/dev/null`; killed after 30 s.
#[track_caller]
fn ctl_fds(env: &VaultEnv, args: &[&str], fds: Vec<(i32, OwnedFd)>) -> CmdOutput {
    let mut cmd = env.command(&env.bins().vaultctl);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mappings = fds
        .into_iter()
        .map(|(child_fd, fd)| FdMapping {
            parent_fd: fd,
            child_fd,
        })
        .collect();
    cmd.fd_mappings(mappings).expect("distinct child fds");
    let child = cmd.spawn().expect("spawn vaultctl");
    drop(cmd);
    finish(env, args, child)
}

#[track_caller]
fn finish(env: &VaultEnv, args: &[&str], mut child: std::process::Child) -> CmdOutput {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status: ExitStatus = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vaultctl {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let label = format!("vaultctl (custom fds) {}", args.join(" "));
    env.record_output(&format!("{label} stdout"), stdout.as_bytes());
    env.record_output(&format!("{label} stderr"), stderr.as_bytes());
    CmdOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        stdout,
        stderr,
    }
}

/// A file holding `contents`, opened for reading and positioned at `offset`.
fn file_at(env: &VaultEnv, name: &str, contents: &[u8], offset: u64) -> OwnedFd {
    let p = env.write_input(name, contents);
    let mut f = std::fs::File::open(&p).expect("open input");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.into()
}

/// A vault with a running, unlocked daemon.
fn unlocked_env() -> (VaultEnv, vaultd_tests::Daemon) {
    let env = VaultEnv::new();
    env.init();
    let d = env.start_daemon();
    env.unlock();
    (env, d)
}

/// `vaultctl unlock` (after a lock) with `passphrase` on fd 3.
fn unlock_with(env: &VaultEnv, passphrase: &str) -> CmdOutput {
    env.lock();
    env.ctl_cmd(&["unlock"]).passphrase(passphrase).run()
}

// ---------------------------------------------------------------------------
// Item 4: file descriptors.

/// `passwd --passphrase-fd 3 --new-passphrase-fd 3 3<FILE` with "OLD\nNEW\n",
/// the file already read past a first line by the parent: vaultctl starts at
/// the descriptor's offset, takes the old passphrase, then the new one.
#[test]
fn fd_passwd_reads_old_then_new_from_one_file_at_its_offset() {
    let (env, _d) = unlocked_env();
    let new = "the new passphrase, from the same descriptor";
    let contents = format!("already consumed by the caller\n{PASSPHRASE}\n{new}\n");
    let skip = "already consumed by the caller\n".len() as u64;
    let fd = file_at(&env, "passwd.txt", contents.as_bytes(), skip);
    let out = ctl_fds(
        &env,
        &["--passphrase-fd", "3", "passwd", "--new-passphrase-fd", "3"],
        vec![(3, fd)],
    );
    out.assert_ok();
    assert!(out.stdout.contains("passphrase changed"), "{out}");
    // The new passphrase is NEW, not the old one read a second time.
    let old = unlock_with(&env, PASSPHRASE);
    old.assert_fail();
    unlock_with(&env, new).assert_ok();

    // Through a pipe, the same idiom: "NEW\nBACK\n" on one fd 3.
    let back = "and back again through a pipe";
    let out = env
        .ctl_cmd(&["--passphrase-fd", "3", "passwd", "--new-passphrase-fd", "3"])
        .fd(3, format!("{new}\n{back}\n").as_bytes())
        .run();
    out.assert_ok();
    unlock_with(&env, back).assert_ok();

    // Only one line on the pipe: the error says that the NEW passphrase is missing.
    let out = env
        .ctl_cmd(&["--passphrase-fd", "3", "passwd", "--new-passphrase-fd", "3"])
        .fd(3, format!("{back}\n").as_bytes())
        .run();
    out.assert_fail();
    assert!(
        out.stderr.contains("the new passphrase is empty")
            && out.stderr.contains("--new-passphrase-fd 3")
            && out.stderr.contains("end of file"),
        "{out}"
    );
    // And an empty first line names the passphrase itself.
    let out = env
        .ctl_cmd(&["--passphrase-fd", "3", "passwd", "--new-passphrase-fd", "3"])
        .fd(3, b"\nsomething\n")
        .run();
    out.assert_fail();
    assert!(
        out.stderr.contains("vaultctl: the passphrase is empty")
            && out.stderr.contains("--passphrase-fd 3"),
        "{out}"
    );
    unlock_with(&env, back).assert_ok();
}

/// `--passphrase-fd 4` naming one end of a socketpair (the /dev/fd/N reopen
/// refused sockets): the passphrase line is read, and vaultctl does not wait
/// for end of file (the other end stays open).
#[test]
fn fd_passphrase_from_a_socket() {
    let env = VaultEnv::new();
    env.init();
    let _d = env.start_daemon();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut ours = ours;
    ours.write_all(format!("{PASSPHRASE}\n").as_bytes())
        .expect("write passphrase");
    let out = ctl_fds(
        &env,
        &["--passphrase-fd", "4", "unlock"],
        vec![(4, theirs.into())],
    );
    out.assert_ok();
    assert_eq!(env.status_json()["state"], "unlocked");
    drop(ours);
}

/// A descriptor that is not open is named, before anything is sent.
#[test]
fn fd_closed_descriptor_is_named() {
    let env = VaultEnv::new();
    env.init();
    let before = std::fs::read(env.vault_path()).unwrap();
    let out = env
        .ctl_cmd(&["secret", "set", "x", "--from-fd", "7"])
        .passphrase(PASSPHRASE)
        .run();
    out.assert_fail();
    assert!(
        out.stderr.contains("--from-fd 7") && out.stderr.contains("file descriptor 7 is not open"),
        "{out}"
    );
    let out = env.ctl(&["--passphrase-fd", "5", "unlock"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("file descriptor 5 is not open"),
        "{out}"
    );
    assert_eq!(std::fs::read(env.vault_path()).unwrap(), before);
}

/// `--passphrase-fd 3 secret set tok --from-fd 3` with "PASSPHRASE\nVALUE" on
/// one pipe: the passphrase is read first, the value is the rest; proven by
/// the credential the upstream receives.
#[test]
fn fd_passphrase_then_secret_on_one_descriptor() {
    let canary = "CANARY-one-fd-7d1f0e";
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    env.init();
    env.allow_ports(&[up.port()]);
    let _d = env.start_daemon();
    env.unlock();
    let out = env
        .ctl_cmd(&[
            "--passphrase-fd",
            "3",
            "secret",
            "set",
            "tok",
            "--from-fd",
            "3",
        ])
        .fd(3, format!("{PASSPHRASE}\n{canary}\n").as_bytes())
        .run();
    out.assert_ok();
    assert!(out.stdout.contains("stored secret tok"), "{out}");
    env.apply_policy(&vaultd_tests_policy(&env, &up));
    let token = env.add_agent("a");
    let got = execute(&env, &token, "/echo");
    assert_eq!(got.0, 200, "{got:?}");
    let reqs = up.requests();
    assert_eq!(
        reqs.last().and_then(|r| r.header("authorization")),
        Some(format!("Bearer {canary}").as_str())
    );
    assert_no_canary(&env, canary);
}

fn vaultd_tests_policy(env: &VaultEnv, up: &Upstream) -> String {
    vaultd_tests::policy::one_service(env, &up.url(), "", "echo", r#"allow = ["GET /**"]"#)
}

/// One `execute` straight over gRPC: (status, body).
fn execute(env: &VaultEnv, token: &str, path: &str) -> (u32, String) {
    env.with_grpc(async |mut c| {
        let r = c
            .execute(vault_proto::v1::ExecuteRequest {
                agent_token: token.to_string(),
                capability: "echo".to_string(),
                method: "GET".to_string(),
                path: path.to_string(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("execute: {:?}: {}", s.code(), s.message()))
            .into_inner();
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    })
}

// ---------------------------------------------------------------------------
// Item 5: `agent add --token-file`.

/// A token file that cannot be written creates no agent (checked before the
/// RPC); a refused `agent add` leaves an existing token file as it was and
/// removes one it created.
#[test]
fn token_file_is_checked_before_the_agent_is_created() {
    use std::os::unix::fs::PermissionsExt as _;
    let (env, mut d) = unlocked_env();
    let dir = env.root().join("tokens");
    std::fs::create_dir_all(&dir).unwrap();
    // A directory of the user's keeps its mode: a refused add changes nothing.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vault_before = std::fs::read(env.vault_path()).unwrap();
    let out = env.ctl_pass(&["agent", "add", "a", "--token-file", &dir.to_string_lossy()]);
    out.assert_fail();
    assert!(
        out.stderr.contains("is a directory") && out.stderr.contains("nothing was created"),
        "{out}"
    );
    assert_eq!(std::fs::read(env.vault_path()).unwrap(), vault_before);
    let list = env.ctl(&["agent", "list"]);
    list.assert_ok();
    assert!(!list.stdout.contains('a'), "agent a was created:\n{list}");

    // A good path: 0600, the token, and the agent works.
    let file = dir.join("a.token");
    let out = env.ctl_pass(&["agent", "add", "a", "--token-file", &file.to_string_lossy()]);
    out.assert_ok();
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(token.trim().len() >= 20, "{token:?}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A second add is refused by the daemon: the existing file keeps its token,
    // and a new file named for it is not left behind.
    let out = env.ctl_pass(&["agent", "add", "a", "--token-file", &file.to_string_lossy()]);
    out.assert_fail();
    assert!(out.stderr.contains("already has a token"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), token);
    let other = dir.join("other.token");
    let out = env.ctl_pass(&[
        "agent",
        "add",
        "a",
        "--token-file",
        &other.to_string_lossy(),
    ]);
    out.assert_fail();
    assert!(
        !other.exists(),
        "a refused agent add left {}",
        other.display()
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o755,
        "a refused agent add changed the mode of {}",
        dir.display()
    );
    // Only the token file is replaced (renamed over, never left empty).
    assert!(
        std::fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "a temporary token file was left in {}",
        dir.display()
    );
    // Nor when vaultd is not there to ask.
    d.kill9();
    let out = env.ctl_pass(&[
        "agent",
        "add",
        "b",
        "--token-file",
        &other.to_string_lossy(),
    ]);
    out.assert_fail();
    assert!(out.stderr.contains("not running"), "{out}");
    assert!(
        !other.exists(),
        "agent add without vaultd left {}",
        other.display()
    );
}

// ---------------------------------------------------------------------------
// Item 8: `audit tail -f` and the lock.

/// A follow ended by `vaultctl lock` says so and how to resume, exit 1; a
/// follow started while locked says that `-n` works while locked.
#[test]
fn audit_follow_ended_by_lock_says_so() {
    let (env, _d) = unlocked_env();
    let mut tail = env.ctl_cmd(&["audit", "tail", "-f", "-n", "5"]).spawn();
    tail.wait_for_stdout("unlock", Duration::from_secs(10));
    env.lock();
    let out = tail.wait(Duration::from_secs(10));
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("the vault was locked")
            && out.stderr.contains("vaultctl unlock")
            && out.stderr.contains("vaultctl audit tail -f` again"),
        "{out}"
    );
    let out = env.ctl(&["audit", "tail", "-f"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("locked") && out.stderr.contains("audit tail -n"),
        "{out}"
    );
    assert!(!out.stderr.contains("ask the user"), "{out}");
    env.ctl(&["audit", "tail", "-n", "1"]).assert_ok();
}

// ---------------------------------------------------------------------------
// Item 10: no XDG_RUNTIME_DIR.

/// `init` needs no daemon, hence no socket: it works without VAULTD_HOME and
/// XDG_RUNTIME_DIR (an empty variable counts as unset); a command that needs
/// vaultd then names the variables to set.
#[test]
fn init_without_xdg_runtime_dir() {
    let env = VaultEnv::new();
    fn unset(c: vaultd_tests::Ctl<'_>) -> vaultd_tests::Ctl<'_> {
        c.env("VAULTD_HOME", "").env("XDG_RUNTIME_DIR", "")
    }
    let out = unset(env.ctl_cmd(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]))
        .passphrase(PASSPHRASE)
        .run();
    out.assert_ok();
    let vault = env.root().join("xdg/data/vaultd/vault.bin");
    assert!(vault.is_file(), "no {}:\n{out}", vault.display());
    assert!(out.stderr.contains("next: start vaultd"), "{out}");
    let out = unset(env.ctl_cmd(&["status"])).run();
    out.assert_fail();
    for var in ["XDG_RUNTIME_DIR", "VAULTD_SOCKET", "VAULTD_HOME"] {
        assert!(out.stderr.contains(var), "{var} not named:\n{out}");
    }
}

// ---------------------------------------------------------------------------
// Item 11: next steps.

/// Against a daemon with no vault, read commands (`audit tail` too, which
/// used to print nothing and exit 0) say to run `init`; `init` with vaultd
/// running says `unlock` next; an empty audit log is said to be empty; a locked vault says "run
/// `vaultctl unlock`" to vaultctl's own user.
#[test]
fn uninitialized_then_locked_say_what_to_run() {
    let env = VaultEnv::new();
    let _d = env.start_daemon();
    for args in [
        &["secret", "list"][..],
        &["agent", "list"],
        &["policy", "show"],
        &["audit", "tail"],
        &["audit", "verify"],
    ] {
        let out = env.ctl(args);
        out.assert_fail();
        assert!(
            out.stderr.contains("vaultctl init") && !out.stderr.contains("ask the user"),
            "{out}"
        );
    }
    let out = env.ctl_pass(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    out.assert_ok();
    assert!(
        out.stderr.contains("vaultctl unlock") && !out.stderr.contains("start vaultd"),
        "{out}"
    );
    // A vault that was never unlocked has no records: said on stderr only.
    let out = env.ctl(&["audit", "tail", "--json"]);
    out.assert_ok();
    assert!(
        out.stdout.is_empty() && out.stderr.contains("no audit records yet"),
        "{out}"
    );
    let out = env.ctl(&["secret", "list"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("run `vaultctl unlock`") && !out.stderr.contains("ask the user"),
        "{out}"
    );
    env.unlock();
    env.ctl(&["secret", "list"]).assert_ok();
}

/// `mcp-config` for an agent that already has a token suggests what works
/// (and the suggestion does work); for an unknown agent it warns; when it
/// cannot ask vaultd it says so.
#[test]
fn mcp_config_advice_works() {
    let (env, _d) = unlocked_env();
    env.add_agent("cursor");
    let tf = env.root().join("cursor.token");
    let tfs = tf.to_string_lossy().into_owned();
    let out = env.ctl(&["mcp-config", "--agent", "cursor", "--token-file", &tfs]);
    out.assert_ok();
    let rm_add =
        format!("vaultctl agent rm cursor && vaultctl agent add cursor --token-file {tfs}");
    assert!(
        out.stderr.contains("already has a token")
            && out.stderr.contains(&rm_add)
            && out.stderr.contains("revokes the old token")
            && out.stderr.contains("vaultctl policy apply"),
        "{out}"
    );
    // The advice, run as given, works.
    env.ctl_pass(&["agent", "rm", "cursor"]).assert_ok();
    env.ctl_pass(&["agent", "add", "cursor", "--token-file", &tfs])
        .assert_ok();
    let out = env.ctl(&["mcp-config", "--agent", "cursor", "--token-file", &tfs]);
    out.assert_ok();
    assert!(
        !out.stderr.contains("note:") && !out.stderr.contains("warning:"),
        "{out}"
    );

    let out = env.ctl(&["mcp-config", "--agent", "ghost"]);
    out.assert_ok();
    assert!(
        out.stderr
            .contains("warning: the vault has no agent named \"ghost\"")
            && out.stderr.contains("vaultctl agent add ghost --token-file"),
        "{out}"
    );
    env.lock();
    let out = env.ctl(&["mcp-config", "--agent", "ghost"]);
    out.assert_ok();
    assert!(
        out.stderr
            .contains("could not check that agent ghost exists (the vault is locked)"),
        "{out}"
    );
}

/// Output for scripts stays what it says: `agent add --json --token-file`
/// prints JSON naming the file, `agent list` prints NAME<TAB>CAPABILITIES
/// (hints go to stderr), `audit tail --json` prints one object per line
/// even for a damaged line, and `mcp-config` refuses a name `agent add`
/// would refuse, writing nothing.
#[test]
fn script_output_stays_machine_readable() {
    let (env, _d) = unlocked_env();
    let tf = env.root().join("j.token");
    let out = env.ctl_pass(&[
        "agent",
        "add",
        "j",
        "--json",
        "--token-file",
        &tf.to_string_lossy(),
    ]);
    out.assert_ok();
    assert_eq!(
        out.json(),
        serde_json::json!({"name": "j", "token_file": tf.to_string_lossy()})
    );
    let token = std::fs::read_to_string(&tf).unwrap();
    assert!(!out.stdout.contains(token.trim()), "{out}");

    let policy = env.write_input("declared.toml", b"[[agent]]\nname = \"later\"\n");
    env.ctl_pass(&["policy", "apply", &policy.to_string_lossy()])
        .assert_ok();
    let list = env.ctl(&["agent", "list"]);
    list.assert_ok();
    for line in list.stdout.lines() {
        assert_eq!(line.split('\t').count(), 2, "{list}");
    }
    assert!(
        list.stdout.lines().any(|l| l.starts_with("later\t")),
        "{list}"
    );
    assert!(
        list.stderr
            .contains("agent later has no token yet: `vaultctl agent add later`"),
        "{list}"
    );

    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(env.audit_path())
        .unwrap();
    std::io::Write::write_all(&mut log, b"not json\n").unwrap();
    let tail = env.ctl(&["audit", "tail", "-n", "2", "--json"]);
    let lines: Vec<serde_json::Value> = tail
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        lines.last(),
        Some(&serde_json::json!({"unreadable_record": "not json"})),
        "{tail}"
    );

    for bad in ["bad name", "a/b", ""] {
        let out = env.ctl(&["mcp-config", "--agent", bad]);
        out.assert_fail();
        assert!(
            out.stderr.contains("must be 1-64 characters")
                && out.stderr.contains("vaultctl agent list"),
            "{bad:?}: {out}"
        );
        assert!(out.stdout.is_empty(), "{out}");
    }
}

/// `policy apply` lists every problem of a file at once, also when a
/// `ca_file` cannot be read (it used to stop at those), and applies nothing.
#[test]
fn policy_apply_lists_every_problem_with_an_unreadable_ca_file() {
    let (env, _d) = unlocked_env();
    let shown_before = env.ctl(&["policy", "show"]).stdout;
    let policy = env.write_input(
        "p.toml",
        br#"[[service]]
name = "s"
base_url = "https://api.example.com"
auth = { type = "bearer", secret = "no-such-secret" }
ca_file = "/nonexistent/ca.pem"

[[capability]]
name = "c"
service = "s"
agents = []
allow = ["get /x"]
"#,
    );
    let out = env.ctl_pass(&["policy", "apply", &policy.to_string_lossy()]);
    out.assert_fail();
    for problem in [
        "cannot read ca_file /nonexistent/ca.pem",
        "no-such-secret",
        "get /x",
    ] {
        assert!(
            out.stderr.contains(problem),
            "{problem:?} not listed:\n{out}"
        );
    }
    assert!(!out.stderr.contains("could not be read"), "{out}");
    assert!(out.stderr.contains("the policy was not applied"), "{out}");
    assert_eq!(env.ctl(&["policy", "show"]).stdout, shown_before);
}

// ---------------------------------------------------------------------------
// Item 12: error messages.

/// stdout closed before vaultctl writes (`vaultctl status | head -0`): no
/// panic, no backtrace, exit 141 like a program ended by SIGPIPE.
#[test]
fn closed_stdout_is_not_a_panic() {
    let (env, _d) = unlocked_env();
    for args in [
        &["status"][..],
        &["mcp-config", "--agent", "x"],
        &["audit", "tail"],
    ] {
        let (r, w) = std::io::pipe().expect("pipe");
        drop(r);
        let mut cmd = env.command(&env.bins().vaultctl);
        cmd.args(args).stdout(w).stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn");
        drop(cmd);
        let out = finish(&env, args, child);
        assert_eq!(out.code(), Some(141), "{out}");
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("Broken pipe"),
            "{out}"
        );
    }
    // `agent add` whose token cannot be printed: the agent exists, so it is an
    // error that says how to recover, not a quiet exit.
    let (r, w) = std::io::pipe().expect("pipe");
    drop(r);
    let pass = file_at(&env, "pass.txt", format!("{PASSPHRASE}\n").as_bytes(), 0);
    let args = ["--passphrase-fd", "3", "agent", "add", "z"];
    let mut cmd = env.command(&env.bins().vaultctl);
    cmd.args(args).stdout(w).stderr(Stdio::piped());
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: pass,
        child_fd: 3,
    }])
    .expect("fd 3");
    let child = cmd.spawn().expect("spawn");
    drop(cmd);
    let out = finish(&env, &args, child);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("could not be printed")
            && out.stderr.contains("vaultctl agent rm z")
            && !out.stderr.contains("panicked"),
        "{out}"
    );
}

/// `--kdf-memory-mib` out of range is reported in MiB as typed, with the range.
#[test]
fn kdf_memory_is_reported_in_mib() {
    let env = VaultEnv::new();
    for m in ["1", "999999999"] {
        let out = env
            .ctl_cmd(&["init", "--kdf-memory-mib", m, "--kdf-iterations", "1"])
            .passphrase(PASSPHRASE)
            .run();
        out.assert_fail();
        assert!(
            out.stderr.contains(&format!("got {m}\n"))
                && out.stderr.contains("8..=4096")
                && out.stderr.contains("--kdf-memory-mib")
                && !out.stderr.contains("KiB"),
            "{out}"
        );
        assert!(!env.vault_path().exists());
    }
}

/// A 20 MB secret or policy is refused by vaultctl before sending, naming
/// vaultd's limit; nothing changes.
#[test]
fn oversized_secret_and_policy_are_refused_before_sending() {
    let (env, _d) = unlocked_env();
    let before = std::fs::read(env.vault_path()).unwrap();
    let big = vec![b'x'; 20_000_000];
    let out = env
        .ctl_cmd(&["secret", "set", "big", "--from-fd", "4"])
        .passphrase(PASSPHRASE)
        .fd(4, &big)
        .run();
    out.assert_fail();
    assert!(
        out.stderr.contains("11 MiB")
            && out.stderr.contains("nothing was stored")
            && !out.stderr.contains("decoded message length"),
        "{out}"
    );
    let mut policy = String::from("[[agent]]\nname = \"a\"\n# ");
    policy.push_str(&"p".repeat(20_000_000));
    policy.push('\n');
    let out = env.try_apply_policy(&policy);
    out.assert_fail();
    assert!(
        out.stderr.contains("too large")
            && out.stderr.contains("11 MiB")
            && out.stderr.contains("not applied")
            && !out.stderr.contains("decoded message length"),
        "{out}"
    );
    // Files are read only up to the limit: /dev/zero as the policy or as a
    // service's ca_file is refused instead of filling vaultctl's memory.
    let out = env.ctl_pass(&["policy", "apply", "/dev/zero"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("too large") && out.stderr.contains("not applied"),
        "{out}"
    );
    let zero_ca = env.write_input(
        "zero-ca.toml",
        b"[[service]]\nname = \"s\"\nbase_url = \"https://api.example.com\"\n\
          auth = { type = \"bearer\", secret = \"s\" }\nca_file = \"/dev/zero\"\n",
    );
    let out = env.ctl_pass(&["policy", "apply", &zero_ca.to_string_lossy()]);
    out.assert_fail();
    assert!(
        out.stderr
            .contains("cannot read ca_file /dev/zero: it is too large")
            && out.stderr.contains("not applied"),
        "{out}"
    );
    assert_eq!(std::fs::read(env.vault_path()).unwrap(), before);
    // Just under the limit still goes through.
    env.set_secret("fits", &vec![b'y'; 10 << 20]);
}

/// `agent add --token-file` does not replace a file that holds the token of
/// another agent the vault still has (that agent's only copy; its MCP entry
/// would have answered as the new agent), and a symbolic link stays a link,
/// the token going to the file it names.
#[test]
fn agent_add_keeps_links_and_other_agents_tokens() {
    use std::os::unix::fs::PermissionsExt as _;
    let (env, _d) = unlocked_env();
    let dir = env.root().join("tokens");
    let a_file = dir.join("a.token");
    let add = |name: &str, file: &std::path::Path| {
        env.ctl_pass(&[
            "agent",
            "add",
            name,
            "--token-file",
            &file.to_string_lossy(),
        ])
    };
    add("a", &a_file).assert_ok();
    let a_token = std::fs::read(&a_file).unwrap();

    let out = add("b", &a_file);
    out.assert_fail();
    assert!(
        out.stderr.contains("holds the token of agent a")
            && out.stderr.contains("b.token")
            && out.stderr.contains("vaultctl agent rm a"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&a_file).unwrap(),
        a_token,
        "a's token was replaced"
    );
    assert!(
        !env.ctl(&["agent", "list"]).stdout.contains('b'),
        "b was created"
    );
    // On purpose, with --replace (a's entries then act as b2).
    env.ctl_pass(&[
        "agent",
        "add",
        "b2",
        "--token-file",
        &a_file.to_string_lossy(),
        "--replace",
    ])
    .assert_ok();
    assert_ne!(std::fs::read(&a_file).unwrap(), a_token);
    std::fs::write(&a_file, &a_token).unwrap();

    // A link to a file that does not exist yet (relative to the link's directory).
    let link = dir.join("link.token");
    std::os::unix::fs::symlink("target.token", &link).unwrap();
    add("c", &link).assert_ok();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a file"
    );
    let target = dir.join("target.token");
    assert!(std::fs::read_to_string(&target).unwrap().trim().len() >= 16);
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A chain of links: the last one's target gets the token, every link stays.
    let first = dir.join("l1.token");
    std::fs::create_dir_all(dir.join("cfg")).unwrap();
    std::os::unix::fs::symlink("cfg/l2.token", &first).unwrap();
    std::os::unix::fs::symlink("../real.token", dir.join("cfg/l2.token")).unwrap();
    add("d", &first).assert_ok();
    for link in [&first, &dir.join("cfg/l2.token")] {
        assert!(
            std::fs::symlink_metadata(link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{} was replaced by a file",
            link.display()
        );
    }
    assert!(
        std::fs::read_to_string(dir.join("real.token"))
            .unwrap()
            .trim()
            .len()
            >= 16
    );

    // Locked, vaultd cannot say whose token the file holds: refused too.
    env.lock();
    let out = add("e", &a_file);
    out.assert_fail();
    assert!(
        out.stderr.contains("cannot tell whose") && out.stderr.contains("--replace"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&a_file).unwrap(),
        a_token,
        "a's token was replaced"
    );
    env.unlock();

    // Once a is removed its token is dead, and its file may be reused.
    env.ctl_pass(&["agent", "rm", "a"]).assert_ok();
    add("b", &a_file).assert_ok();
    assert_ne!(std::fs::read(&a_file).unwrap(), a_token);
}

// ---------------------------------------------------------------------------
/// Review findings on messages: a secret typed after `secret set NAME` is
/// refused without being echoed (clap printed "unexpected argument
/// 'VALUE'"); an invalid auth secret name, port 0 and an oversized rate are
/// named as such; a policy that grants nothing says so; VAULTD_HOME naming a
/// file is named.
#[test]
fn mistakes_are_named_without_echoing_a_secret() {
    const ARGV_CANARY: &str = "CANARY-argv-7d1e55c0b3";
    let (env, _d) = unlocked_env();
    let out = env.ctl_pass(&["secret", "set", "gh", ARGV_CANARY]);
    out.assert_fail();
    assert!(
        out.stderr.contains("never on the command line")
            && !out.stderr.contains(ARGV_CANARY)
            && !out.stdout.contains(ARGV_CANARY),
        "{out}"
    );
    assert!(env.ctl(&["secret", "list"]).stdout.trim().is_empty());
    let typo = env.ctl_pass(&["secret", "set", "gh", "--from-stdn"]);
    typo.assert_fail();
    assert!(
        typo.stderr.contains("unknown option") && !typo.stderr.contains("rotate"),
        "{typo}"
    );
    // A secret typed in place of a descriptor number, or given to a flag
    // that takes no value, is named by its option, never quoted.
    let hyphen = format!("-{ARGV_CANARY}");
    let fd_eq = format!("--passphrase-fd={ARGV_CANARY}");
    let from_fd_eq = format!("--from-fd={ARGV_CANARY}");
    let stdin_eq = format!("--from-stdin={ARGV_CANARY}");
    for (args, said) in [
        (
            vec!["--passphrase-fd", ARGV_CANARY, "unlock"],
            "--passphrase-fd needs a descriptor number",
        ),
        (
            vec!["--passphrase-fd", &hyphen, "unlock"],
            "--passphrase-fd needs a descriptor number",
        ),
        (
            vec!["unlock", &fd_eq],
            "--passphrase-fd needs a descriptor number",
        ),
        (
            vec!["passwd", "--new-passphrase-fd", ARGV_CANARY],
            "--new-passphrase-fd needs a descriptor number",
        ),
        (
            vec!["secret", "set", "gh", "--from-fd", ARGV_CANARY],
            "--from-fd needs a descriptor number",
        ),
        (
            vec!["secret", "set", "gh", &from_fd_eq],
            "--from-fd needs a descriptor number",
        ),
        (
            vec!["secret", "set", "gh", &stdin_eq],
            "--from-stdin takes no value",
        ),
    ] {
        let out = env.ctl(&args);
        out.assert_fail();
        assert!(
            out.stderr.contains(said)
                && out.stderr.contains("not shown")
                && !out.stderr.contains(ARGV_CANARY)
                && !out.stdout.contains(ARGV_CANARY),
            "vaultctl {args:?}: {out}"
        );
    }

    env.set_secret("tok", b"0123456789abcdef");
    for (body, said) in [
        (
            r#"auth = { type = "bearer", secret = "bad name" }"#,
            "must be 1-128 characters",
        ),
        (
            r#"auth = { type = "bearer", secret = "tok" }
[[capability]]
name = "c"
service = "s"
rate_limit = "1000000000000/sec"
allow = ["GET /**"]"#,
            "more than the largest count",
        ),
    ] {
        let file = env.write_input(
            "p.toml",
            format!("[[service]]\nname = \"s\"\nbase_url = \"https://h.example\"\n{body}\n")
                .as_bytes(),
        );
        let out = env.ctl_pass(&["policy", "apply", file.to_str().unwrap()]);
        out.assert_fail();
        assert!(out.stderr.contains(said), "{out}");
        assert!(!out.stderr.contains("vaultctl secret set bad"), "{out}");
    }
    let file = env.write_input(
        "p.toml",
        b"[[service]]\nname = \"s\"\nbase_url = \"https://h.example:0\"\nauth = { type = \"bearer\", secret = \"tok\" }\n",
    );
    let out = env.ctl_pass(&["policy", "apply", file.to_str().unwrap()]);
    out.assert_fail();
    assert!(out.stderr.contains("port 0"), "{out}");
    let file = env.write_input("empty.toml", b"# nothing yet\n");
    let out = env.ctl_pass(&["policy", "apply", file.to_str().unwrap()]);
    out.assert_ok();
    assert!(out.stderr.contains("grants no capability"), "{out}");

    let not_a_dir = env.write_input("home-file", b"");
    let out = env
        .ctl_cmd(&["status"])
        .env("VAULTD_HOME", not_a_dir.to_str().unwrap())
        .env("VAULTD_SOCKET", "")
        .run();
    out.assert_fail();
    assert!(out.stderr.contains("is not a directory"), "{out}");
}
