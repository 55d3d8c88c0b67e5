//! [`VaultEnv`]: one isolated vaultd instance driven through the real binaries.
//!
//! ```no_run
//! use vaultd_tests::{Upstream, TlsKind, VaultEnv, assert_no_canary};
//! use serde_json::json;
//!
//! let up = Upstream::start(TlsKind::Good);
//! let env = VaultEnv::new();
//! env.init();                                   // vaultctl init (cheap KDF)
//! let _daemon = env.start_daemon();             // vaultd, waits until `vaultctl status` answers
//! env.unlock();
//! env.set_secret("tok", b"CANARY-123");         // through fd 4, never argv
//! env.apply_policy(&format!(r#"
//!     [[service]]
//!     name = "up"
//!     base_url = "{}/api"
//!     auth = {{ type = "bearer", secret = "tok" }}
//!     ca_file = "{}"
//!     allow_private_network = true
//!     [[agent]]
//!     name = "a"
//!     [[capability]]
//!     name = "echo"
//!     service = "up"
//!     agents = ["a"]
//!     allow = ["GET /echo/**"]
//! "#, up.url(), env.ca_file().display()));
//! let token = env.add_agent("a");
//! let mcp = env.mcp(&token);                    // Python MCP SDK -> vault-mcp -> vaultd
//! let r = mcp.call("execute", json!({"capability": "echo", "method": "GET", "path": "/echo/x"}));
//! assert!(!r.is_error, "{}", r.text);
//! assert_eq!(up.requests()[0].header("authorization"), Some("Bearer CANARY-123"));
//! assert_no_canary(&env, "CANARY-123");        // not in any output, log or file
//! ```
//!
//! # Layout of an environment
//!
//! A fresh temporary directory `ROOT` (removed on drop; kept when the variable
//! `VAULTD_TEST_KEEP=1` is set, and its path printed when the test panics):
//!
//! | path | what |
//! | --- | --- |
//! | `ROOT/vault` | `VAULTD_HOME`: `vaultd.toml`, `vault.bin`, `audit.jsonl`, `vaultd.sock` (0700) |
//! | `ROOT/logs` | `daemon-N.stderr`/`.stdout`, `mcp-client-N.stderr`, `vault-mcp-N.stderr` |
//! | `ROOT/inputs` | files the test writes for the binaries: policies, `ca.pem` |
//! | `ROOT/home`, `ROOT/xdg/*` | `HOME` and the `XDG_*` directories of every child, so nothing touches the real home |
//!
//! # Children's environment
//!
//! Every child (vaultd, vaultctl, the MCP client and through it vault-mcp)
//! starts from an **empty** environment plus [`VaultEnv::env_vars`]:
//! `VAULTD_HOME`, `HOME`, `XDG_{CONFIG,DATA,STATE,CACHE,RUNTIME}_{HOME,DIR}`,
//! `PATH`, `LANG=C.UTF-8`, `RUST_BACKTRACE=1`, and `RUST_LOG` / `TMPDIR` when the
//! test process has them. Nothing else leaks in (no `VAULTD_SOCKET` of the developer).
//!
//! # Outputs and canaries
//!
//! Everything a child printed (every vaultctl stdout and stderr, the daemon's
//! logs, the MCP client's and vault-mcp's stderr, every tool result the agent
//! got) and every file under `ROOT` except `ROOT/inputs` are what
//! [`VaultEnv::output_sources`] returns; [`assert_no_canary`] looks for a secret
//! in all of it, also base64/base64url (any alignment), hex and percent-encoded.
//! What a test *sends* (passphrase and secret pipes, stdin, tool arguments) is
//! never recorded.
//!
//! # Binaries
//!
//! `vaultd`, `vaultctl` and `vault-mcp` are taken from the cargo target directory
//! of the running test (`target/debug/deps/harness-…` → `target/debug/`), or from
//! `VAULTD_BIN_DIR` if set. They are not built by `cargo test -p vaultd-tests`:
//! run `cargo build --workspace --bins` first (CI does).

use std::ffi::OsString;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt as _, FdMapping};

use crate::forms;
use crate::mcp::{McpClient, McpOptions};
use crate::pki::Pki;
use crate::upstream::Upstream;

