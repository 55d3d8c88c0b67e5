//! Response scrubber: removes every encoded form of a service's credentials
//! from an upstream response before the agent sees it (DESIGN.md, "Rules of
//! the proxy path", rule 6).
//!
//! The agent is the attacker. It cannot read a credential, but it can ask an
//! upstream that echoes its request (httpbin-like services, error pages that
//! quote the request, APIs that return the key they were called with) to
//! reflect the credential the vault injected. The scrubber replaces every
//! occurrence with [`REDACTED`].
//!
//! # What is covered
//!
//! For every credential value `v` (raw bytes), a [`Scrubber`] matches:
//!
//! - `v` itself, and `v` with each space written as `+`;
//! - standard base64 and base64url of `v` at all three byte alignments, also
//!   inside a longer base64 string (HTTP Basic auth carries
//!   `base64("user:" + v)`, i.e. `v` at alignment `len("user:") mod 3`): only
//!   the characters that depend on `v`'s bits alone are matched, so at most
//!   4 bits of `v` can survive at each end of the redaction;
//! - URL percent-encoding (every byte outside RFC 3986 unreserved encoded),
//!   upper- and lowercase hex, and with space as `+`;
//! - hex of the whole value, lowercase and uppercase.
//!
//! Response header *names* are matched ignoring ASCII case
//! ([`Scrubber::scrub_name`]): the HTTP client has lowercased them, so a
//! credential sent as a name arrives in a case the patterns do not have.
//!
//! Beyond these fixed patterns, every pattern is also searched in decoded
//! *views* of the input, and a match there redacts the source bytes it was
//! decoded from (whole escapes):
//!
//! - the percent-decoded view (`%XX`, any case): catches partial and
//!   non-RFC-3986 encoders (Python `quote` leaving `/`, form encoders writing
//!   `~` as `%7E`, `encodeURIComponent` leaving `!'()*`, mixed-case hex) and
//!   base64 whose `+/=` were percent-encoded;
//! - the JSON-unescaped view (`\"`, `\\`, `\/`, `\b\f\n\r\t`, `\uXXXX` with
//!   surrogate pairs): catches Go's `encoding/json` (`&<>` as `\u0026`...),
//!   PHP's `\/`, Python's `ensure_ascii`, and any JSON encoder escaping a
//!   credential character;
//! - each of these two views decoded by the other (a URL inside a JSON
//!   string, a JSON text inside a URL);
//! - the input, and its JSON-unescaped view, with line breaks (`\r\n`,
//!   `\n`, `\r`) removed: base64 or hex wrapped into lines (MIME, PEM,
//!   Python's `base64.encodebytes`, `xxd -p`), whichever column the break
//!   falls on.
//!
//! The views decode escapes anywhere in the input, not only inside JSON
//! strings or URLs: a false positive needs a credential form, so it costs
//! nothing, and the input's syntax cannot be trusted anyway.
//!
//! Overlapping and adjacent occurrences are all covered: the union of every
//! matched span is redacted, so no tail of a credential stays visible.
//!
//! A body that was cut short (at `max_response_bytes`) must go through
//! [`Scrubber::scrub_truncated`] (or `scrub` then [`Scrubber::scrub_tail`]),
//! which also redacts its end: otherwise an agent that pads its request so
//! that the cut falls inside an echoed credential would read its first
//! bytes. How much is redacted depends on the credentials' lengths only:
//! redacting just a tail that matched the beginning of a form told the
//! agent whether a guessed next character was right, and so gave it the
//! credential one character per few dozen calls.
//!
//! # What is NOT covered
//!
//! - Arbitrary transformations by the upstream: reversal, case changes
//!   (`v` upper-cased, plain hex in mixed case), other encodings (base32,
//!   quoted-printable, HTML/XML entities, UTF-16, `\xNN` escapes, double
//!   percent-encoding), compression or encryption applied by the upstream
//!   inside the body (e.g. base64 of gzip), base64 or hex with separators
//!   other than line breaks inside the credential's span (spaces, `4f:9a`), and
//!   combinations of encodings other than those listed above (e.g. base64 of
//!   the URL-encoded value).
//! - Partial echoes: a fragment of a credential that is not a whole pattern
//!   (e.g. an upstream that returns only a substring, or serves an HTTP
//!   `Range` of an echo: the proxy must not forward `Range`/`If-Range`), and
//!   any pattern shorter than [`MIN_PATTERN_LEN`] bytes, which is skipped
//!   because it would match innocent data. The daemon separately refuses to
//!   use credentials shorter than 8 bytes, so every credential keeps at least
//!   its raw, hex and base64 forms.
//! - Bodies scrubbed in pieces: the scrubber must see the whole (decompressed)
//!   body at once; a credential split across two separately scrubbed chunks
//!   is not found. Each header value is scrubbed on its own.
//!
//! # Cost
//!
//! Each scrub searches every pattern in the input and in each view that
//! exists (views are built only when the input holds `%`, `\` or a line break):
//! O(n x patterns) per haystack, at most seven haystacks. Extra memory is at
//! most the input's size per view plus 16 bytes per 256 view bytes of
//! checkpoints (offsets are mapped back by re-decoding from the nearest
//! checkpoint, never with a per-escape table), and the output buffer.
//! Measured (release, 26 patterns): 1 MiB body with 1000 occurrences about
//! 1.3 ms; 1 MiB body dense with JSON and percent escapes 14 to 20 ms; a
//! header value about 0.4 us. Inputs up to 1 KiB are searched without
//! building `memchr` finders, whose set-up would dominate.
//!
//! # Memory hygiene
//!
//! Patterns are packed into one [`SecretBuf`] (locked, non-dumpable pages,
//! wiped on drop), built from [`Zeroizing`] intermediates; decoded views are
//! held in [`Zeroizing`] buffers; a scrubbed buffer's old contents are wiped
//! before it is released, and the
//! stack below the scrub is zeroed after each call (the SIMD searches spill
//! haystack chunks there in unoptimized builds). This is best effort: copies made before the scrubber sees the data (TLS and HTTP
//! buffers, decompression) are outside its reach, and the `memchr` searchers
//! built per call keep a few needle-derived values (a hash, two bytes) on the
//! stack.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use memchr::memmem::Finder;
use zeroize::{Zeroize, Zeroizing};

use crate::secret::{SecretAllocError, SecretBuf};

/// Replacement text for every credential occurrence.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Patterns shorter than this many bytes are dropped: they are too short to
/// match safely (they would redact innocent data). The daemon separately
/// refuses to use credentials shorter than 8 bytes.
pub const MIN_PATTERN_LEN: usize = 6;

/// The byte patterns derived from one service's credentials.
///
/// Every pattern is secret-derived and lives on the locked pages of one
/// [`SecretBuf`], wiped on drop. `Debug` shows only the number of patterns.
pub struct Scrubber {
    /// Distinct patterns, longest first, each at least `MIN_PATTERN_LEN` bytes.
    patterns: Patterns,
    /// Bytes redacted at the end of a cut body, in it and in each decoded
    /// view: one less than the longest form any value can take (percent-
    /// encoding, 3 bytes per byte), so that every beginning of a form fits.
    /// It depends on the values' lengths only, never on their bytes (see
    /// [`Scrubber::scrub_truncated`]).
    tail_len: usize,
}

/// Patterns packed end to end into one secret buffer: one locked allocation
/// per service, whatever the number of forms.
struct Patterns {
    arena: SecretBuf,
    /// (offset, length) of each pattern in `arena`: not secret.
    spans: Vec<(usize, usize)>,
}

