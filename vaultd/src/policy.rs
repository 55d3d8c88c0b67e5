//! The policy: services, agents and capabilities (DESIGN.md, "Policy").
//!
//! `vaultctl policy apply FILE` parses the TOML here (to report syntax errors
//! and to read every `ca_file` it names), then sends the text and the PEMs to
//! vaultd, which parses it again, validates all of it against the vault
//! (secrets and agents that exist) and stores the result inside the sealed
//! vault as a [`StoredPolicy`]. Every problem is reported with its line, all
//! at once; nothing changes unless the whole file is valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::proxy::request::Rule;

/// Default per-call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default response size cap.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Largest allowed response cap (within [`vault_proto::MAX_REPLY_BYTES`],
/// which a reply's headers also need room in).
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 256 * 1024 * 1024;
const _: () = assert!(MAX_RESPONSE_BYTES_LIMIT + (16 << 20) <= vault_proto::MAX_REPLY_BYTES as u64);
/// Credentials shorter than this cannot be scrubbed reliably and are refused.
pub const MIN_CREDENTIAL_LEN: usize = 8;

/// How a service's credential is attached to each request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer {
        /// Secret name.
        secret: String,
    },
    /// `Authorization: Basic base64(username:secret)`.
    Basic {
        /// Username (not secret).
        username: String,
        /// Secret name.
        secret: String,
    },
    /// `<name>: <prefix><secret>`.
    Header {
        /// Header name.
        name: String,
        /// Secret name.
        secret: String,
        /// Text before the secret (e.g. "Token ").
        prefix: String,
    },
    /// `?<name>=<secret>` added to every request.
    Query {
        /// Query parameter name.
        name: String,
        /// Secret name.
        secret: String,
    },
}

impl Auth {
    /// Name of the secret this auth uses.
    pub fn secret(&self) -> &str {
        match self {
            Auth::Bearer { secret }
            | Auth::Basic { secret, .. }
            | Auth::Header { secret, .. }
            | Auth::Query { secret, .. } => secret,
        }
    }
}

/// What validation needs to know of a secret's value, without the value:
/// its length and whether it can stand in an HTTP header as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretShape {
    /// Bytes in the value.
    pub len: usize,
    /// Whether the value holds a control character (CR, LF, NUL, ... but not
    /// tab) that no HTTP header value may carry.
    pub has_control: bool,
    /// Whether the value holds a byte outside ASCII.
    pub has_non_ascii: bool,
}

impl SecretShape {
    /// The shape of `value`.
    pub fn of(value: &[u8]) -> Self {
        SecretShape {
            len: value.len(),
            has_control: value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f),
            has_non_ascii: !value.is_ascii(),
        }
    }

    /// Why a secret of this shape, called `name`, cannot be the credential
    /// of `auth`; `None` when it can. Bearer and header credentials go into a
    /// header value as they are; basic and query ones are encoded first.
    pub fn problem(&self, name: &str, auth: &Auth) -> Option<String> {
        if self.len < MIN_CREDENTIAL_LEN {
            return Some(format!(
                "secret {name:?} is shorter than {MIN_CREDENTIAL_LEN} bytes: too short to redact from responses safely"
            ));
        }
        let in_header = matches!(auth, Auth::Bearer { .. } | Auth::Header { .. });
        if in_header && self.has_control {
            return Some(format!(
                "secret {name:?} holds a line break or another control character, which cannot go in an HTTP header: \
                 set it again without it (`vaultctl secret set {name}` reads the value from the terminal or stdin and drops one trailing newline)"
            ));
        }
        // Servers read header bytes above 0x7f as Latin-1 and may echo them
        // re-encoded (`\u00e9`, UTF-8), in forms the scrubber does not know.
        (in_header && self.has_non_ascii).then(|| {
            format!(
                "secret {name:?} holds bytes outside ASCII, which an HTTP header does not carry as they are (servers read them as Latin-1 \
                 and may echo them re-encoded, past the redaction): set it again as the API gave it (API keys are ASCII) with `vaultctl secret set {name}`"
            )
        })
    }
}

/// A configured upstream API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// Normalized `https://host[:port][/prefix]`, no trailing slash.
    pub base_url: String,
    /// Credential injection.
    pub auth: Auth,
    /// Whole-exchange timeout, milliseconds.
    pub timeout_ms: u64,
    /// Response body cap.
    pub max_response_bytes: u64,
    /// The `ca_file` path as written (shown by `policy show`; never opened by vaultd).
    pub ca_file: Option<String>,
    /// The PEM read from `ca_file` at apply time, sealed in the vault.
    pub ca_pem: Option<String>,
    /// Allow loopback/private/link-local addresses.
    pub allow_private_network: bool,
}

/// A grant of rules on one service to some agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capability {
    /// Unique name.
    pub name: String,
    /// Service name.
    pub service: String,
    /// Agents granted.
    pub agents: Vec<String>,
    /// Allow rules (`METHOD PATH`).
    pub allow: Vec<String>,
    /// Deny rules; deny wins.
    pub deny: Vec<String>,
    /// Rate limit as written ("60/min"), if any.
    pub rate_limit: Option<String>,
    /// Calls must carry a reason.
    pub requires_reason: bool,
}

/// The policy as sealed in the vault.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// Services.
    pub services: Vec<Service>,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
}

