//! What the agent reads: vaultd's answers as tool-result JSON, and every
//! failure as one `CODE: message` refusal.
//!
//! Pure functions over the generated `vault.v1` messages, so the whole mapping
//! is unit-tested without a daemon.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::Serialize;
use vault_proto::client::{ConnectError, START_HINT};
use vault_proto::codes::{self, BAD_REQUEST, UNAVAILABLE, UNKNOWN_AGENT};
use vault_proto::v1::{AgentStatusResponse, CapabilityInfo, ExecuteResponse, ListServicesResponse};

/// Largest request body vaultd accepts (DESIGN.md, rule 3); checked here too so
/// an oversized body is refused before it crosses the socket.
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;

/// Tokens shorter than this are not searched for in messages (see [`Refusal::without`]).
const MIN_REDACTED_TOKEN: usize = 12;

/// A refusal as the agent sees it: the single text block of an `isError`
/// result, always `CODE: message` with one of [`vault_proto::codes::ALL`].
#[derive(Clone, PartialEq, Eq)]
pub struct Refusal(String);

impl Refusal {
    /// `code: message`.
    pub fn new(code: &'static str, message: impl fmt::Display) -> Self {
        debug_assert!(codes::ALL.contains(&code));
        Self(format!("{code}: {message}"))
    }

    /// The daemon's own refusal, unchanged, when its message starts with one of
    /// our codes; `None` for any other status message.
    pub fn from_daemon(message: &str) -> Option<Self> {
        codes::code_of(message).map(|_| Self(message.to_owned()))
    }

    /// The same refusal with `; more` appended (a next step the sender could not know).
    pub fn followed_by(&self, more: impl fmt::Display) -> Self {
        Self(format!("{}; {more}", self.0.trim_end_matches(['.', ' '])))
    }

    /// Whether this is an `unknown_agent` refusal.
    pub fn is_unknown_agent(&self) -> bool {
        codes::code_of(&self.0) == Some(UNKNOWN_AGENT)
    }

    /// The text block.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The code at the start of the text.
    #[cfg(test)]
    pub fn code(&self) -> &str {
        self.0.split(':').next().unwrap_or_default()
    }

    /// The text with every occurrence of `token` blotted out: the agent token
    /// never reaches the agent, even if some message were to echo it. A token
    /// too short to be a real one (vaultctl's are long and random) is left
    /// alone, lest ordinary words be cut up.
    pub fn without(self, token: &str) -> Self {
        if token.len() < MIN_REDACTED_TOKEN || !self.0.contains(token) {
            return self;
        }
        Self(self.0.replace(token, "[REDACTED]"))
    }
}

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// No agent token was configured. Nothing this process reads can change
/// that, so the MCP client must start it again.
pub fn no_token() -> Refusal {
    Refusal::new(
        UNKNOWN_AGENT,
        "no agent token: give vault-mcp `--token-file FILE` (or set VAULTD_AGENT_TOKEN) in the MCP client's \
         configuration (`vaultctl mcp-config --agent NAME` prints it; create the agent with \
         `vaultctl agent add NAME --token-file FILE`), then restart the MCP client",
    )
}

/// vaultd names no agent for this token (`vault_status`'s reason for a null
/// `agent`; the other tools get vaultd's own `unknown_agent` refusal).
pub fn unknown_token() -> Refusal {
    Refusal::new(
        UNKNOWN_AGENT,
        "this agent token is not known to the vault (mistyped or revoked); ask the user to create one with \
         `vaultctl agent add NAME` and configure it with `vaultctl mcp-config --agent NAME`",
    )
}

/// The token file could not be used. vault-mcp reads it again on the next
/// call, so fixing the file is enough.
pub fn bad_token_file(path: &Path, why: impl fmt::Display) -> Refusal {
    Refusal::new(
        UNKNOWN_AGENT,
        format_args!(
            "cannot use the token file {}: {why}; write the agent's token into it \
             (`vaultctl agent add NAME --token-file {}` does) and call again: vault-mcp reads the file \
             again, no restart needed",
            path.display(),
            path.display()
        ),
    )
}

