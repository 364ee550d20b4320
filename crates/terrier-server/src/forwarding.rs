//! The vocabulary every hop that forwards a visitor's HTTP request shares:
//! who the visitor is ([`Visitor`]), which of its headers never pass a hop
//! (hop-by-hop, anything that claims to be from terrier or about the
//! visitor's address), the `X-Forwarded-*` headers written in their place,
//! the answer that holds the visitor's place among the device's streams,
//! and the splice of upgraded (WebSocket) connections.
//!
//! Both the proxy to a device (`ingress::proxy`) and the forwarding to a
//! peer node (`cluster::forward`) use it; it uses neither, so the two never
//! import each other.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use terrier_transport::idle::{until_idle, Activity};

use crate::config::Limits;
use crate::lifecycle::Lifecycle;
use crate::visitors::VisitorSlot;

/// Response body of the ingress: a device's streamed body, or a page we made.
pub type Body = Either<Answer, Full<Bytes>>;

/// A visitor's place among the device's streams, shared by everything
/// that keeps the device's connection busy for that visitor: the request's
/// body (a device may answer before reading it), the answer, an upgraded
/// connection. Given back when the last of them is dropped.
pub type Place = Arc<VisitorSlot>;

/// An answer's body streamed from upstream (the device, or the node that
/// holds it), keeping the visitor's place until the body is done.
pub struct Answer {
    /// The body as it comes.
    inner: Incoming,
    /// The visitor's place.
    _place: Option<Place>,
}

impl Answer {
    /// `inner`, holding `place` (none for an answer a peer node streams:
    /// that node holds the place).
    pub fn new(inner: Incoming, place: Option<Place>) -> Self {
        Self { inner, _place: place }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A visitor's request body on its way to the device: `Incoming`, cut
/// with an error when the visitor leaves it waiting for its next bytes
/// longer than `limits.body_read_timeout`, so a slow body cannot hold a
/// device connection (and its stream) for ever.
pub struct RequestBody {
    /// The visitor's body.
    inner: Incoming,
    /// How long the next frame may take.
    timeout: std::time::Duration,
    /// Armed while a frame is awaited; boxed because most bodies never wait.
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The visitor's place, held while the body still streams.
    _place: Place,
    /// When the body last moved: the wait for the device's answer counts
    /// from there, so a long upload is not cut as an answer that never came.
    progress: Activity,
}

impl RequestBody {
    /// `inner`, allowed `timeout` between frames, holding `place`.
    pub fn new(inner: Incoming, timeout: std::time::Duration, place: Place) -> Self {
        Self { inner, timeout, waiting: None, _place: place, progress: Activity::new() }
    }

    /// When the body last moved (stamped when the request was made).
    pub fn progress(&self) -> Activity {
        self.progress.clone()
    }
}

/// The visitor sent no body bytes within `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the visitor sent no body bytes for {0:?} (limits.body_read_timeout)")]
pub struct BodyTimeout(std::time::Duration);

/// The visitor's body broke HTTP's framing (a bad chunk, say), or its
/// connection failed mid-body: the visitor's fault, not the device's.
#[derive(Debug, thiserror::Error)]
#[error("the visitor's request body was malformed or cut: {0}")]
pub struct BadBody(hyper::Error);

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = None;
            this.progress.touch();
            return Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(BadBody(e)) as Self::Error)));
        }
        let timeout = this.timeout;
        let waiting = this.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `X-Forwarded-*` names, built once: a `&str` name is parsed on every use.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the visitor used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The host the visitor asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How a connection reached us, so the forwarding headers and redirects
/// know the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (`http`, `ws`).
    Plain,
    /// TLS terminated here (`https`, `wss`).
    Tls,
}

/// The visitor at the other end of one connection: what every request on
/// it needs to know about it, worked out once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The visitor's address.
    pub remote: SocketAddr,
    /// Plain or TLS.
    pub transport: Transport,
    /// The address as a header value, made once per connection rather than
    /// per request (`X-Forwarded-For`).
    ip_header: HeaderValue,
}

impl Peer {
    /// The peer at `remote`, connected over `transport`.
    pub fn new(remote: SocketAddr, transport: Transport) -> Self {
        Self { remote, transport, ip_header: ip_header(remote.ip()) }
    }
}

