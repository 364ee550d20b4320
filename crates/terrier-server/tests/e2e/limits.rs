//! Per-device limits past which only that device's visitors are turned
//! away: open streams per device and per visitor address, and the idle
//! lifetimes of relayed TCP streams and pooled data sockets. (Header size and timeouts, frame sizes, pending streams and
//! pool size are pushed past in bad_input.rs and pool.rs; handshakes per
//! IP and devices per token in auth.rs.)

use std::net::SocketAddr;
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

/// Connects to `port` on 127.0.0.1 from the loopback address `from`.
async fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    terrier_testkit::visitor::connect_from(from, SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// A device with a TCP echo service; returns the agent and its public port.
async fn echo_device(server: &TestServer, name: &str) -> (TestAgent, u16) {
    let mut agent = TestAgent::start(server.url(), name, None, &[("echo", upstream::tcp_echo().await)]);
    let connected = agent.connected(1).await;
    let port = connected.tcp.iter().find(|p| p.service == "echo").expect("echo port").port;
    (agent, port)
}

/// Opens a stream from `from` and has one byte echoed; `None` if the
/// server closed it instead.
async fn idle_stream_from(from: [u8; 4], port: u16) -> Option<TcpStream> {
    let mut stream = connect_from(from, port).await;
    stream.write_all(b"x").await.ok()?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(STEP_TIMEOUT, stream.read_exact(&mut byte)).await.ok()?.ok()?;
    Some(stream)
}

#[tokio::test]
async fn one_address_at_its_share_of_streams_leaves_the_rest_to_other_visitors() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.max_streams_per_device = 12;
        c.limits.max_streams_per_visitor = 8;
    })
    .await;
    let (_agent, port) = echo_device(&server, "shared").await;

    let mut flood = Vec::new();
    for _ in 0..20 {
        let mut stream = connect_from([127, 0, 0, 2], port).await;
        if echo_once(&mut stream).await.is_some() {
            flood.push(stream);
        }
    }
    let mut other = connect_from([127, 0, 0, 1], port).await;
    echo_once(&mut other).await.expect("another address still reaches the device");
    assert_eq!(flood.len(), 8, "127.0.0.2 holds its share of streams and no more");

    // The device total still applies: 8 + 1 + 3 streams make 12.
    let mut third = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from([127, 0, 0, 3], port).await;
        echo_once(&mut stream).await.expect("within the device total");
        third.push(stream);
    }
    let mut over = connect_from([127, 0, 0, 3], port).await;
    assert!(echo_once(&mut over).await.is_none(), "past max_streams_per_device, even within a share");

    drop(flood.pop());
    eventually(STEP_TIMEOUT, "127.0.0.2 gets its place back when one of its streams closes", || async {
        let mut stream = connect_from([127, 0, 0, 2], port).await;
        echo_once(&mut stream).await.map(|()| stream)
    })
    .await;
}

#[tokio::test]
async fn visitors_arriving_together_do_not_slip_past_the_device_total() {
    init_logging();
    let server = TestServer::start(|c| c.limits.max_streams_per_device = 4).await;
    let (_agent, port) = echo_device(&server, "rush").await;
    // Thirty addresses at once: each checks the total before any stream
    // of the others exists.
    let at_once = (10..40u8).map(|i| idle_stream_from([127, 0, 0, i], port));
    let held: Vec<TcpStream> = futures_util::future::join_all(at_once).await.into_iter().flatten().collect();
    assert_eq!(held.len(), 4, "max_streams_per_device holds for visitors that arrive together");
}

#[tokio::test]
async fn a_thousand_idle_connections_from_one_address_do_not_lock_out_another() {
    init_logging();
    // The defaults: 1024 streams per device, 256 per visitor address.
    let server = TestServer::start(|_| {}).await;
    let (_agent, port) = echo_device(&server, "crowded").await;

    // A few dozen at a time, as a flood trickles in: all at once would
    // meet limits.max_pending_streams first.
    let opened: Vec<Option<TcpStream>> = futures_util::stream::iter(0..1030)
        .map(|_| idle_stream_from([127, 0, 0, 2], port))
        .buffer_unordered(32)
        .collect()
        .await;
    let held: Vec<TcpStream> = opened.into_iter().flatten().collect();
    let mut other = connect_from([127, 0, 0, 1], port).await;
    echo_once(&mut other).await.expect("another address still reaches the device");
    assert_eq!(held.len(), server.config.limits.max_streams_per_visitor, "127.0.0.2 holds only its share");
}

#[tokio::test]
async fn a_silent_tcp_stream_is_closed_after_the_idle_timeout_while_an_active_one_stays() {
    init_logging();
    let server = TestServer::start(|c| c.limits.tcp_idle_timeout = Duration::from_millis(300)).await;
    let (_agent, port) = echo_device(&server, "idler").await;
    let mut active = connect_from([127, 0, 0, 1], port).await;
    echo_once(&mut active).await.expect("the active stream opens");
    let mut silent = connect_from([127, 0, 0, 1], port).await;
    echo_once(&mut silent).await.expect("the silent stream opens");

    // The active stream moves bytes every third of the timeout while the
    // silent one waits for the server to close it.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(STEP_TIMEOUT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                read = silent.read(&mut byte) => return read,
                _ = tick.tick() => echo_once(&mut active).await.expect("the active stream stays open"),
            }
        }
    })
    .await
    .expect("the silent stream is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "the silent stream ends, got {closed:?}");
    echo_once(&mut active).await.expect("the active stream outlives the silent one");
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
