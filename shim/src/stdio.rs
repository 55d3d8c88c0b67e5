//! The stdio transport: one JSON-RPC message per line on stdin and stdout,
//! where every request line gets an answer, and tolerant of what some clients
//! send before `initialize`.
//!
//! [`LineTransport`] reads stdin itself instead of using rmcp's
//! `AsyncRwTransport`, which drops a line it cannot parse without a word
//! (rust-sdk#938: to avoid error storms) and so leaves the client waiting for
//! that request forever. Here a line that is not a client message is answered
//! once, with a JSON-RPC error carrying the request's `id` when it can be read
//! (`null` otherwise), and the session goes on: `-32700` for text that is not
//! JSON or not UTF-8, `-32602` when only a string inside `params` is not
//! Unicode (a lone surrogate escape such as `\ud800`), `-32600` for JSON that
//! is not a JSON-RPC 2.0 message and for a line over [`MAX_LINE_BYTES`]. (A
//! well-formed request for an unknown method, or whose params do not fit its
//! method, is the server's to answer: `VaultMcp::on_custom_request`.) An MCP
//! client never answers a response, so one answer per line cannot storm.
//! Notifications and responses are never answered (JSON-RPC forbids it); a
//! short note goes to stderr instead. stdout carries nothing but JSON-RPC.
//!
//! The happy path parses each line once, straight into the client message;
//! the diagnosis (id recovery, second parses) runs only for a failed line.
//!
//! [`PreInitTolerant`]: rmcp 3.11 ends the session when a notification or a
//! response arrives before `initialize` (it expects only requests there). The
//! MCP lifecycle asks clients not to, but a stray `notifications/cancelled`
//! (for an abandoned `server/discover` probe, say) should not kill the server
//! the agent relies on: such messages are dropped, with a note on stderr, until
//! `initialize` has been read. Requests are never dropped: each gets a response.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::{StdioReader, StdioWriter};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// The longest line read, newline included (rmcp's limit too): 16 MiB. A longer
/// line is skipped as it arrives (never held in memory) and answered `-32600`.
pub const MAX_LINE_BYTES: usize = 16 << 20;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

/// MCP over this process's stdin and stdout (non-blocking pipes when they are pipes).
pub fn transport() -> PreInitTolerant<LineTransport<StdioReader, StdioWriter>> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    PreInitTolerant::new(LineTransport::new(stdin, stdout))
}

/// Newline-delimited JSON-RPC over a reader and a writer, answering every
/// request line it cannot take (see the module docs).
pub struct LineTransport<R, W> {
    read: BufReader<R>,
    /// The line being read; a read cancelled by rmcp's `select!` resumes it.
    line: Vec<u8>,
    max_line: usize,
    /// A line over `max_line`, being skipped until its newline.
    oversized: Option<Oversized>,
    out: Arc<Mutex<Output<W>>>,
    /// An error response not yet handed to `out`.
    reply: Option<Vec<u8>>,
    /// `out` holds bytes that `receive` put there and has not flushed yet.
    flushing: bool,
}

struct Oversized {
    bytes: usize,
    scan: IdScan,
}

/// stdout, and the bytes not yet written to it. Every message is appended
/// whole before any is written, so a write cut short (a cancelled future)
/// leaves the rest for the next writer: lines never interleave.
struct Output<W> {
    write: Option<W>,
    buf: Vec<u8>,
    written: usize,
}

impl<W: AsyncWrite + Unpin> Output<W> {
    async fn drain(&mut self) -> io::Result<()> {
        let Self {
            write,
            buf,
            written,
        } = self;
        let Some(write) = write.as_mut() else {
            buf.clear();
            *written = 0;
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the transport is closed",
            ));
        };
        let result = loop {
            if *written >= buf.len() {
                break Ok(());
            }
            match write.write(&buf[*written..]).await {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *written += n,
                Err(e) => break Err(e),
            }
        };
        buf.clear();
        *written = 0;
        // A large response is not kept around as capacity.
        buf.shrink_to(64 << 10);
        result?;
        write.flush().await
    }
}

