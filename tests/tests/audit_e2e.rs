//! Issue 3, rule 8 of the proxy path: every call is audited (a decision record
//! written before the request leaves, a linked result record when it ends),
//! the records carry DESIGN.md's fields and never a secret, and
//! `vaultctl audit verify` finds every kind of tampering with the real log.

use std::time::Duration;

use serde_json::{Value, json};
use vaultd_tests::{TlsKind, Upstream, VaultEnv, assert_absent, assert_no_canary};

const CANARY: &str = "CANARY-audit-0c7e5d3b9a18";

fn policy(up: &Upstream, env: &VaultEnv) -> String {
    vaultd_tests::policy::one_service(
        env,
        &up.url(),
        "",
        "echo",
        r#"allow = ["GET /v1/**", "POST /v1/**"]
deny = ["* /v1/admin/**"]"#,
    )
}

fn records(env: &VaultEnv) -> Vec<Value> {
    std::fs::read_to_string(env.audit_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn audit_records_every_call_and_verify_finds_every_tampering() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);

    // The decision record is on disk before the request reaches the upstream:
    // while the (slow) call is still in flight it is there, its result is not.
    std::thread::scope(|s| {
        let call = s.spawn(|| {
            mcp.execute(
                json!({"capability": "echo", "method": "GET", "path": "/v1/slow",
                               "query": {"ms": "1500"}}),
            )
            .assert_ok()
        });
        up.wait_for_requests(1, Duration::from_secs(10));
        let recs = records(&env);
        let last = recs.last().expect("a record");
        assert_eq!(last["kind"], "decision", "{last}");
        assert_eq!(last["path"], "/v1/slow", "{last}");
        assert_eq!(last["decision"], "allowed", "{last}");
        assert!(
            !recs.iter().any(|r| r["kind"] == "result"),
            "no result record while the call runs"
        );
        call.join().unwrap();
    });
    let recs = records(&env);
    let (dec, res) = (&recs[recs.len() - 2], &recs[recs.len() - 1]);
    assert_eq!(res["kind"], "result");
    assert_eq!(
        res["decision_seq"], dec["seq"],
        "the result is linked to its decision"
    );
    assert!(res["duration_ms"].as_u64().unwrap() >= 1400, "{res}");

    // More real calls: allowed with a reason, denied by a rule, refused as bad.
    mcp.execute(
        json!({"capability": "echo", "method": "POST", "path": "/v1/echo/x",
                       "body": "body-never-logged", "reason": "issue 3 audit test"}),
    )
    .assert_ok();
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/admin/echo"}))
        .assert_refused("denied_by_rule");
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/../admin"}))
        .assert_refused("bad_request");
    mcp.execute(
        json!({"capability": "echo", "method": "POST", "path": "/v1/echo/y",
                       "body": "second", "reason": "the last call"}),
    )
    .assert_ok();

    // audit tail -n 2 --json: the decision and result of the last call, with DESIGN.md's fields.
    let tail = env.ctl(&["audit", "tail", "-n", "2", "--json"]);
    tail.assert_ok();
    assert_absent(tail.stdout.as_bytes(), CANARY.as_bytes(), "audit tail");
    assert!(!tail.stdout.contains("second"), "no body in the audit log");
    let two = tail.json_lines();
    assert_eq!(two.len(), 2, "{tail}");
    let (dec, res) = (&two[0], &two[1]);
    for (field, want) in [
        ("kind", json!("decision")),
        ("agent", json!("a")),
        ("capability", json!("echo")),
        ("method", json!("POST")),
        ("path", json!("/v1/echo/y")),
        ("decision", json!("allowed")),
        ("rule", json!("allow POST /v1/**")),
        ("reason", json!("the last call")),
    ] {
        assert_eq!(dec[field], want, "decision field {field}: {dec}");
    }
    for field in ["time", "seq", "peer_pid", "peer_uid", "mac"] {
        assert!(!dec[field].is_null(), "decision lacks {field}: {dec}");
    }
    // The peer's executable is best effort: under landlock, vaultd may not
    // read /proc/PID/exe of a process outside its domain. When present it
    // names vault-mcp.
    match dec["peer_exe"].as_str() {
        Some(exe) => assert!(exe.ends_with("vault-mcp"), "the caller is vault-mcp: {dec}"),
        None => println!("note: no peer_exe in the decision record (sandboxed daemon)"),
    }
    assert_eq!(dec["peer_uid"], json!(rustix::process::getuid().as_raw()));
    for (field, want) in [
        ("kind", json!("result")),
        ("agent", json!("a")),
        ("capability", json!("echo")),
        ("method", json!("POST")),
        ("path", json!("/v1/echo/y")),
        ("status", json!(200)),
        ("decision_seq", dec["seq"].clone()),
        ("seq", json!(dec["seq"].as_u64().unwrap() + 1)),
    ] {
        assert_eq!(res[field], want, "result field {field}: {res}");
    }
    for field in ["time", "bytes", "duration_ms", "mac"] {
        assert!(!res[field].is_null(), "result lacks {field}: {res}");
    }
    assert!(res["bytes"].as_u64().unwrap() > 0, "{res}");
    // Denied and bad calls have their decision record too.
    let recs = records(&env);
    let denied: Vec<&Value> = recs.iter().filter(|r| r["decision"] == "denied").collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert_eq!(denied[0]["code"], "denied_by_rule");
    assert_eq!(denied[0]["rule"], "deny * /v1/admin/**");
    assert_eq!(denied[1]["code"], "bad_request");
    // The human form works too.
    let human = env.ctl(&["audit", "tail", "-n", "2"]);
    human.assert_ok();
    assert!(
        human.stdout.contains("/v1/echo/y") && human.stdout.contains("status=200"),
        "{human}"
    );

    // verify passes on the real log.
    let ok = env.ctl(&["audit", "verify"]);
    ok.assert_ok();
    assert!(ok.stdout.contains("chain intact"), "{ok}");

    // Each kind of tampering, written in place (the file the daemon holds), then undone.
    let path = env.audit_path();
    let good = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let n = lines.len();
    assert!(n >= 8, "{n} records");
    let join = |ls: &[&str]| ls.join("\n") + "\n";
    let deny_line = lines
        .iter()
        .position(|l| l.contains("\"decision\":\"denied\""))
        .unwrap();
    // A well-formed forgery: the last record, next seq, another path, mac last.
    let last = lines[n - 1];
    let seq = serde_json::from_str::<Value>(last).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let mac_at = last.rfind(",\"mac\":\"").unwrap();
    let forged = last[..mac_at]
        .replacen(
            &format!("\"seq\":{seq},"),
            &format!("\"seq\":{},", seq + 1),
            1,
        )
        .replacen("\"path\":\"/v1/echo/y\"", "\"path\":\"/v1/innocent\"", 1)
        + &format!(",\"mac\":\"{}\"}}", "ab".repeat(32));
    assert!(forged.contains("/v1/innocent") && forged.contains(&format!("\"seq\":{}", seq + 1)));
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let mut removed = lines.clone();
    removed.remove(n / 2);
    let cases: Vec<(&str, String)> = vec![
        (
            "an edited field (denied -> allowed)",
            good.replacen("\"decision\":\"denied\"", "\"decision\":\"allowed\"", 1),
        ),
        (
            "an edited field (status)",
            good.replacen("\"status\":200", "\"status\":201", 1),
        ),
        (
            "an edited path",
            good.replacen("\"/v1/echo/x\"", "\"/v1/echo/z\"", 1),
        ),
        ("a removed line", join(&removed)),
        ("the denied decision removed", {
            let mut l = lines.clone();
            l.remove(deny_line);
            join(&l)
        }),
        ("two lines swapped", join(&swapped)),
        ("a truncated last line", good[..good.len() - 20].to_string()),
        ("the last line removed", join(&lines[..n - 1])),
        ("a forged line appended", good.clone() + &forged + "\n"),
        ("a line duplicated", {
            let mut l = lines.clone();
            l.insert(3, lines[2]);
            join(&l)
        }),
    ];
    for (what, text) in cases {
        assert_ne!(text, good, "{what}: the tampering changed nothing");
        std::fs::write(&path, &text).unwrap();
        let out = env.ctl(&["audit", "verify"]);
        out.assert_fail();
        assert!(out.stderr.contains("FAILED verification"), "{what}: {out}");
        println!("{what}: {}", out.stderr.trim());
        std::fs::write(&path, &good).unwrap();
        env.ctl(&["audit", "verify"]).assert_ok();
    }

    // The chain goes on after the checks.
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/echo"}))
        .assert_ok();
    let ok = env.ctl(&["audit", "verify"]);
    ok.assert_ok();
    assert!(ok.stdout.contains(&format!("{} records", n + 2)), "{ok}");

    drop(mcp);
    assert_no_canary(&env, CANARY);
}

