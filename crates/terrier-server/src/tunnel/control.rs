//! One device's control socket: the handshake (`GET /v1/control`), the lease
//! it claims, the `welcome`, and the loop that forwards `open`s, reads
//! `refused`, and pings until the device goes away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use terrier_proto::handshake::{
    close, status, PARAM_AGENT, PARAM_CHECK, PARAM_HOPS, PARAM_HTTP, PARAM_INSTANCE, PARAM_NAME, PARAM_PLATFORM,
    PARAM_REQUESTS, PARAM_TCP,
};
use terrier_proto::limits::{HEARTBEAT_MISSES, MAX_REDIRECT_HOPS, MAX_SERVICES};
use terrier_proto::messages::{AgentMessage, CheckAnswer, ServerMessage, TcpPort, Welcome};
use terrier_proto::name::{is_valid_name, is_valid_service_id};
use terrier_transport::ids::random_id;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::session::{AgentAt, Session, SessionInit};
use super::Endpoint;
use super::{upgrade, ControlSocket};
use crate::ingress::{empty, redirect, text, Body};
use crate::store::{now_ms, Claim, Lease, StoreError};

/// How many other ports to try when a leased port cannot be bound.
const MAX_BIND_ATTEMPTS: usize = 16;

/// What the agent asked for in its control handshake.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ControlParams {
    /// Device name.
    pub name: String,
    /// Serves HTTP.
    pub http: bool,
    /// TCP service ids.
    pub tcp: Vec<String>,
    /// Redirects the agent already followed.
    pub hops: u8,
    /// Agent software.
    pub agent: String,
    /// Agent platform.
    pub platform: String,
    /// The agent's per-process id, if it sent one.
    pub instance: Option<String>,
    /// `check=1`: answer what the device would get, register nothing.
    pub check: bool,
    /// `requests=1`: tell the agent of each forwarded request.
    pub requests: bool,
}

impl ControlParams {
    /// Parses and validates the query string; the error is the 400 text.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut params = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            // Values reach logs and the admin API: a newline or an ANSI escape
            // there would forge log lines or repaint an operator's terminal.
            if let Some(c) = value.chars().find(|c| c.is_control()) {
                return Err(format!("{key:?} contains a control character ({c:?}): use printable text"));
            }
            match key.as_ref() {
                PARAM_NAME => params.name = value.into_owned(),
                PARAM_HTTP => params.http = value != "0",
                PARAM_TCP => {
                    for id in value.split(',').filter(|s| !s.is_empty()) {
                        if !is_valid_service_id(id) {
                            return Err(format!("bad TCP service id {id:?}: use 1-32 of [a-z0-9_-], not \"http\""));
                        }
                        if params.tcp.iter().any(|t| t == id) {
                            return Err(format!("TCP service id {id:?} given twice"));
                        }
                        params.tcp.push(id.to_owned());
                    }
                }
                PARAM_AGENT => params.agent = value.chars().take(64).collect(),
                PARAM_PLATFORM => params.platform = value.chars().take(64).collect(),
                PARAM_HOPS => params.hops = value.parse().unwrap_or(u8::MAX),
                PARAM_INSTANCE => {
                    let valid = (1..=64).contains(&value.len())
                        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !valid {
                        return Err("bad instance id: use 1-64 of [A-Za-z0-9_-]".into());
                    }
                    params.instance = Some(value.into_owned());
                }
                PARAM_CHECK => params.check = value == "1",
                PARAM_REQUESTS => params.requests = value == "1",
                _ => {}
            }
        }
        if !is_valid_name(&params.name) {
            return Err(format!(
                "bad device name {:?}: use 1-63 of [a-z0-9-], not starting or ending with '-'",
                params.name
            ));
        }
        if params.tcp.len() + usize::from(params.http) > MAX_SERVICES {
            return Err(format!("too many services: at most {MAX_SERVICES}"));
        }
        if !params.http && params.tcp.is_empty() && !params.check {
            return Err("no services: announce http and/or tcp".into());
        }
        Ok(params)
    }
}

