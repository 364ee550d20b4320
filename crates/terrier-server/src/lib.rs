//! `terrierd`, the terrier server, as a library: [`run`] serves one node on a
//! listener the caller bound, until the caller's shutdown token fires.
//!
//! Map of the crate: [`ingress`] is where visitors arrive (HTTP by host, TCP
//! ports), [`tunnel`] is where agents connect (control and data sockets, the
//! online sessions), [`store`] keeps leases, [`pages`] renders the error
//! pages, [`config`] holds every setting.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod forwarding;
pub mod ingress;
pub mod live;
pub mod metrics;
pub mod overrides;
pub mod pages;
pub mod private_file;
pub mod reload;
pub mod store;
pub mod tls;
pub mod tunnel;
pub mod visitors;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ServerConfig;
use store::Store;

/// Everything one running node shares between its tasks.
pub struct Node {
    /// The validated configuration as read at start. The keys a `SIGHUP`
    /// may change are read through `live` (limits, grace period) and
    /// `access` instead.
    pub config: ServerConfig,
    /// Limits and grace period in force now.
    pub live: live::Live,
    /// Builds the configuration again on `SIGHUP`.
    pub reloader: reload::Reloader,
    /// This node's id (in leases, logs).
    pub node_id: String,
    /// Leases and indexes.
    pub store: Arc<dyn Store>,
    /// Devices online on this node.
    pub sessions: Arc<tunnel::registry::Registry>,
    /// Bound public TCP ports.
    pub ports: ingress::tcp::PortListeners,
    /// Error page templates.
    pub pages: pages::LivePages,
    /// Live nodes of the cluster (just this one with the embedded store).
    pub peers: cluster::nodes::Peers,
    /// HTTP client that forwards visitors to other nodes.
    pub peer_client: cluster::forward::PeerClient,
    /// Seals the visitor into requests forwarded to peers, and opens the
    /// envelopes of requests peers forward here.
    pub envelopes: cluster::envelope::Envelopes,
    /// Set while the store may not reflect this node's sessions (after a
    /// store failure, or when the registry lost this node); the heartbeat
    /// then resyncs before registering.
    pub needs_resync: std::sync::atomic::AtomicBool,
    /// Lease releases that failed while the store was away, to retry.
    pub unreleased: std::sync::Mutex<Vec<cluster::nodes::Unreleased>>,
    /// Every task the node spawns, awaited on shutdown.
    pub tasks: TaskTracker,
    /// Device tokens, auth mode, handshake rate limit.
    pub auth: auth::Auth,
    /// The operator's TLS certificate files, reloaded on `SIGHUP`.
    pub certificates: Arc<tls::sni::OperatorCerts>,
    /// Visitor access rules per device.
    pub access: access::AccessRules,
    /// Cancelled when the node must stop.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain timeout after shutdown ran out: relays still
    /// open then are cut, so `run` returns with nothing left running.
    pub hard_stop: CancellationToken,
    /// Admin token and API state.
    pub admin: admin::Admin,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
}

impl Node {
    /// How this node splices upgraded connections under `limits`.
    pub fn splice(&self, limits: &config::Limits) -> forwarding::Splice<'_> {
        forwarding::Splice { tasks: &self.tasks, hard_stop: &self.hard_stop, idle_timeout: limits.tcp_idle_timeout }
    }
}

/// Serves one node on `listener` with the store `config.store` names (the
/// embedded file in `config.data_dir` by default), until `shutdown` is
/// cancelled; then stops accepting, closes control sockets, lets requests
/// drain and returns.
pub async fn run(config: ServerConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_reload(config, None, listener, shutdown).await
}

/// [`run`], and on `SIGHUP` the configuration is built again by `source`
/// (as `config` was) and its live keys put in force (see [`reload`]).
pub async fn run_with_reload(
    config: ServerConfig,
    source: Option<reload::Source>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let store = open_store(&config).await?;
    serve(config, store, source, listener, shutdown).await
}

/// Opens the store backend the configuration names.
pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if config.store == "embedded" {
        private_file::create_dir(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let path = config.data_dir.join("terrier.redb");
        let store = store::embedded::EmbeddedStore::open(&path)
            .with_context(|| format!("opening store {} (is another terrierd using it?)", path.display()))?;
        Ok(Arc::new(store))
    } else {
        let store = store::redis::RedisStore::connect(&config.store, &config.redis_prefix, config.limits.store_timeout)
            .await
            .with_context(|| format!("connecting to {}", config.store))?;
        Ok(Arc::new(store))
    }
}

/// [`run`] with a store the caller made (another backend, or a shared one).
pub async fn run_with_store(
    config: ServerConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve(config, store, None, listener, shutdown).await
}

