//! The audit log: one JSON object per line, chained with HMAC-SHA256.
//!
//! Each line is the record's JSON with `"mac":"<hex>"` as its last field, where
//! `mac = HMAC(k, prev_mac || json_without_mac)` and `k` is derived from the
//! vault's data key (HKDF, info `vaultd audit mac v1`). The first record's
//! `prev_mac` is 32 zero bytes. Editing, removing or reordering any line breaks
//! the chain from that line on; cutting lines off the end is caught by
//! comparing the last line with the head the daemon holds in memory.
//!
//! Writes are a single `write(2)` of a whole line to a file opened with
//! `O_APPEND`. Before each write the open file is checked against the path
//! (removed or replaced means "unavailable"), except for a call's result
//! record, which follows its decision record and its check at once; a failed
//! write makes the call that needed it fail closed with `audit_unavailable`.
//! Records never contain secrets, tokens or bodies.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::secret::SecretBuf;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes reserved for a record line: most fit (a call's decision record is
/// about 330 bytes with the MAC, a result with an error message about 500);
/// a longer one (a long path or reason) grows the buffer once or twice.
const LINE_CAPACITY: usize = 768;

/// Longest `reason` an agent may give, in bytes: a longer one is refused
/// (`proxy::execute`), so that the record holds the whole reason.
pub const MAX_REASON_LEN: usize = 1024;

/// Longest `reason` kept in a record, in characters, once its control and
/// invisible characters are escaped ([`escape_hidden`]): a reason within
/// [`MAX_REASON_LEN`] always fits (an escape is at most six characters for
/// each byte it replaces, `\u{1b}`); the reason of a refused call that was
/// over the limit is cut here.
pub const MAX_RECORDED_REASON: usize = 6 * MAX_REASON_LEN;

/// One audit record. Fields that do not apply are left out of the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// `decision`, `result` or `admin`.
    pub kind: String,
    /// Agent name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Caller's pid (kernel credentials of the socket peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_pid: Option<u32>,
    /// Caller's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_uid: Option<u32>,
    /// Caller's executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_exe: Option<String>,
    /// Capability asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Canonical method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Canonical path (as matched and sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `allowed` or `denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The rule that decided (or the refusal code's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Refusal code for denied calls and failed results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Reason given by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a result: the decision record it closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_seq: Option<u64>,
    /// Upstream HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response body bytes returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Whether the body was cut at max_response_bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Call duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Error text (no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Admin event (`unlock`, `lock`, `secret set github-token`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// The audit writer, owned by the unlocked daemon state.
pub struct AuditLog {
    path: PathBuf,
    file: Option<File>,
    ino: (u64, u64),
    key: SecretBuf,
    seq: u64,
    head: [u8; 32],
    /// Where the file ends, as last seen by an identity check or left by a
    /// write: what a failed write is cut back to.
    len: u64,
    /// Why the last write failed, until one succeeds.
    error: Option<String>,
    /// Set when the log did not end where this daemon left it at the last
    /// lock: records were cut off or the file was replaced while locked.
    /// Reported by every `verify` until the daemon restarts.
    gap: Option<String>,
    /// Receives the chain's head when this writer is dropped (at lock).
    head_slot: Option<HeadSlot>,
    tx: tokio::sync::broadcast::Sender<String>,
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Some(slot) = &self.head_slot {
            slot.lock().unwrap_or_else(|p| p.into_inner()).head = Some((self.seq, self.head));
        }
    }
}

/// Where the chain stands: the last record's seq and MAC. Not secret (the
/// MAC is in the file); kept by the daemon across `lock` so that records cut
/// off the end while it was locked are found after `unlock`.
pub type ChainHead = (u64, [u8; 32]);

/// What the daemon keeps of the chain while no writer is open (locked):
/// where the last writer left it, and the first gap any writer found since
/// vaultd started. The gap is kept here, not in a writer, so that a lock and
/// unlock (which any caller can cause) does not wash it out.
#[derive(Debug, Default)]
pub struct ChainMemory {
    head: Option<ChainHead>,
    gap: Option<String>,
}

