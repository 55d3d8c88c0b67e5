//! Smoke test of the load run (issue 5) and of the code the benchmark shares
//! with it: the `vaultd-bench` binary, small (4 agents, 200 calls), through
//! vault-mcp processes and through gRPC. Checks correctness only: zero errors,
//! every call in flight at `vaultctl lock` ends `locked` (within a generous
//! 3 s, the 100 ms figure is the release benchmark's, see scripts/load.sh), no
//! upstream request after the lock returned, audit log verifies. No timing
//! target is asserted here.

use std::process::Command;

use serde_json::Value;

fn run_load(via: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vaultd-bench"))
        .args([
            "load",
            "--agents",
            "4",
            "--calls",
            "200",
            "--sample-every",
            "50",
        ])
        .args(["--slow-ms", "5000", "--kdf-mib", "8", "--via", via])
        .output()
        .expect("run vaultd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "vaultd-bench printed no JSON ({e}; {}):\n{stdout}\n--- stderr ---\n{stderr}",
            out.status
        )
    })
}

fn check(r: &Value) {
    let p1 = &r["phase1_calls"];
    assert_eq!(p1["run"]["errors"], 0, "{r:#}");
    assert_eq!(p1["run"]["calls"], 200, "{r:#}");
    assert_eq!(p1["run"]["latency"]["n"], 200, "{r:#}");
    assert_eq!(p1["audit_verify"]["ok"], true, "{r:#}");
    // 200 calls sampled every 50: the idle sample plus 4.
    assert_eq!(
        p1["vaultd_rss_samples"].as_array().map(Vec::len),
        Some(5),
        "{r:#}"
    );
    assert!(p1["vaultd_rss_end_kib"].as_u64().unwrap_or(0) > 0, "{r:#}");

    let p2 = &r["phase2_lock"];
    assert_eq!(p2["vaultctl_lock"]["ok"], true, "{r:#}");
    assert_eq!(p2["slow_calls_in_flight"], 4, "{r:#}");
    assert_eq!(p2["calls_ended_locked"], 4, "{r:#}");
    let worst = p2["max_ms_from_lock_issued_to_call_end"].as_f64().unwrap();
    // The slow route answers after 5 s: ending well before that means the lock ended it.
    assert!(
        worst < 3000.0,
        "in-flight calls took {worst} ms to end after the lock: {r:#}"
    );
    assert_eq!(
        p2["upstream"]["requests_received_after_lock_returned"], 0,
        "{r:#}"
    );
    let rc = &p2["racing_fast_callers"];
    assert_eq!(
        rc["started_after_lock_returned"], rc["of_which_refused_locked"],
        "{r:#}"
    );
    assert!(
        rc["started_after_lock_returned"].as_u64().unwrap() > 0,
        "{r:#}"
    );
}

#[test]
fn load_run_through_vault_mcp_processes() {
    check(&run_load("stdio"));
}

#[test]
fn load_run_through_grpc_clients() {
    check(&run_load("grpc"));
}
