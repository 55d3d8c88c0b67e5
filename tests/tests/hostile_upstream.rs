//! Issue 5: hostile upstreams (DESIGN.md, proxy rule 7 and rule 10). Each test
//! points one service at a misbehaving server, calls it through the real
//! vaultd over gRPC (as vault-mcp does), and checks that the call ends the
//! documented way within the service's `timeout`, that vaultd's memory stays
//! bounded, and that another agent's calls to a good upstream keep working.
//!
//! Figures (durations, VmHWM) are printed; run with `--nocapture` to see them.

use std::time::{Duration, Instant};

use vault_proto::client::Client;
use vault_proto::v1::{ExecuteRequest, ExecuteResponse, Header};
use vaultd_tests::{Daemon, RawServer, TlsKind, Upstream, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-hostile-5b8e1d0a7c";
/// The hostile service's `timeout`.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Slack allowed past the timeout for the call to come back.
const SLACK: Duration = Duration::from_millis(1500);
/// The hostile service's `max_response_bytes`.
const MAX: usize = 1024 * 1024;
/// vaultd's peak resident memory must stay under this (bytes).
const RSS_BOUND: u64 = 150 * 1024 * 1024;

struct Rig {
    env: VaultEnv,
    daemon: Daemon,
    good: Upstream,
    rt: tokio::runtime::Runtime,
    token_a: String,
    token_b: String,
}

/// A daemon with service `bad` at `bad_url` (timeout 2 s, cap 1 MiB; agent `a`,
/// capability `bad`, any GET) and service `good` at a good upstream (agent `b`,
/// capability `good`).
fn rig(bad_url: &str, bad_port: u16) -> Rig {
    let good = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    env.allow_ports(&[bad_port, good.port()]);
    let daemon = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    let ca = env.ca_file();
    env.apply_policy(&format!(
        r#"
[[service]]
name = "bad"
base_url = "{bad_url}/api"
auth = {{ type = "bearer", secret = "tok" }}
ca_file = "{ca}"
allow_private_network = true
timeout = "{t}s"
max_response_bytes = {MAX}

[[service]]
name = "good"
base_url = "{good}/api"
auth = {{ type = "bearer", secret = "tok" }}
ca_file = "{ca}"
allow_private_network = true

[[agent]]
name = "a"

[[agent]]
name = "b"

[[capability]]
name = "bad"
service = "bad"
agents = ["a"]
allow = ["GET /**"]

[[capability]]
name = "good"
service = "good"
agents = ["b"]
allow = ["GET /**"]
"#,
        good = good.url(),
        ca = ca.display(),
        t = TIMEOUT.as_secs(),
    ));
    let token_a = env.add_agent("a");
    let token_b = env.add_agent("b");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Rig {
        env,
        daemon,
        good,
        rt,
        token_a,
        token_b,
    }
}

fn req(token: &str, capability: &str, path: &str, query: &[(&str, &str)]) -> ExecuteRequest {
    ExecuteRequest {
        agent_token: token.to_string(),
        capability: capability.to_string(),
        method: "GET".into(),
        path: path.into(),
        query: query
            .iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

async fn execute(client: &mut Client, r: ExecuteRequest) -> Result<ExecuteResponse, tonic::Status> {
    client.execute(r).await.map(|r| r.into_inner())
}

impl Rig {
    async fn client(&self) -> Client {
        vault_proto::client::connect(&self.env.socket_path(), Duration::from_secs(5))
            .await
            .expect("connect to vaultd")
    }

    /// Agent `a` calls `GET path` on the hostile service; returns the outcome and how long it took.
    fn call_bad(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> (Result<ExecuteResponse, tonic::Status>, Duration) {
        let r = req(&self.token_a, "bad", path, query);
        self.rt.block_on(async {
            let mut c = self.client().await;
            let t = Instant::now();
            let out = execute(&mut c, r).await;
            (out, t.elapsed())
        })
    }

    /// Agent `b`'s call to the good upstream, on its own connection: must succeed promptly.
    async fn good_call_works(&self) -> Duration {
        let mut c = self.client().await;
        let before = self.good.request_count();
        let t = Instant::now();
        let r = execute(&mut c, req(&self.token_b, "good", "/echo/ok", &[]))
            .await
            .unwrap_or_else(|s| panic!("agent b's good call failed: {s:?}"));
        let took = t.elapsed();
        assert_eq!(r.status, 200);
        assert!(!r.truncated);
        assert_eq!(self.good.request_count(), before + 1);
        assert!(took < Duration::from_secs(2), "good call took {took:?}");
        took
    }

    fn good_call_works_blocking(&self) -> Duration {
        self.rt.block_on(self.good_call_works())
    }

    /// Hostile call started in the background; while it is still running, agent b
    /// calls the good upstream. Returns the hostile outcome and duration.
    fn call_bad_while_others_work(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> (Result<ExecuteResponse, tonic::Status>, Duration) {
        let r = req(&self.token_a, "bad", path, query);
        self.rt.block_on(async {
            let mut c = self.client().await;
            let t = Instant::now();
            let bad = tokio::spawn(async move { execute(&mut c, r).await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let good_took = self.good_call_works().await;
            assert!(
                !bad.is_finished(),
                "the hostile call should still be running while agent b is served"
            );
            let out = bad.await.unwrap();
            let took = t.elapsed();
            println!("  agent b's call during the hostile one: {good_took:?}");
            (out, took)
        })
    }

    fn vm(&self, field: &str) -> u64 {
        vm_kib(self.daemon.pid(), field) * 1024
    }

    fn finish(self) {
        // The daemon is still alive and serving after the fault.
        self.good_call_works_blocking();
        assert_eq!(self.env.status_json()["state"], "unlocked");
        drop(self.rt);
        assert_no_canary(&self.env, CANARY);
        drop(self.daemon);
    }
}

/// A `VmXXX:` field of /proc/PID/status, in KiB.
fn vm_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[track_caller]
fn assert_upstream_error(out: &Result<ExecuteResponse, tonic::Status>, what: &str) -> String {
    match out {
        Ok(r) => panic!(
            "{what}: expected upstream_error, got status {} truncated={} body {} bytes",
            r.status,
            r.truncated,
            r.body.len()
        ),
        Err(s) => {
            assert!(
                s.message().starts_with("upstream_error: "),
                "{what}: expected `upstream_error: ...`, got {:?}: {}",
                s.code(),
                s.message()
            );
            assert!(!s.message().contains(CANARY), "{}", s.message());
            s.message().to_string()
        }
    }
}

#[track_caller]
fn assert_within_timeout(took: Duration, what: &str) {
    assert!(
        took <= TIMEOUT + SLACK,
        "{what}: took {took:?}, more than the timeout {TIMEOUT:?} + {SLACK:?}"
    );
}

/// The last audit record is the result of the hostile call, with `field` = `want`.
#[track_caller]
fn assert_audited(env: &VaultEnv, field: &str, want: serde_json::Value) {
    let out = env.ctl(&["audit", "tail", "-n", "1", "--json"]);
    out.assert_ok();
    let recs = out.json_lines();
    let last = recs
        .last()
        .unwrap_or_else(|| panic!("no audit record:\n{out}"));
    assert_eq!(last["kind"], "result", "{last}");
    assert_eq!(last[field], want, "{last}");
}

#[test]
fn connection_reset_mid_body_is_upstream_error() {
    let up = Upstream::start(TlsKind::Good);
    let rig = rig(&up.url(), up.port());
    let (out, took) = rig.call_bad("/reset", &[]);
    let msg = assert_upstream_error(&out, "reset");
    assert_within_timeout(took, "reset");
    assert_eq!(up.request_count(), 1);
    assert_audited(&rig.env, "code", "upstream_error".into());
    println!("reset mid-body: {took:?}: {msg}");
    rig.finish();
}

#[test]
fn body_shorter_than_its_length_is_upstream_error() {
    let up = Upstream::start(TlsKind::Good);
    let rig = rig(&up.url(), up.port());
    let (out, took) = rig.call_bad("/short-body", &[]);
    let msg = assert_upstream_error(&out, "short body");
    assert_within_timeout(took, "short body");
    assert_eq!(up.request_count(), 1);
    println!("short body (clean close): {took:?}: {msg}");
    rig.finish();
}

fn tls_failure(kind: TlsKind) {
    let up = Upstream::start(kind);
    let rig = rig(&up.url(), up.port());
    let (out, took) = rig.call_bad("/echo/x", &[]);
    let msg = assert_upstream_error(&out, &format!("{kind:?}"));
    assert_within_timeout(took, &format!("{kind:?}"));
    assert!(
        up.requests().is_empty(),
        "request bytes crossed a failed TLS connection"
    );
    // The server sees the failed handshake a moment after the client gave up.
    let deadline = Instant::now() + Duration::from_secs(3);
    while up.tls_failures() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(up.tls_failures() > 0, "the handshake should have failed");
    assert!(up.connections() > 0);
    println!(
        "TLS {kind:?}: {took:?}, {} handshake(s) refused: {msg}",
        up.tls_failures()
    );
    rig.finish();
}

#[test]
fn tls_certificate_from_unknown_ca_is_refused_before_any_request() {
    tls_failure(TlsKind::UnknownCa);
}

#[test]
fn tls_hostname_mismatch_is_refused_before_any_request() {
    tls_failure(TlsKind::WrongName);
}

#[test]
fn trickle_of_one_byte_per_second_ends_at_the_timeout() {
    let up = Upstream::start(TlsKind::Good);
    let rig = rig(&up.url(), up.port());
    let (out, took) = rig.call_bad_while_others_work("/trickle", &[("interval_ms", "1000")]);
    let msg = assert_upstream_error(&out, "trickle");
    assert!(msg.contains("timeout"), "{msg}");
    assert!(took >= TIMEOUT - Duration::from_millis(100), "{took:?}");
    assert_within_timeout(took, "trickle");
    // Its connection is closed, not kept for the next call.
    assert!(
        up.wait_open_connections_at_most(0, Duration::from_secs(3)),
        "the trickling connection is still open"
    );
    println!("trickle 1 B/s: {took:?}: {msg}");
    rig.finish();
}

/// What a body cut at `MAX` keeps: all but its last bytes (three times the
/// credential's length, less one), which are `[REDACTED]` whatever they held
/// (the cut could fall inside an echoed credential).
fn kept_of_cut(body: &[u8]) -> &[u8] {
    let kept = body
        .strip_suffix(b"[REDACTED]")
        .expect("a cut body ends with [REDACTED]");
    assert_eq!(kept.len(), MAX - (3 * CANARY.len() - 1));
    kept
}

#[test]
fn endless_body_is_cut_at_max_response_bytes() {
    let up = Upstream::start(TlsKind::Good);
    let rig = rig(&up.url(), up.port());
    let (out, took) = rig.call_bad("/endless", &[]);
    let r = out.unwrap_or_else(|s| panic!("endless: expected a truncated body, got {s:?}"));
    assert_eq!(r.status, 200);
    assert!(r.truncated, "an endless body must come back truncated");
    assert!(kept_of_cut(&r.body).iter().all(|&b| b == b'a'));
    assert_within_timeout(took, "endless");
    let hwm = rig.vm("VmHWM");
    let rss = rig.vm("VmRSS");
    assert!(hwm < RSS_BOUND, "vaultd peaked at {hwm} bytes");
    // vaultd speaks HTTP/2 when offered: the cut is on a shared connection.
    let reqs = up.requests();
    assert_eq!(
        reqs.last().map(|r| r.version),
        Some(hyper::Version::HTTP_2),
        "the endless body was not fetched over HTTP/2"
    );
    // Rule 7: the truncated connection is closed (HTTP/2: its pool is retired),
    // so the upstream stops sending.
    let closed = up.wait_open_connections_at_most(0, Duration::from_secs(3));
    assert!(
        closed,
        "the endless body's connection was kept open after truncation"
    );
    assert_audited(&rig.env, "truncated", true.into());
    println!(
        "endless body: {took:?}, {} bytes, truncated; vaultd VmRSS {} MiB, VmHWM {} MiB",
        r.body.len(),
        rss >> 20,
        hwm >> 20
    );
    rig.finish();
}

#[test]
fn one_gib_body_is_cut_not_buffered() {
    let up = Upstream::start(TlsKind::Good);
    let rig = rig(&up.url(), up.port());
    let (out, took) = rig.call_bad("/big", &[("bytes", "1073741824")]);
    let r = out.unwrap_or_else(|s| panic!("1 GiB: expected a truncated body, got {s:?}"));
    assert_eq!(r.status, 200);
    assert!(r.truncated);
    kept_of_cut(&r.body);
    assert_within_timeout(took, "1 GiB");
    let hwm = rig.vm("VmHWM");
    let rss = rig.vm("VmRSS");
    assert!(hwm < RSS_BOUND, "vaultd peaked at {hwm} bytes");
    assert!(
        up.wait_open_connections_at_most(0, Duration::from_secs(3)),
        "the 1 GiB body's connection was kept open after truncation"
    );
    println!(
        "1 GiB body: {took:?}, cut at {} bytes; vaultd VmRSS {} MiB, VmHWM {} MiB",
        r.body.len(),
        rss >> 20,
        hwm >> 20
    );
    rig.finish();
}

#[test]
fn garbage_instead_of_http_is_upstream_error() {
    let raw = RawServer::garbage();
    let rig = rig(&raw.url(), raw.addr().port());
    let (out, took) = rig.call_bad("/echo/x", &[]);
    let msg = assert_upstream_error(&out, "garbage");
    assert_within_timeout(took, "garbage");
    assert!(raw.connections() > 0);
    println!("garbage instead of HTTP: {took:?}: {msg}");
    rig.finish();
}

#[test]
fn redirect_loop_is_returned_as_is_after_one_request() {
    let up = Upstream::start(TlsKind::Good);
    let rig = rig(&up.url(), up.port());
    // A redirect to itself: following it would loop.
    let me = format!("{}/api/redirect?to={}/api/redirect", up.url(), up.url());
    let (out, took) = rig.call_bad("/redirect", &[("to", &me)]);
    let r = out.unwrap_or_else(|s| panic!("redirect: expected the 302 itself, got {s:?}"));
    assert_eq!(r.status, 302);
    let loc = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("location"))
        .map(|h| h.value.clone());
    assert_eq!(loc.as_deref(), Some(me.as_str()));
    assert!(!r.truncated);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(up.request_count(), 1, "the redirect must not be followed");
    println!("3xx loop: {took:?}, returned 302 after one request");
    rig.finish();
}

#[test]
fn upstream_that_never_answers_ends_at_the_timeout_and_others_are_served() {
    let up = Upstream::start(TlsKind::Good);
    let rig = rig(&up.url(), up.port());
    let (out, took) = rig.call_bad_while_others_work("/hang", &[]);
    let msg = assert_upstream_error(&out, "hang");
    assert!(msg.contains("timeout"), "{msg}");
    assert!(took >= TIMEOUT - Duration::from_millis(100), "{took:?}");
    assert_within_timeout(took, "hang");
    assert_eq!(up.request_count(), 1);
    assert_audited(&rig.env, "code", "upstream_error".into());
    println!("request never answered: {took:?}: {msg}");
    rig.finish();
}

#[test]
fn tcp_server_that_never_speaks_tls_ends_at_the_timeout_and_others_are_served() {
    let raw = RawServer::plain_tcp_hang();
    let rig = rig(&raw.url(), raw.addr().port());
    let (out, took) = rig.call_bad_while_others_work("/echo/x", &[]);
    let msg = assert_upstream_error(&out, "tcp hang");
    assert!(took >= TIMEOUT - Duration::from_millis(100), "{took:?}");
    assert_within_timeout(took, "tcp hang");
    assert!(raw.connections() > 0);
    println!("TCP accepted, TLS never answered: {took:?}: {msg}");
    rig.finish();
}
