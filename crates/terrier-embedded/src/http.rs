//! A device web page answered in firmware, as the ESP8266 prototype did: the
//! firmware implements [`Handler`] (method, path, body in; status, content
//! type, body out) and [`HttpService`] turns it into the agent's `http`
//! [`Service`]. Each visitor connection carries one request and gets its
//! answer with `Connection: close`, so a data socket is free again as soon as
//! the answer is out — no idle keep-alive holding a microcontroller's only
//! data slot.
//!
//! Memory: a connection holds its request (`REQ` bytes, head and body) and
//! its response (`RESP` bytes, of which [`HEAD_ROOM`] for the status line
//! and headers) inline, in the data worker's future.

use core::convert::Infallible;
use core::fmt;

use embedded_io_async::{ErrorType, Read, Write};
use terrier_proto::handshake::HTTP_SERVICE;

use crate::service::{LocalStream, Service};

/// Bytes of a response buffer reserved for the status line and headers.
pub const HEAD_ROOM: usize = 192;

/// One request, borrowed from the connection's buffer.
#[derive(Debug)]
pub struct Request<'r> {
    /// `GET`, `POST`...
    pub method: &'r str,
    /// The request target as sent (`/led?on=1`).
    pub path: &'r str,
    /// The body (`Content-Length` bytes).
    pub body: &'r [u8],
}

/// The response being written by a [`Handler`]; `fmt::Write` appends to its
/// body. A body larger than the buffer becomes a `500`.
pub struct Response<'b> {
    status: u16,
    content_type: &'static str,
    body: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl Response<'_> {
    /// Sets the status code (default `200`).
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Sets the `Content-Type` (default `text/html; charset=utf-8`).
    pub fn set_content_type(&mut self, content_type: &'static str) {
        self.content_type = content_type;
    }

    /// Appends bytes to the body.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        match self.body.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflow = true,
        }
    }
}

impl fmt::Write for Response<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// The firmware's web page: answers one request.
pub trait Handler {
    /// Writes the answer to `req` into `resp`.
    fn handle(&self, req: &Request<'_>, resp: &mut Response<'_>);
}

/// Serves a [`Handler`] as the device's `http` service; other service ids
/// are refused.
pub struct HttpService<H, const REQ: usize = 1024, const RESP: usize = 2048> {
    handler: H,
}

impl<H: Handler, const REQ: usize, const RESP: usize> HttpService<H, REQ, RESP> {
    /// Wraps `handler`.
    pub const fn new(handler: H) -> Self {
        Self { handler }
    }

    /// Opens one connection to the handler (also usable from a firmware's
    /// own [`Service`] that has TCP services besides).
    pub fn connect(&self) -> HttpConn<'_, H, REQ, RESP> {
        HttpConn {
            handler: &self.handler,
            req: [0; REQ],
            filled: 0,
            resp: [0; RESP],
            pos: 0,
            end: 0,
            state: State::Reading,
        }
    }
}

/// `open` asked for a service this [`HttpService`] does not have.
#[derive(Debug)]
pub struct NoSuchService;

impl fmt::Display for NoSuchService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no such service on this device")
    }
}

impl<H: Handler, const REQ: usize, const RESP: usize> Service for HttpService<H, REQ, RESP> {
    type Conn<'a>
        = HttpConn<'a, H, REQ, RESP>
    where
        Self: 'a;
    type Error = NoSuchService;

    async fn open<'a>(&'a self, service: &str) -> Result<Self::Conn<'a>, NoSuchService> {
        if service == HTTP_SERVICE {
            Ok(self.connect())
        } else {
            Err(NoSuchService)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the request.
    Reading,
    /// Handing out `resp[pos..end]`.
    Answering,
    /// Answer sent: reads return end of stream.
    Done,
}

/// One visitor connection to a [`Handler`]: bytes written are the request,
/// bytes read are the answer, then end of stream.
pub struct HttpConn<'h, H, const REQ: usize, const RESP: usize> {
    handler: &'h H,
    req: [u8; REQ],
    filled: usize,
    resp: [u8; RESP],
    pos: usize,
    end: usize,
    state: State,
}

