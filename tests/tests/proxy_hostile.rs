//! Issue 3, the proxy path against a hostile agent (DESIGN.md, "Rules of the
//! proxy path"): a table of attacks sent as real MCP `execute` calls (Python MCP
//! SDK -> vault-mcp -> vaultd -> local HTTPS upstream), each either refused
//! with its code before anything reaches the upstream, or sent exactly as
//! matched with every echoed form of the credential replaced by `[REDACTED]`.
//! Then the upstream's own log proves that no request left the capability's
//! prefix and that no credential travelled in a request target.
//!
//! A second test checks the credential injection of the four auth kinds.

use base64::Engine as _;
use serde_json::{Value, json};
use vaultd_tests::upstream::{BINARY_PREFIX, BINARY_SUFFIX};
use vaultd_tests::{Recorded, TlsKind, Upstream, VaultEnv, assert_absent, assert_no_canary, forms};

const BEARER: &str = "CANARY-bear-3f9a1c77d2e4";
/// With characters that every encoder escapes differently.
const QUERY: &str = "CANARY+qry/5e7d=9b1c";
const HEADER: &str = "CANARY-hdr-8c2b4e6f1a03";
const BASIC: &str = "CANARY-basic-6d1f0a9e3b72";
const CANARIES: [&str; 4] = [BEARER, QUERY, HEADER, BASIC];

/// `max_response_bytes` of the service `cut` (same upstream, base path and
/// credential as `bear`).
const CUT_AT: usize = 400;

/// `max_response_bytes` of the service `small` (same upstream, base path and
/// credential as `bear`): a compressed body may inflate to 16 times this, 2 MiB.
const SMALL_MAX: usize = 128 << 10;

/// The four services: (capability = service name, base path, its canary).
const SERVICES: [(&str, &str, &str); 4] = [
    ("bear", "/api", BEARER),
    ("qry", "/q", QUERY),
    ("hdr", "/h", HEADER),
    ("bas", "/b", BASIC),
];

