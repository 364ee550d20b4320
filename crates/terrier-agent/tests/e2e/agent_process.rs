//! The `terrier` agent as a real process against an in-process server: its
//! JSON event lines, what a `kill -9` leaves behind, its exit codes for bad
//! flags, and retrying until the server appears.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{subdomain, AgentProcess, EVENT_TIMEOUT};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, upstream, TestServer};

async fn run_to_exit(args: &[&str]) -> std::process::Output {
    support::run_to_exit(support::terrier_command(), args).await
}

/// A loopback address where nothing listens yet (bound, then released).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn json_output_prints_one_event_per_line() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let echo = upstream::tcp_echo().await;
    let mut agent = AgentProcess::start(&[
        "--server",
        server.url().as_str(),
        "--name",
        "jsondev",
        "--http",
        &web.to_string(),
        "--tcp",
        &echo.to_string(),
    ]);

    let connected = agent.next_event().await;
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["name"], "jsondev", "{connected}");
    let url = connected["url"].as_str().expect("url");
    assert!(url.contains(".localhost:"), "{connected}");
    let tcp = connected["tcp"].as_array().expect("tcp array");
    assert_eq!(tcp.len(), 1, "{connected}");
    assert!(tcp[0]["port"].as_u64().is_some_and(|p| p > 0), "{connected}");

    server.stop().await;
    let disconnected = agent.next_event().await;
    assert_eq!(disconnected["event"], "disconnected", "{disconnected}");
    assert!(disconnected["reason"].is_string(), "{disconnected}");
    let reconnecting = agent.next_event().await;
    assert_eq!(reconnecting["event"], "reconnecting", "{reconnecting}");
    assert!(reconnecting["in_secs"].is_number(), "{reconnecting}");
    for event in [&connected, &disconnected, &reconnecting] {
        let time = event["time"].as_str().unwrap_or_else(|| panic!("every event has a time: {event}"));
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time:?} is RFC 3339 ({e})"));
    }
    agent.kill().await;
}

