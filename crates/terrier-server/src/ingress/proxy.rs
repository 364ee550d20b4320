//! Forwards a visitor's HTTP request to a device and streams the answer back.
//!
//! Requests go to the device over HTTP/1 connections that its session keeps
//! ([`crate::tunnel::upstream`]), each on a tunnel stream, so a keep-alive
//! visitor (or many visitors) reuse data sockets instead of paying a
//! WebSocket handshake per request. Bodies are streamed both ways, never
//! buffered whole. `Upgrade` requests (WebSocket) are passed through: once
//! both sides answered `101`, the two upgraded connections are spliced.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::access::{AccessRules, Denied, Granted, StoredTokens};
use crate::cluster::envelope::{Bound, Envelopes, Refused, ENVELOPE_HEADER};
use crate::cluster::forward::{self, Forwarder};
use crate::cluster::nodes::Membership;
use crate::config::ServerConfig;
use crate::forwarding::{self, Answer, Authority, Body, Peer, Proto, Splice, Transport, Visitor};
use crate::lifecycle::Lifecycle;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::pages::{LivePages, Page};
use crate::store::now_ms;
use crate::tunnel::registry::Registry;
use crate::tunnel::requests::{Headers, RequestRecord};
use crate::tunnel::session::OpenError;
use crate::tunnel::upstream::{self, SendError};

/// Seconds a visitor of an offline device is told to wait (`Retry-After`).
const RETRY_AFTER_SECS: &str = "30";

/// What forwarding a visitor to a device needs.
pub struct Proxy {
    /// `public_scheme`, `admin.request_log`.
    pub config: Arc<ServerConfig>,
    /// The limits in force.
    pub live: Arc<Live>,
    /// Where connection and splice tasks run.
    pub lifecycle: Lifecycle,
    /// Devices online on this node.
    pub sessions: Arc<Registry>,
    /// Leases of devices elsewhere, and the nodes holding them.
    pub membership: Arc<Membership>,
    /// Sends visitors of devices on other nodes there.
    pub forwarder: Forwarder,
    /// Opens the envelopes of requests peers forward here.
    pub envelopes: Arc<Envelopes>,
    /// The devices' access rules.
    pub access: Arc<AccessRules>,
    /// The token store's visitor tokens, for those rules.
    pub tokens: Arc<dyn StoredTokens>,
    /// Error pages.
    pub pages: Arc<LivePages>,
    /// Request counts and durations.
    pub metrics: Arc<Metrics>,
}