/// `audit verify` fails, naming records cut off the log's end.
#[track_caller]
fn assert_verify_reports_a_gap(env: &VaultEnv) {
    let out = env.ctl(&["audit", "verify"]);
    out.assert_fail();
    assert!(
        out.stderr.contains("records were removed from its end"),
        "{out}"
    );
}

/// `status` (text and `--json`) names the gap among its warnings.
#[track_caller]
fn assert_status_warns_of_a_gap(env: &VaultEnv) {
    let text = env.ctl(&["status"]);
    text.assert_ok();
    assert!(
        text.stdout.contains("warning:  audit log tampered with"),
        "{text}"
    );
    let warnings = env.status_json()["warnings"].to_string();
    assert!(
        warnings.contains("records were removed from its end"),
        "{warnings}"
    );
}

#[test]
fn records_cut_off_while_locked_are_found_after_unlock() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/echo"}))
        .assert_ok();
    env.ctl(&["audit", "verify"]).assert_ok();
    // A lock and unlock with the log untouched (and a call aborted by the
    // lock, whose result record lands after the lock record) verify cleanly.
    std::thread::scope(|s| {
        let call = s.spawn(|| {
            mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/hang"}))
        });
        up.wait_for_requests(2, Duration::from_secs(10));
        env.lock();
        call.join().unwrap().assert_refused("locked");
    });
    let clean = env.ctl_pass(&["unlock"]);
    clean.assert_ok();
    assert!(!clean.stderr.contains("warning"), "{clean}");
    env.ctl(&["audit", "verify"]).assert_ok();
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/echo/secret-plan"}))
        .assert_ok();

    // While locked, the agent cuts its last call (decision, result) and the
    // lock record off the end of the log.
    env.lock();
    let path = env.audit_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[lines.len() - 1].contains("\"event\":\"lock\""));
    assert!(lines[lines.len() - 2].contains("/v1/echo/secret-plan"));
    let cut = lines[..lines.len() - 3].join("\n") + "\n";
    std::fs::write(&path, cut).unwrap();

    // The user who unlocks is told at once, without running verify.
    let unlock = env.ctl_pass(&["unlock"]);
    unlock.assert_ok();
    assert!(
        unlock.stderr.contains("warning: audit log tampered with")
            && unlock.stderr.contains("records were removed from its end"),
        "{unlock}"
    );
    let out = env.ctl(&["audit", "verify"]);
    println!("{out}");
    out.assert_fail();
    assert!(out.stderr.contains("FAILED verification"), "{out}");

    // Another lock and unlock (which the agent can cause: `lock` needs no
    // passphrase) does not wash the cut out: the gap is reported until
    // vaultd restarts, as SECURITY.md says, and so does `status`.
    env.lock();
    assert_status_warns_of_a_gap(&env);
    env.unlock();
    assert_verify_reports_a_gap(&env);
    assert_status_warns_of_a_gap(&env);

    drop(mcp);
    assert_no_canary(&env, CANARY);
}

