//! vaultd's gRPC contract and the client side of the unix socket.
//!
//! # Layout
//!
//! - [`v1`]: the generated `vault.v1` messages, client and server.
//! - [`paths`]: where the daemon's socket is (`VAULTD_SOCKET`, `VAULTD_HOME`, XDG).
//! - [`client`]: connects to the socket and checks the protocol version first.
//! - [`codes`]: the stable refusal codes carried at the start of status messages.
//! - [`codec`]: the protobuf codec of the generated code (tonic-prost's, smaller buffers).
//!
//! vaultctl and vault-mcp depend on this crate only, never on the daemon's internals.
#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod codes;
pub mod paths;

/// Generated code for `proto/vault/v1/vault.proto`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("vault.v1");
}

/// Bumped on every incompatible change to `vault.v1`; checked by [`client::connect`].
///
/// - 2: an `Execute` that `lock` or `agent rm` aborted while it ran is answered
///   `Aborted` (vault-mcp repeats only an `unknown_agent` sent
///   `Unauthenticated`, which a v1 daemon also gave to aborted calls), and
///   `UnlockRequest.lock_after_secs` (a v1 daemon would ignore the timer).
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest request message vaultd decodes (its `max_decoding_message_size`):
/// 10 MiB request bodies for the proxy plus room for the rest. Clients check a
/// request against it before sending (vaultctl names it for a big secret or policy).
pub const MAX_REQUEST_BYTES: usize = 11 << 20;

/// The largest reply vaultd encodes and vault-mcp decodes: an `Execute`
/// response body of up to 256 MiB (the policy's largest
/// `max_response_bytes`) plus its headers. A smaller bound in the shim would
/// turn a call the upstream already answered into `unavailable`.
pub const MAX_REPLY_BYTES: usize = 300 << 20;

/// Redacting `Debug` for the messages whose derived one build.rs suppressed:
/// they carry a passphrase, a secret value or an agent token.
mod redacted_debug {
    use super::v1::*;
    use std::fmt;

    macro_rules! redacted {
        ($($ty:ident { $($field:ident),* }),* $(,)?) => {$(
            impl fmt::Debug for $ty {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct(stringify!($ty))
                        $(.field(stringify!($field), &self.$field))*
                        .finish_non_exhaustive()
                }
            }
        )*};
    }

    redacted! {
        UnlockRequest {},
        ChangePassphraseRequest {},
        SetSecretRequest { name },
        RemoveSecretRequest { name },
        ApplyPolicyRequest { source_name, dry_run },
        AddAgentRequest { name },
        AddAgentResponse { name },
        RemoveAgentRequest { name },
        AgentStatusRequest {},
        ListServicesRequest {},
        ExecuteRequest { capability, method, path },
    }
}