/// Handles `GET /v1/control`.
pub async fn handshake(tunnel: &Arc<Endpoint>, remote: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    if !tunnel.auth.handshakes.allow(remote.ip()) {
        tracing::info!(%remote, "control handshake rate limit hit");
        return text(status::TOO_MANY_REQUESTS, "too many control handshakes from this address; retry later");
    }
    let params = match ControlParams::parse(req.uri().query()) {
        Ok(params) => params,
        Err(reason) => return text(status::BAD_REQUEST, reason),
    };
    let accept = match upgrade::accept(req.headers()) {
        Ok(accept) => accept,
        Err(reason) => return text(status::BAD_REQUEST, reason),
    };
    let identity =
        match tunnel.auth.admit(req.headers(), &params.name, tunnel.live.limits().max_devices_per_token).await {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(device = %params.name, %remote, error = %e, "control handshake refused");
                return text(e.status(), e.to_string());
            }
        };
    if let Some(owner) = held_by_another_token(tunnel, &identity, &params.name) {
        tracing::warn!(device = %params.name, %remote, owner, "fleet token refused: the name is online under another token");
        return text(status::CONFLICT, format!("device {:?} is online under another token", params.name));
    }
    if let Some(elsewhere) = claim_elsewhere(tunnel, &params).await {
        return elsewhere;
    }
    let agent_at = AgentAt { remote, instance: params.instance.clone() };
    if params.check {
        return check_answer(tunnel, &params.name, &agent_at, &identity).await;
    }
    if let Some(refused) = refuse_takeover(tunnel, &params.name, &agent_at, &identity) {
        return refused;
    }
    if params.hops < MAX_REDIRECT_HOPS {
        if let Some(target) = crate::cluster::nodes::redirect_target(&tunnel.membership).await {
            tracing::info!(device = %params.name, to = %target.id, "redirecting device to the least loaded node");
            return redirect(status::REDIRECT, &target.advertise_url, format!("use {}", target.advertise_url));
        }
    }
    if tunnel.lifecycle.shutdown.is_cancelled() {
        return text(status::UNAVAILABLE, "server is shutting down");
    }
    let session_id = random_id();
    let lease = match acquire_lease(tunnel, &params, &session_id).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(device = %params.name, error = %e, "lease refused");
            return text(status::UNAVAILABLE, format!("no lease: {e}"));
        }
    };
    let limits = tunnel.live.limits();
    let (session, outgoing) = Session::new(
        SessionInit {
            id: session_id,
            name: params.name.clone(),
            subdomain: lease.subdomain.clone(),
            http: params.http,
            tcp: lease.ports.clone(),
            agent: params.agent.clone(),
            platform: params.platform.clone(),
            agent_at,
            requests: tunnel.request_logs.device(&params.name),
            show_requests: params.requests,
            max_pending: limits.max_pending_streams,
            open_timeout: limits.stream_open_timeout,
            max_pool: limits.max_pool_sockets,
            pool_idle: limits.pool_idle_timeout,
            identity,
        },
        limits.control_queue,
        tunnel.lifecycle.shutdown.child_token(),
    );
    if let Some(old) = tunnel.sessions.insert(session.clone()) {
        tracing::info!(device = %old.name, session = %old.id, "replaced by a new control socket");
        old.close(close::REPLACED);
    }
    crate::cluster::nodes::announce(&tunnel.membership).await;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let span = tracing::info_span!("session", device = %session.name, session = %session.id);
    let tunnel2 = tunnel.clone();
    tunnel.lifecycle.tasks.spawn(
        async move {
            match upgrade::websocket(on_upgrade, tunnel2.live.limits().max_control_frame_bytes).await {
                Ok(ws) => {
                    tracing::info!(agent = %params.agent, platform = %params.platform, subdomain = %lease.subdomain, "device online");
                    let why = run(&tunnel2, &session, &lease, ws, outgoing).await;
                    tracing::info!(reason = %why, "device offline");
                }
                Err(e) => tracing::info!(error = %e, "control upgrade failed"),
            }
            end_session(&tunnel2, &session).await;
        }
        .instrument(span),
    );
    empty(accept)
}

/// The 409 for another agent taking `name` over from the one online here
/// once too often within a minute (`limits.max_takeovers_per_minute`): two
/// agents share the name. `None` lets the newcomer in (and counts it when
/// it is another agent).
fn refuse_takeover(
    tunnel: &Endpoint,
    name: &str,
    newcomer: &AgentAt,
    identity: &crate::auth::Identity,
) -> Option<Response<Body>> {
    let current = tunnel.sessions.by_name(name).filter(|s| !s.closed.is_cancelled())?;
    if current.agent_at.same_agent(newcomer) {
        return None;
    }
    let max = tunnel.live.limits().max_takeovers_per_minute;
    let settled = now_ms().saturating_sub(current.since_ms) >= super::takeovers::WINDOW.as_millis() as u64;
    if tunnel.takeovers.take_over(name, newcomer, &current.agent_at, settled, max, std::time::Instant::now()) {
        return None;
    }
    let holder = current.agent_at.remote.ip();
    let since = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(current.since_ms));
    tracing::warn!(device = name, remote = %newcomer.remote, online_from = %holder,
        "name conflict: another agent keeps taking this device name; refused (limits.max_takeovers_per_minute)");
    // The address only to a token for exactly this name, as in check=1.
    let from = if owns_name(identity) { format!("from {holder} ") } else { String::new() };
    Some(text(
        status::CONFLICT,
        format!(
            "name conflict: device name {name:?} is in use by another agent (connected {from}since {since}) \
             and the two keep replacing each other; give one of them another --name"
        ),
    ))
}