fn policy(up: &Upstream, env: &VaultEnv) -> String {
    let url = up.url();
    let ca = env.ca_file().display().to_string();
    let auths = [
        ("bear", "/api", r#"{ type = "bearer", secret = "s-bear" }"#),
        (
            "qry",
            "/q",
            r#"{ type = "query", name = "api_key", secret = "s-qry" }"#,
        ),
        (
            "hdr",
            "/h",
            r#"{ type = "header", name = "X-Api-Key", secret = "s-hdr", prefix = "Key " }"#,
        ),
        (
            "bas",
            "/b",
            r#"{ type = "basic", username = "user", secret = "s-bas" }"#,
        ),
    ];
    let mut p = format!(
        r#"[[agent]]
name = "a"

[[service]]
name = "cut"
base_url = "{url}/api"
auth = {{ type = "bearer", secret = "s-bear" }}
ca_file = "{ca}"
allow_private_network = true
max_response_bytes = {CUT_AT}

[[capability]]
name = "cut"
service = "cut"
agents = ["a"]
allow = ["POST /v1/**"]

[[service]]
name = "small"
base_url = "{url}/api"
auth = {{ type = "bearer", secret = "s-bear" }}
ca_file = "{ca}"
allow_private_network = true
max_response_bytes = {SMALL_MAX}
timeout = "60s"

[[capability]]
name = "small"
service = "small"
agents = ["a"]
allow = ["GET /v1/**"]
"#
    );
    for (name, base, auth) in auths {
        p.push_str(&format!(
            r#"
[[service]]
name = "{name}"
base_url = "{url}{base}"
auth = {auth}
ca_file = "{ca}"
allow_private_network = true
timeout = "10s"

[[capability]]
name = "{name}"
service = "{name}"
agents = ["a"]
allow = ["* /v1/**"]
deny = ["* /v1/admin/**", "GET /v1/secret/**"]
"#
        ));
    }
    p
}

/// One daemon, unlocked, with the four services and agent `a`; returns its token.
fn setup(up: &Upstream, env: &VaultEnv) -> (vaultd_tests::Daemon, String) {
    env.allow_ports(&[up.port()]);
    let d = env.start_unlocked();
    env.set_secret("s-bear", BEARER.as_bytes());
    env.set_secret("s-qry", QUERY.as_bytes());
    env.set_secret("s-hdr", HEADER.as_bytes());
    env.set_secret("s-bas", BASIC.as_bytes());
    env.apply_policy(&policy(up, env));
    let token = env.add_agent("a");
    (d, token)
}

/// Where the `[REDACTED]` marker must show up in a neutralised answer.
#[derive(Clone, Debug)]
enum Redacted {
    /// Nowhere in particular (the answer just must not carry a canary).
    No,
    /// Nothing to redact; this response header must come back as it was sent.
    HeaderIs(&'static str, String),
    /// In the UTF-8 body.
    Body,
    /// In the base64-encoded (binary) body, once decoded.
    BinaryBody,
    /// In this response header.
    Header(&'static str),
}

#[derive(Clone, Debug)]
enum Expect {
    /// Refused with this code; nothing reaches the upstream.
    Refused(&'static str),
    /// Sent: exactly one upstream request with this method and path (below the
    /// service's base path), the agent gets this status, and the credential
    /// is replaced by `[REDACTED]` where said.
    Sent {
        method: &'static str,
        path: String,
        status: u64,
        redacted: Redacted,
    },
}

struct Row {
    name: String,
    cap: &'static str,
    args: Value,
    expect: Expect,
}

fn refused(name: &str, cap: &'static str, args: Value, code: &'static str) -> Row {
    Row {
        name: name.to_string(),
        cap,
        args,
        expect: Expect::Refused(code),
    }
}

fn sent(
    name: &str,
    cap: &'static str,
    args: Value,
    method: &'static str,
    path: &str,
    status: u64,
    redacted: Redacted,
) -> Row {
    Row {
        name: name.to_string(),
        cap,
        args,
        expect: Expect::Sent {
            method,
            path: path.to_string(),
            status,
            redacted,
        },
    }
}

/// `execute` arguments: GET `path` on `cap` plus `extra` fields.
fn get(cap: &str, path: &str, extra: Value) -> Value {
    let mut v = json!({"capability": cap, "method": "GET", "path": path});
    if let Value::Object(m) = extra {
        for (k, x) in m {
            v[k] = x;
        }
    }
    v
}

fn hdr(cap: &str, name: &str, value: &str) -> Value {
    get(cap, "/v1/echo", json!({"headers": {name: value}}))
}

fn table(other_port: u16) -> Vec<Row> {
    const BR: &str = "bad_request";
    let mut t = Vec::new();
    // --- paths: dot segments, raw / encoded / double-encoded, also before ';'
    for (n, p) in [
        ("dot-dot raw", "/v1/../admin/echo"),
        ("dot raw", "/v1/./echo"),
        ("dot-dot trailing", "/v1/echo/.."),
        ("dot-dot encoded", "/v1/%2E%2E/admin/echo"),
        ("dot-dot encoded lowercase", "/v1/%2e%2e/admin/echo"),
        ("dot-dot half encoded", "/v1/.%2E/admin/echo"),
        ("dot-dot double encoded", "/v1/%252E%252E/admin/echo"),
        ("dot-dot before ;", "/v1/..;/admin/echo"),
        ("dot-dot encoded before ;", "/v1/%2E%2E;x=1/admin/echo"),
        ("dot before ;", "/v1/.;/echo"),
        ("overlong UTF-8 dot", "/v1/%C0%AE%C0%AE/admin/echo"),
        ("fullwidth dot", "/v1/%EF%BC%8E%EF%BC%8E/admin/echo"),
        ("two-dot leader under NFKC", "/v1/x/%EF%B8%B0/admin/echo"),
        ("Greek question mark (;)", "/v1/..%CD%BE/admin/echo"),
        // encoded slash and backslash
        ("encoded slash", "/v1/echo%2F..%2Fadmin"),
        ("encoded slash lowercase", "/v1/echo%2f..%2fadmin"),
        ("double-encoded slash", "/v1/echo%252F..%252Fadmin"),
        ("backslash raw", "/v1/echo\\..\\admin"),
        ("encoded backslash", "/v1/echo%5C..%5Cadmin"),
        // authority and absolute forms
        ("//host", "//evil.example/v1/echo"),
        ("absolute https URL", "https://evil.example/v1/echo"),
        (
            "absolute URL to the other port",
            &format!("https://127.0.0.1:{other_port}/v1/echo"),
        ),
        (
            "scheme-relative in the middle",
            "/v1/echo/https://evil.example/x",
        ),
        ("@ userinfo form", "@evil.example/v1/echo"),
        ("userinfo with port", "user:pw@127.0.0.1:1/v1/echo"),
        ("no leading slash", "v1/echo"),
        ("empty segment", "/v1//echo"),
        // control characters
        ("CRLF raw in path", "/v1/echo\r\nHost: evil.example"),
        ("CRLF encoded in path", "/v1/echo%0D%0AHost:%20evil.example"),
        ("LF raw in path", "/v1/echo\nX: y"),
        ("NUL raw in path", "/v1/echo\u{0}/x"),
        ("NUL encoded in path", "/v1/echo%00/x"),
        ("tab in path", "/v1/echo\tx"),
        ("space in path", "/v1/echo x"),
        ("query in path", "/v1/echo?api_key=x"),
        ("fragment in path", "/v1/echo#x"),
        ("bad percent", "/v1/echo%zz"),
        ("truncated percent", "/v1/echo%4"),
        ("non-ASCII", "/v1/caf\u{e9}/echo"),
        ("empty path", ""),
        ("single dot encoded", "/v1/%2E/echo"),
        ("dot-dot before encoded ?", "/v1/..%3Fx/admin/echo"),
        ("dot-dot before encoded #", "/v1/..%23/admin/echo"),
        (
            "encoded unreserved letter (second spelling)",
            "/v1/%61dmin/echo",
        ),
        ("dot-dot then encoded ;", "/v1/%2E%2E%3B/admin/echo"),
        ("dot-dot with trailing space", "/v1/..%20/admin/echo"),
        ("dot-dot with trailing raw dots", "/v1/.../admin/echo"),
        ("path over 8 KiB", &format!("/v1/{}", "a".repeat(9000))),
    ] {
        t.push(refused(n, "bear", get("bear", p, json!({})), BR));
    }
    // --- arguments that do not fit the tool's schema
    for (n, args) in [
        ("no path", json!({"capability": "bear", "method": "GET"})),
        (
            "path not a string",
            json!({"capability": "bear", "method": "GET", "path": 7}),
        ),
        (
            "header value not a string",
            json!({"capability": "bear", "method": "GET", "path": "/v1/echo", "headers": {"X-A": 1}}),
        ),
        (
            "query not an object",
            json!({"capability": "bear", "method": "GET", "path": "/v1/echo", "query": ["api_key"]}),
        ),
        (
            "body not a string",
            json!({"capability": "bear", "method": "POST", "path": "/v1/echo", "body": {"a": 1}}),
        ),
        (
            "a stray url argument",
            json!({"capability": "bear", "method": "GET", "path": "/v1/echo", "url": "https://evil.example/"}),
        ),
        (
            "a stray base_url argument",
            json!({"capability": "bear", "method": "GET", "path": "/v1/echo", "base_url": "https://evil.example/"}),
        ),
    ] {
        t.push(refused(n, "bear", args, BR));
    }
    // --- paths that are legal: sent exactly as matched, never normalised
    t.push(sent(
        "@ inside a segment stays a path",
        "bear",
        get("bear", "/v1/echo/user@evil.example", json!({})),
        "GET",
        "/api/v1/echo/user@evil.example",
        200,
        Redacted::Body,
    ));
    t.push(sent(
        "dots inside a name are not dot segments",
        "bear",
        get("bear", "/v1/echo/a..b/.x", json!({})),
        "GET",
        "/api/v1/echo/a..b/.x",
        200,
        Redacted::Body,
    ));
    // --- policy: outside the prefix, deny rules
    t.push(refused(
        "outside the allowed prefix",
        "bear",
        get("bear", "/v2/echo", json!({})),
        "denied_by_rule",
    ));
    t.push(refused(
        "deny rule",
        "bear",
        get("bear", "/v1/admin/echo", json!({})),
        "denied_by_rule",
    ));
    // A case-insensitive or `;`-stripping server reads these as /v1/admin.
    for (n, path) in [
        ("deny rule, other case", "/v1/ADMIN/echo"),
        ("deny rule, ;param suffix", "/v1/admin;x=1/echo"),
        ("deny rule, trailing dot", "/v1/admin./echo"),
    ] {
        t.push(refused(
            n,
            "bear",
            get("bear", path, json!({})),
            "denied_by_rule",
        ));
    }
    // Most frameworks answer HEAD with the GET handler: a GET deny rule covers it.
    t.push(refused(
        "HEAD under a GET deny rule",
        "bear",
        json!({"capability": "bear", "method": "HEAD", "path": "/v1/secret/echo"}),
        "denied_by_rule",
    ));
    // --- methods
    for (n, m) in [
        ("TRACE", "TRACE"),
        ("CONNECT", "CONNECT"),
        ("lowercase trace", "trace"),
        ("unknown method", "PROPFIND"),
        ("made-up method", "FOO"),
        ("empty method", ""),
        ("CRLF in method", "GET\r\nX-Injected: 1"),
        ("space in method", "GET /v1/admin HTTP/1.1"),
        ("NUL in method", "GET\u{0}"),
    ] {
        t.push(refused(
            n,
            "bear",
            json!({"capability": "bear", "method": m, "path": "/v1/echo"}),
            BR,
        ));
    }
    t.push(sent(
        "lowercase method is sent uppercase",
        "bear",
        json!({"capability": "bear", "method": "get", "path": "/v1/echo"}),
        "GET",
        "/api/v1/echo",
        200,
        Redacted::Body,
    ));
    t.push(sent(
        "mixed-case DELETE",
        "bear",
        json!({"capability": "bear", "method": "dElEtE", "path": "/v1/echo/x"}),
        "DELETE",
        "/api/v1/echo/x",
        200,
        Redacted::Body,
    ));
    // --- headers the agent may never set
    for (n, cap, name, value) in [
        ("Host", "bear", "Host", "evil.example"),
        ("Authorization", "bear", "Authorization", "Bearer attacker"),
        (
            "authorization, odd case",
            "bear",
            "aUtHoRiZaTiOn",
            "Bearer attacker",
        ),
        (
            "Authorization on a basic service",
            "bas",
            "Authorization",
            "Basic YTpi",
        ),
        (
            "Authorization on a query service",
            "qry",
            "Authorization",
            "Bearer x",
        ),
        ("credential header", "hdr", "X-Api-Key", "attacker"),
        (
            "credential header, CGI spelling",
            "hdr",
            "X_Api_Key",
            "attacker",
        ),
        (
            "Proxy_Authorization, CGI spelling",
            "bear",
            "Proxy_Authorization",
            "Basic YTpi",
        ),
        (
            "X_HTTP_Method_Override, CGI spelling",
            "bear",
            "X_HTTP_Method_Override",
            "DELETE",
        ),
        (
            "credential header, lowercase",
            "hdr",
            "x-api-key",
            "attacker",
        ),
        (
            "Proxy-Authorization",
            "bear",
            "Proxy-Authorization",
            "Basic YTpi",
        ),
        ("Proxy-Connection", "bear", "Proxy-Connection", "keep-alive"),
        ("Cookie", "bear", "Cookie", "session=1"),
        ("Connection", "bear", "Connection", "close, X-Api-Key"),
        ("Keep-Alive", "bear", "Keep-Alive", "timeout=5"),
        ("TE", "bear", "TE", "trailers"),
        ("Upgrade", "bear", "Upgrade", "h2c"),
        ("Trailer", "bear", "Trailer", "X-Y"),
        ("Content-Length", "bear", "Content-Length", "0"),
        ("Transfer-Encoding", "bear", "Transfer-Encoding", "chunked"),
        ("Expect", "bear", "Expect", "100-continue"),
        (
            "X-HTTP-Method-Override",
            "bear",
            "X-HTTP-Method-Override",
            "DELETE",
        ),
        ("X-Original-URL", "bear", "X-Original-URL", "/v1/admin/echo"),
        ("Accept-Encoding", "bear", "Accept-Encoding", "identity"),
        ("Range", "bear", "Range", "bytes=0-10"),
        (
            "X-Forwarded-Host",
            "bear",
            "X-Forwarded-Host",
            "evil.example",
        ),
        ("X-Host", "bear", "X-Host", "evil.example"),
        ("X-Original-Host", "bear", "X-Original-Host", "evil.example"),
        (
            "Proxy (httpoxy)",
            "bear",
            "Proxy",
            "http://evil.example:8080",
        ),
        (
            "CRLF in header value",
            "bear",
            "X-Test",
            "a\r\nHost: evil.example",
        ),
        (
            "LF in header value",
            "bear",
            "X-Test",
            "a\nAuthorization: x",
        ),
        ("NUL in header value", "bear", "X-Test", "a\u{0}b"),
        (
            "CRLF in header name",
            "bear",
            "X-Test\r\nHost",
            "evil.example",
        ),
        ("colon in header name", "bear", "Host:", "evil.example"),
        ("space in header name", "bear", "Host ", "evil.example"),
    ] {
        t.push(refused(n, cap, hdr(cap, name, value), BR));
    }
    // --- query parameters that would override the credential or the method
    for (n, cap, name, value) in [
        ("credential query param", "qry", "api_key", "attacker"),
        (
            "credential query param, upper case",
            "qry",
            "API_KEY",
            "attacker",
        ),
        (
            "credential query param, PHP dot",
            "qry",
            "api.key",
            "attacker",
        ),
        (
            "credential query param, array",
            "qry",
            "api_key[]",
            "attacker",
        ),
        ("_method query param", "bear", "_method", "DELETE"),
        ("_method query param, PHP dot", "bear", ".method", "DELETE"),
        (
            "CRLF in query value",
            "bear",
            "q",
            "a\r\nHost: evil.example",
        ),
        ("NUL in query name", "bear", "q\u{0}", "x"),
    ] {
        t.push(refused(
            n,
            cap,
            get(cap, "/v1/echo", json!({"query": {name: value}})),
            BR,
        ));
    }
    // --- a form body may not override the method either (Symfony, Rails)
    for (n, content_type, body) in [
        (
            "_method form field",
            "application/x-www-form-urlencoded",
            "a=1&_method=DELETE",
        ),
        (
            "_method multipart field",
            "multipart/form-data; boundary=b",
            "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        ),
    ] {
        t.push(refused(
            n,
            "bear",
            json!({"capability": "bear", "method": "POST", "path": "/v1/echo",
                   "headers": {"Content-Type": content_type}, "body": body}),
            BR,
        ));
    }
    // --- redirects are returned, never followed
    let to = format!("https://127.0.0.1:{other_port}/api/v1/echo");
    t.push(sent(
        "redirect to another port is returned, not followed",
        "bear",
        get("bear", "/v1/redirect", json!({"query": {"to": to.clone()}})),
        "GET",
        "/api/v1/redirect",
        302,
        Redacted::HeaderIs("location", to),
    ));
    t.push(sent(
        "redirect to another host is returned, not followed",
        "bear",
        get(
            "bear",
            "/v1/redirect",
            json!({"query": {"to": "https://evil.example/steal"}}),
        ),
        "GET",
        "/api/v1/redirect",
        302,
        Redacted::HeaderIs("location", "https://evil.example/steal".to_string()),
    ));
    // --- the API's own errors are answers, not refusals
    for code in [401u64, 404, 503] {
        t.push(sent(
            &format!("upstream status {code} is returned as is"),
            "bear",
            get("bear", &format!("/v1/status/{code}"), json!({})),
            "GET",
            &format!("/api/v1/status/{code}"),
            code,
            Redacted::No,
        ));
    }
    for (m, want) in [
        ("HEAD", "HEAD"),
        ("options", "OPTIONS"),
        ("PUT", "PUT"),
        ("PATCH", "PATCH"),
    ] {
        t.push(sent(
            &format!("{m} is a standard method"),
            "bear",
            json!({"capability": "bear", "method": m, "path": "/v1/echo"}),
            want,
            "/api/v1/echo",
            200,
            if want == "HEAD" {
                Redacted::No
            } else {
                Redacted::Body
            },
        ));
    }
    // --- query values cannot smuggle a second credential parameter
    t.push(sent(
        "credential param smuggled inside a value",
        "qry",
        get(
            "qry",
            "/v1/echo",
            json!({"query": {"x": "1&api_key=attacker"}}),
        ),
        "GET",
        "/q/v1/echo",
        200,
        Redacted::Body,
    ));
    t.push(sent(
        "percent-encoded credential param name stays literal",
        "qry",
        get(
            "qry",
            "/v1/echo",
            json!({"query": {"%61pi_key": "attacker"}}),
        ),
        "GET",
        "/q/v1/echo",
        200,
        Redacted::Body,
    ));
    // --- echoes of the credential in every form
    for (cap, base) in [
        ("bear", "/api"),
        ("qry", "/q"),
        ("hdr", "/h"),
        ("bas", "/b"),
    ] {
        for route in [
            "echo",
            "echo-b64",
            "echo-b64url",
            "echo-hex",
            "echo-hex-upper",
            "echo-urlenc",
            "echo-b64-lines",
            "echo-gzip",
        ] {
            t.push(sent(
                &format!("{cap}: {route}"),
                cap,
                get(cap, &format!("/v1/{route}"), json!({"query": {"q": "1"}})),
                "GET",
                &format!("{base}/v1/{route}"),
                200,
                Redacted::Body,
            ));
        }
    }
    for (cap, base, header) in [
        ("bear", "/api", "x-echo-auth"),
        ("bas", "/b", "x-echo-auth"),
        ("hdr", "/h", "x-echo-key"),
    ] {
        t.push(sent(
            &format!("{cap}: echo-header"),
            cap,
            get(cap, "/v1/echo-header", json!({})),
            "GET",
            &format!("{base}/v1/echo-header"),
            200,
            Redacted::Header(header),
        ));
    }
    for (cap, base) in [("bear", "/api"), ("bas", "/b")] {
        t.push(sent(
            &format!("{cap}: echo-binary"),
            cap,
            get(cap, "/v1/echo-binary", json!({})),
            "GET",
            &format!("{base}/v1/echo-binary"),
            200,
            Redacted::BinaryBody,
        ));
    }
    t.push(sent(
        "POST body echoed with the credential",
        "bear",
        json!({"capability": "bear", "method": "POST", "path": "/v1/echo", "body": "hello",
               "headers": {"Content-Type": "text/plain", "X-Custom": "fine"}}),
        "POST",
        "/api/v1/echo",
        200,
        Redacted::Body,
    ));
    t
}

fn service_of(cap: &str) -> (&'static str, &'static str) {
    SERVICES
        .iter()
        .find(|(c, _, _)| *c == cap)
        .map(|(_, base, canary)| (*base, *canary))
        .expect("known capability")
}

fn check_sent(
    row: &Row,
    r: &vaultd_tests::ToolResult,
    new: &[Recorded],
    method: &str,
    path: &str,
    status: u64,
    redacted: &Redacted,
) {
    let name = &row.name;
    assert!(!r.is_error, "[{name}] expected to be sent, got: {}", r.text);
    assert_eq!(
        new.len(),
        1,
        "[{name}] expected exactly one upstream request, got {new:?}"
    );
    assert_eq!(new[0].method, method, "[{name}]");
    assert_eq!(
        new[0].path, path,
        "[{name}] the path sent is the path matched"
    );
    let v = r.json();
    assert_eq!(v["status"], status, "[{name}] {v}");
    for canary in CANARIES {
        assert_absent(
            r.text.as_bytes(),
            canary.as_bytes(),
            &format!("[{name}] answer"),
        );
        // Base64 wrapped into lines: JSON escapes of line breaks (in the
        // body string, and in that string's own JSON) and real ones removed.
        let unwrapped = r
            .text
            .replace("\\\\n", "")
            .replace("\\n", "")
            .replace('\n', "");
        assert_absent(
            unwrapped.as_bytes(),
            canary.as_bytes(),
            &format!("[{name}] answer, line breaks removed"),
        );
        // Header names come lowercased: any letter case would give it away.
        assert_absent(
            r.text.to_ascii_lowercase().as_bytes(),
            canary.to_ascii_lowercase().as_bytes(),
            &format!("[{name}] answer, in lowercase"),
        );
    }
    // The Basic token on the wire, base64("user:" + secret), is a credential
    // too: any form of it decodes back to the secret.
    let basic_token = forms::b64(format!("user:{BASIC}").as_bytes());
    assert_absent(
        r.text.as_bytes(),
        basic_token.as_bytes(),
        &format!("[{name}] answer (the Basic token)"),
    );
    let (_, canary) = service_of(row.cap);
    match redacted {
        Redacted::No => {}
        Redacted::HeaderIs(h, want) => {
            assert_eq!(v["headers"][*h], json!(want), "[{name}] {v}");
        }
        Redacted::Body => {
            assert_eq!(v["body_encoding"], "utf8", "[{name}] {v}");
            let body = v["body"].as_str().unwrap_or_default();
            assert!(
                body.contains("[REDACTED]"),
                "[{name}] no [REDACTED] in {body}"
            );
        }
        Redacted::BinaryBody => {
            assert_eq!(v["body_encoding"], "base64", "[{name}] {v}");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["body"].as_str().unwrap_or_default())
                .expect("base64 body");
            assert_absent(&raw, canary.as_bytes(), &format!("[{name}] decoded body"));
            assert!(raw.starts_with(BINARY_PREFIX), "[{name}] {raw:?}");
            assert!(raw.ends_with(BINARY_SUFFIX), "[{name}] {raw:?}");
            assert!(
                raw.windows(10).any(|w| w == b"[REDACTED]"),
                "[{name}] no [REDACTED] in {:?}",
                String::from_utf8_lossy(&raw)
            );
        }
        Redacted::Header(h) => {
            let got = v["headers"][h].as_str().unwrap_or_default();
            assert!(got.contains("[REDACTED]"), "[{name}] header {h}: {v}");
        }
    }
}

#[test]
fn hostile_execute_calls_are_refused_or_neutralised() {
    let up = Upstream::start(TlsKind::Good);
    let other = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);

    let rows = table(other.port());
    let (mut n_refused, mut n_sent) = (0, 0);
    for row in &rows {
        assert_eq!(row.args["capability"], row.cap, "table row {}", row.name);
        let before = up.request_count();
        let r = mcp.execute(row.args.clone());
        let new: Vec<Recorded> = up.requests()[before..].to_vec();
        match &row.expect {
            Expect::Refused(code) => {
                n_refused += 1;
                assert!(
                    r.is_error && r.code() == Some(*code),
                    "[{}] expected `{code}`, got isError={} {}",
                    row.name,
                    r.is_error,
                    r.text
                );
                assert!(
                    new.is_empty(),
                    "[{}] refused, yet the upstream saw {new:?}",
                    row.name
                );
            }
            Expect::Sent {
                method,
                path,
                status,
                redacted,
            } => {
                n_sent += 1;
                check_sent(row, &r, &new, method, path, *status, redacted);
            }
        }
    }
    println!(
        "hostile table: {} rows ({n_refused} refused, {n_sent} sent and neutralised)",
        rows.len()
    );
    assert!(rows.len() >= 40);

    // The redirect went back to the agent and was not followed.
    assert_eq!(other.request_count(), 0, "{:?}", other.requests());
    assert_eq!(
        other.connections(),
        0,
        "nothing connected to the redirect target"
    );

    // The upstream's own log: one request per sent row, none outside a
    // capability's prefix, no credential in a request target.
    let reqs = up.requests();
    assert_eq!(reqs.len(), n_sent, "one upstream request per sent row");
    for r in &reqs {
        let prefixes: Vec<String> = SERVICES
            .iter()
            .map(|(_, base, _)| format!("{base}/v1/"))
            .collect();
        assert!(
            prefixes.iter().any(|p| r.path.starts_with(p.as_str())),
            "request outside every capability's prefix: {} {}",
            r.method,
            r.target
        );
        assert!(
            !r.path.contains("/admin") && !r.path.contains("/secret"),
            "deny rule bypassed: {}",
            r.target
        );
        assert!(
            r.target.starts_with('/'),
            "origin-form target: {}",
            r.target
        );
        for canary in [BEARER, HEADER, BASIC] {
            assert_absent(r.target.as_bytes(), canary.as_bytes(), "a request target");
        }
        assert_absent(r.path.as_bytes(), QUERY.as_bytes(), "a request path");
        let api_keys: Vec<String> = r
            .query_pairs()
            .into_iter()
            .filter(|(k, _)| k == "api_key")
            .map(|(_, v)| v)
            .collect();
        if r.path.starts_with("/q/") {
            assert_eq!(api_keys, vec![QUERY.to_string()], "{}", r.target);
        } else {
            assert!(api_keys.is_empty(), "{}", r.target);
            assert_absent(r.target.as_bytes(), QUERY.as_bytes(), "a request target");
        }
        assert_eq!(
            r.authority.as_deref(),
            Some(format!("127.0.0.1:{}", up.port()).as_str()),
            "the host is the service's"
        );
    }

    drop(mcp);
    for canary in CANARIES {
        assert_no_canary(&env, canary);
    }
}

#[test]
fn each_auth_kind_is_injected_exactly_once_in_its_place() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);

    for (cap, base, canary) in SERVICES {
        up.clear();
        let r = mcp.execute(json!({
            "capability": cap, "method": "POST", "path": "/v1/echo/x",
            "query": {"a": "1", "b": "two words"}, "headers": {"X-Trace": "t1"}, "body": "payload"
        }));
        assert!(!r.is_error, "{cap}: {}", r.text);
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "{cap}: {reqs:?}");
        let q = &reqs[0];
        assert_eq!(q.path, format!("{base}/v1/echo/x"));
        assert_eq!(q.header("x-trace"), Some("t1"));
        assert_eq!(q.body, b"payload");
        let auth = q.header_all("authorization");
        let keys = q.header_all("x-api-key");
        let params = q.query_pairs();
        let agent_params: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "api_key")
            .cloned()
            .collect();
        assert_eq!(
            agent_params,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "two words".to_string())
            ],
            "{cap}: the agent's query is passed as given"
        );
        let api_keys: Vec<&String> = params
            .iter()
            .filter(|(k, _)| k == "api_key")
            .map(|(_, v)| v)
            .collect();
        match cap {
            "bear" => {
                assert_eq!(auth, vec![format!("Bearer {canary}").as_str()]);
                assert!(keys.is_empty() && api_keys.is_empty());
            }
            "bas" => {
                let want = format!("Basic {}", forms::b64(format!("user:{canary}").as_bytes()));
                assert_eq!(auth, vec![want.as_str()]);
                assert!(keys.is_empty() && api_keys.is_empty());
            }
            "hdr" => {
                assert_eq!(keys, vec![format!("Key {canary}").as_str()]);
                assert!(auth.is_empty() && api_keys.is_empty());
            }
            "qry" => {
                assert_eq!(api_keys, vec![&canary.to_string()]);
                // Form-encoded on the wire: `+` `/` `=` escaped.
                let raw_q = q.query.as_deref().unwrap_or_default();
                assert!(
                    raw_q.contains(&format!(
                        "api_key={}",
                        forms::percent_encode(canary.as_bytes())
                    )),
                    "{raw_q}"
                );
                assert!(auth.is_empty() && keys.is_empty());
            }
            _ => unreachable!(),
        }
        // The credential appears nowhere else in the request: once in its place.
        let mut elsewhere = Vec::new();
        for (n, v) in &q.headers {
            let in_place = (cap != "qry" && cap != "hdr" && n == "authorization")
                || (cap == "hdr" && n == "x-api-key");
            if !in_place {
                elsewhere.extend_from_slice(format!("{n}: {v}\n").as_bytes());
            }
        }
        elsewhere.extend_from_slice(&q.body);
        elsewhere.extend_from_slice(q.path.as_bytes());
        for c in CANARIES {
            assert_absent(
                &elsewhere,
                c.as_bytes(),
                &format!("{cap}: rest of the request"),
            );
        }
        for c in CANARIES.iter().filter(|c| **c != QUERY) {
            assert_absent(q.target.as_bytes(), c.as_bytes(), &format!("{cap}: target"));
        }
        let v = r.json();
        assert_eq!(v["status"], 200);
        for c in CANARIES {
            assert_absent(r.text.as_bytes(), c.as_bytes(), &format!("{cap}: answer"));
        }
    }
    drop(mcp);
    for canary in CANARIES {
        assert_no_canary(&env, canary);
    }
}

