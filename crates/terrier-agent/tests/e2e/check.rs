//! `terrier check`: one run per failing step (DNS, proxy, TLS, 401) and the
//! good case, each against real components on loopback.

use crate::support;

use support::{Front, Pki, ProxyRules, Tinyproxy};
use terrier_testkit::{init_logging, TestServer};

const TOKEN: &str = "check-token-1";

/// Runs `terrier check` with `args`; returns (exit code, stdout).
async fn check(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["check", "--name", "checked", "--http", "80", "--connect-timeout", "3s"];
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
    assert!(out.contains("accepted as checked"), "{out}");
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
