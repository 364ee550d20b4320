//! The admin API's answers: JSON bodies, JSON errors, the `401`, and
//! reading a small JSON request body.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

use crate::ingress::Body;
use crate::store::StoreError;

/// Largest request body the API reads.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON error: `{"error": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The `401` for a request without the right token.
pub fn unauthorized() -> Response<Body> {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong admin token (Authorization: Bearer <token>)");
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"terrierd\""));
    response
}

/// Reads a small JSON body (at most 16 KiB).
pub async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ()> {
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await.map_err(|_| ())?.to_bytes();
    serde_json::from_slice(&body).map_err(|_| ())
}

/// A store failure as a `503` (logged).
pub fn store_error(e: StoreError) -> Response<Body> {
    tracing::error!(error = %e, "admin API: store call failed");
    error(StatusCode::SERVICE_UNAVAILABLE, &format!("store unavailable: {e}"))
}
