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
    let page = Visitor::new(server.addr)
        .get(&device_host(&first.subdomain), "/hello")
        .await;
    assert_eq!(page.status, 200);

    let addr = server.addr;
    server.stop().await;
    // A fresh data dir: the lease can only come from Redis.
    let other_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(addr, other_dir.path(), on_redis).await;
    let second = agent.connected(2).await;
    assert_eq!(second.subdomain, first.subdomain);
    assert_eq!(second.tcp[0].port, first.tcp[0].port);
    let page = Visitor::new(server.addr)
        .get(&device_host(&second.subdomain), "/hello")
        .await;
    assert_eq!(page.status, 200);
    server.stop().await;
}
