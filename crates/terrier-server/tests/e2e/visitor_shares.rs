//! What one visitor holds of a device, and for how long, in the cases the
//! testkit's well-behaved device and visitors do not reach: a device that
//! answers before reading an upload, or answers slowly (raw sockets here);
//! an HTTP/2 visitor that resets a stream or gives it no window
//! (hand-written frames); a visitor that leaves; device connections kept
//! between requests, which hold no visitor's place. Each visitor holds one
//! place of its share while it keeps the device busy, gives it back when it
//! stops, and honest visitors are never cut for a device's slowness.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use terrier_testkit::visitor::{connect_from, device_host, head_from, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on one network step.
const STEP: Duration = Duration::from_secs(10);

/// An answer far larger than socket buffers.
const HUGE: &str = "/bytes/500000000";

/// A device web server on raw sockets: for every request it waits `delay`,
/// answers `200 ok` at once *without reading the request's body*, then
/// reads and discards the body and keeps the connection for the next
/// request (what Node.js' http server does with a body the handler left
/// unread).
async fn raw_device_web(delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(serve_raw(tcp, delay));
        }
    });
    addr
}

async fn serve_raw(mut tcp: TcpStream, delay: Duration) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let mut left: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        buf.drain(..end);
        tokio::time::sleep(delay).await;
        if tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
            return;
        }
        let take = (left as usize).min(buf.len());
        buf.drain(..take);
        left -= take as u64;
        while left > 0 {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) if (n as u64) <= left => left -= n as u64,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[left as usize..n]);
                    left = 0;
                }
            }
        }
    }
}

/// A connected device whose web service is at `web`; returns its host.
async fn device(server: &TestServer, name: &str, web: SocketAddr) -> (TestAgent, String) {
    let mut agent = TestAgent::start(server.url(), name, Some(web), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    (agent, host)
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HEADERS (END_STREAM | END_HEADERS) for `GET path` on `authority`.
fn h2_get(stream: u32, authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    block.push(0x04); // :path, literal without indexing
    block.push(path.len() as u8);
    block.extend_from_slice(path.as_bytes());
    block.push(0x01); // :authority
    block.push(authority.len() as u8);
    block.extend_from_slice(authority.as_bytes());
    frame(0x1, 0x5, stream, &block)
}

/// What the frame reader saw.
#[derive(Default)]
struct H2Seen {
    headers: AtomicBool,
    data: AtomicBool,
    closed: AtomicBool,
}

/// An HTTP/2 client from `from` that never opens any stream's window
/// (SETTINGS_INITIAL_WINDOW_SIZE = 0: it "stops reading" the way an h2
/// client does), but, like every h2 library, answers the server's SETTINGS
/// and PINGs. Sends `GET path` on stream 1 and returns once its answer
/// head came; a task keeps the connection and reports what it sees.
async fn h2_stalled_get(from: [u8; 4], server: SocketAddr, host: &str, path: &str) -> Arc<H2Seen> {
    let tcp = connect_from(from, server).await;
    let (mut rd, mut wr) = tcp.into_split();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0])); // INITIAL_WINDOW_SIZE = 0
    hello.extend(h2_get(1, host, path));
    wr.write_all(&hello).await.expect("write h2 request");
    let seen = Arc::new(H2Seen::default());
    let reader_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let mut head = [0u8; 9];
            if rd.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if rd.read_exact(&mut payload).await.is_err() {
                break;
            }
            match kind {
                0x0 if stream == 1 => reader_seen.data.store(true, Ordering::SeqCst),
                0x1 if stream == 1 => reader_seen.headers.store(true, Ordering::SeqCst),
                0x4 if flags & 1 == 0 => {
                    let _ = wr.write_all(&frame(0x4, 1, 0, &[])).await;
                }
                0x6 if flags & 1 == 0 => {
                    let _ = wr.write_all(&frame(0x6, 1, 0, &payload)).await;
                }
                0x7 => break, // GOAWAY
                _ => {}
            }
        }
        reader_seen.closed.store(true, Ordering::SeqCst);
    });
    eventually(STEP, "the answer's HEADERS on stream 1", || {
        let seen = seen.clone();
        async move { seen.headers.load(Ordering::SeqCst).then_some(()) }
    })
    .await;
    seen
}

#[tokio::test]
async fn an_h2_visitor_that_stops_taking_its_answer_is_cut_despite_answering_pings() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.max_streams_per_device = 4;
        c.limits.max_streams_per_visitor = 1;
        c.limits.answer_write_timeout = Duration::from_millis(500);
        c.limits.http2_keepalive_interval = Duration::from_millis(200);
    })
    .await;
    let (_device, host) = TestAgent::web_device(server.url(), "h2-stall").await;
    let seen = h2_stalled_get([127, 0, 0, 2], server.addr, &host, HUGE).await;
    assert!(!seen.data.load(Ordering::SeqCst), "no body: the stream's window is zero");
    let (status, _) = head_from([127, 0, 0, 2], server.addr, &get(&host, "/hello")).await;
    assert_eq!(status, 503, "the stalled h2 stream holds 127.0.0.2's one place");
    eventually(STEP, "the stalled h2 visitor cut and its place given back", || async {
        let (status, _) = head_from([127, 0, 0, 2], server.addr, &get(&host, "/hello")).await;
        (status == 200 && seen.closed.load(Ordering::SeqCst)).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_request_waiting_for_a_slow_device_is_never_cut_as_stalled() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.answer_write_timeout = Duration::from_millis(500);
        c.limits.tcp_idle_timeout = Duration::from_millis(500);
    })
    .await;
    let web = raw_device_web(Duration::from_millis(1500)).await;
    let (_agent, host) = device(&server, "slow", web).await;
    let (status, _) = head_from([127, 0, 0, 1], server.addr, &get(&host, "/report")).await;
    assert_eq!(status, 200, "the device answered after 1.5 s; the visitor's connection was cut first");
    server.stop().await;
}

