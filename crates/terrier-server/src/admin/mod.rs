//! The operator's side of `terrierd`, on the server's own host: the admin
//! JSON API under `/api/v1/` ([`api`]), live updates over a WebSocket
//! ([`live`]), the dashboard at `/dashboard` ([`dashboard`]) and `/metrics`.
//! Everything but the dashboard's static files needs the admin token
//! ([`token`]); `docs/API.md` and `docs/openapi.json` describe the API.

pub mod api;
pub mod dashboard;
pub mod live;
pub mod metrics_listener;
pub mod reply;
pub mod token;
pub mod tokens;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::auth::Auth;
use crate::cluster::nodes::Membership;
use crate::config::ServerConfig;
use crate::ingress::Body;
use crate::lifecycle::Lifecycle;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::tunnel::registry::Registry;
use crate::tunnel::requests::RequestLogs;
use crate::tunnel::takeovers::Takeovers;
pub use reply::{error, json, unauthorized};

/// Path prefix of the admin API.
pub const API_PREFIX: &str = "/api/v1/";
/// Path of the metrics exposition.
pub const METRICS_PATH: &str = "/metrics";
/// Path prefix of the dashboard.
pub const DASHBOARD_PATH: &str = "/dashboard";

/// What the operator's endpoints need.
pub struct Admin {
    /// The token the API and metrics require (reloaded on `SIGHUP`).
    pub token: Arc<token::AdminToken>,
    /// When the node started, for the uptime in server info.
    pub started: Instant,
    /// The settings shown in server info, and the URLs of devices.
    pub config: Arc<ServerConfig>,
    /// The grace period in force.
    pub live: Arc<Live>,
    /// Devices online on this node, with their live counters.
    pub sessions: Arc<Registry>,
    /// Leases, reservations and nodes in the shared store.
    pub membership: Arc<Membership>,
    /// Device tokens.
    pub auth: Arc<Auth>,
    /// Device names other agents were refused (name conflicts).
    pub takeovers: Arc<Takeovers>,
    /// Each device's request log.
    pub request_logs: Arc<RequestLogs>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where live sockets and the metrics listener run.
    pub lifecycle: Lifecycle,
}

impl Admin {
    /// Does the request carry the admin token as `Authorization: Bearer`?
    pub fn authorized<B>(&self, req: &Request<B>) -> bool {
        crate::auth::bearer(req.headers()).is_some_and(|t| self.token.verify(t))
    }
}

/// Is `path` on the server's host one the admin module answers?
pub fn owns(path: &str) -> bool {
    path.starts_with(API_PREFIX) || path == METRICS_PATH || path == DASHBOARD_PATH || path.starts_with("/dashboard/")
}

/// Answers a request for a path [`owns`] accepts.
pub async fn serve(admin: &Arc<Admin>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == DASHBOARD_PATH || path.starts_with("/dashboard/") {
        return dashboard::serve(admin, &path);
    }
    // The live socket authenticates with its first frame: browsers cannot
    // set headers on a WebSocket.
    if path == live::PATH {
        return live::upgrade(admin.clone(), req);
    }
    if !admin.authorized(&req) {
        return unauthorized();
    }
    if path == METRICS_PATH {
        return metrics_response(admin);
    }
    api::serve(admin, req).await
}

/// The metrics exposition as a response.
pub fn metrics_response(admin: &Admin) -> Response<Body> {
    let text = admin.metrics.encode(admin.sessions.len());
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    response
}