enum LineRead {
    Line,
    Oversized(Oversized),
    Eof,
    Io(io::Error),
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> LineTransport<R, W> {
    pub fn new(read: R, write: W) -> Self {
        Self {
            read: BufReader::with_capacity(64 << 10, read),
            line: Vec::new(),
            max_line: MAX_LINE_BYTES,
            oversized: None,
            out: Arc::new(Mutex::new(Output {
                write: Some(write),
                buf: Vec::new(),
                written: 0,
            })),
            reply: None,
            flushing: false,
        }
    }

    /// Sets the longest line taken (newline included); for tests.
    pub fn with_max_line_bytes(mut self, max: usize) -> Self {
        self.max_line = max;
        self
    }

    /// Reads one `\n`-terminated line into `self.line`, never holding more than
    /// `max_line` bytes of it. Cancellation-safe: all state lives in `self`,
    /// and bytes are consumed from the reader only as they are stored.
    async fn read_line(&mut self) -> LineRead {
        loop {
            let available = match self.read.fill_buf().await {
                Ok(available) => available,
                Err(e) => return LineRead::Io(e),
            };
            if available.is_empty() {
                return LineRead::Eof;
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let chunk = &available[..take];
            if let Some(big) = self.oversized.as_mut() {
                big.bytes += take;
                big.scan.feed(chunk);
            } else if self.line.len() + take > self.max_line {
                let mut scan = IdScan::default();
                scan.feed(&self.line);
                scan.feed(chunk);
                self.oversized = Some(Oversized {
                    bytes: self.line.len() + take,
                    scan,
                });
                self.line = Vec::new();
            } else {
                self.line.extend_from_slice(chunk);
            }
            self.read.consume(take);
            if newline.is_some() {
                return match self.oversized.take() {
                    Some(big) => LineRead::Oversized(big),
                    None => LineRead::Line,
                };
            }
        }
    }
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.out.clone();
        async move {
            let mut out = out.lock().await;
            let start = out.buf.len();
            if let Err(e) = serde_json::to_writer(&mut out.buf, &item) {
                out.buf.truncate(start);
                return Err(e.into());
            }
            out.buf.push(b'\n');
            out.drain().await
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            if self.reply.is_some() || self.flushing {
                let mut out = self.out.lock().await;
                if let Some(reply) = self.reply.take() {
                    out.buf.extend_from_slice(&reply);
                    self.flushing = true;
                }
                if let Err(e) = out.drain().await {
                    eprintln!("vault-mcp: writing to stdout failed: {e}");
                    return None;
                }
                self.flushing = false;
            }
            match self.read_line().await {
                LineRead::Line => {}
                LineRead::Oversized(big) => {
                    self.reply = reject_oversized(big, self.max_line);
                    continue;
                }
                // A last line with no newline is an incomplete message: dropped, as rmcp does.
                LineRead::Eof => return None,
                LineRead::Io(e) => {
                    eprintln!("vault-mcp: reading stdin failed: {e}");
                    return None;
                }
            }
            let outcome = {
                let line = content(&self.line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    Some(
                        serde_json::from_slice::<ClientJsonRpcMessage>(line)
                            .map_err(|e| reject(line, &e)),
                    )
                }
            };
            self.line.clear();
            if self.line.capacity() > 1 << 20 {
                self.line = Vec::new();
            }
            match outcome {
                None => {}
                Some(Ok(message)) => return Some(message),
                Some(Err(reply)) => self.reply = reply,
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        let mut out = self.out.lock().await;
        if out.write.is_some() && out.written < out.buf.len() {
            let _ = out.drain().await;
        }
        out.write = None;
        Ok(())
    }
}

/// The line without its `\n`, a `\r` before it, or a UTF-8 byte order mark.
fn content(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
}

/// The error response for a line that is not a client message, or `None` for
/// a notification or a response (never answered); a note goes to stderr.
fn reject(line: &[u8], err: &serde_json::Error) -> Option<Vec<u8>> {
    let mut scan = IdScan::default();
    scan.feed(line);
    let (code, message, well_formed) = diagnose(line, err);
    answer(&scan, well_formed, code, message)
}

fn reject_oversized(big: Oversized, max: usize) -> Option<Vec<u8>> {
    let well_formed = big.scan.closed;
    let message = format!(
        "Invalid Request: the message is {} bytes, over vault-mcp's limit of {max} bytes ({} MiB) \
         per line, so it was not read; send a smaller request (a shorter body)",
        big.bytes.saturating_sub(1),
        max >> 20
    );
    answer(&big.scan, well_formed, INVALID_REQUEST, message)
}

fn answer(scan: &IdScan, well_formed: bool, code: i64, message: String) -> Option<Vec<u8>> {
    // Only an object can be a notification or a response (`["method"]` is
    // neither, and gets its error).
    let well_formed = well_formed && scan.top == Some(b'{');
    if well_formed && scan.saw_method && !scan.saw_id {
        eprintln!("vault-mcp: ignoring a notification that is not a valid message ({code})");
        return None;
    }
    if well_formed && !scan.saw_method && scan.saw_id && scan.saw_reply {
        eprintln!("vault-mcp: ignoring a response that is not a valid message ({code})");
        return None;
    }
    Some(error_line(scan.id(), code, message))
}

/// One JSON-RPC error response, newline included; a note goes to stderr.
fn error_line(id: Value, code: i64, message: String) -> Vec<u8> {
    eprintln!("vault-mcp: answered a request line with error {code} (id {id})");
    let mut reply = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    }))
    .expect("a JSON value serializes");
    reply.push(b'\n');
    reply
}

