//! Per-device limits past which only that device's visitors are turned
//! away: open streams per device, and the idle lifetime of pooled data
//! sockets. (Header size and timeouts, frame sizes, pending streams and
//! pool size are pushed past in bad_input.rs and pool.rs; handshakes per
//! IP and devices per token in auth.rs.)

use std::time::Duration;

use futures_util::StreamExt;
use terrier_testkit::raw::{handshake, FakeDevice};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, upstream, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one network step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a line on `stream` and reads its echo; `None` if the stream closed.
async fn echo_once(stream: &mut TcpStream) -> Option<()> {
    stream.write_all(b"ping\n").await.ok()?;
    let mut buf = [0u8; 5];
    tokio::time::timeout(STEP_TIMEOUT, stream.read_exact(&mut buf)).await.ok()?.ok()?;
    (&buf == b"ping\n").then_some(())
}

#[tokio::test]
async fn a_device_at_its_stream_limit_turns_away_only_its_own_new_visitors() {
    init_logging();
    let server = TestServer::start(|c| c.limits.max_streams_per_device = 2).await;
    let echo = upstream::tcp_echo().await;
    let mut busy = TestAgent::start(server.url(), "busy", Some(upstream::http_service().await), &[("echo", echo)]);
    let connected = busy.connected(1).await;
    let port = connected.tcp.iter().find(|p| p.service == "echo").expect("echo port").port;
    let (_other, other_host) = TestAgent::web_device(server.url(), "other").await;

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        echo_once(&mut stream).await.expect("within the limit");
        held.push(stream);
    }
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    assert!(echo_once(&mut third).await.is_none(), "a third TCP stream is closed");
    let visitor = Visitor::new(server.addr);
    let page = visitor.get(&device_host(&connected.subdomain), "/hello").await;
    assert_eq!(page.status, 503, "HTTP visitors of the busy device get 503: {}", page.body);
    assert_eq!(visitor.get(&other_host, "/hello").await.status, 200, "other devices are unaffected");

    drop(held.pop());
    eventually(STEP_TIMEOUT, "a place frees when a stream closes", || async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        echo_once(&mut stream).await
    })
    .await;
}

#[tokio::test]
async fn an_idle_pooled_data_socket_is_closed_after_its_lifetime() {
    init_logging();
    let server = TestServer::start(|c| c.limits.pool_idle_timeout = Duration::from_millis(500)).await;
    let device = FakeDevice::connect(server.addr, "pooled").await;
    let url = format!("ws://{}/v1/data?session={}&pool=1", server.addr, device.session);
    let mut socket = handshake(server.addr, &url, None).await.expect("parked in the pool");
    // Heartbeats are 1 s in tests: closed within idle time + one heartbeat.
    let ended = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(msg)) if msg.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the idle pooled socket was closed by the server");
}
