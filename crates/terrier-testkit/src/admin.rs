//! [`AdminClient`]: the admin API of a test server, as an operator's script
//! would call it: JSON over HTTP on the server's own host with the admin
//! token in `Authorization: Bearer`.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// A client for one server's admin API.
#[derive(Clone)]
pub struct AdminClient {
    /// The server's listener.
    pub server: SocketAddr,
    /// The token sent (may be wrong on purpose).
    pub token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// An answer of the API.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body parsed as JSON (`Null` when empty or not JSON).
    pub json: serde_json::Value,
    /// Body as text.
    pub text: String,
}

impl AdminClient {
    /// A client sending `token` (None: no `Authorization` header).
    pub fn new(server: SocketAddr, token: Option<String>) -> Self {
        Self { server, token, client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// A client with the token a server generated in `data_dir` (waiting
    /// for the starting server to write it).
    pub async fn from_data_dir(server: SocketAddr, data_dir: &Path) -> Self {
        let file = data_dir.join("admin.token");
        let token = crate::eventually(std::time::Duration::from_secs(10), "admin.token in the data dir", || async {
            std::fs::read_to_string(&file).ok().filter(|t| t.ends_with('\n'))
        })
        .await;
        Self::new(server, Some(token.trim().to_owned()))
    }

    /// Sends `method path` on host `localhost` with an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.server, path))
            .header(http::header::HOST, "localhost");
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(json) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let response = self.client.request(req.body(Full::new(bytes)).expect("request")).await.expect("admin call");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Reply { status, headers, json, text }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }
}
