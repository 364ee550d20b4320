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
pub mod hex;
pub mod ingress;
pub mod lifecycle;
pub mod live;
pub mod metrics;
#[cfg(test)]
mod module_graph;
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

pub use config::ServerConfig;
use store::Store;

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
    run_opened(config, store, source, listener, shutdown, Box::new(|| ())).await
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
            .with_context(|| format!("connecting to {}", config::redact_url(&config.store)))?;
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
    run_opened(config, store, None, listener, shutdown, Box::new(|| ())).await
}

/// Called once everything a node opens at start is open (listeners bound,
/// files read, the node registered), just before it serves.
pub type Ready = Box<dyn FnOnce() + Send>;

/// [`run_with_reload`] on a store the caller opened with [`open_store`]
/// (`terrierd` opens it, and so takes its lock, first); `ready` runs once
/// the node is about to serve, so "listening" is said only by a server
/// that will.
pub async fn run_opened(
    config: ServerConfig,
    store: Arc<dyn Store>,
    source: Option<reload::Source>,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: Ready,
) -> anyhow::Result<()> {
    config.validate()?;
    let metrics = Arc::new(metrics::Metrics::default());
    let store: Arc<dyn Store> = Arc::new(store::metered::MeteredStore::new(store, metrics.clone()));
    let admin_token = Arc::new(admin::token::AdminToken::load(&config).context("admin token")?);
    let metrics_listener = match config.admin.metrics_listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.with_context(|| format!("binding admin.metrics_listen {addr}"))?)
        }
        None => None,
    };
    let pages = Arc::new(pages::LivePages::load(config.pages_dir.as_deref()).context("loading page templates")?);
    let node_id = config.node_id.clone().unwrap_or_else(|| terrier_transport::ids::random_id()[..12].to_owned());
    let grace_ms = config.grace_period.as_millis() as u64;
    let recovered = store.recover_node(&node_id, store::now_ms(), grace_ms).await.context("recovering leases")?;
    let secrets = cluster::envelope::secrets(&config, store.as_ref()).await?;
    let envelopes = cluster::envelope::Envelopes::new(&secrets, &node_id, config.cluster.forward_max_age);
    let acme = tls::acme::Issued::for_config(&config);
    let access = Arc::new(access::AccessRules::compile(&config.access).map_err(anyhow::Error::msg)?);
    let certificates = Arc::new(tls::sni::OperatorCerts::load(&config)?);
    let tls = match tls::server_config_with_acme(&config, certificates.clone(), acme.clone())? {
        Some(tls_config) => {
            let addr = config.tls.listen.expect("TLS on means a listen address");
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding TLS listener {addr}"))?;
            Some((listener, tls_config))
        }
        None => None,
    };
    let config = Arc::new(config);
    let lifecycle = lifecycle::Lifecycle::new(shutdown);
    let live = Arc::new(live::Live::new(&config));
    let sessions = Arc::new(tunnel::registry::Registry::default());
    let revoked_sessions = sessions.clone();
    let auth = Arc::new(auth::Auth::start(&config, Box::new(move |gone| revoked_sessions.close_revoked(gone))).await?);
    let membership = Arc::new(cluster::nodes::Membership::new(
        node_id.clone(),
        store.clone(),
        sessions.clone(),
        live.clone(),
        config.clone(),
    ));
    let relays = ingress::raw::Relays { access: access.clone(), live: live.clone(), metrics: metrics.clone() };
    let ports = Arc::new(ingress::tcp::PortListeners::new(
        config.tcp_bind,
        sessions.clone(),
        relays.clone(),
        lifecycle.clone(),
    ));
    let envelopes = Arc::new(envelopes);
    let takeovers = Arc::new(tunnel::takeovers::Takeovers::default());
    let request_logs = Arc::new(tunnel::requests::RequestLogs::default());
    let admin = Arc::new(admin::Admin {
        token: admin_token.clone(),
        started: std::time::Instant::now(),
        config: config.clone(),
        live: live.clone(),
        sessions: sessions.clone(),
        membership: membership.clone(),
        auth: auth.clone(),
        takeovers: takeovers.clone(),
        request_logs: request_logs.clone(),
        metrics: metrics.clone(),
        lifecycle: lifecycle.clone(),
    });
    let reloader = Arc::new(reload::Reloader::new(
        source,
        config.clone(),
        reload::Reloadable {
            live: live.clone(),
            access: access.clone(),
            auth: auth.clone(),
            admin_token,
            pages: pages.clone(),
            certificates,
        },
    ));
    let front = Arc::new(ingress::http::Front {
        relays,
        store: store.clone(),
        proxy: ingress::proxy::Proxy {
            config: config.clone(),
            live: live.clone(),
            lifecycle: lifecycle.clone(),
            sessions: sessions.clone(),
            membership: membership.clone(),
            forwarder: cluster::forward::Forwarder::new(envelopes.clone(), lifecycle.clone(), live.clone()),
            envelopes: envelopes.clone(),
            access,
            tokens: auth.clone(),
            pages,
            metrics: metrics.clone(),
        },
        tunnel: Arc::new(tunnel::Endpoint {
            config: config.clone(),
            live: live.clone(),
            lifecycle: lifecycle.clone(),
            sessions,
            membership: membership.clone(),
            ports: ports.clone(),
            auth: auth.clone(),
            takeovers,
            request_logs: request_logs.clone(),
        }),
        admin: admin.clone(),
    });
    // Registered before the first device can connect: recover_node above
    // already marked this node's old leases offline, so the first heartbeat
    // finds the node known and has no sessions to write back.
    cluster::nodes::register(&membership).await.context("registering this node")?;
    tracing::info!(
        node = %node_id,
        listen = %listener.local_addr()?,
        domain = %config.domain,
        recovered,
        "terrierd serving"
    );
    ready();
    let (tasks, shutdown) = (&lifecycle.tasks, &lifecycle.shutdown);
    tasks.spawn(sweep_leases(store, ports, request_logs, envelopes, live, shutdown.clone()));
    tasks.spawn(auth::watch(auth, config.auth.refresh_interval, shutdown.clone()));
    tasks.spawn(cluster::nodes::heartbeat(membership.clone(), shutdown.clone()));
    if let Some(acme) = acme {
        let orders = tls::acme::Orders { store: membership.store.clone(), node_id };
        tasks.spawn(tls::acme::run(orders, config.clone(), acme, shutdown.clone()));
    }
    if let Some(listener) = metrics_listener {
        tracing::info!(listen = %listener.local_addr()?, "metrics served without a token");
        tasks.spawn(admin::metrics_listener::serve(admin, listener));
    }
    tasks.spawn(reload::on_sighup(reloader, shutdown.clone()));
    match tls {
        Some((tls_listener, tls_config)) => {
            tracing::info!(listen = %tls_listener.local_addr()?, "TLS listener serving");
            tokio::join!(
                ingress::http::serve(front.clone(), listener),
                ingress::tls::serve(front, tls_listener, tls_config)
            );
        }
        None => ingress::http::serve(front, listener).await,
    }

    // Shutdown: accept loops have stopped; sessions end through their
    // child tokens. Give in-flight streams the drain timeout.
    tasks.close();
    if tokio::time::timeout(config.drain_timeout, tasks.wait()).await.is_err() {
        tracing::warn!(open = tasks.len(), "streams still open after the drain timeout; cutting them");
        lifecycle.hard_stop.cancel();
        if tokio::time::timeout(HARD_STOP_WAIT, tasks.wait()).await.is_err() {
            tracing::error!(open = tasks.len(), "tasks ignored the hard stop");
        }
    }
    tracing::info!("terrierd stopped");
    Ok(())
}

