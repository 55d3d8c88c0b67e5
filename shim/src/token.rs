//! The agent token, and where it comes from.
//!
//! `VAULTD_AGENT_TOKEN` is this process's environment: it cannot change
//! while the MCP client keeps vault-mcp running, so a wrong one is fixed only
//! by restarting the client, and the refusals say so. A `--token-file` can:
//! the file is read at start-up, and read again
//!
//! - on every call while the token it gave is unusable (file missing, empty,
//!   unreadable): the user's fix, writing the file, is seen on the next call;
//! - when vaultd answers `unknown_agent` (the agent was removed, and perhaps
//!   added again with `vaultctl agent add NAME --token-file` into the same file):
//!   if the file now holds another token, `list_services` and `vault_status`
//!   retry with it, and `execute` says to call again (it is never repeated by
//!   vault-mcp: an `agent rm` abort of a call that reached the API gets the
//!   same refusal).
//!
//! A token that works costs no file access per call: one uncontended mutex.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::render::{self, Refusal};

/// The environment variable holding the agent token.
pub const TOKEN_ENV: &str = "VAULTD_AGENT_TOKEN";
/// A token file is read up to this size: tokens are short.
const MAX_TOKEN_FILE: u64 = 4096;

/// The agent token: never logged, never shown.
pub struct Token(String);

impl Token {
    /// Wraps a token read from the environment or the token file.
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token, for the request to vaultd.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// The token this process uses, as it stands now.
pub struct AgentToken {
    /// `Some` for `--token-file`: read again as the module docs say.
    file: Option<PathBuf>,
    current: Mutex<Result<Arc<Token>, Refusal>>,
    /// The token `current` held before a re-read replaced it: a call still
    /// running may have sent it, so refusals are scrubbed of it too.
    previous: Mutex<Option<Arc<Token>>>,
}

impl AgentToken {
    /// A token that never changes (`VAULTD_AGENT_TOKEN`, or none at all).
    pub fn fixed(token: Result<Token, Refusal>) -> Self {
        Self {
            file: None,
            current: Mutex::new(token.map(Arc::new)),
            previous: Mutex::new(None),
        }
    }

    /// The token in `path`, read now and again as the module docs say.
    pub fn from_file(path: PathBuf) -> Self {
        let current = read_token_file(&path).map(Arc::new);
        Self {
            file: Some(path),
            current: Mutex::new(current),
            previous: Mutex::new(None),
        }
    }

    /// From the command line: `--token-file` when given, else `VAULTD_AGENT_TOKEN`.
    pub fn configured(file: Option<PathBuf>) -> Self {
        match file {
            Some(path) => Self::from_file(path),
            None => Self::fixed(match std::env::var(TOKEN_ENV) {
                Ok(value) if !value.trim().is_empty() => Ok(Token::new(value.trim().to_owned())),
                _ => Err(render::no_token()),
            }),
        }
    }

    /// The token file, if the token comes from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Result<Arc<Token>, Refusal>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token to call with, or why there is none. A token file that gave
    /// none is read again first.
    pub fn current(&self) -> Result<Arc<Token>, Refusal> {
        let mut slot = self.slot();
        if let (Err(_), Some(path)) = (&*slot, &self.file) {
            self.reread(&mut slot, path);
        }
        slot.clone()
    }

    /// Why there is no token now, as last read (nothing is read again).
    pub fn error(&self) -> Option<Refusal> {
        self.slot().as_ref().err().cloned()
    }

    /// `refusal` with every token this process may have sent on its way
    /// (the current one and the one it replaced) taken out: defence in depth,
    /// as vaultd's refusals do not quote the token.
    pub fn scrub(&self, refusal: Refusal) -> Refusal {
        let current = self.slot().as_ref().ok().cloned();
        let previous = self
            .previous
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        [current, previous]
            .into_iter()
            .flatten()
            .fold(refusal, |r, token| r.without(token.as_str()))
    }

