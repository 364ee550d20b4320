//! terrier-embedded on the host, against a real `terrierd`: the firmware's
//! pieces (network, clock, services) are tokio sockets wrapped as
//! `embedded-io-async`, the buffers are the recommended microcontroller
//! sizes, and visitors are real HTTP and TCP clients. The LED test is the
//! ESP8266 prototype's demo in software: a page served by a handler in
//! "firmware", toggled through the tunnel.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use embedded_io_async::{ErrorType, Read, Write};
use rand_core::OsRng;
use terrier_embedded::agent::Event;
use terrier_embedded::buffers::{CONTROL_TOTAL, DATA_TOTAL};
use terrier_embedded::http::{Handler, HttpConn, HttpService, Request, Response};
use terrier_embedded::{
    Agent, Clock, Config, Connect, ControlBuffers, DataBuffers, Either, Endpoint, LocalStream, Service, Timing,
};
use terrier_testkit::proxy::PausingProxy;
use terrier_testkit::upstream::{self, pattern};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on waiting for one agent event or one visitor step.
const STEP: Duration = Duration::from_secs(10);

// ---- The "firmware": network, clock, services --------------------------------

/// Connects with tokio; no TLS.
struct TokioNet;

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
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await
    }
}

/// The prototype's page: an LED state, shown and switched by a form.
struct LedPage {
    on: Cell<bool>,
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
struct TcpLocal(FromTokio<TcpStream>);

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
struct Device {
    page: HttpService<LedPage>,
    tcp: Vec<(&'static str, SocketAddr)>,
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
enum Note {
    Connected { subdomain: String, tcp: Vec<(String, u16)> },
    Disconnected(String),
    StreamEnded(Result<u64, String>),
}

/// Fast reconnects for tests.
fn fast_timing() -> Timing {
    Timing { backoff_base_ms: 50, backoff_max_ms: 300, handshake_timeout_ms: 3_000, ..Timing::default() }
}

fn config(server: SocketAddr, name: &'static str, tcp: &'static [&'static str]) -> Config<'static> {
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
fn spawn_agent(config: Config<'static>, device: Device, workers: usize) -> mpsc::UnboundedReceiver<Note> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::task::spawn_local(async move {
        let events = move |event: Event<'_>| {
            let note = match event {
                Event::Connected(w) => Note::Connected {
                    subdomain: w.subdomain.to_owned(),
                    tcp: w.tcp.iter().map(|p| (p.service.to_owned(), p.port)).collect(),
                },
                Event::Disconnected(e) => Note::Disconnected(format!("{e:?}")),
                Event::StreamEnded { result, .. } => {
                    Note::StreamEnded(result.map(|s| s.to_server + s.from_server).map_err(|e| format!("{e:?}")))
                }
                _ => return,
            };
            let _ = tx.send(note);
        };
        let agent = Agent::new(config, TokioNet, device, TokioClock(tokio::time::Instant::now()), events).unwrap();
        let mut control = vec![0u8; CONTROL_TOTAL];
        let mut data: Vec<Vec<u8>> = (0..workers).map(|_| vec![0u8; DATA_TOTAL]).collect();
        let control_loop = agent.run_control(ControlBuffers::split(&mut control).unwrap(), OsRng);
        let data_loops =
            futures_join_all(data.iter_mut().map(|buf| agent.run_data(DataBuffers::split(buf).unwrap(), OsRng)));
        tokio::select! {
            fatal = control_loop => panic!("agent stopped: {fatal:?}"),
            _ = data_loops => unreachable!("data workers never end"),
        }
    });
    rx
}

/// Polls every future to completion (the data workers never complete).
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) {
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
async fn next<T>(notes: &mut mpsc::UnboundedReceiver<Note>, what: &str, mut pick: impl FnMut(Note) -> Option<T>) -> T {
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

async fn connected(notes: &mut mpsc::UnboundedReceiver<Note>) -> (String, Vec<(String, u16)>) {
    next(notes, "connected", |n| match n {
        Note::Connected { subdomain, tcp } => Some((subdomain, tcp)),
        _ => None,
    })
    .await
}

fn led_device(tcp: Vec<(&'static str, SocketAddr)>) -> Device {
    Device { page: HttpService::new(LedPage { on: Cell::new(false) }), tcp }
}

async fn server() -> TestServer {
    TestServer::start(|c| c.tcp_host = Some("127.0.0.1".into())).await
}

// ---- Tests -----------------------------------------------------------------------

#[tokio::test]
async fn visitor_toggles_the_led_through_the_tunnel() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let mut notes = spawn_agent(config(server.addr, "led-board", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;
            let visitor = Visitor::new(server.addr);
            let host = device_host(&subdomain);

            let page = visitor.get(&host, "/").await;
            assert_eq!(page.status, 200, "{page:?}");
            assert!(page.body.contains("LED is off"), "{}", page.body);

            let page = visitor.post(&host, "/led", "state=on").await;
            assert_eq!(page.status, 200, "{page:?}");
            assert!(page.body.contains("LED is on"), "{}", page.body);

            let page = visitor.get(&host, "/").await;
            assert!(page.body.contains("LED is on"), "the state stuck: {}", page.body);

            let page = visitor.post(&host, "/led", "state=blue").await;
            assert_eq!(page.status, 400);
            let page = visitor.get(&host, "/nope").await;
            assert_eq!(page.status, 404);

            // Every stream ended cleanly: half-close both ways, then Close.
            for _ in 0..5 {
                let ended = next(&mut notes, "stream end", |n| match n {
                    Note::StreamEnded(r) => Some(r),
                    _ => None,
                })
                .await;
                assert!(ended.is_ok(), "stream ended with {ended:?}");
            }
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn concurrent_visitors_queue_for_one_data_socket() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let mut notes = spawn_agent(config(server.addr, "one-slot", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;
            let visitor = Visitor::new(server.addr);
            let host = device_host(&subdomain);
            // Three at once: one is served, the others wait in the open queue.
            let pages = tokio::join!(visitor.get(&host, "/"), visitor.get(&host, "/"), visitor.get(&host, "/"));
            for page in [pages.0, pages.1, pages.2] {
                assert_eq!(page.status, 200, "{page:?}");
            }
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn tcp_service_relays_large_transfers_and_half_close() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let echo = upstream::tcp_echo().await;
            let mut notes =
                spawn_agent(config(server.addr, "tcp-board", &["echo"]), led_device(vec![("echo", echo)]), 2);
            let (_, tcp) = connected(&mut notes).await;
            let port = tcp.iter().find(|(id, _)| id == "echo").expect("echo port").1;

            // 300 KB each way: the server's 32 KiB frames pass through the
            // agent's 2 KiB buffers piece by piece.
            const TOTAL: u64 = 300_000;
            let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let send = async {
                let bytes: Vec<u8> = (0..TOTAL).map(pattern).collect();
                writer.write_all(&bytes).await.unwrap();
                // Half-close: the echo service sees the end and ends its side.
                writer.shutdown().await.unwrap();
            };
            let receive = async {
                let mut back = Vec::new();
                reader.read_to_end(&mut back).await.unwrap();
                back
            };
            let ((), back) = timeout(STEP, async { tokio::join!(send, receive) }).await.expect("echo finished");
            assert_eq!(back.len() as u64, TOTAL);
            assert!(back.iter().enumerate().all(|(i, &b)| b == pattern(i as u64)), "bytes arrived intact, in order");
            let ended = next(&mut notes, "stream end", |n| match n {
                Note::StreamEnded(r) => Some(r),
                _ => None,
            })
            .await;
            assert_eq!(ended, Ok(2 * TOTAL));
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn a_refused_local_service_releases_the_visitor_at_once() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let server = server().await;
            let closed = upstream::closed_port().await;
            let mut notes =
                spawn_agent(config(server.addr, "refuser", &["down"]), led_device(vec![("down", closed)]), 1);
            let (_, tcp) = connected(&mut notes).await;
            let port = tcp[0].1;
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut buf = Vec::new();
            // The server ends the visitor's connection once `refused` arrives.
            let _ = timeout(STEP, stream.read_to_end(&mut buf)).await.expect("visitor released");
            assert!(buf.is_empty(), "no bytes from a refused service");
            let ended = next(&mut notes, "stream end", |n| match n {
                Note::StreamEnded(r) => Some(r),
                _ => None,
            })
            .await;
            assert_eq!(ended, Err("Refused".to_owned()));
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn reconnects_after_a_server_restart_and_keeps_its_subdomain() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let tweak = |c: &mut terrier_server::ServerConfig| c.reconnect_spread = Duration::from_millis(200);
            let server = TestServer::start_in(dir.path(), tweak).await;
            let addr = server.addr;
            let mut notes = spawn_agent(config(addr, "restart-me", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;
            let visitor = Visitor::new(addr);
            let host = device_host(&subdomain);
            assert!(visitor.post(&host, "/led", "state=on").await.body.contains("LED is on"));

            server.stop().await;
            let why = next(&mut notes, "disconnect", |n| match n {
                Note::Disconnected(why) => Some(why),
                _ => None,
            })
            .await;
            assert_eq!(why, "Closed(Some(4001))", "going away");

            let server = TestServer::start_on(addr, dir.path(), tweak).await;
            let (again, _) = connected(&mut notes).await;
            assert_eq!(again, subdomain, "same lease after the restart");
            let page = visitor.get(&host, "/").await;
            assert!(page.body.contains("LED is on"), "{page:?}");
            server.stop().await;
        })
        .await;
}

#[tokio::test]
async fn a_silent_control_socket_is_dropped_and_reopened() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            // Test servers ping every second: three silent seconds are death.
            let server = server().await;
            let proxy = PausingProxy::start(server.addr).await;
            let mut notes = spawn_agent(config(proxy.addr, "nat-victim", &[]), led_device(vec![]), 1);
            let (subdomain, _) = connected(&mut notes).await;

            proxy.pause();
            let why = next(&mut notes, "disconnect", |n| match n {
                Note::Disconnected(why) => Some(why),
                _ => None,
            })
            .await;
            assert_eq!(why, "HeartbeatTimeout");
            proxy.resume();

            let (again, _) = connected(&mut notes).await;
            assert_eq!(again, subdomain);
            let page = Visitor::new(server.addr).get(&device_host(&subdomain), "/").await;
            assert_eq!(page.status, 200, "{page:?}");
            server.stop().await;
        })
        .await;
}
