//! Issue 3, rule 9 of the proxy path: `vaultctl lock` aborts every call in
//! flight (MCP and gRPC clients alike), each returns `locked` promptly, their
//! upstream connections are closed, no upstream request starts after `lock`
//! returns, and calls made while locked never reach the upstream; the same
//! when the timer of `vaultctl unlock --for` locks the vault.

use std::time::{Duration, Instant};

use serde_json::json;
use vaultd_tests::{TlsKind, Upstream, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-lock-4e1b7c0d9f26";

fn policy(up: &Upstream, env: &VaultEnv) -> String {
    vaultd_tests::policy::one_service(
        env,
        &up.url(),
        r#"timeout = "60s""#,
        "c",
        r#"allow = ["GET /v1/**"]"#,
    )
}

/// The lock records of the whole audit log (`audit tail --json`).
fn lock_records(env: &VaultEnv) -> Vec<serde_json::Value> {
    let tail = env.ctl(&["audit", "tail", "-n", "0", "--json"]);
    tail.assert_ok();
    tail.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "lock")
        .collect()
}

/// One `Execute` straight over gRPC (another client than vault-mcp); returns the status message.
fn grpc_execute(env: &VaultEnv, token: &str, path: &str, query: &[(&str, &str)]) -> String {
    env.with_grpc(async |mut c| {
        let r = c
            .execute(vault_proto::v1::ExecuteRequest {
                agent_token: token.to_string(),
                capability: "c".into(),
                method: "GET".into(),
                path: path.into(),
                query: query
                    .iter()
                    .map(|(k, v)| vault_proto::v1::Header {
                        name: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => "ok".to_string(),
            Err(s) => s.message().to_string(),
        }
    })
}

#[test]
fn lock_aborts_calls_in_flight_and_nothing_reaches_the_upstream_after() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);

    // --- Phase 1: six slow calls in flight (4 through MCP, 2 over gRPC), then lock.
    let mcp_calls = [
        ("/v1/hang", None),
        ("/v1/hang", None),
        ("/v1/slow", Some("20000")),
        ("/v1/slow", Some("20000")),
    ];
    let grpc_calls = [("/v1/hang", None), ("/v1/slow", Some("20000"))];
    let total = mcp_calls.len() + grpc_calls.len();
    let (lock_started, lock_out, outcomes) = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (path, ms) in mcp_calls {
            let mcp = &mcp;
            handles.push(s.spawn(move || {
                let mut args = json!({"capability": "c", "method": "GET", "path": path});
                if let Some(ms) = ms {
                    args["query"] = json!({"ms": ms});
                }
                let r = mcp.call_timeout("execute", args, Duration::from_secs(60));
                (format!("mcp {path}"), Instant::now(), r.text)
            }));
        }
        for (path, ms) in grpc_calls {
            let (env, token) = (&env, &token);
            handles.push(s.spawn(move || {
                let q: Vec<(&str, &str)> = ms.iter().map(|m| ("ms", *m)).collect();
                let msg = grpc_execute(env, token, path, &q);
                (format!("grpc {path}"), Instant::now(), msg)
            }));
        }
        up.wait_for_requests(total, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
        let lock_started = Instant::now();
        let out = env.ctl(&["lock"]);
        let lock_took = lock_started.elapsed();
        println!("vaultctl lock took {lock_took:?}: {}", out.stdout.trim());
        let outcomes: Vec<(String, Instant, String)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        (lock_started, out, outcomes)
    });
    lock_out.assert_ok();
    assert!(
        lock_out
            .stdout
            .contains(&format!("({total} call(s) in flight aborted)")),
        "{lock_out}"
    );
    let mut worst = Duration::ZERO;
    for (who, at, text) in &outcomes {
        let took = at.duration_since(lock_started);
        worst = worst.max(took);
        println!("{who}: returned {took:?} after lock started: {text}");
        assert!(text.starts_with("locked: "), "{who}: {text}");
        assert!(text.contains("vaultctl unlock"), "{who}: {text}");
        assert!(took < Duration::from_secs(2), "{who} took {took:?}");
    }
    println!("slowest in-flight call returned `locked` {worst:?} after lock started");

    // Nothing new reached the upstream after lock returned, and the aborted
    // calls' connections were closed.
    let (reqs, conns) = (up.request_count(), up.connections());
    assert_eq!(reqs, total);
    assert!(
        up.wait_open_connections_at_most(0, Duration::from_secs(2)),
        "{} upstream connection(s) still open after lock",
        up.open_connections()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        up.request_count(),
        reqs,
        "a request reached the upstream after lock"
    );
    assert_eq!(
        up.connections(),
        conns,
        "a connection was opened after lock"
    );

    // Calls made while locked are refused without touching the upstream.
    for _ in 0..3 {
        mcp.execute(json!({"capability": "c", "method": "GET", "path": "/v1/echo"}))
            .assert_refused("locked");
    }
    let msg = grpc_execute(&env, &token, "/v1/echo", &[]);
    assert!(msg.starts_with("locked: "), "{msg}");
    assert_eq!(up.request_count(), reqs);
    assert_eq!(up.connections(), conns);

    // --- Phase 2: a stream of fast calls racing the lock. Once `lock` has
    // returned, no request may start upstream.
    env.unlock();
    up.clear();
    let (after_lock, conns_after_lock, per_thread) = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..4 {
            let mcp = &mcp;
            handles.push(s.spawn(move || {
                let (mut ok, mut locked) = (0, 0);
                loop {
                    let r = mcp
                        .execute(json!({"capability": "c", "method": "GET", "path": "/v1/echo"}));
                    if r.is_error {
                        assert_eq!(r.code(), Some("locked"), "{}", r.text);
                        locked += 1;
                        if locked >= 2 {
                            break;
                        }
                    } else {
                        ok += 1;
                    }
                }
                (ok, locked)
            }));
        }
        up.wait_for_requests(8, Duration::from_secs(20));
        env.lock();
        let after_lock = up.request_count();
        let conns = up.connections();
        let per_thread: Vec<(u32, u32)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (after_lock, conns, per_thread)
    });
    println!(
        "racing calls (ok, locked) per thread: {per_thread:?}; {after_lock} requests before lock returned"
    );
    assert!(per_thread.iter().all(|(_, locked)| *locked >= 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        up.request_count(),
        after_lock,
        "a request started upstream after lock returned"
    );
    assert_eq!(
        up.connections(),
        conns_after_lock,
        "a connection opened after lock returned"
    );

    drop(mcp);
    assert_no_canary(&env, CANARY);
}