#[tokio::test]
async fn killed_agent_process_leaves_an_offline_page() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let server_url = server.url();
    let web_addr = web.to_string();
    let args = ["--server", server_url.as_str(), "--name", "killed", "--http", &web_addr];
    let mut agent = AgentProcess::start(&args);
    let first = subdomain(&agent.wait_for("connected", EVENT_TIMEOUT).await);
    let host = device_host(&first);
    let visitor = Visitor::new(server.addr);
    assert_eq!(visitor.get(&host, "/hello").await.status, 200);

    agent.kill().await;
    let page = eventually(Duration::from_secs(5), "the offline page (503)", || {
        let (visitor, host) = (visitor.clone(), host.clone());
        async move {
            let page = visitor.get(&host, "/hello").await;
            (page.status == 503).then_some(page)
        }
    })
    .await;
    assert!(!page.body.is_empty(), "the 503 has a page");

    let mut again = AgentProcess::start(&args);
    let second = subdomain(&again.wait_for("connected", EVENT_TIMEOUT).await);
    assert_eq!(second, first, "a restarted agent keeps its subdomain");
    assert_eq!(visitor.get(&host, "/hello").await.status, 200);
    again.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_name_exits_with_code_2() {
    init_logging();
    let output = run_to_exit(&["--name", "Bad_Name", "--http", "80"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("Bad_Name"), "names the bad name: {stderr}");
    assert!(stderr.contains("--name"), "names the flag: {stderr}");
}

#[tokio::test]
async fn nothing_to_expose_is_an_error() {
    init_logging();
    let output = run_to_exit(&["--name", "a"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("--http") && stderr.contains("--tcp"), "says to give --http or --tcp: {stderr}");
}

#[tokio::test]
async fn agent_retries_until_the_server_appears() {
    init_logging();
    let addr = free_addr();
    let web = upstream::http_service().await;
    let mut agent = AgentProcess::start(&[
        "--server",
        &format!("http://{addr}"),
        "--name",
        "early-bird",
        "--http",
        &web.to_string(),
        "--backoff-max",
        "1s",
    ]);
    // Two failed attempts, each followed by its delay, before the server exists.
    agent.wait_for("reconnecting", EVENT_TIMEOUT).await;
    agent.wait_for("reconnecting", EVENT_TIMEOUT).await;

    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_on(addr, data.path(), |_| {}).await;
    let connected = agent.wait_for("connected", Duration::from_secs(5)).await;
    let page = Visitor::new(server.addr).get(&device_host(&subdomain(&connected)), "/hello").await;
    assert_eq!(page.status, 200, "{page:?}");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn config_file_sets_the_keys_and_flags_override_it() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    let toml = format!(
        "server = \"{}\"\nname = \"from-file\"\nhttp = \"{web}\"\nbackoff_max = \"1s\"\noutput = \"text\"\n",
        server.url()
    );
    std::fs::write(&file, toml).expect("write config");
    // --output json (added by AgentProcess) overrides the file's "text", --name its name.
    let mut agent = AgentProcess::start(&["--config", file.to_str().unwrap(), "--name", "from-flag"]);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    assert_eq!(connected["name"], "from-flag", "{connected}");
    let page = Visitor::new(server.addr).get(&device_host(&subdomain(&connected)), "/hello").await;
    assert_eq!(page.status, 200, "the file's http service is exposed: {page:?}");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn bad_config_file_exits_with_code_2_naming_file_and_key() {
    init_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "name = \"a\"\nhttp = \"80\"\nprot = 1\n").expect("write config");
    let output = run_to_exit(&["--config", file.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("agent.toml") && stderr.contains("prot"), "names the file and the key: {stderr}");
}

#[tokio::test]
async fn bad_config_file_shows_its_line_and_the_key_meant() {
    init_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "name = \"a\"\nhtp = \"80\"\n").expect("write config");
    let output = run_to_exit(&["--config", file.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let first = format!("terrier: --config {}, line 2, column 1: unknown field `htp`", file.display());
    assert!(lines[0].starts_with(&first), "file, line and message on the first line: {stderr}");
    assert_eq!(lines.get(1), Some(&"  2 | htp = \"80\""), "the line itself: {stderr}");
    assert!(lines.contains(&"  did you mean `http`?"), "the key meant: {stderr}");
}

#[tokio::test]
async fn config_file_takes_a_bare_http_port_and_a_single_tcp_string() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let echo = upstream::tcp_echo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    let toml =
        format!("server = \"{}\"\nname = \"bare\"\nhttp = {}\ntcp = \"{}\"\n", server.url(), web.port(), echo.port());
    std::fs::write(&file, toml).expect("write config");
    let mut agent = AgentProcess::start(&["--config", file.to_str().unwrap()]);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    assert_eq!(connected["http_target"], format!("127.0.0.1:{}", web.port()), "{connected}");
    assert_eq!(connected["tcp"][0]["target"], format!("127.0.0.1:{}", echo.port()), "{connected}");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn version_names_the_program_terrier() {
    let output = run_to_exit(&["--version"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.trim(), format!("terrier {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn terrier_http_port_exposes_it_with_the_server_from_the_environment() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let mut command = support::terrier_command();
    command.env("TERRIER_SERVER", server.url().as_str()).env("TERRIER_NAME", "one-liner");
    let mut agent = AgentProcess::start_command(command, &["http", &web.port().to_string()]);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    assert_eq!(connected["name"], "one-liner", "{connected}");
    assert!(connected["url"].as_str().is_some_and(|u| u.starts_with("http://")), "prints the URL: {connected}");
    let page = Visitor::new(server.addr).get(&device_host(&subdomain(&connected)), "/hello").await;
    assert_eq!(page.status, 200, "{page:?}");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn terrier_tcp_port_exposes_only_that_port_over_the_config_file() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let echo = upstream::tcp_echo().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.toml");
    // The file gives the server and name; its own services are not exposed.
    std::fs::write(&file, format!("server = \"{}\"\nname = \"tcp-only\"\nhttp = 1\ntcp = [\"2\"]\n", server.url()))
        .expect("write config");
    let mut agent = AgentProcess::start(&["--config", file.to_str().unwrap(), "tcp", &echo.to_string()]);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    assert!(connected["http_target"].is_null(), "{connected}");
    let tcp = connected["tcp"].as_array().expect("tcp");
    assert_eq!(tcp.len(), 1, "{connected}");
    assert_eq!(tcp[0]["target"], echo.to_string(), "{connected}");
    agent.kill().await;
    server.stop().await;

    let output = run_to_exit(&["--name", "a", "--http", "80", "http", "8080"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("give one web service"), "{stderr}");
}

#[tokio::test]
async fn show_requests_prints_each_visitor_request_as_it_happens() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let web = upstream::http_service().await;
    let url = server.url().to_string();
    let args = ["--server", url.as_str(), "--name", "watched", "--show-requests", "http", &web.port().to_string()];
    let mut agent = AgentProcess::start(&args);
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    let visitor = Visitor::new(server.addr);
    let host = device_host(&subdomain(&connected));
    assert_eq!(visitor.get(&host, "/hello?secret=1").await.status, 200);
    let seen = agent.wait_for("request", EVENT_TIMEOUT).await;
    assert_eq!(
        (seen["method"].as_str(), seen["path"].as_str(), seen["status"].as_u64()),
        (Some("GET"), Some("/hello"), Some(200)),
        "{seen}"
    );
    assert!(seen["duration_ms"].is_u64() && seen["time"].is_string(), "{seen}");
    assert_eq!(visitor.get(&host, "/missing").await.status, 404);
    let seen = agent.wait_for("request", EVENT_TIMEOUT).await;
    assert_eq!((seen["path"].as_str(), seen["status"].as_u64()), (Some("/missing"), Some(404)), "{seen}");
    agent.kill().await;
    server.stop().await;
}

#[tokio::test]
async fn logs_into_a_pipe_carry_no_colour_codes() {
    init_logging();
    // A name another agent holds, with no takeover allowed: the agent logs an error.
    let server = TestServer::start(|c| c.limits.max_takeovers_per_minute = 0).await;
    let web = upstream::http_service().await;
    let mut holder = terrier_testkit::TestAgent::start(server.url(), "taken", Some(web), &[]);
    holder.connected(1).await;
    let url = server.url().to_string();
    let mut agent = AgentProcess::start(&["--server", &url, "--name", "taken", "--http", &web.port().to_string()]);
    agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let logged = agent.stderr.clone();
    let lines = terrier_testkit::eventually(EVENT_TIMEOUT, "the error on stderr", || {
        let logged = logged.clone();
        async move { Some(logged.lock().unwrap().clone()).filter(|l| l.iter().any(|l| l.contains("ERROR"))) }
    })
    .await;
    agent.kill().await;
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "escape codes in piped stderr: {lines:?}");
    server.stop().await;
}
