//! The sealed vault file: format, sealing, opening and atomic writes.
//!
//! ```text
//! offset size  field (all integers little-endian)
//!      0    8  magic "VLTD\r\n\x1a\n"
//!      8    2  format version (1)
//!     10    1  KDF id (1 = argon2id v0x13)
//!     11    1  reserved (0)
//!     12    4  argon2 memory, KiB
//!     16    4  argon2 passes
//!     20    4  argon2 lanes
//!     24   32  salt
//!     56   24  wrap nonce          \ data key sealed under the passphrase's KEK,
//!     80   48  wrapped data key    / AAD = bytes 0..56
//!    128   24  body nonce
//!    152    n  body ciphertext+tag  sealed under the data key, AAD = bytes 0..152
//!  end-32  32  SHA-256 of everything before it (corruption check, not security)
//! ```
//!
//! Passphrase -> argon2id -> key-encryption key (KEK) -> unwraps a random
//! 256-bit data key -> XChaCha20-Poly1305 over the body. Changing the
//! passphrase re-wraps the data key; the body key never changes, so audit MAC
//! keys derived from it stay valid.
//!
//! The trailing checksum only tells a damaged file from a wrong passphrase:
//! both the wrap and the body are authenticated, so an attacker who fixes up
//! the checksum still gets nothing but a refusal.
//!
//! Body plaintext (built and parsed on locked pages):
//! `u64 generation | u32 len | policy JSON | u32 count | count x (u16 len | name | u32 len | value)`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::policy::StoredPolicy;
use crate::secret::SecretBuf;

const MAGIC: &[u8; 8] = b"VLTD\r\n\x1a\n";
const FORMAT_VERSION: u16 = 1;
const KDF_ARGON2ID: u8 = 1;
const WRAP_AAD_END: usize = 56;
const HEADER_LEN: usize = 152;
const TAG_LEN: usize = 16;
const SUM_LEN: usize = 32;
const KEY_LEN: usize = 32;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default: 256 MiB, 3 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 256 * 1024,
        iterations: 3,
        parallelism: 1,
    };

    /// The argon2id memory a vault may ask for, in MiB.
    pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 8..=4096;

    /// Parameters from `init` flags, checked.
    pub fn new(memory_mib: u32, iterations: u32) -> Result<KdfParams> {
        // In MiB, as the user typed it (times 1024 it would read as KiB, or saturate).
        if !Self::MEMORY_MIB.contains(&memory_mib) {
            return Err(Error::Invalid(format!(
                "bad KDF parameters: --kdf-memory-mib must be {}..={} (MiB), got {memory_mib}",
                Self::MEMORY_MIB.start(),
                Self::MEMORY_MIB.end()
            )));
        }
        let p = KdfParams {
            memory_kib: memory_mib.saturating_mul(1024),
            iterations,
            parallelism: 1,
        };
        p.check()
            .map_err(|why| Error::Invalid(format!("bad KDF parameters: {why}")))?;
        Ok(p)
    }

    /// Bounds that keep a hostile header from making unlock take forever or exhaust memory.
    fn check(&self) -> std::result::Result<(), String> {
        let (lo, hi) = (
            Self::MEMORY_MIB.start() * 1024,
            Self::MEMORY_MIB.end() * 1024,
        );
        if !(lo..=hi).contains(&self.memory_kib) {
            return Err(format!(
                "memory must be {}..={} MiB, got {} KiB",
                Self::MEMORY_MIB.start(),
                Self::MEMORY_MIB.end(),
                self.memory_kib
            ));
        }
        if !(1..=64).contains(&self.iterations) {
            return Err(format!(
                "iterations must be 1..=64, got {}",
                self.iterations
            ));
        }
        if !(1..=16).contains(&self.parallelism) {
            return Err(format!(
                "parallelism must be 1..=16, got {}",
                self.parallelism
            ));
        }
        Ok(())
    }
}

/// An agent's stored identity: only the SHA-256 of its token.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AgentRecord {
    /// Hex SHA-256 of the token; None for an agent declared by policy that has
    /// no token yet (`vaultctl agent add` issues one).
    pub token_sha256: Option<String>,
}