impl ChainMemory {
    /// The gap found since vaultd started, if any: `status` and `unlock`
    /// show it, so the user need not run `audit verify` to learn of it.
    pub fn gap(&self) -> Option<&str> {
        self.gap.as_deref()
    }
}

/// Where a dropped writer leaves its [`ChainHead`] for the next one.
pub type HeadSlot = std::sync::Arc<std::sync::Mutex<ChainMemory>>;

/// Derives the audit MAC key from the vault's data key.
pub fn derive_key(data_key: &SecretBuf) -> Result<SecretBuf> {
    let hk = hkdf::Hkdf::<Sha256>::new(None, data_key.expose());
    let mut key = SecretBuf::zeroed(32)?;
    hk.expand(b"vaultd audit mac v1", key.expose_mut())
        .map_err(|_| Error::Crypto("hkdf"))?;
    Ok(key)
}

fn mac(key: &SecretBuf, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut m =
        <HmacSha256 as KeyInit>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    m.update(prev);
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Lowercase hex of `b` (MACs, chain heads, token hashes). On the hot path:
/// every audit record carries one.
pub(crate) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 0xf)] as char);
    }
    s
}

pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    // Only the spelling `hex` writes: `from_str_radix` alone also takes "+f"
    // and uppercase, so an edited MAC field would still verify.
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Splits a stored line into (json without mac, mac).
fn split_line(line: &str) -> Option<(String, [u8; 32])> {
    const TAIL: usize = ",\"mac\":\"".len() + 64 + "\"}".len();
    if line.len() < TAIL || !line.ends_with("\"}") {
        return None;
    }
    let cut = line.len() - TAIL;
    // `cut` may fall inside a multi-byte character of an edited line.
    let (body, tail) = (line.get(..cut)?, line.get(cut..)?);
    let mac_hex = tail.strip_prefix(",\"mac\":\"")?.strip_suffix("\"}")?;
    Some((format!("{body}}}"), unhex32(mac_hex)?))
}

