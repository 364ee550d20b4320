//! Pooled data sockets: idle sockets opened ahead of visitors get visitors
//! with `assign`, at the protocol level (a hand-driven agent) and with the
//! real agent's `pool` setting.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use terrier_testkit::admin::AdminClient;
use terrier_testkit::proxy::PausingProxy;
use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame in time").unwrap().unwrap();
        if let Message::Text(text) = msg {
            return text.as_str().to_owned();
        }
    }
}

/// A device driven by hand: its control socket (serving TCP service
/// `echo`), session id and public port.
async fn hand_driven_device(server: std::net::SocketAddr, name: &str) -> (Ws, String, u16) {
    let url = format!("ws://{server}/v1/control?name={name}&tcp=echo");
    let (mut control, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut control).await).unwrap();
    let session = welcome["welcome"]["session"].as_str().unwrap().to_owned();
    let port = welcome["welcome"]["tcp"][0]["port"].as_u64().unwrap() as u16;
    (control, session, port)
}

#[tokio::test]
async fn pooled_socket_gets_the_visitor_with_assign_then_open_takes_over() {
    init_logging();
    let server = TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await;
    let (mut control, session, port) = hand_driven_device(server.addr, "pooled").await;
    let (mut pooled, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/data?session={session}&pool=1", server.addr))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);

    // The pooled socket is parked once its handshake completed; a visitor
    // arriving before that would get `open` instead, so retry until assigned.
    let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    visitor.write_all(b"first bytes").await.unwrap();
    let assign: serde_json::Value = serde_json::from_str(&next_text(&mut pooled).await).unwrap();
    assert_eq!(assign["assign"]["service"], "echo");
    assert!(terrier_proto::name::is_valid_id(assign["assign"]["stream"].as_str().unwrap()));
    let Some(Ok(Message::Binary(bytes))) = pooled.next().await else { panic!("visitor bytes") };
    assert_eq!(&bytes[..], b"first bytes");
    pooled.send(Message::binary(b"echoed".to_vec())).await.unwrap();
    let mut buf = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), visitor.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"echoed");

    // The pool is empty now: the next visitor is announced with `open`.
    let _second = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let open: serde_json::Value = serde_json::from_str(&next_text(&mut control).await).unwrap();
    assert_eq!(open["open"]["service"], "echo");
    server.stop().await;
}

