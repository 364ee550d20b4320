//! One visitor stream, from an `open` to its end: open the local service
//! (or report `refused`), open the data socket to the node that sent the
//! `open`, relay.

use embassy_futures::select::{select, Either};
use heapless::String;
use rand_core::RngCore;
use terrier_proto::codec;
use terrier_proto::limits::ID_HEX_LEN;
use terrier_proto::messages::{plain_char, ServerMessage};
use terrier_proto::name::MAX_SERVICE_ID_LEN;

use crate::agent::Error;
use crate::buffers::DataBuffers;
use crate::clock::Clock;
use crate::config::Timing;
use crate::connect::{Connect, Endpoint};
use crate::handshake::Target;
use crate::relay::{relay, RelayStats};
use crate::service::Service;
use crate::ws::{Message, WsConn, MAX_REASON_LEN};

/// A stream the control socket was told about, queued for a data worker.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The node whose control socket sent the `open` (after redirects).
    pub(crate) server: Endpoint,
    /// Session id from `welcome`.
    pub(crate) session: String<ID_HEX_LEN>,
    /// Stream id from `open`.
    pub(crate) stream: String<ID_HEX_LEN>,
    /// Service id from `open` (`http` or a TCP service id).
    pub(crate) service: String<MAX_SERVICE_ID_LEN>,
}

/// The current session, for pooled data sockets (which quote it).
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    /// The node the control socket is on (after redirects).
    pub(crate) server: Endpoint,
    /// Session id from `welcome`.
    pub(crate) id: String<ID_HEX_LEN>,
}

/// A stream a pooled socket was assigned: its service, and how it went.
pub(crate) type Assigned = (String<MAX_SERVICE_ID_LEN>, Result<RelayStats, (Error, Option<Refusal>)>);

/// A `refused` for the control socket to send.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The stream the local service refused.
    pub(crate) stream: String<ID_HEX_LEN>,
    /// Why, for the server's page and logs.
    pub(crate) reason: String<MAX_REASON_LEN>,
}

/// What a data worker needs from the agent.
pub(crate) struct Ctx<'x, C, S, K> {
    /// Opens the data socket's connection.
    pub(crate) connector: &'x C,
    /// Reaches the stream's local service.
    pub(crate) service: &'x S,
    /// For the handshake timeout and the relay's idle checks.
    pub(crate) clock: &'x K,
    /// The agent's timeouts.
    pub(crate) timing: &'x Timing,
    /// Sent with the data socket's handshake, if the device has one.
    pub(crate) token: Option<&'x str>,
}

/// Serves one stream; a refused local service yields
/// `Err((Error::Refused, Some(refusal)))` for the caller to report on the
/// control socket.
pub(crate) async fn serve<C: Connect, S: Service, K: Clock, R: RngCore>(
    ctx: &Ctx<'_, C, S, K>,
    job: &Job,
    bufs: &mut DataBuffers<'_>,
    rng: R,
) -> Result<RelayStats, (Error, Option<Refusal>)> {
    let mut local = match ctx.service.open(&job.service).await {
        Ok(local) => local,
        Err(e) => return Err((Error::Refused, Some(refusal(&job.stream, &e)))),
    };
    let DataBuffers { rx, down, up, tx } = bufs;
    let target = Target::Data { session: &job.session, stream: &job.stream };
    let mut ws = open_socket(ctx, &job.server, &target, rx, tx, rng).await.map_err(|e| (e, None))?;
    relay(&mut ws, &mut local, down, up, ctx.clock, ctx.timing).await.map_err(|e| (e, None))
}

