//! One control socket from handshake to end: wait for `welcome`, then start
//! a stream for every `open`, report `refused`, ping the server, and notice
//! when it goes silent.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use terrier_proto::limits::HEARTBEAT_MISSES;
use terrier_proto::messages::{plain_char, AgentMessage, Refused, ServerMessage, Welcome};
use terrier_transport::control::next_text;
use terrier_transport::reconnect::Backoff;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::connect::{self, Socket};
use crate::stream::{self, Refusal, StreamRequest};
use crate::{AgentConfig, Connected, Event, PublicPort};

/// Refusals queued for the control socket before stream tasks wait.
const REFUSAL_QUEUE: usize = 64;

/// How a control socket attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The server rejected the request as malformed: stop.
    Fatal(String),
    /// The connection was up and then ended; `go_away` is the delay the
    /// server asked for, if it asked.
    Ended {
        /// Why.
        reason: String,
        /// Server-requested reconnect delay.
        go_away: Option<Duration>,
    },
    /// The connection never came up.
    Failed(String),
    /// The server refused the name: another agent holds it (409).
    Conflict(String),
}

/// Connects once and serves until the control socket ends; resets
/// `backoff` once the connection has been up `config.stable_after`.
pub async fn connect_and_serve(
    config: &AgentConfig,
    server: &Url,
    streams: &TaskTracker,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
    on_event: &mut impl FnMut(Event),
) -> Outcome {
    let (mut socket, server) = match connect::open_control(config, server).await {
        Ok(ok) => ok,
        Err(e) if e.is_fatal() => return Outcome::Fatal(e.to_string()),
        Err(e) if e.is_name_conflict() => {
            tracing::error!(%server, error = %e, "device name refused: another agent uses it; pick another --name");
            return Outcome::Conflict(e.to_string());
        }
        Err(e) => {
            // A refused token will not fix itself: say so loudly at every attempt.
            if e.is_unauthorized() {
                tracing::error!(%server, error = %e, "control socket refused: check --token / --token-file");
            }
            return Outcome::Failed(e.to_string());
        }
    };
    let welcome = match tokio::time::timeout(config.connect_timeout, next_text(&mut socket)).await {
        Ok(Some(text)) => text,
        Ok(None) => return Outcome::Failed("control socket closed before welcome".into()),
        Err(_) => return Outcome::Failed("no welcome from the server in time".into()),
    };
    let (session, heartbeat) = match serde_json::from_str::<ServerMessage>(&welcome) {
        Ok(ServerMessage::Welcome(w)) => {
            on_event(Event::Connected(describe(config, &server, &w)));
            (w.session.to_owned(), Duration::from_secs(w.heartbeat_secs.max(1).into()))
        }
        _ => return Outcome::Failed(format!("expected welcome, got {welcome:.200}")),
    };
    let ctx = Serve { config, streams, shutdown, server, session };
    ctx.serve(socket, heartbeat, backoff, on_event).await
}

/// The state of one accepted control socket.
struct Serve<'a> {
    config: &'a AgentConfig,
    streams: &'a TaskTracker,
    shutdown: &'a CancellationToken,
    server: Url,
    session: String,
}

