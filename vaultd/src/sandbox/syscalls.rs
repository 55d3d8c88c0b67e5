//! The seccomp policy of vaultd, as reviewed data: one entry per system call,
//! each naming the code path that needs it. [`super::seccomp_filter`] turns
//! these tables into BPF; `docs/sandbox.md` explains how the list was found
//! (`strace -f` over the whole daemon life: init, start, unlock, secret set,
//! policy apply, execute over HTTPS, DNS over UDP, status, lock, SIGTERM) and
//! how to add an entry.
//!
//! Three tables, one filter each, installed for every thread (TSYNC):
//!
//! - [`KILLED`]: the process dies (`SECCOMP_RET_KILL_PROCESS`, seen as
//!   SIGSYS). Nothing in vaultd makes these calls; each one is how an
//!   attacker who took over the process would escape or spy: run a program,
//!   trace or read another process, mount, load kernel code, make namespaces.
//! - [`ENOSYS`]: answered "not implemented" so that the C library falls back
//!   to an older call this filter can inspect (`clone3` -> `clone`).
//! - [`ALLOWED`]: everything vaultd does. Any call in none of the tables fails
//!   with `EPERM`: an unexpected call from a library (a new glibc, a new
//!   tokio) then fails softly, as a refused operation the code already
//!   handles, instead of killing the vault and every call in flight. The
//!   kill list above is for calls whose mere attempt means compromise.
//!
//! Argument checks (`Arg`) compare the low 32 bits (`int` arguments, and
//! `clone`'s flags, which the kernel truncates to 32 bits) or all 64.
//! Within one entry, conditions in an inner slice must all hold; any inner
//! slice may match.

/// One test on a system call argument: `(args[index] & mask) == value`.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    /// Argument position, 0 to 5.
    pub index: u8,
    /// Compare only the low 32 bits (the argument is an `int`).
    pub dword: bool,
    /// Bits compared.
    pub mask: u64,
    /// Expected value of the masked bits.
    pub value: u64,
}

/// `args[index] == value` on an `int` argument.
const fn eq(index: u8, value: u64) -> Arg {
    Arg {
        index,
        dword: true,
        mask: 0xffff_ffff,
        value,
    }
}

/// `args[index] & mask == value` on an `int` (or 32-bit) argument.
const fn masked(index: u8, mask: u64, value: u64) -> Arg {
    Arg {
        index,
        dword: true,
        mask,
        value,
    }
}

/// When an entry applies.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// Whatever the arguments.
    Always,
    /// When all the conditions of any one inner slice hold.
    AnyOf(&'static [&'static [Arg]]),
}

/// One system call in a table.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its number on this architecture.
    pub nr: i64,
    /// Its libc constant (`SYS_openat`).
    pub name: &'static str,
    /// When the entry applies.
    pub when: When,
    /// The code path that needs it (or, in [`KILLED`], why it is never allowed).
    pub why: &'static str,
}

impl Entry {
    /// The system call's name, as strace prints it.
    pub fn syscall(&self) -> &'static str {
        self.name.strip_prefix("SYS_").unwrap_or(self.name)
    }
}

macro_rules! sys {
    ($nr:ident, $why:literal) => {
        Entry {
            nr: libc::$nr,
            name: stringify!($nr),
            when: When::Always,
            why: $why,
        }
    };
    ($nr:ident if $any:expr, $why:literal) => {
        Entry {
            nr: libc::$nr,
            name: stringify!($nr),
            when: When::AnyOf($any),
            why: $why,
        }
    };
}

// ---- argument patterns -------------------------------------------------------

/// Flags every thread-creating clone has (glibc's pthread_create).
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD) as u64;

/// `clone` only makes threads: no fork, no vfork (posix_spawn), and the
/// namespace flags are killed by [`KILLED`] whatever else is set.
const CLONE_THREAD_ONLY: &[&[Arg]] = &[&[masked(0, THREAD_FLAGS, THREAD_FLAGS)]];