/// No socket path could be chosen (no `--socket`, `VAULTD_SOCKET`, `VAULTD_HOME` or `XDG_RUNTIME_DIR`).
pub fn no_socket(why: impl fmt::Display) -> Refusal {
    Refusal::new(UNAVAILABLE, why)
}

/// The daemon could not be reached or failed the handshake (not running,
/// wrong protocol version, not vaultd, no answer). vault-proto's texts already
/// say what to run.
pub fn connect_failed(error: &ConnectError) -> Refusal {
    Refusal::new(UNAVAILABLE, error)
}

/// The connection broke while a call was under way.
///
/// `may_have_run` is set for `execute`: the request may already have reached
/// the API, and the agent must not blindly repeat a call that changes data.
pub fn connection_lost(socket: &Path, detail: &str, may_have_run: bool) -> Refusal {
    let tail = if may_have_run {
        ". The request may or may not have reached the API: check before repeating a call that changes data"
    } else {
        ""
    };
    Refusal::new(
        UNAVAILABLE,
        format_args!(
            "vaultd is not running (the connection to {} was lost during the call: {}): {START_HINT}{tail}",
            socket.display(),
            detail_or(detail, "closed"),
        ),
    )
}

/// The connection closed between two calls and the request was never sent.
pub fn connection_closed_before_send(socket: &Path) -> Refusal {
    Refusal::new(
        UNAVAILABLE,
        format_args!(
            "the connection to vaultd at {} closed before the request was sent (nothing reached the API); call again, and if it fails: {START_HINT}",
            socket.display()
        ),
    )
}

/// The daemon did not answer within the call's deadline.
pub fn deadline(socket: &Path, limit: Duration, may_have_run: bool) -> Refusal {
    let tail = if may_have_run {
        "; the request may or may not have reached the API: check before repeating a call that changes data"
    } else {
        ""
    };
    Refusal::new(
        UNAVAILABLE,
        format_args!(
            "vaultd at {} did not answer within {} s; it may be hung: restart it with `systemctl --user restart vaultd`{tail}",
            socket.display(),
            limit.as_secs()
        ),
    )
}

/// A status from the daemon that carries none of our codes: only its message
/// goes to the agent (and the gRPC code when there is no message).
pub fn daemon_error(code: tonic::Code, message: &str) -> Refusal {
    if message.is_empty() {
        Refusal::new(
            UNAVAILABLE,
            format_args!("vaultd failed the call ({code:?})"),
        )
    } else {
        Refusal::new(
            UNAVAILABLE,
            format_args!("vaultd failed the call: {message}"),
        )
    }
}

/// Tool arguments that do not fit the tool's schema.
pub fn bad_arguments(tool: &str, error: impl fmt::Display) -> Refusal {
    Refusal::new(
        BAD_REQUEST,
        format_args!("invalid arguments for {tool}: {error}"),
    )
}

/// An `execute` argument of the wrong JSON type: names the field, what it
/// must be, and what was given (its JSON type, never its value).
pub fn bad_argument_type(
    tool: &str,
    field: &str,
    expected: &str,
    got: &serde_json::Value,
) -> Refusal {
    Refusal::new(
        BAD_REQUEST,
        format_args!(
            "{tool} argument \"{field}\" must be {expected}, got {}",
            json_type(got)
        ),
    )
}

/// One value of a `query` or `headers` object that is not a string.
pub fn bad_map_value(tool: &str, field: &str, key: &str, got: &serde_json::Value) -> Refusal {
    let hint = match got {
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
            "; write numbers and booleans as strings, e.g. \"5\""
        }
        _ => "",
    };
    Refusal::new(
        BAD_REQUEST,
        format_args!(
            "{tool} argument \"{field}\" must map names to strings, but the value of {key:?} is {}{hint}",
            json_type(got)
        ),
    )
}

/// A required argument that is absent (or null).
pub fn missing_argument(tool: &str, field: &str, expected: &str) -> Refusal {
    Refusal::new(
        BAD_REQUEST,
        format_args!("{tool} argument \"{field}\" is required: {expected}"),
    )
}

