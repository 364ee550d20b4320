//! Real pieces around terrierd for the agent's tests: a certificate
//! authority (rcgen), a TLS terminator with an optional token gate in front
//! of a terrierd plain port (until terrierd terminates TLS and checks tokens
//! itself), a Debian `tinyproxy` on loopback, and the agent as a process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};

/// Path of the binary under test.
pub const TERRIER: &str = env!("CARGO_BIN_EXE_terrier");
/// How long any one expected event line may take to appear.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct Pki {
    /// The CA certificate, PEM (what `--ca` is given).
    pub ca_pem: String,
    /// The server certificate.
    pub cert: CertificateDer<'static>,
    /// Its key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    /// A fresh CA named `ca_name` and a leaf for localhost/127.0.0.1 (a leaf, not
    /// a CA: rustls refuses a CA certificate as a server certificate).
    pub fn new(ca_name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA cert");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
        Self { ca_pem: ca.pem(), cert: leaf.der().clone(), key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()) }
    }

    /// Writes the CA certificate to `dir/name` and returns its path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem).expect("write CA");
        path
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .expect("server cert");
        Arc::new(config)
    }
}

/// What a [`Front`] saw: the request heads (request line + headers) in arrival order.
pub type Heads = Arc<Mutex<Vec<String>>>;

/// A front end for terrierd's plain port: optional TLS termination and an
/// optional token gate answering `401` with a plain-text reason, as terrierd
/// will. Everything it lets through is forwarded byte for byte.
pub struct Front {
    /// Where agents connect.
    pub addr: SocketAddr,
    /// Request heads seen, to check what the agent sent.
    pub heads: Heads,
}

impl Front {
    /// Starts a front forwarding to `target`; TLS with `pki`'s certificate if
    /// given; only requests carrying `Authorization: Bearer <token>` pass if
    /// `token` is given.
    pub async fn start(target: SocketAddr, pki: Option<&Pki>, token: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let addr = listener.local_addr().expect("addr");
        let heads: Heads = Arc::default();
        let acceptor = pki.map(|p| tokio_rustls::TlsAcceptor::from(p.server_config()));
        let gate = token.map(|t| format!("bearer {t}"));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, gate, seen) = (acceptor.clone(), gate.clone(), seen.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            // A refused handshake (the agent distrusts us) just ends here.
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve(tls, target, gate, seen).await;
                            }
                        }
                        None => serve(tcp, target, gate, seen).await,
                    }
                });
            }
        });
        Self { addr, heads }
    }

    /// The heads seen so far whose request line contains `path`.
    pub fn heads_for(&self, path: &str) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.lines().next().is_some_and(|l| l.contains(path)))
            .cloned()
            .collect()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    target: SocketAddr,
    gate: Option<String>,
    seen: Heads,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    seen.lock().unwrap().push(text.clone());
    if let Some(expected) = gate {
        let authorized = text.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("authorization") && v.trim().eq_ignore_ascii_case(&expected)
            })
        });
        if !authorized {
            let reason = "unknown or revoked token\n";
            let answer = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}",
                reason.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else { return };
    if upstream.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Debian's `tinyproxy` on a loopback port, killed on drop.
pub struct Tinyproxy {
    /// The proxy URL without credentials, e.g. `http://127.0.0.1:34567`.
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

/// How a [`Tinyproxy`] is configured.
#[derive(Default)]
pub struct ProxyRules<'a> {
    /// `BasicAuth user password`.
    pub basic_auth: Option<(&'a str, &'a str)>,
    /// `ConnectPort` lines: only these target ports may be tunnelled (none: all).
    pub connect_ports: &'a [u16],
}

impl Tinyproxy {
    /// Starts tinyproxy with `rules` and waits until it accepts connections.
    pub async fn start(rules: ProxyRules<'_>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 200\nAllow 127.0.0.1\nLogLevel Info\nDisableViaHeader Yes\n"
        );
        if let Some((user, password)) = rules.basic_auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        for p in rules.connect_ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        let path = dir.path().join("tinyproxy.conf");
        std::fs::write(&path, conf).expect("write tinyproxy.conf");
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("tinyproxy is installed (scripts/test.sh installs it)");
        forward_lines("tinyproxy", child.stderr.take().expect("stderr"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "tinyproxy listens on {addr} within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { addr, child, _dir: dir }
    }

    /// The proxy URL, with `user:password@` if given.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("http://{u}:{p}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Copies a child's output lines to the test output, prefixed.
pub fn forward_lines(prefix: &'static str, pipe: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{prefix}: {line}");
        }
    });
}

/// The binary with nothing inherited from the environment that would change it.
pub fn terrier_command() -> Command {
    let mut command = terrier_testkit::process::clean_command(TERRIER, "TERRIER_");
    for var in
        ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"]
    {
        command.env_remove(var);
    }
    command
}

/// Runs the binary to completion with `args` (bounded), returning its output.
pub async fn run_to_exit(command: Command, args: &[&str]) -> std::process::Output {
    terrier_testkit::process::run_to_exit(command, args).await
}

/// A `terrier` child process printing JSON events, killed on drop.
pub struct AgentProcess {
    /// The process.
    pub child: Child,
    /// Its stdout, one event per line.
    events: Lines<BufReader<ChildStdout>>,
    /// Its stderr lines so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    /// Starts `terrier --output json` with `args`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_command(terrier_command(), args)
    }

    /// Starts `command` (a prepared `terrier`) with `args` and `--output json`.
    pub fn start_command(mut command: Command, args: &[&str]) -> Self {
        let mut child = command
            .args(args)
            .args(["--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn terrier");
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let (pipe, lines) = (child.stderr.take().expect("stderr"), stderr.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                println!("terrier stderr: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let events = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, events, stderr }
    }

    /// The next event line, parsed (bounded wait).
    pub async fn next_event(&mut self) -> Value {
        let line = tokio::time::timeout(EVENT_TIMEOUT, self.events.next_line())
            .await
            .unwrap_or_else(|_| panic!("terrier printed an event within {EVENT_TIMEOUT:?}"))
            .expect("read terrier stdout")
            .expect("terrier closed stdout before the next event");
        println!("terrier stdout: {line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout line is not one JSON object ({e}): {line:?}"))
    }

    /// Skips events until one named `event` (bounded wait), returning it.
    pub async fn wait_for(&mut self, event: &str, deadline: Duration) -> Value {
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

    /// Stderr lines so far containing `needle`.
    pub fn stderr_matching(&self, needle: &str) -> Vec<String> {
        self.stderr.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub async fn kill(mut self) {
        tokio::time::timeout(Duration::from_secs(5), self.child.kill())
            .await
            .expect("terrier dies within 5 s of SIGKILL")
            .expect("kill terrier");
    }
}

/// The subdomain of a `connected` event.
pub fn subdomain(connected: &Value) -> String {
    connected["subdomain"].as_str().unwrap_or_else(|| panic!("connected event has a subdomain: {connected}")).to_owned()
}
