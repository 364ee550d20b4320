//! The admin JSON API (`/api/v1/...`): devices, disconnecting one,
//! subdomain reservations, server info. Devices online on this node come with
//! live traffic from their session; others (offline, or online on another
//! node of a cluster) come from their lease in the store.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::reply::{error, json, read_json, store_error};
use super::Admin;
use crate::ingress::Body;
use crate::store::{now_ms, Lease, StoreError};
use crate::tunnel::requests::RequestRecord;
use crate::tunnel::session::Session;

/// One device as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// Device name.
    pub name: String,
    /// Its subdomain label.
    pub subdomain: String,
    /// Public URL of its HTTP service (the subdomain's URL).
    pub url: String,
    /// Does it serve HTTP? Known while it is online on this node.
    pub http: Option<bool>,
    /// Online anywhere in the cluster?
    pub online: bool,
    /// Node holding it while online.
    pub node: Option<String>,
    /// Session id while online.
    pub session: Option<String>,
    /// When the current connection started, Unix ms.
    pub connected_since_ms: Option<u64>,
    /// Last time it was seen (now while online), Unix ms.
    pub last_seen_ms: u64,
    /// While offline: when its lease (subdomain, ports) ends, Unix ms.
    pub expires_at_ms: Option<u64>,
    /// Host its TCP ports are reached at.
    pub tcp_host: String,
    /// Public TCP port of each service.
    pub tcp: Vec<TcpView>,
    /// Visitor streams open now (online on this node only).
    pub streams_open: Option<u64>,
    /// Visitor streams since it connected (online on this node only).
    pub streams_total: Option<u64>,
    /// Idle pooled data sockets the agent keeps open ahead of visitors
    /// (`--pool`; online on this node only).
    pub pooled_sockets: Option<u64>,
    /// Bytes from visitors into the device since it connected.
    pub bytes_in: Option<u64>,
    /// Bytes from the device to visitors since it connected.
    pub bytes_out: Option<u64>,
    /// Agent software and version, e.g. `terrier/0.1.0`.
    pub agent: Option<String>,
    /// Agent platform, e.g. `linux-aarch64`.
    pub platform: Option<String>,
    /// The subdomain reserved for this name, if any.
    pub reserved_subdomain: Option<String>,
    /// The address the agent connected from (online on this node only).
    pub agent_address: Option<String>,
    /// Set when another agent was refused this name within the last minute
    /// because the two kept replacing each other: two agents share it.
    pub name_conflict: Option<String>,
}

/// One public TCP port.
#[derive(Debug, Clone, Serialize)]
pub struct TcpView {
    /// The agent's service id.
    pub service: String,
    /// Public port.
    pub port: u16,
}

#[derive(Deserialize)]
struct ReserveBody {
    subdomain: String,
}

/// Routes an authorized API request.
pub async fn serve(admin: &Admin, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches(super::API_PREFIX).trim_end_matches('/').to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    let method = req.method().clone();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["server"]) => json(StatusCode::OK, &server_info(admin).await),
        (&Method::GET, ["devices"]) => list_devices(admin, req.uri().query()).await,
        (&Method::GET, ["devices", name]) => match device(admin, name).await {
            Ok(Some(view)) => json(StatusCode::OK, &view),
            Ok(None) => error(StatusCode::NOT_FOUND, "no such device"),
            Err(e) => store_error(e),
        },
        (&Method::GET, ["devices", name, "requests"]) => requests(admin, name),
        (&Method::POST, ["devices", name, "disconnect"]) => disconnect(admin, name).await,
        (&Method::GET, ["reservations"]) => match admin.membership.store.reservations().await {
            Ok(all) => json(StatusCode::OK, &serde_json::json!({ "reservations": all })),
            Err(e) => store_error(e),
        },
        (&Method::PUT, ["reservations", name]) => {
            let name = name.to_string();
            reserve(admin, &name, req).await
        }
        (&Method::DELETE, ["reservations", name]) => match admin.membership.store.unreserve(name).await {
            Ok(true) => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(http_body_util::Either::Right(Default::default()))
                .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response")),
            Ok(false) => error(StatusCode::NOT_FOUND, "no reservation for this name"),
            Err(e) => store_error(e),
        },
        (&Method::GET, ["tokens"]) => super::tokens::list(admin).await,
        (&Method::POST, ["tokens"]) => super::tokens::create(admin, req).await,
        (&Method::DELETE, ["tokens", id]) => super::tokens::revoke(admin, id).await,
        (_, ["server" | "devices" | "reservations" | "tokens", ..]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path")
        }
        _ => error(StatusCode::NOT_FOUND, "no such API endpoint"),
    }
}

