//! terrier beside the two Rust tunnels issue 8 compares it with, rathole
//! and bore, on the same nginx and iperf3 and in the same run: the issue's
//! goals quote their ratios from another machine, and ratios to direct move
//! with the machine (direct loopback traffic got 3× faster here between two
//! sessions, the tunnels' far less). Measured side by side, "beats rathole"
//! is a fact of one run, not a comparison across machines.
//!
//! Both are plain TCP tunnels (one public port per service, no `Host`
//! routing, no WebSocket), each started with its documented minimal set-up
//! on 127.0.0.1: rathole with its default TCP transport (a control channel
//! per service, a new data connection per visitor), bore with a
//! `bore local` per service. They are built from crates.io into
//! `bench/rivals/bin` by `bench/install-rivals.sh`, or found on `PATH`.
//! The relay floors ([`crate::floor`], plain and pooled) run beside them:
//! the ceilings every tunnel of this shape is under, in the same run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::Command;
use tokio::time::{sleep, Instant};

use crate::lab::{Endpoint, Lab, Route};
use crate::procs::{self, Proc, READY_TIMEOUT};

/// One rival tunnel, running: its server, its client (the one serving
/// nginx; bore runs one client per service), and its public ports.
#[derive(Debug)]
pub struct Rival {
    /// "rathole", "bore", [`FLOOR`] or [`FLOOR_POOLED`].
    pub name: &'static str,
    /// Its server process.
    pub server: Proc,
    /// Its client process for nginx (the one whose memory is reported).
    pub client: Proc,
    /// Other client processes (bore's client for iperf3).
    others: Vec<Proc>,
    /// Public port relaying to nginx.
    pub web: SocketAddr,
    /// Public port relaying to iperf3.
    pub bulk: SocketAddr,
    /// Whether nginx behind `web` speaks HTTPS.
    tls: bool,
    /// Configs and logs.
    _dir: TempDir,
}

impl Rival {
    /// Stops its clients, then its server.
    pub async fn stop(self) {
        self.client.stop().await;
        for other in self.others {
            other.stop().await;
        }
        self.server.stop().await;
    }

    /// Where to send HTTP through it.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { addr: self.web, host: None, tls: self.tls }
    }
}

/// What a rival relays to: nginx (over HTTPS when `tls`) and iperf3.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    /// nginx.
    pub web: SocketAddr,
    /// iperf3.
    pub bulk: SocketAddr,
    /// Whether `web` is nginx's HTTPS port.
    pub tls: bool,
}

/// Finds `name` in `bench/rivals/bin` (where `bench/install-rivals.sh` puts
/// it), then on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    let installed = procs::workspace_root().join("bench/rivals/bin").join(name);
    installed.is_file().then_some(installed).or_else(|| procs::find_tool(name))
}

/// Starts the relay floor ([`crate::floor`]) and every rival that is
/// installed, serving the lab's nginx and iperf3; a missing or failing one
/// is reported in the second list.
pub async fn start_all(lab: &Lab, commands: &mut Vec<String>) -> (Vec<Rival>, Vec<String>) {
    let (mut running, mut missing) = (Vec::new(), Vec::new());
    let targets = Targets { web: lab.nginx_addr, bulk: lab.iperf_addr, tls: false };
    for (name, started) in [
        (FLOOR, start_floor(targets, commands).await),
        (FLOOR_POOLED, start_pooled_floor(lab.nginx_addr, lab.iperf_addr, commands).await),
    ] {
        match started {
            Ok(floor) => running.push(floor),
            Err(e) => missing.push(format!("{name}: did not start: {}", format!("{e:#}").replace('\n', " "))),
        }
    }
    for name in ["rathole", "bore"] {
        let Some(bin) = find(name) else {
            missing.push(format!("{name}: not installed (run bench/install-rivals.sh)"));
            continue;
        };
        let started = match name {
            "rathole" => start_rathole(&bin, targets, None, commands).await,
            _ => start_bore(&bin, lab.nginx_addr, lab.iperf_addr, commands).await,
        };
        match started {
            Ok(rival) => running.push(rival),
            Err(e) => missing.push(format!("{name}: did not start: {}", format!("{e:#}").replace('\n', " "))),
        }
    }
    (running, missing)
}

