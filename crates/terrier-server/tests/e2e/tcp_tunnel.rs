//! Raw TCP through the tunnel: a public port per device service, relayed
//! byte for byte to the device, with half-close, server-speaks-first
//! protocols, real clients (redis-cli, OpenSSH) and an offline device.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use terrier_agent::Connected;
use terrier_testkit::redis::free_port;
use terrier_testkit::upstream::{self, pattern};
use terrier_testkit::{eventually, init_logging, RedisServer, TestAgent, TestServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// Bound on one visitor step (connect, read, write) in these tests.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a real client process (redis-cli, ssh) run through the tunnel.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A server that tells agents their TCP ports are on 127.0.0.1, where the
/// test connects (the default `tcp_host` is the domain, `localhost`).
async fn start_server() -> TestServer {
    TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await
}

/// The public address the `connected` event gives for `service`.
fn public_addr(connected: &Connected, service: &str) -> SocketAddr {
    let port = connected
        .tcp
        .iter()
        .find(|p| p.service == service)
        .unwrap_or_else(|| panic!("no public port for {service} in {connected:?}"));
    assert_eq!(port.host, "127.0.0.1", "advertised TCP host");
    assert_ne!(port.port, 0, "advertised TCP port");
    SocketAddr::from(([127, 0, 0, 1], port.port))
}

async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(STEP_TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

async fn read_exactly(stream: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(STEP_TIMEOUT, stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("reading {what} timed out"))
        .unwrap_or_else(|e| panic!("reading {what}: {e}"));
    buf
}

async fn read_to_eof(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    timeout(STEP_TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("reading {what} to EOF timed out; got {} bytes", buf.len()))
        .unwrap_or_else(|e| panic!("reading {what} to EOF: {e}"));
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_through_public_port_carries_5_mb_both_ways_intact() {
    init_logging();
    let server = start_server().await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "echo-box", None, &[("echo", echo)]);
    let connected = agent.connected(1).await;
    assert_eq!(connected.tcp.len(), 1, "{connected:?}");
    assert_eq!(connected.tcp[0].target, echo.to_string());
    let public = public_addr(&connected, "echo");

    let mut stream = connect(public).await;
    stream.write_all(b"hello through the tunnel").await.unwrap();
    let back = read_exactly(&mut stream, 24, "small echo").await;
    assert_eq!(back, b"hello through the tunnel");

    // 5 MB up while 5 MB come back: the relay must not deadlock when both
    // directions are full at once, and must not reorder or drop a byte.
    const SIZE: u64 = 5 * 1024 * 1024;
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        let mut sent = 0u64;
        while sent < SIZE {
            let len = (64 * 1024).min(SIZE - sent);
            let chunk: Vec<u8> = (sent..sent + len).map(pattern).collect();
            writer.write_all(&chunk).await?;
            sent += len;
        }
        writer.shutdown().await?;
        Ok::<_, std::io::Error>(sent)
    };
    let read = async move {
        let mut offset = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(offset);
            }
            if let Some(i) = (0..n).find(|&i| buf[i] != pattern(offset + i as u64)) {
                panic!("echo corrupt at byte {}", offset + i as u64);
            }
            offset += n as u64;
        }
    };
    let (sent, received) = timeout(Duration::from_secs(60), async { tokio::try_join!(write, read) })
        .await
        .expect("5 MB both ways within 60 s")
        .expect("5 MB both ways");
    assert_eq!((sent, received), (SIZE, SIZE));
    server.stop().await;
}

/// A device service that answers only once the client has finished sending
/// (like `wc` or an HTTP/1.0 upload): it reads to EOF, then writes back the
/// byte count and the bytes, then closes.
async fn reply_after_eof() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                if stream.read_to_end(&mut all).await.is_err() {
                    return;
                }
                let _ = stream.write_all(format!("{}\n", all.len()).as_bytes()).await;
                let _ = stream.write_all(&all).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_visitor_still_reads_the_reply_then_eof() {
    init_logging();
    let server = start_server().await;
    let echo = upstream::tcp_echo().await;
    let after_eof = reply_after_eof().await;
    let mut agent = TestAgent::start(server.url(), "half-close", None, &[("echo", echo), ("after-eof", after_eof)]);
    let connected = agent.connected(1).await;

    // The echo half-closes after the visitor does: echoed bytes, then EOF.
    let mut stream = connect(public_addr(&connected, "echo")).await;
    stream.write_all(b"said my piece").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut stream, "echo after shutdown").await, b"said my piece");

    // The reply is only written after the device saw EOF, so the tunnel must
    // keep the other direction open past the visitor's FIN.
    let request: Vec<u8> = (0..200_000u64).map(pattern).collect();
    let mut stream = connect(public_addr(&connected, "after-eof")).await;
    stream.write_all(&request).await.unwrap();
    stream.shutdown().await.unwrap();
    let reply = read_to_eof(&mut stream, "reply written after EOF").await;
    let mut expected = format!("{}\n", request.len()).into_bytes();
    expected.extend_from_slice(&request);
    assert_eq!(reply.len(), expected.len(), "reply length");
    assert!(reply == expected, "reply after EOF differs");
    server.stop().await;
}

