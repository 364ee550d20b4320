//! Device credentials: tokens bound to a name or a prefix, checked on the
//! control socket *and* on every data socket; revocation that disconnects at
//! once; the fleet and per-IP limits; and the two token stores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use terrier_server::auth::store::{FileTokenStore, RedisTokenStore, TokenStore};
use terrier_server::auth::token::{self, Scope};
use terrier_server::auth::AuthMode;
use terrier_server::ServerConfig;
use terrier_testkit::admin::AdminClient;
use terrier_testkit::raw::{self, claim_with, FakeDevice};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, RedisServer, TestServer};
use tokio_tungstenite::tungstenite::Message;

/// How soon a revoked device must be gone (refresh interval is 1 s).
const REVOKE_WITHIN: Duration = Duration::from_secs(3);

async fn token_server(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start(|c| {
        c.auth.mode = AuthMode::Token;
        tweak(c);
    })
    .await
}

/// Mints a token straight into the server's token file, as `terrierd token create` does.
async fn mint(server: &TestServer, scope: Scope) -> (String, String) {
    let minted = token::mint(scope, "test", 0);
    FileTokenStore::new(&server.data_dir()).insert(&minted.record).await.expect("store token");
    (minted.token, minted.record.id)
}

fn name(n: &str) -> Scope {
    Scope::Name(n.into())
}

