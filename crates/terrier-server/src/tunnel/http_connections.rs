//! The HTTP/1 connections a session keeps to its device's web service for
//! the requests that come next ([`super::upstream`] makes and uses them).
//! They live on the session, so a device that reconnects never gets its old
//! session's connections.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use crate::forwarding::RequestBody;

/// A session's HTTP/1 connections to its device, the newest last. Busy ones
/// (an answer still streaming) stay listed and are skipped until ready, or
/// let go when a newer one needs the place.
#[derive(Default)]
pub struct HttpConnections {
    /// Connections and when each was last handed back.
    kept: Mutex<Vec<Kept>>,
}

/// A connection kept for the next request.
struct Kept {
    /// When it was handed back.
    since: Instant,
    /// hyper's handle to send the next request on it.
    sender: SendRequest<RequestBody>,
}

impl HttpConnections {
    /// A ready connection, newest first; closed ones found on the way are
    /// dropped.
    pub fn take_ready(&self) -> Option<SendRequest<RequestBody>> {
        let mut kept = self.kept.lock().expect("http connections lock");
        kept.retain(|k| !k.sender.is_closed());
        let at = kept.iter().rposition(|k| k.sender.is_ready())?;
        Some(kept.remove(at).sender)
    }

    /// Keeps `sender` for a later request. With `max` kept already, the
    /// oldest busy one makes room: its answer goes on (hyper closes the
    /// connection after it), but it is not reused. An answer that never
    /// ends (server-sent events) would otherwise hold its place for good
    /// and leave every later connection unkept. With `max` ready ones kept,
    /// `sender` is dropped instead (hyper closes it once its answer is done).
    pub fn give_back(&self, sender: SendRequest<RequestBody>, max: usize) {
        let mut kept = self.kept.lock().expect("http connections lock");
        if kept.len() >= max {
            kept.retain(|k| !k.sender.is_closed());
        }
        if kept.len() >= max {
            let Some(busy) = kept.iter().position(|k| !k.sender.is_ready()) else {
                return;
            };
            kept.remove(busy);
        }
        kept.push(Kept { since: Instant::now(), sender });
    }

    /// Drops connections idle for `idle_for` or longer (measured from when
    /// each was handed back) and closed ones; returns how many.
    pub fn prune(&self, idle_for: Duration) -> usize {
        let mut kept = self.kept.lock().expect("http connections lock");
        let before = kept.len();
        let unused_too_long = |k: &Kept| k.sender.is_ready() && k.since.elapsed() >= idle_for;
        kept.retain(|k| !(k.sender.is_closed() || unused_too_long(k)));
        before - kept.len()
    }

    /// Drops every connection (the session ended).
    pub fn clear(&self) {
        self.kept.lock().expect("http connections lock").clear();
    }
}
