//! Server configuration: typed, deserialised from TOML (`--config`), then
//! overridden by flags, and validated once before anything starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use terrier_proto::limits;

/// Everything `terrierd` needs to run. Every limit is here with a safe default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the one HTTP listener for visitors, agents and the API.
    pub listen: SocketAddr,
    /// Base domain: the server itself answers on it, devices on `<sub>.<domain>`.
    pub domain: String,
    /// Scheme in public URLs (`http`, or `https` behind TLS).
    pub public_scheme: String,
    /// Port in public URLs; defaults to the listen port. 80/443 are omitted.
    pub public_port: Option<u16>,
    /// Address the public TCP service ports are bound on.
    pub tcp_bind: IpAddr,
    /// Host name agents are told to reach their TCP ports at; defaults to `domain`.
    pub tcp_host: Option<String>,
    /// First port of the public TCP port range (inclusive).
    pub tcp_port_min: u16,
    /// Last port of the public TCP port range (inclusive).
    pub tcp_port_max: u16,
    /// Folder of the embedded store file (`terrier.redb`).
    pub data_dir: PathBuf,
    /// Where shared state lives: `embedded` (a file in `data_dir`, one node)
    /// or a `redis://host:port/db` URL (many nodes).
    pub store: String,
    /// Prefix of every Redis key, so deployments can share one Redis.
    pub redis_prefix: String,
    /// How long a disconnected device keeps its subdomain and ports.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Folder with operator templates (`<status>.html` for 400, 404, 431,
    /// 502, 503 or 504, or `page.html` for all).
    pub pages_dir: Option<PathBuf>,
    /// Node id written into leases (defaults to a random id per start).
    pub node_id: Option<String>,
    /// On shutdown, how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// On shutdown, agents are told (`go_away`) to reconnect after a random
    /// delay up to this, so they do not all return in the same second.
    #[serde(with = "humantime_serde")]
    pub reconnect_spread: Duration,
    /// Limits and timeouts.
    pub limits: Limits,
    /// How this node works with others sharing a Redis store.
    pub cluster: Cluster,
    /// How devices authenticate.
    pub auth: AuthConfig,
    /// The TLS listener.
    pub tls: TlsConfig,
    /// The operator's side: admin API, dashboard, metrics.
    pub admin: Admin,
    /// Visitor access rules per device name (`[access."<name>"]`).
    pub access: std::collections::BTreeMap<String, crate::access::AccessConfig>,
}

/// TLS settings; TLS is on when `listen` is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address of the TLS listener (HTTPS and wss for visitors and agents).
    pub listen: Option<SocketAddr>,
    /// Certificate/key PEM file pairs, chosen by SNI (e.g. a wildcard
    /// `*.<domain>` plus the apex in one, or one each).
    pub certificates: Vec<CertificateFiles>,
    /// Also serve a generated development certificate for the domain and
    /// `*.<domain>`, signed by `<data_dir>/tls/dev-ca.pem`.
    pub self_signed: bool,
    /// Answer plain-HTTP visitors of devices with a redirect to HTTPS.
    pub redirect_http: bool,
    /// Automatic certificates by ACME (`[tls.acme]`); off when absent.
    pub acme: Option<crate::tls::acme::config::AcmeConfig>,
}

/// One certificate chain and its key, as PEM files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// Certificate chain (leaf first).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How devices authenticate (`auth.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// `token`, unless the domain is `localhost` or a loopback IP (a
    /// development setup): `open`.
    #[default]
    Auto,
    /// Every device needs a token minted with `terrierd token create`.
    Token,
    /// Anyone who reaches the server may register any name. Development only.
    Open,
}

impl AuthMode {
    /// The mode in force for `domain`: `auto` decided.
    pub fn resolve(self, domain: &str) -> AuthMode {
        match self {
            AuthMode::Auto if is_loopback_domain(domain) => AuthMode::Open,
            AuthMode::Auto => AuthMode::Token,
            other => other,
        }
    }
}

