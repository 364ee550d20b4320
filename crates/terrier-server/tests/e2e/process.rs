//! `terrierd` as a real process: the things only a separate process shows —
//! its own memory use under large bodies, exit on SIGTERM, exit codes and
//! messages for `--help` and bad configuration, and `--demo` on stdout.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use http_body_util::BodyExt;
use terrier_agent::Event;
use terrier_testkit::admin::AdminClient;
use terrier_testkit::raw::FakeDevice;
use terrier_testkit::upstream;
use terrier_testkit::visitor::{self, device_host, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Path of the binary under test.
const TERRIERD: &str = env!("CARGO_BIN_EXE_terrierd");
/// How long a started terrierd may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long terrierd may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest server RSS growth accepted while 50 MB bodies stream through.
const MAX_RSS_GROWTH_BYTES: u64 = 20 * 1024 * 1024;

/// A terrierd child process, killed on drop.
struct Terrierd {
    /// The process.
    child: Child,
    /// Its HTTP listener.
    addr: SocketAddr,
    /// Lines it printed on stdout (the banner; its logs go to stderr).
    stdout: mpsc::UnboundedReceiver<String>,
    /// Keeps its data dir alive.
    _data: tempfile::TempDir,
}

impl Terrierd {
    /// Starts terrierd on a free port with a fresh data dir and `extra` flags,
    /// and waits until it accepts TCP connections.
    async fn start(extra: &[&str]) -> Self {
        Self::start_at(free_addr(), tempfile::tempdir().expect("temp dir"), extra).await
    }

    /// Starts terrierd on `addr` with `data` as its data dir (to restart one).
    async fn start_at(addr: SocketAddr, data: tempfile::TempDir, extra: &[&str]) -> Self {
        let mut child = terrierd_command()
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn terrierd");
        let (tx, stdout) = mpsc::unbounded_channel();
        forward_lines(child.stdout.take().expect("stdout"), "stdout", Some(tx));
        forward_lines(child.stderr.take().expect("stderr"), "stderr", None);
        let mut server = Self { child, addr, stdout, _data: data };
        let until = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("terrierd exited during startup: {status}");
            }
            assert!(tokio::time::Instant::now() < until, "terrierd accepts TCP on {addr} within {STARTUP_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// The URL agents use.
    /// kill -9: no shutdown at all. Returns what a restart needs.
    async fn kill_hard(mut self) -> (SocketAddr, tempfile::TempDir) {
        self.child.kill().await.expect("kill -9 terrierd");
        (self.addr, self._data)
    }

    fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("server url")
    }

    /// Its process id.
    fn pid(&self) -> u32 {
        self.child.id().expect("terrierd is running")
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.pid();
        let kill = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed: {kill}");
        tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("terrierd exits within {EXIT_TIMEOUT:?} of SIGTERM"))
            .expect("wait for terrierd")
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    /// Waits for the demo device's "online" line; returns its URL's authority.
    async fn demo_online(&mut self) -> String {
        let line = self.line_containing("demo device online", STARTUP_TIMEOUT).await;
        let prefix = "demo device online: open http://";
        let start = line.find(prefix).expect("the line names the URL") + prefix.len();
        line[start..].split_whitespace().next().expect("URL after 'open'").to_owned()
    }

    async fn line_containing(&mut self, needle: &str, deadline: Duration) -> String {
        let wait = async {
            while let Some(line) = self.stdout.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("terrierd closed stdout before printing {needle:?}");
        };
        tokio::time::timeout(deadline, wait)
            .await
            .unwrap_or_else(|_| panic!("terrierd printed {needle:?} within {deadline:?}"))
    }
}

/// The binary with nothing inherited from the environment that would change it.
fn terrierd_command() -> Command {
    terrier_testkit::process::clean_command(TERRIERD, "TERRIERD_")
}

/// Runs the binary to completion with `args` (bounded), returning its output.
async fn run_to_exit(args: &[&str]) -> std::process::Output {
    terrier_testkit::process::run_to_exit(terrierd_command(), args).await
}

/// Copies a child's output lines to the test output, and to `tx` if given.
fn forward_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    which: &'static str,
    tx: Option<mpsc::UnboundedSender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("terrierd {which}: {line}");
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

/// A loopback address that was free a moment ago (terrierd does not report
/// the port it bound for `:0`, so the test chooses one).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A one-port TCP range that was free a moment ago, as `P-P`.
fn free_port_range() -> String {
    let port = free_addr().port();
    format!("{port}-{port}")
}

/// Resident set size of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// Samples the RSS of `pid` every 5 ms until dropped; [`RssSampler::peak`]
/// is the largest seen.
struct RssSampler {
    /// The sampling task; it returns the peak when asked to stop.
    task: tokio::task::JoinHandle<u64>,
    /// Tells the task to stop.
    stop: tokio_util::sync::CancellationToken,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = rss_bytes(pid);
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => peak = peak.max(rss_bytes(pid)),
                }
            }
            peak.max(rss_bytes(pid))
        });
        Self { task, stop }
    }

    async fn peak(self) -> u64 {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("sampler stops").expect("sampler task")
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn empty_body() -> visitor::Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

#[tokio::test]
async fn server_memory_does_not_grow_with_body_size() {
    init_logging();
    const SIZE: u64 = 50 * 1024 * 1024;
    let server = Terrierd::start(&["--tcp-ports", &free_port_range(), "--log", "warn"]).await;
    let pid = server.pid();
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "rss-meter", Some(web), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    let visitor = Visitor::new(server.addr);

    // Warm-up: the first request allocates the proxy client, pools, pages.
    for _ in 0..3 {
        let page = visitor.get(&host, "/hello").await;
        assert_eq!(page.status, 200, "{page:?}");
    }
    let baseline = rss_bytes(pid);

    // Download: consumed frame by frame, never stored.
    let sampler = RssSampler::start(pid);
    let download = async {
        let response = visitor.send("GET", &host, &format!("/bytes/{SIZE}"), empty_body()).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("download frame").into_data() {
                received += data.len() as u64;
            }
        }
        received
    };
    let received = tokio::time::timeout(Duration::from_secs(120), download).await.expect("50 MB download within 120 s");
    assert_eq!(received, SIZE);
    let download_peak = sampler.peak().await;

    // Upload: generated as it is sent; the device counts and checks it.
    let sampler = RssSampler::start(pid);
    let upload = async {
        let stream = upstream::pattern_stream::<std::io::Error>(SIZE);
        let body = http_body_util::StreamBody::new(stream).boxed();
        visitor::read(visitor.send("POST", &host, "/count", body).await).await
    };
    let page = tokio::time::timeout(Duration::from_secs(120), upload).await.expect("50 MB upload within 120 s");
    assert_eq!((page.status, page.body.as_str()), (200, "52428800 ok"));
    let upload_peak = sampler.peak().await;
    let after = rss_bytes(pid);

    let peak = download_peak.max(upload_peak);
    let growth = peak.saturating_sub(baseline);
    println!(
        "terrierd RSS: baseline {:.1} MiB, download peak {:.1} MiB, upload peak {:.1} MiB, \
         after {:.1} MiB; peak growth {:.1} MiB for {} MiB bodies",
        mib(baseline),
        mib(download_peak),
        mib(upload_peak),
        mib(after),
        mib(growth),
        SIZE / (1024 * 1024)
    );
    assert!(
        growth < MAX_RSS_GROWTH_BYTES,
        "terrierd RSS grew by {:.1} MiB (baseline {:.1} MiB, peak {:.1} MiB) \
         while 50 MB bodies streamed through; bodies must not be buffered",
        mib(growth),
        mib(baseline),
        mib(peak)
    );

    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "terrierd exit status: {status}");
    agent.stop().await.expect("agent stops");
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    init_logging();
    let server = Terrierd::start(&["--tcp-ports", &free_port_range()]).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "sigterm-dev", Some(web), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    let page = Visitor::new(server.addr).get(&host, "/hello").await;
    assert_eq!(page.status, 200, "{page:?}");

    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "terrierd exit status: {status}");
    eventually(Duration::from_secs(5), "the agent to see Disconnected", || {
        let events = agent.events();
        async move { events.iter().any(|e| matches!(e, Event::Disconnected { .. })).then_some(()) }
    })
    .await;
    agent.stop().await.expect("agent stops");
}

