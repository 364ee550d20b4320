//! Two agents using one device name: the newest still wins a takeover, but
//! when another agent takes the name over `limits.max_takeovers_per_minute`
//! times within a minute, the next one is refused with 409 and told why,
//! while the agent online keeps the name and keeps serving visitors.

use terrier_agent::Event;
use terrier_testkit::admin::AdminClient;
use terrier_testkit::agent::agent_config;
use terrier_testkit::upstream::http_service;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, TestAgent, TestServer};

fn is_conflict(event: &Event) -> bool {
    matches!(event, Event::Disconnected { reason } if reason.contains("name conflict"))
}

fn connections(agent: &TestAgent) -> usize {
    agent.events().iter().filter(|e| matches!(e, Event::Connected(_))).count()
}

#[tokio::test]
async fn two_agents_with_one_name_end_with_one_online_and_the_other_told_why() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = http_service().await;
    let mut first = TestAgent::start(server.url(), "raspberrypi", Some(web), &[]);
    first.connected(1).await;
    let second = TestAgent::start(server.url(), "raspberrypi", Some(web), &[]);

    // The two trade the name until one of them is refused.
    let (refused, online) = tokio::select! {
        event = first.wait_for("a name conflict", 1, is_conflict) => (event, &second),
        event = second.wait_for("a name conflict", 1, is_conflict) => (event, &first),
    };
    let refused_agent = if std::ptr::eq(online, &first) { &second } else { &first };
    let Event::Disconnected { reason } = refused else { unreachable!() };
    assert!(reason.contains("409") && reason.contains("another --name"), "says what to do: {reason}");
    assert!(reason.contains("connected since"), "says since when: {reason}");
    assert!(!reason.contains("127.0.0.1"), "in open mode nobody is told the agent's address: {reason}");

    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let device = admin.get("/api/v1/devices/raspberrypi").await.json;
    let session = device["session"].clone();
    let conflict = device["name_conflict"].as_str().unwrap_or_default().to_owned();
    assert!(conflict.contains("another agent at 127.0.0.1"), "the admin API shows the conflict: {device}");

    // It keeps being refused when it retries, and the agent online keeps
    // its session and serves visitors meanwhile.
    let online_connections = connections(online);
    refused_agent.wait_for("a second refusal", 2, is_conflict).await;
    assert_eq!(admin.get("/api/v1/devices/raspberrypi").await.json["session"], session, "the name stayed put");
    assert_eq!(connections(online), online_connections, "the agent online was not replaced");
    let host = device_host(device["subdomain"].as_str().expect("subdomain"));
    let page = Visitor::new(server.addr).get(&host, "/hello").await;
    assert_eq!(page.status, 200, "{host}: {}", page.body);
    server.stop().await;
}

#[tokio::test]
async fn the_same_agent_taking_its_own_name_over_is_never_refused() {
    init_logging();
    let server = TestServer::start(|c| c.limits.max_takeovers_per_minute = 1).await;
    let web = http_service().await;
    // One agent whose old control socket is still up when it connects again
    // (a NAT rebinding): the same instance id, so never a conflict.
    let mut config = agent_config(server.url(), "rebinds");
    config.http = Some(terrier_agent::Service::http(terrier_testkit::agent::target(web)));
    let mut old = TestAgent::start_with(config.clone());
    old.connected(1).await;
    for round in 1..=3 {
        let mut new = TestAgent::start_with(config.clone());
        new.connected(1).await;
        old.stop().await.expect("old socket ends");
        assert!(!new.events().iter().any(is_conflict), "round {round}: {:?}", new.events());
        old = new;
    }
    server.stop().await;
}

#[tokio::test]
async fn with_no_takeovers_allowed_another_agent_is_refused_at_once() {
    init_logging();
    let server = TestServer::start(|c| c.limits.max_takeovers_per_minute = 0).await;
    let web = http_service().await;
    let mut first = TestAgent::start(server.url(), "taken", Some(web), &[]);
    first.connected(1).await;
    let second = TestAgent::start(server.url(), "taken", Some(web), &[]);
    second.wait_for("a name conflict", 1, is_conflict).await;
    assert_eq!(connections(&first), 1, "the first agent was never replaced");
    assert_eq!(connections(&second), 0);
    server.stop().await;
}
