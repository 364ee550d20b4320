//! The one HTTP listener: accepts connections (HTTP/1.1 and HTTP/2), and
//! routes each *request* by its host: the server's own domain (or an IP
//! address: no device has one) goes to the tunnel endpoint, the front page
//! and the admin API, `<sub>.<domain>` to that device, anything else 404.
//!
//! Routing is per request, not per connection: a browser may reuse one
//! keep-alive connection for several hosts that resolve to us.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use terrier_proto::handshake::{CONTROL_PATH, DATA_PATH};
use terrier_transport::tcp::ListenerTuning;
use tokio::net::{TcpListener, TcpStream};

use super::raw::Relays;
use super::sniff::{sniff, Protocol};
use super::{idle, proxy, Body};
use crate::forwarding::Authority;
use crate::pages::Page;
use crate::store::Store;
use crate::tunnel::{control, data};
use terrier_transport::prefixed::Prefixed;

/// What the listeners (plain and TLS) need to serve and route requests:
/// the proxy's parts (domain, limits, lifecycle, pages, sessions) and more.
pub struct Front {
    /// Relays TLS passthrough visitors.
    pub relays: Relays,
    /// Where ACME challenge certificates are published.
    pub store: Arc<dyn Store>,
    /// Forwards visitors to devices.
    pub proxy: proxy::Proxy,
    /// The agents' endpoint.
    pub tunnel: Arc<crate::tunnel::Endpoint>,
    /// The operator's endpoints.
    pub admin: Arc<crate::admin::Admin>,
}

/// Serves the plain listener until shutdown.
pub async fn serve(front: Arc<Front>, listener: TcpListener) {
    accept_until_shutdown(front, listener, "HTTP", |front, stream, remote| {
        serve_one(front, stream, remote, Transport::Plain)
    })
    .await
}

/// Accepts connections until shutdown, each handled by `handle` in a node
/// task (tuned first, cut at the hard stop). Open connections drain in
/// their own tasks: `run` waits for every node task under the one drain
/// deadline.
pub async fn accept_until_shutdown<H, F>(front: Arc<Front>, listener: TcpListener, what: &'static str, handle: H)
where
    H: Fn(Arc<Front>, TcpStream, SocketAddr) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tuning = ListenerTuning::default();
    loop {
        let accepted = tokio::select! {
            () = front.proxy.lifecycle.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                tuning.accepted(&listener, &stream, front.proxy.live.limits().tcp_keepalive);
                // Under the hard stop too: a connection still sniffing when
                // the server stops is simply dropped.
                front.proxy.lifecycle.spawn_until_hard_stop(handle(front.clone(), stream, remote));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

pub use crate::forwarding::{Peer, Transport};

/// Serves HTTP/1.1 or HTTP/2 on one accepted connection (plain, or TLS
/// already terminated) until it closes, has no request in flight for
/// `limits.visitor_idle_timeout`, leaves an answer untaken for
/// `limits.answer_write_timeout`, or the server drains.
pub async fn serve_one<S>(front: Arc<Front>, mut stream: S, remote: SocketAddr, transport: Transport)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = front.proxy.live.limits();
    let (protocol, prefix) = match sniff(&mut stream, limits.header_read_timeout).await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "connection closed before a request");
            return;
        }
    };
    let peer = Peer::new(remote, transport);
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Some(limits.http2_keepalive_interval))
        .keep_alive_timeout(limits.http2_keepalive_interval);
    let activity = idle::Activity::new();
    let (service_front, service_activity) = (front.clone(), activity.clone());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (front, peer, in_flight) = (service_front.clone(), peer.clone(), service_activity.start());
        async move {
            let response = route(front, &peer, req).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| idle::Tracked::new(body, in_flight)))
        }
    });
    let io = TokioIo::new(Prefixed::new(prefix.into(), stream));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let idle_timeout = limits.visitor_idle_timeout;
    let mut closing = false;
    // A peer that never acknowledges the goodbye (HTTP/2 waits for a PING
    // ack) gets one more idle timeout, then is cut.
    let mut cut_at = None;
    let ended = loop {
        tokio::select! {
            ended = connection.as_mut() => break ended,
            () = sleep_until(cut_at), if cut_at.is_some() => {
                tracing::debug!(%remote, "cutting an idle visitor connection that did not close");
                return;
            }
            () = activity.until_answer_stalled(limits.answer_write_timeout) => {
                tracing::info!(%remote, "cutting a visitor that stopped taking its answer (limits.answer_write_timeout)");
                return;
            }
            () = front.proxy.lifecycle.shutdown.cancelled(), if !closing => {}
            () = activity.until_idle(idle_timeout), if !closing => {
                tracing::debug!(%remote, idle = ?idle_timeout, "closing an idle visitor connection");
                cut_at = Some(tokio::time::Instant::now() + idle_timeout);
            }
        }
        // Shutdown or idle: finish what is in flight, take nothing new.
        connection.as_mut().graceful_shutdown();
        closing = true;
    };
    if let Err(e) = ended {
        tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
    }
}

