//! Issue 4: the systemd user unit `systemd/vaultd.service` is hardened, and
//! still lets vaultd do its job.
//!
//! - It sets no option that, in a user manager, puts vaultd in a user
//!   namespace (the user owns it, and with it CAP_SYS_PTRACE over vaultd:
//!   the agent could read vaultd's memory) or that a user manager cannot
//!   apply (`CapabilityBoundingSet=`, `AmbientCapabilities=`: exit 218).
//! - `systemd-analyze security --offline=true` rates its exposure at most 6.2
//!   (the "Overall exposure level" line is parsed): the rating counts the
//!   namespacing options above as missing, and vaultd's own Landlock rules
//!   do their filesystem part.
//! - Its `SystemCallFilter=` (expanded with `systemd-analyze syscall-filter`)
//!   allows every system call vaultd makes: those of its start-up (landlock,
//!   seccomp, mlock, prlimit64...) and every entry of its own seccomp
//!   allowlist (`vaultd/src/sandbox/syscalls.rs`, read as text), and refuses
//!   a few it must not need (ptrace, mount...). Its limits and address
//!   families are those vaultd needs (mlock, unix + TCP).
//! - Where a systemd user instance answers (`systemctl --user`), the unit
//!   (ExecStart pointed at the built binary, `VAULTD_HOME` set to a
//!   temporary directory) starts vaultd, which then serves `vaultctl` with
//!   both sandbox layers enforced. Without one (containers, CI) that test
//!   prints why it was skipped.
//!
//! Without `systemd-analyze` the first two print why they were skipped.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vaultd_tests::binaries;

/// The highest exposure the unit may have (without the options below).
const MAX_EXPOSURE: f64 = 6.2;

/// Options the unit must not set. In a user manager each of these needs a
/// mount or other namespace, and so a user namespace owned by the user
/// (PrivateUsers= is implied): its owner has every capability in it,
/// CAP_SYS_PTRACE included, so any process of the user (the agent) could
/// ptrace vaultd whatever PR_SET_DUMPABLE says. The last two fail the
/// start (218/CAPABILITIES): a user manager cannot change capability sets.
const NO_USER_MANAGER_CAN_SET_SAFELY: &[&str] = &[
    "PrivateUsers",
    "ProtectSystem",
    "ProtectHome",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateIPC",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "ProcSubset",
    "RootDirectory",
    "RootImage",
    "PrivatePIDs",
    "NoExecPaths",
    "ExecPaths",
    "MountAPIVFS",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "NetworkNamespacePath",
    "IPCNamespacePath",
    "DynamicUser",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
];

/// System calls vaultd makes before its own seccomp filter is in place
/// (`vaultd/src/bin/vaultd.rs`, `vaultd/src/sys.rs`, `vaultd/src/sandbox/`),
/// beyond those of its allowlist.
const START_UP: &[&str] = &[
    "close_range",             // sys::close_inherited_fds
    "prctl",                   // PR_SET_DUMPABLE=0, PR_SET_NO_NEW_PRIVS
    "prlimit64",               // RLIMIT_CORE=0, RLIMIT_NOFILE (glibc's setrlimit)
    "mlock",                   // the mlock probe
    "flock",                   // the single-instance lock
    "bind",                    // the socket
    "listen",                  // the socket
    "chmod",                   // the socket's mode (fchmodat)
    "fchmodat",                // idem
    "mkdir",                   // the vault, audit and socket directories
    "mkdirat",                 // idem
    "landlock_create_ruleset", // sandbox::apply
    "landlock_add_rule",       // idem
    "landlock_restrict_self",  // idem
    "seccomp",                 // idem (TSYNC filters)
    "clone3", // tokio's first threads (glibc; vaultd's filter answers ENOSYS later)
];

/// Calls the unit must refuse (nothing in vaultd makes them).
const REFUSED: &[&str] = &[
    "ptrace",
    "mount",
    "reboot",
    "init_module",
    "setuid",
    "kexec_load",
];

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/vaultd.service")
}

fn unit_text() -> String {
    fs::read_to_string(unit_path())
        .unwrap_or_else(|e| panic!("read {}: {e}", unit_path().display()))
}

/// Values of every `KEY=` line of the unit's `[Service]` section, in order.
fn directives(text: &str, key: &str) -> Vec<String> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            out.push(v.trim().to_string());
        }
    }
    out
}