impl Patterns {
    /// Copies `list` (in order) into a secret buffer; `list` is wiped as it drops.
    fn pack(list: Vec<Zeroizing<Vec<u8>>>) -> Result<Patterns, SecretAllocError> {
        let total: usize = list.iter().map(|p| p.len()).sum();
        let mut arena = SecretBuf::zeroed(total.max(1))?;
        let mut spans = Vec::with_capacity(list.len());
        let mut at = 0;
        for p in &list {
            arena.expose_mut()[at..at + p.len()].copy_from_slice(p);
            spans.push((at, p.len()));
            at += p.len();
        }
        Ok(Patterns { arena, spans })
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Pattern `i`.
    fn get(&self, i: usize) -> &[u8] {
        let (at, len) = self.spans[i];
        &self.arena.expose()[at..at + len]
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Scrubber {
    /// Builds patterns for these credential values (raw bytes).
    ///
    /// Forms, for each value: raw, and raw with spaces as `+`; standard
    /// base64 and base64url, each at all three byte alignments (only the
    /// characters determined by the value's bits alone, no padding);
    /// percent-encoding of every byte outside RFC 3986 unreserved, with
    /// uppercase and lowercase hex, and with space as `+`; hex, lowercase and
    /// uppercase. Duplicates and patterns shorter than [`MIN_PATTERN_LEN`]
    /// bytes are dropped (the daemon refuses credentials shorter than 8 bytes,
    /// so a real credential always keeps its long forms). Patterns are sorted
    /// longest first.
    ///
    /// Fails only where secrets cannot be held at all: out of memory, or
    /// `require_mlock` with pages that cannot be locked.
    pub fn new(values: &[&[u8]]) -> Result<Scrubber, SecretAllocError> {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for value in values {
            patterns.push(copy_of(value));
            if value.contains(&b' ') {
                patterns.push(map_bytes(value, |b| if b == b' ' { b'+' } else { b }));
            }
            for prefix in 0..3 {
                patterns.extend(base64_core(&STANDARD_NO_PAD, value, prefix));
                patterns.extend(base64_core(&URL_SAFE_NO_PAD, value, prefix));
            }
            patterns.push(percent_encode(value, UPPER_HEX, false));
            patterns.push(percent_encode(value, LOWER_HEX, false));
            patterns.push(percent_encode(value, UPPER_HEX, true));
            patterns.push(hex_encode(value, LOWER_HEX));
            patterns.push(hex_encode(value, UPPER_HEX));
        }
        // Dropped entries are `Zeroizing`, so they are wiped as they go.
        patterns.retain(|p| p.len() >= MIN_PATTERN_LEN);
        patterns.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let longest_value = values.iter().map(|v| v.len()).max().unwrap_or(0);
        Ok(Scrubber {
            patterns: Patterns::pack(patterns)?,
            tail_len: longest_value.saturating_mul(3).saturating_sub(1),
        })
    }

    /// Length of the longest pattern (0 without any).
    pub fn longest_pattern(&self) -> usize {
        (0..self.patterns.len())
            .map(|i| self.patterns.get(i).len())
            .max()
            .unwrap_or(0)
    }

    /// Number of patterns (for tests and status).
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// Replaces every occurrence of every pattern in `data` with [`REDACTED`],
    /// in place (the `Vec` may grow or shrink), and returns the number of
    /// replacements.
    ///
    /// Occurrences are found in `data` and in its percent-decoded and
    /// JSON-unescaped views (see the module documentation). Overlapping
    /// occurrences are merged and their union replaced by one `REDACTED`, so
    /// at each position the longest match wins and no tail of a credential
    /// stays visible; occurrences that merely touch are replaced separately.
    /// When anything is replaced, the old buffer is zeroized before it is
    /// freed; when nothing is, `data` is left byte-identical.
    pub fn scrub(&self, data: &mut Vec<u8>) -> usize {
        self.scrub_impl(data, false, false)
    }

    /// Like [`Scrubber::scrub`], for a body that was cut short (for instance
    /// at `max_response_bytes`): in addition, its end is replaced by
    /// [`REDACTED`], since the attacker may have placed the cut inside an
    /// echoed credential. The part replaced is the same whatever the
    /// credential's bytes: the last `3 x (longest value) - 1` bytes of
    /// `data` and of each decoded view (with any incomplete escape after
    /// them), so it holds every beginning of every form. Redacting only a
    /// tail that *is* the beginning of a form would answer, call by call,
    /// whether the agent's guess of the credential's next character was
    /// right. The cost is the last bytes of a body that is already
    /// incomplete.
    pub fn scrub_truncated(&self, data: &mut Vec<u8>) -> usize {
        self.scrub_impl(data, true, false)
    }

    /// The tail step of [`Scrubber::scrub_truncated`], for a cut body that
    /// was already passed through [`Scrubber::scrub`]: redacts the end as
    /// `scrub_truncated` does, and returns the number of replacements. It
    /// also redacts whole occurrences, so it is safe on an unscrubbed body
    /// too.
    pub fn scrub_tail(&self, data: &mut Vec<u8>) -> usize {
        self.scrub_impl(data, true, false)
    }

    /// Same as [`Scrubber::scrub`] for a header value; returns the new value
    /// and the number of replacements. If removing a match leaves bytes that
    /// are not valid UTF-8 (a credential that starts or ends inside a
    /// multi-byte character), the value is returned lossily.
    pub fn scrub_str(&self, value: &str) -> (String, usize) {
        self.scrub_text(value, false)
    }

    /// [`Scrubber::scrub_str`] for a response header's *name*, ignoring ASCII
    /// case: the HTTP client lowercases names (HTTP/2 requires it), so an
    /// upstream that sends a credential as a header name would otherwise hand
    /// the agent its lowercased copy, from which any letter-case of the
    /// original is easy to try. Names are short, so the naive search is used.
    pub fn scrub_name(&self, name: &str) -> (String, usize) {
        self.scrub_text(name, true)
    }

    fn scrub_text(&self, text: &str, ignore_case: bool) -> (String, usize) {
        let mut bytes = text.as_bytes().to_vec();
        let count = self.scrub_impl(&mut bytes, false, ignore_case);
        match String::from_utf8(bytes) {
            Ok(s) => (s, count),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), count),
        }
    }

    fn scrub_impl(&self, data: &mut Vec<u8>, truncated: bool, ignore_case: bool) -> usize {
        let count = self.scrub_unwiped(data, truncated, ignore_case);
        wipe_stack();
        count
    }

    fn scrub_unwiped(&self, data: &mut Vec<u8>, truncated: bool, ignore_case: bool) -> usize {
        if self.patterns.is_empty() {
            return 0;
        }
        if ignore_case {
            return self.scrub_with(data, truncated, &Search::IgnoreCase(&self.patterns));
        }
        if data.len() <= SMALL_INPUT {
            return self.scrub_with(data, truncated, &Search::Naive(&self.patterns));
        }
        // Borrowed finders, built per call: they point into the zeroized
        // pattern buffers instead of owning unzeroized copies of the needles.
        let finders: Vec<Finder<'_>> = self.patterns.iter().map(Finder::new).collect();
        self.scrub_with(data, truncated, &Search::Finders(&finders))
    }

    /// The scrub itself, with the search strategy supplied (the tests also
    /// run it with prebuilt owned finders to compare the strategies).
    fn scrub_with(&self, data: &mut Vec<u8>, truncated: bool, search: &Search<'_>) -> usize {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        search.find_spans(data, &mut spans);

        // Decoded views of `data`, and of each other (a URL inside a JSON
        // string, a JSON text inside a URL), each with the view it was
        // decoded from, if not `data` itself.
        let json = View::build(data, Trigger::One(b'\\'), json_step);
        let pct = View::build(data, Trigger::One(b'%'), pct_step);
        let pct_json = json
            .as_ref()
            .and_then(|j| View::build_over(j, Trigger::One(b'%'), pct_step));
        let json_pct = pct
            .as_ref()
            .and_then(|p| View::build_over(p, Trigger::One(b'\\'), json_step));
        // Line breaks removed: base64 or hex wrapped into lines (MIME, PEM,
        // `base64.encodebytes`), raw or inside a JSON string.
        let unwrapped = View::build(data, LINE_BREAKS, line_break_step);
        let unwrapped_json = json
            .as_ref()
            .and_then(|j| View::build_over(j, LINE_BREAKS, line_break_step));
        let views = [
            (&json, &None),
            (&pct, &None),
            (&pct_json, &json),
            (&json_pct, &pct),
            (&unwrapped, &None),
            (&unwrapped_json, &json),
        ];
        let views = views
            .iter()
            .filter_map(|&(v, base)| Some((v.as_ref()?, base.as_ref())));

        let mut view_spans = Vec::new();
        // A cut body loses its end whatever it holds (see `scrub_truncated`).
        let mut tail_start = truncated.then(|| data.len().saturating_sub(self.tail_len));
        for (view, base) in views {
            let to_data = |span| {
                let span = view.to_source(span);
                base.map_or(span, |b| b.to_source(span))
            };
            view_spans.clear();
            search.find_spans(&view.bytes, &mut view_spans);
            spans.extend(view_spans.iter().map(|&span| to_data(span)));
            if truncated {
                let i = view.usable_end.saturating_sub(self.tail_len);
                if i < view.bytes.len() {
                    tail_start = min_opt(tail_start, to_data((i, i + 1)).0);
                }
            }
        }
        if let Some(start) = tail_start {
            spans.push((start, data.len()));
        }

        if spans.is_empty() {
            return 0;
        }
        let merged = merge_spans(spans);
        let removed: usize = merged.iter().map(|&(s, e)| e.saturating_sub(s)).sum();
        let capacity = data
            .len()
            .saturating_sub(removed)
            .saturating_add(merged.len().saturating_mul(REDACTED.len()));
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        let mut pos = 0;
        for &(start, end) in &merged {
            out.extend_from_slice(data.get(pos..start).unwrap_or_default());
            out.extend_from_slice(REDACTED);
            pos = end;
        }
        out.extend_from_slice(data.get(pos..).unwrap_or_default());
        // Wipe the credential-bearing buffer, then hand over the new one
        // (the old allocation, now zeroed, is freed by the assignment).
        data.zeroize();
        *data = std::mem::take(&mut *out);
        merged.len()
    }
}

/// Stack bytes [`wipe_stack`] overwrites: unoptimized builds have large
/// frames and spill every SIMD vector; optimized ones keep them in registers.
const STACK_WIPE: usize = if cfg!(debug_assertions) {
    64 * 1024
} else {
    8 * 1024
};

/// Overwrites the stack just below the caller's frame with zeros, where the
/// searches just ran. memchr's SIMD loops keep 32-byte chunks of the haystack
/// in stack slots (unoptimized builds spill each vector): left there, a
/// credential echoed in a response survived the call, and `vaultctl lock`,
/// on a worker thread's stack (found by `tests/tests/memory_scan.rs`).
#[inline(never)]
fn wipe_stack() {
    let mut area = [0u8; STACK_WIPE];
    std::hint::black_box(&mut area);
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

fn copy_of(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(value.len()));
    v.extend_from_slice(value);
    v
}

fn map_bytes(value: &[u8], f: impl Fn(u8) -> u8) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(value.len()));
    v.extend(value.iter().map(|&b| f(b)));
    v
}

