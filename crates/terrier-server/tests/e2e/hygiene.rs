//! Security hygiene: what a stranger can put into logs, what terrierd leaves
//! readable on disk, and what its front page tells anyone who asks.

use terrier_testkit::admin::AdminClient;
use terrier_testkit::raw::handshake;
use terrier_testkit::{init_logging, TestAgent, TestServer};

/// terrierd's version, which only the operator may read off the front page.
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[tokio::test]
async fn handshake_with_a_newline_in_agent_gets_400_naming_the_field() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let forged = "terrier%2F0.1%0A2026-01-01T00:00:00Z%20INFO%20device%20online%20device%3Dbank";
    let url = format!("ws://{}/v1/control?name=thermo&http=1&agent={forged}", server.addr);
    let refused =
        handshake(server.addr, &url, None).await.map(drop).expect_err("a handshake with a newline in agent is refused");
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("\"agent\" contains a control character"), "{refused:?}");

    let url = format!("ws://{}/v1/control?name=thermo&http=1&platform=linux%1B%5B2J", server.addr);
    let refused =
        handshake(server.addr, &url, None).await.map(drop).expect_err("an ANSI escape in platform is refused");
    assert_eq!((refused.status, refused.body.contains("\"platform\"")), (400, true), "{refused:?}");

    // The same device with printable fields is welcome.
    let url = format!("ws://{}/v1/control?name=thermo&http=1&agent=terrier%2F0.1&platform=linux", server.addr);
    handshake(server.addr, &url, None).await.expect("printable fields are accepted");
    server.stop().await;
}

#[tokio::test]
async fn front_page_shows_version_and_load_only_to_the_admin_token() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let (_device, _host) = TestAgent::web_device(server.url(), "thermo").await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    for stranger in [AdminClient::new(server.addr, None), AdminClient::new(server.addr, Some("wrong-token".repeat(4)))]
    {
        let page = stranger.get("/").await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.text.contains("<name>.localhost"), "a welcome line: {:?}", page.text);
        assert!(!page.text.contains(VERSION), "no version without the token: {:?}", page.text);
        assert!(!page.text.contains("online"), "no device count without the token: {:?}", page.text);
    }
    let page = admin.get("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.text.contains(&format!("terrierd {VERSION}")), "{:?}", page.text);
    assert!(page.text.contains("1 device(s) online"), "{:?}", page.text);
    server.stop().await;
}