/// `clone` with any namespace flag (`CLONE_NEWTIME` is not a `clone` flag:
/// that bit is part of the exit signal there; `unshare`/`clone3` are killed
/// or refused anyway).
const CLONE_NEW_ANY: &[&[Arg]] = &[
    &[masked(
        0,
        libc::CLONE_NEWNS as u64,
        libc::CLONE_NEWNS as u64,
    )],
    &[masked(
        0,
        libc::CLONE_NEWCGROUP as u64,
        libc::CLONE_NEWCGROUP as u64,
    )],
    &[masked(
        0,
        libc::CLONE_NEWUTS as u64,
        libc::CLONE_NEWUTS as u64,
    )],
    &[masked(
        0,
        libc::CLONE_NEWIPC as u64,
        libc::CLONE_NEWIPC as u64,
    )],
    &[masked(
        0,
        libc::CLONE_NEWUSER as u64,
        libc::CLONE_NEWUSER as u64,
    )],
    &[masked(
        0,
        libc::CLONE_NEWPID as u64,
        libc::CLONE_NEWPID as u64,
    )],
    &[masked(
        0,
        libc::CLONE_NEWNET as u64,
        libc::CLONE_NEWNET as u64,
    )],
];

const WX: u64 = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;

/// W^X for anonymous memory and each single mapping: never one both
/// writable and executable (nothing in vaultd generates code; glibc maps NSS
/// modules read+exec, never write+exec). A file vaultd may write can still be
/// mapped read+exec through a second mapping (docs/sandbox.md).
const MMAP_NOT_WX: &[&[Arg]] = &[
    &[masked(2, WX, 0)],
    &[masked(2, WX, libc::PROT_WRITE as u64)],
    &[masked(2, WX, libc::PROT_EXEC as u64)],
];

/// mprotect never adds execute permission (guard pages, RELRO and thread
/// stacks only drop or add read/write).
const MPROTECT_NO_EXEC: &[&[Arg]] = &[&[masked(2, libc::PROT_EXEC as u64, 0)]];

/// `madvise` advice vaultd uses: glibc returning thread stacks and arena
/// memory (DONTNEED), memsec keeping secret pages out of core dumps
/// (DONTDUMP, and DODUMP when it frees them). Not, for instance,
/// MADV_HWPOISON, which root could use to take pages offline.
const MADVISE_ADVICE: &[&[Arg]] = &[
    &[eq(2, libc::MADV_DONTNEED as u64)],
    &[eq(2, libc::MADV_DONTDUMP as u64)],
    &[eq(2, libc::MADV_DODUMP as u64)],
];

const SOCK_TYPE_MASK: u64 = 0xf; // the type without SOCK_NONBLOCK / SOCK_CLOEXEC

/// Sockets vaultd opens after start-up: TCP for upstream calls (landlock
/// then limits the ports), UDP for the resolver's DNS queries and glibc's
/// source-address selection, and a unix *datagram* socket for sd_notify.
/// Not: raw or packet sockets, netlink, unix *stream* sockets (which would
/// reach ssh-agent, D-Bus or docker.sock: landlock before ABI 9 cannot stop a
/// connect by path; glibc's nscd probe gets EPERM and goes on without nscd),
/// or any other family.
const SOCKET_KINDS: &[&[Arg]] = &[
    &[
        eq(0, libc::AF_INET as u64),
        masked(1, SOCK_TYPE_MASK, libc::SOCK_STREAM as u64),
    ],
    &[
        eq(0, libc::AF_INET as u64),
        masked(1, SOCK_TYPE_MASK, libc::SOCK_DGRAM as u64),
    ],
    &[
        eq(0, libc::AF_INET6 as u64),
        masked(1, SOCK_TYPE_MASK, libc::SOCK_STREAM as u64),
    ],
    &[
        eq(0, libc::AF_INET6 as u64),
        masked(1, SOCK_TYPE_MASK, libc::SOCK_DGRAM as u64),
    ],
    &[
        eq(0, libc::AF_UNIX as u64),
        masked(1, SOCK_TYPE_MASK, libc::SOCK_DGRAM as u64),
    ],
];

/// Socket options vaultd sets: hyper-util's connector (TCP_NODELAY,
/// keepalive, TCP_USER_TIMEOUT) and glibc's resolver (IP_RECVERR,
/// IPV6_RECVERR). Not SO_MARK, SO_BINDTODEVICE, IP_TRANSPARENT... which root
/// could use to step around routing and firewall rules.
const SOCKOPTS: &[&[Arg]] = &[
    &[
        eq(1, libc::SOL_SOCKET as u64),
        eq(2, libc::SO_KEEPALIVE as u64),
    ],
    &[
        eq(1, libc::IPPROTO_TCP as u64),
        eq(2, libc::TCP_NODELAY as u64),
    ],
    &[
        eq(1, libc::IPPROTO_TCP as u64),
        eq(2, libc::TCP_KEEPIDLE as u64),
    ],
    &[
        eq(1, libc::IPPROTO_TCP as u64),
        eq(2, libc::TCP_KEEPINTVL as u64),
    ],
    &[
        eq(1, libc::IPPROTO_TCP as u64),
        eq(2, libc::TCP_KEEPCNT as u64),
    ],
    &[
        eq(1, libc::IPPROTO_TCP as u64),
        eq(2, libc::TCP_USER_TIMEOUT as u64),
    ],
    &[
        eq(1, libc::IPPROTO_IP as u64),
        eq(2, libc::IP_RECVERR as u64),
    ],
    &[
        eq(1, libc::IPPROTO_IPV6 as u64),
        eq(2, libc::IPV6_RECVERR as u64),
    ],
];

