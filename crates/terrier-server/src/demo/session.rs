//! One control socket of the demo device, from `welcome` to its end: a
//! stream task for every `open`, a Ping every heartbeat, and the end of the
//! session when the server closes the socket or goes silent.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use terrier_proto::handshake::HTTP_SERVICE;
use terrier_proto::limits::HEARTBEAT_MISSES;
use terrier_proto::messages::{Open, ServerMessage};
use terrier_transport::control::next_text;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::dial::ControlSocket;
use super::dial::{self, DialError, CONNECT_TIMEOUT};
use super::{page, Device};

/// How a session that came up (or got as far as the `101`) ended.
#[derive(Debug)]
pub struct Ended {
    /// Why, for the log.
    pub reason: String,
    /// The delay the server asked for before reconnecting (`go_away`).
    pub go_away: Option<Duration>,
}

impl Ended {
    fn because(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), go_away: None }
    }
}

/// Connects once and serves until the control socket ends.
pub async fn run(device: &Device) -> Result<Ended, DialError> {
    let mut socket = dial::control(device.server).await?;
    let welcome = match tokio::time::timeout(CONNECT_TIMEOUT, next_text(&mut socket)).await {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(Ended::because("control socket closed before welcome")),
        Err(_) => return Ok(Ended::because(format!("no welcome within {CONNECT_TIMEOUT:?}"))),
    };
    let Ok(ServerMessage::Welcome(welcome)) = serde_json::from_str::<ServerMessage>(&welcome) else {
        return Ok(Ended::because(format!("expected welcome, got {welcome:.200}")));
    };
    if !welcome.url.is_empty() {
        println!("demo device online: open {} in a browser", welcome.url);
    }
    let session = Session {
        device,
        id: welcome.session.to_owned(),
        heartbeat: Duration::from_secs(welcome.heartbeat_secs.max(1).into()),
    };
    Ok(session.serve(socket).await)
}

/// An accepted control socket's state.
struct Session<'a> {
    /// The device it belongs to.
    device: &'a Device,
    /// Session id from `welcome`; data sockets quote it.
    id: String,
    /// How often the server pings; we ping as often.
    heartbeat: Duration,
}

impl Session<'_> {
    async fn serve(&self, mut socket: ControlSocket) -> Ended {
        let silence_limit = self.heartbeat * HEARTBEAT_MISSES;
        let mut ticker = tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                frame = socket.next() => {
                    last_heard = Instant::now();
                    if let Some(ended) = self.on_frame(&mut socket, frame).await {
                        return ended;
                    }
                }
                _ = ticker.tick() => {
                    if let Err(reason) = ping(&mut socket, last_heard, silence_limit).await {
                        return Ended::because(reason);
                    }
                }
            }
        }
    }

    /// Acts on one frame from the server; `Some` when the session is over.
    async fn on_frame(
        &self,
        socket: &mut ControlSocket,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<Ended> {
        let text = match frame {
            None => return Some(Ended::because("server closed the control socket")),
            Some(Err(e)) => return Some(Ended::because(format!("control socket error: {e}"))),
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                return Some(Ended::because(format!("server closed the control socket: {why}")));
            }
            Some(Ok(Message::Text(text))) => text,
            // tungstenite answers Pings itself; any frame counts as a sign of life.
            Some(Ok(_)) => return None,
        };
        match serde_json::from_str::<ServerMessage>(text.as_str()) {
            Ok(ServerMessage::Open(open)) if open.service == HTTP_SERVICE => self.start_stream(&open),
            // The server opens only what the device announced: `http`.
            Ok(ServerMessage::Open(open)) => tracing::warn!(service = open.service, "demo device: unknown service"),
            Ok(ServerMessage::GoAway(g)) => {
                let _ = socket.close(None).await;
                let after = Duration::from_millis(g.after_ms.into());
                return Some(Ended { reason: "server is going away".into(), go_away: Some(after) });
            }
            Ok(other) => tracing::debug!(message = ?other, "demo device ignores an unexpected control message"),
            // A newer server may send messages this device does not know.
            Err(e) => tracing::debug!(error = %e, "demo device ignores an unknown control message"),
        }
        None
    }

    /// Opens the data socket for one visitor stream and serves the page on it.
    fn start_stream(&self, open: &Open<'_>) {
        let (server, session, stream) = (self.device.server, self.id.clone(), open.stream.to_owned());
        let span = tracing::debug_span!("stream", device = super::DEMO_NAME, stream = %stream);
        let shutdown = self.device.shutdown.clone();
        let serve = async move {
            let socket = match dial::data(server, &session, &stream).await {
                Ok(socket) => socket,
                Err(e) => return tracing::info!(error = %e, "data socket not opened"),
            };
            if let Err(e) = page::serve(socket).await {
                tracing::debug!(error = %e, "stream ended with an error");
            }
        };
        self.device.streams.spawn(
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = serve => {}
                }
            }
            .instrument(span),
        );
    }
}

/// Our heartbeat: a Ping, unless the server has been silent for too long.
async fn ping(socket: &mut ControlSocket, last_heard: Instant, silence_limit: Duration) -> Result<(), String> {
    if last_heard.elapsed() >= silence_limit {
        return Err(format!("server silent for {:?}", last_heard.elapsed()));
    }
    match tokio::time::timeout(silence_limit, socket.send(Message::Ping(Default::default()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("control socket error: {e}")),
        Err(_) => Err(format!("server did not read for {silence_limit:?}")),
    }
}