/// "an object", "a number"...: how a JSON value's type is named in messages.
fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A request body over [`MAX_REQUEST_BODY`].
pub fn body_too_large(len: usize) -> Refusal {
    Refusal::new(
        BAD_REQUEST,
        format_args!(
            "the request body is {len} bytes; the limit is 10 MiB ({MAX_REQUEST_BODY} bytes): send a smaller body (in parts, if the API allows)"
        ),
    )
}

/// Refuses an `Execute` whose message would exceed what vaultd decodes
/// ([`vault_proto::MAX_REQUEST_BYTES`], with room for the agent's token),
/// naming its largest part.
pub fn check_request_size(req: &vault_proto::v1::ExecuteRequest) -> Result<(), Refusal> {
    use prost::Message as _;
    const TOKEN_ROOM: usize = 4096;
    let len = req.encoded_len();
    if len + TOKEN_ROOM <= vault_proto::MAX_REQUEST_BYTES {
        return Ok(());
    }
    let pairs = |p: &[vault_proto::v1::Header]| {
        p.iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
    };
    let parts = [
        ("body", req.body.len()),
        ("headers", pairs(&req.headers)),
        ("query", pairs(&req.query)),
        ("reason", req.reason.len()),
        ("path", req.path.len()),
        ("capability", req.capability.len()),
        ("method", req.method.len()),
    ];
    let (largest, size) = parts
        .iter()
        .max_by_key(|(_, n)| *n)
        .copied()
        .unwrap_or(("body", 0));
    Err(Refusal::new(
        BAD_REQUEST,
        format_args!(
            "the request is {len} bytes in all, its {largest} {size} of them; the limit is {} bytes: send a shorter {largest}",
            vault_proto::MAX_REQUEST_BYTES - TOKEN_ROOM
        ),
    ))
}

fn detail_or<'a>(detail: &'a str, fallback: &'a str) -> &'a str {
    if detail.is_empty() { fallback } else { detail }
}

/// `list_services`: the capabilities granted to this agent.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Services {
    /// The agent identity the vault knows this connection by.
    pub agent: String,
    /// Everything this agent may call; nothing about capabilities it may not use.
    pub capabilities: Vec<Capability>,
}

/// One capability granted to this agent.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Capability {
    /// Pass this as `capability` to `execute`.
    pub name: String,
    /// The service (API) the capability calls.
    pub service: String,
    /// Paths given to `execute` are relative to this URL.
    pub base_url: String,
    /// Allowed `METHOD PATH` rules: `*` matches one path segment, `**` any number.
    pub allow: Vec<String>,
    /// Denied `METHOD PATH` rules; a deny wins over an allow.
    pub deny: Vec<String>,
    /// Calls allowed per period, such as `60/min`; null when unlimited.
    pub rate_limit: Option<String>,
    /// Whether `execute` must be given a `reason`.
    pub requires_reason: bool,
}

impl From<ListServicesResponse> for Services {
    fn from(reply: ListServicesResponse) -> Self {
        Self {
            agent: reply.agent,
            capabilities: reply
                .capabilities
                .into_iter()
                .map(Capability::from)
                .collect(),
        }
    }
}

impl From<CapabilityInfo> for Capability {
    fn from(c: CapabilityInfo) -> Self {
        Self {
            name: c.name,
            service: c.service,
            base_url: c.base_url,
            allow: c.allow,
            deny: c.deny,
            rate_limit: non_empty(c.rate_limit),
            requires_reason: c.requires_reason,
        }
    }
}

/// `vault_status`: the lock state and this connection's agent.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AgentState {
    /// `unlocked`, `locked` or `uninitialized`.
    pub state: String,
    /// The agent this connection's token names; null when the token is unknown or the vault is locked.
    pub agent: Option<String>,
    /// When `agent` is null because of the token (none configured, unusable
    /// token file, unknown to the vault): why, and what to do. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Seconds before the vault locks by itself (the user unlocked it for a
    /// set time); absent when it stays unlocked until the user locks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locks_in_secs: Option<u64>,
}

impl AgentState {
    /// This state with `why` (an `unknown_agent` refusal) as its hint.
    pub fn with_hint(mut self, why: &Refusal) -> Self {
        self.hint = Some(why.text().to_owned());
        self
    }
}

