//! HTTP/1.1 passthrough: a plain visitor connection for a device is bound
//! to one connection to the device's web service, and bytes go through as
//! they are. Only the heads are read (httparse): each request's, to check
//! it is for the same device and to add `X-Forwarded-*`, and each answer's,
//! for the request log and to know where its body ends.
//!
//! Why: serving the visitor with hyper's server and forwarding each request
//! with hyper's client cost ~42k instructions per request in terrierd
//! (bench/RESULTS.md step 14), five times what a TCP port costs, and the
//! HTTP vhost carried 0.22-0.29× direct traffic against 0.37-0.39× through
//! a TCP port. Here a request costs ~20k: two head parses (request and
//! answer) and one head write, plus the relaying a TCP port does too.
//!
//! Anything unusual is left to the full path ([`super::http`]): the first
//! request decides whether the connection passes through at all (HTTP/1.1,
//! origin-form, an online device on this node that serves HTTP, access
//! rules without basic auth, no upgrade, no `Expect`, one clear body
//! framing); a later request that does not qualify (another host, say)
//! waits until every answer before it is out, then the connection goes on
//! in the full path with that request. So do the bodiless requests a
//! device left unanswered when it went away (they are held until
//! answered). A device connection that ends at the end of an answer is
//! kept on the session for the next visitor ([`KeptStreams`]).
//!
//! [`KeptStreams`]: crate::tunnel::upstream::KeptStreams

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use terrier_proto::handshake::{CONTROL_PATH, DATA_PATH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::framing::{Body, Framing};
use super::http::{classify, normalize_host, Peer, Target, Transport};
use crate::store::now_ms;
use crate::tunnel::session::Session;
use crate::tunnel::traffic::RequestRecord;
use crate::tunnel::upstream;
use crate::Node;

/// Most header lines a passed-through head may have (hyper's limit is 100;
/// a head with more goes the full path, which answers it).
const MAX_HEADERS: usize = 64;

/// Bytes read from either side at once.
const READ_CHUNK: usize = 16 * 1024;

/// How a passthrough ended.
pub enum Outcome<S> {
    /// The connection is done.
    Done,
    /// The device's connection ended after answering: the visitor's next
    /// request (`buffered` holds what was read of it, perhaps nothing) is
    /// routed afresh.
    Unbound {
        /// The visitor's connection.
        stream: S,
        /// Bytes read and not forwarded.
        buffered: BytesMut,
    },
    /// The full path must serve the connection from here: `buffered` are
    /// bytes read from it and not forwarded (a whole request head first).
    Declined {
        /// The visitor's connection.
        stream: S,
        /// Bytes read and not forwarded.
        buffered: BytesMut,
    },
}

/// What the passthrough needs from one request head.
#[derive(Debug)]
struct RequestHead {
    /// Length of the head in the buffer, blank line included.
    len: usize,
    /// Host, lowercased, without port.
    host: String,
    /// The method.
    method: http::Method,
    /// The path without the query (for the request log).
    path: String,
    /// How its body ends.
    framing: Framing,
    /// The head as it goes to the device.
    rewritten: Vec<u8>,
    /// It says `Connection: close`: the visitor's last request.
    closes: bool,
}

/// A request sent on, waiting for its answer.
struct InFlight {
    /// Its log record, status and size still to fill in.
    record: RequestRecord,
    /// When it was sent, for the duration.
    started: Instant,
    /// The request as the visitor sent it, when it has no body: if the
    /// device goes away before answering, the full path gets it again.
    original: Option<bytes::Bytes>,
}

/// Serves `visitor` by passthrough if its first request qualifies;
/// `buffered` holds the bytes read from it so far.
pub async fn serve<S>(node: &Arc<Node>, peer: &Peer, mut visitor: S, mut buffered: BytesMut) -> Outcome<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = node.live.limits();
    let idle = buffered.is_empty();
    let read_head = read_request_head(&mut visitor, &mut buffered, limits.header_read_timeout, limits.max_header_bytes);
    // A visitor unbound from its device with nothing sent yet is idle: the
    // server's shutdown closes it, as hyper does with an idle keep-alive.
    let read = if idle {
        tokio::select! {
            read = read_head => read,
            () = node.shutdown.cancelled() => HeadRead::Closed,
        }
    } else {
        read_head.await
    };
    match read {
        HeadRead::Complete => {}
        HeadRead::Closed => return Outcome::Done,
        HeadRead::Unusual => return Outcome::Declined { stream: visitor, buffered },
    }
    let Some(first) = parse_request(&buffered, peer, node) else {
        return Outcome::Declined { stream: visitor, buffered };
    };
    let Some(session) = qualifying_session(node, peer, &first) else {
        return Outcome::Declined { stream: visitor, buffered };
    };
    let device = match session.passthrough_streams.take() {
        Some(kept) => kept,
        None => match upstream::open_device_stream(&session, &node.metrics).await {
            Ok(opened) => opened,
            // The full path tries again and shows the page that says why.
            Err(_) => return Outcome::Declined { stream: visitor, buffered },
        },
    };
    let (visitor_rd, visitor_wr) = tokio::io::split(visitor);
    let (device_rd, device_wr) = tokio::io::split(device);
    let in_flight = Mutex::new(VecDeque::new());
    let (requests_done, device_gone) = (CancellationToken::new(), CancellationToken::new());
    let up = Upward { node, peer, session: &session, in_flight: &in_flight };
    let down = Downward { node, session: &session, in_flight: &in_flight };
    let upward = up.run(visitor_rd, device_wr, buffered, first, &requests_done, &device_gone);
    let downward = down.run(device_rd, visitor_wr, &requests_done);
    tokio::pin!(upward, downward);
    // The answers decide the end: after the visitor's last request they
    // still come back; once the device stops answering, the visitor's
    // requests left (if any) are routed afresh (below).
    let (up_end, down_end) = tokio::select! {
        up_end = &mut upward => {
            requests_done.cancel();
            (up_end, downward.await)
        }
        down_end = &mut downward => {
            device_gone.cancel();
            (upward.await, down_end)
        }
    };
    let UpEnd { rest, visitor: visitor_rd, device: device_wr, clean } = up_end;
    let DownEnd { visitor: visitor_wr, device: device_rd, state } = down_end;
    let name = session.name.as_str();
    let unanswered = match state {
        DownState::Idle => Some(Vec::new()),
        // Held requests only: one with a body cannot be sent again.
        DownState::DeviceGone { .. } => {
            in_flight.lock().expect("in-flight lock").drain(..).map(|r| r.original).collect()
        }
        DownState::Unfinished => None,
    };
    if state == DownState::Idle && clean {
        let max = node.live.limits().max_idle_http_per_device;
        session.passthrough_streams.give_back(device_rd.unsplit(device_wr), max);
    }
    let Some(mut visitor_wr) = visitor_wr else { return Outcome::Done };
    // What the visitor sent and nobody answered: the requests the device
    // left (in order), then what was read after them.
    let Some((unanswered, rest)) = unanswered.zip(rest) else {
        let _ = visitor_wr.shutdown().await;
        return Outcome::Done;
    };
    let mut buffered = BytesMut::from(unanswered.concat().as_slice());
    buffered.extend_from_slice(&rest);
    let stream = visitor_rd.unsplit(visitor_wr);
    match state {
        // The device answered on this connection and then ended it: the
        // passthrough goes on with a new one. (If it never answered, the
        // full path tries once more and shows the page that says why.)
        DownState::DeviceGone { answered } if answered > 0 => {
            tracing::debug!(device = name, remote = %peer.remote, answered, "passthrough: device connection ended, visitor unbound");
            Outcome::Unbound { stream, buffered }
        }
        _ => {
            tracing::debug!(device = name, remote = %peer.remote, "passthrough hands the connection to the full path");
            Outcome::Declined { stream, buffered }
        }
    }
}

