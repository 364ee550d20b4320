//! Node-to-node forwarding: a visitor's request that reached this node for
//! a device online on another node is sent to that node's internal URL and
//! answered from there, so wildcard DNS (or a plain TCP load balancer) may
//! point at any node.
//!
//! A forwarded request carries [`HOP_HEADER`]; a node never forwards a
//! request that has it, so a stale registry cannot make requests circle.
//! Upgrades (WebSocket) are forwarded too: on `101` from the peer, the
//! visitor's and the peer's upgraded connections are spliced.

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::ingress::proxy::{is_upgrade, switch_protocols};
use crate::ingress::Body;
use crate::store::NodeInfo;
use crate::Node;

/// Header naming the node that forwarded a request. A `HeaderName`, not a
/// `&str`: every proxied request looks for it, and a `&str` name is parsed
/// on each lookup (callgrind: ~400 instructions per request).
pub const HOP_HEADER: HeaderName = HeaderName::from_static("x-terrier-forwarded-by");

/// HTTP client for peer nodes (plain HTTP on the cluster's internal network).
pub type PeerClient = Client<HttpConnector, Incoming>;

/// Builds the peer client, pooling connections per peer.
pub fn client() -> PeerClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector)
}

/// Was this request already forwarded by a node?
pub fn was_forwarded<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(HOP_HEADER)
}

/// Sends `req` to `peer` and returns its answer, or the reason it failed.
pub async fn to_peer(
    node: &Node,
    peer: &NodeInfo,
    device: &str,
    visitor: std::net::SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, String> {
    let me = node.node_id.as_str();
    let visitor_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let base: Uri = peer.internal_url.parse().map_err(|e| format!("bad internal URL {:?}: {e}", peer.internal_url))?;
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let authority = base.authority().ok_or("internal URL has no host")?.clone();
    // The visitor's Host stays: the peer routes by it like any request.
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(host) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    *req.uri_mut() =
        Uri::builder().scheme("http").authority(authority).path_and_query(path).build().map_err(|e| e.to_string())?;
    *req.version_mut() = http::Version::HTTP_11;
    req.headers_mut().insert(HOP_HEADER, HeaderValue::from_str(me).map_err(|e| e.to_string())?);
    // Like any proxy, record whom this hop received the request from; the
    // peer appends this node's address after it.
    let ip = crate::ingress::proxy::ip_header(visitor.ip());
    crate::ingress::proxy::append_forwarded_for(req.headers_mut(), &ip).map_err(|e| e.to_string())?;
    let response = node.peer_client.request(req).await.map_err(|e| format!("peer {}: {e}", peer.id))?;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(switch_protocols(node, visitor_upgrade, response, device));
    }
    Ok(response.map(Either::Left))
}
