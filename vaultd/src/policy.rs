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
/// Largest allowed response cap.
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 256 * 1024 * 1024;
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
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| format!("rate_limit {s:?}: {n:?} is not a positive whole number"))?;
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
    /// Lengths of secret values (to refuse credentials too short to scrub).
    pub secret_lens: BTreeMap<&'a str, usize>,
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

fn syntax(text: &str) -> Result<PolicyFile, Vec<PolicyError>> {
    toml::from_str::<PolicyFile>(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let msg = e.message().trim().to_string();
        vec![PolicyError {
            line,
            message: format!("{msg} (see DESIGN.md \"Policy\" for the format: [[service]], [[agent]], [[capability]])"),
        }]
    })
}

fn check_name(kind: &str, name: &str) -> Result<(), String> {
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
pub fn normalize_base_url(raw: &str) -> Result<String, String> {
    let url =
        url::Url::parse(raw).map_err(|e| format!("base_url {raw:?} is not a valid URL ({e})"))?;
    if url.scheme() != "https" {
        return Err(format!("base_url {raw:?} must use https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "base_url {raw:?} must not contain user:password@; use auth instead"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("base_url {raw:?} must not contain ? or #"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("base_url {raw:?} has no host"));
    }
    let path = url.path().trim_end_matches('/');
    if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("base_url {raw:?} has an empty or dot path segment"));
    }
    let mut base = format!("https://{}", url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        let _ = write!(base, ":{port}");
    }
    base.push_str(path);
    Ok(base)
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
        let auth = match auth {
            Ok(auth) => {
                let secret = auth.secret();
                if !ctx.secrets.contains(secret) {
                    err(
                        auth_at,
                        format!(
                            "unknown secret {secret:?}: add it first with `vaultctl secret set {secret}`"
                        ),
                    );
                } else if ctx
                    .secret_lens
                    .get(secret)
                    .is_some_and(|l| *l < MIN_CREDENTIAL_LEN)
                {
                    err(
                        auth_at,
                        format!(
                            "secret {secret:?} is shorter than {MIN_CREDENTIAL_LEN} bytes: too short to redact from responses safely"
                        ),
                    );
                }
                match &auth {
                    Auth::Header { name, prefix, .. } => {
                        if name.is_empty()
                            || !name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        {
                            err(
                                auth_at,
                                format!("auth header name {name:?} is not a valid header name"),
                            );
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
                    (Some(c.get_ref().clone()), Some(pem.clone()))
                }
                Some(_) => {
                    err(
                        c.span().start,
                        format!("ca_file {:?} holds no PEM certificate", c.get_ref()),
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
            secret_lens: [("github-token", 40)].into_iter().collect(),
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
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base_url("https://h.example:8443/v1/").unwrap(),
            "https://h.example:8443/v1"
        );
        assert!(normalize_base_url("https://u:p@h.example").is_err());
        assert!(normalize_base_url("https://h.example/?q=1").is_err());
        assert!(normalize_base_url("ftp://h.example").is_err());
    }
}
