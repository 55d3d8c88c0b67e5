//! The request checker: method, path, headers and query of an agent's `execute`
//! call are checked here before any policy rule is consulted, and policy rules
//! (`METHOD PATH`) are parsed and matched here.
//!
//! # Refuse, never repair
//!
//! The agent is the attacker. Every check in this module either accepts its
//! input exactly as given or refuses it with a `BadRequest` that says what was
//! wrong and what to send instead. Nothing is decoded, re-cased, resolved or
//! "cleaned up": the string `canonical_path` returns is byte for byte the
//! string it was given, and it is both the string the policy rules are matched
//! against and the string appended to the service's base URL. If we repaired a
//! path (resolved `..`, collapsed `//`, decoded `%2F`), the bytes we matched
//! and the bytes some upstream server interprets could drift apart, and every
//! drift is a way around the policy.
//!
//! So a path is accepted only when its meaning cannot differ between vaultd and
//! any reasonable upstream parser:
//!
//! - it starts with `/`, is at most 8192 bytes and has no empty segment except
//!   an optional trailing `/` (no `//`, so no `//host` authority form);
//! - it is printable ASCII made only of RFC 3986 path characters (unreserved,
//!   sub-delims, `:`, `@`, `/` and `%`): no control characters, NUL, space,
//!   `?` (the query has its own field), `#`, backslash or non-ASCII;
//! - every `%` starts a `%XX` escape with two uppercase hex digits, which does
//!   not encode `/`, `\`, a control character, an unreserved character
//!   (letters, digits, `-._~`: those must be sent as themselves, so each path
//!   has one spelling) or another escape (`%25XX`: double encoding); the
//!   decoded bytes are valid UTF-8 (no overlong `%C0%AE`) and contain no
//!   character that Unicode normalization or "best fit" mapping turns into a
//!   dot, slash or backslash (`%EF%BC%8E`, fullwidth full stop);
//! - no segment is a dot segment: `.`, `..` (or only dots and trailing
//!   spaces, which Windows servers strip), whether raw or encoded, and also
//!   when followed by a `;` parameter suffix (`/..;/x`, which Tomcat-style
//!   servers resolve); no segment starts with `;` (an empty segment with
//!   parameters).
//!
//! Headers and query parameters are checked so that the agent can never set
//! the credential, the host (`Host`, `X-Host`, `X-Original-Host`,
//! `X-Forwarded-*`), `Proxy` (httpoxy), framing or hop-by-hop headers, anything that
//! would make the upstream see a different method or path than the one the
//! policy checked (`X-HTTP-Method-Override`, `X-Original-URL`, `_method` as a
//! query parameter in any spelling PHP folds to it, or as a form field), or
//! `Range` (a partial response could slice an echoed credential into pieces the
//! response scrubber cannot recognize).
//!
//! Rules use literal segments (byte-for-byte, case-sensitive; a deny rule
//! also matches the spellings lenient servers read alike, see [`Rule::denies`]),
//! `*` (exactly one non-empty segment) and `**` (zero or more segments). `Rule::matches`
//! trusts its inputs to come from `canonical_method` and `canonical_path`:
//! given anything else a deny rule could fail to match, so never call it with
//! unchecked input.

use std::fmt;

/// Longest accepted path, in bytes.
const MAX_PATH_LEN: usize = 8192;
/// Longest accepted rule text, in bytes (method, space, path).
const MAX_RULE_LEN: usize = MAX_PATH_LEN + 16;
/// Most headers one request may carry.
const MAX_HEADERS: usize = 64;
/// Longest header name or value, in bytes.
const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most query parameters one request may carry.
const MAX_QUERY_PARAMS: usize = 128;
/// Longest query parameter name or value, in bytes.
const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Longest echo of agent input inside an error message (escaped characters).
const MAX_SHOWN: usize = 80;

/// The methods vaultd proxies, in canonical (uppercase) form.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// The accepted methods, for error messages.
const METHOD_LIST: &str = "GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS";
/// What a rule looks like, for error messages.
const RULE_FORM: &str = "expected \"METHOD /path\" with one space, e.g. \"GET /repos/*/*/issues\" \
     (METHOD uppercase or *, '*' = one segment, '**' = any number of segments)";

/// Path syntax that a decoded non-ASCII character must not turn into under
/// NFKC (which some servers apply to the decoded path): U+FE30 becomes
/// `..`, U+037E `;`, U+FE16 `?`.
const PATH_SYNTAX: [char; 7] = ['.', '/', '\\', '?', '#', ';', '%'];

/// Whether NFKC (compatibility) normalization turns `c` into path syntax or
/// a control character.
fn normalizes_to_syntax(c: char) -> bool {
    use unicode_normalization::UnicodeNormalization as _;
    !c.is_ascii()
        && std::iter::once(c)
            .nfkc()
            .any(|n| PATH_SYNTAX.contains(&n) || n.is_control())
}

/// Decoded characters refused in a path besides [`normalizes_to_syntax`]
/// (which covers the fullwidth and small forms, dot leaders and "a/c"):
/// Windows "best fit" mapping turns these into `/` or `\\` on some
/// servers, and line separators end a line in some logs.
const CONFUSABLES: [char; 8] = [
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{29F8}', // BIG SOLIDUS
    '\u{2216}', // SET MINUS (best fit: backslash)
    '\u{29F5}', // REVERSE SOLIDUS OPERATOR
    '\u{29F9}', // BIG REVERSE SOLIDUS
    '\u{2028}', // LINE SEPARATOR
    '\u{2029}', // PARAGRAPH SEPARATOR
];

/// Why a request was refused; becomes `bad_request: {0}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRequest {}

/// Builds a [`BadRequest`] from a message.
fn bad(message: String) -> BadRequest {
    BadRequest(message)
}

/// Quotes agent input for an error message: only printable ASCII comes out
/// (everything else is escaped as `\n`, `\u{0}`, `\u{e9}`...), and the echo is
/// cut after about [`MAX_SHOWN`] characters.
fn show(s: &str) -> String {
    let mut out = String::with_capacity(MAX_SHOWN + 6);
    out.push('"');
    let mut used = 0;
    for c in s.chars() {
        let escaped = c.escape_default();
        if used + escaped.len() > MAX_SHOWN {
            out.push_str("\"...");
            return out;
        }
        used += escaped.len();
        out.extend(escaped);
    }
    out.push('"');
    out
}

/// Names a byte for an error message, never echoing it raw when it is not
/// printable ASCII.
fn show_byte(b: u8) -> String {
    match b {
        0 => "NUL (\\x00)".to_owned(),
        b'\r' => "CR (\\x0D)".to_owned(),
        b'\n' => "LF (\\x0A)".to_owned(),
        b'\t' => "TAB (\\x09)".to_owned(),
        0x21..=0x7e => format!("'{}'", char::from(b)),
        _ => format!("\\x{b:02X}"),
    }
}

/// RFC 7230 `tchar`: the characters of a method or header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// RFC 3986 unreserved characters: never percent-encoded in a canonical path.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters allowed raw in a path: RFC 3986 `pchar` plus `/` and `%`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'%'
        )
}

/// Value of one hex digit, either case.
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes the two hex digits at `s[j]` and `s[j + 1]`, if both are hex.
fn hex_pair(s: &[u8], j: usize) -> Option<u8> {
    let hi = hex_val(*s.get(j)?)?;
    let lo = hex_val(*s.get(j + 1)?)?;
    Some((hi << 4) | lo)
}

/// Decodes the escape `%XX` starting at `i` (where `s[i] == b'%'`), if its two
/// digits are hex.
fn escape_at(s: &[u8], i: usize) -> Option<u8> {
    hex_pair(s, i + 1)
}

/// Canonical method: ASCII-uppercased; only GET HEAD POST PUT PATCH DELETE OPTIONS are accepted.
pub fn canonical_method(raw: &str) -> Result<&'static str, BadRequest> {
    if raw.is_empty() {
        return Err(bad(format!("method is empty; use {METHOD_LIST}")));
    }
    if !raw.bytes().all(is_tchar) {
        return Err(bad(format!(
            "method {} is not a valid HTTP method token; use {METHOD_LIST}",
            show(raw)
        )));
    }
    let upper = raw.to_ascii_uppercase();
    if let Some(method) = METHODS.iter().find(|m| **m == upper) {
        return Ok(*method);
    }
    if upper == "TRACE" || upper == "CONNECT" {
        return Err(bad(format!(
            "method {upper} is never proxied; use {METHOD_LIST}"
        )));
    }
    Err(bad(format!(
        "method {} is not supported; use {METHOD_LIST}",
        show(raw)
    )))
}

/// Checks and canonicalizes a request path; the result is the input, unchanged, or a refusal.
pub fn canonical_path(raw: &str) -> Result<String, BadRequest> {
    check_path(raw, false).map_err(bad)?;
    Ok(raw.to_owned())
}

