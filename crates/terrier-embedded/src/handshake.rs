//! The HTTP/1.1 side of a WebSocket handshake: writing the upgrade request
//! for `/v1/control` or `/v1/data` (query parameters, `Authorization`,
//! sub-protocol) and reading the response head (`101`, a `307` redirect, or a
//! refusal with its status). Pure functions over byte slices; `ws.rs` does
//! the I/O.

use core::fmt::{self, Write as _};

use heapless::String;
use terrier_proto::handshake::{
    CONTROL_PATH, DATA_PATH, PARAM_AGENT, PARAM_HOPS, PARAM_HTTP, PARAM_NAME, PARAM_PLATFORM, PARAM_POOL,
    PARAM_SESSION, PARAM_STREAM, PARAM_TCP,
};
use terrier_proto::limits::SUBPROTOCOL;

use crate::config::Config;
use crate::connect::Endpoint;

/// Length of a `Sec-WebSocket-Key`: 16 random bytes in base64.
pub(crate) const KEY_LEN: usize = 24;

/// Which socket a handshake opens.
pub(crate) enum Target<'a> {
    /// The control socket, announcing the device; `hops` redirects so far.
    Control { config: &'a Config<'a>, hops: u8 },
    /// The data socket of one stream.
    Data { session: &'a str, stream: &'a str },
    /// An idle pooled data socket, waiting for `assign`.
    Pool { session: &'a str },
}

/// What the response head says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head<'a> {
    /// `101`: frames follow the head.
    Upgrade,
    /// `307` with the `Location` of another node.
    Redirect(&'a str),
    /// Any other status; the body (its reason) has `content_length` bytes.
    Rejected { status: u16, content_length: usize },
}

/// Writes into a byte slice; fails (instead of panicking) when it is full.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).filter(|&e| e <= self.buf.len()).ok_or(fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes the upgrade request for `target` into `buf`; returns its length,
/// or `None` when it does not fit.
pub(crate) fn write_request(
    buf: &mut [u8],
    target: &Target<'_>,
    server: &Endpoint,
    token: Option<&str>,
    key: &str,
) -> Option<usize> {
    let mut w = SliceWriter { buf, len: 0 };
    write_head(&mut w, target, server, token, key).ok()?;
    Some(w.len)
}

