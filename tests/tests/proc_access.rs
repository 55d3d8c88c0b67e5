//! Issue 4: another process of vaultd's own user cannot read its memory or
//! its environment (`PR_SET_DUMPABLE=0`), while a plain process of that user can.
//!
//! Both sides run as `nobody` (`setpriv --reuid=nobody --regid=nogroup
//! --clear-groups`: no capabilities left). A small Python prober, itself
//! `nobody`, starts the target as its own child, so that even Yama's
//! `ptrace_scope = 1` (parent-only attach) would let it in, and then tries
//! `/proc/PID/environ`, `/proc/PID/maps` and a read through `/proc/PID/mem`:
//!
//! - the control, `sleep`: every read succeeds. Without this the denials
//!   below would prove nothing (a hardened kernel, a missing procfs...);
//! - vaultd, with `VAULTD_HOME` owned by `nobody`, unlocked and holding a
//!   secret: every read is refused;
//! - vaultctl waiting for a passphrase on a descriptor (`init
//!   --passphrase-fd 0`, stdin a pipe nobody writes): every read is refused,
//!   so another process of the user cannot take a passphrase or a secret
//!   from its heap while it waits or works.
//!
//! Needs root (to switch to `nobody`), `setpriv` and `python3`; without them it
//! prints why and skips.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vaultd_tests::{VaultEnv, assert_no_canary};

const NOBODY: u32 = 65534;
const CANARY: &str = "CANARY-proc-access-5b1e9d27c04a";

/// Starts `argv[1:]` as its child (after an optional `--hold-stdin`), prints
/// `{"pid": N}`, then answers each `probe` line on stdin with one JSON line
/// saying what it could read, and `stop` by killing the child.
const PROBER: &str = r#"
import errno, json, os, subprocess, sys
out = open(sys.argv[1], "wb")
argv = sys.argv[2:]
# --hold-stdin: the child's stdin is a pipe the prober keeps open and never
# writes, so a child reading it waits (vaultctl waiting for a passphrase).
hold = argv[0] == "--hold-stdin"
if hold:
    argv = argv[1:]
child = subprocess.Popen(argv, stdin=subprocess.PIPE if hold else subprocess.DEVNULL, stdout=out, stderr=out)
print(json.dumps({"pid": child.pid, "uid": os.getuid(), "euid": os.geteuid()}), flush=True)

def err(e):
    return "refused: " + errno.errorcode.get(e.errno, str(e.errno))

def probe(pid):
    r = {}
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            r["environ"] = "read %d bytes" % len(f.read())
    except OSError as e:
        r["environ"] = err(e)
    addr = None
    try:
        with open("/proc/%d/maps" % pid) as f:
            lines = f.read().splitlines()
        r["maps"] = "read %d lines" % len(lines)
        for l in lines:
            start, perms = l.split()[0].split("-")[0], l.split()[1]
            if perms.startswith("r") and "[vvar" not in l and "[vsyscall]" not in l:
                addr = int(start, 16)
                break
    except OSError as e:
        r["maps"] = err(e)
    try:
        fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
    except OSError as e:
        r["mem"] = err(e)
    else:
        try:
            if addr is None:
                r["mem"] = "opened (no address to read)"
            else:
                r["mem"] = "read %d bytes" % len(os.pread(fd, 64, addr))
        except OSError as e:
            r["mem"] = "opened, read " + err(e)
        finally:
            os.close(fd)
    return r

for line in sys.stdin:
    if line.strip() == "probe":
        print(json.dumps(probe(child.pid)), flush=True)
    else:
        break
child.kill()
child.wait()
"#;

/// A running prober (as `nobody`) and its child. Dropping it stops both.
struct Prober {
    proc: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    child_pid: u32,
}

