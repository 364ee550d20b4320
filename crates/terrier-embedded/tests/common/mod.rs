//! The "firmware" for host tests: tokio sockets as `embedded-io-async`
//! streams, tokio's clock, an LED page handler and LAN TCP services, and a
//! runner that starts the agent on the current `LocalSet` and reports its
//! events on a channel.
#![allow(dead_code)]

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use embedded_io_async::{ErrorType, Read, Write};
use rand_core::OsRng;
use terrier_embedded::agent::{Event, Fatal};
use terrier_embedded::buffers::{CONTROL_TOTAL, DATA_TOTAL};
use terrier_embedded::http::{Handler, HttpConn, HttpService, Request, Response};
use terrier_embedded::{
    Agent, Clock, Config, Connect, ControlBuffers, DataBuffers, Either, Endpoint, LocalStream, Service, Timing,
};
use terrier_testkit::TestServer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on waiting for one agent event or one visitor step.
pub const STEP: Duration = Duration::from_secs(10);

// ---- The "firmware": network, clock, services --------------------------------

/// Connects with tokio; no TLS.
pub struct TokioNet;

impl Connect for TokioNet {
    type Conn<'a> = FromTokio<TcpStream>;
    type Error = std::io::Error;

    async fn connect(&self, to: &Endpoint) -> Result<FromTokio<TcpStream>, std::io::Error> {
        if to.tls {
            return Err(std::io::Error::other("this connector has no TLS"));
        }
        let stream = TcpStream::connect((to.host.as_str(), to.port)).await?;
        stream.set_nodelay(true)?;
        Ok(FromTokio::new(stream))
    }
}

/// Milliseconds since the agent started, on tokio's clock.
pub struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await
    }
}

/// The prototype's page: an LED state, shown and switched by a form.
pub struct LedPage {
    pub on: Cell<bool>,
}

impl Handler for LedPage {
    fn handle(&self, req: &Request<'_>, resp: &mut Response<'_>) {
        use core::fmt::Write as _;
        match (req.method, req.path) {
            ("GET", "/") => {}
            ("POST", "/led") => match req.body {
                b"state=on" => self.on.set(true),
                b"state=off" => self.on.set(false),
                _ => {
                    resp.set_status(400);
                    let _ = write!(resp, "state=on or state=off");
                    return;
                }
            },
            _ => {
                resp.set_status(404);
                let _ = write!(resp, "no such page");
                return;
            }
        }
        let (state, other) = if self.on.get() { ("on", "off") } else { ("off", "on") };
        let _ = write!(
            resp,
            "<!doctype html><title>LED</title><p>LED is {state}</p>\
             <form method=post action=/led><button name=state value={other}>turn {other}</button></form>"
        );
    }
}

/// A TCP service on the LAN, with half-close.
pub struct TcpLocal(FromTokio<TcpStream>);

impl ErrorType for TcpLocal {
    type Error = std::io::Error;
}
impl Read for TcpLocal {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        self.0.read(buf).await
    }
}
impl Write for TcpLocal {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        self.0.write(buf).await
    }
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        Write::flush(&mut self.0).await
    }
}
impl LocalStream for TcpLocal {
    async fn close_write(&mut self) -> Result<(), std::io::Error> {
        self.0.inner_mut().shutdown().await
    }
}

/// The device: its LED page in firmware, plus TCP services dialled on the LAN.
pub struct Device {
    pub page: HttpService<LedPage>,
    pub tcp: Vec<(&'static str, SocketAddr)>,
}

impl Service for Device {
    type Conn<'a> = Either<HttpConn<'a, LedPage, 1024, 2048>, TcpLocal>;
    type Error = std::io::Error;

    async fn open<'a>(&'a self, service: &str) -> Result<Self::Conn<'a>, std::io::Error> {
        if service == "http" {
            return Ok(Either::Left(self.page.connect()));
        }
        let (_, addr) = self.tcp.iter().find(|(id, _)| *id == service).ok_or(std::io::ErrorKind::NotFound)?;
        Ok(Either::Right(TcpLocal(FromTokio::new(TcpStream::connect(addr).await?))))
    }
}

// ---- Running it ------------------------------------------------------------------

/// What the test learns from the agent's events.
#[derive(Debug)]
pub enum Note {
    Connected {
        subdomain: String,
        tcp: Vec<(String, u16)>,
    },
    Disconnected(String),
    /// A pooled data socket is parked.
    PoolReady,
    /// `run_control` returned: the server answered 400.
    Fatal(String),
    StreamEnded(Result<u64, String>),
}

