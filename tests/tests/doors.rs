//! Issue 5: bad input at vaultd's unix socket. The agent can open the socket
//! (same uid), so whatever it writes there must end in a refusal or a closed
//! connection, with vaultd's memory and file descriptors bounded, and every
//! other client served throughout (DESIGN.md rule 10).
//!
//! - malformed gRPC messages (garbage protobuf through a raw codec), on
//!   several RPCs;
//! - an oversized message (over the server's 11 MiB decoding limit), and a
//!   frame that only *claims* 4 GiB;
//! - bytes that are not HTTP/2 at all;
//! - slow-loris clients (a byte now and then) and a silent client (closed
//!   after `FIRST_BYTE_TIMEOUT`, 10 s);
//! - 2000 idle connections at once;
//! - one connection opening more HTTP/2 streams than vaultd allows
//!   (`MAX_CONCURRENT_STREAMS`, 128) and ending none of them.
//!
//! Figures are printed; run with `--nocapture` to see them.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _, Bytes};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use vault_proto::v1::StatusRequest;
use vaultd_tests::{Daemon, VaultEnv, assert_no_canary};

const CANARY: &str = "CANARY-doors-8c1f5e2b97";
/// vaultd's peak resident memory must stay under this (bytes).
const RSS_BOUND: u64 = 150 * 1024 * 1024;

// ---------------------------------------------------------------------------
// A codec that sends and receives raw bytes: the message on the wire is exactly
// what the test chose, whatever the RPC's real message type.

