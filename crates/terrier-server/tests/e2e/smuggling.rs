//! Request smuggling through the vhost (issue 22), against a deliberately
//! lenient device service ([`LenientDevice`]: a line ends at a bare LF,
//! header names are trimmed, chunk sizes wrap, ...) behind a real agent.
//!
//! Each case writes an attacker's raw bytes to the vhost; then an honest
//! visitor asks every device of the case for `GET /private` with a cookie.
//! For every case: each device parsed exactly the requests terrierd routed
//! to it and logged (nothing hidden in a body), the honest visitor gets its
//! own answer, and its cookie is never inside another request. Where
//! terrierd refuses, the visitor gets 400 and no device gets the request.
//! The cases of a group all run, and a failure lists every case that broke.

use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use terrier_server::access::{AccessConfig, BasicUser};
use terrier_testkit::admin::AdminClient;
use terrier_testkit::lenient::{LenientDevice, HANG_UP_PATH, HTTP10_BODY_BYTES, HTTP10_PATH};
use terrier_testkit::raw_visitor::{RawAnswer, RawVisitor};
use terrier_testkit::visitor::device_host;
use terrier_testkit::{eventually, init_logging, TestAgent, TestServer};
use tokio::io::AsyncWriteExt;

/// Bound on the answers to one case's bytes, and on any one answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a device's requests and terrierd's log get to agree.
const SETTLE_WITHIN: Duration = Duration::from_secs(2);
/// The honest visitor's cookie: it may reach a device in its own request only.
const COOKIE: &str = "secret=hunter2-do-not-capture";
/// Basic-auth user of the locked devices.
const USER: &str = "alice";
/// Its password.
const PASSWORD: &str = "s3cret-enough";
/// Body bytes the smuggled `POST /capture` asks for: fewer than the honest
/// visitor's request, so what follows on the device connection completes it
/// (the cookie within them).
const CAPTURE_BYTES: usize = 80;

/// One answer a case's visitor must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The device's answer to this request (`"GET /one"`).
    Seen(&'static str),
    /// terrierd's own answer with this status.
    Status(u16),
}

/// What terrierd must do with a case's bytes.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refuse at once: one answer, with one of these statuses, and no
    /// device gets any of the case's requests.
    Refused(&'static [u16]),
    /// Serve: exactly these answers, in order.
    Answers(&'static [Want]),
    /// Either refuse with 400 or serve with these answers.
    RefusedOr(&'static [Want]),
}

/// The device hosts a case's bytes are written for.
struct Hosts {
    /// An open device.
    a: String,
    /// Another open device.
    b: String,
    /// A device locked with basic auth.
    locked: String,
}

/// One attack.
struct Case {
    /// Named in every failure.
    name: &'static str,
    /// The attacker's bytes. The last request terrierd should see says
    /// `Connection: close`, so the connection ends after its answers.
    bytes: fn(&Hosts) -> String,
    /// What terrierd must do with them.
    expect: Expect,
    /// A request a lenient device finds in the bytes though terrierd must
    /// not route it (`"POST /capture"`): the case's point, checked against
    /// the device alone by
    /// `every_hidden_request_fools_the_lenient_device_sent_to_it_directly`.
    hidden: Option<&'static str>,
}

/// A single `POST /one`, as served.
const ONE: &[Want] = &[Want::Seen("POST /one")];
/// Refused with 400.
const BAD_REQUEST: Expect = Expect::Refused(&[400]);
/// hyper frames a request with both lengths by `Transfer-Encoding` alone
/// and drops `Content-Length` (RFC 9112 §6.3), and folds equal lengths
/// into one, before terrierd sees the head; the device then gets the
/// request framed again, so it is served whole or refused, never split.
const FRAMED_BY_HYPER: Expect = Expect::RefusedOr(ONE);

/// A request the lenient device parses from whatever follows it on its
/// connection: the next visitor's request becomes its body.
fn capture(host: &str) -> String {
    format!("POST /capture HTTP/1.1\r\nHost: {host}\r\nContent-Length: {CAPTURE_BYTES}\r\n\r\n")
}

/// `POST /one` for `host` with `headers` (each ending in CRLF) and `body`,
/// the last request of its connection.
fn post_one(host: &str, headers: &str, body: &str) -> String {
    format!("POST /one HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n{body}")
}

/// `POST /one` with `Content-Length` and `te` (a `Transfer-Encoding` in
/// some spelling). A reader of `Content-Length` takes the whole body; one
/// that reads it as chunked finds the body ended at once and then
/// `capture(host)` as the next request.
fn cl_and_te(host: &str, cl_first: bool, te: &str) -> String {
    let body = format!("0\r\n\r\n{}", capture(host));
    let cl = format!("Content-Length: {}\r\n", body.len());
    let headers = if cl_first { format!("{cl}{te}") } else { format!("{te}{cl}") };
    post_one(host, &headers, &body)
}

/// A chunked body hiding `hidden` behind a bare LF in a chunk extension
/// (`<size>;\n`). A parser that reads the extension up to CRLF finds
/// `\r\n0\r\n\r\n` + `hidden` as the chunk's data; one that ends the line at
/// the LF takes the filler as data, finds the last chunk, and then `hidden`
/// as the next request.
fn lf_extension_body(hidden: &str) -> String {
    let data = format!("\r\n0\r\n\r\n{hidden}");
    let filler = "a".repeat(data.len() - 2);
    format!("{:x};\n{filler}\r\n{data}\r\n0\r\n\r\n", data.len())
}

/// `GET <path>` for `host`, with `extra` headers.
fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
}

/// `Authorization` for the locked devices' user.
fn credentials() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    format!("Authorization: Basic {token}\r\n")
}

