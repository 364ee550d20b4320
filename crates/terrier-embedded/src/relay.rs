//! Relays one visitor stream between its data socket and the local service,
//! following `docs/PROTOCOL.md` §4.2: binary frames carry bytes, an empty
//! binary frame ends one direction (half-close), a Close before both
//! directions ended is an abort. One task does both directions: it waits on
//! the socket, the local stream and an idle timer at once, and writes only
//! after that wait (socket writes are not cancel-safe).

use embassy_futures::select::{select, select3, Either3};
use embedded_io::Error as _;
use embedded_io_async::Write;
use rand_core::RngCore;

use crate::agent::Error;
use crate::clock::Clock;
use crate::config::Timing;
use crate::service::LocalStream;
use crate::ws::{Part, WsConn};

/// Bytes moved by one relay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Bytes from the local service sent to the server.
    pub to_server: u64,
    /// Bytes from the server written to the local service.
    pub from_server: u64,
}

/// Relays until both directions ended, then closes the socket cleanly.
pub(crate) async fn relay<T, R, L, K>(
    ws: &mut WsConn<'_, T, R>,
    local: &mut L,
    down: &mut [u8],
    up: &mut [u8],
    clock: &K,
    timing: &Timing,
) -> Result<RelayStats, Error>
where
    T: embedded_io_async::Read + Write,
    R: RngCore,
    L: LocalStream,
    K: Clock,
{
    let mut stats = RelayStats::default();
    let (mut down_done, mut up_done) = (false, false);
    let up_len = up.len().min(ws.max_payload());
    while !(down_done && up_done) {
        let local_read = async {
            if up_done {
                core::future::pending().await
            } else {
                local.read(&mut up[..up_len]).await
            }
        };
        let event = select3(ws.read_part(down), local_read, clock.sleep_ms(timing.data_idle_timeout_ms.into())).await;
        match event {
            Either3::First(part) => match part.map_err(Error::Socket)? {
                Part::Binary { len: 0, end: true } => {
                    if !down_done {
                        local.close_write().await.map_err(|e| Error::Local(e.kind()))?;
                        down_done = true;
                    }
                }
                Part::Binary { len, .. } => {
                    if down_done {
                        return Err(Error::Protocol);
                    }
                    local.write_all(&down[..len]).await.map_err(|e| Error::Local(e.kind()))?;
                    local.flush().await.map_err(|e| Error::Local(e.kind()))?;
                    stats.from_server += len as u64;
                }
                Part::Ping => ws.pong().await.map_err(Error::Socket)?,
                Part::Pong => {}
                Part::Text { .. } => {
                    ws.close(None).await;
                    return Err(Error::Protocol);
                }
                Part::Close(code) => {
                    ws.close(code).await;
                    return Err(Error::Aborted);
                }
                Part::Closed => return Err(Error::Aborted),
            },
            Either3::Second(Ok(0)) => {
                ws.send_binary(&[]).await.map_err(Error::Socket)?;
                up_done = true;
            }
            Either3::Second(Ok(n)) => {
                ws.send_binary(&up[..n]).await.map_err(Error::Socket)?;
                stats.to_server += n as u64;
            }
            Either3::Second(Err(e)) => return Err(Error::Local(e.kind())),
            Either3::Third(()) => {
                ws.close(None).await;
                return Err(Error::IdleTimeout);
            }
        }
    }
    // Both directions ended: close, and give the server's Close a moment so
    // neither side sees a reset.
    ws.close(None).await;
    let closed = async {
        loop {
            match ws.read_part(down).await {
                Ok(Part::Closed) | Ok(Part::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = select(closed, clock.sleep_ms(timing.close_wait_ms.into())).await;
    Ok(stats)
}
