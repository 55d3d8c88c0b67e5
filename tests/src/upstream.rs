//! A local HTTPS upstream that records everything it receives, plus hostile routes.
//!
//! ```no_run
//! use vaultd_tests::upstream::{Upstream, TlsKind};
//! let up = Upstream::start(TlsKind::Good);          // https://127.0.0.1:PORT
//! let base_url = format!("{}/api", up.url());       // a service's base_url
//! // ... drive vaultd so that it calls GET {base_url}/echo/repos?x=1 ...
//! let reqs = up.requests();
//! assert_eq!(reqs[0].target, "/api/echo/repos?x=1");
//! assert_eq!(reqs[0].header("authorization"), Some("Bearer CANARY"));
//! ```
//!
//! # Threads and lifetime
//!
//! Each server owns a small multi-threaded tokio runtime (2 workers), so it works
//! the same from `#[test]` and from `#[tokio::test]` (any flavour) and never
//! depends on the test's own runtime being polled. Dropping the server stops it:
//! the listener and every connection (hanging ones included) are closed.
//!
//! # Protocols
//!
//! TLS with the [`crate::pki`] certificates (ALPN `h2` and `http/1.1`), then
//! HTTP/1.1 or HTTP/2 (hyper-util's auto builder, which also accepts h2 without
//! ALPN), keep-alive on. No header-read timeout: idle connections stay open until
//! the client closes them.
//!
//! # Routes
//!
//! Routing looks only at path segments, so any base prefix works (`/api/v3/echo`,
//! `/echo/repos/o/r/issues`): the route is named by the **last** segment of the
//! path (exact, case-sensitive match, query excluded) that is one of the names
//! below, where `status` counts only when the next segment is a number. So
//! `/api/echo/anything/else` is `echo`, `/echo/status/503` is `status`, and
//! `/echo/status/text` is `echo` (no number after `status`). A path with no
//! route segment (`/echoes`, `/api/other`) is `404`.
//!
//! | segment | answer |
//! | --- | --- |
//! | `echo` | 200, JSON [echo object](#the-echo-object) |
//! | `echo-b64`, `echo-b64url`, `echo-hex`, `echo-hex-upper`, `echo-urlenc`, `echo-b64-lines` | echo object plus `"encoded"`: the Authorization value, its credential part, X-Api-Key and every query value, in that form (`echo-b64-lines`: 42 bytes of `P` then the value, base64 in lines of 76 characters) |
//! | `echo-header` | 200 `{"ok":true}`, with the received Authorization in `X-Echo-Auth` and X-Api-Key in `X-Echo-Key`, and a header named after the last word of each (the credential, lowercased as a name) when that is a valid name |
//! | `echo-gzip` | the echo object gzip-compressed, `Content-Encoding: gzip`, whatever Accept-Encoding says |
//! | `echo-coded?ce=A,B` | the echo object encoded with each listed coding in turn, one `Content-Encoding` line per name, whatever Accept-Encoding says: `gzip`, `deflate` (zlib), `deflate-raw` (raw deflate, labelled `deflate`); any other name (`identity`, `br`, `xz`) is a label only. With `?junk=1`, `JUNK` and a gzip of the echo object follow the body |
//! | `echo-gzip-unlabelled`, `echo-zlib-unlabelled` | the echo object (with `?plain=1`: a harmless text; gzip with `?inflates_mib=N`: N gzip members of 1 MiB each of the escape-dense text `%41\u0041` and a newline, a decompression bomb) gzip- or zlib-compressed, no Content-Encoding (`application/gzip`, `application/octet-stream`) |
//! | `echo-binary` | `application/octet-stream`: [`BINARY_PREFIX`] + Authorization value + [`BINARY_SUFFIX`] |
//! | `status/NNN` | status NNN, body `{"status":NNN}` |
//! | `redirect?to=URL` | 302, `Location: URL` (form-decoded) |
//! | `big?bytes=N` | N bytes of `a`, `Content-Length: N`, streamed in 64 KiB chunks |
//! | `endless` | chunked (h1) body of 64 KiB chunks, forever, until the client goes away |
//! | `trickle[?interval_ms=M]` | headers, then one byte `.` at once and one every M ms (default 1000), forever |
//! | `hang` | the request is recorded and never answered |
//! | `reset` | head with `Content-Length: 1000`, 10 bytes, then the TCP connection is dropped with `SO_LINGER 0` (a RST); on HTTP/2 the whole connection is dropped the same way |
//! | `short-body` | head with `Content-Length: 100`, 10 bytes, then a clean close: TLS close_notify and FIN, no RST |
//! | `slow?ms=N` | recorded on arrival, then after N ms: 200 with the echo object |
//!
//! Every request is recorded (after its body is read, before any route runs),
//! including 404s; requests hyper itself rejects as malformed never reach the log.
//!
//! # The echo object
//!
//! ```json
//! {"method": "GET", "target": "/api/echo?a=1", "path": "/api/echo", "query": "a=1",
//!  "params": {"a": "1"}, "version": "HTTP/1.1", "connection": 3,
//!  "headers": {"authorization": "Bearer ...", "host": "127.0.0.1:PORT"},
//!  "body": "utf-8 (lossy)", "body_b64": "..."}
//! ```
//!
//! `query` is the raw query string (`null` when there is none), `params` its
//! form-decoded pairs (last one wins), `headers` has lowercase names with
//! repeated values joined by `", "`. HTTP/2's `:authority` appears as `host`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::forms;
use crate::pki::Pki;
pub use crate::pki::TlsKind;

