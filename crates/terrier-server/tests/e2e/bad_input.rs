//! Bad input from visitors and would-be devices: each gets a clear error (or
//! a closed connection), and a device that is already online keeps serving
//! through all of it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use terrier_server::ServerConfig;
use terrier_testkit::raw::{claim, next_json, FakeDevice};
use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Page, Visitor};
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Bound on one network step (a request, a handshake, a frame).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A server with one healthy device online, which must stay reachable
/// whatever else is thrown at the server.
struct Fixture {
    server: TestServer,
    visitor: Visitor,
    /// `Host` of the healthy device.
    steady_host: String,
    /// Session id of the healthy device (a real session that is not the
    /// one a test's fake device holds).
    steady_session: String,
    _steady: TestAgent,
}

impl Fixture {
    async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let server = TestServer::start(tweak).await;
        let web = upstream::http_service().await;
        let mut steady = TestAgent::start(server.url(), "steady", Some(web), &[]);
        let connected = steady.connected(1).await;
        let fixture = Self {
            visitor: Visitor::new(server.addr),
            steady_host: device_host(&connected.subdomain),
            steady_session: connected.session,
            server,
            _steady: steady,
        };
        fixture.assert_steady("at start").await;
        fixture
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The healthy device still answers `GET /hello`.
    async fn assert_steady(&self, after: &str) {
        let page = get(&self.visitor, &self.steady_host, "/hello").await;
        assert_eq!(
            (page.status, page.body.as_str()),
            (200, "hello from device"),
            "the online device keeps working {after}"
        );
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

async fn get(visitor: &Visitor, host: &str, path: &str) -> Page {
    timeout(STEP_TIMEOUT, visitor.get(host, path))
        .await
        .unwrap_or_else(|_| panic!("GET {host}{path} answered within {STEP_TIMEOUT:?}"))
}

/// What came back on a raw connection.
#[derive(Debug)]
struct RawReply {
    /// Status code of the response, if a response head arrived.
    status: Option<u16>,
    /// The response head (status line and headers), lowercased.
    head: String,
    /// The response body as far as it was read.
    body: String,
    /// The server closed (or reset) the connection.
    closed: bool,
}

/// Writes `request` on a fresh connection and reads until the response is
/// complete (by `Content-Length`) or the server closes the connection. Write
/// errors are ignored: the server may close before taking every byte.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_reply(&mut stream).await
}

async fn read_reply(stream: &mut TcpStream) -> RawReply {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|len| buf.len() >= end + 4 + len) {
                    return false;
                }
            }
        }
    };
    let closed = timeout(STEP_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("the server neither answered nor closed within {STEP_TIMEOUT:?}"));
    let (head, body) = match find(&buf, b"\r\n\r\n") {
        Some(end) => (
            String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase(),
            String::from_utf8_lossy(&buf[end + 4..]).into_owned(),
        ),
        None => (String::from_utf8_lossy(&buf).to_ascii_lowercase(), String::new()),
    };
    let status = head.strip_prefix("http/1.").and_then(|rest| rest.get(2..5)).and_then(|code| code.parse().ok());
    RawReply { status, head, body, closed }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A WebSocket upgrade request for `target` on the server's own host.
fn upgrade_request(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes()
}

/// Junk that is not HTTP: deterministic pseudo-random bytes (with NULs,
/// CRLFs and high bytes among them).
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_instead_of_http_is_rejected_and_the_server_keeps_serving() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let mut h2_garbage = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_garbage.extend(junk(4096, 2));
    let inputs: [(&str, Vec<u8>); 4] = [
        ("random bytes", junk(8192, 1)),
        ("HTTP/2 preface then junk", h2_garbage),
        ("binary request line", b"GET /\x00\xff\xfe HTTP/1.1\r\n\r\n".to_vec()),
        ("a line of text", b"HELLO SERVER, PLEASE\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in inputs {
        let reply = raw_exchange(fixture.addr(), &bytes).await;
        assert!(
            reply.status == Some(400) || (reply.status.is_none() && reply.closed),
            "{what}: expected 400 or a closed connection, got {reply:?}"
        );
        fixture.assert_steady(&format!("after {what}")).await;
    }
    fixture.stop().await;
}

