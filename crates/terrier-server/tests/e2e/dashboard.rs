//! The dashboard in a real headless Chromium: sign in with the admin token
//! (typed, Enter pressed), watch devices appear online as agents connect and
//! go offline when they stop — without a reload — open a device's detail
//! page with its request log, and leave screenshots in
//! `target/test-artifacts/` (dashboard.png, dashboard-device.png).

use std::time::Duration;

use terrier_testkit::browser::{artifact_dir, Browser};
use terrier_testkit::visitor::Visitor;
use terrier_testkit::{init_logging, upstream, TestAgent, TestServer};

/// How long the page may take to reflect a change (live updates come every second).
const UPDATE: Duration = Duration::from_secs(15);

fn row_state(name: &str) -> String {
    format!("document.querySelector('tr[data-name=\"{name}\"]')?.dataset.state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_and_follows_devices_live() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let token = std::fs::read_to_string(
        terrier_testkit::eventually(Duration::from_secs(10), "admin token", || async {
            let file = server.data_dir().join("admin.token");
            file.exists().then_some(file)
        })
        .await,
    )
    .unwrap();
    let token = token.trim().to_owned();
    let base = format!("http://localhost:{}", server.addr.port());

    let mut browser = Browser::start(1280, 860).await;
    browser.goto(&format!("{base}/dashboard")).await;
    browser.wait_for("!document.getElementById('signin').hidden", UPDATE).await;

    // A wrong token is refused with a message; the right one signs in.
    browser.eval("document.getElementById('token').focus()").await;
    browser.type_text("not-the-admin-token").await;
    browser.press_enter().await;
    browser.wait_for("document.getElementById('signin-error').textContent.includes('not accepted')", UPDATE).await;
    browser.eval("document.getElementById('token').value = ''; document.getElementById('token').focus()").await;
    browser.type_text(&token).await;
    browser.press_enter().await;
    browser.wait_for("!document.getElementById('devices-view').hidden", UPDATE).await;
    browser.wait_for("document.getElementById('live-text').textContent === 'live'", UPDATE).await;
    assert_eq!(browser.eval("document.querySelectorAll('#device-rows tr').length").await, 0);

    // Devices connect: they appear online without a reload.
    let (thermo, thermo_host) = TestAgent::web_device(server.url(), "thermo-42").await;
    let echo = upstream::tcp_echo().await;
    let web = upstream::http_service().await;
    let mut cam = TestAgent::start(server.url(), "porch-cam", Some(web), &[("22", echo), ("rtsp", echo)]);
    cam.connected(1).await;
    let mut gateway = TestAgent::start(server.url(), "modbus-gateway", None, &[("502", echo)]);
    gateway.connected(1).await;
    for name in ["thermo-42", "porch-cam", "modbus-gateway"] {
        browser.wait_for(&format!("{} === 'online'", row_state(name)), UPDATE).await;
    }

    // Traffic for the counters, sparklines and request log.
    let visitor = Visitor::new(server.addr);
    let traffic = {
        let (visitor, host) = (visitor.clone(), thermo_host.clone());
        tokio::spawn(async move {
            for i in 0..40u64 {
                let path = if i % 3 == 0 { format!("/bytes/{}", 20_000 + i * 7_000) } else { "/hello".into() };
                visitor.get(&host, &path).await;
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
        })
    };
    browser.wait_for("document.getElementById('stat-online').textContent === '3'", UPDATE).await;

    // A device stops: its row turns offline, still without a reload.
    cam.stop().await.unwrap();
    browser.wait_for(&format!("{} === 'offline'", row_state("porch-cam")), UPDATE).await;
    assert_eq!(browser.eval(&format!("{} ", row_state("thermo-42"))).await, "online");

    // Search narrows the table.
    browser.eval("document.getElementById('search').focus()").await;
    browser.type_text("gate").await;
    browser.wait_for("document.querySelectorAll('#device-rows tr').length === 1", UPDATE).await;
    browser
        .eval("const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'))")
        .await;
    browser.wait_for("document.querySelectorAll('#device-rows tr').length === 3", UPDATE).await;

    traffic.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // one more live snapshot with the last bytes
    browser.screenshot(&artifact_dir().join("dashboard.png")).await;

    // Click through to the detail page: facts, sparkline and request log.
    browser.click("tr[data-name=\"thermo-42\"] td").await;
    browser.wait_for("!document.getElementById('detail-view').hidden", UPDATE).await;
    browser.wait_for("document.querySelectorAll('#request-rows tr').length > 0", UPDATE).await;
    let first_path = browser.eval("document.querySelector('#request-rows tr td:nth-child(3)').textContent").await;
    assert!(first_path.as_str().is_some_and(|p| p == "/hello" || p.starts_with("/bytes/")), "{first_path}");
    // No access rules on this device: nobody had to be let in.
    let who = browser.eval("document.querySelector('#request-rows tr td:nth-child(7)').textContent").await;
    assert_eq!(who, "", "the Who column of a request that needed no credentials");
    let link = browser.eval("document.querySelector('#detail-facts a').href").await;
    assert_eq!(link.as_str().unwrap().trim_end_matches('/'), format!("http://{thermo_host}:{}", server.addr.port()));
    browser.screenshot(&artifact_dir().join("dashboard-device.png")).await;

    // A narrow (phone) window still shows the list, as cards.
    let mut phone = Browser::start(390, 800).await;
    phone.goto(&format!("{base}/dashboard")).await;
    phone.wait_for("!document.getElementById('signin').hidden", UPDATE).await;
    phone.eval("document.getElementById('token').focus()").await;
    phone.type_text(&token).await;
    phone.press_enter().await;
    phone.wait_for(&format!("{} === 'online'", row_state("thermo-42")), UPDATE).await;
    phone.screenshot(&artifact_dir().join("dashboard-phone.png")).await;

    thermo.stop().await.unwrap();
    gateway.stop().await.unwrap();
    server.stop().await;
}