impl<H: Handler, const REQ: usize, const RESP: usize> HttpConn<'_, H, REQ, RESP> {
    /// Answers once the request is complete (or can never be).
    fn try_answer(&mut self, no_more_input: bool) {
        let mut headers = [httparse::EMPTY_HEADER; 24];
        let mut parsed = httparse::Request::new(&mut headers);
        let full = self.filled == REQ;
        match parsed.parse(&self.req[..self.filled]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let content_length = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| core::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let body_end = head_len.saturating_add(content_length);
                if body_end > REQ {
                    return self.answer_plain(413, "request too large");
                }
                if self.filled < body_end {
                    if no_more_input {
                        self.answer_plain(400, "request body ended early");
                    }
                    return;
                }
                let req = Request {
                    method: parsed.method.unwrap_or(""),
                    path: parsed.path.unwrap_or(""),
                    body: &self.req[head_len..body_end],
                };
                let mut resp = Response {
                    status: 200,
                    content_type: "text/html; charset=utf-8",
                    body: &mut self.resp[HEAD_ROOM..],
                    len: 0,
                    overflow: false,
                };
                self.handler.handle(&req, &mut resp);
                let (status, content_type, len, overflow) = (resp.status, resp.content_type, resp.len, resp.overflow);
                if overflow {
                    return self.answer_plain(500, "response too large for the device's buffer");
                }
                self.finish(status, content_type, len);
            }
            Ok(httparse::Status::Partial) if full => self.answer_plain(431, "request head too large"),
            Ok(httparse::Status::Partial) if no_more_input => self.answer_plain(400, "incomplete request"),
            Ok(httparse::Status::Partial) => {}
            Err(_) => self.answer_plain(400, "bad request"),
        }
    }

    fn answer_plain(&mut self, status: u16, text: &str) {
        let n = text.len().min(RESP - HEAD_ROOM);
        self.resp[HEAD_ROOM..HEAD_ROOM + n].copy_from_slice(&text.as_bytes()[..n]);
        self.finish(status, "text/plain; charset=utf-8", n);
    }

    /// Writes the head just before the body at `HEAD_ROOM` and starts answering.
    fn finish(&mut self, status: u16, content_type: &str, body_len: usize) {
        let mut head = [0u8; HEAD_ROOM];
        let mut w = Cursor { buf: &mut head, len: 0 };
        let ok = fmt::write(
            &mut w,
            format_args!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n\
                 Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                reason(status)
            ),
        );
        let written = w.len;
        let (head, body_len): (&[u8], usize) = match ok {
            Ok(()) => (&head[..written], body_len),
            // A content type too long for the head room: say so, drop the body.
            Err(_) => (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 0),
        };
        self.resp[HEAD_ROOM - head.len()..HEAD_ROOM].copy_from_slice(head);
        self.pos = HEAD_ROOM - head.len();
        self.end = HEAD_ROOM + body_len;
        self.state = State::Answering;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        303 => "See Other",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let dst = self.buf.get_mut(self.len..self.len + s.len()).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl<H, const REQ: usize, const RESP: usize> ErrorType for HttpConn<'_, H, REQ, RESP> {
    type Error = Infallible;
}

impl<H: Handler, const REQ: usize, const RESP: usize> Read for HttpConn<'_, H, REQ, RESP> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        match self.state {
            // Nothing to say until the request is complete; the relay wakes
            // on the next request bytes instead.
            State::Reading => core::future::pending().await,
            State::Answering => {
                let n = buf.len().min(self.end - self.pos);
                buf[..n].copy_from_slice(&self.resp[self.pos..self.pos + n]);
                self.pos += n;
                if self.pos == self.end {
                    self.state = State::Done;
                }
                Ok(n)
            }
            State::Done => Ok(0),
        }
    }
}

