//! Issue 5: vaultd restarted under a running vault-mcp (DESIGN.md, "MCP tools":
//! vault-mcp outlives vaultd). One MCP session (Python SDK -> vault-mcp) lives
//! through the daemon's death and restart: while the daemon is down each call
//! answers `unavailable` naming the start command; a new daemon answers
//! `locked` until unlocked; then the same session works again. A call in
//! flight when the daemon is killed is answered, not left hanging. SIGTERM
//! locks and exits even while a client holds a stream open.

use std::time::{Duration, Instant};

use serde_json::json;
use vaultd_tests::{TlsKind, ToolResult, Upstream, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-restart-4d2a9e71bc";
const START_CMD: &str = "systemctl --user start vaultd";

fn setup(up: &Upstream, env: &VaultEnv) -> (vaultd_tests::Daemon, String) {
    let d = env.start_serving(
        up,
        CANARY.as_bytes(),
        &vaultd_tests::policy::one_service(
            env,
            &up.url(),
            "",
            "echo",
            r#"allow = ["GET /echo/**", "GET /hang"]"#,
        ),
    );
    let token = env.add_agent("a");
    (d, token)
}

fn echo() -> serde_json::Value {
    json!({"capability": "echo", "method": "GET", "path": "/echo/x"})
}

#[track_caller]
fn assert_unavailable_names_start(r: &ToolResult) {
    r.assert_refused("unavailable");
    assert!(
        r.text.contains(START_CMD),
        "`unavailable` must name the command that starts vaultd: {}",
        r.text
    );
    assert!(!r.text.contains(CANARY));
}

#[test]
fn same_mcp_session_works_after_vaultd_is_stopped_and_started_again() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (mut d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    mcp.execute(echo()).assert_ok();
    assert_eq!(up.request_count(), 1);

    let st = d.sigterm_and_wait();
    assert!(st.success(), "vaultd must exit 0 on SIGTERM: {st:?}");

    // Down: every tool answers `unavailable` promptly, naming the start command.
    let t = Instant::now();
    let r = mcp.call_timeout("execute", echo(), Duration::from_secs(10));
    let took = t.elapsed();
    assert_unavailable_names_start(&r);
    assert!(took < Duration::from_secs(3), "unavailable took {took:?}");
    assert_unavailable_names_start(&mcp.call("vault_status", json!({})));
    assert_unavailable_names_start(&mcp.call("list_services", json!({})));
    assert_eq!(up.request_count(), 1);
    println!("daemon stopped: execute answered in {took:?}: {}", r.text);

    // A new daemon starts locked: same session, `locked`.
    let d2 = env.start_daemon();
    mcp.execute(echo()).assert_refused("locked");
    // Unlocked: the same session works again, without restarting the client.
    env.unlock();
    let t = Instant::now();
    let r = mcp.execute(echo()).assert_ok();
    println!("after restart + unlock: first call {:?}", t.elapsed());
    assert_eq!(r["status"], 200);
    assert_eq!(up.request_count(), 2);
    assert_eq!(
        up.requests()[1].header("authorization"),
        Some(format!("Bearer {CANARY}").as_str())
    );
    let st = mcp.call("vault_status", json!({})).assert_ok();
    assert_eq!(st["state"], "unlocked");
    assert!(mcp.protocol_errors().is_empty());
    // The audit chain continues across the restart.
    env.ctl(&["audit", "verify"]).assert_ok();

    drop(mcp);
    drop(d2);
    drop(d);
    assert_no_canary(&env, CANARY);
}

#[test]
fn call_in_flight_when_vaultd_is_killed_is_answered_and_the_session_recovers() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (mut d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    mcp.execute(echo()).assert_ok();

    std::thread::scope(|s| {
        let hung = s.spawn(|| {
            let t = Instant::now();
            let r = mcp.call_timeout(
                "execute",
                json!({"capability": "echo", "method": "GET", "path": "/hang"}),
                Duration::from_secs(20),
            );
            (r, t.elapsed())
        });
        up.wait_for_requests(2, Duration::from_secs(10));
        let killed_at = Instant::now();
        d.kill9();
        let (r, _) = hung.join().unwrap();
        let after_kill = killed_at.elapsed();
        assert_unavailable_names_start(&r);
        assert!(
            after_kill < Duration::from_secs(3),
            "the in-flight call was answered {after_kill:?} after the kill"
        );
        println!(
            "in-flight call answered {after_kill:?} after SIGKILL: {}",
            r.text
        );
    });
    // The daemon's upstream connection died with it.
    assert!(up.wait_open_connections_at_most(0, Duration::from_secs(3)));

    let d2 = env.start_daemon();
    env.unlock();
    mcp.execute(echo()).assert_ok();
    assert_eq!(up.request_count(), 3);

    drop(mcp);
    drop(d2);
    assert_no_canary(&env, CANARY);
}

/// `vaultd` exits 0 on SIGTERM, and locks first: a client holding a stream
/// open (`vaultctl audit tail -f`, which any same-user process can run) used
/// to keep the daemon, and the keys in its memory, alive until it left.
#[test]
fn sigterm_locks_and_exits_while_an_audit_follower_is_attached() {
    let env = VaultEnv::new();
    let mut d = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    let mut follower = env.ctl_cmd(&["audit", "tail", "-f"]).spawn();
    // It prints the latest records first, then follows.
    follower.wait_for_stdout("unlock", Duration::from_secs(10));

    let started = Instant::now();
    let status = d.sigterm_and_wait();
    let took = started.elapsed();
    assert!(
        status.success(),
        "vaultd exit status {status:?}:\n{}",
        d.stderr()
    );
    assert!(
        took < Duration::from_secs(5),
        "vaultd took {took:?} to exit with a follower attached:\n{}",
        d.stderr()
    );
    assert!(
        d.stderr().contains("vault locked"),
        "the vault is locked on the way out:\n{}",
        d.stderr()
    );
    // The follower's stream ended with the daemon.
    let out = follower.wait(Duration::from_secs(5));
    assert!(!out.stdout.contains(CANARY), "{out}");
    assert_no_canary(&env, CANARY);
}

/// vaultd's resident memory high-water mark, from `/proc/PID/status`.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// An unlock whose caller goes away leaves its key derivation running
/// (argon2 cannot be stopped). Such derivations wait their turn, one at a
/// time: six abandoned unlocks of a 64 MiB vault used to run side by side
/// (and any same-user process can start them, with any passphrase). And
/// SIGTERM does not wait for one to end.
#[test]
fn abandoned_unlocks_neither_pile_up_nor_hold_up_sigterm() {
    const KDF_MIB: u64 = 64;
    let init = |env: &VaultEnv, iterations: u32| {
        let started = Instant::now();
        env.ctl_pass(&[
            "init",
            "--kdf-memory-mib",
            &KDF_MIB.to_string(),
            "--kdf-iterations",
            &iterations.to_string(),
        ])
        .assert_ok();
        started.elapsed()
    };
    let env = VaultEnv::new();
    // One derivation of this build on this machine (vaultctl init runs one).
    let one = init(&env, 2);
    let d = env.start_daemon();
    let before = vm_hwm_kib(d.pid());
    let abandon = || {
        let unlock = env
            .ctl_cmd(&["unlock"])
            .passphrase("not the passphrase")
            .spawn();
        std::thread::sleep(Duration::from_millis(40));
        unlock.kill();
    };
    for _ in 0..6 {
        abandon();
    }
    // A real unlock waits for its turn behind the one derivation running.
    env.ctl_cmd(&["unlock"])
        .passphrase(vaultd_tests::PASSPHRASE)
        .timeout(Duration::from_secs(120))
        .run()
        .assert_ok();
    let grew_mib = vm_hwm_kib(d.pid()).saturating_sub(before) / 1024;
    println!("VmHWM grew by {grew_mib} MiB over 7 unlocks of a {KDF_MIB} MiB vault");
    assert!(
        grew_mib < 3 * KDF_MIB,
        "key derivations ran side by side: VmHWM grew by {grew_mib} MiB"
    );

    env.lock();
    drop(d);

    // SIGTERM while an abandoned derivation of about 4 s runs: vaultd
    // exits at once instead of waiting for it.
    let iterations = (8.0 / one.as_secs_f64()).ceil().clamp(2.0, 400.0) as u32;
    let slow = VaultEnv::new();
    let derivation = init(&slow, iterations);
    let mut d = slow.start_daemon();
    let before = vm_hwm_kib(d.pid());
    let unlock = slow
        .ctl_cmd(&["unlock"])
        .passphrase("not the passphrase")
        .spawn();
    // The derivation has begun once its memory is in use.
    let deadline = Instant::now() + Duration::from_secs(30);
    while vm_hwm_kib(d.pid()) < before + KDF_MIB * 1024 / 2 {
        assert!(
            Instant::now() < deadline,
            "the unlock's derivation never began"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    unlock.kill();
    let started = Instant::now();
    let status = d.sigterm_and_wait();
    let took = started.elapsed();
    println!("SIGTERM took {took:?} with a derivation of about {derivation:?} running");
    assert!(status.success(), "{status:?}:\n{}", d.stderr());
    assert!(
        took < Duration::from_millis(1500) && took < derivation / 2,
        "vaultd took {took:?} to exit after SIGTERM with a {derivation:?} derivation running:\n{}",
        d.stderr()
    );
}