fn analyze_available() -> Result<(), String> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`systemd-analyze --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("systemd-analyze is not installed ({e})")),
    }
}

#[test]
fn no_option_gives_the_user_ptrace_over_vaultd_or_fails_in_a_user_manager() {
    let text = unit_text();
    for key in NO_USER_MANAGER_CAN_SET_SAFELY {
        assert_eq!(
            directives(&text, key),
            Vec::<String>::new(),
            "systemd/vaultd.service sets {key}= (see NO_USER_MANAGER_CAN_SET_SAFELY)"
        );
    }
}

#[test]
fn exposure_level_is_at_most_6_2() {
    if let Err(why) = analyze_available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    // Rated as a system unit and as the user unit it is (where some
    // defaults differ: KeyringMode= is `inherit` for user services).
    for scope in [None, Some("--user")] {
        exposure_at_most(scope);
    }
}

fn exposure_at_most(scope: Option<&str>) {
    // A user manager, even an offline one, wants a runtime directory.
    let runtime = tempfile::tempdir().expect("temporary XDG_RUNTIME_DIR");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .args(scope)
        .arg(unit_path())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!("no \"Overall exposure level\" line:\n{stdout}\nstderr:\n{stderr}")
        });
    // "→ Overall exposure level for vaultd.service: 1.5 OK 🙂"
    let score: f64 = line
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the score in {line:?}"));
    for l in stdout.lines().filter(|l| l.starts_with('✗')) {
        println!("{l}");
    }
    println!("{scope:?}: {line}");
    assert!(
        score <= MAX_EXPOSURE,
        "systemd/vaultd.service exposure {score} > {MAX_EXPOSURE} ({scope:?}):\n{stdout}"
    );
}

/// The system calls of `@group` (nested groups expanded).
fn expand_group(group: &str, seen: &mut BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if !seen.insert(group.to_string()) {
        return out;
    }
    let o = Command::new("systemd-analyze")
        .args(["syscall-filter", group])
        .output()
        .expect("run systemd-analyze syscall-filter");
    assert!(
        o.status.success(),
        "systemd-analyze syscall-filter {group}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for word in String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .skip(1) // the group's own name
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    {
        if word.starts_with('@') {
            out.extend(expand_group(&word, seen));
        } else {
            out.insert(word);
        }
    }
    out
}

fn expand(item: &str) -> BTreeSet<String> {
    if item.starts_with('@') {
        expand_group(item, &mut BTreeSet::new())
    } else {
        BTreeSet::from([item.to_string()])
    }
}

/// The unit's effective allow-list: the first (allow-list) line, minus every `~` line.
fn effective_filter(lines: &[String]) -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for line in lines {
        match line.strip_prefix('~') {
            Some(rest) => rest
                .split_whitespace()
                .for_each(|i| denied.extend(expand(i))),
            None => line
                .split_whitespace()
                .for_each(|i| allowed.extend(expand(i))),
        }
    }
    allowed.difference(&denied).cloned().collect()
}

/// The names in vaultd's seccomp `ALLOWED` table.
fn vaultd_allowlist() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vaultd/src/sandbox/syscalls.rs");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let start = text
        .find("pub static ALLOWED")
        .expect("ALLOWED table in syscalls.rs");
    let end = start + text[start..].find("\n];").expect("end of ALLOWED");
    let names: BTreeSet<String> = text[start..end]
        .split("SYS_")
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    assert!(
        names.len() > 40,
        "parsed too few names from ALLOWED: {names:?}"
    );
    names
}

#[test]
fn syscall_filter_and_limits_let_vaultd_work() {
    let text = unit_text();
    // Static: what vaultd needs from its environment.
    let memlock = directives(&text, "LimitMEMLOCK");
    assert!(
        matches!(memlock.last().map(String::as_str), Some(v) if v.ends_with('M') && v.trim_end_matches('M').parse::<u32>().is_ok_and(|m| m >= 1)),
        "LimitMEMLOCK must allow at least 1 MiB of locked secret pages: {memlock:?}"
    );
    let families: BTreeSet<String> = directives(&text, "RestrictAddressFamilies")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert_eq!(
        families,
        BTreeSet::from(["AF_UNIX".into(), "AF_INET".into(), "AF_INET6".into()]),
        "the socket (unix) and upstream calls (TCP) only"
    );
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LimitCORE", "0"),
        ("Type", "notify"),
    ] {
        assert_eq!(
            directives(&text, key).last().map(String::as_str),
            Some(value),
            "{key}"
        );
    }

    if let Err(why) = analyze_available() {
        eprintln!("SKIPPED (the syscall filter check): {why}");
        return;
    }
    let lines = directives(&text, "SystemCallFilter");
    assert!(
        lines.first().is_some_and(|l| !l.starts_with('~')),
        "the first SystemCallFilter= must be an allow-list: {lines:?}"
    );
    let allowed = effective_filter(&lines);
    let needed: BTreeSet<String> = vaultd_allowlist()
        .into_iter()
        .chain(START_UP.iter().map(|s| s.to_string()))
        .collect();
    let missing: Vec<&String> = needed.iter().filter(|s| !allowed.contains(*s)).collect();
    println!(
        "the unit allows {} system calls; vaultd needs {} of them",
        allowed.len(),
        needed.len()
    );
    assert!(
        missing.is_empty(),
        "systemd/vaultd.service refuses system calls vaultd makes: {missing:?}"
    );
    let leaked: Vec<&&str> = REFUSED.iter().filter(|s| allowed.contains(**s)).collect();
    assert!(
        leaked.is_empty(),
        "the unit's filter allows {leaked:?}: it is not filtering"
    );
}

// ---------------------------------------------------------------------------
// The unit under a real systemd user instance.

fn systemctl_user(args: &[&str]) -> std::process::Output {
    Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .expect("run systemctl --user")
}

fn user_instance() -> Result<(), String> {
    match Command::new("systemctl")
        .args(["--user", "show-environment"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "no systemd user instance (`systemctl --user show-environment`: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("systemctl is not installed ({e})")),
    }
}

/// Stops and unlinks the test unit, whatever happened.
struct LinkedUnit {
    name: String,
}

impl Drop for LinkedUnit {
    fn drop(&mut self) {
        let _ = systemctl_user(&["stop", &self.name]);
        let _ = systemctl_user(&["disable", &self.name]);
        let _ = systemctl_user(&["reset-failed", &self.name]);
        let _ = systemctl_user(&["daemon-reload"]);
    }
}

#[test]
fn unit_starts_vaultd_and_it_serves() {
    if let Err(why) = user_instance() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let bins = binaries();
    // Not under /tmp: the unit has PrivateTmp=yes.
    let dir = tempfile::Builder::new()
        .prefix("vaultd-unit-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let home = dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let name = format!("vaultd-test-{}.service", std::process::id());
    // The unit as shipped, with ExecStart at the built binary and one isolated
    // VAULTD_HOME (writable inside the unit's read-only file system).
    let unit = unit_text()
        .replace(
            "ExecStart=%h/.local/bin/vaultd",
            &format!("ExecStart={}", bins.vaultd.display()),
        )
        .replace(
            "[Service]\n",
            &format!(
                "[Service]\nEnvironment=VAULTD_HOME={h}\n",
                h = home.display()
            ),
        );
    assert!(unit.contains(&format!("ExecStart={}", bins.vaultd.display())));
    let unit_file = dir.path().join(&name);
    fs::write(&unit_file, unit).unwrap();

    let linked = systemctl_user(&["link", &unit_file.to_string_lossy()]);
    assert!(
        linked.status.success(),
        "systemctl --user link: {}",
        String::from_utf8_lossy(&linked.stderr)
    );
    let _guard = LinkedUnit { name: name.clone() };
    let started = systemctl_user(&["start", &name]);
    let status = || {
        String::from_utf8_lossy(
            &systemctl_user(&["status", "--no-pager", "-n", "30", &name]).stdout,
        )
        .into_owned()
    };
    assert!(
        started.status.success(),
        "systemctl --user start {name}: {}\n{}",
        String::from_utf8_lossy(&started.stderr),
        status()
    );

    let vaultctl = |args: &[&str]| {
        Command::new(&bins.vaultctl)
            .args(args)
            .env_clear()
            .env("VAULTD_HOME", &home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .expect("run vaultctl")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = vaultctl(&["status", "--json"]);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "vaultd under the unit did not answer within 10 s: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            status()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    println!("vaultctl status --json under the unit: {json}");
    assert_eq!(json["state"], "uninitialized", "{json}");
    // It can write its vault and lock memory.
    for args in [
        &[
            "--passphrase-fd",
            "0",
            "init",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ][..],
        &["--passphrase-fd", "0", "unlock"][..],
    ] {
        let mut child = Command::new(&bins.vaultctl)
            .args(args)
            .env_clear()
            .env("VAULTD_HOME", &home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run vaultctl");
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            b"systemd unit test passphrase\n",
        )
        .unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "vaultctl {args:?} under the unit: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            status()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&vaultctl(&["status", "--json"]).stdout).expect("status --json");
    assert_eq!(json["state"], "unlocked", "{json}");
    let human = vaultctl(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    for layer in ["landlock: enforced", "seccomp:  enforced", "mlock:    ok"] {
        assert!(text.contains(layer), "`{layer}` under the unit:\n{text}");
    }
    // No user namespace of the user's: nothing of theirs can ptrace vaultd.
    assert!(!text.contains("user namespace"), "under the unit:\n{text}");
}
