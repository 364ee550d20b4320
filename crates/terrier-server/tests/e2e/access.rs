//! Visitor access control set by the operator per device name: an IP
//! allow-list (HTTP and TCP) and HTTP basic auth, checked with real curl
//! bound to different loopback source addresses. Devices without rules
//! stay open.

use std::time::Duration;

use sha2::{Digest, Sha256};
use terrier_server::access::{AccessConfig, BasicUser};
use terrier_testkit::{eventually, init_logging, upstream, TestAgent, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// curl from source address `from` for `/hello` on `host`; returns (status, headers+body).
async fn curl_from(from: &str, server: &TestServer, host: &str, extra: &[&str]) -> (u16, String) {
    let flags: Vec<&str> = ["--interface", from].into_iter().chain(extra.iter().copied()).collect();
    curl_path(server, host, "/hello", &flags).await
}

/// Echoes one line over a TCP connection from `from`; `false` if closed.
async fn tcp_echo_from(from: &str, port: u16) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("addr")).expect("bind");
    let Ok(mut stream) = socket.connect(([127, 0, 0, 1], port).into()).await else { return false };
    if stream.write_all(b"hi\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 3];
    matches!(tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await, Ok(Ok(_)))
}

#[tokio::test]
async fn only_allowed_addresses_with_the_password_reach_a_protected_device() {
    init_logging();
    let rules = AccessConfig {
        allow_ips: vec!["127.0.0.2/32".into()],
        basic_auth: vec![BasicUser {
            user: "alice".into(),
            password_sha256: format!("{:x}", Sha256::digest(b"s3cret-enough")),
        }],
        ..Default::default()
    };
    let server = TestServer::start(|c| {
        c.access.insert("cam".into(), rules);
    })
    .await;
    let echo = upstream::tcp_echo().await;
    let mut cam = TestAgent::start(server.url(), "cam", Some(upstream::http_service().await), &[("echo", echo)]);
    let connected = cam.connected(1).await;
    let host = format!("{}.localhost", connected.subdomain);
    let (_open, open_host) = TestAgent::web_device(server.url(), "open").await;

    let (status, _) = curl_from("127.0.0.1", &server, &host, &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 403, "an address off the allow-list is refused even with the password");
    let (status, out) = curl_from("127.0.0.2", &server, &host, &[]).await;
    assert_eq!(status, 401, "{out}");
    assert!(out.to_ascii_lowercase().contains("www-authenticate: basic realm="), "{out}");
    let (status, _) = curl_from("127.0.0.2", &server, &host, &["-u", "alice:wrong"]).await;
    assert_eq!(status, 401);
    let (status, _) = curl_from("127.0.0.2", &server, &host, &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 200);
    let (status, _) = curl_from("127.0.0.1", &server, &open_host, &[]).await;
    assert_eq!(status, 200, "a device without rules stays open");

    let port = connected.tcp.iter().find(|p| p.service == "echo").expect("echo").port;
    assert!(!tcp_echo_from("127.0.0.1", port).await, "TCP from an address off the list is closed");
    assert!(tcp_echo_from("127.0.0.2", port).await, "TCP from an allowed address works");
}

/// A section with alice's password, the token `machine-token-0123456789`
/// (named `ci`) and `paths`.
fn with_password_and_token(paths: Vec<terrier_server::access::paths::PathRule>) -> AccessConfig {
    let sha = |s: &str| format!("{:x}", Sha256::digest(s.as_bytes()));
    AccessConfig {
        basic_auth: vec![BasicUser { user: "alice".into(), password_sha256: sha("s3cret-enough") }],
        bearer_tokens: vec![terrier_server::access::BearerToken {
            name: "ci".into(),
            token_sha256: sha("machine-token-0123456789"),
        }],
        paths,
        ..Default::default()
    }
}

/// curl (any source address) for `path` on `host`, with `extra` flags;
/// `--path-as-is` so curl sends dot segments as written. Returns (status, headers+body).
async fn curl_path(server: &TestServer, host: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--path-as-is", "-D", "-", "-w", "\n%{http_code}"])
        .args(["-H", &format!("Host: {host}")])
        .args(extra)
        .arg(format!("http://{}{path}", server.addr))
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text.rsplit('\n').next().unwrap_or("").trim().parse().unwrap_or(0);
    (status, text)
}

