//! `terrier`: the device agent. Parses flags (and `--config FILE`), sets up
//! logging, prints events, and runs [`terrier_agent::run`] until
//! SIGINT/SIGTERM — or, as `terrier check`, tests the way to the server
//! step by step.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use terrier_agent::file::{FileConfig, Servers};
use terrier_agent::Event;
use tokio_util::sync::CancellationToken;

/// terrier agent: makes this device's local services reachable through a
/// terrierd server, over one outbound WebSocket (works behind NAT, HTTP
/// proxies and firewalls that only let out HTTP/HTTPS).
///
/// Every flag can also be set in the --config file (see docs/AGENT.md);
/// flags and environment variables override the file.
#[derive(Debug, Parser)]
// The program is `terrier`; without a name clap would use the crate's.
#[command(name = "terrier", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Read settings from this TOML file (same keys as the flags: server, name, token_file, http, tcp, proxy, ...).
    #[arg(long, global = true, env = "TERRIER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Server to connect to, e.g. wss://tunnel.example.com or http://localhost:8080 (the default).
    /// Repeat it (or separate with commas) to list several nodes, tried in turn.
    #[arg(long, global = true, env = "TERRIER_SERVER", value_delimiter = ',', value_name = "URL")]
    server: Vec<String>,
    /// Device name: 1-63 of [a-z0-9-]. Defaults to this machine's host name.
    #[arg(long, global = true, env = "TERRIER_NAME")]
    name: Option<String>,
    /// Device token, sent as "Authorization: Bearer" on every socket. Prefer --token-file or
    /// TERRIER_TOKEN: a command line is visible to other users of the machine.
    #[arg(long, global = true, env = "TERRIER_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Read the device token from this file (whitespace around it is ignored).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file for wss:// servers, instead of the system's roots.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// HTTP proxy for the connection to the server, e.g. http://user:pass@proxy:3128 (tunnelled with
    /// CONNECT). Default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY minus NO_PROXY; "none" ignores them.
    #[arg(long, global = true, value_name = "URL")]
    proxy: Option<String>,
    /// Expose the HTTP service at [HOST:]PORT (or http://HOST:PORT) on the device's subdomain
    /// (HOST defaults to 127.0.0.1).
    #[arg(long, global = true, value_name = "[HOST:]PORT")]
    http: Option<String>,
    /// Expose a TCP service at [ID=][HOST:]PORT on a public port (repeatable; ID defaults to PORT).
    #[arg(long = "tcp", global = true, value_name = "[ID=][HOST:]PORT")]
    tcp: Vec<String>,
    /// Keep N idle data sockets open ahead of visitors, so a new visitor skips a handshake; each is reused visitor after visitor (0-16, default 0).
    #[arg(long, global = true, value_parser = clap::value_parser!(u8).range(0..=16))]
    pool: Option<u8>,
    /// Print each visitor request the server forwards to this device (method, path, status,
    /// time, size), as ngrok's console does.
    #[arg(long, global = true)]
    show_requests: bool,
    /// How to print events on stdout: "text" (default) or "json" (one object per line).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    output: Option<String>,
    /// Longest wait between reconnect attempts, e.g. 60s (the default) or 5m.
    #[arg(long, global = true, value_name = "DURATION")]
    backoff_max: Option<String>,
    /// Bound on each connection step (DNS, TCP, proxy, TLS, WebSocket handshake); default 10s.
    #[arg(long, global = true, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// Log filter for stderr: error, warn, info (default), debug, trace, or per module
    /// (e.g. "warn,terrier_agent=debug").
    #[arg(long, global = true, env = "TERRIER_LOG", value_name = "FILTER")]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the way to the server step by step (DNS, TCP, proxy, TLS, handshake), then the local
    /// services given with --http/--tcp (optional here), and say which step fails and why. Asks the
    /// server what this device would get without connecting as it: an agent running with the same
    /// name stays connected and keeps its ports.
    Check,
    /// Expose one web service and print its public URL, e.g. `terrier http 8080`. The server, name
    /// and token come from the flags, the environment or --config as usual; the file's own
    /// http/tcp services are not exposed.
    Http {
        /// The service: [HOST:]PORT or http://HOST:PORT.
        #[arg(value_name = "[HOST:]PORT")]
        service: String,
    },
    /// Expose TCP services on public ports and print them, e.g. `terrier tcp 22`. As with
    /// `terrier http`, the file's own http/tcp services are not exposed.
    Tcp {
        /// The services: [ID=][HOST:]PORT, one or more.
        #[arg(value_name = "[ID=][HOST:]PORT", required = true)]
        services: Vec<String>,
    },
}