/// Now as RFC 3339 with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl AuditLog {
    /// Opens (creating 0600) the log and continues its chain from the last line.
    pub fn open(path: &Path, data_key: &SecretBuf) -> Result<AuditLog> {
        let key = derive_key(data_key)?;
        let (tx, _) = tokio::sync::broadcast::channel(1024);
        let mut log = AuditLog {
            path: path.to_path_buf(),
            file: None,
            ino: (0, 0),
            key,
            seq: 0,
            head: [0; 32],
            len: 0,
            error: None,
            gap: None,
            head_slot: None,
            tx,
        };
        log.reopen()?;
        Ok(log)
    }

    fn reopen(&mut self) -> Result<()> {
        let mut file = crate::sys::open_regular(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600),
            &self.path,
        )
        .map_err(|e| Error::io("open audit log", &self.path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("inspect audit log", &self.path, e))?;
        // Continue from the last complete line, if any.
        if meta.len() > 0 {
            let start = meta.len().saturating_sub(64 * 1024);
            file.seek(SeekFrom::Start(start))
                .map_err(|e| Error::io("read audit log", &self.path, e))?;
            let mut last = None;
            // Bytes, not `lines()`: `start` can fall inside a multi-byte
            // character, and a line that is not UTF-8 is damage for `verify`
            // to report, not a reason to refuse to open the log.
            for line in BufReader::new(&file).split(b'\n') {
                let line = line.map_err(|e| Error::io("read audit log", &self.path, e))?;
                let Ok(line) = std::str::from_utf8(&line) else {
                    continue;
                };
                let line = line.strip_suffix('\r').unwrap_or(line);
                if let Some((body, m)) = split_line(line)
                    && let Ok(r) = serde_json::from_str::<Record>(&body)
                {
                    last = Some((r.seq, m));
                }
            }
            if let Some((seq, m)) = last {
                self.seq = seq;
                self.head = m;
            }
        }
        self.ino = (meta.dev(), meta.ino());
        self.len = meta.len();
        self.file = Some(file);
        Ok(())
    }

    /// Appends a record (its `seq` and `time` are set here); returns its seq.
    /// On failure nothing is appended and the error is remembered for `status`.
    pub fn append(&mut self, mut rec: Record) -> std::result::Result<u64, String> {
        let result = self.try_append(&mut rec, true);
        self.remember(result)
    }

    /// Appends the result record of a call whose decision record was just
    /// appended with [`AuditLog::append`]. The file's identity was checked
    /// then and is not checked again (two `statx` per call saved): if the log
    /// is removed in between, this record goes to the removed file, and the
    /// next call's decision record finds the removal and refuses the call.
    pub fn append_result(&mut self, mut rec: Record) -> std::result::Result<u64, String> {
        let result = self.try_append(&mut rec, false);
        self.remember(result)
    }

    fn remember(
        &mut self,
        result: std::result::Result<u64, String>,
    ) -> std::result::Result<u64, String> {
        match &result {
            Ok(_) => self.error = None,
            Err(e) => self.error = Some(e.clone()),
        }
        result
    }

    fn try_append(
        &mut self,
        rec: &mut Record,
        check_identity: bool,
    ) -> std::result::Result<u64, String> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| "the audit log is not open".to_string())?;
        if check_identity {
            self.len = identity(file, &self.path, self.ino)?;
        }
        rec.seq = self.seq + 1;
        rec.time = now();
        // One buffer, sized for a typical record (no growth, no second copy):
        // the body, then the MAC in place of its closing brace.
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        serde_json::to_writer(&mut line, &*rec)
            .map_err(|e| format!("cannot encode audit record: {e}"))?;
        let m = mac(&self.key, &self.head, &line);
        line.pop(); // the body's closing '}'
        line.extend_from_slice(b",\"mac\":\"");
        line.extend_from_slice(hex(&m).as_bytes());
        line.extend_from_slice(b"\"}\n");
        if let Err(e) = file.write_all(&line) {
            // A short write (disk full) leaves a torn line that would break the
            // chain for every later record: cut the file back to where it was.
            let _ = file.set_len(self.len);
            return Err(format!(
                "cannot write audit log {}: {e}",
                self.path.display()
            ));
        }
        self.seq = rec.seq;
        self.head = m;
        self.len += line.len() as u64;
        if self.tx.receiver_count() > 0 {
            // Only `audit tail -f` listens; no copy of the line without it.
            line.pop(); // '\n'
            let _ = self.tx.send(String::from_utf8_lossy(&line).into_owned());
        }
        Ok(rec.seq)
    }

    /// The chain's current head.
    pub fn head(&self) -> ChainHead {
        (self.seq, self.head)
    }

    /// Links this writer to `slot`, right after [`AuditLog::open`]: checks
    /// that the log ends exactly where the previous writer (dropped at the
    /// last `lock`, or opened for a change made while locked) left it, and
    /// leaves this writer's head there when it is dropped in turn. Nothing
    /// else is written while locked, so a difference means records were
    /// removed from the end or the file was replaced; `verify` reports it
    /// from then on, through later locks, until vaultd restarts.
    pub fn chain_from(&mut self, slot: &HeadSlot) {
        let mut memory = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(expected) = memory.head {
            self.expect_head(expected);
        }
        if memory.gap.is_none()
            && let Some(gap) = &self.gap
        {
            tracing::warn!("audit log: {gap}");
            memory.gap = Some(gap.clone());
        }
        self.gap.clone_from(&memory.gap);
        self.head_slot = Some(slot.clone());
    }

    fn expect_head(&mut self, expected: ChainHead) {
        if self.head() != expected {
            self.gap = Some(format!(
                "the log ended at record {} when the vault was last locked, but when vaultd opened it again it ended at record {}: records were removed from its end or the file was replaced since (reported until vaultd restarts)",
                expected.0, self.seq
            ));
        }
    }

    /// Why the last write failed, if it did.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// New lines as they are written.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Verifies the whole file against the key and this writer's head.
    pub fn verify(&self) -> Verification {
        self.verify_later().run()
    }

    /// What [`AuditLog::verify`] needs, taken now (under the writer's lock);
    /// [`PendingVerify::run`] then reads the file without the lock, so calls
    /// and `lock` need not wait for a long log to be read (any caller can
    /// ask for a verification, many at once). The head taken here must be
    /// in the file; records appended meanwhile are checked as the chain's
    /// continuation, not taken for a mismatch.
    pub fn verify_later(&self) -> PendingVerify {
        // A replaced file may hold a valid chain and still not be the log
        // this writer appends to (and calls are refused meanwhile): say so.
        let replaced = self
            .file
            .as_ref()
            .and_then(|file| identity(file, &self.path, self.ino).err());
        PendingVerify {
            path: self.path.clone(),
            key: SecretBuf::copy_from(self.key.expose()).ok(),
            head: self.head(),
            gap: self.gap.clone(),
            replaced,
        }
    }
}

