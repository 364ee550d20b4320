//! Test harness for terrier's end-to-end tests: a real `terrierd` and real
//! agents in-process on port 0 ([`server`], [`agent`]), real upstream
//! services for the device side ([`upstream`], and a deliberately lenient
//! one in [`lenient`]) and visitors that talk to a device by `Host`: an
//! HTTP client ([`visitor`]) and raw bytes on a socket ([`raw_visitor`]).
//! Everything binds 127.0.0.1:0 and stops on drop, so tests run in
//! parallel without fixed ports.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod browser;
pub mod lenient;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod raw_visitor;
pub mod redis;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod visitor;

use std::future::Future;
use std::time::Duration;

pub use agent::TestAgent;
pub use redis::RedisServer;
pub use server::TestServer;

/// Polls `check` every 20 ms until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= until {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends test logs to the test's output (shown on failure); `RUST_LOG` filters.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}