/// A request body that moves everything after the echo's leading `"body"`
/// and `"body_b64"` fields by exactly `shift` bytes: `n` bytes of body take
/// `n + k` bytes in the JSON string (k of them are `"`, escaped as `\"`) and
/// `4 * ceil(n / 3)` in base64. Every shift from 21 on can be reached.
fn pad_body(shift: usize) -> String {
    for n in 0..=shift {
        let base = n + 4 * n.div_ceil(3);
        if base <= shift && shift - base <= n {
            let quotes = shift - base;
            return "\"".repeat(quotes) + &"x".repeat(n - quotes);
        }
    }
    panic!("shift {shift} cannot be reached");
}

#[test]
fn a_body_cut_inside_an_echoed_credential_never_shows_its_start() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    let forms = forms::needle_forms(BEARER.as_bytes());
    let mut cuts = 0;
    for route in [
        "echo",
        "echo-hex",
        "echo-hex-upper",
        "echo-b64",
        "echo-urlenc",
    ] {
        let call = |cap: &str, body: &str| {
            mcp.execute(
                json!({"capability": cap, "method": "POST", "path": format!("/v1/{route}"),
                               "body": body}),
            )
            .assert_ok()
        };
        // Where the first echoed form starts in the whole body (same request,
        // uncut): the scrubbed body has `[REDACTED]` at that very offset.
        let whole = call("bear", "");
        let text = whole["body"].as_str().unwrap();
        let start = text.find("[REDACTED]").expect("an echoed form");
        let span = 2 * BEARER.len() + 2;
        let first = CUT_AT - start - span;
        let mut tail_redacted = 0;
        for shift in first..first + span + 4 {
            let r = call("cut", &pad_body(shift));
            assert_eq!(r["truncated"], true, "{route} shift {shift}: {r}");
            let body = r["body"].as_str().unwrap().as_bytes();
            assert_absent(body, BEARER.as_bytes(), &format!("{route} shift {shift}"));
            // No trailing piece of any form is left, however short.
            for (label, f) in &forms {
                for k in 2..f.len() {
                    assert!(
                        !body.ends_with(&f[..k]),
                        "{route} shift {shift}: the body ends with the first {k} bytes of the {label} form: ...{}",
                        String::from_utf8_lossy(&body[body.len().saturating_sub(60)..])
                    );
                }
            }
            if body.ends_with(b"[REDACTED]") {
                tail_redacted += 1;
            }
            cuts += 1;
        }
        println!("{route}: {tail_redacted} cut(s) fell inside the echoed credential");
        assert!(
            tail_redacted >= 5,
            "{route}: the sweep must put the cut inside the credential"
        );
    }
    println!("{cuts} bodies cut around an echoed credential");
    drop(mcp);
    assert_no_canary(&env, BEARER);
}

