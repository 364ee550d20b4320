//! One visitor stream, from an `open` to its end: open the local service
//! (or report `refused`), open the data socket to the node that sent the
//! `open`, relay.

use embassy_futures::select::{select, Either};
use heapless::String;
use rand_core::RngCore;
use terrier_proto::limits::ID_HEX_LEN;
use terrier_proto::name::MAX_SERVICE_ID_LEN;

use crate::agent::Error;
use crate::buffers::DataBuffers;
use crate::clock::Clock;
use crate::config::Timing;
use crate::connect::{Connect, Endpoint};
use crate::handshake::Target;
use crate::relay::{relay, RelayStats};
use crate::service::Service;
use crate::ws::{WsConn, MAX_REASON_LEN};

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

/// A `refused` for the control socket to send.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) stream: String<ID_HEX_LEN>,
    pub(crate) reason: String<MAX_REASON_LEN>,
}

/// What a data worker needs from the agent.
pub(crate) struct Ctx<'x, C, S, K> {
    pub(crate) connector: &'x C,
    pub(crate) service: &'x S,
    pub(crate) clock: &'x K,
    pub(crate) timing: &'x Timing,
    pub(crate) token: Option<&'x str>,
}

/// Serves one stream; a refused local service yields `Err(Refused(reason))`
/// for the caller to report on the control socket.
pub(crate) async fn serve<C: Connect, S: Service, K: Clock, R: RngCore>(
    ctx: &Ctx<'_, C, S, K>,
    job: &Job,
    bufs: &mut DataBuffers<'_>,
    rng: R,
) -> Result<RelayStats, (Error, Option<Refusal>)> {
    let mut local = match ctx.service.open(&job.service).await {
        Ok(local) => local,
        Err(e) => {
            let mut reason = String::new();
            let _ = core::fmt::write(&mut Truncating(&mut reason), format_args!("{e}"));
            return Err((Error::Refused, Some(Refusal { stream: job.stream.clone(), reason })));
        }
    };
    let DataBuffers { rx, down, up, tx } = bufs;
    let target = Target::Data { session: &job.session, stream: &job.stream };
    let opened = async {
        let io = ctx.connector.connect(&job.server).await.map_err(|_| Error::Connect)?;
        WsConn::handshake(io, rng, rx, tx, &target, &job.server, ctx.token).await.map_err(Error::Handshake)
    };
    let mut ws = match select(opened, ctx.clock.sleep_ms(ctx.timing.handshake_timeout_ms.into())).await {
        Either::First(Ok(ws)) => ws,
        Either::First(Err(e)) => return Err((e, None)),
        Either::Second(()) => return Err((Error::Timeout, None)),
    };
    relay(&mut ws, &mut local, down, up, ctx.clock, ctx.timing).await.map_err(|e| (e, None))
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
