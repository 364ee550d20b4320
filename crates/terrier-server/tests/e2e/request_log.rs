//! The request log of the dashboard and the admin API: it belongs to the
//! device, so it keeps its history when the device reconnects, and it
//! shows both heads' headers with credentials masked.

use terrier_testkit::admin::AdminClient;
use terrier_testkit::{init_logging, TestAgent, TestServer};

#[tokio::test]
async fn the_request_log_keeps_its_history_across_reconnects_and_masks_secrets() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (mut agent, host) = TestAgent::web_device(server.url(), "logged").await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    assert_eq!(get_with_credentials(&server, &host, "/hello").await, 200);

    assert_eq!(admin.call("POST", "/api/v1/devices/logged/disconnect", None).await.status, 200);
    agent.connected(2).await;
    assert_eq!(get_with_credentials(&server, &host, "/headers").await, 200);

    let log = admin.get("/api/v1/devices/logged/requests").await.json;
    let requests = log["requests"].as_array().expect("requests");
    let paths: Vec<&str> = requests.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(paths, ["/headers", "/hello"], "newest first, the first session's request kept: {log}");
    let first = &requests[1];
    let header = |side: &str, name: &str| {
        first[side].as_array().expect("headers").iter().find(|h| h[0] == name).map(|h| h[1].clone())
    };
    assert_eq!(header("request_headers", "authorization"), Some("***".into()), "{first}");
    assert_eq!(header("request_headers", "cookie"), Some("***".into()), "{first}");
    assert_eq!(header("request_headers", "x-forwarded-for"), Some("127.0.0.1".into()), "as the device got it: {first}");
    assert!(header("response_headers", "content-length").is_some(), "{first}");
    let text = log.to_string();
    assert!(!text.contains("hunter2") && !text.contains("sessionid=s3cret"), "no secret leaks: {text}");
    server.stop().await;
}

/// A GET carrying credentials, through the vhost; returns the status.
async fn get_with_credentials(server: &TestServer, host: &str, path: &str) -> u16 {
    let request = http::Request::get(path)
        .header("host", host)
        .header("authorization", "Basic dXNlcjpodW50ZXIy")
        .header("cookie", "sessionid=s3cret")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    sender.send_request(request).await.expect("answer").status().as_u16()
}