/// The cut as an oracle: the agent writes its guess of the credential's
/// beginning at the very end of what the echo returns before the cut. A
/// right guess and a wrong one must get the same answer; when only a tail
/// that began the credential was redacted, the difference gave the agent
/// the credential one character per few dozen calls.
#[test]
fn a_cut_body_answers_a_right_guess_of_the_credential_as_a_wrong_one() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    let echo = |body: &str| {
        mcp.execute(
            json!({"capability": "cut", "method": "POST", "path": "/v1/echo", "body": body}),
        )
        .assert_ok()
    };
    let echoed_body = |body: &str| {
        let r = echo(body);
        assert_eq!(r["truncated"], true, "{r}");
        r["body"].as_str().unwrap().to_owned()
    };
    // Where the request body starts in the echo (`{"body":"`, then ours).
    let lead = echo("MARK")["body"].as_str().unwrap().find("MARK").unwrap();
    let room = CUT_AT - lead;
    for k in [1, 2, 5, 12, BEARER.len() - 1] {
        let right = &BEARER[..k];
        let last = right.as_bytes()[k - 1];
        let wrong = format!(
            "{}{}",
            &right[..k - 1],
            if last == b'Q' { 'W' } else { 'Q' }
        );
        let pad = "x".repeat(room - k);
        let (a, b) = (
            echoed_body(&(pad.clone() + right)),
            echoed_body(&(pad + &wrong)),
        );
        assert_eq!(
            a, b,
            "the first {k} characters of the credential, guessed right, are told apart from a wrong guess"
        );
        assert!(a.ends_with("[REDACTED]"), "{a}");
    }
    drop(mcp);
    assert_no_canary(&env, BEARER);
}