/// How reading a request head went.
enum HeadRead {
    /// A whole head is in the buffer.
    Complete,
    /// The visitor closed, went quiet past the timeout, or failed.
    Closed,
    /// Too large, or not a request head: the full path answers it.
    Unusual,
}

/// Reads until `buf` holds a whole request head, within `timeout` and
/// `max_bytes`.
async fn read_request_head<R>(reader: &mut R, buf: &mut BytesMut, timeout: Duration, max_bytes: usize) -> HeadRead
where
    R: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // The blank line is enough to know the head is in: the parse that
        // follows ([`parse_request`]) tells whether it is a valid one.
        if ends_a_head(buf) {
            return HeadRead::Complete;
        }
        // Not a request head at all: the full path answers 400 at once.
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if buf.len() >= max_bytes || httparse::Request::new(&mut headers).parse(buf).is_err() {
            return HeadRead::Unusual;
        }
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline, reader.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Bytes of a head and then the end: the full path answers 400.
            Ok(Ok(_)) if !buf.is_empty() => return HeadRead::Unusual,
            _ => return HeadRead::Closed,
        }
    }
}

/// Whether `buf` holds the blank line that ends a head (CRLF, or LF as
/// httparse also accepts).
fn ends_a_head(buf: &[u8]) -> bool {
    buf.windows(2).enumerate().any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && buf.get(i + 2) == Some(&b'\n')))
}