/// The passphrase [`VaultEnv::init`] sets and every `*_pass` helper sends.
pub const PASSPHRASE: &str = "vaultd-tests passphrase: correct horse battery staple";
/// Default time limit of one vaultctl run; the child is killed past it.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`VaultEnv::start_daemon`] waits for the daemon to answer.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Binaries.

/// Paths of the three binaries under test.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The directory holding them.
    pub dir: PathBuf,
    /// `vaultd`.
    pub vaultd: PathBuf,
    /// `vaultctl`.
    pub vaultctl: PathBuf,
    /// `vault-mcp`.
    pub vault_mcp: PathBuf,
}

const BIN_NAMES: [&str; 3] = ["vaultd", "vaultctl", "vault-mcp"];

impl Binaries {
    /// The three binaries in `dir` (another build, say); an error names those missing.
    pub fn in_dir(dir: PathBuf) -> Result<Binaries, String> {
        let missing: Vec<&str> = BIN_NAMES
            .iter()
            .copied()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} missing in {}",
                missing.join(", "),
                dir.display()
            ));
        }
        Ok(Binaries {
            vaultd: dir.join("vaultd"),
            vaultctl: dir.join("vaultctl"),
            vault_mcp: dir.join("vault-mcp"),
            dir,
        })
    }
}

fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("VAULTD_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("vaultctl").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no directory above {} contains `vaultctl`", exe.display()))
}

/// The binaries under test (see the [module docs](self)). Panics, telling how to
/// build them, when one is missing.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Result<Binaries, String>> = OnceLock::new();
    let found = BINS.get_or_init(|| Binaries::in_dir(find_bin_dir()?));
    match found {
        Ok(b) => b,
        Err(e) => panic!(
            "the vaultd binaries are not built ({e}): run `cargo build --workspace --bins` first"
        ),
    }
}

// ---------------------------------------------------------------------------
// Captured outputs.

/// Labelled outputs captured from children (not files: those are read from disk).
#[derive(Clone, Default)]
pub(crate) struct Transcript(Arc<Mutex<Vec<Labelled>>>);

/// One captured output: its label and its bytes.
type Labelled = (String, Vec<u8>);

impl Transcript {
    pub(crate) fn push(&self, label: String, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.0.lock().unwrap().push((label, bytes.to_vec()));
        }
    }
    fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.0.lock().unwrap().clone()
    }
}

/// What a finished vaultctl run printed.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// The arguments it ran with (after the program name, including `--passphrase-fd 3`).
    pub args: Vec<String>,
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout (lossy UTF-8).
    pub stdout: String,
    /// Its stderr (lossy UTF-8).
    pub stderr: String,
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vaultctl {}\n  -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}--------------",
            self.args.join(" "),
            describe_status(&self.status),
            self.stdout,
            self.stderr
        )
    }
}

fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s}"),
    }
}

impl CmdOutput {
    /// Exit code 0?
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics, showing the command, stdout and stderr, unless it exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Panics, showing the command, stdout and stderr, unless it exited non-zero
    /// (a kill by a signal does not count as a failure exit).
    #[track_caller]
    pub fn assert_fail(&self) -> &Self {
        assert!(
            self.status.code().is_some_and(|c| c != 0),
            "expected a failure exit:\n{self}"
        );
        self
    }

    /// stdout parsed as one JSON value (panics if it is not).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// stdout parsed as JSON lines (blank lines skipped; panics on a bad line).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}):\n{self}"))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Running children.

fn spawn_reader<R: std::io::Read + Send + 'static>(
    mut r: R,
    buf: Arc<Mutex<Vec<u8>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

fn spawn_writer<W: std::io::Write + Send + 'static>(mut w: W, data: Vec<u8>) {
    std::thread::spawn(move || {
        let _ = w.write_all(&data);
        // Dropping `w` closes the pipe: the child sees end of file.
    });
}