/// The decrypted contents of the vault.
#[derive(Default)]
pub struct VaultData {
    /// Bumped on every write; a daemon refuses to load a lower one than it saw.
    pub generation: u64,
    /// Secret values by name, on locked pages.
    pub secrets: BTreeMap<String, SecretBuf>,
    /// Services and capabilities.
    pub policy: StoredPolicy,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentRecord>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BodyMeta {
    policy: StoredPolicy,
    agents: BTreeMap<String, AgentRecord>,
}

/// The clear header of an existing vault (everything before the body nonce).
#[derive(Clone)]
pub struct Header {
    bytes: [u8; 128],
    /// The KDF parameters it records.
    pub kdf: KdfParams,
}

/// A vault opened with its passphrase.
pub struct Opened {
    /// The header, reused when the body is re-sealed.
    pub header: Header,
    /// The data key.
    pub data_key: SecretBuf,
    /// The contents.
    pub data: VaultData,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| Error::Crypto("the OS random generator failed"))?;
    Ok(b)
}

fn derive_kek(passphrase: &[u8], salt: &[u8], kdf: KdfParams) -> Result<SecretBuf> {
    let params = argon2::Params::new(
        kdf.memory_kib,
        kdf.iterations,
        kdf.parallelism,
        Some(KEY_LEN),
    )
    .map_err(|_| Error::Crypto("argon2 parameters rejected"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = SecretBuf::zeroed(KEY_LEN)?;
    argon
        .hash_password_into(passphrase, salt, kek.expose_mut())
        .map_err(|_| Error::Crypto("argon2 failed"))?;
    Ok(kek)
}

fn nonce_of(b: &[u8]) -> Result<XNonce> {
    XNonce::try_from(b).map_err(|_| Error::Crypto("bad nonce length"))
}

fn cipher(key: &SecretBuf) -> Result<XChaCha20Poly1305> {
    XChaCha20Poly1305::new_from_slice(key.expose()).map_err(|_| Error::Crypto("bad key length"))
}

/// Builds a header (new salt) whose wrap seals `data_key` under `passphrase`.
fn make_header(passphrase: &[u8], kdf: KdfParams, data_key: &SecretBuf) -> Result<Header> {
    kdf.check()
        .map_err(|why| Error::Invalid(format!("bad KDF parameters: {why}")))?;
    let mut bytes = [0u8; 128];
    bytes[0..8].copy_from_slice(MAGIC);
    bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[10] = KDF_ARGON2ID;
    bytes[12..16].copy_from_slice(&kdf.memory_kib.to_le_bytes());
    bytes[16..20].copy_from_slice(&kdf.iterations.to_le_bytes());
    bytes[20..24].copy_from_slice(&kdf.parallelism.to_le_bytes());
    let salt: [u8; 32] = random()?;
    bytes[24..56].copy_from_slice(&salt);
    let nonce: [u8; 24] = random()?;
    bytes[56..80].copy_from_slice(&nonce);
    let kek = derive_kek(passphrase, &salt, kdf)?;
    let mut wrapped = SecretBuf::copy_from(data_key.expose())?;
    let tag = cipher(&kek)?
        .encrypt_inout_detached(
            &nonce_of(&nonce)?,
            &bytes[..WRAP_AAD_END],
            wrapped.expose_mut().into(),
        )
        .map_err(|_| Error::Crypto("key wrap failed"))?;
    bytes[80..112].copy_from_slice(wrapped.expose());
    bytes[112..128].copy_from_slice(&tag);
    Ok(Header { bytes, kdf })
}

/// A new vault: fresh data key, header for `passphrase`, empty contents.
pub fn create(passphrase: &[u8], kdf: KdfParams) -> Result<(Header, SecretBuf)> {
    let mut data_key = SecretBuf::zeroed(KEY_LEN)?;
    getrandom::fill(data_key.expose_mut())
        .map_err(|_| Error::Crypto("the OS random generator failed"))?;
    let header = make_header(passphrase, kdf, &data_key)?;
    Ok((header, data_key))
}

/// The same data key wrapped under a new passphrase (new salt and nonce).
pub fn rewrap(data_key: &SecretBuf, new_passphrase: &[u8], kdf: KdfParams) -> Result<Header> {
    make_header(new_passphrase, kdf, data_key)
}

/// Seals `data` into complete file bytes.
pub fn seal(header: &Header, data_key: &SecretBuf, data: &VaultData) -> Result<Vec<u8>> {
    let meta = serde_json::to_vec(&BodyMeta {
        policy: data.policy.clone(),
        agents: data.agents.clone(),
    })
    .map_err(|e| Error::Invalid(format!("cannot encode policy: {e}")))?;
    let mut len = 8 + 4 + meta.len() + 4;
    for (name, value) in &data.secrets {
        len += 2 + name.len() + 4 + value.len();
    }
    let mut plain = SecretBuf::zeroed(len)?;
    {
        let mut w = Writer {
            buf: plain.expose_mut(),
            pos: 0,
        };
        w.put(&data.generation.to_le_bytes());
        w.put(
            &u32::try_from(meta.len())
                .map_err(|_| Error::Invalid("policy too large".into()))?
                .to_le_bytes(),
        );
        w.put(&meta);
        w.put(&(data.secrets.len() as u32).to_le_bytes());
        for (name, value) in &data.secrets {
            let nlen = u16::try_from(name.len())
                .map_err(|_| Error::Invalid("secret name too long".into()))?;
            let vlen = u32::try_from(value.len())
                .map_err(|_| Error::Invalid("secret too large".into()))?;
            w.put(&nlen.to_le_bytes());
            w.put(name.as_bytes());
            w.put(&vlen.to_le_bytes());
            w.put(value.expose());
        }
    }
    let nonce: [u8; 24] = random()?;
    let mut aad = [0u8; HEADER_LEN];
    aad[..128].copy_from_slice(&header.bytes);
    aad[128..].copy_from_slice(&nonce);
    let tag = cipher(data_key)?
        .encrypt_inout_detached(&nonce_of(&nonce)?, &aad, plain.expose_mut().into())
        .map_err(|_| Error::Crypto("encryption failed"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + len + TAG_LEN + SUM_LEN);
    out.extend_from_slice(&aad);
    out.extend_from_slice(plain.expose());
    out.extend_from_slice(&tag);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
}

/// Parses and checks the clear parts of a file: magic, version, KDF, checksum.
pub fn parse_header(path: &Path, file: &[u8]) -> Result<Header> {
    let bad = |why: &str| Error::BadFormat {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    if file.len() < HEADER_LEN + TAG_LEN + SUM_LEN {
        if file.len() < 8 || &file[..8] != MAGIC {
            return Err(bad("wrong magic bytes"));
        }
        return Err(Error::Tampered {
            path: path.to_path_buf(),
            why: "file is truncated",
        });
    }
    // Checksum first: one flipped byte anywhere (magic included) reads as damage.
    let (content, sum) = file.split_at(file.len() - SUM_LEN);
    if Sha256::digest(content).as_slice() != sum {
        return Err(Error::Tampered {
            path: path.to_path_buf(),
            why: "checksum mismatch",
        });
    }
    if &file[..8] != MAGIC {
        return Err(bad("wrong magic bytes"));
    }
    let version = u16::from_le_bytes([file[8], file[9]]);
    if version != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {version}; this vaultd reads version {FORMAT_VERSION}: use a newer vaultd"
        )));
    }
    if file[10] != KDF_ARGON2ID {
        return Err(bad(&format!("unknown KDF id {}", file[10])));
    }
    let u32_at = |o: usize| u32::from_le_bytes([file[o], file[o + 1], file[o + 2], file[o + 3]]);
    let kdf = KdfParams {
        memory_kib: u32_at(12),
        iterations: u32_at(16),
        parallelism: u32_at(20),
    };
    kdf.check()
        .map_err(|why| bad(&format!("KDF parameters out of range: {why}")))?;
    let mut bytes = [0u8; 128];
    bytes.copy_from_slice(&file[..128]);
    Ok(Header { bytes, kdf })
}

