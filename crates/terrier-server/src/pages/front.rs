//! The server's own front page (`/` on its domain or its IP address): what
//! this server is and where the dashboard is. The version and the number of
//! devices online tell a stranger which advisories apply and how busy the
//! node is, so only a request with the admin token sees them.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::{Either, Full};

use super::escape;
use crate::ingress::Body;
use crate::ServerConfig;

/// The built-in front page.
const TEMPLATE: &str = include_str!("front.html");

/// The front page; `online` is the node's device count, given only to the
/// operator (a request with the admin token).
pub fn render(config: &ServerConfig, online: Option<usize>) -> Response<Body> {
    let device_url = config.device_url("<subdomain>");
    let operator = match online {
        Some(n) => format!("<p>terrierd {} — {n} device(s) online on this node.</p>", env!("CARGO_PKG_VERSION")),
        None => String::new(),
    };
    let html = TEMPLATE.replace("{{device_url}}", &escape(&device_url)).replace("{{operator}}", &operator);
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(html))));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The operator's view must not be cached for the next visitor.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn strangers_get_what_the_server_is_and_the_dashboard_link_only() {
        let config = ServerConfig::default();
        let page = text(render(&config, None)).await;
        assert!(page.contains("http://&lt;subdomain&gt;.localhost:8080"), "{page}");
        assert!(page.contains("href=\"/dashboard\""), "{page}");
        assert!(!page.contains(env!("CARGO_PKG_VERSION")) && !page.contains("online"), "{page}");
        let page = text(render(&config, Some(3))).await;
        assert!(page.contains("3 device(s) online"), "{page}");
    }
}
