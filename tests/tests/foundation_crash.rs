//! Issue 2's crash test: `kill -9` of vaultd at seeded moments while 200
//! `vaultctl secret set` calls run (a few at a time). After every kill the daemon
//! is restarted and the vault must unlock; at the end every secret whose
//! `secret set` exited 0 must be in `secret list`.
//!
//! The kill moments are deterministic in the seed: the next kill comes after
//! the k-th call has started (k advancing by a seeded 8..20), plus a seeded
//! 0..150 ms. Where in the daemon's work each kill lands depends on timing.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use vaultd_tests::{PASSPHRASE, VaultEnv, assert_no_canary};

const CALLS: usize = 200;
const WORKERS: usize = 3;
const SEED: u64 = 0x5eed_0002_c4a5_7e57;

/// splitmix64: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn name(i: usize) -> String {
    format!("crash-{i:03}")
}

fn value(i: usize) -> String {
    format!("CANARY-crash-{i:03}-7d1f0e9c")
}

/// Names of the temporary vault files (`.vault.bin.tmp-*`) in VAULTD_HOME.
fn temp_names(env: &VaultEnv) -> HashSet<OsString> {
    std::fs::read_dir(env.home())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// How many temporary vault files exist that are not in `stale`.
fn new_temp_files(env: &VaultEnv, stale: &HashSet<OsString>) -> usize {
    temp_names(env).difference(stale).count()
}

#[test]
fn kill9_during_secret_sets_loses_no_acknowledged_secret() {
    let t0 = Instant::now();
    let env = VaultEnv::new();
    env.init();
    let first = env.start_daemon();
    env.unlock();

    let next_call = AtomicUsize::new(0);
    let started = AtomicUsize::new(0);
    let workers_done = AtomicUsize::new(0);
    let stop_killing = AtomicBool::new(false);
    // Workers start a call under a read guard; the killer holds the write guard
    // from the kill until the new daemon is unlocked.
    let gate = RwLock::new(());
    let acked = Mutex::new(Vec::<usize>::new());
    let failures = Mutex::new(BTreeMap::<String, usize>::new());
    let kills = Mutex::new(Vec::<(usize, u64, Duration)>::new());
    let during_write = AtomicUsize::new(0);

    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next_call.fetch_add(1, Ordering::SeqCst);
                    if i >= CALLS {
                        break;
                    }
                    let running = {
                        let _g = gate.read().unwrap();
                        started.fetch_add(1, Ordering::SeqCst);
                        env.ctl_cmd(&["secret", "set", &name(i), "--from-fd", "4"])
                            .passphrase(PASSPHRASE)
                            .fd(4, value(i).as_bytes())
                            .spawn()
                    };
                    let out = running.wait(Duration::from_secs(30));
                    if out.success() {
                        acked.lock().unwrap().push(i);
                    } else {
                        let lines: Vec<&str> = out.stderr.trim().lines().collect();
                        assert_eq!(lines.len(), 1, "a failed call prints one line:\n{out}");
                        assert!(out.code().is_some(), "vaultctl crashed:\n{out}");
                        // It says what happened to vaultd (not a bare "transport error").
                        assert!(lines[0].contains("vaultd"), "unclear failure:\n{out}");
                        // Group messages by their text without paths and numbers.
                        let key: String = lines[0]
                            .split_whitespace()
                            .filter(|w| !w.contains('/') && !w.chars().any(|c| c.is_ascii_digit()))
                            .collect::<Vec<_>>()
                            .join(" ");
                        *failures.lock().unwrap().entry(key).or_default() += 1;
                    }
                }
                workers_done.fetch_add(1, Ordering::SeqCst);
            });
        }

        // The killer.
        s.spawn(|| {
            let mut rng = Rng(SEED);
            let mut daemon = first;
            let mut kill_at = rng.range(8, 20) as usize;
            // Temporary files left by earlier kills.
            let mut stale = temp_names(&env);
            loop {
                while started.load(Ordering::SeqCst) < kill_at
                    && workers_done.load(Ordering::SeqCst) < WORKERS
                    && !stop_killing.load(Ordering::SeqCst)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if workers_done.load(Ordering::SeqCst) == WORKERS
                    || stop_killing.load(Ordering::SeqCst)
                {
                    break;
                }
                // Half the kills (seeded) wait for the daemon to be writing the
                // vault (its temporary file exists) and strike at once; the
                // others strike a seeded 0..150 ms later, mostly mid-KDF.
                let on_write = rng.next().is_multiple_of(2);
                let delay = if on_write {
                    let deadline = Instant::now() + Duration::from_secs(3);
                    while new_temp_files(&env, &stale) == 0 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    0
                } else {
                    let d = rng.range(0, 150);
                    std::thread::sleep(Duration::from_millis(d));
                    d
                };
                let _g = gate.write().unwrap();
                daemon.kill9();
                if new_temp_files(&env, &stale) > 0 {
                    during_write.fetch_add(1, Ordering::SeqCst);
                }
                let t = Instant::now();
                daemon = env.start_daemon();
                // The vault always unlocks after a crash.
                env.unlock();
                stale = temp_names(&env);
                kills
                    .lock()
                    .unwrap()
                    .push((started.load(Ordering::SeqCst), delay, t.elapsed()));
                kill_at = started.load(Ordering::SeqCst) + rng.range(8, 20) as usize;
            }
            // One last crash after the final call.
            daemon.kill9();
        });
    });
    stop_killing.store(true, Ordering::SeqCst);

    let _daemon = env.start_daemon();
    env.unlock();
    let listed: Vec<String> = env
        .ctl(&["secret", "list"])
        .assert_ok()
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    let acked = acked.into_inner().unwrap();
    let kills = kills.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let failed: usize = failures.values().sum();

    let missing: Vec<String> = acked
        .iter()
        .map(|&i| name(i))
        .filter(|n| !listed.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged secrets lost after kill -9: {missing:?}"
    );
    // Nothing but the names we set.
    let ours: Vec<String> = (0..CALLS).map(name).collect();
    for n in &listed {
        assert!(ours.contains(n), "unexpected secret {n:?}");
    }
    assert_eq!(acked.len() + failed, CALLS);
    assert!(kills.len() >= 8, "only {} kills", kills.len());
    assert!(
        failed >= 1,
        "no kill interrupted a call: the test did not test anything"
    );
    assert!(
        acked.len() >= CALLS / 2,
        "only {} of {CALLS} calls succeeded",
        acked.len()
    );

    let temp_left = temp_names(&env).len();
    // The next successful write removes what the killed writers left behind.
    env.set_secret("after-the-kills", b"value-after-the-kills");
    let still = temp_names(&env);
    assert!(
        still.is_empty(),
        "temporary vault files left after a successful write: {still:?}"
    );
    let during_write = during_write.into_inner();
    assert!(
        during_write >= 1,
        "no kill landed while the vault was being written"
    );
    let restart_ms: Vec<u128> = kills.iter().map(|k| k.2.as_millis()).collect();
    eprintln!(
        "kill -9 test: {CALLS} calls ({WORKERS} at a time), {} acknowledged (all present), {failed} failed, {} listed; {} kills, {during_write} of them while a vault write was under way (restart+unlock ms: {restart_ms:?}); {temp_left} temporary file(s) left behind; {:.1} s",
        acked.len(),
        listed.len(),
        kills.len(),
        t0.elapsed().as_secs_f64()
    );
    for (msg, n) in &failures {
        eprintln!("  {n} x {msg}");
    }
    for i in [0, CALLS / 2, CALLS - 1] {
        assert_no_canary(&env, &value(i));
    }
}