#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends `bytes` as the request message of `/vault.v1.Vault/{method}`.
async fn raw_call(socket: &Path, method: &str, bytes: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = vault_proto::client::channel(socket);
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(64 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
    let path = PathAndQuery::try_from(format!("/vault.v1.Vault/{method}")).unwrap();
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

// ---------------------------------------------------------------------------
// The daemon and what it uses.

struct Rig {
    env: VaultEnv,
    daemon: Daemon,
    rt: tokio::runtime::Runtime,
}

fn rig() -> Rig {
    rig_with_config("")
}

/// Like [`rig`] with `vaultd.toml` = `config`.
fn rig_with_config(config: &str) -> Rig {
    let env = VaultEnv::new();
    if !config.is_empty() {
        env.write_config(config);
    }
    let daemon = env.start_unlocked();
    env.set_secret("tok", CANARY.as_bytes());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Rig { env, daemon, rt }
}

impl Rig {
    /// `vaultctl status` answers (and says unlocked) within 3 s; returns how long it took.
    #[track_caller]
    fn status_prompt(&self) -> Duration {
        let t = Instant::now();
        let out = self
            .env
            .ctl_cmd(&["status", "--json"])
            .timeout(Duration::from_secs(10))
            .run();
        let took = t.elapsed();
        out.assert_ok();
        assert_eq!(out.json()["state"], "unlocked", "{out}");
        assert!(
            took < Duration::from_secs(3),
            "vaultctl status took {took:?}"
        );
        took
    }

    /// A gRPC Status call on a fresh connection answers within 2 s.
    fn grpc_status_prompt(&self) -> Duration {
        let socket = self.env.socket_path();
        self.rt.block_on(async {
            let t = Instant::now();
            let mut c = tokio::time::timeout(
                Duration::from_secs(2),
                vault_proto::client::connect(&socket, Duration::from_secs(2)),
            )
            .await
            .expect("connect within 2 s")
            .expect("connect");
            let s = tokio::time::timeout(Duration::from_secs(2), c.status(StatusRequest {}))
                .await
                .expect("status within 2 s")
                .expect("status")
                .into_inner();
            assert_eq!(s.state, "unlocked");
            t.elapsed()
        })
    }

    fn alive(&mut self) {
        assert!(
            self.daemon.try_wait().is_none(),
            "vaultd died; stderr:\n{}",
            self.daemon.stderr()
        );
    }

    fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    fn finish(mut self) {
        self.alive();
        self.status_prompt();
        // Nothing the garbage did changed the vault.
        let names = self.env.ctl(&["secret", "list"]);
        assert_eq!(names.assert_ok().stdout.trim(), "tok");
        drop(self.rt);
        assert_no_canary(&self.env, CANARY);
    }
}

fn vm_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Raises this process's soft RLIMIT_NOFILE to at least `n` (up to the hard limit).
fn raise_nofile(n: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let cur = lim.current.unwrap_or(u64::MAX);
    if cur < n {
        lim.current = Some(lim.maximum.map_or(n, |max| n.min(max)));
        setrlimit(Resource::Nofile, lim).expect("setrlimit(RLIMIT_NOFILE)");
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn malformed_grpc_messages_are_refused_and_change_nothing() {
    let mut rig = rig();
    let socket = rig.env.socket_path();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        // Field 31, wire type 7: no such wire type.
        ("bad wire type", vec![0xff; 32]),
        // Field 2 (a string) claiming 4 GiB.
        ("length past the end", b"\x12\xff\xff\xff\xff\x0f".to_vec()),
        // Field 1 (a string) that is not UTF-8.
        ("invalid UTF-8 string", b"\x0a\x02\xc3\x28".to_vec()),
        // A varint that never ends.
        (
            "endless varint",
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        ),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
    ];
    let methods = [
        "Execute",
        "Unlock",
        "SetSecret",
        "ApplyPolicy",
        "AddAgent",
        "Hello",
    ];
    let mut refused = 0;
    for (what, bytes) in &garbage {
        for m in methods {
            let out = rig.rt.block_on(raw_call(&socket, m, bytes.clone()));
            match out {
                Err(s) => {
                    assert_ne!(s.code(), tonic::Code::Ok);
                    assert!(
                        !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
                        "{what} to {m}: the daemon should refuse the message, not drop the call: {s:?}"
                    );
                    refused += 1;
                }
                // A few garbage strings happen to decode (unknown fields are skipped):
                // then the RPC runs on empty fields and must refuse on its own terms.
                Ok(_) if m == "Hello" => {}
                Ok(reply) => panic!("{what} to {m} was accepted: {reply:?}"),
            }
        }
        rig.alive();
    }
    println!(
        "malformed messages: {refused} of {} refused, daemon alive",
        garbage.len() * methods.len()
    );
    // A well-formed call on a fresh connection still works at once.
    println!("status after garbage: {:?}", rig.grpc_status_prompt());
    rig.finish();
}

#[test]
fn oversized_messages_are_refused_without_buffering_them() {
    let mut rig = rig();
    let socket = rig.env.socket_path();
    // Over max_decoding_message_size (11 MiB): refused, daemon fine.
    let big = vec![0u8; 12 << 20];
    let t = Instant::now();
    let out = rig.rt.block_on(raw_call(&socket, "Execute", big));
    let took = t.elapsed();
    let s = out.expect_err("a 12 MiB message must be refused");
    assert!(
        matches!(
            s.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
        ),
        "{s:?}"
    );
    println!(
        "12 MiB message: {:?} in {took:?}: {}",
        s.code(),
        s.message()
    );
    rig.alive();

    // A frame whose header claims ~4 GiB, followed by 16 bytes and then nothing:
    // refused from the header alone, promptly.
    let t = Instant::now();
    let (grpc_status, msg) = rig.rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut frame = vec![0u8, 0xff, 0xff, 0xff, 0xf0];
        frame.extend_from_slice(&[0u8; 16]);
        let req = hyper::Request::post("http://vaultd.invalid/vault.v1.Vault/Execute")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(frame)))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let head = resp.headers().clone();
        let collected = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .expect("the body ends within 5 s")
            .unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let get = |n: &str| {
            trailers
                .get(n)
                .or_else(|| head.get(n))
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        (get("grpc-status"), get("grpc-message"))
    });
    let took = t.elapsed();
    let code = grpc_status.expect("a grpc-status");
    assert_ne!(code, "0", "a 4 GiB frame was accepted");
    assert!(took < Duration::from_secs(3), "{took:?}");
    println!("frame claiming 4 GiB: grpc-status {code} in {took:?}: {msg:?}");

    let hwm = vm_bytes(rig.pid(), "VmHWM");
    assert!(hwm < RSS_BOUND, "vaultd peaked at {hwm} bytes");
    println!("vaultd VmHWM after oversized messages: {} MiB", hwm >> 20);
    rig.grpc_status_prompt();
    rig.finish();
}

