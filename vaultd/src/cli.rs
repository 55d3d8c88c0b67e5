//! The `vaultd` binary's command line, as a library item so that man pages
//! and shell completions are generated from the real definition (`xtask`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// vaultd: credential vault daemon for AI agents.
#[derive(Debug, Parser)]
#[command(name = "vaultd", version, about)]
pub struct Args {
    /// Config file (default: $XDG_CONFIG_HOME/vaultd/vaultd.toml, or VAULTD_HOME/vaultd.toml).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Without a command: run the daemon.
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// `vaultd`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Report which protections this machine enforces (and, if vaultd runs, which it has on).
    /// Exits 0 when all are available, 1 otherwise.
    Check,
}
