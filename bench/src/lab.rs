//! The set-up every traffic benchmark runs against, all on 127.0.0.1: nginx
//! (one process, a 100-byte page) and an iperf3 server as the device's
//! services, `terrierd`, and one `terrier` agent exposing nginx as its HTTP
//! service and nginx and iperf3 as TCP services. Everything lives in one
//! temporary folder and stops when the [`Lab`] is dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tempfile::TempDir;
use tokio::process::Command;

use crate::procs::{self, Binaries, Proc};

/// Size of the page nginx serves, in bytes.
pub const PAGE_BYTES: usize = 100;

/// Public TCP port range given to terrierd (below Linux's ephemeral ports).
pub const TCP_PORTS: &str = "20000-29999";

/// Where a visitor's traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to nginx / iperf3, no tunnel.
    Direct,
    /// Through terrierd's HTTP listener, routed by `Host: <sub>.localhost`.
    Vhost,
    /// Through the device's public TCP port.
    TcpPort,
}

impl Route {
    /// Short name used in tables.
    pub fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Vhost => "HTTP vhost",
            Route::TcpPort => "TCP port",
        }
    }
}

/// An address to send HTTP to, and the `Host` to name there (`None`: the address).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// TCP address to connect to.
    pub addr: SocketAddr,
    /// `Host` header for vhost routing.
    pub host: Option<String>,
    /// HTTPS (the certificate is not checked: wrk does not).
    pub tls: bool,
}

/// What a connected agent announced (its `--output json` "connected" event).
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// `<subdomain>.<domain>`: the `Host` visitors use.
    pub host: String,
    /// Public port of the nginx TCP service.
    pub nginx_port: u16,
    /// Public port of the iperf3 TCP service.
    pub iperf_port: u16,
}

/// Every process of one benchmark run. Field order is drop order: processes
/// are killed before their folder is removed.
#[derive(Debug)]
pub struct Lab {
    /// The tunnel server.
    pub server: Proc,
    /// The device agent (no pool).
    pub agent: Proc,
    /// A second agent with `--pool 4`, while [`Lab::start_pool_agent`] has it running.
    pool_agent: Option<(Proc, AgentInfo)>,
    /// nginx, the HTTP target.
    _nginx: Proc,
    /// iperf3 -s, the bulk target.
    _iperf: Proc,
    /// nginx's address.
    pub nginx_addr: SocketAddr,
    /// iperf3's address.
    pub iperf_addr: SocketAddr,
    /// terrierd's one listener.
    pub server_addr: SocketAddr,
    /// What the plain agent announced.
    pub info: AgentInfo,
    /// The command lines started, for RESULTS.md.
    pub commands: Vec<String>,
    /// The binaries, to start the pool agent later.
    bins: Binaries,
    /// Configs, pages, data dir and logs.
    _dir: TempDir,
}