/// Was the handshake made with a token minted for exactly its name?
fn owns_name(identity: &crate::auth::Identity) -> bool {
    matches!(identity, crate::auth::Identity::Token(slot) if !slot.fleet)
}

/// The answer to a `check=1` handshake: the lease `name` holds now and who
/// is online with it, read without changing anything. The online agent's
/// address goes only to a token minted for exactly this name: in open mode
/// anyone may ask, and a fleet token speaks for many devices.
async fn check_answer(
    tunnel: &Endpoint,
    name: &str,
    checker: &AgentAt,
    identity: &crate::auth::Identity,
) -> Response<Body> {
    let lease = match tunnel.membership.store.by_name(name, now_ms()).await {
        Ok(lease) => lease,
        Err(e) => return text(status::UNAVAILABLE, format!("store unavailable: {e}")),
    };
    let here = tunnel.sessions.by_name(name).filter(|s| !s.closed.is_cancelled());
    let online_from =
        here.as_ref().filter(|_| owns_name(identity)).map(|s| s.agent_at.remote.ip().to_string()).unwrap_or_default();
    let url = lease.as_ref().map(|l| tunnel.config.device_url(&l.subdomain)).unwrap_or_default();
    let answer = CheckAnswer {
        name,
        subdomain: lease.as_ref().map_or("", |l| l.subdomain.as_str()),
        url: &url,
        tcp_host: tunnel.config.tcp_host(),
        tcp: lease
            .iter()
            .flat_map(|l| &l.ports)
            .map(|(service, port)| TcpPort { service, port: *port })
            .take(MAX_SERVICES)
            .collect(),
        online: lease.as_ref().is_some_and(|l| l.online.is_some()),
        online_from: &online_from,
        other_agent: here.as_ref().is_some_and(|s| !s.agent_at.same_agent(checker)),
    };
    let mut response = text(status::OK, serde_json::to_string(&answer).unwrap_or_default());
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// A claim on a name online on another live node is decided by that node,
/// the one that knows the session (its token, its agent, its takeovers):
/// the agent is sent there (307), or asked to retry (503) once its
/// redirects are used up. A node that died is declared so within
/// `cluster.node_ttl`, and its devices come back anywhere then.
async fn claim_elsewhere(tunnel: &Endpoint, params: &ControlParams) -> Option<Response<Body>> {
    let membership = &tunnel.membership;
    let lease = membership.store.by_name(&params.name, now_ms()).await.ok()??;
    let holder = lease.online.filter(|online| online.node != membership.node_id)?;
    let node = match crate::cluster::nodes::peer(membership, &holder.node).await {
        Some(node) if params.hops < MAX_REDIRECT_HOPS => node,
        Some(_) => {
            tracing::info!(device = %params.name, node = %holder.node, "name online on another node; redirects used up");
            return Some(text(
                status::UNAVAILABLE,
                format!("device {:?} is online on another node, which could not be reached; retry", params.name),
            ));
        }
        // Not live any more: its leases are about to be recovered.
        None => return None,
    };
    tracing::info!(device = %params.name, to = %node.id, "sent to the node holding the name");
    Some(redirect(status::REDIRECT, &node.advertise_url, format!("use {}", node.advertise_url)))
}

/// A fleet token may not take over a name that is online under another
/// token (an exact-name token may: the operator minted it for that name, so
/// rotating tokens works). Returns the holding token's id.
fn held_by_another_token(tunnel: &Endpoint, identity: &crate::auth::Identity, name: &str) -> Option<String> {
    let crate::auth::Identity::Token(slot) = identity else { return None };
    let current = tunnel.sessions.by_name(name)?;
    let owner = current.identity.token_id()?;
    (slot.fleet && owner != slot.token_id && !current.closed.is_cancelled()).then(|| owner.to_owned())
}

/// Claims the lease and binds the TCP ports of the announced services,
/// moving a service to another port when its leased one cannot be bound.
/// Listeners of parked ports stay bound; only ports the lease no longer
/// holds at all are closed.
async fn acquire_lease(tunnel: &Endpoint, params: &ControlParams, session: &str) -> Result<Lease, StoreError> {
    let range = tunnel.config.tcp_port_min..=tunnel.config.tcp_port_max;
    let mut lease = tunnel
        .membership
        .store
        .claim(Claim {
            name: &params.name,
            services: &params.tcp,
            session,
            node: &tunnel.membership.node_id,
            now_ms: now_ms(),
            grace_ms: tunnel.live.grace_period().as_millis().try_into().unwrap_or(u64::MAX),
            port_range: range.clone(),
        })
        .await?;
    for service in &params.tcp {
        let mut avoid = Vec::new();
        loop {
            let port = lease.ports[service];
            match tunnel.ports.ensure(port, &params.name, service).await {
                Ok(()) => break,
                Err(e) if avoid.len() < MAX_BIND_ATTEMPTS => {
                    tracing::info!(device = %params.name, service, port, error = %e, "leased port not bindable; moving");
                    avoid.push(port);
                    lease = tunnel.membership.store.reassign_port(&params.name, service, &avoid, range.clone()).await?;
                }
                Err(_) => return Err(StoreError::NoFreePort(range)),
            }
        }
    }
    tunnel.ports.retain(&params.name, &lease.held_ports());
    Ok(lease)
}

/// Runs the control socket until the session ends; returns why it ended.
async fn run(
    tunnel: &Endpoint,
    session: &Session,
    lease: &Lease,
    mut ws: ControlSocket,
    mut outgoing: mpsc::Receiver<Message>,
) -> String {
    let heartbeat = tunnel.live.limits().heartbeat_interval;
    let send_timeout = heartbeat * HEARTBEAT_MISSES;
    let welcome = welcome_message(tunnel, session, lease);
    if let Err(e) = send(&mut ws, welcome, send_timeout).await {
        return format!("welcome not delivered: {e}");
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            () = session.closed.cancelled() => {
                let code = session.close_code().unwrap_or(close::GOING_AWAY);
                if code == close::GOING_AWAY {
                    let _ = send(&mut ws, go_away(tunnel.config.reconnect_spread), send_timeout).await;
                }
                close_with(&mut ws, code, close_reason(code)).await;
                return format!("closed by server (code {code})");
            }
            msg = outgoing.recv() => {
                let Some(msg) = msg else { return "control queue closed".into() };
                if let Err(e) = send(&mut ws, msg, send_timeout).await {
                    return format!("send failed: {e}");
                }
            }
            frame = ws.next() => {
                let msg = match frame {
                    None => return "control socket closed".into(),
                    Some(Err(e)) => return format!("control socket error: {e}"),
                    Some(Ok(msg)) => msg,
                };
                last_heard = Instant::now();
                if let Err(reason) = handle_frame(session, msg) {
                    close_with(&mut ws, close::PROTOCOL_ERROR, &reason).await;
                    return reason;
                }
            }
            _ = ticker.tick() => {
                session.prune_idle(tunnel.live.limits().http_idle_timeout);
                if last_heard.elapsed() >= send_timeout {
                    close_with(&mut ws, close::HEARTBEAT_TIMEOUT, "no heartbeat").await;
                    return format!("silent for {:?}", last_heard.elapsed());
                }
                if let Err(e) = send(&mut ws, Message::Ping(Default::default()), send_timeout).await {
                    return format!("ping failed: {e}");
                }
            }
        }
    }
}

