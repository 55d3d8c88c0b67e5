//! The Landlock policy: which paths vaultd may read or write, which TCP
//! ports it may connect to, and the scoping of abstract unix sockets and
//! signals. Everything not listed is denied, root included (root bypasses
//! file permissions, not Landlock).
//!
//! Built from [`Dirs`] and [`Config`] and from what exists on this machine
//! (resolver files, NSS modules), then enforced with
//! `CompatLevel::HardRequirement` on the pinned ABI, so "enforced" means every
//! rule below is enforced, never a silent subset.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, PathFdError, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
    make_bitflags,
};

use super::Error;
use crate::config::Config;
use crate::dirs::Dirs;

/// The Landlock ABI vaultd's rules are written against: filesystem rights
/// up to ABI 5 (truncate, device ioctls), TCP ports (ABI 4), scoping of
/// abstract unix sockets and signals (ABI 6). ABI 7 adds only audit-log
/// flags (their defaults suit us), ABI 8 applies to all threads (we apply
/// before any thread exists), ABI 9 path-based unix connects (seccomp refuses
/// unix stream sockets instead) and ABI 10 UDP ports.
pub const PINNED_ABI: ABI = ABI::V6;

/// The pinned ABI as a number.
pub const PINNED_ABI_NUMBER: u32 = 6;

