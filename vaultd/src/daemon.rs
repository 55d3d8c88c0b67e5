//! The daemon's state machine: locked or unlocked, and every change to the vault.
//!
//! Unlocked state is an immutable snapshot ([`Unlocked`]) behind an `Arc`:
//! a call clones the `Arc` and works on it without holding any lock. A change
//! to the vault (secret, policy, agent) builds a whole new snapshot from the
//! re-sealed vault and swaps it in. `lock` swaps in `Locked`, cancels every
//! call in flight, waits for their snapshots to be dropped, and so wipes every
//! key, secret, derived value and pooled upstream connection.
//!
//! Every change re-opens the vault file *with the passphrase in the request*
//! (the agent can reach the socket too), so an open socket alone changes
//! nothing. Wrong passphrases are answered slower and slower.
//!
//! `unlock --for D` (or, without `--for`, vaultd.toml's `unlock_for = D`)
//! arms a timer ([`AutoLock`]) that locks as `lock` does when D has passed
//! on the boot clock (suspend included); the next unlock sets a new one or
//! none, and any lock disarms it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Record};
use crate::config::Config;
use crate::dirs::Dirs;
use crate::error::{Error, Result};
use crate::policy::{self, Capability, RateLimit, Service};
use crate::proxy::request::Rule;
use crate::proxy::scrub::Scrubber;
use crate::proxy::upstream;
use crate::ratelimit::Limiter;
use crate::secret::SecretBuf;
use crate::vault::{self, AgentRecord, Header, KdfParams, VaultData};

/// A service ready to call.
pub struct ServiceRuntime {
    /// Its policy entry.
    pub service: Service,
    /// Its own connection pool.
    pub pool: upstream::Pool,
    /// Redacts its credential from responses.
    pub scrubber: Scrubber,
    /// The credential value.
    pub credential: SecretBuf,
    /// Parsed base URL.
    pub base: url::Url,
}

/// A capability with compiled rules.
pub struct CapabilityRuntime {
    /// Its policy entry.
    pub capability: Capability,
    /// Compiled allow rules.
    pub allow: Vec<Rule>,
    /// Compiled deny rules.
    pub deny: Vec<Rule>,
    /// Parsed rate limit.
    pub rate_limit: Option<RateLimit>,
}

/// Everything that exists only while unlocked.
pub struct Unlocked {
    /// The vault header (re-used when re-sealing).
    pub header: Header,
    /// The data key.
    pub data_key: SecretBuf,
    /// Decrypted contents.
    pub data: VaultData,
    /// Services by name.
    pub services: HashMap<String, Arc<ServiceRuntime>>,
    /// Capabilities by name.
    pub capabilities: HashMap<String, CapabilityRuntime>,
    /// Agent names by the SHA-256 of their token. A lookup's timing can tell
    /// an attacker about the hash only, which does not lead back to a token
    /// (256 random bits): no constant-time scan of every agent is needed.
    pub agents_by_token: HashMap<[u8; 32], String>,
    /// When the vault was unlocked.
    pub unlocked_at: Instant,
    /// Shared across snapshots of one unlocked period:
    pub shared: Arc<Shared>,
}

impl Unlocked {
    fn new(
        header: Header,
        data_key: SecretBuf,
        data: VaultData,
        rt: Runtime,
        shared: Arc<Shared>,
    ) -> Unlocked {
        Unlocked {
            header,
            data_key,
            data,
            services: rt.services,
            capabilities: rt.capabilities,
            agents_by_token: rt.agents_by_token,
            unlocked_at: Instant::now(),
            shared,
        }
    }
}

/// The parts of an [`Unlocked`] snapshot built from the vault's contents
/// (see [`Daemon::runtime`]).
struct Runtime {
    services: HashMap<String, Arc<ServiceRuntime>>,
    capabilities: HashMap<String, CapabilityRuntime>,
    agents_by_token: HashMap<[u8; 32], String>,
}

/// State that outlives snapshot swaps but not a lock.
pub struct Shared {
    /// The audit writer; reached through [`Shared::audit_log`].
    audit: Mutex<AuditLog>,
    /// Cancelled by `lock`: every call in flight ends with `locked`.
    pub lock_cancel: CancellationToken,
    /// Per-agent cancellation, cancelled by `agent rm`.
    /// Per agent: the token that aborts its calls, and a handle each call
    /// holds while it runs (so `agent rm` can tell how many it aborted).
    pub agent_cancel: Mutex<HashMap<String, (CancellationToken, Arc<()>)>>,
}