#[tokio::test]
async fn help_explains_every_flag() {
    init_logging();
    let output = run_to_exit(&["--help"]).await;
    assert!(output.status.success(), "--help: {}", output.status);
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--listen", "--domain", "--tcp-ports", "--data-dir", "--grace", "--demo"] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}

#[tokio::test]
async fn bad_config_is_a_clear_error() {
    init_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().expect("utf-8 path");

    let output = run_to_exit(&["--tcp-ports", "30000-20000", "--data-dir", data_dir]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "reversed range accepted: {stderr}");
    assert!(
        stderr.contains("port range") && stderr.contains("30000-20000"),
        "the error names the port range: {stderr}"
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "domain = \"example.com\"\nlisten_adress = \"127.0.0.1:9\"\n").expect("write config");
    let output = run_to_exit(&["--config", config.to_str().expect("utf-8 path"), "--data-dir", data_dir]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "unknown key accepted: {stderr}");
    assert!(stderr.contains("listen_adress"), "the error names the unknown key: {stderr}");
    assert!(stderr.contains("bad.toml, line 2:"), "the error names the file and line: {stderr}");
    assert!(stderr.contains("did you mean `listen`?"), "the error suggests the nearest key: {stderr}");
    assert!(!Path::new(data_dir).exists(), "a bad configuration must fail before anything is created");
}

#[tokio::test]
async fn demo_mode_serves_a_page_and_comes_back_after_a_disconnect() {
    init_logging();
    let mut server = Terrierd::start(&["--demo", "--tcp-ports", &free_port_range()]).await;
    let authority = server.demo_online().await;
    let port_suffix = format!(".localhost:{}", server.addr.port());
    assert!(authority.ends_with(&port_suffix), "demo URL {authority:?} is on this server's port");

    let visitor = Visitor::new(server.addr);
    for path in ["/", "/status"] {
        let page = visitor.get(&authority, path).await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains("Hello from a device behind terrier"), "{}", page.body);
        assert!(page.body.contains(&format!("host: {authority}")), "the device sees the public host: {}", page.body);
        assert!(page.body.contains(&format!("path: {path}<")), "{}", page.body);
    }

    // The demo device reconnects like an agent: same URL, page served again.
    let admin = AdminClient::from_data_dir(server.addr, server._data.path()).await;
    let reply = admin.call("POST", "/api/v1/devices/demo/disconnect", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(server.demo_online().await, authority, "the demo keeps its subdomain");
    let page = visitor.get(&authority, "/").await;
    assert_eq!(page.status, 200, "{page:?}");

    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "terrierd exit status: {status}");
}

