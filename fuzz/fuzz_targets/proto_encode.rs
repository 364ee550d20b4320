//! Control-message encoding from arbitrary field values, the direction the
//! fuzzer cannot reach through `proto_decode`: any message a peer builds,
//! with its free text made plain (`terrier_proto::messages::plain_char`, as
//! the agent does for a `refused` reason), encodes to the same bytes with
//! both encoders and decodes back to the same message with both decoders.
//!
//! Before the agent mapped its reasons through `plain_char`, a reason such
//! as `unknown service "22"` was sent escaped and failed the server's decoder.
//!
//! Input: a byte choosing the message, then its fields separated by NUL
//! (text, lossily UTF-8). `welcome`: session, name, subdomain, url,
//! tcp_host, grace_secs, heartbeat_secs, then service/port pairs; `open`,
//! `assign`: stream, service; `go_away`: after_ms; `refused`: stream, reason.
//! Numbers that do not parse count as their field's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use terrier_fuzz::core_decode;
use terrier_proto::limits::MAX_SERVICES;
use terrier_proto::messages::{plain_char, GoAway};
use terrier_proto::{AgentMessage, Open, Refused, ServerMessage, TcpPort, Welcome};

/// Same bytes from both encoders; same message back from both decoders.
macro_rules! check {
    ($ty:ident, $msg:expr) => {{
        let msg = $msg;
        let json = serde_json::to_vec(&msg).expect("encodes");
        let mut buf = vec![0u8; json.len() + 16];
        let n = serde_json_core::to_slice(&msg, &mut buf).expect("serde-json-core encodes");
        assert_eq!(&buf[..n], json.as_slice(), "the two encoders disagree on {msg:?}");
        let back = serde_json::from_slice::<$ty>(&json).unwrap_or_else(|e| panic!("serde_json: {e} in {msg:?}"));
        assert_eq!(back, msg);
        let back = core_decode::<$ty>(&json).expect("serde-json-core decodes what it encoded");
        assert_eq!(back, msg);
    }};
}

fuzz_target!(|data: &[u8]| {
    let [kind, rest @ ..] = data else { return };
    let fields: Vec<String> =
        rest.split(|&b| b == 0).map(|f| String::from_utf8_lossy(f).chars().map(plain_char).collect()).collect();
    let field = |i: usize| fields.get(i).map_or("", String::as_str);
    let number = |i: usize| field(i).parse::<u32>().unwrap_or(field(i).len() as u32);
    match kind % 5 {
        0 => {
            let mut tcp = heapless::Vec::<TcpPort<'_>, MAX_SERVICES>::new();
            for pair in fields.get(7..).unwrap_or_default().chunks(2).take(MAX_SERVICES) {
                let port = pair.get(1).map_or(0, |p| p.parse::<u16>().unwrap_or(p.len() as u16));
                tcp.push(TcpPort { service: &pair[0], port }).expect("at most MAX_SERVICES");
            }
            check!(
                ServerMessage,
                ServerMessage::Welcome(Welcome {
                    session: field(0),
                    name: field(1),
                    subdomain: field(2),
                    url: field(3),
                    tcp_host: field(4),
                    tcp,
                    grace_secs: number(5),
                    heartbeat_secs: number(6),
                })
            );
        }
        1 => check!(ServerMessage, ServerMessage::Open(Open { stream: field(0), service: field(1) })),
        2 => check!(ServerMessage, ServerMessage::Assign(Open { stream: field(0), service: field(1) })),
        3 => check!(ServerMessage, ServerMessage::GoAway(GoAway { after_ms: number(0) })),
        _ => check!(AgentMessage, AgentMessage::Refused(Refused { stream: field(0), reason: field(1) })),
    }
});
