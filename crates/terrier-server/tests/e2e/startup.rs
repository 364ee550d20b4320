//! What `terrierd` prints when it starts, as a process with its output
//! piped (as into a file or a journal): the banner and URLs alone on
//! stdout, logs on stderr, no colour codes in either; "listening" only once
//! everything it needs is open; and every URL it prints works.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use terrier_testkit::raw_visitor::{RawAnswer, RawVisitor};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;

const TERRIERD: &str = env!("CARGO_BIN_EXE_terrierd");
const TIMEOUT: Duration = Duration::from_secs(10);

/// A terrierd process with both output streams read line by line.
struct Started {
    /// The process (killed on drop).
    child: Child,
    /// The address it was told to listen on.
    addr: SocketAddr,
    /// Its stdout lines, as they come.
    stdout: mpsc::UnboundedReceiver<String>,
    /// Its stderr lines, as they come.
    stderr: mpsc::UnboundedReceiver<String>,
}

impl Started {
    /// Spawns `terrierd --listen <free port> args` (it may fail to start).
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        Self::spawn_on(addr, &addr.to_string(), args, env)
    }

    /// Spawns `terrierd --listen <listen> args`, where `listen` means `addr`.
    fn spawn_on(addr: SocketAddr, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = terrier_testkit::process::clean_command(TERRIERD, "TERRIERD_");
        command.arg("--listen").arg(listen).args(args).envs(env.iter().copied());
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn terrierd");
        let stdout = lines(child.stdout.take().unwrap(), "stdout");
        let stderr = lines(child.stderr.take().unwrap(), "stderr");
        Self { child, addr, stdout, stderr }
    }

    /// The first stdout line containing `needle` (panics at the deadline or
    /// when stdout closes first).
    async fn stdout_line(&mut self, needle: &str) -> String {
        wait_for(&mut self.stdout, needle).await
    }

    /// SIGTERM, then every line left on stdout and stderr once it exited.
    async fn stop(mut self) -> (Vec<String>, Vec<String>) {
        let pid = self.child.id().expect("running").to_string();
        assert!(tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
        let status = tokio::time::timeout(TIMEOUT, self.child.wait()).await.expect("exits").unwrap();
        assert_eq!(status.code(), Some(0));
        (drain(&mut self.stdout).await, drain(&mut self.stderr).await)
    }

    /// Waits for the process to exit by itself; its code and both outputs.
    async fn exited(mut self) -> (Option<i32>, Vec<String>, Vec<String>) {
        let status = tokio::time::timeout(TIMEOUT, self.child.wait()).await.expect("exits").unwrap();
        (status.code(), drain(&mut self.stdout).await, drain(&mut self.stderr).await)
    }
}

/// Sends each line of `pipe` (echoed to the test output) to the receiver.
fn lines(pipe: impl AsyncRead + Unpin + Send + 'static, which: &'static str) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("terrierd {which}: {line}");
            let _ = tx.send(line);
        }
    });
    rx
}

async fn wait_for(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let found = async {
        while let Some(line) = rx.recv().await {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("output closed before {needle:?}");
    };
    tokio::time::timeout(TIMEOUT, found).await.unwrap_or_else(|_| panic!("terrierd printed {needle:?}"))
}

/// Every line still to come, until the stream closes.
async fn drain(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut all = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(TIMEOUT, rx.recv()).await {
        all.push(line);
    }
    all
}

fn free_port_range() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("{port}-{port}")
}

#[tokio::test]
async fn piped_stdout_has_only_the_banner_and_no_output_has_escape_codes() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let mut server = Started::spawn(&["--demo", "--data-dir", data_dir, "--tcp-ports", &free_port_range()], &[]);
    let mut stdout = vec![
        server.stdout_line("terrierd listening").await,
        server.stdout_line("dashboard: ").await,
        server.stdout_line("demo device online").await,
    ];
    let (rest, stderr) = server.stop().await;
    stdout.extend(rest);
    let banner = ["terrierd listening on ", "dashboard: ", "demo device online: "];
    for line in &stdout {
        assert!(banner.iter().any(|b| line.starts_with(b)), "only the banner on stdout, got {line:?}");
    }
    assert!(stderr.iter().any(|l| l.contains("INFO") && l.contains("terrierd serving")), "logs on stderr: {stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("shutdown requested")), "{stderr:?}");
    assert!(!stderr.iter().any(|l| l.contains("bound to loopback")), "localhost on loopback is fine: {stderr:?}");
    for line in stdout.iter().chain(&stderr) {
        assert!(!line.contains('\u{1b}'), "no escape codes into a pipe: {line:?}");
    }
}