/// The characters of the encoding of `prefix` zero bytes + `value` that
/// depend on `value`'s bits alone: indices `ceil(8k/6)` to
/// `floor(8(k+n)/6) - 1` for `k = prefix`, `n = value.len()`.
fn base64_core(
    engine: &base64::engine::GeneralPurpose,
    value: &[u8],
    prefix: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    let total = prefix.checked_add(value.len())?;
    let mut input = Zeroizing::new(Vec::with_capacity(total));
    input.resize(prefix, 0);
    input.extend_from_slice(value);
    let mut encoded = Zeroizing::new(vec![0u8; base64::encoded_len(total, false)?]);
    let written = engine
        .encode_slice(input.as_slice(), encoded.as_mut_slice())
        .ok()?;
    let start = prefix.saturating_mul(8).div_ceil(6);
    let end = (total.saturating_mul(8) / 6).min(written);
    let core = encoded.get(start..end)?;
    Some(copy_of(core))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn percent_encode(value: &[u8], digits: &[u8; 16], space_as_plus: bool) -> Zeroizing<Vec<u8>> {
    let len = value
        .iter()
        .map(|&b| {
            if is_unreserved(b) || (space_as_plus && b == b' ') {
                1
            } else {
                3
            }
        })
        .sum();
    let mut v = Zeroizing::new(Vec::with_capacity(len));
    for &b in value {
        if is_unreserved(b) {
            v.push(b);
        } else if space_as_plus && b == b' ' {
            v.push(b'+');
        } else {
            v.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 0x0f)],
            ]);
        }
    }
    v
}

fn hex_encode(value: &[u8], digits: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(value.len().saturating_mul(2)));
    for &b in value {
        v.extend_from_slice(&[digits[usize::from(b >> 4)], digits[usize::from(b & 0x0f)]]);
    }
    v
}

/// Every occurrence of every needle in `hay`, overlapping ones included (runs
/// of overlapping occurrences of one needle are pushed as one span).
/// Inputs up to this length (header values, small bodies) are searched
/// without building `memchr` finders, whose set-up (about 0.2 us a pattern)
/// dominates there.
const SMALL_INPUT: usize = 1024;

/// How the patterns are searched.
enum Search<'a> {
    /// `memmem` finders, one per pattern.
    Finders(&'a [Finder<'a>]),
    /// `memchr` on each pattern's first byte, then a comparison.
    Naive(&'a Patterns),
    /// A comparison at every offset, ASCII case ignored (header names).
    IgnoreCase(&'a Patterns),
}

impl Search<'_> {
    /// Every occurrence of every pattern in `hay`, overlapping ones included
    /// (runs of overlapping occurrences of one pattern are pushed as one span).
    fn find_spans(&self, hay: &[u8], out: &mut Vec<(usize, usize)>) {
        match self {
            Search::Finders(finders) => {
                for f in finders.iter() {
                    push_runs(f.needle().len(), out, |from| {
                        Some(from + f.find(hay.get(from..)?)?)
                    });
                }
            }
            Search::Naive(patterns) => {
                for p in patterns.iter() {
                    push_runs(p.len(), out, |from| naive_find(hay, from, p));
                }
            }
            Search::IgnoreCase(patterns) => {
                for p in patterns.iter() {
                    push_runs(p.len(), out, |from| {
                        (from..=hay.len().checked_sub(p.len())?).find(|&i| {
                            hay.get(i..i + p.len())
                                .is_some_and(|w| w.eq_ignore_ascii_case(p))
                        })
                    });
                }
            }
        }
    }
}

/// Pushes the spans of a pattern of length `n` whose occurrences at or after
/// an offset `next` returns, merging overlapping ones.
fn push_runs(
    n: usize,
    out: &mut Vec<(usize, usize)>,
    mut next: impl FnMut(usize) -> Option<usize>,
) {
    if n == 0 {
        return;
    }
    let mut current: Option<(usize, usize)> = None;
    let mut from = 0;
    while let Some(start) = next(from) {
        let end = start + n;
        current = match current {
            Some((s, e)) if start < e => Some((s, end)),
            Some(span) => {
                out.push(span);
                Some((start, end))
            }
            None => Some((start, end)),
        };
        from = start + 1;
    }
    out.extend(current);
}

/// First occurrence of `needle` in `hay` at or after `from`.
fn naive_find(hay: &[u8], mut from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    loop {
        let rest = hay.get(from..)?;
        let i = memchr::memchr(first, rest)?;
        if rest.get(i..)?.starts_with(needle) {
            return Some(from + i);
        }
        from += i + 1;
    }
}

/// Sorts spans and merges the ones that overlap (touching spans stay apart).
fn merge_spans(mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn min_opt(a: Option<usize>, b: usize) -> Option<usize> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// A view records a checkpoint at least every this many view bytes.
const MARK_INTERVAL: usize = 256;

/// A decoded copy of a body (it may hold decoded credential bytes, hence
/// `Zeroizing`). Offsets are mapped back to the source by re-decoding from
/// the nearest checkpoint, so the map costs a few bytes per
/// `MARK_INTERVAL` bytes instead of an entry per escape (a hostile body can
/// be made of nothing but escapes).
struct View<'s> {
    src: &'s [u8],
    trigger: Trigger,
    step: fn(&[u8]) -> Step,
    bytes: Zeroizing<Vec<u8>>,
    /// `(view offset, source offset)` pairs at token boundaries, increasing.
    marks: Vec<(usize, usize)>,
    /// End of the part of `bytes` that is not an incomplete escape cut by the
    /// end of the source (equal to `bytes.len()` when there is none).
    usable_end: usize,
}

enum Step {
    Decoded {
        out: [u8; 4],
        out_len: usize,
        consumed: usize,
    },
    Literal,
    Incomplete,
}

/// The byte(s) a view's tokens start with.
#[derive(Clone, Copy)]
enum Trigger {
    One(u8),
    Two(u8, u8),
}

impl Trigger {
    fn find(self, hay: &[u8]) -> Option<usize> {
        match self {
            Trigger::One(a) => memchr::memchr(a, hay),
            Trigger::Two(a, b) => memchr::memchr2(a, b, hay),
        }
    }
}

impl<'s> View<'s> {
    /// Decodes every escape starting with `trigger`; `None` if there is none.
    fn build(src: &'s [u8], trigger: Trigger, step: fn(&[u8]) -> Step) -> Option<View<'s>> {
        trigger.find(src)?;
        // A decoded escape is never longer than its source: no reallocation,
        // so no stray unzeroized copy of decoded bytes.
        let mut bytes = Zeroizing::new(Vec::with_capacity(src.len()));
        let mut marks = Vec::new();
        let mut next_mark = 0;
        // Appends source bytes `src[from..to]` unchanged, with checkpoints.
        let literal = |bytes: &mut Vec<u8>,
                       marks: &mut Vec<(usize, usize)>,
                       next_mark: &mut usize,
                       from: usize,
                       to: usize| {
            let v = bytes.len();
            let len = to.saturating_sub(from);
            while *next_mark < v + len {
                let mv = (*next_mark).max(v);
                marks.push((mv, from + (mv - v)));
                *next_mark = mv + MARK_INTERVAL;
            }
            bytes.extend_from_slice(src.get(from..to).unwrap_or_default());
        };
        let mut usable_end = None;
        let mut pos = 0;
        while let Some(rest) = src.get(pos..) {
            let Some(off) = trigger.find(rest) else {
                break;
            };
            let t = pos + off;
            literal(&mut bytes, &mut marks, &mut next_mark, pos, t);
            match step(src.get(t..).unwrap_or_default()) {
                Step::Decoded {
                    mut out,
                    out_len,
                    consumed,
                } => {
                    if bytes.len() >= next_mark {
                        marks.push((bytes.len(), t));
                        next_mark = bytes.len() + MARK_INTERVAL;
                    }
                    bytes.extend_from_slice(out.get(..out_len).unwrap_or_default());
                    out.zeroize();
                    pos = t + consumed;
                }
                Step::Literal => {
                    literal(&mut bytes, &mut marks, &mut next_mark, t, t + 1);
                    pos = t + 1;
                }
                Step::Incomplete => {
                    usable_end = Some(bytes.len());
                    pos = t;
                    break;
                }
            }
        }
        literal(&mut bytes, &mut marks, &mut next_mark, pos, src.len());
        let usable_end = usable_end.unwrap_or(bytes.len());
        Some(View {
            src,
            trigger,
            step,
            bytes,
            marks,
            usable_end,
        })
    }

    /// A view of view `base`. An incomplete escape at the end of `base`
    /// holds no `trigger`, so it sits unchanged at the end of the new view.
    fn build_over(
        base: &'s View<'_>,
        trigger: Trigger,
        step: fn(&[u8]) -> Step,
    ) -> Option<View<'s>> {
        let mut view = View::build(&base.bytes, trigger, step)?;
        let tail = base.bytes.len().saturating_sub(base.usable_end);
        view.usable_end = view.usable_end.min(view.bytes.len().saturating_sub(tail));
        Some(view)
    }