/// A verification whose inputs were taken under the writer's lock.
pub struct PendingVerify {
    path: PathBuf,
    /// A copy of the MAC key (locked memory, wiped on drop); `None` when it
    /// could not be copied.
    key: Option<SecretBuf>,
    head: ChainHead,
    gap: Option<String>,
    replaced: Option<String>,
}

impl PendingVerify {
    /// Reads and checks the file against the head taken.
    pub fn run(self) -> Verification {
        let Some(key) = &self.key else {
            return Verification {
                records: 0,
                problem: Some(
                    "cannot copy the audit key into locked memory: raise LimitMEMLOCK (`vaultctl status` shows mlock) and try again".into(),
                ),
                last_seq: 0,
                last_mac: [0; 32],
                marked: None,
            };
        };
        // The whole file is checked; records appended after the head was
        // taken continue the chain from it and are checked like the rest.
        let (seq, head) = self.head;
        let mut v = verify_file_marking(&self.path, key, seq);
        for problem in [self.gap, self.replaced] {
            if v.problem.is_none() {
                v.problem = problem;
            }
        }
        if v.problem.is_none() && v.marked != Some(head) {
            v.problem = Some(format!(
                "the log ends at record {} but vaultd wrote up to record {seq}: records were removed from the end or the file was replaced",
                v.last_seq
            ));
        }
        v
    }
}

/// Checks that `path` still names the open `file` (device and inode `ino`)
/// and that the file is still linked; returns its length. Removed or
/// replaced is an error that says what to do.
fn identity(file: &File, path: &Path, ino: (u64, u64)) -> std::result::Result<u64, String> {
    let fmeta = file
        .metadata()
        .map_err(|e| format!("cannot inspect audit log: {e}"))?;
    // Not followed: a link to the open file in its place is a replacement too.
    let pmeta = std::fs::symlink_metadata(path);
    let same = pmeta.as_ref().is_ok_and(|m| (m.dev(), m.ino()) == ino);
    if fmeta.nlink() == 0 || !same {
        return Err(format!(
            "audit log {} was removed or replaced; calls are refused until it is restored (or `vaultctl lock` then `vaultctl unlock` starts a new file, and `audit verify` then reports the missing records until vaultd restarts)",
            path.display()
        ));
    }
    Ok(fmeta.len())
}

/// Outcome of checking a log file.
#[derive(Debug)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// First problem, naming its line.
    pub problem: Option<String>,
    last_seq: u64,
    last_mac: [u8; 32],
    /// The MAC of the record [`verify_file_marking`] was asked to mark.
    marked: Option<[u8; 32]>,
}

