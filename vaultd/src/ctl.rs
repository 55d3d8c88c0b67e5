//! `vaultctl`: the user's command line.
//!
//! Secrets and passphrases are read from the terminal (no echo), from
//! `--passphrase-fd N` / `--from-fd N` (the inherited descriptor itself, read
//! from its current position: a pipe, a socket or a file), or from stdin;
//! never from argv. From one descriptor, the passphrase (up to its newline)
//! is read first, then the new passphrase or the secret. Every command that
//! changes the vault sends the passphrase with the request. Errors are one
//! line on stderr and a non-zero exit; a closed stdout ends vaultctl quietly
//! with 141 (as SIGPIPE would).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use vault_proto::client::{self, Client, ConnectError};
use vault_proto::v1::*;
use zeroize::Zeroizing;

use crate::dirs::Dirs;
use crate::vault::KdfParams;

/// Stdout is closed (`vaultctl status | head -1`): vaultctl stops writing and
/// exits quietly with 141, as a program ended by SIGPIPE, instead of panicking.
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
pub struct StdoutClosed;

fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// `println!` that returns [`StdoutClosed`] (or another write error) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    };
}

/// `print!` that returns [`StdoutClosed`] (or another write error) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        write!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    };
}

/// vaultctl: manage the vaultd credential vault.
#[derive(Debug, Parser)]
#[command(
    name = "vaultctl",
    version,
    about = "Manage the vaultd credential vault: init, unlock, lock, secrets, policy, agents, audit",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// Read the passphrase from this open file descriptor (up to the first newline) instead of the terminal.
    /// It is read first: the same descriptor can then carry the new passphrase or the secret.
    #[arg(long, global = true, value_name = "N", allow_hyphen_values = true, value_parser = fd_value)]
    pub passphrase_fd: Option<Fd>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// vaultctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty vault (needs no running daemon).
    Init {
        /// argon2id memory in MiB.
        #[arg(long, default_value_t = 256, value_name = "M")]
        kdf_memory_mib: u32,
        /// argon2id passes.
        #[arg(long, default_value_t = 3, value_name = "T")]
        kdf_iterations: u32,
    },
    /// Unlock the vault in the running daemon.
    Unlock {
        /// Lock again by itself after this long ("8h", "30m", "1h 30m"), as
        /// `ssh-add -t` does; the time asleep counts. Without it the vault stays
        /// unlocked until `vaultctl lock`, or for vaultd.toml's `unlock_for`
        /// if that is set. Each unlock replaces the timer.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_unlock_for)]
        lock_after: Option<Duration>,
    },
    /// Lock now: wipe every key from memory and abort calls in flight (no passphrase needed).
    Lock,
    /// Show whether vaultd runs and is locked.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Change the passphrase.
    Passwd {
        /// Read the new passphrase from this open file descriptor (up to the first newline) instead of the
        /// terminal; read after --passphrase-fd's, so one descriptor can carry "OLD\nNEW\n".
        #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = fd_value)]
        new_passphrase_fd: Option<Fd>,
    },
    /// Store, list or remove secrets (values are write-only).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Apply or show the policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Manage agent identities.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Print the MCP client configuration that runs vault-mcp for an agent.
    McpConfig(McpConfigArgs),
}

/// `secret` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a secret (from the terminal, a file descriptor or stdin).
    Set {
        /// Secret name.
        name: String,
        /// Read the value from this open file descriptor (all the rest of it; one trailing newline is
        /// dropped); read after --passphrase-fd's, so one descriptor can carry "PASSPHRASE\nVALUE".
        #[arg(
            long,
            value_name = "N",
            conflicts_with = "from_stdin",
            allow_hyphen_values = true,
            value_parser = fd_value
        )]
        from_fd: Option<Fd>,
        /// Read the value from stdin (all of it; one trailing newline is dropped).
        #[arg(long)]
        from_stdin: bool,
        /// A value typed after the name by mistake: refused, never echoed
        /// (only its length is kept).
        #[arg(hide = true, num_args = 0.., allow_hyphen_values = true, value_parser = stray_value)]
        stray: Vec<Stray>,
    },
    /// List secret names, one per line.
    List,
    /// Remove a secret.
    Rm {
        /// Secret name.
        name: String,
    },
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy file and replace the services and capabilities with it.
    Apply {
        /// The policy TOML file.
        file: PathBuf,
        /// Validate only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the policy sealed in the vault (no secret values).
    Show,
}

/// `agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Create an agent and print its token (shown once).
    Add {
        /// Agent name.
        name: String,
        /// Print `{"name": ..., "token": ...}` (with --token-file:
        /// `{"name": ..., "token_file": ...}`).
        #[arg(long)]
        json: bool,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Replace the token file even when it holds the token of another
        /// agent the vault still has (that agent's MCP entries then act as
        /// this one).
        #[arg(long, requires = "token_file")]
        replace: bool,
    },
    /// List agents and their capabilities.
    List,
    /// Remove an agent: its token stops working at once, calls in flight included.
    Rm {
        /// Agent name.
        name: String,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print the last records.
    Tail {
        /// How many records (0 = all).
        #[arg(short = 'n', default_value_t = 20)]
        n: u32,
        /// Keep printing new records.
        #[arg(short = 'f', long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check the MAC chain of the whole log.
    Verify,
}

/// MCP clients `mcp-config` knows.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum McpClient {
    /// Claude Desktop (`claude_desktop_config.json`).
    ClaudeDesktop,
    /// Claude Code (`.mcp.json` or `claude mcp add-json`).
    ClaudeCode,
    /// Cursor (`~/.cursor/mcp.json`).
    Cursor,
    /// VS Code (`.vscode/mcp.json`).
    Vscode,
    /// OpenAI Codex CLI (`~/.codex/config.toml`).
    Codex,
}

/// `mcp-config` arguments.
#[derive(Debug, Args)]
pub struct McpConfigArgs {
    /// The agent this MCP entry acts as.
    #[arg(long)]
    pub agent: String,
    /// The MCP client to configure.
    #[arg(long, value_enum, default_value = "claude-code")]
    pub client: McpClient,
    /// Where the agent's token is kept (default: the config dir's agents/NAME.token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Which passphrase is being read, for the prompt and the errors.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// The vault's passphrase (`--passphrase-fd`).
    Current,
    /// `passwd`'s new passphrase (`--new-passphrase-fd`).
    New,
}

impl Which {
    fn what(self) -> &'static str {
        match self {
            Which::Current => "the passphrase",
            Which::New => "the new passphrase",
        }
    }
    fn flag(self) -> &'static str {
        match self {
            Which::Current => "--passphrase-fd",
            Which::New => "--new-passphrase-fd",
        }
    }
}

/// A descriptor number from the command line (`--passphrase-fd N`,
/// `--new-passphrase-fd N`, `--from-fd N`). Parsing it never fails, so clap
/// never quotes what was typed: it may be a secret given in place of the
/// number. [`Fd::number`] refuses a non-number naming only the option.
#[derive(Debug, Clone, Copy)]
pub struct Fd(Option<u32>);

fn fd_value(value: &str) -> Result<Fd, std::convert::Infallible> {
    Ok(Fd(value.parse().ok()))
}

impl Fd {
    /// The number, or an error that names `flag` but not what was given.
    pub fn number(self, flag: &str) -> anyhow::Result<u32> {
        self.0.ok_or_else(|| {
            anyhow!(
                "{flag} needs a descriptor number like 3 (`vaultctl {flag} 3 ... 3<FILE`); what was given is not shown, in case it was a secret"
            )
        })
    }
}