/// Acts on one frame from the agent; an error is a protocol violation.
fn handle_frame(session: &Session, msg: Message) -> Result<(), String> {
    match msg {
        Message::Text(text) => match serde_json::from_str::<AgentMessage>(text.as_str()) {
            Ok(AgentMessage::Refused(refused)) => {
                session.refuse(refused.stream, refused.reason);
                Ok(())
            }
            Err(e) => Err(format!("bad control message: {e}")),
        },
        Message::Binary(_) => Err("binary frame on the control socket".into()),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        Message::Close(_) => Err("agent closed the control socket".into()),
    }
}

/// `go_away` with a random delay up to `spread` (full jitter).
fn go_away(spread: Duration) -> Message {
    use rand::Rng;
    let max = spread.as_millis().min(u32::MAX as u128) as u32;
    let after_ms = rand::rng().random_range(0..=max);
    terrier_transport::control::encode(&ServerMessage::GoAway(terrier_proto::messages::GoAway { after_ms }))
}

fn welcome_message(tunnel: &Endpoint, session: &Session, lease: &Lease) -> Message {
    let url = if session.http { tunnel.config.device_url(&lease.subdomain) } else { String::new() };
    let mut tcp = heapless::Vec::<TcpPort<'_>, MAX_SERVICES>::new();
    for (service, port) in &session.tcp {
        // The handshake capped the service count at MAX_SERVICES.
        let _ = tcp.push(TcpPort { service, port: *port });
    }
    let welcome = ServerMessage::Welcome(Welcome {
        session: &session.id,
        name: &session.name,
        subdomain: &lease.subdomain,
        url: &url,
        tcp_host: tunnel.config.tcp_host(),
        tcp,
        grace_secs: tunnel.live.grace_period().as_secs().try_into().unwrap_or(u32::MAX),
        heartbeat_secs: tunnel.live.limits().heartbeat_interval.as_secs().max(1).try_into().unwrap_or(u32::MAX),
    });
    terrier_transport::control::encode(&welcome)
}