/// Does `raw` look like `scheme:...` (RFC 3986 scheme followed by a colon)?
fn has_scheme_prefix(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let Some(colon) = bytes.iter().position(|b| *b == b':') else {
        return false;
    };
    let scheme = &bytes[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// The whole-path checks shared by [`canonical_path`] and [`Rule::parse`].
/// With `wildcards`, segments that are exactly `*` or `**` are allowed and any
/// other segment containing `*` is refused as a partial wildcard.
fn check_path(raw: &str, wildcards: bool) -> Result<(), String> {
    if raw.len() > MAX_PATH_LEN {
        return Err(format!(
            "path is {} bytes, over the {MAX_PATH_LEN}-byte limit; send a shorter path",
            raw.len()
        ));
    }
    if raw.is_empty() {
        return Err("path is empty; send a path starting with '/', e.g. \"/repos/o/r\"".to_owned());
    }
    if raw.contains("://") || (!raw.starts_with('/') && has_scheme_prefix(raw)) {
        return Err(format!(
            "path {} is an absolute URL; send only the path below the service's base URL, \
             e.g. \"/repos/o/r\" (scheme and host are fixed by the policy)",
            show(raw)
        ));
    }
    if !raw.starts_with('/') {
        return Err(format!(
            "path {} does not start with '/'; send a path like \"/repos/o/r\"",
            show(raw)
        ));
    }
    if raw.starts_with("//") {
        return Err(format!(
            "path {} starts with \"//\" (a host/authority form); send a path below the \
             service's base URL, e.g. \"/repos/o/r\"",
            show(raw)
        ));
    }
    check_path_bytes(raw)?;
    let rest = &raw[1..];
    let count = rest.split('/').count();
    for (index, segment) in rest.split('/').enumerate() {
        if segment.is_empty() {
            if index + 1 < count {
                return Err(format!(
                    "path {} has an empty segment (\"//\"); remove the extra '/'",
                    show(raw)
                ));
            }
            continue;
        }
        if wildcards {
            if segment == "*" || segment == "**" {
                continue;
            }
            if segment.contains('*') {
                return Err(format!(
                    "segment {} mixes '*' with text; a segment is literal text, '*' (one \
                     segment) or '**' (any number of segments)",
                    show(segment)
                ));
            }
        }
        check_segment(segment)?;
    }
    Ok(())
}

/// Refuses any byte that may not appear raw in a canonical path.
fn check_path_bytes(raw: &str) -> Result<(), String> {
    for (i, b) in raw.bytes().enumerate() {
        if is_path_char(b) {
            continue;
        }
        let why = match b {
            0x80.. => {
                let c = raw[i..]
                    .chars()
                    .next()
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                format!(
                    "contains non-ASCII {}; percent-encode it as UTF-8 (e.g. \"caf%C3%A9\")",
                    show(&c.to_string())
                )
            }
            0x00..=0x1f | 0x7f => format!(
                "contains the control character {}; control characters are never sent",
                show_byte(b)
            ),
            b' ' => "contains a space; encode it as %20".to_owned(),
            b'?' => "contains '?'; put query parameters in the `query` field, not in the path"
                .to_owned(),
            b'#' => "contains '#'; fragments are never sent (a literal '#' is %23)".to_owned(),
            b'\\' => "contains a backslash; backslashes are refused in any form (some servers \
                      read them as '/')"
                .to_owned(),
            _ => format!(
                "contains {}, which must be percent-encoded in a path (as %{b:02X})",
                show_byte(b)
            ),
        };
        return Err(format!("path {} {why}", show(raw)));
    }
    Ok(())
}

/// Checks one non-empty path segment (already known to hold only path bytes).
fn check_segment(segment: &str) -> Result<(), String> {
    let bytes = segment.as_bytes();
    let shown = show(segment);

    // Escape syntax, and the decoded bytes for the semantic checks below.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let Some(value) = escape_at(bytes, i) else {
                return Err(format!(
                    "path segment {shown} has a '%' not followed by two hex digits; \
                     encode a literal '%' as %25"
                ));
            };
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }

    // Dot segments, raw or encoded, also with a `;` (or decoded `?`/`#`)
    // suffix, and dots followed only by spaces (Windows strips those).
    let core_len = decoded
        .iter()
        .position(|b| matches!(b, b';' | b'?' | b'#'))
        .unwrap_or(decoded.len());
    let core = &decoded[..core_len];
    if core.contains(&b'.') && core.iter().all(|b| matches!(b, b'.' | b' ')) {
        return Err(format!(
            "path segment {shown} is a dot segment; dot segments (\".\", \"..\", raw or \
             encoded, also before ';') are refused, not resolved: send the resolved path"
        ));
    }
    if decoded.first() == Some(&b';') {
        return Err(format!(
            "path segment {shown} starts with ';' (an empty segment with parameters, which \
             some servers drop); remove it"
        ));
    }

    // What each escape encodes.
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let escape = &segment[i..i + 3];
        let value = escape_at(bytes, i).unwrap_or(0);
        let why = if value == b'/' {
            Some("is an encoded slash; a '/' inside a segment cannot be sent".to_owned())
        } else if value == b'\\' {
            Some("is an encoded backslash; backslashes are refused in any form".to_owned())
        } else if value < 0x20 || value == 0x7f {
            Some(format!(
                "encodes the control character {}; control characters are never sent",
                show_byte(value)
            ))
        } else if value == b'%' && hex_pair(bytes, i + 3).is_some() {
            Some(format!(
                "followed by {} is double percent-encoding, which is refused; encode \
                 each character once",
                show(&segment[i + 3..i + 5])
            ))
        } else if is_unreserved(value) {
            Some(format!(
                "encodes '{}', which must be sent as itself (one spelling per path, so \
                 rules cannot be sidestepped)",
                char::from(value)
            ))
        } else if escape.bytes().any(|b| b.is_ascii_lowercase()) {
            Some(format!(
                "uses lowercase hex; write percent-escapes with uppercase hex digits ({})",
                escape.to_ascii_uppercase()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!("path segment {shown}: {escape} {why}"));
        }
        i += 3;
    }

    // The decoded bytes: valid UTF-8 (no overlong forms), no C1 controls, no
    // characters that some servers map onto path syntax.
    let text = std::str::from_utf8(&decoded).map_err(|_| {
        format!(
            "path segment {shown} does not decode to valid UTF-8 (overlong or truncated \
             sequences are refused); percent-encode the UTF-8 bytes of the text"
        )
    })?;
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() || CONFUSABLES.contains(c) || normalizes_to_syntax(*c))
    {
        return Err(format!(
            "path segment {shown} decodes to {}, which some servers read as a control \
             character or as path syntax; it is refused",
            show(&c.to_string())
        ));
    }
    Ok(())
}

/// Why the agent may not set this (lowercased) header name, if it may not.
fn forbidden_header(lower: &str) -> Option<&'static str> {
    let why = match lower {
        // `X-Host` and `X-Original-Host` are read as the host by some frameworks.
        "host" | "x-host" | "x-original-host" => "the host is fixed by the service's base URL",
        "authorization" | "cookie" | "cookie2" => {
            "credentials are added by vaultd, never by the agent"
        }
        "connection" | "keep-alive" | "te" | "trailer" | "upgrade" | "http2-settings" => {
            "hop-by-hop headers are managed by vaultd"
        }
        "transfer-encoding" | "content-length" | "expect" => {
            "vaultd frames the request body itself"
        }
        "accept-encoding" => "vaultd controls compression so that it can scrub responses",
        "range" | "if-range" => {
            "a partial response could cut a credential into pieces the scrubber cannot recognize"
        }
        "x-http-method-override" | "x-http-method" | "x-method-override" => {
            "it would make the upstream run another method than the one the policy checked"
        }
        "x-original-url" | "x-rewrite-url" => {
            "it would make the upstream serve another path than the one the policy checked"
        }
        "forwarded" | "via" | "x-real-ip" => "proxy metadata is never set by the agent",
        // `Proxy` becomes HTTP_PROXY in CGI-style servers ("httpoxy").
        "proxy" => "proxy headers are managed by vaultd",
        _ if lower.starts_with("proxy-") => "proxy headers are managed by vaultd",
        _ if lower.starts_with("x-forwarded-") => "proxy metadata is never set by the agent",
        _ => return None,
    };
    Some(why)
}

