//! The MCP side: server info, the three tools, and their dispatch to vaultd.
//!
//! Tool failures the agent should read (refusals, a stopped daemon, bad
//! arguments) are tool results with `isError: true` and one `CODE: message`
//! text block. JSON-RPC errors are kept for what is not a tool call at all: an
//! unknown tool, an unknown method, `server/discover`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use rmcp::handler::server::common::schema_for_empty_input;
use rmcp::handler::server::tool::{schema_for_input, schema_for_output};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest,
    CustomResult, DiscoverResult, ErrorCode, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use vault_proto::v1::{ExecuteRequest, Header};

use crate::daemon::{CallFailed, Daemon};
use crate::render::{self, AgentState, Executed, Refusal, Services};
use crate::token::AgentToken;

/// Shown to the model when the client connects.
pub const INSTRUCTIONS: &str = "\
These tools call HTTP APIs through vaultd, the user's local credential vault. \
The vault holds the API keys and adds them to each request itself: you never see, need or handle a credential.

1. Call `list_services` first. It lists the capabilities granted to you: for each, its name, service, base URL, \
the `METHOD PATH` rules it allows and denies (`*` matches one path segment, `**` any number), its rate limit, \
and whether a reason is required.
2. Call `execute` with a capability name, an HTTP method and a path relative to that capability's base URL \
(starting with `/`; put query parameters in `query`, not in the path). Give a short `reason`: it is required by \
some capabilities and is written to the audit log.
3. Never ask the user for an API key, token or password, and never put one in `headers`, `query` or `body`: the \
vault injects the credential, and headers such as Authorization or Cookie are refused.
4. A refusal is an error result whose text starts with a stable code and then says what to do: `locked` (ask the \
user to run `vaultctl unlock`), `unavailable` (vaultd is not running or not reachable: tell the user the command \
in the message), `unknown_agent` (this MCP server has no valid agent token: the user must configure one), \
`no_such_capability`, `denied_by_rule` (the policy does not allow this call: do not try variations to get \
around it; ask the user), `rate_limited` (wait before retrying), `reason_required` (call again with `reason`), \
`bad_request` (fix the request), `upstream_error` (the API could not be reached or timed out), \
`audit_unavailable` (nothing was sent; tell the user). An HTTP error status from the API itself (4xx, 5xx) is \
a normal result, not a refusal.

`vault_status` tells whether the vault is unlocked and which agent identity you have.";

const LIST_SERVICES: &str = "List the API capabilities the vault grants you. For each: `name` (pass it to \
`execute`), `service`, `base_url` (paths are relative to it), the `allow` and `deny` rules as `METHOD PATH` \
(`*` matches one path segment, `**` any number; deny wins), `rate_limit` (null when unlimited) and \
`requires_reason`. Call this first; capabilities not granted to you are not shown.";

const EXECUTE: &str = "Make an HTTP request to an API through the vault, which adds the credential itself: \
never supply API keys, tokens or Authorization headers. The method and path must match an allow rule of the \
capability (see `list_services`). Returns JSON {status, headers, body, body_encoding, truncated}: `body` is the \
response text when `body_encoding` is \"utf8\" and standard base64 of the bytes when it is \"base64\"; `truncated` \
is true when the response was cut at the service's size limit. Any HTTP status, 4xx and 5xx included, is a \
normal result. A refusal by the vault is an error whose text starts with a code such as `denied_by_rule:` and \
says what to do.";

const VAULT_STATUS: &str = "Tell whether the vault is unlocked and which agent identity this connection has. \
Returns JSON {state: \"unlocked\" | \"locked\" | \"uninitialized\", agent: name or null}, plus `hint` when \
`agent` is null because of the agent token (none configured, unreadable token file, unknown to the vault): why, \
and what the user should do, and `locks_in_secs` when the user unlocked the vault for a set time: the seconds \
before it locks by itself. Use it after a `locked` or `unknown_agent` refusal, or to check that the vault is ready.";

