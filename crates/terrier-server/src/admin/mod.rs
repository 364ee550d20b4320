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

use crate::ingress::Body;
use crate::Node;
pub use reply::{error, json, unauthorized};

/// Path prefix of the admin API.
pub const API_PREFIX: &str = "/api/v1/";
/// Path of the metrics exposition.
pub const METRICS_PATH: &str = "/metrics";
/// Path prefix of the dashboard.
pub const DASHBOARD_PATH: &str = "/dashboard";

/// Admin state of a node.
pub struct Admin {
    /// The token the API and metrics require.
    pub token: token::AdminToken,
    /// When the node started, for the uptime in server info.
    pub started: Instant,
}

impl Admin {
    /// Loads (or creates) the admin token.
    pub fn new(config: &crate::ServerConfig) -> anyhow::Result<Self> {
        Ok(Self { token: token::AdminToken::load(config)?, started: Instant::now() })
    }
}

/// Is `path` on the server's host one the admin module answers?
pub fn owns(path: &str) -> bool {
    path.starts_with(API_PREFIX) || path == METRICS_PATH || path == DASHBOARD_PATH || path.starts_with("/dashboard/")
}

/// Answers a request for a path [`owns`] accepts.
pub async fn serve(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == DASHBOARD_PATH || path.starts_with("/dashboard/") {
        return dashboard::serve(&node, &path);
    }
    // The live socket authenticates with its first frame: browsers cannot
    // set headers on a WebSocket.
    if path == live::PATH {
        return live::upgrade(node, req);
    }
    if !authorized(&node, &req) {
        return unauthorized();
    }
    if path == METRICS_PATH {
        return metrics_response(&node);
    }
    api::serve(node, req).await
}

/// Does the request carry the admin token as `Authorization: Bearer`?
pub fn authorized<B>(node: &Node, req: &Request<B>) -> bool {
    crate::auth::bearer(req.headers()).is_some_and(|t| node.admin.token.verify(t))
}

/// The metrics exposition as a response.
pub fn metrics_response(node: &Node) -> Response<Body> {
    let text = node.metrics.encode(node.sessions.len());
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    response
}