/// `GET /api/v1/server`.
async fn server_info(admin: &Admin) -> serde_json::Value {
    let nodes = admin.membership.store.nodes().await.unwrap_or_default();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": admin.membership.node_id,
        "domain": admin.config.domain,
        "public_scheme": admin.config.public_scheme,
        "public_port": admin.config.public_port(),
        "store": if admin.config.store == "embedded" { "embedded" } else { "redis" },
        "devices_online": admin.sessions.len(),
        "uptime_secs": admin.started.elapsed().as_secs(),
        // Tasks alive in the runtime: a leak shows here first (soak runs read it).
        "tasks_alive": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        "grace_period_secs": admin.live.grace_period().as_secs(),
        "tcp_port_min": admin.config.tcp_port_min,
        "tcp_port_max": admin.config.tcp_port_max,
        "request_log": admin.config.admin.request_log,
        "auth_mode": match admin.auth.mode {
            crate::auth::AuthMode::Open => "open",
            _ => "token",
        },
        "nodes": nodes.iter().map(|n| serde_json::json!({
            "id": n.id, "advertise_url": n.advertise_url, "devices": n.devices,
        })).collect::<Vec<_>>(),
    })
}

/// Every device with a lease (or a session here), sorted by name.
pub async fn all_devices(admin: &Admin) -> Result<Vec<DeviceView>, StoreError> {
    let now = now_ms();
    let leases = admin.membership.store.leases(now).await?;
    let reservations: BTreeMap<String, String> =
        admin.membership.store.reservations().await?.into_iter().map(|r| (r.name, r.subdomain)).collect();
    let mut views: BTreeMap<String, DeviceView> = BTreeMap::new();
    for lease in &leases {
        views.insert(lease.name.clone(), lease_view(admin, lease));
    }
    // Local sessions are the truth for this node (and cover a store that
    // briefly lost a lease).
    for session in admin.sessions.all() {
        views.insert(session.name.clone(), session_view(admin, &session, now));
    }
    Ok(views
        .into_values()
        .map(|mut v| {
            v.reserved_subdomain = reservations.get(&v.name).cloned();
            v
        })
        .collect())
}

/// `GET /api/v1/devices?status=online|offline&q=text&limit=N&cursor=NAME`:
/// one page of devices sorted by name. The cursor is the last name of the
/// previous page (its `next`), so a device joining or leaving between pages
/// shifts nothing; pages hold at most `admin.max_page_size` devices.
async fn list_devices(admin: &Admin, query: Option<&str>) -> Response<Body> {
    let max = admin.config.admin.max_page_size;
    let (mut status, mut q, mut limit, mut cursor) = (String::from("all"), String::new(), max, None);
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "status" => status = value.into_owned(),
            "q" => q = value.to_lowercase(),
            // More than the maximum is not an error: the page is just full.
            "limit" => match value.parse::<usize>() {
                Ok(n) if n > 0 => limit = n.min(max),
                _ => return error(StatusCode::BAD_REQUEST, "limit must be a whole number from 1"),
            },
            "cursor" => cursor = Some(value.into_owned()),
            _ => {}
        }
    }
    let want_online = match status.as_str() {
        "all" => None,
        "online" => Some(true),
        "offline" => Some(false),
        _ => return error(StatusCode::BAD_REQUEST, "status must be all, online or offline"),
    };
    let devices = match all_devices(admin).await {
        Ok(devices) => devices,
        Err(e) => return store_error(e),
    };
    let mut devices: Vec<DeviceView> = devices
        .into_iter()
        .filter(|d| cursor.as_deref().is_none_or(|after| d.name.as_str() > after))
        .filter(|d| want_online.is_none_or(|w| d.online == w))
        .filter(|d| q.is_empty() || d.name.contains(&q) || d.subdomain.contains(&q))
        .take(limit + 1)
        .collect();
    let next = (devices.len() > limit).then(|| {
        devices.truncate(limit);
        devices.last().map(|d| d.name.clone())
    });
    json(StatusCode::OK, &serde_json::json!({ "devices": devices, "next": next.flatten() }))
}

/// One device by name: its local session, or its lease.
async fn device(admin: &Admin, name: &str) -> Result<Option<DeviceView>, StoreError> {
    let now = now_ms();
    let mut view = match admin.sessions.by_name(name) {
        Some(session) => session_view(admin, &session, now),
        None => match admin.membership.store.by_name(name, now).await? {
            Some(lease) => lease_view(admin, &lease),
            None => return Ok(None),
        },
    };
    view.reserved_subdomain =
        admin.membership.store.reservations().await?.into_iter().find(|r| r.name == name).map(|r| r.subdomain);
    Ok(Some(view))
}

/// `GET /api/v1/devices/{name}/requests`: the device's request log, kept
/// across its reconnects until its lease ends.
fn requests(admin: &Admin, name: &str) -> Response<Body> {
    let requests: Vec<RequestRecord> = admin.request_logs.get(name).map(|log| log.recent()).unwrap_or_default();
    json(StatusCode::OK, &serde_json::json!({ "requests": requests }))
}