/// Fast reconnects for tests.
pub fn fast_timing() -> Timing {
    Timing { backoff_base_ms: 50, backoff_max_ms: 300, handshake_timeout_ms: 3_000, ..Timing::default() }
}

pub fn config(server: SocketAddr, name: &'static str, tcp: &'static [&'static str]) -> Config<'static> {
    let mut config = Config::new(Endpoint::new(&server.ip().to_string(), server.port(), false).unwrap(), name);
    config.http = true;
    config.tcp = tcp;
    config.platform = "host-test";
    config.token = Some("device-token-for-the-coming-auth");
    config.timing = fast_timing();
    config
}

/// Starts the agent with the recommended buffer sizes and `workers` data
/// sockets, on the current `LocalSet` (the agent is single-threaded, as on a
/// microcontroller); returns its events.
pub fn spawn_agent(config: Config<'static>, device: Device, workers: usize) -> mpsc::UnboundedReceiver<Note> {
    spawn_agent_with_pool(config, device, workers, 0)
}

/// Like [`spawn_agent`], plus `pooled` loops that keep a data socket parked
/// at the server (`assign`).
pub fn spawn_agent_with_pool(
    config: Config<'static>,
    device: Device,
    workers: usize,
    pooled: usize,
) -> mpsc::UnboundedReceiver<Note> {
    let (tx, rx) = mpsc::unbounded_channel();
    let fatal_tx = tx.clone();
    tokio::task::spawn_local(async move {
        let events = move |event: Event<'_>| {
            let note = match event {
                Event::Connected(w) => Note::Connected {
                    subdomain: w.subdomain.to_owned(),
                    tcp: w.tcp.iter().map(|p| (p.service.to_owned(), p.port)).collect(),
                },
                Event::Disconnected(e) => Note::Disconnected(format!("{e:?}")),
                Event::PoolReady => Note::PoolReady,
                Event::StreamEnded { result, .. } => {
                    Note::StreamEnded(result.map(|s| s.to_server + s.from_server).map_err(|e| format!("{e:?}")))
                }
                _ => return,
            };
            let _ = tx.send(note);
        };
        let agent = Agent::new(config, TokioNet, device, TokioClock(tokio::time::Instant::now()), events).unwrap();
        let mut control = vec![0u8; CONTROL_TOTAL];
        let mut data: Vec<Vec<u8>> = (0..workers + pooled).map(|_| vec![0u8; DATA_TOTAL]).collect();
        let control_loop = agent.run_control(ControlBuffers::split(&mut control).unwrap(), OsRng);
        let agent = &agent;
        let data_loops = futures_join_all(data.iter_mut().enumerate().map(|(i, buf)| {
            let bufs = DataBuffers::split(buf).unwrap();
            let worker: std::pin::Pin<Box<dyn std::future::Future<Output = std::convert::Infallible> + '_>> =
                if i < workers {
                    Box::pin(agent.run_data(bufs, OsRng))
                } else {
                    Box::pin(agent.run_pooled_data(bufs, OsRng))
                };
            worker
        }));
        tokio::select! {
            Fatal { reason } = control_loop => {
                let _ = fatal_tx.send(Note::Fatal(reason.as_str().to_owned()));
            }
            _ = data_loops => unreachable!("data workers never end"),
        }
    });
    rx
}

/// Polls every future to completion (the data workers never complete).
pub async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<_> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Waits for the next note matching `pick`, skipping others.
pub async fn next<T>(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    what: &str,
    mut pick: impl FnMut(Note) -> Option<T>,
) -> T {
    timeout(STEP, async {
        loop {
            let note = notes.recv().await.expect("agent alive");
            if let Some(t) = pick(note) {
                return t;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub async fn connected(notes: &mut mpsc::UnboundedReceiver<Note>) -> (String, Vec<(String, u16)>) {
    next(notes, "connected", |n| match n {
        Note::Connected { subdomain, tcp } => Some((subdomain, tcp)),
        _ => None,
    })
    .await
}

pub fn led_device(tcp: Vec<(&'static str, SocketAddr)>) -> Device {
    Device { page: HttpService::new(LedPage { on: Cell::new(false) }), tcp }
}

pub async fn server() -> TestServer {
    TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await
}
