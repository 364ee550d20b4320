//! The dashboard: three static files embedded in the binary (no CDN, no
//! build step), served at `/dashboard`. They hold no secrets; the page asks
//! for the admin token and uses it for the API and the live socket.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use super::Admin;
use crate::ingress::Body;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only our own scripts, styles and API: an injected device name can never
/// load or run anything.
const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Serves `path` (`/dashboard`, `/dashboard/`, `/dashboard/app.js`, ...).
pub fn serve(admin: &Admin, path: &str) -> Response<Body> {
    if !admin.config.admin.dashboard {
        return super::error(StatusCode::NOT_FOUND, "the dashboard is disabled (admin.dashboard = false)");
    }
    let (body, content_type) = match path.trim_start_matches("/dashboard").trim_start_matches('/') {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return super::error(StatusCode::NOT_FOUND, "no such dashboard file"),
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(body.as_bytes()))));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