/// `POST /api/v1/devices/{name}/disconnect`: closes its control socket (the
/// agent will reconnect by itself, with backoff).
async fn disconnect(admin: &Admin, name: &str) -> Response<Body> {
    if let Some(session) = admin.sessions.by_name(name) {
        tracing::info!(device = name, session = %session.id, "disconnected by the operator");
        session.close(terrier_proto::handshake::close::DISCONNECTED);
        return json(StatusCode::OK, &serde_json::json!({ "disconnected": true, "node": admin.membership.node_id }));
    }
    match admin.membership.store.by_name(name, now_ms()).await {
        Ok(Some(lease)) if lease.online.is_some() => {
            let other = lease.online.map(|o| o.node).unwrap_or_default();
            error(StatusCode::CONFLICT, &format!("device is connected to node {other}; ask that node"))
        }
        Ok(_) => error(StatusCode::NOT_FOUND, "device is not online"),
        Err(e) => store_error(e),
    }
}

/// `PUT /api/v1/reservations/{name}` with `{"subdomain": "..."}`.
async fn reserve(admin: &Admin, name: &str, req: Request<Incoming>) -> Response<Body> {
    if !terrier_proto::name::is_valid_name(name) {
        return error(StatusCode::BAD_REQUEST, "bad device name: 1-63 of [a-z0-9-]");
    }
    let Ok(ReserveBody { subdomain }) = read_json::<ReserveBody>(req).await else {
        return error(StatusCode::BAD_REQUEST, "expected JSON {\"subdomain\": \"label\"}");
    };
    if !terrier_proto::name::is_valid_subdomain(&subdomain) {
        return error(StatusCode::BAD_REQUEST, "bad subdomain: a DNS label of [a-z0-9-]");
    }
    match admin.membership.store.reserve(name, &subdomain, now_ms()).await {
        Ok(()) => {
            tracing::info!(device = name, %subdomain, "subdomain reserved");
            json(StatusCode::OK, &crate::store::Reservation { name: name.to_owned(), subdomain })
        }
        Err(StoreError::SubdomainTaken(_)) => error(StatusCode::CONFLICT, "subdomain is taken by another device"),
        Err(e) => store_error(e),
    }
}

fn tcp_views(ports: &BTreeMap<String, u16>) -> Vec<TcpView> {
    ports.iter().map(|(service, port)| TcpView { service: service.clone(), port: *port }).collect()
}

/// A device online on this node, with its live counters.
fn session_view(admin: &Admin, session: &Session, now: u64) -> DeviceView {
    let t = &session.traffic;
    DeviceView {
        name: session.name.clone(),
        subdomain: session.subdomain.clone(),
        url: admin.config.device_url(&session.subdomain),
        http: Some(session.http),
        online: true,
        node: Some(admin.membership.node_id.clone()),
        session: Some(session.id.clone()),
        connected_since_ms: Some(session.since_ms),
        last_seen_ms: now,
        expires_at_ms: None,
        tcp_host: admin.config.tcp_host().to_owned(),
        tcp: tcp_views(&session.tcp),
        streams_open: Some(t.streams_open.load(Ordering::Relaxed)),
        streams_total: Some(t.streams_total.load(Ordering::Relaxed)),
        pooled_sockets: Some(session.pooled_count() as u64),
        bytes_in: Some(t.bytes_in.load(Ordering::Relaxed)),
        bytes_out: Some(t.bytes_out.load(Ordering::Relaxed)),
        agent: Some(session.agent.clone()).filter(|a| !a.is_empty()),
        platform: Some(session.platform.clone()).filter(|p| !p.is_empty()),
        reserved_subdomain: None,
        agent_address: Some(session.agent_at.remote.ip().to_string()),
        name_conflict: admin.takeovers.refused(&session.name, std::time::Instant::now()).map(|refused| {
            format!(
                "another agent at {} was refused this name {}s ago: two agents share it, give one another --name",
                refused.from,
                refused.at.elapsed().as_secs()
            )
        }),
    }
}

/// A device known from its lease only (offline, or on another node).
fn lease_view(admin: &Admin, lease: &Lease) -> DeviceView {
    DeviceView {
        name: lease.name.clone(),
        subdomain: lease.subdomain.clone(),
        url: admin.config.device_url(&lease.subdomain),
        http: None,
        online: lease.online.is_some(),
        node: lease.online.as_ref().map(|o| o.node.clone()),
        session: lease.online.as_ref().map(|o| o.session.clone()),
        connected_since_ms: lease.online.as_ref().map(|o| o.since_ms),
        last_seen_ms: lease.last_seen_ms,
        expires_at_ms: lease.expires_at_ms,
        tcp_host: admin.config.tcp_host().to_owned(),
        tcp: tcp_views(&lease.ports),
        streams_open: None,
        streams_total: None,
        pooled_sockets: None,
        bytes_in: None,
        bytes_out: None,
        agent: None,
        platform: None,
        reserved_subdomain: None,
        agent_address: None,
        name_conflict: None,
    }
}