/// Chunk size of the streamed routes (`big`, `endless`).
pub const CHUNK: usize = 64 * 1024;
/// Bytes before the Authorization value in `echo-binary` (not valid UTF-8).
pub const BINARY_PREFIX: &[u8] = b"\xff\xfe\x00\x80BIN\xc3\x28[";
/// Bytes after the Authorization value in `echo-binary` (not valid UTF-8).
pub const BINARY_SUFFIX: &[u8] = b"]\x00\xa0\xa1\xf0\x28\x8c\xbcEND\xff";

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The method, as sent.
    pub method: String,
    /// The raw request-target: path and query exactly as on the wire (HTTP/2: `:path`).
    /// Absolute-form targets (HTTP/1.1 `GET https://host/x`) are kept whole.
    pub target: String,
    /// The path part of the target (no query).
    pub path: String,
    /// The raw query string, without `?`, if the target had one.
    pub query: Option<String>,
    /// `Host` (HTTP/1.1) or `:authority` (HTTP/2).
    pub authority: Option<String>,
    /// Headers in received order, names lowercase, values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    /// HTTP version.
    pub version: Version,
    /// When the request (head and body) had been received.
    pub at: Instant,
    /// Which TCP connection it came on (1, 2, ... in accept order, per server).
    pub connection: u64,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Form-decoded query pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(forms::query_pairs)
            .unwrap_or_default()
    }

    /// The body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Counters shared by every kind of server here.
#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicUsize,
    open: AtomicUsize,
    tls_failed: AtomicUsize,
    next_conn: AtomicU64,
}

/// Decrements `open` when a connection task ends (or is dropped at shutdown).
struct OpenGuard(Arc<Stats>);

impl OpenGuard {
    fn new(stats: &Arc<Stats>) -> (OpenGuard, u64) {
        stats.accepted.fetch_add(1, Ordering::SeqCst);
        stats.open.fetch_add(1, Ordering::SeqCst);
        let id = stats.next_conn.fetch_add(1, Ordering::SeqCst) + 1;
        (OpenGuard(stats.clone()), id)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The runtime and listening address common to [`Upstream`] and [`RawServer`].
struct ServerCore {
    rt: Option<Runtime>,
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl ServerCore {
    fn start<F, Fut>(name: &str, serve: F) -> ServerCore
    where
        F: FnOnce(TcpListener, Arc<Stats>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("test-{name}"))
            .enable_all()
            .build()
            .expect("build the test server's runtime");
        let std_listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("local addr");
        let stats = Arc::new(Stats::default());
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener).expect("register listener")
        };
        rt.spawn(serve(listener, stats.clone()));
        ServerCore {
            rt: Some(rt),
            addr,
            stats,
        }
    }
}

impl Drop for ServerCore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Blocking is not allowed inside an async context: let the workers wind down.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

fn https(host: &str, addr: SocketAddr) -> String {
    format!("https://{host}:{}", addr.port())
}

// ---------------------------------------------------------------------------
// Per-connection control: the hostile routes end the whole TCP connection.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// SO_LINGER 0, then close: the peer gets a RST.
    Reset,
    /// TLS close_notify, FIN, drain what the peer still sends.
    Clean,
}