/// The agent can open vaultd's socket itself and speak gRPC, bypassing
/// vault-mcp (and its JSON objects, which cannot repeat a name): the daemon
/// applies every check on its own.
#[test]
fn raw_grpc_calls_get_the_same_checks() {
    use vault_proto::v1::{ExecuteRequest, Header};
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let h = |n: &str, v: &str| Header {
        name: n.into(),
        value: v.into(),
    };
    let req = |cap: &str, headers: Vec<Header>, query: Vec<Header>| ExecuteRequest {
        agent_token: token.clone(),
        capability: cap.into(),
        method: "GET".into(),
        path: "/v1/echo".into(),
        headers,
        query,
        ..Default::default()
    };
    let many_headers: Vec<Header> = (0..65).map(|i| h(&format!("X-H{i}"), "v")).collect();
    let many_params: Vec<Header> = (0..129).map(|i| h(&format!("p{i}"), "v")).collect();
    let cases: Vec<(&str, &str, ExecuteRequest)> = vec![
        (
            "two Host headers",
            "bad_request",
            req("bear", vec![h("Host", "a"), h("Host", "b")], vec![]),
        ),
        (
            "the same header twice, in two cases",
            "bad_request",
            req("bear", vec![h("X-A", "1"), h("x-a", "2")], vec![]),
        ),
        (
            "credential query param twice",
            "bad_request",
            req(
                "qry",
                vec![],
                vec![h("q", "1"), h("api_key", "x"), h("api_key", "y")],
            ),
        ),
        (
            "credential header after a harmless one",
            "bad_request",
            req("hdr", vec![h("X-Ok", "1"), h("x-api-key", "x")], vec![]),
        ),
        (
            "65 headers",
            "bad_request",
            req("bear", many_headers, vec![]),
        ),
        (
            "129 query parameters",
            "bad_request",
            req("bear", vec![], many_params),
        ),
        (
            "empty header name",
            "bad_request",
            req("bear", vec![h("", "v")], vec![]),
        ),
        (
            "empty query name",
            "bad_request",
            req("bear", vec![], vec![h("", "v")]),
        ),
        (
            "no agent token",
            "unknown_agent",
            ExecuteRequest {
                agent_token: String::new(),
                ..req("bear", vec![], vec![])
            },
        ),
        (
            "a made-up agent token",
            "unknown_agent",
            ExecuteRequest {
                agent_token: format!("{token}x"),
                ..req("bear", vec![], vec![])
            },
        ),
        (
            "empty capability",
            "no_such_capability",
            req("", vec![], vec![]),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = cases.len();
    rt.block_on(async {
        let mut c =
            vault_proto::client::connect(&env.socket_path(), std::time::Duration::from_secs(5))
                .await
                .expect("connect to vaultd");
        for (what, code, r) in cases {
            let status = c.execute(r).await.expect_err(what);
            assert!(
                status.message().starts_with(&format!("{code}: ")),
                "[{what}] expected {code}: {status:?}"
            );
            for canary in CANARIES {
                assert_absent(status.message().as_bytes(), canary.as_bytes(), what);
            }
        }
        // The same connection still serves a good call.
        let ok = c
            .execute(req(
                "qry",
                vec![h("X-Ok", "1")],
                vec![h("q", "1"), h("q", "2")],
            ))
            .await
            .expect("a good call")
            .into_inner();
        assert_eq!(ok.status, 200);
        assert_absent(&ok.body, QUERY.as_bytes(), "the good call's body");
        assert!(ok.body.windows(10).any(|w| w == b"[REDACTED]"));
    });
    println!("{n} raw gRPC calls refused");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "only the good call reached the upstream");
    let q = reqs[0].query_pairs();
    assert_eq!(
        q,
        vec![
            ("api_key".to_string(), QUERY.to_string()),
            ("q".to_string(), "1".to_string()),
            ("q".to_string(), "2".to_string())
        ],
        "the credential first, then the agent's parameters in order"
    );
    for canary in CANARIES {
        assert_no_canary(&env, canary);
    }
}

/// Rule 6 for labelled codings: vaultd asks for `identity`, decodes a single
/// gzip or deflate (zlib or raw) sent anyway, and refuses anything it cannot
/// decode whole: an unknown coding, stacked codings (a second
/// `Content-Encoding` line included, which reqwest's own decoder would have
/// let through), or bytes after the compressed stream.
#[test]
fn labelled_codings_are_decoded_whole_or_refused() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    let call = |method: &str, ce: &str, extra: &[(&str, &str)]| {
        let mut query = serde_json::Map::new();
        query.insert("ce".into(), json!(ce));
        for (k, v) in extra {
            query.insert((*k).into(), json!(v));
        }
        up.clear();
        let r = mcp.execute(json!({
            "capability": "bear", "method": method, "path": "/v1/echo-coded", "query": query,
        }));
        let sent = up.wait_for_requests(1, std::time::Duration::from_secs(5));
        assert_eq!(sent.len(), 1, "{ce}");
        assert_eq!(sent[0].header("accept-encoding"), Some("identity"), "{ce}");
        r
    };
    for ce in [
        "gzip",
        "deflate",
        "deflate-raw",
        "identity,deflate",
        "identity,gzip,identity",
    ] {
        let r = call("GET", ce, &[]);
        let v = r.assert_ok();
        assert_eq!(v["body_encoding"], "utf8", "{ce}: {v}");
        assert_eq!(v["truncated"], false, "{ce}: {v}");
        let body = v["body"].as_str().unwrap();
        assert!(
            body.contains("\"authorization\":\"Bearer [REDACTED]\""),
            "{ce}: {body}"
        );
        assert!(
            v["headers"].get("content-encoding").is_none(),
            "{ce}: the body went back decoded, so no coding may be named: {v}"
        );
    }
    // HEAD: a coding with no body to decode.
    assert_eq!(call("HEAD", "gzip", &[]).assert_ok()["status"], 200);
    for (ce, extra, why) in [
        (
            "identity,deflate-raw,gzip",
            &[][..],
            "Content-Encoding \"deflate, gzip\"",
        ),
        (
            "gzip,deflate-raw",
            &[][..],
            "Content-Encoding \"gzip, deflate\"",
        ),
        ("br", &[][..], "Content-Encoding \"br\""),
        ("xz", &[][..], "Content-Encoding \"xz\""),
        ("gzip", &[("junk", "1")][..], "damaged gzip body"),
        ("deflate", &[("junk", "1")][..], "damaged deflate body"),
        ("deflate-raw", &[("junk", "1")][..], "damaged deflate body"),
    ] {
        let r = call("GET", ce, extra);
        r.assert_refused("upstream_error");
        assert!(r.text.contains(why), "{ce} {extra:?}: {}", r.text);
        assert!(r.text.contains("check the service"), "{}", r.text);
    }
    drop(mcp);
    assert_no_canary(&env, BEARER);
}

