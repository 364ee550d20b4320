//! HTTP connections to a device's web service are kept by its session for
//! the next forwarded request: reused one after another, skipped once the
//! device's server closed them, capped by `limits.max_idle_http_per_device`
//! (a never-ending answer does not hold a place for good) and closed after
//! `limits.http_idle_timeout` unused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};

/// Bound on waiting for a connection count to settle.
const SETTLE: Duration = Duration::from_secs(5);

/// The device's web service: a hyper server that counts the connections it
/// accepted and saw end. `GET /slow` answers after 300 ms, `GET /events`
/// streams an event every 50 ms for as long as it is read (server-sent
/// events), anything else answers at once; with `lifetime`, the server drops each connection that long after
/// accepting it, answered or not (as servers time out idle keep-alive).
#[derive(Clone, Default)]
struct CountingService {
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

impl CountingService {
    async fn start(lifetime: Option<Duration>) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Self::default();
        let served = counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                served.accepted.fetch_add(1, Ordering::SeqCst);
                let ended = served.ended.clone();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(answer));
                    match lifetime {
                        Some(lifetime) => drop(tokio::time::timeout(lifetime, conn).await),
                        None => drop(conn.await),
                    }
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (counts, addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// Waits (within [`SETTLE`]) until `count` connections have ended.
    async fn wait_ended(&self, count: usize, what: &str) {
        eventually(SETTLE, what, || async { (self.ended() == count).then_some(()) }).await;
    }
}

/// One server-sent event of `/events`.
const EVENT: &[u8] = b"data: tick\n\n";

async fn answer(req: Request<Incoming>) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    match req.uri().path() {
        "/events" => {
            let events = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok(Frame::data(Bytes::from_static(EVENT))), ()))
            });
            Ok(Response::new(StreamBody::new(events).boxed()))
        }
        path => {
            if path == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
        }
    }
}

/// A device web service ([`CountingService`], with `lifetime`), a server
/// with `limits` applied and an agent serving the service over HTTP;
/// returns them with the device's `Host`.
async fn device(
    lifetime: Option<Duration>,
    limits: impl FnOnce(&mut terrier_server::config::Limits),
) -> (CountingService, TestServer, TestAgent, String) {
    init_logging();
    let (service, addr) = CountingService::start(lifetime).await;
    let server = TestServer::start(|c| limits(&mut c.limits)).await;
    let mut agent = TestAgent::start(server.url(), "kept", Some(addr), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    (service, server, agent, host)
}

/// GETs `path` from `count` visitors at once; every answer must be 200.
async fn concurrent_gets(server: SocketAddr, host: &str, path: &str, count: usize) {
    let gets = (0..count).map(|_| async move { Visitor::new(server).get(host, path).await });
    for page in futures_util::future::join_all(gets).await {
        assert_eq!(page.status, 200, "{}", page.body);
    }
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection_to_the_device() {
    let (service, server, _agent, host) = device(None, |_| {}).await;
    for _ in 0..10 {
        // A new visitor connection each time: the device connection is kept
        // by the session, not by the visitor.
        assert_eq!(Visitor::new(server.addr).get(&host, "/").await.status, 200);
    }
    assert_eq!(service.accepted(), 1, "ten requests, one connection to the device");
    server.stop().await;
}

#[tokio::test]
async fn a_kept_connection_the_devices_server_closed_is_not_used() {
    let (service, server, _agent, host) = device(Some(Duration::from_millis(500)), |_| {}).await;
    let visitor = Visitor::new(server.addr);
    for round in 1..=3 {
        assert_eq!(visitor.get(&host, "/").await.status, 200, "round {round}");
        service.wait_ended(round, "the device's server drops the connection").await;
    }
    assert_eq!(service.accepted(), 3);
    server.stop().await;
}

#[tokio::test]
async fn connections_past_max_idle_http_per_device_close_after_their_answer() {
    let (service, server, _agent, host) = device(None, |l| l.max_idle_http_per_device = 1).await;
    concurrent_gets(server.addr, &host, "/slow", 4).await;
    assert_eq!(service.accepted(), 4, "four requests at once need four connections");
    service.wait_ended(3, "all but the one kept connection close").await;
    concurrent_gets(server.addr, &host, "/slow", 4).await;
    assert_eq!(service.accepted(), 7, "the kept connection is reused, three are new");
    server.stop().await;
}

#[tokio::test]
async fn an_unused_connection_closes_after_http_idle_timeout() {
    // Checked on each heartbeat (1 s in tests).
    let (service, server, _agent, host) = device(None, |l| l.http_idle_timeout = Duration::from_secs(1)).await;
    let visitor = Visitor::new(server.addr);
    assert_eq!(visitor.get(&host, "/").await.status, 200);
    let answered = tokio::time::Instant::now();
    service.wait_ended(1, "the unused connection closes").await;
    assert!(answered.elapsed() >= Duration::from_millis(900), "closed after {:?}", answered.elapsed());
    assert_eq!(visitor.get(&host, "/").await.status, 200);
    assert_eq!(service.accepted(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_never_ending_answer_does_not_keep_later_requests_from_reusing_a_connection() {
    let (service, server, _agent, host) = device(None, |l| l.max_idle_http_per_device = 1).await;
    // A visitor follows server-sent events: that connection stays busy.
    let mut events = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut events, request.as_bytes()).await.unwrap();
    read_events(&mut events, 1).await;
    for round in 1..=5 {
        assert_eq!(Visitor::new(server.addr).get(&host, "/").await.status, 200, "round {round}");
    }
    assert_eq!(service.accepted(), 2, "the event stream's connection, and one kept for the five requests");
    // The event stream was let go of as a kept connection, not cut.
    read_events(&mut events, 3).await;
    assert_eq!(service.ended(), 0);
    server.stop().await;
}

/// Reads `count` more events from the visitor's event stream; fails when
/// the stream ends or they do not come within [`SETTLE`].
async fn read_events(stream: &mut tokio::net::TcpStream, count: usize) {
    let mut received = Vec::new();
    let events = |bytes: &[u8]| bytes.windows(EVENT.len()).filter(|w| *w == EVENT).count();
    tokio::time::timeout(SETTLE, async {
        while events(&received) < count {
            let mut buf = [0u8; 4096];
            let n = tokio::io::AsyncReadExt::read(stream, &mut buf).await.unwrap();
            assert!(n > 0, "the event stream ended after {} events", events(&received));
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {count} events within {SETTLE:?}", events(&received)));
}