/// The error code and message for a line that did not parse, and whether it
/// is well-formed JSON (so that the scan's view of its keys can be trusted).
fn diagnose(line: &[u8], err: &serde_json::Error) -> (i64, String, bool) {
    if let Err(bad) = std::str::from_utf8(line) {
        let at = bad.valid_up_to();
        let well_formed = serde_json::from_slice::<IgnoredAny>(line).is_ok();
        return (
            PARSE_ERROR,
            format!(
                "Parse error: the line is not UTF-8 text: byte 0x{:02x} at offset {at} is not \
                 valid UTF-8; send JSON as UTF-8 text",
                line[at]
            ),
            well_formed,
        );
    }
    match err.classify() {
        serde_json::error::Category::Data => (
            INVALID_REQUEST,
            format!("Invalid Request: {}", explain_shape(line, err)),
            true,
        ),
        _ if serde_json::from_slice::<IgnoredAny>(line).is_ok() => {
            // Well-formed JSON that still did not parse: a string that is not
            // Unicode (serde_json refuses lone surrogates), or a number it cannot hold.
            let in_params = serde_json::from_slice::<OutsideParams>(line).is_ok();
            let (code, kind) = if in_params {
                (INVALID_PARAMS, "Invalid params")
            } else {
                (PARSE_ERROR, "Parse error")
            };
            let message = match lone_surrogate(line) {
                Some((escape, column)) => format!(
                    "{kind}: the request is not valid JSON text: lone surrogate {escape} at line 1 \
                     column {column} (a \\ud800-\\udbff escape must be followed by a \
                     \\udc00-\\udfff one); send strings as valid Unicode (UTF-8)"
                ),
                None => format!("{kind}: the request is not valid JSON text: {err}"),
            };
            (code, message, true)
        }
        _ => (
            PARSE_ERROR,
            format!(
                "Parse error: the line is not valid JSON ({err}); send one JSON-RPC 2.0 message \
                 per line"
            ),
            false,
        ),
    }
}

/// Why well-formed JSON is not a client message.
fn explain_shape(line: &[u8], err: &serde_json::Error) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(line) else {
        return err.to_string();
    };
    let Value::Object(o) = &value else {
        return if value.is_array() {
            "a JSON array (a JSON-RPC batch) is not accepted: MCP has no batches since \
             2025-06-18; send each message on its own line"
                .into()
        } else {
            "a JSON-RPC message must be a JSON object".into()
        };
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return "\"jsonrpc\" must be \"2.0\"".into();
    }
    if let Some(id) = o.get("id")
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return "\"id\" must be a string or an integer".into();
    }
    match o.get("method") {
        Some(Value::String(method)) => match o.get("params") {
            Some(p) if !p.is_object() => format!("{method}: \"params\" must be an object"),
            _ => format!("{method}: the message does not match the MCP schema: {err}"),
        },
        Some(_) => "\"method\" must be a string".into(),
        None => "a message needs a \"method\" (a request or a notification), or an \"id\" with \
                 \"result\" or \"error\" (a response)"
            .into(),
    }
}

