//! `vault-mcp`'s command line, as a library item so that its man page and
//! shell completions are generated from the real definition (`xtask`).

use std::path::PathBuf;

use clap::Parser;

/// MCP server (stdio) that lets an AI agent call APIs through vaultd without ever holding a credential.
///
/// Started by an MCP client, not by hand: it speaks MCP on stdin/stdout and logs to stderr.
/// `vaultctl mcp-config --agent NAME` prints the client configuration.
#[derive(Debug, Parser)]
#[command(name = "vault-mcp", version)]
pub struct Cli {
    /// Read the agent token from FILE (whitespace around it is ignored); takes precedence
    /// over VAULTD_AGENT_TOKEN. The file should be readable by you alone (chmod 600).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// vaultd's socket. Default: VAULTD_SOCKET, else VAULTD_HOME/vaultd.sock,
    /// else $XDG_RUNTIME_DIR/vaultd/vaultd.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Refused: a token on the command line is visible to every process.
    #[arg(long, hide = true, num_args = 0..=1, value_name = "TOKEN")]
    pub token: Option<Option<String>>,
}