/// A parsed rate limit: `count` calls per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed per period (also the burst).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl RateLimit {
    /// Parses `N/sec|min|hour|day` (also `s`, `m`, `h`, `d`, `second`, `minute`).
    pub fn parse(s: &str) -> Result<RateLimit, String> {
        let (n, unit) = s.split_once('/').ok_or_else(|| {
            format!("rate_limit {s:?} must look like \"60/min\" (N/sec, N/min, N/hour or N/day)")
        })?;
        let digits = n.trim();
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.bytes().all(|b| b == b'0')
        {
            return Err(format!(
                "rate_limit {s:?}: {n:?} is not a positive whole number"
            ));
        }
        let count: u32 = digits.parse().map_err(|_| {
            format!(
                "rate_limit {s:?}: {digits} is more than the largest count, {}; leave rate_limit out for no limit",
                u32::MAX
            )
        })?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86400),
            other => {
                return Err(format!(
                    "rate_limit {s:?}: unknown unit {other:?} (use sec, min, hour or day)"
                ));
            }
        };
        Ok(RateLimit { count, per })
    }
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    service: Vec<Spanned<ServiceIn>>,
    #[serde(default)]
    agent: Vec<Spanned<AgentIn>>,
    #[serde(default)]
    capability: Vec<Spanned<CapabilityIn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceIn {
    name: Spanned<String>,
    base_url: Spanned<String>,
    auth: Spanned<AuthIn>,
    timeout: Option<Spanned<String>>,
    max_response_bytes: Option<Spanned<i64>>,
    ca_file: Option<Spanned<String>>,
    allow_private_network: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthIn {
    #[serde(rename = "type")]
    kind: String,
    secret: Option<String>,
    username: Option<String>,
    name: Option<String>,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentIn {
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilityIn {
    name: Spanned<String>,
    service: Spanned<String>,
    #[serde(default)]
    agents: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    rate_limit: Option<Spanned<String>>,
    requires_reason: Option<bool>,
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// All problems found, formatted one per line as `SOURCE:LINE: message`.
pub fn format_errors(source: &str, errors: &[PolicyError]) -> String {
    let mut out = String::new();
    for e in errors {
        if e.line > 0 {
            let _ = writeln!(out, "{source}:{}: {}", e.line, e.message);
        } else {
            let _ = writeln!(out, "{source}: {}", e.message);
        }
    }
    out.trim_end().to_string()
}

/// What the vault already holds, for validation.
#[derive(Debug)]
pub struct Context<'a> {
    /// Names of secrets in the vault.
    pub secrets: BTreeSet<&'a str>,
    /// Names of agents in the vault.
    pub agents: BTreeSet<&'a str>,
    /// PEM text of each `ca_file`, keyed by the path as written.
    pub ca_files: &'a HashMap<String, String>,
    /// The shape of each secret's value (to refuse credentials too short to
    /// scrub, or that cannot go in a header).
    pub secret_shapes: BTreeMap<&'a str, SecretShape>,
}

/// A valid policy.
#[derive(Debug)]
pub struct Parsed {
    /// Services and capabilities to store.
    pub policy: StoredPolicy,
    /// Agents the file declares.
    pub agents: Vec<String>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The `ca_file` paths a policy names, for vaultctl to read. Syntax errors are reported here too.
pub fn ca_files(text: &str) -> Result<Vec<(String, usize)>, Vec<PolicyError>> {
    let file = syntax(text)?;
    Ok(file
        .service
        .iter()
        .filter_map(|s| {
            s.get_ref()
                .ca_file
                .as_ref()
                .map(|c| (c.get_ref().clone(), line_of(text, c.span().start)))
        })
        .collect())
}

/// Where the policy format is described, in files a user has: appended to
/// every TOML error (the man page only lists the flags).
pub const FORMAT_HINT: &str = "the policy format, with an example, is in README.md, \"First use\" \
     (/usr/share/doc/vaultd/README.md from the package), and `vaultctl policy show` prints \
     the policy in force in it";

fn syntax(text: &str) -> Result<PolicyFile, Vec<PolicyError>> {
    toml::from_str::<PolicyFile>(text).map_err(|e| {
        let start = e.span().map(|s| s.start);
        let line = start.map(|s| line_of(text, s)).unwrap_or(0);
        let msg = explain_toml_error(text, start, e.message().trim());
        vec![PolicyError {
            line,
            message: format!("{msg}; {FORMAT_HINT}"),
        }]
    })
}

/// The key whose value starts at `offset`: the last `KEY =` before it on its line.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (lhs, _) = line.rsplit_once('=')?;
    let lhs = lhs.trim_end();
    // Bytes, not chars: the byte after a non-ASCII character's first byte
    // is not a char boundary, while after an ASCII byte it always is.
    let start = lhs
        .bytes()
        .rposition(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        .map_or(0, |i| i + 1);
    Some(&lhs[start..]).filter(|k| !k.is_empty())
}

/// A serde/TOML type error ("invalid type: string \"1MB\", expected i64")
/// restated as what the field takes, in the words of the policy format.
fn explain_toml_error(text: &str, offset: Option<usize>, msg: &str) -> String {
    let Some((found, expected)) = msg
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    else {
        return msg.to_string();
    };
    let key = offset.and_then(|o| key_before(text, o)).unwrap_or("");
    let takes = match (key, expected) {
        ("max_response_bytes", _) => {
            "a whole number of bytes without quotes, like 1048576".to_string()
        }
        ("timeout", _) => "a duration in quotes, like \"30s\"".to_string(),
        ("rate_limit", _) => "a rate in quotes, like \"60/min\"".to_string(),
        ("allow_private_network" | "requires_reason", _) | (_, "a boolean") => {
            "true or false, without quotes".to_string()
        }
        ("base_url", _) => "a URL in quotes, like \"https://api.github.com\"".to_string(),
        ("ca_file", _) => "a file path in quotes, like \"/path/ca.pem\"".to_string(),
        ("auth", _) | (_, "struct AuthIn") => {
            "a table like { type = \"bearer\", secret = \"github-token\" }".to_string()
        }
        ("agents", _) => "a list of agent names, like [\"claude-code\"]".to_string(),
        ("allow" | "deny", _) => "a list of rules, like [\"GET /repos/**\"]".to_string(),
        ("service" | "agent" | "capability", "a sequence") => {
            format!("written as [[{key}]] tables, not {key} = ...")
        }
        ("type", _) => "one of \"bearer\", \"basic\", \"header\", \"query\"".to_string(),
        (_, "a string") => "text in quotes".to_string(),
        (_, "a sequence") => "a list like [\"...\"]".to_string(),
        (_, e) if e.starts_with("struct ") => "a table".to_string(),
        (_, e) if e.starts_with('i') || e.starts_with('u') => {
            "a whole number without quotes".to_string()
        }
        (_, e) => e.to_string(),
    };
    let found = found.replace('`', "");
    if key.is_empty() {
        format!("this value must be {takes} (found {found})")
    } else {
        format!("{key} must be {takes} (found {found})")
    }
}

/// Checks a service, capability or agent name (`kind`): 1-64 of
/// `A-Z a-z 0-9 - _ .`, so that every name is safe in a file name, a log line
/// and an MCP entry.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."
        ))
    }
}

