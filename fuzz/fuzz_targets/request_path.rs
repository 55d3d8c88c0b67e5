//! The request checker on hostile input: method, path, headers, query and
//! policy rules (`vaultd::proxy::request`), and `join_url`, which builds the
//! URL actually sent.
//!
//! Input: fields separated by the byte 0xFF (never part of valid UTF-8, so a
//! field can hold any text, CR/LF/NUL included); invalid UTF-8 inside a field
//! becomes U+FFFD. Fields, in order: method, path, rule, second rule, header
//! name, header value, query name, query value, credential header/query name.
//!
//! Invariants on every accepted path (DESIGN.md, "Rules of the proxy path"):
//! the output is the input; it starts with '/', has no "//", no dot segment
//! raw or percent-encoded (also before ';'), no encoded '/' or '\', no raw
//! '\', '?', '#', space, control or non-ASCII byte; and `join_url` builds a
//! URL for it on every base, with the base's scheme, host and port, whose
//! path is exactly base path + path, that re-parses to the same path, and has
//! no query or fragment. An accepted rule matches exactly what an independent
//! reference matcher says.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultd::proxy::join_url;
use vaultd::proxy::request::{Rule, canonical_method, canonical_path, check_headers, check_query};

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The bases a path is joined to: with a prefix, without one, with a port.
const BASES: [(&str, &str); 3] = [
    ("https://api.example.com/v3", "/v3"),
    ("https://api.example.com", ""),
    ("https://127.0.0.1:8443/a/b", "/a/b"),
];