#[test]
fn bytes_that_are_not_http2_get_the_connection_closed() {
    let mut rig = rig();
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"\x00\xff\xfe garbage \r\n\r\n\x16\x03\x01\x02\x00"[..],
        &[0u8; 100_000][..],
    ] {
        let mut s = UnixStream::connect(rig.env.socket_path()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = Instant::now();
        let _ = s.write_all(junk);
        let mut buf = [0u8; 4096];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break false,
                Err(_) => break true, // reset
            }
        };
        assert!(closed, "vaultd kept a connection that sent junk open");
        println!(
            "junk ({} bytes): closed after {:?}",
            junk.len(),
            t.elapsed()
        );
        rig.alive();
    }
    rig.grpc_status_prompt();
    rig.finish();
}

#[test]
fn silent_connection_is_closed_after_the_first_byte_timeout() {
    let rig = rig();
    let mut s = UnixStream::connect(rig.env.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let r = s.read(&mut buf);
    let took = t.elapsed();
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected the daemon to close the silent connection, got {r:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(13),
        "closed after {took:?}, expected about 10 s"
    );
    println!("silent connection closed after {took:?}");
    rig.finish();
}

#[test]
fn slow_loris_clients_do_not_block_others() {
    // More slow clients than the daemon has connection slots.
    const SLOTS: usize = 16;
    let rig = rig_with_config(&format!("max_connections = {SLOTS}\n"));
    const N: usize = 50;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut conns: Vec<UnixStream> = (0..N)
        .map(|_| UnixStream::connect(rig.env.socket_path()).unwrap())
        .collect();
    // Each sends one byte of the HTTP/2 preface every 500 ms for ~3 s; half of
    // them send one byte and then nothing at all.
    let start = Instant::now();
    let mut round = 0;
    let mut worst_status = Duration::ZERO;
    let mut worst_grpc = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        for (i, c) in conns.iter_mut().enumerate() {
            if round == 0 || i % 2 == 0 {
                let _ = c.write_all(&preface[round % preface.len()..][..1]);
            }
        }
        worst_status = worst_status.max(rig.status_prompt());
        worst_grpc = worst_grpc.max(rig.grpc_status_prompt());
        round += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "{N} slow-loris connections ({SLOTS} slots), {round} rounds: slowest vaultctl status {worst_status:?}, slowest gRPC status {worst_grpc:?}"
    );
    drop(conns);
    rig.finish();
}

#[test]
fn two_thousand_idle_connections_are_bounded_and_others_are_served() {
    const N: usize = 2000;
    raise_nofile(N as u64 + 512);
    let rig = rig();
    let pid = rig.pid();
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = fd_count(pid);
    let rss_before = vm_bytes(pid, "VmRSS");

    let t = Instant::now();
    let conns: Vec<UnixStream> = (0..N)
        .map(|i| {
            UnixStream::connect(rig.env.socket_path())
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let opened = t.elapsed();
    // vaultd has accepted them all (each holds one fd while it waits for a first byte).
    let all_accepted = wait_until(Duration::from_secs(5), || fd_count(pid) >= fds_before + N);
    let fds_open = fd_count(pid);
    assert!(
        all_accepted,
        "vaultd holds {fds_open} fds, expected >= {}",
        fds_before + N
    );
    assert!(
        fds_open <= fds_before + N + 50,
        "vaultd holds {fds_open} fds for {N} connections (baseline {fds_before})"
    );

    // Others are served, promptly.
    let status_took = rig.status_prompt();
    let grpc_took = rig.grpc_status_prompt();
    let rss_open = vm_bytes(pid, "VmRSS");
    assert!(
        rss_open < RSS_BOUND,
        "vaultd RSS {rss_open} with {N} idle connections"
    );

    drop(conns);
    let back = wait_until(Duration::from_secs(5), || fd_count(pid) <= fds_before + 10);
    let fds_after = fd_count(pid);
    assert!(
        back,
        "after closing {N} connections vaultd still holds {fds_after} fds (baseline {fds_before})"
    );
    println!(
        "{N} idle connections opened in {opened:?}: vaultd fds {fds_before} -> {fds_open} -> {fds_after}, \
         RSS {} -> {} MiB (HWM {} MiB); vaultctl status {status_took:?}, gRPC status {grpc_took:?}",
        rss_before >> 20,
        rss_open >> 20,
        vm_bytes(pid, "VmHWM") >> 20
    );
    rig.finish();
}

// ---------------------------------------------------------------------------
// Raw HTTP/2 frames, for a client that ignores what the server asks of it.

/// vaultd's HTTP/2 MAX_CONCURRENT_STREAMS per connection
/// (`vaultd::server::MAX_CONCURRENT_STREAMS`, documented in SECURITY.md).
const MAX_STREAMS: u32 = 128;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One frame (type, flags, stream, payload), or None when nothing came within the read timeout.
fn read_frame(s: &mut UnixStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return None;
        }
        Err(e) => panic!("vaultd closed the connection: {e}"),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).expect("read a frame's payload");
    Some((head[3], head[4], stream, payload))
}