impl Shared {
    /// The cancellation token of `agent` (created on first use), and a
    /// handle that counts the caller as one of the agent's calls in flight
    /// for as long as it is held.
    pub fn agent_token(&self, agent: &str) -> (CancellationToken, Arc<()>) {
        self.agent_cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent.to_string())
            .or_default()
            .clone()
    }

    /// The audit log, locked (a panic while it was held does not stop auditing).
    pub fn audit_log(&self) -> std::sync::MutexGuard<'_, AuditLog> {
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an audit record; Err carries why it could not be written.
    pub fn audit(&self, rec: Record) -> std::result::Result<u64, String> {
        self.audit_log().append(rec)
    }

    /// Appends the result record of a call whose decision record
    /// [`Shared::audit`] just wrote (see [`AuditLog::append_result`]).
    pub fn audit_result(&self, rec: Record) -> std::result::Result<u64, String> {
        self.audit_log().append_result(rec)
    }
}

enum State {
    Locked,
    Unlocked(Arc<Unlocked>),
}

/// The timer of an unlock that lasts a while (see [`Daemon::unlock`]).
struct AutoLock {
    /// When the vault locks, on [`crate::sys::boot_time`]'s clock.
    due: Duration,
    /// What set the timer, for the lock's audit record:
    /// "`vaultctl unlock --for 8h`" or "vaultd.toml's `unlock_for = \"8h\"`".
    origin: String,
    /// Cancelled when another unlock replaces the timer, or on any lock.
    stop: CancellationToken,
}

/// The daemon.
pub struct Daemon {
    /// File locations.
    pub dirs: Dirs,
    /// Settings.
    pub config: Config,
    state: RwLock<State>,
    /// Serializes unlock, lock and vault changes.
    admin: tokio::sync::Mutex<()>,
    /// One passphrase check (a key derivation, up to the vault's KDF memory)
    /// at a time. Its turn goes into the blocking task, because argon2 cannot
    /// be stopped: an unlock whose caller went away holds the turn until its
    /// derivation ends, so abandoned unlocks cannot pile up in memory.
    kdf_turn: Arc<tokio::sync::Semaphore>,
    failures: Mutex<u32>,
    highest_generation: AtomicU64,
    system_roots: Arc<rustls::RootCertStore>,
    /// Landlock status line for `status`.
    pub landlock_status: String,
    /// Whether Landlock is enforced: then the peers' `/proc/PID/exe` cannot be
    /// read (Landlock denies ptrace-mode access outside vaultd's domain).
    pub landlock_enforced: bool,
    /// Seccomp status line for `status`.
    pub seccomp_status: String,
    /// Calls in flight (for `lock`'s report).
    pub in_flight: AtomicU64,
    /// The audit chain's head when the last writer was dropped (at lock),
    /// checked at the next unlock.
    audit_head: crate::audit::HeadSlot,
    /// The timer of the last unlock, while it runs.
    auto_lock: Mutex<Option<AutoLock>>,
    /// Identity ([`vault_id`]) of the first vault this daemon opened: a
    /// file that opens with another data key (a vault the agent made with a
    /// passphrase of its own, swapped in) is refused by unlock and changes.
    vault_id: Mutex<Option<[u8; 32]>>,
    /// Bumped by every lock, under the state's write lock: an unlock whose
    /// key derivation spanned a lock does not unlock.
    lock_epoch: AtomicU64,
    /// The rate-limit buckets, kept across lock and unlock: the agent can
    /// run `vaultctl lock` itself, and the user's next unlock must not hand
    /// it a full bucket (a restart does: SECURITY.md).
    pub limiter: Limiter,
}

/// A vault's identity: a hash of its data key (the key itself is never kept
/// outside its locked page).
fn vault_id(data_key: &SecretBuf) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"vaultd vault identity v1\0");
    h.update(data_key.expose());
    h.finalize().into()
}

/// Throttle after `n` consecutive wrong passphrases.
fn failure_delay(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(250u64.saturating_mul(1 << (n - 1).min(7))).min(Duration::from_secs(30))
}

/// SHA-256 of an agent token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

use crate::audit::{hex, unhex32};

/// A new agent token: `vtk_` + 256 random bits, base64url.
fn new_token() -> Result<String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|_| Error::Crypto("the OS random generator failed"))?;
    Ok(format!(
        "vtk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    ))
}

/// What `status` reports.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    /// uninitialized | locked | unlocked
    pub state: &'static str,
    /// Counts (0 when locked).
    pub secrets: u32,
    /// Services.
    pub services: u32,
    /// Capabilities.
    pub capabilities: u32,
    /// Agents.
    pub agents: u32,
    /// Audit write error, if any.
    pub audit_error: Option<String>,
    /// Records found missing from the audit log since vaultd started (see
    /// [`crate::audit::ChainMemory`]), whether locked or not.
    pub audit_gap: Option<String>,
    /// Seconds since unlock.
    pub unlocked_for: u64,
    /// Time left before the vault locks by itself (`unlock --for`, `unlock_for`).
    pub locks_in: Option<Duration>,
}

