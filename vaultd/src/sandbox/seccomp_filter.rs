//! Turns the tables of [`super::syscalls`] into three BPF programs and
//! installs them on every thread of the process (TSYNC).
//!
//! seccompiler gives a filter one action on match and one on mismatch, and
//! vaultd needs three outcomes (allow, EPERM, kill) plus ENOSYS for `clone3`.
//! The kernel runs every installed filter and keeps the most severe answer
//! (kill > trap > errno > ... > allow), so the policy is three filters:
//!
//! | filter | on match | otherwise |
//! | --- | --- | --- |
//! | `kill` | KILL_PROCESS | allow |
//! | `enosys` | errno ENOSYS | allow |
//! | `allow` | allow | errno EPERM |
//!
//! A killed call dies whatever `allow` says. `clone3` matches `enosys`; so
//! that `allow`'s EPERM does not win the tie between two errnos (the most
//! recently installed filter wins a tie), `allow` lets the [`ENOSYS`] entries
//! through and leaves the answer to `enosys`. `allow` is installed last: after
//! it, `seccomp(2)` itself is refused.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::Error;
use super::syscalls::{ALLOWED, ENOSYS, Entry, KILLED, When};

/// The compiled filters, in installation order.
pub(super) struct Filters {
    /// `(name, program)`: kill, enosys, allow.
    pub programs: Vec<(&'static str, BpfProgram)>,
}

fn arch() -> Result<TargetArch, Error> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| Error::SeccompCompile(e.to_string()))
}

fn rules_of(entries: &[&[Entry]]) -> Result<BTreeMap<i64, Vec<SeccompRule>>, Error> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for e in entries.iter().flat_map(|t| t.iter()) {
        let rules = match e.when {
            When::Always => Vec::new(),
            When::AnyOf(any) => any
                .iter()
                .map(|all| {
                    let conds = all
                        .iter()
                        .map(|a| {
                            let len = if a.dword {
                                SeccompCmpArgLen::Dword
                            } else {
                                SeccompCmpArgLen::Qword
                            };
                            SeccompCondition::new(
                                a.index,
                                len,
                                SeccompCmpOp::MaskedEq(a.mask),
                                a.value,
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    SeccompRule::new(conds)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| Error::SeccompCompile(format!("{}: {err}", e.syscall())))?,
        };
        if map.insert(e.nr, rules).is_some() {
            return Err(Error::SeccompCompile(format!(
                "{} is listed twice",
                e.syscall()
            )));
        }
    }
    Ok(map)
}

fn program(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, Error> {
    let filter = SeccompFilter::new(rules, mismatch, on_match, arch()?)
        .map_err(|e| Error::SeccompCompile(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| Error::SeccompCompile(e.to_string()))
}

/// Compiles the three filters.
pub(super) fn compile() -> Result<Filters, Error> {
    // A number in two tables would make the outcome depend on precedence
    // rules instead of the table: refuse it (except ENOSYS entries, which
    // `allow` lets through on purpose, see above).
    for k in KILLED {
        if let Some(a) = ALLOWED.iter().chain(ENOSYS).find(|a| a.nr == k.nr)
            && !(matches!(k.when, When::AnyOf(_)) && matches!(a.when, When::AnyOf(_)))
        {
            return Err(Error::SeccompCompile(format!(
                "{} is both killed and allowed",
                k.syscall()
            )));
        }
    }
    let kill = program(
        rules_of(&[KILLED])?,
        SeccompAction::Allow,
        SeccompAction::KillProcess,
    )?;
    let enosys = program(
        rules_of(&[ENOSYS])?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    let allow = program(
        rules_of(&[ALLOWED, ENOSYS])?,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )?;
    Ok(Filters {
        programs: vec![("kill", kill), ("enosys", enosys), ("allow", allow)],
    })
}

/// Installs the filters on every thread (TSYNC), `allow` last.
pub(super) fn install(filters: &Filters) -> Result<(), Error> {
    for (name, prog) in &filters.programs {
        seccompiler::apply_filter_all_threads(prog).map_err(|e| Error::SeccompInstall {
            filter: name,
            source: e,
        })?;
    }
    Ok(())
}

/// How many system calls each table names (for the status line).
pub(super) fn counts() -> (usize, usize) {
    (ALLOWED.len(), KILLED.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles() {
        let f = compile().unwrap();
        assert_eq!(f.programs.len(), 3);
        assert!(
            f.programs
                .iter()
                .all(|(_, p)| !p.is_empty() && p.len() < 4096)
        );
    }

    /// docs/sandbox.md names every entry, so the reviewed document and the
    /// enforced table cannot drift apart silently.
    #[test]
    fn docs_name_every_entry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sandbox.md");
        let doc = std::fs::read_to_string(path).unwrap();
        for e in ALLOWED.iter().chain(KILLED).chain(ENOSYS) {
            assert!(
                doc.contains(&format!("`{}`", e.syscall())),
                "docs/sandbox.md does not mention `{}`",
                e.syscall()
            );
        }
    }

    #[test]
    fn every_entry_says_why() {
        for e in ALLOWED.iter().chain(KILLED).chain(ENOSYS) {
            assert!(e.why.len() > 3, "{} has no reason", e.syscall());
        }
    }
}