/// `fd` as a number, or the error of [`Fd::number`].
fn fd_number(flag: &str, fd: Option<Fd>) -> anyhow::Result<Option<u32>> {
    fd.map(|fd| fd.number(flag)).transpose()
}

/// Parses vaultctl's command line, as `Cli::parse` does, except that a value
/// given to an option that takes none (`--from-stdin=VALUE`, `--json=VALUE`)
/// is not quoted in the error: it may be a secret.
pub fn parse_cli() -> Cli {
    use clap::CommandFactory as _;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::TooManyValues => {
            let flag = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(flag)) => flag.clone(),
                _ => "an option".to_owned(),
            };
            clap::Error::raw(
                ErrorKind::TooManyValues,
                format!(
                    "{flag} takes no value: write it alone, without `=`; what was given with it is not shown, in case it was a secret"
                ),
            )
            .format(&mut Cli::command())
            .exit()
        }
        Err(e) => e.exit(),
    }
}

/// Every descriptor the command line names, with its flag.
fn named_fds(cli: &Cli) -> Vec<(&'static str, Fd)> {
    let mut v = Vec::new();
    if let Some(fd) = cli.passphrase_fd {
        v.push(("--passphrase-fd", fd));
    }
    match &cli.command {
        Command::Passwd {
            new_passphrase_fd: Some(fd),
        } => v.push(("--new-passphrase-fd", *fd)),
        Command::Secret(SecretCmd::Set {
            from_fd: Some(fd), ..
        }) => v.push(("--from-fd", *fd)),
        _ => {}
    }
    v
}

/// A word after `secret set NAME` that is no option vaultctl knows: kept
/// without its text, so that neither clap's errors nor any `Debug` of
/// [`Cli`] show it (it may be the secret, typed on the command line).
#[derive(Debug, Clone)]
pub struct Stray {
    len: usize,
    /// Starts with `--`: more likely a mistyped option than a value.
    looks_like_option: bool,
}

fn stray_value(value: &str) -> Result<Stray, std::convert::Infallible> {
    Ok(Stray {
        len: value.len(),
        looks_like_option: value.starts_with("--"),
    })
}

/// Checks, before vaultctl opens any descriptor of its own, that every
/// descriptor named on the command line is open for reading. Done first so
/// that a number the shell did not open can never name one of vaultctl's own
/// sockets later.
pub fn check_fds(cli: &Cli) -> anyhow::Result<()> {
    for (flag, fd) in named_fds(cli) {
        let fd = fd.number(flag)?;
        crate::sys::read_fd(fd, &mut []).map_err(|e| fd_error(flag, fd, e))?;
    }
    Ok(())
}

fn fd_error(flag: &str, fd: u32, e: std::io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::EBADF) {
        anyhow!(
            "{flag} {fd}: file descriptor {fd} is not open for reading: open it in the shell, e.g. `vaultctl {flag} {fd} ... {fd}<FILE`"
        )
    } else {
        anyhow!("{flag} {fd}: cannot read file descriptor {fd}: {e}")
    }
}

/// One read(2) from `fd`, waiting when the descriptor is non-blocking.
fn read_some(flag: &str, fd: u32, buf: &mut [u8]) -> anyhow::Result<usize> {
    loop {
        match crate::sys::read_fd(fd, buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(fd_error(flag, fd, e)),
        }
    }
}

/// The longest passphrase line read from a descriptor.
const MAX_PASSPHRASE: usize = 64 * 1024;

/// Reads a passphrase from `fd` (up to the first newline) or the terminal.
///
/// From a descriptor it reads one byte at a time and stops right after the
/// first newline, so what follows stays in the descriptor for the next
/// reader: `--passphrase-fd 3 --new-passphrase-fd 3` with "old\nnew\n", or
/// `--passphrase-fd 3 secret set NAME --from-fd 3` with "pass\nvalue". The
/// passphrase is always read first.
fn read_passphrase(
    fd: Option<u32>,
    which: Which,
    prompt: &str,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let p = match fd {
        Some(fd) => {
            let mut line = Zeroizing::new(Vec::with_capacity(128));
            let mut byte = Zeroizing::new([0u8; 1]);
            let mut eof = false;
            loop {
                if read_some(which.flag(), fd, &mut byte[..])? == 0 {
                    eof = true;
                    break;
                }
                if byte[0] == b'\n' {
                    break;
                }
                if line.len() >= MAX_PASSPHRASE {
                    bail!(
                        "{} from fd {fd} is longer than {} KiB without a newline: nothing was done",
                        which.what(),
                        MAX_PASSPHRASE / 1024
                    );
                }
                line.push(byte[0]);
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                let why = if eof {
                    "was at end of file: empty, or already read up to its end"
                } else {
                    "gave an empty line"
                };
                bail!(
                    "{} is empty ({} {fd} {why}): nothing was done",
                    which.what(),
                    which.flag()
                );
            }
            line
        }
        None => {
            if !std::io::stdin().is_terminal() && std::fs::File::open("/dev/tty").is_err() {
                bail!(
                    "no terminal to read {} from: pass {} N",
                    which.what(),
                    which.flag()
                );
            }
            Zeroizing::new(
                rpassword::prompt_password(prompt)
                    .with_context(|| format!("cannot read {} from the terminal", which.what()))?
                    .into_bytes(),
            )
        }
    };
    if p.is_empty() {
        bail!("{} is empty: nothing was done", which.what());
    }
    Ok(p)
}

/// Reads a secret value: all bytes, one trailing newline dropped.
fn read_value(from_fd: Option<u32>, from_stdin: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(Vec::new());
    if let Some(fd) = from_fd {
        let mut chunk = Zeroizing::new([0u8; 8192]);
        loop {
            let n = read_some("--from-fd", fd, &mut chunk[..])?;
            if n == 0 {
                break;
            }
            v.extend_from_slice(&chunk[..n]);
            if v.len() > READ_LIMIT {
                break;
            }
        }
    } else if from_stdin {
        std::io::stdin()
            .take(READ_LIMIT as u64 + 1)
            .read_to_end(&mut v)
            .context("cannot read the secret from stdin")?;
    } else {
        if std::fs::File::open("/dev/tty").is_err() {
            bail!("no terminal to read the secret from: use --from-stdin or --from-fd N");
        }
        let s = Zeroizing::new(
            rpassword::prompt_password("Secret value: ")
                .context("cannot read the secret from the terminal")?,
        );
        v.extend_from_slice(s.as_bytes());
    }
    let keep = if v.ends_with(b"\r\n") {
        v.len() - 2
    } else if v.ends_with(b"\n") {
        v.len() - 1
    } else {
        v.len()
    };
    v.truncate(keep);
    if v.is_empty() {
        bail!("the secret value is empty: nothing was stored");
    }
    if v.len() > vault_proto::MAX_REQUEST_BYTES {
        bail!(
            "the secret value is over {}: {}; nothing was stored",
            mib(vault_proto::MAX_REQUEST_BYTES),
            request_limit()
        );
    }
    Ok(v)
}

/// Reads a UTF-8 text file that goes to vaultd in a request (a policy, a
/// `ca_file`), at most up to just past what vaultd accepts: a path like
/// `/dev/zero` is refused instead of filling memory.
fn read_text_file(path: &Path) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(READ_LIMIT as u64)
        .read_to_end(&mut bytes)?;
    if bytes.len() > vault_proto::MAX_REQUEST_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is too large (over {}; {}): check the path",
                mib(vault_proto::MAX_REQUEST_BYTES),
                request_limit()
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text: save it as UTF-8",
        )
    })
}

/// Secret values are read up to just past what vaultd accepts.
const READ_LIMIT: usize = vault_proto::MAX_REQUEST_BYTES + 2;

