//! The [`Agent`]: one device's configuration and the firmware's services,
//! driven by two kinds of loops the firmware runs side by side (joined in one
//! task, or as separate embassy tasks on a `'static` agent):
//!
//! * [`Agent::run_control`] keeps the control socket up forever: handshake,
//!   `welcome`, `open`s, pings, reconnect with backoff. It returns only when
//!   the server answers `400` (the configuration can never work).
//! * [`Agent::run_data`] serves one visitor stream at a time; run several
//!   (each with its own [`DataBuffers`]) to serve visitors in parallel.
//! * [`Agent::run_pooled_data`] instead keeps one idle data socket parked at
//!   the server (`assign`, `docs/PROTOCOL.md` §4.3), which takes the
//!   data-socket handshake off the visitor's path at the cost of an open
//!   socket; optional, the protocol's default is none.
//!
//! They talk through two small bounded queues (`open`s to the data workers,
//! `refused`s back to the control socket) and a watch of the current session
//! (for pooled sockets, which quote it).

use core::convert::Infallible;

use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::watch::Watch;
use heapless::String;
use rand_core::RngCore;
use terrier_proto::messages::Welcome;

use crate::backoff::Backoff;
use crate::buffers::{ControlBuffers, DataBuffers};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::connect::Connect;
use crate::data::{self, Job, Refusal, SessionInfo};
use crate::relay::RelayStats;
use crate::service::Service;
use crate::ws::{HandshakeError, WsError, MAX_REASON_LEN};

/// `open`s waiting for a free data worker; one more is answered `refused`
/// ("busy") at once rather than left to time out.
pub const OPEN_QUEUE: usize = 4;
/// `refused` messages waiting for the control socket.
const REFUSAL_QUEUE: usize = 4;
/// Most [`Agent::run_pooled_data`] loops one agent runs; more serve `open`s instead.
pub const MAX_POOL_WORKERS: usize = 4;

/// Why a connection or a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The [`Connect`] implementation could not open a connection.
    Connect,
    /// Connecting, the handshake or `welcome` took longer than the timeout.
    Timeout,
    /// The server refused the handshake, redirected, or answered garbage.
    Handshake(HandshakeError),
    /// More than `MAX_REDIRECT_HOPS` redirects in one attempt.
    TooManyRedirects,
    /// The socket failed.
    Socket(WsError),
    /// The first control message was not a `welcome`.
    NoWelcome,
    /// Nothing came from the server for three heartbeat intervals.
    HeartbeatTimeout,
    /// The server closed the socket, with its close code (`4000` replaced,
    /// `4001` going away, `4002` protocol error, `4003` heartbeat timeout,
    /// `4004` token revoked, `4005` disconnected by the operator).
    Closed(Option<u16>),
    /// The peer broke the protocol (binary on control, text on data).
    Protocol,
    /// The local service failed mid-stream.
    Local(embedded_io::ErrorKind),
    /// The local service could not be opened; `refused` was sent.
    Refused,
    /// A data socket saw no bytes for `data_idle_timeout_ms`.
    IdleTimeout,
    /// The server closed a data socket before the stream ended.
    Aborted,
}

/// Something the firmware may want to show or log.
#[derive(Debug)]
pub enum Event<'e> {
    /// The control socket is up: the subdomain, URL and TCP ports granted.
    Connected(&'e Welcome<'e>),
    /// The control socket ended (or could not be opened).
    Disconnected(&'e Error),
    /// The next connection attempt starts in `delay_ms`.
    Reconnecting {
        /// Milliseconds until the attempt.
        delay_ms: u64,
    },
    /// A pooled data socket is parked at the server, ready for a visitor.
    PoolReady,
    /// A data worker took a visitor stream for `service`.
    StreamOpened {
        /// Service id.
        service: &'e str,
    },
    /// A visitor stream ended, cleanly with its byte counts or with an error.
    StreamEnded {
        /// Service id.
        service: &'e str,
        /// Byte counts, or why it ended early.
        result: Result<RelayStats, &'e Error>,
    },
}

/// Receives [`Event`]s (logging, an LED, a display). `()` ignores them; any
/// `Fn(Event)` closure works too.
pub trait Events {
    /// Called for each event, synchronously: keep it short.
    fn event(&self, event: Event<'_>);
}

impl Events for () {
    fn event(&self, _: Event<'_>) {}
}

impl<F: Fn(Event<'_>)> Events for F {
    fn event(&self, event: Event<'_>) {
        self(event)
    }
}

/// The server answered `400`: the name or services can never be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The server's reason.
    pub reason: String<MAX_REASON_LEN>,
}

/// One device's agent. Not `Sync`: all its loops run on one executor.
pub struct Agent<'a, C, S, K, E = ()> {
    /// The device's name, server, token, services and timing.
    pub(crate) config: Config<'a>,
    /// Opens the firmware's connections to the server.
    pub(crate) connector: C,
    /// Reaches the device's local services.
    pub(crate) service: S,
    /// Time and sleeps, for timeouts, pings and backoff.
    pub(crate) clock: K,
    /// Where the agent reports what happens (connected, streams, ...).
    pub(crate) events: E,
    /// `open`s from the control socket to the data workers.
    pub(crate) opens: Channel<NoopRawMutex, Job, OPEN_QUEUE>,
    /// `refused`s from the data workers to the control socket.
    pub(crate) refusals: Channel<NoopRawMutex, Refusal, REFUSAL_QUEUE>,
    /// The current session (node and id), for pooled data sockets.
    pub(crate) session: Watch<NoopRawMutex, SessionInfo, MAX_POOL_WORKERS>,
}

