//! Who a visitor is, as the device's access rules and the device itself see
//! it: the TCP peer, or the visitor a peer node vouched for in an
//! authenticated envelope. Nothing a visitor's headers say counts: a forged
//! `X-Terrier-*` header grants nothing, on one node or across two, over
//! HTTP/1.1, h2c and HTTPS (real curl from different loopback addresses).

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderValue;
use sha2::{Digest, Sha256};
use terrier_server::access::{AccessConfig, BasicUser};
use terrier_server::cluster::envelope::{Bound, Envelopes, ENVELOPE_HEADER};
use terrier_server::forwarding::{Proto, Visitor};
use terrier_server::store::now_ms;
use terrier_server::ServerConfig;
use terrier_testkit::redis::free_port;
use terrier_testkit::{init_logging, upstream, RedisServer, TestAgent, TestServer};

/// Only 127.0.0.2, and only with alice's password.
fn locked(config: &mut ServerConfig, name: &str) {
    let rules = AccessConfig {
        allow_ips: vec!["127.0.0.2/32".into()],
        basic_auth: vec![BasicUser {
            user: "alice".into(),
            password_sha256: format!("{:x}", Sha256::digest(b"s3cret-enough")),
        }],
        ..Default::default()
    };
    config.access.insert(name.into(), rules);
}

/// What curl got: the status, and the head and body (lowercased).
struct Got {
    status: u16,
    head: String,
}

/// Runs curl from source address `from` to `url` (its host resolved to
/// `server`), with `extra` arguments.
async fn curl(from: &str, url: &str, server: SocketAddr, extra: &[&str]) -> Got {
    let host = url.split("://").nth(1).and_then(|rest| rest.split([':', '/']).next()).expect("host in url");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-D", "-", "-w", "\n%{http_code}"])
        .args(["--interface", from, "--resolve", &format!("{host}:{}:{}", server.port(), server.ip())])
        .args(extra)
        .arg(url)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.rsplit('\n').next().unwrap_or("").trim().parse().unwrap_or(0);
    Got { status, head: text.to_ascii_lowercase() }
}

/// Headers a visitor forges, and the status a visitor from the allowed
/// address but without the password gets with each: the access rules' 401,
/// or 403 where the header claims to be a peer's envelope and does not
/// verify.
const FORGED: [(&str, u16); 4] = [
    ("X-Terrier-Forwarded-By: x", 401),
    ("X-Terrier-Forwarded-By:", 401),
    ("X-Terrier-Forwarded: v1;kid=00000000;ts=0;nonce=00;from=a;ip=127.0.0.2;proto=http;mac=00", 403),
    ("X-Terrier-Anything: 1", 401),
];

