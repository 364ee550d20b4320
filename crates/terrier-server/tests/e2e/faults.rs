//! Faults between the pieces: a local service that goes down and comes back,
//! and a network path that silently stops carrying packets.

use std::time::Duration;

use terrier_agent::Event;
use terrier_testkit::proxy::PausingProxy;
use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};

#[tokio::test]
async fn local_service_down_then_up_gives_502_then_serves_without_reconnecting() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    // The device's web server, on a port we can stop and start again.
    let port = terrier_testkit::redis::free_port().await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut agent = TestAgent::start(server.url(), "flaky", Some(addr), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    let visitor = Visitor::new(server.addr);
    let down = visitor.get(&host, "/hello").await;
    assert_eq!(down.status, 502);
    assert!(down.body.contains("refused"), "{}", down.body);

    let web = upstream::http_service_on(addr).await;
    assert_eq!(web, addr);
    let up = visitor.get(&host, "/hello").await;
    assert_eq!((up.status, up.body.as_str()), (200, "hello from device"));
    let connects = agent.events().iter().filter(|e| matches!(e, Event::Connected(_))).count();
    assert_eq!(connects, 1, "the tunnel stayed up: {:?}", agent.events());
    server.stop().await;
}

#[tokio::test]
async fn black_hole_between_agent_and_server_is_noticed_within_the_heartbeat_window() {
    init_logging();
    // Heartbeat 1 s (test config): silence is death after 3 s.
    let server = TestServer::start(|_| {}).await;
    let proxy = PausingProxy::start(server.addr).await;
    let web = upstream::http_service().await;
    let url = url::Url::parse(&format!("http://{}", proxy.addr)).unwrap();
    let mut agent = TestAgent::start(url, "tunnelled", Some(web), &[]);
    let first = agent.connected(1).await;
    let host = device_host(&first.subdomain);
    assert_eq!(Visitor::new(server.addr).get(&host, "/hello").await.status, 200);

    proxy.pause();
    let paused_at = tokio::time::Instant::now();
    // Both ends notice: the agent reports the silence, the server shows the
    // device offline.
    eventually(Duration::from_secs(8), "the agent to notice the silence", || {
        let events = agent.events();
        async move {
            events
                .iter()
                .any(|e| matches!(e, Event::Disconnected { reason } if reason.contains("silent")))
                .then_some(())
        }
    })
    .await;
    eventually(Duration::from_secs(8), "the server to drop the device", || {
        let (visitor, host) = (Visitor::new(server.addr), host.clone());
        async move { (visitor.get(&host, "/hello").await.status == 503).then_some(()) }
    })
    .await;
    assert!(paused_at.elapsed() < Duration::from_secs(8), "took {:?}", paused_at.elapsed());

    proxy.resume();
    let back = agent.connected(2).await;
    assert_eq!(back.subdomain, first.subdomain);
    assert_eq!(Visitor::new(server.addr).get(&host, "/hello").await.status, 200);
    server.stop().await;
}