/// Is `domain` exactly `localhost` or a loopback IP literal (127.0.0.0/8,
/// `::1`)? Not `*.localhost`: resolvers need not keep it on this machine,
/// and a domain the operator picked must not quietly open the server.
fn is_loopback_domain(domain: &str) -> bool {
    let loopback = match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
        None => domain.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    };
    domain == "localhost" || loopback
}

/// `url` for messages: a password in it (`redis://:secret@host`) replaced
/// by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// Device authentication settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `auto` (token, but open when the domain is localhost or a loopback IP),
    /// `token` or `open`.
    pub mode: AuthMode,
    /// How often the node re-reads the token store, so new tokens work and
    /// revoked ones disconnect their devices within this time.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { mode: AuthMode::Auto, refresh_interval: Duration::from_secs(1) }
    }
}

/// Admin API, dashboard and metrics settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// File holding the admin token (`Authorization: Bearer`). When unset,
    /// `<data_dir>/admin.token` is used, generated at first start (mode 0600).
    pub token_file: Option<PathBuf>,
    /// Also serve `/metrics` without a token on this separate address (the
    /// Prometheus convention: a port only the scraper can reach). When unset,
    /// `/metrics` is served on the main listener behind the admin token.
    pub metrics_listen: Option<SocketAddr>,
    /// HTTP requests kept per device for the live request log.
    pub request_log: usize,
    /// Serve the dashboard at `/dashboard` (the API stays on either way).
    pub dashboard: bool,
    /// Most devices one `GET /api/v1/devices` page holds (also the page
    /// size when the caller gives no `limit`), so a large fleet's list is
    /// paged instead of sent in one answer.
    pub max_page_size: usize,
    /// The admin token itself, from `TERRIERD_ADMIN_TOKEN` (never from the
    /// file: secrets stay out of configuration files); wins over `token_file`.
    #[serde(skip)]
    pub token: Option<Secret>,
}

/// A secret string whose `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            token_file: None,
            metrics_listen: None,
            request_log: 100,
            dashboard: true,
            max_page_size: 500,
            token: None,
        }
    }
}

/// Cluster settings; they matter only with a shared (Redis) store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// Base URL agents are redirected to when this node is the least loaded
    /// (default: `http://<listen address>`).
    pub advertise_url: Option<String>,
    /// Base URL other nodes forward visitor requests to (default: `http://<listen address>`).
    pub internal_url: Option<String>,
    /// How often the node refreshes its registration.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node that has not refreshed for this long is dead.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// Redirect a new device only when this node has more than this many
    /// devices beyond the least loaded node.
    pub balance_tolerance: u64,
    /// File of secrets that authenticate requests nodes forward to each
    /// other, one per line: the first signs, every one verifies (to roll a
    /// new secret out, add it below the old one on every node, then move it
    /// up). When unset, the nodes share one random secret kept in the store.
    pub secret_file: Option<PathBuf>,
    /// How old (or how far ahead, clock skew) a forwarded request's
    /// envelope may be before the receiving node refuses it.
    #[serde(with = "humantime_serde")]
    pub forward_max_age: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            advertise_url: None,
            internal_url: None,
            heartbeat_interval: Duration::from_secs(2),
            node_ttl: Duration::from_secs(10),
            balance_tolerance: 5,
            secret_file: None,
            forward_max_age: Duration::from_secs(10),
        }
    }
}