/// `n` bytes in MiB, for messages.
fn mib(n: usize) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

fn request_limit() -> String {
    format!(
        "vaultd accepts requests of at most {} MiB ({} bytes), everything in them included",
        vault_proto::MAX_REQUEST_BYTES >> 20,
        vault_proto::MAX_REQUEST_BYTES
    )
}

/// Refuses a request vaultd would not decode, before it is sent.
fn check_request_size(what: &str, msg: &impl prost::Message, nothing: &str) -> anyhow::Result<()> {
    let len = msg.encoded_len();
    if len > vault_proto::MAX_REQUEST_BYTES {
        bail!(
            "{what} is too large ({}): {}; {nothing}",
            mib(len),
            request_limit()
        );
    }
    Ok(())
}

/// The daemon's socket, located only by the commands that talk to vaultd.
fn socket() -> anyhow::Result<PathBuf> {
    vault_proto::paths::socket_path().map_err(|e| match e {
        vault_proto::paths::PathError::NoRuntimeDir => anyhow!(
            "cannot locate vaultd's socket: XDG_RUNTIME_DIR is not set; set XDG_RUNTIME_DIR (normally /run/user/{}, set by your login session), or VAULTD_SOCKET=PATH or VAULTD_HOME=DIR as vaultd was started with",
            crate::sys::getuid()
        ),
        e => e.into(),
    })
}

async fn connect() -> anyhow::Result<Client> {
    let path = socket()?;
    Ok(client::connect(&path, Duration::from_secs(10)).await?)
}

/// A gRPC status as one line for the user.
fn rpc(e: tonic::Status) -> anyhow::Error {
    // A status with a local cause is the connection failing (vaultd died or was
    // killed mid-call), not an answer from the daemon.
    if let Some(mut cause) = std::error::Error::source(&e) {
        while let Some(deeper) = cause.source() {
            cause = deeper;
        }
        return anyhow!(
            "the connection to vaultd was lost during the call ({cause}); whether it took effect is unknown: check with `vaultctl status`; if vaultd is not running, {}",
            client::START_HINT
        );
    }
    if e.code() == tonic::Code::FailedPrecondition
        && e.message()
            .strip_prefix(vault_proto::codes::LOCKED)
            .is_some_and(|rest| rest.starts_with(':'))
    {
        // The daemon's text is addressed to agents ("ask the user to run ...").
        return LockedRefusal.into();
    }
    anyhow!("{}", e.message())
}

/// The daemon refused because no vault is unlocked (see [`run`], which tells
/// "locked" from "no vault yet").
#[derive(Debug, thiserror::Error)]
#[error("the vault is locked: run `vaultctl unlock`, then try again")]
struct LockedRefusal;

/// What the daemon reports about itself, if it answers within 2 s.
async fn daemon_status() -> Option<StatusResponse> {
    let path = socket().ok()?;
    let mut c = client::connect(&path, Duration::from_secs(2)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(2), c.status(StatusRequest {}))
        .await
        .ok()?
        .ok()
        .map(tonic::Response::into_inner)
}

/// `audit tail -f`'s stream ended: vaultd ends it when the vault is locked
/// (the audit key is gone) or when it stops. Says which, and exits 1.
async fn follow_ended() -> anyhow::Result<i32> {
    match daemon_status().await {
        Some(s) if s.state != "unlocked" => eprintln!(
            "vaultctl: the vault was locked, which ended `audit tail -f`: run `vaultctl unlock`, then `vaultctl audit tail -f` again"
        ),
        Some(_) => eprintln!(
            "vaultctl: vaultd ended `audit tail -f` (the vault may have been locked and unlocked again): run `vaultctl audit tail -f` again"
        ),
        None => eprintln!(
            "vaultctl: vaultd stopped, which ended `audit tail -f`: {}, `vaultctl unlock`, then run `vaultctl audit tail -f` again",
            client::START_HINT
        ),
    }
    Ok(1)
}

/// The error of a command that needs a vault, when vaultd says it has none.
fn no_vault_yet(s: &StatusResponse) -> anyhow::Error {
    anyhow!(
        "vaultd has no vault yet (nothing at {}): create one with `vaultctl init`, then run `vaultctl unlock`",
        s.vault_path
    )
}

/// Runs vaultctl; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let follow = matches!(
        cli.command,
        Command::Audit(AuditCmd::Tail { follow: true, .. })
    );
    match run_command(cli).await {
        Err(e) if e.downcast_ref::<LockedRefusal>().is_some() => match daemon_status().await {
            Some(s) if s.state == "uninitialized" => Err(no_vault_yet(&s)),
            _ if follow => Err(anyhow!(
                "the vault is locked: `audit tail -f` needs it unlocked (run `vaultctl unlock`; `vaultctl audit tail -n N` works while locked)"
            )),
            _ => Err(e),
        },
        r => r,
    }
}