#[test]
fn agent_rm_aborts_that_agents_calls_only() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    env.allow_ports(&[up.port()]);
    let _d = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    let policy = format!(
        "[[agent]]\nname = \"b\"\n{}",
        policy(&up, &env).replace("agents = [\"a\"]", "agents = [\"a\", \"b\"]")
    );
    env.apply_policy(&policy);
    let (ta, tb) = (env.add_agent("a"), env.add_agent("b"));
    let (ma, mb) = (env.mcp(&ta), env.mcp(&tb));
    let hang = json!({"capability": "c", "method": "GET", "path": "/v1/hang"});
    std::thread::scope(|s| {
        let a = s.spawn(|| {
            (
                ma.call_timeout("execute", hang.clone(), Duration::from_secs(60)),
                Instant::now(),
            )
        });
        let b = s.spawn(|| {
            (
                mb.call_timeout("execute", hang.clone(), Duration::from_secs(60)),
                Instant::now(),
            )
        });
        up.wait_for_requests(2, Duration::from_secs(20));
        let started = Instant::now();
        let out = env.ctl_pass(&["agent", "rm", "a"]);
        out.assert_ok();
        assert!(
            out.stdout.contains("(1 call(s) in flight aborted)"),
            "{out}"
        );
        let (ra, at) = a.join().unwrap();
        let took = at.duration_since(started);
        println!(
            "agent a's call returned {took:?} after `agent rm` started: {}",
            ra.text
        );
        ra.assert_refused("unknown_agent");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // b's call is still in flight: only a lock ends it.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!b.is_finished(), "agent b's call was aborted too");
        env.lock();
        b.join().unwrap().0.assert_refused("locked");
    });
    assert_eq!(up.request_count(), 2);
    drop((ma, mb));
    assert_no_canary(&env, CANARY);
}