#[tokio::test]
async fn forged_terrier_headers_skip_no_access_rule_on_one_node() {
    init_logging();
    let tls_port = free_port().await;
    let server = TestServer::start(|c| {
        locked(c, "cam");
        c.tls.listen = Some(([127, 0, 0, 1], tls_port).into());
        c.tls.self_signed = true;
    })
    .await;
    let (_cam, host) = TestAgent::web_device(server.url(), "cam").await;
    let tls: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    let ways = [
        ("HTTP/1.1", format!("http://{host}:{}/hello", server.addr.port()), server.addr, &[][..]),
        ("h2c", format!("http://{host}:{}/hello", server.addr.port()), server.addr, &["--http2-prior-knowledge"][..]),
        ("HTTPS", format!("https://{host}:{tls_port}/hello"), tls, &[][..]),
    ];
    for (way, url, at, args) in &ways {
        for (forged, refused) in FORGED {
            let with = |more: &[&'static str]| [args, &["-H", forged][..], more].concat();
            let got = curl("127.0.0.1", url, *at, &with(&["-u", "alice:s3cret-enough"])).await;
            assert_eq!(got.status, 403, "{way}, {forged}: off the allow-list\n{}", got.head);
            let got = curl("127.0.0.2", url, *at, &with(&[])).await;
            assert_eq!(got.status, refused, "{way}, {forged}: no password\n{}", got.head);
            let got = curl("127.0.0.2", url, *at, &with(&["-u", "alice:wrong"])).await;
            assert_eq!(got.status, refused, "{way}, {forged}: wrong password\n{}", got.head);
        }
        let got = curl("127.0.0.2", url, *at, &[args, &["-u", "alice:s3cret-enough"][..]].concat()).await;
        assert_eq!(got.status, 200, "{way}: the right visitor still gets in\n{}", got.head);
    }
    server.stop().await;
}

#[tokio::test]
async fn the_device_sees_the_tcp_peer_and_no_claim_a_visitor_made() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (_device, host) = TestAgent::web_device(server.url(), "plain").await;
    let url = format!("http://{host}:{}/hello", server.addr.port());
    let claims = [
        "X-Forwarded-For: 10.9.8.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: evil.example",
        "Forwarded: for=10.9.8.7",
        "X-Real-IP: 10.9.8.7",
        "X-Terrier-Forwarded-By: x",
    ];
    let args: Vec<&str> = claims.iter().flat_map(|c| ["-H", c]).collect();
    let got = curl("127.0.0.3", &url, server.addr, &args).await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.head.contains("x-seen-xff: 127.0.0.3\r\n"), "only the TCP peer: {}", got.head);
    assert!(got.head.contains("x-seen-proto: http\r\n"), "{}", got.head);
    assert!(got.head.contains(&format!("x-seen-xfh: {host}\r\n")), "{}", got.head);

    let url = format!("http://{host}:{}/headers", server.addr.port());
    let got = curl("127.0.0.3", &url, server.addr, &args).await;
    let names = "\r\n\r\naccept host user-agent x-forwarded-for x-forwarded-host x-forwarded-proto\n";
    assert!(got.head.contains(names), "{}", got.head);
    server.stop().await;
}

#[tokio::test]
async fn forwarding_claims_in_any_spelling_never_reach_the_device() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (_device, host) = TestAgent::web_device(server.url(), "claims").await;
    let forged = [
        "X-Forwarded-Port: 443",
        "X-Forwarded-Prefix: /attacker",
        "X-Forwarded-Ssl: on",
        "X-Forwarded-Client-Cert: Subject=\"CN=admin\"",
        "X_Forwarded_For: 10.9.8.7",
        "X-Forwarded_Proto: https",
        "X_Real_IP: 10.9.8.7",
        "X_Terrier_Forwarded: v1",
        "True-Client-IP: 10.9.8.7",
        "X-Client-IP: 10.9.8.7",
        "Client-IP: 10.9.8.7",
        "X-Forwarded: for=10.9.8.7",
        "Forwarded-For: 10.9.8.7",
        "X-Cluster-Client-IP: 10.9.8.7",
        "X-Original-Forwarded-For: 10.9.8.7",
    ];
    let args: Vec<&str> = forged.iter().flat_map(|c| ["-H", c]).collect();
    let url = format!("http://{host}:{}/headers", server.addr.port());
    let got = curl("127.0.0.3", &url, server.addr, &args).await;
    let names = "\r\n\r\naccept host user-agent x-forwarded-for x-forwarded-host x-forwarded-proto\n";
    assert!(got.head.contains(names), "only the headers terrier wrote: {}", got.head);
    server.stop().await;
}

/// A cluster node on `redis` that signs with the secrets in `secret_file`.
fn node(redis: &RedisServer, id: &str, secret_file: &std::path::Path) -> impl FnOnce(&mut ServerConfig) {
    let (url, id, secret_file) = (redis.url(), id.to_owned(), secret_file.to_owned());
    move |c| {
        c.store = url;
        c.node_id = Some(id);
        c.cluster.heartbeat_interval = Duration::from_millis(200);
        c.cluster.node_ttl = Duration::from_secs(1);
        c.cluster.secret_file = Some(secret_file);
        locked(c, "cam");
    }
}

const SECRET: &str = "the-cluster-secret-of-this-test";