async fn run_command(cli: Cli) -> anyhow::Result<i32> {
    let pfd = fd_number("--passphrase-fd", cli.passphrase_fd)?;
    match cli.command {
        Command::Init {
            kdf_memory_mib,
            kdf_iterations,
        } => {
            let kdf = KdfParams::new(kdf_memory_mib, kdf_iterations)?;
            // No daemon needed: no socket either (XDG_RUNTIME_DIR may be unset).
            let dirs = Dirs::from_env_without_daemon()?;
            if dirs.vault_file.exists() {
                return Err(crate::error::Error::VaultExists {
                    path: dirs.vault_file,
                }
                .into());
            }
            let p = read_passphrase(pfd, Which::Current, "New passphrase: ")?;
            if pfd.is_none() {
                let again = read_passphrase(None, Which::Current, "Repeat passphrase: ")?;
                if *again != *p {
                    bail!("the passphrases differ: nothing was created");
                }
            }
            let path = dirs.vault_file.clone();
            tokio::task::spawn_blocking(move || crate::daemon::init_vault(&dirs, &p, kdf))
                .await??;
            outln!("created {}", path.display());
            if daemon_status().await.is_some() {
                eprintln!("next: vaultd is already running: `vaultctl unlock`");
            } else {
                eprintln!(
                    "next: start vaultd (`systemctl --user start vaultd`), then `vaultctl unlock`"
                );
            }
        }
        Command::Unlock { lock_after } => {
            let mut c = connect().await?;
            let p = read_passphrase(pfd, Which::Current, "Passphrase: ")?;
            let r = c
                .unlock(UnlockRequest {
                    passphrase: p.to_vec(),
                    lock_after_secs: lock_after.map_or(0, |d| d.as_secs()),
                })
                .await
                .map_err(rpc)?
                .into_inner();
            // The daemon says how long: `--for`, or else its `unlock_for`.
            match r.locks_in_secs {
                0 => outln!("unlocked"),
                secs => outln!(
                    "unlocked; locks again by itself in {}",
                    humantime::format_duration(Duration::from_secs(secs))
                ),
            }
            for w in r.warnings {
                eprintln!("warning: {w}");
            }
        }
        Command::Lock => return lock().await,
        Command::Status { json } => return status(json).await,
        Command::Passwd { new_passphrase_fd } => {
            let new_passphrase_fd = fd_number("--new-passphrase-fd", new_passphrase_fd)?;
            let mut c = connect().await?;
            let p = read_passphrase(pfd, Which::Current, "Current passphrase: ")?;
            let n = read_passphrase(new_passphrase_fd, Which::New, "New passphrase: ")?;
            if new_passphrase_fd.is_none() {
                let again = read_passphrase(None, Which::New, "Repeat new passphrase: ")?;
                if *again != *n {
                    bail!("the new passphrases differ: nothing was changed");
                }
            }
            c.change_passphrase(ChangePassphraseRequest {
                passphrase: p.to_vec(),
                new_passphrase: n.to_vec(),
            })
            .await
            .map_err(rpc)?;
            outln!("passphrase changed");
        }
        Command::Secret(cmd) => match cmd {
            SecretCmd::Set {
                name,
                from_fd,
                from_stdin,
                stray,
            } => {
                let from_fd = fd_number("--from-fd", from_fd)?;
                if let Some(option) = stray.iter().find(|s| s.looks_like_option) {
                    bail!(
                        "unknown option after `secret set {name}` (the {}-byte word is not shown, in case it is the value): the options are --from-stdin and --from-fd N; see `vaultctl secret set --help`",
                        option.len
                    );
                }
                if !stray.is_empty() {
                    bail!(
                        "secret set takes the value on stdin (--from-stdin), from a descriptor (--from-fd N) or from the terminal, never on the command line, where the process list and your shell history show it: run `vaultctl secret set {name}` and type it. The value you gave was not stored and is not shown here; remove it from your shell history, and if it is a real credential, consider it exposed and rotate it"
                    );
                }
                crate::daemon::check_secret_name(&name)?;
                let mut c = connect().await?;
                // The passphrase first: from one descriptor, "PASSPHRASE\nVALUE".
                let p = read_passphrase(pfd, Which::Current, "Passphrase: ")?;
                let value = read_value(from_fd, from_stdin)?;
                let req = SetSecretRequest {
                    passphrase: p.to_vec(),
                    name: name.clone(),
                    value: value.to_vec(),
                };
                check_request_size("the secret", &req, "nothing was stored")?;
                let r = c.set_secret(req).await.map_err(rpc)?.into_inner();
                outln!(
                    "{} secret {name}",
                    if r.replaced { "replaced" } else { "stored" }
                );
            }
            SecretCmd::List => {
                let mut c = connect().await?;
                for n in c
                    .list_secrets(ListSecretsRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner()
                    .names
                {
                    outln!("{n}");
                }
            }
            SecretCmd::Rm { name } => {
                let mut c = connect().await?;
                let p = read_passphrase(pfd, Which::Current, "Passphrase: ")?;
                c.remove_secret(RemoveSecretRequest {
                    passphrase: p.to_vec(),
                    name: name.clone(),
                })
                .await
                .map_err(rpc)?;
                outln!("removed secret {name}");
            }
        },
        Command::Policy(cmd) => match cmd {
            PolicyCmd::Apply { file, dry_run } => return policy_apply(pfd, &file, dry_run).await,
            PolicyCmd::Show => {
                let mut c = connect().await?;
                out!(
                    "{}",
                    c.show_policy(ShowPolicyRequest {})
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .policy_toml
                );
            }
        },
        Command::Agent(cmd) => match cmd {
            AgentCmd::Add {
                name,
                json,
                token_file,
                replace,
            } => {
                // The file is opened (created 0600 if missing) before the agent
                // exists, so a path that cannot be written creates no agent.
                let mut out_file = token_file.as_deref().map(TokenFile::open).transpose()?;
                let r = async {
                    let mut c = connect().await?;
                    if let Some(f) = out_file.as_ref().filter(|_| !replace) {
                        f.refuse_another_agents_token(&mut c, &name).await?;
                    }
                    let p = read_passphrase(pfd, Which::Current, "Passphrase: ")?;
                    c.add_agent(AddAgentRequest {
                        passphrase: p.to_vec(),
                        name: name.clone(),
                    })
                    .await
                    .map_err(rpc)
                }
                .await;
                let r = match r {
                    Ok(r) => r.into_inner(),
                    Err(e) => {
                        if let Some(f) = out_file.take() {
                            f.discard();
                        }
                        return Err(e);
                    }
                };
                if let Some(f) = out_file {
                    let path = f.path.clone();
                    f.write(format!("{}\n", r.token).as_bytes())
                        .with_context(|| {
                            token_lost(
                                &name,
                                &format!("written to {}", path.display()),
                                " --token-file FILE",
                            )
                        })?;
                    if json {
                        // The token stays in the file: `--json` names where.
                        outln!(
                            "{}",
                            serde_json::json!({"name": r.name, "token_file": path})
                        );
                    } else {
                        outln!(
                            "agent {} created; token written to {}",
                            r.name,
                            path.display()
                        );
                    }
                } else {
                    let line = if json {
                        serde_json::json!({"name": r.name, "token": r.token}).to_string()
                    } else {
                        r.token.clone()
                    };
                    let mut stdout = std::io::stdout().lock();
                    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
                        bail!(token_lost(&name, &format!("printed ({e})"), ""));
                    }
                }
                if token_file.is_none() && !json {
                    eprintln!(
                        "agent {} created. This token is shown once: give it to the MCP client (`vaultctl mcp-config --agent {}`).",
                        r.name, r.name
                    );
                }
            }
            AgentCmd::List => {
                let mut c = connect().await?;
                for a in c
                    .list_agents(ListAgentsRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner()
                    .agents
                {
                    // stdout stays NAME<TAB>CAPABILITIES for scripts; the
                    // hint goes to stderr.
                    outln!("{}\t{}", a.name, a.capabilities.join(","));
                    if !a.has_token {
                        eprintln!(
                            "agent {} has no token yet: `vaultctl agent add {}`",
                            a.name, a.name
                        );
                    }
                }
            }
            AgentCmd::Rm { name } => {
                let mut c = connect().await?;
                let p = read_passphrase(pfd, Which::Current, "Passphrase: ")?;
                let r = c
                    .remove_agent(RemoveAgentRequest {
                        passphrase: p.to_vec(),
                        name: name.clone(),
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                outln!(
                    "removed agent {name} ({} call(s) in flight aborted)",
                    r.aborted_calls
                );
            }
        },
        Command::Audit(cmd) => match cmd {
            AuditCmd::Tail { n, follow, json } => {
                let mut c = connect().await?;
                let mut stream = c
                    .audit_tail(AuditTailRequest { n, follow })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                let mut out = std::io::stdout().lock();
                let mut shown = 0u64;
                while let Some(line) = stream.message().await.map_err(rpc)? {
                    shown += 1;
                    if json {
                        writeln!(out, "{}", json_audit(&line)).map_err(stdout_error)?;
                    } else {
                        writeln!(out, "{}", human_audit(&line)).map_err(stdout_error)?;
                    }
                    out.flush().map_err(stdout_error)?;
                }
                if follow {
                    return follow_ended().await;
                }
                if shown == 0 {
                    // Said on stderr: stdout stays the (empty) list of records.
                    match daemon_status().await {
                        Some(s) if s.state == "uninitialized" => return Err(no_vault_yet(&s)),
                        _ => eprintln!(
                            "vaultctl: no audit records yet: vaultd writes one for each unlock, lock and change to the vault, and for each call an agent makes"
                        ),
                    }
                }
            }
            AuditCmd::Verify => {
                let mut c = connect().await?;
                let r = c
                    .audit_verify(AuditVerifyRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                if r.ok {
                    outln!("audit log OK: {} records, chain intact", r.records);
                } else {
                    eprintln!("vaultctl: audit log FAILED verification: {}", r.problem);
                    return Ok(1);
                }
            }
        },
        Command::McpConfig(args) => out!("{}", mcp_config(&args).await?),
    }
    Ok(0)
}

/// The error of an `agent add` whose new token could not be `handed` out
/// (written to a file, printed): the agent exists, its token is lost, and
/// the way back is to add it again (`add_args`: the same output option).
fn token_lost(name: &str, handed: &str, add_args: &str) -> String {
    format!(
        "agent {name} was created, but its token could not be {handed} and is lost: run `vaultctl agent rm {name}`, then `vaultctl agent add {name}{add_args}` again (and `vaultctl policy apply` your policy again: `agent rm` also removes its grants)"
    )
}

/// `agent add --token-file`'s file, opened before the agent is created.
struct TokenFile {
    path: PathBuf,
    /// We created it (removed again if the agent is not created).
    created: bool,
}

impl TokenFile {
    /// Opens `path` for writing without truncating it or changing its mode
    /// (a missing file is created 0600, missing directories 0700; an existing
    /// directory is left as it is); refuses a directory. Nothing else changes
    /// until [`TokenFile::write`], so a refused `agent add` leaves the files
    /// as they were.
    fn open(path: &Path) -> anyhow::Result<TokenFile> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let nothing = "nothing was created";
        // A symbolic link (say, into a client's configuration directory)
        // stays a link: the token goes to the file it names.
        let mut resolved = path.to_path_buf();
        for _ in 0..40 {
            if !std::fs::symlink_metadata(&resolved).is_ok_and(|m| m.file_type().is_symlink()) {
                break;
            }
            let target = std::fs::read_link(&resolved).with_context(|| {
                format!("cannot read the link {}: {nothing}", resolved.display())
            })?;
            resolved = match resolved.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
        }
        let path = resolved.as_path();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| {
                    format!(
                        "cannot create {} for the token: {nothing}",
                        parent.display()
                    )
                })?;
        }
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            bail!(
                "--token-file {} is a directory: name a file in it (e.g. {}): {nothing}",
                path.display(),
                path.join("NAME.token").display()
            );
        }
        let existed = std::fs::symlink_metadata(path).is_ok();
        // Opened to prove the path can be written (and to create it), then closed.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            // Never emptied here: `write` renames a new file over it.
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!("cannot write the token file {}: {nothing}", path.display())
            })?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            created: !existed,
        })
    }

    /// Replaces the file with one (mode 0600) holding `bytes`: written next
    /// to it and renamed over it, so a reader (vault-mcp reads this file
    /// again while its token is refused) sees the old token or the new one,
    /// never an empty or half-written file.
    fn write(self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self
            .path
            .with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Refuses to replace a file holding the token of another agent the
    /// vault still has (`agent add other --token-file` naming the wrong
    /// file would silently revoke that agent's only copy and make its MCP
    /// entry act as `other`). A file with a revoked token, or none, may be
    /// replaced.
    async fn refuse_another_agents_token(&self, c: &mut Client, name: &str) -> anyhow::Result<()> {
        if self.created {
            return Ok(());
        }
        let held = std::fs::read_to_string(&self.path).unwrap_or_default();
        let held = held.trim();
        if held.is_empty() || held.len() > 256 {
            return Ok(());
        }
        let own_file = self.path.with_file_name(format!("{name}.token"));
        let own_file = own_file.display();
        let status = c
            .agent_status(AgentStatusRequest {
                agent_token: held.to_owned(),
            })
            .await
            .map(|r| r.into_inner());
        // Locked (or no answer), vaultd cannot say whose token it is: fail closed.
        let owner = match status {
            Ok(st) if st.state == "unlocked" => st.agent,
            _ => bail!(
                "{} already holds a token, and vaultctl cannot tell whose while the vault is locked: run `vaultctl unlock` first, name another file (e.g. {own_file}), or pass --replace to overwrite it; nothing was created",
                self.path.display(),
            ),
        };
        if !owner.is_empty() && owner != name {
            bail!(
                "{} holds the token of agent {owner}, which still uses it: name another file (e.g. {own_file}), remove {owner} first with `vaultctl agent rm {owner}`, or pass --replace to overwrite it ({owner}'s MCP entries then act as {name}); nothing was created",
                self.path.display(),
            );
        }
        Ok(())
    }

    /// The agent was not created: remove the file if we created it.
    fn discard(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A line of the log for `audit tail --json`, which prints one JSON object
/// per line: the record as written, or, for a line that is not one (a
/// damaged log; the same lines [`human_audit`] calls unreadable),
/// `{"unreadable_record": LINE}` (a line that is not UTF-8 with each invalid
/// byte replaced by U+FFFD).
fn json_audit(line: &AuditLine) -> String {
    match record_of(line) {
        Some(_) => line.json.clone(),
        None => serde_json::json!({ "unreadable_record": line.json }).to_string(),
    }
}

/// The record `line` holds, if it is one (not checked against its MAC:
/// that is `audit verify`'s work).
fn record_of(line: &AuditLine) -> Option<crate::audit::Record> {
    if line.not_utf8 {
        return None;
    }
    crate::audit::parse_line(&line.json)
}

/// A line of the log for `audit tail`: the record's fields on one line.
/// Anyone who can write the user's files can append to the log, so every
/// field, and a line that is not a record, has its control and invisible
/// characters escaped: nothing in the log can move the cursor, erase what
/// is above it or reorder the text on the user's terminal.
fn human_audit(line: &AuditLine) -> String {
    use crate::audit::escape_hidden as esc;
    let Some(r) = record_of(line) else {
        let why = if line.not_utf8 {
            "unreadable record, not UTF-8"
        } else {
            "unreadable record"
        };
        return format!("({why}) {}", esc(&line.json));
    };
    let mut s = format!("{} #{} {}", esc(&r.time), r.seq, esc(&r.kind));
    let mut push = |label: &str, v: Option<String>| {
        if let Some(v) = v {
            s.push_str(&format!(" {label}{}", esc(&v)));
        }
    };
    push("agent=", r.agent);
    push("", r.event);
    push("cap=", r.capability);
    push("", r.method);
    push("", r.path);
    push("", r.decision);
    push("rule=", r.rule.map(|x| format!("{x:?}")));
    push("code=", r.code);
    push("status=", r.status.map(|x| x.to_string()));
    push("bytes=", r.bytes.map(|x| x.to_string()));
    push("ms=", r.duration_ms.map(|x| x.to_string()));
    push("reason=", r.reason.map(|x| format!("{x:?}")));
    push("error=", r.error.map(|x| format!("{x:?}")));
    s
}

async fn policy_apply(pfd: Option<u32>, file: &Path, dry_run: bool) -> anyhow::Result<i32> {
    let text = read_text_file(file).map_err(|e| {
        anyhow!(
            "cannot read policy file {}: {e}; the policy was not applied",
            file.display()
        )
    })?;
    let source = file.display().to_string();
    let cas = match crate::policy::ca_files(&text) {
        Ok(c) => c,
        Err(errs) => {
            print_policy_errors(&crate::policy::format_errors(&source, &errs));
            return Ok(1);
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let mut ca_files = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for (ca, line) in cas {
        let p = if Path::new(&ca).is_absolute() {
            PathBuf::from(&ca)
        } else {
            base.join(&ca)
        };
        match read_text_file(&p) {
            Ok(pem) => {
                ca_files.insert(ca, pem);
            }
            Err(e) => errors.push(format!(
                "{source}:{line}: cannot read ca_file {}: {e}",
                p.display()
            )),
        }
    }
    // A ca_file that cannot be read: the policy is only checked (a dry run),
    // so that every other problem is listed with it.
    let unreadable = errors;
    let mut req = ApplyPolicyRequest {
        passphrase: Vec::new(),
        policy_toml: text,
        source_name: source,
        ca_files,
        dry_run: dry_run || !unreadable.is_empty(),
    };
    let what = format!("policy {} with its ca_files", file.display());
    let r = async {
        check_request_size(&what, &req, "the policy was not applied")?;
        let mut c = connect().await?;
        let p = read_passphrase(pfd, Which::Current, "Passphrase: ")?;
        req.passphrase = p.to_vec();
        check_request_size(&what, &req, "the policy was not applied")?;
        Ok::<_, anyhow::Error>(c.apply_policy(req).await)
    }
    .await;
    if !unreadable.is_empty() {
        let mut all = unreadable;
        // The daemon's own line for each of those ca_files says less.
        if let Ok(Err(s)) = &r
            && s.code() == tonic::Code::InvalidArgument
        {
            all.extend(
                s.message()
                    .lines()
                    .filter(|l| !(l.contains("ca_file") && l.contains("could not be read")))
                    .map(str::to_owned),
            );
        }
        print_policy_errors(&all.join("\n"));
        return Ok(1);
    }
    match r? {
        Ok(r) => {
            let r = r.into_inner();
            let verb = if dry_run {
                "policy is valid (nothing changed)"
            } else {
                "policy applied"
            };
            outln!(
                "{verb}: {} service(s), {} capability(ies)",
                r.services,
                r.capabilities
            );
            if r.capabilities == 0 {
                eprintln!(
                    "warning: the policy grants no capability, so every agent's call is refused (no_such_capability): add [[capability]] entries and apply it again"
                );
            }
            for a in r.new_agents {
                eprintln!("new agent {a}: give it a token with `vaultctl agent add {a}`");
            }
            for w in r.warnings {
                eprintln!("warning: {w}");
            }
            Ok(0)
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            print_policy_errors(s.message());
            Ok(1)
        }
        Err(s) => Err(rpc(s)),
    }
}

/// Prints why a policy was refused: one problem as one line, several as one
/// line each (`FILE:LINE: what`) followed by a summary.
fn print_policy_errors(errors: &str) {
    let lines: Vec<&str> = errors.lines().filter(|l| !l.trim().is_empty()).collect();
    if let [one] = lines.as_slice() {
        eprintln!("vaultctl: the policy was not applied: {one}");
    } else {
        eprintln!("{}", lines.join("\n"));
        eprintln!(
            "vaultctl: the policy was not applied: fix the {} problems above",
            lines.len()
        );
    }
}

async fn status(json: bool) -> anyhow::Result<i32> {
    let path = socket()?;
    let mut c = match client::connect(&path, Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"state": "unavailable", "error": e.to_string()})
                );
            }
            return Err(e.into());
        }
    };
    let s = c.status(StatusRequest {}).await.map_err(rpc)?.into_inner();
    if json {
        // The counts are known only while unlocked (the contents are sealed
        // otherwise): null, not 0, when locked.
        let known = |n: u32| (s.state == "unlocked").then_some(n);
        outln!(
            "{}",
            serde_json::json!({
                "state": s.state,
                "version": s.daemon_version,
                "pid": s.pid,
                "mlock": s.mlock_ok,
                "landlock": s.landlock,
                "seccomp": s.seccomp,
                "audit_error": (!s.audit_error.is_empty()).then_some(&s.audit_error),
                "warnings": s.warnings,
                "secrets": known(s.secrets),
                "services": known(s.services),
                "capabilities": known(s.capabilities),
                "agents": known(s.agents),
                "unlocked_for_secs": (s.state == "unlocked").then_some(s.unlocked_for_secs),
                "locks_in_secs": (s.locks_in_secs > 0).then_some(s.locks_in_secs),
                "vault": s.vault_path,
                "audit": s.audit_path,
                "socket": s.socket_path,
            })
        );
    } else {
        outln!("vaultd {} (pid {}): {}", s.daemon_version, s.pid, s.state);
        if s.state == "unlocked" {
            outln!(
                "  {} secret(s), {} service(s), {} capability(ies), {} agent(s); unlocked for {}",
                s.secrets,
                s.services,
                s.capabilities,
                s.agents,
                humantime::format_duration(Duration::from_secs(s.unlocked_for_secs))
            );
            if s.locks_in_secs > 0 {
                outln!(
                    "  locks by itself in {}",
                    humantime::format_duration(Duration::from_secs(s.locks_in_secs))
                );
            }
        }
        outln!("  vault:    {}", s.vault_path);
        outln!("  audit:    {}", s.audit_path);
        outln!("  socket:   {}", s.socket_path);
        outln!("  mlock:    {}", if s.mlock_ok { "ok" } else { "FAILED" });
        outln!("  landlock: {}", s.landlock);
        outln!("  seccomp:  {}", s.seccomp);
        for w in &s.warnings {
            outln!("  warning:  {w}");
        }
        if s.state == "uninitialized" {
            eprintln!("no vault yet: create one with `vaultctl init`");
        }
    }
    Ok(0)
}

