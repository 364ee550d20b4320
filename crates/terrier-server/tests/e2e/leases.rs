//! Leases as a device sees them across disconnects: the offline page while
//! it is away, the same subdomain and ports when it returns within the grace
//! period (also after a server restart), new ones after it, and a second
//! control socket for the same name taking over.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use terrier_agent::{Connected, Event};
use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Bound on one network step (connect, read) in these tests.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on waiting for the server to notice a change (disconnect, expiry).
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `GET /hello` on `host` until it answers `status`; returns the page.
async fn page_with_status(visitor: &Visitor, host: &str, status: u16) -> terrier_testkit::visitor::Page {
    eventually(NOTICE_TIMEOUT, &format!("{host} to answer {status}"), || async {
        let page =
            timeout(STEP_TIMEOUT, visitor.get(host, "/hello")).await.expect("visitor request within the step timeout");
        (page.status == status).then_some(page)
    })
    .await
}

/// The public port the server gave `service`.
fn port_of(connected: &Connected, service: &str) -> u16 {
    connected
        .tcp
        .iter()
        .find(|p| p.service == service)
        .unwrap_or_else(|| panic!("no public port for {service} in {connected:?}"))
        .port
}

/// Sends `text` to the public TCP port and expects it echoed back.
async fn assert_echoes(port: u16, text: &[u8]) {
    let mut stream = timeout(STEP_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect to the public port in time")
        .expect("connect to the public port");
    stream.write_all(text).await.expect("write to public port");
    let mut back = vec![0u8; text.len()];
    timeout(STEP_TIMEOUT, stream.read_exact(&mut back)).await.expect("echo in time").expect("echo");
    assert_eq!(back, text);
}

#[tokio::test]
async fn killed_agent_gives_visitors_the_offline_page() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "gone-dark", Some(web), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    let visitor = Visitor::new(server.addr);
    assert_eq!(visitor.get(&host, "/hello").await.status, 200);

    agent.stop().await.expect("agent stops cleanly");
    let page = page_with_status(&visitor, &host, 503).await;
    let content_type = page.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.headers.contains_key("retry-after"), "offline page has Retry-After: {:?}", page.headers);
    let retry: u64 = page.headers["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!(retry > 0);
    assert!(page.body.contains("offline"), "{}", page.body);
    assert!(page.body.contains("last seen"), "{}", page.body);
    server.stop().await;
}

#[tokio::test]
async fn reconnect_within_grace_keeps_subdomain_and_ports() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "comes-back", Some(web), &[("echo", echo)]);
    let first = agent.connected(1).await;
    let port = port_of(&first, "echo");
    assert_echoes(port, b"before").await;

    agent.stop().await.expect("agent stops cleanly");
    let visitor = Visitor::new(server.addr);
    let host = device_host(&first.subdomain);
    // The server has noticed the device is gone.
    page_with_status(&visitor, &host, 503).await;

    let mut again = TestAgent::start(server.url(), "comes-back", Some(web), &[("echo", echo)]);
    let second = again.connected(1).await;
    assert_ne!(second.session, first.session, "a new session");
    assert_eq!(second.subdomain, first.subdomain, "same subdomain");
    assert_eq!(port_of(&second, "echo"), port, "same TCP port");
    assert_eq!(visitor.get(&host, "/hello").await.status, 200);
    assert_echoes(port, b"after").await;
    server.stop().await;
}

#[tokio::test]
async fn reconnect_after_grace_gets_new_subdomain_and_ports() {
    init_logging();
    let server = TestServer::start(|c| c.grace_period = Duration::from_secs(1)).await;
    let web = upstream::http_service().await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "long-gone", Some(web), &[("echo", echo)]);
    let first = agent.connected(1).await;
    agent.stop().await.expect("agent stops cleanly");

    let visitor = Visitor::new(server.addr);
    let old_host = device_host(&first.subdomain);
    page_with_status(&visitor, &old_host, 404).await;

    let mut again = TestAgent::start(server.url(), "long-gone", Some(web), &[("echo", echo)]);
    let second = again.connected(1).await;
    assert_ne!(second.subdomain, first.subdomain, "a fresh subdomain");
    let new_port = port_of(&second, "echo");
    // Ports are drawn at random from 10,000: equal only by a 1-in-10,000 chance,
    // so the port is checked by what it serves rather than by its number.
    assert_echoes(new_port, b"new lease").await;
    assert_eq!(visitor.get(&device_host(&second.subdomain), "/hello").await.status, 200);
    assert_eq!(visitor.get(&old_host, "/hello").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn restarted_server_keeps_subdomain_and_agent_reconnects_by_itself() {
    init_logging();
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_in(data.path(), |_| {}).await;
    let addr = server.addr;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "survivor", Some(web), &[]);
    let first = agent.connected(1).await;

    server.stop().await;
    let server = TestServer::start_on(addr, data.path(), |_| {}).await;
    let second = agent.connected(2).await;
    assert_eq!(second.subdomain, first.subdomain, "same subdomain after restart");
    let visitor = Visitor::new(server.addr);
    let page = visitor.get(&device_host(&second.subdomain), "/hello").await;
    assert_eq!((page.status, page.body.as_str()), (200, "hello from device"));
    agent.stop().await.expect("agent stops cleanly");
    server.stop().await;
}