/// Sleeps until `at` (a branch guard keeps `None` from being polled).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Where a request's host points.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// The server itself (tunnel endpoint, index page).
    Apex,
    /// A device subdomain label.
    Device(&'a str),
    /// Neither.
    Unknown,
}

/// Classifies `host` (no port, lowercase) against the server's `domain`.
pub fn classify<'a>(host: &'a str, domain: &str) -> Target<'a> {
    // No device is named by an IP address, so one is the server itself: the
    // address terrierd prints at start, the admin API from its host.
    if host == domain || is_ip_literal(host) {
        return Target::Apex;
    }
    match host.strip_suffix(domain).and_then(|rest| rest.strip_suffix('.')) {
        Some(label) if terrier_proto::name::is_valid_subdomain(label) => Target::Device(label),
        _ => Target::Unknown,
    }
}

/// Is `host` (normalized) an IPv4 address or a bracketed IPv6 one?
fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// The authority a request is for: the request-target's (absolute form,
/// HTTP/2's `:authority`) when it has one, which RFC 9112 §3.2.2 says wins
/// over `Host`; else `Host`. `None` when neither names a host.
pub fn request_authority<B>(req: &Request<B>) -> Option<Authority> {
    let raw = match req.uri().authority() {
        Some(authority) => http::HeaderValue::from_str(authority.as_str()).ok()?,
        None => req.headers().get(http::header::HOST)?.clone(),
    };
    let host = normalize_host(raw.to_str().ok()?)?;
    Some(Authority { raw, host })
}

/// Why a request's framing is refused before it is routed (400): RFC 9112
/// lets a server reject these, and a device behind us might read them
/// differently from hyper.
pub fn framing_error<B>(req: &Request<B>) -> Option<&'static str> {
    let headers = req.headers();
    let count = |name| headers.get_all(name).iter().count();
    if count(http::header::HOST) > 1 {
        return Some("The request has more than one Host header.");
    }
    let lengths = count(http::header::CONTENT_LENGTH);
    if lengths > 1 {
        return Some("The request has more than one Content-Length header.");
    }
    if lengths > 0 && headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Some("The request has both Content-Length and Transfer-Encoding.");
    }
    None
}

