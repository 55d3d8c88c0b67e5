//! The one type that holds plaintext secrets in the daemon.
//!
//! [`SecretBuf`] keeps its bytes on page-aligned, guard-paged, mlocked pages
//! excluded from core dumps, wipes them on drop, and has no `Debug`,
//! `Display`, `Clone` or `Serialize`: a secret can only be reached through
//! [`SecretBuf::expose`], and grepping for that call finds every use.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::RawSecret;

/// When set, a page that cannot be mlocked is an error instead of a warning
/// (config `require_mlock = true`).
static REQUIRE_MLOCK: AtomicBool = AtomicBool::new(false);

/// Makes mlock failures fatal for every later allocation.
pub fn set_require_mlock(on: bool) {
    REQUIRE_MLOCK.store(on, Ordering::Relaxed);
}

/// Why secret memory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretAllocError {
    /// The allocator returned nothing.
    #[error("out of memory for secret pages")]
    OutOfMemory,
    /// mlock failed and the config requires it.
    #[error(
        "cannot lock secret pages in RAM (mlock failed) and require_mlock = true: raise the memlock limit (LimitMEMLOCK= in the unit, or `ulimit -l`) or set require_mlock = false"
    )]
    Mlock,
}

/// A secret byte string on locked pages, wiped on drop.
pub struct SecretBuf {
    raw: RawSecret,
    len: usize,
}

impl SecretBuf {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Result<SecretBuf, SecretAllocError> {
        let (raw, locked) = RawSecret::alloc(len).ok_or(SecretAllocError::OutOfMemory)?;
        if !locked && REQUIRE_MLOCK.load(Ordering::Relaxed) {
            return Err(SecretAllocError::Mlock);
        }
        Ok(SecretBuf { raw, len })
    }

    /// A copy of `bytes`. The caller remains responsible for wiping its source.
    pub fn copy_from(bytes: &[u8]) -> Result<SecretBuf, SecretAllocError> {
        let mut s = SecretBuf::zeroed(bytes.len())?;
        s.expose_mut().copy_from_slice(bytes);
        Ok(s)
    }

    /// Moves `bytes` onto locked pages and wipes the source vector.
    pub fn take(mut bytes: Vec<u8>) -> Result<SecretBuf, SecretAllocError> {
        let s = SecretBuf::copy_from(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        s
    }

    /// The secret bytes. Every call site is a place a secret is used.
    pub fn expose(&self) -> &[u8] {
        &self.raw.as_slice()[..self.len]
    }

    /// Mutable access, to fill a buffer in place (KDF output, decryption).
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.raw.as_mut_slice()[..self.len]
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shortens the visible length (the tail stays wiped on drop).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            zeroize::Zeroize::zeroize(&mut self.raw.as_mut_slice()[len..self.len]);
            self.len = len;
        }
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &SecretBuf) -> bool {
        use subtle::ConstantTimeEq;
        self.expose().ct_eq(other.expose()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_truncates() {
        let mut s = SecretBuf::copy_from(b"hello world").unwrap();
        assert_eq!(s.expose(), b"hello world");
        s.truncate(5);
        assert_eq!(s.expose(), b"hello");
        assert_eq!(s.len(), 5);
        let t = SecretBuf::copy_from(b"hello").unwrap();
        assert!(s.ct_eq(&t));
    }

    #[test]
    fn take_wipes_source() {
        let v = b"secret-bytes".to_vec();
        let s = SecretBuf::take(v).unwrap();
        assert_eq!(s.expose(), b"secret-bytes");
    }

    #[test]
    fn zero_length_is_fine() {
        let s = SecretBuf::zeroed(0).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.expose(), b"");
    }
}
