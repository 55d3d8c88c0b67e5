//! vaultd: a hardened local credential vault for AI agents.
//!
//! An agent never holds an API key: it asks vaultd (through the `vault-mcp`
//! shim) to make an HTTPS call; vaultd checks the call against the policy,
//! injects the credential, makes the call, scrubs the answer and audits it.
//! See `../shared/DESIGN.md` for the contract and `ARCHITECTURE.md` for the map.
//!
//! # Layout
//!
//! - [`sys`]: the only `unsafe` code: process hardening, secret pages, the zeroing allocator.
//! - [`secret`]: [`secret::SecretBuf`], the one type that holds plaintext secrets.
//! - [`dirs`], [`config`]: where files live; `vaultd.toml`.
//! - [`vault`]: the sealed file format, sealing, opening, atomic writes.
//! - [`policy`]: the policy TOML, its validation and its stored form.
//! - [`daemon`]: locked/unlocked state and every change to the vault.
//! - [`proxy`]: the execute path (request rules, upstream client, scrubbing).
//! - [`audit`]: the MAC-chained audit log.
//! - [`ratelimit`]: token buckets.
//! - [`server`]: the gRPC service on the unix socket, with the peer-credential check.
//! - [`sandbox`]: landlock + seccomp, applied once the socket is bound (`docs/sandbox.md`).
//! - [`ctl`]: the `vaultctl` command line; [`cli`]: the `vaultd` binary's.
#![deny(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dirs;
pub mod error;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod sys;
pub mod vault;
