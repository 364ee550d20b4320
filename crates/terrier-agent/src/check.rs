//! `terrier check`: walks the way to the server one step at a time — DNS,
//! TCP, proxy, TLS, the control handshake — with the same functions the
//! agent uses, and reports each step; the first failing step says why in
//! one line. The first thing a field technician runs.

use std::fmt;

use futures_util::StreamExt;
use terrier_proto::handshake::status;
use terrier_proto::limits::MAX_REDIRECT_HOPS;
use terrier_proto::messages::ServerMessage;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::connect::{self, Dialer, HandshakeError, Transport};
use crate::AgentConfig;

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Resolving the server's (or the proxy's) name.
    Dns,
    /// Opening the TCP connection.
    Tcp,
    /// The proxy's `CONNECT` tunnel.
    Proxy,
    /// TLS handshake and certificate verification.
    Tls,
    /// The WebSocket control handshake, credential and `welcome`.
    Handshake,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Dns => "dns",
            Step::Tcp => "tcp",
            Step::Proxy => "proxy",
            Step::Tls => "tls",
            Step::Handshake => "handshake",
        })
    }
}

/// One step's result: `ok` with what was seen, or the reason it failed.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which step.
    pub step: Step,
    /// Passed?
    pub ok: bool,
    /// What happened, in one line.
    pub detail: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark}  {:<9}  {}", self.step.to_string(), self.detail)
    }
}

/// Checks the first server of `config`, following redirects; every step's
/// [`Report`] goes to `report`. Returns the failing step's report, if any.
pub async fn run(config: &AgentConfig, mut report: impl FnMut(&Report)) -> Result<(), Report> {
    let dialer = Dialer::new(config);
    let mut base = config.server.clone();
    for hops in 0..=MAX_REDIRECT_HOPS {
        match check_server(config, &dialer, &base, hops, &mut report).await {
            Ok(None) => return Ok(()),
            Ok(Some(next)) => base = next,
            Err(failed) => {
                report(&failed);
                return Err(failed);
            }
        }
    }
    let failed =
        Report { step: Step::Handshake, ok: false, detail: format!("more than {MAX_REDIRECT_HOPS} redirects") };
    report(&failed);
    Err(failed)
}

/// All steps against one server; `Some(url)` when it redirected us there.
async fn check_server(
    config: &AgentConfig,
    dialer: &Dialer,
    base: &Url,
    hops: u8,
    report: &mut impl FnMut(&Report),
) -> Result<Option<Url>, Report> {
    let mut pass = |step, detail: String| report(&Report { step, ok: true, detail });
    let url = connect::control_url(base, config, hops);
    let (host, port) = connect::host_port(&url);
    let proxy = dialer.proxy.for_url(&url);
    let (dial_host, dial_port) = proxy.map(connect::host_port).unwrap_or_else(|| (host.clone(), port));
    let timeout = dialer.timeout;

    let addrs = connect::resolve(&dial_host, dial_port, timeout).await.map_err(|e| fail(Step::Dns, e))?;
    let shown: Vec<String> = addrs.iter().take(3).map(|a| a.ip().to_string()).collect();
    let what = if proxy.is_some() { "proxy " } else { "" };
    pass(Step::Dns, format!("{what}{dial_host} -> {}", shown.join(", ")));

    let dialled = proxy.unwrap_or(&url);
    let mut stream = connect::connect_tcp(&addrs, dialled, timeout).await.map_err(|e| fail(Step::Tcp, e))?;
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    pass(Step::Tcp, format!("connected to {peer}"));

    match proxy {
        Some(proxy) => {
            stream = crate::proxy::connect(stream, proxy, &host, port, timeout)
                .await
                .map_err(|e| fail(Step::Proxy, e.into()))?;
            pass(Step::Proxy, format!("{} opened a tunnel to {host}:{port}", crate::proxy::redact(proxy)));
        }
        None => pass(Step::Proxy, "none (direct connection)".into()),
    }

    let transport = if connect::is_tls(&url) {
        let tls = dialer
            .tls_config()
            .map_err(|reason| fail(Step::Tls, HandshakeError::Tls { host: host.clone(), reason }))?;
        let handshake = crate::tls::handshake(&tls, &host, stream);
        let tls_stream = match tokio::time::timeout(timeout, handshake).await {
            Err(_) => return Err(fail(Step::Tls, HandshakeError::Timeout(connect::origin(&url)))),
            Ok(Err(e)) => return Err(fail(Step::Tls, HandshakeError::from_tls(host, e))),
            Ok(Ok(s)) => s,
        };
        pass(Step::Tls, format!("certificate of {host} verified ({})", tls.source));
        Transport::Tls(Box::new(tls_stream))
    } else {
        pass(Step::Tls, "not used (ws:// / http:// server: the token travels unencrypted)".into());
        Transport::Plain(stream)
    };

    let mut socket = match dialer.upgrade(&url, transport, config.max_control_frame_bytes).await {
        Ok(socket) => socket,
        Err(HandshakeError::Rejected { status, reason }) if status == status::REDIRECT => {
            let next = Url::parse(&reason).map_err(|_| {
                fail(Step::Handshake, HandshakeError::Rejected { status, reason: format!("bad redirect {reason:?}") })
            })?;
            pass(Step::Handshake, format!("redirected to {next}; checking it"));
            return Ok(Some(next));
        }
        Err(e) => return Err(fail(Step::Handshake, e)),
    };
    let welcome = tokio::time::timeout(timeout, socket.next()).await;
    let _ = socket.close(None).await;
    let text = match welcome {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(other) => return Err(fail_text(Step::Handshake, format!("no welcome from the server: {other:?}"))),
        Err(_) => return Err(fail_text(Step::Handshake, format!("no welcome within {timeout:?}"))),
    };
    let accepted = match serde_json::from_str::<ServerMessage>(text.as_str()) {
        Ok(ServerMessage::Welcome(w)) => Some(format!("accepted as {}, subdomain {}", w.name, w.subdomain)),
        _ => None,
    };
    match accepted {
        Some(detail) => {
            let auth = if dialer.token.is_some() { "token accepted" } else { "no token sent" };
            pass(Step::Handshake, format!("{detail} ({auth})"));
            Ok(None)
        }
        None => Err(fail_text(Step::Handshake, format!("expected welcome, got {:.200}", text.as_str()))),
    }
}

fn fail(step: Step, e: HandshakeError) -> Report {
    let detail = match &e {
        HandshakeError::Rejected { status, .. } if *status == status::UNAUTHORIZED => {
            format!("{e} (check --token / --token-file)")
        }
        HandshakeError::Tls { .. } => format!("{e} (is --ca right? is the server name the certificate's?)"),
        _ => e.to_string(),
    };
    fail_text(step, detail)
}

fn fail_text(step: Step, detail: String) -> Report {
    Report { step, ok: false, detail }
}
