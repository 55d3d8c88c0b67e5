//! The stdio transport, made tolerant of what some clients send before `initialize`.
//!
//! rmcp 3.11 ends the session when a notification or a response arrives before
//! `initialize` (it expects only requests there). The MCP lifecycle asks
//! clients not to, but a stray `notifications/cancelled` (for an abandoned
//! `server/discover` probe, say) should not kill the server the agent relies
//! on: such messages are dropped, with a note on stderr, until `initialize`
//! has been read. Requests are never dropped: each gets a response.

use std::future::Future;

use rmcp::RoleServer;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::{StdioReader, StdioWriter};

/// MCP over this process's stdin and stdout (non-blocking pipes when they are pipes).
pub fn transport() -> PreInitTolerant<AsyncRwTransport<RoleServer, StdioReader, StdioWriter>> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    PreInitTolerant::new(AsyncRwTransport::new_server(stdin, stdout))
}

/// Drops non-request messages until `initialize` has been received.
pub struct PreInitTolerant<T> {
    inner: T,
    initialized: bool,
}

impl<T> PreInitTolerant<T> {
    /// Wraps `inner` (the real stdio in [`transport`]; an in-memory pipe in the fuzzer).
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            initialized: false,
        }
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for PreInitTolerant<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            let message = self.inner.receive().await?;
            if self.initialized {
                return Some(message);
            }
            match &message {
                JsonRpcMessage::Request(req) => {
                    if matches!(req.request, ClientRequest::InitializeRequest(_)) {
                        self.initialized = true;
                    }
                    return Some(message);
                }
                JsonRpcMessage::Notification(n) => {
                    let method = serde_json::to_value(n)
                        .ok()
                        .and_then(|v| v.get("method")?.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    eprintln!(
                        "vault-mcp: ignoring notification {method:?} received before initialize"
                    );
                }
                JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_) => {
                    eprintln!("vault-mcp: ignoring a response received before initialize");
                }
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
