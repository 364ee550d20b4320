//! Forwards a visitor's HTTP request to a device and streams the answer back.
//!
//! Requests go to the device over HTTP/1 connections that its session keeps
//! ([`crate::tunnel::upstream`]), each on a tunnel stream, so a keep-alive
//! visitor (or many visitors) reuse data sockets instead of paying a
//! WebSocket handshake per request. Bodies are streamed both ways, never
//! buffered whole. `Upgrade` requests (WebSocket) are passed through: once
//! both sides answered `101`, the two upgraded connections are spliced.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::http::{Peer, Transport};
use super::Body;
use crate::access::Denied;
use crate::cluster::forward;
use crate::pages::Page;
use crate::store::now_ms;
use crate::tunnel::session::OpenError;
use crate::tunnel::traffic::RequestRecord;
use crate::tunnel::upstream::{self, SendError};
use crate::Node;

/// Seconds a visitor of an offline device is told to wait (`Retry-After`).
const RETRY_AFTER_SECS: &str = "30";

/// `X-Forwarded-*` names, built once: a `&str` name is parsed on every use
/// (callgrind: ~2k instructions per proxied request for three inserts).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Forwards `req` for subdomain `sub` (from `peer`, asked for `host`).
pub async fn forward(
    node: Arc<Node>,
    sub: &str,
    host: &str,
    peer: &Peer,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let remote = peer.remote;
    let Some(session) = node.sessions.by_subdomain(sub) else {
        return elsewhere_or_offline(&node, sub, host, remote, req).await;
    };
    if !forward::was_forwarded(&req) {
        if let Err(denied) = node.access.check_http(&session.name, remote.ip(), req.headers()) {
            return access_denied(&node, &session.name, remote, denied, host);
        }
    }
    if !session.http {
        return node.pages.render(Page {
            status: StatusCode::NOT_FOUND,
            title: "No web page here",
            message: "This device is online but does not serve HTTP.",
            detail: "",
            host,
        });
    }
    let visitor_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let scheme = match peer.transport {
        Transport::Tls => "https",
        Transport::Plain => node.config.public_scheme.as_str(),
    };
    if let Err(detail) = prepare_request(&mut req, host, &peer.ip_header, scheme, visitor_upgrade.is_some()) {
        return node.pages.render(Page {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request",
            message: "The request could not be forwarded.",
            detail,
            host,
        });
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let at_ms = now_ms();
    let max_kept = node.live.limits().max_idle_http_per_device;
    let result = upstream::send(&session, &node.metrics, req, max_kept).await;
    node.metrics.visitor_request(started.elapsed());
    let log = |status: StatusCode, size: Option<u64>| {
        let record = RequestRecord {
            at_ms,
            method: method.clone(),
            path: path.clone(),
            status: status.as_u16(),
            duration_ms: started.elapsed().as_millis() as u64,
            size,
        };
        session.traffic.log_request(record, node.config.admin.request_log);
    };
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            let page = forward_error(&node, &session.name, host, e);
            log(page.status(), None);
            return page;
        }
    };
    let size = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    log(response.status(), size);
    tracing::debug!(device = %session.name, %method, %path, status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "forwarded");
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return switch_protocols(&node, visitor_upgrade, response, &session.name);
    }
    strip_hop_by_hop(response.headers_mut(), false);
    response.map(Either::Left)
}