/// Opens file bytes with `passphrase`.
pub fn open(path: &Path, file: &[u8], passphrase: &[u8]) -> Result<Opened> {
    let header = parse_header(path, file)?;
    let kek = derive_kek(passphrase, &header.bytes[24..56], header.kdf)?;
    let mut data_key = SecretBuf::copy_from(&header.bytes[80..112])?;
    let wrap_tag = chacha20poly1305::Tag::try_from(&header.bytes[112..128])
        .map_err(|_| Error::Crypto("tag"))?;
    cipher(&kek)?
        .decrypt_inout_detached(
            &nonce_of(&header.bytes[56..80])?,
            &header.bytes[..WRAP_AAD_END],
            data_key.expose_mut().into(),
            &wrap_tag,
        )
        .map_err(|_| Error::WrongPassphrase)?;
    let data = open_body(path, file, &data_key)?;
    Ok(Opened {
        header,
        data_key,
        data,
    })
}

/// Decrypts and parses the body with an already-unwrapped data key.
pub fn open_body(path: &Path, file: &[u8], data_key: &SecretBuf) -> Result<VaultData> {
    let tampered = |why| Error::Tampered {
        path: path.to_path_buf(),
        why,
    };
    let body_end = file.len() - SUM_LEN - TAG_LEN;
    let aad = &file[..HEADER_LEN];
    let tag = chacha20poly1305::Tag::try_from(&file[body_end..body_end + TAG_LEN])
        .map_err(|_| Error::Crypto("tag"))?;
    let mut plain = SecretBuf::copy_from(&file[HEADER_LEN..body_end])?;
    cipher(data_key)?
        .decrypt_inout_detached(
            &nonce_of(&file[128..HEADER_LEN])?,
            aad,
            plain.expose_mut().into(),
            &tag,
        )
        .map_err(|_| tampered("body failed authentication"))?;
    parse_body(plain.expose()).ok_or_else(|| tampered("body is malformed"))
}