impl Daemon {
    /// A locked daemon.
    pub fn new(dirs: Dirs, config: Config, system_roots: rustls::RootCertStore) -> Daemon {
        Daemon {
            dirs,
            config,
            state: RwLock::new(State::Locked),
            admin: tokio::sync::Mutex::new(()),
            kdf_turn: Arc::new(tokio::sync::Semaphore::new(1)),
            failures: Mutex::new(0),
            highest_generation: AtomicU64::new(0),
            vault_id: Mutex::new(None),
            lock_epoch: AtomicU64::new(0),
            limiter: Limiter::default(),
            system_roots: Arc::new(system_roots),
            landlock_status: "not applied".into(),
            landlock_enforced: false,
            seccomp_status: "not applied".into(),
            in_flight: AtomicU64::new(0),
            audit_head: Default::default(),
            auto_lock: Mutex::new(None),
        }
    }

    /// The current unlocked snapshot, if any.
    pub fn unlocked(&self) -> Option<Arc<Unlocked>> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            State::Locked => None,
            State::Unlocked(u) => Some(u.clone()),
        }
    }

    /// The unlocked snapshot, or the refusal of a call that needs one:
    /// `locked`, naming `vaultctl init` when there is no vault file yet.
    pub fn require_unlocked(&self) -> Result<Arc<Unlocked>, crate::proxy::Refusal> {
        self.unlocked().ok_or_else(|| {
            if self.dirs.vault_file.exists() {
                crate::proxy::Refusal::locked()
            } else {
                crate::proxy::Refusal::uninitialized()
            }
        })
    }

    /// State and counts.
    pub fn status(&self) -> StatusInfo {
        let audit_gap = {
            let memory = self.audit_head.lock().unwrap_or_else(|p| p.into_inner());
            memory.gap().map(str::to_owned)
        };
        match self.unlocked() {
            Some(u) => StatusInfo {
                state: "unlocked",
                secrets: u.data.secrets.len() as u32,
                services: u.services.len() as u32,
                capabilities: u.capabilities.len() as u32,
                agents: u.data.agents.len() as u32,
                audit_error: u.shared.audit_log().error().map(str::to_string),
                audit_gap,
                unlocked_for: u.unlocked_at.elapsed().as_secs(),
                locks_in: self
                    .auto_lock()
                    .as_ref()
                    .map(|t| t.due.saturating_sub(crate::sys::boot_time())),
            },
            None => StatusInfo {
                state: if self.dirs.vault_file.exists() {
                    "locked"
                } else {
                    "uninitialized"
                },
                secrets: 0,
                services: 0,
                capabilities: 0,
                agents: 0,
                audit_error: None,
                audit_gap,
                unlocked_for: 0,
                locks_in: None,
            },
        }
    }

    /// Opens the vault file with `passphrase` (off the async threads: argon2
    /// is slow by design), throttling wrong guesses and refusing rollbacks.
    async fn open_vault(&self, passphrase: SecretBuf) -> Result<vault::Opened> {
        let delay = failure_delay(*self.failures.lock().unwrap_or_else(|p| p.into_inner()));
        let path = self.dirs.vault_file.clone();
        let turn = self
            .kdf_turn
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Crypto("key derivation queue closed"))?;
        let result = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let file = vault::read(&path)?;
            vault::open(&path, &file, passphrase.expose())
        })
        .await
        .map_err(|_| Error::Crypto("vault worker panicked"))?;
        match result {
            Err(Error::WrongPassphrase) => {
                let n = {
                    let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                    *f = f.saturating_add(1);
                    *f
                };
                tokio::time::sleep(delay.max(failure_delay(n))).await;
                tracing::warn!(failures = n, "wrong passphrase");
                Err(Error::WrongPassphrase)
            }
            Err(e) => Err(e),
            Ok(opened) => {
                let seen = self.highest_generation.load(Ordering::SeqCst);
                if opened.data.generation < seen {
                    return Err(Error::Rollback {
                        path: self.dirs.vault_file.clone(),
                        found: opened.data.generation,
                        seen,
                    });
                }
                // Before the generation is remembered: a refused vault
                // must not make the user's own look like a rollback.
                self.same_vault(&opened.data_key)?;
                self.highest_generation
                    .fetch_max(opened.data.generation, Ordering::SeqCst);
                // The first vault opened (an unlock, or a change made while
                // locked) is the one this daemon keeps to.
                self.vault_id
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| vault_id(&opened.data_key));
                // Only a vault this daemon accepts resets the throttle.
                *self.failures.lock().unwrap_or_else(|p| p.into_inner()) = 0;
                Ok(opened)
            }
        }
    }

    /// What a snapshot of `data` serves: service runtimes (credential on
    /// locked pages, scrubber, HTTP client with the sealed CA roots), compiled
    /// rules and token hashes. Building it is the last check of a change: a
    /// change whose runtime cannot be built (a CA the TLS stack rejects, say)
    /// is refused before the file is written, so it can never leave a vault
    /// that fails to unlock.
    fn runtime(&self, data: &VaultData) -> Result<Runtime> {
        let mut services = HashMap::new();
        for s in &data.policy.services {
            let secret = data.secrets.get(s.auth.secret()).ok_or_else(|| {
                Error::Invalid(format!(
                    "service {} uses secret {:?}, which is not in the vault: `vaultctl secret set {}`",
                    s.name,
                    s.auth.secret(),
                    s.auth.secret()
                ))
            })?;
            let credential = SecretBuf::copy_from(secret.expose())?;
            let mut forms: Vec<&[u8]> = vec![credential.expose()];
            let (basic, basic_token);
            if let policy::Auth::Basic { username, .. } = &s.auth {
                let mut b = Vec::with_capacity(username.len() + 1 + credential.len());
                b.extend_from_slice(username.as_bytes());
                b.push(b':');
                b.extend_from_slice(credential.expose());
                basic = SecretBuf::take(b)?;
                forms.push(basic.expose());
                // The token on the wire is a credential of its own: an upstream
                // that echoes it hex-, URL- or base64-encoded (base64 of base64)
                // must be scrubbed too, or the agent decodes it back.
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(basic.expose())
                    .into_bytes();
                basic_token = SecretBuf::take(token)?;
                forms.push(basic_token.expose());
            }
            let scrubber = Scrubber::new(&forms)?;
            let pool = upstream::Pool::new(s, self.system_roots.clone())?;
            let base = url::Url::parse(&s.base_url)
                .map_err(|e| Error::Invalid(format!("service {}: {e}", s.name)))?;
            services.insert(
                s.name.clone(),
                Arc::new(ServiceRuntime {
                    service: s.clone(),
                    pool,
                    scrubber,
                    credential,
                    base,
                }),
            );
        }
        let mut capabilities = HashMap::new();
        for c in &data.policy.capabilities {
            let compile = |rules: &[String]| -> Result<Vec<Rule>> {
                rules
                    .iter()
                    .map(|r| Rule::parse(r).map_err(|e| Error::Invalid(format!("rule {r:?}: {e}"))))
                    .collect()
            };
            capabilities.insert(
                c.name.clone(),
                CapabilityRuntime {
                    capability: c.clone(),
                    allow: compile(&c.allow)?,
                    deny: compile(&c.deny)?,
                    rate_limit: c
                        .rate_limit
                        .as_deref()
                        .map(RateLimit::parse)
                        .transpose()
                        .map_err(Error::Invalid)?,
                },
            );
        }
        let agents_by_token = data
            .agents
            .iter()
            .filter_map(|(name, rec)| {
                rec.token_sha256
                    .as_deref()
                    .and_then(unhex32)
                    .map(|h| (h, name.clone()))
            })
            .collect();
        Ok(Runtime {
            services,
            capabilities,
            agents_by_token,
        })
    }

    fn auto_lock(&self) -> std::sync::MutexGuard<'_, Option<AutoLock>> {
        self.auto_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unlocks with `passphrase`. Already unlocked: checks the passphrase and
    /// succeeds. Either way the vault then locks by itself after `lock_after`
    /// (`unlock --for`), or else after the config's `unlock_for`, or stays
    /// unlocked until `lock` when neither is set: the last unlock decides.
    /// Returns how long this unlock lasts, when it has a timer.
    pub async fn unlock(
        self: &Arc<Self>,
        passphrase: SecretBuf,
        lock_after: Option<Duration>,
    ) -> Result<Option<Duration>> {
        let _admin = self.admin.lock().await;
        let epoch = self.lock_epoch.load(Ordering::SeqCst);
        let opened = self.open_vault(passphrase).await?;
        // Already unlocked: the passphrase (of the same vault) is checked and
        // the timer set. A lock meanwhile leaves it locked, and then this branch.
        if self.unlocked().is_none() {
            self.open_unlocked(opened, epoch)?;
        }
        let timer = match (lock_after, self.config.unlock_for) {
            (Some(d), _) => Some((
                d,
                format!("`vaultctl unlock --for {}`", humantime::format_duration(d)),
            )),
            (None, Some(d)) => Some((
                d,
                format!(
                    "vaultd.toml's `unlock_for = \"{}\"`",
                    humantime::format_duration(d)
                ),
            )),
            (None, None) => None,
        };
        let lasts = timer.as_ref().map(|(d, _)| *d);
        self.set_auto_lock(timer);
        Ok(lasts)
    }

    /// Replaces the unlock timer with one that locks after the duration
    /// `timer` holds (with what set it), or with none.
    fn set_auto_lock(self: &Arc<Self>, timer: Option<(Duration, String)>) {
        let mut slot = self.auto_lock();
        if let Some(old) = slot.take() {
            old.stop.cancel();
        }
        let Some((set_for, origin)) = timer else {
            return;
        };
        let timer = AutoLock {
            due: crate::sys::boot_time().saturating_add(set_for),
            origin,
            stop: CancellationToken::new(),
        };
        let (due, stop) = (timer.due, timer.stop.clone());
        tracing::info!(
            "the vault locks by itself in {} ({})",
            humantime::format_duration(set_for),
            timer.origin
        );
        *slot = Some(timer);
        // Weak: a timer does not keep a stopped daemon alive.
        let daemon = Arc::downgrade(self);
        tokio::spawn(async move {
            // Waits in steps of at most 10 s, each checking the boot clock:
            // tokio's own clock stands still while the machine sleeps.
            loop {
                let left = due.saturating_sub(crate::sys::boot_time());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(left.min(Duration::from_secs(10))) => {}
                }
            }
            if let Some(daemon) = daemon.upgrade() {
                daemon.lock_on_timer(&stop).await;
            }
        });
    }

    /// The unlock timer `stop` belongs to has run out: locks, if that timer
    /// is still the current one.
    async fn lock_on_timer(&self, stop: &CancellationToken) {
        let origin = {
            let mut slot = self.auto_lock();
            // A timer is replaced or cleared only under this mutex, and
            // cancelled as it goes: if `stop` is not cancelled, the current
            // timer is this one.
            if stop.is_cancelled() {
                return;
            }
            slot.take().map(|t| t.origin).unwrap_or_default()
        };
        let why = format!("{origin} ran out");
        tracing::info!("{why}: locking");
        self.lock_because(Some(why)).await;
    }

    /// Refuses a vault that opens but is not the one this daemon opened
    /// first (see [`Daemon::vault_id`]). Until a restart: a fresh daemon
    /// has no memory to compare with (SECURITY.md, rollback).
    fn same_vault(&self, data_key: &SecretBuf) -> Result<()> {
        let known = *self.vault_id.lock().unwrap_or_else(|p| p.into_inner());
        match known {
            Some(id)
                if !bool::from(subtle::ConstantTimeEq::ct_eq(
                    &id[..],
                    &vault_id(data_key)[..],
                )) =>
            {
                tracing::warn!(
                    "{} opens, but with another data key than the vault opened before: refused",
                    self.dirs.vault_file.display()
                );
                Err(Error::VaultReplaced {
                    path: self.dirs.vault_file.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Builds the unlocked state from the vault `opened` and swaps it in,
    /// unless a lock came since `epoch` (read before the key derivation).
    fn open_unlocked(&self, opened: vault::Opened, epoch: u64) -> Result<()> {
        let mut audit = AuditLog::open(&self.dirs.audit_file, &opened.data_key)?;
        audit.chain_from(&self.audit_head);
        let shared = Arc::new(Shared {
            audit: Mutex::new(audit),
            lock_cancel: CancellationToken::new(),
            agent_cancel: Mutex::new(HashMap::new()),
        });
        let rt = self.runtime(&opened.data)?;
        let unlocked = Unlocked::new(
            opened.header,
            opened.data_key,
            opened.data,
            rt,
            shared.clone(),
        );
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if self.lock_epoch.load(Ordering::SeqCst) != epoch {
            return Err(Error::LockedMeanwhile);
        }
        if let Err(e) = shared.audit(Record {
            kind: "admin".into(),
            event: Some("unlock".into()),
            ..Default::default()
        }) {
            tracing::warn!("audit: {e}");
        }
        *state = State::Unlocked(Arc::new(unlocked));
        drop(state);
        tracing::info!("vault unlocked");
        Ok(())
    }

    /// Locks: cancels every call in flight, then waits (bounded) until no
    /// snapshot is referenced, so keys and secrets are wiped when this returns.
    /// Returns the number of calls that were aborted.
    pub async fn lock(&self) -> u32 {
        self.lock_because(None).await
    }

    /// [`Daemon::lock`], with `why` in the audit record when it is not the
    /// user's `lock` (or SIGTERM).
    async fn lock_because(&self, why: Option<String>) -> u32 {
        if let Some(timer) = self.auto_lock().take() {
            timer.stop.cancel();
        }
        let prev = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            // Under the write lock: an unlock checks the epoch under it too.
            self.lock_epoch.fetch_add(1, Ordering::SeqCst);
            std::mem::replace(&mut *state, State::Locked)
        };
        let State::Unlocked(u) = prev else {
            return 0;
        };
        let aborted = self.in_flight.load(Ordering::SeqCst) as u32;
        u.shared.lock_cancel.cancel();
        let _ = u.shared.audit(Record {
            kind: "admin".into(),
            event: Some("lock".into()),
            reason: why,
            ..Default::default()
        });
        // Calls in flight hold clones; they drop them as soon as they see the cancellation.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut u = u;
        loop {
            match Arc::try_unwrap(u) {
                Ok(inner) => {
                    drop(inner);
                    break;
                }
                Err(back) if Instant::now() < deadline => {
                    u = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(back) => {
                    tracing::error!(
                        refs = Arc::strong_count(&back),
                        "calls did not release the vault within 2 s of lock"
                    );
                    drop(back);
                    break;
                }
            }
        }
        tracing::info!(aborted, "vault locked");
        aborted
    }

    /// Applies `change` to the vault opened with `passphrase`, re-seals and
    /// writes it atomically, and (if unlocked) swaps in the new state. On any
    /// error the file and the running state are exactly as before.
    async fn change<T>(
        &self,
        passphrase: SecretBuf,
        event: String,
        change: impl FnOnce(&mut VaultData, &mut Header, &SecretBuf) -> Result<T>,
    ) -> Result<T> {
        let _admin = self.admin.lock().await;
        let vault::Opened {
            mut header,
            data_key,
            mut data,
        } = self.open_vault(passphrase).await?;
        let out = change(&mut data, &mut header, &data_key)?;
        let rt = self.runtime(&data)?;
        data.generation += 1;
        let bytes = vault::seal(&header, &data_key, &data)?;
        // Audited before the file changes, as a call is before it leaves: a
        // change that cannot be audited is not made.
        let record = |error: Option<String>| Record {
            kind: "admin".into(),
            event: Some(event.clone()),
            error,
            ..Default::default()
        };
        self.audit_admin(&data_key, record(None))
            .map_err(Error::AuditUnavailable)?;
        let path = self.dirs.vault_file.clone();
        let written = tokio::task::spawn_blocking(move || vault::write_atomic(&path, &bytes, true))
            .await
            .map_err(|_| Error::Crypto("vault writer panicked"))
            .and_then(|r| r);
        if let Err(e) = written {
            let failed = record(Some(format!("the change was not made: {e}")));
            if let Err(a) = self.audit_admin(&data_key, failed) {
                tracing::warn!("audit: {a}");
            }
            return Err(e);
        }
        self.highest_generation
            .fetch_max(data.generation, Ordering::SeqCst);
        // Checked and swapped under one write lock: a lock that came while
        // this change ran must not be undone by it.
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let State::Unlocked(current) = &*state {
            let mut next = Unlocked::new(header, data_key, data, rt, current.shared.clone());
            // Still the same unlock: `status` counts from its start.
            next.unlocked_at = current.unlocked_at;
            *state = State::Unlocked(Arc::new(next));
        }
        Ok(out)
    }

    /// Appends an admin record: to the running log when unlocked; when
    /// locked, by a writer opened for this one record with the key the
    /// passphrase just unwrapped, linked to the chain the last writer left
    /// (see `AuditLog::chain_from`).
    fn audit_admin(&self, data_key: &SecretBuf, record: Record) -> std::result::Result<(), String> {
        match self.unlocked() {
            Some(current) => current.shared.audit(record).map(drop),
            None => AuditLog::open(&self.dirs.audit_file, data_key)
                .and_then(|mut log| {
                    log.chain_from(&self.audit_head);
                    log.append(record).map_err(Error::Invalid)
                })
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    /// Sets a secret; true when it replaced one.
    pub async fn set_secret(
        &self,
        passphrase: SecretBuf,
        name: String,
        value: SecretBuf,
    ) -> Result<bool> {
        check_secret_name(&name)?;
        if value.is_empty() {
            return Err(Error::Invalid(
                "the secret value is empty: nothing was stored".into(),
            ));
        }
        let event = format!("secret set {name}");
        self.change(passphrase, event, move |data, _, _| {
            let shape = policy::SecretShape::of(value.expose());
            for service in services_using(data, &name) {
                if let Some(problem) = shape.problem(&name, &service.auth) {
                    return Err(Error::Invalid(format!(
                        "service {} uses this secret, and {problem}; nothing was stored",
                        service.name
                    )));
                }
            }
            Ok(data.secrets.insert(name, value).is_some())
        })
        .await
    }

    /// Removes a secret no service uses.
    pub async fn remove_secret(&self, passphrase: SecretBuf, name: String) -> Result<()> {
        let event = format!("secret rm {name}");
        self.change(passphrase, event, move |data, _, _| {
            let users: Vec<&str> = services_using(data, &name)
                .map(|s| s.name.as_str())
                .collect();
            if !users.is_empty() {
                return Err(Error::Invalid(format!(
                    "secret {name:?} is used by service(s) {}: change the policy first (`vaultctl policy apply`)",
                    users.join(", ")
                )));
            }
            data.secrets.remove(&name).map(|_| ()).ok_or(Error::NotFound {
                kind: "secret",
                name,
                hint: "; `vaultctl secret list` shows the names",
            })
        })
        .await
    }

    /// Validates and stores a policy (only validates it in a `dry_run`).
    pub async fn apply_policy(
        &self,
        passphrase: SecretBuf,
        text: String,
        source: String,
        ca_files: HashMap<String, String>,
        dry_run: bool,
    ) -> Result<Applied> {
        let ports = self.config.upstream_ports.clone();
        let apply = move |data: &mut VaultData| -> Result<Applied> {
            let ctx = policy::Context {
                secrets: data.secrets.keys().map(String::as_str).collect(),
                agents: data.agents.keys().map(String::as_str).collect(),
                ca_files: &ca_files,
                secret_shapes: data
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.as_str(), policy::SecretShape::of(v.expose())))
                    .collect(),
            };
            let parsed = policy::parse(&text, &ctx)
                .map_err(|errs| Error::Invalid(policy::format_errors(&source, &errs)))?;
            let mut new_agents = Vec::new();
            for a in parsed.agents {
                if !data.agents.contains_key(&a) {
                    data.agents.insert(a.clone(), AgentRecord::default());
                    new_agents.push(a);
                }
            }
            let applied = Applied {
                services: parsed.policy.services.len() as u32,
                capabilities: parsed.policy.capabilities.len() as u32,
                new_agents,
                warnings: unreachable_services(&parsed.policy.services, &ports),
            };
            data.policy = parsed.policy;
            Ok(applied)
        };
        if dry_run {
            let _admin = self.admin.lock().await;
            let mut opened = self.open_vault(passphrase).await?;
            let applied = apply(&mut opened.data)?;
            self.runtime(&opened.data)?;
            return Ok(applied);
        }
        self.change(passphrase, "policy apply".into(), move |data, _, _| {
            apply(data)
        })
        .await
    }

    /// Issues a token for a new agent, or for one the policy declared without a token.
    pub async fn add_agent(&self, passphrase: SecretBuf, name: String) -> Result<String> {
        crate::policy::check_name("agent", &name).map_err(Error::Invalid)?;
        let token = new_token()?;
        let hash = hex(&token_hash(&token));
        let event = format!("agent add {name}");
        self.change(passphrase, event, move |data, _, _| {
            let rec = data.agents.entry(name.clone()).or_default();
            if rec.token_sha256.is_some() {
                return Err(Error::Invalid(format!(
                    "agent {name:?} already has a token: to issue a new one, `vaultctl agent rm {name}` then `vaultctl agent add {name}`"
                )));
            }
            rec.token_sha256 = Some(hash);
            Ok(())
        })
        .await?;
        Ok(token)
    }

    /// Removes an agent and aborts its calls in flight; returns how many were running.
    pub async fn remove_agent(&self, passphrase: SecretBuf, name: String) -> Result<u32> {
        let event = format!("agent rm {name}");
        let n2 = name.clone();
        self.change(passphrase, event, move |data, _, _| {
            data.agents.remove(&n2).ok_or_else(|| Error::NotFound {
                kind: "agent",
                name: n2.clone(),
                hint: "; `vaultctl agent list` shows the names",
            })?;
            // Its grants go with it: `policy show` must print a policy that
            // `policy apply` accepts, and a new agent of the same name starts
            // with nothing.
            for c in &mut data.policy.capabilities {
                c.agents.retain(|a| *a != n2);
            }
            Ok(())
        })
        .await?;
        let mut aborted = 0;
        if let Some(u) = self.unlocked()
            && let Some((t, calls)) = u
                .shared
                .agent_cancel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name)
        {
            aborted = u32::try_from(Arc::strong_count(&calls) - 1).unwrap_or(u32::MAX);
            t.cancel();
        }
        // Locked or not: the buckets outlive an unlock.
        self.limiter.forget_agent(&name);
        Ok(aborted)
    }

    /// Re-wraps the data key under a new passphrase.
    pub async fn change_passphrase(
        &self,
        passphrase: SecretBuf,
        new_passphrase: SecretBuf,
    ) -> Result<()> {
        if new_passphrase.is_empty() {
            return Err(Error::Invalid("the new passphrase is empty".into()));
        }
        self.change(passphrase, "passwd".into(), move |_, header, key| {
            *header = vault::rewrap(key, new_passphrase.expose(), header.kdf)?;
            Ok(())
        })
        .await
    }
}

/// What `policy apply` did (or, in a dry run, would do).
#[derive(Debug)]
pub struct Applied {
    /// Services in the policy.
    pub services: u32,
    /// Capabilities in the policy.
    pub capabilities: u32,
    /// Agents the policy declares that did not exist yet (no token until `agent add`).
    pub new_agents: Vec<String>,
    /// Services every call to which would fail as vaultd runs now, each with
    /// what to do: a port outside `upstream_ports`, or a literal address
    /// refused without `allow_private_network`.
    pub warnings: Vec<String>,
}

/// [`Applied::warnings`] for `services`, with vaultd's `upstream_ports`.
fn unreachable_services(services: &[policy::Service], ports: &[u16]) -> Vec<String> {
    let mut warnings = Vec::new();
    for s in services {
        let Ok(url) = url::Url::parse(&s.base_url) else {
            continue;
        };
        if let Some(port) = url.port_or_known_default()
            && !ports.contains(&port)
        {
            warnings.push(format!(
                "service {:?} uses port {port}, which vaultd may not connect to (upstream_ports = {ports:?}): \
                 add {port} to upstream_ports in vaultd.toml and restart vaultd, or every call to it fails",
                s.name
            ));
        }
        if !s.allow_private_network
            && let Some((ip, why)) = crate::proxy::upstream::refused_literal_host(&url)
        {
            warnings.push(format!(
                "service {:?} points at {ip}, a {why} address, which vaultd refuses unless the \
                 service sets allow_private_network = true: every call to it fails",
                s.name
            ));
        }
    }
    warnings
}

/// The services whose credential is the secret `secret`.
fn services_using<'a>(
    data: &'a VaultData,
    secret: &'a str,
) -> impl Iterator<Item = &'a policy::Service> + 'a {
    data.policy
        .services
        .iter()
        .filter(move |s| s.auth.secret() == secret)
}

/// Secret names: 1-128 characters of A-Z a-z 0-9 - _ . /
pub fn check_secret_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    {
        return Err(Error::Invalid(format!(
            "secret name {name:?} must be 1-128 characters of A-Z a-z 0-9 - _ . /"
        )));
    }
    Ok(())
}

/// Creates a new vault file (vaultctl init).
pub fn init_vault(dirs: &Dirs, passphrase: &[u8], kdf: KdfParams) -> Result<()> {
    if dirs.vault_file.exists() {
        return Err(Error::VaultExists {
            path: dirs.vault_file.clone(),
        });
    }
    // Only the vault's own directory: the socket's and the audit log's are
    // vaultd's business when it starts.
    if let Some(dir) = dirs.vault_file.parent() {
        crate::dirs::ensure_private_dir(dir)?;
    }
    let (header, key) = vault::create(passphrase, kdf)?;
    let data = VaultData {
        generation: 1,
        secrets: BTreeMap::new(),
        ..Default::default()
    };
    let bytes = vault::seal(&header, &key, &data)?;
    vault::write_atomic(&dirs.vault_file, &bytes, false)
}

/// Names of the agents an unlocked snapshot knows, with whether they have a token.
pub fn agent_names(u: &Unlocked) -> Vec<(String, bool, Vec<String>)> {
    u.data
        .agents
        .iter()
        .map(|(name, rec)| {
            let caps = u
                .data
                .policy
                .capabilities
                .iter()
                .filter(|c| c.agents.iter().any(|a| a == name))
                .map(|c| c.name.clone())
                .collect();
            (name.clone(), rec.token_sha256.is_some(), caps)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_grows_and_caps() {
        assert_eq!(failure_delay(0), Duration::ZERO);
        assert!(failure_delay(2) > failure_delay(1));
        assert_eq!(failure_delay(50), Duration::from_secs(30));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("vtk_") && a.len() == 4 + 43);
    }
}
