//! Scaled-down load: 500 devices online on one server while visitors are
//! relayed, then all 500 dropped at once and back with jittered reconnects.
//! (The full-size runs, 10,000 devices, live in `bench/`.)

use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use terrier_testkit::visitor::Visitor;
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

const DEVICES: usize = 500;

/// Opens a device's control socket and returns its subdomain, keeping the
/// socket read (so pings are answered) until `stop` fires.
async fn device(addr: std::net::SocketAddr, i: usize, stop: tokio_util::sync::CancellationToken) -> String {
    let url = format!("ws://{addr}/v1/control?name=load-{i}&http=1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("control socket");
    let subdomain = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                break v["welcome"]["subdomain"].as_str().unwrap().to_owned();
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("device {i}: no welcome: {other:?}"),
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = async { while let Some(Ok(_)) = ws.next().await {} } => {}
        }
    });
    subdomain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_devices_online_while_visitors_are_relayed_and_a_reconnect_storm() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut online = JoinSet::new();
    for i in 0..DEVICES {
        let stop = stop.clone();
        online.spawn(async move { (i, device(addr, i, stop).await) });
    }
    let mut first = vec![String::new(); DEVICES];
    while let Some(done) = online.join_next().await {
        let (i, sub) = done.unwrap();
        first[i] = sub;
    }

    // A real device among them serves 200 concurrent visitors.
    let (_agent, host) = TestAgent::web_device(server.url(), "real").await;
    let visitor = Visitor::new(addr);
    let mut visits = JoinSet::new();
    for i in 0..200 {
        let (visitor, host) = (visitor.clone(), host.clone());
        visits.spawn(async move {
            let page = visitor.post(&host, "/echo", format!("v{i}")).await;
            assert_eq!(page.body, format!("v{i}"));
        });
    }
    while let Some(done) = visits.join_next().await {
        done.unwrap();
    }

    // The storm: every simulated device drops at once and returns after a
    // jittered delay (as agents' backoff spreads them), keeping its subdomain.
    stop.cancel();
    let started = tokio::time::Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut back = JoinSet::new();
    for i in 0..DEVICES {
        let stop = stop.clone();
        let delay = Duration::from_millis(rand::rng().random_range(0..2000));
        back.spawn(async move {
            tokio::time::sleep(delay).await;
            (i, device(addr, i, stop).await)
        });
    }
    while let Some(done) = back.join_next().await {
        let (i, sub) = done.unwrap();
        assert_eq!(sub, first[i], "device {i} kept its subdomain");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "storm took {took:?}");
    eprintln!("{DEVICES} devices back online in {took:?}");
    stop.cancel();
    server.stop().await;
}
