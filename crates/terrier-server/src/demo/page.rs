//! The demo device's web page. The server speaks HTTP/1 to a device's web
//! service over each data socket it opens (docs/PROTOCOL.md §4.2), so the
//! demo serves the page with hyper's HTTP/1 server straight on the socket
//! seen as a byte stream: no local port, nothing to dial.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use terrier_transport::byte_stream::ByteStream;

use super::dial::DataSocket;

/// Answers the requests the server sends on `socket` until it closes it
/// (it may keep the connection for later visitors).
pub async fn serve(socket: DataSocket) -> Result<(), hyper::Error> {
    let io = TokioIo::new(ByteStream::new(socket));
    hyper::server::conn::http1::Builder::new().serve_connection(io, hyper::service::service_fn(page)).await
}

async fn page(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let host = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("?");
    let from = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("?");
    let html = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>terrier demo device</title>\
         <body style=\"font:16px system-ui;max-width:36rem;margin:4rem auto;padding:0 1rem\">\
         <h1>Hello from a device behind terrier</h1>\
         <p>This page is served by the demo device built into terrierd. Like any \
         device, it connected out to the server, and your request reached it \
         through that outbound tunnel.</p>\
         <p><small>host: {} · you: {} · path: {}</small></p></body></html>",
        escape(host),
        escape(from),
        escape(req.uri().path())
    );
    let mut response = Response::new(Full::new(Bytes::from(html)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
    Ok(response)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