/// rathole: one server and one client, a service each for nginx and
/// iperf3; with `tls` (a `rathole-tls` build) over its TLS transport.
pub async fn start_rathole(
    bin: &Path,
    to: Targets,
    tls: Option<&crate::tls::Certs>,
    commands: &mut Vec<String>,
) -> anyhow::Result<Rival> {
    let dir = tempfile::Builder::new().prefix("terrier-bench-rathole-").tempdir()?;
    let control = loopback(procs::free_port()?);
    let (web, bulk) = (loopback(procs::free_port()?), loopback(procs::free_port()?));
    let (nginx, iperf) = (to.web, to.bulk);
    let (server_transport, client_transport) = tls.map(rathole_tls_transport).unwrap_or_default();
    let server_toml = format!(
        "[server]\nbind_addr = \"{control}\"\n{server_transport}\n\
         [server.services.nginx]\ntoken = \"bench\"\nbind_addr = \"{web}\"\n\n\
         [server.services.iperf]\ntoken = \"bench\"\nbind_addr = \"{bulk}\"\n"
    );
    let client_toml = format!(
        "[client]\nremote_addr = \"{control}\"\n{client_transport}\n\
         [client.services.nginx]\ntoken = \"bench\"\nlocal_addr = \"{nginx}\"\n\n\
         [client.services.iperf]\ntoken = \"bench\"\nlocal_addr = \"{iperf}\"\n"
    );
    std::fs::write(dir.path().join("server.toml"), server_toml)?;
    std::fs::write(dir.path().join("client.toml"), client_toml)?;
    let run = |mode: &str, config: &str| {
        let mut cmd = Command::new(bin);
        cmd.arg(mode).arg(dir.path().join(config)).env("RUST_LOG", "warn");
        cmd
    };
    let (name, transport) = if tls.is_some() { (RATHOLE_TLS, "tls") } else { ("rathole", "tcp") };
    commands.push(format!(
        "{} --server <tmp>/server.toml   # services nginx and iperf, {transport} transport, on 127.0.0.1",
        bin.display()
    ));
    commands.push(format!("{} --client <tmp>/client.toml", bin.display()));
    let mut server = Proc::spawn(&format!("{name}-server"), run("--server", "server.toml"), dir.path())?;
    server.wait_for_port(control).await?;
    let client = Proc::spawn(&format!("{name}-client"), run("--client", "client.toml"), dir.path())?;
    let rival = Rival { name, server, client, others: Vec::new(), web, bulk, tls: to.tls, _dir: dir };
    // rathole binds a service's public port once that service's control
    // channel is up; a request answered through it shows the client is in.
    wait_until_serving(&rival).await?;
    Ok(rival)
}

/// rathole over its TLS transport, in the tables (and its binary's name).
pub const RATHOLE_TLS: &str = "rathole-tls";

/// The `[server.transport]` and `[client.transport]` tables of rathole's
/// TLS transport: the server presents the PKCS#12 bundle, the client trusts
/// the bench's CA only and checks the name `localhost` (a name rather than
/// 127.0.0.1, so OpenSSL checks it the way a real client would).
fn rathole_tls_transport(certs: &crate::tls::Certs) -> (String, String) {
    let server = format!(
        "\n[server.transport]\ntype = \"tls\"\n\n[server.transport.tls]\npkcs12 = \"{}\"\npkcs12_password = \"{}\"\n",
        certs.p12.display(),
        crate::tls::P12_PASSWORD
    );
    let client = format!(
        "\n[client.transport]\ntype = \"tls\"\n\n[client.transport.tls]\ntrusted_root = \"{}\"\nhostname = \"localhost\"\n",
        certs.ca.display()
    );
    (server, client)
}

/// The relay floor's name in the tables.
pub const FLOOR: &str = "relay floor";