/// Reads the request head at the start of `buf`; `None` when it does not
/// qualify for passthrough whatever its host.
fn parse_request(buf: &[u8], peer: &Peer, node: &Node) -> Option<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(buf).ok()? else { return None };
    let (method, target) = (req.method?, req.path?);
    // HTTP/1.0 has other keep-alive rules; CONNECT and absolute-form
    // targets are proxy requests.
    if req.version != Some(1) || method == "CONNECT" || !target.starts_with('/') {
        return None;
    }
    let (mut host, mut length, mut chunked) = (None, None, false);
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            // Two hosts: the full path refuses it.
            host.replace(header.value).is_none().then_some(())?;
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok()?;
            (value.bytes().all(|b| b.is_ascii_digit()) && length.is_none()).then_some(())?;
            length = Some(value.parse::<u64>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a lone `chunked` is passed through as it is.
            (std::str::from_utf8(header.value).ok()?.trim().eq_ignore_ascii_case("chunked") && !chunked)
                .then_some(())?;
            chunked = true;
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(header.value);
        } else if is_left_to_the_full_path(name) {
            return None;
        }
    }
    let framing = match (length, chunked) {
        (Some(_), true) => return None,
        (Some(n), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
        (None, false) => Framing::Empty,
    };
    let host = normalize_host(std::str::from_utf8(host?).ok()?)?;
    let scheme = match peer.transport {
        Transport::Tls => "https",
        Transport::Plain => node.config.public_scheme.as_str(),
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path).to_owned();
    let method = http::Method::from_bytes(method.as_bytes()).ok()?;
    let closes = says_close(req.headers);
    let rewritten = rewrite(&req, &forwarded_for, peer.ip_header.as_bytes(), scheme, &host, closes);
    Some(RequestHead { len, host, method, path, framing, rewritten, closes })
}