/// Rule 6: a body that is gzip or zlib data without a Content-Encoding that
/// says so (`application/gzip`, or compressed bytes sent as plain) would
/// reach the agent as base64 it can decompress. vaultd decompresses such a
/// body itself and refuses it when a credential form is inside; a harmless
/// one goes through untouched.
#[test]
fn unlabelled_compressed_bodies_holding_a_credential_are_refused() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    for (cap, base) in [
        ("bear", "/api"),
        ("qry", "/q"),
        ("hdr", "/h"),
        ("bas", "/b"),
    ] {
        for route in ["echo-gzip-unlabelled", "echo-zlib-unlabelled"] {
            up.clear();
            let r = mcp.execute(get(cap, &format!("/v1/{route}"), json!({})));
            assert_eq!(up.request_count(), 1, "{cap} {route}");
            r.assert_refused("upstream_error");
            assert!(
                r.text.contains("compressed data that holds a credential"),
                "{cap} {route}: {}",
                r.text
            );
            let plain = mcp.execute(get(
                cap,
                &format!("/v1/{route}"),
                json!({"query": {"plain": "1"}}),
            ));
            let v = plain.json();
            assert_eq!(v["status"], 200, "{cap} {route}: {v}");
            assert_eq!(v["body_encoding"], "base64", "{v}");
            assert!(!plain.is_error, "{base}: {}", plain.text);
        }
    }
    drop(mcp);
    for canary in CANARIES {
        assert_no_canary(&env, canary);
    }
}

