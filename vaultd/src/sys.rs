//! Every `unsafe` block of the daemon lives here, each with a `// SAFETY:` note.
//!
//! - process hardening: not dumpable, no core files (vaultd and vaultctl),
//!   inherited fds closed (vaultd);
//! - secret pages: page-aligned, guarded, mlocked, excluded from core dumps
//!   (memsec), with the mlock outcome reported instead of ignored;
//! - a zeroing global allocator, so no freed heap block keeps what it held;
//! - signals to another process (`vaultctl lock` ending a hung daemon);
//! - reading an inherited descriptor by number (`vaultctl --passphrase-fd N`);
//! - the boot clock, which keeps counting while the machine sleeps.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once any secret page could not be locked in RAM.
static MLOCK_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether every secret page so far was locked in RAM.
pub fn mlock_ok() -> bool {
    !MLOCK_FAILED.load(Ordering::Relaxed)
}

/// Makes the process non-dumpable (no ptrace attach by the same uid, no
/// /proc/PID/mem or environ for others) and sets the core size limit to 0.
/// The first thing vaultd and vaultctl do (vaultctl holds the passphrase and
/// secret values it reads).
pub fn harden_process() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes plain integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Blocks of 4 MiB and more (the argon2 work area of every passphrase check,
    // large bodies) are mapped and unmapped instead of carved from the heap:
    // with glibc's dynamic threshold a freed KDF area of up to 32 MiB stayed
    // resident, and vaultd grew by the KDF size at every passphrase operation.
    // SAFETY: mallopt takes two plain integers; a refusal (0) only keeps the default.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) };
    Ok(())
}

/// Why `PR_SET_DUMPABLE=0` may not protect this process from its own
/// user: vaultd runs in a user namespace other than the initial one (a
/// systemd *user* unit with `PrivateUsers=` or any option that implies it,
/// `unshare --user`, a rootless container). The owner of a namespace has
/// every capability inside it, CAP_SYS_PTRACE included, so if that is the
/// user, the agent could ptrace vaultd and read its memory; from inside,
/// the owner cannot be told apart from the user. Computed once (it
/// reads /proc, which the sandbox later closes); `None` only in the initial
/// namespace.
pub fn user_namespace_exposure() -> Option<&'static str> {
    static EXPOSURE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    EXPOSURE.get_or_init(user_namespace_exposure_now).as_deref()
}

fn user_namespace_exposure_now() -> Option<String> {
    let map = std::fs::read_to_string("/proc/self/uid_map");
    // The initial namespace maps every uid to itself.
    if let Ok(map) = &map
        && map.split_whitespace().eq(["0", "0", "4294967295"])
    {
        return None;
    }
    /// ioctl_ns(2): NS_GET_OWNER_UID, _IO(0xb7, 0x4).
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let ns = std::fs::File::open("/proc/self/ns/user").ok();
    let mut owner: libc::uid_t = libc::uid_t::MAX;
    let known = ns.as_ref().is_some_and(|f| {
        use std::os::fd::AsRawFd as _;
        // SAFETY: `f` is an open namespace file and `owner` a writable uid_t
        // that outlives the call, as NS_GET_OWNER_UID requires.
        unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_OWNER_UID, &mut owner) == 0 }
    });
    // Any other namespace: from inside, its owner cannot be told apart from
    // the user (in a rootless container the user is uid 0 here, or not
    // mapped at all), so none is taken as safe.
    Some(format!(
        "vaultd runs in a user namespace ({}; uid_map {}), whose owner has every capability inside it: \
         if that is your user, your processes (an agent among them) can ptrace vaultd and read its memory, \
         PR_SET_DUMPABLE=0 notwithstanding; run vaultd outside it (the shipped unit sets no \
         PrivateUsers= and no option that implies it in a user manager: ProtectSystem=, \
         ProtectHome=, PrivateTmp=, PrivateDevices=, ReadWritePaths=...)",
        if known && owner == getuid() {
            "owned by this uid".to_string()
        } else if known {
            format!("owned by the uid shown here as {owner}")
        } else {
            "owner unknown".to_string()
        },
        match &map {
            Ok(m) => format!("{:?}", m.split_whitespace().collect::<Vec<_>>().join(" ")),
            Err(e) => format!("unreadable: {e}"),
        }
    ))
}

/// Raises the soft open-file limit to the hard limit, so thousands of idle
/// clients cannot starve the accept loop of descriptors. Returns the new limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max.min(1 << 20);
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Whether the process is currently dumpable (for `vaultd check` and status).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE reads a flag and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// The current core-file size limit (soft).
pub fn core_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) } != 0 {
        return u64::MAX;
    }
    lim.rlim_cur
}