#[tokio::test]
async fn pool_over_its_limit_is_refused_with_429() {
    init_logging();
    let server = TestServer::start(|c| c.limits.max_pool_sockets = 1).await;
    let (mut control, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/control?name=greedy&http=1", server.addr)).await.unwrap();
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut control).await).unwrap();
    let session = welcome["welcome"]["session"].as_str().unwrap().to_owned();
    let url = format!("ws://{}/v1/data?session={session}&pool=1", server.addr);
    let (_first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let refused = terrier_testkit::eventually(Duration::from_secs(5), "the pool to fill", || {
        let url = url.clone();
        async move {
            match tokio_tungstenite::connect_async(&url).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(refused, 429);
    server.stop().await;
}

#[tokio::test]
async fn agent_with_a_pool_serves_http_and_tcp_visitors() {
    init_logging();
    let server = TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await;
    let web = upstream::http_service().await;
    let mut config = echo_agent_with_pool(server.url(), "pool-dev").await;
    config.http = Some(terrier_agent::Service::http(terrier_testkit::agent::target(web)));
    let mut agent = TestAgent::start_with(config);
    let connected = agent.connected(1).await;
    let host = device_host(&connected.subdomain);
    for i in 0..50 {
        // A fresh client each time: every request needs a new stream.
        let page = Visitor::new(server.addr).post(&host, "/echo", format!("request {i}")).await;
        assert_eq!(page.body, format!("request {i}"));
    }
    for i in 0..50 {
        echo_once(connected.tcp[0].port, &format!("tcp {i}")).await;
    }
    server.stop().await;
}

/// A real agent's settings: TCP service `echo` (a fresh echo server) and
/// `--pool 4`.
async fn echo_agent_with_pool(server: url::Url, name: &str) -> terrier_agent::AgentConfig {
    let mut config = terrier_testkit::agent::agent_config(server, name);
    let echo = upstream::tcp_echo().await;
    config.tcp = vec![terrier_agent::Service { id: "echo".into(), target: terrier_testkit::agent::target(echo) }];
    config.pool = 4;
    config
}

/// One TCP visitor through `port` to an echo service: `msg`, its end, and
/// the same bytes back.
async fn echo_once(port: u16, msg: &str) {
    let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    visitor.write_all(msg.as_bytes()).await.unwrap();
    visitor.shutdown().await.unwrap();
    let mut back = String::new();
    tokio::time::timeout(Duration::from_secs(5), visitor.read_to_string(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, msg);
}

/// Idle pooled sockets of `name`, as the admin API reports them.
async fn pooled_sockets(admin: &AdminClient, name: &str) -> u64 {
    admin.get(&format!("/api/v1/devices/{name}")).await.json["pooled_sockets"].as_u64().unwrap_or(0)
}

/// Binary frames until the empty one that ends the peer's direction.
async fn read_stream(ws: &mut Ws) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame in time");
        match frame.unwrap().unwrap() {
            Message::Binary(chunk) if chunk.is_empty() => return bytes,
            Message::Binary(chunk) => bytes.extend_from_slice(&chunk),
            other => panic!("expected stream bytes, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_pooled_socket_with_reuse_carries_visitor_after_visitor_and_one_without_is_closed() {
    init_logging();
    let server = TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    for (name, query, visitors) in [("reuser", "pool=1&reuse=1", 3), ("plain", "pool=1", 1)] {
        let (_control, session, port) = hand_driven_device(server.addr, name).await;
        let url = format!("ws://{}/v1/data?session={session}&{query}", server.addr);
        let (mut pooled, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        for i in 0..visitors {
            // Parked again only once both ends are through, just after the
            // previous visitor saw its stream end.
            eventually(Duration::from_secs(5), "the socket in the pool", || async {
                (pooled_sockets(&admin, name).await == 1).then_some(())
            })
            .await;
            let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            visitor.write_all(format!("visitor {i}").as_bytes()).await.unwrap();
            visitor.shutdown().await.unwrap();
            let assign: serde_json::Value = serde_json::from_str(&next_text(&mut pooled).await).unwrap();
            assert_eq!(assign["assign"]["service"], "echo", "{name}: visitor {i} assigned to the same socket");
            assert_eq!(read_stream(&mut pooled).await, format!("visitor {i}").as_bytes());
            pooled.send(Message::binary(format!("answer {i}").into_bytes())).await.unwrap();
            pooled.send(Message::binary(Vec::new())).await.unwrap();
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(5), visitor.read_to_string(&mut answer)).await.unwrap().unwrap();
            assert_eq!(answer, format!("answer {i}"));
        }
        if query.contains("reuse") {
            eventually(Duration::from_secs(5), "the socket back in the pool", || async {
                (pooled_sockets(&admin, name).await == 1).then_some(())
            })
            .await;
        } else {
            let next = tokio::time::timeout(Duration::from_secs(5), pooled.next()).await.expect("a frame in time");
            assert!(next.unwrap().unwrap().is_close(), "without reuse=1 the socket is closed after its stream");
            assert_eq!(pooled_sockets(&admin, name).await, 0);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_reused_socket_that_finds_the_pool_full_is_closed() {
    init_logging();
    let server = TestServer::start(|c| {
        c.tcp_host = Some("127.0.0.1".into());
        c.limits.max_pool_sockets = 1;
    })
    .await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let (_control, session, port) = hand_driven_device(server.addr, "full").await;
    let url = format!("ws://{}/v1/data?session={session}&pool=1&reuse=1", server.addr);
    let parked = || async { (pooled_sockets(&admin, "full").await == 1).then_some(()) };
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    eventually(Duration::from_secs(5), "the first socket parked", parked).await;
    let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    visitor.write_all(b"hello").await.unwrap();
    visitor.shutdown().await.unwrap();
    next_text(&mut first).await;
    assert_eq!(read_stream(&mut first).await, b"hello");
    // While the first socket carries the visitor, a second one fills the pool.
    let (_second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    eventually(Duration::from_secs(5), "the second socket parked", parked).await;
    first.send(Message::binary(b"bye".to_vec())).await.unwrap();
    first.send(Message::binary(Vec::new())).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), visitor.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, "bye");
    let next = tokio::time::timeout(Duration::from_secs(5), first.next()).await.expect("a frame in time");
    assert!(next.unwrap().unwrap().is_close(), "no room back in the pool: closed");
    assert_eq!(pooled_sockets(&admin, "full").await, 1, "the second socket stays parked");
    server.stop().await;
}

#[tokio::test]
async fn the_agents_pool_serves_one_visitor_after_another_without_new_sockets() {
    init_logging();
    let server = TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    // Every socket the agent opens goes through the proxy, which counts them.
    let proxy = PausingProxy::start(server.addr).await;
    let server_url: url::Url = format!("http://{}", proxy.addr).parse().unwrap();
    let mut agent = TestAgent::start_with(echo_agent_with_pool(server_url, "reuse-dev").await);
    let connected = agent.connected(1).await;
    eventually(Duration::from_secs(5), "the pool filled", || async {
        (pooled_sockets(&admin, "reuse-dev").await == 4).then_some(())
    })
    .await;
    let opened = proxy.connections();
    assert_eq!(opened, 5, "the control socket and four pooled sockets");
    for i in 0..40 {
        echo_once(connected.tcp[0].port, &format!("tcp {i}")).await;
    }
    // One visitor at a time takes one socket, or two while the last one is
    // still coming back: the pool never runs low, so it opens nothing (one
    // new socket per visitor without reuse).
    assert_eq!(proxy.connections(), opened, "no socket opened for 40 visitors");
    server.stop().await;
}

#[tokio::test]
async fn reused_pooled_sockets_keep_concurrent_streams_apart() {
    init_logging();
    let server = TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await;
    let mut agent = TestAgent::start_with(echo_agent_with_pool(server.url(), "busy-dev").await);
    let port = agent.connected(1).await.tcp[0].port;
    // 16 visitors at once, 10 streams each, every stream with its own
    // 64 KiB: more streams than pooled sockets, so sockets come back to the
    // pool while others are busy, and `open` takes the overflow.
    let visitors = (0..16u8).map(|v| {
        tokio::spawn(async move {
            for round in 0..10u8 {
                let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i as u8) ^ v ^ round.rotate_left(4)).collect();
                let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let (mut rd, mut wr) = visitor.split();
                let send = async {
                    wr.write_all(&payload).await.unwrap();
                    wr.shutdown().await.unwrap();
                };
                let mut back = Vec::new();
                let receive = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut back));
                let ((), received) = tokio::join!(send, receive);
                received.expect("the echo in time").unwrap();
                assert!(back == payload, "visitor {v} round {round}: {} bytes back, not its own", back.len());
            }
        })
    });
    for visitor in visitors.collect::<Vec<_>>() {
        visitor.await.unwrap();
    }
    server.stop().await;
}