/// Rule 6 with rule 7: an unlabelled compressed body cut at
/// `max_response_bytes` is refused, since the agent could decompress the
/// cut stream up to the cut and pad its request so that the cut falls inside
/// the echoed credential. Paddings of every length up to a few compressed
/// bytes move the cut across the echo.
#[test]
fn a_cut_unlabelled_compressed_body_is_refused() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let mcp = env.mcp(&token);
    let mut cut = 0;
    for route in ["echo-gzip-unlabelled", "echo-zlib-unlabelled"] {
        for pad in (0..240).step_by(6) {
            // The echo holds the request body before the Authorization
            // header; hex of a counter compresses badly, so the cut moves
            // with the body's length.
            let padding: String = (0..pad).map(|i| format!("{:x}", i * 7919 % 4096)).collect();
            let r = mcp.execute(json!({
                "capability": "cut", "method": "POST", "path": format!("/v1/{route}"),
                "body": padding,
            }));
            r.assert_refused("upstream_error");
            // Cut after the echoed credential: it is found whole; before or
            // inside it: refused for the cut.
            let why = if r.text.contains("a cut compressed body cannot be checked") {
                cut += 1;
                "cut"
            } else {
                "whole"
            };
            assert!(
                why == "cut" || r.text.contains("compressed data that holds a credential"),
                "{route} pad {pad}: {}",
                r.text
            );
        }
    }
    println!("{cut} of 80 cut bodies refused for the cut, the rest for a whole credential");
    assert!(cut > 0, "no padding put the cut before the end of the echo");
    drop(mcp);
    assert_no_canary(&env, BEARER);
}