impl From<AgentStatusResponse> for AgentState {
    fn from(reply: AgentStatusResponse) -> Self {
        Self {
            state: reply.state,
            agent: non_empty(reply.agent),
            hint: None,
            locks_in_secs: (reply.locks_in_secs > 0).then_some(reply.locks_in_secs),
        }
    }
}

/// How `body` is written in an [`Executed`] result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// The response bytes are valid UTF-8 and `body` is that text.
    Utf8,
    /// The response bytes are not UTF-8; `body` is their standard base64.
    Base64,
}

/// `execute`: the upstream response, scrubbed by vaultd.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Executed {
    /// HTTP status code.
    pub status: u32,
    /// Response headers by lowercase name; repeated names joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body, as `body_encoding` says.
    pub body: String,
    /// `utf8` or `base64`.
    pub body_encoding: BodyEncoding,
    /// True when the body was cut at the service's `max_response_bytes`.
    pub truncated: bool,
}

impl From<ExecuteResponse> for Executed {
    fn from(reply: ExecuteResponse) -> Self {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for h in reply.headers {
            let name = h.name.to_ascii_lowercase();
            match headers.get_mut(&name) {
                Some(joined) => {
                    joined.push_str(", ");
                    joined.push_str(&h.value);
                }
                None => {
                    headers.insert(name, h.value);
                }
            }
        }
        // No copy for the common case: a UTF-8 body becomes the string as is.
        let (body, body_encoding) = match String::from_utf8(reply.body) {
            Ok(text) => (text, BodyEncoding::Utf8),
            Err(raw) => (
                base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()),
                BodyEncoding::Base64,
            ),
        };
        Self {
            status: reply.status,
            headers,
            body,
            body_encoding,
            truncated: reply.truncated,
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vault_proto::v1::Header;

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn utf8_body_is_text() {
        let text = "{\"ok\":true,\"name\":\"café ☕\"}";
        let out = Executed::from(ExecuteResponse {
            status: 200,
            headers: vec![header("content-type", "application/json")],
            body: text.as_bytes().to_vec(),
            truncated: false,
            audit_seq: 7,
        });
        assert_eq!(out.body_encoding, BodyEncoding::Utf8);
        assert_eq!(out.body, text);
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({
                "status": 200,
                "headers": {"content-type": "application/json"},
                "body": text,
                "body_encoding": "utf8",
                "truncated": false,
            })
        );
    }