/// Parks a pooled data socket (`/v1/data?pool=1`) until the server assigns
/// it a stream, then serves that stream (`docs/PROTOCOL.md` §4.3). An error
/// before the `assign` (handshake refused, socket closed while parked) comes
/// back as `Err`.
pub(crate) async fn serve_pooled<C: Connect, S: Service, K: Clock, R: RngCore>(
    ctx: &Ctx<'_, C, S, K>,
    session: &SessionInfo,
    bufs: &mut DataBuffers<'_>,
    rng: R,
    on_parked: impl FnOnce(),
) -> Result<Assigned, Error> {
    let DataBuffers { rx, down, up, tx } = bufs;
    let target = Target::Pool { session: &session.id };
    let mut ws = open_socket(ctx, &session.server, &target, rx, tx, rng).await?;
    on_parked();
    let (stream, service) = loop {
        match ws.read_message(down).await.map_err(Error::Socket)? {
            Message::Text(n) => match codec::decode::<ServerMessage>(&down[..n]) {
                Ok(ServerMessage::Assign(a)) => {
                    match (String::<ID_HEX_LEN>::try_from(a.stream), String::<MAX_SERVICE_ID_LEN>::try_from(a.service))
                    {
                        (Ok(stream), Ok(service)) => break (stream, service),
                        _ => {
                            ws.close(None).await;
                            return Err(Error::Protocol);
                        }
                    }
                }
                _ => {
                    ws.close(None).await;
                    return Err(Error::Protocol);
                }
            },
            Message::Ping => ws.pong().await.map_err(Error::Socket)?,
            Message::Pong => {}
            Message::Close(code) => {
                ws.close(code).await;
                return Err(Error::Closed(code));
            }
            Message::Closed => return Err(Error::Closed(None)),
            Message::Binary | Message::TooLarge => {
                ws.close(None).await;
                return Err(Error::Protocol);
            }
        }
    };
    let mut local = match ctx.service.open(&service).await {
        Ok(local) => local,
        Err(e) => {
            // The visitor's bytes may already be here: drop the socket, so
            // the visitor sees the stream end, and say why on the control socket.
            ws.close(None).await;
            let refusal = refusal(&stream, &e);
            return Ok((service, Err((Error::Refused, Some(refusal)))));
        }
    };
    let result = relay(&mut ws, &mut local, down, up, ctx.clock, ctx.timing).await.map_err(|e| (e, None));
    Ok((service, result))
}

/// Connects to `server` and upgrades to a data socket, within the handshake timeout.
async fn open_socket<'b, C: Connect, S, K: Clock, R: RngCore>(
    ctx: &'b Ctx<'_, C, S, K>,
    server: &Endpoint,
    target: &Target<'_>,
    rx: &'b mut [u8],
    tx: &'b mut [u8],
    rng: R,
) -> Result<WsConn<'b, C::Conn<'b>, R>, Error> {
    let opened = async {
        let io = ctx.connector.connect(server).await.map_err(|_| Error::Connect)?;
        WsConn::handshake(io, rng, rx, tx, target, server, ctx.token).await.map_err(Error::Handshake)
    };
    match select(opened, ctx.clock.sleep_ms(ctx.timing.handshake_timeout_ms.into())).await {
        Either::First(result) => result,
        Either::Second(()) => Err(Error::Timeout),
    }
}

/// A `refused` for `stream` with the service's error as its reason, made
/// plain: an escaped string fails the server's decoder, which then ends the
/// session as a protocol error (`docs/PROTOCOL.md` §3.4).
fn refusal(stream: &String<ID_HEX_LEN>, error: &impl core::fmt::Display) -> Refusal {
    let mut text: String<MAX_REASON_LEN> = String::new();
    let _ = core::fmt::write(&mut Truncating(&mut text), format_args!("{error}"));
    let mut reason = String::new();
    for c in text.chars() {
        // Same length as `c`, so it fits.
        let _ = reason.push(plain_char(c));
    }
    Refusal { stream: stream.clone(), reason }
}

/// Writes into a bounded string, dropping what does not fit.
pub(crate) struct Truncating<'s, const N: usize>(pub(crate) &'s mut String<N>);

impl<const N: usize> core::fmt::Write for Truncating<'_, N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (the `proto_encode` fuzz target's finding): a reason with a
    /// quote went out escaped and the server ended the session over it.
    #[test]
    fn refusal_reasons_are_plain() {
        let stream = String::try_from("0123456789abcdef0123456789abcdef").unwrap();
        let refusal = refusal(&stream, &"unknown service \"22\" at C:\\x\n");
        assert_eq!(refusal.reason.as_str(), "unknown service '22' at C:/x ");
        assert!(terrier_proto::messages::is_plain(&refusal.reason));
    }
}