fn field(fields: &[&[u8]], i: usize) -> String {
    fields
        .get(i)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s` (invalid escapes kept as they are).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn assert_safe_path(raw: &str, out: &str) {
    assert_eq!(out, raw, "canonical_path changed its input");
    assert!(out.starts_with('/'), "{out:?} does not start with '/'");
    assert!(!out.contains("//"), "{out:?} has an empty segment");
    assert!(out.is_ascii(), "{out:?} is not ASCII");
    assert!(
        !out.bytes()
            .any(|b| b.is_ascii_control() || b" \\?#".contains(&b)),
        "{out:?} has a control character, space, backslash, '?' or '#'"
    );
    let lower = out.to_ascii_lowercase();
    for needle in ["%2e", "%2f", "%5c", "%00", "%0a", "%0d", "%25"] {
        // %25 is allowed only when not followed by two hex digits.
        if needle == "%25" {
            for (i, _) in lower.match_indices(needle) {
                let rest = &lower.as_bytes()[i + 3..];
                assert!(
                    !(rest.len() >= 2 && hex(rest[0]).is_some() && hex(rest[1]).is_some()),
                    "{out:?} is double-encoded"
                );
            }
            continue;
        }
        assert!(!lower.contains(needle), "{out:?} contains {needle}");
    }
    for segment in out[1..].split('/') {
        let decoded = decode(segment);
        let core: Vec<u8> = decoded
            .iter()
            .copied()
            .take_while(|b| !matches!(b, b';' | b'?' | b'#'))
            .collect();
        assert!(
            !(core.contains(&b'.') && core.iter().all(|b| matches!(b, b'.' | b' '))),
            "{out:?} has a dot segment {segment:?}"
        );
        assert!(
            !decoded.starts_with(b";"),
            "{out:?} has a segment starting with ';'"
        );
        assert!(
            !decoded.contains(&b'/') && !decoded.contains(&b'\\'),
            "{out:?} encodes a slash or backslash"
        );
        assert!(
            std::str::from_utf8(&decoded).is_ok(),
            "{out:?} decodes to invalid UTF-8"
        );
    }
}

fn assert_join(path: &str) {
    for (base_text, prefix) in BASES {
        let base = url::Url::parse(base_text).expect("base URL");
        // Every accepted path can be sent: `join_url` refuses only what the
        // URL parser would re-encode, and an accepted path has none of it.
        let url = join_url(&base, path).unwrap_or_else(|e| {
            panic!("accepted path {path:?} cannot be sent on {base_text}: {e}")
        });
        assert_eq!(
            url.scheme(),
            base.scheme(),
            "{path:?}: scheme changed: {url}"
        );
        assert_eq!(
            url.host_str(),
            base.host_str(),
            "{path:?}: host changed: {url}"
        );
        assert_eq!(
            url.port_or_known_default(),
            base.port_or_known_default(),
            "{path:?}: port changed: {url}"
        );
        assert_eq!(url.username(), "", "{path:?}: userinfo appeared: {url}");
        assert!(
            url.password().is_none(),
            "{path:?}: password appeared: {url}"
        );
        assert_eq!(
            url.path(),
            format!("{prefix}{path}"),
            "{path:?}: path sent != path matched: {url}"
        );
        assert!(
            url.path().starts_with(&format!("{prefix}/")),
            "{path:?}: left the base prefix: {url}"
        );
        assert!(
            url.query().is_none() && url.fragment().is_none(),
            "{path:?}: query or fragment appeared: {url}"
        );
        // What goes on the wire re-parses to the same place.
        let again = url::Url::parse(url.as_str()).expect("serialized URL re-parses");
        assert_eq!(
            again.path(),
            url.path(),
            "{path:?}: path changes when the URL is re-parsed"
        );
        assert_eq!(
            again.host_str(),
            base.host_str(),
            "{path:?}: host changes when the URL is re-parsed"
        );
    }
}

/// Independent reference: does a rule's path pattern match a canonical path?
fn reference_match(pattern: &[&str], segments: &[&str]) -> bool {
    match pattern.split_first() {
        None => segments.is_empty(),
        Some((&"**", rest)) => {
            (0..=segments.len()).any(|skip| reference_match(rest, &segments[skip..]))
        }
        Some((&"*", rest)) => segments
            .split_first()
            .is_some_and(|(s, tail)| !s.is_empty() && reference_match(rest, tail)),
        Some((literal, rest)) => segments
            .split_first()
            .is_some_and(|(s, tail)| s == literal && reference_match(rest, tail)),
    }
}

fn check_rule(
    text: &str,
    method: Option<&'static str>,
    path: Option<&str>,
    raw_method: &str,
    raw_path: &str,
) {
    let Ok(rule) = Rule::parse(text) else { return };
    assert_eq!(rule.as_str(), text, "Rule::as_str is not the text");
    let (rule_method, rule_path) = text.split_once(' ').expect("an accepted rule has a space");
    assert!(
        rule_method == "*" || METHODS.contains(&rule_method),
        "accepted rule method {rule_method:?}"
    );
    // The rule's own path (with wildcards as literal text) is a canonical path shape.
    assert!(
        rule_path.starts_with('/') && !rule_path.contains("//"),
        "accepted rule path {rule_path:?}"
    );
    // Unchecked input must not panic (the result is meaningless, but it must return).
    let _ = rule.matches(raw_method, raw_path);
    let (Some(method), Some(path)) = (method, path) else {
        return;
    };
    let pattern: Vec<&str> = rule_path[1..].split('/').collect();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let pattern_count = pattern.iter().filter(|p| **p == "**").count();
    // The reference is exponential in the number of `**`: keep it to small cases.
    if pattern_count <= 4 && segments.len() <= 24 {
        let want =
            (rule_method == "*" || rule_method == method) && reference_match(&pattern, &segments);
        assert_eq!(
            rule.matches(method, path),
            want,
            "rule {text:?} vs {method} {path:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.split(|b| *b == 0xFF).collect();
    let raw_method = field(&fields, 0);
    let raw_path = field(&fields, 1);
    let rule_a = field(&fields, 2);
    let rule_b = field(&fields, 3);
    let header_name = field(&fields, 4);
    let header_value = field(&fields, 5);
    let query_name = field(&fields, 6);
    let query_value = field(&fields, 7);
    let credential = field(&fields, 8);

    let method = canonical_method(&raw_method).ok();
    if let Some(m) = method {
        assert!(METHODS.contains(&m), "method {m:?}");
        assert!(
            m.eq_ignore_ascii_case(&raw_method),
            "{raw_method:?} became {m}"
        );
    }

    let path = match canonical_path(&raw_path) {
        Ok(out) => {
            assert_safe_path(&raw_path, &out);
            assert_join(&out);
            Some(out)
        }
        Err(e) => {
            // Refusals echo agent input escaped, never raw.
            assert!(
                e.0.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "unescaped refusal text: {:?}",
                e.0
            );
            None
        }
    };

    check_rule(&rule_a, method, path.as_deref(), &raw_method, &raw_path);
    check_rule(&rule_b, method, path.as_deref(), &raw_method, &raw_path);

    let credential = (!credential.is_empty()).then_some(credential.as_str());
    let headers = vec![
        (header_name.clone(), header_value.clone()),
        ("Accept".to_owned(), "*/*".to_owned()),
    ];
    if let Ok(out) = check_headers(&headers, credential) {
        for (name, value) in &out {
            assert_eq!(
                *name,
                name.to_ascii_lowercase(),
                "header name not lowercased"
            );
            for forbidden in [
                "host",
                "authorization",
                "cookie",
                "content-length",
                "transfer-encoding",
                "connection",
                "expect",
                "te",
                "upgrade",
            ] {
                assert_ne!(name, forbidden, "forbidden header {name:?} accepted");
            }
            assert!(
                !name.starts_with("proxy-"),
                "proxy header {name:?} accepted"
            );
            assert!(
                credential.is_none_or(|c| !c.eq_ignore_ascii_case(name)),
                "credential header {name:?} accepted"
            );
            assert!(
                !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
                "CR/LF/NUL in header value accepted"
            );
        }
    }
    let query = vec![(query_name.clone(), query_value.clone())];
    if let Ok(out) = check_query(&query, credential) {
        assert_eq!(out, query, "check_query changed its input");
        assert!(
            credential.is_none_or(|c| !c.eq_ignore_ascii_case(&query_name)),
            "credential query name {query_name:?} accepted"
        );
        assert!(
            !query_name.eq_ignore_ascii_case("_method"),
            "_method accepted"
        );
        assert!(
            !query_value.chars().any(char::is_control),
            "control character in query value accepted"
        );
    }
});
