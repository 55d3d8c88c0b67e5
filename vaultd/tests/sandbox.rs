//! vaultd sandboxes itself, provably.
//!
//! - The probe (`vaultd-sandbox-probe`, which calls the same
//!   `vaultd::sandbox::apply` with the same `Dirs` and `Config` as vaultd)
//!   makes one attempt per process, once without the sandbox (the control:
//!   it must succeed, or the test proves nothing) and once with it.
//! - A running vaultd has seccomp mode 2 and no_new_privs on every thread and
//!   says "enforced" for both layers in `vaultctl status --json`.
//! - vaultd still does its whole job under the sandbox: init, unlock, secret,
//!   policy, agent, an HTTPS call to a local upstream (by address and by name),
//!   audit, status, lock, SIGTERM -> exit 0; and a call to a port outside
//!   `upstream_ports` never reaches its listener.
//!
//! Network: 127.0.0.1 only, OS-chosen ports. To see what the daemon does
//! under the sandbox, set `VAULTD_TEST_STRACE=FILE` and the daemon runs under
//! `strace -f -o FILE` (see docs/sandbox.md).

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use tempfile::TempDir;

const VAULTD: &str = env!("CARGO_BIN_EXE_vaultd");
const VAULTCTL: &str = env!("CARGO_BIN_EXE_vaultctl");
const PROBE: &str = env!("CARGO_BIN_EXE_vaultd-sandbox-probe");
const SIGSYS: i32 = 31;
const PASSPHRASE: &str = "correct horse battery staple";
const SECRET: &str = "s3cr3t-canary-7f1d2c";

// ---- the probe ------------------------------------------------------------------

/// A world for the probe: VAULTD_HOME with a config that allows one port, a
/// fake HOME with an ssh key, files outside every vaultd directory, and two
/// listening ports (one allowed, one not).
struct ProbeWorld {
    vaultd_home: TempDir,
    fake_home: TempDir,
    outside: TempDir,
    allowed: TcpListener,
    forbidden: TcpListener,
    agent_socket: PathBuf,
    _agent: std::os::unix::net::UnixListener,
}