#[tokio::test]
async fn across_two_nodes_the_owner_checks_the_visitor_the_first_node_saw() {
    init_logging();
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let a = TestServer::start(node(&redis, "node-a", &secret_file)).await;
    let b = TestServer::start(node(&redis, "node-b", &secret_file)).await;
    // The device is on A; visitors come in at B.
    let (_cam, host) = TestAgent::web_device(a.url(), "cam").await;
    let url = format!("http://{host}:{}/hello", b.addr.port());
    for (forged, refused) in FORGED {
        let got = curl("127.0.0.1", &url, b.addr, &["-H", forged, "-u", "alice:s3cret-enough"]).await;
        assert_eq!(got.status, 403, "{forged}: off the allow-list at B\n{}", got.head);
        let got = curl("127.0.0.2", &url, b.addr, &["-H", forged]).await;
        assert_eq!(got.status, refused, "{forged}: no password at B\n{}", got.head);
    }
    let got = curl("127.0.0.2", &url, b.addr, &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.head.contains("x-seen-xff: 127.0.0.2\r\n"), "the visitor B saw, vouched for: {}", got.head);

    // Straight at A, the owner: only a fresh, unseen envelope under the
    // cluster's secret, bound to this very request, vouches for anyone.
    let direct = format!("http://{host}:{}/hello", a.addr.port());
    let peer = Envelopes::new(&[SECRET.as_bytes().to_vec()], "node-b", Duration::from_secs(10));
    let allowed = Visitor::new("127.0.0.2".parse().unwrap(), Proto::Http);
    let hello = Bound { method: "GET", authority: &host, target: "/hello" };
    let header = |v: &HeaderValue| format!("{ENVELOPE_HEADER}: {}", v.to_str().unwrap());
    let login = ["-u", "alice:s3cret-enough"];

    let valid = header(&peer.seal(hello, &allowed, now_ms()));
    let got = curl("127.0.0.1", &direct, a.addr, &[&["-H", &valid][..], &login].concat()).await;
    assert_eq!(got.status, 200, "a valid envelope vouches for 127.0.0.2\n{}", got.head);
    let got = curl("127.0.0.1", &direct, a.addr, &[&["-H", &valid][..], &login].concat()).await;
    assert_eq!(got.status, 403, "the same envelope again is a replay\n{}", got.head);

    let stale = header(&peer.seal(hello, &allowed, now_ms() - 60_000));
    let other_path = header(&peer.seal(Bound { target: "/other", ..hello }, &allowed, now_ms()));
    let stranger = Envelopes::new(&[b"not-the-cluster-secret".to_vec()], "node-x", Duration::from_secs(10));
    let wrong_key = header(&stranger.seal(hello, &allowed, now_ms()));
    for (what, envelope) in [("stale", &stale), ("bound to another path", &other_path), ("wrong key", &wrong_key)] {
        let got = curl("127.0.0.1", &direct, a.addr, &[&["-H", envelope.as_str()][..], &login].concat()).await;
        assert_eq!(got.status, 403, "{what} envelope\n{}", got.head);
    }
    let got = curl("127.0.0.1", &direct, a.addr, &login).await;
    assert_eq!(got.status, 403, "no envelope: the TCP peer, off the allow-list\n{}", got.head);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn nodes_without_a_secret_file_share_one_through_the_store() {
    init_logging();
    let redis = RedisServer::start().await;
    let plain = |id: &str| {
        let (url, id) = (redis.url(), id.to_owned());
        move |c: &mut ServerConfig| {
            c.store = url;
            c.node_id = Some(id);
            c.cluster.heartbeat_interval = Duration::from_millis(200);
            c.cluster.node_ttl = Duration::from_secs(1);
        }
    };
    let a = TestServer::start(plain("node-a")).await;
    let b = TestServer::start(plain("node-b")).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(a.url(), "far", Some(web), &[]);
    let host = terrier_testkit::visitor::device_host(&agent.connected(1).await.subdomain);
    let got = curl("127.0.0.4", &format!("http://{host}:{}/hello", b.addr.port()), b.addr, &[]).await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.head.contains("x-seen-xff: 127.0.0.4\r\n"), "{}", got.head);
    a.stop().await;
    b.stop().await;
}