fn parse_body(b: &[u8]) -> Option<VaultData> {
    let mut r = Reader { b, pos: 0 };
    let generation = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let mlen = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    let meta: BodyMeta = serde_json::from_slice(r.take(mlen)?).ok()?;
    let count = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
    let mut secrets = BTreeMap::new();
    for _ in 0..count {
        let nlen = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(r.take(nlen)?).ok()?.to_string();
        let vlen = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
        let value = SecretBuf::copy_from(r.take(vlen)?).ok()?;
        secrets.insert(name, value);
    }
    if r.pos != b.len() {
        return None;
    }
    Some(VaultData {
        generation,
        secrets,
        policy: meta.policy,
        agents: meta.agents,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
}

/// Reads the vault file; a missing file is [`Error::NoVault`].
pub fn read(path: &Path) -> Result<Vec<u8>> {
    // Only a regular file: a FIFO planted in its place would block the read.
    match crate::sys::read_regular(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NoVault {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(Error::io("read vault", path, e)),
    }
}

/// Writes `bytes` to a fresh temporary file beside `path`, fsyncs it, and
/// either renames it over `path` (`replace`) or links it into place only if
/// `path` does not exist (`init`). Then fsyncs the directory. On any failure
/// before the new file is in place, the temporary file is removed and `path`
/// is exactly as before. Once it is in place the write has happened: a
/// failed directory fsync after that is logged, not returned, since the
/// caller must not go on as if the old file were still there (a daemon
/// would keep serving a revoked agent). For `init` it is returned: nothing
/// runs on the old state, and vaultctl has no log.
pub fn write_atomic(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    write_atomic_with(path, bytes, replace, |dir| {
        File::open(dir).and_then(|d| d.sync_all())
    })
}

fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    replace: bool,
    sync_dir: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no parent directory", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:x}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("vault"),
        std::process::id(),
        u64::from_le_bytes(random()?)
    ));
    let mut placed = false;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("create temporary vault file", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write vault", &tmp, e))?;
        f.sync_all()
            .map_err(|e| Error::io("flush vault to disk", &tmp, e))?;
        drop(f);
        if replace {
            fs::rename(&tmp, path).map_err(|e| Error::io("replace vault", path, e))?;
            placed = true;
        } else {
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::VaultExists {
                        path: path.to_path_buf(),
                    }
                } else {
                    Error::io("create vault", path, e)
                }
            })?;
            placed = true;
            let _ = fs::remove_file(&tmp);
        }
        if let Err(e) = sync_dir(dir) {
            // `init` (no daemon state to keep in step, and vaultctl has no
            // log to warn in) says so.
            if !replace {
                return Err(Error::io("flush vault directory", dir, e));
            }
            tracing::warn!(
                "{} was written, but flushing its directory failed ({e}): the change is made, and may be lost if the machine loses power before the filesystem writes it back",
                path.display()
            );
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    if placed && replace {
        remove_stale_temporaries(dir, path);
    }
    match result {
        // Say that the vault is as it was (disk full is the usual cause).
        Err(Error::Io { op, path: p, err }) if !placed => Err(Error::Io {
            op,
            path: p,
            err: std::io::Error::new(
                err.kind(),
                format!(
                    "{err}; the vault file {} was not changed: free some space (or fix the error) and retry",
                    path.display()
                ),
            ),
        }),
        other => other,
    }
}