    /// The source span of the token (escape or single byte) that produced
    /// view byte `i`.
    fn locate(&self, i: usize) -> (usize, usize) {
        let k = self.marks.partition_point(|&(v, _)| v <= i);
        let mark = k
            .checked_sub(1)
            .and_then(|k| self.marks.get(k))
            .copied()
            .unwrap_or((0, 0));
        self.locate_from(mark, i)
    }

    /// `locate`, re-decoding from checkpoint `(v, s)`, which must be at a
    /// token boundary at or before `i`.
    fn locate_from(&self, (mut v, mut s): (usize, usize), i: usize) -> (usize, usize) {
        loop {
            let rest = self.src.get(s..).unwrap_or_default();
            if rest.is_empty() || i < v {
                // Not reached for `i` inside the view; keep the mapping total.
                return (s.min(self.src.len()), s.min(self.src.len()));
            }
            // Literal bytes up to the next trigger, looking no further than `i`.
            let window = rest.get(..=i - v).unwrap_or(rest);
            let run = self.trigger.find(window).unwrap_or(window.len());
            if i < v + run {
                return (s + (i - v), s + (i - v) + 1);
            }
            v += run;
            s += run;
            let Some(at) = self.src.get(s..) else {
                continue;
            };
            match (self.step)(at) {
                Step::Decoded {
                    mut out,
                    out_len,
                    consumed,
                } => {
                    out.zeroize();
                    if i < v + out_len {
                        return (s, s + consumed);
                    }
                    v += out_len;
                    s += consumed;
                }
                // A literal trigger, or an incomplete escape whose bytes are
                // all literal up to the end.
                Step::Literal | Step::Incomplete => {
                    if i == v {
                        return (s, s + 1);
                    }
                    v += 1;
                    s += 1;
                }
            }
        }
    }