struct ConnCtl {
    id: u64,
    kill: Mutex<Option<Kill>>,
    notify: Notify,
}

impl ConnCtl {
    fn kill(&self, how: Kill) {
        *self.kill.lock().unwrap() = Some(how);
        self.notify.notify_one();
    }
}

type Tls = TlsStream<TcpStream>;

/// The TLS stream, shared between hyper (through this handle) and the connection
/// task, which takes it back after hyper is dropped to close it the chosen way.
struct SharedIo(Arc<Mutex<Option<Tls>>>);

impl AsyncRead for SharedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0.lock().unwrap().as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock().unwrap().as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock().unwrap().as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.lock().unwrap().as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.lock().unwrap().as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

// ---------------------------------------------------------------------------
// Response bodies.

/// A response body: all at once, or fed by a producer task through a channel.
enum RespBody {
    Full(Option<Bytes>),
    Chan {
        rx: mpsc::Receiver<Bytes>,
        len: Option<u64>,
    },
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Chan { rx, .. } => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RespBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Chan { len: Some(n), .. } => SizeHint::with_exact(*n),
            RespBody::Chan { len: None, .. } => SizeHint::default(),
        }
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::Full(Some(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_str(content_type).expect("content type"),
    );
    resp
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<RespBody> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).expect("serialize JSON"),
    )
}

/// A streamed response whose chunks come from `produce`, which gets the sender and
/// should stop when a send fails (the client went away).
fn streamed<F, Fut>(content_type: &str, len: Option<u64>, produce: F) -> Response<RespBody>
where
    F: FnOnce(mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(produce(tx));
    let mut resp = Response::new(RespBody::Chan { rx, len });
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_str(content_type).expect("content type"),
    );
    if let Some(n) = len {
        resp.headers_mut()
            .insert("content-length", HeaderValue::from(n));
    }
    resp
}

fn chunk_of_a() -> Bytes {
    static CHUNK_A: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    CHUNK_A
        .get_or_init(|| Bytes::from(vec![b'a'; CHUNK]))
        .clone()
}

// ---------------------------------------------------------------------------
// Routing.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    B64,
    B64Url,
    Hex,
    HexUpper,
    UrlEnc,
    /// Base64 wrapped into lines of 76 characters (MIME, `base64.encodebytes`),
    /// after 42 bytes of `P`, so that a line break falls inside the credential.
    B64Lines,
}

