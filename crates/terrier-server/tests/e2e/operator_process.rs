//! The operator's side of `terrierd` as a real process: `SIGHUP` reloads the
//! admin token, the page templates, certificates and the live keys of the
//! config file (limits, access rules) while a tunnel stays up; `--demo`
//! prints the dashboard and its token; `completions` and `man` print what
//! packagers install; `TERRIERD__*` and `--set` reach any config key.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use terrier_agent::Event;
use terrier_testkit::admin::AdminClient;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const TERRIERD: &str = env!("CARGO_BIN_EXE_terrierd");
const TIMEOUT: Duration = Duration::from_secs(10);

/// A terrierd child process (killed on drop) and its output lines: the
/// banner from stdout and the log lines from stderr, as they come.
struct Process {
    child: Child,
    addr: SocketAddr,
    output: mpsc::UnboundedReceiver<String>,
}

impl Process {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut command = terrier_testkit::process::clean_command(TERRIERD, "TERRIERD_");
        command.arg("--listen").arg(addr.to_string()).args(args).envs(env.iter().copied());
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn terrierd");
        let (tx, output) = mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx_err = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("terrierd stdout: {line}");
                let _ = tx.send(line);
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("terrierd stderr: {line}");
                let _ = tx_err.send(line);
            }
        });
        let mut process = Self { child, addr, output };
        let until = tokio::time::Instant::now() + TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("terrierd exited during startup: {status}");
            }
            assert!(tokio::time::Instant::now() < until, "terrierd accepts connections within {TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process
    }

    async fn line_containing(&mut self, needle: &str) -> String {
        tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = self.output.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("output closed before {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("terrierd printed {needle:?}"))
    }

    async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status().await.unwrap();
        assert!(status.success());
    }

    async fn stop(mut self) {
        self.signal("TERM").await;
        let status = tokio::time::timeout(TIMEOUT, self.child.wait()).await.expect("exits").unwrap();
        assert_eq!(status.code(), Some(0));
    }
}

fn free_port_range() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("{port}-{port}")
}