/// A vaultctl that is still running (from [`Ctl::spawn`]), e.g. `audit tail -f`.
/// Dropping it kills the child.
pub struct Running {
    child: Child,
    args: Vec<String>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    transcript: Transcript,
    label: String,
    finished: bool,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("args", &self.args)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Running {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Waits until its stdout contains `needle`; returns the stdout so far.
    /// Panics after `timeout`, or if the child exits first.
    #[track_caller]
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout_so_far();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                let out = self.stdout_so_far();
                if out.contains(needle) {
                    return out;
                }
                panic!(
                    "vaultctl {} exited ({}) without printing {needle:?}; stdout:\n{out}",
                    self.args.join(" "),
                    describe_status(&st)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "vaultctl {}: no {needle:?} on stdout within {timeout:?}; stdout so far:\n{out}",
                    self.args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it has exited (without waiting).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn finish(&mut self, status: ExitStatus) -> CmdOutput {
        self.finished = true;
        // The pipes close when the child exits (unless it left a grandchild holding them).
        let deadline = Instant::now() + Duration::from_secs(2);
        for r in self.readers.drain(..) {
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if r.is_finished() {
                let _ = r.join();
            }
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        self.transcript
            .push(format!("{} stdout", self.label), &stdout);
        self.transcript
            .push(format!("{} stderr", self.label), &stderr);
        CmdOutput {
            args: self.args.clone(),
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Waits for it to exit. Past `timeout` it is killed and this panics, showing its output.
    #[track_caller]
    pub fn wait(mut self, timeout: Duration) -> CmdOutput {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return self.finish(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let st = self.child.wait().expect("wait for killed vaultctl");
                let out = self.finish(st);
                panic!("timed out after {timeout:?} (killed):\n{out}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills it (SIGKILL) and returns what it printed.
    pub fn kill(mut self) -> CmdOutput {
        let _ = self.child.kill();
        let st = self.child.wait().expect("wait for killed vaultctl");
        self.finish(st)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.finish(st);
            }
        }
    }
}

/// A vaultctl invocation being set up: from [`VaultEnv::ctl_cmd`].
#[must_use = "call .run() or .spawn()"]
pub struct Ctl<'e> {
    env: &'e VaultEnv,
    args: Vec<String>,
    passphrase: Option<Vec<u8>>,
    stdin: Option<Vec<u8>>,
    fds: Vec<(i32, Vec<u8>)>,
    extra_env: Vec<(String, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for Ctl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctl")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl<'e> Ctl<'e> {
    /// Sends `passphrase` (plus a newline) through a pipe on fd 3, adding the
    /// global option `--passphrase-fd 3` before the subcommand.
    pub fn passphrase(mut self, passphrase: &str) -> Self {
        let mut p = passphrase.as_bytes().to_vec();
        p.push(b'\n');
        self.passphrase = Some(p);
        self
    }

    /// Like [`Ctl::passphrase`] but sends exactly these bytes (no newline added).
    pub fn passphrase_bytes(mut self, bytes: &[u8]) -> Self {
        self.passphrase = Some(bytes.to_vec());
        self
    }

    /// Feeds `data` on stdin, then end of file (default: stdin is `/dev/null`).
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }

    /// Opens a pipe on the child's fd `fd` carrying `data`, then end of file
    /// (e.g. `secret set NAME --from-fd 4`). `fd` must be 3 or more, and not 3 when a
    /// passphrase is given.
    pub fn fd(mut self, fd: i32, data: &[u8]) -> Self {
        assert!(fd >= 3, "fds 0-2 are stdin/stdout/stderr");
        self.fds.push((fd, data.to_vec()));
        self
    }

    /// Sets an extra environment variable for this run.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Changes the time limit (default [`CTL_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs it to completion (killed, and a panic, past the time limit).
    #[track_caller]
    pub fn run(self) -> CmdOutput {
        let timeout = self.timeout;
        self.spawn().wait(timeout)
    }

    /// Starts it and returns at once.
    pub fn spawn(self) -> Running {
        let mut args = Vec::new();
        let mut fds = self.fds;
        if let Some(p) = self.passphrase {
            assert!(
                fds.iter().all(|(fd, _)| *fd != 3),
                "fd 3 carries the passphrase"
            );
            args.extend(["--passphrase-fd".to_string(), "3".to_string()]);
            fds.insert(0, (3, p));
        }
        args.extend(self.args);
        let n = self.env.counter.fetch_add(1, Ordering::SeqCst);
        let label = format!("vaultctl #{n} [{}]", args.join(" "));

        let vaultctl = self.env.bins.vaultctl.clone();
        let mut cmd = self.env.command(&vaultctl);
        cmd.args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut writers = Vec::new();
        let mut mappings = Vec::new();
        for (fd, data) in fds {
            let (r, w) = std::io::pipe().expect("pipe");
            mappings.push(FdMapping {
                parent_fd: r.into(),
                child_fd: fd,
            });
            writers.push((w, data));
        }
        cmd.fd_mappings(mappings).expect("distinct child fds");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", vaultctl.display()));
        // The read ends live in `cmd`: drop it so only the child holds them.
        drop(cmd);
        for (w, data) in writers {
            spawn_writer(w, data);
        }
        if let (Some(data), Some(stdin)) = (self.stdin, child.stdin.take()) {
            spawn_writer(stdin, data);
        }
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            spawn_reader(child.stdout.take().expect("piped stdout"), stdout.clone()),
            spawn_reader(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        Running {
            child,
            args,
            stdout,
            stderr,
            readers,
            transcript: self.env.transcript.clone(),
            label,
            finished: false,
        }
    }
}

// ---------------------------------------------------------------------------
// The daemon.

/// A running `vaultd`. Dropping it kills it (SIGKILL) and reaps it.
pub struct Daemon {
    child: Child,
    n: usize,
    stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("n", &self.n)
            .field("pid", &self.child.id())
            .field("exit", &self.exit)
            .finish()
    }
}

impl Daemon {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its stderr goes (`ROOT/logs/daemon-N.stderr`).
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a signal (no effect once it has been reaped).
    pub fn signal(&self, sig: rustix::process::Signal) {
        if self.exit.is_some() {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig)
            .unwrap_or_else(|e| panic!("kill({pid:?}, {sig:?}): {e}"));
    }

    /// SIGKILL, then reap it.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(st) = self.exit {
            return st;
        }
        let _ = self.child.kill();
        let st = self.child.wait().expect("wait for vaultd");
        self.exit = Some(st);
        st
    }

    /// SIGTERM, then wait up to 10 s for it to exit (panics, after a SIGKILL, if it does not).
    #[track_caller]
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        if let Some(st) = self.exit {
            return st;
        }
        self.signal(rustix::process::Signal::TERM);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(st) => st,
            None => {
                self.kill9();
                panic!(
                    "vaultd did not exit within 10 s of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// SIGSTOP: the daemon freezes (its socket still accepts connections, nobody answers).
    pub fn sigstop(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT after [`Daemon::sigstop`].
    pub fn sigcont(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// Has it exited? (Reaps it if so.)
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------
// The environment.

/// One isolated vault: a temporary `VAULTD_HOME` and everything the test ran in it.
/// See the [module docs](self).
pub struct VaultEnv {
    bins: Binaries,
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    home: PathBuf,
    logs: PathBuf,
    inputs: PathBuf,
    transcript: Transcript,
    counter: AtomicUsize,
    daemons: AtomicUsize,
    mcps: AtomicUsize,
}

impl std::fmt::Debug for VaultEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultEnv")
            .field("root", &self.root_path)
            .finish_non_exhaustive()
    }
}

fn mkdir_0700(p: &Path) {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

impl Default for VaultEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl VaultEnv {
    /// A fresh, empty environment (no vault yet: call [`VaultEnv::init`]) using the
    /// binaries of the cargo target directory ([`binaries`]).
    pub fn new() -> VaultEnv {
        Self::with_binaries(binaries().clone())
    }

    /// A fresh environment running these binaries instead (the harness's own tests use fakes).
    pub fn with_binaries(bins: Binaries) -> VaultEnv {
        let root = tempfile::Builder::new()
            .prefix("vaultd-e2e-")
            .tempdir()
            .expect("create temp dir");
        let root_path = root.path().to_path_buf();
        let env = VaultEnv {
            bins,
            home: root_path.join("vault"),
            logs: root_path.join("logs"),
            inputs: root_path.join("inputs"),
            root: Some(root),
            root_path,
            transcript: Transcript::default(),
            counter: AtomicUsize::new(1),
            daemons: AtomicUsize::new(1),
            mcps: AtomicUsize::new(1),
        };
        for d in [&env.home, &env.logs, &env.inputs] {
            mkdir_0700(d);
        }
        mkdir_0700(&env.root_path.join("home"));
        for d in ["config", "data", "state", "cache", "runtime"] {
            mkdir_0700(&env.root_path.join("xdg").join(d));
        }
        env
    }

    /// The binaries this environment runs.
    pub fn bins(&self) -> &Binaries {
        &self.bins
    }

    /// The temporary root directory.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// `VAULTD_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where the children's logs go.
    pub fn logs_dir(&self) -> &Path {
        &self.logs
    }

    /// Where [`VaultEnv::write_input`] puts files (not scanned for canaries).
    pub fn inputs_dir(&self) -> &Path {
        &self.inputs
    }

    /// `VAULTD_HOME/vaultd.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.home.join("vaultd.sock")
    }

    /// Runs `f` with a gRPC client connected to this environment's vaultd, on
    /// a current-thread runtime of its own (a caller other than vault-mcp;
    /// dropping the runtime closes the connection).
    #[track_caller]
    pub fn with_grpc<T>(
        &self,
        f: impl AsyncFnOnce(vault_proto::v1::vault_client::VaultClient<tonic::transport::Channel>) -> T,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let socket = self.socket_path();
        rt.block_on(async move {
            let c = vault_proto::client::connect(&socket, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("connect to vaultd at {}: {e}", socket.display()));
            f(c).await
        })
    }

    /// `VAULTD_HOME/vault.bin`.
    pub fn vault_path(&self) -> PathBuf {
        self.home.join("vault.bin")
    }

    /// `VAULTD_HOME/audit.jsonl`.
    pub fn audit_path(&self) -> PathBuf {
        self.home.join("audit.jsonl")
    }

    /// `VAULTD_HOME/vaultd.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.home.join("vaultd.toml")
    }

    /// Writes `VAULTD_HOME/vaultd.toml` (read by vaultd at start). Under the
    /// sandbox vaultd may connect only to `upstream_ports`, so a test with a local
    /// upstream writes `upstream_ports = [PORT]` here before [`VaultEnv::start_daemon`].
    pub fn write_config(&self, toml: &str) {
        let p = self.config_path();
        fs::write(&p, toml).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// [`VaultEnv::write_config`] with `upstream_ports` = `ports` and nothing else.
    pub fn allow_ports(&self, ports: &[u16]) {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        self.write_config(&format!("upstream_ports = [{}]\n", list.join(", ")));
    }

    /// The complete environment every child starts with (see the [module docs](self)).
    pub fn env_vars(&self) -> Vec<(String, OsString)> {
        let r = &self.root_path;
        let mut v: Vec<(String, OsString)> = vec![
            ("VAULTD_HOME".into(), self.home.clone().into()),
            ("HOME".into(), r.join("home").into()),
            ("XDG_CONFIG_HOME".into(), r.join("xdg/config").into()),
            ("XDG_DATA_HOME".into(), r.join("xdg/data").into()),
            ("XDG_STATE_HOME".into(), r.join("xdg/state").into()),
            ("XDG_CACHE_HOME".into(), r.join("xdg/cache").into()),
            ("XDG_RUNTIME_DIR".into(), r.join("xdg/runtime").into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("RUST_BACKTRACE".into(), "1".into()),
            (
                "PATH".into(),
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            ),
        ];
        for k in ["RUST_LOG", "TMPDIR"] {
            if let Some(val) = std::env::var_os(k) {
                v.push((k.into(), val));
            }
        }
        v
    }

    /// A `Command` for `program` with exactly [`VaultEnv::env_vars`] and stdin from `/dev/null`.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .envs(self.env_vars())
            .stdin(Stdio::null())
            .current_dir(&self.root_path);
        cmd
    }

    /// Adds an output of the test's own (e.g. from a custom child) to the canary scan.
    pub fn record_output(&self, label: &str, bytes: &[u8]) {
        self.transcript.push(label.to_string(), bytes);
    }

    pub(crate) fn transcript(&self) -> Transcript {
        self.transcript.clone()
    }

    // --- vaultctl -----------------------------------------------------------

    /// Sets up a vaultctl run (passphrase, stdin, extra fds, timeout), for `.run()` or `.spawn()`.
    pub fn ctl_cmd(&self, args: &[&str]) -> Ctl<'_> {
        Ctl {
            env: self,
            args: args.iter().map(|s| s.to_string()).collect(),
            passphrase: None,
            stdin: None,
            fds: Vec::new(),
            extra_env: Vec::new(),
            timeout: CTL_TIMEOUT,
        }
    }

    /// `vaultctl ARGS` with no passphrase, stdin `/dev/null`.
    #[track_caller]
    pub fn ctl(&self, args: &[&str]) -> CmdOutput {
        self.ctl_cmd(args).run()
    }

    /// `vaultctl --passphrase-fd 3 ARGS` with [`PASSPHRASE`].
    #[track_caller]
    pub fn ctl_pass(&self, args: &[&str]) -> CmdOutput {
        self.ctl_cmd(args).passphrase(PASSPHRASE).run()
    }

    /// vaultctl with an optional passphrase (fd 3), stdin, and extra pipes `(child_fd, bytes)`.
    #[track_caller]
    pub fn ctl_with(
        &self,
        args: &[&str],
        passphrase: Option<&str>,
        stdin: Option<&[u8]>,
        extra_fds: &[(i32, &[u8])],
    ) -> CmdOutput {
        let mut c = self.ctl_cmd(args);
        if let Some(p) = passphrase {
            c = c.passphrase(p);
        }
        if let Some(s) = stdin {
            c = c.stdin(s);
        }
        for (fd, data) in extra_fds {
            c = c.fd(*fd, data);
        }
        c.run()
    }

    /// `vaultctl init --kdf-memory-mib 8 --kdf-iterations 1` with [`PASSPHRASE`]; asserts success.
    #[track_caller]
    pub fn init(&self) {
        self.ctl_pass(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"])
            .assert_ok();
    }

    /// `vaultctl unlock` with [`PASSPHRASE`]; asserts success.
    #[track_caller]
    pub fn unlock(&self) {
        self.ctl_pass(&["unlock"]).assert_ok();
    }

    /// `vaultctl lock`; asserts success.
    #[track_caller]
    pub fn lock(&self) {
        self.ctl(&["lock"]).assert_ok();
    }

    /// `vaultctl status --json`, parsed; asserts success.
    #[track_caller]
    pub fn status_json(&self) -> serde_json::Value {
        self.ctl(&["status", "--json"]).assert_ok().json()
    }

    /// `vaultctl secret set NAME --from-fd 4` with the value on fd 4 (exactly these
    /// bytes, no newline) and [`PASSPHRASE`]; asserts success.
    #[track_caller]
    pub fn set_secret(&self, name: &str, value: &[u8]) {
        self.ctl_cmd(&["secret", "set", name, "--from-fd", "4"])
            .passphrase(PASSPHRASE)
            .fd(4, value)
            .run()
            .assert_ok();
    }

    /// Writes `ROOT/inputs/NAME` and returns its path.
    pub fn write_input(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.inputs.join(name);
        if let Some(parent) = p.parent() {
            mkdir_0700(parent);
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// The good test CA's PEM, written to `ROOT/inputs/ca.pem`, for a policy's `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        Pki::get().write_ca_pem(&self.inputs)
    }

    /// Writes `toml` to `ROOT/inputs/policy-N.toml` and runs `vaultctl policy apply`
    /// on it with [`PASSPHRASE`]; asserts success.
    #[track_caller]
    pub fn apply_policy(&self, toml: &str) -> CmdOutput {
        let out = self.try_apply_policy(toml);
        out.assert_ok();
        out
    }

    /// Like [`VaultEnv::apply_policy`] without asserting.
    #[track_caller]
    pub fn try_apply_policy(&self, toml: &str) -> CmdOutput {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let path = self.write_input(&format!("policy-{n}.toml"), toml.as_bytes());
        self.ctl_pass(&["policy", "apply", &path.to_string_lossy()])
    }

    /// `vaultctl agent add NAME --json` with [`PASSPHRASE`]; returns the token.
    #[track_caller]
    pub fn add_agent(&self, name: &str) -> String {
        let out = self.ctl_pass(&["agent", "add", name, "--json"]);
        out.assert_ok();
        let j = out.json();
        assert_eq!(j["name"], name, "agent add --json:\n{out}");
        j["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in agent add --json:\n{out}"))
            .to_string()
    }

    // --- the daemon ---------------------------------------------------------

    /// Starts `vaultd` (no arguments) and waits until its socket accepts and
    /// `vaultctl status` exits 0 (polling every 20 ms, up to [`DAEMON_START_TIMEOUT`]).
    /// Its stdout and stderr go to `ROOT/logs/daemon-N.{stdout,stderr}`.
    #[track_caller]
    pub fn start_daemon(&self) -> Daemon {
        let n = self.daemons.fetch_add(1, Ordering::SeqCst);
        let stderr_path = self.logs.join(format!("daemon-{n}.stderr"));
        let stdout_path = self.logs.join(format!("daemon-{n}.stdout"));
        let stderr = fs::File::create(&stderr_path).expect("create daemon stderr log");
        let stdout = fs::File::create(&stdout_path).expect("create daemon stdout log");
        let child = self
            .command(&self.bins.vaultd)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bins.vaultd.display()));
        let mut daemon = Daemon {
            child,
            n,
            stderr_path,
            exit: None,
        };
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        let mut last_status: Option<CmdOutput> = None;
        loop {
            if let Some(st) = daemon.try_wait() {
                panic!(
                    "vaultd exited during start-up ({}); its stderr:\n{}",
                    describe_status(&st),
                    daemon.stderr()
                );
            }
            if std::os::unix::net::UnixStream::connect(self.socket_path()).is_ok() {
                let out = self
                    .ctl_cmd(&["status"])
                    .timeout(Duration::from_secs(5))
                    .run();
                if out.success() {
                    return daemon;
                }
                last_status = Some(out);
            }
            if Instant::now() >= deadline {
                daemon.kill9();
                let status = last_status.map(|o| o.to_string()).unwrap_or_else(|| {
                    format!(
                        "(the socket {} never accepted a connection)",
                        self.socket_path().display()
                    )
                });
                panic!(
                    "vaultd did not become ready within {DAEMON_START_TIMEOUT:?}.\nlast status: {status}\nvaultd stderr:\n{}",
                    daemon.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `init`, `start_daemon`, `unlock`: a daemon ready to serve.
    #[track_caller]
    pub fn start_unlocked(&self) -> Daemon {
        self.init();
        let d = self.start_daemon();
        self.unlock();
        d
    }

    /// The set-up of most proxy tests: `up`'s port in `upstream_ports`, a
    /// daemon started and unlocked ([`VaultEnv::start_unlocked`]), secret
    /// `tok` set to `secret` (the name [`crate::policy::one_service`]'s
    /// service uses) and `policy` applied.
    #[track_caller]
    pub fn start_serving(&self, up: &Upstream, secret: &[u8], policy: &str) -> Daemon {
        self.allow_ports(&[up.port()]);
        let d = self.start_unlocked();
        self.set_secret("tok", secret);
        self.apply_policy(policy);
        d
    }

    // --- MCP ------------------------------------------------------------------

    /// A real MCP client (Python SDK) talking to `vault-mcp` with
    /// `VAULTD_AGENT_TOKEN=token`. Panics if the MCP session cannot be set up.
    #[track_caller]
    pub fn mcp(&self, token: &str) -> McpClient {
        self.mcp_with(McpOptions {
            token: Some(token.to_string()),
            ..McpOptions::default()
        })
    }

    /// Like [`VaultEnv::mcp`] with every option (token file, arguments, environment, handshake mode).
    #[track_caller]
    pub fn mcp_with(&self, opts: McpOptions) -> McpClient {
        self.try_mcp_with(opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`VaultEnv::mcp_with`] but returns why the session could not start.
    pub fn try_mcp_with(&self, opts: McpOptions) -> Result<McpClient, String> {
        let n = self.mcps.fetch_add(1, Ordering::SeqCst);
        McpClient::start(self, n, opts)
    }

    // --- outputs ----------------------------------------------------------------

    /// Every captured output and every file under `ROOT` (except `ROOT/inputs`
    /// and sockets), each with a label naming where it came from.
    pub fn output_sources(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.transcript.entries();
        let mut stack = vec![self.root_path.clone()];
        let mut files = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    if p != self.inputs {
                        stack.push(p);
                    }
                } else if ft.is_file() {
                    files.push(p);
                } else if ft.is_socket() || ft.is_fifo() || ft.is_symlink() {
                    continue;
                }
            }
        }
        files.sort();
        for p in files {
            if let Ok(bytes) = fs::read(&p) {
                let rel = p.strip_prefix(&self.root_path).unwrap_or(&p);
                out.push((format!("file ROOT/{}", rel.display()), bytes));
            }
        }
        out
    }

    /// [`VaultEnv::output_sources`] concatenated.
    pub fn all_outputs(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for (_, bytes) in self.output_sources() {
            all.extend_from_slice(&bytes);
            all.push(b'\n');
        }
        all
    }

    fn dump_logs_on_panic(&self) {
        eprintln!(
            "\n===== vaultd-tests: environment {} =====",
            self.root_path.display()
        );
        let Ok(rd) = fs::read_dir(&self.logs) else {
            return;
        };
        let mut logs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        logs.sort();
        for p in logs {
            let text = fs::read_to_string(&p).unwrap_or_default();
            if text.trim().is_empty() {
                continue;
            }
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("----- {} (last {} lines) -----", p.display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
        eprintln!("===== end of {} =====", self.root_path.display());
    }
}

impl Drop for VaultEnv {
    fn drop(&mut self) {
        let keep = std::env::var_os("VAULTD_TEST_KEEP").is_some_and(|v| v == "1");
        if std::thread::panicking() {
            self.dump_logs_on_panic();
        }
        if let Some(root) = self.root.take()
            && keep
        {
            let p = root.keep();
            eprintln!("vaultd-tests: kept {}", p.display());
        }
    }
}

// ---------------------------------------------------------------------------
// Canary checks.

/// Panics if `needle` appears in `haystack` in any of its forms: raw, hex (either
/// case), percent-encoded, base64 or base64url at any byte alignment (see
/// [`forms::needle_forms`]). `what` names the haystack in the message.
#[track_caller]
pub fn assert_absent(haystack: &[u8], needle: &[u8], what: &str) {
    assert!(!needle.is_empty(), "assert_absent: empty needle");
    for (label, form) in forms::needle_forms(needle) {
        if let Some(pos) = find(haystack, &form) {
            let from = pos.saturating_sub(60);
            let to = (pos + form.len() + 60).min(haystack.len());
            panic!(
                "secret leaked: its {label} form ({:?}) is in {what} at byte {pos}: ...{}...",
                String::from_utf8_lossy(&form),
                String::from_utf8_lossy(&haystack[from..to])
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Panics if `canary` (in any form, see [`assert_absent`]) appears in any output
/// or file of `env` ([`VaultEnv::output_sources`]), naming the source.
#[track_caller]
pub fn assert_no_canary(env: &VaultEnv, canary: &str) {
    for (label, bytes) in env.output_sources() {
        assert_absent(&bytes, canary.as_bytes(), &label);
    }
}

/// Reads a whole file as (lossy) UTF-8, empty if it does not exist.
pub fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_finds_every_form() {
        let secret = b"CANARY-sk-0123456789";
        let hay = |s: &str| s.as_bytes().to_vec();
        for h in [
            hay("x CANARY-sk-0123456789 y"),
            hay(&forms::hex_upper(secret)),
            hay(&format!(
                "Basic {}",
                forms::b64(b"user:CANARY-sk-0123456789")
            )),
            hay(&forms::b64url(b"{\"k\":\"CANARY-sk-0123456789\"}")),
            hay(&forms::percent_encode(b"a b CANARY-sk-0123456789")),
        ] {
            let r = std::panic::catch_unwind(|| assert_absent(&h, secret, "test"));
            assert!(r.is_err(), "not found in {:?}", String::from_utf8_lossy(&h));
        }
        assert_absent(b"nothing to see here", secret, "clean");
    }
}