impl Encoding {
    fn apply(self, data: &[u8]) -> String {
        match self {
            Encoding::B64 => forms::b64(data),
            Encoding::B64Url => forms::b64url(data),
            Encoding::Hex => forms::hex_lower(data),
            Encoding::HexUpper => forms::hex_upper(data),
            Encoding::UrlEnc => forms::percent_encode(data),
            Encoding::B64Lines => {
                let b64 = forms::b64(&[&[b'P'; 42][..], data].concat());
                b64.as_bytes()
                    .chunks(76)
                    .map(|line| format!("{}\n", String::from_utf8_lossy(line)))
                    .collect()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Echo,
    EchoEncoded(Encoding),
    EchoHeader,
    EchoGzip,
    EchoCoded,
    /// Compressed (gzip, or zlib) but not labelled so: no Content-Encoding.
    EchoCompressedUnlabelled {
        zlib: bool,
    },
    EchoBinary,
    Status(u16),
    Redirect,
    Big,
    Endless,
    Trickle,
    Hang,
    Reset,
    ShortBody,
    Slow,
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').collect();
    for i in (0..segs.len()).rev() {
        let r = match segs[i] {
            "echo" => Route::Echo,
            "echo-b64" => Route::EchoEncoded(Encoding::B64),
            "echo-b64url" => Route::EchoEncoded(Encoding::B64Url),
            "echo-hex" => Route::EchoEncoded(Encoding::Hex),
            "echo-hex-upper" => Route::EchoEncoded(Encoding::HexUpper),
            "echo-urlenc" => Route::EchoEncoded(Encoding::UrlEnc),
            "echo-b64-lines" => Route::EchoEncoded(Encoding::B64Lines),
            "echo-header" => Route::EchoHeader,
            "echo-gzip" => Route::EchoGzip,
            "echo-coded" => Route::EchoCoded,
            "echo-gzip-unlabelled" => Route::EchoCompressedUnlabelled { zlib: false },
            "echo-zlib-unlabelled" => Route::EchoCompressedUnlabelled { zlib: true },
            "echo-binary" => Route::EchoBinary,
            "status" => match segs.get(i + 1).and_then(|s| s.parse::<u16>().ok()) {
                Some(code) => Route::Status(code),
                None => continue,
            },
            "redirect" => Route::Redirect,
            "big" => Route::Big,
            "endless" => Route::Endless,
            "trickle" => Route::Trickle,
            "hang" => Route::Hang,
            "reset" => Route::Reset,
            "short-body" => Route::ShortBody,
            "slow" => Route::Slow,
            _ => continue,
        };
        return r;
    }
    Route::NotFound
}

/// `mib` concatenated gzip members, each 1 MiB of `%41\u0041` and a newline
/// (text dense in escapes, slow to scrub): a decompression bomb of a few
/// KiB per MiB. The member is compressed once per process.
fn gzip_bomb(mib: usize) -> Vec<u8> {
    use std::io::Write as _;
    static MEMBER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let member = MEMBER.get_or_init(|| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&b"%41\\u0041\n".repeat((1 << 20) / 10))
            .expect("gzip");
        gz.finish().expect("gzip")
    });
    member.repeat(mib)
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn echo_object(r: &Recorded) -> serde_json::Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    if r.version == Version::HTTP_2
        && let Some(a) = &r.authority
    {
        headers.insert("host".into(), a.clone());
    }
    for (n, v) in &r.headers {
        headers
            .entry(n.clone())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    let params: serde_json::Map<String, serde_json::Value> = r
        .query_pairs()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::json!({
        "method": r.method,
        "target": r.target,
        "path": r.path,
        "query": r.query,
        "params": params,
        "version": version_str(r.version),
        "connection": r.connection,
        "headers": headers,
        "body": r.body_str(),
        "body_b64": forms::b64(&r.body),
    })
}

fn query_param(r: &Recorded, name: &str) -> Option<String> {
    r.query_pairs()
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn handle_route(rec: &Recorded, ctl: &Arc<ConnCtl>) -> Option<Response<RespBody>> {
    let resp = match route(&rec.path) {
        Route::Echo => json(StatusCode::OK, &echo_object(rec)),
        Route::EchoEncoded(enc) => {
            let mut obj = echo_object(rec);
            let auth = rec.header("authorization").unwrap_or("");
            let credential = auth.split_once(' ').map(|(_, c)| c).unwrap_or(auth);
            let query: serde_json::Map<String, serde_json::Value> = rec
                .query_pairs()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(enc.apply(v.as_bytes()))))
                .collect();
            obj["encoded"] = serde_json::json!({
                "authorization": rec.header("authorization").map(|a| enc.apply(a.as_bytes())),
                "authorization_credential": rec.header("authorization").map(|_| enc.apply(credential.as_bytes())),
                "x-api-key": rec.header("x-api-key").map(|k| enc.apply(k.as_bytes())),
                "query": query,
            });
            json(StatusCode::OK, &obj)
        }
        Route::EchoHeader => {
            let mut resp = json(StatusCode::OK, &serde_json::json!({"ok": true}));
            for (from, to) in [
                ("authorization", "x-echo-auth"),
                ("x-api-key", "x-echo-key"),
            ] {
                if let Some(v) = rec.header(from).and_then(|v| HeaderValue::from_str(v).ok()) {
                    resp.headers_mut().insert(HeaderName::from_static(to), v);
                }
                // The credential as a header *name* too (lowercased on the
                // way, as HTTP/2 requires): "Bearer X" gives the name "x".
                let last_word = rec.header(from).and_then(|v| v.rsplit(' ').next());
                if let Some(name) =
                    last_word.and_then(|w| HeaderName::from_bytes(w.as_bytes()).ok())
                {
                    resp.headers_mut()
                        .insert(name, HeaderValue::from_static("1"));
                }
            }
            resp
        }
        Route::EchoGzip => {
            use std::io::Write as _;
            let plain = serde_json::to_vec(&echo_object(rec)).expect("serialize");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&plain).expect("gzip");
            let mut resp = full(
                StatusCode::OK,
                "application/json",
                gz.finish().expect("gzip"),
            );
            resp.headers_mut()
                .insert("content-encoding", HeaderValue::from_static("gzip"));
            resp
        }
        Route::EchoCoded => {
            use std::io::Write as _;
            let plain = serde_json::to_vec(&echo_object(rec)).expect("serialize");
            let level = flate2::Compression::default();
            let gzip = |data: &[u8]| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
                gz.write_all(data).expect("gzip");
                gz.finish().expect("gzip")
            };
            let codings = query_param(rec, "ce").unwrap_or_default();
            let codings: Vec<&str> = codings.split(',').filter(|c| !c.is_empty()).collect();
            let mut body = plain.clone();
            for coding in &codings {
                body = match *coding {
                    "gzip" => gzip(&body),
                    "deflate" => {
                        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
                        z.write_all(&body).expect("zlib");
                        z.finish().expect("zlib")
                    }
                    "deflate-raw" => {
                        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), level);
                        d.write_all(&body).expect("deflate");
                        d.finish().expect("deflate")
                    }
                    _ => body,
                };
            }
            if query_param(rec, "junk").is_some() {
                body.extend_from_slice(b"JUNK");
                body.extend_from_slice(&gzip(&plain));
            }
            let mut resp = full(StatusCode::OK, "application/json", body);
            for coding in codings {
                let label = if coding == "deflate-raw" {
                    "deflate"
                } else {
                    coding
                };
                if let Ok(v) = HeaderValue::from_str(label) {
                    resp.headers_mut().append("content-encoding", v);
                }
            }
            resp
        }
        Route::EchoCompressedUnlabelled { zlib } => {
            use std::io::Write as _;
            // `?inflates_mib=N` (gzip): N gzip members of 1 MiB each.
            if !zlib
                && let Some(mib) = query_param(rec, "inflates_mib").and_then(|n| n.parse().ok())
            {
                return Some(full(StatusCode::OK, "application/gzip", gzip_bomb(mib)));
            }
            // `?plain=1`: a harmless text instead of the echo object.
            let plain = if rec.query_pairs().iter().any(|(k, _)| k == "plain") {
                b"hello, compressed world".to_vec()
            } else {
                serde_json::to_vec(&echo_object(rec)).expect("serialize")
            };
            let level = flate2::Compression::default();
            let (bytes, content_type) = if zlib {
                let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
                z.write_all(&plain).expect("zlib");
                (z.finish().expect("zlib"), "application/octet-stream")
            } else {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
                gz.write_all(&plain).expect("gzip");
                (gz.finish().expect("gzip"), "application/gzip")
            };
            full(StatusCode::OK, content_type, bytes)
        }
        Route::EchoBinary => {
            let mut body = BINARY_PREFIX.to_vec();
            body.extend_from_slice(rec.header("authorization").unwrap_or("").as_bytes());
            body.extend_from_slice(BINARY_SUFFIX);
            full(StatusCode::OK, "application/octet-stream", body)
        }
        Route::Status(code) => match StatusCode::from_u16(code) {
            Ok(status) => json(status, &serde_json::json!({"status": code})),
            Err(_) => full(StatusCode::BAD_REQUEST, "text/plain", "bad status code"),
        },
        Route::Redirect => {
            match query_param(rec, "to").and_then(|to| HeaderValue::from_str(&to).ok()) {
                Some(loc) => {
                    let mut resp = full(StatusCode::FOUND, "text/plain", "redirecting");
                    resp.headers_mut().insert("location", loc);
                    resp
                }
                None => full(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "redirect needs ?to=URL",
                ),
            }
        }
        Route::Big => {
            let n: u64 = query_param(rec, "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            streamed("text/plain", Some(n), move |tx| async move {
                let mut left = n;
                while left > 0 {
                    let k = left.min(CHUNK as u64) as usize;
                    if tx.send(chunk_of_a().slice(..k)).await.is_err() {
                        return;
                    }
                    left -= k as u64;
                }
            })
        }
        Route::Endless => streamed("text/plain", None, |tx| async move {
            while tx.send(chunk_of_a()).await.is_ok() {}
        }),
        Route::Trickle => {
            let ms: u64 = query_param(rec, "interval_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            streamed("text/plain", None, move |tx| async move {
                let mut tick = tokio::time::interval(Duration::from_millis(ms.max(1)));
                loop {
                    tick.tick().await;
                    if tx.send(Bytes::from_static(b".")).await.is_err() {
                        return;
                    }
                }
            })
        }
        Route::Hang => return None,
        Route::Reset | Route::ShortBody => {
            let (len, how) = if route(&rec.path) == Route::Reset {
                (1000, Kill::Reset)
            } else {
                (100, Kill::Clean)
            };
            let ctl = ctl.clone();
            streamed("text/plain", Some(len), move |tx| async move {
                if tx.send(Bytes::from_static(b"0123456789")).await.is_err() {
                    return;
                }
                // Let hyper flush those 10 bytes onto the wire, then end the connection.
                tokio::time::sleep(Duration::from_millis(50)).await;
                ctl.kill(how);
                tx.closed().await;
            })
        }
        Route::Slow => json(StatusCode::OK, &echo_object(rec)),
        Route::NotFound => full(StatusCode::NOT_FOUND, "text/plain", "not found"),
    };
    Some(resp)
}

