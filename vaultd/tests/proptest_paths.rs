//! Property: the path matched is the path sent (DESIGN.md, "Rules of the proxy
//! path", 1 and 2).
//!
//! Paths are generated from a grammar that mixes ordinary segments with
//! everything the canonicalizer must refuse (dot segments raw, encoded and
//! doubly encoded, `;` suffixes, empty segments, encoded slashes and
//! backslashes, lowercase or broken escapes, `?`, `#`, spaces, non-ASCII,
//! absolute URLs), so that both acceptance and refusal are exercised: the test
//! checks that a fair share of the generated paths is accepted.
//!
//! For every path `canonical_path` accepts:
//! - the canonical path is the input, byte for byte;
//! - `join_url` builds a URL for every service base (with and without a path
//!   prefix, with a trailing '/', with a port) and that URL keeps the base's
//!   scheme, host and port, has no userinfo, query or fragment, and its path
//!   is exactly the base prefix followed by the matched path, also after the
//!   URL is serialized and parsed again (what goes on the wire);
//! - a rule naming that exact path matches it, and the rule `GET /**`
//!   matches it, so what is matched is the same string that is sent.
//!
//! Deterministic: a fixed RNG seed, 2000 cases.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use vaultd::proxy::join_url;
use vaultd::proxy::request::{Rule, canonical_path};

/// Service bases and the prefix every URL built on them must keep.
const BASES: [(&str, &str); 5] = [
    ("https://api.example.com", ""),
    ("https://api.example.com/", ""),
    ("https://api.example.com/v3", "/v3"),
    ("https://api.example.com/v3/", "/v3"),
    ("https://127.0.0.1:8443/a/b", "/a/b"),
];

/// Segments that are fine on their own.
const SAFE: &[&str] = &[
    "repos",
    "o",
    "r",
    "issues",
    "42",
    "a.b",
    "...x",
    "x..",
    "v1.2",
    "~user",
    "a-b_c",
    "caf%C3%A9",
    "%20x",
    "x%3Ay",
    "x%25",
    "a;b=c",
    "x;",
    "@me",
    "k:v",
    "%E2%82%AC",
    "!$&'()*+,=",
    "%2Bplus",
    "x%3B",
];

/// Segments (or fragments) the canonicalizer must refuse.
const HOSTILE: &[&str] = &[
    ".",
    "..",
    "...",
    ". ",
    ".%20",
    "%2E",
    "%2e",
    "%2E%2E",
    ".%2E",
    "%252E",
    "%252e%252e",
    "..;",
    "..;x=1",
    ";x",
    "%3Bx",
    "%2F",
    "%2f",
    "%5C",
    "\\",
    "%00",
    "%0A",
    "%0d",
    "%",
    "%4",
    "%G1",
    "%41",
    "%c3%a9",
    "%C0%AE",
    "%EF%BC%8E",
    "%E2%80%A4",
    "a?b",
    "a#b",
    "a b",
    "é",
    "\u{0}",
    "\t",
    "x\r\ny",
];

/// One segment: mostly safe, sometimes hostile, sometimes empty (which
/// makes a "//"), sometimes a safe segment with a hostile suffix.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(SAFE).prop_map(str::to_owned),
        4 => "[A-Za-z0-9._~-]{1,8}",
        2 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => (prop::sample::select(SAFE), prop::sample::select(HOSTILE))
            .prop_map(|(a, b)| format!("{a}{b}")),
    ]
}

/// A whole path: a start (usually '/'), 0..8 segments, optionally a trailing '/'.
fn path() -> impl Strategy<Value = String> {
    let start = prop_oneof![
        20 => Just("/"),
        1 => Just(""),
        1 => Just("//"),
        1 => Just("https://evil.example/"),
        1 => Just("http:"),
        1 => Just("\\"),
    ];
    (start, prop::collection::vec(segment(), 0..8), any::<bool>()).prop_map(
        |(start, segments, trailing)| {
            let mut p = format!("{start}{}", segments.join("/"));
            if trailing {
                p.push('/');
            }
            p
        },
    )
}