/// A method of 20 KB (HTTP sets no bound) is refused before it reaches a
/// device's request log or its agent's `request` message, which it would
/// overflow; the device keeps being served.
#[tokio::test]
async fn an_overlong_method_is_not_implemented() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let method = "A".repeat(20_000);
    let request = format!("{method} /hello HTTP/1.1\r\nHost: {}\r\n\r\n", fixture.steady_host);
    let reply = raw_exchange(fixture.addr(), request.as_bytes()).await;
    assert_eq!(reply.status, Some(501), "{reply:?}");
    let webdav = format!("BASELINE-CONTROL /hello HTTP/1.1\r\nHost: {}\r\n\r\n", fixture.steady_host);
    assert_ne!(raw_exchange(fixture.addr(), webdav.as_bytes()).await.status, Some(501), "a real long method");
    fixture.assert_steady("after an overlong method").await;
    fixture.stop().await;
}

#[tokio::test]
async fn control_socket_with_an_invalid_name_gets_400_naming_it() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let long = "a".repeat(64);
    for name in ["Bad_Name", "-lead", "dot.ted", long.as_str()] {
        let target = format!("/v1/control?name={name}&http=1");
        let reply = raw_exchange(fixture.addr(), &upgrade_request(&target)).await;
        assert_eq!(reply.status, Some(400), "name {name:?}: {reply:?}");
        assert!(reply.head.contains("content-type: text/plain"), "plain-text reason: {reply:?}");
        assert!(reply.body.contains(name), "the reason names {name:?}: {:?}", reply.body);
        fixture.assert_steady(&format!("after name {name:?}")).await;
    }
    // Missing name: still a 400 with a reason.
    let reply = raw_exchange(fixture.addr(), &upgrade_request("/v1/control?http=1")).await;
    assert_eq!(reply.status, Some(400), "{reply:?}");
    assert!(reply.body.contains("name"), "{reply:?}");
    fixture.stop().await;
}

#[tokio::test]
async fn agent_with_an_invalid_name_stops_with_a_fatal_error() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let web = upstream::http_service().await;
    let agent = TestAgent::start(fixture.server.url(), "Bad_Name", Some(web), &[]);
    let error = agent.finished().await.expect_err("an agent the server rejects as malformed must not retry forever");
    let message = error.to_string();
    assert!(message.contains("400"), "{message}");
    assert!(message.contains("Bad_Name"), "{message}");
    fixture.assert_steady("after the rejected agent").await;
    fixture.stop().await;
}

#[tokio::test]
async fn control_request_without_websocket_upgrade_gets_400() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let plain = b"GET /v1/control?name=plain-get&http=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(fixture.addr(), plain).await;
    assert_eq!(reply.status, Some(400), "{reply:?}");
    assert!(
        reply.body.to_ascii_lowercase().contains("websocket"),
        "the reason says a WebSocket upgrade is expected: {reply:?}"
    );
    // A data socket request without upgrade headers is refused the same way.
    let data = format!(
        "GET /v1/data?session={}&stream={} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        fixture.steady_session,
        "0".repeat(32)
    );
    let reply = raw_exchange(fixture.addr(), data.as_bytes()).await;
    assert_eq!(reply.status, Some(400), "{reply:?}");
    fixture.assert_steady("after plain GETs on the tunnel paths").await;
    fixture.stop().await;
}

fn random_hex_id() -> String {
    terrier_transport::ids::random_id()
}

#[tokio::test]
async fn data_socket_with_malformed_ids_gets_400() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let good = random_hex_id();
    let session = fixture.steady_session.clone();
    let upper = good.to_ascii_uppercase();
    let short = &good[..31];
    let long = format!("{good}0");
    let cases = [
        ("session", "zz".repeat(16), good.clone()),
        ("session", String::new(), good.clone()),
        ("stream", session.clone(), upper),
        ("stream", session.clone(), short.to_owned()),
        ("stream", session.clone(), long),
        ("stream", session.clone(), "../../etc/passwd".to_owned()),
        ("stream", session.clone(), "é".repeat(16)),
        ("stream", session.clone(), String::new()),
    ];
    for (bad, session, stream) in cases {
        let status = claim(fixture.addr(), &session, &stream)
            .await
            .err()
            .unwrap_or_else(|| panic!("bad {bad} ({session:?}, {stream:?}) was accepted"));
        assert_eq!(status, 400, "bad {bad}: ({session:?}, {stream:?})");
    }
    fixture.assert_steady("after malformed data sockets").await;
    fixture.stop().await;
}

