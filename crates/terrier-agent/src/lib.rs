//! The terrier agent as a library: [`run`] keeps a device connected to a
//! terrierd server forever (reconnecting with backoff) and relays visitors to
//! the device's local services.
//!
//! [`connect`] opens sockets (over a [`transport`], through [`proxy`] and
//! [`tls`] when needed, carrying the [`token`]; [`upgrade`] is a data
//! socket's handshake), [`session`] runs one control socket, [`stream`]
//! one visitor stream, [`pool`] keeps idle data sockets ahead of visitors,
//! [`reconnect`] spaces the retries, [`service`] parses what the device
//! exposes, [`file`](mod@file) reads `--config`, and [`check`] walks the
//! connection steps one by one for `terrier check`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod connect;
pub mod file;
pub mod pool;
pub mod proxy;
pub use terrier_transport::reconnect;
pub mod service;
pub mod session;
pub mod stream;
pub mod tls;
pub mod token;
pub mod transport;
pub mod upgrade;

use std::time::Duration;

use serde::Serialize;
use terrier_proto::limits;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

pub use proxy::ProxyConfig;
pub use service::{Service, Target};
pub use tls::TlsConfig;
pub use token::Token;

/// What the agent connects where, and how it retries.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server URL (`http://`, `https://`, `ws://` or `wss://`).
    pub server: Url,
    /// More servers (other nodes) to try in turn when one cannot be reached.
    pub fallback_servers: Vec<Url>,
    /// Device name.
    pub name: String,
    /// The HTTP service, if any.
    pub http: Option<Service>,
    /// TCP services.
    pub tcp: Vec<Service>,
    /// First reconnect delay ceiling.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// A connection up this long after the server's welcome resets the backoff.
    pub stable_after: Duration,
    /// Timeout for dialling and WebSocket handshakes.
    pub connect_timeout: Duration,
    /// Largest control frame accepted.
    pub max_control_frame_bytes: usize,
    /// Largest data frame accepted.
    pub max_data_frame_bytes: usize,
    /// Idle data sockets kept open ahead of visitors (0: open one per visitor).
    pub pool: usize,
    /// Device credential sent on every socket.
    pub token: Option<Token>,
    /// HTTP proxies (none: connect directly).
    pub proxy: ProxyConfig,
    /// Trusted roots for `wss://` (`None`: the system's).
    pub tls: Option<TlsConfig>,
    /// Ask the server to tell of each visitor request (`Event::Request`).
    pub show_requests: bool,
    /// This running agent's id, sent on every control handshake, so the
    /// server tells it coming back from another agent using the same name
    /// (random for each configuration made).
    pub instance: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            server: Url::parse("http://localhost:8080").expect("static URL"),
            fallback_servers: Vec::new(),
            name: String::new(),
            http: None,
            tcp: Vec::new(),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            stable_after: reconnect::STABLE_AFTER,
            connect_timeout: Duration::from_secs(10),
            max_control_frame_bytes: limits::MAX_CONTROL_FRAME_BYTES,
            max_data_frame_bytes: limits::MAX_DATA_FRAME_BYTES,
            pool: 0,
            token: None,
            proxy: ProxyConfig::default(),
            tls: None,
            show_requests: false,
            instance: terrier_transport::ids::random_id()[..16].to_owned(),
        }
    }
}

impl AgentConfig {
    /// The local target of a service id.
    pub fn target(&self, service: &str) -> Option<&Target> {
        self.http.iter().chain(self.tcp.iter()).find(|s| s.id == service).map(|s| &s.target)
    }
}

/// What happened to the agent, for the user (text or JSON lines) and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The control socket is up; these are the public addresses.
    Connected(Connected),
    /// The control socket ended.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A visitor request the server forwarded to this device (with
    /// `show_requests`).
    Request {
        /// Method, e.g. `GET`.
        method: String,
        /// Path without the query string.
        path: String,
        /// The answer's status.
        status: u16,
        /// Milliseconds until the answer's head.
        duration_ms: u64,
        /// The answer's `Content-Length`, when it had one.
        size: Option<u64>,
    },
    /// The next attempt starts after this delay.
    Reconnecting {
        /// Delay in seconds.
        in_secs: f64,
        /// When the attempt starts: RFC 3339, UTC, whole seconds.
        at: String,
        /// Failed attempts since the last stable connection.
        attempt: u32,
    },
}

/// The public side of a connected device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connected {
    /// Server that accepted the control socket.
    pub server: String,
    /// Device name.
    pub name: String,
    /// Session id.
    pub session: String,
    /// Subdomain label.
    pub subdomain: String,
    /// Public URL of the HTTP service (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Local target of the HTTP service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_target: Option<String>,
    /// TCP services.
    pub tcp: Vec<PublicPort>,
    /// Grace period in seconds.
    pub grace_secs: u32,
}

/// One TCP service's public address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublicPort {
    /// Service id.
    pub service: String,
    /// Local target.
    pub target: String,
    /// Public host.
    pub host: String,
    /// Public port.
    pub port: u16,
}

/// The agent stopped for good: retrying cannot fix this.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Keeps the device connected until `shutdown`; reports what happens through
/// `on_event`. Returns an error only when retrying cannot help (the server
/// rejected the request as malformed).
pub async fn run(
    config: AgentConfig,
    shutdown: CancellationToken,
    mut on_event: impl FnMut(Event),
) -> Result<(), Fatal> {
    let mut backoff = reconnect::Backoff::new(config.backoff_min, config.backoff_max);
    let streams = TaskTracker::new();
    let servers: Vec<Url> =
        std::iter::once(config.server.clone()).chain(config.fallback_servers.iter().cloned()).collect();
    let mut current = 0;
    let result = loop {
        let session =
            session::connect_and_serve(&config, &servers[current], &streams, &shutdown, &mut backoff, &mut on_event);
        let outcome = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            outcome = session => outcome,
        };
        let mut delay_override = None;
        match outcome {
            session::Outcome::Fatal(reason) => break Err(Fatal(reason)),
            session::Outcome::Ended { reason, go_away } => {
                on_event(Event::Disconnected { reason });
                delay_override = go_away;
            }
            session::Outcome::Failed(reason) => {
                on_event(Event::Disconnected { reason });
                // That server is unreachable or refused: try the next one.
                current = (current + 1) % servers.len();
            }
            // Another agent holds the name: retrying soon would only take
            // it from that agent again, so wait the longest delay.
            session::Outcome::Conflict(reason) => {
                on_event(Event::Disconnected { reason });
                delay_override = Some(config.backoff_max);
            }
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
        let delay = delay_override.unwrap_or_else(|| backoff.next_delay());
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + delay).to_string();
        on_event(Event::Reconnecting { in_secs: delay.as_secs_f64(), at, attempt: backoff.attempt() });
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    };
    streams.close();
    // Streams in flight end with their sockets once the runtime drops them;
    // give them a moment to finish cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(1), streams.wait()).await;
    result
}
