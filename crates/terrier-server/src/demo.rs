//! `terrierd --demo`: a built-in device next to the server, so a first run
//! shows a working tunnel with nothing else installed. A tiny web page on a
//! loopback port, exposed through a real in-process agent that connects to
//! this very server over its public listener.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use terrier_agent::{AgentConfig, Event, Service, Target};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Name of the demo device.
pub const DEMO_NAME: &str = "demo";

/// Starts the demo web page and its agent (connecting to `server`); both stop
/// with `shutdown`. Prints the demo's public URL once it is connected.
pub async fn start(server: SocketAddr, shutdown: CancellationToken, tasks: &TaskTracker) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let page_addr = listener.local_addr()?;
    tasks.spawn(serve_page(listener, shutdown.clone()));
    let config = AgentConfig {
        server: url::Url::parse(&format!("http://{server}"))?,
        name: DEMO_NAME.into(),
        http: Some(Service::http(Target { host: page_addr.ip().to_string(), port: page_addr.port() })),
        ..AgentConfig::default()
    };
    tasks.spawn(async move {
        let result = terrier_agent::run(config, shutdown, |event| {
            if let Event::Connected(c) = event {
                if let Some(url) = c.url {
                    println!("demo device online: open {url} in a browser");
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "demo agent stopped");
        }
    });
    Ok(())
}

async fn serve_page(listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(page);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn page(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let host = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("?");
    let from = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("?");
    let html = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>terrier demo device</title>\
         <body style=\"font:16px system-ui;max-width:36rem;margin:4rem auto;padding:0 1rem\">\
         <h1>Hello from a device behind terrier</h1>\
         <p>This page is served by a web server on the device's own loopback address \
         and reached you through its outbound tunnel.</p>\
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
