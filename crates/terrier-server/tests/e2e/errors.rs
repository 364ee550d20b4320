//! The error pages a visitor sees: an unknown subdomain (404), a device whose
//! local service refuses (502), a device that never opens its data socket
//! (504), and an operator's own template in place of the built-in page.

use std::time::Duration;

use futures_util::StreamExt;
use terrier_testkit::upstream;
use terrier_testkit::visitor::{device_host, Page, Visitor};
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Bound on one network step (a visitor request, a handshake, a frame).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn get(visitor: &Visitor, host: &str, path: &str) -> Page {
    timeout(STEP_TIMEOUT, visitor.get(host, path))
        .await
        .unwrap_or_else(|_| panic!("GET {host}{path} answered within {STEP_TIMEOUT:?}"))
}

/// Checks `page` is a self-contained HTML page with `status`.
fn assert_html_page(page: &Page, status: u16) {
    assert_eq!(page.status, status, "{}", page.body);
    let content_type = page.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.body.contains("<html"), "{}", page.body);
    // No external assets: the page must render with the device unreachable
    // and must not make the visitor's browser call anyone else.
    let lower = page.body.to_ascii_lowercase();
    for needle in ["src=", "href=\"http", "href='http", "href=http", "url(http", "@import"] {
        assert!(!lower.contains(needle), "page loads an asset ({needle}): {}", page.body);
    }
}

#[tokio::test]
async fn unknown_subdomain_gets_a_self_contained_404_page() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let visitor = Visitor::new(server.addr);
    let page = get(&visitor, "nobody12345.localhost", "/hello").await;
    assert_html_page(&page, 404);
    assert!(page.body.contains("nobody12345.localhost"), "{}", page.body);
    // A host outside the served domain gets a 404 page as well.
    let page = get(&visitor, "somewhere.example.org", "/").await;
    assert_html_page(&page, 404);
    server.stop().await;
}

#[tokio::test]
async fn refused_local_service_gives_a_502_page() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let closed = upstream::closed_port().await;
    let mut agent = TestAgent::start(server.url(), "no-web", Some(closed), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    let visitor = Visitor::new(server.addr);
    let page = get(&visitor, &host, "/hello").await;
    assert_html_page(&page, 502);
    assert!(page.body.contains("refused"), "{}", page.body);
    // The device stays online: a second visitor gets the same answer.
    assert_eq!(get(&visitor, &host, "/hello").await.status, 502);
    server.stop().await;
}

#[tokio::test]
async fn device_that_never_opens_its_data_socket_gives_a_504_page() {
    init_logging();
    let server = TestServer::start(|c| c.limits.stream_open_timeout = Duration::from_millis(500)).await;
    // A fake agent that completes the control handshake, answers pings (by
    // reading), and ignores every `open`.
    let url = format!("ws://{}/v1/control?name=slowpoke&http=1", server.addr);
    let (mut control, _) = timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("control handshake in time")
        .expect("control handshake");
    let welcome = loop {
        let frame = timeout(STEP_TIMEOUT, control.next())
            .await
            .expect("welcome in time")
            .expect("control socket open")
            .expect("control frame");
        if let Message::Text(text) = frame {
            break text;
        }
    };
    let welcome: serde_json::Value = serde_json::from_str(welcome.as_str()).expect("welcome JSON");
    let subdomain = welcome["welcome"]["subdomain"].as_str().expect("subdomain in welcome").to_owned();
    let reader = tokio::spawn(async move {
        let mut opens = 0;
        while let Some(Ok(frame)) = control.next().await {
            if frame.is_text() {
                opens += 1;
            }
        }
        opens
    });

    let visitor = Visitor::new(server.addr);
    let started = std::time::Instant::now();
    let page = get(&visitor, &device_host(&subdomain), "/hello").await;
    assert_html_page(&page, 504);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "504 only after the stream open timeout, got it after {:?}",
        started.elapsed()
    );
    server.stop().await;
    let opens = timeout(STEP_TIMEOUT, reader)
        .await
        .expect("control socket closed by the server's shutdown")
        .expect("reader task");
    assert!(opens >= 1, "the server asked the device to open a stream");
}

#[tokio::test]
async fn operator_template_replaces_the_404_page() {
    init_logging();
    let pages = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        pages.path().join("404.html"),
        "<!doctype html><html><body><p>OPERATOR-404-MARKER</p><p>{{host}} {{status}}</p></body></html>",
    )
    .expect("write template");
    let dir = pages.path().to_owned();
    let server = TestServer::start(move |c| c.pages_dir = Some(dir)).await;
    let visitor = Visitor::new(server.addr);
    let page = get(&visitor, "nobody12345.localhost", "/").await;
    assert_html_page(&page, 404);
    assert!(page.body.contains("OPERATOR-404-MARKER"), "{}", page.body);
    assert!(page.body.contains("nobody12345.localhost 404"), "{}", page.body);
    assert!(!page.body.contains("{{"), "placeholders filled: {}", page.body);
    // Statuses without an operator template keep the built-in page.
    let mut no_host = raw_get_without_host(server.addr).await;
    no_host.make_ascii_lowercase();
    assert!(no_host.contains("served by terrier"), "{no_host}");
    server.stop().await;
}

/// `GET /` with no `Host` (a 400 page), read raw to the end.
async fn raw_get_without_host(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
    let mut out = Vec::new();
    timeout(STEP_TIMEOUT, stream.read_to_end(&mut out)).await.expect("answer in time").expect("answer");
    String::from_utf8_lossy(&out).into_owned()
}