    /// Puts what the token file holds now in `slot`, remembering a token it replaces.
    fn reread(&self, slot: &mut Result<Arc<Token>, Refusal>, path: &Path) {
        let fresh = read_token_file(path).map(Arc::new);
        if let Ok(old) = std::mem::replace(slot, fresh) {
            *self.previous.lock().unwrap_or_else(PoisonError::into_inner) = Some(old);
        }
    }

    /// vaultd did not know `used`: the token to retry with, when the token
    /// file now holds another one (another call may have read it already).
    /// `None` when there is nothing new: then [`AgentToken::unknown`] says why.
    pub fn refresh(&self, used: &Token) -> Option<Arc<Token>> {
        let path = self.file.as_ref()?;
        let mut slot = self.slot();
        if let Ok(token) = &*slot
            && token.0 != used.0
        {
            return Some(token.clone());
        }
        self.reread(&mut slot, path);
        match &*slot {
            Ok(token) if token.0 != used.0 => Some(token.clone()),
            _ => None,
        }
    }

    /// The refusal for a token vaultd does not know (`refusal`, its
    /// `unknown_agent`), after [`AgentToken::refresh`] found nothing new:
    /// what the user can do, and whether the MCP client must be restarted.
    pub fn unknown(&self, refusal: Refusal) -> Refusal {
        match &self.file {
            None => refusal.followed_by(format_args!(
                "vault-mcp read this token from {TOKEN_ENV} when it started and cannot see a new one: \
                 after fixing the token in the MCP client's configuration, restart the MCP client"
            )),
            Some(path) => match &*self.slot() {
                // The file itself is the problem now: say what is wrong with it.
                Err(file_refusal) => file_refusal.clone(),
                Ok(_) => refusal.followed_by(format_args!(
                    "vault-mcp read {} again and it holds this same token: write a valid one there \
                     (`vaultctl agent add NAME --token-file {}`) and call again, no restart needed",
                    path.display(),
                    path.display()
                )),
            },
        }
    }
}

/// Reads and trims the token in `path`; whatever is wrong becomes the refusal.
pub fn read_token_file(path: &Path) -> Result<Token, Refusal> {
    // Non-blocking open: a FIFO put where the file was (the agent can write
    // the user's files) must not block this single-threaded process in
    // open(2); it is then refused below as not a regular file.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| render::bad_token_file(path, e))?;
    // The mode of the file actually opened, not of whatever the path names later.
    let meta = f.metadata().map_err(|e| render::bad_token_file(path, e))?;
    if !meta.is_file() {
        return Err(render::bad_token_file(path, "not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "vault-mcp: warning: token file {} is accessible by other users (mode {mode:03o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let mut content = String::new();
    f.by_ref()
        .take(MAX_TOKEN_FILE)
        .read_to_string(&mut content)
        .map_err(|e| render::bad_token_file(path, e))?;
    let token = content.trim();
    if token.is_empty() {
        return Err(render::bad_token_file(path, "it is empty"));
    }
    Ok(Token::new(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    /// A FIFO where the token file was (the agent can put one there) is
    /// refused at once: a blocking open(2) would stall the whole process.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_token_file(&p).map(|_| ()).map_err(|r| r.to_string()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO token file blocked");
        let err = got.expect_err("a FIFO is not a token file");
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"  vt_abc123\n\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let token = read_token_file(&path).unwrap();
        assert_eq!(token.as_str(), "vt_abc123");
        assert_eq!(format!("{token:?}"), "Token([REDACTED])");
    }

    #[test]
    fn token_file_problems_are_unknown_agent_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let r = read_token_file(&missing).unwrap_err();
        assert!(
            r.text()
                .starts_with("unknown_agent: cannot use the token file"),
            "{r}"
        );
        assert!(r.text().contains("no restart needed"), "{r}");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let r = read_token_file(&empty).unwrap_err();
        assert!(r.text().contains("it is empty"), "{r}");

        let r = read_token_file(dir.path()).unwrap_err();
        assert!(r.text().starts_with("unknown_agent: "), "{r}");
    }

    #[test]
    fn a_readable_token_file_is_still_used() {
        // Too-open permissions only warn (on stderr).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "vt_open").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_token_file(&path).is_ok());
    }

    #[test]
    fn a_missing_file_is_read_again_until_it_holds_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.token");
        let t = AgentToken::from_file(path.clone());
        assert!(t.current().unwrap_err().text().contains("No such file"));
        std::fs::write(&path, "vt_late\n").unwrap();
        assert_eq!(t.current().unwrap().as_str(), "vt_late");
        // Once it works, the file is not read again per call.
        std::fs::write(&path, "vt_other").unwrap();
        assert_eq!(t.current().unwrap().as_str(), "vt_late");
    }

    /// A refusal is scrubbed of the token in use and of the one it replaced
    /// (a call still running may have sent the old one).
    #[test]
    fn refusals_are_scrubbed_of_the_current_and_the_replaced_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.token");
        let (old, new) = ("vtk_old_0123456789abcdef", "vtk_new_0123456789abcdef");
        std::fs::write(&path, old).unwrap();
        let t = AgentToken::from_file(path.clone());
        let used = t.current().unwrap();
        std::fs::write(&path, new).unwrap();
        assert_eq!(t.refresh(&used).unwrap().as_str(), new);
        let echo = Refusal::from_daemon(&format!("bad_request: saw {old} and {new}")).unwrap();
        let text = t.scrub(echo).text().to_string();
        assert!(!text.contains(old) && !text.contains(new), "{text}");
        // And when the file then breaks, the last good token is still known.
        std::fs::remove_file(&path).unwrap();
        let fresh = t.current().unwrap();
        assert!(t.refresh(&fresh).is_none());
        let echo = Refusal::from_daemon(&format!("bad_request: saw {new}")).unwrap();
        assert!(!t.scrub(echo).text().contains(new));
    }

    #[test]
    fn an_unknown_token_is_replaced_by_a_new_one_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.token");
        std::fs::write(&path, "vt_old").unwrap();
        let t = AgentToken::from_file(path.clone());
        let old = t.current().unwrap();
        // Same token still in the file: nothing to retry with; the refusal says so.
        assert!(t.refresh(&old).is_none());
        let daemon = Refusal::from_daemon("unknown_agent: this agent token is not known").unwrap();
        let r = t.unknown(daemon.clone());
        assert!(
            r.text()
                .starts_with("unknown_agent: this agent token is not known; vault-mcp read ")
                && r.text().contains("holds this same token")
                && r.text().contains("no restart needed"),
            "{r}"
        );
        // A new token: picked up, and a second caller holding the old one gets it without a read.
        std::fs::write(&path, "vt_new").unwrap();
        let old = t.current().unwrap();
        assert_eq!(t.refresh(&old).unwrap().as_str(), "vt_new");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(t.refresh(&old).unwrap().as_str(), "vt_new");
        // The file gone: the refusal is about the file.
        let new = t.current().unwrap();
        assert!(t.refresh(&new).is_none());
        assert!(
            t.unknown(daemon)
                .text()
                .contains("cannot use the token file")
        );
    }

    #[test]
    fn an_environment_token_says_to_restart_the_client() {
        let t = AgentToken::fixed(Ok(Token::new("vt_env".into())));
        let used = t.current().unwrap();
        assert!(t.refresh(&used).is_none());
        let r = t.unknown(Refusal::from_daemon("unknown_agent: not known").unwrap());
        assert!(
            r.text().contains("VAULTD_AGENT_TOKEN") && r.text().contains("restart the MCP client"),
            "{r}"
        );
        let none = AgentToken::fixed(Err(render::no_token()));
        assert!(
            none.current()
                .unwrap_err()
                .text()
                .contains("restart the MCP client")
        );
    }
}
