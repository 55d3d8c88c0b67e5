//! Compiles `vault/v1/vault.proto` with protox (pure Rust: no `protoc` needed).

/// Messages that carry a passphrase, a secret value or an agent token. Their
/// derived `Debug` is suppressed; `src/lib.rs` gives each a redacting one.
const SECRET_BEARING: &[&str] = &[
    "vault.v1.UnlockRequest",
    "vault.v1.ChangePassphraseRequest",
    "vault.v1.SetSecretRequest",
    "vault.v1.RemoveSecretRequest",
    "vault.v1.ApplyPolicyRequest",
    "vault.v1.AddAgentRequest",
    "vault.v1.AddAgentResponse",
    "vault.v1.RemoveAgentRequest",
    "vault.v1.AgentStatusRequest",
    "vault.v1.ListServicesRequest",
    "vault.v1.ExecuteRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=vault/v1/vault.proto");
    let fds = protox::compile(["vault/v1/vault.proto"], ["."])?;
    tonic_prost_build::configure()
        .skip_debug(SECRET_BEARING)
        // Shared, not copied, when vault-mcp keeps a request to send it again
        // (a call refused for an unknown token, made again with a new one).
        .bytes(".vault.v1.ExecuteRequest.body")
        .codec_path("crate::codec::VaultCodec")
        .compile_fds(fds)?;
    Ok(())
}
