//! HTTP/1.1 visitors on the wire: driven with raw sockets, so pipelining,
//! both body framings and the exact headers are the test's own, and every
//! request is parsed, routed and framed again by terrierd's one HTTP path.

use std::time::Duration;

use terrier_testkit::raw_visitor::{RawAnswer, RawVisitor};
use terrier_testkit::upstream;
use terrier_testkit::visitor::device_host;
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::io::AsyncReadExt;

/// Bound on any one answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The next answer on `visitor`, which must come whole within [`ANSWER_WITHIN`].
async fn answer(visitor: &mut RawVisitor) -> RawAnswer {
    visitor.answer(ANSWER_WITHIN).await.expect("an answer in time").expect("an answer, not a close")
}

/// Sends `bytes` on `visitor`.
async fn send(visitor: &mut RawVisitor, bytes: &[u8]) {
    visitor.send(bytes).await.expect("send");
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
    send(&mut visitor, requests.as_bytes()).await;
    let first = answer(&mut visitor).await;
    assert_eq!((first.status, first.text().as_str()), (200, "hello"));
    let second = answer(&mut visitor).await;
    assert_eq!((second.status, second.text().as_str()), (200, "abcdefg"));
    let third = answer(&mut visitor).await;
    assert_eq!((third.status, third.text().as_str()), (200, "hello from device"));
    assert_eq!(third.header("x-seen-xff"), Some("127.0.0.1"), "only the TCP peer, never the visitor's claim");
    assert_eq!(third.header("x-seen-proto"), Some("http"));
    assert_eq!(third.header("x-seen-xfh"), Some(host.as_str()));
    assert_eq!(third.header("x-seen-host"), Some(host.as_str()));

    // A request sent after the answers, on the same connection.
    send(&mut visitor, format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(answer(&mut visitor).await.status, 200);
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
    send(&mut visitor, request.as_bytes()).await;
    let answer = answer(&mut visitor).await;
    assert_eq!(answer.status, 200);
    // A proxy between two connections drops hop-by-hop headers.
    assert_eq!(answer.text(), "host x-forwarded-for x-forwarded-host x-forwarded-proto");
    server.stop().await;
}

#[tokio::test]
async fn each_request_on_a_connection_is_routed_by_its_own_host() {
    init_logging();
    let (server, _agent, host) = web_device(|_| {}).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    let get = |host: &str| format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n");
    send(&mut visitor, get(&host).as_bytes()).await;
    assert_eq!(answer(&mut visitor).await.status, 200);
    // Pipelined: the device's answer comes first, then the unknown host's page.
    send(&mut visitor, format!("{}{}", get(&host), get("nobody12345.localhost")).as_bytes()).await;
    assert_eq!(answer(&mut visitor).await.status, 200);
    let unknown = answer(&mut visitor).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.text().contains("No device here"), "{}", unknown.text());
    // The connection goes on serving the device.
    send(&mut visitor, get(&host).as_bytes()).await;
    let again = answer(&mut visitor).await;
    assert_eq!((again.status, again.text().as_str()), (200, "hello from device"));
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
    send(&mut visitor, format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    let page = answer(&mut visitor).await;
    assert_eq!(page.status, 502);
    assert!(page.text().contains("The device closed the connection"), "{}", page.text());
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    server.stop().await;
}

#[tokio::test]
async fn a_later_request_past_max_header_bytes_is_refused() {
    init_logging();
    let (server, _agent, host) = web_device(|c| c.limits.max_header_bytes = 8192).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    send(&mut visitor, format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(answer(&mut visitor).await.status, 200);
    // Over the limit before its end: 431, or a close if hyper stops
    // reading first.
    let huge = format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(16 * 1024));
    let _ = visitor.send(huge.as_bytes()).await;
    match visitor.answer(ANSWER_WITHIN).await {
        Ok(None) => {}
        Ok(Some(refused)) => {
            assert_eq!(refused.status, 431, "{}", refused.text());
            assert!(!refused.text().contains("hello from device"), "the oversized request reached the device");
        }
        Err(e) => panic!("neither 431 nor a close: {e}"),
    }

    // Garbage after an answered request: 400.
    let mut visitor = RawVisitor::connect(server.addr).await;
    send(&mut visitor, format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await;
    assert_eq!(answer(&mut visitor).await.status, 200);
    send(&mut visitor, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert_eq!(answer(&mut visitor).await.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn connection_close_ends_the_visitors_connection_only() {
    init_logging();
    let (server, _agent, host) = web_device(|_| {}).await;
    for _ in 0..3 {
        let mut visitor = RawVisitor::connect(server.addr).await;
        send(&mut visitor, format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
        let answer = answer(&mut visitor).await;
        assert_eq!(answer.status, 200);
        // The device's connection is kept for the next visitor: the
        // visitor's `Connection: close` is for its own hop only.
        assert_eq!(answer.text(), "host x-forwarded-for x-forwarded-host x-forwarded-proto");
        assert!(matches!(visitor.answer(Duration::from_secs(5)).await, Ok(None)), "the visitor asked to close");
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
        send(&mut visitor, format!("GET / HTTP/1.1\r\nHost: {host}\r\nKeep-Alive: timeout=5\r\n\r\n").as_bytes()).await;
        let answer = answer(&mut visitor).await;
        assert_eq!(answer.status, 200, "request {i}");
        assert!(!answer.text().contains("keep-alive"), "request {i}: {}", answer.text());
    }
    server.stop().await;
}