/// Closes every file descriptor above stderr that the process inherited.
pub fn close_inherited_fds() -> io::Result<()> {
    // SAFETY: close_range(3, ~0, 0) closes descriptors we have not opened yet
    // (this runs first thing in main, before any fd is created by us).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        return Ok(());
    }
    // Old kernels: close them one by one.
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            && fd > 2
        {
            // SAFETY: closing a descriptor number; a stale number (the read_dir's own fd) just fails.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Sends SIGKILL to `pid`. Used by `vaultctl lock` when the daemon does not answer.
pub fn kill_process(pid: u32) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of the process holding a `flock` on `path`'s file, as the kernel
/// lists it in /proc/locks (which nothing in the file can forge); None when
/// no process holds one. vaultd's instance locks are flocks (std's
/// `File::try_lock`).
pub fn flock_holder(path: &std::path::Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    Ok(flock_holder_in(
        &std::fs::read_to_string("/proc/locks")?,
        &id,
    ))
}

/// [`flock_holder`]'s parse of /proc/locks lines such as
/// `1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF` (a waiter's line has
/// `->` after the number, and so no match).
fn flock_holder_in(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [_, "FLOCK", _, _, pid, dev_ino, ..] if *dev_ino == id => pid.parse().ok(),
            _ => None,
        }
    })
}

/// Opens `path` with `options`, only if it is a regular file: a symbolic
/// link is not followed, and a FIFO, socket or device is refused without
/// blocking. The agent can write the state directory: a FIFO in place of the
/// audit log would take its records into a pipe it drains (and block vaultd
/// once full), a link would send a write to a file of its choosing.
pub fn open_regular(
    options: &mut std::fs::OpenOptions,
    path: &std::path::Path,
) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which vaultd does not follow: replace it with the file itself",
                )
            } else {
                e
            }
        })?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file (a directory, FIFO, socket or device), which vaultd does not read or write: put the file itself there",
        ));
    }
    Ok(file)
}

/// The whole contents of `path`, read only if it is a regular file
/// ([`open_regular`]).
pub fn read_regular(path: &std::path::Path) -> io::Result<Vec<u8>> {
    let mut file = open_regular(std::fs::OpenOptions::new().read(true), path)?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// The value of the `Key:\tvalue` line `key` of a /proc/PID/status text.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The name (`comm`) and real uid of process `pid`, from /proc/PID/status
/// (readable for any process, dumpable or not).
pub fn process_name_and_uid(pid: u32) -> io::Result<(String, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        status_field(&status, key)
            .ok_or_else(|| io::Error::other(format!("no {key}: in /proc/{pid}/status")))
    };
    let name = field("Name")?.to_string();
    let uid = field("Uid")?
        .split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad Uid: in /proc/{pid}/status")))?;
    Ok((name, uid))
}

/// Reads from the already-open descriptor `fd` of this process, at its
/// current position (read(2): pipes, sockets, terminals and files alike; the
/// descriptor stays open and its offset moves past what was read). Retries on
/// EINTR. An empty `buf` reads nothing and only checks that `fd` is open for
/// reading (EBADF otherwise). `vaultctl --passphrase-fd N` / `--from-fd N`.
pub fn read_fd(fd: u32, buf: &mut [u8]) -> io::Result<usize> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes for the whole
        // call; the descriptor is a plain integer (a closed one fails with EBADF).
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Our own uid.
pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

/// Time since boot, suspend included (CLOCK_BOOTTIME): `unlock --for`'s
/// clock. tokio's timers run on CLOCK_MONOTONIC, which stops while the
/// machine is suspended, so a laptop closed overnight would wake with its
/// "8 h" unlock still open.
pub fn boot_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    // CLOCK_BOOTTIME exists on every kernel since 2.6.39; clock_gettime
    // cannot fail with a valid clock and pointer.
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Page-aligned, guard-paged secret memory from memsec. The caller owns the
/// returned region until [`free_secret_pages`].
pub(crate) struct RawSecret {
    ptr: NonNull<[u8]>,
}

// SAFETY: the region is exclusively owned by its `RawSecret` (no aliasing), so
// moving or sharing it across threads is as safe as for a `Box<[u8]>`.
unsafe impl Send for RawSecret {}
// SAFETY: as above; shared access only hands out `&[u8]`.
unsafe impl Sync for RawSecret {}