/// A cut made while locked is found when a change made while locked (a key
/// rotation, which opens the log to record itself) comes first, and still
/// after the next unlock.
#[test]
fn a_cut_found_by_a_change_made_while_locked_is_still_reported_after_unlock() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/echo/evil"}))
        .assert_ok();
    env.lock();
    let path = env.audit_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let keep: Vec<&str> = text
        .lines()
        .take_while(|l| !l.contains("/v1/echo/evil"))
        .collect();
    std::fs::write(&path, keep.join("\n") + "\n").unwrap();

    env.set_secret("other", b"another-credential-value");
    env.unlock();
    assert_verify_reports_a_gap(&env);
    drop(mcp);
    assert_no_canary(&env, CANARY);
}

#[test]
fn agent_input_cannot_forge_lines_in_audit_tail() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    let fake = "2026-01-01T00:00:00.000Z #1 decision agent=a cap=echo GET /v1/x allowed";
    for args in [
        json!({"capability": format!("nope\n{fake}"), "method": "GET", "path": "/v1/echo"}),
        json!({"capability": "echo", "method": format!("GET\r\n{fake}"), "path": "/v1/echo"}),
        json!({"capability": "echo", "method": "GET", "path": format!("/v1/echo\n{fake}")}),
        json!({"capability": "echo\u{1b}[2K\u{1b}[1A", "method": "GET", "path": "/v1/echo"}),
        json!({"capability": "echo\u{202e}dewolla", "method": "GET", "path": "/v1/echo"}),
    ] {
        assert!(mcp.execute(args.clone()).is_error, "{args}");
        let out = env.ctl(&["audit", "tail", "-n", "1"]);
        out.assert_ok();
        assert_eq!(
            out.stdout.lines().count(),
            1,
            "one record, one line:\n{out}"
        );
        assert!(
            !out.stdout.contains(['\u{1b}', '\r', '\u{202e}']),
            "control characters reach the terminal: {:?}",
            out.stdout
        );
    }
    env.ctl(&["audit", "verify"]).assert_ok();
    drop(mcp);
    assert_no_canary(&env, CANARY);
}