#[tokio::test]
async fn a_data_dir_in_use_fails_before_saying_listening() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let mut first = Started::spawn(&["--data-dir", data_dir, "--tcp-ports", &free_port_range()], &[]);
    first.stdout_line("terrierd listening").await;

    let second = Started::spawn(&["--data-dir", data_dir, "--tcp-ports", &free_port_range()], &[]);
    let (code, stdout, stderr) = second.exited().await;
    assert_eq!(code, Some(1), "{stderr:?}");
    assert!(stdout.is_empty(), "nothing on stdout, no \"listening\": {stdout:?}");
    assert!(stderr.iter().any(|l| l.contains("another terrierd")), "says why: {stderr:?}");
    first.stop().await;
}

/// `GET url` sent to `server` (whatever the URL's host resolves to), with
/// the URL's authority as `Host` and the admin token if given.
async fn get(server: SocketAddr, url: &str, token: Option<&str>) -> RawAnswer {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n", url.path());
    let mut visitor = RawVisitor::connect(server).await;
    visitor.send(request.as_bytes()).await.unwrap();
    visitor.answer(TIMEOUT).await.unwrap().unwrap_or_else(|| panic!("an answer for {url}"))
}

#[tokio::test]
async fn every_url_printed_at_start_answers_and_the_admin_api_works_by_ip() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let mut server = Started::spawn(&["--demo", "--data-dir", data_dir, "--tcp-ports", &free_port_range()], &[]);
    let banner = [
        server.stdout_line("terrierd listening").await,
        server.stdout_line("dashboard: ").await,
        server.stdout_line("demo device online").await,
    ];
    let urls: Vec<&str> =
        banner.iter().flat_map(|l| l.split_whitespace()).filter(|w| w.starts_with("http://")).collect();
    assert_eq!(urls.len(), 3, "{banner:?}");
    for url in &urls {
        let answer = get(server.addr, url, None).await;
        assert!(matches!(answer.status, 200 | 401), "{url} answers {}: {}", answer.status, answer.text());
    }

    // The listener's own address is the server: its front page, and the
    // admin API with the token.
    let by_ip = format!("http://{}", server.addr);
    let front = get(server.addr, &format!("{by_ip}/"), None).await;
    assert_eq!(front.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(front.text().contains("href=\"/dashboard\""), "links the dashboard: {}", front.text());
    assert!(!front.text().contains("online"), "no fleet counts for strangers: {}", front.text());
    let token = banner[1].split("admin token: ").nth(1).unwrap().trim_end_matches(')');
    assert_eq!(get(server.addr, &format!("{by_ip}/api/v1/server"), Some(token)).await.status, 200);
    assert_eq!(get(server.addr, &format!("{by_ip}/api/v1/server"), None).await.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn listen_takes_a_bare_port_on_loopback() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let port = addr.port().to_string();
    let mut server = Started::spawn_on(addr, &port, &["--data-dir", data_dir, "--tcp-ports", &free_port_range()], &[]);
    server.stdout_line(&format!("terrierd listening on http://127.0.0.1:{port} ")).await;
    assert_eq!(get(addr, &format!("http://{addr}/"), None).await.status, 200);
    server.stop().await;

    let refused = Started::spawn_on(addr, "80800", &["--data-dir", data_dir], &[]);
    let (code, stdout, stderr) = refused.exited().await;
    assert_eq!(code, Some(2), "{stderr:?}");
    assert!(stdout.is_empty() && stderr.iter().any(|l| l.contains("expected HOST:PORT")), "{stderr:?}");
}

#[tokio::test]
async fn a_real_domain_bound_to_loopback_only_is_warned_about() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let args = ["--domain", "tunnel.example.com", "--data-dir", data_dir, "--tcp-ports", &free_port_range()];
    let mut server = Started::spawn(&args, &[]);
    server.stdout_line("terrierd listening").await;
    let (_, stderr) = server.stop().await;
    let warning = stderr.iter().find(|l| l.contains("bound to loopback")).expect("a warning");
    assert!(warning.contains("WARN") && warning.contains("tunnel.example.com") && warning.contains("--tcp-bind"));
}

#[tokio::test]
async fn a_listener_that_cannot_be_bound_fails_before_saying_listening() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    // The metrics listener is bound inside the server, after the store and
    // the admin token: its address is taken, so the start fails there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken.local_addr().unwrap().to_string();
    let args = ["--data-dir", data_dir, "--tcp-ports", &free_port_range(), "--metrics-listen", &metrics];
    let (code, stdout, stderr) = Started::spawn(&args, &[]).exited().await;
    assert_eq!(code, Some(1), "{stderr:?}");
    assert!(stdout.is_empty(), "nothing on stdout, no \"listening\": {stdout:?}");
    assert!(stderr.iter().any(|l| l.contains("metrics_listen")), "says why: {stderr:?}");
}
