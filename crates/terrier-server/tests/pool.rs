//! Pooled data sockets: idle sockets opened ahead of visitors get visitors
//! with `assign`, at the protocol level (a hand-driven agent) and with the
//! real agent's `pool` setting.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, TestAgent, TestServer};
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

#[tokio::test]
async fn pooled_socket_gets_the_visitor_with_assign_then_open_takes_over() {
    init_logging();
    let server = TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await;
    let (mut control, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/control?name=pooled&tcp=echo", server.addr))
            .await
            .unwrap();
    let welcome: serde_json::Value = serde_json::from_str(&next_text(&mut control).await).unwrap();
    let session = welcome["welcome"]["session"].as_str().unwrap().to_owned();
    let port = welcome["welcome"]["tcp"][0]["port"].as_u64().unwrap();
    let (mut pooled, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/data?session={session}&pool=1", server.addr))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);

    // The pooled socket is parked once its handshake completed; a visitor
    // arriving before that would get `open` instead, so retry until assigned.
    let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await.unwrap();
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
    let _second = tokio::net::TcpStream::connect(("127.0.0.1", port as u16)).await.unwrap();
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
    let echo = upstream::tcp_echo().await;
    let mut config = terrier_testkit::agent::agent_config(server.url(), "pool-dev");
    config.http = Some(terrier_agent::Service::http(terrier_testkit::agent::target(web)));
    config.tcp = vec![terrier_agent::Service { id: "echo".into(), target: terrier_testkit::agent::target(echo) }];
    config.pool = 4;
    let mut agent = TestAgent::start_with(config);
    let connected = agent.connected(1).await;
    let host = device_host(&connected.subdomain);
    for i in 0..50 {
        // A fresh client each time: every request needs a new stream.
        let page = Visitor::new(server.addr).post(&host, "/echo", format!("request {i}")).await;
        assert_eq!(page.body, format!("request {i}"));
    }
    for i in 0..50 {
        let mut visitor = tokio::net::TcpStream::connect(("127.0.0.1", connected.tcp[0].port)).await.unwrap();
        let msg = format!("tcp {i}");
        visitor.write_all(msg.as_bytes()).await.unwrap();
        visitor.shutdown().await.unwrap();
        let mut back = String::new();
        tokio::time::timeout(Duration::from_secs(5), visitor.read_to_string(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, msg);
    }
    server.stop().await;
}