impl Lab {
    /// Starts nginx, iperf3, terrierd and the agent(s); returns once the agent is connected.
    pub async fn start(bins: &Binaries) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("terrier-bench-").tempdir()?;
        let mut commands = Vec::new();
        let nginx = start_nginx(dir.path(), None, &mut commands).await?;
        let nginx_addr = nginx.addr;
        let (iperf, iperf_addr) = start_iperf3(dir.path(), &mut commands).await?;
        let (server, server_addr) = start_terrierd(bins, dir.path(), &mut commands).await?;
        let services = Services::plain(server_addr, nginx_addr, iperf_addr);
        let (agent, info) = start_agent(bins, &services, "bench", None, dir.path(), &mut commands).await?;
        Ok(Self {
            server,
            agent,
            pool_agent: None,
            _nginx: nginx.proc,
            _iperf: iperf,
            nginx_addr,
            iperf_addr,
            server_addr,
            info,
            commands,
            bins: bins.clone(),
            _dir: dir,
        })
    }

    /// Starts a second agent, `bench-pool`, with `--pool 4` if the agent has
    /// that flag; returns whether it did. It runs until [`Lab::stop_pool_agent`],
    /// so the memory figures see the plain agent only.
    pub async fn start_pool_agent(&mut self) -> anyhow::Result<bool> {
        if !self.bins.agent_has_pool().await {
            return Ok(false);
        }
        let services = Services::plain(self.server_addr, self.nginx_addr, self.iperf_addr);
        let agent =
            start_agent(&self.bins, &services, "bench-pool", Some(4), self._dir.path(), &mut self.commands).await?;
        self.pool_agent = Some(agent);
        Ok(true)
    }

    /// Stops the `--pool 4` agent, if it runs.
    pub async fn stop_pool_agent(&mut self) {
        if let Some((agent, _)) = self.pool_agent.take() {
            agent.stop().await;
        }
    }

    /// Where to send HTTP for `route` through the plain agent.
    pub fn web(&self, route: Route) -> Endpoint {
        endpoint(route, self.nginx_addr, self.server_addr, &self.info)
    }

    /// Where to send HTTP for `route` through the `--pool 4` agent, if there is one.
    pub fn pool_web(&self, route: Route) -> Option<Endpoint> {
        self.pool_agent.as_ref().map(|(_, info)| endpoint(route, self.nginx_addr, self.server_addr, info))
    }

    /// The iperf3 server, directly or through its tunnel port.
    pub fn bulk(&self, route: Route) -> SocketAddr {
        match route {
            Route::Direct => self.iperf_addr,
            _ => loopback(self.info.iperf_port),
        }
    }
}

fn endpoint(route: Route, nginx: SocketAddr, server: SocketAddr, info: &AgentInfo) -> Endpoint {
    match route {
        Route::Direct => Endpoint { addr: nginx, host: None, tls: false },
        Route::Vhost => Endpoint { addr: server, host: Some(info.host.clone()), tls: false },
        Route::TcpPort => Endpoint { addr: loopback(info.nginx_port), host: None, tls: false },
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// What an agent dials and serves.
#[derive(Debug, Clone)]
pub struct Services {
    /// terrierd's URL (`http://…` is a `ws://` agent, `wss://…` a TLS one).
    pub server: String,
    /// The CA file the agent trusts for `wss://` (`--ca`).
    pub ca: Option<PathBuf>,
    /// The agent's HTTP service (`--http`).
    pub http: SocketAddr,
    /// Its TCP service `nginx`.
    pub nginx: SocketAddr,
    /// Its TCP service `iperf`.
    pub iperf: SocketAddr,
}

impl Services {
    /// A `ws://` agent serving nginx over HTTP and TCP, and iperf3.
    fn plain(server: SocketAddr, nginx: SocketAddr, iperf: SocketAddr) -> Self {
        Self { server: format!("http://{server}"), ca: None, http: nginx, nginx, iperf }
    }
}

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    /// The one nginx process.
    pub proc: Proc,
    /// Its plain-HTTP listener.
    pub addr: SocketAddr,
    /// Its HTTPS listener, when started with a certificate.
    pub https: Option<SocketAddr>,
    /// The folder it serves files from.
    pub www: PathBuf,
}

/// Starts one nginx process (`master_process off`: it is the one worker)
/// serving a [`PAGE_BYTES`] page, with its config, temp dirs and logs in
/// `dir`; with `tls` (a PEM certificate chain and key) also over HTTPS on
/// a second port, from the same files.
pub async fn start_nginx(dir: &Path, tls: Option<(&Path, &Path)>, commands: &mut Vec<String>) -> anyhow::Result<Nginx> {
    let addr = loopback(procs::free_port()?);
    let root = dir.join("nginx");
    let www = root.join("www");
    std::fs::create_dir_all(&www)?;
    let (head, tail) = ("<!doctype html><title>bench</title><p>", "</p>\n");
    let page = format!("{head}{}{tail}", "x".repeat(PAGE_BYTES - head.len() - tail.len()));
    std::fs::write(www.join("index.html"), page)?;
    let https = tls.map(|_| procs::free_port().map(loopback)).transpose()?;
    let ssl = match (tls, https) {
        (Some((cert, key)), Some(at)) => format!(
            "  server {{\n    listen {at} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             root {}/www;\n  }}\n",
            cert.display(),
            key.display(),
            root.display()
        ),
        _ => String::new(),
    };
    let r = root.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {r}/nginx.pid;\nerror_log {r}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  default_type text/html;\n\
         client_body_temp_path {r}/client_body;\n  proxy_temp_path {r}/proxy;\n  fastcgi_temp_path {r}/fastcgi;\n\
         uwsgi_temp_path {r}/uwsgi;\n  scgi_temp_path {r}/scgi;\n\
         server {{\n    listen {addr};\n    root {r}/www;\n  }}\n{ssl}}}\n"
    );
    let conf = root.join("nginx.conf");
    std::fs::write(&conf, config)?;
    let nginx = procs::find_tool("nginx").context("nginx not found")?;
    let mut cmd = Command::new(&nginx);
    cmd.arg("-p").arg(&root).arg("-c").arg(&conf).arg("-e").arg(root.join("error.log"));
    let also = if tls.is_some() { ", also over HTTPS (ssl on a second port, Debian's TLS defaults)" } else { "" };
    commands.push(format!(
        "{} -p <tmp> -c <tmp>/nginx.conf (1 process, access_log off, {PAGE_BYTES}-byte page{also})",
        nginx.display()
    ));
    let mut proc = Proc::spawn("nginx", cmd, dir)?;
    proc.wait_for_port(addr).await?;
    if let Some(at) = https {
        proc.wait_for_port(at).await?;
    }
    Ok(Nginx { proc, addr, https, www })
}