impl Prober {
    /// `setpriv ... python3 -c PROBER LOG argv...` with exactly `env`.
    fn start(
        python: &Path,
        argv: &[&str],
        env: &[(String, std::ffi::OsString)],
        log: &Path,
    ) -> Prober {
        let mut proc = as_nobody(python)
            .args(["-c", PROBER])
            .arg(log)
            .args(argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn setpriv");
        let stdin = proc.stdin.take();
        let mut stdout = BufReader::new(proc.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the prober's first line");
        let hello: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("prober said {line:?} ({e}) for {argv:?}"));
        assert_eq!(hello["uid"], NOBODY, "the prober runs as nobody: {hello}");
        assert_eq!(hello["euid"], NOBODY, "{hello}");
        let child_pid = hello["pid"].as_u64().expect("pid") as u32;
        Prober {
            proc,
            stdin,
            stdout,
            child_pid,
        }
    }

    /// What the prober (nobody) could read of its child.
    fn probe(&mut self) -> Value {
        let stdin = self.stdin.as_mut().expect("prober stdin");
        stdin.write_all(b"probe\n").expect("ask the prober");
        stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the probe");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("probe said {line:?} ({e})"))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        drop(self.stdin.take()); // end of input: the prober kills its child
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever happened to the prober, its child must not outlive the test.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child_pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace().nth(2).unwrap().parse().unwrap() // effective uid
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() && !path.is_symlink() {
        for e in fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

/// `setpriv --reuid=nobody --regid=nogroup --clear-groups PROGRAM`.
fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(program);
    cmd
}

/// The first of `name` in PATH or the usual directories that nobody can run
/// (a PATH entry under /root, e.g. pyenv's shims, is not).
fn runnable_as_nobody(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .find(|p| {
            as_nobody(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// (python3, sleep), both runnable as nobody, or why the test cannot run.
fn prerequisites(vaultd: &Path) -> Result<(PathBuf, PathBuf), String> {
    if rustix::process::geteuid().as_raw() != 0 {
        return Err("needs root to run processes as nobody".into());
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Err("`setpriv` (util-linux) is not installed".into());
    }
    let python = runnable_as_nobody("python3").ok_or("no python3 that nobody can run")?;
    let sleep = runnable_as_nobody("sleep").ok_or("no sleep that nobody can run")?;
    let ok = as_nobody(vaultd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Err(format!(
            "nobody cannot run {} (is the checkout under a private directory?)",
            vaultd.display()
        ));
    }
    Ok((python, sleep))
}

#[track_caller]
fn assert_readable(probe: &Value, what: &str) {
    for k in ["environ", "maps", "mem"] {
        let v = probe[k].as_str().unwrap_or("missing");
        assert!(
            v.starts_with("read "),
            "control failed: nobody could not read {what}'s /proc/PID/{k} ({v}); the refusals of vaultd's would prove nothing. probe: {probe}"
        );
    }
}

#[test]
fn same_user_cannot_read_vaultd_memory_or_environment() {
    let env = VaultEnv::new();
    let (python, sleep) = match prerequisites(&env.bins().vaultd) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    env.init();
    // Root's vaultctl drives the nobody daemon: allow uid 0 on its socket.
    env.write_config("allowed_uids = [0]\n");
    chown_tree(env.root(), NOBODY, NOBODY);
    let vars = env.env_vars();

    // Control: a plain process of nobody is readable by another process of nobody.
    let mut control = Prober::start(
        &python,
        &[&sleep.to_string_lossy(), "60"],
        &vars,
        &env.logs_dir().join("sleep.log"),
    );
    assert_eq!(uid_of(control.child_pid), NOBODY);
    let p = control.probe();
    println!("nobody reading nobody's `sleep`: {p}");
    assert_readable(&p, "sleep");
    drop(control);

    // vaultd as nobody, unlocked, holding a secret.
    let vaultd = env.bins().vaultd.to_string_lossy().into_owned();
    let mut prober = Prober::start(
        &python,
        &[&vaultd],
        &vars,
        &env.logs_dir().join("vaultd-nobody.log"),
    );
    let pid = prober.child_pid;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if env.ctl(&["status"]).success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vaultd (nobody) did not answer within 10 s; its log:\n{}",
            fs::read_to_string(env.logs_dir().join("vaultd-nobody.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(uid_of(pid), NOBODY, "vaultd runs as nobody");
    env.unlock();
    env.set_secret("tok", CANARY.as_bytes());
    assert_eq!(env.status_json()["state"], "unlocked");

    let p = prober.probe();
    println!("nobody reading nobody's vaultd: {p}");
    for k in ["environ", "maps", "mem"] {
        let v = p[k].as_str().unwrap_or("missing");
        assert!(
            v.starts_with("refused: "),
            "another process of vaultd's user read its /proc/PID/{k} ({v}): vaultd must not be dumpable. probe: {p}"
        );
    }
    assert_eq!(uid_of(pid), NOBODY, "vaultd is still running");
    drop(prober);
    assert_no_canary(&env, CANARY);
}

/// In a user namespace that its own user owns (a systemd user unit with
/// `PrivateUsers=` or any option implying it, `unshare --user`, a rootless
/// container), `PR_SET_DUMPABLE=0` protects nothing: the owner has
/// CAP_SYS_PTRACE inside. `vaultd check` fails naming it, and with
/// `require_sandbox = true` vaultd refuses to start.
#[test]
fn a_user_namespace_owned_by_its_user_is_named_and_refused_when_required() {
    let env = VaultEnv::new();
    let vaultd = &env.bins().vaultd;
    let in_own_namespace = |args: &[&str]| {
        Command::new("unshare")
            .args(["--user", "--map-current-user"])
            .arg(vaultd)
            .args(args)
            .envs(env.env_vars())
            .output()
    };
    match in_own_namespace(&["--version"]) {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("SKIPPED: cannot run vaultd in a user namespace of its own: {other:?}");
            return;
        }
    }
    let outside = env.command(vaultd).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&outside.stdout);
    assert!(text.contains("ok   user namespace"), "{text}");

    let inside = in_own_namespace(&["check"]).unwrap();
    let text = String::from_utf8_lossy(&inside.stdout);
    assert!(!inside.status.success(), "{text}");
    assert!(
        text.contains("FAIL user namespace: vaultd runs in a user namespace (owned by this uid"),
        "{text}"
    );

    env.write_config("require_sandbox = true\n");
    let refused = in_own_namespace(&[]).unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("can ptrace vaultd") && stderr.contains("refuses to start"),
        "{stderr}"
    );
}

/// /proc/PID/status's `State:` letter (R, S, D...).
fn state_of(pid: u32) -> Option<char> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("State:"))?;
    line.split_whitespace().nth(1)?.chars().next()
}

#[test]
fn same_user_cannot_read_vaultctl_memory_while_it_waits_for_a_passphrase() {
    let env = VaultEnv::new();
    let (python, sleep) = match prerequisites(&env.bins().vaultctl) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    // `init` needs no daemon and reads the passphrase before it writes anything.
    chown_tree(env.root(), NOBODY, NOBODY);
    let vars = env.env_vars();

    // Control, with the same --hold-stdin: a plain process of nobody is readable.
    let mut control = Prober::start(
        &python,
        &["--hold-stdin", &sleep.to_string_lossy(), "60"],
        &vars,
        &env.logs_dir().join("sleep.log"),
    );
    let p = control.probe();
    println!("nobody reading nobody's `sleep`: {p}");
    assert_readable(&p, "sleep");
    drop(control);

    let vaultctl = env.bins().vaultctl.to_string_lossy().into_owned();
    let log = env.logs_dir().join("vaultctl-nobody.log");
    let mut prober = Prober::start(
        &python,
        &[
            "--hold-stdin",
            &vaultctl,
            "--passphrase-fd",
            "0",
            "init",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ],
        &vars,
        &log,
    );
    let pid = prober.child_pid;
    // Wait until it sleeps in the read of fd 0 (sleeping twice in a row, 100 ms apart).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut asleep = 0;
    while asleep < 2 {
        match state_of(pid) {
            Some('S') => asleep += 1,
            Some(_) => asleep = 0,
            None => panic!(
                "vaultctl (nobody) ended instead of waiting for the passphrase; its output:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "vaultctl did not wait for its passphrase within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(uid_of(pid), NOBODY, "vaultctl runs as nobody");

    let p = prober.probe();
    println!("nobody reading nobody's waiting vaultctl: {p}");
    for k in ["environ", "maps", "mem"] {
        let v = p[k].as_str().unwrap_or("missing");
        assert!(
            v.starts_with("refused: "),
            "another process of the user read a waiting vaultctl's /proc/PID/{k} ({v}): vaultctl must make itself non-dumpable first thing. probe: {p}"
        );
    }
    assert_eq!(
        state_of(pid),
        Some('S'),
        "vaultctl was still waiting for the passphrase when probed"
    );
    drop(prober);
    assert!(
        !env.vault_path().exists(),
        "nothing was created: the passphrase never came"
    );
}