    /// The source span a non-empty view span was decoded from (whole escapes).
    fn to_source(&self, (start, end): (usize, usize)) -> (usize, usize) {
        let last = end.saturating_sub(1).max(start);
        (self.locate(start).0, self.locate(last).1)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The bytes [`line_break_step`] removes.
const LINE_BREAKS: Trigger = Trigger::Two(b'\r', b'\n');

/// A line break (`\r\n`, `\n` or `\r`) at the start of `r`: removed.
fn line_break_step(r: &[u8]) -> Step {
    let consumed = if r.starts_with(b"\r\n") { 2 } else { 1 };
    Step::Decoded {
        out: [0; 4],
        out_len: 0,
        consumed,
    }
}

/// `%XX` (either case) at the start of `r`.
fn pct_step(r: &[u8]) -> Step {
    match (
        r.get(1).copied().map(hex_val),
        r.get(2).copied().map(hex_val),
    ) {
        (Some(Some(hi)), Some(Some(lo))) => Step::Decoded {
            out: [hi << 4 | lo, 0, 0, 0],
            out_len: 1,
            consumed: 3,
        },
        (None, _) | (Some(Some(_)), None) => Step::Incomplete,
        _ => Step::Literal,
    }
}

/// Four hex digits at the start of `r`: `Ok(value)`, `Err(true)` if `r` is a
/// proper prefix of four hex digits, `Err(false)` otherwise.
fn hex4(r: &[u8]) -> Result<u32, bool> {
    let mut v = 0u32;
    for i in 0..4 {
        match r.get(i) {
            None => return Err(true),
            Some(&b) => v = v << 4 | u32::from(hex_val(b).ok_or(false)?),
        }
    }
    Ok(v)
}

/// A JSON string escape at the start of `r` (which starts with `\`).
fn json_step(r: &[u8]) -> Step {
    let simple = |b: u8| Step::Decoded {
        out: [b, 0, 0, 0],
        out_len: 1,
        consumed: 2,
    };
    match r.get(1) {
        None => Step::Incomplete,
        Some(b'"') => simple(b'"'),
        Some(b'\\') => simple(b'\\'),
        Some(b'/') => simple(b'/'),
        Some(b'b') => simple(0x08),
        Some(b'f') => simple(0x0c),
        Some(b'n') => simple(b'\n'),
        Some(b'r') => simple(b'\r'),
        Some(b't') => simple(b'\t'),
        Some(b'u') => {
            let unit = match hex4(r.get(2..).unwrap_or_default()) {
                Ok(u) => u,
                Err(true) => return Step::Incomplete,
                Err(false) => return Step::Literal,
            };
            let (code, consumed) = match unit {
                0xD800..=0xDBFF => {
                    let low = r.get(6..).unwrap_or_default();
                    let low_unit = match (low.first(), low.get(1)) {
                        (None, _) | (Some(b'\\'), None) => return Step::Incomplete,
                        (Some(b'\\'), Some(b'u')) => hex4(low.get(2..).unwrap_or_default()),
                        _ => Err(false),
                    };
                    match low_unit {
                        Ok(lo @ 0xDC00..=0xDFFF) => {
                            (0x10000 + ((unit - 0xD800) << 10) + (lo - 0xDC00), 12)
                        }
                        // An incomplete second escape, if it may still be a
                        // low surrogate.
                        Err(true) if low.get(2).is_none_or(|&b| matches!(b, b'd' | b'D')) => {
                            match low.get(3) {
                                None | Some(b'c'..=b'f' | b'C'..=b'F') => return Step::Incomplete,
                                Some(_) => return Step::Literal,
                            }
                        }
                        _ => return Step::Literal,
                    }
                }
                0xDC00..=0xDFFF => return Step::Literal,
                u => (u, 6),
            };
            let Some(c) = char::from_u32(code) else {
                return Step::Literal;
            };
            let mut out = [0u8; 4];
            let out_len = c.encode_utf8(&mut out).len();
            Step::Decoded {
                out,
                out_len,
                consumed,
            }
        }
        Some(_) => Step::Literal,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use std::time::Instant;

    const CANARY: &[u8] = b"sk_live_CANARY_4f9a2b7c1d0e";
    const PASSWORD: &[u8] = b"p@ss/w+rd=1&x";
    const BINARY: &[u8] = b"\x00\xffbin\x10ary\x7f\x80\"\\ sec<r>et\n";
    const VALUES: [&[u8]; 3] = [CANARY, PASSWORD, BINARY];

    fn build(values: &[&[u8]]) -> Scrubber {
        Scrubber::new(values).expect("secret buffer for the patterns")
    }

    fn scrubber() -> Scrubber {
        build(&VALUES)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        memchr::memmem::find(hay, needle).is_some()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn scrubbed(s: &Scrubber, data: &[u8]) -> (Vec<u8>, usize) {
        let mut v = data.to_vec();
        let n = s.scrub(&mut v);
        (v, n)
    }

    fn show(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn b64_val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }

    /// Decodes every maximal run of base64 (either alphabet) characters at
    /// each of the 4 character offsets and searches the result for `value`.
    fn base64_reveals(hay: &[u8], value: &[u8]) -> bool {
        let runs = hay.split(|&c| b64_val(c).is_none());
        for run in runs {
            for off in 0..4 {
                let Some(chars) = run.get(off..) else {
                    continue;
                };
                let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
                for &c in chars {
                    acc = (acc << 6 | b64_val(c).unwrap()) & 0xFFFF;
                    bits += 6;
                    if bits >= 8 {
                        bits -= 8;
                        out.push((acc >> bits) as u8);
                    }
                }
                if contains(&out, value) {
                    return true;
                }
            }
        }
        false
    }

    /// No form of `value` survives in `out`: no pattern, no raw value, no
    /// base64 at any alignment, no hex in any case, and nothing in the
    /// percent-decoded or JSON-unescaped views.
    fn assert_clean(s: &Scrubber, out: &[u8], value: &[u8]) {
        for p in s.patterns.iter() {
            assert!(
                !contains(out, p),
                "pattern {:?} left in {:?}",
                show(p),
                show(out)
            );
        }
        assert!(!contains(out, value), "raw value left in {:?}", show(out));
        assert!(
            !base64_reveals(out, value),
            "base64 of value left in {:?}",
            show(out)
        );
        let hex = hex_encode(value, LOWER_HEX);
        assert!(
            !contains(&out.to_ascii_lowercase(), &hex),
            "hex left in {:?}",
            show(out)
        );
        let (pct, json) = (
            View::build(out, Trigger::One(b'%'), pct_step),
            View::build(out, Trigger::One(b'\\'), json_step),
        );
        let pct_json = json
            .as_ref()
            .and_then(|j| View::build_over(j, Trigger::One(b'%'), pct_step));
        let json_pct = pct
            .as_ref()
            .and_then(|p| View::build_over(p, Trigger::One(b'\\'), json_step));
        let unwrapped = View::build(out, LINE_BREAKS, line_break_step);
        for view in [&pct, &json, &pct_json, &json_pct, &unwrapped]
            .into_iter()
            .flatten()
        {
            assert!(
                !contains(&view.bytes, value),
                "value in a decoded view of {:?}",
                show(out)
            );
            assert!(
                !base64_reveals(&view.bytes, value),
                "base64 in a decoded view of {:?}",
                show(out)
            );
        }
    }

    // ---- encoders used to build test bodies ----

    fn json_escape(v: &[u8], go_style: bool, escape_slash: bool, ascii_only: bool) -> Vec<u8> {
        let s = String::from_utf8_lossy(v);
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if escape_slash => out.push_str("\\/"),
                '\n' => out.push_str("\\n"),
                '<' | '>' | '&' if go_style => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if ascii_only && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.into_bytes()
    }

    fn pct_encode_except(v: &[u8], keep: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in v {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                out.push(b);
            } else {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
        out
    }

    // ---- construction ----

    #[test]
    fn patterns_are_sorted_deduplicated_and_long_enough() {
        let s = scrubber();
        assert!(s.pattern_count() > 0);
        for w in s.patterns.iter().collect::<Vec<_>>().windows(2) {
            assert!(w[0].len() >= w[1].len());
            assert_ne!(w[0], w[1]);
        }
        assert!(s.patterns.iter().all(|p| p.len() >= MIN_PATTERN_LEN));
        assert_eq!(
            build(&[CANARY, CANARY]).pattern_count(),
            build(&[CANARY]).pattern_count()
        );
        // canary: raw (= every URL form: it is all unreserved), 3 base64 (=
        // base64url: its encodings have no '+' or '/'), 2 hex
        assert_eq!(build(&[CANARY]).pattern_count(), 6);
        assert_eq!(build(&[]).pattern_count(), 0);
    }

    #[test]
    fn base64_cores_follow_the_bit_formula() {
        // "user:" + canary: canary at alignment 2 inside the Basic blob.
        let full = STANDARD.encode(cat(&[b"user:", CANARY]));
        let core = base64_core(&STANDARD_NO_PAD, CANARY, 2).unwrap();
        assert!(contains(full.as_bytes(), &core));
        // k=2: chars 3 .. floor(8*29/6)-1 of the 2-byte-prefixed encoding
        assert_eq!(core.len(), 8 * (2 + CANARY.len()) / 6 - 3);
        for k in 0..3 {
            let c = base64_core(&URL_SAFE_NO_PAD, CANARY, k).unwrap();
            assert_eq!(c.len(), 8 * (k + CANARY.len()) / 6 - (8 * k).div_ceil(6));
        }
    }

    #[test]
    fn debug_shows_only_the_count() {
        let s = build(&[CANARY]);
        let d = format!("{s:?}");
        assert_eq!(d, "Scrubber { patterns: 6 }");
        assert!(!d.contains("sk_live"));
    }

    #[test]
    fn patterns_shorter_than_six_bytes_are_skipped() {
        // "abc": raw, base64 "YWJj" and percent forms are < 6; hex "616263" is kept.
        let s = build(&[b"abc"]);
        assert_eq!(s.pattern_count(), 1);
        assert_eq!(s.patterns.get(0), b"616263");
        let (out, n) = scrubbed(&s, b"x abc YWJj abc%20 y");
        assert_eq!((out.as_slice(), n), (&b"x abc YWJj abc%20 y"[..], 0));
        let (out, n) = scrubbed(&s, b"hex 616263!");
        assert_eq!((out.as_slice(), n), (&b"hex [REDACTED]!"[..], 1));
        assert_eq!(build(&[b"ab"]).pattern_count(), 0);
        assert_eq!(build(&[b""]).pattern_count(), 0);
        let mut body = b"ab ab".to_vec();
        assert_eq!(build(&[b"ab"]).scrub(&mut body), 0);
        assert_eq!(body, b"ab ab");
    }

    // ---- forms ----

    #[test]
    fn base64_and_hex_wrapped_into_lines() {
        let s = scrubber();
        for value in VALUES {
            for prefix in 0..90 {
                let mut raw = vec![b'P'; prefix];
                raw.extend_from_slice(value);
                raw.extend_from_slice(b"QQQ");
                let b64 = STANDARD.encode(&raw);
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                for (text, width) in [(&b64, 76), (&b64, 64), (&hex, 60)] {
                    for eol in ["\n", "\r\n"] {
                        let wrapped: Vec<u8> = text
                            .as_bytes()
                            .chunks(width)
                            .flat_map(|line| [line, eol.as_bytes()].concat())
                            .collect();
                        // As it comes, and as a JSON string ("\n" escapes).
                        let json = serde_json::to_vec(&String::from_utf8_lossy(&wrapped))
                            .expect("JSON string");
                        for body in [wrapped, json] {
                            let (out, _) = scrubbed(&s, &body);
                            let joined: Vec<u8> = String::from_utf8_lossy(&out)
                                .replace("\\r", "")
                                .replace("\\n", "")
                                .bytes()
                                .filter(|b| !matches!(b, b'\r' | b'\n'))
                                .collect();
                            assert_clean(&s, &joined, value);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn header_names_match_in_any_case() {
        let value = b"CANARYUP-CD72B47868635929";
        let s = build(&[value]);
        let b64 = STANDARD.encode(value);
        let hex: String = value.iter().map(|b| format!("{b:02X}")).collect();
        let names = [
            "canaryup-cd72b47868635929".to_string(),
            "x-canaryup-cd72b47868635929-y".to_string(),
            b64.to_ascii_lowercase(),
            hex.to_ascii_lowercase(),
            format!("x-{}", "canaryup%2dcd72b47868635929"),
        ];
        for name in names {
            let (out, n) = s.scrub_name(&name);
            assert!(n >= 1, "{name:?} -> {out:?}");
            assert!(
                !out.to_ascii_lowercase().contains("cd72b47868635929"),
                "{name:?} -> {out:?}"
            );
        }
        assert_eq!(
            s.scrub_name("content-type"),
            ("content-type".to_string(), 0)
        );
    }

    #[test]
    fn raw_value_anywhere() {
        let s = scrubber();
        for v in VALUES {
            for (pre, post) in [
                (&b""[..], &b""[..]),
                (b"head ", b""),
                (b"", b" tail"),
                (b"{\"k\":\"", b"\"}"),
            ] {
                let body = cat(&[pre, v, post]);
                let (out, n) = scrubbed(&s, &body);
                assert_eq!(n, 1);
                assert_eq!(out, cat(&[pre, REDACTED, post]));
                assert_clean(&s, &out, v);
            }
        }
    }

    #[test]
    fn base64_and_base64url_of_the_value_alone() {
        let s = scrubber();
        for v in VALUES {
            for enc in [
                STANDARD.encode(v),
                URL_SAFE.encode(v),
                STANDARD_NO_PAD.encode(v),
                URL_SAFE_NO_PAD.encode(v),
            ] {
                let body = cat(&[b"token=", enc.as_bytes(), b";"]);
                let (out, n) = scrubbed(&s, &body);
                assert_eq!(n, 1, "{enc}");
                assert!(out.starts_with(b"token="), "{}", show(&out));
                assert_clean(&s, &out, v);
            }
        }
    }

    #[test]
    fn basic_auth_user_colon_value() {
        let s = scrubber();
        for v in VALUES {
            let blob = STANDARD.encode(cat(&[b"user:", v]));
            // as httpbin echoes it
            let body = cat(&[
                b"{\"headers\": {\"Authorization\": \"Basic ",
                blob.as_bytes(),
                b"\"}}",
            ]);
            assert!(base64_reveals(&body, v));
            let (out, n) = scrubbed(&s, &body);
            assert_eq!(n, 1);
            assert_clean(&s, &out, v);
            // the "user:" part is not secret; at most a couple of chars survive around it
            assert!(
                out.starts_with(b"{\"headers\": {\"Authorization\": \"Basic dXNlcj"),
                "{}",
                show(&out)
            );
            let (h, n) = s.scrub_str(&format!("Basic {blob}"));
            assert_eq!(n, 1);
            assert!(!base64_reveals(h.as_bytes(), v), "{h}");
        }
    }

    #[test]
    fn base64_with_one_and_two_byte_prefixes_and_arbitrary_surroundings() {
        let s = scrubber();
        for v in VALUES {
            for pre_len in 0..7usize {
                for suf_len in 0..7usize {
                    let pre: Vec<u8> = (0..pre_len).map(|i| (i * 37 + 11) as u8).collect();
                    let suf: Vec<u8> = (0..suf_len).map(|i| (i * 53 + 200) as u8).collect();
                    let raw = cat(&[&pre, v, &suf]);
                    for enc in [STANDARD.encode(&raw), URL_SAFE_NO_PAD.encode(&raw)] {
                        let body = cat(&[b"x=", enc.as_bytes(), b"&y=1"]);
                        let (out, n) = scrubbed(&s, &body);
                        assert_eq!(n, 1, "pre {pre_len} suf {suf_len}: {enc}");
                        assert!(out.ends_with(b"&y=1"));
                        assert_clean(&s, &out, v);
                    }
                }
            }
        }
    }

    #[test]
    fn value_inside_a_long_base64_blob() {
        let s = scrubber();
        let filler: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for v in VALUES {
            for split in [0, 1, 2, 100, 299] {
                let raw = cat(&[&filler[..split], v, &filler[split..]]);
                let blob = STANDARD.encode(&raw);
                let (out, n) = scrubbed(&s, blob.as_bytes());
                assert_eq!(n, 1);
                assert_clean(&s, &out, v);
                // the rest of the blob is kept: the length shrinks by about the value's share only
                let removed = blob.len() + REDACTED.len() - out.len();
                assert!(removed <= v.len() * 4 / 3 + 1, "removed {removed}");
            }
        }
    }

    #[test]
    fn json_bodies_with_escaped_values() {
        let s = scrubber();
        for v in VALUES
            .into_iter()
            .filter(|v| std::str::from_utf8(v).is_ok())
        {
            for (go, slash, ascii) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (true, true, true),
            ] {
                let esc = json_escape(v, go, slash, ascii);
                let body = cat(&[
                    b"{\"a\":\"x\\\"y\\u00e9\",\"headers\":{\"X-Api-Key\":\"",
                    &esc,
                    b"\"},\"n\":1}",
                ]);
                let (out, n) = scrubbed(&s, &body);
                assert_eq!(n, 1, "{}", show(&body));
                assert_eq!(
                    out,
                    cat(&[
                        b"{\"a\":\"x\\\"y\\u00e9\",\"headers\":{\"X-Api-Key\":\"",
                        REDACTED,
                        b"\"},\"n\":1}"
                    ])
                );
                assert_clean(&s, &out, v);
            }
        }
    }

    #[test]
    fn json_unicode_escapes_and_surrogate_pairs() {
        let v = "tok\u{20ac}n-\u{1F600}-secret".as_bytes();
        let s = build(&[v]);
        let esc = json_escape(v, false, false, true);
        assert!(contains(&esc, b"\\ud83d\\ude00"));
        let body = cat(&[b"[\"\\ud83d\\ude00\",\"", &esc, b"\"]"]);
        let (out, n) = scrubbed(&s, &body);
        assert_eq!(n, 1);
        assert_eq!(out, cat(&[b"[\"\\ud83d\\ude00\",\"", REDACTED, b"\"]"]));
    }

    #[test]
    fn url_encoded_forms() {
        let s = scrubber();
        for v in VALUES {
            let forms = [
                percent_encode(v, UPPER_HEX, false).to_vec(),
                percent_encode(v, LOWER_HEX, false).to_vec(),
                percent_encode(v, UPPER_HEX, true).to_vec(),
                pct_encode_except(v, b"/"),         // Python quote()
                pct_encode_except(v, b"*-._"),      // form-urlencoded, ~ as %7E
                pct_encode_except(v, b"-_.!~*'()"), // encodeURIComponent
                pct_encode_except(v, b"@/:"),       // WHATWG-ish query
                pct_encode_except(v, b""),          // everything but alnum
            ];
            for f in forms {
                let body = cat(&[b"GET /echo?key=", &f, b"&z=%41 HTTP/1.1"]);
                let (out, n) = scrubbed(&s, &body);
                assert_eq!(n, 1, "{}", show(&body));
                assert_eq!(out, cat(&[b"GET /echo?key=", REDACTED, b"&z=%41 HTTP/1.1"]));
                assert_clean(&s, &out, v);
            }
        }
        // space as '+', in a value with a space
        let v: &[u8] = b"open sesame~*";
        let s = build(&[v]);
        for f in [
            &b"open+sesame~*"[..],
            b"open+sesame%7E%2A",
            b"open%20sesame~%2a",
            b"open+sesame~*",
        ] {
            let (out, n) = scrubbed(&s, &cat(&[b"q=", f]));
            assert_eq!(
                (out.as_slice(), n),
                (&b"q=[REDACTED]"[..], 1),
                "{}",
                show(f)
            );
        }
        // percent-encoded base64 (Basic auth reflected into a URL)
        let blob = STANDARD.encode(cat(&[b"u:", PASSWORD, b"\xfb\xff"]));
        let f = pct_encode_except(blob.as_bytes(), b"");
        let (out, n) = scrubbed(&scrubber(), &f);
        assert_eq!(n, 1);
        assert_clean(&scrubber(), &out, PASSWORD);
    }

    #[test]
    fn url_encoding_inside_json() {
        let s = scrubber();
        let url = cat(&[b"https://h/x?k=", &pct_encode_except(PASSWORD, b"/")]);
        let body = cat(&[
            b"{\"url\":\"",
            &json_escape(&url, true, true, false),
            b"\"}",
        ]);
        assert!(contains(&body, b"\\/"));
        let (out, n) = scrubbed(&s, &body);
        assert_eq!(n, 1);
        assert_eq!(out, b"{\"url\":\"https:\\/\\/h\\/x?k=[REDACTED]\"}");
    }

    #[test]
    fn hex_lower_and_upper() {
        let s = scrubber();
        for v in VALUES {
            for digits in [LOWER_HEX, UPPER_HEX] {
                let body = cat(&[b"digest: ", &hex_encode(v, digits), b"\r\n"]);
                let (out, n) = scrubbed(&s, &body);
                assert_eq!((out, n), (cat(&[b"digest: ", REDACTED, b"\r\n"]), 1));
            }
        }
    }

    #[test]
    fn json_inside_url_encoding() {
        // a JSON state blob carried in a query string: the credential's JSON
        // escapes are themselves percent-encoded
        let s = scrubber();
        let json = cat(&[
            b"{\"key\":\"",
            &json_escape(PASSWORD, true, true, false),
            b"\"}",
        ]);
        let body = cat(&[
            b"https://h/cb?state=",
            &pct_encode_except(&json, b""),
            b"&x=1",
        ]);
        assert!(contains(&body, b"%5C%2F"));
        let (out, n) = scrubbed(&s, &body);
        assert_eq!(n, 1);
        assert_eq!(
            out,
            cat(&[
                b"https://h/cb?state=%7B%22key%22%3A%22",
                REDACTED,
                b"%22%7D&x=1"
            ])
        );
    }

    // ---- occurrence structure ----

    #[test]
    fn adjacent_occurrences() {
        let s = scrubber();
        let (out, n) = scrubbed(&s, &cat(&[b"<", CANARY, CANARY, b">"]));
        assert_eq!((out, n), (cat(&[b"<", REDACTED, REDACTED, b">"]), 2));
        let b64 = STANDARD_NO_PAD.encode(CANARY);
        let (out, n) = scrubbed(&s, &cat(&[CANARY, b64.as_bytes(), PASSWORD]));
        assert_eq!(n, 3);
        assert_clean(&s, &out, CANARY);
        assert_clean(&s, &out, PASSWORD);
    }

    #[test]
    fn overlapping_occurrences_are_covered_as_a_union() {
        // a self-overlapping value (period 4)
        let v: &[u8] = b"ab12ab12ab";
        let s = build(&[v]);
        let (out, n) = scrubbed(&s, b"x ab12ab12ab12ab12ab y");
        assert_eq!((out.as_slice(), n), (&b"x [REDACTED] y"[..], 1));
        // two different values overlapping
        let a: &[u8] = b"TOKEN_ALPHA_123";
        let b: &[u8] = b"123_BETA_TOKEN_X";
        let s = build(&[a, b]);
        let (out, n) = scrubbed(&s, b"[TOKEN_ALPHA_123_BETA_TOKEN_X]");
        assert_eq!((out.as_slice(), n), (&b"[[REDACTED]]"[..], 1));
        // an encoded form overlapping a raw one
        let hex = hex_encode(b"deadbeef-1", LOWER_HEX);
        assert_eq!(hex.as_slice(), b"64656164626565662d31");
        let c: &[u8] = b"2d31-secret-x";
        let s = build(&[b"deadbeef-1", c]);
        let body = cat(&[&hex[..], b"-secret-x"]);
        assert!(contains(&body, c));
        let (out, n) = scrubbed(&s, &body);
        assert_eq!((out.as_slice(), n), (REDACTED, 1));
    }

    #[test]
    fn longest_match_wins() {
        let s = build(&[b"secret_value", b"secret_value_long"]);
        let (out, n) = scrubbed(&s, b"a secret_value_long b secret_value c");
        assert_eq!(
            (out.as_slice(), n),
            (&b"a [REDACTED] b [REDACTED] c"[..], 2)
        );
        // a shorter pattern strictly inside a longer one
        let s = build(&[b"my_secret_value_long", b"secret_value"]);
        let (out, n) = scrubbed(&s, b"<my_secret_value_long>");
        assert_eq!((out.as_slice(), n), (&b"<[REDACTED]>"[..], 1));
    }

    #[test]
    fn no_occurrence_is_byte_identical() {
        let s = scrubber();
        let mut body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        body.extend_from_slice(b"%41%4 \\u0041 \\ud83d \\\"sk_live_CANARY_4f9a2b7c1d0 %");
        let orig = body.clone();
        assert_eq!(s.scrub(&mut body), 0);
        assert_eq!(body, orig);
        let mut empty = Vec::new();
        assert_eq!(s.scrub(&mut empty), 0);
        assert!(empty.is_empty());
        let (h, n) = s.scrub_str("application/json; charset=utf-8");
        assert_eq!((h.as_str(), n), ("application/json; charset=utf-8", 0));
    }

    #[test]
    fn view_mapping_keeps_surrounding_escapes_intact() {
        let s = scrubber();
        let esc = json_escape(PASSWORD, true, true, false);
        let body = cat(&[
            b"\\u00e9\\ud83d\\ude00%41\\n",
            &esc,
            b"\\t%2F\\u0026",
            &esc,
            b"\\",
        ]);
        let (out, n) = scrubbed(&s, &body);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            cat(&[
                b"\\u00e9\\ud83d\\ude00%41\\n",
                REDACTED,
                b"\\t%2F\\u0026",
                REDACTED,
                b"\\"
            ])
        );
    }

    // ---- headers ----

    #[test]
    fn header_values() {
        let s = scrubber();
        let (h, n) = s.scrub_str("Bearer sk_live_CANARY_4f9a2b7c1d0e");
        assert_eq!((h.as_str(), n), ("Bearer [REDACTED]", 1));
        let (h, n) = s.scrub_str("k=p%40ss%2Fw%2Brd%3D1%26x; Path=/; k2=p%40ss%2fw%2brd%3d1%26x");
        assert_eq!((h.as_str(), n), ("k=[REDACTED]; Path=/; k2=[REDACTED]", 2));
        // a credential that starts inside a multi-byte character: lossy result
        let s = build(&[b"\xa9secret-ish"]);
        let (h, n) = s.scrub_str("x \u{a9}secret-ish y");
        assert_eq!((h.as_str(), n), ("x \u{fffd}[REDACTED] y", 1));
    }

    // ---- truncation ----

    #[test]
    fn truncated_body_never_ends_with_a_credential_prefix() {
        let s = scrubber();
        for v in VALUES {
            let basic = STANDARD.encode(cat(&[b"user:", v])).into_bytes();
            let mut forms = vec![
                v.to_vec(),
                pct_encode_except(v, b"/"),
                basic,
                hex_encode(v, UPPER_HEX).to_vec(),
            ];
            if std::str::from_utf8(v).is_ok() {
                forms.push(json_escape(v, true, true, true));
            }
            for form in forms {
                let body = cat(&[b"{\"data\":\"padding\",\"echo\":\"", &form, b"\"}"]);
                let start = body.len() - form.len() - 2;
                for (cut, two_step) in
                    (start..=body.len() - 2).flat_map(|c| [(c, false), (c, true)])
                {
                    let mut out = body[..cut].to_vec();
                    if two_step {
                        // as proxy::call_upstream does it
                        s.scrub(&mut out);
                        s.scrub_tail(&mut out);
                    } else {
                        s.scrub_truncated(&mut out);
                    }
                    for p in s.patterns.iter() {
                        for len in 1..=p.len().min(out.len()) {
                            assert!(!out.ends_with(&p[..len]), "cut {cut}: {}", show(&out));
                        }
                    }
                    for len in 2..=v.len() {
                        assert!(!contains(&out, &v[..len]), "cut {cut}: {}", show(&out));
                    }
                    assert!(!base64_reveals(&out, &v[..2]), "cut {cut}: {}", show(&out));
                    assert!(out.ends_with(REDACTED), "cut {cut}: {}", show(&out));
                }
            }
        }
    }

    /// What a cut body loses does not depend on the credential's bytes: an
    /// agent that places the cut right after its guess of the credential's
    /// next character (an echo of text it wrote) learns nothing from the
    /// answer. Redacting only a tail that began some form gave it the whole
    /// credential, one character per few dozen calls. Here each body, a
    /// beginning of a form of `v`, is scrubbed as if the credential were `v`
    /// and as if it were another value of the same length: the answers must
    /// be equal.
    #[test]
    fn a_cut_body_loses_the_same_end_whatever_the_credential() {
        for v in VALUES {
            let other: Vec<u8> = v.iter().map(|b| b ^ 0x21).collect();
            let (mine, theirs) = (
                Scrubber::new(&[v]).unwrap(),
                Scrubber::new(&[&other]).unwrap(),
            );
            let forms = [
                v.to_vec(),
                hex_encode(v, LOWER_HEX).to_vec(),
                STANDARD.encode(v).into_bytes(),
                pct_encode_except(v, b""),
            ];
            for form in forms {
                for n in 1..form.len() {
                    for pad in [b"x".repeat(3), b"%41\\n".to_vec(), b"ab\r\n".repeat(200)] {
                        let body = cat(&[b"{\"echo\":\"", &pad, &form[..n]]);
                        let (mut a, mut b) = (body.clone(), body.clone());
                        mine.scrub_truncated(&mut a);
                        theirs.scrub_truncated(&mut b);
                        assert_eq!(a, b, "{n} bytes of {}", show(&form));
                        assert!(a.ends_with(REDACTED), "{}", show(&a));
                    }
                }
            }
        }
        // An innocent cut loses its last 3 x (longest value) - 1 bytes.
        let s = scrubber();
        let longest = VALUES.iter().map(|v| v.len()).max().unwrap();
        let mut body = b"k".repeat(1000);
        assert_eq!(s.scrub_truncated(&mut body), 1);
        assert_eq!(body.len(), 1000 - (3 * longest - 1) + REDACTED.len());
        assert!(body.ends_with(REDACTED));
    }

    // ---- scale ----

    fn big_body() -> Vec<u8> {
        let mut body = Vec::with_capacity(1 << 20);
        let chunk = (1 << 20) / 1000;
        let mut i = 0u32;
        while body.len() < 1 << 20 {
            if body.len() % chunk == 0 && i < 1000 {
                body.extend_from_slice(CANARY);
                i += 1;
            } else {
                body.push(b"abcdefghij klmnopqrstuvwxyz,\":{}0123456789\n"[(body.len() * 7) % 43]);
            }
        }
        assert_eq!(i, 1000);
        body
    }

    #[test]
    fn one_mib_body_with_1000_occurrences() {
        let s = scrubber();
        let mut body = big_body();
        let len = body.len();
        let t = Instant::now();
        let n = s.scrub(&mut body);
        let dt = t.elapsed();
        eprintln!(
            "scrub of {len} bytes, {} patterns, 1000 occurrences: {dt:?}",
            s.pattern_count()
        );
        assert_eq!(n, 1000);
        assert!(!contains(&body, CANARY));
        assert_eq!(body.len(), len - 1000 * (CANARY.len() - REDACTED.len()));
    }

    #[test]
    fn one_mib_escape_heavy_body() {
        // a JSON body with escapes everywhere and a Go-escaped, percent-
        // encoded or raw credential in each KiB: all three views are built
        let s = scrubber();
        let esc = json_escape(PASSWORD, true, true, false);
        let pct = pct_encode_except(PASSWORD, b"/");
        let filler = b"\\n\\u00e9%20\\\"x\\/%2F";
        let mut body = Vec::with_capacity(1 << 20);
        let mut i = 0;
        while body.len() < (1 << 20) - 1100 {
            body.extend_from_slice([&esc[..], &pct, PASSWORD][i % 3]);
            i += 1;
            while body.len() < i * 1024 {
                body.extend_from_slice(filler);
            }
        }
        let len = body.len();
        let t = Instant::now();
        let n = s.scrub(&mut body);
        eprintln!(
            "scrub of {len} escape-heavy bytes, {i} occurrences: {:?}",
            t.elapsed()
        );
        assert_eq!(n, i);
        assert_clean(&s, &body, PASSWORD);
    }

    #[test]
    fn finder_strategy_timing() {
        // Borrowed finders (built per call, needle stays in zeroized memory)
        // against prebuilt owned finders (unzeroized needle copies).
        let values: Vec<Vec<u8>> = (0..4)
            .map(|i| format!("sk_live_{i}_Q9x/+w=Zr8@u7&k3LmN").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let s = build(&refs);
        let owned: Vec<Finder<'static>> = s
            .patterns
            .iter()
            .map(|p| Finder::new(p).into_owned())
            .collect();
        let big = big_body();
        let header = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 sk_live_1".to_vec();
        let mid: Vec<u8> = big[..16 * 1024].to_vec();
        let small: Vec<u8> = big[..SMALL_INPUT].to_vec();
        let time = |input: &Vec<u8>, rounds: u32, f: &dyn Fn(&mut Vec<u8>) -> usize| {
            std::hint::black_box(f(&mut input.clone())); // warm-up
            let t = Instant::now();
            for _ in 0..rounds {
                let mut d = input.clone();
                std::hint::black_box(f(&mut d));
            }
            t.elapsed() / rounds
        };
        for (name, input, rounds) in [
            ("1 MiB body", &big, 20u32),
            ("16 KiB body", &mid, 2000),
            ("1 KiB body", &small, 5000),
            ("60-byte header", &header, 20_000),
        ] {
            // unoptimized builds: fewer rounds
            let rounds = if cfg!(debug_assertions) {
                rounds.div_ceil(20)
            } else {
                rounds
            };
            let borrowed = |d: &mut Vec<u8>| {
                let finders: Vec<Finder<'_>> = s.patterns.iter().map(Finder::new).collect();
                s.scrub_with(d, false, &Search::Finders(&finders))
            };
            let borrowed = time(input, rounds, &borrowed);
            let prebuilt = time(input, rounds, &|d| {
                s.scrub_with(d, false, &Search::Finders(&owned))
            });
            let naive = time(input, rounds, &|d| {
                s.scrub_with(d, false, &Search::Naive(&s.patterns))
            });
            let chosen = time(input, rounds, &|d| s.scrub(d));
            eprintln!(
                "{name}, {} patterns: borrowed finders per call {borrowed:?}, prebuilt owned finders {prebuilt:?}, \
                 naive {naive:?}, scrub() {chosen:?}",
                s.pattern_count()
            );
        }
    }

    #[test]
    fn view_checkpoints_agree_with_a_full_walk() {
        let mut rng = XorShift(7);
        for i in 0..100 {
            let mut body = Vec::new();
            while body.len() < 2000 {
                body.extend(random_body(&mut rng, VALUES[i % 3]));
            }
            if i % 2 == 0 {
                body.truncate(body.len() - rng.below(13));
            }
            for view in [
                View::build(&body, Trigger::One(b'%'), pct_step),
                View::build(&body, Trigger::One(b'\\'), json_step),
            ]
            .into_iter()
            .flatten()
            {
                for w in view.marks.windows(2) {
                    assert!(
                        w[0].0 < w[1].0 && w[0].1 < w[1].1 && w[1].0 - w[0].0 < MARK_INTERVAL + 4
                    );
                }
                let mut prev_end = 0;
                for j in 0..view.bytes.len() {
                    let (a, b) = view.locate(j);
                    if j % 5 == 0 {
                        assert_eq!((a, b), view.locate_from((0, 0), j));
                    }
                    assert!(a < b && b <= body.len());
                    // tokens tile the source in order
                    assert!(a == prev_end || (a, b) == view.locate(j - 1));
                    prev_end = b;
                    if b - a == 1 {
                        assert_eq!(body[a], view.bytes[j]);
                    }
                }
                assert_eq!(prev_end, body.len());
            }
        }
    }

    #[test]
    fn naive_and_finder_searches_agree() {
        let s = scrubber();
        let finders: Vec<Finder<'_>> = s.patterns.iter().map(Finder::new).collect();
        let mut rng = XorShift(42);
        for i in 0..500 {
            let mut body = random_body(&mut rng, VALUES[i % 3]);
            body.extend(random_body(&mut rng, VALUES[(i + 1) % 3]));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            Search::Finders(&finders).find_spans(&body, &mut a);
            Search::Naive(&s.patterns).find_spans(&body, &mut b);
            assert_eq!(merge_spans(a), merge_spans(b));
            let (mut x, mut y) = (body.clone(), body.clone());
            let nx = s.scrub_with(&mut x, i % 2 == 0, &Search::Finders(&finders));
            let ny = s.scrub_with(&mut y, i % 2 == 0, &Search::Naive(&s.patterns));
            assert_eq!((x, nx), (y, ny));
        }
    }

    // ---- property ----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize, alphabet: Option<&[u8]>) -> Vec<u8> {
            (0..n)
                .map(|_| match alphabet {
                    Some(a) => a[self.below(a.len())],
                    None => self.next() as u8,
                })
                .collect()
        }
    }

    const B64_ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_";

    fn random_form(rng: &mut XorShift, v: &[u8]) -> Vec<u8> {
        match rng.below(13) {
            0 => v.to_vec(),
            1..=4 => {
                let (pre_len, suf_len) = (rng.below(6), rng.below(6));
                let pre = rng.bytes(pre_len, None);
                let suf = rng.bytes(suf_len, None);
                let raw = cat(&[&pre, v, &suf]);
                match rng.below(4) {
                    0 => STANDARD.encode(raw),
                    1 => URL_SAFE.encode(raw),
                    2 => STANDARD_NO_PAD.encode(raw),
                    _ => URL_SAFE_NO_PAD.encode(raw),
                }
                .into_bytes()
            }
            5 => percent_encode(
                v,
                if rng.below(2) == 0 {
                    UPPER_HEX
                } else {
                    LOWER_HEX
                },
                rng.below(2) == 0,
            )
            .to_vec(),
            6 => pct_encode_except(v, b""),
            7 => hex_encode(
                v,
                if rng.below(2) == 0 {
                    UPPER_HEX
                } else {
                    LOWER_HEX
                },
            )
            .to_vec(),
            8 => json_escape(v, true, true, true),
            9 => v
                .iter()
                .flat_map(|b| format!("\\u{b:04X}").into_bytes())
                .collect(),
            10 => pct_encode_except(v, b"/@~"),
            11 => json_escape(&pct_encode_except(v, b"/"), false, true, false),
            _ => pct_encode_except(&json_escape(v, true, true, false), b"\\"),
        }
    }

    fn random_body(rng: &mut XorShift, v: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for _ in 0..1 + rng.below(8) {
            if rng.below(2) == 0 {
                body.extend(random_form(rng, v));
            } else {
                let n = rng.below(40);
                let alphabet: Option<&[u8]> = match rng.below(4) {
                    0 => None,
                    1 => Some(B64_ALPHABET),
                    2 => Some(b"%\\u0123456789abcdefABCDEF\"/"),
                    _ => Some(b"sk_live_CANARY_4f9a2b7c1d0e"),
                };
                body.extend(rng.bytes(n, alphabet));
            }
        }
        body
    }

    #[test]
    fn property_random_bodies_with_the_canary() {
        let s = build(&[CANARY]);
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut total = 0;
        for _ in 0..2000 {
            let body = random_body(&mut rng, CANARY);
            let mut out = body.clone();
            total += s.scrub(&mut out);
            assert_clean(&s, &out, CANARY);
        }
        assert!(total > 2000);
    }

    #[test]
    fn property_random_bodies_all_values_truncated_or_not() {
        let s = scrubber();
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        for i in 0..2000 {
            let v = VALUES[i % VALUES.len()];
            let body = random_body(&mut rng, v);
            let mut out = body.clone();
            s.scrub(&mut out);
            assert_clean(&s, &out, v);
            if !body.is_empty() {
                let mut cut = body[..rng.below(body.len()) + 1].to_vec();
                let mut two_step = cut.clone();
                s.scrub_truncated(&mut cut);
                assert_clean(&s, &cut, v);
                s.scrub(&mut two_step);
                s.scrub_tail(&mut two_step);
                assert_clean(&s, &two_step, v);
                for out in [&cut, &two_step] {
                    for p in s.patterns.iter() {
                        for len in 1..=p.len().min(out.len()) {
                            assert!(!out.ends_with(&p[..len]), "{}", show(out));
                        }
                    }
                }
            }
        }
    }
}