// ---------------------------------------------------------------------------
// The upstream proper.

/// The request log and its condition variable.
#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Recorded>>,
    changed: Condvar,
}

impl Log {
    fn push(&self, r: Recorded) {
        self.requests.lock().unwrap().push(r);
        self.changed.notify_all();
    }
}

async fn handle(
    req: Request<Incoming>,
    log: Arc<Log>,
    ctl: Arc<ConnCtl>,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(e) => {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("body: {e}"),
            ));
        }
    };
    let uri = &parts.uri;
    let target = if parts.version == Version::HTTP_2 || uri.scheme().is_none() {
        uri.path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| uri.to_string())
    } else {
        uri.to_string()
    };
    let authority = match parts.version {
        Version::HTTP_2 => uri.authority().map(|a| a.to_string()),
        _ => parts
            .headers
            .get("host")
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
    };
    let rec = Recorded {
        method: parts.method.as_str().to_string(),
        target,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        authority,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        version: parts.version,
        at: Instant::now(),
        connection: ctl.id,
    };
    log.push(rec.clone());
    if route(&rec.path) == Route::Slow {
        let ms: u64 = query_param(&rec, "ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match handle_route(&rec, &ctl) {
        // HEAD: a GET's status and headers, no body (HTTP/2 forbids DATA after
        // a HEAD's response headers; hyper's HTTP/1.1 server drops it itself).
        Some(resp) if parts.method == hyper::Method::HEAD => {
            let (head, _) = resp.into_parts();
            Ok(Response::from_parts(head, RespBody::Full(None)))
        }
        Some(resp) => Ok(resp),
        None => std::future::pending().await,
    }
}