async fn send(ws: &mut ControlSocket, msg: Message, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("agent did not read for {timeout:?}")),
    }
}

/// What the agent is told when its session is closed with `code`.
fn close_reason(code: u16) -> &'static str {
    match code {
        close::REPLACED => "replaced: this device name connected again (this agent, or another with the same --name)",
        close::REVOKED => "the device token was revoked",
        close::DISCONNECTED => "disconnected by the operator",
        _ => "server going away",
    }
}

async fn close_with(ws: &mut ControlSocket, code: u16, reason: &str) {
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.chars().take(100).collect::<String>().into() };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

/// Cleans up after a session: unregister, release the lease into its grace
/// period, and fail its waiting visitors.
async fn end_session(tunnel: &Endpoint, session: &Session) {
    session.closed.cancel();
    session.clear_pool();
    tunnel.sessions.remove(session);
    crate::cluster::nodes::release(&tunnel.membership, session).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_validate() {
        let p = ControlParams::parse(Some("name=thermo-42&http=1&tcp=22,1883&agent=terrier%2F0.1")).unwrap();
        assert_eq!(p.name, "thermo-42");
        assert!(p.http);
        assert_eq!(p.tcp, vec!["22", "1883"]);
        assert_eq!(p.agent, "terrier/0.1");
        assert!(ControlParams::parse(Some("name=Bad&http=1")).unwrap_err().contains("bad device name"));
        assert!(ControlParams::parse(Some("http=1")).unwrap_err().contains("bad device name"));
        assert!(ControlParams::parse(Some("name=a")).unwrap_err().contains("no services"));
        assert!(ControlParams::parse(Some("name=a&tcp=22,22")).unwrap_err().contains("twice"));
        assert!(ControlParams::parse(Some("name=a&tcp=http")).unwrap_err().contains("bad TCP service"));
        let many = (0..20).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(ControlParams::parse(Some(&format!("name=a&tcp={many}"))).unwrap_err().contains("too many"));
    }

    #[test]
    fn params_with_control_characters_are_refused_naming_the_field() {
        let valid = "name=thermo-42&http=1&tcp=ssh&hops=0&agent=terrier%2F0.1&platform=linux-x86_64";
        assert!(ControlParams::parse(Some(valid)).is_ok());
        for (field, bad) in [
            ("agent", "terrier%0Adevice%3Devil"),
            ("agent", "%1B%5B2J"),
            ("platform", "linux%0D"),
            ("platform", "x%00"),
            ("platform", "x%C2%85"),
            ("name", "thermo%0A"),
            ("tcp", "ssh%0A"),
            ("hops", "0%0A"),
            ("http", "1%7F"),
        ] {
            let query = format!("{valid}&{field}={bad}");
            let err = ControlParams::parse(Some(&query)).expect_err(&query);
            assert!(err.starts_with(&format!("{field:?} contains a control character")), "{query}: {err}");
        }
        // Past the 64 characters kept: still refused, not cut away.
        let long = format!("name=a&http=1&agent={}%0A", "a".repeat(64));
        assert!(ControlParams::parse(Some(&long)).is_err());
        // Printable non-ASCII is fine.
        assert_eq!(ControlParams::parse(Some("name=a&http=1&platform=caf%C3%A9")).unwrap().platform, "café");
    }
}