impl Command {
    /// `terrier http PORT` / `terrier tcp PORT...`: the services named here
    /// (plus any --http/--tcp flags) replace the file's.
    fn quick_start(&self, file: &mut FileConfig, flags: &mut FileConfig) -> Result<(), String> {
        match self {
            Command::Check => return Ok(()),
            Command::Http { service } => {
                if let Some(flag) = &flags.http {
                    return Err(format!("terrier http {service} and --http {flag}: give one web service"));
                }
                flags.http = Some(service.clone());
            }
            Command::Tcp { services } => flags.tcp.extend(services.iter().cloned()),
        }
        file.http = None;
        file.tcp.clear();
        Ok(())
    }
}

impl Args {
    /// The flags as a configuration layer over the file.
    fn layer(&mut self) -> FileConfig {
        FileConfig {
            server: (!self.server.is_empty()).then(|| Servers::Many(std::mem::take(&mut self.server))),
            name: self.name.take(),
            token: self.token.take(),
            token_file: self.token_file.take(),
            ca: self.ca.take(),
            proxy: self.proxy.take(),
            http: self.http.take(),
            tcp: std::mem::take(&mut self.tcp),
            pool: self.pool,
            show_requests: self.show_requests.then_some(true),
            backoff_max: self.backoff_max.take(),
            connect_timeout: self.connect_timeout.take(),
            output: self.output.take(),
            log: self.log.take(),
        }
    }
}

/// An event as a JSON line: the event's fields and when it happened.
#[derive(serde::Serialize)]
struct Stamped<'a> {
    /// RFC 3339, UTC, milliseconds.
    time: String,
    #[serde(flatten)]
    event: &'a Event,
}

fn print_event(json: bool, event: &Event) {
    if json {
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        println!("{}", serde_json::to_string(&Stamped { time, event }).unwrap_or_default());
        return;
    }
    match event {
        Event::Connected(c) => {
            println!("connected to {} as {} (subdomain {})", c.server, c.name, c.subdomain);
            if let (Some(url), Some(target)) = (&c.url, &c.http_target) {
                println!("  http  {url}  ->  {target}");
            }
            for p in &c.tcp {
                println!("  tcp   {}:{}  ->  {}  ({})", p.host, p.port, p.target, p.service);
            }
        }
        Event::Disconnected { reason } => println!("disconnected: {reason}"),
        Event::Reconnecting { in_secs, at, attempt } => {
            println!("reconnecting in {in_secs:.1}s, at {at} (attempt {attempt})")
        }
        Event::Request { method, path, status, duration_ms, size } => {
            let size = size.map_or("streamed".to_owned(), |s| format!("{s} B"));
            // A visitor wrote the path: nothing in it may steer the terminal.
            let printable = |s: &str| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
            println!("{:<7} {}  {status}  {duration_ms} ms  {size}", printable(method), printable(path));
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    let mut flags = args.layer();
    let mut file = match args.config.as_deref().map(FileConfig::load).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(e) => return usage_error(&e),
    };
    if let Some(Err(e)) = args.command.as_ref().map(|c| c.quick_start(&mut file, &mut flags)) {
        return usage_error(&e);
    }
    let checking = matches!(args.command, Some(Command::Check));
    let resolved = match file.overlay(flags).resolve_with(|name| std::env::var(name).ok(), !checking) {
        Ok(resolved) => resolved,
        Err(e) => return usage_error(&e),
    };
    for warning in &resolved.warnings {
        eprintln!("terrier: warning: {warning}");
    }
    let filter = tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    let filter = resolved.log.parse().unwrap_or_else(|e| {
        eprintln!("terrier: --log {:?}: {e}; using info", resolved.log);
        filter
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour_on_stderr()))
        .with(filter)
        .init();

    if let Some(Command::Check) = args.command {
        return check(&resolved.agent).await;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let json = resolved.json;
    match terrier_agent::run(resolved.agent, shutdown, |event| print_event(json, &event)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("terrier: {fatal}");
            ExitCode::from(2)
        }
    }
}

/// Colour codes only for a person at a terminal: never into a file, a
/// pipe or the journal, and never with `NO_COLOR` set.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("terrier: {e}");
    ExitCode::from(2)
}

/// `terrier check`: one line per step on stdout, the verdict last; exit 1 on failure.
async fn check(config: &terrier_agent::AgentConfig) -> ExitCode {
    println!("checking {} as {}", config.server, config.name);
    match terrier_agent::check::run(config, |report| println!("{report}")).await {
        Ok(()) => {
            println!("check passed: this device can connect");
            ExitCode::SUCCESS
        }
        Err(failed) => {
            println!("check failed at {}: {}", failed.step, failed.detail);
            ExitCode::from(1)
        }
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
    shutdown.cancel();
}
