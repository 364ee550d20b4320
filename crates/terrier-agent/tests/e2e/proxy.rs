//! The agent through a real HTTP proxy (Debian's tinyproxy on loopback):
//! plain, with Basic authentication, and restricted to one CONNECT port;
//! `--proxy` and the proxy environment variables with `NO_PROXY`.

use crate::support;

use support::{subdomain, AgentProcess, Front, Pki, ProxyRules, Tinyproxy, EVENT_TIMEOUT};
use terrier_testkit::visitor::{device_host, Visitor};
use terrier_testkit::{init_logging, upstream, TestServer};

/// A terrierd behind TLS, the agent's args for it (minus the proxy), and the temp dir holding the CA.
struct Setup {
    server: TestServer,
    front: Front,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

async fn setup(name: &str) -> Setup {
    let server = TestServer::start(|_| {}).await;
    let pki = Pki::new("proxy test CA");
    let front = Front::start(server.addr, Some(&pki), None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let web = upstream::http_service().await;
    let args = [
        "--server",
        &format!("wss://localhost:{}", front.addr.port()),
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        name,
        "--http",
        &web.to_string(),
        "--backoff-max",
        "300ms",
    ]
    .map(String::from)
    .to_vec();
    Setup { server, front, args, _dir: dir }
}

fn start(args: &[String], extra: &[&str]) -> AgentProcess {
    let all: Vec<&str> = args.iter().map(String::as_str).chain(extra.iter().copied()).collect();
    AgentProcess::start(&all)
}

/// Waits for `connected` and fetches a page through the tunnel.
async fn assert_visitor_reaches(agent: &mut AgentProcess, setup: &Setup) {
    let connected = agent.wait_for("connected", EVENT_TIMEOUT).await;
    let page = Visitor::new(setup.server.addr).get(&device_host(&subdomain(&connected)), "/hello").await;
    assert_eq!(page.status, 200, "{page:?}");
}

#[tokio::test]
async fn wss_through_tinyproxy_reaches_the_device() {
    init_logging();
    let setup = setup("proxied").await;
    let proxy = Tinyproxy::start(ProxyRules::default()).await;
    let mut agent = start(&setup.args, &["--proxy", &proxy.url(None)]);
    assert_visitor_reaches(&mut agent, &setup).await;
    // The TLS terminator saw the agent's requests: the tunnel carried them end to end.
    assert!(!setup.front.heads_for("/v1/data").is_empty());
    agent.kill().await;
    setup.server.stop().await;
}

#[tokio::test]
async fn proxy_with_basic_auth_needs_the_credentials() {
    init_logging();
    let setup = setup("auth-proxied").await;
    let proxy = Tinyproxy::start(ProxyRules { basic_auth: Some(("fieldtech", "s3cret")), ..Default::default() }).await;

    let mut without = start(&setup.args, &["--proxy", &proxy.url(None)]);
    let refused = without.wait_for("disconnected", EVENT_TIMEOUT).await;
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("refused CONNECT") && reason.contains("407"), "{reason}");
    without.kill().await;

    let mut with = start(&setup.args, &["--proxy", &proxy.url(Some(("fieldtech", "s3cret")))]);
    assert_visitor_reaches(&mut with, &setup).await;
    assert!(with.stderr_matching("s3cret").is_empty(), "the proxy password never reaches the log");
    with.kill().await;
    setup.server.stop().await;
}

#[tokio::test]
async fn proxy_allowing_connect_to_one_port_only() {
    init_logging();
    let setup = setup("port-limited").await;
    // The server's port is the one allowed (as 443 is in a corporate proxy)...
    let allowing =
        Tinyproxy::start(ProxyRules { connect_ports: &[setup.front.addr.port()], ..Default::default() }).await;
    let mut agent = start(&setup.args, &["--proxy", &allowing.url(None)]);
    assert_visitor_reaches(&mut agent, &setup).await;
    agent.kill().await;

    // ... and a proxy allowing only another port refuses with a clear error.
    let other = support::free_port();
    let refusing = Tinyproxy::start(ProxyRules { connect_ports: &[other], ..Default::default() }).await;
    let mut agent = start(&setup.args, &["--proxy", &refusing.url(None)]);
    let refused = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    let reason = refused["reason"].as_str().unwrap_or_default();
    let target = format!("CONNECT localhost:{}", setup.front.addr.port());
    assert!(reason.contains(&target) && reason.contains("403"), "{reason}");
    agent.kill().await;
    setup.server.stop().await;
}

#[tokio::test]
async fn https_proxy_variable_is_used_and_no_proxy_bypasses_it() {
    init_logging();
    let setup = setup("env-proxied").await;
    let proxy = Tinyproxy::start(ProxyRules::default()).await;
    let mut command = support::terrier_command();
    command.env("https_proxy", proxy.url(None));
    let args: Vec<&str> = setup.args.iter().map(String::as_str).collect();
    let mut agent = AgentProcess::start_command(command, &args);
    assert_visitor_reaches(&mut agent, &setup).await;
    agent.kill().await;

    // A dead proxy in HTTPS_PROXY, but localhost in NO_PROXY: straight to the server.
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let mut command = support::terrier_command();
    command.env("HTTPS_PROXY", &dead).env("NO_PROXY", "example.com,localhost");
    let mut agent = AgentProcess::start_command(command, &args);
    assert_visitor_reaches(&mut agent, &setup).await;
    agent.kill().await;

    // Without NO_PROXY the dead proxy is tried, and named in the error.
    let mut command = support::terrier_command();
    command.env("HTTPS_PROXY", &dead);
    let mut agent = AgentProcess::start_command(command, &args);
    let failed = agent.wait_for("disconnected", EVENT_TIMEOUT).await;
    assert!(failed["reason"].as_str().unwrap_or_default().contains(&dead[7..]), "{failed}");
    agent.kill().await;
    setup.server.stop().await;
}