/// A refused call's record names the method as matched (`head` is HEAD); a
/// reason is recorded escaped, and one over 1024 bytes is refused rather
/// than cut to what fits (2000 spaces then "x" would be kept as spaces only).
#[test]
fn records_hold_the_canonical_method_and_the_whole_escaped_reason() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);

    mcp.execute(json!({"capability": "echo", "method": "head", "path": "/v1/admin/echo"}))
        .assert_refused("denied_by_rule");
    let last = records(&env).pop().unwrap();
    assert_eq!(last["decision"], "denied", "{last}");
    assert_eq!(last["method"], "HEAD", "{last}");

    for long in [
        format!("{}x", " ".repeat(2000)),
        format!("{}x", "\u{200b}".repeat(400)),
    ] {
        let r = mcp.execute(
            json!({"capability": "echo", "method": "GET", "path": "/v1/echo", "reason": long}),
        );
        r.assert_refused("bad_request");
        assert!(r.text.contains("the limit is 1024 bytes"), "{}", r.text);
    }
    assert_eq!(up.request_count(), 0, "nothing sent for a refused reason");

    mcp.execute(
        json!({"capability": "echo", "method": "GET", "path": "/v1/echo",
                       "reason": "ok \u{202e}\u{1b}[2K"}),
    )
    .assert_ok();
    let recs = records(&env);
    let decision = &recs[recs.len() - 2];
    assert_eq!(decision["reason"], "ok \\u{202e}\\u{1b}[2K", "{decision}");
    env.ctl(&["audit", "verify"]).assert_ok();
    drop(mcp);
    assert_no_canary(&env, CANARY);
}