/// Checks the agent's headers; returns them with lowercased names, in order.
pub fn check_headers(
    headers: &[(String, String)],
    credential_header: Option<&str>,
) -> Result<Vec<(String, String)>, BadRequest> {
    if headers.len() > MAX_HEADERS {
        return Err(bad(format!(
            "{} headers given, over the limit of {MAX_HEADERS}; send fewer headers",
            headers.len()
        )));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if name.is_empty() {
            return Err(bad(
                "a header name is empty; give every header a name".to_owned()
            ));
        }
        if name.len() > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "header name {} is over {MAX_HEADER_BYTES} bytes; use a shorter name",
                show(name)
            )));
        }
        if let Some(b) = name.bytes().find(u8::is_ascii_control) {
            return Err(bad(format!(
                "header name {} contains the control character {}; remove it",
                show(name),
                show_byte(b)
            )));
        }
        if !name.bytes().all(is_tchar) {
            return Err(bad(format!(
                "header name {} is not a valid HTTP token (letters, digits and \
                 !#$%&'*+-.^_`|~ only)",
                show(name)
            )));
        }
        let lower = name.to_ascii_lowercase();
        // CGI-style servers (PHP, WSGI, Rack behind many front ends) read
        // `X_Api_Key` as `X-Api-Key`: names are checked with `_` as `-`.
        let folded = lower.replace('_', "-");
        if let Some(why) = forbidden_header(&folded) {
            return Err(bad(format!(
                "header {} may not be set by the agent: {why}; remove it",
                show(name)
            )));
        }
        if credential_header.is_some_and(|c| c.replace('_', "-").eq_ignore_ascii_case(&folded)) {
            return Err(bad(format!(
                "header {} carries this service's credential, which vaultd adds itself; \
                 remove it",
                show(name)
            )));
        }
        if value.len() > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "value of header {} is {} bytes, over the {MAX_HEADER_BYTES}-byte limit; \
                 send a shorter value",
                show(name),
                value.len()
            )));
        }
        if let Some(b) = value.bytes().find(|b| b.is_ascii_control() && *b != b'\t') {
            return Err(bad(format!(
                "value of header {} contains the control character {}; header values \
                 cannot hold CR, LF, NUL or other control characters",
                show(name),
                show_byte(b)
            )));
        }
        if !value.is_ascii() {
            return Err(bad(format!(
                "value of header {} contains non-ASCII text; encode it (e.g. \
                 percent-encoding or RFC 8187) before sending",
                show(name)
            )));
        }
        if out.iter().any(|(seen, _)| *seen == lower) {
            return Err(bad(format!(
                "header {} is given more than once (names are case-insensitive); send it \
                 once, joining values with \", \"",
                show(name)
            )));
        }
        out.push((lower, value.clone()));
    }
    Ok(out)
}

/// A query parameter name as lenient server frameworks read it (PHP turns
/// `api.key`, `api key` and `api[key` into `api_key`; `api_key[]` names the
/// array `api_key`): leading whitespace trimmed, then each character
/// ASCII-lowercased, with `.`, ` ` and `[` read as `_`. Lazy, so that
/// comparing costs no allocation (a form body may hold millions of names).
fn fold_query_name(name: &str) -> impl Iterator<Item = char> + '_ {
    name.trim_start_matches([' ', '\t'])
        .chars()
        .map(|c| match c {
            '.' | ' ' | '[' => '_',
            _ => c.to_ascii_lowercase(),
        })
}

/// Does a lenient server framework read the parameter `name` (query or form
/// field) as the parameter `target`?
fn names_param(name: &str, target: &str) -> bool {
    let folds_to_target = |n: &str| fold_query_name(n).eq(fold_query_name(target));
    if name == target || name.eq_ignore_ascii_case(target) || folds_to_target(name) {
        return true;
    }
    match name.split_once('[') {
        Some((base, _)) => folds_to_target(base),
        None => false,
    }
}