fn write_head(
    w: &mut SliceWriter<'_>,
    target: &Target<'_>,
    server: &Endpoint,
    token: Option<&str>,
    key: &str,
) -> fmt::Result {
    match target {
        Target::Control { config, hops } => {
            write!(w, "GET {CONTROL_PATH}?{PARAM_NAME}={}", config.name)?;
            if config.http {
                write!(w, "&{PARAM_HTTP}=1")?;
            }
            for (i, id) in config.tcp.iter().enumerate() {
                match i {
                    0 => write!(w, "&{PARAM_TCP}={id}")?,
                    _ => write!(w, ",{id}")?,
                }
            }
            // The version has a `/`, the one character here that needs encoding.
            let (software, version) = crate::AGENT_VERSION.split_once('/').unwrap_or((crate::AGENT_VERSION, ""));
            write!(w, "&{PARAM_AGENT}={software}%2F{version}")?;
            if !config.platform.is_empty() {
                write!(w, "&{PARAM_PLATFORM}={}", config.platform)?;
            }
            if *hops > 0 {
                write!(w, "&{PARAM_HOPS}={hops}")?;
            }
        }
        Target::Data { session, stream } => {
            write!(w, "GET {DATA_PATH}?{PARAM_SESSION}={session}&{PARAM_STREAM}={stream}")?;
        }
        Target::Pool { session } => write!(w, "GET {DATA_PATH}?{PARAM_SESSION}={session}&{PARAM_POOL}=1")?,
    }
    write!(
        w,
        " HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n",
        server.host_header()
    )?;
    if let Some(token) = token {
        write!(w, "Authorization: Bearer {token}\r\n")?;
    }
    w.write_str("\r\n")
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is
/// incomplete, `Err(())` when it is not HTTP, else its length and meaning.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head<'_>)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = response.code.ok_or(())?;
    let header = |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let head = match status {
        101 => Head::Upgrade,
        307 => Head::Redirect(core::str::from_utf8(header("location").ok_or(())?).map_err(|_| ())?),
        _ => {
            let content_length = header("content-length")
                .and_then(|v| core::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Head::Rejected { status, content_length }
        }
    };
    Ok(Some((len, head)))
}

/// The first line of a refusal body, trimmed and cut to fit.
pub(crate) fn reason_line<const N: usize>(body: &[u8]) -> String<N> {
    let text = match core::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => core::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or(""),
    };
    let line = text.lines().next().unwrap_or("").trim();
    let mut out = String::new();
    for c in line.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// A fresh `Sec-WebSocket-Key` from 16 random bytes.
pub(crate) fn new_key(rng: &mut impl rand_core::RngCore) -> String<KEY_LEN> {
    let mut raw = [0u8; 16];
    rng.fill_bytes(&mut raw);
    base64(&raw)
}

fn base64<const N: usize>(bytes: &[u8]) -> String<N> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            let c = if i <= chunk.len() { ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' };
            let _ = out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn config() -> Config<'static> {
        let mut c = Config::new(Endpoint::new("localhost", 8080, false).unwrap(), "led-board");
        c.http = true;
        c.tcp = &["22", "mqtt"];
        c.platform = "rp2040";
        c
    }

    #[test]
    fn control_request_carries_params_subprotocol_and_token() {
        let config = config();
        let mut buf = [0u8; 512];
        let target = Target::Control { config: &config, hops: 2 };
        let n = write_request(&mut buf, &target, &config.server, Some("s3cret"), "dGhlIHNhbXBsZSBub25jZQ==").unwrap();
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        let expected_line = std::format!(
            "GET /v1/control?name=led-board&http=1&tcp=22,mqtt&agent=terrier-embedded%2F{}&platform=rp2040&hops=2 HTTP/1.1\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.starts_with(&expected_line), "{text}");
        assert!(text.contains("\r\nHost: localhost:8080\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: terrier.v1\r\n"));
        assert!(text.contains("\r\nAuthorization: Bearer s3cret\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn data_request_without_token_has_no_authorization() {
        let config = config();
        let mut buf = [0u8; 512];
        let target = Target::Data { session: "aa", stream: "bb" };
        let n = write_request(&mut buf, &target, &config.server, None, "k").unwrap();
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("GET /v1/data?session=aa&stream=bb HTTP/1.1\r\n"));
        assert!(!text.contains("Authorization"));
        let n = write_request(&mut buf, &Target::Pool { session: "aa" }, &config.server, Some("t"), "k").unwrap();
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("GET /v1/data?session=aa&pool=1 HTTP/1.1\r\n"));
        assert!(text.contains("\r\nAuthorization: Bearer t\r\n"));
    }

    #[test]
    fn a_request_that_does_not_fit_is_none_not_a_panic() {
        let config = config();
        let target = Target::Control { config: &config, hops: 0 };
        let mut buf = [0u8; 512];
        let n = write_request(&mut buf, &target, &config.server, None, "k").unwrap();
        for len in 0..n {
            assert_eq!(write_request(&mut buf[..len], &target, &config.server, None, "k"), None);
        }
    }

    #[test]
    fn response_heads_are_read_byte_by_byte() {
        let resp = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:9000/\r\ncontent-length: 0\r\n\r\n";
        for cut in 0..resp.len() {
            assert_eq!(parse_head(&resp[..cut]), Ok(None));
        }
        assert_eq!(parse_head(resp), Ok(Some((resp.len(), Head::Redirect("http://127.0.0.2:9000/")))));
        let resp = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\nbad name\r\nxx";
        assert_eq!(parse_head(resp).unwrap().unwrap().1, Head::Rejected { status: 400, content_length: 12 });
        assert_eq!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(()));
        assert_eq!(reason_line::<4>(b"bad name\r\n").as_str(), "bad ");
        assert_eq!(reason_line::<64>(b"  bad name \r\nmore").as_str(), "bad name");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        assert_eq!(base64::<8>(b"").as_str(), "");
        assert_eq!(base64::<8>(b"f").as_str(), "Zg==");
        assert_eq!(base64::<8>(b"fo").as_str(), "Zm8=");
        assert_eq!(base64::<8>(b"foo").as_str(), "Zm9v");
        assert_eq!(base64::<12>(b"foobar").as_str(), "Zm9vYmFy");
        assert_eq!(base64::<24>(b"the sample nonce").as_str(), "dGhlIHNhbXBsZSBub25jZQ==");
    }
}