#[tokio::test]
async fn data_socket_claims_only_a_pending_stream_of_its_own_session_once() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;

    // Well-formed ids that name nothing.
    let unknown = random_hex_id();
    let status = claim(fixture.addr(), &fixture.steady_session, &unknown).await.err();
    assert_eq!(status, Some(404), "unknown stream of a real session");
    let status = claim(fixture.addr(), &unknown, &unknown).await.err();
    assert_eq!(status, Some(404), "unknown session");
    fixture.assert_steady("after unknown ids").await;

    // A visitor waits for the fake device, which is told the stream id.
    let mut device = FakeDevice::connect(fixture.addr(), "fake-a").await;
    let host = device_host(&device.subdomain);
    let visitor = fixture.visitor.clone();
    let waiting = tokio::spawn(async move { get(&visitor, &host, "/hello").await });
    let stream = device.next_open().await;

    // Another device's session cannot take it...
    let status = claim(fixture.addr(), &fixture.steady_session, &stream).await.err();
    assert_eq!(status, Some(404), "a stream of another session");
    fixture.assert_steady("after a foreign claim").await;

    // ...its own session can, and the socket carries the visitor's request.
    let mut data =
        claim(fixture.addr(), &device.session, &stream).await.expect("the device's own session claims its stream");
    let mut request = Vec::new();
    while find(&request, b"\r\n\r\n").is_none() {
        let frame = timeout(STEP_TIMEOUT, data.next())
            .await
            .expect("visitor request in time")
            .expect("data socket open")
            .expect("data frame");
        match frame {
            Message::Binary(bytes) => request.extend_from_slice(&bytes),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(request.starts_with(b"GET /hello HTTP/1.1\r\n"), "{request:?}");

    // Single use: the same id cannot be claimed again.
    let status = claim(fixture.addr(), &device.session, &stream).await.err();
    assert_eq!(status, Some(404), "a stream claimed twice");

    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\nfake device ok";
    data.send(Message::binary(answer.to_vec())).await.expect("answer the visitor");
    let page = timeout(STEP_TIMEOUT, waiting).await.expect("visitor answered in time").expect("visitor task");
    assert_eq!((page.status, page.body.as_str()), (200, "fake device ok"));
    fixture.assert_steady("after the fake device served").await;
    fixture.stop().await;
}

#[tokio::test]
async fn expired_stream_id_cannot_be_claimed() {
    init_logging();
    let fixture = Fixture::start(|c| c.limits.stream_open_timeout = Duration::from_millis(500)).await;
    let mut device = FakeDevice::connect(fixture.addr(), "fake-late").await;
    let host = device_host(&device.subdomain);
    let visitor = fixture.visitor.clone();
    let waiting = tokio::spawn(async move { get(&visitor, &host, "/hello").await });
    let stream = device.next_open().await;
    let page = timeout(STEP_TIMEOUT, waiting).await.expect("visitor answered in time").expect("visitor task");
    assert_eq!(page.status, 504, "{}", page.body);
    let status = claim(fixture.addr(), &device.session, &stream).await.err();
    assert_eq!(status, Some(404), "an expired stream id");
    fixture.assert_steady("after the expired claim").await;
    fixture.stop().await;
}

#[tokio::test]
async fn junk_on_a_control_socket_closes_only_that_session() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let junk_frames = [
        ("binary", Message::binary(junk(64, 3))),
        ("not JSON", Message::text("{\"open\": nonsense")),
        ("unknown message", Message::text("{\"launch\":{\"missiles\":1}}")),
    ];
    for (i, (what, frame)) in junk_frames.into_iter().enumerate() {
        let url = format!("ws://{}/v1/control?name=junk-{i}&http=1", fixture.addr());
        let (mut control, _) = timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("control handshake in time")
            .expect("control handshake");
        next_json(&mut control).await.expect("welcome");
        control.send(frame).await.expect("send junk");
        let close = timeout(STEP_TIMEOUT, async {
            loop {
                match control.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("{what}: socket broke instead of closing: {e}"),
                    None => panic!("{what}: socket ended without a close frame"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: closed within {STEP_TIMEOUT:?}"));
        let close = close.unwrap_or_else(|| panic!("{what}: close frame has a code"));
        assert_eq!(u16::from(close.code), 4002, "{what}: protocol error code");
        fixture.assert_steady(&format!("after {what} on another control socket")).await;
    }
    fixture.stop().await;
}

#[tokio::test]
async fn request_without_host_gets_400() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    for request in [&b"GET / HTTP/1.0\r\n\r\n"[..], &b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n"[..]] {
        let reply = raw_exchange(fixture.addr(), request).await;
        assert_eq!(reply.status, Some(400), "{reply:?}");
        assert!(reply.head.contains("content-type: text/html"), "{reply:?}");
        assert!(reply.body.contains("Host"), "the page says what is missing: {reply:?}");
        fixture.assert_steady("after a request without Host").await;
    }
    fixture.stop().await;
}

#[tokio::test]
async fn huge_request_head_gets_431_or_is_closed() {
    init_logging();
    let fixture = Fixture::start(|_| {}).await;
    let value = "a".repeat(200 * 1024);
    let request =
        format!("GET /hello HTTP/1.1\r\nHost: {}\r\nX-Huge: {value}\r\nConnection: close\r\n\r\n", fixture.steady_host);
    let reply = raw_exchange(fixture.addr(), request.as_bytes()).await;
    assert!(
        reply.status == Some(431) || (reply.status.is_none() && reply.closed),
        "expected 431 or a closed connection, got status {:?} (closed: {})",
        reply.status,
        reply.closed
    );
    // Many headers adding up past the limit are refused the same way.
    let mut request = format!("GET /hello HTTP/1.1\r\nHost: {}\r\n", fixture.steady_host);
    for i in 0..2000 {
        request.push_str(&format!("X-Many-{i}: {}\r\n", "b".repeat(40)));
    }
    request.push_str("\r\n");
    let reply = raw_exchange(fixture.addr(), request.as_bytes()).await;
    assert!(
        reply.status.is_none_or(|s| s == 431) && reply.status != Some(200),
        "expected 431 or a closed connection, got status {:?}",
        reply.status
    );
    assert!(reply.status.is_some() || reply.closed);
    fixture.assert_steady("after huge request heads").await;
    fixture.stop().await;
}

#[tokio::test]
async fn slowloris_partial_head_is_closed_after_the_header_read_timeout() {
    init_logging();
    let fixture = Fixture::start(|c| c.limits.header_read_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(fixture.addr()).await.expect("connect");
    let started = Instant::now();
    let partial = format!("GET /hello HTTP/1.1\r\nHost: {}\r\nX-Slow: 1", fixture.steady_host);
    stream.write_all(partial.as_bytes()).await.expect("write partial head");
    let reply = read_reply(&mut stream).await;
    let elapsed = started.elapsed();
    assert!(
        reply.closed && (reply.status.is_none() || reply.status == Some(408)),
        "expected EOF or 408, got {reply:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(5),
        "closed after the 500 ms header read timeout, not after {elapsed:?}"
    );
    fixture.assert_steady("after a slowloris connection").await;
    fixture.stop().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_header_read_timeout() {
    init_logging();
    let fixture = Fixture::start(|c| c.limits.header_read_timeout = Duration::from_millis(500)).await;
    // Nothing at all, and the first bytes of the HTTP/2 preface: both leave
    // the protocol undecided, and must not hold a connection open forever.
    let mut still_open = Vec::new();
    for (what, bytes) in [("no bytes", &b""[..]), ("half a preface", &b"PRI * HT"[..])] {
        let mut stream = TcpStream::connect(fixture.addr()).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut buf = [0u8; 1024];
        let read = timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if read.is_err() {
            still_open.push(what);
        }
        fixture.assert_steady(&format!("after a silent connection ({what})")).await;
    }
    assert!(still_open.is_empty(), "connections still open 5 s after a 500 ms header read timeout: {still_open:?}");
    fixture.stop().await;
}

/// Sends raw frames on a fresh control socket and waits until the server ends it.
async fn control_ends_after(fixture: &Fixture, name: &str, frames: Vec<Message>) {
    let url = format!("ws://{}/v1/control?name={name}&http=1", fixture.addr());
    let (mut control, _) = timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("control handshake in time")
        .expect("control handshake");
    next_json(&mut control).await.expect("welcome");
    for frame in frames {
        if control.send(frame).await.is_err() {
            break;
        }
    }
    timeout(STEP_TIMEOUT, async {
        while let Some(Ok(msg)) = control.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: the server ended the socket within {STEP_TIMEOUT:?}"));
}

#[tokio::test]
async fn oversized_invalid_utf8_and_fragmented_control_frames_cost_only_that_session() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    init_logging();
    let fixture = Fixture::start(|c| c.limits.max_control_frame_bytes = 4096).await;
    // Over the control frame limit.
    control_ends_after(&fixture, "oversized", vec![Message::text("x".repeat(64 * 1024))]).await;
    fixture.assert_steady("after an oversized control frame").await;
    // A text frame that is not UTF-8.
    let bad_utf8 = Frame::message(vec![0xff, 0xfe, b'{', 0xc0], OpCode::Data(Data::Text), true);
    control_ends_after(&fixture, "bad-utf8", vec![Message::Frame(bad_utf8)]).await;
    fixture.assert_steady("after invalid UTF-8").await;
    // Fragments that add up past the limit, each small on its own.
    let mut fragments = vec![Message::Frame(Frame::message(vec![b'x'; 1000], OpCode::Data(Data::Text), false))];
    for _ in 0..10 {
        fragments.push(Message::Frame(Frame::message(vec![b'x'; 1000], OpCode::Data(Data::Continue), false)));
    }
    control_ends_after(&fixture, "fragments", fragments).await;
    fixture.assert_steady("after a fragmented flood").await;
    // A flood of `refused` for streams that do not exist is harmless.
    let url = format!("ws://{}/v1/control?name=refuser&http=1", fixture.addr());
    let (mut control, _) = tokio_tungstenite::connect_async(url).await.expect("control handshake");
    next_json(&mut control).await.expect("welcome");
    for i in 0..2000 {
        let refused = format!("{{\"refused\":{{\"stream\":\"{:032x}\",\"reason\":\"flood\"}}}}", i);
        control.send(Message::text(refused)).await.expect("send refused");
    }
    fixture.assert_steady("during a refused flood").await;
    fixture.stop().await;
}

#[tokio::test]
async fn agent_that_never_reads_gets_its_visitors_bounded_and_is_dropped_after_its_heartbeats() {
    init_logging();
    let fixture = Fixture::start(|c| {
        c.limits.max_pending_streams = 4;
        c.limits.stream_open_timeout = Duration::from_millis(800);
    })
    .await;
    let url = format!("ws://{}/v1/control?name=deaf&http=1", fixture.addr());
    let (mut control, _) = tokio_tungstenite::connect_async(url).await.expect("control handshake");
    let welcome = next_json(&mut control).await.expect("welcome");
    let host = format!("{}.localhost", welcome["welcome"]["subdomain"].as_str().expect("subdomain"));
    // From here on the fake agent reads nothing at all (not even pings).
    let mut visits = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (visitor, host) = (Visitor::new(fixture.addr()), host.clone());
        visits.spawn(async move { visitor.get(&host, "/").await.status });
    }
    let mut statuses = Vec::new();
    while let Some(status) = visits.join_next().await {
        statuses.push(status.expect("visitor task"));
    }
    statuses.sort();
    // At most `max_pending_streams` wait (and time out with 504); the rest
    // are told at once that the device is busy.
    assert!(statuses.iter().all(|s| *s == 503 || *s == 504), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 504).count() <= 4, "{statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");
    fixture.assert_steady("while a device does not read").await;
    // Silent for three heartbeats (1 s each in tests): the server drops it.
    terrier_testkit::eventually(Duration::from_secs(8), "the deaf device to be dropped", || {
        let (visitor, host) = (Visitor::new(fixture.addr()), host.clone());
        async move {
            let page = visitor.get(&host, "/").await;
            (page.status == 503 && page.body.contains("offline")).then_some(())
        }
    })
    .await;
    drop(control);
    fixture.stop().await;
}

/// A fake device answers one visitor on its data socket with `frames`;
/// returns the visitor's page and the data socket.
async fn answer_with_frames(
    fixture: &Fixture,
    device: &mut FakeDevice,
    frames: Vec<Message>,
) -> (Page, terrier_testkit::raw::ClientSocket) {
    let host = device_host(&device.subdomain);
    let visitor = fixture.visitor.clone();
    let waiting = tokio::spawn(async move { get(&visitor, &host, "/hello").await });
    let stream = device.next_open().await;
    let mut data = claim(fixture.addr(), &device.session, &stream).await.expect("claim the stream");
    let mut request = Vec::new();
    while find(&request, b"\r\n\r\n").is_none() {
        match timeout(STEP_TIMEOUT, data.next()).await.expect("request in time") {
            Some(Ok(Message::Binary(bytes))) => request.extend_from_slice(&bytes),
            other => panic!("expected the visitor's request, got {other:?}"),
        }
    }
    for frame in frames {
        if data.send(frame).await.is_err() {
            break;
        }
    }
    let page = timeout(STEP_TIMEOUT, waiting).await.expect("visitor answered in time").expect("visitor task");
    (page, data)
}

/// The server ended `data`: it closes (or breaks) instead of waiting for more.
async fn ended(mut data: terrier_testkit::raw::ClientSocket) -> bool {
    let end = async {
        loop {
            match data.next().await {
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                _ => return,
            }
        }
    };
    timeout(STEP_TIMEOUT, end).await.is_ok()
}

#[tokio::test]
async fn data_frames_up_to_the_limit_pass_fragments_are_bytes_and_larger_end_only_that_stream() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    const LIMIT: usize = 64 * 1024;
    init_logging();
    let fixture = Fixture::start(|c| c.limits.max_data_frame_bytes = LIMIT).await;
    let mut device = FakeDevice::connect(fixture.addr(), "fake-frames").await;
    let fragment = |bytes: &[u8], opcode, fin| Message::Frame(Frame::message(bytes.to_vec(), opcode, fin));

    // A complete answer of `len` bytes.
    let answer = |len: usize| {
        let body = "b".repeat(len - "HTTP/1.1 200 OK\r\ncontent-length: 00000\r\n\r\n".len());
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {:05}\r\n\r\n{body}", body.len());
        assert_eq!(answer.len(), len);
        answer.into_bytes()
    };
    // An answer in one frame of exactly the limit.
    let (page, _) = answer_with_frames(&fixture, &mut device, vec![Message::binary(answer(LIMIT))]).await;
    assert_eq!((page.status, page.body.len()), (200, LIMIT - 42), "a frame of exactly the limit (a head of 42 bytes)");

    // An answer in fragments: their bytes are the stream's, in order.
    let frames = vec![
        fragment(b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\n", OpCode::Data(Data::Binary), false),
        fragment(b"fake ", OpCode::Data(Data::Continue), false),
        fragment(b"device ok", OpCode::Data(Data::Continue), true),
    ];
    let (page, _) = answer_with_frames(&fixture, &mut device, frames).await;
    assert_eq!((page.status, page.body.as_str()), (200, "fake device ok"), "a fragmented answer");

    // One byte over the limit, in one frame or in fragments: that stream
    // ends (the visitor gets a 502, not the complete answer it carries), the
    // device and everyone else go on.
    let over = answer(LIMIT + 1);
    let (page, data) = answer_with_frames(&fixture, &mut device, vec![Message::binary(over.clone())]).await;
    assert_eq!(page.status, 502, "a frame over the limit");
    assert!(ended(data).await, "the server ended the data socket with the frame over the limit");
    // (Fragments are passed on as they come, not reassembled: the first
    // one is shorter than the answer's head, so that no answer starts.)
    let frames = vec![
        fragment(&over[..10], OpCode::Data(Data::Binary), false),
        fragment(&over[10..], OpCode::Data(Data::Continue), true),
    ];
    let (page, data) = answer_with_frames(&fixture, &mut device, frames).await;
    assert_eq!(page.status, 502, "fragments over the limit in total");
    assert!(ended(data).await, "the server ended the data socket with the fragments over the limit");
    fixture.assert_steady("after data frames over the limit").await;

    // The same device still serves.
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\nfake device ok".to_vec();
    let (page, _) = answer_with_frames(&fixture, &mut device, vec![Message::binary(answer)]).await;
    assert_eq!((page.status, page.body.as_str()), (200, "fake device ok"), "the device after its bad frames");
    fixture.stop().await;
}