/// An HTTP service that answers every request with `name`, so a test can
/// tell which of two devices served a visitor.
async fn named_service(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn disconnects(agent: &TestAgent) -> Vec<String> {
    agent
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Disconnected { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn second_control_socket_with_same_name_replaces_the_first() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let old_device = named_service("old device").await;
    let new_device = named_service("new device").await;
    let mut first = TestAgent::start(server.url(), "twin", Some(old_device), &[]);
    let sub = first.connected(1).await.subdomain;
    let host = device_host(&sub);
    let visitor = Visitor::new(server.addr);
    let page = visitor.get(&host, "/").await;
    assert_eq!((page.status, page.body.as_str()), (200, "old device"));

    let mut second = TestAgent::start(server.url(), "twin", Some(new_device), &[]);
    assert_eq!(second.connected(1).await.subdomain, sub, "takes over the subdomain");
    let reason = eventually(NOTICE_TIMEOUT, "the first agent to be dropped", || async {
        disconnects(&first).into_iter().next()
    })
    .await;
    assert!(reason.contains("4000"), "dropped as replaced: {reason}");

    // The first agent reconnects and takes the name back (same credential),
    // and the two would take turns; stopping it leaves the second in charge.
    first.stop().await.expect("first agent stops cleanly");
    eventually(NOTICE_TIMEOUT, "the new device to serve visitors", || async {
        let page =
            timeout(STEP_TIMEOUT, visitor.get(&host, "/")).await.expect("visitor request within the step timeout");
        (page.status == 200 && page.body == "new device").then_some(())
    })
    .await;
    let last = second
        .events()
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::Connected(c) => Some(c),
            _ => None,
        })
        .expect("second agent connected");
    assert_eq!(last.subdomain, sub, "the subdomain stayed with the name");
    server.stop().await;
}

/// Connects to a public port whose service is not served now and expects
/// the server to close the visitor without relaying anything.
async fn assert_closed_at_once(port: u16) {
    let mut stream = timeout(STEP_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect to the parked port in time")
        .expect("the parked port still listens");
    let _ = stream.write_all(b"anyone?").await;
    let mut got = Vec::new();
    // A reset instead of a clean close is a close too.
    let _ = timeout(STEP_TIMEOUT, stream.read_to_end(&mut got)).await.expect("the visitor is closed in time");
    assert!(got.is_empty(), "nothing relayed from a parked port: {got:?}");
}

#[tokio::test]
async fn service_missing_from_a_reconnect_gets_its_port_back() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "fewer", None, &[("a", echo), ("b", echo)]);
    let first = agent.connected(1).await;
    let (port_a, port_b) = (port_of(&first, "a"), port_of(&first, "b"));
    assert_echoes(port_b, b"b before").await;
    agent.stop().await.expect("agent stops cleanly");

    // Back with `a` only: the welcome lists `a`; `b`'s port stays bound
    // for the device, and its visitors are closed as if it were offline.
    let mut fewer = TestAgent::start(server.url(), "fewer", None, &[("a", echo)]);
    let second = fewer.connected(1).await;
    let services: Vec<&str> = second.tcp.iter().map(|p| p.service.as_str()).collect();
    assert_eq!(services, ["a"]);
    assert_eq!(port_of(&second, "a"), port_a);
    assert_echoes(port_a, b"a alone").await;
    assert_closed_at_once(port_b).await;
    fewer.stop().await.expect("agent stops cleanly");

    let mut both = TestAgent::start(server.url(), "fewer", None, &[("a", echo), ("b", echo)]);
    let third = both.connected(1).await;
    assert_eq!((port_of(&third, "a"), port_of(&third, "b")), (port_a, port_b), "same ports");
    assert_echoes(port_b, b"b after").await;
    both.stop().await.expect("agent stops cleanly");
    server.stop().await;
}

#[tokio::test]
async fn missing_services_port_is_freed_when_its_grace_period_ends() {
    init_logging();
    // Long enough for the agent to come back before the lease expires.
    let server = TestServer::start(|c| c.grace_period = Duration::from_secs(3)).await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "shrinks", None, &[("a", echo), ("b", echo)]);
    let first = agent.connected(1).await;
    let (port_a, port_b) = (port_of(&first, "a"), port_of(&first, "b"));
    agent.stop().await.expect("agent stops cleanly");

    let mut fewer = TestAgent::start(server.url(), "shrinks", None, &[("a", echo)]);
    assert_eq!(port_of(&fewer.connected(1).await, "a"), port_a, "the lease was still live");
    // The sweep frees the parked port and closes its listener.
    eventually(NOTICE_TIMEOUT, "the parked port to close", || async {
        TcpStream::connect(("127.0.0.1", port_b)).await.is_err().then_some(())
    })
    .await;
    assert_echoes(port_a, b"a still served").await;
    fewer.stop().await.expect("agent stops cleanly");
    server.stop().await;
}