/// Resolver configuration glibc's getaddrinfo reads (only those that exist
/// get a rule). glibc re-reads them when they change, so access stays open.
pub const RESOLVER_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// Where glibc's NSS modules live on the distributions we know.
fn library_dirs() -> Vec<PathBuf> {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    [
        format!("/lib/{triplet}"),
        format!("/usr/lib/{triplet}"),
        "/lib64".to_string(),
        "/usr/lib64".to_string(),
        "/lib".to_string(),
        "/usr/lib".to_string(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// Rights in vaultd's own directories: read, create, write, truncate,
/// rename within, remove. Not: execute (that is execve: Landlock does not
/// govern mapping a file read+exec, see docs/sandbox.md), make directories, devices, fifos,
/// sockets or symlinks, rename across directories.
fn rw_dir_access() -> BitFlags<AccessFs> {
    make_bitflags!(AccessFs::{ReadFile | ReadDir | WriteFile | Truncate | MakeReg | RemoveFile})
}

/// The policy, with every path already opened (O_PATH), so what is enforced
/// is what was inspected.
pub struct Policy {
    /// Files vaultd may read (and nothing else).
    pub read_files: Vec<(PathBuf, PathFd)>,
    /// Directories under which vaultd may read files (resolver files that are
    /// symlinks out of /etc, e.g. /run/systemd/resolve).
    pub read_dirs: Vec<(PathBuf, PathFd)>,
    /// Directories vaultd may read and write in (vault, audit log).
    pub rw_dirs: Vec<(PathBuf, PathFd)>,
    /// The socket's directory, when it is not one of `rw_dirs`: remove only.
    pub socket_dirs: Vec<(PathBuf, PathFd)>,
    /// TCP ports vaultd may connect to.
    pub tcp_ports: Vec<u16>,
}

/// Opens `path` for a rule; None when it does not exist.
fn open_optional(path: &Path) -> Result<Option<PathFd>, Error> {
    match PathFd::new(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(PathFdError::OpenCall { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::LandlockPath {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The NSS services named on the `hosts:` line of nsswitch.conf.
fn hosts_services(nsswitch: &str) -> Vec<String> {
    nsswitch
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| l.trim_start().strip_prefix("hosts:"))
        .map(|rest| {
            let mut out = Vec::new();
            let mut in_action = false;
            for word in rest.split_whitespace() {
                if word.starts_with('[') {
                    in_action = true;
                }
                if !in_action
                    && word
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    out.push(word.to_string());
                }
                if word.ends_with(']') {
                    in_action = false;
                }
            }
            out
        })
        .unwrap_or_default()
}

impl Policy {
    /// The policy for this daemon on this machine.
    pub fn new(dirs: &Dirs, config: &Config) -> Result<Policy, Error> {
        let mut read_files = Vec::new();
        let mut read_dirs = Vec::new();
        let push_file = |list: &mut Vec<(PathBuf, PathFd)>, p: PathBuf| -> Result<(), Error> {
            if list.iter().any(|(q, _)| *q == p) {
                return Ok(());
            }
            if let Some(fd) = open_optional(&p)? {
                list.push((p, fd));
            }
            Ok(())
        };
        // The config file (read at start-up; kept readable so a restart-free
        // re-read can never fail half way).
        push_file(&mut read_files, dirs.config_file.clone())?;
        // Resolver files, and the directory a symlinked one really lives in
        // when that is not /etc (resolv.conf -> /run/systemd/resolve/stub-resolv.conf
        // is rewritten by rename: a rule on the file alone would go stale).
        for f in RESOLVER_FILES {
            let p = Path::new(f);
            push_file(&mut read_files, p.to_path_buf())?;
            if p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
                && let Ok(real) = std::fs::canonicalize(p)
                && let Some(parent) = real.parent()
                && parent != Path::new("/")
                && parent != Path::new("/etc")
            {
                push_file(&mut read_dirs, parent.to_path_buf())?;
            }
        }
        // NSS modules getaddrinfo may load (dlopen) on first use: those named on
        // the hosts: line (files and dns are inside libc since glibc 2.34; the
        // others, e.g. myhostname, resolve, mdns4_minimal, are loaded the first
        // time a lookup reaches them), plus the loader's cache to find them.
        let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
        let mut modules = 0;
        for svc in hosts_services(&nsswitch) {
            for dir in library_dirs() {
                // /lib is often a symlink to /usr/lib: one rule per real file.
                if let Ok(real) = std::fs::canonicalize(dir.join(format!("libnss_{svc}.so.2"))) {
                    let before = read_files.len();
                    push_file(&mut read_files, real)?;
                    modules += read_files.len() - before;
                }
            }
        }
        if modules > 0 {
            push_file(&mut read_files, PathBuf::from("/etc/ld.so.cache"))?;
        }
        // The vault and audit directories: read-write. The socket's directory
        // (when it is another one): only removing the socket on shutdown;
        // the socket is bound and the lock file open before the sandbox, and
        // VAULTD_SOCKET may name a shared directory such as /tmp.
        let open_dir = |d: &Path| {
            PathFd::new(d).map_err(|e| Error::LandlockPath {
                path: d.to_path_buf(),
                source: e,
            })
        };
        let mut rw_dirs: Vec<(PathBuf, PathFd)> = Vec::new();
        for file in [&dirs.vault_file, &dirs.audit_file] {
            if let Some(d) = file.parent()
                && !rw_dirs.iter().any(|(q, _)| q == d)
            {
                rw_dirs.push((d.to_path_buf(), open_dir(d)?));
            }
        }
        let mut socket_dirs = Vec::new();
        if let Some(d) = dirs.socket.parent()
            && !rw_dirs.iter().any(|(q, _)| q == d)
        {
            socket_dirs.push((d.to_path_buf(), open_dir(d)?));
        }
        let mut tcp_ports = config.upstream_ports.clone();
        tcp_ports.sort_unstable();
        tcp_ports.dedup();
        Ok(Policy {
            read_files,
            read_dirs,
            rw_dirs,
            socket_dirs,
            tcp_ports,
        })
    }

    /// One line for logs and status.
    pub fn summary(&self) -> String {
        let ports = if self.tcp_ports.is_empty() {
            "none".to_string()
        } else {
            self.tcp_ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let socket = if self.socket_dirs.is_empty() {
            String::new()
        } else {
            ", remove-only the socket's dir".to_string()
        };
        format!(
            "read-only {} file(s) and {} dir(s), read-write {} dir(s){socket}, TCP connect to port(s) {ports} only, no execve of any file, no TCP bind, abstract unix sockets and signals scoped",
            self.read_files.len(),
            self.read_dirs.len(),
            self.rw_dirs.len()
        )
    }

    /// Every rule, one per line (for `vaultd check` and logs at debug level).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (p, _) in &self.read_files {
            out.push(format!("read      {}", p.display()));
        }
        for (p, _) in &self.read_dirs {
            out.push(format!("read      {}/**", p.display()));
        }
        for (p, _) in &self.rw_dirs {
            out.push(format!(
                "rw        {}/** (no execve of files there)",
                p.display()
            ));
        }
        for (p, _) in &self.socket_dirs {
            out.push(format!(
                "remove    {}/* (the socket, on shutdown)",
                p.display()
            ));
        }
        for port in &self.tcp_ports {
            out.push(format!("connect   tcp/{port}"));
        }
        out
    }

    /// Restricts the calling thread, and so every thread it creates later.
    pub fn enforce(self) -> Result<(), Error> {
        let ll = |e: landlock::RulesetError| Error::Landlock(e.to_string());
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(PINNED_ABI))
            .map_err(ll)?
            .handle_access(AccessNet::from_all(PINNED_ABI))
            .map_err(ll)?
            .scope(Scope::from_all(PINNED_ABI))
            .map_err(ll)?
            .create()
            .map_err(ll)?;
        for (_, fd) in self.read_files {
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, AccessFs::ReadFile))
                .map_err(ll)?;
        }
        for (_, fd) in self.read_dirs {
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, AccessFs::ReadFile))
                .map_err(ll)?;
        }
        for (_, fd) in self.rw_dirs {
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, rw_dir_access()))
                .map_err(ll)?;
        }
        for (_, fd) in self.socket_dirs {
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, AccessFs::RemoveFile))
                .map_err(ll)?;
        }
        for port in self.tcp_ports {
            ruleset = ruleset
                .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
                .map_err(ll)?;
        }
        let status = ruleset.restrict_self().map_err(ll)?;
        if status.ruleset != RulesetStatus::FullyEnforced || !status.no_new_privs {
            return Err(Error::Landlock(format!(
                "the kernel enforced only part of the ruleset ({status:?})"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_line() {
        let conf = "passwd: files\n# hosts: nope\nhosts:          files mdns4_minimal [NOTFOUND=return] dns myhostname # c\n";
        assert_eq!(
            hosts_services(conf),
            ["files", "mdns4_minimal", "dns", "myhostname"]
        );
        let conf = "hosts: files resolve [!UNAVAIL=return] dns\n";
        assert_eq!(hosts_services(conf), ["files", "resolve", "dns"]);
        assert!(hosts_services("passwd: files\n").is_empty());
    }

    /// The wording claims what Landlock enforces: its execute right governs
    /// execve, not mmap, so "no execute" on a writable directory overclaimed.
    #[test]
    fn descriptions_say_no_execve_not_no_execute() {
        let dir = || PathFd::new("/").expect("open /");
        let policy = Policy {
            read_files: vec![],
            read_dirs: vec![],
            rw_dirs: vec![(PathBuf::from("/v"), dir())],
            socket_dirs: vec![],
            tcp_ports: vec![443],
        };
        let summary = policy.summary();
        assert!(summary.contains("no execve of any file"), "{summary}");
        let lines = policy.describe();
        assert!(
            lines.contains(&"rw        /v/** (no execve of files there)".to_owned()),
            "{lines:?}"
        );
        for text in lines.iter().chain([&summary]) {
            assert!(!text.contains("no execute"), "{text}");
        }
    }
}