/// The pooled relay floor's name in the tables.
pub const FLOOR_POOLED: &str = "relay floor, pooled";

/// Whether a rival is one of the floors (this bench's own relays, not a
/// tunnel).
pub fn is_floor(name: &str) -> bool {
    name == FLOOR || name == FLOOR_POOLED
}

/// Idle connections per service in the pooled floor, as terrier's `--pool 4`.
const FLOOR_POOL_SIZE: usize = 4;

/// The relay floor: this bench's own `relay` subcommand twice, the
/// "client" hop relaying to nginx and iperf3, the "server" hop to the
/// client's ports.
pub async fn start_floor(to: Targets, commands: &mut Vec<String>) -> anyhow::Result<Rival> {
    let dir = tempfile::Builder::new().prefix("terrier-bench-floor-").tempdir()?;
    let hop =
        |to: [SocketAddr; 2]| ["relay".to_owned(), "--to".into(), to[0].to_string(), "--to".into(), to[1].to_string()];
    let (client, ports) = start_floor_hop("floor-client", &hop([to.web, to.bulk]), dir.path(), commands).await?;
    let [client_web, client_bulk] = two_ports("floor-client", &ports)?;
    let (server, ports) =
        start_floor_hop("floor-server", &hop([client_web, client_bulk]), dir.path(), commands).await?;
    let [web, bulk] = two_ports("floor-server", &ports)?;
    let rival = Rival { name: FLOOR, server, client, others: Vec::new(), web, bulk, tls: to.tls, _dir: dir };
    wait_until_serving(&rival).await?;
    Ok(rival)
}

/// The pooled relay floor ([`crate::floor::serve_pool_server`]): the server
/// hop with a public and a pool port per service, the agent hop keeping
/// [`FLOOR_POOL_SIZE`] connections open to each pool port.
async fn start_pooled_floor(nginx: SocketAddr, iperf: SocketAddr, commands: &mut Vec<String>) -> anyhow::Result<Rival> {
    let dir = tempfile::Builder::new().prefix("terrier-bench-floor-pooled-").tempdir()?;
    let server_args = ["pool-relay-server".to_owned(), "--services".into(), "2".into()];
    let (server, ports) = start_floor_hop("floor-pooled-server", &server_args, dir.path(), commands).await?;
    let [web, bulk, web_pool, bulk_pool] = ports[..] else {
        anyhow::bail!("floor-pooled-server: no four ports in {ports:?}");
    };
    let client_args = [
        "pool-relay-client".to_owned(),
        "--pool".into(),
        web_pool.to_string(),
        "--to".into(),
        nginx.to_string(),
        "--pool".into(),
        bulk_pool.to_string(),
        "--to".into(),
        iperf.to_string(),
        "--size".into(),
        FLOOR_POOL_SIZE.to_string(),
    ];
    let (client, _) = start_floor_hop("floor-pooled-client", &client_args, dir.path(), commands).await?;
    let rival = Rival { name: FLOOR_POOLED, server, client, others: Vec::new(), web, bulk, tls: false, _dir: dir };
    wait_until_serving(&rival).await?;
    Ok(rival)
}

/// One relay process of a floor (this bench run with `args`); returns it
/// and the ports its ready line lists.
async fn start_floor_hop(
    name: &str,
    args: &[String],
    dir: &Path,
    commands: &mut Vec<String>,
) -> anyhow::Result<(Proc, Vec<SocketAddr>)> {
    let bin = std::env::current_exe().context("finding terrier-bench itself")?;
    let mut cmd = Command::new(&bin);
    cmd.args(args);
    commands.push(format!("{} {}   # {name}", bin.display(), args.join(" ")));
    let (proc, line) = Proc::spawn_until_line(name, cmd, dir, |l| l.starts_with(crate::floor::READY)).await?;
    let ports = line
        .trim_start_matches(crate::floor::READY)
        .split_whitespace()
        .map(|p| p.parse().map(loopback))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{name}: ports in {line:?}"))?;
    Ok((proc, ports))
}