/// How long cut relays get to unwind after the hard stop.
const HARD_STOP_WAIT: Duration = Duration::from_secs(1);

/// Periodically deletes leases whose grace period ended (closing their
/// ports, forgetting their request logs), frees parked ports whose time ran
/// out, and forgets envelope nonces too old to replay; a quarter of the
/// grace period in force apart, between 200 ms and 30 s.
async fn sweep_leases(
    store: Arc<dyn Store>,
    ports: Arc<ingress::tcp::PortListeners>,
    request_logs: Arc<tunnel::requests::RequestLogs>,
    envelopes: Arc<cluster::envelope::Envelopes>,
    live: Arc<live::Live>,
    shutdown: CancellationToken,
) {
    loop {
        match store.sweep(store::now_ms()).await {
            Ok(swept) => {
                for lease in swept.expired {
                    tracing::info!(device = %lease.name, subdomain = %lease.subdomain, "lease expired");
                    ports.close_device(&lease.name);
                    request_logs.forget(&lease.name);
                }
                for freed in swept.unparked {
                    tracing::info!(device = %freed.name, service = %freed.service, port = freed.port, "parked TCP port expired");
                    ports.close_port(&freed.name, &freed.service, freed.port);
                }
            }
            Err(e) => tracing::error!(error = %e, "lease sweep failed"),
        }
        envelopes.prune(store::now_ms());
        request_logs.forget_idle(live.grace_period());
        let every = (live.grace_period() / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