/// Checks a service base URL and returns its normalized form.
///
/// The URL parser repairs what it reads (`/a/../b` becomes `/b`, `%2e%2e`
/// too, `\\` becomes `/`, tabs and newlines vanish), so the raw text is
/// checked first: a base URL that does not mean what it says is refused, the
/// same way rule paths are, never rewritten.
pub fn normalize_base_url(raw: &str) -> Result<String, String> {
    let url =
        url::Url::parse(raw).map_err(|e| format!("base_url {raw:?} is not a valid URL ({e})"))?;
    if url.scheme() != "https" {
        return Err(format!("base_url {raw:?} must use https://"));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "base_url {raw:?} contains spaces or control characters: remove them (write a space in a path as %20)"
        ));
    }
    let Some(rest) = raw
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .map(|_| &raw[8..])
        .filter(|rest| !rest.starts_with('/'))
    else {
        return Err(format!(
            "base_url {raw:?} must start with https:// followed by the host, like \"https://api.example.com\""
        ));
    };
    if rest.contains('\\') {
        return Err(format!(
            "base_url {raw:?} contains a backslash: use / between path segments"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "base_url {raw:?} must not contain user:password@; use auth instead"
        ));
    }
    if rest.contains('?') || rest.contains('#') {
        return Err(format!(
            "base_url {raw:?} must not contain ? or #: write only https://host[:port][/path]; \
             query parameters belong in each call (or in auth type \"query\" for a key)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("base_url {raw:?} has no host"));
    }
    // The path as written: from the first / after the host, one trailing / dropped.
    let raw_path = rest.find('/').map_or("", |i| &rest[i..]);
    let trimmed = raw_path.strip_suffix('/').unwrap_or(raw_path);
    if !trimmed.is_empty() {
        let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
        let is_dot = |seg: &str| {
            let decoded = seg.replace("%2e", ".").replace("%2E", ".");
            decoded == "." || decoded == ".."
        };
        if segments.iter().any(|seg| is_dot(seg)) {
            let mut meant = format!("https://{}", url.host_str().unwrap_or_default());
            if let Some(port) = url.port() {
                let _ = write!(meant, ":{port}");
            }
            meant.push_str(url.path().trim_end_matches('/'));
            return Err(format!(
                "base_url {raw:?} has a \".\" or \"..\" path segment (also refused percent-encoded, \
                 as %2e): write the path it leads to, e.g. {meant:?}"
            ));
        }
        if segments.iter().any(|seg| seg.is_empty()) {
            let joined: Vec<&str> = segments.into_iter().filter(|s| !s.is_empty()).collect();
            let host_end = rest.find('/').unwrap_or(rest.len());
            return Err(format!(
                "base_url {raw:?} has an empty path segment (//): write {:?}",
                format!("https://{}/{}", &rest[..host_end], joined.join("/"))
            ));
        }
        // Everything else a rule path may not hold (`..;`, %2F, %25XX,
        // backslashes, non-ASCII...): the same check, so the prefix sent is
        // exactly the one written.
        crate::proxy::request::canonical_path(trimmed)
            .map_err(|e| format!("base_url {raw:?}: its {}", e.0))?;
    }
    let path = url.path().trim_end_matches('/');
    if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("base_url {raw:?} has an empty or dot path segment"));
    }
    if url.port() == Some(0) {
        return Err(format!(
            "base_url {raw:?} names port 0, which no connection can use: write the service's port, or none for 443"
        ));
    }
    let mut base = format!("https://{}", url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        let _ = write!(base, ":{port}");
    }
    base.push_str(path);
    Ok(base)
}

