//! The optional separate metrics listener (`admin.metrics_listen`): plain
//! HTTP serving `GET /metrics` without a token, for a Prometheus that
//! reaches a port the public cannot (the usual way to run a scraper).

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::Admin;

/// Serves `/metrics` on `listener` until the node shuts down.
pub async fn serve(admin: Arc<Admin>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = admin.lifecycle.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let admin2 = admin.clone();
        admin.lifecycle.tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let admin = admin2.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(if req.uri().path() == super::METRICS_PATH {
                        super::metrics_response(&admin)
                    } else {
                        super::error(StatusCode::NOT_FOUND, "only /metrics is served here")
                    })
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(std::time::Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}