/// `unlock --for`'s value (see [`crate::config::parse_unlock_for`]).
fn parse_unlock_for(text: &str) -> Result<Duration, String> {
    crate::config::parse_unlock_for(text).map_err(|e| {
        format!(
            "{e} (or leave out --for: the vault then stays unlocked until `vaultctl lock`, \
             or for vaultd.toml's unlock_for if it sets one)"
        )
    })
}

/// `lock`: ask the daemon; if it does not answer within 2 s, end it.
async fn lock() -> anyhow::Result<i32> {
    let path = socket()?;
    let attempt = async {
        let (mut c, other_version) = match client::connect(&path, Duration::from_secs(2)).await {
            Ok(c) => (c, None),
            // A daemon of another protocol version (an upgrade installed, the
            // daemon not restarted yet) must still lock: `Lock`'s messages
            // are the same in every version.
            Err(e @ ConnectError::VersionMismatch { .. }) => {
                (Client::new(client::channel(&path)), Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        let r = match c.lock(LockRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(e) => match other_version {
                Some(version) => bail!(
                    "{version}; `lock` was sent anyway and failed: {}",
                    e.message()
                ),
                None => return Err(rpc(e)),
            },
        };
        Ok::<_, anyhow::Error>((r.aborted_calls, other_version))
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok((aborted, other_version))) => {
            outln!("locked ({aborted} call(s) in flight aborted)");
            if let Some(e) = other_version {
                eprintln!("vaultctl: note: {e}");
            }
            Ok(0)
        }
        Ok(Err(e))
            if matches!(
                e.downcast_ref::<ConnectError>(),
                Some(ConnectError::NotRunning { .. } | ConnectError::Connect { .. })
            ) =>
        {
            lock_unreachable(&path, &e)
        }
        Ok(Err(e))
            if !matches!(
                e.downcast_ref::<ConnectError>(),
                Some(ConnectError::Timeout { .. })
            ) =>
        {
            Err(e)
        }
        _ => kill_unresponsive(&path).await,
    }
}

/// `lock` when the socket does not lead to a daemon: nothing there, a file
/// of another kind, or a connection queue filled while vaultd is stopped
/// (the agent, same uid, can do each). The daemon serving this vault is the
/// process holding its instance lock (`vault.bin.lock`) as the kernel lists
/// it; that one is ended. When no process holds it, only "no socket" is
/// reported as "not running"; anything else at the socket path is an
/// error. (vaultd itself also locks and exits within 250 ms when its
/// socket path stops leading to its socket.)
fn lock_unreachable(path: &Path, why: &anyhow::Error) -> anyhow::Result<i32> {
    let dirs = Dirs::from_env(None)?;
    let instance_lock = crate::dirs::instance_lock_path(&dirs.vault_file);
    let holder = match crate::sys::flock_holder(&instance_lock) {
        Ok(holder) => holder,
        // No vaultd ever ran on this vault (or the file was removed).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(anyhow!(
                "cannot reach vaultd ({why}), nor tell which process holds {} ({e}): end vaultd yourself (`systemctl --user stop vaultd`)",
                instance_lock.display()
            ));
        }
    };
    let Some(pid) = holder else {
        if matches!(
            why.downcast_ref::<ConnectError>(),
            Some(ConnectError::NotRunning { .. })
        ) {
            outln!("vaultd is not running: nothing holds the keys");
            return Ok(0);
        }
        // Something is at the socket path but no daemon answers there, and
        // no process holds the vault's lock: vaultd may have been hidden
        // (it then locks itself within a second), or may never have run.
        bail!(
            "cannot reach vaultd ({why}), and no process holds {}: if vaultd runs, it locks itself within a second of its socket path changing; make sure it is stopped (`systemctl --user stop vaultd`, or end the vaultd process)",
            instance_lock.display()
        );
    };
    end_daemon(pid, &format!("holds {}", instance_lock.display()), false)?;
    outln!(
        "vaultd (pid {pid}) could not be reached at {} and was killed: no key stays in memory",
        path.display()
    );
    Ok(0)
}

