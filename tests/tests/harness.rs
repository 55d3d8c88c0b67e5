//! Tests of the harness itself: the TLS upstream, its certificates and its hostile routes.
//! No vaultd binary is involved.

use std::time::{Duration, Instant};

use vaultd_tests::client::{Proto, TestClient, connect_tls, next_chunk};
use vaultd_tests::pki::Pki;
use vaultd_tests::upstream::{BINARY_PREFIX, BINARY_SUFFIX, GARBAGE, RawServer, TlsKind, Upstream};

const PROTOS: [Proto; 2] = [Proto::Http1, Proto::Http2];

fn error_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_tls_both_protocols_and_both_names() {
    let up = Upstream::start(TlsKind::Good);
    assert!(up.url().starts_with("https://127.0.0.1:"));
    assert_eq!(
        up.url_localhost(),
        format!("https://localhost:{}", up.port())
    );
    for proto in PROTOS {
        for name in ["127.0.0.1", "localhost"] {
            up.clear();
            let before = up.connections();
            let mut c = TestClient::connect(up.addr(), name, proto).await.unwrap();
            let want_alpn: &[u8] = if proto == Proto::Http2 {
                b"h2"
            } else {
                b"http/1.1"
            };
            assert_eq!(c.alpn.as_deref(), Some(want_alpn));
            let target = "/api/v3/echo/a%2Fb/%2e%2e/c?q=%41+b&x=1&x=2";
            let r = c
                .request(
                    "POST",
                    target,
                    &[("authorization", "Bearer tok-123"), ("x-thing", "v")],
                    b"hello",
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            let j = r.json();
            assert_eq!(j["method"], "POST");
            assert_eq!(j["target"], target);
            assert_eq!(j["path"], "/api/v3/echo/a%2Fb/%2e%2e/c");
            assert_eq!(j["query"], "q=%41+b&x=1&x=2");
            assert_eq!(j["params"]["q"], "A b");
            assert_eq!(j["params"]["x"], "2");
            assert_eq!(j["headers"]["authorization"], "Bearer tok-123");
            assert_eq!(j["headers"]["x-thing"], "v");
            assert_eq!(j["headers"]["host"], format!("{name}:{}", up.port()));
            assert_eq!(j["body"], "hello");
            // Keep-alive: a second request on the same connection.
            let r2 = c.get("/echo").await.unwrap();
            assert_eq!(r2.json()["connection"], j["connection"]);
            assert_eq!(
                up.connections(),
                before + 1,
                "{proto:?} reused its connection"
            );

            let reqs = up.requests();
            assert_eq!(reqs.len(), 2);
            assert_eq!(reqs[0].target, target);
            assert_eq!(reqs[0].query.as_deref(), Some("q=%41+b&x=1&x=2"));
            assert_eq!(reqs[0].header("Authorization"), Some("Bearer tok-123"));
            assert_eq!(reqs[0].body, b"hello");
            assert_eq!(
                reqs[0].authority.as_deref(),
                Some(format!("{name}:{}", up.port()).as_str())
            );
            let want_version = if proto == Proto::Http2 {
                hyper::Version::HTTP_2
            } else {
                hyper::Version::HTTP_11
            };
            assert_eq!(reqs[0].version, want_version);
            assert!(reqs[0].at <= reqs[1].at);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_failures() {
    let pki = Pki::get();
    // The good CA's PEM written for a policy's ca_file.
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca_pem(dir.path());
    assert_eq!(ca, dir.path().join("ca.pem"));
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );

    let unknown = Upstream::start(TlsKind::UnknownCa);
    let wrong = Upstream::start(TlsKind::WrongName);
    for (up, name, needle) in [
        (&unknown, "localhost", "UnknownIssuer"),
        (&unknown, "127.0.0.1", "UnknownIssuer"),
        (&wrong, "localhost", "not valid for name"),
        (&wrong, "127.0.0.1", "not valid for name"),
    ] {
        let err = connect_tls(up.addr(), name, pki.client_config(&[b"h2", b"http/1.1"]))
            .await
            .unwrap_err();
        let chain = error_chain(&err);
        assert!(chain.contains(needle), "{:?} {name}: {chain}", up.tls());
    }
    // The wrong-name certificate is valid for its own name, so only the name is wrong.
    let mut c = TestClient::connect(wrong.addr(), "wrong.example", Proto::Http1)
        .await
        .unwrap();
    assert_eq!(c.get("/echo").await.unwrap().status, 200);

    assert!(wait(|| unknown.tls_failures() == 2));
    assert!(wait(|| wrong.tls_failures() == 2));
    assert_eq!(
        unknown.request_count(),
        0,
        "no request crossed a failed handshake"
    );
    assert_eq!(wrong.requests().len(), 1);
}

fn wait(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_routes() {
    let up = Upstream::start(TlsKind::Good);
    for proto in PROTOS {
        let mut c = TestClient::connect(up.addr(), "localhost", proto)
            .await
            .unwrap();
        let auth = [
            ("authorization", "Bearer s3cr3t/+x"),
            ("x-api-key", "key-9"),
        ];

        let r = c
            .request("GET", "/api/echo-b64?v=s3cr3t", &auth, b"")
            .await
            .unwrap();
        let e = &r.json()["encoded"];
        assert_eq!(e["authorization"], "QmVhcmVyIHMzY3IzdC8reA==");
        assert_eq!(e["authorization_credential"], "czNjcjN0Lyt4");
        assert_eq!(e["x-api-key"], "a2V5LTk=");
        assert_eq!(e["query"]["v"], "czNjcjN0");
        let r = c
            .request("GET", "/api/echo-hex?v=s3", &auth, b"")
            .await
            .unwrap();
        assert_eq!(r.json()["encoded"]["query"]["v"], "7333");
        let r = c
            .request("GET", "/api/echo-hex-upper?v=\x7f", &auth, b"")
            .await;
        assert!(
            r.is_err() || r.unwrap().status == 400,
            "raw DEL in a target is refused by hyper"
        );
        let r = c
            .request("GET", "/api/echo-urlenc", &auth, b"")
            .await
            .unwrap();
        assert_eq!(
            r.json()["encoded"]["authorization_credential"],
            "s3cr3t%2F%2Bx"
        );
        let r = c
            .request("GET", "/api/echo-b64url", &auth, b"")
            .await
            .unwrap();
        assert_eq!(
            r.json()["encoded"]["authorization_credential"],
            "czNjcjN0Lyt4"
        );

        let r = c
            .request("GET", "/x/echo-header", &auth, b"")
            .await
            .unwrap();
        assert_eq!(r.header("x-echo-auth"), Some("Bearer s3cr3t/+x"));
        assert_eq!(r.header("x-echo-key"), Some("key-9"));
        assert!(!String::from_utf8_lossy(&r.body).contains("s3cr3t"));

        let r = c.request("GET", "/x/echo-gzip", &auth, b"").await.unwrap();
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain)
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(j["headers"]["authorization"], "Bearer s3cr3t/+x");

        let r = c
            .request("GET", "/x/echo-binary", &auth, b"")
            .await
            .unwrap();
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.body,
            [BINARY_PREFIX, b"Bearer s3cr3t/+x", BINARY_SUFFIX].concat()
        );
        assert!(std::str::from_utf8(&r.body).is_err());

        let r = c.get("/api/status/503").await.unwrap();
        assert_eq!((r.status, r.json()["status"].as_u64()), (503, Some(503)));
        let r = c
            .get("/api/redirect?to=https%3A%2F%2Fevil.example%2Fx%3Fy%3D1")
            .await
            .unwrap();
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some("https://evil.example/x?y=1"));
        assert_eq!(c.get("/api/nothing").await.unwrap().status, 404);

        let r = c.get("/api/big?bytes=200000").await.unwrap();
        assert_eq!(r.header("content-length"), Some("200000"));
        assert_eq!(r.body.len(), 200_000);
        assert!(r.body.iter().all(|&b| b == b'a'));

        // endless: read 1 MiB, then walk away.
        let resp = c.send("GET", "/api/endless", &[], b"").await.unwrap();
        assert_eq!(resp.headers().get("content-length"), None);
        let mut body = resp.into_body();
        let mut got = 0;
        while got < (1 << 20) {
            got += next_chunk(&mut body)
                .await
                .unwrap()
                .expect("endless never ends")
                .len();
        }
        drop(body);
        // An abandoned HTTP/1.1 body kills its connection: start a new one.
        let mut c = TestClient::connect(up.addr(), "localhost", proto)
            .await
            .unwrap();

        // slow: recorded on arrival, answered later.
        up.clear();
        let t0 = Instant::now();
        let slow = c.send("GET", "/api/slow?ms=300", &[], b"");
        let (resp, arrived) = tokio::join!(slow, async {
            loop {
                if up.request_count() == 1 || t0.elapsed() > Duration::from_secs(2) {
                    break t0.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert_eq!(resp.unwrap().status(), 200);
        assert!(
            arrived < Duration::from_millis(250),
            "recorded before sleeping: {arrived:?}"
        );
        assert!(t0.elapsed() >= Duration::from_millis(300));

        // hang: recorded, never answered.
        up.clear();
        let hung = tokio::time::timeout(
            Duration::from_millis(300),
            c.send("GET", "/api/hang", &[], b""),
        )
        .await;
        assert!(hung.is_err(), "hang answered");
        assert_eq!(up.requests()[0].path, "/api/hang");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_routes() {
    let up = Upstream::start(TlsKind::Good);
    for proto in PROTOS {
        // reset: 10 bytes of a promised 1000, then an error, not a clean end.
        let mut c = TestClient::connect(up.addr(), "localhost", proto)
            .await
            .unwrap();
        let resp = c.send("GET", "/api/reset", &[], b"").await.unwrap();
        assert_eq!(resp.headers()["content-length"], "1000");
        let mut body = resp.into_body();
        assert_eq!(
            &next_chunk(&mut body).await.unwrap().unwrap()[..],
            b"0123456789"
        );
        let err = match next_chunk(&mut body).await {
            Ok(Some(_)) => panic!("{proto:?}: more data after the reset"),
            Ok(None) => panic!("{proto:?}: reset body ended cleanly"),
            Err(e) => error_chain(&e),
        };
        eprintln!("{proto:?} reset: {err}");
        if proto == Proto::Http1 {
            assert!(
                err.to_lowercase().contains("reset"),
                "{proto:?}: expected a connection reset, got {err}"
            );
        }

        // short-body: 10 bytes of a promised 100, clean close: still an error.
        let mut c = TestClient::connect(up.addr(), "localhost", proto)
            .await
            .unwrap();
        let err = c.get("/api/short-body").await.unwrap_err();
        let err = error_chain(&err);
        eprintln!("{proto:?} short-body: {err}");
        assert!(
            !err.to_lowercase().contains("reset"),
            "{proto:?}: short-body must close cleanly: {err}"
        );

        // trickle: bytes arrive one at a time, slowly.
        let mut c = TestClient::connect(up.addr(), "localhost", proto)
            .await
            .unwrap();
        let resp = c
            .send("GET", "/api/trickle?interval_ms=150", &[], b"")
            .await
            .unwrap();
        let mut body = resp.into_body();
        let t0 = Instant::now();
        let mut n = 0;
        while n < 3 {
            n += next_chunk(&mut body).await.unwrap().unwrap().len();
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(250) && n == 3,
            "3 bytes in {took:?}"
        );
    }
    // Default trickle: a byte per second.
    let mut c = TestClient::connect(up.addr(), "localhost", Proto::Http1)
        .await
        .unwrap();
    let mut body = c
        .send("GET", "/trickle", &[], b"")
        .await
        .unwrap()
        .into_body();
    next_chunk(&mut body).await.unwrap().unwrap();
    let t0 = Instant::now();
    let second = tokio::time::timeout(Duration::from_millis(700), next_chunk(&mut body)).await;
    assert!(
        second.is_err(),
        "second trickle byte after {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_servers() {
    let garbage = RawServer::garbage();
    let mut tls = connect_tls(
        garbage.addr(),
        "localhost",
        Pki::get().client_config(&[b"http/1.1"]),
    )
    .await
    .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tls, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; GARBAGE.len()];
    tokio::io::AsyncReadExt::read_exact(&mut tls, &mut buf)
        .await
        .unwrap();
    assert_eq!(buf, GARBAGE);
    let err = TestClient::connect(garbage.addr(), "localhost", Proto::Http1)
        .await
        .unwrap()
        .get("/")
        .await;
    assert!(err.is_err(), "garbage parsed as HTTP");

    let hang = RawServer::plain_tcp_hang();
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        connect_tls(hang.addr(), "localhost", Pki::get().client_config(&[])),
    )
    .await;
    assert!(r.is_err(), "TLS handshake with a silent server finished");
    assert_eq!(hang.connections(), 1);
    assert_eq!(hang.open_connections(), 1);
    assert!(hang.url().starts_with("https://127.0.0.1:"));
}

/// From a plain #[test], with no runtime of the test's own, and servers stop when dropped.
#[test]
fn works_without_a_test_runtime_and_stops_on_drop() {
    let up = Upstream::start(TlsKind::Good);
    let addr = up.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = TestClient::connect(addr, "127.0.0.1", Proto::Http1)
            .await
            .unwrap();
        assert_eq!(c.get("/echo").await.unwrap().status, 200);
        // Keep a hanging request open across the drop.
        let _ =
            tokio::time::timeout(Duration::from_millis(50), c.send("GET", "/hang", &[], b"")).await;
    });
    let reqs = up.wait_for_requests(2, Duration::from_secs(1));
    assert_eq!(reqs[1].path, "/hang");
    assert_eq!(up.open_connections(), 1);
    drop(up);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener still open after drop"
    );

    let hang = RawServer::plain_tcp_hang();
    let addr = hang.addr();
    let _held = std::net::TcpStream::connect(addr).unwrap();
    drop(hang);
    assert!(std::net::TcpStream::connect(addr).is_err());
}
