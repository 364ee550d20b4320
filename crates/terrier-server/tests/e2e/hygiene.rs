//! Security hygiene: what a stranger can put into logs, what terrierd leaves
//! readable on disk, and what its front page tells anyone who asks.

use std::path::Path;

use terrier_server::auth::store::{FileTokenStore, TokenStore};
use terrier_server::auth::token::{self, Scope};
use terrier_testkit::admin::AdminClient;
use terrier_testkit::raw::handshake;
use terrier_testkit::redis::free_port;
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
        assert!(page.text.contains("href=\"/dashboard\""), "says what it is, links the dashboard: {:?}", page.text);
        assert!(!page.text.contains(VERSION), "no version without the token: {:?}", page.text);
        assert!(!page.text.contains("online"), "no device count without the token: {:?}", page.text);
    }
    let page = admin.get("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.text.contains(&format!("terrierd {VERSION}")), "{:?}", page.text);
    assert!(page.text.contains("1 device(s) online"), "{:?}", page.text);
    server.stop().await;
}

/// Permission bits of `path` in octal, as `ls -l` and `chmod` spell them.
#[cfg(unix)]
fn mode(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:o}", meta.permissions().mode() & 0o777)
}

/// Waits until `server` answers requests, so its store and files exist.
async fn serving(server: &TestServer) {
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    assert_eq!(admin.get("/").await.status, 200);
}

#[cfg(unix)]
#[tokio::test]
async fn fresh_data_dir_is_0700_and_its_secret_files_0600() {
    init_logging();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("terrierd-data");
    let tls_port = free_port().await;
    let server = TestServer::start_in(&data, |c| {
        c.tls.listen = Some(([127, 0, 0, 1], tls_port).into());
        c.tls.self_signed = true;
    })
    .await;
    serving(&server).await;
    assert_eq!(mode(&data), "700", "data dir");
    assert_eq!(mode(&data.join("terrier.redb")), "600", "store file (ACME keys)");
    assert_eq!(mode(&data.join("admin.token")), "600", "admin token");
    assert_eq!(mode(&data.join("tls")), "700", "development CA folder");
    assert_eq!(mode(&data.join("tls/dev-ca.key")), "600", "development CA key");
    server.stop().await;

    // `terrierd token create --init` on a data dir that does not exist yet.
    let cli_data = tmp.path().join("cli-data");
    let minted = token::mint(Scope::Name("thermo".into()), "test", 0);
    FileTokenStore::new(&cli_data).insert(&minted.record).await.expect("store token");
    assert_eq!(mode(&cli_data), "700", "data dir made by the token command");
}

#[cfg(unix)]
#[tokio::test]
async fn store_file_open_to_others_is_narrowed_and_the_dir_left_as_set() {
    use std::os::unix::fs::PermissionsExt;
    init_logging();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("terrierd-data");
    TestServer::start_in(&data, |_| {}).await.stop().await;
    // As an older terrierd left them, or as an operator chose for the folder.
    let chmod =
        |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    chmod(&data.join("terrier.redb"), 0o644);
    chmod(&data, 0o750);
    let server = TestServer::start_in(&data, |_| {}).await;
    serving(&server).await;
    assert_eq!(mode(&data.join("terrier.redb")), "600", "store file narrowed");
    assert_eq!(mode(&data), "750", "an existing data dir keeps the operator's mode (with a warning)");
    server.stop().await;
}
