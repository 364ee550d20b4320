//! The agent against terrierd's own TLS listener (development CA) with
//! token authentication: the real thing end to end, no stand-ins.

use crate::support;

use support::{subdomain, AgentProcess, EVENT_TIMEOUT};
use terrier_server::auth::store::{FileTokenStore, TokenStore};
use terrier_server::auth::token::{self, Scope};
use terrier_server::auth::AuthMode;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, upstream, TestServer};

/// terrierd with TLS (self-signed development CA) and token auth; returns it,
/// its wss:// URL and the CA file.
async fn secure_terrierd() -> (TestServer, String, String) {
    let port = support::free_port();
    let server = TestServer::start(|c| {
        c.auth.mode = AuthMode::Token;
        c.tls.listen = Some(([127, 0, 0, 1], port).into());
        c.tls.self_signed = true;
    })
    .await;
    let ca = server.data_dir().join("tls/dev-ca.pem").to_str().expect("utf-8 path").to_owned();
    (server, format!("wss://localhost:{port}"), ca)
}

async fn mint(server: &TestServer, name: &str) -> String {
    let minted = token::mint(Scope::Name(name.into()), "agent test", 0);
    FileTokenStore::new(&server.data_dir()).insert(&minted.record).await.expect("store token");
    minted.token
}

#[tokio::test]
async fn agent_with_token_over_terrierd_tls_serves_a_visitor_and_check_passes() {
    init_logging();
    let (server, url, ca) = secure_terrierd().await;
    let token = mint(&server, "tls-dev").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("write token");
    let web = upstream::http_service().await;
    let args = [
        "--server",
        &url,
        "--ca",
        &ca,
        "--token-file",
        token_file.to_str().unwrap(),
        "--name",
        "tls-dev",
        "--http",
        &web.to_string(),
    ];

    let check = support::run_to_exit(support::terrier_command(), &[&["check"][..], &args].concat()).await;
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{out}");
    assert!(out.contains("token accepted"), "{out}");

    let mut agent = AgentProcess::start(&args);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    let page = Visitor::new(server.addr).get(&device_host(&subdomain(&connected)), "/hello").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(agent.stderr_matching(&token).is_empty(), "the token never reaches the log");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn terrierd_refusing_the_token_is_printed_with_its_reason() {
    init_logging();
    let (server, url, ca) = secure_terrierd().await;
    let web = upstream::http_service().await;
    let mut agent = AgentProcess::start(&[
        "--server",
        &url,
        "--ca",
        &ca,
        "--token",
        "not-a-real-token",
        "--name",
        "tls-dev",
        "--http",
        &web.to_string(),
        "--backoff-max",
        "300ms",
    ]);
    let refused = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("401") && reason.contains("invalid or revoked"), "{reason}");
    agent.wait_for("reconnecting", EVENT_TIMEOUT).await;
    agent.kill().await;
    server.stop().await;
}
