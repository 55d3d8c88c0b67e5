//! The encoded forms of a secret that must never reach an agent or a log:
//! base64 and base64url (at every byte alignment), hex (both cases) and
//! percent-encoding. Used by the upstream's `echo-*` routes to produce them and by
//! [`crate::assert_absent`] to look for them.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Standard base64, padded.
pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// base64url, unpadded (the JWT form).
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Lowercase hex.
pub fn hex_lower(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Uppercase hex.
pub fn hex_upper(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02X}")).collect()
}

/// Percent-encodes every byte except RFC 3986 unreserved ones (`A-Z a-z 0-9 - . _ ~`),
/// with uppercase hex digits: JavaScript's `encodeURIComponent`.
pub fn percent_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 3);
    for &b in data {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (either case) and, when `plus_is_space`, `+` as a space
/// (`application/x-www-form-urlencoded`). Malformed escapes are kept as they are.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Splits a raw query string into decoded `(name, value)` pairs, in order
/// (form decoding: `+` is a space).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                String::from_utf8_lossy(&percent_decode(k, true)).into_owned(),
                String::from_utf8_lossy(&percent_decode(v, true)).into_owned(),
            )
        })
        .collect()
}

/// Every form of `needle` that [`crate::assert_absent`] searches for, each with a label.
///
/// The base64 forms are the alignment-independent cores: for each of the three
/// byte offsets at which the needle can start inside a longer base64 text, the
/// characters that depend only on the needle's own bytes. So a secret embedded
/// in a longer base64 blob (a Basic credential `user:secret`, a JSON document
/// encoded whole) is found too. Needles shorter than 8 bytes get only the raw
/// and hex forms checked for alignments 1 and 2 (the cores would be too short
/// to mean anything).
pub fn needle_forms(needle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut forms: Vec<(String, Vec<u8>)> = vec![
        ("raw".into(), needle.to_vec()),
        ("hex".into(), hex_lower(needle).into_bytes()),
        ("HEX".into(), hex_upper(needle).into_bytes()),
    ];
    let pct = percent_encode(needle);
    if pct.as_bytes() != needle {
        forms.push(("percent-encoded".into(), pct.clone().into_bytes()));
        forms.push((
            "percent-encoded (lowercase hex)".into(),
            lower_escapes(&pct).into_bytes(),
        ));
    }
    for offset in 0..3usize {
        if offset > 0 && needle.len() < 8 {
            continue;
        }
        let mut buf = vec![0u8; offset];
        buf.extend_from_slice(needle);
        let enc = STANDARD_NO_PAD.encode(&buf);
        // Characters fully determined by the needle's bytes: skip those that mix in
        // the prefix, and the last partial group (it mixes in whatever follows).
        let start = (offset * 8).div_ceil(6);
        let end = (buf.len() * 8) / 6;
        if end < start + 4 {
            continue;
        }
        let core = &enc[start..end];
        forms.push((
            format!("base64 (offset {offset})"),
            core.as_bytes().to_vec(),
        ));
        let url_core: String = core
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        if url_core != core {
            forms.push((
                format!("base64url (offset {offset})"),
                url_core.into_bytes(),
            ));
        }
    }
    forms
}

fn lower_escapes(pct: &str) -> String {
    let mut out = String::with_capacity(pct.len());
    let mut chars = pct.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_roundtrip() {
        assert_eq!(percent_decode("a%20b+c%zz%4", true), b"a b c%zz%4");
        assert_eq!(percent_decode("%41%4a", false), b"AJ");
        assert_eq!(
            percent_decode(&percent_encode(b"x y/\xff"), false),
            b"x y/\xff"
        );
    }

    #[test]
    fn base64_cores_found_inside_longer_text() {
        let secret = b"sk-live-CANARY-0123456789abcdef";
        for prefix in ["", "u", "us", "user:", "Bearer x"] {
            let mut whole = prefix.as_bytes().to_vec();
            whole.extend_from_slice(secret);
            whole.extend_from_slice(b"!tail");
            let hay = STANDARD.encode(&whole);
            let forms = needle_forms(secret);
            assert!(
                forms.iter().any(|(_, f)| memfind(hay.as_bytes(), f)),
                "prefix {prefix:?} not found in {hay}"
            );
            let hay = URL_SAFE_NO_PAD.encode(&whole);
            assert!(forms.iter().any(|(_, f)| memfind(hay.as_bytes(), f)));
        }
    }

    fn memfind(h: &[u8], n: &[u8]) -> bool {
        h.windows(n.len()).any(|w| w == n)
    }
}
