//! `terrier`: the device agent. Parses flags, sets up logging, prints events,
//! and runs [`terrier_agent::run`] until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use terrier_agent::{AgentConfig, Event, Service, Target};
use tokio_util::sync::CancellationToken;
use url::Url;

/// terrier agent: makes this device's local services reachable through a
/// terrierd server, over one outbound WebSocket (works behind NAT and
/// firewalls that only let out HTTP/HTTPS).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Server to connect to, e.g. https://tunnel.example.com or http://localhost:8080.
    /// Repeat it (or separate with commas) to list several nodes, tried in turn.
    #[arg(long, env = "TERRIER_SERVER", default_value = "http://localhost:8080", value_delimiter = ',')]
    server: Vec<Url>,
    /// Device name: 1-63 of [a-z0-9-]. Defaults to this machine's host name.
    #[arg(long, env = "TERRIER_NAME")]
    name: Option<String>,
    /// Expose the HTTP service at [HOST:]PORT on the device's subdomain (HOST defaults to 127.0.0.1).
    #[arg(long, value_name = "[HOST:]PORT")]
    http: Option<Target>,
    /// Expose a TCP service at [ID=][HOST:]PORT on a public port (repeatable; ID defaults to PORT).
    #[arg(long = "tcp", value_name = "[ID=][HOST:]PORT", value_parser = Service::parse_tcp)]
    tcp: Vec<Service>,
    /// Keep N idle data sockets open ahead of visitors, so a new visitor skips a handshake (0-16).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=16))]
    pool: u8,
    /// How to print events on stdout: human-readable text, or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Longest wait between reconnect attempts (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    backoff_max: Duration,
    /// Log filter for stderr (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "TERRIER_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn default_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_owned();
    terrier_proto::name::is_valid_name(&name).then_some(name)
}

fn config(args: Args) -> Result<AgentConfig, String> {
    let name = match args.name.or_else(default_name) {
        Some(name) => name,
        None => return Err("no --name given and the host name is not a valid device name".into()),
    };
    if !terrier_proto::name::is_valid_name(&name) {
        return Err(format!("--name {name:?}: use 1-63 of [a-z0-9-], not starting or ending with '-'"));
    }
    if args.http.is_none() && args.tcp.is_empty() {
        return Err("nothing to expose: give --http [HOST:]PORT and/or --tcp [ID=][HOST:]PORT".into());
    }
    terrier_agent::service::check_unique(&args.tcp)?;
    let mut servers = args.server.into_iter();
    let server = servers.next().ok_or("give --server URL")?;
    Ok(AgentConfig {
        server,
        fallback_servers: servers.collect(),
        name,
        http: args.http.map(Service::http),
        tcp: args.tcp,
        backoff_max: args.backoff_max,
        pool: args.pool.into(),
        ..AgentConfig::default()
    })
}

fn print_event(output: Output, event: &Event) {
    match output {
        Output::Json => println!("{}", serde_json::to_string(event).unwrap_or_default()),
        Output::Text => match event {
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
            Event::Reconnecting { in_secs, attempt } => {
                println!("reconnecting in {in_secs:.1}s (attempt {})", attempt)
            }
        },
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let output = args.output;
    let config = match config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("terrier: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match terrier_agent::run(config, shutdown, |event| print_event(output, &event)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("terrier: {fatal}");
            ExitCode::from(2)
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