/// SIGKILLs `pid`, a process of this user, and waits (up to 1 s) until it
/// is gone; `what` says how it was found. Found other than by the socket's
/// kernel credentials, it must also be named vaultd.
fn end_daemon(pid: u32, what: &str, by_socket: bool) -> anyhow::Result<()> {
    let (name, uid) = crate::sys::process_name_and_uid(pid)
        .with_context(|| format!("cannot inspect process {pid}, which {what}"))?;
    if uid != crate::sys::getuid() {
        bail!(
            "the process that {what} (pid {pid}) belongs to uid {uid}, not to you: not touching it"
        );
    }
    if !by_socket && name != "vaultd" {
        bail!(
            "the process that {what} (pid {pid}) is {name:?}, not vaultd: not touching it; end it yourself if it is vaultd under another name"
        );
    }
    crate::sys::kill_process(pid)
        .with_context(|| format!("vaultd (pid {pid}) did not answer and could not be killed"))?;
    for _ in 0..100 {
        // Gone, or a zombie (its memory is already freed; only its parent can reap it).
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => break,
            Ok(stat)
                if stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z')) =>
            {
                break;
            }
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Ends the process behind the socket (found through its kernel credentials).
async fn kill_unresponsive(path: &Path) -> anyhow::Result<i32> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| {
            format!(
                "vaultd did not answer and its socket {} cannot be opened",
                path.display()
            )
        })?;
    let cred = stream
        .peer_cred()
        .context("cannot read the daemon's credentials from its socket")?;
    let pid = cred
        .pid()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| anyhow!("the socket did not name the daemon's pid"))?;
    end_daemon(pid, &format!("listens on {}", path.display()), true)?;
    outln!("vaultd (pid {pid}) did not answer within 2 s and was killed: no key stays in memory");
    Ok(0)
}