#[tokio::test]
async fn sighup_reloads_admin_token_and_pages_while_the_tunnel_stays_up() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    let pages = dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    std::fs::write(&token_file, "first-admin-token-0123456789\n").unwrap();
    std::fs::write(pages.join("404.html"), "<h1>old page {{status}}</h1>").unwrap();
    let data = dir.path().join("data");
    let server = Process::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--pages-dir",
            pages.to_str().unwrap(),
            "--tcp-ports",
            &free_port_range(),
        ],
        &[],
    )
    .await;
    let url = url::Url::parse(&format!("http://{}", server.addr)).unwrap();
    let (mut agent, host) = TestAgent::web_device(url, "stays-up").await;
    let first_session = agent.connected(1).await.session;
    let old = AdminClient::new(server.addr, Some("first-admin-token-0123456789".into()));
    let new = AdminClient::new(server.addr, Some("second-admin-token-9876543210".into()));
    assert_eq!(old.get("/api/v1/server").await.status, 200);
    assert_eq!(new.get("/api/v1/server").await.status, 401);
    let visitor = Visitor::new(server.addr);
    assert!(visitor.get(&device_host("nosuchdevice"), "/").await.body.contains("old page 404"));

    // Rotate the token and replace the page, then SIGHUP.
    std::fs::write(&token_file, "second-admin-token-9876543210\n").unwrap();
    std::fs::write(pages.join("404.html"), "<h1>new page {{status}}</h1>").unwrap();
    server.signal("HUP").await;
    eventually(TIMEOUT, "the new admin token to work", || async {
        (new.get("/api/v1/server").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(old.get("/api/v1/server").await.status, 401, "the old token stops working");
    assert!(visitor.get(&device_host("nosuchdevice"), "/").await.body.contains("new page 404"));

    // The tunnel never dropped: same session, no disconnect, still serving.
    assert_eq!(visitor.get(&host, "/hello").await.status, 200);
    let device = new.get("/api/v1/devices/stays-up").await;
    assert_eq!(device.json["session"], first_session.as_str());
    assert!(!dropped_once_connected(&agent.events()), "{:?}", agent.events());

    // A bad token file keeps the current token.
    std::fs::write(&token_file, "short\n").unwrap();
    server.signal("HUP").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(new.get("/api/v1/server").await.status, 200);

    agent.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn demo_prints_the_dashboard_and_its_token_and_overrides_reach_any_key() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Process::start(
        &[
            "--demo",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--tcp-ports",
            &free_port_range(),
            "--set",
            "admin.request_log=7",
        ],
        &[("TERRIERD__LIMITS__MAX_PENDING_STREAMS", "9")],
    )
    .await;
    let line = server.line_containing("dashboard: ").await;
    assert!(line.contains(&format!("http://localhost:{}/dashboard", server.addr.port())), "{line}");
    let token = line.split("admin token: ").nth(1).expect("--demo prints the token").trim_end_matches(')').to_owned();
    let admin = AdminClient::new(server.addr, Some(token));
    let info = admin.get("/api/v1/server").await;
    assert_eq!(info.status, 200, "the printed token works");
    assert_eq!(info.json["request_log"], 7, "--set reached admin.request_log");
    server.stop().await;

    // Without --demo, only the file is named: the token is never logged.
    let dir = tempfile::tempdir().unwrap();
    let mut quiet = Process::start(&["--data-dir", dir.path().to_str().unwrap()], &[]).await;
    let line = quiet.line_containing("dashboard: ").await;
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert!(line.contains("admin.token") && !line.contains(token.trim()), "{line}");
    quiet.stop().await;
}

#[tokio::test]
async fn bad_override_is_a_clear_error() {
    let output = terrier_testkit::process::run_to_exit(
        terrier_testkit::process::clean_command(TERRIERD, "TERRIERD_"),
        &["--set", "limits.max_pending_streams=lots"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("limits.max_pending_streams"), "{stderr}");
}

#[tokio::test]
async fn completions_and_man_page_are_generated() {
    for (args, needle) in [
        (&["completions", "bash"][..], "_terrierd()"),
        (&["completions", "zsh"][..], "#compdef terrierd"),
        (&["completions", "fish"][..], "complete -c terrierd"),
        (&["man"][..], ".TH terrierd 1"),
    ] {
        let output =
            terrier_testkit::process::run_to_exit(terrier_testkit::process::clean_command(TERRIERD, "TERRIERD_"), args)
                .await;
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(needle), "{args:?} output lacks {needle:?}");
        assert!(text.contains("metrics-listen") || text.contains("metrics\\-listen"), "{args:?} knows every flag");
    }
}

#[tokio::test]
async fn systemd_unit_verifies_with_the_real_binary() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not installed; unit not verified");
        return;
    };
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/terrierd.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terrierd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/terrierd", TERRIERD).replace(" man:terrierd(1)", "")).unwrap();
    let output = Command::new(analyze).arg("verify").arg(&path).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(program)).find(|p| p.is_file()))
        .ok_or(())
}

/// Writes a certificate for `localhost` signed by a fresh CA into
/// `cert`/`key`; returns the CA's PEM.
fn issue_localhost(cert: &std::path::Path, key: &std::path::Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(cert, leaf.pem()).unwrap();
    std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    ca_pem
}

