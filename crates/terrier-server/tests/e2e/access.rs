//! Visitor access control set by the operator per device name: an IP
//! allow-list (HTTP and TCP) and HTTP basic auth, checked with real curl
//! bound to different loopback source addresses. Devices without rules
//! stay open.

use std::time::Duration;

use sha2::{Digest, Sha256};
use terrier_server::access::{AccessConfig, BasicUser};
use terrier_testkit::{init_logging, upstream, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs curl from source address `from` against `host` on the server; returns (status, headers+body).
async fn curl_from(from: &str, server: &TestServer, host: &str, extra: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "-o", "/dev/null", "-w", "%{http_code}", "--interface", from])
        .args(["-H", &format!("Host: {host}")])
        .args(extra)
        .arg(format!("http://{}/hello", server.addr))
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.rsplit('\n').next().unwrap_or("").trim().parse().unwrap_or(0);
    (status, text)
}

/// Echoes one line over a TCP connection from `from`; `false` if closed.
async fn tcp_echo_from(from: &str, port: u16) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("addr")).expect("bind");
    let Ok(mut stream) = socket.connect(([127, 0, 0, 1], port).into()).await else { return false };
    if stream.write_all(b"hi\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 3];
    matches!(tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await, Ok(Ok(_)))
}

#[tokio::test]
async fn only_allowed_addresses_with_the_password_reach_a_protected_device() {
    init_logging();
    let rules = AccessConfig {
        allow_ips: vec!["127.0.0.2/32".into()],
        basic_auth: vec![BasicUser {
            user: "alice".into(),
            password_sha256: format!("{:x}", Sha256::digest(b"s3cret-enough")),
        }],
        ..Default::default()
    };
    let server = TestServer::start(|c| {
        c.access.insert("cam".into(), rules);
    })
    .await;
    let echo = upstream::tcp_echo().await;
    let mut cam = TestAgent::start(server.url(), "cam", Some(upstream::http_service().await), &[("echo", echo)]);
    let connected = cam.connected(1).await;
    let host = format!("{}.localhost", connected.subdomain);
    let (_open, open_host) = TestAgent::web_device(server.url(), "open").await;

    let (status, _) = curl_from("127.0.0.1", &server, &host, &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 403, "an address off the allow-list is refused even with the password");
    let (status, out) = curl_from("127.0.0.2", &server, &host, &[]).await;
    assert_eq!(status, 401, "{out}");
    assert!(out.to_ascii_lowercase().contains("www-authenticate: basic realm="), "{out}");
    let (status, _) = curl_from("127.0.0.2", &server, &host, &["-u", "alice:wrong"]).await;
    assert_eq!(status, 401);
    let (status, _) = curl_from("127.0.0.2", &server, &host, &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 200);
    let (status, _) = curl_from("127.0.0.1", &server, &open_host, &[]).await;
    assert_eq!(status, 200, "a device without rules stays open");

    let port = connected.tcp.iter().find(|p| p.service == "echo").expect("echo").port;
    assert!(!tcp_echo_from("127.0.0.1", port).await, "TCP from an address off the list is closed");
    assert!(tcp_echo_from("127.0.0.2", port).await, "TCP from an allowed address works");
}

/// curl (any source address) for `path` on `host`, with `extra` flags;
/// `--path-as-is` so curl sends dot segments as written. Returns (status, headers+body).
async fn curl_path(server: &TestServer, host: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--path-as-is", "-D", "-", "-w", "\n%{http_code}"])
        .args(["-H", &format!("Host: {host}")])
        .args(extra)
        .arg(format!("http://{}{path}", server.addr))
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.rsplit('\n').next().unwrap_or("").trim().parse().unwrap_or(0);
    (status, text)
}

/// Per-path rules and bearer tokens for a fleet: a closed path stays
/// closed however its path is spelled, `/headers` takes only a token (and
/// the device never sees it), `/hello` is open, and the rest takes the
/// password; a device outside the fleet is untouched.
#[tokio::test]
async fn path_rules_and_bearer_tokens_hold_for_a_fleet_whatever_the_spelling() {
    use terrier_server::access::paths::{Credential, PathRule};
    use terrier_server::access::BearerToken;
    init_logging();
    let sha = |s: &str| format!("{:x}", Sha256::digest(s.as_bytes()));
    let rules = AccessConfig {
        basic_auth: vec![BasicUser { user: "alice".into(), password_sha256: sha("s3cret-enough") }],
        bearer_tokens: vec![BearerToken { name: "ci".into(), token_sha256: sha("machine-token-0123456789") }],
        paths: vec![
            PathRule { prefix: "/echo".into(), deny: true, ..Default::default() },
            PathRule { prefix: "/headers".into(), accept: Some(vec![Credential::Bearer]), ..Default::default() },
            PathRule {
                prefix: "/hello".into(),
                accept: Some(vec![]),
                methods: vec!["GET".into()],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let server = TestServer::start(|c| {
        c.access.insert("lab-*".into(), rules);
    })
    .await;
    let (_cam, host) = TestAgent::web_device(server.url(), "lab-cam").await;
    let (_open, open_host) = TestAgent::web_device(server.url(), "open").await;

    for closed in ["/echo", "/ECHO", "/%65cho", "/echo/x", "/Echo?x=1"] {
        let (status, out) = curl_path(&server, &host, closed, &["-u", "alice:s3cret-enough"]).await;
        assert_eq!(status, 403, "{closed} is closed even with the password: {out}");
    }
    for unclear in ["/x/../echo", "//echo", "/echo;x", "/%2e%2e/echo", "/x%2fecho", "/x%5cecho"] {
        let (status, out) = curl_path(&server, &host, unclear, &["-u", "alice:s3cret-enough"]).await;
        assert_eq!(status, 400, "{unclear} is refused, not guessed: {out}");
    }
    let (status, out) = curl_path(&server, &host, "/hello", &[]).await;
    assert_eq!(status, 200, "GET /hello is open: {out}");
    let (status, _) = curl_path(&server, &host, "/hello", &["--http2-prior-knowledge"]).await;
    assert_eq!(status, 200, "the same over HTTP/2");
    let (status, _) =
        curl_path(&server, &host, "/echo", &["--http2-prior-knowledge", "-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 403, "closed over HTTP/2 too");

    let (status, out) = curl_path(&server, &host, "/headers", &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 401, "the password does not open a token path: {out}");
    assert!(out.to_ascii_lowercase().contains("www-authenticate: bearer realm="), "{out}");
    let token = ["-H", "Authorization: Bearer machine-token-0123456789"];
    let (status, out) = curl_path(&server, &host, "/headers", &token).await;
    assert_eq!(status, 200, "{out}");
    assert!(!out.contains("authorization"), "the device never sees terrier's token: {out}");
    let (status, _) = curl_path(&server, &host, "/headers", &["-H", "Authorization: Bearer machine-token-wrong"]).await;
    assert_eq!(status, 401);

    let (status, out) = curl_path(&server, &host, "/bytes/10", &[]).await;
    assert_eq!(status, 401, "paths no rule covers take the section's credentials: {out}");
    let (status, _) = curl_path(&server, &host, "/bytes/10", &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 200);
    let (status, _) = curl_path(&server, &host, "/bytes/10", &token).await;
    assert_eq!(status, 200, "or its token");
    let (status, _) = curl_path(&server, &open_host, "/echo", &["-d", "x"]).await;
    assert_eq!(status, 200, "a device outside the fleet is untouched");
}
