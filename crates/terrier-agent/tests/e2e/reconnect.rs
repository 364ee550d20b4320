//! Reconnect timing as a user sees it: the backoff starts over once a
//! connection has been stable for a few seconds, and the retry line says
//! when the next attempt is.

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use support::{AgentProcess, EVENT_TIMEOUT};
use terrier_testkit::{eventually, init_logging, upstream, TestServer};

#[tokio::test]
async fn a_few_stable_seconds_reset_the_backoff() {
    init_logging();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let web = upstream::http_service().await;
    let server_url = format!("http://{addr}");
    let mut agent = AgentProcess::start(&[
        "--server",
        &server_url,
        "--name",
        "steady",
        "--http",
        &web.to_string(),
        "--backoff-max",
        "1s",
        "--log",
        "warn,terrier_agent=debug",
    ]);
    // Three failures before the server exists: the backoff has grown.
    for _ in 0..3 {
        agent.wait_for("reconnecting", EVENT_TIMEOUT).await;
    }
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_on(addr, data.path(), |_| {}).await;
    agent.wait_for("connected", EVENT_TIMEOUT).await;
    eventually(EVENT_TIMEOUT, "the agent says its connection is stable", || {
        let reset = agent.stderr_matching("reconnect backoff reset");
        async move { reset.into_iter().next() }
    })
    .await;

    server.stop().await;
    agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let mut retry = agent.wait_for("reconnecting", EVENT_TIMEOUT).await;
    if retry["attempt"] == 0 {
        // The stopping server asked for a spread-out delay (go_away); the
        // backoff shows in the retry after it.
        retry = agent.wait_for("reconnecting", EVENT_TIMEOUT).await;
    }
    assert_eq!(retry["attempt"], 1, "counting starts over after a stable connection: {retry}");
    assert!(retry["in_secs"].as_f64().expect("in_secs") <= Duration::from_millis(500).as_secs_f64(), "{retry}");
    agent.kill().await;
}

#[tokio::test]
async fn the_retry_line_says_when_and_not_the_whole_control_url() {
    init_logging();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut child = support::terrier_command()
        .args(["--server", &format!("http://{addr}"), "--name", "text-out", "--http", "80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn terrier");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next_line = async || {
        let line = tokio::time::timeout(EVENT_TIMEOUT, lines.next_line()).await;
        let line = line.expect("a line in time").expect("read stdout").expect("stdout open");
        println!("terrier stdout: {line}");
        line
    };
    let disconnected = next_line().await;
    assert!(disconnected.starts_with("disconnected: cannot reach "), "{disconnected}");
    assert!(disconnected.contains(&format!("ws://{addr}:")), "names the server: {disconnected}");
    assert!(!disconnected.contains("/v1/control") && !disconnected.contains('?'), "{disconnected}");

    let retry = next_line().await;
    // "reconnecting in 0.3s, at 2026-12-05T14:03:07Z (attempt 1)"
    let (_, rest) = retry.split_once(", at ").unwrap_or_else(|| panic!("says when: {retry}"));
    let (at, attempt) = rest.split_once(' ').expect("time then attempt");
    humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{at:?} is RFC 3339 ({e}): {retry}"));
    assert!(retry.starts_with("reconnecting in ") && attempt == "(attempt 1)", "{retry}");
    child.kill().await.expect("kill terrier");
}