/// A `Host` value (or URI authority) lowercased, without port or trailing
/// dot; `None` when nothing is left.
pub fn normalize_host(raw: &str) -> Option<String> {
    let host = match raw.rsplit_once(':') {
        // `[::1]:80` and `example.com:80` lose the port; a bare IPv6 keeps its colons.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) => h,
        _ => raw,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Longest method taken. HTTP sets no bound, and a method travels whole into
/// the request log and the agent's `request` message; the longest
/// registered ones (WebDAV's) have 16 bytes.
const MAX_METHOD_BYTES: usize = 32;

/// Routes one request.
pub async fn route(front: Arc<Front>, peer: &Peer, req: Request<Incoming>) -> Response<Body> {
    if req.method().as_str().len() > MAX_METHOD_BYTES {
        // RFC 9112 §3: a method longer than any implemented gets 501.
        return front.proxy.pages.render(Page {
            status: StatusCode::NOT_IMPLEMENTED,
            title: "Method not implemented",
            message: "The request's method is longer than any this server takes.",
            detail: &format!("at most {MAX_METHOD_BYTES} bytes"),
            host: "",
        });
    }
    if let Some(detail) = framing_error(&req) {
        return front.proxy.pages.render(Page {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request",
            message: "The request's framing is ambiguous, so it was not forwarded.",
            detail,
            host: "",
        });
    }
    let Some(authority) = request_authority(&req) else {
        return front.proxy.pages.render(Page {
            status: StatusCode::BAD_REQUEST,
            title: "Which site?",
            message: "The request did not say which host it is for (no Host header).",
            detail: "HTTP/1.1 requests need a Host header.",
            host: "",
        });
    };
    let host = authority.host.as_str();
    let plain = peer.transport == Transport::Plain;
    if plain && front.proxy.config.tls.redirect_http && !matches!(req.uri().path(), CONTROL_PATH | DATA_PATH) {
        return redirect_to_https(&front, host, &req);
    }
    match classify(host, &front.proxy.config.domain) {
        Target::Apex => apex(front, peer.remote, req).await,
        Target::Device(sub) => proxy::forward(&front.proxy, sub, &authority, peer, req).await,
        // Agents may dial the server by IP address or another name.
        Target::Unknown if matches!(req.uri().path(), CONTROL_PATH | DATA_PATH) => apex(front, peer.remote, req).await,
        Target::Unknown => front.proxy.pages.render(Page {
            status: StatusCode::NOT_FOUND,
            title: "Unknown host",
            message: "This server does not serve that host name.",
            detail: &format!("served domain: {}", front.proxy.config.domain),
            host,
        }),
    }
}

/// `308` to the same host and path on the TLS listener. Agents' tunnel
/// endpoints are exempt: an agent configured with `ws://` keeps working.
fn redirect_to_https<B>(front: &Front, host: &str, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{}{path}", front.proxy.config.public_url(host));
    super::redirect(StatusCode::PERMANENT_REDIRECT.as_u16(), &location, format!("moved to {location}"))
}

/// Requests to the server's own domain or IP address.
async fn apex(front: Arc<Front>, remote: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        CONTROL_PATH => {
            let response = control::handshake(&front.tunnel, remote, req).await;
            front.proxy.metrics.handshake(response.status().as_u16());
            response
        }
        DATA_PATH => data::handshake(&front.tunnel, req).await,
        "/" if front.admin.authorized(&req) => {
            crate::pages::front::render(&front.proxy.config, Some(front.proxy.sessions.len()))
        }
        "/" => crate::pages::front::render(&front.proxy.config, None),
        path if crate::admin::owns(path) => crate::admin::serve(&front.admin, req).await,
        _ => front.proxy.pages.render(Page {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            message: "There is nothing at this path.",
            detail: req.uri().path(),
            host: &front.proxy.config.domain,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_classify_by_domain() {
        assert_eq!(classify("localhost", "localhost"), Target::Apex);
        assert_eq!(classify("abc.localhost", "localhost"), Target::Device("abc"));
        assert_eq!(classify("a.b.localhost", "localhost"), Target::Unknown);
        assert_eq!(classify("evillocalhost", "localhost"), Target::Unknown);
        assert_eq!(classify(".localhost", "localhost"), Target::Unknown);
        assert_eq!(classify("x.tunnel.example.com", "tunnel.example.com"), Target::Device("x"));
        assert_eq!(classify("127.0.0.1", "tunnel.example.com"), Target::Apex);
        assert_eq!(classify("[::1]", "tunnel.example.com"), Target::Apex);
        assert_eq!(classify("1.2.3.4.localhost", "localhost"), Target::Unknown);
    }

    #[test]
    fn host_header_loses_port_and_case() {
        let host = |req: &Request<()>| request_authority(req).map(|a| a.host);
        let req = |h: &str| Request::builder().header("host", h).body(()).unwrap();
        assert_eq!(host(&req("ABC.Localhost:8080")).as_deref(), Some("abc.localhost"));
        assert_eq!(host(&req("[::1]:8080")).as_deref(), Some("[::1]"));
        assert_eq!(host(&req("example.com.")).as_deref(), Some("example.com"));
        assert_eq!(host(&Request::builder().body(()).unwrap()), None);
        let h2 = Request::builder().uri("https://dev.localhost/x").body(()).unwrap();
        assert_eq!(host(&h2).as_deref(), Some("dev.localhost"));
    }

    #[test]
    fn the_target_authority_wins_over_host_and_is_kept_whole() {
        let req =
            Request::builder().uri("http://Dev.localhost:8080/x").header("host", "other.localhost").body(()).unwrap();
        let authority = request_authority(&req).unwrap();
        assert_eq!((authority.raw.to_str().unwrap(), authority.host.as_str()), ("Dev.localhost:8080", "dev.localhost"));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let req = |pairs: &[(&str, &str)]| {
            let mut b = Request::builder();
            for (n, v) in pairs {
                b = b.header(*n, *v);
            }
            b.body(()).unwrap()
        };
        assert!(framing_error(&req(&[("host", "a"), ("host", "b")])).is_some());
        assert!(framing_error(&req(&[("content-length", "1"), ("content-length", "1")])).is_some());
        assert!(framing_error(&req(&[("content-length", "1"), ("transfer-encoding", "chunked")])).is_some());
        assert!(framing_error(&req(&[("host", "a"), ("content-length", "1")])).is_none());
        assert!(framing_error(&req(&[("host", "a"), ("transfer-encoding", "chunked")])).is_none());
    }
}