/// Arguments of `execute`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteArgs {
    /// Name of a capability from `list_services`.
    pub capability: String,
    /// HTTP method: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    pub method: String,
    /// Path relative to the capability's base URL, starting with `/`, for example `/repos/OWNER/REPO/issues`.
    /// No query string (use `query`); percent-encode reserved characters inside a segment.
    pub path: String,
    /// Query parameters, name to value; the vault URL-encodes them.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub query: Option<BTreeMap<String, String>>,
    /// Extra request headers, name to value, for example `Accept` or `Content-Type`.
    /// Credential, Host, Cookie and hop-by-hop headers are refused.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Request body as a UTF-8 string (for example JSON text); set a matching `Content-Type` header.
    #[serde(default)]
    #[schemars(with = "String")]
    pub body: Option<String>,
    /// Why you are making this call, in one short sentence (at most 1024 bytes; a longer
    /// reason is refused). Required by capabilities with `requires_reason`; always written
    /// to the audit log.
    #[serde(default)]
    #[schemars(with = "String")]
    pub reason: Option<String>,
}

pub use crate::token::Token;

/// The MCP server: no state beyond the daemon connection and the agent token.
pub struct VaultMcp {
    daemon: Daemon,
    token: AgentToken,
    tools: Arc<[Tool]>,
}

impl VaultMcp {
    /// A server forwarding to `daemon` as the agent `token` names (or refusing
    /// with its error); the token never changes.
    pub fn new(daemon: Daemon, token: Result<Token, Refusal>) -> Self {
        Self::with_token(daemon, AgentToken::fixed(token))
    }

    /// A server forwarding to `daemon` with the agent token `token` gives
    /// (read again from its file when needed, see [`crate::token`]).
    pub fn with_token(daemon: Daemon, token: AgentToken) -> Self {
        Self {
            daemon,
            token,
            tools: tools().into(),
        }
    }

    /// Runs `call` with the current token. When vaultd refused it at the
    /// door for not knowing that token (nothing was done, see
    /// [`CallFailed::token_unknown`]) and the token file now holds another
    /// one, runs it once more with that. (`vault_status` does the same on a
    /// null agent.)
    async fn as_agent<T, F, Fut>(&self, call: F) -> Result<T, Refusal>
    where
        F: Fn(Arc<Token>) -> Fut,
        Fut: Future<Output = Result<T, CallFailed>>,
    {
        let token = self.token.current()?;
        let failed = match call(token.clone()).await {
            Ok(reply) => return Ok(reply),
            Err(failed) => failed,
        };
        if !failed.token_unknown {
            return Err(self.refused(failed.refusal, &token));
        }
        match self.token.refresh(&token) {
            Some(fresh) => call(fresh.clone())
                .await
                .map_err(|again| self.refused(again.refusal, &fresh)),
            None => Err(self.token.unknown(failed.refusal)),
        }
    }

    /// A refusal of a call made with token `used`. An `unknown_agent` is
    /// explained with where the token comes from; one that came after the
    /// call started (`agent rm` aborted an `execute` while it ran: it may
    /// have reached the API, so it is not made again) says, if the token
    /// file now holds a new token, that the next call uses it.
    fn refused(&self, refusal: Refusal, used: &Token) -> Refusal {
        if !refusal.is_unknown_agent() {
            return refusal;
        }
        match (self.token.refresh(used), self.token.file()) {
            (Some(_), Some(path)) => refusal.followed_by(format_args!(
                "vault-mcp has now read a new token from {} and uses it from the next call on",
                path.display()
            )),
            _ => self.token.unknown(refusal),
        }
    }

    async fn list_services(&self) -> Result<CallToolResult, Refusal> {
        let reply = self
            .as_agent(|token| async move { self.daemon.list_services(token.as_str()).await })
            .await?;
        Ok(structured(&Services::from(reply)))
    }