/// Limits and timeouts a visitor or a device can push against.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Interval between WebSocket pings on control sockets; three silent
    /// intervals mean the peer is dead.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long a visitor waits for the device to open the data socket (504 after).
    #[serde(with = "humantime_serde")]
    pub stream_open_timeout: Duration,
    /// How long a request sent to the device may wait for its answer's
    /// head (504 after); the answer's body then takes as long as it needs.
    #[serde(with = "humantime_serde")]
    pub device_answer_timeout: Duration,
    /// Time a client has to send a complete request head (slowloris guard).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers) accepted, in bytes (431 past it).
    pub max_header_bytes: usize,
    /// Largest WebSocket frame on a control socket, in bytes.
    pub max_control_frame_bytes: usize,
    /// Largest WebSocket frame on a data socket, in bytes.
    pub max_data_frame_bytes: usize,
    /// Visitor streams of one device waiting for their data socket at once (503 past it).
    pub max_pending_streams: usize,
    /// Idle pooled data sockets one device may keep open (`--pool` on the agent).
    pub max_pool_sockets: usize,
    /// How long a pooled data socket may sit idle before the server closes it.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Visitor streams (HTTP connections, TCP connections) one device may
    /// have open at once (503 or a closed connection past it).
    pub max_streams_per_device: usize,
    /// Of those, the streams one visitor address (IPv6: one /64) may hold
    /// at once, so one visitor cannot take them all (a closed connection
    /// past it).
    pub max_streams_per_visitor: usize,
    /// Keep-alive HTTP connections to a device kept for the next forwarded
    /// request (busy ones included, the oldest busy one making room for a
    /// newer one); past it one closes after its answer.
    pub max_idle_http_per_device: usize,
    /// How long a visitor's HTTP connection (HTTP/1.1 or HTTP/2) may stay
    /// open with no request in flight before the server closes it.
    #[serde(with = "humantime_serde")]
    pub visitor_idle_timeout: Duration,
    /// Interval between HTTP/2 pings to a visitor; one unanswered for as
    /// long closes the connection (a peer that vanished without a FIN).
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long a visitor may leave a request body it started waiting for
    /// its next bytes before the request is aborted.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long an answer may wait for the visitor to take its next part
    /// (a visitor that stopped reading) before its connection is cut.
    #[serde(with = "humantime_serde")]
    pub answer_write_timeout: Duration,
    /// How long a kept HTTP connection to a device stays open unused.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// Most control messages queued for one device; past it visitors wait for room (within `stream_open_timeout`).
    pub control_queue: usize,
    /// Idle time before TCP keepalive probes start on every accepted
    /// connection, so peers that vanished without a FIN are dropped.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    /// How long a relayed TCP or passthrough stream may move no bytes
    /// either way before it is closed.
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// How long one store (Redis) command may take before it fails.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// Control handshakes one source IP may make per minute (429 past it); 0 = no limit.
    pub control_handshakes_per_ip_per_minute: u32,
    /// Devices one fleet (prefix) token may have online on this node at once (429 past it).
    pub max_devices_per_token: usize,
    /// Times a minute another agent may take a device name over from the
    /// one online before the next is refused with 409 (two agents sharing
    /// one name); `0` refuses every takeover by another agent.
    pub max_takeovers_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            domain: "localhost".into(),
            public_scheme: "http".into(),
            public_port: None,
            tcp_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tcp_host: None,
            tcp_port_min: 20000,
            tcp_port_max: 29999,
            data_dir: PathBuf::from("terrierd-data"),
            store: "embedded".into(),
            redis_prefix: "terrier:".into(),
            grace_period: Duration::from_secs(600),
            pages_dir: None,
            node_id: None,
            drain_timeout: Duration::from_secs(10),
            reconnect_spread: Duration::from_secs(5),
            limits: Limits::default(),
            cluster: Cluster::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            admin: Admin::default(),
            access: Default::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(limits::HEARTBEAT_INTERVAL_SECS.into()),
            stream_open_timeout: Duration::from_secs(limits::STREAM_OPEN_TIMEOUT_SECS.into()),
            device_answer_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_control_frame_bytes: limits::MAX_CONTROL_FRAME_BYTES,
            max_data_frame_bytes: limits::MAX_DATA_FRAME_BYTES,
            max_pending_streams: 256,
            max_pool_sockets: 16,
            pool_idle_timeout: Duration::from_secs(300),
            max_streams_per_device: 1024,
            // A quarter of the device's streams: a visitor behind a big NAT
            // still gets plenty, and one address leaves three quarters free.
            max_streams_per_visitor: 256,
            max_idle_http_per_device: 32,
            http_idle_timeout: Duration::from_secs(60),
            visitor_idle_timeout: Duration::from_secs(60),
            http2_keepalive_interval: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            answer_write_timeout: Duration::from_secs(30),
            control_queue: 256,
            store_timeout: Duration::from_secs(3),
            tcp_keepalive: Duration::from_secs(30),
            // Keepalive already drops peers that vanished; this is for live
            // but silent ones, and is long enough for an SSH session without
            // ServerAliveInterval left alone for a meeting or lunch.
            tcp_idle_timeout: Duration::from_secs(3600),
            control_handshakes_per_ip_per_minute: 600,
            max_devices_per_token: 1000,
            max_takeovers_per_minute: 3,
        }
    }
}