/// Conflicting or disguised body framing in the request head.
fn framing_cases() -> Vec<Case> {
    vec![
        Case {
            name: "content-length then transfer-encoding",
            bytes: |h| cl_and_te(&h.a, true, "Transfer-Encoding: chunked\r\n"),
            expect: FRAMED_BY_HYPER,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "transfer-encoding then content-length",
            bytes: |h| cl_and_te(&h.a, false, "Transfer-Encoding: chunked\r\n"),
            expect: FRAMED_BY_HYPER,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "two equal content-lengths",
            bytes: |h| post_one(&h.a, "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            expect: FRAMED_BY_HYPER,
            hidden: None,
        },
        Case {
            name: "two different content-lengths",
            bytes: |h| {
                let body = format!("hello{}", capture(&h.a));
                post_one(&h.a, &format!("Content-Length: 5\r\nContent-Length: {}\r\n", body.len()), &body)
            },
            expect: BAD_REQUEST,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "transfer-encoding `chunked, identity` with content-length",
            bytes: |h| cl_and_te(&h.a, true, "Transfer-Encoding: chunked, identity\r\n"),
            expect: BAD_REQUEST,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "transfer-encoding chunked twice",
            bytes: |h| {
                post_one(
                    &h.a,
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                    "5\r\nhello\r\n0\r\n\r\n",
                )
            },
            expect: Expect::RefusedOr(ONE),
            hidden: None,
        },
        Case {
            name: "transfer-encoding headers chunked and identity, with content-length",
            bytes: |h| cl_and_te(&h.a, true, "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
            expect: BAD_REQUEST,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "transfer-encoding tab chunked",
            bytes: |h| post_one(&h.a, "Transfer-Encoding:\tchunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            expect: Expect::RefusedOr(ONE),
            hidden: None,
        },
        Case {
            name: "transfer-encoding tab chunked with content-length",
            bytes: |h| cl_and_te(&h.a, true, "Transfer-Encoding:\tchunked\r\n"),
            expect: FRAMED_BY_HYPER,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "space before the colon of transfer-encoding, with content-length",
            bytes: |h| cl_and_te(&h.a, true, "Transfer-Encoding : chunked\r\n"),
            expect: BAD_REQUEST,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "transfer-encoding folded onto a continuation line, with content-length",
            bytes: |h| cl_and_te(&h.a, true, "Transfer-Encoding:\r\n chunked\r\n"),
            expect: BAD_REQUEST,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "bare-LF request head",
            bytes: |h| format!("POST /one HTTP/1.1\nHost: {}\nConnection: close\nContent-Length: 5\n\nhello", h.a),
            expect: Expect::RefusedOr(ONE),
            hidden: None,
        },
        Case {
            name: "bare-LF request head with content-length and transfer-encoding",
            bytes: |h| {
                let body = format!("0\r\n\r\n{}", capture(&h.a));
                format!(
                    "POST /one HTTP/1.1\nHost: {}\nConnection: close\nContent-Length: {}\nTransfer-Encoding: chunked\n\n{body}",
                    h.a,
                    body.len()
                )
            },
            expect: FRAMED_BY_HYPER,
            hidden: Some("POST /capture"),
        },
        Case {
            name: "two host headers",
            bytes: |h| get("/one", &h.a, "Host: elsewhere.localhost\r\nConnection: close\r\n"),
            expect: BAD_REQUEST,
            hidden: None,
        },
    ]
}

/// Chunked bodies a strict parser and the lenient device read differently.
fn chunked_cases() -> Vec<Case> {
    vec![
        Case {
            name: "bare LF inside a chunk extension",
            bytes: |h| post_one(&h.a, "Transfer-Encoding: chunked\r\n", &lf_extension_body(&capture(&h.a))),
            expect: Expect::RefusedOr(ONE),
            hidden: Some("POST /capture"),
        },
        Case {
            name: "NUL inside a chunk extension",
            bytes: |h| post_one(&h.a, "Transfer-Encoding: chunked\r\n", "5;\0\r\nhello\r\n0\r\n\r\n"),
            expect: Expect::RefusedOr(ONE),
            hidden: None,
        },
        Case {
            name: "\\x01 inside a chunk extension",
            bytes: |h| post_one(&h.a, "Transfer-Encoding: chunked\r\n", "5;\x01\r\nhello\r\n0\r\n\r\n"),
            expect: Expect::RefusedOr(ONE),
            hidden: None,
        },
        Case {
            name: "CR alone inside a chunk extension",
            bytes: |h| post_one(&h.a, "Transfer-Encoding: chunked\r\n", "5;a\rb\r\nhello\r\n0\r\n\r\n"),
            expect: Expect::RefusedOr(ONE),
            hidden: None,
        },
        Case {
            name: "chunk size of 17 hex digits",
            bytes: |h| post_one(&h.a, "Transfer-Encoding: chunked\r\n", "10000000000000005\r\nhello\r\n0\r\n\r\n"),
            expect: BAD_REQUEST,
            hidden: None,
        },
        Case {
            name: "empty chunk-size line",
            bytes: |h| post_one(&h.a, "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n\r\n0\r\n\r\n"),
            expect: Expect::RefusedOr(ONE),
            hidden: None,
        },
        Case {
            name: "request line in the trailers",
            bytes: |h| {
                let body = format!("5\r\nhello\r\n0\r\nGET /capture HTTP/1.1\r\nHost: {}\r\n\r\n", h.a);
                post_one(&h.a, "Transfer-Encoding: chunked\r\n", &body)
            },
            expect: Expect::RefusedOr(ONE),
            hidden: Some("GET /capture"),
        },
    ]
}

/// Pipelined requests for several devices on one connection.
fn pipelined_cases() -> Vec<Case> {
    vec![
        Case {
            name: "pipelined to two devices",
            bytes: |h| {
                let close = "Connection: close\r\n";
                format!("{}{}{}", get("/one", &h.a, ""), get("/two", &h.b, ""), get("/three", &h.a, close))
            },
            expect: Expect::Answers(&[Want::Seen("GET /one"), Want::Seen("GET /two"), Want::Seen("GET /three")]),
            hidden: None,
        },
        Case {
            name: "bare LF in a chunk extension, then a request to another device",
            bytes: |h| {
                let body = lf_extension_body(&capture(&h.a));
                let smuggling =
                    format!("POST /one HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}", h.a);
                format!("{smuggling}{}", get("/two", &h.b, "Connection: close\r\n"))
            },
            expect: Expect::RefusedOr(&[Want::Seen("POST /one"), Want::Seen("GET /two")]),
            hidden: Some("POST /capture"),
        },
        Case {
            name: "pipelined to a locked device without credentials",
            bytes: |h| {
                let close = "Connection: close\r\n";
                format!("{}{}{}", get("/one", &h.a, ""), get("/two", &h.locked, ""), get("/three", &h.a, close))
            },
            expect: Expect::Answers(&[Want::Seen("GET /one"), Want::Status(401), Want::Seen("GET /three")]),
            hidden: None,
        },
        Case {
            name: "pipelined to a locked device with credentials",
            bytes: |h| {
                let locked = get("/two", &h.locked, &format!("{}Connection: close\r\n", credentials()));
                format!("{}{locked}", get("/one", &h.a, ""))
            },
            expect: Expect::Answers(&[Want::Seen("GET /one"), Want::Seen("GET /two")]),
            hidden: None,
        },
        Case {
            name: "bare LF in a chunk extension hiding a request for the locked device",
            bytes: |h| {
                let hidden = get("/admin", &h.locked, "");
                post_one(&h.a, "Transfer-Encoding: chunked\r\n", &lf_extension_body(&hidden))
            },
            expect: Expect::RefusedOr(ONE),
            hidden: Some("GET /admin"),
        },
        Case {
            name: "content-length and transfer-encoding to the locked device without credentials",
            bytes: |h| cl_and_te(&h.locked, true, "Transfer-Encoding: chunked\r\n"),
            expect: Expect::Refused(&[400, 401]),
            hidden: Some("POST /capture"),
        },
    ]
}

/// One device of a case: a lenient service behind a real agent.
struct Device {
    /// The agent's device name (the admin API's key).
    name: String,
    /// The `Host` visitors use.
    host: String,
    /// Needs basic auth.
    locked: bool,
    /// The service the agent exposes, and what it parsed.
    service: LenientDevice,
    /// Keeps the device online.
    _agent: TestAgent,
}

impl Device {
    async fn start(server: &TestServer, name: String, locked: bool) -> Self {
        let service = LenientDevice::start().await;
        let mut agent = TestAgent::start(server.url(), &name, Some(service.addr), &[]);
        let host = device_host(&agent.connected(1).await.subdomain);
        Self { name, host, locked, service, _agent: agent }
    }

    /// `METHOD /path` of every request the device parsed, sorted.
    fn seen(&self) -> Vec<String> {
        let mut seen: Vec<String> =
            self.service.requests().iter().map(|r| format!("{} {}", r.method, r.path())).collect();
        seen.sort();
        seen
    }
}

/// The name of case `id`'s locked device (its access rule is set at start).
fn locked_name(id: &str) -> String {
    format!("{id}-locked")
}

/// Access rules locking each of `names` with the test user.
fn lock(config: &mut terrier_server::ServerConfig, names: impl IntoIterator<Item = String>) {
    for name in names {
        let user = BasicUser { user: USER.into(), password_sha256: format!("{:x}", Sha256::digest(PASSWORD)) };
        config.access.insert(name, AccessConfig { basic_auth: vec![user], ..Default::default() });
    }
}

/// Runs every case of a group on one server, each with fresh devices (`a`,
/// and with `others` also `b` and `locked`); panics listing the cases that
/// failed.
async fn run_group(group: &str, cases: Vec<Case>, others: bool) {
    init_logging();
    let ids: Vec<String> = (0..cases.len()).map(|i| format!("{group}{i}")).collect();
    let server = TestServer::start(|c| lock(c, ids.iter().map(|id| locked_name(id)))).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let mut failures = Vec::new();
    for (case, id) in cases.iter().zip(&ids) {
        if let Err(failure) = run_case(&server, &admin, id, case, others).await {
            failures.push(failure);
        }
    }
    server.stop().await;
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Runs one case; the error names it and says everything that went wrong.
async fn run_case(server: &TestServer, admin: &AdminClient, id: &str, case: &Case, others: bool) -> Result<(), String> {
    let mut devices = vec![Device::start(server, format!("{id}-a"), false).await];
    if others {
        devices.push(Device::start(server, format!("{id}-b"), false).await);
        devices.push(Device::start(server, locked_name(id), true).await);
    }
    let host = |i: usize| devices.get(i).map_or_else(|| "absent.localhost".to_owned(), |d| d.host.clone());
    let hosts = Hosts { a: host(0), b: host(1), locked: host(2) };

    let mut attacker = RawVisitor::connect(server.addr).await;
    let mut problems = Vec::new();
    if let Err(e) = attacker.send((case.bytes)(&hosts).as_bytes()).await {
        problems.push(format!("sending: {e}"));
    }
    let (answers, error) = attacker.answers(8, ANSWER_WITHIN).await;
    drop(attacker);
    if let Some(error) = error {
        problems.push(format!("reading the answers: {error}"));
    }
    let refused = check_answers(case.expect, &answers, &mut problems);

    for device in &devices {
        match honest_visit(server, device).await {
            Ok(answer) if answer.status == 200 && answer.text().starts_with("seen GET /private #") => {}
            Ok(answer) => problems.push(format!("{}: the honest visitor got {}", device.name, show(&answer))),
            Err(e) => problems.push(format!("{}: the honest visitor: {e}", device.name)),
        }
    }
    for device in &devices {
        check_device(admin, device, refused, &mut problems).await;
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "case `{}`: answers {:?}:\n    {}",
            case.name,
            answers.iter().map(show).collect::<Vec<_>>(),
            problems.join("\n    ")
        )),
    }
}

/// Checks that `device` parsed exactly the requests terrierd logged as
/// answered (only the honest visitor's, when terrierd `refused` the case),
/// and the honest visitor's request on its own.
async fn check_device(admin: &AdminClient, device: &Device, refused: bool, problems: &mut Vec<String>) {
    let (seen, answered, log) = settled(admin, device).await;
    if seen != answered {
        problems.push(format!(
            "{}: the device parsed {seen:?} but terrierd logged {log:?} (the device's refusals: {:?})",
            device.name,
            device.service.refusals()
        ));
    }
    if refused && seen.iter().any(|r| r != "GET /private") {
        problems.push(format!("{}: refused, yet the device got {seen:?}", device.name));
    }
    for request in device.service.requests() {
        let own = request.method == "GET" && request.path() == "/private";
        let cookie = String::from_utf8_lossy(&request.body).contains(COOKIE)
            || (!own && request.headers.iter().any(|(_, v)| v.contains(COOKIE)));
        if cookie || (own && !request.body.is_empty()) {
            problems.push(format!("{}: the honest visitor's request ended up in {request:?}", device.name));
        }
    }
}

/// Checks the attacker's answers against `expect`; whether terrierd refused.
fn check_answers(expect: Expect, answers: &[RawAnswer], problems: &mut Vec<String>) -> bool {
    let refused_with = |statuses: &[u16]| answers.len() == 1 && statuses.contains(&answers[0].status);
    let served_as = |wants: &[Want]| {
        answers.len() == wants.len()
            && answers.iter().zip(wants).all(|(answer, want)| match want {
                Want::Seen(request) => answer.status == 200 && answer.text().starts_with(&format!("seen {request} #")),
                Want::Status(status) => answer.status == *status,
            })
    };
    match expect {
        Expect::Refused(statuses) if refused_with(statuses) => true,
        Expect::Refused(statuses) => {
            problems.push(format!("expected a refusal with one of {statuses:?}"));
            false
        }
        Expect::Answers(wants) if served_as(wants) => false,
        Expect::Answers(wants) => {
            problems.push(format!("expected the answers {wants:?}"));
            false
        }
        Expect::RefusedOr(_) if refused_with(&[400]) => true,
        Expect::RefusedOr(wants) if served_as(wants) => false,
        Expect::RefusedOr(wants) => {
            problems.push(format!("expected a 400 or the answers {wants:?}"));
            false
        }
    }
}

/// An answer in a few words: `200 seen GET /one #1`, `400`.
fn show(answer: &RawAnswer) -> String {
    let text = answer.text();
    match text.starts_with("seen ") {
        true => format!("{} {}", answer.status, text.chars().take(60).collect::<String>()),
        false => answer.status.to_string(),
    }
}

/// An honest visitor's `GET /private` with a cookie (and credentials for a
/// locked device) on a new connection, right after the attack.
async fn honest_visit(server: &TestServer, device: &Device) -> Result<RawAnswer, String> {
    let auth = if device.locked { credentials() } else { String::new() };
    // The cookie first: a device reading this request as another's body
    // gets it in the first bytes.
    let request = format!(
        "GET /private HTTP/1.1\r\nCookie: {COOKIE}\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
        device.host
    );
    let mut visitor = RawVisitor::connect(server.addr).await;
    visitor.send(request.as_bytes()).await?;
    visitor.answer(ANSWER_WITHIN).await?.ok_or_else(|| "closed without an answer".to_owned())
}

/// terrierd's log for `device`, oldest first: `METHOD /path` and status.
async fn log_of(admin: &AdminClient, device: &Device) -> Vec<(String, u64)> {
    let reply = admin.get(&format!("/api/v1/devices/{}/requests", device.name)).await;
    let entries = reply.json["requests"].as_array().cloned().unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    entries
        .iter()
        .rev()
        .map(|e| (format!("{} {}", text(&e["method"]), text(&e["path"])), e["status"].as_u64().unwrap_or(0)))
        .collect()
}

/// The device's parsed requests and terrierd's log of its answered (200)
/// requests, as sorted `METHOD /path` lists, and the whole log (`METHOD
/// /path status`), once the first two agree or [`SETTLE_WITHIN`] passed.
async fn settled(admin: &AdminClient, device: &Device) -> (Vec<String>, Vec<String>, Vec<String>) {
    let snapshot = || async {
        let log = log_of(admin, device).await;
        let mut answered: Vec<String> =
            log.iter().filter(|(_, status)| *status == 200).map(|(r, _)| r.clone()).collect();
        answered.sort();
        let log = log.iter().map(|(request, status)| format!("{request} {status}")).collect();
        (device.seen(), answered, log)
    };
    let agree = || async {
        let (seen, answered, _) = snapshot().await;
        (seen == answered).then_some(())
    };
    // Bounded here without a panic: the case's own message tells what disagrees.
    let _ = tokio::time::timeout(SETTLE_WITHIN, eventually(2 * SETTLE_WITHIN, "agreement", agree)).await;
    snapshot().await
}

#[tokio::test]
async fn conflicting_body_framing_never_smuggles_a_request_into_a_lenient_device() {
    run_group("h", framing_cases(), false).await;
}

#[tokio::test]
async fn malformed_chunked_bodies_never_smuggle_a_request_into_a_lenient_device() {
    run_group("c", chunked_cases(), false).await;
}

#[tokio::test]
async fn pipelined_requests_reach_only_the_device_they_name_and_pass_its_lock() {
    run_group("p", pipelined_cases(), true).await;
}

/// The matrix has teeth: sent straight to the lenient device, each hidden
/// request is parsed as a request of its own (and a smuggled `POST
/// /capture` takes the next request as its body).
#[tokio::test]
async fn every_hidden_request_fools_the_lenient_device_sent_to_it_directly() {
    init_logging();
    let hosts = Hosts { a: "a.localhost".into(), b: "b.localhost".into(), locked: "locked.localhost".into() };
    for case in framing_cases().into_iter().chain(chunked_cases()).chain(pipelined_cases()) {
        let Some(hidden) = case.hidden else { continue };
        let device = LenientDevice::start().await;
        // Without `Connection: close` the device keeps reading, as it does
        // on the connections terrierd keeps.
        let attack = (case.bytes)(&hosts).replace("Connection: close\r\n", "").replace("Connection: close\n", "");
        let honest = format!("GET /private HTTP/1.1\r\nCookie: {COOKIE}\r\nHost: a.localhost\r\n\r\n");
        let mut tcp = tokio::net::TcpStream::connect(device.addr).await.unwrap();
        tcp.write_all(format!("{attack}{honest}").as_bytes()).await.unwrap();
        let what = format!("case `{}`: the device to parse {hidden}", case.name);
        eventually(ANSWER_WITHIN, &what, || async {
            device.requests().iter().any(|r| format!("{} {}", r.method, r.path()) == hidden).then_some(())
        })
        .await;
    }
}

/// A device that reads a request and hangs up without answering: the
/// request is not sent again (a second POST could open the door twice),
/// whether the visitor keeps its connection or not.
#[tokio::test]
async fn post_delete_and_patch_reach_a_device_that_hangs_up_exactly_once() {
    init_logging();
    let server = TestServer::start(|_| {}).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let device = Device::start(&server, "hangs-up".into(), false).await;
    let mut requests = Vec::new();
    for method in ["POST", "DELETE", "PATCH"] {
        for (connection, header) in [("keep-alive", ""), ("close", "Connection: close\r\n")] {
            requests.push((format!("{method} {HANG_UP_PATH}/{connection}"), header));
        }
    }
    let mut problems = Vec::new();
    for (request, header) in &requests {
        let mut visitor = RawVisitor::connect(server.addr).await;
        visitor.send(format!("{request} HTTP/1.1\r\nHost: {}\r\n{header}\r\n", device.host).as_bytes()).await.unwrap();
        match visitor.answer(ANSWER_WITHIN).await {
            Ok(Some(answer)) if answer.status == 502 => {}
            other => problems.push(format!("{request}: expected 502, got {:?}", other.map(|a| a.map(|a| show(&a))))),
        }
    }
    // Every visitor has its answer, so every attempt is in: wait only for
    // the log, bounded here so that the message below says what is missing.
    let log_holds_all = || async { (log_of(&admin, &device).await.len() >= requests.len()).then_some(()) };
    let _ = tokio::time::timeout(SETTLE_WITHIN, eventually(2 * SETTLE_WITHIN, "the log", log_holds_all)).await;
    let logged = log_of(&admin, &device).await;
    let seen = device.seen();
    for (request, _) in &requests {
        let times = seen.iter().filter(|r| *r == request).count();
        if times != 1 {
            problems.push(format!("{request}: the device got it {times} times"));
        }
        if logged.iter().filter(|(r, status)| r == request && *status == 502).count() != 1 {
            problems.push(format!("{request}: not logged once as 502"));
        }
    }
    assert!(problems.is_empty(), "{}\n(terrierd logged {logged:?})", problems.join("\n"));
    server.stop().await;
}

/// An `HTTP/1.0` answer without a length, ended by the device closing,
/// reaches the visitor whole, and the visitor's answer ends at once: not at
/// a server timeout (all of which are set far above the deadline here).
#[tokio::test]
async fn a_close_delimited_http10_answer_reaches_the_visitor_whole_and_ends() {
    init_logging();
    let server = TestServer::start(|c| {
        c.limits.header_read_timeout = Duration::from_secs(60);
        c.limits.http_idle_timeout = Duration::from_secs(120);
    })
    .await;
    let device = Device::start(&server, "old-camera".into(), false).await;
    let mut visitor = RawVisitor::connect(server.addr).await;
    visitor.send(get(HTTP10_PATH, &device.host, "").as_bytes()).await.unwrap();
    let answer = visitor.answer(ANSWER_WITHIN).await;
    let answer = answer.unwrap_or_else(|e| panic!("no whole answer within {ANSWER_WITHIN:?}: {e}"));
    let answer = answer.expect("an answer before the connection closed");
    let mut whole = format!("seen GET {HTTP10_PATH} #1").into_bytes();
    whole.resize(HTTP10_BODY_BYTES, b'.');
    assert_eq!(answer.status, 200);
    assert!(answer.body == whole, "not the whole body: {} ({} bytes)", show(&answer), answer.body.len());
    server.stop().await;
}
