//! `terrierd`: parses flags (over an optional TOML file), sets up logging,
//! binds the listener, installs the SIGINT/SIGTERM handler and calls
//! [`terrier_server::run`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod cli;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use terrier_server::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// terrierd: the terrier reverse-tunnel server. Devices connect out to it over
/// WebSocket; visitors reach each device at http://<subdomain>.<domain> and on
/// public TCP ports. Runs with no configuration at all on localhost.
#[derive(Debug, Parser)]
#[command(name = "terrierd", version, about, long_about = None)]
struct Args {
    /// Without a subcommand, terrierd serves. Subcommands manage device
    /// tokens or print shell completions and the man page.
    #[command(subcommand)]
    command: Option<Command>,
    /// Set any configuration key, e.g. --set limits.max_pending_streams=64 (repeatable;
    /// also TERRIERD__<SECTION>__<KEY> environment variables). Dedicated flags win over it.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = terrier_server::overrides::parse_set, global = true)]
    set: Vec<(String, String)>,
    /// TOML configuration file (every key is in docs/CONFIG.md); flags override it.
    #[arg(long, env = "TERRIERD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address of the one HTTP listener for visitors and agents: HOST:PORT (0.0.0.0:80 for
    /// everyone), or a port alone for 127.0.0.1:PORT [default: 127.0.0.1:8080].
    #[arg(long, env = "TERRIERD_LISTEN", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Base domain; devices get <subdomain>.<domain> [default: localhost].
    #[arg(long, env = "TERRIERD_DOMAIN")]
    domain: Option<String>,
    /// Public TCP port range for device TCP services, as MIN-MAX [default: 20000-29999].
    #[arg(long, env = "TERRIERD_TCP_PORTS", value_parser = parse_range)]
    tcp_ports: Option<(u16, u16)>,
    /// Address the public TCP ports are bound on [default: 127.0.0.1].
    #[arg(long, env = "TERRIERD_TCP_BIND")]
    tcp_bind: Option<IpAddr>,
    /// Folder of the embedded store (leases survive restarts) [default: ./terrierd-data].
    #[arg(long, env = "TERRIERD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Shared state: "embedded" (a file in --data-dir, one node) or redis://host:port/db (many nodes) [default: embedded].
    #[arg(long, env = "TERRIERD_STORE", global = true)]
    store: Option<String>,
    /// This node's id in leases; keep it stable across restarts with a Redis store [default: random].
    #[arg(long, env = "TERRIERD_NODE_ID")]
    node_id: Option<String>,
    /// How long a disconnected device keeps its subdomain and ports, e.g. 10m [default: 10m].
    #[arg(long, env = "TERRIERD_GRACE", value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    /// Port shown in public URLs when it differs from the listen port (behind a load balancer).
    #[arg(long, env = "TERRIERD_PUBLIC_PORT")]
    public_port: Option<u16>,
    /// Folder with replacement error pages (page.html, 404.html, 503.html...).
    #[arg(long, env = "TERRIERD_PAGES_DIR")]
    pages_dir: Option<PathBuf>,
    /// Device authentication: token (devices need `terrierd token create`), open (development only),
    /// or auto (open on localhost or a loopback IP, token elsewhere) [default: auto].
    #[arg(long, env = "TERRIERD_AUTH", value_parser = parse_auth_mode)]
    auth: Option<terrier_server::auth::AuthMode>,
    /// Serve TLS (HTTPS, wss) with a generated development certificate: `self-signed`
    /// (clients trust <data-dir>/tls/dev-ca.pem). For real certificates use --tls-cert/--tls-key.
    #[arg(long, env = "TERRIERD_TLS", value_parser = ["self-signed"])]
    tls: Option<String>,
    /// Address of the TLS listener, HOST:PORT or a port alone for 127.0.0.1:PORT
    /// [default: 127.0.0.1:8443 when TLS is asked for].
    #[arg(long, env = "TERRIERD_TLS_LISTEN", value_parser = parse_listen)]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS (e.g. a wildcard *.<domain> that also names <domain>); needs --tls-key.
    #[arg(long, env = "TERRIERD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TERRIERD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Answer plain-HTTP visitors with a redirect to HTTPS (agents may still use ws://).
    #[arg(long)]
    redirect_http: bool,
    /// File holding the admin token for the API, dashboard and /metrics
    /// [default: <data-dir>/admin.token, generated at first start]. The
    /// token itself may come from TERRIERD_ADMIN_TOKEN instead.
    #[arg(long, env = "TERRIERD_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Also serve /metrics without a token on this address (for Prometheus): HOST:PORT,
    /// or a port alone for 127.0.0.1:PORT.
    #[arg(long, env = "TERRIERD_METRICS_LISTEN", value_parser = parse_listen)]
    metrics_listen: Option<SocketAddr>,
    /// Also start a demo device (a small web page behind a built-in device).
    #[arg(long)]
    demo: bool,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "TERRIERD_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

/// What `terrierd` does besides serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Mint, list and revoke device tokens, in the store of the server's
    /// --config / --data-dir (give them as the server gets them). Works while
    /// the server runs: it picks up changes within auth.refresh_interval (1 s).
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Print a shell completion script, e.g. `terrierd completions bash > /etc/bash_completion.d/terrierd`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `terrierd man > terrierd.1`.
    Man,
}

fn parse_auth_mode(s: &str) -> Result<terrier_server::auth::AuthMode, String> {
    use terrier_server::auth::AuthMode;
    match s {
        "auto" => Ok(AuthMode::Auto),
        "token" => Ok(AuthMode::Token),
        "open" => Ok(AuthMode::Open),
        _ => Err(format!("{s:?}: expected token, open or auto")),
    }
}

