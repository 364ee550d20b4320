//! The agent's bytes on the wire, checked against a scripted peer that plays
//! the server's side of `docs/PROTOCOL.md` with tokio-tungstenite (which
//! also enforces RFC 6455: masked client frames, valid headers). The real
//! `terrierd` tests (host.rs) show the agent works; these show it says
//! exactly what the protocol asks — things the server tolerates today but
//! will rely on: the `Authorization` header on both handshakes, an empty
//! binary frame before Close, the redirect hop counter, the reason on a 400.

mod common;

use std::net::SocketAddr;

use common::{config, led_device, next, spawn_agent, spawn_agent_with_pool, Note, STEP};
use futures_util::{SinkExt, StreamExt};
use terrier_testkit::init_logging;
use terrier_testkit::upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const SESSION: &str = "0123456789abcdef0123456789abcdef";
const STREAM: &str = "fedcba9876543210fedcba9876543210";

/// Accepts one WebSocket on `listener`; returns it with the request's target
/// and `Authorization` header.
// tungstenite's handshake callback type fixes its (large) error type.
#[allow(clippy::result_large_err)]
async fn accept(listener: &TcpListener) -> (WebSocketStream<TcpStream>, String, Option<String>) {
    let (tcp, _) = timeout(STEP, listener.accept()).await.expect("agent connects").unwrap();
    let mut seen = (String::new(), None);
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, mut resp: Response| {
        seen.0 = req.uri().to_string();
        seen.1 = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
        let proto = req.headers().get("sec-websocket-protocol").expect("sub-protocol offered").clone();
        assert_eq!(proto, "terrier.v1");
        resp.headers_mut().insert("sec-websocket-protocol", proto);
        Ok(resp)
    })
    .await
    .expect("a valid WebSocket handshake");
    (ws, seen.0, seen.1)
}

async fn recv(ws: &mut WebSocketStream<TcpStream>) -> Message {
    timeout(STEP, ws.next()).await.expect("a frame in time").expect("socket open").expect("valid frame")
}

fn welcome() -> Message {
    Message::text(format!(
        r#"{{"welcome":{{"session":"{SESSION}","name":"wired","subdomain":"abcdefghij","url":"http://abcdefghij.localhost","tcp_host":"localhost","tcp":[{{"service":"echo","port":20001}}],"grace_secs":600,"heartbeat_secs":20}}}}"#
    ))
}

#[tokio::test]
async fn handshakes_carry_the_token_and_streams_end_with_an_empty_frame_before_close() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let echo = upstream::tcp_echo().await;
            let mut notes = spawn_agent(
                config(listener.local_addr().unwrap(), "wired", &["echo"]),
                led_device(vec![("echo", echo)]),
                1,
            );

            let (mut control, target, auth) = accept(&listener).await;
            let expected = format!(
                "/v1/control?name=wired&http=1&tcp=echo&agent=terrier-embedded%2F{}&platform=host-test",
                env!("CARGO_PKG_VERSION")
            );
            assert_eq!(target, expected);
            assert_eq!(auth.as_deref(), Some("Bearer device-token-for-the-coming-auth"));
            control.send(welcome()).await.unwrap();
            let _ = next(&mut notes, "connected", |n| matches!(n, Note::Connected { .. }).then_some(())).await;

            // The agent answers pings on the control socket (with the payload).
            control.send(Message::Ping(b"hb".to_vec().into())).await.unwrap();
            assert_eq!(recv(&mut control).await, Message::Pong(b"hb".to_vec().into()));
            // Unknown messages are ignored, not fatal.
            control.send(Message::text(r#"{"from_the_future":{"x":1}}"#)).await.unwrap();

            control
                .send(Message::text(format!(r#"{{"open":{{"stream":"{STREAM}","service":"echo"}}}}"#)))
                .await
                .unwrap();
            let (mut data, target, auth) = accept(&listener).await;
            assert_eq!(target, format!("/v1/data?session={SESSION}&stream={STREAM}"));
            assert_eq!(auth.as_deref(), Some("Bearer device-token-for-the-coming-auth"));

            // 40 KB in one frame (larger than every agent buffer), then half-close.
            let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            data.send(Message::binary(payload.clone())).await.unwrap();
            data.send(Message::binary(Vec::new())).await.unwrap();
            let mut back = Vec::new();
            loop {
                match recv(&mut data).await {
                    Message::Binary(b) if b.is_empty() => break,
                    Message::Binary(b) => {
                        assert!(b.len() <= 2048, "agent frames stay within its buffer");
                        back.extend_from_slice(&b);
                    }
                    other => panic!("expected bytes then an empty frame, got {other:?}"),
                }
            }
            assert_eq!(back, payload, "echoed intact");
            // Both directions ended: the agent closes.
            assert!(matches!(recv(&mut data).await, Message::Close(_)), "Close after the empty frame");
            let ended = next(&mut notes, "stream end", |n| match n {
                Note::StreamEnded(r) => Some(r),
                _ => None,
            })
            .await;
            assert_eq!(ended, Ok(80_000));

            // go_away then 4001: the agent comes back after the given delay.
            control.send(Message::text(r#"{"go_away":{"after_ms":50}}"#)).await.unwrap();
            control
                .send(Message::Close(Some(CloseFrame { code: CloseCode::from(4001), reason: "".into() })))
                .await
                .unwrap();
            let why = next(&mut notes, "disconnect", |n| match n {
                Note::Disconnected(why) => Some(why),
                _ => None,
            })
            .await;
            assert_eq!(why, "Closed(Some(4001))");
            let (_again, target, _) = accept(&listener).await;
            assert!(target.starts_with("/v1/control?name=wired"), "{target}");
        })
        .await;
}

/// Answers one HTTP request on `listener` with `response` and returns the request head.
async fn answer_raw(listener: &TcpListener, response: String) -> String {
    let (mut tcp, _) = timeout(STEP, listener.accept()).await.expect("agent connects").unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(STEP, tcp.read(&mut buf)).await.expect("request in time").unwrap();
        assert!(n > 0, "request head complete");
        head.extend_from_slice(&buf[..n]);
    }
    tcp.write_all(response.as_bytes()).await.unwrap();
    String::from_utf8(head).unwrap()
}

fn redirect_to(addr: SocketAddr) -> String {
    format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{addr}/\r\nContent-Length: 0\r\n\r\n")
}

#[tokio::test]
async fn redirects_count_hops_and_stop_after_three() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let nodes = [(); 5].map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
            let nodes: Vec<TcpListener> = nodes
                .into_iter()
                .map(|l| {
                    l.set_nonblocking(true).unwrap();
                    TcpListener::from_std(l).unwrap()
                })
                .collect();
            let mut notes = spawn_agent(config(nodes[0].local_addr().unwrap(), "hopper", &[]), led_device(vec![]), 1);
            // Node 0 -> 1 -> 2 -> 3 -> 4: the fourth redirect is one too many.
            for hop in 0..4 {
                let head = answer_raw(&nodes[hop], redirect_to(nodes[hop + 1].local_addr().unwrap())).await;
                let request_line = head.lines().next().unwrap();
                if hop == 0 {
                    assert!(!request_line.contains("hops="), "{request_line}");
                } else {
                    assert!(request_line.contains(&format!("&hops={hop} ")), "{request_line}");
                }
                let host = nodes[hop].local_addr().unwrap();
                assert!(head.contains(&format!("\r\nHost: {host}\r\n")), "{head}");
            }
            let why = next(&mut notes, "disconnect", |n| match n {
                Note::Disconnected(why) => Some(why),
                _ => None,
            })
            .await;
            assert_eq!(why, "TooManyRedirects");
        })
        .await;
}

