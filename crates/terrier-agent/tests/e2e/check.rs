//! `terrier check`: one run per failing step (DNS, proxy, TLS, 401, a local
//! service) and the good case, each against real components on loopback;
//! and a check beside a live agent, which must not disturb it.

use crate::support;

use support::{Front, Pki, ProxyRules, Tinyproxy};
use terrier_testkit::admin::AdminClient;
use terrier_testkit::upstream::{http_service, tcp_echo};
use terrier_testkit::{init_logging, TestAgent, TestServer};

const TOKEN: &str = "check-token-1";

/// Runs `terrier check` with `args`; returns (exit code, stdout).
async fn check(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["check", "--name", "checked", "--connect-timeout", "3s"];
    all.extend_from_slice(args);
    let output = support::run_to_exit(support::terrier_command(), &all).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.code(), stdout)
}

fn verdict(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or_default()
}

/// terrierd behind TLS and the token gate, and the CA file for it.
async fn secure_server() -> (TestServer, Front, tempfile::TempDir, String) {
    let server = TestServer::start(|_| {}).await;
    let pki = Pki::new("check CA");
    let front = Front::start(server.addr, Some(&pki), Some(TOKEN)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pki.write_ca(dir.path(), "ca.pem").to_str().unwrap().to_owned();
    (server, front, dir, ca)
}

#[tokio::test]
async fn check_passes_every_step_through_a_proxy() {
    init_logging();
    let (server, front, _dir, ca) = secure_server().await;
    let proxy = Tinyproxy::start(ProxyRules::default()).await;
    let url = format!("wss://localhost:{}", front.addr.port());
    let (code, out) = check(&["--server", &url, "--ca", &ca, "--token", TOKEN, "--proxy", &proxy.url(None)]).await;
    assert_eq!(code, Some(0), "{out}");
    for step in ["dns", "tcp", "proxy", "tls", "handshake"] {
        assert!(out.lines().any(|l| l.starts_with("ok") && l.contains(step)), "step {step} passed: {out}");
    }
    assert!(out.contains("name checked accepted; no lease yet"), "{out}");
    assert_eq!(verdict(&out), "check passed: this device can connect");
    server.stop().await;
}

#[tokio::test]
async fn check_names_a_name_that_does_not_resolve() {
    init_logging();
    let (code, out) = check(&["--server", "wss://no-such-host.invalid"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(verdict(&out).starts_with("check failed at dns: cannot resolve no-such-host.invalid"), "{out}");
}

#[tokio::test]
async fn check_names_a_proxy_that_refuses() {
    init_logging();
    let (server, front, _dir, ca) = secure_server().await;
    let proxy = Tinyproxy::start(ProxyRules { connect_ports: &[support::free_port()], ..Default::default() }).await;
    let url = format!("wss://localhost:{}", front.addr.port());
    let (code, out) = check(&["--server", &url, "--ca", &ca, "--token", TOKEN, "--proxy", &proxy.url(None)]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(verdict(&out).starts_with("check failed at proxy:") && verdict(&out).contains("403"), "{out}");
    server.stop().await;
}

#[tokio::test]
async fn check_names_a_certificate_from_another_ca() {
    init_logging();
    let (server, front, dir, _ca) = secure_server().await;
    let other = Pki::new("another CA").write_ca(dir.path(), "other.pem");
    let url = format!("wss://localhost:{}", front.addr.port());
    let (code, out) = check(&["--server", &url, "--ca", other.to_str().unwrap(), "--token", TOKEN]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(verdict(&out).starts_with("check failed at tls:") && verdict(&out).contains("UnknownIssuer"), "{out}");
    server.stop().await;
}

#[tokio::test]
async fn check_names_a_refused_token() {
    init_logging();
    let (server, front, _dir, ca) = secure_server().await;
    let url = format!("wss://localhost:{}", front.addr.port());
    let (code, out) = check(&["--server", &url, "--ca", &ca, "--token", "not-the-token"]).await;
    assert_eq!(code, Some(1), "{out}");
    let last = verdict(&out);
    assert!(last.starts_with("check failed at handshake: server refused (401): unknown or revoked token"), "{out}");
    assert!(last.contains("--token"), "says what to fix: {out}");
    server.stop().await;
}

/// The device's lease and session as the admin API shows them.
async fn device(admin: &AdminClient, name: &str) -> (serde_json::Value, serde_json::Value) {
    let device = admin.get(&format!("/api/v1/devices/{name}")).await.json;
    (device["session"].clone(), device["tcp"].clone())
}

#[tokio::test]
async fn a_check_beside_a_live_agent_leaves_its_session_and_ports_unchanged() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (web, echo) = (http_service().await, tcp_echo().await);
    let mut agent = TestAgent::start(server.url(), "checked", Some(web), &[("ssh", echo), ("mqtt", echo)]);
    let connected = agent.connected(1).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let before = device(&admin, "checked").await;

    // Fewer services than the agent announces, as a technician would type it.
    let (code, out) = check(&["--server", server.url().as_str(), "--tcp", &format!("ssh={echo}")]).await;
    assert_eq!(code, Some(0), "{out}");
    let handshake = out.lines().find(|l| l.contains("handshake")).unwrap_or_default();
    assert!(handshake.contains(&format!("keeps subdomain {}", connected.subdomain)), "{out}");
    assert!(handshake.contains("ssh=") && handshake.contains("mqtt="), "the lease's ports: {out}");
    assert!(handshake.contains("an agent is online with this name now"), "{out}");
    assert!(!handshake.contains("now from"), "in open mode nobody is told the agent's address: {out}");

    assert_eq!(device(&admin, "checked").await, before, "same session, same ports");
    assert_eq!(agent.events().len(), 1, "the agent saw nothing but its connection: {:?}", agent.events());
    server.stop().await;
}

#[tokio::test]
async fn check_says_which_local_service_is_not_there_or_does_not_speak_http() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (web, echo, closed) = (http_service().await, tcp_echo().await, support::free_port());
    let url = server.url();

    let (code, out) =
        check(&["--server", url.as_str(), "--http", &web.to_string(), "--tcp", &format!("ssh={echo}")]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("http -> {web}: speaks HTTP")), "{out}");
    assert!(out.contains(&format!("ssh -> {echo}: reachable")), "{out}");

    let (code, out) = check(&["--server", url.as_str(), "--http", &echo.to_string()]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(verdict(&out).contains("does not answer HTTP"), "{out}");

    let (code, out) = check(&["--server", url.as_str(), "--tcp", &format!("db=127.0.0.1:{closed}")]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(verdict(&out).starts_with(&format!("check failed at local: db -> 127.0.0.1:{closed}")), "{out}");
    server.stop().await;
}