/// Checks every line's MAC and sequence.
pub fn verify_file(path: &Path, key: &SecretBuf) -> Verification {
    verify_file_marking(path, key, 0)
}

/// Checks every line's MAC and sequence, and keeps the MAC of record `mark`
/// in [`Verification::marked`] (32 zero bytes for record 0, the chain's
/// start), if the file holds it.
fn verify_file_marking(path: &Path, key: &SecretBuf, mark: u64) -> Verification {
    let mut v = Verification {
        records: 0,
        problem: None,
        last_seq: 0,
        last_mac: [0; 32],
        marked: (mark == 0).then_some([0; 32]),
    };
    let file = match crate::sys::open_regular(OpenOptions::new().read(true), path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return v,
        Err(e) => {
            v.problem = Some(format!("cannot read {}: {e}", path.display()));
            return v;
        }
    };
    // Split on '\n' alone: `lines()` would also drop a '\r' before it, a
    // byte the writer never writes, and the edit would go unseen.
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let n = i + 1;
        let line = match line.map(String::from_utf8) {
            Ok(Ok(l)) => l,
            Ok(Err(_)) => {
                v.problem = Some(format!("line {n}: not UTF-8: edited or damaged"));
                return v;
            }
            Err(e) => {
                v.problem = Some(format!("line {n}: unreadable ({e})"));
                return v;
            }
        };
        let Some((body, m)) = split_line(&line) else {
            v.problem = Some(format!(
                "line {n}: not an audit record (no MAC): edited or damaged"
            ));
            return v;
        };
        let rec: Record = match serde_json::from_str(&body) {
            Ok(r) => r,
            Err(_) => {
                v.problem = Some(format!("line {n}: malformed record: edited or damaged"));
                return v;
            }
        };
        if rec.seq != v.last_seq + 1 {
            v.problem = Some(format!(
                "line {n}: record {} follows record {}: records were removed or reordered",
                rec.seq, v.last_seq
            ));
            return v;
        }
        if mac(key, &v.last_mac, body.as_bytes()) != m {
            v.problem = Some(format!(
                "line {n}: MAC mismatch: record {} was edited, or one before it removed",
                rec.seq
            ));
            return v;
        }
        v.records += 1;
        v.last_seq = rec.seq;
        v.last_mac = m;
        if rec.seq == mark {
            v.marked = Some(m);
        }
    }
    v
}