async fn serve_upstream(
    listener: TcpListener,
    stats: Arc<Stats>,
    acceptor: TlsAcceptor,
    log: Arc<Log>,
) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let (guard, id) = OpenGuard::new(&stats);
        let (acceptor, log, stats) = (acceptor.clone(), log.clone(), stats.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let _ = tcp.set_nodelay(true);
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(_) => {
                    stats.tls_failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            serve_connection(tls, id, log).await;
        });
    }
}

async fn serve_connection(tls: Tls, id: u64, log: Arc<Log>) {
    let shared = Arc::new(Mutex::new(Some(tls)));
    let ctl = Arc::new(ConnCtl {
        id,
        kill: Mutex::new(None),
        notify: Notify::new(),
    });
    let svc = {
        let ctl = ctl.clone();
        service_fn(move |req| handle(req, log.clone(), ctl.clone()))
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(SharedIo(shared.clone())), svc);
    let mut conn = Box::pin(conn);
    tokio::select! {
        _ = &mut conn => {}
        _ = ctl.notify.notified() => {}
    }
    drop(conn);
    let stream = shared.lock().unwrap().take();
    let how = *ctl.kill.lock().unwrap();
    match (how, stream) {
        (Some(Kill::Reset), Some(s)) => {
            let _ = s.get_ref().0.set_zero_linger();
            drop(s);
        }
        (Some(Kill::Clean), Some(mut s)) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), s.shutdown()).await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        _ => {}
    }
}

