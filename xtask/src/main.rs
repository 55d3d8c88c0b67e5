//! `cargo run -p xtask -- gen-docs OUT_DIR`: writes, from the clap definitions
//! the binaries themselves parse with,
//!
//! - `OUT_DIR/man/vaultd.1`, `vaultctl.1`, `vault-mcp.1` (clap_mangen; each
//!   subcommand of vaultctl also gets its own page, `vaultctl-secret-set.1`...),
//! - `OUT_DIR/completions/{bash,zsh,fish}/` for all three programs
//!   (clap_complete: `vaultctl.bash`, `_vaultctl`, `vaultctl.fish`...).
//!
//! `scripts/build-deb.sh` runs it before `cargo deb`, which installs the
//! results (`[package.metadata.deb]` in `vaultd/Cargo.toml`).
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The three installed programs, by name, with their real definitions.
fn programs() -> Vec<Command> {
    vec![
        vaultd::cli::Args::command(),
        vaultd::ctl::Cli::command(),
        vault_mcp::cli::Cli::command(),
    ]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, out] if cmd == "gen-docs" => gen_docs(Path::new(out)),
        _ => bail!("usage: cargo run -p xtask -- gen-docs OUT_DIR"),
    }
}

fn gen_docs(out: &Path) -> anyhow::Result<()> {
    let man_dir = out.join("man");
    fs::create_dir_all(&man_dir).with_context(|| format!("create {}", man_dir.display()))?;
    let mut written = Vec::new();
    for mut cmd in programs() {
        cmd.build();
        write_man_pages(&cmd, &man_dir, &mut written)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let name = cmd.get_name().to_string();
            let path = clap_complete::generate_to(shell, &mut cmd.clone(), &name, &dir)
                .with_context(|| format!("{shell} completion for {name}"))?;
            written.push(path);
        }
    }
    for p in &written {
        println!("{}", p.display());
    }
    Ok(())
}

/// `NAME.1` for `cmd`, and `NAME-SUB.1` for each visible subcommand, recursively.
fn write_man_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("render {name}.1"))?;
    fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_man_pages(sub, dir, written)?;
    }
    Ok(())
}
