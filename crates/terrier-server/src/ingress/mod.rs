//! Where visitors come in: the HTTP listener that routes by `Host`
//! ([`http`]), the forwarding of a request to a device ([`proxy`]) and the
//! public TCP ports ([`tcp`]), the TLS listener with SNI passthrough
//! ([`tls`]); both of those relay raw connections the same way ([`raw`]).

pub mod http;
pub mod idle;
pub mod proxy;
pub mod raw;
pub mod sniff;
pub mod tcp;
pub mod tls;

use bytes::Bytes;
use http_body_util::{Either, Full};

pub use crate::forwarding::Body;

/// A small plain-text response (handshake errors the agent prints).
pub fn text(status: u16, message: impl Into<String>) -> ::http::Response<Body> {
    let mut response = ::http::Response::new(Either::Right(Full::new(Bytes::from(message.into() + "\n"))));
    *response.status_mut() = ::http::StatusCode::from_u16(status).unwrap_or(::http::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A plain-text redirect (`307`, `308`) to `location` (left out if it is
/// not a valid header value).
pub fn redirect(status: u16, location: &str, message: impl Into<String>) -> ::http::Response<Body> {
    let mut response = text(status, message);
    if let Ok(value) = ::http::HeaderValue::from_str(location) {
        response.headers_mut().insert(::http::header::LOCATION, value);
    }
    response
}

/// An empty-bodied response from a handshake (`101`).
pub fn empty(response: ::http::Response<()>) -> ::http::Response<Body> {
    response.map(|()| Either::Right(Full::new(Bytes::new())))
}