/// Why a header auth may not use this header name, if it may not.
fn check_auth_header_name(name: &str) -> Result<(), String> {
    // The parser vaultd builds the header with (src/proxy/mod.rs): RFC 9110 token characters.
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "auth header name {name:?} is not a valid header name: use letters, digits and - \
             (like \"X-Api-Key\"), no spaces, colons or quotes"
        ));
    }
    let lower = name.to_ascii_lowercase();
    let why = match lower.as_str() {
        "host" => "the host comes from base_url",
        "content-length" | "transfer-encoding" | "expect" => {
            "vaultd frames each request itself, and a second framing header can split one request in two"
        }
        "connection" | "keep-alive" | "te" | "trailer" | "upgrade" | "http2-settings" => {
            "hop-by-hop headers are consumed by the connection and never reach the API"
        }
        "cookie" | "cookie2" => {
            "vaultd keeps no cookie state and sends no cookies, so a credential in a cookie is not supported"
        }
        "accept-encoding" => "vaultd controls compression so that it can scrub responses",
        _ if lower.starts_with("proxy-") => {
            "Proxy-* headers are meant for a proxy, not for the API"
        }
        _ => return Ok(()),
    };
    Err(format!(
        "auth header name {name:?} cannot carry a credential ({why}): use the header the API \
         documents for its key (like X-Api-Key or Authorization)"
    ))
}

/// Checks a `ca_file` PEM with the code vaultd builds the service's HTTP
/// client with ([`build_client`](crate::proxy::upstream::build_client)), so
/// that a certificate the client would reject at unlock is refused here.
fn check_ca_pem(service: &str, pem: &str) -> Result<(), String> {
    let probe = Service {
        name: service.to_string(),
        base_url: String::new(),
        auth: Auth::Bearer {
            secret: String::new(),
        },
        timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
        max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        ca_file: None,
        ca_pem: Some(pem.to_string()),
        allow_private_network: false,
    };
    crate::proxy::upstream::build_client(&probe, &rustls::RootCertStore::empty())
        .map(drop)
        .map_err(|e| {
            let e = e.to_string();
            let prefix = format!("service {service}: ");
            e.strip_prefix(&prefix).unwrap_or(&e).to_string()
        })
}