#[tokio::test]
async fn a_400_stops_the_agent_with_the_servers_reason_and_503_retries() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut notes = spawn_agent(config(listener.local_addr().unwrap(), "refused", &[]), led_device(vec![]), 1);
            let busy = "no capacity\n";
            answer_raw(
                &listener,
                format!("HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{busy}", busy.len()),
            )
            .await;
            let why = next(&mut notes, "disconnect", |n| match n {
                Note::Disconnected(why) => Some(why),
                _ => None,
            })
            .await;
            assert!(why.contains("status: 503") && why.contains("no capacity"), "{why}");
            let reason = "name \"Bad\" is not [a-z0-9-]\n";
            answer_raw(
                &listener,
                format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{reason}", reason.len()),
            )
            .await;
            let fatal = next(&mut notes, "fatal", |n| match n {
                Note::Fatal(reason) => Some(reason),
                _ => None,
            })
            .await;
            assert_eq!(fatal, "name \"Bad\" is not [a-z0-9-]");
        })
        .await;
}

#[tokio::test]
async fn a_pooled_socket_quotes_the_session_waits_for_assign_and_is_refilled() {
    init_logging();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let echo = upstream::tcp_echo().await;
            let config = config(listener.local_addr().unwrap(), "wired", &["echo"]);
            let mut notes = spawn_agent_with_pool(config, led_device(vec![("echo", echo)]), 0, 1);
            let (mut control, _, _) = accept(&listener).await;
            control.send(welcome()).await.unwrap();

            let (mut pooled, target, auth) = accept(&listener).await;
            assert_eq!(target, format!("/v1/data?session={SESSION}&pool=1"));
            assert_eq!(auth.as_deref(), Some("Bearer device-token-for-the-coming-auth"));
            // Parked sockets answer pings too.
            pooled.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
            assert_eq!(recv(&mut pooled).await, Message::Pong(b"p".to_vec().into()));
            // `assign` and the visitor's first bytes may arrive together.
            pooled
                .feed(Message::text(format!(r#"{{"assign":{{"stream":"{STREAM}","service":"echo"}}}}"#)))
                .await
                .unwrap();
            pooled.feed(Message::binary(b"hello".to_vec())).await.unwrap();
            pooled.send(Message::binary(Vec::new())).await.unwrap();
            assert_eq!(recv(&mut pooled).await, Message::binary(b"hello".to_vec()));
            assert_eq!(recv(&mut pooled).await, Message::binary(Vec::new()));
            assert!(matches!(recv(&mut pooled).await, Message::Close(_)));
            let ended = next(&mut notes, "stream end", |n| match n {
                Note::StreamEnded(r) => Some(r),
                _ => None,
            })
            .await;
            assert_eq!(ended, Ok(10));

            // The pool is refilled.
            let (mut refill, target, _) = accept(&listener).await;
            assert_eq!(target, format!("/v1/data?session={SESSION}&pool=1"));

            // An `assign` for a service the device cannot open: the socket is
            // dropped and the control socket says why.
            let assign = format!(r#"{{"assign":{{"stream":"{STREAM}","service":"nope"}}}}"#);
            refill.send(Message::text(assign)).await.unwrap();
            assert!(matches!(recv(&mut refill).await, Message::Close(_)), "socket dropped");
            match recv(&mut control).await {
                Message::Text(t) => {
                    assert!(t.starts_with(&format!(r#"{{"refused":{{"stream":"{STREAM}","reason":""#)), "{t}")
                }
                other => panic!("expected refused, got {other:?}"),
            }
            let (_next, _, _) = accept(&listener).await;
        })
        .await;
}