impl RawSecret {
    /// Allocates `len` (at least 1) zeroed bytes on locked, non-dumpable pages.
    /// Returns None when the allocation fails. A failed mlock is recorded
    /// (see [`mlock_ok`]) and reported through the returned flag.
    pub(crate) fn alloc(len: usize) -> Option<(RawSecret, bool)> {
        let len = len.max(1);
        // SAFETY: memsec::malloc_sized returns either None or a region of `len`
        // writable bytes surrounded by guard pages, which we own until free.
        let ptr = unsafe { memsec::malloc_sized(len) }?;
        // SAFETY: `ptr` points to `len` writable bytes (just allocated).
        unsafe { std::ptr::write_bytes(ptr.as_ptr() as *mut u8, 0, len) };
        // memsec ignores mlock's result; ask again so a failure is a decision, not an accident.
        let page = page_size();
        let start = (ptr.as_ptr() as *mut u8 as usize) & !(page - 1);
        let end = (ptr.as_ptr() as *mut u8 as usize + len).div_ceil(page) * page;
        // SAFETY: [start, end) is inside the unprotected pages memsec mapped for us;
        // mlock on already-locked pages is idempotent.
        let locked = unsafe { libc::mlock(start as *const libc::c_void, end - start) } == 0;
        if !locked {
            MLOCK_FAILED.store(true, Ordering::Relaxed);
        }
        Some((RawSecret { ptr }, locked))
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the region is valid for its length while `self` lives, and
        // only `as_mut_slice` (which needs &mut self) hands out mutable access.
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` guarantees exclusivity.
        unsafe { self.ptr.as_mut() }
    }
}

impl Drop for RawSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.as_mut_slice());
        // SAFETY: `ptr` came from memsec::malloc_sized and is freed exactly once;
        // memsec::free also zeroes and munlocks the pages.
        unsafe { memsec::free(self.ptr) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf takes a plain integer.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// A global allocator that zeroes every block before it goes back to the
/// system allocator, so request buffers, URLs with credentials in their query,
/// decrypted plaintext and KDF memory never linger in freed heap. `realloc`
/// always moves (allocate, copy, zero, free) so no stale copy is left behind.
pub struct ZeroingAllocator;

// SAFETY: every method forwards to `System` with the same layout contract, and
// only writes zeroes to memory the caller is giving back to us.
unsafe impl GlobalAlloc for ZeroingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` is a live block of `layout.size()`
        // bytes that it no longer uses; volatile writes are not elided.
        unsafe {
            zero_volatile(ptr, layout.size());
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees layout/new_size validity (GlobalAlloc::realloc contract).
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new_ptr = System.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                zero_volatile(ptr, layout.size());
                System.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}

/// Zeroes `len` bytes at `ptr` with writes the optimizer may not remove.
///
/// # Safety
/// `ptr` must be valid for `len` bytes of writes.
unsafe fn zero_volatile(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is writable; write_bytes + a
    // compiler fence keeps the zeroing from being optimized out before free.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The Landlock ABI version the running kernel offers (`Err` with ENOSYS or
/// EOPNOTSUPP when it has no Landlock, or has it disabled at boot). Used by
/// `sandbox` to report and check the kernel's ABI; the `landlock` crate keeps
/// this query private.
pub fn landlock_abi_version() -> io::Result<u32> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns the ABI version: with a null attribute pointer and size 0
    // the kernel reads and writes no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// `ptrace(PTRACE_TRACEME)`. Only the sandbox probe (`vaultd-sandbox-probe`)
/// calls this, to prove that the seccomp filter kills a process that tries.
pub fn ptrace_traceme() -> io::Result<()> {
    // SAFETY: PTRACE_TRACEME ignores its pid, addr and data arguments and
    // touches no memory of ours.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_TRACEME,
            0,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn flock_holders_are_read_from_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 fe:00:77 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 99 fe:00:78 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 31 fe:00:78 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 555 fe:01:78 0 EOF\n";
        assert_eq!(super::flock_holder_in(locks, "fe:00:77"), Some(4242));
        assert_eq!(super::flock_holder_in(locks, "fe:00:78"), None);
        assert_eq!(super::flock_holder_in(locks, "fe:01:78"), Some(555));
        // A lock this process holds, read back through the kernel.
        let dir = std::env::temp_dir().join(format!("vaultd-flock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.lock");
        let f = std::fs::File::create(&path).unwrap();
        assert_eq!(super::flock_holder(&path).unwrap(), None);
        f.try_lock().unwrap();
        assert_eq!(
            super::flock_holder(&path).unwrap(),
            Some(std::process::id())
        );
        drop(f);
        assert_eq!(super::flock_holder(&path).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
        let (name, uid) = super::process_name_and_uid(std::process::id()).unwrap();
        assert!(!name.is_empty());
        assert_eq!(uid, super::getuid());
    }
}