/// Forwards `req` for subdomain `sub` (from `peer`, routed by `authority`).
///
/// The visitor is the TCP peer, unless a peer node forwarded the request
/// with a valid envelope; the device's access rules are checked here, on
/// the node that holds the device, against that visitor.
pub async fn forward(
    proxy: &Proxy,
    sub: &str,
    authority: &Authority,
    peer: &Peer,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let host = authority.host.as_str();
    let vouched = match vouched_visitor(proxy, authority, &req) {
        Ok(vouched) => vouched,
        Err(refused) => return envelope_refused(proxy, authority, refused),
    };
    forwarding::strip_visitor_claims(req.headers_mut());
    let forwarded = vouched.is_some();
    let visitor = vouched.unwrap_or_else(|| Visitor::of_peer(peer, proto_of(proxy, peer.transport)));
    let Some(session) = proxy.sessions.by_subdomain(sub) else {
        return elsewhere_or_offline(proxy, sub, authority, &visitor, forwarded, req).await;
    };
    // A token of terrier's opens terrier's door, not the device's: the
    // check removes it from the headers.
    let (mut head, body) = req.into_parts();
    let checked = proxy.access.check_http(
        &session.name,
        visitor.ip,
        &head.method,
        head.uri.path(),
        &mut head.headers,
        &*proxy.tokens,
    );
    let mut req = Request::from_parts(head, body);
    let who = match checked {
        Err(denied) => return access_denied(proxy, &session.name, &visitor, denied, host),
        Ok(Granted { who }) => who,
    };
    if !session.http {
        return proxy.pages.render(Page {
            status: StatusCode::NOT_FOUND,
            title: "No web page here",
            message: "This device is online but does not serve HTTP.",
            detail: "",
            host,
        });
    }
    let visitor_upgrade = forwarding::is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    if let Err(detail) = prepare_request(&mut req, authority, &visitor, visitor_upgrade.is_some()) {
        return proxy.pages.render(Page {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request",
            message: "The request could not be forwarded.",
            detail,
            host,
        });
    }
    let method = req.method().clone();
    let path = crate::tunnel::requests::bounded_path(req.uri().path());
    let keep = proxy.config.admin.request_log;
    let request_headers = if keep > 0 { Headers::of(req.headers()) } else { Headers::default() };
    let started = std::time::Instant::now();
    let at_ms = now_ms();
    let limits = proxy.live.limits();
    let result = match session.admit(visitor.ip, &limits) {
        Ok(slot) => {
            let place = Arc::new(slot);
            let req = req.map(|body| forwarding::RequestBody::new(body, limits.body_read_timeout, place.clone()));
            upstream::send(&session, &proxy.metrics, &proxy.lifecycle.tasks, req, &limits)
                .await
                .map(|response| (response, place))
        }
        Err(e) => Err(SendError::Open(e)),
    };
    proxy.metrics.visitor_request(started.elapsed());
    let log = |status: StatusCode, size: Option<u64>, request_headers: Headers, response_headers: Headers| {
        let record = RequestRecord {
            at_ms,
            method: method.clone(),
            path: path.clone(),
            status: status.as_u16(),
            duration_ms: started.elapsed().as_millis() as u64,
            size,
            request_headers,
            response_headers,
            who: who.clone(),
        };
        session.log_request(record, keep);
    };
    let (mut response, place) = match result {
        Ok(answered) => answered,
        Err(e) => {
            let page = forward_error(proxy, &session.name, host, e);
            log(page.status(), None, request_headers, Headers::default());
            return page;
        }
    };
    let size = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let response_headers = if keep > 0 { Headers::of(response.headers()) } else { Headers::default() };
    log(response.status(), size, request_headers, response_headers);
    tracing::debug!(device = %session.name, %method, %path, status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "forwarded");
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Splice::new(&proxy.lifecycle, &limits).switch_protocols(
            visitor_upgrade,
            response,
            &session.name,
            Some(place),
        );
    }
    forwarding::strip_hop_by_hop(response.headers_mut(), false);
    response.map(|body| Either::Left(Answer::new(body, Some(place))))
}

