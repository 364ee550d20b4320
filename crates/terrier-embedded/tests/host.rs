//! terrier-embedded on the host, against a real `terrierd`: the firmware's
//! pieces (network, clock, services) are tokio sockets wrapped as
//! `embedded-io-async`, the buffers are the recommended microcontroller
//! sizes, and visitors are real HTTP and TCP clients. The LED test is the
//! ESP8266 prototype's demo in software: a page served by a handler in
//! "firmware", toggled through the tunnel.

mod common;

use std::time::Duration;

use common::{config, connected, led_device, next, server, spawn_agent, spawn_agent_with_pool, Note, STEP};
use terrier_testkit::proxy::PausingProxy;
use terrier_testkit::upstream::{self, pattern};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

// ---- Tests -----------------------------------------------------------------------

#[tokio::test]
async fn visitor_toggles_the_led_through_the_tunnel() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let mut notes = spawn_agent(config(server.addr, "led-board", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;
            let visitor = Visitor::new(server.addr);
            let host = device_host(&subdomain);

            let page = visitor.get(&host, "/").await;
            assert_eq!(page.status, 200, "{page:?}");
            assert!(page.body.contains("LED is off"), "{}", page.body);

            let page = visitor.post(&host, "/led", "state=on").await;
            assert_eq!(page.status, 200, "{page:?}");
            assert!(page.body.contains("LED is on"), "{}", page.body);

            let page = visitor.get(&host, "/").await;
            assert!(page.body.contains("LED is on"), "the state stuck: {}", page.body);

            let page = visitor.post(&host, "/led", "state=blue").await;
            assert_eq!(page.status, 400);
            let page = visitor.get(&host, "/nope").await;
            assert_eq!(page.status, 404);

            // Every stream ended cleanly: half-close both ways, then Close.
            for _ in 0..5 {
                let ended = next(&mut notes, "stream end", |n| match n {
                    Note::StreamEnded(r) => Some(r),
                    _ => None,
                })
                .await;
                assert!(ended.is_ok(), "stream ended with {ended:?}");
            }
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn concurrent_visitors_queue_for_one_data_socket() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let mut notes = spawn_agent(config(server.addr, "one-slot", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;
            let visitor = Visitor::new(server.addr);
            let host = device_host(&subdomain);
            // Three at once: one is served, the others wait in the open queue.
            let pages = tokio::join!(visitor.get(&host, "/"), visitor.get(&host, "/"), visitor.get(&host, "/"));
            for page in [pages.0, pages.1, pages.2] {
                assert_eq!(page.status, 200, "{page:?}");
            }
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn tcp_service_relays_large_transfers_and_half_close() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let echo = upstream::tcp_echo().await;
            let mut notes =
                spawn_agent(config(server.addr, "tcp-board", &["echo"]), led_device(vec![("echo", echo)]), 2);
            let (_, tcp) = connected(&mut notes).await;
            let port = tcp.iter().find(|(id, _)| id == "echo").expect("echo port").1;

            // 300 KB each way: the server's 32 KiB frames pass through the
            // agent's 2 KiB buffers piece by piece.
            const TOTAL: u64 = 300_000;
            let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let send = async {
                let bytes: Vec<u8> = (0..TOTAL).map(pattern).collect();
                writer.write_all(&bytes).await.unwrap();
                // Half-close: the echo service sees the end and ends its side.
                writer.shutdown().await.unwrap();
            };
            let receive = async {
                let mut back = Vec::new();
                reader.read_to_end(&mut back).await.unwrap();
                back
            };
            let ((), back) = timeout(STEP, async { tokio::join!(send, receive) }).await.expect("echo finished");
            assert_eq!(back.len() as u64, TOTAL);
            assert!(back.iter().enumerate().all(|(i, &b)| b == pattern(i as u64)), "bytes arrived intact, in order");
            let ended = next(&mut notes, "stream end", |n| match n {
                Note::StreamEnded(r) => Some(r),
                _ => None,
            })
            .await;
            assert_eq!(ended, Ok(2 * TOTAL));
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn a_refused_local_service_releases_the_visitor_at_once() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let closed = upstream::closed_port().await;
            let mut notes =
                spawn_agent(config(server.addr, "refuser", &["down"]), led_device(vec![("down", closed)]), 1);
            let (_, tcp) = connected(&mut notes).await;
            let port = tcp[0].1;
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut buf = Vec::new();
            // The server ends the visitor's connection once `refused` arrives.
            let _ = timeout(STEP, stream.read_to_end(&mut buf)).await.expect("visitor released");
            assert!(buf.is_empty(), "no bytes from a refused service");
            let ended = next(&mut notes, "stream end", |n| match n {
                Note::StreamEnded(r) => Some(r),
                _ => None,
            })
            .await;
            assert_eq!(ended, Err("Refused".to_owned()));
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn reconnects_after_a_server_restart_and_keeps_its_subdomain() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let tweak = |c: &mut terrier_server::ServerConfig| c.reconnect_spread = Duration::from_millis(200);
            let server = TestServer::start_in(dir.path(), tweak).await;
            let addr = server.addr;
            let mut notes = spawn_agent(config(addr, "restart-me", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;
            let visitor = Visitor::new(addr);
            let host = device_host(&subdomain);
            assert!(visitor.post(&host, "/led", "state=on").await.body.contains("LED is on"));

            server.stop().await;
            let why = next(&mut notes, "disconnect", |n| match n {
                Note::Disconnected(why) => Some(why),
                _ => None,
            })
            .await;
            assert_eq!(why, "Closed(Some(4001))", "going away");

            let server = TestServer::start_on(addr, dir.path(), tweak).await;
            let (again, _) = connected(&mut notes).await;
            assert_eq!(again, subdomain, "same lease after the restart");
            let page = visitor.get(&host, "/").await;
            assert!(page.body.contains("LED is on"), "{page:?}");
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn a_silent_control_socket_is_dropped_and_reopened() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            // Test servers ping every second: three silent seconds are death.
            let server = server().await;
            let proxy = PausingProxy::start(server.addr).await;
            let mut notes = spawn_agent(config(proxy.addr, "nat-victim", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;

            proxy.pause();
            let why = next(&mut notes, "disconnect", |n| match n {
                Note::Disconnected(why) => Some(why),
                _ => None,
            })
            .await;
            assert_eq!(why, "HeartbeatTimeout");
            proxy.resume();

            let (again, _) = connected(&mut notes).await;
            assert_eq!(again, subdomain);
            let page = Visitor::new(server.addr).get(&device_host(&subdomain), "/").await;
            assert_eq!(page.status, 200, "{page:?}");
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn a_pooled_data_socket_serves_visitors_by_assign_and_is_refilled() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            // No `open` worker at all: a visitor is served only if the server
            // assigns it to the parked socket.
            let mut notes = spawn_agent_with_pool(config(server.addr, "pooled", &[]), led_device(vec![]), 0, 1);
            let (subdomain, _) = connected(&mut notes).await;
            let visitor = Visitor::new(server.addr);
            let host = device_host(&subdomain);
            for state in ["on", "off"] {
                next(&mut notes, "a parked socket", |n| matches!(n, Note::PoolReady).then_some(())).await;
                let page = visitor.post(&host, "/led", format!("state={state}")).await;
                assert_eq!(page.status, 200, "{page:?}");
                assert!(page.body.contains(&format!("LED is {state}")), "{}", page.body);
                let ended = next(&mut notes, "stream end", |n| match n {
                    Note::StreamEnded(r) => Some(r),
                    _ => None,
                })
                .await;
                assert!(ended.is_ok(), "{ended:?}");
            }
            server.stop().await;
        })
        .await;
}

/// Mints a token for `name` into the server's token file, as `terrierd token create` does.
async fn mint(server: &TestServer, name: &str) -> &'static str {
    use terrier_server::auth::store::{FileTokenStore, TokenStore};
    use terrier_server::auth::token::{self, Scope};
    let minted = token::mint(Scope::Name(name.into()), "embedded test", 0);
    FileTokenStore::new(&server.data_dir()).insert(&minted.record).await.expect("store token");
    Box::leak(minted.token.into_boxed_str())
}

#[tokio::test]
async fn with_token_auth_the_device_token_admits_its_control_and_data_sockets() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = TestServer::start(|c| c.auth.mode = terrier_server::auth::AuthMode::Token).await;
            let token = mint(&server, "secure-led").await;

            // A wrong token: 401 with the server's reason, and the agent keeps trying.
            let mut wrong = config(server.addr, "secure-led", &[]);
            wrong.token = Some("terrier_aaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
            let mut notes = spawn_agent(wrong, led_device(vec![]), 1);
            for _ in 0..2 {
                let why = next(&mut notes, "refusal", |n| match n {
                    Note::Disconnected(why) => Some(why),
                    _ => None,
                })
                .await;
                assert!(why.contains("status: 401"), "{why}");
            }

            let mut right = config(server.addr, "secure-led", &[]);
            right.token = Some(token);
            let mut notes = spawn_agent_with_pool(right, led_device(vec![]), 1, 1);
            let (subdomain, _) = connected(&mut notes).await;
            // The server checks the token on every data socket, pooled or opened.
            next(&mut notes, "a parked socket", |n| matches!(n, Note::PoolReady).then_some(())).await;
            let visitor = Visitor::new(server.addr);
            let host = device_host(&subdomain);
            let (a, b) = tokio::join!(visitor.post(&host, "/led", "state=on"), visitor.get(&host, "/"));
            assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
            assert!(visitor.get(&host, "/").await.body.contains("LED is on"));
            server.stop().await;
        })
        .await;
}
