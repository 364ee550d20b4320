//! Live updates for the dashboard: a WebSocket at `/api/v1/live` that sends
//! the device list (with traffic counters) once a second. The client proves
//! it holds the admin token with its first text frame, because browsers
//! cannot set an `Authorization` header on a WebSocket.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::Admin;
use crate::ingress::{empty, Body};
use crate::tunnel::{upgrade, ControlSocket};

/// Path of the live socket.
pub const PATH: &str = "/api/v1/live";
/// How often a snapshot is sent.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long the client has to send the token.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted from a dashboard (the token).
const MAX_FRAME_BYTES: usize = 4096;
/// Close code for a wrong token (private range, like HTTP 401).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Answers the upgrade and runs the socket in a node task.
pub fn upgrade(admin: Arc<Admin>, mut req: Request<Incoming>) -> Response<Body> {
    let accept = match upgrade::accept(req.headers()) {
        Ok(accept) => accept,
        Err(reason) => return super::error(StatusCode::BAD_REQUEST, reason),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let admin2 = admin.clone();
    admin.lifecycle.tasks.spawn(async move {
        match upgrade::websocket(on_upgrade, MAX_FRAME_BYTES).await {
            Ok(ws) => run(admin2, ws).await,
            Err(e) => tracing::debug!(error = %e, "live socket upgrade failed"),
        }
    });
    empty(accept)
}

async fn run(admin: Arc<Admin>, mut ws: ControlSocket) {
    let first = tokio::time::timeout(AUTH_TIMEOUT, ws.next()).await;
    let authorized = matches!(&first, Ok(Some(Ok(Message::Text(t)))) if admin.token.verify(t.as_str().trim()));
    if !authorized {
        let frame = CloseFrame { code: CloseCode::from(CLOSE_UNAUTHORIZED), reason: "wrong admin token".into() };
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
        return;
    }
    let mut ticker = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            () = admin.lifecycle.shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return;
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ticker.tick() => {
                if send_snapshot(&admin, &mut ws).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send_snapshot(admin: &Admin, ws: &mut ControlSocket) -> Result<(), ()> {
    let body = match super::api::all_devices(admin).await {
        Ok(devices) => serde_json::json!({
            "at_ms": crate::store::now_ms(),
            "devices_online": admin.sessions.len(),
            "devices": devices,
        }),
        Err(e) => serde_json::json!({ "at_ms": crate::store::now_ms(), "error": e.to_string() }),
    };
    let text = serde_json::to_string(&body).map_err(|_| ())?;
    match tokio::time::timeout(INTERVAL * 5, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