#[tokio::test]
async fn an_upload_the_device_answered_early_still_holds_the_visitors_place() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.max_streams_per_device = 4;
        c.limits.max_streams_per_visitor = 1;
    })
    .await;
    let web = raw_device_web(Duration::ZERO).await;
    let (_agent, host) = device(&server, "early", web).await;
    // 127.0.0.2 starts four uploads it never finishes; the device answers
    // each before reading its body, which still streams to it.
    let upload = format!("POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000000\r\n\r\nfirst-bytes");
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        let (status, tcp) = head_from([127, 0, 0, 2], server.addr, upload.as_bytes()).await;
        statuses.push(status);
        held.push(tcp);
    }
    let honest = Visitor::new(server.addr).get(&host, "/").await.status;
    assert_eq!(
        (statuses, honest),
        (vec![200, 503, 503, 503], 200),
        "127.0.0.2 holds one place while its upload streams, and another address is still served"
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_kept_http_connections_do_not_lock_tcp_visitors_out() {
    init_logging();
    let server = TestServer::start(|c| c.limits.max_streams_per_device = 2).await;
    let web = raw_device_web(Duration::from_millis(300)).await;
    let echo = terrier_testkit::upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "mixed", Some(web), &[("echo", echo)]);
    let connected = agent.connected(1).await;
    let host = device_host(&connected.subdomain);
    let port = connected.tcp.iter().find(|p| p.service == "echo").expect("echo port").port;
    // Two requests at once, both answered and over: two device connections kept idle.
    let visitor = Visitor::new(server.addr);
    let (a, b) = tokio::join!(visitor.get(&host, "/a"), visitor.get(&host, "/b"));
    assert_eq!((a.status, b.status), (200, 200));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.write_all(b"ping\n").await.expect("write");
    let mut buf = [0u8; 5];
    let echoed = tokio::time::timeout(STEP, tcp.read_exact(&mut buf)).await.ok().and_then(Result::ok).is_some();
    assert!(echoed, "no visitor holds a stream, yet the TCP visitor was refused (idle kept HTTP connections count)");
    server.stop().await;
}

#[tokio::test]
async fn an_h2_stream_reset_by_the_visitor_gives_its_place_back() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.max_streams_per_device = 4;
        c.limits.max_streams_per_visitor = 1;
    })
    .await;
    let (_device, host) = TestAgent::web_device(server.url(), "h2-reset").await;
    let mut tcp = connect_from([127, 0, 0, 2], server.addr).await;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]));
    hello.extend(h2_get(1, &host, HUGE));
    tcp.write_all(&hello).await.unwrap();
    eventually(STEP, "127.0.0.2's place is taken by the stalled stream", || async {
        let (status, _) = head_from([127, 0, 0, 2], server.addr, &get(&host, "/hello")).await;
        (status == 503).then_some(())
    })
    .await;
    tcp.write_all(&frame(0x3, 0, 1, &8u32.to_be_bytes())).await.unwrap(); // RST_STREAM CANCEL
    eventually(STEP, "the reset stream's place comes back", || async {
        let (status, _) = head_from([127, 0, 0, 2], server.addr, &get(&host, "/hello")).await;
        (status == 200).then_some(())
    })
    .await;
    drop(tcp);
    server.stop().await;
}

#[tokio::test]
async fn a_visitor_leaving_mid_answer_gives_its_place_back() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.max_streams_per_device = 4;
        c.limits.max_streams_per_visitor = 1;
    })
    .await;
    let (_device, host) = TestAgent::web_device(server.url(), "leaver").await;
    let (status, tcp) = head_from([127, 0, 0, 2], server.addr, &get(&host, HUGE)).await;
    assert_eq!(status, 200);
    drop(tcp);
    eventually(STEP, "the place of a visitor gone mid-answer", || async {
        let (status, _) = head_from([127, 0, 0, 2], server.addr, &get(&host, "/hello")).await;
        (status == 200).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_kept_device_connection_does_not_hold_up_the_stop() {
    init_logging();
    let server = TestServer::start(|c| c.drain_timeout = Duration::from_secs(5)).await;
    let (_device, host) = TestAgent::web_device(server.url(), "kept").await;
    for _ in 0..3 {
        assert_eq!(Visitor::new(server.addr).get(&host, "/hello").await.status, 200);
    }
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(4), "stop took {:?}", started.elapsed());
}
