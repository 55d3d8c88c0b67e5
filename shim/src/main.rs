//! vault-mcp: the MCP shim (in progress).
fn main() {}