/// The web and bulk ports of a plain relay hop.
fn two_ports(name: &str, ports: &[SocketAddr]) -> anyhow::Result<[SocketAddr; 2]> {
    match ports[..] {
        [web, bulk] => Ok([web, bulk]),
        _ => anyhow::bail!("{name}: no two ports in {ports:?}"),
    }
}

/// bore: one server, one `bore local` per service (each prints the public
/// port it got).
async fn start_bore(
    bin: &Path,
    nginx: SocketAddr,
    iperf: SocketAddr,
    commands: &mut Vec<String>,
) -> anyhow::Result<Rival> {
    /// bore's fixed control port.
    const CONTROL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7835);
    if std::net::TcpListener::bind(CONTROL).is_err() {
        anyhow::bail!("its fixed control port {CONTROL} is taken");
    }
    let dir = tempfile::Builder::new().prefix("terrier-bench-bore-").tempdir()?;
    let mut cmd = Command::new(bin);
    cmd.args(["server", "--bind-addr", "127.0.0.1", "--bind-tunnels", "127.0.0.1"]).env("RUST_LOG", "warn");
    commands.push(format!("{} server --bind-addr 127.0.0.1 --bind-tunnels 127.0.0.1", bin.display()));
    let mut server = Proc::spawn("bore-server", cmd, dir.path())?;
    server.wait_for_port(CONTROL).await?;
    let mut local = |name: &str, target: SocketAddr| -> anyhow::Result<(Command, u16)> {
        let port = procs::free_port()?;
        let mut cmd = Command::new(bin);
        let args = [
            "local".to_owned(),
            target.port().to_string(),
            "--local-host".to_owned(),
            target.ip().to_string(),
            "--to".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
        ];
        cmd.args(&args).env("RUST_LOG", "info");
        commands.push(format!("{} {}   # {name}", bin.display(), args.join(" ")));
        Ok((cmd, port))
    };
    let listening = |line: &str| line.contains("listening at");
    let (cmd, web_port) = local("nginx", nginx)?;
    let (client, _) = Proc::spawn_until_line("bore-local-nginx", cmd, dir.path(), listening).await?;
    let (cmd, bulk_port) = local("iperf", iperf)?;
    let (iperf_client, _) = Proc::spawn_until_line("bore-local-iperf", cmd, dir.path(), listening).await?;
    let rival = Rival {
        name: "bore",
        server,
        client,
        others: vec![iperf_client],
        web: loopback(web_port),
        bulk: loopback(bulk_port),
        tls: false,
        _dir: dir,
    };
    wait_until_serving(&rival).await?;
    Ok(rival)
}

/// Waits until one request through the rival's web port is answered 200
/// (over HTTPS with wrk, which has the TLS client this bench lacks).
async fn wait_until_serving(rival: &Rival) -> anyhow::Result<()> {
    let until = Instant::now() + READY_TIMEOUT;
    let endpoint = rival.endpoint();
    loop {
        let answered = match endpoint.tls {
            true => crate::wrk::answers(&endpoint).await,
            false => crate::connect::mean_ms(&endpoint, 1).await.map(drop),
        };
        match answered {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => {
                return Err(e).with_context(|| {
                    format!(
                        "{} did not relay a request within {READY_TIMEOUT:?}:\n{}",
                        rival.name,
                        rival.client.log_tail()
                    )
                })
            }
            Err(_) => sleep(Duration::from_millis(100)).await,
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))
}

/// The routes a traffic figure is measured on: direct first, then terrier's,
/// then each rival.
pub fn web_routes(lab: &Lab, rivals: &[Rival]) -> Vec<(String, Endpoint)> {
    let mut routes: Vec<(String, Endpoint)> = [
        ("direct".to_owned(), lab.web(Route::Direct)),
        (format!("terrier {}", Route::TcpPort.label()), lab.web(Route::TcpPort)),
        (format!("terrier {}", Route::Vhost.label()), lab.web(Route::Vhost)),
    ]
    .into();
    routes.extend(rivals.iter().map(|r| (r.name.to_owned(), r.endpoint())));
    routes
}