/// The first unpaired `\uD800`-`\uDFFF` escape, and its 1-based column.
fn lone_surrogate(line: &[u8]) -> Option<(String, usize)> {
    let hex4 = |at: usize| {
        let digits = std::str::from_utf8(line.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while i + 1 < line.len() {
        if line[i] != b'\\' {
            i += 1;
            continue;
        }
        if line[i + 1] != b'u' {
            i += 2;
            continue;
        }
        let Some(unit) = hex4(i + 2) else {
            i += 2;
            continue;
        };
        let paired = (0xD800..0xDC00).contains(&unit)
            && line.get(i + 6..i + 8) == Some(b"\\u")
            && hex4(i + 8).is_some_and(|low| (0xDC00..0xE000).contains(&low));
        if paired {
            i += 12;
        } else if (0xD800..0xE000).contains(&unit) {
            return Some((String::from_utf8_lossy(&line[i..i + 6]).into_owned(), i + 1));
        } else {
            i += 6;
        }
    }
    None
}

/// Parses when every top-level member but `params` is valid JSON text.
struct OutsideParams;

impl<'de> Deserialize<'de> for OutsideParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = OutsideParams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OutsideParams, A::Error> {
                while let Some(key) = map.next_key::<String>()? {
                    if key == "params" {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        map.next_value::<Value>()?;
                    }
                }
                Ok(OutsideParams)
            }
        }
        d.deserialize_map(Members).map_err(de::Error::custom)
    }
}

/// A lenient, incremental scan of a JSON object's top-level members: finds the
/// `id` and whether `method`, `result` or `error` are present, in text that may
/// be cut short, broken, or not UTF-8 (it never looks inside strings but the id).
#[derive(Default)]
struct IdScan {
    depth: usize,
    top: Option<u8>,
    /// The top-level object was closed.
    closed: bool,
    in_str: bool,
    escaped: bool,
    at: At,
    key_is_id: bool,
    capture: Capture,
    token: Vec<u8>,
    token_overflow: bool,
    id: Option<Vec<u8>>,
    saw_id: bool,
    saw_method: bool,
    saw_reply: bool,
}

