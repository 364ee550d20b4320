//! HTTP through the tunnel: requests, bodies, concurrency, WebSocket
//! pass-through and forwarding headers, against a real server and agent.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn get_and_post_reach_the_device_with_forwarding_headers() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "thermo-42", Some(web), &[]);
    let connected = agent.connected(1).await;
    let url = connected.url.expect("http url");
    assert_eq!(url, format!("http://{}.localhost:{}", connected.subdomain, server.addr.port()));
    assert_eq!(connected.subdomain.len(), 10);

    let host = device_host(&connected.subdomain);
    let visitor = Visitor::new(server.addr);
    let page = visitor.get(&host, "/hello").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, "hello from device");
    assert_eq!(page.headers["x-seen-host"], host.as_str());
    assert_eq!(page.headers["x-seen-xff"], "127.0.0.1");
    assert_eq!(page.headers["x-seen-proto"], "http");
    assert_eq!(page.headers["x-seen-xfh"], host.as_str());

    let echoed = visitor.post(&host, "/echo", "ping through the tunnel").await;
    assert_eq!((echoed.status, echoed.body.as_str()), (200, "ping through the tunnel"));

    // Routing is per request: one keep-alive connection, two hosts.
    let other = TestAgent::start(server.url(), "other", Some(web), &[]);
    let mut other = other;
    let other_sub = other.connected(1).await.subdomain;
    let unknown = visitor.get("nobody12345.localhost", "/hello").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("No device here"));
    let again = visitor.get(&device_host(&other_sub), "/hello").await;
    assert_eq!(again.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_visitors_all_get_their_own_answer() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (_agent, host) = TestAgent::web_device(server.url(), "busy").await;
    let visitor = Visitor::new(server.addr);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (visitor, host) = (visitor.clone(), host.clone());
        tasks.spawn(async move {
            let body = format!("visitor number {i}");
            let page = visitor.post(&host, "/echo", body.clone()).await;
            assert_eq!(page.status, 200);
            assert_eq!(page.body, body);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("visitor task");
    }
    server.stop().await;
}

#[tokio::test]
async fn websocket_served_by_the_device_works_through_the_tunnel() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (_agent, host) = TestAgent::web_device(server.url(), "ws-device").await;

    let mut ws = terrier_testkit::visitor::websocket(server.addr, &host, "/ws").await;
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back, Message::text(text));
    }
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), big.as_slice());
    ws.close(None).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn large_bodies_stream_both_ways_intact() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (_agent, host) = TestAgent::web_device(server.url(), "bulk").await;
    let visitor = Visitor::new(server.addr);
    const SIZE: u64 = 50 * 1024 * 1024;

    // Download: 50 MB generated on the device, checked byte by byte.
    let response = visitor.send("GET", &host, &format!("/bytes/{SIZE}"), empty()).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut offset = 0u64;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(
                data.iter().enumerate().all(|(i, b)| *b == upstream::pattern(offset + i as u64)),
                "corrupt at {offset}"
            );
            offset += data.len() as u64;
        }
    }
    assert_eq!(offset, SIZE);

    // Upload: 50 MB streamed to the device, which counts and checks it.
    let stream = upstream::pattern_stream::<std::io::Error>(SIZE);
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream));
    let page = terrier_testkit::visitor::read(visitor.send("POST", &host, "/count", body).await).await;
    assert_eq!(page.body, format!("{SIZE} ok"));
    server.stop().await;
}

fn empty() -> terrier_testkit::visitor::Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

#[tokio::test]
async fn curl_reaches_the_device_by_its_url() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "curl-dev", Some(web), &[]);
    let connected = agent.connected(1).await;
    let url = connected.url.expect("url");
    let authority = url.trim_start_matches("http://");
    // --resolve makes curl use the device's real URL, as a browser would.
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-i", "--resolve", &format!("{authority}:127.0.0.1")])
        .arg(format!("{url}/hello"))
        .output()
        .await
        .expect("curl is installed (scripts/test.sh installs it)");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("hello from device"), "{out}");
    server.stop().await;
}
