//! wss:// and device tokens, against a real terrierd behind a real TLS
//! terminator (tokio-rustls, rcgen certificates) that also checks the token
//! the way terrierd does (401 with a plain-text reason).

use crate::support;

use std::time::Duration;

use support::{subdomain, AgentProcess, Front, Pki, EVENT_TIMEOUT};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, upstream, TestServer};

const TOKEN: &str = "tok-3f9a1c0e8b7d";

#[tokio::test]
async fn wss_with_ca_and_token_connects_and_a_visitor_reaches_the_device() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let pki = Pki::new("terrier test CA");
    let front = Front::start(server.addr, Some(&pki), Some(TOKEN)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let web = upstream::http_service().await;
    let server_url = format!("wss://localhost:{}", front.addr.port());
    let mut agent = AgentProcess::start(&[
        "--server",
        &server_url,
        "--ca",
        ca.to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--name",
        "secure-dev",
        "--http",
        &web.to_string(),
        "--pool",
        "1",
        "--log",
        "debug",
    ]);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    let host = device_host(&subdomain(&connected));
    let visitor = Visitor::new(server.addr);
    for _ in 0..3 {
        let page = visitor.get(&host, "/hello").await;
        assert_eq!(page.status, 200, "{page:?}");
    }

    let control = front.heads_for("/v1/control");
    let data = front.heads_for("/v1/data");
    assert!(!control.is_empty() && !data.is_empty(), "control {control:?}, data {data:?}");
    for head in control.iter().chain(&data) {
        assert!(head.contains(&format!("Bearer {TOKEN}")), "every socket carries the token: {head}");
    }
    assert!(agent.stderr_matching(TOKEN).is_empty(), "the token never reaches the log (even at debug)");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn server_certificate_from_another_ca_is_refused_with_a_clear_error() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let real = Pki::new("the server's CA");
    let other = Pki::new("some other CA");
    let front = Front::start(server.addr, Some(&real), None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = other.write_ca(dir.path(), "other-ca.pem");
    let web = upstream::http_service().await;
    let mut agent = AgentProcess::start(&[
        "--server",
        &format!("wss://localhost:{}", front.addr.port()),
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        "distrustful",
        "--http",
        &web.to_string(),
        "--backoff-max",
        "200ms",
    ]);
    let disconnected = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let reason = disconnected["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("certificate rejected") && reason.contains("UnknownIssuer"), "{reason}");
    assert!(reason.contains("other-ca.pem"), "names the trusted roots: {reason}");
    // It keeps retrying, and never connects.
    agent.wait_for("reconnecting", EVENT_TIMEOUT).await;
    let again = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    assert!(again["reason"].as_str().unwrap_or_default().contains("UnknownIssuer"), "{again}");
    assert!(front.heads.lock().unwrap().is_empty(), "no request is sent to an untrusted server");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn a_wss_server_is_verified_against_system_roots_by_default() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let pki = Pki::new("a private CA");
    let front = Front::start(server.addr, Some(&pki), None).await;
    let web = upstream::http_service().await;
    let mut agent = AgentProcess::start(&[
        "--server",
        &format!("wss://localhost:{}", front.addr.port()),
        "--name",
        "default-roots",
        "--http",
        &web.to_string(),
    ]);
    let disconnected = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let reason = disconnected["reason"].as_str().unwrap_or_default();
    // Either the private CA is unknown to the system, or the machine has no roots at all.
    assert!(reason.contains("UnknownIssuer") || reason.contains("no system root certificates"), "{reason}");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_printed_logged_as_error_and_retried() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let front = Front::start(server.addr, None, Some(TOKEN)).await;
    let web = upstream::http_service().await;
    let mut command = support::terrier_command();
    command.env("TERRIER_TOKEN", "wrong-token-value");
    let mut agent = AgentProcess::start_command(
        command,
        &[
            "--server",
            &format!("http://{}", front.addr),
            "--name",
            "locked-out",
            "--http",
            &web.to_string(),
            "--backoff-max",
            "300ms",
        ],
    );
    for _ in 0..2 {
        let disconnected = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
        let reason = disconnected["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("401") && reason.contains("unknown or revoked token"), "{reason}");
        agent.wait_for("reconnecting", EVENT_TIMEOUT).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while agent.stderr_matching("ERROR").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "two ERROR lines: {:?}", agent.stderr.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(agent.stderr_matching("ERROR").iter().all(|l| l.contains("401")), "{:?}", agent.stderr_matching("ERROR"));
    assert!(agent.stderr_matching("wrong-token-value").is_empty(), "the token never reaches the log");
    assert!(front.heads_for("/v1/control").iter().all(|h| h.contains("Bearer wrong-token-value")));
    agent.kill().await;
    server.stop().await;
}
