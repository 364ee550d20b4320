//! Data sockets: `GET /v1/data?session=<id>&stream=<id>` hands the agent's
//! new WebSocket to the visitor waiting for that stream;
//! `GET /v1/data?session=<id>&pool=1` parks an idle socket in the session's
//! pool, to be given a visitor later with `assign`.
//!
//! The stream id must be pending in *that* session (single use, gone once
//! taken or when its visitor stopped waiting), so neither another device nor
//! a stranger can claim a visitor.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use terrier_proto::handshake::{status, PARAM_POOL, PARAM_SESSION, PARAM_STREAM};
use terrier_proto::name::is_valid_id;

use super::session::StreamReply;
use super::upgrade;
use crate::ingress::{empty, text, Body};
use crate::Node;
use terrier_transport::ws::Kind;

/// Handles `GET /v1/data`.
pub async fn handshake(node: Arc<Node>, mut req: Request<Incoming>) -> Response<Body> {
    let (mut session_id, mut stream, mut pooled) = (String::new(), String::new(), false);
    for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            PARAM_SESSION => session_id = value.into_owned(),
            PARAM_STREAM => stream = value.into_owned(),
            PARAM_POOL => pooled = value != "0",
            _ => {}
        }
    }
    if pooled && is_valid_id(&session_id) {
        return pool_handshake(node, req, &session_id).await;
    }
    if !is_valid_id(&session_id) || !is_valid_id(&stream) {
        return text(status::BAD_REQUEST, "session and stream must be 32 lowercase hex digits");
    }
    let accept = match upgrade::accept(req.headers()) {
        Ok(accept) => accept,
        Err(reason) => return text(status::BAD_REQUEST, reason),
    };
    let Some(session) = node.sessions.by_id(&session_id) else {
        return text(status::NOT_FOUND, "unknown session");
    };
    if let Err(e) = crate::auth::verify_data(&node, req.headers(), session.identity.token_id()).await {
        tracing::warn!(device = %session.name, %stream, error = %e, "data socket with the wrong credential");
        return text(super::control::auth_status(&e), e.to_string());
    }
    let Some(visitor) = session.take_pending(&stream) else {
        tracing::info!(device = %session.name, %stream, "data socket for an unknown, expired or used stream");
        return text(status::NOT_FOUND, "unknown, expired or already used stream");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_frame = node.config.limits.max_data_frame_bytes;
    node.tasks.spawn(async move {
        match upgrade::websocket(on_upgrade, Kind::Data, max_frame).await {
            // If the visitor gave up meanwhile, the socket is dropped here and
            // the agent sees it close.
            Ok(ws) => drop(visitor.send(StreamReply::Socket(Box::new(ws)))),
            Err(e) => {
                tracing::debug!(device = %session.name, %stream, error = %e, "data upgrade failed")
            }
        }
    });
    empty(accept)
}

/// Parks a pooled data socket in its session (`pool=1`).
async fn pool_handshake(node: Arc<Node>, mut req: Request<Incoming>, session_id: &str) -> Response<Body> {
    let accept = match upgrade::accept(req.headers()) {
        Ok(accept) => accept,
        Err(reason) => return text(status::BAD_REQUEST, reason),
    };
    let Some(session) = node.sessions.by_id(session_id) else {
        return text(status::NOT_FOUND, "unknown session");
    };
    if let Err(e) = crate::auth::verify_data(&node, req.headers(), session.identity.token_id()).await {
        tracing::warn!(device = %session.name, error = %e, "pooled data socket with the wrong credential");
        return text(super::control::auth_status(&e), e.to_string());
    }
    if session.pooled_count() >= node.config.limits.max_pool_sockets {
        return text(status::TOO_MANY_REQUESTS, "pool full: too many idle data sockets for this device");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_frame = node.config.limits.max_data_frame_bytes;
    node.tasks.spawn(async move {
        match upgrade::websocket(on_upgrade, Kind::Data, max_frame).await {
            Ok(ws) => {
                if session.closed.is_cancelled() || !session.add_pooled(ws) {
                    tracing::debug!(device = %session.name, "pooled socket not kept (session over or pool full)");
                }
            }
            Err(e) => tracing::debug!(device = %session.name, error = %e, "pooled data upgrade failed"),
        }
    });
    empty(accept)
}
