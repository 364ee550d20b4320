//! Device-side services for tests: an HTTP server with echo, streaming and
//! WebSocket routes, a TCP echo, a server that speaks first, and a port
//! nobody listens on. All on 127.0.0.1:0, running until the runtime ends.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

type Body = BoxBody<Bytes, hyper::Error>;

/// Starts the test HTTP service. Routes:
/// - `GET /hello` → `hello from device`, with the forwarding headers it saw
///   echoed back as `x-seen-host`, `x-seen-xff`, `x-seen-proto`, `x-seen-xfh`;
/// - `GET /headers` → the names of the headers it got, sorted, space-separated;
/// - `POST /echo` → the request body, streamed back as it arrives;
/// - `POST /count` → the number of body bytes received, as text;
/// - `GET /bytes/N` → N bytes of [`pattern`], streamed in 64 KiB chunks;
/// - `GET /ws` → a WebSocket echo.
pub async fn http_service() -> SocketAddr {
    http_service_on("127.0.0.1:0".parse().expect("addr")).await
}

/// [`http_service`] on a given address (to bring a device's service back up).
pub async fn http_service_on(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind http upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), hyper::service::service_fn(route))
                    .await;
            });
        }
    });
    addr
}

/// The byte at offset `i` of every generated body: checkable without storing it.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(text.into()).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

async fn route(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let response = match (req.method().as_str(), path.as_str()) {
        ("GET", "/hello") => {
            let mut r = full(StatusCode::OK, "hello from device");
            for (seen, name) in [
                ("x-seen-host", "host"),
                ("x-seen-xff", "x-forwarded-for"),
                ("x-seen-proto", "x-forwarded-proto"),
                ("x-seen-xfh", "x-forwarded-host"),
            ] {
                if let Ok(v) = header(name).parse() {
                    r.headers_mut().insert(seen, v);
                }
            }
            r
        }
        ("GET", "/headers") => {
            let mut names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
            names.sort_unstable();
            full(StatusCode::OK, names.join(" "))
        }
        ("POST", "/echo") => Response::new(req.into_body().boxed()),
        ("POST", "/count") => {
            let mut body = req.into_body();
            let mut count = 0u64;
            let mut ok = true;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            ok &= data.iter().enumerate().all(|(i, b)| *b == pattern(count + i as u64));
                            count += data.len() as u64;
                        }
                    }
                    Err(_) => return Ok(full(StatusCode::BAD_REQUEST, "body broke")),
                }
            }
            full(StatusCode::OK, format!("{count} {}", if ok { "ok" } else { "corrupt" }))
        }
        ("GET", p) if p.starts_with("/bytes/") => match p["/bytes/".len()..].parse::<u64>() {
            Ok(n) => Response::new(BodyExt::boxed(StreamBody::new(pattern_stream(n)))),
            Err(_) => full(StatusCode::BAD_REQUEST, "bad length"),
        },
        ("GET", "/ws") => websocket_echo(&mut req),
        _ => full(StatusCode::NOT_FOUND, "no such route"),
    };
    Ok(response)
}

/// `n` bytes of [`pattern`] as a stream of 64 KiB body frames.
pub fn pattern_stream<E: Send + 'static>(
    n: u64,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, E>> + Send + 'static {
    const CHUNK: u64 = 64 * 1024;
    futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = CHUNK.min(n - sent);
        let chunk: Vec<u8> = (sent..sent + len).map(pattern).collect();
        Some((Ok(Frame::data(Bytes::from(chunk))), sent + len))
    })
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get(http::header::SEC_WEBSOCKET_KEY).cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if let Message::Close(_) = msg {
                break;
            }
        }
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, "websocket".parse().expect("static"));
    h.insert(http::header::CONNECTION, "upgrade".parse().expect("static"));
    h.insert(
        http::header::SEC_WEBSOCKET_ACCEPT,
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()).parse().expect("accept key"),
    );
    r
}

/// A TCP echo server: echoes until the client half-closes, then half-closes too.
pub async fn tcp_echo() -> SocketAddr {
    serve_tcp(None).await
}

/// Like [`tcp_echo`], but writes `banner` the moment a connection is accepted
/// (a server-speaks-first protocol like SSH or SMTP).
pub async fn banner_echo(banner: &'static [u8]) -> SocketAddr {
    serve_tcp(Some(banner)).await
}

async fn serve_tcp(banner: Option<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Some(banner) = banner {
                    if stream.write_all(banner).await.is_err() {
                        return;
                    }
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP service that writes `total` bytes of [`pattern`] to every
/// connection as fast as the reader takes them, then closes.
pub async fn firehose(total: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind firehose");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut sent = 0u64;
                while sent < total {
                    let len = (64 * 1024).min(total - sent);
                    let chunk: Vec<u8> = (sent..sent + len).map(pattern).collect();
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += len;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// An address where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A web service that is stuck: it takes connections and reads requests
/// but never answers. Each request's first bytes are reported on the
/// returned channel, so a test knows the request reached it.
pub async fn stuck_service() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stuck service");
    let addr = listener.local_addr().expect("addr");
    let (arrived, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let _ = arrived.send(());
                }
            });
        }
    });
    (addr, rx)
}