/// Headers that make a request the full path's: upgrades (WebSocket) and
/// `Expect: 100-continue` need its handling, and a request forwarded by
/// another node of the cluster is served as such.
fn is_left_to_the_full_path(name: &str) -> bool {
    ["upgrade", "expect", crate::cluster::forward::HOP_HEADER.as_str()].iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The request head as the device gets it: the request line and headers as
/// the visitor sent them, minus the `Proxy-*` ones (meant for a proxy on
/// the way, not for the device) and the visitor's `X-Forwarded-Proto` and
/// `-Host`, plus `X-Forwarded-For` (the visitor's address appended),
/// `X-Forwarded-Proto` and `X-Forwarded-Host`. `Connection`, `Keep-Alive`
/// and `TE` stay, as the visitor's connection and the device's are one
/// here; except `Connection: close` (`closes`), which ends the visitor's
/// connection only (after this answer), so the device's can serve the next
/// visitor.
fn rewrite(
    req: &httparse::Request<'_, '_>,
    forwarded_for: &[&[u8]],
    ip: &[u8],
    scheme: &str,
    host: &str,
    closes: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let dropped =
        ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "proxy-authorization", "proxy-connection"];
    for header in req.headers.iter() {
        let name = header.name;
        if dropped.iter().any(|d| name.eq_ignore_ascii_case(d)) || closes && name.eq_ignore_ascii_case("connection") {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for prior in forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(ip);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-host: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// The online session a request is for, if the passthrough may serve it:
/// a device subdomain held on this node, serving HTTP, whose access rules
/// let the visitor in without credentials; and no redirect to HTTPS.
fn qualifying_session(node: &Node, peer: &Peer, head: &RequestHead) -> Option<Arc<Session>> {
    if peer.transport == Transport::Plain && node.config.tls.redirect_http {
        return None;
    }
    if matches!(head.path.as_str(), CONTROL_PATH | DATA_PATH) {
        return None;
    }
    let Target::Device(sub) = classify(&head.host, &node.config.domain) else { return None };
    let session = node.sessions.by_subdomain(sub)?;
    let allowed = node.access.check_http(&session.name, peer.remote.ip(), &http::HeaderMap::new()).is_ok();
    (session.http && allowed).then_some(session)
}

/// The visitor → device direction.
struct Upward<'a> {
    node: &'a Node,
    peer: &'a Peer,
    session: &'a Session,
    in_flight: &'a Mutex<VecDeque<InFlight>>,
}

/// How the visitor → device direction ended.
struct UpEnd<R, W> {
    /// Bytes read from the visitor and not forwarded, when the full path
    /// may go on with them (a request for it, or nothing yet).
    rest: Option<BytesMut>,
    /// The visitor's reading half.
    visitor: R,
    /// The device's writing half.
    device: W,
    /// Every request went whole to the device.
    clean: bool,
}

/// Why forwarding one request stopped.
#[derive(Debug, PartialEq, Eq)]
enum Cut {
    /// The device's side failed.
    Device,
    /// The visitor's side ended or failed in the middle of a body, or the
    /// body was not what its head said.
    Visitor,
}

impl Upward<'_> {
    /// Forwards requests, starting with `head` (at the start of `buf`),
    /// until the visitor is done, a request is the full path's, or the
    /// device is gone.
    async fn run<R, W>(
        self,
        mut visitor: R,
        mut device: W,
        mut buf: BytesMut,
        mut head: RequestHead,
        requests_done: &CancellationToken,
        device_gone: &CancellationToken,
    ) -> UpEnd<R, W>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Waited on by every request: made once (a new one per wait
        // registers and drops a waiter, ~1.5k instructions per request).
        let (gone, stopping) = (device_gone.cancelled(), self.node.shutdown.cancelled());
        tokio::pin!(gone, stopping);
        let (rest, clean) = loop {
            let last = head.closes;
            match self.forward(&mut visitor, &mut device, &mut buf, head, gone.as_mut()).await {
                // The visitor's `Connection: close` ends its connection
                // after this answer; the device's stays open for the next.
                Ok(()) if last => break (None, true),
                Ok(()) => {}
                // What was read past the request goes to the full path
                // after it, if it was held (see `serve`).
                Err(Cut::Device) => break (Some(buf), false),
                Err(Cut::Visitor) => break (None, false),
            }
            head = match self.next_head(&mut visitor, &mut buf, gone.as_mut(), stopping.as_mut()).await {
                Next::Same(next) => next,
                Next::Other => break (Some(buf), true),
                Next::End => break (None, true),
            };
        };
        requests_done.cancel();
        UpEnd { rest, visitor, device, clean }
    }

    /// Sends one request: its head as rewritten, then its body as it comes.
    async fn forward<R, W>(
        &self,
        visitor: &mut R,
        device: &mut W,
        buf: &mut BytesMut,
        head: RequestHead,
        mut device_gone: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Result<(), Cut>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // A bodiless request is kept whole until answered: if the device
        // goes away first, the full path gets it again.
        let original = (head.framing == Framing::Empty).then(|| buf.split_to(head.len).freeze());
        if original.is_none() {
            buf.advance(head.len);
        }
        self.in_flight.lock().expect("in-flight lock").push_back(InFlight {
            record: RequestRecord {
                at_ms: now_ms(),
                method: head.method.clone(),
                path: head.path,
                status: 0,
                duration_ms: 0,
                size: None,
            },
            started: Instant::now(),
            original,
        });
        device.write_all(&head.rewritten).await.map_err(|_| Cut::Device)?;
        let mut body = Body::new(head.framing);
        while !body.is_done() {
            let used = body.advance(buf).map_err(|_| Cut::Visitor)?;
            if used > 0 {
                device.write_all(&buf[..used]).await.map_err(|_| Cut::Device)?;
                buf.advance(used);
                continue;
            }
            buf.reserve(READ_CHUNK);
            // A body for a device that is gone is not read to its end.
            let read = tokio::select! {
                read = visitor.read_buf(buf) => read,
                () = device_gone.as_mut() => return Err(Cut::Visitor),
            };
            if !matches!(read, Ok(n) if n > 0) {
                return Err(Cut::Visitor);
            }
        }
        device.flush().await.map_err(|_| Cut::Device)
    }

    /// Waits for the visitor's next request head: up to
    /// `limits.http_idle_timeout` for it to start, `header_read_timeout`
    /// for the rest.
    async fn next_head<R: AsyncRead + Unpin>(
        &self,
        visitor: &mut R,
        buf: &mut BytesMut,
        device_gone: Pin<&mut WaitForCancellationFuture<'_>>,
        stopping: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Next {
        let limits = self.node.live.limits();
        if buf.is_empty() {
            buf.reserve(READ_CHUNK);
            let started = tokio::select! {
                read = tokio::time::timeout(limits.http_idle_timeout, visitor.read_buf(buf)) => read,
                () = stopping => return Next::End,
                // The full path takes the connection: its next request
                // gets an answer there.
                () = device_gone => return Next::Other,
            };
            if !matches!(started, Ok(Ok(n)) if n > 0) {
                return Next::End;
            }
        }
        match read_request_head(visitor, buf, limits.header_read_timeout, limits.max_header_bytes).await {
            HeadRead::Complete => {}
            HeadRead::Closed => return Next::End,
            HeadRead::Unusual => return Next::Other,
        }
        match parse_request(buf, self.peer, self.node) {
            Some(head) if self.same_device(&head) => Next::Same(head),
            _ => Next::Other,
        }
    }

    /// Whether `head` may go on this connection: same device, still
    /// qualifying (the access rules may have been reloaded).
    fn same_device(&self, head: &RequestHead) -> bool {
        qualifying_session(self.node, self.peer, head).is_some_and(|s| s.id == self.session.id)
    }
}

/// The visitor's next request.
enum Next {
    /// For this connection's device.
    Same(RequestHead),
    /// For the full path (another host, unusual, or the device is gone).
    Other,
    /// None: the visitor closed, went quiet, or the server stops.
    End,
}

/// The device → visitor direction.
struct Downward<'a> {
    node: &'a Node,
    session: &'a Session,
    in_flight: &'a Mutex<VecDeque<InFlight>>,
}

/// How the device → visitor direction ended.
struct DownEnd<R, W> {
    /// The visitor's writing half, unless writing to it failed.
    visitor: Option<W>,
    /// The device's reading half.
    device: R,
    /// Where it stopped.
    state: DownState,
}

/// Where the device → visitor direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownState {
    /// Every request answered, at the end of an answer.
    Idle,
    /// The device closed or broke (or said it would close: `Connection:
    /// close`, HTTP/1.0) with no byte of an answer in progress passed on,
    /// after `answered` answers: the visitor's connection is still sound.
    DeviceGone { answered: u64 },
    /// In the middle of an answer, or the visitor is gone.
    Unfinished,
}