/// `unlock --for`: when the time is up the vault locks by itself, as `lock`
/// does (a call in flight returns `locked`, nothing more reaches the
/// upstream), and the lock's audit record says why. Bad durations are
/// refused before anything changes; each unlock replaces the timer.
#[test]
fn unlock_for_locks_by_itself_when_the_time_is_up() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    let hang = json!({"capability": "c", "method": "GET", "path": "/v1/hang"});

    env.lock();
    for (bad, says) in [
        ("0s", "at least 1s"),
        ("1500ms", "whole number of seconds"),
        ("eight hours", "such as 8h"),
        ("400days", "at most"),
    ] {
        let out = env.ctl_pass(&["unlock", "--for", bad]);
        out.assert_fail();
        assert!(out.stderr.contains(says), "{bad}: {out}");
    }
    assert_eq!(env.status_json()["state"], "locked");

    // A later unlock without --for clears the timer.
    env.ctl_pass(&["unlock", "--for", "1s"]).assert_ok();
    env.unlock();
    std::thread::sleep(Duration::from_millis(1800));
    let st = env.status_json();
    assert_eq!(
        (&st["state"], &st["locks_in_secs"]),
        (&json!("unlocked"), &json!(null)),
        "{st}"
    );

    let out = env.ctl_pass(&["unlock", "--for", "3s"]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "unlocked; locks again by itself in 3s");
    let st = env.status_json();
    assert!(matches!(st["locks_in_secs"].as_u64(), Some(1..=3)), "{st}");
    assert!(env.ctl(&["status"]).stdout.contains("locks by itself in"));
    let started = Instant::now();
    let r = mcp.call_timeout("execute", hang.clone(), Duration::from_secs(60));
    let took = started.elapsed();
    println!("the call in flight returned after {took:?}: {}", r.text);
    r.assert_refused("locked");
    assert!(
        took > Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(env.status_json()["state"], "locked");
    mcp.execute(hang).assert_refused("locked");
    assert_eq!(
        up.request_count(),
        1,
        "only the aborted call reached the upstream"
    );

    // The lock is audited with its cause, in an intact chain.
    env.unlock();
    let locks = lock_records(&env);
    let timed: Vec<_> = locks
        .iter()
        .filter(|r| r["reason"] == "`vaultctl unlock --for 3s` ran out")
        .collect();
    assert_eq!(timed.len(), 1, "{locks:?}");
    assert!(
        locks.iter().filter(|r| r["reason"].is_null()).count() >= 1,
        "the user's own lock has no reason: {locks:?}"
    );
    env.ctl(&["audit", "verify"]).assert_ok();
    drop(mcp);
    assert_no_canary(&env, CANARY);
}

/// vaultd.toml's `unlock_for` times every unlock that gives no `--for`, as
/// `ssh-agent -t` does for keys added without `-t`: `unlock` says for how
/// long, the agent sees it in `vault_status`, the vault locks by itself when
/// the time is up and the lock record names the setting. `--for` overrides it.
#[test]
fn unlock_for_in_vaultd_toml_times_every_unlock_without_for() {
    let env = VaultEnv::new();
    env.init();
    env.write_config("unlock_for = \"6s\"\n");
    let _d = env.start_daemon();
    let out = env.ctl_pass(&["unlock", "--for", "1h"]);
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "unlocked; locks again by itself in 1h");
    let st = env.status_json();
    assert!(
        matches!(st["locks_in_secs"].as_u64(), Some(3590..=3600)),
        "--for overrides unlock_for: {st}"
    );
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);

    let out = env.ctl_pass(&["unlock"]);
    out.assert_ok();
    let unlocked = Instant::now();
    assert_eq!(out.stdout.trim(), "unlocked; locks again by itself in 6s");
    let shown = env.ctl(&["status"]).stdout;
    assert!(
        shown.contains("locks by itself in") && !shown.contains("--for"),
        "status names no cause it cannot know: {shown}"
    );
    let status = mcp.call("vault_status", json!({})).assert_ok();
    assert_eq!(
        (&status["state"], &status["agent"]),
        (&json!("unlocked"), &json!("a"))
    );
    assert!(
        matches!(status["locks_in_secs"].as_u64(), Some(1..=6)),
        "{status}"
    );

    while env.status_json()["state"] == "unlocked" {
        assert!(unlocked.elapsed() < Duration::from_secs(30), "never locked");
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = unlocked.elapsed();
    println!("locked by itself {took:?} after `unlock` returned");
    assert!(took > Duration::from_secs(4), "{took:?}");
    let status = mcp.call("vault_status", json!({})).assert_ok();
    assert_eq!(status, json!({"state": "locked", "agent": null}));

    env.ctl_pass(&["unlock", "--for", "1h"]).assert_ok();
    let reasons: Vec<serde_json::Value> = lock_records(&env)
        .into_iter()
        .map(|r| r["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        [json!("vaultd.toml's `unlock_for = \"6s\"` ran out")]
    );
    env.ctl(&["audit", "verify"]).assert_ok();
}

/// The agent (same uid) can move, delete or replace the socket, so that
/// `vaultctl lock` no longer reaches vaultd. Before, lock then said "vaultd
/// is not running" and exited 0 while vaultd stayed unlocked and served the
/// open MCP session. Now lock finds the daemon through the kernel's record
/// of who holds the vault's instance lock (`vault.bin.lock`) and kills it;
/// and vaultd, by itself, locks and exits non-zero (systemd restarts it)
/// within a second of its socket path changing.
#[test]
fn lock_stops_a_vaultd_its_socket_no_longer_leads_to() {
    let up = Upstream::start(TlsKind::Good);
    // An unlocked vaultd serving an open MCP session.
    let serving = || {
        let env = VaultEnv::new();
        let d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
        let mcp = env.mcp(&env.add_agent("a"));
        mcp.execute(json!({"capability": "c", "method": "GET", "path": "/v1/echo"}))
            .assert_ok();
        (env, d, mcp)
    };

    // vaultctl lock, with vaultd frozen so that only lock can end it.
    let (env, mut d, mcp) = serving();
    d.sigstop();
    let socket = env.socket_path();
    std::fs::rename(&socket, socket.with_file_name("moved.sock")).unwrap();
    let out = env.ctl(&["lock"]);
    out.assert_ok();
    assert!(
        out.stdout
            .contains(&format!("vaultd (pid {}) could not be reached", d.pid())),
        "{out}"
    );
    let st = d
        .wait_exit(Duration::from_secs(5))
        .expect("vaultd still runs after lock");
    assert!(!st.success(), "{st:?}");
    mcp.execute(json!({"capability": "c", "method": "GET", "path": "/v1/echo"}))
        .assert_refused("unavailable");
    // With no vaultd holding the vault, lock says so (and succeeds).
    let again = env.ctl(&["lock"]);
    again.assert_ok();
    assert!(again.stdout.contains("nothing holds"), "{again}");
    drop(mcp);

    // vaultd by itself: its socket replaced by a regular file.
    let (env, mut d, mcp) = serving();
    let socket = env.socket_path();
    let replaced = Instant::now();
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, b"not a socket").unwrap();
    let st = d
        .wait_exit(Duration::from_secs(5))
        .expect("vaultd did not notice");
    println!(
        "vaultd exited {:?} after its socket was replaced",
        replaced.elapsed()
    );
    assert!(!st.success(), "{st:?}");
    let log = d.stderr();
    assert!(log.contains("was replaced by another file"), "{log}");
    assert!(
        log.contains("vault locked") || log.contains("locking"),
        "{log}"
    );
    // What the agent put there is left alone.
    assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
    drop(mcp);
    assert_no_canary(&env, CANARY);

    // ... and when the socket's directory is moved and a file put in its
    // place (the path then fails with ENOTDIR, not ENOENT).
    let (env, mut d, mcp) = serving();
    let dir = env.socket_path().parent().unwrap().to_path_buf();
    std::fs::rename(&dir, dir.with_extension("moved")).unwrap();
    std::fs::write(&dir, b"").unwrap();
    d.wait_exit(Duration::from_secs(5))
        .expect("vaultd did not notice its socket's directory replaced");
    let log = d.stderr();
    assert!(log.contains("can no longer be reached"), "{log}");
    drop(mcp);
}