impl ProbeWorld {
    fn new() -> ProbeWorld {
        let vaultd_home = TempDir::new().unwrap();
        let fake_home = TempDir::new().unwrap();
        let outside = TempDir::new().unwrap();
        let allowed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let forbidden = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        std::fs::write(
            vaultd_home.path().join("vaultd.toml"),
            format!(
                "upstream_ports = [{}]\n",
                allowed.local_addr().unwrap().port()
            ),
        )
        .unwrap();
        std::fs::create_dir(fake_home.path().join(".ssh")).unwrap();
        std::fs::write(
            fake_home.path().join(".ssh/id_rsa"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n",
        )
        .unwrap();
        std::fs::write(
            outside.path().join("notes.txt"),
            "outside every vaultd directory\n",
        )
        .unwrap();
        // A unix stream socket like ssh-agent's or docker.sock.
        let agent_socket = outside.path().join("agent.sock");
        let agent = std::os::unix::net::UnixListener::bind(&agent_socket).unwrap();
        ProbeWorld {
            vaultd_home,
            fake_home,
            outside,
            allowed,
            forbidden,
            agent_socket,
            _agent: agent,
        }
    }

    fn probe(&self, sandbox: bool, args: &[&str]) -> Output {
        let mut cmd = Command::new(PROBE);
        if !sandbox {
            cmd.arg("--no-sandbox");
        }
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("VAULTD_HOME", self.vaultd_home.path())
            .env("HOME", self.fake_home.path())
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Allowed,
    /// Refused with this errno.
    Denied(i32),
    /// Killed by this signal.
    Killed(i32),
}

fn outcome(out: &Output) -> Outcome {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(sig) = out.status.signal() {
        return Outcome::Killed(sig);
    }
    match out.status.code() {
        Some(0) if stdout.trim() == "allowed" => Outcome::Allowed,
        Some(1) => {
            let errno = stdout
                .rsplit_once("(os error ")
                .and_then(|(_, r)| r.trim().trim_end_matches(')').parse().ok())
                .unwrap_or_else(|| panic!("no errno in {stdout:?}"));
            Outcome::Denied(errno)
        }
        _ => panic!(
            "probe failed: {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        ),
    }
}

/// Runs one attempt without and with the sandbox: the control must succeed,
/// the sandboxed run must end as `expected`.
fn attempt(world: &ProbeWorld, args: &[&str], expected: Outcome) {
    let control = world.probe(false, args);
    assert_eq!(
        outcome(&control),
        Outcome::Allowed,
        "control run of {args:?} failed, the test would prove nothing: {control:?}"
    );
    let sandboxed = world.probe(true, args);
    let stderr = String::from_utf8_lossy(&sandboxed.stderr);
    if !matches!(expected, Outcome::Killed(_)) {
        assert!(
            stderr.contains("landlock: enforced") && stderr.contains("seccomp: enforced"),
            "sandbox not applied: {stderr}"
        );
    }
    assert_eq!(
        outcome(&sandboxed),
        expected,
        "sandboxed run of {args:?}: {sandboxed:?}"
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn probe_cannot_read_ssh_key_in_home() {
    let w = ProbeWorld::new();
    attempt(
        &w,
        &["read", s(&w.fake_home.path().join(".ssh/id_rsa"))],
        Outcome::Denied(libc::EACCES),
    );
    attempt(
        &w,
        &["list", s(w.fake_home.path())],
        Outcome::Denied(libc::EACCES),
    );
}

#[test]
fn probe_cannot_read_etc_shadow_even_as_root() {
    let w = ProbeWorld::new();
    if !vaultd_is_root() {
        // Without root the control cannot read /etc/shadow either; the other
        // tests cover reads outside the sandbox.
        eprintln!("not root: /etc/shadow control skipped");
        return;
    }
    attempt(&w, &["read", "/etc/shadow"], Outcome::Denied(libc::EACCES));
}

#[test]
fn probe_cannot_read_or_write_outside_its_directories() {
    let w = ProbeWorld::new();
    attempt(
        &w,
        &["read", s(&w.outside.path().join("notes.txt"))],
        Outcome::Denied(libc::EACCES),
    );
    attempt(
        &w,
        &["write", s(&w.outside.path().join("dropped.txt"))],
        Outcome::Denied(libc::EACCES),
    );
    // A program vaultd's policy does not list: not even readable.
    attempt(&w, &["read", "/bin/sh"], Outcome::Denied(libc::EACCES));
}

#[test]
fn probe_can_write_and_read_in_the_vault_directory() {
    let w = ProbeWorld::new();
    let file = w.vaultd_home.path().join("probe.txt");
    attempt(&w, &["write", s(&file)], Outcome::Allowed);
    attempt(&w, &["read", s(&file)], Outcome::Allowed);
    // Resolver files stay readable (getaddrinfo needs them).
    attempt(&w, &["read", "/etc/hosts"], Outcome::Allowed);
}

#[test]
fn probe_dies_on_execve() {
    let w = ProbeWorld::new();
    // Control: exec works (the probe becomes /bin/true and exits 0).
    let control = w.probe(false, &["exec", "/bin/true"]);
    assert!(control.status.success(), "control exec failed: {control:?}");
    let sandboxed = w.probe(true, &["exec", "/bin/sh"]);
    assert_eq!(sandboxed.status.signal(), Some(SIGSYS), "{sandboxed:?}");
}

#[test]
fn probe_cannot_start_a_program() {
    let w = ProbeWorld::new();
    // posix_spawn's clone (CLONE_VM|CLONE_VFORK, no CLONE_THREAD) is refused
    // before any execve could be tried: clone is allowed for threads only.
    attempt(&w, &["spawn", "/bin/true"], Outcome::Denied(libc::EPERM));
}

#[test]
fn probe_dies_on_ptrace() {
    let w = ProbeWorld::new();
    attempt(&w, &["ptrace"], Outcome::Killed(SIGSYS));
}

#[test]
fn probe_connects_only_to_upstream_ports() {
    let w = ProbeWorld::new();
    let allowed = w.allowed.local_addr().unwrap().port().to_string();
    let forbidden = w.forbidden.local_addr().unwrap().port().to_string();
    attempt(&w, &["connect", &allowed], Outcome::Allowed);
    attempt(&w, &["connect", &forbidden], Outcome::Denied(libc::EACCES));
    // vaultd never binds after start-up: seccomp refuses bind(2) outright
    // (and landlock, which handles BindTcp with no rule, would refuse it too).
    attempt(&w, &["bind"], Outcome::Denied(libc::EPERM));
}

#[test]
fn probe_cannot_reach_unix_stream_sockets() {
    let w = ProbeWorld::new();
    // seccomp refuses the socket itself: EPERM, the soft failure.
    attempt(
        &w,
        &["unix", s(&w.agent_socket)],
        Outcome::Denied(libc::EPERM),
    );
}

fn vaultd_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

// ---- the daemon -----------------------------------------------------------------

/// A pipe whose read end becomes fd 3 of a child, holding `text`.
fn fd3(text: &str) -> Vec<FdMapping> {
    let (reader, mut writer) = std::io::pipe().unwrap();
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer);
    vec![FdMapping {
        parent_fd: reader.into(),
        child_fd: 3,
    }]
}

struct Vault {
    home: TempDir,
    /// VAULTD_SOCKET, when the socket lives outside VAULTD_HOME.
    socket_override: Option<PathBuf>,
    daemon: Option<Child>,
}

impl Vault {
    fn new(config: &str) -> Vault {
        let home = TempDir::new().unwrap();
        std::fs::write(home.path().join("vaultd.toml"), config).unwrap();
        Vault {
            home,
            socket_override: None,
            daemon: None,
        }
    }

    fn socket(&self) -> PathBuf {
        self.socket_override
            .clone()
            .unwrap_or_else(|| self.home.path().join("vaultd.sock"))
    }

    /// The environment every binary of this vault gets.
    fn env(&self, cmd: &mut Command) {
        cmd.env("VAULTD_HOME", self.home.path());
        match &self.socket_override {
            Some(s) => cmd.env("VAULTD_SOCKET", s),
            None => cmd.env_remove("VAULTD_SOCKET"),
        };
    }

    fn ctl(&self, args: &[&str], passphrase: bool, stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(VAULTCTL);
        self.env(&mut cmd);
        if passphrase {
            cmd.arg("--passphrase-fd")
                .arg("3")
                .fd_mappings(fd3(&format!("{PASSPHRASE}\n")))
                .unwrap();
        }
        cmd.args(args).stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ctl_ok(&self, args: &[&str], passphrase: bool, stdin: Option<&str>) -> String {
        let out = self.ctl(args, passphrase, stdin);
        assert!(
            out.status.success(),
            "vaultctl {args:?} failed: {:?}\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("daemon.log")).unwrap_or_default()
    }

    /// Starts vaultd and waits until it answers.
    fn start(&mut self) -> u32 {
        self.start_with_notify(None)
    }

    /// Starts vaultd with `NOTIFY_SOCKET` (systemd's readiness socket) when given.
    fn start_with_notify(&mut self, notify: Option<&Path>) -> u32 {
        let log = std::fs::File::create(self.home.path().join("daemon.log")).unwrap();
        let mut cmd = match std::env::var_os("VAULTD_TEST_STRACE") {
            Some(trace) => {
                let mut c = Command::new("strace");
                c.arg("-f").arg("-o").arg(trace).arg(VAULTD);
                c
            }
            None => Command::new(VAULTD),
        };
        self.env(&mut cmd);
        cmd.env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        let child = cmd.spawn().unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket().exists() && self.ctl(&["status"], false, None).status.success() {
                break;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("vaultd exited at start-up: {status:?}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "vaultd did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.status_json();
        status["pid"].as_u64().unwrap() as u32
    }

    fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ctl_ok(&["status", "--json"], false, None)).unwrap()
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self, pid: u32) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let mut child = self.daemon.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vaultd ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn proc_status(pid: u32, task: Option<&str>) -> String {
    let path = match task {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn daemon_runs_sandboxed_on_every_thread() {
    let mut v = Vault::new("");
    let pid = v.start();
    let status = proc_status(pid, None);
    assert!(status.contains("Seccomp:\t2\n"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1\n"), "{status}");
    assert!(status.contains("Seccomp_filters:\t3\n"), "{status}");
    // Every thread, not only the main one.
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(tasks.len() > 1, "expected runtime threads, found {tasks:?}");
    for t in &tasks {
        let st = proc_status(pid, Some(t));
        assert!(
            st.contains("Seccomp:\t2\n") && st.contains("NoNewPrivs:\t1\n"),
            "thread {t}: {st}"
        );
    }
    let json = v.status_json();
    let landlock = json["landlock"].as_str().unwrap();
    let seccomp = json["seccomp"].as_str().unwrap();
    assert!(
        landlock.starts_with("enforced (landlock ABI 6"),
        "{landlock}"
    );
    assert!(
        landlock.contains("TCP connect to port(s) 443 only"),
        "{landlock}"
    );
    assert!(seccomp.starts_with("enforced (filter mode 2"), "{seccomp}");
    assert_eq!(v.stop(pid).code(), Some(0), "{}", v.log());
}

#[test]
fn vaultd_check_reports_every_protection() {
    let mut v = Vault::new("");
    let pid = v.start();
    let mut cmd = Command::new(VAULTD);
    v.env(&mut cmd);
    let out = cmd.arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   dumpable: no",
        "ok   core limit: 0",
        "ok   mlock:",
        "ok   landlock: ABI ",
        "ok   seccomp: filters available",
        "ok   daemon socket:",
        "mode 0600",
        "ok   daemon landlock: enforced",
        "ok   daemon seccomp: enforced",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert_eq!(v.stop(pid).code(), Some(0), "{}", v.log());
}

#[test]
fn socket_directory_elsewhere_is_remove_only() {
    let sockets = TempDir::new().unwrap();
    let mut v = Vault::new("");
    v.socket_override = Some(sockets.path().join("vaultd.sock"));
    let pid = v.start();
    let landlock = v.status_json()["landlock"].as_str().unwrap().to_string();
    assert!(
        landlock.contains("remove-only the socket's dir"),
        "{landlock}"
    );
    // The probe, with the same environment, may not create files there.
    let mut cmd = Command::new(PROBE);
    v.env(&mut cmd);
    let out = cmd
        .args(["write", s(&sockets.path().join("dropped"))])
        .output()
        .unwrap();
    assert_eq!(outcome(&out), Outcome::Denied(libc::EACCES), "{out:?}");
    // ...but vaultd still removes its socket when it stops.
    assert_eq!(v.stop(pid).code(), Some(0), "{}", v.log());
    assert!(!v.socket().exists(), "the socket was not removed on exit");
}

// ---- a local HTTPS upstream ---------------------------------------------------

/// A TLS server on 127.0.0.1 that answers every request with a JSON echo of
/// its request line and Authorization header, and records them.
struct Upstream {
    port: u16,
    ca_pem: String,
    seen: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    fn start() -> Upstream {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "vaultd sandbox test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        let chain = vec![cert.der().clone(), ca.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let line = head.lines().next().unwrap_or("").to_string();
                    let auth = head
                        .lines()
                        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("authorization")))
                        .map(|(_, v)| v.trim().to_string())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(format!("{line} | {auth}"));
                    let body = serde_json::json!({"request": line, "authorization": auth}).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Upstream {
            port,
            ca_pem: ca.pem(),
            seen,
            _rt: rt,
        }
    }
}

fn execute(
    socket: &Path,
    token: &str,
    capability: &str,
    path: &str,
) -> Result<(u32, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = vault_proto::client::connect(socket, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        let r = c
            .execute(vault_proto::v1::ExecuteRequest {
                agent_token: token.to_string(),
                capability: capability.to_string(),
                method: "GET".to_string(),
                path: path.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok((r.status, String::from_utf8_lossy(&r.body).to_string()))
    })
}

fn etc_hosts_has_localhost() -> bool {
    std::fs::read_to_string("/etc/hosts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut w = l.split('#').next().unwrap_or("").split_whitespace();
            w.next() == Some("127.0.0.1") && w.any(|n| n == "localhost")
        })
}

#[test]
fn daemon_works_under_the_sandbox() {
    let up = Upstream::start();
    // A port vaultd's policy grants but landlock does not: nothing may reach it.
    let blocked = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    blocked.set_nonblocking(true).unwrap();
    let blocked_port = blocked.local_addr().unwrap().port();

    let mut v = Vault::new(&format!("upstream_ports = [{}]\n", up.port));
    // The CA and the policy live outside VAULTD_HOME: vaultctl reads them, vaultd never does.
    let ca_dir = TempDir::new().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    std::fs::write(&ca, &up.ca_pem).unwrap();

    v.ctl_ok(
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
        true,
        None,
    );
    // systemd's readiness protocol goes through the sandbox too (a unix datagram socket).
    let notify_path = ca_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let pid = v.start_with_notify(Some(&notify_path));
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert_eq!(v.status_json()["state"], "locked");
    v.ctl_ok(&["unlock"], true, None);
    v.ctl_ok(
        &["secret", "set", "upstream-token", "--from-stdin"],
        true,
        Some(SECRET),
    );

    let by_name = etc_hosts_has_localhost();
    let mut policy = String::new();
    for (name, host, port) in [
        ("local", "127.0.0.1", up.port),
        ("local-by-name", "localhost", up.port),
        ("blocked", "127.0.0.1", blocked_port),
    ] {
        if name == "local-by-name" && !by_name {
            continue;
        }
        policy.push_str(&format!(
            r#"
[[service]]
name = "{name}"
base_url = "https://{host}:{port}/api"
auth = {{ type = "bearer", secret = "upstream-token" }}
ca_file = "{ca}"
allow_private_network = true
timeout = "5s"

[[capability]]
name = "{name}-get"
service = "{name}"
agents = ["sandbox-agent"]
allow = ["GET /**"]
"#,
            ca = ca.display()
        ));
    }
    policy.push_str("\n[[agent]]\nname = \"sandbox-agent\"\n");
    let policy_file = ca_dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy).unwrap();
    v.ctl_ok(&["policy", "apply", s(&policy_file)], true, None);
    let added: serde_json::Value =
        serde_json::from_str(&v.ctl_ok(&["agent", "add", "sandbox-agent", "--json"], true, None))
            .unwrap();
    let token = added["token"].as_str().unwrap().to_string();

    // The upstream call: TLS with the sealed CA, the credential injected, the answer scrubbed.
    let (status, body) = execute(&v.socket(), &token, "local-get", "/echo")
        .unwrap_or_else(|e| panic!("{e}\n{}", v.log()));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("GET /api/echo HTTP/1.1"), "{body}");
    assert!(
        !body.contains(SECRET) && body.contains("[REDACTED]"),
        "{body}"
    );
    assert!(
        up.seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.ends_with(&format!("Bearer {SECRET}")))
    );
    if by_name {
        // Name resolution (getaddrinfo: nsswitch.conf, hosts, gai.conf) under landlock + seccomp.
        let (status, body) = execute(&v.socket(), &token, "local-by-name-get", "/by-name")
            .unwrap_or_else(|e| panic!("{e}\n{}", v.log()));
        assert_eq!(status, 200, "{body}");
    }
    // The policy allows the blocked service, landlock does not: refused, nothing reached it.
    let refused = execute(&v.socket(), &token, "blocked-get", "/x");
    assert!(
        matches!(&refused, Err(e) if e.contains("upstream_error")),
        "{refused:?}"
    );
    assert!(
        blocked
            .accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection reached the blocked port"
    );

    // Audit written and verifiable, status, lock, SIGTERM.
    v.ctl_ok(&["audit", "verify"], false, None);
    let audit = std::fs::read_to_string(v.home.path().join("audit.jsonl")).unwrap();
    assert!(audit.lines().count() >= 4, "{audit}");
    assert!(!audit.contains(SECRET));
    let st = v.status_json();
    assert_eq!(st["state"], "unlocked");
    assert_eq!(st["services"], if by_name { 3 } else { 2 });
    v.ctl_ok(&["lock"], false, None);
    assert_eq!(v.status_json()["state"], "locked");
    let exit = v.stop(pid);
    assert_eq!(exit.code(), Some(0), "{}", v.log());
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(!v.socket().exists(), "the socket was not removed on exit");
    let log = v.log();
    assert!(!log.contains(SECRET), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}