/// `fcntl` commands vaultd uses: descriptor and status flags (tokio/mio set
/// O_NONBLOCK, std checks FD_CLOEXEC) and F_DUPFD_CLOEXEC (std's try_clone).
const FCNTL_COMMANDS: &[&[Arg]] = &[
    &[eq(1, libc::F_GETFD as u64)],
    &[eq(1, libc::F_SETFD as u64)],
    &[eq(1, libc::F_GETFL as u64)],
    &[eq(1, libc::F_SETFL as u64)],
    &[eq(1, libc::F_DUPFD_CLOEXEC as u64)],
];

/// `ioctl` requests vaultd makes: non-blocking mode (std's set_nonblocking on
/// the socket) and the number of bytes waiting (glibc's resolver). Not
/// TIOCSTI (typing into the terminal vaultd logs to) or any device ioctl.
const IOCTL_REQUESTS: &[&[Arg]] = &[&[eq(1, libc::FIONBIO)], &[eq(1, libc::FIONREAD)]];

/// `prctl` options vaultd uses after start-up: naming new threads (std).
/// Not PR_SET_DUMPABLE (which would let a same-uid process attach again),
/// PR_SET_SECCOMP, PR_SET_MM, PR_SET_PTRACER...
const PRCTL_OPTIONS: &[&[Arg]] = &[&[eq(0, libc::PR_SET_NAME as u64)]];

// ---- the tables --------------------------------------------------------------

/// Calls that kill the whole process.
pub static KILLED: &[Entry] = &[
    sys!(
        SYS_execve,
        "run a program: vaultd never does; the agent's way out of the sandbox"
    ),
    sys!(SYS_execveat, "run a program (fd variant)"),
    sys!(SYS_ptrace, "trace or inject into a process"),
    sys!(SYS_process_vm_readv, "read another process's memory"),
    sys!(SYS_process_vm_writev, "write another process's memory"),
    sys!(
        SYS_pidfd_getfd,
        "steal a file descriptor from another process"
    ),
    sys!(SYS_clone if CLONE_NEW_ANY, "a clone with namespace flags: a way around the sandbox's view of the system"),
    sys!(SYS_unshare, "new namespaces"),
    sys!(SYS_setns, "enter another namespace"),
    sys!(SYS_mount, "mount"),
    sys!(SYS_umount2, "unmount"),
    sys!(SYS_pivot_root, "change the root mount"),
    sys!(SYS_chroot, "change the root directory"),
    sys!(SYS_open_tree, "new mount API"),
    sys!(SYS_move_mount, "new mount API"),
    sys!(SYS_fsopen, "new mount API"),
    sys!(SYS_fsconfig, "new mount API"),
    sys!(SYS_fsmount, "new mount API"),
    sys!(SYS_fspick, "new mount API"),
    sys!(SYS_mount_setattr, "new mount API"),
    sys!(SYS_bpf, "load BPF programs into the kernel"),
    sys!(
        SYS_perf_event_open,
        "performance counters: side channels, kernel attack surface"
    ),
    sys!(
        SYS_userfaultfd,
        "page-fault handling in user space: a classic exploit primitive"
    ),
    sys!(
        SYS_keyctl,
        "kernel keyrings: where another program's keys live"
    ),
    sys!(SYS_add_key, "kernel keyrings"),
    sys!(SYS_request_key, "kernel keyrings"),
    sys!(SYS_init_module, "load a kernel module"),
    sys!(SYS_finit_module, "load a kernel module"),
    sys!(SYS_delete_module, "unload a kernel module"),
    sys!(SYS_kexec_load, "replace the running kernel"),
    sys!(SYS_kexec_file_load, "replace the running kernel"),
    sys!(
        SYS_personality,
        "change the execution domain (e.g. turn off ASLR for a child)"
    ),
    sys!(
        SYS_io_uring_setup,
        "io_uring: performs I/O outside this filter's view"
    ),
    sys!(SYS_io_uring_enter, "io_uring"),
    sys!(SYS_io_uring_register, "io_uring"),
];