#[tokio::test]
async fn killed_server_mid_transfer_gives_a_reset_not_corrupt_bytes_and_the_agent_returns() {
    init_logging();
    let server = Terrierd::start(&["--tcp-ports", &free_port_range()]).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "survivor", Some(web), &[]);
    let first = agent.connected(1).await;
    let host = visitor::device_host(&first.subdomain);
    // A 200 MB download, cut by kill -9 once some of it arrived.
    let response = Visitor::new(server.addr).send("GET", &host, "/bytes/209715200", empty_body()).await;
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut server = Some(server);
    let mut restart = None;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Err(_) => panic!("the download neither continued nor ended"),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(e),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    let offset = received;
                    assert!(
                        data.iter().enumerate().all(|(i, b)| *b == upstream::pattern(offset + i as u64)),
                        "corrupt at {offset}"
                    );
                    received += data.len() as u64;
                }
                if received > 5 * 1024 * 1024 {
                    if let Some(server) = server.take() {
                        restart = Some(server.kill_hard().await);
                    }
                }
            }
        }
    };
    assert!(ended.is_err(), "a cut transfer must end in an error, not a clean end ({received} bytes)");
    assert!(received < 209_715_200);
    let (addr, data) = restart.expect("server was killed");
    let server = Terrierd::start_at(addr, data, &["--tcp-ports", &free_port_range()]).await;
    let second = agent.connected(2).await;
    assert_eq!(second.subdomain, first.subdomain);
    let page = Visitor::new(server.addr).get(&host, "/hello").await;
    assert_eq!(page.status, 200);
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn visitor_that_never_reads_costs_the_server_bounded_memory() {
    use tokio::io::AsyncReadExt;
    init_logging();
    let server = Terrierd::start(&["--tcp-ports", &free_port_range()]).await;
    let hose = upstream::firehose(500 * 1024 * 1024).await;
    let web = upstream::http_service().await;
    let mut agent = TestAgent::start(server.url(), "hose", Some(web), &[("hose", hose)]);
    let connected = agent.connected(1).await;
    let public = SocketAddr::from(([127, 0, 0, 1], connected.tcp[0].port));
    let before = rss_bytes(server.pid());
    let sampler = RssSampler::start(server.pid());
    // The visitor connects and reads nothing while the device pushes 500 MB.
    let mut stalled = tokio::net::TcpStream::connect(public).await.expect("connect to the public port");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Others are unaffected meanwhile.
    let page = Visitor::new(server.addr).get(&device_host(&connected.subdomain), "/hello").await;
    assert_eq!(page.status, 200);
    let peak = sampler.peak().await;
    eprintln!("server RSS {:.1} MiB before, peak {:.1} MiB with a stalled visitor", mib(before), mib(peak));
    assert!(peak.saturating_sub(before) < MAX_RSS_GROWTH_BYTES, "back-pressure must bound server memory");
    // The bytes that were held back are intact when the visitor reads again.
    let mut buf = vec![0u8; 1024 * 1024];
    stalled.read_exact(&mut buf).await.expect("read after stalling");
    assert!(buf.iter().enumerate().all(|(i, b)| *b == upstream::pattern(i as u64)));
    drop(stalled);
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn token_cli_mints_lists_and_revokes_while_the_server_runs() {
    init_logging();
    let server = Terrierd::start(&["--auth", "token"]).await;
    let data = server._data.path().to_str().expect("utf-8 path").to_owned();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--data-dir", &data]);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_to_exit(&refs).await;
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (status, stdout, stderr) = run(cli(&["token", "create", "--name", "thermo-42", "--note", "kitchen"])).await;
    assert!(status.success(), "{stderr}");
    let token = stdout.trim().to_owned();
    assert!(
        token.starts_with("terrier_") && !token.contains(char::is_whitespace),
        "stdout is just the token: {stdout:?}"
    );
    assert!(stderr.contains("shown only this once"), "{stderr}");
    let id = token.split('_').nth(1).expect("id part").to_owned();

    let mut device = FakeDevice::connect_with(server.addr, "thermo-42", Some(&token)).await.expect("admitted");
    let (status, listing, _) = run(cli(&["token", "list"])).await;
    assert!(status.success());
    assert!(listing.contains(&id) && listing.contains("name thermo-42") && listing.contains("kitchen"), "{listing}");
    assert!(!listing.contains(&token), "the list never shows a token");
    let lines: Vec<&str> = listing.lines().collect();
    let column = lines[0].find("CREATED (UTC)").expect("a header");
    assert!(
        lines[1..].iter().all(|l| l.get(column..).is_some_and(|t| t.starts_with("20"))),
        "dates line up: {listing}"
    );
    assert!(!listing.contains("GMT"), "{listing}");
    let file = std::fs::read_to_string(server._data.path().join("tokens.json")).expect("token file");
    assert!(!file.contains(token.rsplit('_').next().expect("secret")), "only the hash is stored");

    let (status, _, stderr) = run(cli(&["token", "revoke", &id])).await;
    assert!(status.success(), "{stderr}");
    let code = device.closed_within(Duration::from_secs(3)).await.expect("disconnected at once");
    assert_eq!(code, Some(terrier_proto::handshake::close::REVOKED));

    let (status, _, stderr) = run(cli(&["token", "revoke", &id])).await;
    assert!(!status.success() && stderr.contains("no token with id"), "{stderr}");
    let (status, _, stderr) = run(cli(&["token", "create", "--name", "Not A Name"])).await;
    assert!(!status.success() && stderr.contains("bad device name"), "{stderr}");
    let (status, _, stderr) = run(cli(&["token", "create"])).await;
    assert!(!status.success() && stderr.contains("--name"), "{stderr}");
}