/// Starts `iperf3 -s` on a free loopback port.
async fn start_iperf3(dir: &Path, commands: &mut Vec<String>) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = loopback(procs::free_port()?);
    let iperf = procs::find_tool("iperf3").context("iperf3 not found")?;
    let mut cmd = Command::new(&iperf);
    cmd.args(["-s", "-B", "127.0.0.1", "-p", &addr.port().to_string()]);
    commands.push(format!("{} -s -B 127.0.0.1 -p {}", iperf.display(), addr.port()));
    let mut proc = Proc::spawn("iperf3", cmd, dir)?;
    proc.wait_for_port(addr).await?;
    Ok((proc, addr))
}

/// Starts the release `terrierd` on 127.0.0.1:0 with its own data dir in
/// `dir`; returns it with the address it printed.
pub async fn start_terrierd(
    bins: &Binaries,
    dir: &Path,
    commands: &mut Vec<String>,
) -> anyhow::Result<(Proc, SocketAddr)> {
    start_terrierd_with(bins, dir, &Extra::default(), commands).await
}

/// What a part adds to terrierd's command line.
#[derive(Debug, Default)]
pub struct Extra<'a> {
    /// `--set KEY=VALUE` config overrides.
    pub sets: &'a [&'a str],
    /// The admin token (`TERRIERD_ADMIN_TOKEN`), for parts that read the admin API.
    pub admin_token: Option<&'a str>,
    /// Public TCP ports instead of [`TCP_PORTS`] (a second terrierd beside the lab's).
    pub tcp_ports: Option<&'a str>,
    /// Further arguments (`--tls-cert …`).
    pub args: &'a [String],
}

/// The per-address handshake limit (`limits.control_handshakes_per_ip_per_minute`)
/// is off: every simulated device connects from 127.0.0.1, where thousands
/// of real devices would each have their own address.
const NO_HANDSHAKE_LIMIT: &str = "limits.control_handshakes_per_ip_per_minute=0";

