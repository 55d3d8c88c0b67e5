//! Stable refusal codes. A refusal travels as a gRPC status whose message is
//! `CODE: what happened; what to do`. vault-mcp passes the message to the agent
//! unchanged; scripts and tests match on the code.
//!
//! The gRPC status code says whether an `Execute` may have reached the API:
//! a call that was running when `vaultctl lock` or `vaultctl agent rm`
//! aborted it is answered `Aborted` (code `locked` or `unknown_agent`); every
//! refusal made before the upstream call has another status code. So an
//! `unknown_agent` with `Unauthenticated` means the token named no agent when
//! the call arrived: nothing was sent, and the call may be made again with
//! another token.

/// The vault is locked (or was locked while the call ran).
pub const LOCKED: &str = "locked";
/// vaultd cannot be reached.
pub const UNAVAILABLE: &str = "unavailable";
/// The agent token is missing, unknown or revoked.
pub const UNKNOWN_AGENT: &str = "unknown_agent";
/// No capability of that name is granted to this agent (or none exists).
pub const NO_SUCH_CAPABILITY: &str = "no_such_capability";
/// A deny rule matched, or no allow rule did.
pub const DENIED_BY_RULE: &str = "denied_by_rule";
/// The capability's rate limit is exhausted.
pub const RATE_LIMITED: &str = "rate_limited";
/// The capability requires a reason and none was given.
pub const REASON_REQUIRED: &str = "reason_required";
/// The request is malformed or breaks a proxy rule.
pub const BAD_REQUEST: &str = "bad_request";
/// The upstream call failed (TLS, timeout, reset, refused address...).
pub const UPSTREAM_ERROR: &str = "upstream_error";
/// The audit record could not be written: nothing was sent.
pub const AUDIT_UNAVAILABLE: &str = "audit_unavailable";

/// Every code, for documentation and exhaustive tests.
pub const ALL: &[&str] = &[
    LOCKED,
    UNAVAILABLE,
    UNKNOWN_AGENT,
    NO_SUCH_CAPABILITY,
    DENIED_BY_RULE,
    RATE_LIMITED,
    REASON_REQUIRED,
    BAD_REQUEST,
    UPSTREAM_ERROR,
    AUDIT_UNAVAILABLE,
];

/// The code at the start of a status message, if it carries one of ours.
pub fn code_of(message: &str) -> Option<&'static str> {
    let head = message.split(':').next()?;
    ALL.iter().copied().find(|c| *c == head)
}