/// Rewrites the visitor's request for the device: origin-form target,
/// the public `Host` kept, `X-Forwarded-*` added; `upgrade` (from
/// [`is_upgrade`]) keeps its `Upgrade` header.
fn prepare_request<B>(
    req: &mut Request<B>,
    host: &str,
    ip: &HeaderValue,
    scheme: &str,
    upgrade: bool,
) -> Result<(), &'static str> {
    let original_host = req
        .headers()
        .get(header::HOST)
        .cloned()
        .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()))
        .ok_or("no host")?;
    // hyper's HTTP/1 client writes the URI as it is: origin-form.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let mut target = http::uri::Parts::default();
        target.path_and_query =
            Some(req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(target).map_err(|_| "bad request target")?;
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    headers.insert(header::HOST, original_host);
    append_forwarded_for(headers, ip).map_err(|_| "bad X-Forwarded-For")?;
    let proto = match scheme {
        "https" => HeaderValue::from_static("https"),
        "http" => HeaderValue::from_static("http"),
        other => HeaderValue::from_str(other).map_err(|_| "bad scheme")?,
    };
    headers.insert(X_FORWARDED_PROTO, proto);
    headers.insert(X_FORWARDED_HOST, HeaderValue::from_str(host).map_err(|_| "bad host")?);
    Ok(())
}

/// `ip` as a header value (for [`append_forwarded_for`]).
pub(crate) fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

/// Appends `ip` (from [`ip_header`]) to `X-Forwarded-For` (or starts it),
/// as every proxy hop does: terrierd for the visitor, and a cluster node
/// forwarding to a peer.
pub(crate) fn append_forwarded_for(
    headers: &mut http::HeaderMap,
    ip: &HeaderValue,
) -> Result<(), http::header::InvalidHeaderValue> {
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::try_from(format!("{prior}, {}", ip.to_str().unwrap_or_default()))?,
        None => ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR, xff);
    Ok(())
}

/// Answers the visitor's upgrade with the `101` from upstream (the device,
/// or the node holding it) and splices the two upgraded connections.
pub(crate) fn switch_protocols(
    node: &Node,
    visitor_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut response: Response<Incoming>,
    device: &str,
) -> Response<Body> {
    if let Some(visitor_upgrade) = visitor_upgrade {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (device, hard_stop) = (device.to_owned(), node.hard_stop.clone());
        node.tasks.spawn(async move {
            tokio::select! {
                () = splice_upgraded(visitor_upgrade, upstream_upgrade, &device) => {}
                () = hard_stop.cancelled() => {}
            }
        });
    }
    response.map(|_| Either::Right(Default::default()))
}

/// Does the request ask to switch protocols (WebSocket and the like)?
pub(crate) fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Is `name` one of the headers that belong to one hop and are never
/// forwarded (RFC 9110 §7.6.1), or the two non-standard ones still seen in
/// the wild? A match on the name's text: a few instructions per header.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// How many distinct names [`is_hop_by_hop`] knows.
const HOP_BY_HOP_NAMES: usize = 9;

/// Does `token` (from `Connection`, any case) name a hop-by-hop header?
/// Lowercased on the stack: the longest such name has 19 bytes.
fn names_hop_by_hop(token: &str) -> bool {
    let mut buf = [0u8; 19];
    let Some(lower) = buf.get_mut(..token.len()) else {
        return false;
    };
    lower.copy_from_slice(token.as_bytes());
    lower.make_ascii_lowercase();
    std::str::from_utf8(lower).is_ok_and(is_hop_by_hop)
}

/// Removes hop-by-hop headers, and any header `Connection` names. With
/// `keep_upgrade`, `Upgrade` survives (the device must see it).
fn strip_hop_by_hop(headers: &mut http::HeaderMap, keep_upgrade: bool) {
    // Most requests carry no hop-by-hop header, most answers only
    // `Connection: keep-alive`: one pass finds out, and only what is there
    // is removed, without touching the heap (callgrind: comparing each
    // header with a list of names, a hashed removal per name, or collecting
    // the names in a `Vec` cost 1.5-3k instructions per proxied request).
    let kept = |name: &str| keep_upgrade && name.eq_ignore_ascii_case("upgrade");
    let mut present: [Option<HeaderName>; HOP_BY_HOP_NAMES] = Default::default();
    let found = headers.keys().filter(|name| is_hop_by_hop(name.as_str()) && !kept(name.as_str()));
    for (slot, name) in present.iter_mut().zip(found) {
        *slot = Some(name.clone());
    }
    if present[0].is_none() {
        return;
    }
    // Other names `Connection` lists: rare, so only they are parsed.
    // (`close` names no header; the hop-by-hop ones go below.)
    let mut named: Vec<HeaderName> = Vec::new();
    let tokens = headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|s| s.split(','));
    for token in tokens.map(str::trim) {
        if token.eq_ignore_ascii_case("close") || names_hop_by_hop(token) {
            continue;
        }
        // A name that is not a valid header name matches nothing.
        named.extend(HeaderName::from_bytes(token.as_bytes()).ok());
    }
    for name in present.into_iter().flatten().chain(named) {
        headers.remove(name);
    }
}