    /// The vault's state whatever the token: with none (or an unusable token
    /// file) the daemon is asked with an empty one, which names no agent.
    /// When the agent is null, `hint` says why and what to do.
    async fn vault_status(&self) -> Result<CallToolResult, Refusal> {
        let token = match self.token.current() {
            Ok(token) => token,
            Err(why) => {
                let reply = self.daemon.agent_status("").await?;
                return Ok(structured(&AgentState::from(reply).with_hint(&why)));
            }
        };
        let mut reply = self.daemon.agent_status(token.as_str()).await?;
        // Unlocked but the token names no agent: as `unknown_agent` elsewhere.
        if reply.agent.is_empty() && reply.state == "unlocked" {
            if let Some(fresh) = self.token.refresh(&token) {
                reply = self.daemon.agent_status(fresh.as_str()).await?;
            }
            if reply.agent.is_empty() {
                let why = self.token.unknown(render::unknown_token());
                return Ok(structured(&AgentState::from(reply).with_hint(&why)));
            }
        }
        Ok(structured(&AgentState::from(reply)))
    }

    async fn execute(&self, arguments: JsonObject) -> Result<CallToolResult, Refusal> {
        let args = execute_args(arguments)?;
        let body = args.body.unwrap_or_default();
        if body.len() > render::MAX_REQUEST_BODY {
            return Err(render::body_too_large(body.len()));
        }
        let req = ExecuteRequest {
            agent_token: String::new(),
            capability: args.capability,
            method: args.method,
            path: args.path,
            query: pairs(args.query),
            headers: pairs(args.headers),
            body: body.into_bytes().into(),
            reason: args.reason.unwrap_or_default(),
        };
        // The body alone fits; with long headers, query or reason the whole
        // message could still pass the daemon's limit, which the connection
        // would report as lost (and the call as possibly made).
        render::check_request_size(&req)?;
        // Each attempt sends a copy; the body (`Bytes`) is shared, not copied.
        let reply = self
            .as_agent(|token| {
                let req = ExecuteRequest {
                    agent_token: token.as_str().to_owned(),
                    ..req.clone()
                };
                async move { self.daemon.execute(req).await }
            })
            .await?;
        // One text block only: the body can be large, so it is not repeated as
        // structuredContent, and the decoded body is freed as soon as it is text.
        let text = serde_json::to_string(&Executed::from(reply)).unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

/// The string arguments of `execute`: name, required, and what refusals say it must be.
const STRING_ARGS: [(&str, bool, &str); 5] = [
    (
        "capability",
        true,
        "a string (a capability name from `list_services`)",
    ),
    (
        "method",
        true,
        "a string (an HTTP method such as \"GET\" or \"POST\")",
    ),
    (
        "path",
        true,
        "a string (the path relative to the capability's base URL, starting with \"/\")",
    ),
    (
        "body",
        false,
        "a string (the request body as UTF-8 text; JSON-encode an object first)",
    ),
    (
        "reason",
        false,
        "a string (one short sentence, at most 1024 bytes, saying why you make this call)",
    ),
];

/// The name-to-value arguments of `execute`.
const MAP_ARGS: [&str; 2] = ["query", "headers"];
const MAP_EXPECTED: &str = "an object mapping names to string values, e.g. {\"page\": \"2\"}";

/// `execute`'s arguments, or a `bad_request` naming the argument that is
/// missing or of the wrong type and what it must be (serde's own message,
/// `invalid type: map, expected a string`, names neither).
fn execute_args(arguments: JsonObject) -> Result<ExecuteArgs, Refusal> {
    use serde_json::Value;
    for (field, required, expected) in STRING_ARGS {
        match arguments.get(field) {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) if required => {
                return Err(render::missing_argument("execute", field, expected));
            }
            None | Some(Value::Null) => {}
            Some(other) => {
                return Err(render::bad_argument_type("execute", field, expected, other));
            }
        }
    }
    for field in MAP_ARGS {
        match arguments.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                if let Some((key, value)) = map.iter().find(|(_, v)| !v.is_string()) {
                    return Err(render::bad_map_value("execute", field, key, value));
                }
            }
            Some(other) => {
                return Err(render::bad_argument_type(
                    "execute",
                    field,
                    MAP_EXPECTED,
                    other,
                ));
            }
        }
    }
    // What is left for serde: unknown fields.
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| render::bad_arguments("execute", e))
}