/// What the daemon says about an agent, for `mcp-config`'s advice.
enum AgentCheck {
    /// No agent of that name.
    Missing,
    /// Declared (by a policy) but no token issued yet.
    NoToken,
    /// It has a token.
    HasToken,
    /// Could not ask: why.
    Unknown(String),
}

async fn check_agent(name: &str) -> AgentCheck {
    let path = match socket() {
        Ok(p) => p,
        Err(e) => return AgentCheck::Unknown(e.to_string()),
    };
    let mut c = match client::connect(&path, Duration::from_secs(2)).await {
        Ok(c) => c,
        Err(ConnectError::NotRunning { .. }) => {
            return AgentCheck::Unknown("vaultd is not running".into());
        }
        Err(e) => return AgentCheck::Unknown(e.to_string()),
    };
    let r = tokio::time::timeout(Duration::from_secs(2), c.list_agents(ListAgentsRequest {})).await;
    match r {
        Ok(Ok(r)) => match r.into_inner().agents.into_iter().find(|a| a.name == name) {
            None => AgentCheck::Missing,
            Some(a) if a.has_token => AgentCheck::HasToken,
            Some(_) => AgentCheck::NoToken,
        },
        Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => {
            AgentCheck::Unknown("the vault is locked".into())
        }
        Ok(Err(s)) => AgentCheck::Unknown(rpc(s).to_string()),
        Err(_) => AgentCheck::Unknown("vaultd did not answer within 2 s".into()),
    }
}

/// `path` as the MCP client must be given it: absolute (the client starts
/// vault-mcp from a directory of its own), with a leading `~/` (quoted past
/// the shell) expanded; a directory is refused.
fn client_path(path: &Path) -> anyhow::Result<PathBuf> {
    if path
        .to_str()
        .is_some_and(|p| p.starts_with('~') && !p.starts_with("~/") && p != "~")
    {
        bail!(
            "--token-file {}: only ~/ is expanded here; give the full path",
            path.display()
        );
    }
    let path = match path.strip_prefix("~") {
        Ok(rest) => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(rest))
            .ok_or_else(|| {
                anyhow!(
                    "cannot expand ~ in {}: HOME is not set; give the full path",
                    path.display()
                )
            })?,
        Err(_) => path.to_path_buf(),
    };
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .context("cannot read the current directory to make --token-file absolute: give the full path")?
            .join(path)
    };
    if path.is_dir() {
        bail!(
            "--token-file {} is a directory: name the file that holds (or will hold) the agent's token, e.g. {}",
            path.display(),
            path.join("NAME.token").display()
        );
    }
    Ok(path)
}