/// Splices a visitor's and a device's upgraded connections until both end.
async fn splice_upgraded(visitor: hyper::upgrade::OnUpgrade, device: hyper::upgrade::OnUpgrade, name: &str) {
    let (visitor, device) = match tokio::try_join!(visitor, device) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(device = name, error = %e, "upgrade failed");
            return;
        }
    };
    let mut visitor = TokioIo::new(visitor);
    let mut device = TokioIo::new(device);
    match tokio::io::copy_bidirectional(&mut visitor, &mut device).await {
        Ok((up, down)) => tracing::debug!(device = name, up, down, "upgraded connection closed"),
        Err(e) => tracing::debug!(device = name, error = %e, "upgraded connection broke"),
    }
}

/// The answer for a subdomain with no session on this node: forwarded to the
/// node that holds the device, or a page saying it is offline or unknown.
async fn elsewhere_or_offline(
    node: &Node,
    sub: &str,
    host: &str,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    match node.store.by_subdomain(sub, now_ms()).await {
        Ok(Some(lease)) => {
            let holder = lease.online.as_ref().map(|o| o.node.as_str()).filter(|n| *n != node.node_id);
            let peer = match holder {
                Some(id) if !forward::was_forwarded(&req) => crate::cluster::nodes::peer(node, id).await,
                _ => None,
            };
            if let Some(peer) = peer {
                if let Err(denied) = node.access.check_http(&lease.name, remote.ip(), req.headers()) {
                    return access_denied(node, &lease.name, remote, denied, host);
                }
                return match forward::to_peer(node, &peer, &lease.name, remote, req).await {
                    Ok(response) => response,
                    Err(e) => {
                        tracing::warn!(device = %lease.name, node = %peer.id, error = %e, "forwarding to the device's node failed");
                        node.pages.render(Page {
                            status: StatusCode::BAD_GATEWAY,
                            title: "The device's server did not answer",
                            message: "The device is connected to another server of this service, which could not be reached.",
                            detail: "",
                            host,
                        })
                    }
                };
            }
            offline_page(node, &lease, host)
        }
        Ok(None) => node.pages.render(Page {
            status: StatusCode::NOT_FOUND,
            title: "No device here",
            message: "No device is registered at this address. Check the address, or the device may have been given a new one.",
            detail: "",
            host,
        }),
        Err(e) => {
            tracing::error!(subdomain = sub, error = %e, "store lookup failed");
            node.pages.render(Page {
                status: StatusCode::SERVICE_UNAVAILABLE,
                title: "Temporarily unavailable",
                message: "The server could not look this address up. Try again shortly.",
                detail: "",
                host,
            })
        }
    }
}