/// `vaultctl lock` while an unlock derives its key (slow by design): the
/// lock wins. The unlock used to install its state after the derivation
/// whatever happened meanwhile, so a user who locked in a hurry ended up
/// unlocked a few seconds later.
#[test]
fn a_lock_during_an_unlock_wins() {
    // A derivation of about 1.5 s with this build on this machine (a debug
    // build's argon2 is many times slower): timed on a 2-pass init first.
    let init = |env: &VaultEnv, iterations: u32| {
        let started = Instant::now();
        env.ctl_pass(&[
            "init",
            "--kdf-memory-mib",
            "32",
            "--kdf-iterations",
            &iterations.to_string(),
        ])
        .assert_ok();
        started.elapsed()
    };
    let two_passes = init(&VaultEnv::new(), 2);
    let iterations = (3.0 / two_passes.as_secs_f64()).ceil().clamp(2.0, 400.0) as u32;
    let env = VaultEnv::new();
    init(&env, iterations);
    let _d = env.start_daemon();
    let started = Instant::now();
    let mut unlock = env
        .ctl_cmd(&["unlock"])
        .passphrase(vaultd_tests::PASSPHRASE)
        .spawn();
    std::thread::sleep(Duration::from_millis(150));
    if unlock.try_wait().is_some() {
        println!("inconclusive: the unlock took under 150 ms, before the lock could be sent");
        return;
    }
    env.lock();
    let locked_at = started.elapsed();
    let out = unlock.wait(Duration::from_secs(60));
    println!(
        "lock sent after {locked_at:?}; the unlock ended after {:?}",
        started.elapsed()
    );
    out.assert_fail();
    assert!(out.stderr.contains("locked while this unlock ran"), "{out}");
    assert_eq!(env.status_json()["state"], "locked");
    // And an unlock with nothing in its way still works.
    env.unlock();
    assert_eq!(env.status_json()["state"], "unlocked");
}