/// [`start_terrierd`] with `extra` settings.
pub async fn start_terrierd_with(
    bins: &Binaries,
    dir: &Path,
    extra: &Extra<'_>,
    commands: &mut Vec<String>,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let data = dir.join("terrierd-data");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--domain",
        "localhost",
        "--tcp-bind",
        "127.0.0.1",
        "--tcp-ports",
        extra.tcp_ports.unwrap_or(TCP_PORTS),
        "--log",
        "warn",
    ];
    for set in std::iter::once(&NO_HANDSHAKE_LIMIT).chain(extra.sets) {
        args.extend(["--set", set]);
    }
    args.extend(extra.args.iter().map(String::as_str));
    args.push("--data-dir");
    let mut cmd = Command::new(&bins.terrierd);
    cmd.args(&args).arg(&data).env_remove("TERRIERD_CONFIG").env_remove("TERRIERD_STORE");
    if let Some(token) = extra.admin_token {
        cmd.env("TERRIERD_ADMIN_TOKEN", token);
    }
    let shown = args.join(" ").replace(&dir.display().to_string(), "<tmp>");
    commands.push(format!("{} {shown} <tmp>/terrierd-data", bins.terrierd.display()));
    let (proc, line) =
        Proc::spawn_until_line("terrierd", cmd, dir, |l| l.starts_with("terrierd listening on http://")).await?;
    let addr = line
        .trim_start_matches("terrierd listening on http://")
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {line:?}"))?;
    Ok((proc, addr))
}

/// Starts a release `terrier` agent named `name` and waits for its
/// `connected` event.
pub async fn start_agent(
    bins: &Binaries,
    to: &Services,
    name: &str,
    pool: Option<u32>,
    dir: &Path,
    commands: &mut Vec<String>,
) -> anyhow::Result<(Proc, AgentInfo)> {
    let mut args = vec![
        "--server".to_owned(),
        to.server.clone(),
        "--name".to_owned(),
        name.to_owned(),
        "--http".to_owned(),
        to.http.to_string(),
        "--tcp".to_owned(),
        format!("nginx={}", to.nginx),
        "--tcp".to_owned(),
        format!("iperf={}", to.iperf),
        "--output".to_owned(),
        "json".to_owned(),
        "--log".to_owned(),
        "warn".to_owned(),
    ];
    if let Some(n) = pool {
        args.extend(["--pool".to_owned(), n.to_string()]);
    }
    if let Some(ca) = &to.ca {
        args.extend(["--ca".to_owned(), ca.display().to_string()]);
    }
    let mut cmd = Command::new(&bins.terrier);
    cmd.args(&args).env_remove("TERRIER_SERVER").env_remove("TERRIER_NAME");
    commands.push(format!(
        "{} {}",
        bins.terrier.display(),
        args.join(" ").replace(&dir.display().to_string(), "<tmp>")
    ));
    let (proc, line) = Proc::spawn_until_line(name, cmd, dir, |l| l.contains(r#""event":"connected""#)).await?;
    let info = parse_connected(&line)?;
    Ok((proc, info))
}

/// Reads the agent's `connected` JSON event.
fn parse_connected(line: &str) -> anyhow::Result<AgentInfo> {
    let event: serde_json::Value = serde_json::from_str(line).with_context(|| format!("agent event {line:?}"))?;
    let url = event["url"].as_str().context("connected event has no url")?;
    let host = url.split("://").nth(1).and_then(|rest| rest.split([':', '/']).next()).unwrap_or_default();
    if host.is_empty() {
        bail!("no host in url {url:?}");
    }
    let port = |service: &str| {
        event["tcp"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["service"] == service))
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("no public port for service {service} in {line}"))
    };
    Ok(AgentInfo { host: host.to_owned(), nginx_port: port("nginx")?, iperf_port: port("iperf")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_connected_event() {
        let line = r#"{"event":"connected","server":"http://127.0.0.1:1/","name":"bench","session":"x","subdomain":"k3j9x2abqz","url":"http://k3j9x2abqz.localhost:40000","http_target":"127.0.0.1:8","tcp":[{"service":"nginx","target":"127.0.0.1:8","host":"localhost","port":20417},{"service":"iperf","target":"127.0.0.1:9","host":"localhost","port":23002}],"grace_secs":600}"#;
        let info = parse_connected(line).unwrap();
        assert_eq!(info.host, "k3j9x2abqz.localhost");
        assert_eq!((info.nginx_port, info.iperf_port), (20417, 23002));
    }

    #[test]
    fn connected_event_without_ports_is_an_error() {
        let line = r#"{"event":"connected","url":"http://a.localhost:1","tcp":[]}"#;
        assert!(parse_connected(line).is_err());
    }
}