/// Does a TLS handshake for `localhost` on `port` verify against `ca_pem`?
async fn verifies(port: u16, ca_pem: &str) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    terrier_testkit::tls::connector_trusting(ca_pem).connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn sighup_reloads_renewed_certificate_files() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first_ca = issue_localhost(&cert, &key);
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let data = dir.path().join("data");
    let server = Process::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-listen",
            &tls_listen,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    eventually(TIMEOUT, "the first certificate is served", || async {
        verifies(tls_port, &first_ca).await.then_some(())
    })
    .await;

    // Renewed in place (as certbot does), then SIGHUP: the new one is served.
    let second_ca = issue_localhost(&cert, &key);
    assert!(!verifies(tls_port, &second_ca).await, "nothing changes before the signal");
    server.signal("HUP").await;
    eventually(TIMEOUT, "the renewed certificate is served", || async {
        verifies(tls_port, &second_ca).await.then_some(())
    })
    .await;
    assert!(!verifies(tls_port, &first_ca).await, "the old certificate is gone");

    // A broken file on reload keeps the current certificate.
    std::fs::write(&key, "not a key").unwrap();
    server.signal("HUP").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(verifies(tls_port, &second_ca).await, "a bad reload keeps serving the last good certificate");
}

/// Status of a `GET /hello` for `host` whose request head carries an extra
/// header of `bytes` bytes, on a fresh connection (so it meets the limits in
/// force now); `None` when the server closed without a response.
async fn status_with_head_of(server: SocketAddr, host: &str, bytes: usize) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(server).await.expect("connect");
    let request =
        format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(bytes));
    // The server may close before taking every byte of a head it refuses.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).split_whitespace().nth(1).and_then(|code| code.parse().ok())
}

/// A `terrierd` started on a config file the test rewrites between
/// `SIGHUP`s, with its data directory beside it.
struct Configured {
    /// Holds the files until the test ends.
    _dir: tempfile::TempDir,
    /// The config file.
    config: std::path::PathBuf,
    /// The data directory (admin token, leases).
    data: std::path::PathBuf,
    /// The running server.
    server: Process,
}