impl Serve<'_> {
    async fn serve(
        &self,
        mut socket: Socket,
        heartbeat: Duration,
        backoff: &mut Backoff,
        on_event: &mut impl FnMut(Event),
    ) -> Outcome {
        let silence_limit = heartbeat * HEARTBEAT_MISSES;
        let (refuse_tx, mut refusals) = mpsc::channel::<Refusal>(REFUSAL_QUEUE);
        // Pooled sockets belong to this session: they stop when it ends.
        let pool_stop = self.shutdown.child_token();
        let _pool_guard = pool_stop.clone().drop_guard();
        if self.config.pool > 0 {
            let pool = crate::pool::Pool {
                config: self.config.clone(),
                server: self.server.clone(),
                session: self.session.clone(),
                streams: self.streams.clone(),
                refusals: refuse_tx.clone(),
            };
            pool.start(pool_stop);
        }
        let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        let mut last_heard = Instant::now();
        let ended = |reason: String| Outcome::Ended { reason, go_away: None };
        let stable = tokio::time::sleep(self.config.stable_after);
        tokio::pin!(stable);
        let mut is_stable = false;
        loop {
            tokio::select! {
                () = &mut stable, if !is_stable => {
                    is_stable = true;
                    settled(backoff, self.config.stable_after);
                }
                frame = socket.next() => {
                    let msg = match frame {
                        None => return ended("server closed the control socket".into()),
                        Some(Err(e)) => return ended(format!("control socket error: {e}")),
                        Some(Ok(msg)) => msg,
                    };
                    last_heard = Instant::now();
                    match msg {
                        Message::Text(text) => {
                            if let Some(after) = self.handle_message(text.as_str(), &refuse_tx, on_event) {
                                let _ = socket.close(None).await;
                                return Outcome::Ended { reason: "server is going away".into(), go_away: Some(after) };
                            }
                        }
                        Message::Close(frame) => {
                            let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                            return ended(format!("server closed the control socket: {why}"));
                        }
                        _ => {}
                    }
                }
                Some((stream, reason)) = refusals.recv() => {
                    let msg = refused_frame(&stream, &reason);
                    if let Err(e) = send(&mut socket, msg, silence_limit).await {
                        return ended(e);
                    }
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() >= silence_limit {
                        return ended(format!("server silent for {:?}", last_heard.elapsed()));
                    }
                    if let Err(e) = send(&mut socket, Message::Ping(Default::default()), silence_limit).await {
                        return ended(e);
                    }
                }
            }
        }
    }

    /// Acts on one server message; returns a reconnect delay on `go_away`.
    fn handle_message(
        &self,
        text: &str,
        refusals: &mpsc::Sender<Refusal>,
        on_event: &mut impl FnMut(Event),
    ) -> Option<Duration> {
        match serde_json::from_str::<ServerMessage>(text) {
            Ok(ServerMessage::Open(open)) => {
                self.start_stream(open.stream, open.service, refusals.clone());
                None
            }
            Ok(ServerMessage::GoAway(g)) => Some(Duration::from_millis(g.after_ms.into())),
            Ok(ServerMessage::Request(r)) => {
                on_event(Event::Request {
                    method: r.method.to_owned(),
                    path: r.path.to_owned(),
                    status: r.status,
                    duration_ms: r.duration_ms,
                    size: r.size,
                });
                None
            }
            Ok(other) => {
                tracing::debug!(message = ?other, "ignoring unexpected control message");
                None
            }
            // A newer server may send messages this agent does not know.
            Err(e) => {
                tracing::warn!(error = %e, message = %format!("{text:.200}"), "ignoring unknown control message");
                None
            }
        }
    }

    fn start_stream(&self, stream: &str, service: &str, refusals: mpsc::Sender<Refusal>) {
        let Some(target) = self.config.target(service).cloned() else {
            tracing::warn!(stream, service, "server opened a stream for an unknown service");
            let (stream, reason) = (stream.to_owned(), format!("unknown service {service:?}"));
            self.streams.spawn(async move { refusals.send((stream, reason)).await });
            return;
        };
        let req = StreamRequest {
            server: self.server.clone(),
            session: self.session.clone(),
            stream: stream.to_owned(),
            service: service.to_owned(),
            target,
            dialer: connect::Dialer::new(self.config),
            max_frame: self.config.max_data_frame_bytes,
        };
        let shutdown = self.shutdown.clone();
        self.streams.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = stream::run(req, refusals) => {}
            }
        });
    }
}

/// The connection has been up long enough: a later drop reconnects from
/// the shortest delay again.
fn settled(backoff: &mut Backoff, after: Duration) {
    tracing::debug!(?after, "connection stable: reconnect backoff reset");
    backoff.reset();
}

/// The `refused` frame for `stream`. The reason is free text (it may quote a
/// service id or hold a Windows path), so it is made plain first: the
/// server's decoder borrows strings and rejects escaped ones as a protocol
/// error, which would end the whole session.
fn refused_frame(stream: &str, reason: &str) -> Message {
    let reason: String = reason.chars().map(plain_char).collect();
    terrier_transport::control::encode(&AgentMessage::Refused(Refused { stream, reason: &reason }))
}

async fn send(socket: &mut Socket, msg: Message, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("control socket error: {e}")),
        Err(_) => Err(format!("server did not read for {timeout:?}")),
    }
}

fn describe(config: &AgentConfig, server: &Url, w: &Welcome<'_>) -> Connected {
    Connected {
        server: server.to_string(),
        name: w.name.to_owned(),
        session: w.session.to_owned(),
        subdomain: w.subdomain.to_owned(),
        url: (!w.url.is_empty()).then(|| w.url.to_owned()),
        http_target: config.http.as_ref().map(|s| s.target.to_string()),
        tcp: w
            .tcp
            .iter()
            .map(|p| PublicPort {
                service: p.service.to_owned(),
                target: config.target(p.service).map(|t| t.to_string()).unwrap_or_default(),
                host: w.tcp_host.to_owned(),
                port: p.port,
            })
            .collect(),
        grace_secs: w.grace_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found by fuzzing): `unknown service "x"` used to go out
    /// with escaped quotes, which the server's decoder rejects, so the server
    /// closed the control socket with 4002 and the device went offline.
    #[test]
    fn refused_frames_decode_on_the_server_whatever_the_reason() {
        for reason in ["unknown service \"22\"", r"C:\svc: refused", "two\nlines\t\u{1}", "ünï 🐕 ok"] {
            let frame = refused_frame("0123456789abcdef0123456789abcdef", reason);
            let text = frame.to_text().unwrap();
            // Exactly what the server does with a text frame on the control socket.
            let msg = serde_json::from_str::<AgentMessage>(text).unwrap_or_else(|e| panic!("{reason:?}: {e}"));
            let AgentMessage::Refused(refused) = msg;
            assert_eq!(refused.reason.len(), reason.len(), "one stand-in per replaced character");
        }
        let frame = refused_frame("ab", "unknown service \"22\"");
        assert_eq!(frame.to_text().unwrap(), r#"{"refused":{"stream":"ab","reason":"unknown service '22'"}}"#);
    }
}
