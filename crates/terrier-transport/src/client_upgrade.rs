//! The client side of a WebSocket handshake (RFC 6455 §4.1), shared by the
//! agent and terrierd's demo device: write the request head, read the
//! answer head with `httparse`, check the `101`. Written out rather than
//! through tokio-tungstenite because tungstenite keeps the bytes that
//! follow the `101` (a pooled socket's `assign`, a visitor's first bytes)
//! in its own buffer with no way to take them out; here they stay in front
//! of the connection ([`Prefixed`]).

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::prefixed::Prefixed;

/// Largest answer head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in an answer.
const MAX_HEADERS: usize = 64;
/// Most bytes of a refusal's body kept (its first line is the reason).
pub const MAX_BODY_BYTES: usize = 4096;

/// What a handshake request got back.
pub enum Answer<S> {
    /// `101`: the connection, with any bytes read past the answer in front.
    Switched(Prefixed<S>),
    /// Any other answer, with (at most [`MAX_BODY_BYTES`] of) its body.
    Other(Response<Vec<u8>>),
}

/// Why a handshake got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The connection failed or ended.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// What came back is not HTTP.
    #[error("the answer is not HTTP ({0})")]
    NotHttp(String),
    /// A `101` that is not a WebSocket upgrade for our key, or an answer
    /// head that breaks HTTP's rules.
    #[error("{0}")]
    BadUpgrade(&'static str),
}

/// Sends `request` (a GET with the WebSocket headers) on `io` and reads
/// the answer: the connection on a valid `101`, with any bytes read past
/// the answer put back in front; else the answer itself.
pub async fn exchange<S>(mut io: S, request: &Request<()>) -> Result<Answer<S>, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&request_head(request)).await?;
    io.flush().await?;

    let mut buf = BytesMut::with_capacity(4096);
    let (status, headers, head_len) = loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(UpgradeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(head) = parse_head(&buf)? {
            break head;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(bad("answer head too large"));
        }
    };
    let rest = buf.split_off(head_len);

    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = read_body(&mut io, rest, &headers).await;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return Ok(Answer::Other(response));
    }
    let upgrade = headers.get(UPGRADE).and_then(|v| v.to_str().ok());
    if !upgrade.is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(bad("101 without Upgrade: websocket"));
    }
    let key = request.headers().get(SEC_WEBSOCKET_KEY).map(|k| k.as_bytes()).unwrap_or_default();
    if headers.get(SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) != Some(derive_accept_key(key).as_bytes()) {
        return Err(bad("wrong Sec-WebSocket-Accept"));
    }
    Ok(Answer::Switched(Prefixed::new(rest.freeze(), io)))
}

fn bad(reason: &'static str) -> UpgradeError {
    UpgradeError::BadUpgrade(reason)
}

/// `GET <path> HTTP/1.1` and the request's headers.
fn request_head(request: &Request<()>) -> Vec<u8> {
    let target = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut head = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The status, headers and length of a complete answer head in `buf`;
/// `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(StatusCode, HeaderMap, usize)>, UpgradeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(UpgradeError::NotHttp(e.to_string())),
    };
    let status = response.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| bad("bad status code"))?;
    let mut headers = HeaderMap::new();
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| bad("bad header name"))?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| bad("bad header value"))?;
        headers.append(name, value);
    }
    Ok(Some((status, headers, len)))
}

/// A refusal's body as far as `Content-Length` says (at most
/// [`MAX_BODY_BYTES`]); whatever arrived if the connection ends or breaks.
async fn read_body<S: AsyncRead + Unpin>(io: &mut S, mut body: BytesMut, headers: &HeaderMap) -> Vec<u8> {
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let want = length.unwrap_or(0usize).min(MAX_BODY_BYTES);
    while body.len() < want {
        match io.read_buf(&mut body).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    body.truncate(want);
    body.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn answer_heads_parse_in_pieces() {
        let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nXY";
        for cut in 0..answer.len() - 2 {
            assert!(parse_head(&answer[..cut]).unwrap().is_none(), "{cut}");
        }
        let (status, headers, len) = parse_head(answer).unwrap().unwrap();
        assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(headers.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(&answer[len..], b"XY");
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
    }

    /// The bytes a server sends right behind its `101` are the socket's.
    #[tokio::test]
    async fn bytes_after_the_101_stay_with_the_socket() {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let request = "ws://example.com/v1/data?pool=1".into_client_request().unwrap();
        let key = request.headers().get(SEC_WEBSOCKET_KEY).unwrap().as_bytes().to_vec();
        let (ours, mut server) = tokio::io::duplex(4096);
        let answer = tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let n = server.read(&mut head).await.unwrap();
            assert!(head[..n].starts_with(b"GET /v1/data?pool=1 HTTP/1.1\r\n"));
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\nfirst",
                derive_accept_key(&key)
            );
            server.write_all(reply.as_bytes()).await.unwrap();
            server
        });
        let Ok(Answer::Switched(mut stream)) = exchange(ours, &request).await else { panic!("a 101") };
        let _server = answer.await.unwrap();
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"first");
    }
}