impl<'a, C: Connect, S: Service, K: Clock, E: Events> Agent<'a, C, S, K, E> {
    /// An agent for `config` (validated here) over the firmware's network,
    /// services, clock and event sink.
    pub fn new(config: Config<'a>, connector: C, service: S, clock: K, events: E) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            connector,
            service,
            clock,
            events,
            opens: Channel::new(),
            refusals: Channel::new(),
            session: Watch::new(),
        })
    }

    /// Keeps the control socket connected, forever; returns only on a `400`.
    pub async fn run_control<R: RngCore>(&self, mut bufs: ControlBuffers<'_>, mut rng: R) -> Fatal {
        let mut backoff = Backoff::default();
        loop {
            let mut connected_at = None;
            let mut go_away = None;
            let error = self.control_session(&mut bufs, &mut rng, &mut connected_at, &mut go_away).await;
            if let Error::Handshake(HandshakeError::Rejected { status: 400, reason }) = &error {
                return Fatal { reason: reason.clone() };
            }
            self.events.event(Event::Disconnected(&error));
            if connected_at
                .is_some_and(|at| self.clock.now_ms().saturating_sub(at) >= self.config.timing.stable_after_ms.into())
            {
                backoff.reset();
            }
            let delay_ms = match go_away {
                Some(after_ms) => u64::from(after_ms),
                None => backoff.next_delay_ms(&self.config.timing, &mut rng),
            };
            self.events.event(Event::Reconnecting { delay_ms });
            self.clock.sleep_ms(delay_ms).await;
        }
    }

    /// Serves visitor streams one at a time, forever.
    pub async fn run_data<R: RngCore>(&self, mut bufs: DataBuffers<'_>, mut rng: R) -> Infallible {
        let ctx = self.data_ctx();
        loop {
            let job = self.opens.receive().await;
            self.events.event(Event::StreamOpened { service: &job.service });
            let result = self.hand_back(data::serve(&ctx, &job, &mut bufs, &mut rng).await);
            self.events.event(Event::StreamEnded { service: &job.service, result: result.as_ref().map(|s| *s) });
        }
    }

    /// Keeps one pooled data socket parked at the server, serves the stream
    /// it is assigned, and parks a new one, forever. Beyond
    /// [`MAX_POOL_WORKERS`] loops, it serves `open`s like [`Self::run_data`].
    pub async fn run_pooled_data<R: RngCore>(&self, mut bufs: DataBuffers<'_>, mut rng: R) -> Infallible {
        let Some(mut session) = self.session.receiver() else {
            return self.run_data(bufs, rng).await;
        };
        let ctx = self.data_ctx();
        let mut backoff = Backoff::default();
        loop {
            let current = session.get().await;
            let parked = || self.events.event(Event::PoolReady);
            match data::serve_pooled(&ctx, &current, &mut bufs, &mut rng, parked).await {
                Ok((service, result)) => {
                    backoff.reset();
                    self.events.event(Event::StreamOpened { service: &service });
                    let result = self.hand_back(result);
                    self.events.event(Event::StreamEnded { service: &service, result: result.as_ref().map(|s| *s) });
                }
                Err(_) => {
                    // Refused (404: the session ended; 429: pool full) or
                    // dropped while parked: try again on the next session, or
                    // after a backoff delay.
                    let delay = backoff.next_delay_ms(&self.config.timing, &mut rng);
                    let _ = select(session.changed(), self.clock.sleep_ms(delay)).await;
                }
            }
        }
    }

    /// Sends a stream's `refused`, if it has one, to the control socket.
    fn hand_back(&self, result: Result<RelayStats, (Error, Option<Refusal>)>) -> Result<RelayStats, Error> {
        result.map_err(|(error, refusal)| {
            if let Some(refusal) = refusal {
                // A full queue means the control socket is down: the
                // visitor's stream is gone with it, so dropping is fine.
                let _ = self.refusals.try_send(refusal);
            }
            error
        })
    }

    fn data_ctx(&self) -> data::Ctx<'_, C, S, K> {
        data::Ctx {
            connector: &self.connector,
            service: &self.service,
            clock: &self.clock,
            timing: &self.config.timing,
            token: self.config.token,
        }
    }

    /// One control socket and one data worker: the smallest working agent.
    /// Returns only on a `400`.
    pub async fn run<R1: RngCore, R2: RngCore>(
        &self,
        control: ControlBuffers<'_>,
        data: DataBuffers<'_>,
        control_rng: R1,
        data_rng: R2,
    ) -> Fatal {
        match select(self.run_control(control, control_rng), self.run_data(data, data_rng)).await {
            Either::First(fatal) => fatal,
            Either::Second(never) => match never {},
        }
    }
}
