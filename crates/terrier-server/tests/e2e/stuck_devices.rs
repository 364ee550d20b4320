//! A device that takes a request and never answers: the visitor gets a 504
//! saying the timeout in force (`limits.device_answer_timeout`) when it
//! ran out, and a request in flight ends as soon as the device's session
//! does, instead of waiting on a data socket nobody answers.

use std::time::{Duration, Instant};

use terrier_testkit::admin::AdminClient;
use terrier_testkit::upstream::stuck_service;
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, TestAgent, TestServer};

#[tokio::test]
async fn a_device_that_never_answers_gets_504_naming_the_timeout_in_force() {
    init_logging();
    let server = TestServer::start(|c| c.limits.device_answer_timeout = Duration::from_secs(1)).await;
    let (stuck, _arrived) = stuck_service().await;
    let mut agent = TestAgent::start(server.url(), "stuck", Some(stuck), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);
    let (_healthy, healthy_host) = TestAgent::web_device(server.url(), "healthy").await;

    let visitor = Visitor::new(server.addr);
    let started = Instant::now();
    let page = tokio::time::timeout(Duration::from_secs(10), visitor.get(&host, "/")).await.expect("an answer");
    let waited = started.elapsed();
    assert_eq!(page.status, 504, "{}", page.body);
    assert!(page.body.contains("no answer within 1s"), "the page says the timeout in force: {}", page.body);
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5), "504 after {waited:?}");
    assert_eq!(visitor.get(&healthy_host, "/hello").await.status, 200, "another device is served meanwhile");
    server.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_ends_when_the_devices_session_does() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (stuck, mut arrived) = stuck_service().await;
    let mut agent = TestAgent::start(server.url(), "vanishes", Some(stuck), &[]);
    let host = device_host(&agent.connected(1).await.subdomain);

    let visitor = Visitor::new(server.addr);
    let request = tokio::spawn(async move { visitor.get(&host, "/").await });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv()).await.expect("the request reached the device");
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let cut = Instant::now();
    assert_eq!(admin.call("POST", "/api/v1/devices/vanishes/disconnect", None).await.status, 200);
    let page = tokio::time::timeout(Duration::from_secs(10), request).await.expect("the visitor is answered").unwrap();
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(cut.elapsed() < Duration::from_secs(5), "answered {:?} after the session ended", cut.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn an_upload_longer_than_the_answer_timeout_is_not_cut() {
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use terrier_testkit::upstream::pattern;

    init_logging();
    let server = TestServer::start(|c| c.limits.device_answer_timeout = Duration::from_secs(1)).await;
    let (_agent, host) = TestAgent::web_device(server.url(), "uploads").await;
    // 6 chunks, 500 ms apart: 3 s of upload, each gap well inside the timeout.
    let chunks = futures_util::stream::iter(0..6u64).then(|i| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let chunk: Vec<u8> = (i * 1000..(i + 1) * 1000).map(pattern).collect();
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(chunk)))
    });
    let body = BodyExt::boxed(StreamBody::new(chunks));
    let response = Visitor::new(server.addr).send("POST", &host, "/count", body).await;
    assert_eq!(response.status(), 200, "the device answered once the upload was in");
    let text = response.into_body().collect().await.expect("answer").to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("6000"), "{text:?}");
    server.stop().await;
}