#[tokio::test]
async fn a_device_needs_a_valid_token_for_its_own_name() {
    init_logging();
    let server = token_server(|_| {}).await;
    // Minted after the server started: must work at once, not after a poll.
    let (good, _) = mint(&server, name("thermo-42")).await;
    let (other, _) = mint(&server, name("thermo-43")).await;

    let cases: [(Option<&str>, &str); 4] = [
        (None, "missing credentials"),
        (Some("not-a-token"), "invalid or revoked"),
        (Some("terrier_aaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "invalid or revoked"),
        (Some(&other), "may not register device \"thermo-42\""),
    ];
    for (token, reason) in cases {
        let refused = FakeDevice::connect_with(server.addr, "thermo-42", token).await.err().expect("refused");
        assert_eq!(refused.status, 401, "{token:?}");
        assert!(refused.body.contains(reason), "{token:?}: {:?} should say {reason:?}", refused.body);
        assert!(!refused.body.contains("terrier_"), "the reason never echoes a token");
    }
    let mut expired = token::mint(name("thermo-42"), "", 0);
    expired.record.expires_ms = Some(1);
    FileTokenStore::new(&server.data_dir()).insert(&expired.record).await.expect("store token");
    let refused =
        FakeDevice::connect_with(server.addr, "thermo-42", Some(&expired.token)).await.err().expect("expired");
    assert_eq!((refused.status, refused.body.trim()), (401, "device token expired"));

    // Nothing was registered by the refused attempts: no lease, no subdomain.
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    assert_eq!(admin.get("/api/v1/devices/thermo-42").await.status, 404, "a refused device leaves no lease");

    let device = FakeDevice::connect_with(server.addr, "thermo-42", Some(&good)).await.expect("admitted");
    assert!(!device.subdomain.is_empty());
    assert_eq!(admin.get("/api/v1/devices/thermo-42").await.status, 200);
}

/// Serves one visitor request by hand over a data socket: reads the
/// request head, answers `200 ok`.
async fn answer_ok(mut socket: raw::ClientSocket) {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.next().await.expect("request bytes").expect("frame") {
            Message::Binary(bytes) => head.extend_from_slice(&bytes),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec();
    socket.send(Message::Binary(reply.into())).await.expect("send response");
    socket.send(Message::Binary(Vec::new().into())).await.expect("half-close");
}

#[tokio::test]
async fn another_authenticated_device_cannot_claim_a_stream() {
    init_logging();
    let server = token_server(|_| {}).await;
    let (token_a, _) = mint(&server, name("dev-a")).await;
    let (token_b, _) = mint(&server, name("dev-b")).await;
    let mut a = FakeDevice::connect_with(server.addr, "dev-a", Some(&token_a)).await.expect("a admitted");
    let b = FakeDevice::connect_with(server.addr, "dev-b", Some(&token_b)).await.expect("b admitted");

    let visitor = Visitor::new(server.addr);
    let host = device_host(&a.subdomain);
    let request = tokio::spawn(async move { visitor.get(&host, "/").await });
    let stream = a.next_open().await;

    // B is a real device with a valid token, and knows A's session and the
    // stream id: still refused, whichever session it names.
    for (session, token) in [(&a.session, Some(token_b.as_str())), (&a.session, None), (&b.session, Some(&token_b))] {
        let refused = claim_with(server.addr, session, &stream, token).await.expect_err("refused");
        assert!(matches!(refused.status, 401 | 404), "session {session} token {token:?}: {refused:?}");
    }
    let socket = claim_with(server.addr, &a.session, &stream, Some(&token_a)).await.expect("a claims its stream");
    answer_ok(socket).await;
    let page = request.await.expect("visitor task");
    assert_eq!((page.status, page.body.as_str()), (200, "ok"));

    // Single use: the same id cannot be claimed twice, even by its owner.
    let again = claim_with(server.addr, &a.session, &stream, Some(&token_a)).await.expect_err("used");
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn revoking_a_token_disconnects_its_device_at_once() {
    init_logging();
    let server = token_server(|_| {}).await;
    let (revoked, revoked_id) = mint(&server, name("gone")).await;
    let (kept, _) = mint(&server, name("kept")).await;
    let mut gone = FakeDevice::connect_with(server.addr, "gone", Some(&revoked)).await.expect("admitted");
    let mut stays = FakeDevice::connect_with(server.addr, "kept", Some(&kept)).await.expect("admitted");

    let store = FileTokenStore::new(&server.data_dir());
    assert!(store.revoke(&revoked_id).await.expect("revoke"));
    let code = gone.closed_within(REVOKE_WITHIN).await.expect("revoked device disconnected in time");
    assert_eq!(code, Some(terrier_proto::handshake::close::REVOKED));
    assert!(stays.closed_within(Duration::from_millis(500)).await.is_err(), "other devices stay online");

    let refused = FakeDevice::connect_with(server.addr, "gone", Some(&revoked)).await.err().expect("refused");
    assert_eq!(refused.status, 401);
    assert!(!store.revoke(&revoked_id).await.expect("second revoke"), "already gone");
}

#[tokio::test]
async fn a_fleet_token_admits_its_prefix_up_to_its_device_limit() {
    init_logging();
    let server = token_server(|c| c.limits.max_devices_per_token = 2).await;
    let (fleet, _) = mint(&server, Scope::Prefix("factory-7-".into())).await;
    let first = FakeDevice::connect_with(server.addr, "factory-7-0001", Some(&fleet)).await.expect("first");
    let _second = FakeDevice::connect_with(server.addr, "factory-7-0002", Some(&fleet)).await.expect("second");
    let third = FakeDevice::connect_with(server.addr, "factory-7-0003", Some(&fleet)).await.err().expect("over");
    assert_eq!(third.status, 429, "{third:?}");
    assert!(third.body.contains("max_devices_per_token"), "{third:?}");
    let outside = FakeDevice::connect_with(server.addr, "factory-8-0001", Some(&fleet)).await.err().expect("other");
    assert_eq!(outside.status, 401);

    drop(first);
    eventually(Duration::from_secs(5), "a place frees when a device leaves", || async {
        FakeDevice::connect_with(server.addr, "factory-7-0003", Some(&fleet)).await.ok()
    })
    .await;
}

/// A control handshake to `server` made from source address `from`.
async fn handshake_from(from: &str, server: SocketAddr) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("addr")).expect("bind source");
    let tcp = socket.connect(server).await.expect("connect");
    let url = format!("ws://{server}/v1/control?name=rate-{}&http=1", from.replace('.', "-"));
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("handshake from {from}: {e}"),
    }
}

#[tokio::test]
async fn handshakes_past_the_per_ip_limit_get_429_and_other_addresses_do_not() {
    init_logging();
    let server = TestServer::start(|c| c.limits.control_handshakes_per_ip_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(handshake_from("127.0.0.1", server.addr).await, 101);
    }
    assert_eq!(handshake_from("127.0.0.1", server.addr).await, 429);
    assert_eq!(handshake_from("127.0.0.2", server.addr).await, 101, "another address is not limited");
}

async fn token_store_contract(store: Arc<dyn TokenStore>) {
    let v0 = store.version().await.expect("version");
    assert!(store.load().await.expect("load").is_empty());
    let a = token::mint(name("a"), "first", 1).record;
    let b = token::mint(Scope::Prefix("fleet-".into()), "", 2).record;
    store.insert(&a).await.expect("insert a");
    let v1 = store.version().await.expect("version");
    assert_ne!(v0, v1, "version changes on insert");
    store.insert(&b).await.expect("insert b");
    assert!(store.insert(&a).await.is_err(), "an existing id is refused");
    let mut loaded = store.load().await.expect("load");
    loaded.sort_by_key(|t| t.created_ms);
    assert_eq!(loaded, vec![a.clone(), b.clone()]);
    let v2 = store.version().await.expect("version");
    assert!(store.revoke(&a.id).await.expect("revoke"));
    assert_ne!(store.version().await.expect("version"), v2, "version changes on revoke");
    assert!(!store.revoke(&a.id).await.expect("revoke again"));
    assert_eq!(store.load().await.expect("load"), vec![b]);
}

#[tokio::test]
async fn file_token_store_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    token_store_contract(Arc::new(FileTokenStore::new(dir.path()))).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens.json")).expect("file").permissions().mode();
        assert_eq!(mode & 0o077, 0, "tokens.json is private to its owner");
    }
}

