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
//! argument parsing, the agent token and the runtime.

use vault_mcp::cli::Cli;
use vault_mcp::{daemon, render, server, stdio};

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rmcp::ServiceExt;
use rmcp::service::ServerInitializeError;

use crate::daemon::Daemon;
use crate::render::Refusal;
use crate::server::{Token, VaultMcp};

/// The environment variable holding the agent token.
const TOKEN_ENV: &str = "VAULTD_AGENT_TOKEN";
/// A token file is read up to this size: tokens are short.
const MAX_TOKEN_FILE: u64 = 4096;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.token.is_some() {
        eprintln!(
            "vault-mcp: --token is not accepted: a token on the command line is visible to every process; \
             set {TOKEN_ENV} or use --token-file FILE"
        );
        return ExitCode::from(2);
    }

    let token = load_token(cli.token_file.as_deref());
    if let Err(refusal) = &token {
        eprintln!("vault-mcp: {refusal}; every tool call will be refused until this is fixed");
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
    let code = runtime.block_on(serve(VaultMcp::new(Daemon::new(socket), token)));
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

/// The agent token: `--token-file` when given, else `VAULTD_AGENT_TOKEN`.
/// Whatever is wrong becomes the refusal every tool call answers with.
fn load_token(file: Option<&Path>) -> Result<Token, Refusal> {
    let Some(path) = file else {
        return match std::env::var(TOKEN_ENV) {
            Ok(value) if !value.trim().is_empty() => Ok(Token::new(value.trim().to_owned())),
            _ => Err(render::no_token()),
        };
    };
    let mut f = File::open(path).map_err(|e| render::bad_token_file(path, e))?;
    // The mode of the file actually opened, not of whatever the path names later.
    let meta = f.metadata().map_err(|e| render::bad_token_file(path, e))?;
    if !meta.is_file() {
        return Err(render::bad_token_file(path, "not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "vault-mcp: warning: token file {} is accessible by other users (mode {mode:03o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let mut content = String::new();
    f.by_ref()
        .take(MAX_TOKEN_FILE)
        .read_to_string(&mut content)
        .map_err(|e| render::bad_token_file(path, e))?;
    let token = content.trim();
    if token.is_empty() {
        return Err(render::bad_token_file(path, "it is empty"));
    }
    Ok(Token::new(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["vault-mcp", "--token-file", "/t", "--socket", "/s"]).unwrap();
        assert_eq!(cli.token_file.as_deref(), Some(Path::new("/t")));
        assert_eq!(cli.socket.as_deref(), Some(Path::new("/s")));
        assert!(cli.token.is_none());
        assert!(
            Cli::try_parse_from(["vault-mcp", "--token", "x"])
                .unwrap()
                .token
                .is_some()
        );
        assert!(Cli::try_parse_from(["vault-mcp", "stray"]).is_err());
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"  vt_abc123\n\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let token = load_token(Some(&path)).unwrap();
        assert_eq!(format!("{token:?}"), "Token([REDACTED])");
    }

    #[test]
    fn token_file_problems_are_unknown_agent_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let r = load_token(Some(&missing)).unwrap_err();
        assert!(
            r.text()
                .starts_with("unknown_agent: cannot use the token file"),
            "{r}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let r = load_token(Some(&empty)).unwrap_err();
        assert!(r.text().contains("it is empty"), "{r}");

        let r = load_token(Some(dir.path())).unwrap_err();
        assert!(r.text().starts_with("unknown_agent: "), "{r}");
    }

    #[test]
    fn a_readable_token_file_is_still_used() {
        // Too-open permissions only warn (on stderr).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "vt_open").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_token(Some(&path)).is_ok());
    }
}