/// Calls answered with ENOSYS.
pub static ENOSYS: &[Entry] = &[sys!(
    SYS_clone3,
    "glibc's pthread_create tries clone3 first; its flags live in memory a filter cannot read, so answer ENOSYS and glibc falls back to clone(2), whose flags ALLOWED checks"
)];

/// Everything vaultd does once sandboxed. Found with `strace -f` over the
/// whole daemon life (see `docs/sandbox.md`); an entry without a path of
/// vaultd's own says which library or glibc version makes the call.
pub static ALLOWED: &[Entry] = &[
    // -- memory
    sys!(SYS_brk, "glibc malloc grows the main arena"),
    sys!(SYS_mmap if MMAP_NOT_WX, "glibc malloc arenas and large blocks, thread stacks, memsec secret pages, argon2's memory; dlopen of an NSS module (read+exec, never write+exec)"),
    sys!(SYS_munmap, "freeing all of the above"),
    sys!(
        SYS_mremap,
        "glibc's own realloc of large blocks (inside getaddrinfo; vaultd's ZeroingAllocator never reallocs in place)"
    ),
    sys!(SYS_mprotect if MPROTECT_NO_EXEC, "memsec guard pages and read-only secret pages, thread stack guards, RELRO of an NSS module (never adds execute)"),
    sys!(SYS_madvise if MADVISE_ADVICE, "glibc frees thread stacks (DONTNEED); memsec marks secret pages DONTDUMP"),
    sys!(
        SYS_mlock,
        "memsec and sys::RawSecret lock secret pages in RAM"
    ),
    sys!(SYS_munlock, "memsec::free unlocks secret pages"),
    // -- threads: tokio workers, spawn_blocking (argon2, vault I/O, getaddrinfo)
    sys!(SYS_clone if CLONE_THREAD_ONLY, "pthread_create: tokio's blocking pool starts threads after start-up (thread flags only)"),
    sys!(
        SYS_futex,
        "parking threads: std Mutex/Condvar, tokio's scheduler"
    ),
    sys!(
        SYS_set_robust_list,
        "glibc, at the start of every new thread"
    ),
    sys!(
        SYS_rseq,
        "glibc registers restartable sequences in every new thread"
    ),
    sys!(
        SYS_sched_yield,
        "spin-then-yield in std and tokio synchronisation"
    ),
    sys!(
        SYS_sched_getaffinity,
        "glibc malloc counts CPUs (its arena limit) when a new thread first allocates"
    ),
    sys!(
        SYS_getpid,
        "std::process::id: temporary vault file names, the status RPC"
    ),
    sys!(SYS_gettid, "glibc thread bookkeeping, raise()"),
    sys!(
        SYS_tgkill,
        "glibc abort()/raise() on a fatal error (landlock scopes signals to vaultd itself)"
    ),
    sys!(SYS_exit, "a thread ends (tokio's blocking pool shrinks)"),
    sys!(SYS_exit_group, "the process ends (SIGTERM, fatal error)"),
    sys!(SYS_prctl if PRCTL_OPTIONS, "std names each new thread (PR_SET_NAME)"),
    // -- signals
    sys!(
        SYS_rt_sigaction,
        "tokio::signal installs the SIGTERM/SIGINT handlers once the runtime runs"
    ),
    sys!(
        SYS_rt_sigprocmask,
        "glibc pthread_create blocks signals around clone"
    ),
    sys!(
        SYS_rt_sigreturn,
        "return from a signal handler (SIGTERM, SIGINT)"
    ),
    sys!(
        SYS_sigaltstack,
        "std's stack-overflow handler in each new thread"
    ),
    // -- event loop
    sys!(SYS_epoll_create1, "tokio's I/O driver"),
    sys!(SYS_epoll_ctl, "tokio registers sockets and its waker"),
    #[cfg(target_arch = "x86_64")]
    sys!(SYS_epoll_wait, "tokio's I/O driver waits"),
    sys!(
        SYS_epoll_pwait,
        "tokio's I/O driver waits (glibc's epoll_wait where there is no epoll_wait syscall)"
    ),
    sys!(SYS_eventfd2, "mio's waker"),
    sys!(
        SYS_socketpair,
        "tokio::signal's self-pipe (a connected unix pair: reaches nothing outside)"
    ),
    #[cfg(target_arch = "x86_64")]
    sys!(SYS_poll, "glibc's resolver waits for DNS answers"),
    sys!(
        SYS_ppoll,
        "glibc's resolver waits for DNS answers (poll on arches without the poll syscall)"
    ),
    // -- time
    sys!(
        SYS_clock_gettime,
        "Instant/SystemTime when the vDSO falls back to a real syscall (some VM clocksources)"
    ),
    sys!(
        SYS_clock_nanosleep,
        "std::thread::sleep (glibc's nanosleep)"
    ),
    // -- randomness
    sys!(
        SYS_getrandom,
        "salts, nonces, data keys, agent tokens; rustls; std's HashMap seeds"
    ),
    // -- files (landlock decides where): vault, audit log, resolver files, socket removal
    sys!(
        SYS_openat,
        "vault file, its temporary copy and its directory (fsync), the audit log; glibc's resolver files and NSS modules"
    ),
    sys!(SYS_read, "file reads; socket reads (tokio)"),
    sys!(
        SYS_pread64,
        "glibc's loader reading an NSS module's headers (dlopen)"
    ),
    sys!(
        SYS_write,
        "vault and audit writes, stderr logging, socket writes"
    ),
    sys!(SYS_writev, "socket writes (hyper, rustls), stderr"),
    sys!(SYS_lseek, "audit log: continue from its last line"),
    sys!(
        SYS_ftruncate,
        "audit log: cut off a line that a full disk left half written"
    ),
    sys!(SYS_close, "every descriptor"),
    sys!(
        SYS_fstat,
        "File::metadata on glibc before 2.33 (newer glibc uses newfstatat)"
    ),
    sys!(
        SYS_newfstatat,
        "File::metadata; glibc checks whether resolver files changed"
    ),
    sys!(
        SYS_statx,
        "std::fs::metadata: does the vault exist, was the audit log replaced"
    ),
    sys!(
        SYS_fsync,
        "vault replaced: temporary file, then its directory"
    ),
    #[cfg(target_arch = "x86_64")]
    sys!(
        SYS_rename,
        "vault replaced: rename the temporary file over vault.bin (glibc rename)"
    ),
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    sys!(SYS_renameat, "the same rename where glibc uses renameat"),
    sys!(SYS_renameat2, "the same rename where glibc uses renameat2"),
    #[cfg(target_arch = "x86_64")]
    sys!(
        SYS_unlink,
        "remove a failed temporary vault file; the socket on shutdown (glibc unlink)"
    ),
    sys!(SYS_unlinkat, "the same removal where glibc uses unlinkat"),
    sys!(
        SYS_getdents64,
        "list the vault directory after a write to remove temporaries of killed writers (vault::remove_stale_temporaries)"
    ),
    #[cfg(target_arch = "x86_64")]
    sys!(
        SYS_readlink,
        "peer executable for the audit record, /proc/PID/exe (landlock answers EACCES for other processes)"
    ),
    sys!(SYS_readlinkat, "the same where glibc uses readlinkat"),
    sys!(SYS_fcntl if FCNTL_COMMANDS, "O_NONBLOCK and FD_CLOEXEC (tokio, std), F_DUPFD_CLOEXEC (std try_clone)"),
    sys!(SYS_ioctl if IOCTL_REQUESTS, "FIONBIO (non-blocking socket), FIONREAD (glibc's resolver)"),
    sys!(
        SYS_uname,
        "glibc's resolver reads the host name (default search domain)"
    ),
    sys!(SYS_getuid, "the socket's allowed uids (the daemon's own)"),
    // -- sockets (landlock decides which TCP ports)
    sys!(SYS_socket if SOCKET_KINDS, "upstream TCP; DNS and source-address UDP; the sd_notify datagram"),
    sys!(
        SYS_connect,
        "upstream TCP (landlock: upstream_ports only); DNS UDP; sd_notify"
    ),
    sys!(SYS_accept4, "the gRPC unix socket"),
    sys!(SYS_sendto, "socket writes (tonic, hyper), sd_notify"),
    sys!(SYS_recvfrom, "socket reads (tonic, hyper), DNS answers"),
    sys!(
        SYS_sendmmsg,
        "glibc's resolver sends the A and AAAA queries together"
    ),
    sys!(
        SYS_getsockname,
        "hyper's local address; glibc's source-address selection"
    ),
    sys!(SYS_getpeername, "tonic's peer address for each connection"),
    sys!(
        SYS_getsockopt,
        "SO_PEERCRED (the peer uid check), SO_ERROR after a non-blocking connect"
    ),
    sys!(SYS_setsockopt if SOCKOPTS, "TCP_NODELAY and keepalive (hyper-util), IP_RECVERR (glibc's resolver)"),
    sys!(SYS_shutdown, "closing connections (hyper, tonic)"),
];
