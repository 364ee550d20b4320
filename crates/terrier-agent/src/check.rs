//! `terrier check`: walks the way to the server one step at a time — DNS,
//! TCP, proxy, TLS, the control handshake — with the same functions the
//! agent uses, then the local services it would expose, and reports each
//! step; a failing step says why in one line. The first thing a field
//! technician runs.
//!
//! The handshake asks with `check=1`: the server answers what the device
//! would be given (its lease, who is online with the name) and registers
//! nothing, so an agent running with the same name stays connected and
//! keeps its ports.

use std::fmt;

use futures_util::StreamExt;
use terrier_proto::handshake::status;
use terrier_proto::limits::MAX_REDIRECT_HOPS;
use terrier_proto::messages::{CheckAnswer, ServerMessage};
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::connect::{self, Checked, Dialer, HandshakeError, Transport};
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
    /// The control handshake: credential, name, the lease it would get.
    Handshake,
    /// A local service the agent would expose (`--http`, `--tcp`).
    Local,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Dns => "dns",
            Step::Tcp => "tcp",
            Step::Proxy => "proxy",
            Step::Tls => "tls",
            Step::Handshake => "handshake",
            Step::Local => "local",
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

/// Checks the first server of `config`, following redirects, then each
/// local service; every step's [`Report`] goes to `report`. Returns the
/// first failing step's report, if any.
pub async fn run(config: &AgentConfig, mut report: impl FnMut(&Report)) -> Result<(), Report> {
    let server = check_servers(config, &mut report).await;
    let local = check_local(config, &mut report).await;
    server.and(local)
}

/// Each local service: reachable, and the web service speaks HTTP.
async fn check_local(config: &AgentConfig, report: &mut impl FnMut(&Report)) -> Result<(), Report> {
    let mut first_failure = Ok(());
    if config.http.is_none() && config.tcp.is_empty() {
        report(&Report {
            step: Step::Local,
            ok: true,
            detail: "no --http/--tcp given: local services not checked".into(),
        });
    }
    let services = config.http.iter().map(|s| (s, true)).chain(config.tcp.iter().map(|s| (s, false)));
    for (service, http) in services {
        let checked = check_service(&service.target, http, config.connect_timeout).await;
        let (ok, detail) = match checked {
            Ok(seen) => (true, format!("{} -> {}: {seen}", service.id, service.target)),
            Err(reason) => (false, format!("{} -> {}: {reason}", service.id, service.target)),
        };
        let step = Report { step: Step::Local, ok, detail };
        report(&step);
        if !ok && first_failure.is_ok() {
            first_failure = Err(step);
        }
    }
    first_failure
}

/// Connects to `target`; for a web service, asks `HEAD /` and reads the
/// status line.
async fn check_service(target: &crate::Target, http: bool, timeout: std::time::Duration) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = crate::stream::dial_local(target, timeout).await?;
    if !http {
        return Ok("reachable".into());
    }
    let host = if target.host.contains(':') { format!("[{}]", target.host) } else { target.host.clone() };
    let request = format!("HEAD / HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\n\r\n", target.port);
    let mut head = [0u8; 64];
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        stream.read(&mut head).await
    };
    let read = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return Err(format!("reachable, but the HTTP request failed: {e}")),
        Err(_) => return Err(format!("reachable, but no HTTP answer within {timeout:?}")),
    };
    let line = String::from_utf8_lossy(&head[..read]);
    match line.strip_prefix("HTTP/1.").and_then(|rest| rest.get(2..5)) {
        Some(code) if code.bytes().all(|b| b.is_ascii_digit()) => Ok(format!("speaks HTTP ({code})")),
        _ => Err("reachable, but it does not answer HTTP: is --http the web service's port?".into()),
    }
}

/// The server steps, following redirects.
async fn check_servers(config: &AgentConfig, report: &mut impl FnMut(&Report)) -> Result<(), Report> {
    let dialer = Dialer::new(config);
    let mut base = config.server.clone();
    for hops in 0..=MAX_REDIRECT_HOPS {
        match check_server(config, &dialer, &base, hops, report).await {
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
    let url = connect::check_url(base, config, hops);
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

    let checked = match dialer.check(&url, transport, config.max_control_frame_bytes).await {
        Ok(checked) => checked,
        Err(HandshakeError::Rejected { status, reason }) if status == status::REDIRECT => {
            let next = Url::parse(&reason).map_err(|_| {
                fail(Step::Handshake, HandshakeError::Rejected { status, reason: format!("bad redirect {reason:?}") })
            })?;
            pass(Step::Handshake, format!("redirected to {next}; checking it"));
            return Ok(Some(next));
        }
        Err(e) => return Err(fail(Step::Handshake, e)),
    };
    let auth = if dialer.token.is_some() { "token accepted" } else { "no token sent" };
    let detail = match checked {
        Checked::Answer(json) => {
            describe_answer(&json).ok_or_else(|| fail(Step::Handshake, HandshakeError::NotTerrier("200".into())))?
        }
        Checked::Connected(socket) => older_server_welcome(*socket, timeout).await?,
    };
    pass(Step::Handshake, format!("{detail} ({auth})"));
    Ok(None)
}

/// What a server's `check=1` answer says, in one line; `None` if it is not one.
fn describe_answer(json: &str) -> Option<String> {
    let answer: CheckAnswer = serde_json::from_str(json).ok()?;
    let mut detail = format!("name {} accepted", answer.name);
    if answer.subdomain.is_empty() {
        detail.push_str("; no lease yet: a new subdomain and ports will be given");
    } else {
        detail.push_str(&format!("; keeps subdomain {}", answer.subdomain));
        if !answer.tcp.is_empty() {
            let ports: Vec<String> = answer.tcp.iter().map(|t| format!("{}={}", t.service, t.port)).collect();
            detail.push_str(&format!(" and ports {}", ports.join(" ")));
        }
    }
    if answer.online {
        let from = if answer.online_from.is_empty() { String::new() } else { format!(" from {}", answer.online_from) };
        detail.push_str(&format!("; an agent is online with this name now{from}"));
        if answer.other_agent {
            detail.push_str(" (a second agent with this name would take it over: use the same name only once)");
        }
    }
    Some(detail)
}

/// A server older than check mode made a session: read its welcome, then
/// close (an agent running with the name was replaced for a moment).
async fn older_server_welcome(mut socket: connect::Socket, timeout: std::time::Duration) -> Result<String, Report> {
    let welcome = tokio::time::timeout(timeout, socket.next()).await;
    let _ = socket.close(None).await;
    let text = match welcome {
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(other) => return Err(fail_text(Step::Handshake, format!("no welcome from the server: {other:?}"))),
        Err(_) => return Err(fail_text(Step::Handshake, format!("no welcome within {timeout:?}"))),
    };
    let accepted = match serde_json::from_str::<ServerMessage>(text.as_str()) {
        Ok(ServerMessage::Welcome(w)) => Some(format!(
            "accepted as {}, subdomain {} (this server predates check mode: it connected as the device)",
            w.name, w.subdomain
        )),
        _ => None,
    };
    accepted.ok_or_else(|| fail_text(Step::Handshake, format!("expected welcome, got {:.200}", text.as_str())))
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
