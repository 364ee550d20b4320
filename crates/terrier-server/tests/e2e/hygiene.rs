//! Security hygiene: what a stranger can put into logs, what terrierd leaves
//! readable on disk, and what its front page tells anyone who asks.

use terrier_testkit::raw::handshake;
use terrier_testkit::{init_logging, TestServer};

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
