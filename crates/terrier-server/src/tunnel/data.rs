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
use terrier_proto::handshake::{status, PARAM_POOL, PARAM_REUSE, PARAM_SESSION, PARAM_STREAM};
use terrier_proto::name::is_valid_id;

use super::session::{Session, StreamReply};
use super::upgrade;
use super::Endpoint;
use crate::ingress::{empty, text, Body};

/// What a data handshake asks for, parsed from its query string (a pure
/// function, so the parsing can be tested and fuzzed on its own).
#[derive(Debug, PartialEq, Eq)]
pub enum DataParams {
    /// `session` + `stream`: carry that pending visitor stream.
    Stream {
        /// Session id (32 lowercase hex).
        session: String,
        /// Stream id (32 lowercase hex).
        stream: String,
    },
    /// `session` + `pool=1`: park an idle socket in that session's pool.
    Pool {
        /// Session id (32 lowercase hex).
        session: String,
        /// `reuse=1`: the agent takes the socket back after each stream.
        reuse: bool,
    },
}

impl DataParams {
    /// Parses and validates the query string; the error is the 400 text.
    pub fn parse(query: Option<&str>) -> Result<Self, &'static str> {
        let (mut session, mut stream, mut pooled, mut reuse) = (String::new(), String::new(), false, false);
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                PARAM_SESSION => session = value.into_owned(),
                PARAM_STREAM => stream = value.into_owned(),
                PARAM_POOL => pooled = value != "0",
                PARAM_REUSE => reuse = value == "1",
                _ => {}
            }
        }
        if pooled && is_valid_id(&session) {
            return Ok(Self::Pool { session, reuse });
        }
        if !is_valid_id(&session) || !is_valid_id(&stream) {
            return Err("session and stream must be 32 lowercase hex digits");
        }
        Ok(Self::Stream { session, stream })
    }
}

/// Handles `GET /v1/data`.
pub async fn handshake(tunnel: &Endpoint, mut req: Request<Incoming>) -> Response<Body> {
    let (session_id, stream) = match DataParams::parse(req.uri().query()) {
        Ok(DataParams::Pool { session, reuse }) => return pool_handshake(tunnel, req, &session, reuse).await,
        Ok(DataParams::Stream { session, stream }) => (session, stream),
        Err(reason) => return text(status::BAD_REQUEST, reason),
    };
    let (accept, session) = match accept_for_session(tunnel, &req, &session_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(visitor) = session.take_pending(&stream) else {
        tracing::info!(device = %session.name, %stream, "data socket for an unknown, expired or used stream");
        return text(status::NOT_FOUND, "unknown, expired or already used stream");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_frame = tunnel.live.limits().max_data_frame_bytes;
    tunnel.lifecycle.tasks.spawn(async move {
        match upgrade::data_socket(on_upgrade, max_frame).await {
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

/// What both data handshakes check first: a WebSocket upgrade, for a
/// session online here, presenting the token that session was admitted with.
async fn accept_for_session(
    tunnel: &Endpoint,
    req: &Request<Incoming>,
    session_id: &str,
) -> Result<(Response<()>, Arc<Session>), Response<Body>> {
    let accept = upgrade::accept(req.headers()).map_err(|reason| text(status::BAD_REQUEST, reason))?;
    let session = tunnel.sessions.by_id(session_id).ok_or_else(|| text(status::NOT_FOUND, "unknown session"))?;
    if let Err(e) = tunnel.auth.verify_data(req.headers(), session.identity.token_id()).await {
        tracing::warn!(device = %session.name, error = %e, "data socket with the wrong credential");
        return Err(text(e.status(), e.to_string()));
    }
    Ok((accept, session))
}

/// Parks a pooled data socket in its session (`pool=1`, and `reuse=1` if
/// the agent takes it back after each stream).
async fn pool_handshake(
    tunnel: &Endpoint,
    mut req: Request<Incoming>,
    session_id: &str,
    reuse: bool,
) -> Response<Body> {
    let (accept, session) = match accept_for_session(tunnel, &req, session_id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if session.pooled_count() >= tunnel.live.limits().max_pool_sockets {
        return text(status::TOO_MANY_REQUESTS, "pool full: too many idle data sockets for this device");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_frame = tunnel.live.limits().max_data_frame_bytes;
    tunnel.lifecycle.tasks.spawn(async move {
        match upgrade::data_socket(on_upgrade, max_frame).await {
            Ok(ws) => {
                if session.add_pooled(ws, reuse).is_err() {
                    tracing::debug!(device = %session.name, "pooled socket not kept (session over or pool full)");
                }
            }
            Err(e) => tracing::debug!(device = %session.name, error = %e, "pooled data upgrade failed"),
        }
    });
    empty(accept)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn params_parse_and_validate() {
        let stream = DataParams::parse(Some(&format!("session={ID}&stream={ID}"))).unwrap();
        assert_eq!(stream, DataParams::Stream { session: ID.into(), stream: ID.into() });
        let pool = DataParams::parse(Some(&format!("session={ID}&pool=1"))).unwrap();
        assert_eq!(pool, DataParams::Pool { session: ID.into(), reuse: false });
        let reused = DataParams::parse(Some(&format!("session={ID}&pool=1&reuse=1"))).unwrap();
        assert_eq!(reused, DataParams::Pool { session: ID.into(), reuse: true });
        for bad in [None, Some(""), Some("session=abc&pool=1"), Some(&*format!("session={ID}&stream=XYZ"))] {
            assert!(DataParams::parse(bad).is_err(), "{bad:?}");
        }
        // pool=0 is no pool: a stream id is needed again.
        assert!(DataParams::parse(Some(&format!("session={ID}&pool=0"))).is_err());
    }
}
