//! One control socket, from dialling to its end (`docs/PROTOCOL.md` §3):
//! the handshake with up to three `307` redirects, the `welcome`, then a
//! loop over the server's messages (`open` queues a stream, `go_away` sets the
//! next delay), the heartbeat (answer pings, send our own, give up after three
//! silent intervals) and the `refused`s the data workers hand back.

use embassy_futures::select::{select, select3, Either, Either3};
use heapless::String;
use rand_core::RngCore;
use terrier_proto::codec;
use terrier_proto::limits::{HEARTBEAT_MISSES, MAX_REDIRECT_HOPS};
use terrier_proto::messages::{AgentMessage, Refused, ServerMessage};
use terrier_proto::name::is_valid_id;

use crate::agent::{Agent, Error, Event, Events};
use crate::buffers::ControlBuffers;
use crate::clock::Clock;
use crate::connect::{Connect, Endpoint};
use crate::data::{Job, Refusal, SessionInfo};
use crate::handshake::Target;
use crate::service::Service;
use crate::ws::{upgrade, Message, WsConn};

/// Room for one encoded `refused` (stream id, reason and JSON around them).
const REFUSED_JSON_BYTES: usize = 64 + 32 + 2 * crate::ws::MAX_REASON_LEN;

impl<C: Connect, S: Service, K: Clock, E: Events> Agent<'_, C, S, K, E> {
    /// Runs one control socket until it ends; says why. Sets `connected_at`
    /// once `welcome` arrived and `go_away` when the server asked for a delay.
    pub(crate) async fn control_session<R: RngCore>(
        &self,
        bufs: &mut ControlBuffers<'_>,
        rng: &mut R,
        connected_at: &mut Option<u64>,
        go_away: &mut Option<u32>,
    ) -> Error {
        let ControlBuffers { rx, msg, tx } = bufs;
        let timeout = u64::from(self.config.timing.handshake_timeout_ms);
        let opened = self.open_control(rx, tx, rng, msg);
        let (mut ws, server, session, heartbeat_ms) = match select(opened, self.clock.sleep_ms(timeout)).await {
            Either::First(Ok(opened)) => opened,
            Either::First(Err(e)) => return e,
            Either::Second(()) => return Error::Timeout,
        };
        *connected_at = Some(self.clock.now_ms());
        self.session.sender().send(SessionInfo { server: server.clone(), id: session.clone() });

        let mut last_heard = self.clock.now_ms();
        let mut next_ping = last_heard + heartbeat_ms;
        loop {
            let now = self.clock.now_ms();
            let dead_at = last_heard + u64::from(HEARTBEAT_MISSES) * heartbeat_ms;
            if now >= dead_at {
                ws.close(None).await;
                return Error::HeartbeatTimeout;
            }
            let wake_in = next_ping.min(dead_at).saturating_sub(now);
            let event = select3(ws.read_message(msg), self.refusals.receive(), self.clock.sleep_ms(wake_in)).await;
            match event {
                Either3::First(Err(e)) => return Error::Socket(e),
                Either3::First(Ok(message)) => {
                    last_heard = self.clock.now_ms();
                    let result = match message {
                        Message::Text(n) => {
                            let busy = self.handle_text(&msg[..n], &server, &session, go_away);
                            match busy {
                                Some(refusal) => send_refused(&mut ws, &refusal).await,
                                None => Ok(()),
                            }
                        }
                        // Unknown or oversized messages are ignored (§3.3).
                        Message::TooLarge | Message::Pong => Ok(()),
                        Message::Ping => ws.pong().await,
                        Message::Binary => {
                            ws.close(None).await;
                            return Error::Protocol;
                        }
                        Message::Close(code) => {
                            ws.close(code).await;
                            return Error::Closed(code);
                        }
                        Message::Closed => return Error::Closed(None),
                    };
                    if let Err(e) = result {
                        return Error::Socket(e);
                    }
                }
                Either3::Second(refusal) => {
                    if let Err(e) = send_refused(&mut ws, &refusal).await {
                        return Error::Socket(e);
                    }
                }
                Either3::Third(()) => {
                    if self.clock.now_ms() >= next_ping {
                        if let Err(e) = ws.ping().await {
                            return Error::Socket(e);
                        }
                        next_ping += heartbeat_ms;
                    }
                }
            }
        }
    }

    /// Dials, follows redirects, and reads `welcome`: the open socket, the
    /// node it is on, the session id and the heartbeat interval.
    async fn open_control<'b, R: RngCore>(
        &'b self,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        rng: &'b mut R,
        msg: &mut [u8],
    ) -> Result<(WsConn<'b, C::Conn<'b>, &'b mut R>, Endpoint, String<32>, u64), Error> {
        let mut server = self.config.server.clone();
        let mut hops = 0u8;
        let (io, upgraded) = loop {
            let mut io = self.connector.connect(&server).await.map_err(|_| Error::Connect)?;
            let target = Target::Control { config: &self.config, hops };
            match upgrade(&mut io, &mut *rng, rx, &target, &server, self.config.token).await {
                Ok(upgraded) => break (io, upgraded),
                Err(crate::ws::HandshakeError::Redirect(to)) if hops < MAX_REDIRECT_HOPS => {
                    server = to;
                    hops += 1;
                }
                Err(crate::ws::HandshakeError::Redirect(_)) => return Err(Error::TooManyRedirects),
                Err(e) => return Err(Error::Handshake(e)),
            }
        };
        let mut ws = WsConn::accept(io, rng, rx, tx, upgraded).map_err(Error::Handshake)?;
        let n = loop {
            match ws.read_message(msg).await.map_err(Error::Socket)? {
                Message::Text(n) => break n,
                Message::Ping => ws.pong().await.map_err(Error::Socket)?,
                Message::Pong => {}
                Message::Close(code) => {
                    ws.close(code).await;
                    return Err(Error::Closed(code));
                }
                _ => return Err(Error::NoWelcome),
            }
        };
        let Ok(ServerMessage::Welcome(welcome)) = codec::decode::<ServerMessage>(&msg[..n]) else {
            return Err(Error::NoWelcome);
        };
        if !is_valid_id(welcome.session) {
            return Err(Error::NoWelcome);
        }
        let session = String::try_from(welcome.session).map_err(|_| Error::NoWelcome)?;
        let heartbeat_ms = u64::from(welcome.heartbeat_secs.max(1)) * 1000;
        self.events.event(Event::Connected(&welcome));
        Ok((ws, server, session, heartbeat_ms))
    }

    /// Handles one text message; returns a `refused` to send when an `open`
    /// names a service id too long to be one of ours, or finds every data
    /// worker busy and the queue full.
    fn handle_text(&self, text: &[u8], server: &Endpoint, session: &str, go_away: &mut Option<u32>) -> Option<Refusal> {
        match codec::decode::<ServerMessage>(text) {
            Ok(ServerMessage::Open(open)) => {
                let stream = String::try_from(open.stream).ok().filter(|s: &String<32>| is_valid_id(s))?;
                let Ok(service) = String::try_from(open.service) else {
                    return Some(Refusal { stream, reason: reason("unknown service") });
                };
                let job = Job { server: server.clone(), session: String::try_from(session).ok()?, stream, service };
                match self.opens.try_send(job) {
                    Ok(()) => None,
                    Err(embassy_sync::channel::TrySendError::Full(job)) => {
                        Some(Refusal { stream: job.stream, reason: reason("device busy: every data socket is in use") })
                    }
                }
            }
            Ok(ServerMessage::GoAway(g)) => {
                *go_away = Some(g.after_ms);
                None
            }
            // `welcome` again, `assign` (pooled sockets only) or a message
            // from a newer server: ignored.
            _ => None,
        }
    }
}

fn reason(text: &str) -> String<{ crate::ws::MAX_REASON_LEN }> {
    let mut s = String::new();
    let _ = core::fmt::write(&mut crate::data::Truncating(&mut s), format_args!("{text}"));
    s
}

async fn send_refused<T, R>(ws: &mut WsConn<'_, T, R>, refusal: &Refusal) -> Result<(), crate::ws::WsError>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
    R: RngCore,
{
    let msg = AgentMessage::Refused(Refused { stream: &refusal.stream, reason: &refusal.reason });
    let mut json = [0u8; REFUSED_JSON_BYTES];
    match codec::encode(&msg, &mut json) {
        Ok(n) => ws.send_text(&json[..n]).await,
        Err(_) => Ok(()),
    }
}
