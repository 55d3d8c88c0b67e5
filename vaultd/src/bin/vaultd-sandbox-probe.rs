//! vaultd-sandbox-probe: a deliberately malicious program that runs under
//! exactly vaultd's sandbox, for `vaultd/tests/sandbox.rs` (in the spirit of
//! firecracker's `examples/seccomp/malicious.rs`). Not installed.
//!
//! It starts the way vaultd does (inherited fds closed, not dumpable, no
//! core files, the same `Dirs` and `Config` from the same environment), calls
//! the same [`vaultd::sandbox::apply`], then makes ONE attempt and reports it:
//!
//! ```text
//! vaultd-sandbox-probe [--no-sandbox] ATTEMPT [ARG]
//!   read PATH        open and read a file
//!   list PATH        list a directory
//!   write PATH       create (or truncate) and write a file
//!   connect PORT     TCP connect to 127.0.0.1:PORT
//!   bind             TCP bind to 127.0.0.1, any port
//!   unix PATH        connect to a unix stream socket (ssh-agent, docker.sock...)
//!   spawn PATH       fork+exec PATH as a child (posix_spawn) and wait for it
//!   exec PATH        execve PATH in this process (no fork)
//!   ptrace           ptrace(PTRACE_TRACEME)
//! ```
//!
//! Prints `allowed` (exit 0) or `denied: ERROR` (exit 1); usage errors exit
//! 2. Under the sandbox, `exec` and `ptrace` never return: the seccomp filter
//! kills the process, which dies of SIGSYS. One attempt per process, so a
//! kill ends only that attempt.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use vaultd::config::Config;
use vaultd::dirs::Dirs;

fn usage() -> ! {
    eprintln!(
        "usage: vaultd-sandbox-probe [--no-sandbox] read|list|write|unix|spawn|exec PATH | connect PORT | bind | ptrace"
    );
    std::process::exit(2)
}

fn main() {
    let early = vaultd::sys::close_inherited_fds().and_then(|_| vaultd::sys::harden_process());
    if let Err(e) = early {
        eprintln!("vaultd-sandbox-probe: cannot harden the process: {e}");
        std::process::exit(2);
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let sandbox = if args.first().map(String::as_str) == Some("--no-sandbox") {
        args.remove(0);
        false
    } else {
        true
    };
    let (attempt, arg) = match args.as_slice() {
        [a] => (a.clone(), String::new()),
        [a, b] => (a.clone(), b.clone()),
        _ => usage(),
    };
    if sandbox {
        // Exactly what vaultd does: same environment, same Dirs and Config, same apply().
        let setup = || -> anyhow::Result<vaultd::sandbox::SandboxStatus> {
            let dirs = Dirs::from_env(None)?;
            let config = Config::load(&dirs.config_file)?;
            dirs.create_all()?;
            Ok(vaultd::sandbox::apply(&dirs, &config)?)
        };
        match setup() {
            Ok(status) => eprintln!("landlock: {}\nseccomp: {}", status.landlock, status.seccomp),
            Err(e) => {
                eprintln!("vaultd-sandbox-probe: {e:#}");
                std::process::exit(2);
            }
        }
    }
    let result: std::io::Result<()> = match attempt.as_str() {
        "read" => std::fs::File::open(&arg).and_then(|mut f| {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map(drop)
        }),
        "list" => std::fs::read_dir(&arg).and_then(|mut d| d.try_for_each(|e| e.map(drop))),
        "write" => std::fs::File::create(&arg)
            .and_then(|mut f| f.write_all(b"written by vaultd-sandbox-probe\n")),
        "connect" => {
            let port: u16 = arg.parse().unwrap_or_else(|_| usage());
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_secs(5),
            )
            .map(drop)
        }
        "bind" => TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map(drop),
        "unix" => std::os::unix::net::UnixStream::connect(&arg).map(drop),
        "spawn" => std::process::Command::new(&arg).status().and_then(|st| {
            if st.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("{arg} failed: {st}")))
            }
        }),
        // Replaces this process: on success we are /bin/true (or whatever PATH is).
        "exec" => Err(std::process::Command::new(&arg).exec()),
        "ptrace" => vaultd::sys::ptrace_traceme(),
        _ => usage(),
    };
    match result {
        Ok(()) => {
            println!("allowed");
        }
        Err(e) => {
            println!("denied: {e}");
            std::process::exit(1);
        }
    }
}
