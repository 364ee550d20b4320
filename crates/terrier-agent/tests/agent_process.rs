//! The `terrier` agent as a real process against an in-process server: its
//! JSON event lines, what a `kill -9` leaves behind, its exit codes for bad
//! flags, and retrying until the server appears.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, upstream, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Path of the binary under test.
const TERRIER: &str = env!("CARGO_BIN_EXE_terrier");
/// How long any one expected event line may take to appear.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `terrier` child process printing JSON events, killed on drop.
struct AgentProcess {
    /// The process.
    child: Child,
    /// Its stdout, one event per line.
    events: Lines<BufReader<ChildStdout>>,
}

impl AgentProcess {
    /// Starts `terrier --output json` with `args`.
    fn start(args: &[&str]) -> Self {
        let mut child = terrier_command()
            .args(args)
            .args(["--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn terrier");
        forward_stderr(child.stderr.take().expect("stderr"));
        let events = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, events }
    }

    /// The next event line, parsed (bounded wait).
    async fn next_event(&mut self) -> Value {
        let line = tokio::time::timeout(EVENT_TIMEOUT, self.events.next_line())
            .await
            .unwrap_or_else(|_| panic!("terrier printed an event within {EVENT_TIMEOUT:?}"))
            .expect("read terrier stdout")
            .expect("terrier closed stdout before the next event");
        println!("terrier stdout: {line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not one JSON object ({e}): {line:?}"))
    }

    /// Skips events until one named `event` (bounded wait), returning it.
    async fn wait_for(&mut self, event: &str, deadline: Duration) -> Value {
        let wait = async {
            loop {
                let next = self.next_event().await;
                if next["event"] == event {
                    return next;
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .unwrap_or_else(|_| panic!("terrier printed a {event:?} event within {deadline:?}"))
    }

    /// Kills the process (SIGKILL) and reaps it.
    async fn kill(mut self) {
        tokio::time::timeout(Duration::from_secs(5), self.child.kill())
            .await
            .expect("terrier dies within 5 s of SIGKILL")
            .expect("kill terrier");
    }
}

/// The binary with nothing inherited from the environment that would change it.
fn terrier_command() -> Command {
    terrier_testkit::process::clean_command(TERRIER, "TERRIER_")
}

/// Runs the binary to completion with `args` (bounded), returning its output.
async fn run_to_exit(args: &[&str]) -> std::process::Output {
    terrier_testkit::process::run_to_exit(terrier_command(), args).await
}

/// Copies the agent's log lines to the test output.
fn forward_stderr(pipe: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("terrier stderr: {line}");
        }
    });
}

/// A loopback address where nothing listens yet (bound, then released).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn subdomain(connected: &Value) -> String {
    connected["subdomain"].as_str().unwrap_or_else(|| panic!("connected event has a subdomain: {connected}")).to_owned()
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