/// `HOST:PORT`, or a port alone on the default host, loopback, as
/// everywhere else a terrierd address defaults.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("{s:?}: expected HOST:PORT (e.g. 0.0.0.0:80, [::]:80) or a port (8080 means 127.0.0.1:8080)")
    })
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (min, max) = s.split_once('-').ok_or_else(|| format!("{s:?}: expected MIN-MAX, e.g. 20000-29999"))?;
    let port = |p: &str| p.trim().parse::<u16>().map_err(|_| format!("{s:?}: {p:?} is not a port"));
    Ok((port(min)?, port(max)?))
}

/// The generic overrides, read once at start: `TERRIERD__*`, then `--set`.
fn overrides(args: &Args) -> Vec<(String, String)> {
    let mut overrides = terrier_server::overrides::from_env(std::env::vars());
    overrides.extend(args.set.iter().cloned());
    overrides
}

/// The configuration: the file, then `overrides`, then the dedicated flags.
/// Run again on `SIGHUP` with the same arguments, so they keep winning.
fn load_config(args: &Args, overrides: &[(String, String)]) -> anyhow::Result<ServerConfig> {
    let mut config = terrier_server::overrides::load(args.config.as_deref(), overrides)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(domain) = &args.domain {
        config.domain = domain.to_ascii_lowercase();
    }
    if let Some((min, max)) = args.tcp_ports {
        (config.tcp_port_min, config.tcp_port_max) = (min, max);
    }
    if let Some(ip) = args.tcp_bind {
        config.tcp_bind = ip;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(store) = &args.store {
        config.store = store.clone();
    }
    if let Some(id) = &args.node_id {
        config.node_id = Some(id.clone());
    }
    if let Some(grace) = args.grace {
        config.grace_period = grace;
    }
    if let Some(port) = args.public_port {
        config.public_port = Some(port);
    }
    if let Some(mode) = args.auth {
        config.auth.mode = mode;
    }
    if args.tls.is_some() {
        config.tls.self_signed = true;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls.certificates.push(terrier_server::config::CertificateFiles { cert: cert.clone(), key: key.clone() });
    }
    if args.redirect_http {
        config.tls.redirect_http = true;
    }
    if let Some(addr) = args.tls_listen {
        config.tls.listen = Some(addr);
    }
    let tls_asked = config.tls.self_signed || !config.tls.certificates.is_empty();
    if tls_asked && config.tls.listen.is_none() {
        config.tls.listen = Some(SocketAddr::from(([127, 0, 0, 1], 8443)));
    }
    if let Some(dir) = &args.pages_dir {
        config.pages_dir = Some(dir.clone());
    }
    if let Some(file) = &args.admin_token_file {
        config.admin.token_file = Some(file.clone());
    }
    if let Some(addr) = args.metrics_listen {
        config.admin.metrics_listen = Some(addr);
    }
    // The token itself only from the environment: never in a file we parse
    // nor on a command line other users can see.
    if let Ok(token) = std::env::var("TERRIERD_ADMIN_TOKEN") {
        config.admin.token = Some(terrier_server::config::Secret(token));
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    cli::output::init_logging(&args.log, args.log_json);
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terrierd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(mut args: Args) -> anyhow::Result<()> {
    match &args.command {
        Some(Command::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Args::command(), "terrierd", &mut script);
            return write_stdout(&script);
        }
        Some(Command::Man) => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Args::command()).render(&mut page)?;
            return write_stdout(&page);
        }
        _ => {}
    }
    let overrides = overrides(&args);
    let config = load_config(&args, &overrides)?;
    if let Some(Command::Token(command)) = args.command.take() {
        return cli::token::run(&config, command).await;
    }
    if let Some(warning) = config.loopback_warning() {
        tracing::warn!("{warning}");
    }
    let args = std::sync::Arc::new(args);
    let reload_args = args.clone();
    let source: terrier_server::reload::Source = std::sync::Arc::new(move || load_config(&reload_args, &overrides));
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tokio::spawn(cli::memory::trim_after_bursts(shutdown.clone()));
    // Everything that can fail at start on this host is opened before the
    // banner (the store's lock, the data dir, the admin token file), so
    // "listening" is only printed by a server that is going to serve.
    let store = terrier_server::open_store(&config).await?;
    let token = terrier_server::admin::token::AdminToken::load(&config)?;
    let demo_tasks = TaskTracker::new();
    if args.demo {
        terrier_server::demo::start(addr, shutdown.clone(), &demo_tasks);
    }
    let banner = banner(&config, addr, &token, args.demo);
    let ready: terrier_server::Ready = Box::new(move || print!("{banner}"));
    terrier_server::run_opened(config, store, Some(source), listener, shutdown, ready).await?;
    demo_tasks.close();
    demo_tasks.wait().await;
    Ok(())
}

/// The lines printed once the server is ready: where it listens and where
/// the dashboard is (with the admin token itself for `--demo`, whose user
/// needs it to sign in).
fn banner(
    config: &terrier_server::ServerConfig,
    addr: std::net::SocketAddr,
    token: &terrier_server::admin::token::AdminToken,
    demo: bool,
) -> String {
    let listening = match config.tls.listen {
        Some(tls) => format!("http://{addr} and https://{tls}"),
        None => format!("http://{addr}"),
    };
    let dashboard = format!("http://{}:{}/dashboard", config.domain, addr.port());
    let sign_in = match token.file() {
        _ if demo => format!("admin token: {}", token.reveal()),
        Some(file) => format!("admin token in {}", file.display()),
        None => "admin token from TERRIERD_ADMIN_TOKEN".to_owned(),
    };
    format!(
        "terrierd listening on {listening} for *.{} (Ctrl-C to stop)\ndashboard: {dashboard}  ({sign_in})\n",
        config.domain
    )
}

/// Writes generated text; a closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