/// Parses and validates a whole policy file against `ctx`.
pub fn parse(text: &str, ctx: &Context<'_>) -> Result<Parsed, Vec<PolicyError>> {
    let file = syntax(text)?;
    let mut errors = Vec::new();
    let mut err = |offset: usize, message: String| {
        errors.push(PolicyError {
            line: line_of(text, offset),
            message,
        })
    };

    // Agents: declared here or already in the vault.
    let mut declared = Vec::new();
    let mut seen_agents = BTreeSet::new();
    for a in &file.agent {
        let name = a.get_ref().name.get_ref();
        if let Err(m) = check_name("agent", name) {
            err(a.get_ref().name.span().start, m);
        } else if !seen_agents.insert(name.clone()) {
            err(
                a.get_ref().name.span().start,
                format!("duplicate agent {name:?}: declare each agent once"),
            );
        } else {
            declared.push(name.clone());
        }
    }

    let mut services = Vec::new();
    let mut service_names = BTreeSet::new();
    for s in &file.service {
        let sv = s.get_ref();
        let at = sv.name.span().start;
        let name = sv.name.get_ref().clone();
        if let Err(m) = check_name("service", &name) {
            err(at, m);
        } else if !service_names.insert(name.clone()) {
            err(
                at,
                format!("duplicate service {name:?}: each service name must be unique"),
            );
        }
        let base_url = match normalize_base_url(sv.base_url.get_ref()) {
            Ok(u) => u,
            Err(m) => {
                err(sv.base_url.span().start, m);
                String::new()
            }
        };
        let a = sv.auth.get_ref();
        let auth_at = sv.auth.span().start;
        let need = |field: &Option<String>, what: &str| {
            field
                .clone()
                .ok_or_else(|| format!("auth type {:?} needs {what}", a.kind))
        };
        let auth = match a.kind.as_str() {
            "bearer" => need(&a.secret, "secret = \"NAME\"").map(|secret| Auth::Bearer { secret }),
            "basic" => need(&a.secret, "secret = \"NAME\"").and_then(|secret| {
                need(&a.username, "username = \"USER\"")
                    .map(|username| Auth::Basic { username, secret })
            }),
            "header" => need(&a.secret, "secret = \"NAME\"").and_then(|secret| {
                need(&a.name, "name = \"X-Api-Key\"").map(|name| Auth::Header {
                    name,
                    secret,
                    prefix: a.prefix.clone().unwrap_or_default(),
                })
            }),
            "query" => need(&a.secret, "secret = \"NAME\"").and_then(|secret| {
                need(&a.name, "name = \"api_key\"").map(|name| Auth::Query { name, secret })
            }),
            other => Err(format!(
                "unknown auth type {other:?}: use bearer, basic, header or query"
            )),
        };
        if let Ok(auth) = &auth {
            let (kind, takes, example) = match auth {
                Auth::Bearer { .. } => (
                    "bearer",
                    &["secret"][..],
                    "{ type = \"bearer\", secret = \"NAME\" }",
                ),
                Auth::Basic { .. } => (
                    "basic",
                    &["username", "secret"][..],
                    "{ type = \"basic\", username = \"USER\", secret = \"NAME\" }",
                ),
                Auth::Header { .. } => (
                    "header",
                    &["name", "secret", "prefix"][..],
                    "{ type = \"header\", name = \"X-Api-Key\", secret = \"NAME\", prefix = \"\" }",
                ),
                Auth::Query { .. } => (
                    "query",
                    &["name", "secret"][..],
                    "{ type = \"query\", name = \"api_key\", secret = \"NAME\" }",
                ),
            };
            let given = [
                ("username", a.username.is_some()),
                ("name", a.name.is_some()),
                ("prefix", a.prefix.is_some()),
            ];
            let extra: Vec<&str> = given
                .iter()
                .filter(|(k, set)| *set && !takes.contains(k))
                .map(|(k, _)| *k)
                .collect();
            if !extra.is_empty() {
                err(
                    auth_at,
                    format!(
                        "auth type {kind:?} does not use {}: remove it (this type is written {example}; \
                         bearer, basic, header and query each take different keys)",
                        extra.join(" or ")
                    ),
                );
            }
        }
        let auth = match auth {
            Ok(auth) => {
                let secret = auth.secret();
                if let Err(e) = crate::daemon::check_secret_name(secret) {
                    err(
                        auth_at,
                        format!(
                            "auth secret: {e}; name the secret as `vaultctl secret list` shows it"
                        ),
                    );
                } else if !ctx.secrets.contains(secret) {
                    err(
                        auth_at,
                        format!(
                            "unknown secret {secret:?}: add it first with `vaultctl secret set {secret}`"
                        ),
                    );
                } else if let Some(problem) = ctx
                    .secret_shapes
                    .get(secret)
                    .and_then(|shape| shape.problem(secret, &auth))
                {
                    err(auth_at, problem);
                }
                match &auth {
                    Auth::Header { name, prefix, .. } => {
                        if let Err(m) = check_auth_header_name(name) {
                            err(auth_at, m);
                        }
                        if prefix.bytes().any(|b| b.is_ascii_control()) {
                            err(
                                auth_at,
                                "auth prefix must not contain control characters".to_string(),
                            );
                        }
                    }
                    Auth::Basic { username, .. }
                        if username.contains(':')
                            || username.bytes().any(|b| b.is_ascii_control()) =>
                    {
                        err(
                            auth_at,
                            "basic auth username must not contain ':' or control characters"
                                .to_string(),
                        );
                    }
                    Auth::Query { name, .. }
                        if name.is_empty()
                            || name
                                .bytes()
                                .any(|b| b.is_ascii_control() || b == b'&' || b == b'=') =>
                    {
                        err(
                            auth_at,
                            format!("auth query name {name:?} is not a valid parameter name"),
                        );
                    }
                    _ => {}
                }
                Some(auth)
            }
            Err(m) => {
                err(auth_at, m);
                None
            }
        };
        let timeout = match &sv.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => match humantime::parse_duration(t.get_ref()) {
                Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => d,
                _ => {
                    err(
                        t.span().start,
                        format!(
                            "timeout {:?} must be a duration between 100ms and 1h, like \"30s\"",
                            t.get_ref()
                        ),
                    );
                    DEFAULT_TIMEOUT
                }
            },
        };
        let max_response_bytes = match &sv.max_response_bytes {
            None => DEFAULT_MAX_RESPONSE_BYTES,
            Some(m) => match u64::try_from(*m.get_ref()) {
                Ok(v) if (1..=MAX_RESPONSE_BYTES_LIMIT).contains(&v) => v,
                _ => {
                    err(
                        m.span().start,
                        format!(
                            "max_response_bytes must be between 1 and {MAX_RESPONSE_BYTES_LIMIT}"
                        ),
                    );
                    DEFAULT_MAX_RESPONSE_BYTES
                }
            },
        };
        let (ca_file, ca_pem) = match &sv.ca_file {
            None => (None, None),
            Some(c) => match ctx.ca_files.get(c.get_ref()) {
                Some(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {
                    match check_ca_pem(&name, pem) {
                        Ok(()) => (Some(c.get_ref().clone()), Some(pem.clone())),
                        Err(why) => {
                            err(
                                c.span().start,
                                format!(
                                    "ca_file {:?} cannot be used as a CA certificate ({why}): \
                                     put the PEM of the CA that signed the service's certificate in it \
                                     (\"-----BEGIN CERTIFICATE-----\" blocks holding base64 DER, as \
                                     `openssl x509 -in ca.crt -outform PEM` writes them), \
                                     or remove ca_file to trust only the system roots",
                                    c.get_ref()
                                ),
                            );
                            (None, None)
                        }
                    }
                }
                Some(_) => {
                    err(
                        c.span().start,
                        format!(
                            "ca_file {:?} holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line): \
                             point it at the CA's certificate in PEM form, or remove ca_file",
                            c.get_ref()
                        ),
                    );
                    (None, None)
                }
                None => {
                    err(
                        c.span().start,
                        format!("ca_file {:?} could not be read", c.get_ref()),
                    );
                    (None, None)
                }
            },
        };
        if let Some(auth) = auth {
            services.push(Service {
                name,
                base_url,
                auth,
                timeout_ms: timeout.as_millis() as u64,
                max_response_bytes,
                ca_file,
                ca_pem,
                allow_private_network: sv.allow_private_network.unwrap_or(false),
            });
        }
    }

    let mut capabilities = Vec::new();
    let mut cap_names = BTreeSet::new();
    for c in &file.capability {
        let cv = c.get_ref();
        let at = cv.name.span().start;
        let name = cv.name.get_ref().clone();
        if let Err(m) = check_name("capability", &name) {
            err(at, m);
        } else if !cap_names.insert(name.clone()) {
            err(
                at,
                format!("duplicate capability {name:?}: each capability name must be unique"),
            );
        }
        if !service_names.contains(cv.service.get_ref()) {
            err(
                cv.service.span().start,
                format!(
                    "unknown service {:?}: define it in a [[service]] table",
                    cv.service.get_ref()
                ),
            );
        }
        for a in &cv.agents {
            if !seen_agents.contains(a.get_ref()) && !ctx.agents.contains(a.get_ref().as_str()) {
                err(
                    a.span().start,
                    format!(
                        "unknown agent {:?}: declare it with [[agent]] name = {:?} or `vaultctl agent add`",
                        a.get_ref(),
                        a.get_ref()
                    ),
                );
            }
        }
        if cv.allow.is_empty() {
            err(
                at,
                format!("capability {name:?} allows nothing: add allow = [\"GET /path/**\"]"),
            );
        }
        for r in cv.allow.iter().chain(&cv.deny) {
            if let Err(m) = Rule::parse(r.get_ref()) {
                err(r.span().start, format!("bad rule {:?}: {m}", r.get_ref()));
            }
        }
        if let Some(rl) = &cv.rate_limit
            && let Err(m) = RateLimit::parse(rl.get_ref())
        {
            err(rl.span().start, m);
        }
        capabilities.push(Capability {
            name,
            service: cv.service.get_ref().clone(),
            agents: cv.agents.iter().map(|a| a.get_ref().clone()).collect(),
            allow: cv.allow.iter().map(|r| r.get_ref().clone()).collect(),
            deny: cv.deny.iter().map(|r| r.get_ref().clone()).collect(),
            rate_limit: cv.rate_limit.as_ref().map(|r| r.get_ref().clone()),
            requires_reason: cv.requires_reason.unwrap_or(false),
        });
    }

    if errors.is_empty() {
        Ok(Parsed {
            policy: StoredPolicy {
                services,
                capabilities,
            },
            agents: declared,
        })
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// The stored policy and agents as TOML, in the input format (no secret values exist in it).
pub fn render(policy: &StoredPolicy, agents: &[&str]) -> String {
    let mut out = String::from(
        "# The policy sealed in the vault (vaultctl policy show). Secret values are never shown.\n",
    );
    for s in &policy.services {
        let _ = writeln!(
            out,
            "\n[[service]]\nname = {}\nbase_url = {}",
            toml_str(&s.name),
            toml_str(&s.base_url)
        );
        let auth = match &s.auth {
            Auth::Bearer { secret } => {
                format!("{{ type = \"bearer\", secret = {} }}", toml_str(secret))
            }
            Auth::Basic { username, secret } => {
                format!(
                    "{{ type = \"basic\", username = {}, secret = {} }}",
                    toml_str(username),
                    toml_str(secret)
                )
            }
            Auth::Header {
                name,
                secret,
                prefix,
            } => format!(
                "{{ type = \"header\", name = {}, secret = {}, prefix = {} }}",
                toml_str(name),
                toml_str(secret),
                toml_str(prefix)
            ),
            Auth::Query { name, secret } => format!(
                "{{ type = \"query\", name = {}, secret = {} }}",
                toml_str(name),
                toml_str(secret)
            ),
        };
        let _ = writeln!(out, "auth = {auth}");
        let _ = writeln!(
            out,
            "timeout = {}",
            toml_str(&humantime::format_duration(Duration::from_millis(s.timeout_ms)).to_string())
        );
        let _ = writeln!(out, "max_response_bytes = {}", s.max_response_bytes);
        if let Some(ca) = &s.ca_file {
            let _ = writeln!(
                out,
                "ca_file = {}  # its PEM is sealed in the vault; the file is not read again",
                toml_str(ca)
            );
        }
        if s.allow_private_network {
            let _ = writeln!(out, "allow_private_network = true");
        }
    }
    for a in agents {
        let _ = writeln!(out, "\n[[agent]]\nname = {}", toml_str(a));
    }
    for c in &policy.capabilities {
        let _ = writeln!(
            out,
            "\n[[capability]]\nname = {}\nservice = {}",
            toml_str(&c.name),
            toml_str(&c.service)
        );
        let _ = writeln!(
            out,
            "agents = {}\nallow = {}\ndeny = {}",
            toml_list(&c.agents),
            toml_list(&c.allow),
            toml_list(&c.deny)
        );
        if let Some(rl) = &c.rate_limit {
            let _ = writeln!(out, "rate_limit = {}", toml_str(rl));
        }
        let _ = writeln!(out, "requires_reason = {}", c.requires_reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[service]]
name = "github"
base_url = "https://api.github.com/"
auth = { type = "bearer", secret = "github-token" }
timeout = "10s"

[[agent]]
name = "claude-code"

[[capability]]
name = "issues-read"
service = "github"
agents = ["claude-code"]
allow = ["GET /repos/*/*/issues", "GET /repos/*/*/issues/**"]
rate_limit = "60/min"
"#;

    fn ctx<'a>(cas: &'a HashMap<String, String>) -> Context<'a> {
        Context {
            secrets: ["github-token"].into_iter().collect(),
            agents: BTreeSet::new(),
            ca_files: cas,
            secret_shapes: [("github-token", SecretShape::of(&[b'x'; 40]))]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn parses_and_renders() {
        let cas = HashMap::new();
        let p = parse(GOOD, &ctx(&cas)).unwrap();
        assert_eq!(p.agents, vec!["claude-code"]);
        assert_eq!(p.policy.services[0].base_url, "https://api.github.com");
        assert_eq!(p.policy.services[0].timeout_ms, 10_000);
        let shown = render(&p.policy, &["claude-code"]);
        let again = parse(&shown, &ctx(&cas)).unwrap();
        assert_eq!(
            again.policy.capabilities[0].allow,
            p.policy.capabilities[0].allow
        );
    }

    #[test]
    fn reports_every_error_with_its_line() {
        let bad = r#"
[[service]]
name = "gh"
base_url = "http://api.github.com"
auth = { type = "bearer", secret = "missing" }

[[service]]
name = "gh"
base_url = "https://x.example"
auth = { type = "bearer", secret = "github-token" }

[[capability]]
name = "c"
service = "nope"
agents = ["ghost"]
allow = ["GET repos", "FETCH /x", "GET /a*"]
rate_limit = "ten/min"
"#;
        let cas = HashMap::new();
        let errs = parse(bad, &ctx(&cas)).unwrap_err();
        let text = format_errors("p.toml", &errs);
        for needle in [
            "p.toml:4: base_url",
            "p.toml:5: unknown secret \"missing\"",
            "p.toml:8: duplicate service",
            "p.toml:14: unknown service",
            "p.toml:15: unknown agent \"ghost\"",
            "p.toml:16: bad rule \"GET repos\"",
            "bad rule \"FETCH /x\"",
            "bad rule \"GET /a*\"",
            "p.toml:17: rate_limit",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn syntax_error_has_line() {
        let cas = HashMap::new();
        let errs = parse("[[service]]\nname = \n", &ctx(&cas)).unwrap_err();
        assert_eq!(errs[0].line, 2, "{errs:?}");
        let errs = parse("[[service]]\nnme = \"x\"\n", &ctx(&cas)).unwrap_err();
        assert!(errs[0].message.contains("nme"), "{errs:?}");
    }

    #[test]
    fn rate_limits() {
        assert_eq!(
            RateLimit::parse("60/min").unwrap(),
            RateLimit {
                count: 60,
                per: Duration::from_secs(60)
            }
        );
        assert!(RateLimit::parse("0/min").is_err());
        assert!(RateLimit::parse("5/fortnight").is_err());
        let big = RateLimit::parse("1000000000000/sec").unwrap_err();
        assert!(
            big.contains("more than the largest count, 4294967295"),
            "{big}"
        );
        let big = RateLimit::parse("99999999999999999999999/sec").unwrap_err();
        assert!(big.contains("more than the largest count"), "{big}");
        assert!(
            RateLimit::parse("-1/sec")
                .unwrap_err()
                .contains("not a positive whole number")
        );
    }

    /// An auth secret whose name `secret set` would refuse is reported as
    /// such, not as "unknown: add it with `vaultctl secret set bad name`".
    #[test]
    fn an_invalid_auth_secret_name_is_named_as_invalid() {
        let cas = HashMap::new();
        for name in ["bad name", ""] {
            let policy = one_service(&format!("{{ type = \"bearer\", secret = \"{name}\" }}"), "");
            let text = format_errors("p.toml", &parse(&policy, &ctx(&cas)).unwrap_err());
            assert!(text.contains("must be 1-128 characters"), "{text}");
            assert!(!text.contains("vaultctl secret set"), "{text}");
        }
    }

    /// A one-service policy with `auth` and optional extra service lines.
    fn one_service(auth: &str, extra: &str) -> String {
        format!(
            "[[service]]\nname = \"s\"\nbase_url = \"https://h.example\"\nauth = {auth}\n{extra}\n"
        )
    }

    fn errors_of(text: &str, cas: &HashMap<String, String>) -> String {
        format_errors("p.toml", &parse(text, &ctx(cas)).unwrap_err())
    }

    #[test]
    fn ca_file_must_be_a_certificate_vaultd_can_use() {
        let real = rcgen::generate_simple_self_signed(vec!["h.example".to_string()])
            .unwrap()
            .cert
            .pem();
        let cas: HashMap<String, String> = [
            ("good.pem", real.as_str()),
            (
                "bad.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            ("text.pem", "hello"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let bearer = r#"{ type = "bearer", secret = "github-token" }"#;
        let ok = parse(&one_service(bearer, "ca_file = \"good.pem\""), &ctx(&cas)).unwrap();
        assert_eq!(ok.policy.services[0].ca_pem.as_deref(), Some(real.as_str()));
        // The client vaultd builds at unlock accepts what validation accepted.
        crate::proxy::upstream::build_client(
            &ok.policy.services[0],
            &rustls::RootCertStore::empty(),
        )
        .unwrap();

        let text = errors_of(&one_service(bearer, "ca_file = \"bad.pem\""), &cas);
        assert!(
            text.starts_with("p.toml:5: ca_file \"bad.pem\" cannot be used as a CA certificate")
                && text.contains("BadEncoding")
                && text.contains("or remove ca_file"),
            "{text}"
        );
        let text = errors_of(&one_service(bearer, "ca_file = \"text.pem\""), &cas);
        assert!(
            text.starts_with("p.toml:5: ca_file \"text.pem\" holds no PEM certificate"),
            "{text}"
        );
    }

    #[test]
    fn auth_keys_must_belong_to_the_type() {
        let cas = HashMap::new();
        for (auth, extra) in [
            (
                r#"{ type = "bearer", secret = "github-token", username = "u" }"#,
                "username",
            ),
            (
                r#"{ type = "bearer", secret = "github-token", name = "X-K" }"#,
                "name",
            ),
            (
                r#"{ type = "basic", secret = "github-token", username = "u", prefix = "p" }"#,
                "prefix",
            ),
            (
                r#"{ type = "query", secret = "github-token", name = "k", prefix = "p" }"#,
                "prefix",
            ),
            (
                r#"{ type = "header", secret = "github-token", name = "X-K", username = "u" }"#,
                "username",
            ),
        ] {
            let text = errors_of(&one_service(auth, ""), &cas);
            assert!(
                text.starts_with("p.toml:4: auth type")
                    && text.contains(&format!("does not use {extra}: remove it")),
                "{auth}: {text}"
            );
        }
        for ok in [
            r#"{ type = "bearer", secret = "github-token" }"#,
            r#"{ type = "basic", secret = "github-token", username = "u" }"#,
            r#"{ type = "header", secret = "github-token", name = "X-Api-Key", prefix = "Key " }"#,
            r#"{ type = "query", secret = "github-token", name = "api_key" }"#,
        ] {
            parse(&one_service(ok, ""), &ctx(&cas)).unwrap();
        }
    }

    #[test]
    fn auth_header_names_that_cannot_carry_a_credential() {
        let cas = HashMap::new();
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Keep-Alive",
            "TE",
            "Upgrade",
            "Trailer",
            "Cookie",
            "Expect",
            "Proxy-Authorization",
            "proxy-connection",
            "Accept-Encoding",
        ] {
            let auth =
                format!(r#"{{ type = "header", name = "{name}", secret = "github-token" }}"#);
            let text = errors_of(&one_service(&auth, ""), &cas);
            assert!(
                text.starts_with(&format!(
                    "p.toml:4: auth header name {name:?} cannot carry a credential"
                )),
                "{name}: {text}"
            );
        }
        for name in ["X Api", "X-Api:", "", "X-Ápi", "\\u0001"] {
            let auth =
                format!(r#"{{ type = "header", name = "{name}", secret = "github-token" }}"#);
            let text = errors_of(&one_service(&auth, ""), &cas);
            assert!(
                text.contains("is not a valid header name"),
                "{name:?}: {text}"
            );
        }
        for name in ["Authorization", "X-Api-Key", "PRIVATE-TOKEN", "x_key"] {
            let auth = format!(
                r#"{{ type = "header", name = "{name}", secret = "github-token", prefix = "Token " }}"#
            );
            parse(&one_service(&auth, ""), &ctx(&cas)).unwrap();
        }
    }

    #[test]
    fn base_url_paths_are_checked_like_rule_paths() {
        for bad in [
            "https://h/api/..;/admin",
            "https://h/%252e%252e/x",
            "https://h/a%2F..%2Fb",
        ] {
            let e = normalize_base_url(bad).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(
            normalize_base_url("https://h:8443/api/v3/").as_deref(),
            Ok("https://h:8443/api/v3")
        );
        assert_eq!(
            normalize_base_url("https://h/a%20b").as_deref(),
            Ok("https://h/a%20b")
        );
    }

    /// A type error after a non-ASCII key-like text on its line: the key
    /// finder must cut at a char boundary (it panicked on `é=`).
    #[test]
    fn type_error_after_non_ascii_text_does_not_panic() {
        let text = errors_of(
            "[[capability]]\nname = \"c\"\nservice = \"s\"\nagents = [\"é=\", 7]\n",
            &HashMap::new(),
        );
        assert!(text.starts_with("p.toml:4:"), "{text}");
    }

    #[test]
    fn type_errors_say_what_the_field_takes() {
        let cas = HashMap::new();
        let bearer = r#"{ type = "bearer", secret = "github-token" }"#;
        for (extra, needle) in [
            (
                "max_response_bytes = \"1MB\"",
                "p.toml:5: max_response_bytes must be a whole number of bytes without quotes, like 1048576 (found string \"1MB\")",
            ),
            (
                "timeout = 30",
                "p.toml:5: timeout must be a duration in quotes, like \"30s\"",
            ),
            (
                "allow_private_network = \"yes\"",
                "p.toml:5: allow_private_network must be true or false, without quotes",
            ),
        ] {
            let text = errors_of(&one_service(bearer, extra), &cas);
            assert!(text.starts_with(needle), "{extra}: {text}");
            assert!(
                text.contains("README.md") && !text.contains("DESIGN") && !text.contains("i64"),
                "{text}"
            );
        }
        let text = errors_of(
            "[[capability]]\nname = \"c\"\nservice = \"s\"\nagents = [\"a\", 7]\n",
            &cas,
        );
        assert!(
            text.starts_with("p.toml:4: agents must be a list of agent names, like [\"claude-code\"] (found integer 7)"),
            "{text}"
        );
        let text = errors_of(&one_service(r#""github-token""#, ""), &cas);
        assert!(
            text.starts_with("p.toml:4: auth must be a table like {"),
            "{text}"
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base_url("https://h.example:8443/v1/").unwrap(),
            "https://h.example:8443/v1"
        );
        assert!(normalize_base_url("https://u:p@h.example").is_err());
        let zero = normalize_base_url("https://h.example:0/v1").unwrap_err();
        assert!(zero.contains("port 0"), "{zero}");
        assert!(normalize_base_url("https://h.example/?q=1").is_err());
        assert!(normalize_base_url("ftp://h.example").is_err());
        assert_eq!(
            normalize_base_url("HTTPS://H.example:443/v1").unwrap(),
            "https://h.example/v1"
        );
        // The URL parser would repair these; they are refused with what to write.
        for (raw, needle) in [
            (
                "https://h/a/../b/%2e%2e/c",
                "write the path it leads to, e.g. \"https://h/c\"",
            ),
            ("https://h/a/./b", "e.g. \"https://h/a/b\""),
            ("https://h/a/%2E", "\"..\" path segment"),
            ("https://h/a/.%2e/b", "\"..\" path segment"),
            (
                "https://h/a//b",
                "empty path segment (//): write \"https://h/a/b\"",
            ),
            ("https://h//", "empty path segment"),
            ("https://h/a?", "must not contain ? or #"),
            ("https://h/a#", "must not contain ? or #"),
            ("https://h/a\\b", "backslash"),
            ("https://h/a\tb", "control characters"),
            ("https://h/a b", "spaces"),
            (" https://h/a", "spaces"),
            ("https:/h/a", "must start with https://"),
            ("https:///h/a", "must start with https://"),
        ] {
            let e = normalize_base_url(raw).unwrap_err();
            assert!(e.contains(needle), "{raw:?}: {e}");
        }
    }
}
