//! Node-to-node forwarding: a visitor's request that reached this node for
//! a device online on another node is sent to that node's internal URL and
//! answered from there, so wildcard DNS (or a plain TCP load balancer) may
//! point at any node.
//!
//! A forwarded request carries an envelope ([`super::envelope`]) vouching
//! for the visitor's address and scheme; the receiving node checks it, then
//! applies the device's access rules to that address. A node never forwards
//! a request that came with a valid envelope, so a stale registry cannot
//! make requests circle. Upgrades (WebSocket) are forwarded too: on `101`
//! from the peer, the visitor's and the peer's upgraded connections are
//! spliced.

use http::{Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::envelope::{Bound, ENVELOPE_HEADER};
use crate::forwarding::{self, Answer, Authority, Body, Visitor};
use crate::store::{now_ms, NodeInfo};
use crate::Node;

/// HTTP client for peer nodes (plain HTTP on the cluster's internal network).
pub type PeerClient = Client<HttpConnector, Incoming>;

/// Builds the peer client, pooling connections per peer.
pub fn client() -> PeerClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector)
}

/// Sends `req` (already stripped of the visitor's claims, routed by
/// `authority`) to `peer` for `visitor`, and returns its answer, or the
/// reason it failed.
pub async fn to_peer(
    node: &Node,
    peer: &NodeInfo,
    device: &str,
    authority: &Authority,
    visitor: &Visitor,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, String> {
    let visitor_upgrade = forwarding::is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let base: Uri = peer.internal_url.parse().map_err(|e| format!("bad internal URL {:?}: {e}", peer.internal_url))?;
    let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let peer_authority = base.authority().ok_or("internal URL has no host")?.clone();
    let bound = Bound { method: req.method().as_str(), authority: &authority.host, target: &target };
    let envelope = node.envelopes.seal(bound, visitor, now_ms());
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(peer_authority)
        .path_and_query(target)
        .build()
        .map_err(|e| e.to_string())?;
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    // The peer routes by `Host` like any request: the authority this node
    // routed by, whatever form the visitor gave it in.
    headers.insert(http::header::HOST, authority.raw.clone());
    headers.insert(ENVELOPE_HEADER, envelope);
    let response = node.peer_client.request(req).await.map_err(|e| format!("peer {}: {e}", peer.id))?;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // The node holding the device holds the visitor's place too.
        let splice = node.splice(&node.live.limits());
        return Ok(splice.switch_protocols(visitor_upgrade, response, device, None));
    }
    Ok(response.map(|body| Either::Left(Answer::new(body, None))))
}