/// Smallest `limits.max_header_bytes`: hyper's HTTP/1 read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Largest `admin.request_log`: entries are small, but kept per device.
pub const MAX_REQUEST_LOG: usize = 10_000;

/// A configuration that cannot work, said in words the operator can act on.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ServerConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// Parses TOML text; unknown keys are errors.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Checks the values make sense together; call once before [`crate::run`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let domain_ok = !self.domain.is_empty() && self.domain.split('.').all(terrier_proto::name::is_valid_subdomain);
        if !domain_ok {
            return Err(ConfigError(format!(
                "domain {:?} must be lowercase DNS labels separated by dots",
                self.domain
            )));
        }
        // The id goes into leases, logs and the forwarding envelope's fields,
        // which are `;`-separated header text.
        if let Some(id) = &self.node_id {
            let id_ok = (1..=64).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !id_ok {
                return Err(ConfigError(format!("node_id {id:?} must be 1 to 64 letters, digits, '-', '_' or '.'")));
            }
        }
        if self.tcp_port_min == 0 || self.tcp_port_min > self.tcp_port_max {
            return Err(ConfigError(format!(
                "TCP port range {}-{} is empty or starts at 0",
                self.tcp_port_min, self.tcp_port_max
            )));
        }
        if !matches!(self.public_scheme.as_str(), "http" | "https") {
            return Err(ConfigError(format!("public_scheme {:?} must be http or https", self.public_scheme)));
        }
        if self.store != "embedded" && !self.store.starts_with("redis://") && !self.store.starts_with("rediss://") {
            return Err(ConfigError(format!(
                "store {:?} must be \"embedded\" or a redis://host:port/db URL",
                self.store
            )));
        }
        if self.cluster.heartbeat_interval.is_zero() || self.cluster.node_ttl <= self.cluster.heartbeat_interval {
            return Err(ConfigError("cluster.node_ttl must be longer than cluster.heartbeat_interval (> 0)".into()));
        }
        for (key, url) in [
            ("cluster.advertise_url", &self.cluster.advertise_url),
            ("cluster.internal_url", &self.cluster.internal_url),
        ] {
            if let Some(url) = url {
                if url::Url::parse(url).map(|u| !matches!(u.scheme(), "http" | "https" | "ws" | "wss")).unwrap_or(true)
                {
                    return Err(ConfigError(format!("{key} {url:?} must be an http(s) URL")));
                }
            }
        }
        match &self.tls {
            TlsConfig { listen: None, certificates, self_signed, redirect_http, acme }
                if !certificates.is_empty() || *self_signed || *redirect_http || acme.is_some() =>
            {
                return Err(ConfigError("tls.listen must be set to use certificates, acme or redirect_http".into()));
            }
            TlsConfig { listen: Some(_), certificates, self_signed: false, acme: None, .. }
                if certificates.is_empty() =>
            {
                return Err(ConfigError(
                    "tls.listen needs tls.certificates (cert and key files), tls.acme or tls.self_signed = true".into(),
                ));
            }
            _ => {}
        }
        if let Some(acme) = &self.tls.acme {
            acme.validate().map_err(ConfigError)?;
        }
        crate::access::AccessRules::compile(&self.access).map_err(ConfigError)?;
        let l = &self.limits;
        for (name, value) in [
            ("limits.heartbeat_interval", l.heartbeat_interval),
            ("limits.stream_open_timeout", l.stream_open_timeout),
            ("limits.device_answer_timeout", l.device_answer_timeout),
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.store_timeout", l.store_timeout),
            ("limits.tcp_keepalive", l.tcp_keepalive),
            ("limits.tcp_idle_timeout", l.tcp_idle_timeout),
            ("limits.pool_idle_timeout", l.pool_idle_timeout),
            ("cluster.forward_max_age", self.cluster.forward_max_age),
            ("limits.visitor_idle_timeout", l.visitor_idle_timeout),
            ("limits.http2_keepalive_interval", l.http2_keepalive_interval),
            ("limits.body_read_timeout", l.body_read_timeout),
            ("limits.answer_write_timeout", l.answer_write_timeout),
            ("auth.refresh_interval", self.auth.refresh_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{name} must be more than zero")));
            }
        }
        // hyper refuses (panics on) an HTTP/1 read buffer below 8 KiB.
        if l.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError(format!("limits.max_header_bytes must be at least {MIN_HEADER_BYTES}")));
        }
        if l.max_control_frame_bytes < 1024 || l.max_data_frame_bytes < limits::DATA_CHUNK_BYTES {
            return Err(ConfigError(format!(
                "limits.max_control_frame_bytes must be >= 1024 and limits.max_data_frame_bytes >= {}",
                limits::DATA_CHUNK_BYTES
            )));
        }
        for (name, value) in [
            ("limits.max_pending_streams", l.max_pending_streams),
            ("limits.max_streams_per_device", l.max_streams_per_device),
            ("limits.max_streams_per_visitor", l.max_streams_per_visitor),
            ("limits.control_queue", l.control_queue),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be more than zero")));
            }
        }
        if self.admin.max_page_size == 0 {
            return Err(ConfigError("admin.max_page_size must be at least 1".into()));
        }
        if self.admin.request_log > MAX_REQUEST_LOG {
            return Err(ConfigError(format!("admin.request_log must be at most {MAX_REQUEST_LOG}")));
        }
        Ok(())
    }

    /// The admin token file: the configured one or `<data_dir>/admin.token`.
    pub fn admin_token_file(&self) -> PathBuf {
        self.admin.token_file.clone().unwrap_or_else(|| self.data_dir.join("admin.token"))
    }

    /// The scheme shown in public URLs: `https` whenever TLS is on.
    pub fn public_scheme(&self) -> &str {
        if self.tls.listen.is_some() {
            "https"
        } else {
            &self.public_scheme
        }
    }

    /// The port shown in public URLs: the TLS port whenever TLS is on.
    pub fn public_port(&self) -> u16 {
        self.public_port.unwrap_or(self.tls.listen.unwrap_or(self.listen).port())
    }

    /// Public URL of `host` (a device subdomain's full host name).
    pub fn public_url(&self, host: &str) -> String {
        let (scheme, port) = (self.public_scheme(), self.public_port());
        if matches!((scheme, port), ("http", 80) | ("https", 443)) {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        }
    }

    /// Public URL of a device's HTTP service.
    pub fn device_url(&self, subdomain: &str) -> String {
        self.public_url(&format!("{subdomain}.{}", self.domain))
    }

    /// Base URL agents are redirected to.
    pub fn advertise_url(&self) -> String {
        self.cluster.advertise_url.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// Base URL peers forward visitor requests to.
    pub fn internal_url(&self) -> String {
        self.cluster.internal_url.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// Host name agents are told to reach TCP ports at.
    pub fn tcp_host(&self) -> &str {
        self.tcp_host.as_deref().unwrap_or(&self.domain)
    }

    /// A warning for a server given a real domain whose listeners (HTTP,
    /// TLS, TCP ports) are all bound to loopback: its URLs name a public
    /// host that nothing outside this machine can reach. Not an error: a
    /// reverse proxy on the same machine may forward to it.
    pub fn loopback_warning(&self) -> Option<String> {
        let domain = self.domain.as_str();
        let local_name = domain == "localhost" || domain.ends_with(".localhost");
        let ip = domain.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok();
        let tls_loopback = self.tls.listen.is_none_or(|a| a.ip().is_loopback());
        if local_name || ip || !self.listen.ip().is_loopback() || !self.tcp_bind.is_loopback() || !tls_loopback {
            return None;
        }
        Some(format!(
            "domain {domain} is a public name, but the listener ({}) and the TCP ports ({}) are bound to loopback: \
             only this machine can reach them. Use --listen 0.0.0.0:80 and --tcp-bind 0.0.0.0 (unless a proxy on \
             this machine forwards to terrierd)",
            self.listen, self.tcp_bind
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_localhost() {
        let c = ServerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.device_url("abc"), "http://abc.localhost:8080");
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c = ServerConfig::from_toml(
            "domain = \"tunnel.example.com\"\ngrace_period = \"2m\"\npublic_port = 80\n[limits]\nmax_pending_streams = 5\n",
        )
        .unwrap();
        assert_eq!(c.grace_period, Duration::from_secs(120));
        assert_eq!(c.limits.max_pending_streams, 5);
        assert_eq!(c.device_url("abc"), "http://abc.tunnel.example.com");
        assert!(ServerConfig::from_toml("domian = \"x\"").is_err());
        assert!(ServerConfig::from_toml("[limits]\nmax_pending = 1").is_err());
    }

    #[test]
    fn a_real_domain_on_loopback_only_is_warned_about() {
        let mut c = ServerConfig::default();
        assert_eq!(c.loopback_warning(), None, "localhost on loopback is the development setup");
        c.domain = "tunnel.example.com".into();
        assert!(c.loopback_warning().is_some_and(|w| w.contains("tunnel.example.com") && w.contains("--listen")));
        c.tcp_bind = "0.0.0.0".parse().unwrap();
        assert_eq!(c.loopback_warning(), None, "TCP ports reach the world");
        c.tcp_bind = "127.0.0.1".parse().unwrap();
        c.listen = "0.0.0.0:80".parse().unwrap();
        assert_eq!(c.loopback_warning(), None);
        c.listen = "127.0.0.1:8080".parse().unwrap();
        for local in ["dev.localhost", "127.0.0.1", "[::1]"] {
            c.domain = local.into();
            assert_eq!(c.loopback_warning(), None, "{local}");
        }
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut c = ServerConfig { domain: "Bad_Domain".into(), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("domain"));
        c.domain = "localhost".into();
        c.tcp_port_min = 30000;
        c.tcp_port_max = 20000;
        assert!(c.validate().unwrap_err().to_string().contains("port range"));
        c.tcp_port_max = 30000;
        for bad in ["", "node;a", "node\n", "n\u{e4}", &"n".repeat(65)] {
            c.node_id = Some(bad.into());
            assert!(c.validate().unwrap_err().to_string().contains("node_id"), "{bad:?}");
        }
        c.node_id = Some("node-a_1.eu".into());
        c.validate().unwrap();
        c.limits.stream_open_timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("stream_open_timeout"));
        c.limits.stream_open_timeout = Duration::from_secs(1);
        c.limits.max_streams_per_visitor = 0;
        assert!(c.validate().unwrap_err().to_string().contains("max_streams_per_visitor"));
    }

    #[test]
    fn auto_is_open_for_exactly_localhost_and_loopback_ips() {
        for domain in ["localhost", "127.0.0.1", "127.1.2.3", "127.255.255.255", "::1", "[::1]"] {
            assert_eq!(AuthMode::Auto.resolve(domain), AuthMode::Open, "{domain}");
        }
        for domain in [
            "tunnel.localhost",
            "a.b.localhost",
            "localhost.example.com",
            "evillocalhost",
            "tunnel.example.com",
            "128.0.0.1",
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "127.1",
            "[127.0.0.1]",
        ] {
            assert_eq!(AuthMode::Auto.resolve(domain), AuthMode::Token, "{domain}");
        }
        assert_eq!(AuthMode::Token.resolve("127.0.0.1"), AuthMode::Token);
        assert_eq!(AuthMode::Open.resolve("tunnel.example.com"), AuthMode::Open);
    }

    #[test]
    fn store_urls_lose_their_password_in_messages() {
        assert_eq!(redact_url("redis://:hunter2@10.0.0.5:6379/0"), "redis://:***@10.0.0.5:6379/0");
        assert_eq!(redact_url("redis://app:hunter2@db/1"), "redis://app:***@db/1");
        assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
    }
}