/// The recording HTTPS upstream. See the [module docs](self) for the routes.
pub struct Upstream {
    core: ServerCore,
    log: Arc<Log>,
    tls: TlsKind,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.core.addr)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Upstream {
    /// Starts a server on `127.0.0.1:0` presenting `tls`'s certificate.
    pub fn start(tls: TlsKind) -> Upstream {
        let acceptor = TlsAcceptor::from(Pki::get().server_config(tls));
        let log = Arc::new(Log::default());
        let log2 = log.clone();
        let core = ServerCore::start("upstream", move |listener, stats| {
            serve_upstream(listener, stats, acceptor, log2)
        });
        Upstream { core, log, tls }
    }

    /// Which certificate this server presents.
    pub fn tls(&self) -> TlsKind {
        self.tls
    }

    /// `https://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        https("127.0.0.1", self.core.addr)
    }

    /// `https://localhost:PORT` (no trailing slash).
    pub fn url_localhost(&self) -> String {
        https("localhost", self.core.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.core.addr.port()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.requests.lock().unwrap().clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.log.requests.lock().unwrap().len()
    }

    /// Forgets the recorded requests (the connection counters stay).
    pub fn clear(&self) {
        self.log.requests.lock().unwrap().clear();
    }

    /// Waits until at least `n` requests were recorded and returns them all;
    /// panics after `timeout` listing what did arrive.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut reqs = self.log.requests.lock().unwrap();
        while reqs.len() < n {
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> = reqs
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.target))
                    .collect();
                panic!(
                    "upstream: expected {n} request(s) within {timeout:?}, got {}: {seen:?}",
                    reqs.len()
                );
            }
            reqs = self
                .log
                .changed
                .wait_timeout(reqs, deadline - now)
                .unwrap()
                .0;
        }
        reqs.clone()
    }

    /// TCP connections accepted so far (including those whose TLS handshake failed).
    pub fn connections(&self) -> usize {
        self.core.stats.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open.
    pub fn open_connections(&self) -> usize {
        self.core.stats.open.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (e.g. the client refused the certificate).
    pub fn tls_failures(&self) -> usize {
        self.core.stats.tls_failed.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` until at most `n` connections are open; returns whether it happened.
    pub fn wait_open_connections_at_most(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.open_connections() <= n)
    }
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Raw servers.

/// Servers that do not speak HTTP: see [`RawServer::garbage`] and [`RawServer::plain_tcp_hang`].
pub struct RawServer {
    core: ServerCore,
}

impl std::fmt::Debug for RawServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawServer")
            .field("addr", &self.core.addr)
            .finish()
    }
}

/// What [`RawServer::garbage`] writes after the TLS handshake.
pub const GARBAGE: &[u8] = b"garbage\r\n\r\nthis is not HTTP at all\x00\xff\xfe\r\n\r\n";

impl RawServer {
    /// Completes a TLS handshake with the good certificate (ALPN `h2` and
    /// `http/1.1` offered), writes [`GARBAGE`] at once, then reads and discards
    /// whatever the client sends until it closes. No HTTP.
    pub fn garbage() -> RawServer {
        let acceptor = TlsAcceptor::from(Pki::get().server_config(TlsKind::Good));
        let core = ServerCore::start("garbage", move |listener, stats| async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (guard, _id) = OpenGuard::new(&stats);
                let (acceptor, stats) = (acceptor.clone(), stats.clone());
                tokio::spawn(async move {
                    let _guard = guard;
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        stats.tls_failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    if tls.write_all(GARBAGE).await.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                    let mut sink = [0u8; 4096];
                    while let Ok(n) = tls.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        RawServer { core }
    }

    /// Accepts TCP connections and holds them open, never reading or writing a byte
    /// (a TLS client waits for a ServerHello forever).
    pub fn plain_tcp_hang() -> RawServer {
        let core = ServerCore::start("tcp-hang", move |listener, stats| async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (guard, _id) = OpenGuard::new(&stats);
                tokio::spawn(async move {
                    let _held = (tcp, guard);
                    std::future::pending::<()>().await;
                });
            }
        });
        RawServer { core }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        https("127.0.0.1", self.core.addr)
    }

    /// `https://localhost:PORT`.
    pub fn url_localhost(&self) -> String {
        https("localhost", self.core.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.core.stats.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections currently open.
    pub fn open_connections(&self) -> usize {
        self.core.stats.open.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/echo"), Route::Echo);
        assert_eq!(route("/api/v3/echo/repos/o/r/issues"), Route::Echo);
        assert_eq!(route("/api/echo-b64"), Route::EchoEncoded(Encoding::B64));
        assert_eq!(route("/echo/status/503"), Route::Status(503));
        assert_eq!(route("/echo/status/x"), Route::Echo);
        assert_eq!(route("/x/short-body"), Route::ShortBody);
        assert_eq!(route("/nothing/here"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/echoes"), Route::NotFound);
    }
}
