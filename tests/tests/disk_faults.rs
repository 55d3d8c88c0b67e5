//! Issue 5: a full filesystem under `VAULTD_HOME` (a small tmpfs, so this needs
//! root to mount; without it each test prints `skipped: ...` and returns).
//!
//! - A vault write on a full disk fails with a message naming the OS error,
//!   and the previous vault file stays in place, byte for byte (DESIGN.md,
//!   "Command line": `secret set`).
//! - An audit log on a full disk makes calls fail closed with
//!   `audit_unavailable`, nothing reaches the upstream, and `vaultctl status`
//!   says why (proxy rule 8). Once space is freed, calls work again and the
//!   log still verifies.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vaultd_tests::{TlsKind, Upstream, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-disk-3e9f0b6a21";
const CANARY2: &str = "CANARY-disk-second-77d1c4";

/// A tmpfs mounted on a directory; unmounted (lazily) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax, e.g. `1m`) on `dir`, or says why not.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Fills the filesystem with `filler` until the kernel says ENOSPC.
    fn fill(&self) -> PathBuf {
        let p = self.dir.join("filler");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        for chunk in [64 * 1024, 4096, 512, 1] {
            let buf = vec![0u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", p.display()),
                }
            }
        }
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Mounts a fresh tmpfs of `size` on `env`'s `VAULTD_HOME`, or None (skipped).
/// Bind it after `env` so that it is unmounted before `env` removes its root.
fn tmpfs_home(env: &VaultEnv, size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(env.home(), size) {
        Ok(t) => Some(t),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

#[test]
fn secret_set_on_a_full_disk_fails_clearly_and_keeps_the_old_vault() {
    let env = VaultEnv::new();
    let Some(fs_guard) = tmpfs_home(&env, "1m") else {
        return;
    };
    let mut daemon = env.start_unlocked();
    env.set_secret("first", CANARY.as_bytes());
    let before = fs::read(env.vault_path()).unwrap();
    let filler = fs_guard.fill();

    let out = env
        .ctl_cmd(&["secret", "set", "second", "--from-fd", "4"])
        .passphrase(vaultd_tests::PASSPHRASE)
        .fd(4, CANARY2.as_bytes())
        .run();
    out.assert_fail();
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("no space left on device"),
        "the error must name the OS error:\n{out}"
    );
    assert!(
        err.contains("not changed") || err.contains("unchanged") || err.contains("intact"),
        "the error must say the vault file was left as it was:\n{out}"
    );
    println!("secret set on a full disk: {}", out.stderr.trim());

    // The file is byte-for-byte what it was, and no temporary file is left behind.
    assert_eq!(fs::read(env.vault_path()).unwrap(), before);
    let leftovers: Vec<String> = fs::read_dir(env.home())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // The running daemon did not take the change either.
    let names = env.ctl(&["secret", "list"]);
    names.assert_ok();
    assert_eq!(names.stdout.trim(), "first");

    // The old vault still opens: lock, unlock, and after a restart too.
    env.lock();
    env.unlock();
    daemon.sigterm_and_wait();
    drop(daemon);
    let daemon = env.start_daemon();
    env.unlock();
    assert_eq!(
        env.ctl(&["secret", "list"]).assert_ok().stdout.trim(),
        "first"
    );

    // Space freed: the same command now works.
    fs::remove_file(filler).unwrap();
    env.ctl_cmd(&["secret", "set", "second", "--from-fd", "4"])
        .passphrase(vaultd_tests::PASSPHRASE)
        .fd(4, CANARY2.as_bytes())
        .run()
        .assert_ok();
    let list = env.ctl(&["secret", "list"]);
    assert_eq!(list.assert_ok().stdout.trim(), "first\nsecond");

    drop(daemon);
    assert_no_canary(&env, CANARY);
    assert_no_canary(&env, CANARY2);
}

#[test]
fn audit_log_on_a_full_disk_refuses_calls_and_status_says_why() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let Some(fs_guard) = tmpfs_home(&env, "1m") else {
        return;
    };
    let daemon = env.start_serving(
        &up,
        CANARY.as_bytes(),
        &vaultd_tests::policy::one_service(
            &env,
            &up.url(),
            "",
            "echo",
            r#"allow = ["GET /echo/**"]"#,
        ),
    );
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    let call = || {
        mcp.call_timeout(
            "execute",
            json!({"capability": "echo", "method": "GET", "path": "/echo/x"}),
            Duration::from_secs(10),
        )
    };
    call().assert_ok();
    assert!(env.status_json()["audit_error"].is_null());

    let filler = fs_guard.fill();
    // The log's last page may still hold a few records: call until one is refused.
    let mut refused = None;
    for i in 0..64 {
        let sent_before = up.request_count();
        let r = call();
        if r.is_error {
            r.assert_refused("audit_unavailable");
            assert_eq!(
                up.request_count(),
                sent_before,
                "a call refused for want of an audit record reached the upstream"
            );
            refused = Some((i, r.text.clone()));
            break;
        }
        r.assert_ok();
    }
    let (i, text) = refused.expect("no call was refused although the disk is full");
    assert!(text.contains("No space left on device"), "{text}");
    println!(
        "audit on a full disk: call #{} after filling refused: {text}",
        i + 1
    );

    // Fails closed every time, not just once.
    let sent = up.request_count();
    for _ in 0..3 {
        call().assert_refused("audit_unavailable");
    }
    assert_eq!(up.request_count(), sent);

    // vaultctl status answers (exit 0) and says why.
    let st = env.ctl(&["status"]);
    st.assert_ok();
    assert!(
        st.stdout.contains("audit") && st.stdout.contains("No space left on device"),
        "status must say why calls are refused:\n{st}"
    );
    let j = env.status_json();
    assert!(
        j["audit_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{j}"
    );
    println!("vaultctl status --json audit_error: {}", j["audit_error"]);

    // Space freed: calls work again, status is clean, and the chain still verifies.
    fs::remove_file(filler).unwrap();
    call().assert_ok();
    assert!(env.status_json()["audit_error"].is_null());
    let v = env.ctl(&["audit", "verify"]);
    assert!(v.success(), "the audit log no longer verifies:\n{v}");

    drop(mcp);
    drop(daemon);
    assert_no_canary(&env, CANARY);
}