/// The visitor a peer node vouched for, when `req` carries an envelope.
fn vouched_visitor<B>(proxy: &Proxy, authority: &Authority, req: &Request<B>) -> Result<Option<Visitor>, Refused> {
    let Some(envelope) = req.headers().get(ENVELOPE_HEADER) else {
        return Ok(None);
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let bound = Bound { method: req.method().as_str(), authority: &authority.host, target };
    let (visitor, from) = proxy.envelopes.open(envelope, bound, now_ms())?;
    tracing::debug!(node = %from, visitor = %visitor.ip, host = %authority.host, "request forwarded by a peer");
    Ok(Some(visitor))
}

/// The 403 page for a request whose envelope did not verify.
fn envelope_refused(proxy: &Proxy, authority: &Authority, refused: Refused) -> Response<Body> {
    // Info, like access refusals: any visitor can send a bad envelope.
    tracing::info!(host = %authority.host, error = %refused, "forwarded request refused: its envelope did not verify");
    proxy.pages.render(Page {
        status: StatusCode::FORBIDDEN,
        title: "Forwarded request refused",
        message: "This request claims to come from another server of this service, and it does not.",
        detail: "",
        host: &authority.host,
    })
}

/// The scheme a visitor reached this node with.
fn proto_of(proxy: &Proxy, transport: Transport) -> Proto {
    match transport {
        Transport::Tls => Proto::Https,
        Transport::Plain => Proto::parse(&proxy.config.public_scheme).unwrap_or(Proto::Http),
    }
}

/// Rewrites the visitor's request for the device: origin-form target,
/// `Host` set to the authority it was routed by, hop-by-hop headers
/// dropped, `X-Forwarded-*` written; `upgrade` (from
/// [`forwarding::is_upgrade`]) keeps its `Upgrade` header.
fn prepare_request<B>(
    req: &mut Request<B>,
    authority: &Authority,
    visitor: &Visitor,
    upgrade: bool,
) -> Result<(), &'static str> {
    // hyper's HTTP/1 client writes the URI as it is: origin-form.
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let mut target = http::uri::Parts::default();
        target.path_and_query =
            Some(req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(target).map_err(|_| "bad request target")?;
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    forwarding::strip_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    headers.insert(header::HOST, authority.raw.clone());
    let host = HeaderValue::from_str(&authority.host).map_err(|_| "bad host")?;
    forwarding::set_forwarded(headers, visitor, &host);
    Ok(())
}

/// The answer for a subdomain with no session on this node: forwarded to the
/// node that holds the device (unless a peer already forwarded it here), or
/// a page saying it is offline or unknown.
async fn elsewhere_or_offline(
    proxy: &Proxy,
    sub: &str,
    authority: &Authority,
    visitor: &Visitor,
    forwarded: bool,
    req: Request<Incoming>,
) -> Response<Body> {
    let host = authority.host.as_str();
    match proxy.membership.store.by_subdomain(sub, now_ms()).await {
        Ok(Some(lease)) => {
            let holder = lease.online.as_ref().map(|o| o.node.as_str()).filter(|n| *n != proxy.membership.node_id);
            let peer = match holder {
                Some(id) if !forwarded => crate::cluster::nodes::peer(&proxy.membership, id).await,
                _ => None,
            };
            if let Some(peer) = peer {
                return match forward::to_peer(&proxy.forwarder, &peer, &lease.name, authority, visitor, req).await {
                    Ok(response) => response,
                    Err(e) => {
                        tracing::warn!(device = %lease.name, node = %peer.id, error = %e, "forwarding to the device's node failed");
                        proxy.pages.render(Page {
                            status: StatusCode::BAD_GATEWAY,
                            title: "The device's server did not answer",
                            message: "The device is connected to another server of this service, which could not be reached.",
                            detail: "",
                            host,
                        })
                    }
                };
            }
            offline_page(proxy, &lease, host)
        }
        Ok(None) => proxy.pages.render(Page {
            status: StatusCode::NOT_FOUND,
            title: "No device here",
            message: "No device is registered at this address. Check the address, or the device may have been given a new one.",
            detail: "",
            host,
        }),
        Err(e) => {
            tracing::error!(subdomain = sub, error = %e, "store lookup failed");
            proxy.pages.render(Page {
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
/// address off the allow-list or a closed path, 400 for a path in an
/// unclear form, 401 asking for the credentials the path takes.
fn access_denied(proxy: &Proxy, device: &str, visitor: &Visitor, denied: Denied, host: &str) -> Response<Body> {
    tracing::info!(device, visitor = %visitor.ip, ?denied, "visitor denied by access rules");
    match denied {
        Denied::Path => proxy.pages.render(Page {
            status: StatusCode::FORBIDDEN,
            title: "Access denied",
            message: "This part of the device is closed to visitors.",
            detail: "",
            host,
        }),
        Denied::UnclearPath => proxy.pages.render(Page {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request",
            message: "The request's path has a form web servers read differently (dot segments, //, ;, \\ or an encoded /), so it was not forwarded.",
            detail: "",
            host,
        }),
        Denied::Address => proxy.pages.render(Page {
            status: StatusCode::FORBIDDEN,
            title: "Access denied",
            message: "This device only accepts visitors from certain networks.",
            detail: "",
            host,
        }),
        Denied::Credentials(accepted) => {
            let mut response = proxy.pages.render(Page {
                status: StatusCode::UNAUTHORIZED,
                title: "Sign in required",
                message: if accepted.basic {
                    "This device asks for a user name and password."
                } else {
                    "This part of the device takes a token (Authorization: Bearer)."
                },
                detail: "",
                host,
            });
            let realm = host.replace('"', "");
            let challenges = [
                accepted.basic.then(|| format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")),
                accepted.bearer.then(|| format!("Bearer realm=\"{realm}\"")),
            ];
            for challenge in challenges.into_iter().flatten() {
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().append(header::WWW_AUTHENTICATE, value);
                }
            }
            response
        }
    }
}

/// The 503 page for a device in its grace period.
fn offline_page(proxy: &Proxy, lease: &crate::store::Lease, host: &str) -> Response<Body> {
    let last_seen =
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(lease.last_seen_ms));
    let mut response = proxy.pages.render(Page {
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "This device is offline",
        message: "The device behind this address is not connected right now. It usually comes back on its own; try again in a little while.",
        detail: &format!("last seen {last_seen}"),
        host,
    });
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// The page for a request the device could not answer, or that the
/// visitor's own body cut.
fn forward_error(proxy: &Proxy, device: &str, host: &str, error: SendError) -> Response<Body> {
    let open_error = match &error {
        SendError::Open(e) => Some(e),
        SendError::Http(_) | SendError::NoAnswer(_) => None,
    };
    tracing::info!(device, error = %error, cause = ?open_error, "forwarding failed");
    let (status, title, message, detail) = explain(&error);
    proxy.pages.render(Page { status, title, message, detail: &detail, host })
}

/// Status, title, message and detail of the page for `error`: the
/// visitor's fault first (408 when its body stalled, 400 when it broke
/// HTTP's framing), else what the device did.
fn explain(error: &SendError) -> (StatusCode, &'static str, &'static str, String) {
    if let Some(timeout) = cause::<forwarding::BodyTimeout>(error) {
        return (
            StatusCode::REQUEST_TIMEOUT,
            "The request's body stopped",
            "Your browser stopped sending the request before it was complete.",
            timeout.to_string(),
        );
    }
    if let Some(bad) = cause::<forwarding::BadBody>(error) {
        return (
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The request's body was malformed, so it was not forwarded whole.",
            bad.to_string(),
        );
    }
    match error {
        SendError::Open(OpenError::Timeout(after)) => (
            StatusCode::GATEWAY_TIMEOUT,
            "The device did not answer in time",
            "The device is connected but did not open a connection for this request in time.",
            format!("no data socket within {after:?} (limits.stream_open_timeout)"),
        ),
        SendError::Open(OpenError::Refused(reason)) => (
            StatusCode::BAD_GATEWAY,
            "The device's web service is not answering",
            "The device is connected, but its local web service refused the connection.",
            reason.clone(),
        ),
        SendError::Open(OpenError::TooManyPending | OpenError::TooManyStreams | OpenError::TooManyForVisitor(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The device is busy",
            "Too many visitors are waiting for this device. Try again shortly.",
            String::new(),
        ),
        SendError::Open(OpenError::Offline) => (
            StatusCode::BAD_GATEWAY,
            "The device went offline",
            "The device disconnected while this request was on its way.",
            String::new(),
        ),
        SendError::NoAnswer(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "The device did not answer in time",
            "The device took the request but its web service did not start an answer in time.",
            error.to_string(),
        ),
        SendError::Http(_) => (
            StatusCode::BAD_GATEWAY,
            "The device closed the connection",
            "The device's web service closed the connection without a complete answer.",
            error.to_string(),
        ),
    }
}

/// The first error of type `T` in `error`'s chain of causes.
fn cause<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_targets_the_session_and_carries_only_our_x_forwarded() {
        let mut req = Request::get("http://dev.example.com:8080/a/b?c=1")
            .header(header::HOST, "other.example.com")
            .header(header::CONNECTION, "close")
            .body(())
            .unwrap();
        let authority =
            Authority { raw: HeaderValue::from_static("dev.example.com:8080"), host: "dev.example.com".into() };
        let visitor = Visitor::new("192.0.2.7".parse().unwrap(), Proto::Https);
        prepare_request(&mut req, &authority, &visitor, false).unwrap();
        assert_eq!(req.uri(), "/a/b?c=1");
        let h = req.headers();
        assert_eq!(h.get(header::HOST).unwrap(), "dev.example.com:8080", "Host is the authority routed by");
        assert_eq!(h.get(forwarding::X_FORWARDED_FOR).unwrap(), "192.0.2.7");
        assert_eq!(h.get(forwarding::X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(h.get(forwarding::X_FORWARDED_HOST).unwrap(), "dev.example.com");
        assert!(h.get(header::CONNECTION).is_none());
    }
}
