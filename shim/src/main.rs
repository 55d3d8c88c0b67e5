//! `vault-mcp`: the MCP shim between an AI agent and vaultd.
//!
//! An MCP client (Claude Code, Cursor, any agent) starts one `vault-mcp` per
//! server entry and speaks MCP to it over stdin/stdout. The shim offers three
//! tools, `list_services`, `execute` and `vault_status`, and forwards each call
//! as one gRPC request to vaultd on its unix socket, naming the agent by its
//! token. vaultd checks the policy, injects the credential, makes the upstream
//! call, scrubs and audits it; the shim only turns the answer into a tool
//! result, or into a refusal whose text starts with a stable code
//! (`locked: ...`, `unavailable: ...`).
//!
//! What it never does:
//!
//! - hold, read or see an API credential: vaultd injects them and returns none
//!   (the shim's only secret is the agent token, which names its agent);
//! - print anything on stdout but MCP messages (diagnostics go to stderr);
//! - take the agent token from argv (only `VAULTD_AGENT_TOKEN` or
//!   `--token-file`), or show it in any output;
//! - connect at start-up: the daemon is dialled on the first tool call, so the
//!   client's `initialize` is answered in milliseconds whether vaultd runs or not;
//! - keep state beyond that one connection: when vaultd stops, calls are
//!   answered `unavailable` (naming the command that starts it), and the next
//!   call dials again, with a fresh protocol handshake, so a restarted vaultd
//!   serves the same MCP session;
//! - open a network connection: its only peer is the unix socket.
//!
//! Layout: the library (`src/lib.rs`) holds [`server`] (MCP tools and
//! dispatch), [`daemon`] (the connection to vaultd), [`render`] (answers to
//! tool-result JSON and refusals) and [`stdio`] (the transport); this file is
//! argument parsing and the runtime ([`token`] has the agent token).

use vault_mcp::cli::Cli;
use vault_mcp::{daemon, render, server, stdio, token};

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rmcp::ServiceExt;
use rmcp::service::ServerInitializeError;

use crate::daemon::Daemon;
use crate::server::VaultMcp;
use crate::token::{AgentToken, TOKEN_ENV};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.token.is_some() {
        eprintln!(
            "vault-mcp: --token is not accepted: a token on the command line is visible to every process; \
             set {TOKEN_ENV} or use --token-file FILE"
        );
        return ExitCode::from(2);
    }

    let token = AgentToken::configured(cli.token_file.clone());
    if let Some(refusal) = token.error() {
        if token.file().is_some() {
            eprintln!(
                "vault-mcp: {refusal}; tool calls are refused until the file holds a valid token (it is read again on each call until then)"
            );
        } else {
            eprintln!(
                "vault-mcp: {refusal}; every tool call will be refused until this is fixed and the MCP client restarted"
            );
        }
    }
    let socket = match cli.socket {
        Some(path) => Ok(std::path::absolute(&path).unwrap_or(path)),
        None => vault_proto::paths::socket_path().map_err(render::no_socket),
    };
    if let Err(refusal) = &socket {
        eprintln!("vault-mcp: {refusal}");
    }
    if std::io::stdin().is_terminal() {
        eprintln!(
            "vault-mcp: this is an MCP server: it reads JSON-RPC on stdin and is meant to be started by an \
             MCP client (`vaultctl mcp-config --agent NAME` prints the configuration)"
        );
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vault-mcp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(VaultMcp::with_token(Daemon::new(socket), token)));
    // A blocking stdin read (when stdin is not a pipe) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn serve(server: VaultMcp) -> ExitCode {
    let running = match server.serve(stdio::transport()).await {
        Ok(running) => running,
        // The client went away before `initialize`: nothing to report.
        Err(ServerInitializeError::ConnectionClosed(_)) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-mcp: MCP session failed to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match running.waiting().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-mcp: MCP session ended abnormally: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["vault-mcp", "--token-file", "/t", "--socket", "/s"]).unwrap();
        assert_eq!(cli.token_file.as_deref(), Some(std::path::Path::new("/t")));
        assert_eq!(cli.socket.as_deref(), Some(std::path::Path::new("/s")));
        assert!(cli.token.is_none());
        assert!(
            Cli::try_parse_from(["vault-mcp", "--token", "x"])
                .unwrap()
                .token
                .is_some()
        );
        assert!(Cli::try_parse_from(["vault-mcp", "stray"]).is_err());
    }
}