impl Downward<'_> {
    /// Passes answers back until the visitor's requests are done and
    /// answered, the device stops, or the visitor is gone.
    async fn run<R, W>(self, mut device: R, mut visitor: W, requests_done: &CancellationToken) -> DownEnd<R, W>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut answered = 0u64;
        let done = requests_done.cancelled();
        tokio::pin!(done);
        let state = loop {
            if buf.is_empty() && self.in_flight.lock().expect("in-flight lock").is_empty() {
                // Nothing to answer: wait for the device's next bytes (a
                // read, safe to drop) or for the visitor to be done. Every
                // request is in flight before `requests_done` fires.
                buf.reserve(READ_CHUNK);
                tokio::select! {
                    () = done.as_mut() => {
                        if self.in_flight.lock().expect("in-flight lock").is_empty() {
                            break DownState::Idle;
                        }
                    }
                    read = device.read_buf(&mut buf) => {
                        if !matches!(read, Ok(n) if n > 0) {
                            break DownState::DeviceGone { answered };
                        }
                    }
                }
                continue;
            }
            match self.answer(&mut device, &mut visitor, &mut buf).await {
                Answer::Forwarded { closes } => {
                    answered += 1;
                    // No more requests for this connection: the ones that
                    // came meanwhile go elsewhere with the next.
                    if closes {
                        break DownState::DeviceGone { answered };
                    }
                }
                Answer::Continues => {}
                Answer::Ended => break DownState::DeviceGone { answered },
                Answer::Broken { why, started } => {
                    tracing::debug!(device = %self.session.name, answered, why,
                        "passthrough: the device's side ended");
                    break if started { DownState::Unfinished } else { DownState::DeviceGone { answered } };
                }
                Answer::VisitorGone => return DownEnd { visitor: None, device, state: DownState::Unfinished },
            }
        };
        DownEnd { visitor: Some(visitor), device, state }
    }

    /// Reads one answer head from the device and passes the answer on.
    async fn answer<R, W>(&self, device: &mut R, visitor: &mut W, buf: &mut BytesMut) -> Answer
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let max = self.node.live.limits().max_header_bytes;
        let (len, status, framing, closes) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let Some(framing) = self.answer_framing(&response) else {
                        return Answer::Broken { why: "answer with an unclear body length", started: false };
                    };
                    let closes = response.version == Some(0) || says_close(response.headers);
                    break (len, response.code.unwrap_or(0), framing, closes);
                }
                Ok(httparse::Status::Partial) if buf.len() < max => {}
                _ => return Answer::Broken { why: "not an HTTP/1 answer head", started: false },
            }
            buf.reserve(READ_CHUNK);
            match device.read_buf(buf).await {
                Ok(n) if n > 0 => {}
                Ok(_) if buf.is_empty() => return Answer::Ended,
                _ => return Answer::Broken { why: "closed before a whole answer head", started: false },
            }
        };
        let informational = is_informational(status);
        if !informational {
            self.log(status, framing);
        }
        let mut body = Body::new(framing);
        let mut at = len;
        loop {
            match body.advance(&buf[at..]) {
                Ok(used) => at += used,
                Err(_) => return Answer::Broken { why: "invalid chunked answer", started: true },
            }
            if visitor.write_all(&buf[..at]).await.is_err() || visitor.flush().await.is_err() {
                return Answer::VisitorGone;
            }
            buf.advance(at);
            at = 0;
            if body.is_done() {
                return if informational { Answer::Continues } else { Answer::Forwarded { closes } };
            }
            buf.reserve(READ_CHUNK);
            match device.read_buf(buf).await {
                Ok(n) if n > 0 => {}
                Ok(_) if body.until_close() => return Answer::Forwarded { closes: true },
                _ => return Answer::Broken { why: "closed in the middle of an answer", started: true },
            }
        }
    }

    /// How the answer's body ends (RFC 9112 §6.3); `None` for conflicting
    /// lengths.
    fn answer_framing(&self, response: &httparse::Response<'_, '_>) -> Option<Framing> {
        let status = response.code.unwrap_or(0);
        let to_head = self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .front()
            .is_some_and(|r| r.record.method == http::Method::HEAD);
        if to_head || is_informational(status) || status == 204 || status == 304 {
            return Some(Framing::Empty);
        }
        let (mut length, mut chunked) = (None, None);
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = header.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if header.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(header.value).ok()?.trim().parse::<u64>().ok()?;
                if length.is_some_and(|l| l != value) {
                    return None;
                }
                length = Some(value);
            }
        }
        Some(match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        })
    }

    /// Logs the oldest request in flight with the answer's `status`.
    fn log(&self, status: u16, framing: Framing) {
        let Some(request) = self.in_flight.lock().expect("in-flight lock").pop_front() else { return };
        let elapsed = request.started.elapsed();
        self.node.metrics.visitor_request(elapsed);
        let size = match framing {
            Framing::Length(n) => Some(n),
            Framing::Empty => Some(0),
            Framing::Chunked | Framing::UntilClose => None,
        };
        tracing::debug!(device = %self.session.name, method = %request.record.method, path = %request.record.path,
            status, ms = elapsed.as_millis() as u64, "passed through");
        let record = RequestRecord { status, duration_ms: elapsed.as_millis() as u64, size, ..request.record };
        self.session.traffic.log_request(record, self.node.config.admin.request_log);
    }
}