impl Configured {
    /// Writes `contents` to the config file and starts `terrierd` on it,
    /// with `extra` arguments and `env`.
    async fn start(contents: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("terrierd.toml");
        std::fs::write(&config, contents).unwrap();
        let data = dir.path().join("data");
        let mut args = vec!["--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        let server = Process::start(&args, env).await;
        Self { _dir: dir, config, data, server }
    }
}

/// Did the agent lose its tunnel after it first connected? (An attempt
/// refused while `terrierd` was still starting is not a drop.)
fn dropped_once_connected(events: &[Event]) -> bool {
    events.iter().skip_while(|e| !matches!(e, Event::Connected(_))).any(|e| matches!(e, Event::Disconnected { .. }))
}

/// A head past `limits.max_header_bytes` gets 431, or the connection closes
/// (when the server closes with the rest of the head unread, the kernel may
/// reset the connection before the 431 is read).
fn refused(status: Option<u16>) -> bool {
    matches!(status, None | Some(431))
}

#[tokio::test]
async fn sighup_applies_new_limits_and_access_rules_while_the_tunnel_stays_up() {
    init_logging();
    let ports = free_port_range();
    let Configured { _dir, config, data, mut server } =
        Configured::start("[limits]\nmax_header_bytes = 65536\n", &["--tcp-ports", &ports], &[]).await;
    let url = url::Url::parse(&format!("http://{}", server.addr)).unwrap();
    let (mut agent, host) = TestAgent::web_device(url, "stays-up").await;
    let first_session = agent.connected(1).await.session;
    let admin = AdminClient::from_data_dir(server.addr, &data).await;
    let visitor = Visitor::new(server.addr);
    assert_eq!(status_with_head_of(server.addr, &host, 16 * 1024).await, Some(200), "16 KiB heads pass at 64 KiB");

    // Lower the limit: new visitors meet it at once.
    std::fs::write(&config, "[limits]\nmax_header_bytes = 8192\n").unwrap();
    server.signal("HUP").await;
    let applied = server.line_containing("reload: configuration applied").await;
    assert!(applied.contains("limits.max_header_bytes"), "the log names what changed: {applied}");
    let status = status_with_head_of(server.addr, &host, 16 * 1024).await;
    assert!(refused(status), "16 KiB heads are refused at 8 KiB, got {status:?}");
    assert_eq!(status_with_head_of(server.addr, &host, 1024).await, Some(200), "small heads still pass");

    // A file that does not parse, then one that does not validate: the last
    // good limit stays (the default, 64 KiB, would let 16 KiB through).
    for broken in ["[limits\nmax_header_bytes = 65536\n", "[limits]\nmax_header_bytes = 100\n"] {
        std::fs::write(&config, broken).unwrap();
        server.signal("HUP").await;
        let kept = server.line_containing("reload: configuration kept").await;
        assert!(broken.contains('[') && !kept.is_empty());
        let status = status_with_head_of(server.addr, &host, 16 * 1024).await;
        assert!(refused(status), "a broken file keeps the 8 KiB limit, got {status:?}");
        assert_eq!(visitor.get(&host, "/hello").await.status, 200);
    }

    // Keys read only at start are named in a warning and left alone; an
    // access rule for the device applies to its next visitor.
    std::fs::write(
        &config,
        "redis_prefix = \"other:\"\n[limits]\nmax_header_bytes = 8192\nstore_timeout = \"5s\"\n\
         [access.\"stays-up\"]\nallow_ips = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    server.signal("HUP").await;
    server.line_containing("reload: limits.store_timeout changed but is read only at start").await;
    server.line_containing("reload: redis_prefix changed but is read only at start").await;
    server.line_containing("reload: configuration applied").await;
    assert_eq!(Visitor::new(server.addr).get(&host, "/hello").await.status, 403, "loopback is not 10/8");

    // The tunnel never dropped: same session, no disconnect.
    let device = admin.get("/api/v1/devices/stays-up").await;
    assert_eq!(device.json["session"], first_session.as_str());
    assert!(!dropped_once_connected(&agent.events()), "{:?}", agent.events());

    // Removing the rule opens the device again, through the same tunnel.
    std::fs::write(&config, "[limits]\nmax_header_bytes = 8192\n").unwrap();
    server.signal("HUP").await;
    server.line_containing("reload: configuration applied").await;
    assert_eq!(Visitor::new(server.addr).get(&host, "/hello").await.status, 200);
    assert_eq!(admin.get("/api/v1/devices/stays-up").await.json["session"], first_session.as_str());

    agent.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn env_and_set_overrides_keep_winning_after_sighup() {
    init_logging();
    let Configured { _dir, config, data, mut server } = Configured::start(
        "grace_period = \"1m\"\n[limits]\nmax_header_bytes = 65536\n",
        &["--set", "limits.max_header_bytes=8192"],
        &[("TERRIERD__GRACE_PERIOD", "7m")],
    )
    .await;
    let admin = AdminClient::from_data_dir(server.addr, &data).await;
    let check = |info: serde_json::Value| assert_eq!(info["grace_period_secs"], 420, "TERRIERD__ wins: {info}");
    check(admin.get("/api/v1/server").await.json);
    let status = status_with_head_of(server.addr, "localhost", 16 * 1024).await;
    assert!(refused(status), "--set wins: 8 KiB, got {status:?}");

    // The file changes both keys and one more; only the one more applies.
    std::fs::write(&config, "grace_period = \"2m\"\n[limits]\nmax_header_bytes = 131072\nmax_pending_streams = 5\n")
        .unwrap();
    server.signal("HUP").await;
    let applied = server.line_containing("reload: configuration applied").await;
    assert!(applied.contains("limits.max_pending_streams"), "{applied}");
    assert!(!applied.contains("grace_period") && !applied.contains("max_header_bytes"), "{applied}");
    check(admin.get("/api/v1/server").await.json);
    let status = status_with_head_of(server.addr, "localhost", 16 * 1024).await;
    assert!(refused(status), "--set still wins after the reload, got {status:?}");
    server.stop().await;
}