/// `s` with every control character (CR, LF, ESC...) and every invisible or
/// bidirectional formatting character written out as an escape (`\u{1b}`),
/// so that agent input in a record, or a forged line of the log, can neither
/// start a line of its own nor rewrite the user's terminal.
pub fn escape_hidden(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(is_hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Control characters and invisible or bidirectional formatting characters
/// (zero-width spaces and joiners, direction marks, embeddings, overrides
/// and isolates, the Arabic letter mark, word joiners, the BOM, the soft
/// hyphen).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}' | '\u{061C}')
}

/// Parses one stored line (for `audit tail`), without checking its MAC.
pub fn parse_line(line: &str) -> Option<Record> {
    let (body, _) = split_line(line)?;
    serde_json::from_str(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    fn setup() -> (tempfile::TempDir, PathBuf, SecretBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = SecretBuf::copy_from(&[7u8; 32]).unwrap();
        (dir, path, key)
    }

    fn write_n(path: &Path, key: &SecretBuf, n: usize) -> AuditLog {
        let mut log = AuditLog::open(path, key).unwrap();
        for i in 0..n {
            log.append(Record {
                kind: "admin".into(),
                event: Some(format!("e{i}")),
                ..Default::default()
            })
            .unwrap();
        }
        log
    }

    #[test]
    fn result_records_chain_and_only_decisions_check_the_file() {
        let (_d, path, key) = setup();
        let mut log = write_n(&path, &key, 1);
        let result = || Record {
            kind: "result".into(),
            ..Default::default()
        };
        assert_eq!(log.append_result(result()), Ok(2));
        let v = log.verify();
        assert_eq!((v.records, v.problem), (2, None));
        // Removed between a decision and its result: the result goes to the
        // removed file, and the next decision is refused.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(log.append_result(result()), Ok(3));
        let refused = log.append(result()).unwrap_err();
        assert!(refused.contains("removed or replaced"), "{refused}");
        assert_eq!(log.error.as_deref(), Some(refused.as_str()));
    }

    #[test]
    fn chain_verifies_and_continues_after_reopen() {
        let (_d, path, key) = setup();
        drop(write_n(&path, &key, 3));
        let log = write_n(&path, &key, 2);
        let v = log.verify();
        assert_eq!(v.records, 5);
        assert!(v.problem.is_none(), "{:?}", v.problem);
    }

    #[test]
    fn finds_every_kind_of_tampering() {
        let (_d, path, key) = setup();
        let log = write_n(&path, &key, 4);
        let good = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let cases: Vec<(&str, String)> = vec![
            ("edit", good.replacen("\"e1\"", "\"e9\"", 1)),
            ("remove", [lines[0], lines[2], lines[3]].join("\n") + "\n"),
            (
                "reorder",
                [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n",
            ),
            ("truncate", [lines[0], lines[1]].join("\n") + "\n"),
            (
                "insert",
                [lines[0], lines[0], lines[1], lines[2], lines[3]].join("\n") + "\n",
            ),
            // A byte the writer never writes, where `lines()` would drop it.
            ("carriage return", good.replacen("\n", "\r\n", 1)),
            ("carriage return at the end", good.clone() + "\r"),
        ];
        for (what, text) in cases {
            std::fs::write(&path, text).unwrap();
            assert!(log.verify().problem.is_some(), "{what} not detected");
        }
    }

    #[test]
    fn records_cut_while_locked_are_reported_after_reopen() {
        let (_d, path, key) = setup();
        let slot = HeadSlot::default();
        let mut log = AuditLog::open(&path, &key).unwrap();
        log.chain_from(&slot);
        for _ in 0..4 {
            log.append(Record {
                kind: "admin".into(),
                ..Default::default()
            })
            .unwrap();
        }
        drop(log); // locked: the writer is gone, its head kept
        assert_eq!(slot.lock().unwrap().head.map(|h| h.0), Some(4));
        let good = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        std::fs::write(&path, [lines[0], lines[1]].join("\n") + "\n").unwrap();
        let mut log = AuditLog::open(&path, &key).unwrap();
        log.chain_from(&slot.clone());
        let problem = log.verify().problem.expect("the cut is reported");
        assert!(
            problem.contains("record 4") && problem.contains("record 2"),
            "{problem}"
        );
        // Still reported after more records are written.
        log.append(Record {
            kind: "admin".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(log.verify().problem.is_some());
        // ... and after another lock and unlock, although the log now ends
        // where the last writer left it.
        drop(log);
        let mut log = AuditLog::open(&path, &key).unwrap();
        log.chain_from(&slot);
        assert!(log.verify().problem.is_some_and(|p| p.contains("record 4")));
        // An untouched log reopens cleanly.
        let slot = HeadSlot::default();
        std::fs::write(&path, &good).unwrap();
        let mut log = AuditLog::open(&path, &key).unwrap();
        log.chain_from(&slot);
        drop(log);
        let mut log = AuditLog::open(&path, &key).unwrap();
        log.chain_from(&slot);
        assert!(log.verify().problem.is_none(), "{:?}", log.verify().problem);
    }

    #[test]
    fn a_verification_reads_the_file_without_the_writer_from_its_head() {
        let (_d, path, key) = setup();
        let mut log = write_n(&path, &key, 3);
        let pending = log.verify_later();
        // Written after the head was taken (the writer is free meanwhile):
        // not a mismatch, but checked as the chain goes on.
        log.append(Record {
            kind: "admin".into(),
            ..Default::default()
        })
        .unwrap();
        let v = pending.run();
        assert_eq!((v.records, v.problem), (4, None));
        // A cut below the head taken is still found.
        let pending = log.verify_later();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, lines[..2].join("\n") + "\n").unwrap();
        let problem = pending.run().problem.expect("the cut is reported");
        assert!(problem.contains("record 4"), "{problem}");
    }

    #[test]
    fn mac_is_read_only_as_written() {
        // Fuzzing (fuzz/fuzz_targets/audit_line.rs): "+f" and uppercase hex
        // parsed to the same MAC, so an edited line still verified.
        assert_eq!(unhex32(&"ab".repeat(32)), Some([0xab; 32]));
        for other in [
            "+f".repeat(32),
            "AB".repeat(32),
            "aB".repeat(32),
            " 1".repeat(32),
        ] {
            assert_eq!(unhex32(&other), None, "{other}");
        }
        let (_d, path, key) = setup();
        let log = write_n(&path, &key, 2);
        let good = std::fs::read_to_string(&path).unwrap();
        let first = good.lines().next().unwrap();
        let (head, mac) = first.split_at(first.len() - 66);
        let edited = format!(
            "{head}{}\n{}\n",
            mac.to_ascii_uppercase(),
            good.lines().nth(1).unwrap()
        );
        assert_ne!(edited, good, "the MAC has a hex letter");
        std::fs::write(&path, edited).unwrap();
        assert!(log.verify().problem.is_some(), "an uppercased MAC verified");
    }

    #[test]
    fn line_cut_inside_a_character_is_damage_not_a_panic() {
        // Fuzzing (fuzz/fuzz_targets/audit_line.rs): the MAC tail's offset fell
        // inside the 'é' and `split_at` panicked (in verify, tail and reopen).
        let line = format!("\u{e9}{}\"}}", "0".repeat(71));
        assert_eq!(line.len(), ",\"mac\":\"".len() + 64 + "\"}".len() + 1);
        assert!(parse_line(&line).is_none());
        let (_d, path, key) = setup();
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let v = verify_file(&path, &key);
        assert!(v.problem.is_some_and(|p| p.contains("line 1")));
    }

    #[test]
    fn reopens_a_log_whose_last_64k_start_inside_a_character() {
        // Continuing the chain reads the last 64 KiB; when that window began
        // inside an 'é' (a reason or event with non-ASCII text), opening the
        // log failed with "stream did not contain valid UTF-8".
        let (_d, path, key) = setup();
        let mut log = AuditLog::open(&path, &key).unwrap();
        let mut i = 0;
        loop {
            let len = std::fs::metadata(&path).unwrap().len();
            if len > 70 * 1024 {
                let bytes = std::fs::read(&path).unwrap();
                let at = bytes[(len - 64 * 1024) as usize];
                if (0x80..0xc0).contains(&at) {
                    break;
                }
            }
            let pad = if i % 3 == 0 { "x" } else { "" };
            log.append(Record {
                kind: "admin".into(),
                event: Some(format!("{}{pad}", "\u{e9}".repeat(300))),
                ..Default::default()
            })
            .unwrap();
            i += 1;
        }
        drop(log);
        let mut log = AuditLog::open(&path, &key).expect("the log opens");
        log.append(Record {
            kind: "admin".into(),
            ..Default::default()
        })
        .unwrap();
        let v = log.verify();
        assert!(v.problem.is_none(), "{:?}", v.problem);
        assert_eq!(v.records, i + 1);
    }

    #[test]
    fn removed_file_fails_closed() {
        let (_d, path, key) = setup();
        let mut log = write_n(&path, &key, 1);
        std::fs::remove_file(&path).unwrap();
        let e = log
            .append(Record {
                kind: "admin".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.contains("removed"), "{e}");
        assert!(log.error().is_some());
    }
}