/// The page for a visitor the device's access rules turn away: 403 for an
/// address off the allow-list, 401 asking for basic auth.
fn access_denied(node: &Node, device: &str, remote: SocketAddr, denied: Denied, host: &str) -> Response<Body> {
    tracing::info!(device, %remote, ?denied, "visitor denied by access rules");
    match denied {
        Denied::Address => node.pages.render(Page {
            status: StatusCode::FORBIDDEN,
            title: "Access denied",
            message: "This device only accepts visitors from certain networks.",
            detail: "",
            host,
        }),
        Denied::Credentials => {
            let mut response = node.pages.render(Page {
                status: StatusCode::UNAUTHORIZED,
                title: "Sign in required",
                message: "This device asks for a user name and password.",
                detail: "",
                host,
            });
            let realm = format!("Basic realm=\"{}\", charset=\"UTF-8\"", host.replace('"', ""));
            if let Ok(value) = HeaderValue::from_str(&realm) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
    }
}

/// The 503 page for a device in its grace period.
fn offline_page(node: &Node, lease: &crate::store::Lease, host: &str) -> Response<Body> {
    let last_seen =
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(lease.last_seen_ms));
    let mut response = node.pages.render(Page {
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "This device is offline",
        message: "The device behind this address is not connected right now. It usually comes back on its own; try again in a little while.",
        detail: &format!("last seen {last_seen}"),
        host,
    });
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// The page for a request the device could not answer.
fn forward_error(node: &Node, device: &str, host: &str, error: SendError) -> Response<Body> {
    let open_error = match &error {
        SendError::Open(e) => Some(e),
        SendError::Http(_) => None,
    };
    tracing::info!(device, error = %error, cause = ?open_error, "forwarding failed");
    let (status, title, message, detail) = match open_error {
        Some(OpenError::Timeout(after)) => (
            StatusCode::GATEWAY_TIMEOUT,
            "The device did not answer in time",
            "The device is connected but did not open a connection for this request in time.",
            format!("no data socket within {after:?}"),
        ),
        Some(OpenError::Refused(reason)) => (
            StatusCode::BAD_GATEWAY,
            "The device's web service is not answering",
            "The device is connected, but its local web service refused the connection.",
            reason.clone(),
        ),
        Some(OpenError::TooManyPending | OpenError::TooManyStreams) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The device is busy",
            "Too many visitors are waiting for this device. Try again shortly.",
            String::new(),
        ),
        Some(OpenError::Offline) => (
            StatusCode::BAD_GATEWAY,
            "The device went offline",
            "The device disconnected while this request was on its way.",
            String::new(),
        ),
        None => (
            StatusCode::BAD_GATEWAY,
            "The device closed the connection",
            "The device's web service closed the connection without a complete answer.",
            error.to_string(),
        ),
    };
    node.pages.render(Page { status, title, message, detail: &detail, host })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "Keep-Alive, X-Private, close"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("x-kept", "2"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn upgrade_survives_when_asked_and_plain_headers_are_untouched() {
        let mut h = headers(&[("connection", "upgrade"), ("upgrade", "websocket"), ("host", "a")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert!(h.get(header::CONNECTION).is_none());

        let plain = headers(&[("host", "a"), ("accept", "*/*"), ("x-forwarded-for", "10.0.0.1")]);
        let mut h = plain.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, plain);
    }

    #[test]
    fn the_request_targets_the_session_and_carries_x_forwarded() {
        let mut req = Request::get("http://dev.example.com/a/b?c=1")
            .header(header::HOST, "dev.example.com")
            .header(X_FORWARDED_FOR, "10.0.0.1")
            .header(header::CONNECTION, "close")
            .body(())
            .unwrap();
        let ip = ip_header("192.0.2.7".parse().unwrap());
        prepare_request(&mut req, "dev.example.com", &ip, "https", false).unwrap();
        assert_eq!(req.uri(), "/a/b?c=1");
        let h = req.headers();
        assert_eq!(h.get(header::HOST).unwrap(), "dev.example.com");
        assert_eq!(h.get(X_FORWARDED_FOR).unwrap(), "10.0.0.1, 192.0.2.7");
        assert_eq!(h.get(X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(h.get(X_FORWARDED_HOST).unwrap(), "dev.example.com");
        assert!(h.get(header::CONNECTION).is_none());
    }
}