/// Runs a client process to completion under [`CLIENT_TIMEOUT`], killing it
/// if it hangs; returns its output.
async fn run_client(command: &mut Command, what: &str) -> std::process::Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} must be installed: {e}"));
    timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = run_client(
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args),
        "redis-cli",
    )
    .await;
    assert!(
        output.status.success(),
        "redis-cli {args:?} on port {port} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_talks_to_a_real_redis_server_through_the_tunnel() {
    init_logging();
    assert!(
        which("redis-server").is_some(),
        "redis-server is not installed: this test needs it (apt-get install redis-server)"
    );
    // Starts redis-server --port N --bind 127.0.0.1 --save '' --appendonly no,
    // killed on drop, and waits until it answers PING.
    let redis = RedisServer::start().await;
    let server = start_server().await;
    let device = SocketAddr::from(([127, 0, 0, 1], redis.port));
    let mut agent = TestAgent::start(server.url(), "cache-box", None, &[("redis", device)]);
    let public = public_addr(&agent.connected(1).await, "redis");
    assert_ne!(public.port(), redis.port);

    assert_eq!(redis_cli(public.port(), &["SET", "k", "v"]).await, "OK");
    assert_eq!(redis_cli(public.port(), &["GET", "k"]).await, "v");
    // The value really landed in the device's redis.
    assert_eq!(redis_cli(redis.port, &["GET", "k"]).await, "v");

    redis.kill().await;
    server.stop().await;
}

/// Finds `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()))
}

