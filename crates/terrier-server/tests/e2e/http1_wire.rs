//! HTTP/1.1 visitors on the wire: driven with raw sockets, so pipelining,
//! both body framings and the exact headers are the test's own, and every
//! request is parsed, routed and framed again by terrierd's one HTTP path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use terrier_testkit::upstream;
use terrier_testkit::visitor::device_host;
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any one answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A visitor's raw connection to terrierd, reading answers one by one
/// (pipelined answers included: bytes past one answer stay for the next).
struct RawVisitor {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawVisitor {
    async fn connect(server: SocketAddr) -> Self {
        Self { tcp: TcpStream::connect(server).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Reads until `buf` has `n` bytes more than `from`, or fails.
    async fn fill(&mut self, n: usize) {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let got = tokio::time::timeout(ANSWER_WITHIN, self.tcp.read(&mut chunk)).await.unwrap().unwrap();
            assert!(got > 0, "connection closed with {} bytes of an answer: {:?}", self.buf.len(), self.buf);
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }

    /// The next answer (`Content-Length` or chunked body).
    async fn answer(&mut self) -> Answer {
        let (len, status, headers) = loop {
            let mut parsed = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut parsed);
            if let httparse::Status::Complete(len) = response.parse(&self.buf).unwrap() {
                let headers: BTreeMap<String, String> = response
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                break (len, response.code.unwrap(), headers);
            }
            let want = self.buf.len() + 1;
            self.fill(want).await;
        };
        self.buf.drain(..len);
        let mut body = Vec::new();
        if let Some(length) = headers.get("content-length") {
            let length: usize = length.parse().unwrap();
            self.fill(length).await;
            body.extend(self.buf.drain(..length));
        } else if headers.get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            loop {
                while !self.buf.windows(2).any(|w| w == b"\r\n") {
                    let want = self.buf.len() + 1;
                    self.fill(want).await;
                }
                let line_end = self.buf.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(), 16).unwrap();
                self.fill(line_end + 2 + size + 2).await;
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        }
        Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    /// Whether the server closes the connection within `within`, with no
    /// more bytes.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 64];
        matches!(tokio::time::timeout(within, self.tcp.read(&mut chunk)).await, Ok(Ok(0) | Err(_)))
    }
}

/// A server (with `tweak`) and one web device; returns the device's host.
async fn web_device(tweak: impl FnOnce(&mut terrier_server::config::ServerConfig)) -> (TestServer, TestAgent, String) {
    let web = upstream::http_service().await;
    device_serving(web, "passthrough", tweak).await
}

/// A terrierd and a device named `name` whose web service is at `web`; the
/// device's host name.
async fn device_serving(
    web: std::net::SocketAddr,
    name: &str,
    tweak: impl FnOnce(&mut terrier_server::config::ServerConfig),
) -> (TestServer, TestAgent, String) {
    let server = TestServer::start(tweak).await;
    let mut agent = TestAgent::start(server.url(), name, Some(web), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    (server, agent, host)
}

/// A device's web service on 127.0.0.1 that hands each connection to `serve`.
async fn web_service<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp));
        }
    });
    web
}

