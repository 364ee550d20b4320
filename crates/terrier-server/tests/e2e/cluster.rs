//! terrierd on a real Redis store: the tunnel works the same, and leases
//! live in Redis (so they survive a node restart).

use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, RedisServer, TestAgent, TestServer};

#[tokio::test]
async fn tunnel_on_redis_keeps_subdomain_across_node_restart() {
    init_logging();
    let redis = RedisServer::start().await;
    let on_redis = |c: &mut terrier_server::ServerConfig| {
        c.store = redis.url();
        c.node_id = Some("node-a".into());
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), on_redis).await;
    let web = upstream::http_service().await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "redis-dev", Some(web), &[("echo", echo)]);
    let first = agent.connected(1).await;
    let page = Visitor::new(server.addr).get(&device_host(&first.subdomain), "/hello").await;
    assert_eq!(page.status, 200);

    let addr = server.addr;
    server.stop().await;
    // A fresh data dir: the lease can only come from Redis.
    let other_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(addr, other_dir.path(), on_redis).await;
    let second = agent.connected(2).await;
    assert_eq!(second.subdomain, first.subdomain);
    assert_eq!(second.tcp[0].port, first.tcp[0].port);
    let page = Visitor::new(server.addr).get(&device_host(&second.subdomain), "/hello").await;
    assert_eq!(page.status, 200);
    server.stop().await;
}

/// A cluster node configuration: shared Redis, fast heartbeats, no slack in balancing.
fn node(redis: &RedisServer, id: &str) -> impl FnOnce(&mut terrier_server::ServerConfig) {
    let (url, id) = (redis.url(), id.to_owned());
    move |c| {
        c.store = url;
        c.node_id = Some(id);
        c.cluster.heartbeat_interval = std::time::Duration::from_millis(200);
        c.cluster.node_ttl = std::time::Duration::from_secs(1);
        c.cluster.balance_tolerance = 0;
    }
}

/// Redis and two in-process nodes on it, both registered.
async fn two_nodes() -> (RedisServer, TestServer, TestServer) {
    init_logging();
    let redis = RedisServer::start().await;
    let a = TestServer::start(node(&redis, "node-a")).await;
    let b = TestServer::start(node(&redis, "node-b")).await;
    wait_for_nodes(&redis, 2).await;
    (redis, a, b)
}

