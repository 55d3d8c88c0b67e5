//! A minimal HTTPS client (hyper + tokio-rustls) for talking to the test servers
//! directly, e.g. to check an [`Upstream`](crate::upstream::Upstream) route or a
//! certificate without going through vaultd.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use vaultd_tests::client::{Proto, TestClient};
//! use vaultd_tests::upstream::{TlsKind, Upstream};
//! let up = Upstream::start(TlsKind::Good);
//! let mut c = TestClient::connect(up.addr(), "localhost", Proto::Http2).await?;
//! let r = c.request("GET", "/echo?x=1", &[], b"").await?;
//! assert_eq!(r.status, 200);
//! # Ok(()) }
//! ```
//!
//! Async only (use it from `#[tokio::test]`); it trusts the good test CA unless
//! given another rustls `ClientConfig`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::pki::Pki;

/// Which HTTP version to speak (and offer through ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1, ALPN `http/1.1`.
    Http1,
    /// HTTP/2, ALPN `h2`.
    Http2,
}

/// TCP connect and TLS handshake to `addr`, verifying the certificate for `server_name`.
pub async fn connect_tls(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_string()).context("server name")?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(tls)
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One HTTPS connection, reused for every request sent through it.
pub struct TestClient {
    sender: Sender,
    authority: String,
    /// The ALPN protocol the server chose, if any.
    pub alpn: Option<Vec<u8>>,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// A fully read response.
#[derive(Clone, Debug)]
pub struct TestResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body (still compressed if the server compressed it).
    pub body: Bytes,
}

impl TestResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl TestClient {
    /// Connects trusting only the good test CA.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        proto: Proto,
    ) -> anyhow::Result<TestClient> {
        let alpn: &[&[u8]] = match proto {
            Proto::Http1 => &[b"http/1.1"],
            Proto::Http2 => &[b"h2"],
        };
        Self::connect_with(addr, server_name, proto, Pki::get().client_config(alpn)).await
    }

    /// Connects with a caller-supplied rustls configuration.
    pub async fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        proto: Proto,
        config: Arc<ClientConfig>,
    ) -> anyhow::Result<TestClient> {
        let tls = connect_tls(addr, server_name, config).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        let io = TokioIo::new(tls);
        let sender = match proto {
            Proto::Http1 => {
                let (send, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::H1(send)
            }
            Proto::Http2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::H2(send)
            }
        };
        Ok(TestClient {
            sender,
            authority: format!("{server_name}:{}", addr.port()),
            alpn,
        })
    }

    /// Sends a request and returns the response with its body still streaming.
    /// `target` is origin-form (`/path?query`).
    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Response<Incoming>> {
        let uri = match self.sender {
            Sender::H1(_) => target.to_string(),
            Sender::H2(_) => format!("https://{}{target}", self.authority),
        };
        let mut req = Request::builder().method(method).uri(uri);
        if matches!(self.sender, Sender::H1(_)) {
            req = req.header("host", &self.authority);
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body)))?;
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        Ok(resp)
    }

    /// Sends a request and reads the whole response. A body that fails midway is an error.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<TestResponse> {
        let resp = self.send(method, target, headers, body).await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        Ok(TestResponse {
            status,
            headers,
            body,
        })
    }

    /// `GET target`, whole response.
    pub async fn get(&mut self, target: &str) -> anyhow::Result<TestResponse> {
        self.request("GET", target, &[], b"").await
    }
}

/// Reads the next data frame of a streaming body: `Ok(None)` at its end.
pub async fn next_chunk(body: &mut Incoming) -> anyhow::Result<Option<Bytes>> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => bail!(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
