//! A real network black hole between agent and server: the agent process
//! runs in its own network namespace behind a veth pair, and the link is
//! taken down under it — no FIN, no RST, the server's packets just vanish.
//! Both ends must notice within the heartbeat window, the server must drop
//! the dead control socket *and* the idle, now half-open data socket of a
//! visitor stream (TCP keepalive), and the agent must come back with the
//! same public port when the link returns.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2 (`ip`, `ss`); when a namespace
//! cannot be created the test says so and passes without running.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use support::AgentProcess;
use terrier_testkit::admin::AdminClient;
use terrier_testkit::{eventually, init_logging, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

/// A network namespace joined to this one by a veth pair: the host end
/// has `host_ip`, the namespace end `ns_ip` (a /30 of its own). Removed on drop.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// Creates the namespace and the link; `None` (with the reason printed)
    /// when this machine or user cannot.
    fn create() -> Option<Self> {
        let id = std::process::id();
        let name = format!("terrier-ho-{id}");
        if let Err(e) = ip(&["netns", "add", &name]) {
            eprintln!("SKIPPED: cannot create a network namespace (needs root and iproute2): {e}");
            return None;
        }
        // A /30 per process, so concurrent runs do not collide.
        let octet = (id % 250) as u8 + 1;
        let net = Self {
            host_if: format!("tho{}", id % 100_000),
            ns_if: format!("tno{}", id % 100_000),
            host_ip: Ipv4Addr::new(10, 231, octet, 1),
            ns_ip: Ipv4Addr::new(10, 231, octet, 2),
            name,
        };
        let (host_cidr, ns_cidr) = (format!("{}/30", net.host_ip), format!("{}/30", net.ns_ip));
        let steps: [&[&str]; 7] = [
            &["link", "add", &net.host_if, "type", "veth", "peer", "name", &net.ns_if],
            &["link", "set", &net.ns_if, "netns", &net.name],
            &["addr", "add", &host_cidr, "dev", &net.host_if],
            &["link", "set", &net.host_if, "up"],
            &["-n", &net.name, "addr", "add", &ns_cidr, "dev", &net.ns_if],
            &["-n", &net.name, "link", "set", &net.ns_if, "up"],
            &["-n", &net.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            // The namespace exists, so we have the rights: a failure now is a real error.
            ip(step).unwrap_or_else(|e| panic!("setting up the veth link: {e}"));
        }
        Some(net)
    }

    /// Takes the namespace's end of the link down (a black hole: the host's
    /// packets are dropped without a word) or back up.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.name, "link", "set", &self.ns_if, state]).expect("link up/down");
    }

    /// TCP connections between `server` (on the host) and the namespace
    /// that the host holds established.
    fn established_to_ns(&self, server: SocketAddr) -> usize {
        let out = Command::new("ss")
            .args(["-Htn", "state", "established", "src", &server.to_string(), "dst", &self.ns_ip.to_string()])
            .output()
            .expect("ss (iproute2)");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// A TCP echo service on `ip` (reachable from the namespace over the veth).
async fn echo_on(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn echo_once(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).await.expect("visitor write");
    let mut back = vec![0u8; text.len()];
    timeout(Duration::from_secs(5), stream.read_exact(&mut back)).await.expect("echo in time").expect("echo");
    assert_eq!(back, text);
}

#[tokio::test]
async fn black_hole_on_a_real_link_is_noticed_and_half_open_sockets_are_dropped() {
    init_logging();
    let Some(net) = Netns::create() else { return };
    let data = tempfile::tempdir().expect("temp dir");
    // Heartbeat 1 s (test config): 3 s of silence is death. Keepalive 2 s:
    // a silent peer's socket is dropped after about 4 s.
    let listen = SocketAddr::new(IpAddr::V4(net.host_ip), 0);
    let server = TestServer::start_on(listen, data.path(), |c| c.limits.tcp_keepalive = Duration::from_secs(2)).await;
    let echo = echo_on(net.host_ip).await;

    let mut command = terrier_testkit::process::clean_command("ip", "TERRIER_");
    command.args(["netns", "exec", &net.name, support::TERRIER]);
    let server_url = format!("http://{}", server.addr);
    let service = format!("echo={echo}");
    let mut agent = AgentProcess::start_command(
        command,
        &["--server", &server_url, "--name", "holed", "--tcp", &service, "--backoff-max", "2s"],
    );
    let connected = agent.wait_for("connected", Duration::from_secs(15)).await;
    let port = connected["tcp"][0]["port"].as_u64().expect("public port") as u16;
    let public = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // A visitor stream through the link, then left idle: its data socket
    // carries nothing when the link goes, so only keepalive can find it dead.
    let mut visitor = TcpStream::connect(public).await.expect("visitor connects");
    echo_once(&mut visitor, b"before the black hole").await;
    assert_eq!(net.established_to_ns(server.addr), 2, "the control socket and one data socket cross the link");

    net.link(false);
    let cut = Instant::now();
    let silent = agent.wait_for("disconnected", Duration::from_secs(10)).await;
    assert!(silent["reason"].as_str().is_some_and(|r| r.contains("silent")), "{silent}");
    let noticed = cut.elapsed();
    assert!(noticed < Duration::from_secs(6), "the agent noticed after {noticed:?} (3 heartbeats = 3 s)");

    let admin = AdminClient::from_data_dir(server.addr, data.path()).await;
    eventually(Duration::from_secs(8), "the server to drop the silent device", || {
        let admin = &admin;
        async move { (admin.get("/api/v1/server").await.json["devices_online"] == 0).then_some(()) }
    })
    .await;
    // The half-open data socket goes too, and the visitor's stream with it.
    let mut byte = [0u8; 1];
    let ended = timeout(Duration::from_secs(10), visitor.read(&mut byte)).await;
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "the visitor's stream over the dead link was not ended: {ended:?}"
    );
    eventually(Duration::from_secs(10), "no socket across the dead link left on the server", || {
        let (net, addr) = (&net, server.addr);
        async move { (net.established_to_ns(addr) == 0).then_some(()) }
    })
    .await;
    eprintln!("black hole: agent noticed after {noticed:?}; server clean after {:?}", cut.elapsed());

    net.link(true);
    let back = agent.wait_for("connected", Duration::from_secs(20)).await;
    assert_eq!(back["tcp"][0]["port"], connected["tcp"][0]["port"], "same public port after the black hole");
    let mut visitor = TcpStream::connect(public).await.expect("visitor connects again");
    echo_once(&mut visitor, b"after the black hole").await;
    agent.kill().await;
    server.stop().await;
}