/// The authority a request is routed by: the request-target's (absolute
/// form, or HTTP/2's `:authority`) when it has one, else `Host`. The device
/// and peer nodes get this same value as `Host`, so nobody downstream can
/// route by a different one.
#[derive(Debug, Clone)]
pub struct Authority {
    /// As the visitor wrote it (port included).
    pub raw: HeaderValue,
    /// Lowercased, without port or trailing dot: what routing compares.
    pub host: String,
}

/// Who a request is from, as the access rules and the device see it: the
/// TCP peer, or the visitor a peer node vouched for in an authenticated
/// envelope. Never anything a visitor's headers say.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// The visitor's IP address.
    pub ip: IpAddr,
    /// `http` or `https`, as the visitor reached the first node.
    pub proto: Proto,
    /// `ip` as a header value.
    ip_header: HeaderValue,
}

impl Visitor {
    /// The visitor at `ip`, who came over `proto`.
    pub fn new(ip: IpAddr, proto: Proto) -> Self {
        Self { ip, proto, ip_header: ip_header(ip) }
    }

    /// The visitor on `peer`'s connection, who came over `proto`.
    pub fn of_peer(peer: &Peer, proto: Proto) -> Self {
        Self { ip: peer.remote.ip(), proto, ip_header: peer.ip_header.clone() }
    }
}

/// The scheme a visitor used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

impl Proto {
    /// The scheme's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
        }
    }

    /// Parses `http` or `https`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Proto::Http),
            "https" => Some(Proto::Https),
            _ => None,
        }
    }

    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// Removes what a visitor may not say about itself or on terrier's behalf:
/// every `X-Terrier-*` and `X-Forwarded-*` header (ours are written afresh
/// by [`set_forwarded`]) and the other names frameworks read a client's
/// address from ([`ADDRESS_CLAIMS`]), in any spelling with `_` for `-`
/// (CGI-style servers read `X_Forwarded_For` as the header we write).
pub fn strip_visitor_claims(headers: &mut HeaderMap) {
    // Most requests carry none: look before allocating.
    if !headers.keys().any(is_claim) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|name| is_claim(name)).cloned().collect();
    for name in found {
        headers.remove(name);
    }
}

/// Prefixes of names that claim to be terrier's or a proxy's.
const CLAIM_PREFIXES: [&str; 3] = ["x-terrier-", "x-forwarded-", "x-original-forwarded-"];

/// Names web frameworks and proxies read a client's address from.
const ADDRESS_CLAIMS: [&str; 12] = [
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-originating-ip",
    "x-remote-addr",
];

/// Does `name` claim to be from terrier or a proxy, or say the visitor's
/// address? Compared with `_` read as `-`, without allocating.
fn is_claim(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    CLAIM_PREFIXES.iter().any(|prefix| starts_like(name, prefix))
        || ADDRESS_CLAIMS.iter().any(|claim| name.len() == claim.len() && starts_like(name, claim))
}

/// Does `name` start with `prefix` (lowercase, `-` standing for `-` or `_`)?
fn starts_like(name: &[u8], prefix: &str) -> bool {
    name.len() >= prefix.len() && name.iter().zip(prefix.bytes()).all(|(&n, p)| n == p || (p == b'-' && n == b'_'))
}

/// Writes `X-Forwarded-For` (the visitor's address alone: no hop before
/// terrier is trusted), `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn set_forwarded(headers: &mut HeaderMap, visitor: &Visitor, host: &HeaderValue) {
    headers.insert(X_FORWARDED_FOR, visitor.ip_header.clone());
    headers.insert(X_FORWARDED_PROTO, visitor.proto.header_value());
    headers.insert(X_FORWARDED_HOST, host.clone());
}

/// `ip` as a header value.
fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