async fn mcp_config(args: &McpConfigArgs) -> anyhow::Result<String> {
    // The name goes into a file name and the client's entry: refuse what
    // `agent add` would refuse, before anything is written.
    crate::policy::check_name("agent", &args.agent).map_err(|e| {
        anyhow!("{e}: name an agent of `vaultctl agent list`, or one to create with `vaultctl agent add NAME`")
    })?;
    // The snippet names the socket: locate it first, for the clearer error.
    socket()?;
    let dirs = Dirs::from_env(None)?;
    let token_file = match &args.token_file {
        Some(f) => client_path(f)?,
        None => dirs
            .config_file
            .parent()
            .map(|p| p.join("agents").join(format!("{}.token", args.agent)))
            .ok_or_else(|| anyhow!("cannot place the token file: pass --token-file FILE"))?,
    };
    // The client starts vault-mcp with its own PATH, often a minimal one:
    // name it by its absolute path, the one beside vaultctl first.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("vault-mcp")));
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("vault-mcp"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let exe = beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_absolute() && p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| {
            eprintln!(
                "warning: vault-mcp is neither beside vaultctl nor on PATH, so the snippet names it bare and the client must find it on its own PATH: install it (scripts/install.sh) and run this again"
            );
            "vault-mcp".to_string()
        });
    let mut env = serde_json::Map::new();
    env.insert(
        "VAULTD_SOCKET".into(),
        serde_json::Value::String(dirs.socket.display().to_string()),
    );
    let name = format!("vault-{}", args.agent);
    let tf = token_file.display().to_string();
    let server = serde_json::json!({"command": exe, "args": ["--token-file", tf], "env": env});
    let out = match args.client {
        McpClient::ClaudeDesktop | McpClient::Cursor => {
            serde_json::to_string_pretty(
                &serde_json::json!({"mcpServers": {name.clone(): server}}),
            )? + "\n"
        }
        McpClient::ClaudeCode => {
            let mut s = serde_json::json!({"type": "stdio"});
            if let (Some(o), Some(src)) = (s.as_object_mut(), server.as_object()) {
                o.extend(src.clone());
            }
            serde_json::to_string_pretty(&serde_json::json!({"mcpServers": {name.clone(): s}}))?
                + "\n"
        }
        McpClient::Vscode => {
            let mut s = serde_json::json!({"type": "stdio"});
            if let (Some(o), Some(src)) = (s.as_object_mut(), server.as_object()) {
                o.extend(src.clone());
            }
            serde_json::to_string_pretty(&serde_json::json!({"servers": {name.clone(): s}}))? + "\n"
        }
        McpClient::Codex => {
            let mut t = toml::Table::new();
            t.insert("command".into(), toml::Value::String(exe));
            t.insert(
                "args".into(),
                toml::Value::Array(vec!["--token-file".into(), tf.clone().into()]),
            );
            let mut e = toml::Table::new();
            e.insert(
                "VAULTD_SOCKET".into(),
                toml::Value::String(dirs.socket.display().to_string()),
            );
            t.insert("env".into(), toml::Value::Table(e));
            // Codex takes only A-Z a-z 0-9 _ - in a server's name.
            let codex_name = name.replace('.', "_");
            let mut servers = toml::Table::new();
            servers.insert(codex_name, toml::Value::Table(t));
            let mut root = toml::Table::new();
            root.insert("mcp_servers".into(), toml::Value::Table(servers));
            toml::to_string(&root)?
        }
    };
    let where_ = match args.client {
        McpClient::ClaudeDesktop => "~/.config/Claude/claude_desktop_config.json".to_owned(),
        McpClient::ClaudeCode => format!(
            ".mcp.json in your project (or pass the object under \"{name}\" to `claude mcp add-json {name}`)"
        ),
        McpClient::Cursor => "~/.cursor/mcp.json".to_owned(),
        McpClient::Vscode => ".vscode/mcp.json".to_owned(),
        McpClient::Codex => "~/.codex/config.toml".to_owned(),
    };
    let (name, tf) = (&args.agent, token_file.display());
    let missing_file = !token_file.exists();
    match check_agent(name).await {
        AgentCheck::Missing => eprintln!(
            "warning: the vault has no agent named {name:?}: create it and its token with `vaultctl agent add {name} --token-file {tf}`, and grant it capabilities in the policy (`agents = [\"{name}\"]`)"
        ),
        AgentCheck::HasToken if missing_file => eprintln!(
            "note: {tf} does not exist yet, and agent {name} already has a token (printed once, by `vaultctl agent add`): save that token there (mode 0600), or issue a new one with `vaultctl agent rm {name} && vaultctl agent add {name} --token-file {tf}`, which revokes the old token (every client using it stops working) and the agent's grants (then `vaultctl policy apply` your policy again)"
        ),
        AgentCheck::NoToken | AgentCheck::HasToken => {
            if missing_file {
                eprintln!(
                    "note: {tf} does not exist yet: create the agent's token there with `vaultctl agent add {name} --token-file {tf}`"
                );
            }
        }
        AgentCheck::Unknown(why) => {
            eprintln!(
                "note: could not check that agent {name} exists ({why}); `vaultctl agent list` shows the agents once the vault is unlocked"
            );
            if missing_file {
                eprintln!(
                    "note: {tf} does not exist yet: create the agent's token there with `vaultctl agent add {name} --token-file {tf}`"
                );
            }
        }
    }
    eprintln!("merge this into {where_}:");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn stored(json: &str) -> AuditLine {
        AuditLine {
            json: json.to_owned(),
            not_utf8: false,
        }
    }

    #[test]
    fn audit_tail_json_prints_an_object_for_every_line() {
        let good = format!(
            r#"{{"seq":1,"time":"2026-11-28T00:00:00.000Z","kind":"admin","mac":"{}"}}"#,
            "ab".repeat(32)
        );
        assert_eq!(json_audit(&stored(&good)), good);
        for damaged in [
            "not json",
            "[1,2]",
            "\"text\"",
            r#"{"seq":1"#,
            r#"{"seq":1,"kind":"admin"}"#,
            "\u{1b}[3A\u{1b}[J",
        ] {
            let v: serde_json::Value = serde_json::from_str(&json_audit(&stored(damaged))).unwrap();
            assert_eq!(v, serde_json::json!({ "unreadable_record": damaged }));
        }
        // A line that was not UTF-8 is no record, even when its text
        // (invalid bytes replaced) would parse as one.
        let lossy = good.replace("admin", "adm\u{fffd}n");
        let line = AuditLine {
            json: lossy.clone(),
            not_utf8: true,
        };
        let v: serde_json::Value = serde_json::from_str(&json_audit(&line)).unwrap();
        assert_eq!(v, serde_json::json!({ "unreadable_record": lossy }));
    }

    #[test]
    fn audit_tail_escapes_every_field_and_every_unreadable_line() {
        let hidden = "\u{1b}[3A\u{1b}[J\r\n\u{9b}2J\u{202e}\u{2066}\u{200b}\u{61c}\u{7f}";
        let rec = crate::audit::Record {
            seq: 7,
            time: format!("2026-11-28T00:00:00.000Z{hidden}"),
            kind: format!("admin{hidden}"),
            agent: Some(format!("a{hidden}")),
            capability: Some(format!("c{hidden}")),
            method: Some(format!("GET{hidden}")),
            path: Some(format!("/p{hidden}")),
            decision: Some(format!("allowed{hidden}")),
            rule: Some(format!("allow{hidden}")),
            code: Some(format!("x{hidden}")),
            reason: Some(format!("why{hidden}")),
            error: Some(format!("e{hidden}")),
            event: Some(format!("unlock{hidden}")),
            ..Default::default()
        };
        let mut json = serde_json::to_string(&rec).unwrap();
        json.pop();
        json.push_str(&format!(r#","mac":"{}"}}"#, "ab".repeat(32)));
        assert!(crate::audit::parse_line(&json).is_some(), "{json}");
        let raw_lines = [
            format!("{hidden} not a record"),
            // Valid JSON may hold C1 and bidi characters raw.
            "{\"seq\":1,\"kind\":\"\u{9b}2J\u{202e}\"}".to_owned(),
        ];
        let mut lines = vec![stored(&json)];
        lines.extend(raw_lines.iter().map(|l| stored(l)));
        lines.push(AuditLine {
            json: format!("\u{fffd}{hidden}"),
            not_utf8: true,
        });
        for line in &lines {
            let shown = human_audit(line);
            assert!(
                !shown.contains(crate::audit::is_hidden),
                "hidden characters reach the terminal: {shown:?}"
            );
            assert_eq!(shown.lines().count(), 1, "{shown:?}");
        }
        let shown = human_audit(&lines[0]);
        for field in [
            "#7", "agent=a", "cap=c", "GET", "/p", "allowed", "unlock", "why",
        ] {
            assert!(shown.contains(field), "{field} missing: {shown}");
        }
        assert!(human_audit(&lines[1]).starts_with("(unreadable record) "));
        assert!(human_audit(&lines[3]).starts_with("(unreadable record, not UTF-8) "));
    }

    #[test]
    fn no_flag_takes_a_secret_on_argv() {
        // Every flag that names a secret takes a file descriptor or a file, never the value.
        let cmd = Cli::command();
        fn walk(c: &clap::Command, out: &mut Vec<String>) {
            for a in c.get_arguments() {
                if let Some(l) = a.get_long() {
                    out.push(l.to_string());
                }
            }
            for s in c.get_subcommands() {
                walk(s, out);
            }
        }
        let mut flags = Vec::new();
        walk(&cmd, &mut flags);
        for f in flags {
            for word in ["passphrase", "secret", "token", "key", "password"] {
                if f.contains(word) {
                    assert!(
                        f.ends_with("-fd") || f.ends_with("-file") || f.starts_with("kdf-"),
                        "flag --{f} could carry a secret"
                    );
                }
            }
        }
    }
}