/// Rules 7, 9 and 10 against a decompression bomb: 120 KiB of unlabelled
/// gzip that inflates to 60 MiB of text dense in escapes. vaultd
/// decompresses at most 16 times `max_response_bytes` (2 MiB here; it used to
/// inflate and scan up to 64 MiB, about 1 s of its one worker thread per
/// call) and does it off the runtime thread, so four such calls in flight
/// neither keep `vaultctl lock` from ending them at once nor reach the agent.
#[test]
fn a_decompression_bomb_neither_stalls_vaultd_nor_reaches_the_agent() {
    let up = Upstream::start(TlsKind::Good);
    let env = VaultEnv::new();
    let (_d, token) = setup(&up, &env);
    let bomb = |token: String| {
        let env = &env;
        move || {
            env.with_grpc(async |mut c| {
                c.execute(vault_proto::v1::ExecuteRequest {
                    agent_token: token,
                    capability: "small".into(),
                    method: "GET".into(),
                    path: "/v1/echo-gzip-unlabelled".into(),
                    query: vec![vault_proto::v1::Header {
                        name: "inflates_mib".into(),
                        value: "60".into(),
                    }],
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().status)
                .map_err(|s| s.message().to_owned())
            })
        }
    };

    let alone = bomb(token.clone())().expect_err("a bomb is refused");
    assert!(
        alone.starts_with("upstream_error: ")
            && alone.contains("larger than 2 MiB once decompressed")
            && alone.contains("max_response_bytes"),
        "{alone}"
    );

    up.clear();
    let took = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4).map(|_| s.spawn(bomb(token.clone()))).collect();
        let waiting = std::time::Instant::now();
        while up.request_count() < 4 {
            assert!(waiting.elapsed() < std::time::Duration::from_secs(20));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
        let started = std::time::Instant::now();
        env.lock();
        let took = started.elapsed();
        for call in calls {
            let r = call.join().unwrap();
            let e = r.expect_err("no bomb reaches the agent");
            assert!(
                e.starts_with("locked: ") || e.contains("larger than 2 MiB"),
                "{e}"
            );
        }
        took
    });
    println!("vaultctl lock took {took:?} with four bombs being checked");
    assert!(
        took < std::time::Duration::from_secs(1),
        "lock waited {took:?} for the bombs"
    );
    assert_no_canary(&env, BEARER);
}