/// Starts a `terrierd` process as a cluster node (so a test can kill -9 it),
/// with fast heartbeats; returns the child and its URL.
async fn node_process(
    redis: &RedisServer,
    id: &str,
    dir: &std::path::Path,
    balance_tolerance: u64,
) -> (tokio::process::Child, url::Url) {
    let port = terrier_testkit::redis::free_port().await;
    let config = dir.join(format!("{id}.toml"));
    let toml = format!(
        "tcp_host = \"127.0.0.1\"\n[cluster]\nheartbeat_interval = \"200ms\"\nnode_ttl = \"1s\"\nbalance_tolerance = {balance_tolerance}\n"
    );
    std::fs::write(&config, toml).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_terrierd"))
        .args(["--store", &redis.url(), "--node-id", id, "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join(id))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap())
}

/// Waits until the registry in Redis lists `n` live nodes.
async fn wait_for_nodes(redis: &RedisServer, n: usize) {
    let store =
        terrier_server::store::redis::RedisStore::connect(&redis.url(), "terrier:", std::time::Duration::from_secs(2))
            .await
            .unwrap();
    terrier_testkit::eventually(std::time::Duration::from_secs(10), "nodes to register", || {
        let store = store.clone();
        async move {
            use terrier_server::store::Store;
            (store.nodes().await.ok()?.len() == n).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn handshake_is_redirected_to_the_least_loaded_node() {
    let (_redis, a, b) = two_nodes().await;
    let web = upstream::http_service().await;
    let mut first = TestAgent::start(a.url(), "first", Some(web), &[]);
    assert_eq!(first.connected(1).await.server, a.url().to_string(), "A was not more loaded than B yet");
    // A now has one device and B none: the next device asking A goes to B.
    let mut second = TestAgent::start(a.url(), "second", Some(web), &[]);
    let on = second.connected(1).await;
    assert_eq!(on.server, b.url().to_string());
    // Both devices are reachable through either node.
    for server in [&a, &b] {
        for sub in [&first.connected(1).await.subdomain, &on.subdomain] {
            let page = Visitor::new(server.addr).get(&device_host(sub), "/hello").await;
            assert_eq!(page.status, 200, "via {} for {sub}: {}", server.addr, page.body);
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn visitor_at_any_node_reaches_a_device_on_another_node() {
    let (_redis, a, b) = two_nodes().await;
    let (_agent, host) = TestAgent::web_device(a.url(), "far-away").await;
    let visitor = Visitor::new(b.addr);
    let page = visitor.get(&host, "/hello").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["x-seen-xff"], "127.0.0.1", "the visitor B saw, vouched for in the envelope");
    let echoed = visitor.post(&host, "/echo", "across nodes").await;
    assert_eq!(echoed.body, "across nodes");
    // An unknown subdomain is still a 404 at B.
    assert_eq!(visitor.get("nobody0000.localhost", "/").await.status, 404);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn device_of_a_stopped_node_reconnects_to_another_and_keeps_its_subdomain() {
    let (_redis, a, b) = two_nodes().await;
    let web = upstream::http_service().await;
    let mut config = terrier_testkit::agent::agent_config(a.url(), "survivor");
    config.fallback_servers = vec![b.url()];
    config.http = Some(terrier_agent::Service::http(terrier_testkit::agent::target(web)));
    let mut agent = TestAgent::start_with(config);
    let first = agent.connected(1).await;
    assert_eq!(first.server, a.url().to_string());
    a.stop().await;
    let second = agent.connected(2).await;
    assert_eq!(second.server, b.url().to_string());
    assert_eq!(second.subdomain, first.subdomain);
    let page = Visitor::new(b.addr).get(&device_host(&second.subdomain), "/hello").await;
    assert_eq!(page.status, 200);
    b.stop().await;
}

#[tokio::test]
async fn redis_outage_keeps_tunnels_refuses_new_devices_and_resyncs_after() {
    init_logging();
    let redis = RedisServer::start().await;
    let port = redis.port;
    let server = TestServer::start(node(&redis, "node-a")).await;
    wait_for_nodes(&redis, 1).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "steady", Some(web), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    let visitor = Visitor::new(server.addr);

    redis.kill().await;
    // The online tunnel keeps relaying without Redis.
    assert_eq!(visitor.get(&host, "/hello").await.status, 200);
    // A new device is refused with a clear 503 while Redis is away.
    let newcomer = TestAgent::start(server.url(), "newcomer", Some(web), &[]);
    terrier_testkit::eventually(std::time::Duration::from_secs(10), "a 503 for the newcomer", || {
        let events = newcomer.events();
        async move {
            events
                .iter()
                .any(|e| matches!(e, terrier_agent::Event::Disconnected { reason } if reason.contains("503")))
                .then_some(())
        }
    })
    .await;

    // Redis comes back empty: the node re-registers and writes its lease back.
    let redis = RedisServer::start_on(port).await;
    wait_for_nodes(&redis, 1).await;
    let store =
        terrier_server::store::redis::RedisStore::connect(&redis.url(), "terrier:", std::time::Duration::from_secs(2))
            .await
            .unwrap();
    let lease = terrier_testkit::eventually(std::time::Duration::from_secs(10), "the lease to be restored", || {
        let store = store.clone();
        async move {
            use terrier_server::store::Store;
            store.by_name("steady", terrier_server::store::now_ms()).await.ok().flatten()
        }
    })
    .await;
    assert_eq!(device_host(&lease.subdomain), host);
    assert!(lease.online.is_some());
    let mut newcomer = newcomer;
    newcomer.connected(1).await;
    assert_eq!(visitor.get(&host, "/hello").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn killed_node_is_declared_dead_and_its_devices_move_on() {
    init_logging();
    let redis = RedisServer::start().await;
    let b = TestServer::start(node(&redis, "node-b")).await;
    // Node A is a real process, so it can die without a word.
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_url) = node_process(&redis, "node-a", dir.path(), 100).await;
    wait_for_nodes(&redis, 2).await;

    let web = upstream::http_service().await;
    let mut config = terrier_testkit::agent::agent_config(a_url.clone(), "mover");
    config.fallback_servers = vec![b.url()];
    config.http = Some(terrier_agent::Service::http(terrier_testkit::agent::target(web)));
    let mut mover = TestAgent::start_with(config);
    let first = mover.connected(1).await;
    assert_eq!(first.server, a_url.to_string());
    // A second device that only knows A, so it cannot move when A dies.
    let mut goner = TestAgent::start(a_url.clone(), "goner", Some(web), &[]);
    goner.connected(1).await;

    a.kill().await.unwrap();
    let second = mover.connected(2).await;
    assert_eq!(second.server, b.url().to_string());
    assert_eq!(second.subdomain, first.subdomain);

    // B notices A stopped refreshing and releases A's devices into their grace period.
    let store =
        terrier_server::store::redis::RedisStore::connect(&redis.url(), "terrier:", std::time::Duration::from_secs(2))
            .await
            .unwrap();
    terrier_testkit::eventually(std::time::Duration::from_secs(10), "A's leases to be recovered", || {
        let store = store.clone();
        async move {
            use terrier_server::store::Store;
            let lease = store.by_name("goner", terrier_server::store::now_ms()).await.ok()??;
            let nodes = store.nodes().await.ok()?;
            (lease.online.is_none() && nodes.len() == 1).then_some(())
        }
    })
    .await;
    let page = Visitor::new(b.addr).get(&device_host(&second.subdomain), "/hello").await;
    assert_eq!(page.status, 200);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_spread_thirty_devices_and_survive_a_killed_node_and_a_redis_restart() {
    init_logging();
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        nodes.push(node_process(&redis, id, dir.path(), 0).await);
    }
    wait_for_nodes(&redis, 3).await;
    let urls: Vec<url::Url> = nodes.iter().map(|(_, url)| url.clone()).collect();
    let addrs: Vec<std::net::SocketAddr> =
        urls.iter().map(|u| format!("{}:{}", u.host_str().unwrap(), u.port().unwrap()).parse().unwrap()).collect();

    // 30 devices, all told node A first: balancing spreads them.
    let web = upstream::http_service().await;
    let mut agents = Vec::new();
    let mut placed = Vec::new();
    for i in 0..30 {
        let mut config = terrier_testkit::agent::agent_config(urls[0].clone(), &format!("dev-{i}"));
        config.fallback_servers = urls[1..].to_vec();
        config.http = Some(terrier_agent::Service::http(terrier_testkit::agent::target(web)));
        let mut agent = TestAgent::start_with(config);
        placed.push(agent.connected(1).await);
        agents.push(agent);
    }
    for url in &urls {
        let on_node = placed.iter().filter(|c| c.server == url.to_string()).count();
        assert!((8..=12).contains(&on_node), "{on_node} devices on {url}: not within 20% of 10");
    }
    // Every device through every node.
    for addr in &addrs {
        let visitor = Visitor::new(*addr);
        for c in &placed {
            assert_eq!(visitor.get(&device_host(&c.subdomain), "/hello").await.status, 200, "{} via {addr}", c.name);
        }
    }

    // kill -9 node B: its devices come back on A or C with their subdomains.
    let victim = urls[1].to_string();
    nodes[1].0.kill().await.unwrap();
    let mut moved = 0;
    for (agent, before) in agents.iter_mut().zip(&placed) {
        if before.server == victim {
            let after = agent.connected(2).await;
            assert_ne!(after.server, victim);
            assert_eq!(after.subdomain, before.subdomain);
            moved += 1;
        }
    }
    assert!(moved >= 8);
    for addr in [addrs[0], addrs[2]] {
        let visitor = Visitor::new(addr);
        for c in &placed {
            assert_eq!(visitor.get(&device_host(&c.subdomain), "/hello").await.status, 200, "{} via {addr}", c.name);
        }
    }

    // Redis stops and comes back empty: tunnels keep working on their own
    // node meanwhile, then registration and leases come back.
    let port = redis.port;
    redis.kill().await;
    let on_a: Vec<_> = agents
        .iter()
        .map(|a| a.events())
        .filter_map(|events| {
            events.iter().rev().find_map(|e| match e {
                terrier_agent::Event::Connected(c) => Some(c.clone()),
                _ => None,
            })
        })
        .filter(|c| c.server == urls[0].to_string())
        .collect();
    assert!(!on_a.is_empty());
    for c in &on_a {
        assert_eq!(Visitor::new(addrs[0]).get(&device_host(&c.subdomain), "/hello").await.status, 200);
    }
    let redis = RedisServer::start_on(port).await;
    wait_for_nodes(&redis, 2).await;
    for addr in [addrs[0], addrs[2]] {
        let visitor = Visitor::new(addr);
        for c in &placed {
            let host = device_host(&c.subdomain);
            terrier_testkit::eventually(std::time::Duration::from_secs(10), "device reachable again", || {
                let (visitor, host) = (visitor.clone(), host.clone());
                async move { (visitor.get(&host, "/hello").await.status == 200).then_some(()) }
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_port_or_one_name_get_exactly_one_winner() {
    use terrier_server::store::{Claim, Store, StoreError};
    init_logging();
    let redis = RedisServer::start().await;
    let url = redis.url();
    let connect =
        || terrier_server::store::redis::RedisStore::connect(&url, "terrier:", std::time::Duration::from_secs(2));
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    let svc = vec!["ssh".to_string()];
    for round in 0..20u16 {
        // One free port, two devices on two nodes asking for it at once.
        let port = 41000 + round;
        let (name_a, name_b) = (format!("a-{round}"), format!("b-{round}"));
        let now = terrier_server::store::now_ms();
        let claim = |name: &'static str| Claim {
            name,
            services: &svc,
            session: "s",
            node: "n",
            now_ms: now,
            grace_ms: 60_000,
            port_range: port..=port,
        };
        let (ra, rb) = tokio::join!(
            a.claim(Claim { name: &name_a, node: "node-a", ..claim("x") }),
            b.claim(Claim { name: &name_b, node: "node-b", ..claim("x") }),
        );
        let winners = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {ra:?} / {rb:?}");
        assert!([&ra, &rb].iter().any(|r| matches!(r, Err(StoreError::NoFreePort(_)))));

        // One name, two nodes: the lease ends up with exactly one session,
        // and both saw the same subdomain.
        let name = format!("contested-{round}");
        let (ra, rb) = tokio::join!(
            a.claim(Claim { name: &name, session: "from-a", node: "node-a", port_range: 42000..=42999, ..claim("x") }),
            b.claim(Claim { name: &name, session: "from-b", node: "node-b", port_range: 42000..=42999, ..claim("x") }),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.subdomain, rb.subdomain);
        let holder = a.by_name(&name, now).await.unwrap().unwrap().online.unwrap();
        assert!(
            (holder.session == "from-a" && holder.node == "node-a")
                || (holder.session == "from-b" && holder.node == "node-b"),
            "{holder:?}"
        );
    }
}

#[tokio::test]
async fn websocket_through_another_node_reaches_the_device() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_redis, a, b) = two_nodes().await;
    let (_agent, host) = TestAgent::web_device(a.url(), "ws-far").await;
    let mut ws = terrier_testkit::visitor::websocket(b.addr, &host, "/ws").await;
    ws.send(Message::text("across nodes")).await.unwrap();
    let back = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::text("across nodes"));
    ws.close(None).await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn device_reconnecting_through_another_node_is_dropped_by_the_old_one() {
    let (_redis, a, b) = two_nodes().await;
    let web = upstream::http_service().await;
    // The device's first path to A goes through a link that will go dead.
    let link = terrier_testkit::proxy::PausingProxy::start(a.addr).await;
    let via_link = url::Url::parse(&format!("http://{}", link.addr)).unwrap();
    let old = TestAgent::start(via_link, "wanderer", Some(web), &[]);
    let mut old = old;
    let first = old.connected(1).await;
    // The link dies silently and the device comes back through B.
    link.pause();
    let mut new = TestAgent::start(b.url(), "wanderer", Some(web), &[]);
    let second = new.connected(1).await;
    assert_eq!(second.subdomain, first.subdomain);
    // A notices at its next heartbeat (well before the dead socket's own
    // 3-interval timeout) and drops the old session: visitors arriving at A
    // reach the device through B.
    let host = device_host(&second.subdomain);
    terrier_testkit::eventually(std::time::Duration::from_secs(2), "A to forward to B", || {
        let (visitor, host) = (Visitor::new(a.addr), host.clone());
        async move { (visitor.get(&host, "/hello").await.status == 200).then_some(()) }
    })
    .await;
    drop(old);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_a_node_breaks_no_request() {
    let (redis, a, b) = two_nodes().await;
    let web = upstream::http_service().await;
    let mut config = terrier_testkit::agent::agent_config(a.url(), "rolling");
    config.fallback_servers = vec![b.url()];
    config.http = Some(terrier_agent::Service::http(terrier_testkit::agent::target(web)));
    let mut agent = TestAgent::start_with(config);
    let host = device_host(&agent.connected(1).await.subdomain);

    // Visitors keep asking through B while A restarts; `answered` counts the
    // requests that came back, so the test can wait for answers on both sides
    // of the restart instead of hoping the loop happened to ask in time.
    let stop = tokio_util::sync::CancellationToken::new();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let visits = {
        let (stop, host, visitor, answered) = (stop.clone(), host.clone(), Visitor::new(b.addr), answered.clone());
        tokio::spawn(async move {
            let mut offline = 0;
            for i in 0..2000 {
                if stop.is_cancelled() {
                    break;
                }
                let page = visitor.post(&host, "/echo", format!("visit {i}")).await;
                match page.status {
                    200 => {
                        assert_eq!(page.body, format!("visit {i}"), "a completed request came back intact");
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    503 | 502 => offline += 1,
                    other => panic!("visit {i}: unexpected {other}: {}", page.body),
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            offline
        })
    };
    let answered_by = |at_least: usize| {
        let answered = answered.clone();
        terrier_testkit::eventually(std::time::Duration::from_secs(10), "the visitors to get an answer", move || {
            let n = answered.load(std::sync::atomic::Ordering::SeqCst);
            async move { (n >= at_least).then_some(n) }
        })
    };
    let before = answered_by(1).await;
    let addr = a.addr;
    let dir = a.data_dir();
    a.stop().await;
    let a = TestServer::start_on(addr, &dir, node(&redis, "node-a")).await;
    agent.connected(2).await;
    // The visitors' own loop, not a separate probe, must get answers again.
    let after = answered_by(before + 1).await;
    stop.cancel();
    let offline = visits.await.expect("no visitor request failed at the transport level");
    println!("{after} answered, {offline} offline pages");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn redirect_to_an_unreachable_node_brings_the_agent_back_and_stale_nodes_get_none() {
    use terrier_server::store::{NodeInfo, Store};
    init_logging();
    let redis = RedisServer::start().await;
    let a = TestServer::start(node(&redis, "node-a")).await;
    wait_for_nodes(&redis, 1).await;
    let store =
        terrier_server::store::redis::RedisStore::connect(&redis.url(), "terrier:", std::time::Duration::from_secs(2))
            .await
            .unwrap();
    let nowhere = terrier_testkit::upstream::closed_port().await;
    let ghost = |updated_ms| NodeInfo {
        id: "ghost".into(),
        advertise_url: format!("http://{nowhere}"),
        internal_url: format!("http://{nowhere}"),
        devices: 0,
        updated_ms,
    };
    let web = upstream::http_service().await;
    let mut first = TestAgent::start(a.url(), "first", Some(web), &[]);
    first.connected(1).await;

    // A ghost that stopped refreshing a while ago (but whose TTL has not run
    // out): A does not send anyone there.
    store.register_node(&ghost(terrier_server::store::now_ms() - 60_000), 60_000).await.unwrap();
    let mut second = TestAgent::start(a.url(), "second", Some(web), &[]);
    assert_eq!(second.connected(1).await.server, a.url().to_string());

    // A fresh-looking ghost that is in fact gone: the agent is redirected,
    // cannot reach it, and comes back to A, which keeps it.
    store.register_node(&ghost(terrier_server::store::now_ms() + 60_000), 60_000).await.unwrap();
    let mut third = TestAgent::start(a.url(), "third", Some(web), &[]);
    let third_on = third.connected(1).await;
    assert_eq!(third_on.server, a.url().to_string());
    assert!(
        !third.events().iter().any(|e| matches!(e, terrier_agent::Event::Disconnected { .. })),
        "no failed attempt: {:?}",
        third.events()
    );
    a.stop().await;
}

#[tokio::test]
async fn a_name_online_on_another_node_is_claimed_only_there() {
    use terrier_server::auth::store::{RedisTokenStore, TokenStore};
    use terrier_server::auth::token::{self, Scope};
    use terrier_testkit::raw::FakeDevice;

    init_logging();
    let redis = RedisServer::start().await;
    let tokens = |c: &mut terrier_server::ServerConfig| c.auth.mode = terrier_server::auth::AuthMode::Token;
    let with_tokens = |id| {
        let node = node(&redis, id);
        move |c: &mut terrier_server::ServerConfig| {
            node(c);
            tokens(c);
        }
    };
    let a = TestServer::start(with_tokens("node-a")).await;
    let b = TestServer::start(with_tokens("node-b")).await;
    wait_for_nodes(&redis, 2).await;
    let store = RedisTokenStore::connect(&redis.url(), "terrier:", std::time::Duration::from_secs(2)).await.unwrap();
    let mint = async |scope| {
        let minted = token::mint(scope, "test", 0);
        store.insert(&minted.record).await.expect("store token");
        minted.token
    };
    let own = mint(Scope::Name("fleet-door".into())).await;
    let fleet = mint(Scope::Prefix("fleet-".into())).await;
    let mut holder = FakeDevice::connect_with(a.addr, "fleet-door", Some(&own)).await.expect("admitted on node a");

    // Through node b the fleet token is sent to node a, which refuses it.
    let sent = FakeDevice::connect_with(b.addr, "fleet-door", Some(&fleet)).await.err().expect("redirected");
    assert_eq!(sent.status, 307, "{sent:?}");
    assert!(sent.body.contains(&a.addr.port().to_string()), "to the node holding the name: {sent:?}");
    let refused = FakeDevice::connect_with(a.addr, "fleet-door", Some(&fleet)).await.err().expect("409 there");
    assert_eq!(refused.status, 409, "{refused:?}");
    // With its redirects used up (or claimed so), node b takes nothing: it
    // asks to retry, for real handshakes and check=1 alike.
    for query in ["name=fleet-door&http=1&hops=3", "name=fleet-door&check=1&hops=3"] {
        let refused = FakeDevice::connect_query(b.addr, query, Some(&fleet)).await.err().expect("503");
        assert_eq!(refused.status, 503, "{query}: {refused:?}");
    }
    // The same holds for the name's own token: node a decides.
    let own_elsewhere = FakeDevice::connect_query(b.addr, "name=fleet-door&http=1&hops=3", Some(&own)).await;
    assert_eq!(own_elsewhere.err().map(|r| r.status), Some(503));
    assert!(holder.closed_within(std::time::Duration::from_millis(300)).await.is_err(), "the holder stays online");
    a.stop().await;
    b.stop().await;
}