#[tokio::test]
async fn redis_token_store_keeps_the_contract() {
    let redis = RedisServer::start().await;
    let store = RedisTokenStore::connect(&redis.url(), "t1:", Duration::from_secs(3)).await.expect("connect");
    token_store_contract(Arc::new(store)).await;
}

#[test]
fn auto_mode_is_open_only_on_localhost() {
    assert_eq!(AuthMode::Auto.resolve("localhost"), AuthMode::Open);
    assert_eq!(AuthMode::Auto.resolve("tunnel.example.com"), AuthMode::Token);
    assert_eq!(AuthMode::Open.resolve("tunnel.example.com"), AuthMode::Open);
    assert_eq!(AuthMode::Token.resolve("localhost"), AuthMode::Token);
}

#[tokio::test]
async fn a_fleet_token_cannot_take_a_name_online_under_another_token() {
    init_logging();
    let server = token_server(|_| {}).await;
    let (own, _) = mint(&server, name("factory-7-0001")).await;
    let (fleet, _) = mint(&server, Scope::Prefix("factory-7-".into())).await;
    let (rotated, _) = mint(&server, name("factory-7-0001")).await;
    let mut holder = FakeDevice::connect_with(server.addr, "factory-7-0001", Some(&own)).await.expect("admitted");

    let refused = FakeDevice::connect_with(server.addr, "factory-7-0001", Some(&fleet)).await.err().expect("409");
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(holder.closed_within(Duration::from_millis(300)).await.is_err(), "the holder stays online");

    // An exact-name token minted later (rotation) does replace the session.
    let _new = FakeDevice::connect_with(server.addr, "factory-7-0001", Some(&rotated)).await.expect("rotated in");
    let code = holder.closed_within(Duration::from_secs(3)).await.expect("replaced");
    assert_eq!(code, Some(terrier_proto::handshake::close::REPLACED));
}

#[tokio::test]
async fn only_a_names_own_token_learns_where_its_agent_connects_from() {
    init_logging();
    let server = token_server(|c| c.limits.max_takeovers_per_minute = 0).await;
    let (own, _) = mint(&server, name("cam-1")).await;
    let (fleet, _) = mint(&server, Scope::Prefix("cam-".into())).await;
    // Both holders send an instance id, as the agent does: without one,
    // agents at one address count as the same agent.
    let hold = |name: &'static str, token: String| async move {
        let query = format!("name={name}&http=1&instance=the-holder");
        FakeDevice::connect_query(server.addr, &query, Some(&token)).await.expect("admitted")
    };
    let _mine = hold("cam-1", own.clone()).await;
    let _fleets = hold("cam-2", fleet.clone()).await;
    let check = |name: &'static str, token: String| async move {
        let query = format!("name={name}&check=1");
        let answer = FakeDevice::connect_query(server.addr, &query, Some(&token)).await.err().expect("200");
        assert_eq!(answer.status, 200, "{answer:?}");
        serde_json::from_str::<serde_json::Value>(&answer.body).expect("JSON")
    };
    let mine = check("cam-1", own.clone()).await;
    assert_eq!((mine["online"].as_bool(), mine["online_from"].as_str()), (Some(true), Some("127.0.0.1")), "{mine}");
    let fleets = check("cam-2", fleet.clone()).await;
    assert_eq!((fleets["online"].as_bool(), fleets["online_from"].as_str()), (Some(true), Some("")), "{fleets}");

    // The same rule for a refused takeover's reason (no takeover allowed).
    let refused = |name: &'static str, token: String| async move {
        let query = format!("name={name}&http=1&instance=another-agent");
        FakeDevice::connect_query(server.addr, &query, Some(&token)).await.err().expect("409")
    };
    let own_refusal = refused("cam-1", own).await;
    assert!(own_refusal.status == 409 && own_refusal.body.contains("from 127.0.0.1"), "{own_refusal:?}");
    let fleet_refusal = refused("cam-2", fleet).await;
    assert!(fleet_refusal.status == 409 && fleet_refusal.body.contains("name conflict"), "{fleet_refusal:?}");
    assert!(!fleet_refusal.body.contains("127.0.0.1"), "{fleet_refusal:?}");
    server.stop().await;
}

/// A visitor token (for scripts visiting devices) registers no device, not
/// even one its scope names, and the refusal says what it is.
#[tokio::test]
async fn a_visitor_token_registers_no_device() {
    init_logging();
    let server = token_server(|_| {}).await;
    let minted = token::mint_kind(name("thermo-42"), terrier_server::auth::token::Kind::Visitor, "script", 0);
    FileTokenStore::new(&server.data_dir()).insert(&minted.record).await.expect("store token");
    let refused = FakeDevice::connect_with(server.addr, "thermo-42", Some(&minted.token)).await.err().expect("refused");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("visitor token"), "{:?}", refused.body);
}