/// Where the scan is among the top-level object's members.
#[derive(Default, Clone, Copy, PartialEq)]
enum At {
    #[default]
    Key,
    Colon,
    Value,
    Scalar,
    After,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum Capture {
    #[default]
    None,
    Key,
    Id,
}

impl IdScan {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_str {
                if self.capture != Capture::None {
                    self.push(b);
                }
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_str = false;
                    self.end_token();
                }
                continue;
            }
            let ends_scalar = matches!(
                b,
                b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b']' | b'"' | b'{' | b'[' | b':'
            );
            if self.depth == 1 && self.at == At::Scalar && ends_scalar {
                self.end_token();
                self.at = At::After;
            }
            match b {
                b'"' => {
                    self.in_str = true;
                    if self.depth == 0 {
                        self.top.get_or_insert(b);
                    } else if self.depth == 1 {
                        match self.at {
                            At::Key => {
                                self.start(Capture::Key, b);
                                self.at = At::Colon;
                            }
                            At::Value => {
                                if self.key_is_id {
                                    self.start(Capture::Id, b);
                                }
                                self.at = At::After;
                            }
                            _ => {}
                        }
                    }
                }
                b'{' | b'[' => {
                    if self.depth == 0 {
                        self.top.get_or_insert(b);
                    } else if self.depth == 1 && self.at == At::Value {
                        self.at = At::After;
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.depth == 1 && self.top == Some(b'{') && b == b'}' {
                        self.closed = true;
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                b':' if self.depth == 1 && self.at == At::Colon => self.at = At::Value,
                b',' if self.depth == 1 => self.at = At::Key,
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => {
                    if self.depth == 0 {
                        // A stray byte order mark is not the start of a value.
                        if b < 0x80 {
                            self.top.get_or_insert(b);
                        }
                    } else if self.depth == 1 && self.at == At::Value {
                        self.at = At::Scalar;
                        if self.key_is_id {
                            self.start(Capture::Id, b);
                        }
                    } else if self.depth == 1
                        && self.at == At::Scalar
                        && self.capture == Capture::Id
                    {
                        self.push(b);
                    }
                }
            }
        }
    }

    fn start(&mut self, capture: Capture, first: u8) {
        self.capture = capture;
        self.token.clear();
        self.token_overflow = false;
        self.token.push(first);
    }

    fn push(&mut self, b: u8) {
        if self.token.len() < 256 {
            self.token.push(b);
        } else {
            self.token_overflow = true;
        }
    }

    fn end_token(&mut self) {
        match std::mem::take(&mut self.capture) {
            Capture::Key => {
                self.key_is_id = false;
                match &self.token[..] {
                    b"\"id\"" => {
                        self.saw_id = true;
                        self.key_is_id = true;
                    }
                    b"\"method\"" => self.saw_method = true,
                    b"\"result\"" | b"\"error\"" => self.saw_reply = true,
                    _ => {}
                }
            }
            Capture::Id if self.id.is_none() && !self.token_overflow => {
                self.id = Some(self.token.clone());
            }
            _ => {}
        }
        self.token.clear();
    }

    /// The request id, when it was read whole and is a string or a number.
    fn id(&self) -> Value {
        self.id
            .as_deref()
            .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
            .filter(|id| id.is_string() || id.is_number())
            .unwrap_or(Value::Null)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan(parts: &[&[u8]]) -> IdScan {
        let mut scan = IdScan::default();
        for part in parts {
            scan.feed(part);
        }
        scan
    }

    #[test]
    fn the_id_is_found_in_broken_or_partial_text() {
        let cases: &[(&[&[u8]], Value)] = &[
            (&[br#"{"jsonrpc":"2.0","id":7,"method":"x""#], json!(7)),
            (&[br#"{"id" : "a\"b" , "method":1}"#], json!("a\"b")),
            // Fed in pieces that cut through the key and the value.
            (
                &[br#"{"params":{"id":1,"x":["}"]},"i"#, br#"d":-4"#, b"2}"],
                json!(-42),
            ),
            // A nested "id", or an "id" inside a string, is not the request's.
            (&[br#"{"params":{"id":1},"s":"\"id\":2"}"#], Value::Null),
            (&[b"{\"body\":\"\xff\xfe\",\"id\":3,"], json!(3)),
            (&[br#"{"id":{"x":1}}"#], Value::Null),
            (&[br#"{"id":null}"#], Value::Null),
            (&[br#"[{"id":5}]"#], Value::Null),
            (&[br#"{"id":"\ud800"}"#], Value::Null),
        ];
        for (parts, id) in cases {
            assert_eq!(
                scan(parts).id(),
                *id,
                "{:?}",
                String::from_utf8_lossy(&parts.concat())
            );
        }
        let s = scan(&[br#"{"jsonrpc":"2.0","method":"n","params":{"id":1}}"#]);
        assert!(s.closed && s.saw_method && !s.saw_id);
        let s = scan(&[br#"{"jsonrpc":"2.0","id":1,"result":{}}"#]);
        assert!(s.closed && s.saw_reply && s.saw_id && !s.saw_method);
        assert!(!scan(&[br#"{"id":1,"method":"x","params":{"#]).closed);
    }

    #[test]
    fn lone_surrogates_are_located() {
        assert_eq!(
            lone_surrogate(br#"{"a":"x\ud800y"}"#),
            Some((r"\ud800".to_owned(), 8))
        );
        assert_eq!(
            lone_surrogate(br#"{"a":"\\ud800 \ud83d\ude00 \uDFFF"}"#),
            Some((r"\uDFFF".to_owned(), 28))
        );
        assert_eq!(lone_surrogate(br#"{"a":"\\ud800 \ud83d\ude00"}"#), None);
    }
}
