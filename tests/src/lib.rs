//! The end-to-end test harness of vaultd: the real `vaultd`, `vaultctl` and
//! `vault-mcp` binaries, a local TLS upstream that records what it receives, and a
//! real MCP client (Python's official SDK).
//!
//! A test in `tests/tests/*.rs` typically:
//!
//! 1. starts an [`Upstream`] (`TlsKind::Good`, or a hostile one) and takes its
//!    `url()` as a service's `base_url`;
//! 2. creates a [`VaultEnv`] (a temporary `VAULTD_HOME`), runs `init`,
//!    `start_daemon`, `unlock`, sets secrets and applies a policy whose services
//!    use `ca_file = env.ca_file()` and `allow_private_network = true`
//!    (the upstream is on 127.0.0.1);
//! 3. adds an agent, opens [`VaultEnv::mcp`] with its token and calls tools;
//! 4. checks what the upstream received ([`Upstream::requests`]), what the agent
//!    got ([`ToolResult`]), the audit log, and that no secret leaked anywhere
//!    ([`assert_no_canary`]).
//!
//! Prerequisites: `cargo build --workspace --bins` (the binaries are not built by
//! `cargo test -p vaultd-tests`), and Python >= 3.10 with `venv` (the MCP SDK is
//! installed into `tests/.venv` on first use by `tests/setup-venv.sh`).
//!
//! Modules: [`pki`] (certificates), [`upstream`] (TLS servers), [`env`]
//! (binaries, daemon, vaultctl, outputs), [`mcp`] (the MCP client), [`client`]
//! (a direct HTTPS client for checking upstreams), [`forms`] (encoded forms of a secret),
//! [`policy`] (the one-service policy most tests apply).

pub mod client;
pub mod env;
pub mod forms;
pub mod mcp;
pub mod pki;
pub mod policy;
pub mod upstream;

pub use env::{
    Binaries, CmdOutput, Ctl, Daemon, PASSPHRASE, Running, VaultEnv, assert_absent,
    assert_no_canary, binaries,
};
pub use mcp::{McpClient, McpError, McpOptions, ToolInfo, ToolResult};
pub use pki::{Pki, TlsKind};
pub use upstream::{RawServer, Recorded, Upstream};