impl<H: Handler, const REQ: usize, const RESP: usize> Write for HttpConn<'_, H, REQ, RESP> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        if self.state == State::Reading {
            let n = buf.len().min(REQ - self.filled);
            self.req[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
            self.filled += n;
            self.try_answer(false);
        }
        // Bytes after the request (a pipelined second request) are dropped:
        // the answer says `Connection: close`.
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl<H: Handler, const REQ: usize, const RESP: usize> LocalStream for HttpConn<'_, H, REQ, RESP> {
    async fn close_write(&mut self) -> Result<(), Infallible> {
        if self.state == State::Reading {
            self.try_answer(true);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write as _;
    use std::string::String;
    use std::vec::Vec;

    struct Led(core::cell::Cell<bool>);

    impl Handler for Led {
        fn handle(&self, req: &Request<'_>, resp: &mut Response<'_>) {
            match (req.method, req.path) {
                ("POST", "/led") => {
                    self.0.set(req.body == b"on");
                    resp.set_status(303);
                }
                ("GET", "/") => {
                    let _ = write!(resp, "led={}", if self.0.get() { "on" } else { "off" });
                }
                ("GET", "/big") => {
                    for _ in 0..100 {
                        let _ = write!(resp, "0123456789");
                    }
                }
                ("GET", "/long-type") => resp.set_content_type(
                    "application/x-a-content-type-so-long-that-it-does-not-fit-the-head-room-of-the-response-buffer-at-all-x",
                ),
                _ => resp.set_status(404),
            }
        }
    }

    /// Feeds `request` in pieces of `step` bytes, then reads the answer whole.
    fn exchange<const REQ: usize, const RESP: usize>(
        service: &HttpService<Led, REQ, RESP>,
        request: &[u8],
        step: usize,
        close: bool,
    ) -> String {
        let mut conn = service.connect();
        let mut out = Vec::new();
        embassy_futures::block_on(async {
            for piece in request.chunks(step) {
                conn.write(piece).await.unwrap();
            }
            if close {
                conn.close_write().await.unwrap();
            }
            let mut buf = [0u8; 7];
            loop {
                match embassy_futures::select::select(conn.read(&mut buf), core::future::ready(())).await {
                    embassy_futures::select::Either::First(Ok(0)) => break,
                    embassy_futures::select::Either::First(Ok(n)) => out.extend_from_slice(&buf[..n]),
                    embassy_futures::select::Either::Second(()) => break,
                }
            }
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn answers_a_request_fed_byte_by_byte_and_closes() {
        let service: HttpService<Led> = HttpService::new(Led(core::cell::Cell::new(false)));
        let post = b"POST /led HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\non";
        let answer = exchange(&service, post, 1, false);
        assert!(answer.starts_with("HTTP/1.1 303 See Other\r\n"), "{answer}");
        assert!(answer.contains("\r\nConnection: close\r\n"));
        let answer = exchange(&service, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 3, false);
        assert!(
            answer.ends_with("\r\nContent-Length: 6\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nled=on"),
            "{answer}"
        );
    }

    #[test]
    fn limits_become_status_codes_not_panics() {
        let service: HttpService<Led, 256, 512> = HttpService::new(Led(core::cell::Cell::new(false)));
        let long_head = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 300]].concat();
        assert!(exchange(&service, &long_head, 50, false).starts_with("HTTP/1.1 431 "));
        let big_body = b"POST /led HTTP/1.1\r\nContent-Length: 9999\r\n\r\n";
        assert!(exchange(&service, big_body, 50, false).starts_with("HTTP/1.1 413 "));
        assert!(exchange(&service, b"GET /big HTTP/1.1\r\n\r\n", 50, false).starts_with("HTTP/1.1 500 "));
        let answer = exchange(&service, b"GET /long-type HTTP/1.1\r\n\r\n", 50, false);
        assert!(answer.starts_with("HTTP/1.1 500 ") && answer.ends_with("\r\n\r\n"), "{answer}");
        assert!(exchange(&service, b"\x16\x03\x01garbage\r\n\r\n", 50, false).starts_with("HTTP/1.1 400 "));
        // The visitor half-closed before the request was complete.
        assert!(exchange(&service, b"GET / HTT", 50, true).starts_with("HTTP/1.1 400 "));
        // Nothing to read before the request is complete (the read stays pending).
        assert_eq!(exchange(&service, b"GET / HTT", 50, false), "");
    }
}
