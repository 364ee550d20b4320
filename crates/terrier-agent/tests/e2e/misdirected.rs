//! Errors that point the right way when the agent is pointed the wrong way:
//! `--server` at a web server that is not terrierd, `https://` at a plain
//! port, a URL given to `--http`, and `--tcp NAME:PORT` read as a host.

use crate::support;

use std::net::SocketAddr;

use support::{subdomain, AgentProcess, EVENT_TIMEOUT};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, upstream, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A plain web server that answers every request with an HTTP/1.0 `200`
/// page, as `python3 -m http.server` and many appliances do.
async fn some_web_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = tcp.read(&mut head).await;
                let page = "<html><body>It works!</body></html>";
                let answer = format!("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n{page}");
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// Runs `terrier check` with `args`; returns (exit code, last stdout line).
async fn check(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["check", "--name", "misdirected", "--connect-timeout", "3s"];
    all.extend_from_slice(args);
    let output = support::run_to_exit(support::terrier_command(), &all).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.code(), stdout.lines().last().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_server_that_is_not_terrierd_is_named_as_such() {
    init_logging();
    let web = some_web_server().await;
    let (code, verdict) = check(&["--server", &format!("http://{web}")]).await;
    assert_eq!(code, Some(1), "{verdict}");
    assert!(verdict.starts_with("check failed at handshake:"), "{verdict}");
    assert!(verdict.contains("this server answered 200 to the terrier handshake: is it terrierd?"), "{verdict}");

    let mut agent = AgentProcess::start(&["--server", &format!("http://{web}"), "--name", "lost", "--http", "80"]);
    let disconnected = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let reason = disconnected["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("answered 200 to the terrier handshake: is it terrierd?"), "{disconnected}");
    agent.kill().await;
}

#[tokio::test]
async fn https_to_a_plain_port_says_the_server_does_not_speak_tls() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let (code, verdict) = check(&["--server", &url]).await;
    assert_eq!(code, Some(1), "{verdict}");
    assert!(verdict.starts_with("check failed at tls:"), "{verdict}");
    assert!(verdict.contains("the server does not speak TLS on this port; use http:// or ws://"), "{verdict}");
    assert!(!verdict.contains("--ca"), "a CA file cannot help here: {verdict}");

    let mut agent = AgentProcess::start(&["--server", &url, "--name", "tls-typo", "--http", "80"]);
    let disconnected = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let reason = disconnected["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("does not speak TLS on this port; use http:// or ws://"), "{disconnected}");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn http_takes_the_url_of_the_service_and_refuses_https_clearly() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let service_url = format!("http://{web}");
    let mut agent =
        AgentProcess::start(&["--server", server.url().as_str(), "--name", "by-url", "--http", &service_url]);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    assert_eq!(connected["http_target"], web.to_string(), "{connected}");
    let page = Visitor::new(server.addr).get(&device_host(&subdomain(&connected)), "/hello").await;
    assert_eq!(page.status, 200, "the visitor reaches the service: {page:?}");
    agent.kill().await;
    server.stop().await;

    let output =
        support::run_to_exit(support::terrier_command(), &["--name", "a", "--http", "https://127.0.0.1:8443"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--http \"https://127.0.0.1:8443\": the agent forwards plain HTTP"), "{stderr}");
    assert!(stderr.contains("--tcp tls="), "says what to use instead: {stderr}");
}

#[tokio::test]
async fn tcp_with_a_bare_word_host_warns_how_to_name_the_service() {
    init_logging();
    let agent = AgentProcess::start(&["--server", "http://127.0.0.1:9", "--name", "ssh-box", "--tcp", "ssh:22"]);
    let warning = eventually(EVENT_TIMEOUT, "a warning about --tcp ssh:22", || {
        let lines = agent.stderr_matching("warning");
        async move { lines.into_iter().next() }
    })
    .await;
    assert!(warning.contains(r#"connects to the host named "ssh" on port 22"#), "{warning}");
    assert!(warning.contains("write --tcp ssh=22"), "{warning}");
    agent.kill().await;
}