/// `-32601` for `method`, naming the methods vault-mcp serves.
fn method_not_found(method: &str) -> ErrorData {
    ErrorData::new(
        ErrorCode::METHOD_NOT_FOUND,
        format!(
            "Method not found: {method:?} (vault-mcp serves initialize, ping, tools/list and tools/call)"
        ),
        None,
    )
}

/// MCP methods whose params rmcp types: a request for one of them that lands
/// in `CustomRequest` has params that do not fit.
const TYPED_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
];

/// What is wrong with a `tools/call` request's params.
fn call_tool_misfit(params: Option<&serde_json::Value>) -> String {
    const SHAPE: &str = "{\"name\": TOOL, \"arguments\": {...}}";
    let Some(params) = params else {
        return format!("\"params\" is required: {SHAPE}");
    };
    let Some(object) = params.as_object() else {
        return format!("\"params\" must be an object: {SHAPE}");
    };
    if !object.get("name").is_some_and(serde_json::Value::is_string) {
        return "\"name\" is required: a string, the tool's name (see tools/list)".to_owned();
    }
    if object
        .get("arguments")
        .is_some_and(|a| !a.is_object() && !a.is_null())
    {
        return "\"arguments\" must be an object: the tool's arguments by name".to_owned();
    }
    match serde_json::from_value::<CallToolRequestParams>(params.clone()) {
        Err(e) => format!("\"params\" do not fit: {e}"),
        Ok(_) => "\"params\" do not match the MCP schema".to_owned(),
    }
}

fn pairs(map: Option<BTreeMap<String, String>>) -> Vec<Header> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

/// The same object as JSON text and as `structuredContent`.
fn structured<T: serde::Serialize>(value: &T) -> CallToolResult {
    CallToolResult::structured(serde_json::to_value(value).unwrap_or_default())
}

fn refused(refusal: &Refusal) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(refusal.text())])
}