/// Checks the agent's query parameters; returns them as given (the caller url-encodes them).
pub fn check_query(
    query: &[(String, String)],
    credential_query: Option<&str>,
) -> Result<Vec<(String, String)>, BadRequest> {
    if query.len() > MAX_QUERY_PARAMS {
        return Err(bad(format!(
            "{} query parameters given, over the limit of {MAX_QUERY_PARAMS}; send fewer",
            query.len()
        )));
    }
    for (name, value) in query {
        if name.is_empty() {
            return Err(bad(
                "a query parameter name is empty; give every parameter a name".to_owned(),
            ));
        }
        if name.len() > MAX_QUERY_BYTES || value.len() > MAX_QUERY_BYTES {
            return Err(bad(format!(
                "query parameter {} has a name or value over {MAX_QUERY_BYTES} bytes; send \
                 less",
                show(name)
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(bad(format!(
                "query parameter name {} contains a control character; remove it",
                show(name)
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(bad(format!(
                "value of query parameter {} contains a control character (CR, LF, NUL...); \
                 remove it",
                show(name)
            )));
        }
        if let Some(credential) = credential_query
            && names_param(name, credential)
        {
            return Err(bad(format!(
                "query parameter {} carries this service's credential, which vaultd adds \
                 itself; remove it",
                show(name)
            )));
        }
        if names_param(name, METHOD_OVERRIDE) {
            return Err(bad(format!(
                "query parameter {} would make the upstream run another method than the \
                 one the policy checked; remove it and use `method`",
                show(name)
            )));
        }
    }
    Ok(query.to_vec())
}

/// The form field and query parameter that Laravel, Symfony, Rails and
/// others read as the request's real method.
const METHOD_OVERRIDE: &str = "_method";

/// Checks the body of a form (by the Content-Type among the checked
/// `headers`, names lowercased): a field that names `_method` would make the
/// upstream run another method than the one the policy checked, as the
/// query parameter would. Any other body is the API's business.
pub fn check_body(headers: &[(String, String)], body: &[u8]) -> Result<(), BadRequest> {
    let Some((_, content_type)) = headers.iter().find(|(n, _)| n == "content-type") else {
        return Ok(());
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let found = match media.as_str() {
        "application/x-www-form-urlencoded" => body
            .split(|&b| b == b'&')
            .map(urlencoded_name_head)
            .find(|(head, len)| names_method_override(&head[..*len]))
            .map(|(head, len)| String::from_utf8_lossy(&head[..len]).into_owned()),
        "multipart/form-data" => multipart_field_names(body)
            .find(|name| names_method_override(name))
            .map(|name| String::from_utf8_lossy(name).into_owned()),
        _ => None,
    };
    match found {
        Some(name) => Err(bad(format!(
            "form field {} would make the upstream run another method than the one the \
             policy checked; remove it and use `method`",
            show(&name)
        ))),
        None => Ok(()),
    }
}

/// [`names_param`]`(name, "_method")` for a form field, without allocating
/// (a body of 10 MiB may hold millions of names): leading blanks dropped,
/// then `_`, `.` or `[`, then `method` in any case, then the end or `[`.
/// (It also takes `[method[...]`, which `names_param` does not: refusing
/// more is the safe side.)
fn names_method_override(name: &[u8]) -> bool {
    let start = name
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    match &name[start..] {
        [first, m @ ..] if m.len() >= 6 => {
            matches!(first, b'_' | b'.' | b'[')
                && m[..6].eq_ignore_ascii_case(b"method")
                && m.get(6).is_none_or(|&b| b == b'[')
        }
        _ => false,
    }
}

/// Bytes of a multipart field name (after leading blanks) that are looked
/// at: `_method` and the byte after it tell every spelling of it apart, and
/// the bound keeps a body full of `name=` to linear work.
const MAX_FIELD_NAME: usize = 8;

/// The start of a urlencoded field's name (up to its `=`), decoded as a
/// form is (`+` a space, `%XX` a byte), leading blanks dropped, at most
/// [`MAX_FIELD_NAME`] bytes: all [`names_method_override`] needs, without
/// allocating (a 10 MiB form may hold millions of fields).
fn urlencoded_name_head(field: &[u8]) -> ([u8; MAX_FIELD_NAME], usize) {
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    let mut head = [0u8; MAX_FIELD_NAME];
    let (mut len, mut i) = (0, 0);
    while len < MAX_FIELD_NAME && i < field.len() && field[i] != b'=' {
        let (b, step) = match field[i] {
            b'+' => (b' ', 1),
            b'%' => match (hex(field.get(i + 1)), hex(field.get(i + 2))) {
                (Some(hi), Some(lo)) => ((hi * 16 + lo) as u8, 3),
                _ => (b'%', 1),
            },
            b => (b, 1),
        };
        i += step;
        if len == 0 && (b == b' ' || b == b'\t') {
            continue;
        }
        head[len] = b;
        len += 1;
    }
    (head, len)
}

/// Every `name=` parameter in a multipart body (of each part's
/// `Content-Disposition`, but looked for everywhere, so that no boundary
/// trick hides one): quoted or bare, up to its end, leading blanks kept (as
/// [`names_method_override`] reads them), then at most [`MAX_FIELD_NAME`] bytes.
fn multipart_field_names(body: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    const KEY: &[u8] = b"name=";
    let mut at = 0;
    std::iter::from_fn(move || {
        let found = body[at..]
            .windows(KEY.len())
            .position(|w| w.eq_ignore_ascii_case(KEY))?;
        let start = at + found + KEY.len();
        at = start;
        let rest = &body[start..];
        let (rest, quoted) = match rest.strip_prefix(b"\"") {
            Some(inner) => (inner, true),
            None => (rest, false),
        };
        let blanks = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let end = blanks
            + rest[blanks..]
                .iter()
                .take(MAX_FIELD_NAME)
                .position(|&b| {
                    if quoted {
                        b == b'"'
                    } else {
                        matches!(b, b';' | b'\r' | b'\n' | b' ' | b'\t')
                    }
                })
                .unwrap_or((rest.len() - blanks).min(MAX_FIELD_NAME));
        Some(&rest[..end])
    })
}

/// One segment of a rule's path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Matches exactly this segment, byte for byte.
    Literal(String),
    /// `*`: exactly one non-empty segment.
    One,
    /// `**`: zero or more segments.
    Many,
}

/// One policy rule: `METHOD PATH` as written in the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule as written.
    text: String,
    /// The method, or `None` for `*` (any).
    method: Option<&'static str>,
    /// The path pattern, one entry per segment after the leading '/'.
    segments: Vec<Pattern>,
    /// The same with each literal as [`lenient`] reads it, for deny rules.
    lenient: Vec<Pattern>,
}

impl Rule {
    /// Parses a rule such as "GET /repos/*/*/issues"; the error says what is wrong and shows the expected form.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let fail = |why: String| format!("rule {}: {why}; {RULE_FORM}", show(text));
        if text.len() > MAX_RULE_LEN {
            return Err(fail(format!("it is over {MAX_RULE_LEN} bytes")));
        }
        let Some((method_text, path)) = text.split_once(' ') else {
            return Err(fail("there is no space between METHOD and PATH".to_owned()));
        };
        let method = if method_text == "*" {
            None
        } else if method_text.is_empty() {
            return Err(fail("METHOD is missing".to_owned()));
        } else if let Some(m) = METHODS.iter().find(|m| **m == method_text) {
            Some(*m)
        } else {
            let upper = method_text.to_ascii_uppercase();
            let why = if upper == "TRACE" || upper == "CONNECT" {
                format!("method {upper} is never proxied")
            } else if METHODS.contains(&upper.as_str()) {
                format!("methods are written in uppercase: write {upper}")
            } else {
                format!(
                    "method {} is not one of {METHOD_LIST} or *",
                    show(method_text)
                )
            };
            return Err(fail(why));
        };
        if path.starts_with(' ') {
            return Err(fail(
                "there is more than one space between METHOD and PATH".to_owned(),
            ));
        }
        check_path(path, true).map_err(fail)?;
        let segments: Vec<Pattern> = path[1..]
            .split('/')
            .map(|segment| match segment {
                "*" => Pattern::One,
                "**" => Pattern::Many,
                literal => Pattern::Literal(literal.to_owned()),
            })
            .collect();
        let read_leniently = segments
            .iter()
            .map(|p| match p {
                Pattern::Literal(literal) => Pattern::Literal(lenient(literal)),
                other => other.clone(),
            })
            .collect();
        Ok(Rule {
            text: text.to_owned(),
            method,
            segments,
            lenient: read_leniently,
        })
    }

    /// The rule as written (for `policy show`, audit records and `list_services`).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the canonical `method` and the canonical `path` (from [`canonical_path`]) match this rule.
    #[must_use]
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.candidate(method, path)
            .is_some_and(|segments| glob_match(&self.segments, &segments))
    }

    /// `path`'s segments when `method` is this rule's, else `None`.
    fn candidate<'p>(&self, method: &str, path: &'p str) -> Option<Vec<&'p str>> {
        if self.method.is_some_and(|m| m != method) {
            return None;
        }
        Some(path.strip_prefix('/')?.split('/').collect())
    }

    /// [`Rule::matches`] for a deny rule, which matches every spelling of a
    /// path that some server reads as the same one: each segment as
    /// [`lenient`] reads it (`/Secret`, `/secret.`, `/secret;x`, `/secret%20`
    /// are all `/secret`), and with the trailing `/` removed or added (most
    /// servers route `/x/` and `/x` alike). A `GET` deny rule also denies
    /// `HEAD`, which most frameworks answer by running the GET handler.
    /// Deny fails closed; allow rules match exactly.
    #[must_use]
    pub fn denies(&self, method: &str, path: &str) -> bool {
        let method = if method == "HEAD" && self.method == Some("GET") {
            "GET"
        } else {
            method
        };
        let Some(segments) = self.candidate(method, path) else {
            return false;
        };
        let read: Vec<String> = segments.iter().map(|s| lenient(s)).collect();
        let mut segments: Vec<&str> = read.iter().map(String::as_str).collect();
        if glob_match(&self.lenient, &segments) {
            return true;
        }
        // The other form: a trailing `/` is an empty last segment.
        match segments.last() {
            Some(&"") if segments.len() > 1 => {
                segments.pop();
            }
            Some(&"") => return false, // the root, `/`
            _ => segments.push(""),
        }
        glob_match(&self.lenient, &segments)
    }
}

/// A canonical path segment as the most lenient servers read it, for deny
/// rules: percent-decoded, cut at a `;` parameter (Tomcat, Spring), trailing
/// dots and spaces stripped (Windows), ASCII-lowercased (case-insensitive
/// routes, such as GitHub's owner and repository names). A segment that
/// would read as empty stays as it is, so that only a real `/` ends a path.
fn lenient(segment: &str) -> String {
    let decoded: Vec<u8> = percent_decode(segment.as_bytes());
    let cut = match decoded.iter().position(|&b| b == b';') {
        Some(0) | None => &decoded[..],
        Some(at) => &decoded[..at],
    };
    let trimmed = match cut.iter().rposition(|&b| b != b'.' && b != b' ') {
        Some(last) => &cut[..=last],
        None => cut,
    };
    String::from_utf8_lossy(trimmed).to_ascii_lowercase()
}

/// `bytes` with every `%XX` decoded (the canonical path has no other `%`).
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Matches path segments against a pattern with the classic two-pointer glob
/// algorithm: on a mismatch, only the most recent `**` is retried one segment
/// further. Every other pattern element matches exactly one segment, so this
/// is complete, and it runs in O(pattern × segments) time at worst (usually
/// linear), whatever the number of `**`.
fn glob_match(pattern: &[Pattern], segments: &[&str]) -> bool {
    let (mut p, mut s) = (0, 0);
    // (pattern index after the last `**`, segment index that `**` has reached)
    let mut retry: Option<(usize, usize)> = None;
    while s < segments.len() {
        let step = match pattern.get(p) {
            Some(Pattern::Many) => {
                retry = Some((p + 1, s));
                p += 1;
                continue;
            }
            Some(Pattern::One) => !segments[s].is_empty(),
            Some(Pattern::Literal(literal)) => literal == segments[s],
            None => false,
        };
        if step {
            p += 1;
            s += 1;
        } else if let Some((after_many, reached)) = retry {
            p = after_many;
            s = reached + 1;
            retry = Some((after_many, s));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|element| *element == Pattern::Many)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The characters the hand-written list held before NFKC was checked:
    /// each is still refused, by [`normalizes_to_syntax`] now.
    #[test]
    fn nfkc_covers_the_fullwidth_and_small_forms() {
        for c in [
            '\u{2024}', '\u{2025}', '\u{2026}', '\u{FE52}', '\u{FF0E}', '\u{FF0F}', '\u{FE68}',
            '\u{FF3C}', '\u{2100}', '\u{2101}', '\u{2105}', '\u{2106}', '\u{FF1F}', '\u{FE56}',
            '\u{FF03}', '\u{FE5F}', '\u{FF1B}', '\u{FE54}', '\u{FF05}', '\u{FE6A}',
        ] {
            assert!(normalizes_to_syntax(c), "{c:?}");
            assert!(!CONFUSABLES.contains(&c), "{c:?} is listed twice");
        }
        for c in CONFUSABLES {
            assert!(
                !normalizes_to_syntax(c) || c.is_control(),
                "{c:?} needs no listing"
            );
        }
    }

    fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Error text must be printable ASCII only (no raw control bytes, no
    /// non-ASCII) and short.
    fn assert_clean_message(message: &str) {
        assert!(
            message.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "message has raw non-printable bytes: {message:?}"
        );
        assert!(message.len() < 600, "message too long: {message}");
    }

    // ---------------------------------------------------------------- methods

    #[test]
    fn methods_accepted_and_uppercased() {
        for (raw, want) in [
            ("GET", "GET"),
            ("get", "GET"),
            ("Get", "GET"),
            ("head", "HEAD"),
            ("POST", "POST"),
            ("put", "PUT"),
            ("pAtCh", "PATCH"),
            ("DELETE", "DELETE"),
            ("options", "OPTIONS"),
        ] {
            assert_eq!(canonical_method(raw), Ok(want), "{raw}");
        }
    }

    #[test]
    fn methods_refused() {
        for raw in [
            "",
            " GET",
            "GET ",
            "G ET",
            "GET\r\n",
            "GET\0",
            "GET\r\nX-Evil: 1",
            "G\u{c9}T",
            "PROPFIND",
            "MKCOL",
            "LINK",
            "*",
            "GET/",
            "GETX",
            "DEBUG",
            "TRACK",
        ] {
            let err = canonical_method(raw).expect_err(raw);
            assert_clean_message(&err.0);
        }
    }

    #[test]
    fn trace_and_connect_say_never_proxied() {
        for raw in ["TRACE", "trace", "CONNECT", "Connect"] {
            let err = canonical_method(raw).expect_err(raw);
            assert!(err.0.contains("never proxied"), "{err:?}");
        }
    }

    // ------------------------------------------------------------------ paths

    /// Hostile paths from the path-traversal, request-smuggling and
    /// URL-confusion cheat sheets; every one must be refused.
    const HOSTILE_PATHS: &[&str] = &[
        // not a path at all
        "",
        "x",
        "a/b",
        "repos/o/r",
        "*",
        "http://evil.com/",
        "https://evil.com/x",
        "HTTP://evil.com",
        "http:/evil.com",
        "javascript:alert(1)",
        "localhost:8080/x",
        "/http://evil.com/x",
        "/a/https://evil.com",
        // authority forms and empty segments
        "//evil.com/x",
        "//evil.com",
        "///x",
        "//",
        "/a//b",
        "/a/b//",
        "/a//",
        // dot segments, raw
        "/.",
        "/..",
        "/./x",
        "/../x",
        "/a/.",
        "/a/..",
        "/a/./b",
        "/a/../b",
        "/a/b/../../../etc/passwd",
        "/...",
        "/a/..../b",
        // dot segments, percent-encoded (either case, mixed)
        "/%2e",
        "/%2E",
        "/%2e%2e/",
        "/%2E%2E/x",
        "/%2E%2e/x",
        "/%2e%2E/x",
        "/.%2e/x",
        "/%2e./x",
        "/.%2E/x",
        "/a/%2e%2e/b",
        "/a/%2e/b",
        // doubly encoded dots
        "/%252e%252e/x",
        "/%252E%252E/x",
        "/.%252e/x",
        "/%25252e%25252e/x",
        // dot segments before a ';' suffix (raw or encoded ';')
        "/..;/x",
        "/.;/x",
        "/a/.;/b",
        "/a/..;jsessionid=1/b",
        "/%2e%2e;foo/x",
        "/%2e%2e%3b/x",
        "/..%3B/x",
        "/..%3b/x",
        "/.%3B",
        // dots with trailing spaces (Windows strips them)
        "/..%20/x",
        "/.%20%20/x",
        // dots before an encoded '?' or '#'
        "/..%3F/x",
        "/..%23/x",
        // empty segment with parameters
        "/;/x",
        "/a/;x/b",
        "/%3B/x",
        // encoded slash and backslash, single and double
        "/a%2fb",
        "/a%2Fb",
        "/a%252fb",
        "/a%252Fb",
        "/..%2f",
        "/..%2F..%2Fetc%2Fpasswd",
        "/%2F%2Fevil.com",
        "/a\\b",
        "/a\\..\\b",
        "/\\evil.com",
        "/..\\",
        "/a%5cb",
        "/a%5Cb",
        "/a%255cb",
        "/a%255Cb",
        "/..%5c",
        // query and fragment
        "/a?x=1",
        "/a?",
        "/?",
        "/a#f",
        "/a#",
        "/#",
        // NUL and control characters, raw and encoded
        "/a%00",
        "/a%00.json",
        "/a%2500",
        "/a\0",
        "/a\0b",
        "/a\r\nHost: x",
        "/a\r\n\r\nGET /admin HTTP/1.1",
        "/a\n",
        "/a\r",
        "/a\t",
        "/a\x7f",
        "/a\x1b[31m",
        "/a%0d%0aHost:%20x",
        "/a%0D%0A",
        "/a%0a",
        "/a%09",
        "/a%7F",
        "/a%1B",
        // non-ASCII, raw
        "/caf\u{e9}",
        "/\u{202e}x",
        "/a\u{2028}b",
        "/\u{ff0e}\u{ff0e}/x",
        // encoded text that is not clean UTF-8, or maps onto path syntax
        "/%C0%AE%C0%AE/x",
        "/a/%c0%ae%c0%ae/x",
        "/%C0%AF",
        "/%E0%80%AE/x",
        "/%C3",
        "/%E9t%E9",
        "/%EF%BC%8E%EF%BC%8E/x",
        "/a%EF%BC%8Fb",
        "/a%E2%88%95b",
        "/a%EF%BC%BCb",
        "/%E2%80%A5/x",
        "/a%C2%85b",
        "/a%E2%80%A8b",
        // ... or NFKC turns into dot segments, `;`, `?` (U+FE30, U+FE19,
        // U+037E, U+FE14, U+FE16, U+2047, U+2488 "1.")
        "/v1/x/%EF%B8%B0/admin",
        "/%EF%B8%99/x",
        "/v1/..%CD%BE/admin",
        "/a%EF%B8%94b",
        "/a%EF%B8%96b",
        "/a%E2%81%87b",
        "/%E2%92%88",
        // bad percent syntax
        "/a%zz",
        "/a%2",
        "/a%",
        "/%",
        "/a%g0",
        "/a%0g",
        "/a%%41",
        "/a%u002e",
        // encoded unreserved characters (two spellings of one path)
        "/a%41",
        "/%61dmin",
        "/secret%73",
        "/%7Euser",
        "/a%2Db",
        "/a%5Fb",
        "/a%2Eb",
        // lowercase hex
        "/a%3a",
        "/a%2b",
        "/caf%c3%a9",
        // spaces and characters that must be encoded
        "/a b",
        "/ ",
        "/a\"b",
        "/a<b>",
        "/a{b}",
        "/a|b",
        "/a^b",
        "/a`b",
        "/a[0]",
    ];

    #[test]
    fn hostile_paths_are_refused() {
        assert!(HOSTILE_PATHS.len() >= 60);
        for raw in HOSTILE_PATHS {
            match canonical_path(raw) {
                Ok(out) => panic!("accepted hostile path {raw:?} as {out:?}"),
                Err(err) => assert_clean_message(&err.0),
            }
        }
    }

    #[test]
    fn accepted_paths_are_returned_byte_for_byte() {
        for raw in [
            "/",
            "/repos/o/r/issues",
            "/repos/o/r/issues/",
            "/a%20b",
            "/a@b",
            "/a:b",
            "/v1/x.json",
            "/a/",
            "/~user",
            "/a;b",
            "/a;b=c;d",
            "/a/b;v=1/c",
            "/.well-known/openid-configuration",
            "/a..b",
            "/..a",
            "/a.",
            "/a...",
            "/.a.",
            "/caf%C3%A9",
            "/%E2%82%AC",
            // non-ASCII that NFKC turns into letters, digits or a space
            "/%EF%BC%A1",
            "/%C2%B2",
            "/%C2%A0",
            "/%E6%97%A5%E6%9C%AC",
            "/a%2Bb",
            "/a%40b",
            "/a%3Ab",
            "/a%3Bb",
            "/a%3Fb",
            "/a%23b",
            "/100%25",
            "/a%25b",
            "/a%25zz",
            "/a%22b%22",
            "/a%7Bb%7D",
            "/v1/models/gemini:generateContent",
            "/!$&'()*+,=",
            "/a-b_c.d~e",
            "/x/*",
            "/x/**",
            "/@me",
            "/user@example.com/keys",
            "/-",
            "/_",
            "/0/1/2",
        ] {
            assert_eq!(canonical_path(raw).as_deref(), Ok(raw), "{raw:?}");
        }
    }

    #[test]
    fn path_length_limit() {
        let longest = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert_eq!(canonical_path(&longest).as_deref(), Ok(longest.as_str()));
        let too_long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        let err = canonical_path(&too_long).expect_err("too long");
        assert!(err.0.contains("8192"), "{err:?}");
        assert_clean_message(&err.0);
    }

    #[test]
    fn path_messages_explain_and_escape() {
        let cases = [
            ("/a?x=1", "query"),
            ("/a/../b", "dot segment"),
            ("/%2e%2e/x", "dot segment"),
            ("/..;/x", "dot segment"),
            ("/a%2Fb", "encoded slash"),
            ("/a%5Cb", "encoded backslash"),
            ("/a%252fb", "double percent-encoding"),
            ("/a%00", "NUL"),
            ("/a\r\nHost: x", "CR"),
            ("//evil.com/x", "//"),
            ("http://evil.com/", "absolute URL"),
            ("x", "start with '/'"),
            ("/a%zz", "two hex digits"),
            ("/a b", "%20"),
            ("/caf\u{e9}", "percent-encode"),
            ("/a%41", "as itself"),
            ("/a%3a", "uppercase"),
            ("/a//b", "empty segment"),
            ("/%C0%AE", "UTF-8"),
        ];
        for (raw, needle) in cases {
            let err = canonical_path(raw).expect_err(raw);
            assert!(err.0.contains(needle), "{raw:?}: {err:?}");
            assert_clean_message(&err.0);
        }
        // The raw control bytes are shown escaped.
        let err = canonical_path("/a\r\nHost: x").expect_err("crlf");
        assert!(err.0.contains("\\r\\n"), "{err:?}");
        assert!(!err.0.contains('\r') && !err.0.contains('\n'));
        let err = canonical_path("/a\0").expect_err("nul");
        assert!(!err.0.contains('\0'));
        // Echoed input is truncated.
        let long = format!("/a b{}", "x".repeat(5000));
        let err = canonical_path(&long).expect_err("space");
        assert!(err.0.len() < 300, "{}", err.0.len());
        assert!(err.0.contains("..."));
    }

    #[test]
    fn bad_request_displays_its_message() {
        let err = canonical_path("x").expect_err("x");
        assert_eq!(err.to_string(), err.0);
    }

    // ---------------------------------------------------------------- headers

    #[test]
    fn headers_accepted_lowercased_in_order() {
        let given = strings(&[
            ("Accept", "application/json"),
            ("X-GitHub-Api-Version", "2022-11-28"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("User-Agent", "agent/1.0"),
            ("X-Tab", "a\tb"),
            ("X-Empty", ""),
            ("If-None-Match", "\"abc\""),
        ]);
        let got = check_headers(&given, Some("X-Api-Key")).expect("accepted");
        let want = strings(&[
            ("accept", "application/json"),
            ("x-github-api-version", "2022-11-28"),
            ("content-type", "application/json; charset=utf-8"),
            ("user-agent", "agent/1.0"),
            ("x-tab", "a\tb"),
            ("x-empty", ""),
            ("if-none-match", "\"abc\""),
        ]);
        assert_eq!(got, want);
        assert_eq!(check_headers(&[], None), Ok(vec![]));
    }

    #[test]
    fn forbidden_header_names_are_refused_in_any_case() {
        for name in [
            "Host",
            "hOsT",
            "HOST",
            "Authorization",
            "authorization",
            "Proxy-Authorization",
            "proxy-authorization",
            "Proxy-Connection",
            "Proxy-Anything",
            "Cookie",
            "Connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Upgrade",
            "Transfer-Encoding",
            "transfer-encoding",
            "Content-Length",
            "content-length",
            "Expect",
            "Accept-Encoding",
            "X-HTTP-Method-Override",
            "X-Method-Override",
            "X-HTTP-Method",
            "X-Original-URL",
            "X-Rewrite-URL",
            "X-Forwarded-Host",
            "X-Forwarded-For",
            "X-Host",
            "X-Original-Host",
            "Proxy",
            "Forwarded",
            "Range",
            // `_` for `-`: the same header to CGI-style servers.
            "Proxy_Authorization",
            "X_HTTP_Method_Override",
            "x_forwarded_host",
            "Transfer_Encoding",
        ] {
            let err = check_headers(&strings(&[(name, "x")]), None).expect_err(name);
            assert!(err.0.contains("may not be set"), "{name}: {err:?}");
            assert_clean_message(&err.0);
        }
    }

    #[test]
    fn credential_header_refused_in_any_case() {
        for name in ["X-Api-Key", "x-api-key", "X-API-KEY", "x-Api-kEY"] {
            let err = check_headers(&strings(&[(name, "k")]), Some("X-Api-Key")).expect_err(name);
            assert!(err.0.contains("credential"), "{err:?}");
        }
        // Read as the same name by CGI-style servers.
        for name in ["X_Api_Key", "x_api-key"] {
            let err = check_headers(&strings(&[(name, "k")]), Some("X-Api-Key")).expect_err(name);
            assert!(err.0.contains("credential"), "{err:?}");
        }
        // The same name is fine for a service whose credential is elsewhere.
        assert!(check_headers(&strings(&[("X-Api-Key", "k")]), None).is_ok());
        assert!(check_headers(&strings(&[("X-Api-Key", "k")]), Some("X-Other")).is_ok());
    }

    #[test]
    fn header_syntax_refused() {
        let cases: &[(&str, &str)] = &[
            ("X-A", "v\r\nHost: evil"),
            ("X-A", "v\r"),
            ("X-A", "v\n"),
            ("X-A", "v\0"),
            ("X-A", "v\x7f"),
            ("X-A", "v\x0b"),
            ("X-A", "caf\u{e9}"),
            ("X-A", "a\u{2028}b"),
            ("X\0A", "v"),
            ("X-A\r\nHost", "v"),
            ("X-A\n", "v"),
            ("", "v"),
            ("X A", "v"),
            ("X-A:", "v"),
            (":authority", "evil.com"),
            ("X-(A)", "v"),
            ("X-\u{e9}", "v"),
            ("X\tA", "v"),
        ];
        for (name, value) in cases {
            let err = check_headers(&strings(&[(name, value)]), None)
                .expect_err(&format!("{name:?}: {value:?}"));
            assert_clean_message(&err.0);
        }
    }

    #[test]
    fn header_limits() {
        let big = "v".repeat(MAX_HEADER_BYTES);
        assert!(check_headers(&strings(&[("X-A", &big)]), None).is_ok());
        let too_big = "v".repeat(MAX_HEADER_BYTES + 1);
        assert!(check_headers(&strings(&[("X-A", &too_big)]), None).is_err());

        let many: Vec<(String, String)> = (0..MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect();
        assert!(check_headers(&many, None).is_ok());
        let too_many: Vec<(String, String)> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect();
        assert!(check_headers(&too_many, None).is_err());
    }

    #[test]
    fn duplicate_headers_refused() {
        let err = check_headers(&strings(&[("Accept", "a"), ("accept", "b")]), None)
            .expect_err("duplicate");
        assert!(err.0.contains("more than once"), "{err:?}");
        assert!(check_headers(&strings(&[("Host", "a"), ("host", "b")]), None).is_err());
    }

    // ------------------------------------------------------------------ query

    #[test]
    fn query_accepted_as_given() {
        let given = strings(&[
            ("state", "open"),
            ("q", "a b&c=d?#"),
            ("labels", "bug,ui"),
            ("empty", ""),
            ("caf\u{e9}", "\u{e9}t\u{e9}"),
            ("space", "a b"),
        ]);
        assert_eq!(check_query(&given, Some("api_key")), Ok(given.clone()));
        assert_eq!(check_query(&given, None), Ok(given));
    }

    #[test]
    fn credential_query_name_refused() {
        for name in [
            "api_key",
            "API_KEY",
            "Api_Key",
            "api.key",
            "api key",
            "api[key",
            "api_key[]",
            "api_key[0]",
            " api_key",
        ] {
            let err = check_query(&strings(&[(name, "x")]), Some("api_key")).expect_err(name);
            assert!(err.0.contains("credential"), "{name}: {err:?}");
            assert_clean_message(&err.0);
        }
        assert!(check_query(&strings(&[("api_key2", "x")]), Some("api_key")).is_ok());
        assert!(check_query(&strings(&[("api_key", "x")]), None).is_ok());
    }

    #[test]
    fn query_syntax_and_limits_refused() {
        for (name, value) in [
            ("q", "a\r\nb"),
            ("q", "a\0"),
            ("q", "a\n"),
            ("q", "\u{85}"),
            ("q\r", "a"),
            ("q\0", "a"),
            ("", "a"),
            ("_method", "DELETE"),
            ("_METHOD", "DELETE"),
        ] {
            let err = check_query(&strings(&[(name, value)]), None)
                .expect_err(&format!("{name:?}={value:?}"));
            assert_clean_message(&err.0);
        }
        let big = "v".repeat(MAX_QUERY_BYTES);
        assert!(check_query(&strings(&[("q", &big)]), None).is_ok());
        let too_big = "v".repeat(MAX_QUERY_BYTES + 1);
        assert!(check_query(&strings(&[("q", &too_big)]), None).is_err());
        assert!(check_query(&strings(&[(&too_big, "v")]), None).is_err());

        let many: Vec<(String, String)> = (0..MAX_QUERY_PARAMS)
            .map(|i| (format!("p{i}"), "v".to_owned()))
            .collect();
        assert!(check_query(&many, None).is_ok());
        let too_many: Vec<(String, String)> = (0..=MAX_QUERY_PARAMS)
            .map(|i| (format!("p{i}"), "v".to_owned()))
            .collect();
        assert!(check_query(&too_many, None).is_err());
    }

    #[test]
    fn method_override_refused_in_any_spelling_a_framework_reads() {
        for name in [
            "_method",
            "_METHOD",
            ".method",
            " _method",
            "[method",
            "_method[]",
        ] {
            let err = check_query(&strings(&[(name, "DELETE")]), None).expect_err(name);
            assert!(err.0.contains("another method"), "{name:?}: {err:?}");
        }
        assert!(check_query(&strings(&[("method", "DELETE")]), None).is_ok());
        assert!(check_query(&strings(&[("_methods", "x")]), None).is_ok());
    }

    #[test]
    fn form_field_check_agrees_with_the_query_check() {
        for name in [
            "_method",
            "_METHOD",
            ".method",
            " _method",
            "\t.Method",
            "[method",
            "_method[]",
            "_method[x]",
            "method",
            "_methods",
            "_metho",
            "x_method",
            "_method2",
            "",
            "_",
            " ",
        ] {
            assert_eq!(
                names_method_override(name.as_bytes()),
                names_param(name, METHOD_OVERRIDE),
                "{name:?}"
            );
        }
    }

    #[test]
    fn method_override_refused_in_a_form_body() {
        let form = |ct: &str| vec![("content-type".to_owned(), ct.to_owned())];
        let urlencoded = form("application/x-www-form-urlencoded; charset=utf-8");
        for body in [
            "_method=DELETE",
            "a=1&_method=PUT",
            "a=1&.method=DELETE",
            "%5Fmethod=DELETE",
            "_METHOD=DELETE",
        ] {
            let err = check_body(&urlencoded, body.as_bytes()).expect_err(body);
            assert!(err.0.contains("form field"), "{body}: {err:?}");
            assert_clean_message(&err.0);
        }
        assert!(check_body(&urlencoded, b"title=_method&body=x").is_ok());

        let multipart = form("Multipart/Form-Data; boundary=XyZ");
        for body in [
            "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--",
            "--XyZ\r\nContent-Disposition: form-data; NAME=_method\r\n\r\nDELETE\r\n--XyZ--",
            "--XyZ\r\ncontent-disposition: form-data; name=\".method\"\r\n\r\nPUT\r\n--XyZ--",
        ] {
            assert!(check_body(&multipart, body.as_bytes()).is_err(), "{body}");
        }
        let fine =
            "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n_method\r\n--XyZ--";
        assert!(check_body(&multipart, fine.as_bytes()).is_ok());

        // A body full of `name=` costs linear work, and a spelling padded
        // with blanks is still found.
        let flood = "name=".repeat(2 << 20);
        let started = std::time::Instant::now();
        assert!(check_body(&multipart, flood.as_bytes()).is_ok());
        println!("a 10 MiB body of name= checked in {:?}", started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let flood = "a&".repeat(5 << 20);
        let started = std::time::Instant::now();
        assert!(check_body(&urlencoded, flood.as_bytes()).is_ok());
        println!(
            "a 10 MiB form of 5M fields checked in {:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let padded = "--XyZ\r\nContent-Disposition: form-data; name=\"  _method\"\r\n\r\nPUT";
        assert!(check_body(&multipart, padded.as_bytes()).is_err());

        // Not a form: the API's own business.
        assert!(check_body(&form("application/json"), b"{\"_method\":\"DELETE\"}").is_ok());
        assert!(check_body(&[], b"_method=DELETE").is_ok());
    }

    // ------------------------------------------------------------------ rules

    #[test]
    fn rules_parse() {
        for text in [
            "GET /repos/*/*/issues",
            "GET /repos/*/*/issues/**",
            "* /**",
            "POST /",
            "DELETE /a/",
            "PATCH /a/**/b",
            "OPTIONS /**/x",
            "HEAD /v1/models/gemini:generateContent",
            "PUT /a%20b/@me/~x;v=1",
            "GET /.well-known/x",
        ] {
            let rule = Rule::parse(text).expect(text);
            assert_eq!(rule.as_str(), text);
            assert_eq!(rule.to_string(), text);
        }
    }

    #[test]
    fn rules_refused() {
        for (text, needle) in [
            ("get /x", "uppercase: write GET"),
            ("Get /x", "uppercase"),
            ("PROPFIND /x", "not one of"),
            ("TRACE /x", "never proxied"),
            ("CONNECT /x", "never proxied"),
            ("GET/x", "no space"),
            ("GET", "no space"),
            ("", "no space"),
            ("GET\t/x", "no space"),
            ("GET  /x", "more than one space"),
            (" /x", "METHOD is missing"),
            ("GET /x ", "space"),
            ("GET /repos/foo*", "mixes '*'"),
            ("GET /repos/*foo/x", "mixes '*'"),
            ("GET /repos/***", "mixes '*'"),
            ("GET /a/b*c", "mixes '*'"),
            ("GET repos", "start with '/'"),
            ("GET http://evil.com/x", "absolute URL"),
            ("GET //evil.com/x", "//"),
            ("GET /a//b", "empty segment"),
            ("GET /a/../b", "dot segment"),
            ("GET /a/%2e%2e/b", "dot segment"),
            ("GET /a?x=1", "query"),
            ("GET /a%2Fb", "encoded slash"),
            ("GET /a%41", "as itself"),
            ("GET /caf\u{e9}", "non-ASCII"),
            ("GET /a\r\nb", "control"),
            ("GETS /x", "not one of"),
        ] {
            let err = Rule::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("expected \"METHOD /path\""), "{err}");
            assert_clean_message(&err);
        }
    }

    fn rule(text: &str) -> Rule {
        Rule::parse(text).expect(text)
    }

    #[test]
    fn rule_matching() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("GET /repos/*/*/issues", "GET", "/repos/o/r/issues", true),
            ("GET /repos/*/*/issues", "POST", "/repos/o/r/issues", false),
            ("GET /repos/*/*/issues", "GET", "/repos/o/r/issues/", false),
            ("GET /repos/*/*/issues", "GET", "/repos/o/issues", false),
            ("GET /repos/*/*/issues", "GET", "/repos/o/r/x/issues", false),
            ("GET /repos/*/*/issues", "GET", "/Repos/o/r/issues", false),
            ("GET /repos/*/*/issues", "GET", "/repos/o/r/Issues", false),
            ("GET /repos/*/*/issues/**", "GET", "/repos/o/r/issues", true),
            (
                "GET /repos/*/*/issues/**",
                "GET",
                "/repos/o/r/issues/",
                true,
            ),
            (
                "GET /repos/*/*/issues/**",
                "GET",
                "/repos/o/r/issues/1/comments",
                true,
            ),
            (
                "GET /repos/*/*/issues/**",
                "GET",
                "/repos/o/r/issuesx",
                false,
            ),
            ("GET /repos/**", "GET", "/repos", true),
            ("GET /repos/**", "GET", "/repos/", true),
            ("GET /repos/**", "GET", "/repos/a/b", true),
            ("GET /repos/**", "GET", "/reposx", false),
            ("GET /repos/**", "GET", "/", false),
            ("GET /repos/*", "GET", "/repos/", false),
            ("GET /repos/*", "GET", "/repos", false),
            ("GET /repos/*", "GET", "/repos/a", true),
            ("GET /repos/*", "GET", "/repos/a/", false),
            ("GET /repos/", "GET", "/repos/", true),
            ("GET /repos/", "GET", "/repos", false),
            ("GET /repos", "GET", "/repos/", false),
            ("GET /a/**/b", "GET", "/a/b", true),
            ("GET /a/**/b", "GET", "/a/x/b", true),
            ("GET /a/**/b", "GET", "/a/x/y/b", true),
            ("GET /a/**/b", "GET", "/a/x/y/b/", false),
            ("GET /a/**/b", "GET", "/a/x/y/c", false),
            ("GET /a/**/b", "GET", "/a", false),
            ("GET /a/**/b/**", "GET", "/a/b/c/b", true),
            ("* /**", "DELETE", "/", true),
            ("* /**", "GET", "/anything/at/all", true),
            ("* /", "PUT", "/", true),
            ("* /", "PUT", "/a", false),
            ("GET /**", "GET", "/", true),
            ("GET /*", "GET", "/", false),
            ("GET /a%20b", "GET", "/a%20b", true),
            ("GET /a%20b", "GET", "/a b", false),
            ("GET /a%3Ab", "GET", "/a:b", false),
            ("GET /*/x/**", "GET", "/o/x", true),
            ("GET /**/x", "GET", "/x", true),
            ("GET /**/x", "GET", "/a/b/x", true),
            ("GET /**/x", "GET", "/a/b/x/", false),
            ("GET /**/*/x", "GET", "/x", false),
            ("GET /**/*/x", "GET", "/a/x", true),
            ("GET /x", "GET", "x", false),
        ];
        for (text, method, path, want) in cases {
            assert_eq!(
                rule(text).matches(method, path),
                *want,
                "{text} vs {method} {path}"
            );
        }
    }

    #[test]
    fn deny_rules_ignore_a_trailing_slash() {
        let cases: &[(&str, &str, bool)] = &[
            ("GET /secret", "/secret", true),
            ("GET /secret", "/secret/", true),
            ("GET /secret/", "/secret", true),
            ("GET /repos/*/*/issues", "/repos/o/r/issues/", true),
            ("GET /secret", "/secretx/", false),
            ("GET /secret", "/secret/x", false),
            ("GET /a/*", "/a/", false),
            ("GET /**", "/", true),
            ("GET /x", "/", false),
        ];
        for (text, path, want) in cases {
            assert_eq!(rule(text).denies("GET", path), *want, "{text} vs {path}");
        }
        // Allow rules stay exact.
        assert!(!rule("GET /secret").matches("GET", "/secret/"));
    }

    #[test]
    fn a_get_deny_rule_also_denies_head() {
        // Most frameworks answer HEAD by running the GET handler.
        let deny = rule("GET /echo/secret/**");
        assert!(deny.denies("GET", "/echo/secret/x"));
        assert!(deny.denies("HEAD", "/echo/secret/x"));
        assert!(
            deny.denies("HEAD", "/echo/Secret/x/"),
            "with the lenient reading"
        );
        assert!(!deny.denies("HEAD", "/echo/public/x"));
        for other in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert!(!deny.denies(other, "/echo/secret/x"), "{other}");
        }
        // Only GET widens: a HEAD deny rule denies HEAD alone, and `*` all.
        assert!(!rule("HEAD /echo/**").denies("GET", "/echo/x"));
        assert!(rule("HEAD /echo/**").denies("HEAD", "/echo/x"));
        assert!(rule("* /echo/**").denies("HEAD", "/echo/x"));
        // Allow rules stay exact: `GET` does not grant HEAD.
        assert!(!rule("GET /echo/**").matches("HEAD", "/echo/x"));
    }

    #[test]
    fn deny_rules_match_every_spelling_a_lenient_server_reads_alike() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "DELETE /users/admin@corp.com",
                "/users/admin%40corp.com",
                true,
            ),
            (
                "DELETE /users/admin%40corp.com",
                "/users/admin@corp.com",
                true,
            ),
            (
                "GET /repos/myorg/prod/**",
                "/repos/MyOrg/Prod/contents/x",
                true,
            ),
            ("GET /files/private", "/files/PRIVATE", true),
            ("GET /files/private", "/files/private;x=1", true),
            ("GET /files/private", "/files/private.", true),
            ("GET /files/private", "/files/private%20", true),
            ("GET /files/private", "/files/private%3Bx", true),
            ("GET /files/*/raw", "/files/Private;v=2/raw/", true),
            ("GET /files/private", "/files/privatex", false),
            ("GET /files/private", "/files/public", false),
            ("GET /files/private", "/files/private/x", false),
        ];
        for (text, path, want) in cases {
            let canonical = canonical_path(path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            assert_eq!(
                rule(text).denies("GET", &canonical) || rule(text).denies("DELETE", &canonical),
                *want,
                "{text} vs {path}"
            );
        }
        // Allow rules stay exact: a wider reading there would grant more.
        assert!(!rule("GET /files/private").matches("GET", "/files/PRIVATE"));
        assert!(!rule("GET /users/a@b").matches("GET", "/users/a%40b"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let path200 = format!("/{}", vec!["a"; 200].join("/"));
        let path_long = format!("/{}", vec!["a"; 4000].join("/"));
        let started = Instant::now();
        assert!(!rule("GET /**/**/**/**/**/**/x").matches("GET", &path200));
        assert!(rule("GET /**/**/**/**/**/**/a").matches("GET", &path200));
        assert!(!rule("GET /**/a/**/a/**/a/**/a/**/b").matches("GET", &path200));
        assert!(!rule("GET /**/a/**/a/**/a/**/a/**/b").matches("GET", &path_long));
        let many_stars = format!("GET /{}/x", vec!["**"; 100].join("/"));
        assert!(!rule(&many_stars).matches("GET", &path_long));
        let many_ones = format!("GET /**/{}/b", vec!["*"; 100].join("/"));
        assert!(!rule(&many_ones).matches("GET", &path_long));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    // --------------------------------------------------------- property tests

    /// Deterministic xorshift64 generator: the tests need no dependencies and
    /// every run sees the same inputs.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }

    fn random_string(rng: &mut XorShift, alphabet: &[char], max_len: usize) -> String {
        let len = rng.below(max_len + 1);
        let mut s = String::new();
        if rng.below(8) != 0 {
            s.push('/');
        }
        for _ in 0..len {
            s.push(alphabet[rng.below(alphabet.len())]);
        }
        s
    }

    /// The invariants every accepted path must satisfy.
    fn assert_safe(raw: &str, out: &str) {
        assert_eq!(out, raw, "output differs from input");
        assert!(out.starts_with('/'), "{out:?}");
        assert!(!out.contains("//"), "{out:?}");
        assert!(out.is_ascii(), "{out:?}");
        assert!(
            !out.bytes()
                .any(|b| b.is_ascii_control() || b"\\?# ".contains(&b)),
            "{out:?}"
        );
        let lower = out.to_ascii_lowercase();
        for needle in ["%2e", "%2f", "%5c", "%00", "%0d", "%0a"] {
            assert!(!lower.contains(needle), "{out:?} contains {needle}");
        }
        // No double encoding: a literal '%' (%25) is never followed by hex digits.
        let bytes = out.as_bytes();
        for (i, window) in bytes.windows(3).enumerate() {
            if window.eq_ignore_ascii_case(b"%25") {
                assert!(
                    hex_pair(bytes, i + 3).is_none(),
                    "{out:?} is double-encoded"
                );
            }
        }
        for segment in out[1..].split('/') {
            let core = segment.split(';').next().unwrap_or("");
            assert!(core != "." && core != "..", "{out:?}");
            assert!(!segment.starts_with(';'), "{out:?}");
            assert!(
                core.is_empty() || !core.bytes().all(|b| b == b'.'),
                "{out:?}"
            );
        }
    }

    #[test]
    fn property_accepted_paths_are_safe() {
        let alphabet = [
            '/', '.', '%', '2', 'e', 'E', 'f', '5', 'c', ';', 'a', '\\', '?', '0',
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..10_000 {
            let raw = random_string(&mut rng, &alphabet, 12);
            if let Ok(out) = canonical_path(&raw) {
                accepted += 1;
                assert_safe(&raw, &out);
            }
        }
        // The generator must exercise both outcomes.
        println!("accepted {accepted} of 10000");
        assert!(accepted > 500, "only {accepted} accepted");
        assert!(accepted < 9_500, "{accepted} accepted");
    }

    #[test]
    fn property_wider_alphabet() {
        let alphabet = [
            '/', '.', '%', '2', '3', 'e', 'E', 'F', 'B', 'b', 'C', '0', 'A', 'D', ';', ':', '@',
            '\\', '?', '#', ' ', '\0', '\r', '\n', '\u{e9}', '~', '*',
        ];
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let mut accepted = 0;
        for _ in 0..10_000 {
            let raw = random_string(&mut rng, &alphabet, 16);
            match canonical_path(&raw) {
                Ok(out) => {
                    accepted += 1;
                    assert_safe(&raw, &out);
                }
                Err(err) => assert_clean_message(&err.0),
            }
        }
        println!("accepted {accepted} of 10000");
        assert!(accepted > 100, "only {accepted} accepted");
    }

    /// A plainly correct (exponential) reference matcher.
    fn reference_match(pattern: &[Pattern], segments: &[&str]) -> bool {
        match pattern.split_first() {
            None => segments.is_empty(),
            Some((Pattern::Many, rest)) => {
                (0..=segments.len()).any(|skip| reference_match(rest, &segments[skip..]))
            }
            Some((Pattern::One, rest)) => segments
                .split_first()
                .is_some_and(|(s, tail)| !s.is_empty() && reference_match(rest, tail)),
            Some((Pattern::Literal(literal), rest)) => segments
                .split_first()
                .is_some_and(|(s, tail)| s == literal && reference_match(rest, tail)),
        }
    }

    #[test]
    fn property_glob_agrees_with_reference() {
        let pattern_parts = ["a", "b", "*", "**"];
        let path_parts = ["a", "b", "c"];
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..10_000 {
            let mut rule_path = String::new();
            for _ in 0..=rng.below(5) {
                rule_path.push('/');
                rule_path.push_str(pattern_parts[rng.below(pattern_parts.len())]);
            }
            if rng.below(4) == 0 {
                rule_path.push('/');
            }
            let mut path = String::new();
            for _ in 0..rng.below(7) {
                path.push('/');
                path.push_str(path_parts[rng.below(path_parts.len())]);
            }
            if path.is_empty() || rng.below(4) == 0 {
                path.push('/');
            }
            let canonical = canonical_path(&path).expect("generated path is canonical");
            let parsed = rule(&format!("GET {rule_path}"));
            let segments: Vec<&str> = canonical[1..].split('/').collect();
            assert_eq!(
                parsed.matches("GET", &canonical),
                reference_match(&parsed.segments, &segments),
                "{rule_path} vs {canonical}"
            );
        }
    }
}