#[tokio::test]
async fn pipelined_requests_with_both_body_framings_are_answered_in_order() {
    init_logging();
    let (server, _agent, host) = web_device(|_| {}).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    // Three requests in one write: a Content-Length body, a chunked body,
    // and a GET whose X-Forwarded-For already has a hop.
    let requests = format!(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello\
         POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=1\r\ndefg\r\n0\r\n\r\n\
         GET /hello HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 10.9.8.7\r\n\r\n"
    );
    visitor.send(requests.as_bytes()).await;
    let first = visitor.answer().await;
    assert_eq!((first.status, first.body.as_str()), (200, "hello"));
    let second = visitor.answer().await;
    assert_eq!((second.status, second.body.as_str()), (200, "abcdefg"));
    let third = visitor.answer().await;
    assert_eq!((third.status, third.body.as_str()), (200, "hello from device"));
    assert_eq!(third.headers["x-seen-xff"], "127.0.0.1", "only the TCP peer, never the visitor's claim");
    assert_eq!(third.headers["x-seen-proto"], "http");
    assert_eq!(third.headers["x-seen-xfh"], host);
    assert_eq!(third.headers["x-seen-host"], host);

    // A request sent after the answers, on the same connection.
    visitor.send(format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(visitor.answer().await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_device_never_sees_the_visitors_hop_by_hop_headers() {
    init_logging();
    let (server, _agent, host) = web_device(|_| {}).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    let request = format!(
        "GET /headers HTTP/1.1\r\nHost: {host}\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\n\
         X-Forwarded-Proto: gopher\r\n\r\n"
    );
    visitor.send(request.as_bytes()).await;
    let answer = visitor.answer().await;
    assert_eq!(answer.status, 200);
    // A proxy between two connections drops hop-by-hop headers.
    assert_eq!(answer.body, "host x-forwarded-for x-forwarded-host x-forwarded-proto");
    server.stop().await;
}

#[tokio::test]
async fn each_request_on_a_connection_is_routed_by_its_own_host() {
    init_logging();
    let (server, _agent, host) = web_device(|_| {}).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    let get = |host: &str| format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n");
    visitor.send(get(&host).as_bytes()).await;
    assert_eq!(visitor.answer().await.status, 200);
    // Pipelined: the device's answer comes first, then the unknown host's page.
    visitor.send(format!("{}{}", get(&host), get("nobody12345.localhost")).as_bytes()).await;
    assert_eq!(visitor.answer().await.status, 200);
    let unknown = visitor.answer().await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("No device here"), "{}", unknown.body);
    // The connection goes on serving the device.
    visitor.send(get(&host).as_bytes()).await;
    let again = visitor.answer().await;
    assert_eq!((again.status, again.body.as_str()), (200, "hello from device"));
    server.stop().await;
}

/// A device that hangs up instead of answering: the visitor gets the page
/// that says so, and the request is not sent again.
#[tokio::test]
async fn a_device_that_closes_before_its_first_answer_gives_the_502_page() {
    init_logging();
    // The device's "web service" reads the request and hangs up.
    let web = web_service(|mut tcp| async move {
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
    })
    .await;
    let (server, _agent, host) = device_serving(web, "hangs-up", |_| {}).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    visitor.send(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    let page = visitor.answer().await;
    assert_eq!(page.status, 502);
    assert!(page.body.contains("The device closed the connection"), "{}", page.body);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    server.stop().await;
}

#[tokio::test]
async fn a_later_request_past_max_header_bytes_is_refused() {
    init_logging();
    let (server, _agent, host) = web_device(|c| c.limits.max_header_bytes = 8192).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    visitor.send(format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(visitor.answer().await.status, 200);
    // Over the limit before its end: 431, or a close if hyper stops
    // reading first.
    let huge = format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(16 * 1024));
    let _ = visitor.tcp.write_all(huge.as_bytes()).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(ANSWER_WITHIN, visitor.tcp.read_to_end(&mut rest)).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(!text.contains("hello from device"), "the oversized request reached the device");

    // Garbage after an answered request: 400.
    let mut visitor = RawVisitor::connect(server.addr).await;
    visitor.send(format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(visitor.answer().await.status, 200);
    visitor.send(b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert_eq!(visitor.answer().await.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn connection_close_ends_the_visitors_connection_only() {
    init_logging();
    let (server, _agent, host) = web_device(|_| {}).await;
    for _ in 0..3 {
        let mut visitor = RawVisitor::connect(server.addr).await;
        visitor.send(format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let answer = visitor.answer().await;
        assert_eq!(answer.status, 200);
        // The device's connection is kept for the next visitor: the
        // visitor's `Connection: close` is for its own hop only.
        assert_eq!(answer.body, "host x-forwarded-for x-forwarded-host x-forwarded-proto");
        assert!(visitor.closed_within(Duration::from_secs(5)).await, "the visitor asked to close");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_device_that_closes_after_every_answer_keeps_serving_its_visitor() {
    init_logging();
    // The device's server answers one request per connection, then closes.
    let web = web_service(|tcp| async move {
        let names = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let mut names: Vec<String> = req.headers().keys().map(|n| n.to_string()).collect();
            names.sort_unstable();
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                names.join(" "),
            ))))
        });
        let mut connection = hyper::server::conn::http1::Builder::new();
        let _ = connection.keep_alive(false).serve_connection(hyper_util::rt::TokioIo::new(tcp), names).await;
    })
    .await;
    let (server, _agent, host) = device_serving(web, "one-shot", |_| {}).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    for i in 0..3 {
        visitor.send(format!("GET / HTTP/1.1\r\nHost: {host}\r\nKeep-Alive: timeout=5\r\n\r\n").as_bytes()).await;
        let answer = visitor.answer().await;
        assert_eq!(answer.status, 200, "request {i}");
        assert!(!answer.body.contains("keep-alive"), "request {i}: {}", answer.body);
    }
    server.stop().await;
}