/// A throwaway OpenSSH server on a free loopback port with its own host key
/// and one authorised client key, killed on drop.
struct Sshd {
    /// Its port on 127.0.0.1.
    port: u16,
    /// The private key `root` may log in with.
    client_key: PathBuf,
    /// sshd's stderr log (`-e`), shown when something fails.
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// sshd refuses to re-exec itself unless started by absolute path.
const SSHD: &str = "/usr/sbin/sshd";

async fn keygen(path: &Path) {
    let output =
        run_client(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path), "ssh-keygen")
            .await;
    assert!(output.status.success(), "ssh-keygen {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
}

impl Sshd {
    async fn start() -> Self {
        assert!(Path::new(SSHD).exists(), "{SSHD} is not installed: this test needs openssh-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = dir.path().join("hostkey");
        let client_key = dir.path().join("client");
        keygen(&host_key).await;
        keygen(&client_key).await;
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
        let port = free_port().await;
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 Port {port}\n\
                 HostKey {}\n\
                 AuthorizedKeysFile {}\n\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .expect("sshd_config");
        // The privilege-separation directory sshd insists on.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let log = dir.path().join("sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("sshd log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {SSHD}: {e}"));
        let mut sshd = Self { port, client_key, log, child, _dir: dir };
        let log = sshd.log.clone();
        let child = &mut sshd.child;
        eventually(Duration::from_secs(10), "sshd to accept connections", || {
            let exited = child.try_wait().expect("sshd status");
            let log = log.clone();
            async move {
                if let Some(status) = exited {
                    panic!("sshd exited with {status}: {}", read_log(&log));
                }
                TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
            }
        })
        .await;
        sshd
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_session_runs_a_command_through_the_tunnel() {
    init_logging();
    let sshd = Sshd::start().await;
    let server = start_server().await;
    let device = SocketAddr::from(([127, 0, 0, 1], sshd.port));
    let mut agent = TestAgent::start(server.url(), "ssh-box", None, &[("ssh", device)]);
    let public = public_addr(&agent.connected(1).await, "ssh");

    let output = run_client(
        Command::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&sshd.client_key)
            .args(["-p", &public.port().to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                "echo",
                "tunnel-ok",
            ]),
        "ssh",
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end() == "tunnel-ok",
        "ssh through the tunnel: {}, stdout {stdout:?}, stderr {:?}\nsshd log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        sshd.log()
    );
    drop(sshd);
    server.stop().await;
}

/// One visitor to a server-speaks-first service: the whole banner must
/// arrive before the visitor sends anything, then one echo, then EOF.
async fn banner_visit(addr: SocketAddr, banner: &[u8]) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let mut got = vec![0u8; banner.len()];
    stream.read_exact(&mut got).await.map_err(|e| format!("banner: {e}"))?;
    if got != banner {
        return Err(format!("banner was {:?}", String::from_utf8_lossy(&got)));
    }
    stream.write_all(b"ping").await.map_err(|e| format!("write: {e}"))?;
    stream.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    expect_to_eof(&mut stream, b"ping").await
}

/// One visitor that writes its request the instant `connect()` returns,
/// before the tunnel stream to the device can possibly exist.
async fn eager_visit(addr: SocketAddr, i: usize) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let request = format!("request {i} sent before the device was reached\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    stream.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    expect_to_eof(&mut stream, request.as_bytes()).await
}

async fn expect_to_eof(stream: &mut (impl AsyncRead + Unpin), expected: &[u8]) -> Result<(), String> {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.map_err(|e| format!("read after {} bytes: {e}", rest.len()))?;
    if rest != expected {
        return Err(format!(
            "expected {:?}, got {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(&rest)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_fresh_connections_lose_no_first_bytes() {
    init_logging();
    const BANNER: &[u8] = b"HELLO\r\n";
    const PER_KIND: usize = 1_000;
    // Each relay ends a moment after its visitor leaves (the device side
    // closes in turn); on a loaded machine hundreds may still be winding
    // down. This test is about first bytes, not limits.max_streams_per_device
    // or max_streams_per_visitor (limits.rs pushes past those), so the
    // limits are out of the way.
    let server = TestServer::start(|c| {
        c.tcp_host = Some("127.0.0.1".into());
        c.limits.max_streams_per_device = 4 * PER_KIND;
        c.limits.max_streams_per_visitor = 4 * PER_KIND;
    })
    .await;
    let banner = upstream::banner_echo(BANNER).await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "first-bytes", None, &[("banner", banner), ("echo", echo)]);
    let connected = agent.connected(1).await;
    let (banner_addr, echo_addr) = (public_addr(&connected, "banner"), public_addr(&connected, "echo"));

    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    for i in 0..PER_KIND {
        let result = timeout(STEP_TIMEOUT, banner_visit(banner_addr, BANNER))
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {STEP_TIMEOUT:?}")));
        if let Err(e) = result {
            failures.push(format!("banner #{i}: {e}"));
        }
    }
    let banner_elapsed = started.elapsed();
    for i in 0..PER_KIND {
        let result = timeout(STEP_TIMEOUT, eager_visit(echo_addr, i))
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {STEP_TIMEOUT:?}")));
        if let Err(e) = result {
            failures.push(format!("eager #{i}: {e}"));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{} connections: {} failures in {elapsed:?} (server speaks first: {banner_elapsed:?}, \
         visitor speaks first: {:?})",
        2 * PER_KIND,
        failures.len(),
        elapsed - banner_elapsed
    );
    assert!(
        failures.is_empty(),
        "{} of {} connections failed; first ones: {:#?}",
        failures.len(),
        2 * PER_KIND,
        &failures[..failures.len().min(10)]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_of_offline_device_is_closed_and_port_works_again_after_reconnect() {
    init_logging();
    let server = start_server().await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "flaky-box", None, &[("echo", echo)]);
    let public = public_addr(&agent.connected(1).await, "echo");
    let mut stream = connect(public).await;
    stream.write_all(b"before").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 6, "echo before outage").await, b"before");
    drop(stream);

    agent.stop().await.expect("agent stops cleanly");

    // The lease keeps the port bound during the grace period, so the
    // visitor connects, but with nobody to relay to it is closed promptly
    // rather than left hanging.
    let mut stream = connect(public).await;
    let _ = stream.write_all(b"anyone there?").await;
    let mut buf = [0u8; 64];
    match timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("offline device answered {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => panic!("visitor of an offline device still open after 3 s"),
    }

    let mut agent = TestAgent::start(server.url(), "flaky-box", None, &[("echo", echo)]);
    let again = public_addr(&agent.connected(1).await, "echo");
    assert_eq!(again, public, "the device keeps its port across a reconnect");
    // Connected means the server has the new session, so the very first
    // visitor must be relayed.
    let mut stream = connect(public).await;
    stream.write_all(b"after").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 5, "echo after reconnect").await, b"after");
    // An open visitor's relay would hold the server's stop for the whole
    // drain timeout.
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn stream_still_open_at_shutdown_is_cut_after_the_drain_timeout() {
    init_logging();
    let server = TestServer::start(|c| {
        c.tcp_host = Some("127.0.0.1".into());
        c.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let echo = upstream::tcp_echo().await;
    let mut agent = TestAgent::start(server.url(), "lingering", None, &[("echo", echo)]);
    let connected = agent.connected(1).await;
    let mut visitor = connect(public_addr(&connected, "echo")).await;
    visitor.write_all(b"still here").await.unwrap();
    assert_eq!(read_exactly(&mut visitor, 10, "echo before shutdown").await, b"still here");

    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3), "stop took {:?}", started.elapsed());
    // The relay is gone: the visitor's connection ends instead of lingering.
    let mut buf = [0u8; 16];
    let ended = timeout(Duration::from_secs(3), visitor.read(&mut buf)).await.expect("visitor sees the end");
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
}