/// Removes `.NAME.tmp-*` files that a writer killed mid-write left next to
/// `path` (sealed copies, 0600, but clutter). Called after a successful
/// replace: writes to one vault are serialized (the daemon's admin lock), and
/// `vaultctl init` never replaces, so any other temporary is a dead writer's.
/// Best effort: a failure here changes nothing about the write that succeeded.
fn remove_stale_temporaries(dir: &Path, path: &Path) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        if file_name.to_str().is_some_and(|n| n.starts_with(&prefix))
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replace_removes_temporaries_of_dead_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.bin");
        write_atomic(&path, b"one", false).unwrap();
        let stale = dir.path().join(".vault.bin.tmp-1-abc");
        fs::write(&stale, b"sealed leftovers").unwrap();
        let other = dir.path().join(".other.tmp-1-abc");
        fs::write(&other, b"not ours").unwrap();
        write_atomic(&path, b"two", true).unwrap();
        assert!(!stale.exists(), "stale temporary left behind");
        assert!(other.exists(), "a file of another name was removed");
        assert_eq!(fs::read(&path).unwrap(), b"two");
    }

    const SMALL: KdfParams = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    fn sample() -> (Header, SecretBuf, Vec<u8>) {
        let (header, key) = create(b"correct horse", SMALL).unwrap();
        let mut data = VaultData {
            generation: 7,
            ..Default::default()
        };
        data.secrets.insert(
            "gh".into(),
            SecretBuf::copy_from(b"CANARY-value-123").unwrap(),
        );
        data.agents.insert(
            "a".into(),
            AgentRecord {
                token_sha256: Some("00".into()),
            },
        );
        let file = seal(&header, &key, &data).unwrap();
        (header, key, file)
    }

    #[test]
    fn round_trip() {
        let (_, _, file) = sample();
        assert!(memchr::memmem::find(&file, b"CANARY").is_none());
        let o = open(Path::new("v"), &file, b"correct horse").unwrap();
        assert_eq!(o.data.generation, 7);
        assert_eq!(o.data.secrets["gh"].expose(), b"CANARY-value-123");
        assert!(o.data.agents.contains_key("a"));
    }

    #[test]
    fn wrong_passphrase() {
        let (_, _, file) = sample();
        assert!(matches!(
            open(Path::new("v"), &file, b"nope"),
            Err(Error::WrongPassphrase)
        ));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (_, _, file) = sample();
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x01;
            match open(Path::new("v"), &f, b"correct horse") {
                Err(Error::Tampered { .. }) => {}
                Err(e) => panic!("byte {i}: unexpected error {e}"),
                Ok(_) => panic!("byte {i}: flipped file opened"),
            }
        }
    }

    #[test]
    fn rewrap_keeps_data_key() {
        let (_, key, _) = sample();
        let h2 = rewrap(&key, b"new pass", SMALL).unwrap();
        let data = VaultData::default();
        let file = seal(&h2, &key, &data).unwrap();
        let o = open(Path::new("v"), &file, b"new pass").unwrap();
        assert!(o.data_key.ct_eq(&key));
        assert!(matches!(
            open(Path::new("v"), &file, b"correct horse"),
            Err(Error::WrongPassphrase)
        ));
    }

    #[test]
    fn atomic_write_no_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.bin");
        write_atomic(&p, b"one", false).unwrap();
        assert!(matches!(
            write_atomic(&p, b"two", false),
            Err(Error::VaultExists { .. })
        ));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"three", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_failed_directory_flush_after_the_rename_is_not_a_failed_write() {
        // The new file is in place: reporting failure would leave a daemon
        // serving the old state (a removed agent still served) while the
        // file holds the new one, and a retry would fail ("no such agent").
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault.bin");
        write_atomic(&p, b"one", false).unwrap();
        let eio = |_: &Path| Err(std::io::Error::from_raw_os_error(libc::EIO));
        write_atomic_with(&p, b"two", true, eio).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // Before the rename, a failure still leaves the old file alone.
        let missing = dir.path().join("gone").join("vault.bin");
        assert!(write_atomic_with(&missing, b"x", true, eio).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"two");
    }
}