/// The tool list, with schemas derived from the types above.
pub fn tools() -> Vec<Tool> {
    let execute_input =
        schema_for_input::<ExecuteArgs>().unwrap_or_else(|e| panic!("execute schema: {e}"));
    let execute_input = without_defaults(&execute_input);
    vec![
        Tool::new("list_services", LIST_SERVICES, schema_for_empty_input())
            .with_title("List the API capabilities granted to you")
            .with_raw_output_schema(schema_for_output::<Services>())
            .annotate(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new("execute", EXECUTE, execute_input)
            .with_title("Call an API through the vault")
            .annotate(
                ToolAnnotations::new()
                    .read_only(false)
                    .destructive(true)
                    .idempotent(false)
                    .open_world(true),
            ),
        Tool::new("vault_status", VAULT_STATUS, schema_for_empty_input())
            .with_title("Vault lock state and agent identity")
            .with_raw_output_schema(schema_for_output::<AgentState>())
            .annotate(ToolAnnotations::new().read_only(true).open_world(false)),
    ]
}

/// Drops the `"default": null` schemars writes for the optional fields: it
/// contradicts their `"type": "string"` / `"object"` and tells a model nothing.
fn without_defaults(schema: &JsonObject) -> Arc<JsonObject> {
    let mut schema = schema.clone();
    if let Some(serde_json::Value::Object(properties)) = schema.get_mut("properties") {
        for property in properties.values_mut() {
            if let serde_json::Value::Object(property) = property {
                property.remove("default");
            }
        }
    }
    Arc::new(schema)
}

impl ServerHandler for VaultMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("vault-mcp", env!("CARGO_PKG_VERSION")))
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
            .with_instructions(INSTRUCTIONS)
    }

    /// Only the `initialize` era: a client probing `server/discover` (2026-07-28)
    /// gets an error and falls back to `initialize`, as from any pre-2026 server.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(
            &ProtocolVersion::LATEST_WITH_INITIALIZE,
        ))
    }

    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        Err(method_not_found("server/discover"))
    }

    /// A request rmcp could only take as a custom one: a method it does not
    /// know (`-32601`, naming the methods served; rmcp's own message is the
    /// bare name), or one it knows whose params do not fit (`-32602`: rmcp
    /// would answer "method not found", as if `tools/call` did not exist).
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let method = request.method.as_str();
        if !TYPED_METHODS.contains(&method) {
            return Err(method_not_found(method));
        }
        let detail = if method == "tools/call" {
            call_tool_misfit(request.params.as_ref())
        } else {
            "\"params\" do not match the MCP schema for this method".to_owned()
        };
        Err(ErrorData::new(
            ErrorCode::INVALID_PARAMS,
            format!("Invalid params: {method}: {detail}"),
            None,
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        // Boxed: the tool futures hold tonic calls and are tens of KiB; rmcp
        // moves the request future several times when it spawns it, and a
        // box makes each move a pointer copy (perf: memmove was ~10 % of
        // vault-mcp's CPU per call before).
        let work = Box::pin(async {
            match request.name.as_ref() {
                "list_services" => Ok(self.list_services().await),
                "execute" => Ok(self.execute(arguments).await),
                "vault_status" => Ok(self.vault_status().await),
                other => Err(ErrorData::invalid_params(
                    format!(
                        "unknown tool {other:?}: the tools are list_services, execute and vault_status"
                    ),
                    None,
                )),
            }
        });
        // A cancelled request drops the gRPC call, which resets its stream at the daemon.
        let outcome = tokio::select! {
            outcome = work => outcome?,
            () = context.ct.cancelled() => {
                return Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "request cancelled", None));
            }
        };
        let result = match outcome {
            Ok(result) => result,
            Err(refusal) => refused(&self.token.scrub(refusal)),
        };
        Ok(result.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn schema(tool: &str) -> Value {
        let tools = tools();
        let t = tools.iter().find(|t| t.name == tool).unwrap();
        Value::Object(t.input_schema.as_ref().clone())
    }

    #[test]
    fn execute_schema_lists_required_and_optional_arguments() {
        let s = schema("execute");
        assert_eq!(s["type"], "object");
        assert_eq!(s["required"], json!(["capability", "method", "path"]));
        assert_eq!(s["additionalProperties"], false);
        for (name, ty) in [
            ("capability", "string"),
            ("method", "string"),
            ("path", "string"),
            ("body", "string"),
            ("reason", "string"),
            ("query", "object"),
            ("headers", "object"),
        ] {
            assert_eq!(s["properties"][name]["type"], ty, "{name}: {s}");
            assert!(
                s["properties"][name]["description"]
                    .as_str()
                    .is_some_and(|d| d.len() > 10),
                "{name}"
            );
        }
        assert_eq!(
            s["properties"]["query"]["additionalProperties"]["type"],
            "string"
        );
        assert!(!s.to_string().contains("\"default\""), "{s}");
    }

    #[test]
    fn empty_tools_take_an_empty_object() {
        for tool in ["list_services", "vault_status"] {
            assert_eq!(schema(tool), json!({"type": "object", "properties": {}}));
        }
    }

    #[test]
    fn execute_arguments_accept_nulls_and_refuse_strays() {
        let ok: ExecuteArgs = serde_json::from_value(json!({
            "capability": "gh", "method": "GET", "path": "/x", "query": null, "headers": null, "body": null, "reason": null
        }))
        .unwrap();
        assert!(ok.query.is_none() && ok.body.is_none());
        let minimal: ExecuteArgs =
            serde_json::from_value(json!({"capability": "gh", "method": "GET", "path": "/x"}))
                .unwrap();
        assert!(minimal.headers.is_none() && minimal.reason.is_none());

        let stray = serde_json::from_value::<ExecuteArgs>(json!({
            "capability": "gh", "method": "GET", "path": "/x", "url": "https://evil.example"
        }));
        let r = render::bad_arguments("execute", stray.unwrap_err());
        assert!(
            r.text()
                .starts_with("bad_request: invalid arguments for execute: unknown field `url`"),
            "{r}"
        );

        let missing =
            serde_json::from_value::<ExecuteArgs>(json!({"capability": "gh", "method": "GET"}));
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("missing field `path`")
        );
    }

    fn refusal(args: Value) -> String {
        let Value::Object(map) = args else {
            panic!("not an object")
        };
        execute_args(map).unwrap_err().text().to_owned()
    }

    #[test]
    fn execute_type_errors_name_the_argument_and_its_type() {
        let base = json!({"capability": "gh", "method": "GET", "path": "/x"});
        let with = |field: &str, value: Value| {
            let mut v = base.clone();
            v[field] = value;
            refusal(v)
        };
        assert_eq!(
            with("body", json!({"a": 1})),
            "bad_request: execute argument \"body\" must be a string (the request body as UTF-8 text; \
             JSON-encode an object first), got an object"
        );
        for (field, value, got) in [
            ("capability", json!(5), "a number"),
            ("method", json!(["GET"]), "an array"),
            ("path", json!(123), "a number"),
            ("reason", json!(5), "a number"),
            ("body", json!(true), "a boolean"),
        ] {
            let r = with(field, value);
            assert!(
                r.starts_with(&format!(
                    "bad_request: execute argument \"{field}\" must be a string ("
                )) && r.ends_with(&format!("), got {got}")),
                "{r}"
            );
        }
        for field in ["query", "headers"] {
            let r = with(field, json!("Accept: x"));
            assert!(
                r.starts_with(&format!(
                    "bad_request: execute argument \"{field}\" must be an object mapping names to string values"
                )) && r.ends_with("got a string"),
                "{r}"
            );
            let r = with(field, json!({"ok": "1", "Accept": 5}));
            assert_eq!(
                r,
                format!(
                    "bad_request: execute argument \"{field}\" must map names to strings, but the value of \
                     \"Accept\" is a number; write numbers and booleans as strings, e.g. \"5\""
                )
            );
        }
        let r = refusal(json!({"capability": "gh", "method": "GET", "path": null}));
        assert!(
            r.starts_with("bad_request: execute argument \"path\" is required: a string"),
            "{r}"
        );
        // Unknown fields are still named by serde.
        let r = refusal(json!({"capability": "gh", "method": "GET", "path": "/x", "url": "u"}));
        assert!(r.contains("unknown field `url`"), "{r}");
        // Well-typed arguments pass, nulls included.
        let Value::Object(ok) = json!({"capability": "gh", "method": "GET", "path": "/x",
            "query": {"a": "1"}, "headers": null, "body": null, "reason": "r"})
        else {
            unreachable!()
        };
        assert!(execute_args(ok).is_ok());
    }

    #[test]
    fn vault_status_output_schema_allows_the_optional_fields() {
        let tools = tools();
        let t = tools.iter().find(|t| t.name == "vault_status").unwrap();
        let schema = Value::Object(t.output_schema.as_deref().cloned().unwrap());
        for field in ["state", "agent", "hint", "locks_in_secs"] {
            assert!(schema["properties"].get(field).is_some(), "{schema}");
        }
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        assert!(required.contains(&json!("state")), "{schema}");
        for optional in ["hint", "locks_in_secs"] {
            assert!(!required.contains(&json!(optional)), "{schema}");
        }
    }

    #[test]
    fn token_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Token::new("vt_abc".into())),
            "Token([REDACTED])"
        );
    }
}
