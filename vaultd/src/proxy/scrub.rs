//! TEMPORARY placeholder until the scrubber module lands (raw form only).
use zeroize::Zeroizing;
/// Replacement text.
pub const REDACTED: &[u8] = b"[REDACTED]";
/// Patterns.
pub struct Scrubber { patterns: Vec<Zeroizing<Vec<u8>>> }
impl Scrubber {
    /// New.
    pub fn new(values: &[&[u8]]) -> Scrubber { Scrubber { patterns: values.iter().map(|v| Zeroizing::new(v.to_vec())).collect() } }
    /// Count.
    pub fn pattern_count(&self) -> usize { self.patterns.len() }
    /// Scrub.
    pub fn scrub(&self, data: &mut Vec<u8>) -> usize {
        let mut n = 0;
        for p in &self.patterns {
            while let Some(i) = memchr::memmem::find(data, p) { data.splice(i..i + p.len(), REDACTED.iter().copied()); n += 1; }
        }
        n
    }
    /// Tail.
    pub fn scrub_tail(&self, _data: &mut Vec<u8>) -> usize { 0 }
    /// Scrub str.
    pub fn scrub_str(&self, value: &str) -> (String, usize) {
        let mut v = value.as_bytes().to_vec(); let n = self.scrub(&mut v); (String::from_utf8_lossy(&v).into_owned(), n)
    }
}