/// The agent can append to the log (it writes the user's files): a forged
/// record whose fields hold terminal escapes, a raw line of them, C1 and bidi
/// characters (valid raw in JSON) and bytes that are not UTF-8. `audit tail`
/// shows them escaped, as unreadable where they are not records, keeps
/// showing the genuine records around them and exits 0; `audit verify`
/// still fails on them.
#[test]
fn forged_and_damaged_lines_cannot_rewrite_the_terminal_or_stop_audit_tail() {
    use std::io::Write;
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");
    let mcp = env.mcp(&token);
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/echo/before"}))
        .assert_ok();

    let mac = "ab".repeat(32);
    let forged_event = format!(
        r#"{{"seq":99,"time":"2026-01-01T00:00:00.000Z","kind":"admin","event":"\u001b[3A\u001b[Jall quiet","mac":"{mac}"}}"#
    );
    let forged_raw_json = format!(
        "{{\"seq\":100,\"time\":\"t\",\"kind\":\"admin\u{9b}2J\u{202e}\",\"agent\":\"\u{2066}x\",\"mac\":\"{mac}\"}}"
    );
    let mut forged: Vec<u8> = Vec::new();
    forged.extend_from_slice(forged_event.as_bytes());
    forged.push(b'\n');
    forged.extend_from_slice(b"\x1b[3A\x1b[Jnothing happened here\n");
    forged.extend_from_slice(forged_raw_json.as_bytes());
    forged.push(b'\n');
    // Read with the bad byte replaced, this line would parse as a record.
    forged.extend_from_slice(b"{\"seq\":101,\"time\":\"t\",\"kind\":\"adm\xffn\",\"mac\":\"");
    forged.extend_from_slice(mac.as_bytes());
    forged.extend_from_slice(b"\"}\n");
    let append = |bytes: &[u8]| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(env.audit_path())
            .unwrap()
            .write_all(bytes)
            .unwrap();
    };
    append(&forged);
    mcp.execute(json!({"capability": "echo", "method": "GET", "path": "/v1/echo/after"}))
        .assert_ok();
    append(b"\xff");

    let out = env.ctl(&["audit", "tail"]);
    out.assert_ok();
    for bad in ['\u{1b}', '\u{9b}', '\u{202e}', '\u{2066}', '\r'] {
        assert!(
            !out.stdout.contains(bad),
            "{bad:?} reaches the terminal: {:?}",
            out.stdout
        );
    }
    for genuine in ["/v1/echo/before", "/v1/echo/after", "result"] {
        assert!(out.stdout.contains(genuine), "{genuine} not shown:\n{out}");
    }
    assert!(
        out.stdout.contains("\\u{1b}[3A\\u{1b}[Jall quiet"),
        "the forged event is shown escaped:\n{out}"
    );
    assert!(
        out.stdout.contains("(unreadable record) \\u{1b}[3A"),
        "the raw line is shown escaped, as unreadable:\n{out}"
    );
    assert_eq!(
        out.stdout.matches("(unreadable record, not UTF-8)").count(),
        2,
        "{out}"
    );

    let out = env.ctl(&["audit", "tail", "--json"]);
    out.assert_ok();
    let lines = out.json_lines();
    assert!(lines.iter().any(|l| l["path"] == "/v1/echo/after"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l["unreadable_record"] == "\u{1b}[3A\u{1b}[Jnothing happened here"),
        "{out}"
    );
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);

    let v = env.ctl(&["audit", "verify"]);
    v.assert_fail();
    assert!(v.stderr.contains("FAILED"), "{v}");
    drop(mcp);
    assert_no_canary(&env, CANARY);
}

/// Rule 8: an allowed call gets its result record even when its caller goes
/// away first (an MCP cancel or a killed vault-mcp drops the gRPC stream, and
/// tonic drops the handler): the request reached the upstream, so the log
/// must say how the call ended.
#[test]
fn a_call_whose_caller_goes_away_still_gets_its_result_record() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    let token = env.add_agent("a");

    // The runtime, and with it the connection, is gone when this returns:
    // the stream is reset.
    env.with_grpc(async |mut c| {
        let call = c.execute(vault_proto::v1::ExecuteRequest {
            agent_token: token.clone(),
            capability: "echo".into(),
            method: "POST".into(),
            path: "/v1/hang".into(),
            body: b"payload".as_slice().into(),
            ..Default::default()
        });
        tokio::pin!(call);
        // Wait until the upstream holds the request, then give up on it.
        let seen = async {
            while up.request_count() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            r = &mut call => panic!("the hanging call returned: {r:?}"),
            () = seen => {}
            () = tokio::time::sleep(Duration::from_secs(10)) => panic!("the upstream never got the call"),
        }
    });

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (decision, result) = loop {
        let recs = records(&env);
        let decision = recs
            .iter()
            .rfind(|r| r["kind"] == "decision" && r["path"] == "/v1/hang")
            .cloned()
            .expect("the decision record");
        let result = recs
            .iter()
            .find(|r| r["kind"] == "result" && r["decision_seq"] == decision["seq"])
            .cloned();
        if let Some(result) = result {
            break (decision, result);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no result record for {decision} after the caller went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(decision["decision"], "allowed", "{decision}");
    assert_eq!(result["code"], "cancelled", "{result}");
    assert_eq!(result["method"], "POST", "{result}");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains("went away")),
        "{result}"
    );
    env.ctl(&["audit", "verify"]).assert_ok();
    assert_no_canary(&env, CANARY);
}