    #[test]
    fn binary_body_is_standard_base64() {
        let bytes = vec![
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0xfe, 0xfb,
        ];
        let out = Executed::from(ExecuteResponse {
            status: 200,
            body: bytes.clone(),
            truncated: true,
            ..Default::default()
        });
        assert_eq!(out.body_encoding, BodyEncoding::Base64);
        // Standard alphabet with padding (`+`, `/`, `=`), not URL-safe.
        assert_eq!(out.body, "iVBORw0KGgr//vs=");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&out.body)
                .unwrap(),
            bytes
        );
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["body_encoding"], "base64");
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn a_cut_multibyte_character_makes_the_body_base64() {
        // A truncated body may end inside a UTF-8 sequence: it is then not text.
        let out = Executed::from(ExecuteResponse {
            body: b"abc\xc3".to_vec(),
            ..Default::default()
        });
        assert_eq!(out.body_encoding, BodyEncoding::Base64);
        assert_eq!(out.body, "YWJjww==");
    }

    #[test]
    fn empty_body_is_empty_text() {
        let out = Executed::from(ExecuteResponse {
            status: 204,
            ..Default::default()
        });
        assert_eq!(
            (out.body.as_str(), out.body_encoding),
            ("", BodyEncoding::Utf8)
        );
        assert!(out.headers.is_empty());
    }

    #[test]
    fn repeated_headers_are_joined_in_order_whatever_their_case() {
        let out = Executed::from(ExecuteResponse {
            status: 200,
            headers: vec![
                header("Vary", "Accept"),
                header("x-ratelimit-remaining", "59"),
                header("vary", "Accept-Encoding"),
                header("VARY", "Origin"),
                header("set-cookie", "a=1"),
                header("set-cookie", "b=2"),
            ],
            ..Default::default()
        });
        assert_eq!(out.headers["vary"], "Accept, Accept-Encoding, Origin");
        assert_eq!(out.headers["set-cookie"], "a=1, b=2");
        assert_eq!(out.headers["x-ratelimit-remaining"], "59");
        assert_eq!(out.headers.len(), 3);
    }

    #[test]
    fn services_json_shape() {
        let s = Services::from(ListServicesResponse {
            agent: "claude-code".into(),
            capabilities: vec![
                CapabilityInfo {
                    name: "github-issues-read".into(),
                    service: "github".into(),
                    base_url: "https://api.github.com".into(),
                    allow: vec!["GET /repos/*/*/issues".into()],
                    deny: vec![],
                    rate_limit: "60/min".into(),
                    requires_reason: false,
                },
                CapabilityInfo {
                    name: "stripe-refunds".into(),
                    service: "stripe".into(),
                    base_url: "https://api.stripe.com/v1".into(),
                    allow: vec!["POST /refunds".into()],
                    deny: vec!["POST /refunds/*/cancel".into()],
                    rate_limit: String::new(),
                    requires_reason: true,
                },
            ],
        });
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "agent": "claude-code",
                "capabilities": [
                    {"name": "github-issues-read", "service": "github", "base_url": "https://api.github.com",
                     "allow": ["GET /repos/*/*/issues"], "deny": [], "rate_limit": "60/min", "requires_reason": false},
                    {"name": "stripe-refunds", "service": "stripe", "base_url": "https://api.stripe.com/v1",
                     "allow": ["POST /refunds"], "deny": ["POST /refunds/*/cancel"], "rate_limit": null, "requires_reason": true},
                ]
            })
        );
    }

    #[test]
    fn status_json_shape() {
        let known = AgentState::from(AgentStatusResponse {
            state: "unlocked".into(),
            agent: "ci".into(),
            locks_in_secs: 0,
        });
        assert_eq!(
            serde_json::to_value(&known).unwrap(),
            json!({"state": "unlocked", "agent": "ci"})
        );
        let timed = AgentState::from(AgentStatusResponse {
            state: "unlocked".into(),
            agent: "ci".into(),
            locks_in_secs: 600,
        });
        assert_eq!(
            serde_json::to_value(&timed).unwrap(),
            json!({"state": "unlocked", "agent": "ci", "locks_in_secs": 600})
        );
        let unknown = AgentState::from(AgentStatusResponse {
            state: "locked".into(),
            agent: String::new(),
            locks_in_secs: 0,
        });
        assert_eq!(
            serde_json::to_value(&unknown).unwrap(),
            json!({"state": "locked", "agent": null})
        );
    }

    #[test]
    fn coded_daemon_messages_pass_through_unchanged() {
        for code in codes::ALL {
            let msg = format!("{code}: something happened; do this next");
            assert_eq!(Refusal::from_daemon(&msg).unwrap().text(), msg);
        }
        let odd = "denied_by_rule: GET /admin matches deny rule `* /admin/**`: ask the user";
        assert_eq!(Refusal::from_daemon(odd).unwrap().text(), odd);
    }

    #[test]
    fn uncoded_daemon_messages_become_unavailable() {
        assert!(Refusal::from_daemon("transport error").is_none());
        assert!(Refusal::from_daemon("Locked: nope").is_none());
        assert!(Refusal::from_daemon("").is_none());
        let r = daemon_error(tonic::Code::Internal, "panic in handler");
        assert_eq!(
            r.text(),
            "unavailable: vaultd failed the call: panic in handler"
        );
        let r = daemon_error(tonic::Code::Unimplemented, "");
        assert_eq!(
            r.text(),
            "unavailable: vaultd failed the call (Unimplemented)"
        );
    }

    #[test]
    fn not_running_names_the_start_command() {
        let r = connect_failed(&ConnectError::NotRunning {
            path: "/run/user/1000/vaultd/vaultd.sock".into(),
        });
        assert_eq!(r.code(), "unavailable");
        assert!(r.text().starts_with(
            "unavailable: vaultd is not running (no socket at /run/user/1000/vaultd/vaultd.sock): "
        ));
        assert!(r.text().contains("systemctl --user start vaultd"), "{r}");

        let lost = connection_lost(Path::new("/s.sock"), "broken pipe", true);
        assert!(
            lost.text().starts_with(
                "unavailable: vaultd is not running (the connection to /s.sock was lost"
            )
        );
        assert!(lost.text().contains("systemctl --user start vaultd"));
        assert!(lost.text().contains("may or may not have reached the API"));
        let lost = connection_lost(Path::new("/s.sock"), "", false);
        assert!(lost.text().contains("lost during the call: closed)"));
        assert!(!lost.text().contains("reached the API"));
    }

    #[test]
    fn version_mismatch_is_unavailable_with_the_connect_text() {
        let e = ConnectError::VersionMismatch {
            path: "/s.sock".into(),
            daemon: 2,
            daemon_version: "0.2.0".into(),
        };
        let r = connect_failed(&e);
        assert_eq!(r.text(), format!("unavailable: {e}"));
        assert!(r.text().contains("speaks protocol v2"));
    }

    #[test]
    fn waits_are_stated_in_seconds_with_a_next_step() {
        let r = connect_failed(&ConnectError::Timeout {
            path: "/s.sock".into(),
            timeout: Duration::from_secs(5),
        });
        assert_eq!(
            r.text(),
            "unavailable: vaultd at /s.sock accepted the connection but did not answer within 5 s; it may be \
             stopped or hung: `vaultctl lock` ends it, and `systemctl --user restart vaultd` starts it again"
        );
        let r = deadline(Path::new("/s.sock"), Duration::from_secs(10), false);
        assert!(r.text().contains("did not answer within 10 s;"), "{r}");
    }

    #[test]
    fn no_token_text() {
        let r = no_token();
        assert!(r.is_unknown_agent());
        assert!(
            r.text()
                .starts_with("unknown_agent: no agent token: give vault-mcp `--token-file FILE`")
                && r.text().ends_with("then restart the MCP client"),
            "{r}"
        );
        assert!(
            !connect_failed(&ConnectError::NotRunning { path: "/s".into() }).is_unknown_agent()
        );
        assert_eq!(
            Refusal::new(UNKNOWN_AGENT, "not known.")
                .followed_by("do this")
                .text(),
            "unknown_agent: not known; do this"
        );
    }

    #[test]
    fn every_refusal_starts_with_a_known_code() {
        let all = [
            no_token(),
            unknown_token(),
            bad_token_file(Path::new("/t"), "empty"),
            no_socket("cannot locate vaultd's socket"),
            connect_failed(&ConnectError::Timeout {
                path: "/s".into(),
                timeout: Duration::from_secs(5),
            }),
            connection_lost(Path::new("/s"), "x", false),
            connection_closed_before_send(Path::new("/s")),
            deadline(Path::new("/s"), Duration::from_secs(10), false),
            daemon_error(tonic::Code::Internal, "x"),
            bad_arguments("execute", "missing field `path`"),
            bad_argument_type("execute", "body", "a string", &serde_json::json!({})),
            bad_map_value("execute", "query", "page", &serde_json::json!(2)),
            missing_argument("execute", "path", "a string"),
            body_too_large(MAX_REQUEST_BODY + 1),
        ];
        for r in all {
            assert!(codes::code_of(r.text()).is_some(), "{r}");
            assert!(r.text().starts_with(&format!("{}: ", r.code())), "{r}");
        }
    }

    #[test]
    fn the_token_is_blotted_out() {
        let r =
            Refusal::new(UNKNOWN_AGENT, "token vt_secret123 is revoked").without("vt_secret123");
        assert_eq!(r.text(), "unknown_agent: token [REDACTED] is revoked");
        let r = Refusal::new(UNKNOWN_AGENT, "plain").without("");
        assert_eq!(r.text(), "unknown_agent: plain");
        // A toy token must not cut up the words around it.
        let r = Refusal::new(UNAVAILABLE, "vaultd is not running").without("t");
        assert_eq!(r.text(), "unavailable: vaultd is not running");
    }
}