/// Does the request ask to switch protocols (WebSocket and the like)?
///
/// Not to `h2c`: HTTP/2 on the device's connection would carry requests of
/// its own, none of them checked against the device's path rules (and RFC
/// 9113 dropped that upgrade). An `Upgrade` value that is not plain ASCII,
/// which a device may trim into `h2c`, counts as asking for it. Such a
/// request goes on as an ordinary one, its `Upgrade` removed.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let upgrades = headers.get_all(header::UPGRADE);
    let h2c = |v: &HeaderValue| v.to_str().map_or(true, |s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c")));
    headers.contains_key(header::UPGRADE)
        && !upgrades.iter().any(h2c)
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
/// `keep_upgrade`, `Upgrade` survives (the next hop must see it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none, most answers only `Connection`: one pass
    // finds out, and only what is there is removed, without the heap.
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

/// How an upgraded connection is spliced: in a task of the node's
/// lifecycle, cut by its hard stop, or once no bytes moved either way for
/// `idle_timeout` (`limits.tcp_idle_timeout`, as for any relayed connection).
pub struct Splice<'a> {
    /// Where the splice task runs.
    pub lifecycle: &'a Lifecycle,
    /// How long the connection may move no bytes.
    pub idle_timeout: std::time::Duration,
}

impl<'a> Splice<'a> {
    /// Splices in `lifecycle`'s tasks under `limits`.
    pub fn new(lifecycle: &'a Lifecycle, limits: &Limits) -> Self {
        Self { lifecycle, idle_timeout: limits.tcp_idle_timeout }
    }

    /// Answers the visitor's upgrade with the `101` from upstream (the
    /// device, or the node holding it) and splices the two upgraded
    /// connections; `place` (the visitor's place among the device's
    /// streams) is held until the splice ends.
    pub fn switch_protocols(
        &self,
        visitor_upgrade: Option<hyper::upgrade::OnUpgrade>,
        mut response: Response<Incoming>,
        device: &str,
        place: Option<Place>,
    ) -> Response<Body> {
        if let Some(visitor_upgrade) = visitor_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let (device, idle_timeout) = (device.to_owned(), self.idle_timeout);
            self.lifecycle.spawn_until_hard_stop(async move {
                let _place = place;
                splice_upgraded(visitor_upgrade, upstream_upgrade, &device, idle_timeout).await;
            });
        }
        response.map(|_| Either::Right(Default::default()))
    }
}

/// Splices a visitor's and a device's upgraded connections until both end,
/// or no bytes moved either way for `idle_timeout`.
async fn splice_upgraded(
    visitor: hyper::upgrade::OnUpgrade,
    device: hyper::upgrade::OnUpgrade,
    name: &str,
    idle_timeout: std::time::Duration,
) {
    let (visitor, device) = match tokio::try_join!(visitor, device) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(device = name, error = %e, "upgrade failed");
            return;
        }
    };
    // The visitor's end sees both directions (see terrier_transport::idle).
    let activity = Activity::new();
    let mut visitor = activity.track(TokioIo::new(visitor));
    let mut device = TokioIo::new(device);
    match until_idle(&activity, idle_timeout, tokio::io::copy_bidirectional(&mut visitor, &mut device)).await {
        Ok(Ok((up, down))) => tracing::debug!(device = name, up, down, "upgraded connection closed"),
        Ok(Err(e)) => tracing::debug!(device = name, error = %e, "upgraded connection broke"),
        Err(idle) => tracing::info!(
            device = name, error = %idle, "upgraded connection closed: idle past limits.tcp_idle_timeout"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
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

        let plain = headers(&[("host", "a"), ("accept", "*/*"), ("x-terrierx", "kept")]);
        let mut h = plain.clone();
        strip_hop_by_hop(&mut h, false);
        strip_visitor_claims(&mut h);
        assert_eq!(h, plain);
    }

    #[test]
    fn a_visitor_cannot_claim_terrier_headers_or_an_address() {
        let mut h = headers(&[
            ("x-terrier-forwarded-by", ""),
            ("x-terrier-forwarded", "v1 mac=00"),
            ("x-terrier-anything", "1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-client-cert", "Subject=admin"),
            ("x_forwarded_for", "10.0.0.1"),
            ("x-forwarded_proto", "https"),
            ("x_real_ip", "10.0.0.1"),
            ("x_terrier_forwarded", "v1"),
            ("true-client-ip", "10.0.0.1"),
            ("x_client_ip", "10.0.0.1"),
            ("client-ip", "10.0.0.1"),
            ("x-original-forwarded-for", "10.0.0.1"),
            ("cookie", "a=b"),
        ]);
        strip_visitor_claims(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["cookie"]);
        let visitor = Visitor::new("192.0.2.7".parse().unwrap(), Proto::Https);
        set_forwarded(&mut h, &visitor, &HeaderValue::from_static("dev.example.com"));
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "dev.example.com");
    }
}
