//! Visitors cannot hold the server's resources by doing nothing: idle HTTP
//! connections (HTTP/1.1 and HTTP/2) close after `visitor_idle_timeout`,
//! and a request body that stops is cut after `body_read_timeout`, while
//! other visitors keep being served. Raw sockets, so the stall is the
//! test's own.

use std::time::Duration;

use terrier_testkit::visitor::Visitor;
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