/// The agent can write the state directory. A FIFO in place of the audit log
/// took every record into a pipe it drained (and, once full, blocked vaultd
/// in the write, holding the log's lock); a symbolic link sends the records
/// where it chooses. Both are refused at unlock, quickly and saying what to
/// do, and the vault stays locked; a FIFO in place of the vault is refused
/// the same way instead of blocking the unlock.
#[test]
fn a_fifo_or_a_link_in_place_of_the_log_or_the_vault_is_refused() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let _d = env.start_serving(&up, CANARY.as_bytes(), &policy(&up, &env));
    env.lock();
    let log = env.audit_path();
    let saved = env.root().join("audit.saved");
    std::fs::rename(&log, &saved).unwrap();
    let mkfifo = |path: &std::path::Path| {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success(), "mkfifo");
    };
    let unlock_refused = |what: &str, why: &str| {
        let out = env
            .ctl_cmd(&["unlock"])
            .passphrase(vaultd_tests::PASSPHRASE)
            .timeout(Duration::from_secs(20))
            .run();
        out.assert_fail();
        assert!(out.stderr.contains(why), "{what}: {out}");
        assert_eq!(env.status_json()["state"], "locked", "{what}");
    };
    mkfifo(&log);
    unlock_refused("a FIFO as the log", "not a regular file");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&saved, &log).unwrap();
    unlock_refused("a link as the log", "symbolic link");
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&saved, &log).unwrap();

    let vault = env.vault_path();
    let kept = env.root().join("vault.saved");
    std::fs::rename(&vault, &kept).unwrap();
    mkfifo(&vault);
    unlock_refused("a FIFO as the vault", "not a regular file");
    std::fs::remove_file(&vault).unwrap();
    std::fs::rename(&kept, &vault).unwrap();

    env.unlock();
    env.ctl(&["audit", "verify"]).assert_ok();
    assert_no_canary(&env, CANARY);
}

/// `audit tail -f` leaves out only what it printed from the file already.
/// It used to skip every new record numbered at or below the file's last
/// line, which the agent can write: one appended line numbered u64::MAX
/// hid every later record from the user's follower.
#[test]
fn a_forged_sequence_number_cannot_hide_new_records_from_tail_follow() {
    let env = VaultEnv::new();
    let _d = env.start_unlocked();
    let log = env.audit_path();
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().expect("a record");
    let seq = serde_json::from_str::<Value>(last).unwrap()["seq"].clone();
    let forged = last.replacen(
        &format!("\"seq\":{seq}"),
        &format!("\"seq\":{}", u64::MAX),
        1,
    );
    assert_ne!(forged, last, "the line has a seq field: {last}");
    std::fs::write(&log, format!("{text}{forged}\n")).unwrap();

    let mut follower = env.ctl_cmd(&["audit", "tail", "-f", "-n", "1"]).spawn();
    follower.wait_for_stdout("unlock", Duration::from_secs(10));
    env.set_secret("after-the-forgery", b"value-of-the-new-secret");
    let out = follower.wait_for_stdout("secret set after-the-forgery", Duration::from_secs(10));
    assert!(!out.contains("value-of-the-new-secret"), "{out}");
}
