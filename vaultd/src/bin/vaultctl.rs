//! vaultctl: the user's command line for vaultd. See `vaultctl --help`.
#![forbid(unsafe_code)]

#[global_allocator]
static ALLOC: vaultd::sys::ZeroingAllocator = vaultd::sys::ZeroingAllocator;

fn main() {
    // Before anything else, as vaultd does: not dumpable (no ptrace attach, no
    // /proc/PID/mem or environ for another process of this user while the
    // passphrase or a secret is in memory, e.g. while `secret set` waits for
    // input) and no core files. Inherited fds are kept: --passphrase-fd N.
    if let Err(e) = vaultd::sys::harden_process() {
        eprintln!(
            "vaultctl: cannot make the process non-dumpable or turn off core files: {e}; nothing was done"
        );
        std::process::exit(1);
    }
    let cli = vaultd::ctl::parse_cli();
    // Before the runtime opens descriptors of its own (see check_fds).
    if let Err(e) = vaultd::ctl::check_fds(&cli) {
        eprintln!("vaultctl: {e}");
        std::process::exit(1);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vaultctl: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(vaultd::ctl::run(cli)) {
        Ok(code) => code,
        // Stdout was closed under us (`vaultctl status | head -1`): end quietly,
        // with the status of a program ended by SIGPIPE.
        Err(e) if e.downcast_ref::<vaultd::ctl::StdoutClosed>().is_some() => 141,
        Err(e) => {
            // One line: the message, then each cause it does not already spell out
            // (an error that prints its OS error would otherwise show it twice).
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !line.contains(&cause) {
                    line.push_str(": ");
                    line.push_str(&cause);
                }
            }
            eprintln!("vaultctl: {line}");
            1
        }
    };
    std::process::exit(code);
}