/// Per-path rules and bearer tokens for a fleet: a closed path stays
/// closed however its path is spelled, `/headers` takes only a token (and
/// the device never sees it), `/hello` is open, and the rest takes the
/// password; a device outside the fleet is untouched.
#[tokio::test]
async fn path_rules_and_bearer_tokens_hold_for_a_fleet_whatever_the_spelling() {
    use terrier_server::access::paths::{Credential, PathRule};
    init_logging();
    let rules = with_password_and_token(vec![
        PathRule { prefix: "/echo".into(), deny: true, ..Default::default() },
        PathRule { prefix: "/headers".into(), accept: Some(vec![Credential::Bearer]), ..Default::default() },
        PathRule { prefix: "/hello".into(), accept: Some(vec![]), methods: vec!["GET".into()], ..Default::default() },
    ]);
    let server = TestServer::start(|c| {
        c.access.insert("lab-*".into(), rules);
    })
    .await;
    let (_cam, host) = TestAgent::web_device(server.url(), "lab-cam").await;
    let (_open, open_host) = TestAgent::web_device(server.url(), "open").await;

    for closed in ["/echo", "/ECHO", "/%65cho", "/echo/x", "/Echo?x=1"] {
        let (status, out) = curl_path(&server, &host, closed, &["-u", "alice:s3cret-enough"]).await;
        assert_eq!(status, 403, "{closed} is closed even with the password: {out}");
    }
    for unclear in ["/x/../echo", "//echo", "/echo;x", "/%2e%2e/echo", "/x%2fecho", "/x%5cecho"] {
        let (status, out) = curl_path(&server, &host, unclear, &["-u", "alice:s3cret-enough"]).await;
        assert_eq!(status, 400, "{unclear} is refused, not guessed: {out}");
    }
    let (status, out) = curl_path(&server, &host, "/hello", &[]).await;
    assert_eq!(status, 200, "GET /hello is open: {out}");
    let (status, _) = curl_path(&server, &host, "/hello", &["--http2-prior-knowledge"]).await;
    assert_eq!(status, 200, "the same over HTTP/2");
    let (status, _) =
        curl_path(&server, &host, "/echo", &["--http2-prior-knowledge", "-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 403, "closed over HTTP/2 too");

    let (status, out) = curl_path(&server, &host, "/headers", &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 401, "the password does not open a token path: {out}");
    assert!(out.to_ascii_lowercase().contains("www-authenticate: bearer realm="), "{out}");
    let token = ["-H", "Authorization: Bearer machine-token-0123456789"];
    let (status, out) = curl_path(&server, &host, "/headers", &token).await;
    assert_eq!(status, 200, "{out}");
    assert!(!out.contains("authorization"), "the device never sees terrier's token: {out}");
    let (status, _) = curl_path(&server, &host, "/headers", &["-H", "Authorization: Bearer machine-token-wrong"]).await;
    assert_eq!(status, 401);

    let (status, out) = curl_path(&server, &host, "/bytes/10", &[]).await;
    assert_eq!(status, 401, "paths no rule covers take the section's credentials: {out}");
    let (status, _) = curl_path(&server, &host, "/bytes/10", &["-u", "alice:s3cret-enough"]).await;
    assert_eq!(status, 200);
    let (status, _) = curl_path(&server, &host, "/bytes/10", &token).await;
    assert_eq!(status, 200, "or its token");
    let (status, _) = curl_path(&server, &open_host, "/echo", &["-d", "x"]).await;
    assert_eq!(status, 200, "a device outside the fleet is untouched");
}

/// A device's web service that switches to HTTP/2 on `Upgrade: h2c` as
/// Hypercorn does: on the `Upgrade` value alone, trimmed of any Unicode
/// white space, whatever `Connection` says. It records every request head
/// and, after a `101`, the bytes that followed it.
#[derive(Clone)]
struct H2cDevice {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl H2cDevice {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let seen = shared.clone();
                tokio::spawn(async move {
                    let Some((head, _)) = read_head(&mut tcp).await else { return };
                    // Latin-1, as Python decodes it, so obs-text trims too.
                    let head: String = head.iter().map(|&b| char::from(b)).collect();
                    seen.lock().unwrap().push(head.clone());
                    let h2c = head.lines().any(|line| {
                        line.split_once(':').is_some_and(|(name, value)| {
                            name.eq_ignore_ascii_case("upgrade")
                                && value
                                    .split(',')
                                    .any(|t| t.trim_matches(char::is_whitespace).eq_ignore_ascii_case("h2c"))
                        })
                    });
                    if !h2c {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                            .await;
                        return;
                    }
                    let _ = tcp
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n")
                        .await;
                    let mut after = vec![0u8; 1024];
                    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut after)).await {
                        seen.lock().unwrap().push(format!("after 101: {}", String::from_utf8_lossy(&after[..n])));
                    }
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads a head (up to its blank line) from `tcp`, within 5 s; `None` if
/// it closed or stalled first. Returns the head and any bytes after it.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < 64 * 1024 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    None
}

/// An `Upgrade: h2c` on an open path would give the visitor HTTP/2 to the
/// device on that one connection, every later request past the path
/// rules: terrierd forwards such a request without its `Upgrade`, however
/// the value is spelled.
#[tokio::test]
async fn an_h2c_upgrade_opens_no_channel_past_the_path_rules() {
    use terrier_server::access::paths::PathRule;
    init_logging();
    let rules = AccessConfig {
        paths: vec![
            PathRule { prefix: "/".into(), accept: Some(vec![]), ..Default::default() },
            PathRule { prefix: "/admin".into(), deny: true, ..Default::default() },
        ],
        ..Default::default()
    };
    let server = TestServer::start(|c| {
        c.access.insert("lab-*".into(), rules);
    })
    .await;
    let device = H2cDevice::start().await;
    let mut agent = TestAgent::start(server.url(), "lab-h2c", Some(device.addr), &[]);
    let host = terrier_testkit::visitor::device_host(&agent.connected(1).await.subdomain);

    let (status, _) = curl_path(&server, &host, "/admin", &[]).await;
    assert_eq!(status, 403, "/admin is closed");
    for upgrade in ["h2c", "H2C", "websocket, h2c", "h2c\u{a0}"] {
        let mut visitor = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
        let mut head = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nUpgrade: "
        )
        .into_bytes();
        // Latin-1 on the wire, as a raw client sends obs-text.
        head.extend(upgrade.chars().map(|c| u8::try_from(u32::from(c)).expect("latin-1")));
        head.extend_from_slice(b"\r\n\r\n");
        visitor.write_all(&head).await.expect("write");
        let (answer, _) = read_head(&mut visitor).await.expect("an answer");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(!answer.starts_with("HTTP/1.1 101"), "Upgrade: {upgrade:?} switched protocols: {answer}");
        // What an attacker would send next, as HTTP/2, for /admin.
        let _ = visitor.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n(:path /admin)").await;
        drop(visitor);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = device.seen();
    assert!(seen.iter().all(|s| !s.starts_with("after 101")), "bytes past the rules reached the device: {seen:#?}");
    assert!(
        seen.iter().all(|s| !s.to_ascii_lowercase().contains("\nupgrade:")),
        "the device was asked to upgrade: {seen:#?}"
    );
}

/// terrier's bearer token never reaches a device, even on a path that did
/// not need it (a script sends its token everywhere) or beside a password:
/// a device of the fleet could otherwise collect it and open every other
/// device's token paths. The device's own tokens still reach it.
#[tokio::test]
async fn a_fleet_token_never_reaches_a_device_even_where_it_was_not_needed() {
    use terrier_server::access::paths::{Credential, PathRule};
    use terrier_testkit::lenient::LenientDevice;
    init_logging();
    let rules = with_password_and_token(vec![
        PathRule { prefix: "/open".into(), accept: Some(vec![]), ..Default::default() },
        PathRule { prefix: "/api".into(), accept: Some(vec![Credential::Bearer]), ..Default::default() },
    ]);
    let server = TestServer::start(|c| {
        c.access.insert("lab-*".into(), rules);
    })
    .await;
    let device = LenientDevice::start().await;
    let mut agent = TestAgent::start(server.url(), "lab-cam", Some(device.addr), &[]);
    let host = terrier_testkit::visitor::device_host(&agent.connected(1).await.subdomain);
    let token = "Authorization: Bearer machine-token-0123456789";
    let password = "Authorization: Basic YWxpY2U6czNjcmV0LWVub3VnaA=="; // alice:s3cret-enough

    for (path, headers) in [
        ("/open", vec![token]),
        ("/open/x", vec!["Authorization: bearer  machine-token-0123456789 "]),
        ("/other", vec![password, token]),
        ("/api/x", vec![token, password]),
    ] {
        let extra: Vec<&str> = headers.iter().flat_map(|h| ["-H", h]).collect();
        let (status, out) = curl_path(&server, &host, path, &extra).await;
        assert_eq!(status, 200, "{path} {headers:?}: {out}");
        let seen = device.requests().pop().expect("the device got it");
        assert_eq!(seen.target, path);
        let authorization: Vec<&str> = seen
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(!authorization.iter().any(|v| v.contains("machine-token")), "{path} {headers:?}: {authorization:?}");
        let shown_password = headers.contains(&password);
        assert_eq!(authorization.contains(&"Basic YWxpY2U6czNjcmV0LWVub3VnaA=="), shown_password, "{path} {headers:?}");
    }
    let (status, _) = curl_path(&server, &host, "/open", &["-H", "Authorization: Bearer the-device-s-own"]).await;
    assert_eq!(status, 200);
    let seen = device.requests().pop().expect("the device got it");
    assert_eq!(seen.header("authorization"), Some("Bearer the-device-s-own"), "a token not terrier's goes on");
}

/// A device with method rules behind a lenient web service, open but for
/// `POST /cfg` and `GET /reboot`; returns the server, the device and its host.
async fn method_rules_device() -> (TestServer, terrier_testkit::lenient::LenientDevice, TestAgent, String) {
    use terrier_server::access::paths::PathRule;
    let rules = AccessConfig {
        paths: vec![
            PathRule { prefix: "/".into(), accept: Some(vec![]), ..Default::default() },
            PathRule { prefix: "/cfg".into(), methods: vec!["POST".into()], deny: true, ..Default::default() },
            PathRule { prefix: "/reboot".into(), methods: vec!["GET".into()], deny: true, ..Default::default() },
        ],
        ..Default::default()
    };
    let server = TestServer::start(|c| {
        c.access.insert("lab-*".into(), rules);
    })
    .await;
    let device = terrier_testkit::lenient::LenientDevice::start().await;
    let mut agent = TestAgent::start(server.url(), "lab-cam", Some(device.addr), &[]);
    let host = terrier_testkit::visitor::device_host(&agent.connected(1).await.subdomain);
    (server, device, agent, host)
}

/// Werkzeug (Flask) and other servers read a method without regard to
/// case, so `post` is their `POST`: a rule for a method covers it in any case.
#[tokio::test]
async fn a_method_rule_covers_the_method_in_any_case() {
    init_logging();
    let (server, device, _agent, host) = method_rules_device().await;
    for method in ["POST", "post", "Post"] {
        let (status, out) = curl_path(&server, &host, "/cfg", &["-X", method, "-d", "x"]).await;
        assert_eq!(status, 403, "{method} /cfg is closed: {out}");
    }
    let (status, _) = curl_path(&server, &host, "/cfg", &["-X", "put", "-d", "x"]).await;
    assert_eq!(status, 200, "other methods are open");
    assert!(device.requests().iter().all(|r| !r.method.eq_ignore_ascii_case("post")), "{:?}", device.requests());
}

/// Flask, Go's `ServeMux`, Express and most others answer `HEAD` with
/// their `GET` handler (it runs, only its body is dropped): a rule for
/// `GET` covers `HEAD` too.
#[tokio::test]
async fn a_rule_for_get_covers_head() {
    init_logging();
    let (server, device, _agent, host) = method_rules_device().await;
    for flags in [&["-I"][..], &["-X", "head", "-I"]] {
        let (status, out) = curl_path(&server, &host, "/reboot", flags).await;
        assert_eq!(status, 403, "{flags:?} /reboot is closed: {out}");
    }
    let (status, _) = curl_path(&server, &host, "/reboot", &["-d", "x"]).await;
    assert_eq!(status, 200, "POST stays open");
    assert!(device.requests().iter().all(|r| r.method == "POST"), "{:?}", device.requests());
}

/// `%XX` that decode to bytes no UTF-8 text has are read differently:
/// rejected, replaced, or (`%c0%ae`, overlong) decoded to `.` by older
/// servers and Java's modified UTF-8, making `/%c0%ae%c0%ae/admin` an
/// `/admin`. With path rules they are refused; real UTF-8 goes on.
#[tokio::test]
async fn percent_encoded_bytes_that_are_not_utf8_are_refused() {
    init_logging();
    let (server, device, _agent, host) = method_rules_device().await;
    for unclear in ["/x/%c0%ae%c0%ae/cfg", "/%c0%afcfg", "/%e0%80%aecfg", "/%ff", "/%c3", "/%80x"] {
        let (status, out) = curl_path(&server, &host, unclear, &["-d", "x"]).await;
        assert_eq!(status, 400, "{unclear}: {out}");
    }
    let (status, out) = curl_path(&server, &host, "/caf%C3%A9/%e2%82%ac", &[]).await;
    assert_eq!(status, 200, "UTF-8 is fine: {out}");
    assert_eq!(device.requests().len(), 1, "{:?}", device.requests());
}

/// Runs `terrierd token <args>` on `server`'s data dir; returns its stdout.
async fn token_cli(server: &TestServer, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_terrierd"))
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .await
        .expect("run terrierd token");
    assert!(out.status.success(), "terrierd token {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A visitor token minted with `terrierd token create --visitors` opens a
/// fleet's token paths while the server runs, never reaches a device (one
/// outside the fleet included), and stops working once revoked.
#[tokio::test]
async fn a_stored_visitor_token_opens_token_paths_until_revoked() {
    use terrier_server::access::paths::{Credential, PathRule};
    init_logging();
    let rules = AccessConfig {
        paths: vec![PathRule {
            prefix: "/headers".into(),
            accept: Some(vec![Credential::Bearer]),
            ..Default::default()
        }],
        ..Default::default()
    };
    let server = TestServer::start(|c| {
        c.access.insert("lab-*".into(), rules);
    })
    .await;
    let (_cam, host) = TestAgent::web_device(server.url(), "lab-cam").await;
    let (_open, open_host) = TestAgent::web_device(server.url(), "open").await;
    let (status, _) = curl_path(&server, &host, "/headers", &[]).await;
    assert_eq!(status, 401, "a token path without a token");

    let token = token_cli(&server, &["create", "--visitors", "--prefix", "lab-", "--note", "ci"]).await;
    let header = format!("Authorization: Bearer {token}");
    let shown = ["-H", header.as_str()];
    // The server reads new tokens within auth.refresh_interval (1 s).
    let out = eventually(Duration::from_secs(10), "the new visitor token to work", || async {
        let (status, out) = curl_path(&server, &host, "/headers", &shown).await;
        (status == 200).then_some(out)
    })
    .await;
    assert!(!out.contains("authorization"), "the device never sees the token: {out}");
    let id = token.strip_prefix("terrier_").and_then(|rest| rest.split('_').next()).expect("token id");
    let admin = terrier_testkit::admin::AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let log = admin.get("/api/v1/devices/lab-cam/requests").await.json;
    assert_eq!(log["requests"][0]["who"], format!("stored token {id}"), "the request log names the token: {log}");
    let (status, out) = curl_path(&server, &open_host, "/headers", &shown).await;
    assert_eq!(status, 200, "{out}");
    assert!(!out.contains("authorization"), "not even a device outside the fleet: {out}");

    token_cli(&server, &["revoke", id]).await;
    eventually(Duration::from_secs(10), "the revoked token to stop working", || async {
        let (status, _) = curl_path(&server, &host, "/headers", &shown).await;
        (status == 401).then_some(())
    })
    .await;
}