/// The HPACK block of a gRPC request to `Status` (literals without
/// indexing, no Huffman: no table state to keep).
fn status_request_headers() -> Vec<u8> {
    fn literal(block: &mut Vec<u8>, value: &[u8]) {
        block.push(value.len() as u8);
        block.extend_from_slice(value);
    }
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    b.push(0x04); // :path
    literal(&mut b, b"/vault.v1.Vault/Status");
    b.extend([0x0f, 0x10]); // content-type (static index 31)
    literal(&mut b, b"application/grpc");
    b.push(0x00); // a new name
    literal(&mut b, b"te");
    literal(&mut b, b"trailers");
    b
}

#[test]
fn one_connection_cannot_open_more_streams_than_the_limit() {
    let rig = rig();
    let pid = rig.pid();
    let rss_before = vm_bytes(pid, "VmRSS");
    let mut s = UnixStream::connect(rig.env.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&frame(FRAME_SETTINGS, 0, 0, &[])).unwrap();

    // The server's SETTINGS announce the limit.
    let settings = loop {
        match read_frame(&mut s) {
            Some((FRAME_SETTINGS, flags, 0, payload)) if flags & FLAG_ACK == 0 => break payload,
            Some(_) => continue,
            None => panic!("vaultd sent no SETTINGS frame within 2 s"),
        }
    };
    let announced = settings
        .chunks_exact(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    assert_eq!(
        announced,
        Some(MAX_STREAMS),
        "vaultd's HTTP/2 SETTINGS must set MAX_CONCURRENT_STREAMS to {MAX_STREAMS} (None: unlimited, so one connection could open streams until memory runs out)"
    );
    // Acknowledged: from here on the server holds this connection to it.
    s.write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))
        .unwrap();

    // A client that ignores it: more streams than allowed, none ended.
    const EXTRA: u32 = 32;
    let block = status_request_headers();
    let mut out = Vec::new();
    for i in 0..MAX_STREAMS + EXTRA {
        out.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 2 * i + 1, &block));
    }
    s.write_all(&out).unwrap();
    let mut refused = Vec::new();
    let mut other_resets = Vec::new();
    while let Some((kind, _, stream, payload)) = read_frame(&mut s) {
        match kind {
            FRAME_RST_STREAM => {
                let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                if code == REFUSED_STREAM {
                    refused.push(stream);
                } else {
                    other_resets.push((stream, code));
                }
            }
            FRAME_GOAWAY => panic!("vaultd sent GOAWAY: {payload:?}"),
            _ => {}
        }
    }
    assert!(other_resets.is_empty(), "other resets: {other_resets:?}");
    let beyond: Vec<u32> = (MAX_STREAMS..MAX_STREAMS + EXTRA)
        .map(|i| 2 * i + 1)
        .collect();
    assert_eq!(
        refused, beyond,
        "exactly the streams beyond the first {MAX_STREAMS} are refused (REFUSED_STREAM)"
    );
    let rss_open = vm_bytes(pid, "VmRSS");
    println!(
        "{} streams on one connection: {} refused; vaultd RSS {} -> {} MiB",
        MAX_STREAMS + EXTRA,
        refused.len(),
        rss_before >> 20,
        rss_open >> 20
    );
    // Others are still served while the streams are held open.
    rig.status_prompt();
    rig.grpc_status_prompt();
    drop(s);
    rig.finish();
}