async fn serve(
    config: ServerConfig,
    store: Arc<dyn Store>,
    source: Option<reload::Source>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let store: Arc<dyn Store> = Arc::new(store::metered::MeteredStore::new(store, metrics.clone()));
    let admin = admin::Admin::new(&config).context("admin token")?;
    let metrics_listener = match config.admin.metrics_listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.with_context(|| format!("binding admin.metrics_listen {addr}"))?)
        }
        None => None,
    };
    let pages = pages::LivePages::load(config.pages_dir.as_deref()).context("loading page templates")?;
    let node_id = config.node_id.clone().unwrap_or_else(|| terrier_transport::ids::random_id()[..12].to_owned());
    let grace_ms = config.grace_period.as_millis() as u64;
    let recovered = store.recover_node(&node_id, store::now_ms(), grace_ms).await.context("recovering leases")?;
    let auth = auth::Auth::start(&config).await?;
    let secrets = cluster::envelope::secrets(&config, store.as_ref()).await?;
    let envelopes = cluster::envelope::Envelopes::new(&secrets, &node_id, config.cluster.forward_max_age);
    let acme = tls::acme::Issued::for_config(&config);
    let access = access::AccessRules::compile(&config.access).map_err(anyhow::Error::msg)?;
    let certificates = Arc::new(tls::sni::OperatorCerts::load(&config)?);
    let tls = match tls::server_config_with_acme(&config, certificates.clone(), acme.clone())? {
        Some(tls_config) => {
            let addr = config.tls.listen.expect("TLS on means a listen address");
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding TLS listener {addr}"))?;
            Some((listener, tls_config))
        }
        None => None,
    };
    let tasks = TaskTracker::new();
    let sessions = Arc::new(tunnel::registry::Registry::default());
    let node = Arc::new(Node {
        live: live::Live::new(&config),
        reloader: reload::Reloader::new(source, &config),
        config,
        node_id,
        store,
        sessions,
        ports: ingress::tcp::PortListeners::default(),
        pages,
        peers: cluster::nodes::Peers::default(),
        peer_client: cluster::forward::client(),
        envelopes,
        unreleased: Default::default(),
        needs_resync: std::sync::atomic::AtomicBool::new(false),
        tasks: tasks.clone(),
        auth,
        certificates,
        access,
        shutdown,
        hard_stop: CancellationToken::new(),
        admin,
        metrics,
    });
    // Registered before the first device can connect: recover_node above
    // already marked this node's old leases offline, so the first heartbeat
    // finds the node known and has no sessions to write back.
    cluster::nodes::register(&node).await.context("registering this node")?;
    tracing::info!(
        node = %node.node_id,
        listen = %listener.local_addr()?,
        domain = %node.config.domain,
        recovered,
        "terrierd serving"
    );
    tasks.spawn(sweep_leases(node.clone()));
    tasks.spawn(auth::watch(node.clone()));
    tasks.spawn(cluster::nodes::heartbeat(node.clone()));
    if let Some(acme) = acme {
        tasks.spawn(tls::acme::run(node.clone(), acme));
    }
    if let Some(listener) = metrics_listener {
        tracing::info!(listen = %listener.local_addr()?, "metrics served without a token");
        tasks.spawn(admin::metrics_listener::serve(node.clone(), listener));
    }
    tasks.spawn(reload::on_sighup(node.clone()));
    match tls {
        Some((tls_listener, tls_config)) => {
            tracing::info!(listen = %tls_listener.local_addr()?, "TLS listener serving");
            tokio::join!(
                ingress::http::serve(node.clone(), listener),
                ingress::tls::serve(node.clone(), tls_listener, tls_config)
            );
        }
        None => ingress::http::serve(node.clone(), listener).await,
    }

    // Shutdown: accept loops have stopped; sessions end through their
    // child tokens. Give in-flight streams the drain timeout.
    tasks.close();
    if tokio::time::timeout(node.config.drain_timeout, tasks.wait()).await.is_err() {
        tracing::warn!(open = tasks.len(), "streams still open after the drain timeout; cutting them");
        node.hard_stop.cancel();
        if tokio::time::timeout(HARD_STOP_WAIT, tasks.wait()).await.is_err() {
            tracing::error!(open = tasks.len(), "tasks ignored the hard stop");
        }
    }
    tracing::info!("terrierd stopped");
    Ok(())
}

/// How long cut relays get to unwind after the hard stop.
const HARD_STOP_WAIT: Duration = Duration::from_secs(1);

/// Periodically deletes leases whose grace period ended and closes their
/// ports; a quarter of the grace period in force apart, between 200 ms and 30 s.
async fn sweep_leases(node: Arc<Node>) {
    loop {
        match node.store.sweep(store::now_ms()).await {
            Ok(expired) => {
                for lease in expired {
                    tracing::info!(device = %lease.name, subdomain = %lease.subdomain, "lease expired");
                    node.ports.close_device(&lease.name);
                }
            }
            Err(e) => tracing::error!(error = %e, "lease sweep failed"),
        }
        node.envelopes.prune(store::now_ms());
        let every = (node.live.grace_period() / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
