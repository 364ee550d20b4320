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

use std::sync::Arc;

use super::envelope::{Bound, Envelopes, ENVELOPE_HEADER};
use crate::forwarding::{self, Answer, Authority, Body, Splice, Visitor};
use crate::lifecycle::Lifecycle;
use crate::live::Live;
use crate::store::{now_ms, NodeInfo};

/// HTTP client for peer nodes (plain HTTP on the cluster's internal network).
type PeerClient = Client<HttpConnector, Incoming>;

/// Sends visitors' requests to peer nodes, sealed in envelopes.
pub struct Forwarder {
    /// Pools connections per peer.
    client: PeerClient,
    /// Seals the visitor into each request.
    envelopes: Arc<Envelopes>,
    /// Where upgraded connections are spliced.
    lifecycle: Lifecycle,
    /// The limits spliced connections run under.
    live: Arc<Live>,
}

impl Forwarder {
    /// A forwarder sealing with `envelopes`, splicing upgrades in `lifecycle`.
    pub fn new(envelopes: Arc<Envelopes>, lifecycle: Lifecycle, live: Arc<Live>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector);
        Self { client, envelopes, lifecycle, live }
    }
}

/// Sends `req` (already stripped of the visitor's claims, routed by
/// `authority`) to `peer` for `visitor`, and returns its answer, or the
/// reason it failed.
pub async fn to_peer(
    forwarder: &Forwarder,
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
    let envelope = forwarder.envelopes.seal(bound, visitor, now_ms());
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
    let response = forwarder.client.request(req).await.map_err(|e| format!("peer {}: {e}", peer.id))?;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // The node holding the device holds the visitor's place too.
        let splice = Splice::new(&forwarder.lifecycle, &forwarder.live.limits());
        return Ok(splice.switch_protocols(visitor_upgrade, response, device, None));
    }
    Ok(response.map(|body| Either::Left(Answer::new(body, None))))
}
