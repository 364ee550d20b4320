//! The HTML pages visitors see when a device cannot answer: unknown
//! subdomain (404), device offline (503), device too slow (504), local service
//! refused (502), bad request (400).
//!
//! One self-contained template (no external assets) with `{{status}}`,
//! `{{title}}`, `{{message}}`, `{{detail}}` and `{{host}}` placeholders. An
//! operator replaces it per status with `<pages_dir>/<status>.html`, or for
//! all statuses with `<pages_dir>/page.html`. Values are HTML-escaped.
//!
//! The server's own front page is in [`front`].

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use crate::ingress::Body;

pub mod front;

/// The built-in template.
const DEFAULT_TEMPLATE: &str = include_str!("page.html");

/// Statuses an operator may give their own template for.
const STATUSES: [u16; 6] = [400, 404, 431, 502, 503, 504];

/// Loaded page templates.
#[derive(Debug, Clone)]
pub struct Pages {
    /// Template used when no per-status one exists.
    fallback: String,
    /// Per-status templates from the operator.
    by_status: HashMap<u16, String>,
}

/// What one error page says.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// HTTP status.
    pub status: StatusCode,
    /// Headline.
    pub title: &'a str,
    /// One or two sentences for the visitor.
    pub message: &'a str,
    /// Technical detail (small print).
    pub detail: &'a str,
    /// The host the visitor asked for.
    pub host: &'a str,
}

impl Default for Pages {
    fn default() -> Self {
        Self { fallback: DEFAULT_TEMPLATE.to_owned(), by_status: HashMap::new() }
    }
}

impl Pages {
    /// Loads the operator's templates from `dir` (missing files fall back to
    /// the built-in page).
    pub fn load(dir: Option<&Path>) -> std::io::Result<Self> {
        let mut pages = Self::default();
        let Some(dir) = dir else { return Ok(pages) };
        let read = |name: &str| match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(text) = read("page.html")? {
            pages.fallback = text;
        }
        for status in STATUSES {
            if let Some(text) = read(&format!("{status}.html"))? {
                pages.by_status.insert(status, text);
            }
        }
        Ok(pages)
    }

    /// Renders `page` into an HTML response.
    pub fn render(&self, page: Page<'_>) -> Response<Body> {
        let template = self.by_status.get(&page.status.as_u16()).unwrap_or(&self.fallback);
        let html = template
            .replace("{{status}}", page.status.as_str())
            .replace("{{title}}", &escape(page.title))
            .replace("{{message}}", &escape(page.message))
            .replace("{{detail}}", &escape(page.detail))
            .replace("{{host}}", &escape(page.host));
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(html))));
        *response.status_mut() = page.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, "text/html; charset=utf-8".parse().expect("static header"));
        headers.insert(CACHE_CONTROL, "no-store".parse().expect("static header"));
        response
    }
}

/// The page templates in use, replaceable at run time (`SIGHUP` re-reads
/// `pages_dir`, so an operator's new page shows without a restart).
#[derive(Debug)]
pub struct LivePages {
    /// The templates now in use.
    current: std::sync::RwLock<std::sync::Arc<Pages>>,
    /// Where operator templates come from.
    dir: Option<std::path::PathBuf>,
}

impl LivePages {
    /// Loads the templates of `dir` (or the built-in page).
    pub fn load(dir: Option<&Path>) -> std::io::Result<Self> {
        let pages = Pages::load(dir)?;
        Ok(Self { current: std::sync::RwLock::new(std::sync::Arc::new(pages)), dir: dir.map(Path::to_owned) })
    }

    /// Renders `page` with the current templates.
    pub fn render(&self, page: Page<'_>) -> Response<Body> {
        let pages = self.current.read().expect("pages lock").clone();
        pages.render(page)
    }

    /// Re-reads the templates; on error the old ones stay.
    pub fn reload(&self) -> std::io::Result<()> {
        let pages = Pages::load(self.dir.as_deref())?;
        *self.current.write().expect("pages lock") = std::sync::Arc::new(pages);
        Ok(())
    }
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let pages = Pages::default();
        let res = pages.render(Page {
            status: StatusCode::NOT_FOUND,
            title: "No <script>",
            message: "a & b",
            detail: "\"q\"",
            host: "x.localhost",
        });
        assert_eq!(res.status(), 404);
        let Either::Right(body) = res.into_body() else { panic!("page body") };
        let bytes =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body)).unwrap().unwrap().to_bytes();
        let html = std::str::from_utf8(&bytes).unwrap();
        assert!(html.contains("No &lt;script&gt;"));
        assert!(html.contains("a &amp; b"));
        assert!(!html.contains("{{"));
    }

    #[test]
    fn operator_templates_override_per_status() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("503.html"), "offline: {{title}}").unwrap();
        let pages = Pages::load(Some(dir.path())).unwrap();
        assert!(pages.by_status.contains_key(&503));
        assert!(!pages.by_status.contains_key(&404));
    }
}
