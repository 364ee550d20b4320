//! Graceful shutdown as agents see it: told to go away, with a spread-out
//! reconnect delay, and back as soon as a server is there again.

use std::time::Duration;

use terrier_agent::Event;
use terrier_testkit::upstream;
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};

#[tokio::test]
async fn stopping_server_sends_go_away_with_a_bounded_random_delay() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let spread = |c: &mut terrier_server::ServerConfig| c.reconnect_spread = Duration::from_millis(400);
    let server = TestServer::start_in(dir.path(), spread).await;
    let addr = server.addr;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "polite", Some(web), &[]);
    let first = agent.connected(1).await;
    server.stop().await;
    let delay = eventually(Duration::from_secs(5), "go_away and the reconnect delay", || {
        let events = agent.events();
        async move {
            let told =
                events.iter().any(|e| matches!(e, Event::Disconnected { reason } if reason.contains("going away")));
            let delay = events.iter().find_map(|e| match e {
                Event::Reconnecting { in_secs, .. } => Some(*in_secs),
                _ => None,
            });
            told.then_some(delay).flatten()
        }
    })
    .await;
    assert!(delay <= 0.4, "delay {delay}s beyond the 400 ms spread");
    let server = TestServer::start_on(addr, dir.path(), spread).await;
    assert_eq!(agent.connected(2).await.subdomain, first.subdomain);
    server.stop().await;
}