/// A 1xx answer other than `101`: the final answer follows it.
fn is_informational(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// Whether `Connection` among `headers` says `close`.
fn says_close(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value.split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// How passing one answer on went.
enum Answer {
    /// A final answer went to the visitor; `closes` when the device will
    /// close the connection after it.
    Forwarded { closes: bool },
    /// An informational (1xx) answer went; the final one follows.
    Continues,
    /// The device closed at the end of an answer (or before any).
    Ended,
    /// The visitor cannot be written to any more.
    VisitorGone,
    /// The device's side broke or spoke something else than HTTP/1;
    /// `started` when bytes of the answer already went to the visitor.
    Broken { why: &'static str, started: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_gets_the_head_with_x_forwarded_and_without_proxy_headers() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: dev.localhost\r\nX-Forwarded-For: 10.0.0.1\r\n\
            Proxy-Authorization: secret\r\nX-Forwarded-Proto: gopher\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw).unwrap();
        let head = rewrite(&req, &[b"10.0.0.1"], b"192.0.2.7", "https", "dev.localhost", says_close(req.headers));
        let text = String::from_utf8(head).unwrap();
        assert_eq!(
            text,
            "POST /a?b=1 HTTP/1.1\r\nHost: dev.localhost\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\
             x-forwarded-for: 10.0.0.1, 192.0.2.7\r\nx-forwarded-proto: https\r\nx-forwarded-host: dev.localhost\r\n\r\n"
        );
    }
}