fn check(raw: &str) -> Result<bool, TestCaseError> {
    let Ok(out) = canonical_path(raw) else {
        return Ok(false);
    };
    prop_assert_eq!(&out, raw, "canonical_path changed its input");
    prop_assert!(
        out.starts_with('/') && !out.contains("//"),
        "accepted {out:?}"
    );

    for (base_text, prefix) in BASES {
        let base = url::Url::parse(base_text).expect("base URL");
        let url = join_url(&base, &out).map_err(|e| {
            TestCaseError::fail(format!(
                "accepted path {out:?} cannot be sent on {base_text}: {e}"
            ))
        })?;
        prop_assert_eq!(url.scheme(), "https");
        prop_assert_eq!(url.host_str(), base.host_str(), "{}: host changed", url);
        prop_assert_eq!(
            url.port_or_known_default(),
            base.port_or_known_default(),
            "{}: port changed",
            url
        );
        prop_assert!(
            url.username().is_empty() && url.password().is_none(),
            "{url}: userinfo"
        );
        prop_assert!(
            url.query().is_none() && url.fragment().is_none(),
            "{url}: query or fragment"
        );
        // The path sent is the base prefix followed by exactly the path matched.
        let sent = url.path().strip_prefix(prefix);
        prop_assert_eq!(sent, Some(out.as_str()), "{} is not {}{}", url, prefix, out);
        prop_assert!(
            url.path().starts_with(&format!("{prefix}/")),
            "{url} left the prefix {prefix:?}"
        );
        // ... and stays so once serialized and parsed again.
        let wire = url::Url::parse(url.as_str()).expect("a built URL re-parses");
        prop_assert_eq!(wire.path(), url.path(), "{} changes when re-parsed", url);
        prop_assert_eq!(wire.host_str(), base.host_str());
        prop_assert_eq!(wire.port_or_known_default(), base.port_or_known_default());
    }

    // The string matched by rules is that same string.
    if !out.contains('*') {
        let exact = Rule::parse(&format!("GET {out}")).map_err(|e| {
            TestCaseError::fail(format!("accepted path {out:?} is not a valid rule: {e}"))
        })?;
        prop_assert!(
            exact.matches("GET", &out),
            "rule {:?} does not match its own path",
            exact.as_str()
        );
        prop_assert!(!exact.matches("POST", &out));
    }
    let any = Rule::parse("GET /**").expect("rule");
    prop_assert!(any.matches("GET", &out), "GET /** does not match {out:?}");
    Ok(true)
}

#[test]
fn accepted_paths_are_sent_exactly_and_stay_under_the_base() {
    let config = Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let accepted = std::cell::Cell::new(0u32);
    let refused = std::cell::Cell::new(0u32);
    runner
        .run(&path(), |raw| {
            if check(&raw)? {
                accepted.set(accepted.get() + 1);
            } else {
                refused.set(refused.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (a, r) = (accepted.get(), refused.get());
    println!("accepted {a}, refused {r}");
    // Both sides of the canonicalizer are exercised.
    assert!(
        a * 5 >= a + r,
        "only {a} of {} generated paths accepted",
        a + r
    );
    assert!(
        r * 5 >= a + r,
        "only {r} of {} generated paths refused",
        a + r
    );
}

#[test]
fn known_hostile_paths_are_refused() {
    // The grammar's hostile pieces really are refused on their own, so the
    // property above is not vacuous about them.
    for h in HOSTILE {
        let raw = format!("/a/{h}/b");
        assert!(canonical_path(&raw).is_err(), "{raw:?} accepted");
    }
    for s in SAFE {
        let raw = format!("/a/{s}/b");
        assert!(canonical_path(&raw).is_ok(), "{raw:?} refused");
    }
}
