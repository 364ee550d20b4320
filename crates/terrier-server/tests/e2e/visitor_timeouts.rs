//! Visitors cannot hold the server's resources by doing nothing, or by
//! asking and not reading: idle HTTP connections (HTTP/1.1 and HTTP/2)
//! close after `visitor_idle_timeout`, a request body that stops is cut
//! after `body_read_timeout`, a connection or WebSocket that moves no
//! bytes after `tcp_idle_timeout`, and every request or WebSocket holds
//! one of its address's share of the device's streams, while other
//! visitors keep being served. Raw sockets from different loopback
//! addresses, so the stall and the visitor are the test's own.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use terrier_testkit::visitor::{self, connect_from, websocket_over, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Far below the defaults (60 s, 30 s), far above the test's own timeouts.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

/// Reads until the server closes `tcp`; what it sent before.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(CLOSED_WITHIN, async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server closed the idle connection");
    got
}

#[tokio::test]
async fn idle_h2c_and_http1_connections_close_while_others_are_served() {
    init_logging();
    let server = TestServer::start(|c| c.limits.visitor_idle_timeout = Duration::from_millis(500)).await;
    let (_device, host) = TestAgent::web_device(server.url(), "idle").await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(H2_PREFACE).await.unwrap();
        idle.push(tcp);
    }
    let mut keep_alive = TcpStream::connect(server.addr).await.unwrap();
    keep_alive.write_all(format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    assert_eq!(Visitor::new(server.addr).get(&host, "/hello").await.status, 200, "another visitor is served");
    for (i, tcp) in idle.iter_mut().enumerate() {
        let got = read_until_closed(tcp).await;
        // SETTINGS, then GOAWAY (type 7) before the close.
        assert!(got.windows(2).any(|w| w == [0x07, 0x00]), "connection {i}: no GOAWAY in {got:?}");
    }
    let answered = String::from_utf8_lossy(&read_until_closed(&mut keep_alive).await).into_owned();
    assert!(answered.starts_with("HTTP/1.1 200"), "answered, then closed when idle: {answered}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_that_stops_is_cut_with_408() {
    init_logging();
    let server = TestServer::start(|c| c.limits.body_read_timeout = Duration::from_millis(300)).await;
    let (_device, host) = TestAgent::web_device(server.url(), "slow-body").await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = format!("POST /count HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n0123456789");
    slow.write_all(head.as_bytes()).await.unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut slow).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert_eq!(Visitor::new(server.addr).post(&host, "/echo", "x".repeat(2000)).await.body.len(), 2000);
    server.stop().await;
}

/// Sends `GET path` for `host` from `from` and reads the answer's head only.
async fn head_from(from: [u8; 4], server: SocketAddr, host: &str, path: &str) -> (u16, TcpStream) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    visitor::head_from(from, server, request.as_bytes()).await
}

/// An answer far larger than socket buffers: whoever stops reading it
/// leaves the device connection busy.
const HUGE: &str = "/bytes/500000000";

#[tokio::test]
async fn a_visitor_that_stops_reading_holds_only_its_share_and_is_cut_when_silent() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.max_streams_per_device = 4;
        c.limits.max_streams_per_visitor = 1;
        c.limits.answer_write_timeout = Duration::from_millis(500);
    })
    .await;
    let (_device, host) = TestAgent::web_device(server.url(), "slow-reader").await;
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        let (status, tcp) = head_from([127, 0, 0, 2], server.addr, &host, HUGE).await;
        statuses.push(status);
        held.push(tcp);
    }
    assert_eq!(statuses, [200, 503, 503, 503], "127.0.0.2 gets its share of one stream and no more");
    let (status, _) = head_from([127, 0, 0, 1], server.addr, &host, "/hello").await;
    assert_eq!(status, 200, "another address still reaches the device");
    // The reader that stopped moves no bytes: it is cut, and its place
    // comes back.
    eventually(CLOSED_WITHIN, "127.0.0.2's stalled answer is cut and its place given back", || async {
        let (status, tcp) = head_from([127, 0, 0, 2], server.addr, &host, "/hello").await;
        (status == 200).then_some(tcp)
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn http_visitors_arriving_together_get_no_more_than_the_device_total() {
    init_logging();
    let server = TestServer::start(|c| c.limits.max_streams_per_device = 4).await;
    let (_device, host) = TestAgent::web_device(server.url(), "crowd").await;
    let at_once = (10..40u8).map(|i| head_from([127, 0, 0, i], server.addr, &host, HUGE));
    let answered = futures_util::future::join_all(at_once).await;
    let held = answered.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(held, 4, "max_streams_per_device holds for HTTP visitors that arrive together");
}

/// A WebSocket through the tunnel to the device at `host`, from `from`, or
/// the status that refused it.
async fn websocket_from(
    from: [u8; 4],
    server: SocketAddr,
    host: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, u16> {
    match websocket_over(connect_from(from, server).await, host, "/ws").await {
        Ok(ws) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket handshake through the tunnel: {e}"),
    }
}

#[tokio::test]
async fn a_silent_websocket_holds_one_place_and_closes_after_the_idle_timeout() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.max_streams_per_device = 3;
        c.limits.max_streams_per_visitor = 1;
        c.limits.tcp_idle_timeout = Duration::from_millis(500);
    })
    .await;
    let (_device, host) = TestAgent::web_device(server.url(), "chat").await;
    let mut silent = websocket_from([127, 0, 0, 2], server.addr, &host).await.expect("the first WebSocket");
    let second = websocket_from([127, 0, 0, 2], server.addr, &host).await.map(drop);
    assert_eq!(second, Err(503), "one address holds its share of WebSockets and no more");
    let mut talking = websocket_from([127, 0, 0, 1], server.addr, &host).await.expect("another address");
    talking.send(Message::text("hello")).await.expect("send");
    let echoed = tokio::time::timeout(CLOSED_WITHIN, talking.next()).await.expect("echo in time");
    assert!(matches!(echoed, Some(Ok(Message::Text(ref t))) if t.as_str() == "hello"), "{echoed:?}");
    // The silent one ends: a close, an error or the end of the stream.
    let ended = tokio::time::timeout(CLOSED_WITHIN, async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a WebSocket silent past limits.tcp_idle_timeout was not closed");
    server.stop().await;
}
