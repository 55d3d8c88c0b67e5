//! `vault-mcp`'s message handling as a library, so that it can be driven
//! in-process: the binary (`src/main.rs`) is this plus argument parsing,
//! token loading and the real stdin/stdout; the fuzzer (`fuzz/`, target
//! `mcp_stdin`) serves the same [`server::VaultMcp`] through the same
//! [`stdio::PreInitTolerant`] transport over an in-memory pipe.
//!
//! Layout: [`cli`] (the command line), [`server`] (MCP tools and dispatch),
//! [`daemon`] (the connection to vaultd), [`render`] (answers to tool-result
//! JSON and refusals), [`stdio`] (the transport), [`token`] (the agent
//! token, read again from its file when it stops working).

pub mod cli;
pub mod daemon;
pub mod render;
pub mod server;
pub mod stdio;
pub mod token;
