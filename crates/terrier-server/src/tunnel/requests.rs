//! The request log of each device: its last HTTP requests (method, path,
//! status, time, size and both heads' headers, secrets masked), for the
//! dashboard and the admin API. A log belongs to the device name, not to
//! one session, so it survives reconnects; it is forgotten when the
//! device's lease ends, or (in a cluster, where another node may sweep the
//! lease) once the device has not been online here for `forget_after`. At
//! most `admin.request_log` entries per device, and a bounded amount of
//! path and header text per entry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use serde::Serialize;

/// Header text kept per head and entry, in bytes.
pub const MAX_HEADER_BYTES: usize = 1024;
/// Path kept per entry, in bytes.
pub const MAX_PATH_BYTES: usize = 512;
/// Parts of a header name that mark its value as a credential (`x-api-key`,
/// `x-auth-token`, `x-csrf-token`...): shown as `***`.
const SECRET_NAME_PARTS: &[&str] =
    &["auth", "cookie", "token", "key", "secret", "session", "signature", "password", "csrf", "xsrf"];
/// Headers whose values are URLs: shown without their query (it may carry
/// a token), as the path is.
const URL_HEADERS: &[&str] = &["referer", "origin", "location", "content-location"];

/// The request logs of this node's devices, by name.
#[derive(Default)]
pub struct RequestLogs {
    /// Device name -> its log.
    devices: Mutex<HashMap<String, Arc<DeviceRequests>>>,
}

impl RequestLogs {
    /// A session's hold on device `name`'s log, made empty if it has none.
    pub fn device(&self, name: &str) -> LogHold {
        let log = self.devices.lock().expect("request logs lock").entry(name.to_owned()).or_default().clone();
        log.users.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        LogHold(log)
    }

    /// Forgets the logs no session here has held for `forget_after`: the
    /// device's lease ended, or it lives on another node now.
    pub fn forget_idle(&self, forget_after: std::time::Duration) {
        self.devices.lock().expect("request logs lock").retain(|_, log| {
            log.users.load(std::sync::atomic::Ordering::Acquire) > 0
                || log.idle_since.lock().expect("idle lock").is_none_or(|at| at.elapsed() < forget_after)
        });
    }

    /// The log of device `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<Arc<DeviceRequests>> {
        self.devices.lock().expect("request logs lock").get(name).cloned()
    }

    /// Forgets device `name`'s log (its lease ended).
    pub fn forget(&self, name: &str) {
        self.devices.lock().expect("request logs lock").remove(name);
    }
}

/// One device's last requests, newest last.
#[derive(Debug, Default)]
pub struct DeviceRequests {
    /// The entries.
    log: Mutex<VecDeque<RequestRecord>>,
    /// Sessions of the device on this node using the log now.
    users: std::sync::atomic::AtomicUsize,
    /// When the last of them ended (none yet: made then).
    idle_since: Mutex<Option<std::time::Instant>>,
}

/// A session's hold on its device's log: while one is held, the log is
/// kept; after the last is dropped, for `forget_after` more.
pub struct LogHold(Arc<DeviceRequests>);

impl std::ops::Deref for LogHold {
    type Target = DeviceRequests;
    fn deref(&self) -> &DeviceRequests {
        &self.0
    }
}

impl Drop for LogHold {
    fn drop(&mut self) {
        if self.0.users.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().expect("idle lock") = Some(std::time::Instant::now());
        }
    }
}

impl DeviceRequests {
    /// Appends a request, dropping the oldest beyond `keep`.
    pub fn log(&self, record: RequestRecord, keep: usize) {
        if keep == 0 {
            return;
        }
        let mut log = self.log.lock().expect("request log lock");
        while log.len() >= keep {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// The logged requests, newest first.
    pub fn recent(&self) -> Vec<RequestRecord> {
        self.log.lock().expect("request log lock").iter().rev().cloned().collect()
    }
}

/// One HTTP request through a device's subdomain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived, Unix ms.
    pub at_ms: u64,
    /// HTTP method (kept as `Method`: cloning a standard one allocates
    /// nothing, and this is filled on every proxied request).
    #[serde(serialize_with = "method_as_str")]
    pub method: http::Method,
    /// Path (without the query string, which may carry secrets).
    pub path: String,
    /// Status the device answered (or the error page's status).
    pub status: u16,
    /// Time until the response head, in milliseconds.
    pub duration_ms: u64,
    /// Response body size from `Content-Length`; `None` when streamed.
    pub size: Option<u64>,
    /// The request's headers as the device got them, secrets masked.
    pub request_headers: Headers,
    /// The answer's headers, secrets masked (empty for an error page).
    pub response_headers: Headers,
    /// Whom the access rules let in (`user tech`, `token ci`, `stored
    /// token <id>`); `None` where no credentials were needed.
    pub who: Option<String>,
}

/// Header lines, name and value, in order, at most [`MAX_HEADER_BYTES`] of
/// text (then a last `…` line says how many more). Kept as one string
/// (`name: value` lines), so logging a request costs one allocation and a
/// copy per head; credentials are masked when the lines are read (the
/// admin API), which is rare, instead of on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(String);

impl Headers {
    /// The lines of `headers`, bounded.
    pub fn of(headers: &HeaderMap) -> Self {
        // Bytes first, checked as UTF-8 once at the end: one pass over the
        // whole text instead of one call per value.
        let mut text = Vec::with_capacity(MAX_HEADER_BYTES.min(64 * headers.len()));
        for (i, (name, value)) in headers.iter().enumerate() {
            let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
            // Each line costs its name, ": ", its value and "\n".
            if text.len() + name.len() + value.len() + 3 > MAX_HEADER_BYTES {
                text.extend_from_slice(format!("…: {} more not kept\n", headers.len() - i).as_bytes());
                break;
            }
            text.extend_from_slice(name);
            text.extend_from_slice(b": ");
            text.extend_from_slice(value);
            text.push(b'\n');
        }
        match String::from_utf8(text) {
            Ok(text) => Self(text),
            Err(e) => Self::of_non_utf8(e.as_bytes()),
        }
    }

    /// [`Self::of`]'s text when a value is not UTF-8 (header values may
    /// carry any byte but controls): such values are replaced, line by line.
    #[cold]
    fn of_non_utf8(text: &[u8]) -> Self {
        let mut kept = String::with_capacity(text.len());
        for line in text.split_inclusive(|b| *b == b'\n') {
            match std::str::from_utf8(line) {
                Ok(line) => kept.push_str(line),
                Err(_) => {
                    let name = line.split(|b| *b == b':').next().unwrap_or_default();
                    kept.push_str(&String::from_utf8_lossy(name));
                    kept.push_str(": (not UTF-8)\n");
                }
            }
        }
        Self(kept)
    }

    /// The `(name, value)` lines, credentials masked: a value whose name
    /// contains a [`SECRET_NAME_PARTS`] part is `***`, a URL header loses
    /// its query.
    pub fn lines(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.lines().filter_map(|line| line.split_once(": ")).map(|(name, value)| (name, masked(name, value)))
    }
}

/// `value` of header `name` as it may be shown.
fn masked<'a>(name: &str, value: &'a str) -> &'a str {
    if SECRET_NAME_PARTS.iter().any(|part| name.contains(part)) {
        "***"
    } else if URL_HEADERS.contains(&name) {
        value.split(['?', '#']).next().unwrap_or_default()
    } else {
        value
    }
}

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.lines())
    }
}

/// `path` cut to at most [`MAX_PATH_BYTES`] (on a character boundary).
pub fn bounded_path(path: &str) -> String {
    let mut end = path.len().min(MAX_PATH_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

/// Serializes a method as its name ("GET").
fn method_as_str<S: serde::Serializer>(method: &http::Method, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(method.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> RequestRecord {
        RequestRecord {
            at_ms: 1,
            method: http::Method::GET,
            path: path.into(),
            status: 200,
            duration_ms: 1,
            size: None,
            request_headers: Headers::default(),
            response_headers: Headers::default(),
            who: None,
        }
    }

    #[test]
    fn paths_are_cut_on_a_character_boundary() {
        assert_eq!(bounded_path("/short"), "/short");
        let long = format!("/{}", "é".repeat(MAX_PATH_BYTES));
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_PATH_BYTES && long.starts_with(&cut), "{}", cut.len());
    }

    #[test]
    fn a_log_no_session_holds_is_forgotten_after_a_while() {
        let logs = RequestLogs::default();
        let held = logs.device("online");
        drop(logs.device("gone"));
        logs.forget_idle(std::time::Duration::from_secs(60));
        assert!(logs.get("gone").is_some(), "kept for a while after its session");
        logs.forget_idle(std::time::Duration::ZERO);
        assert!(logs.get("gone").is_none());
        assert!(logs.get("online").is_some(), "a held log is kept");
        drop(held);
    }

    #[test]
    fn a_device_log_keeps_the_newest_n_across_sessions() {
        let logs = RequestLogs::default();
        for i in 0..5 {
            logs.device("cam").log(record(&format!("/{i}")), 3);
        }
        let paths: Vec<String> = logs.get("cam").unwrap().recent().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/4", "/3", "/2"]);
        logs.device("cam").log(record("/x"), 0);
        assert_eq!(logs.device("cam").recent().len(), 3, "keep = 0 logs nothing");
        logs.forget("cam");
        assert!(logs.get("cam").is_none());
    }

    #[test]
    fn secrets_are_masked_and_header_text_is_bounded() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Basic c2VjcmV0".parse().unwrap());
        headers.insert("cookie", "session=abc".parse().unwrap());
        headers.insert("accept", "text/html".parse().unwrap());
        headers.insert("x-api-key", "sk_live_1".parse().unwrap());
        headers.insert("x-auth-token", "tok_1".parse().unwrap());
        headers.insert("referer", "https://app/page?access_token=s3cret#frag".parse().unwrap());
        let kept = Headers::of(&headers);
        let lines: Vec<(&str, &str)> = kept.lines().collect();
        assert!(lines.contains(&("authorization", "***")), "{lines:?}");
        assert!(lines.contains(&("cookie", "***")), "{lines:?}");
        assert!(lines.contains(&("accept", "text/html")), "{lines:?}");
        assert!(lines.contains(&("x-api-key", "***")) && lines.contains(&("x-auth-token", "***")), "{lines:?}");
        assert!(lines.contains(&("referer", "https://app/page")), "a URL loses its query: {lines:?}");
        assert_eq!(serde_json::to_value(&kept).unwrap()[0], serde_json::json!(["authorization", "***"]));

        let mut big = HeaderMap::new();
        for i in 0..100 {
            big.append(
                http::header::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                "v".repeat(50).parse().unwrap(),
            );
        }
        let kept = Headers::of(&big);
        let lines: Vec<(&str, &str)> = kept.lines().collect();
        assert!(kept.0.len() <= MAX_HEADER_BYTES + 40, "{}", kept.0.len());
        let last = lines.last().unwrap();
        assert!(last.0 == "…" && last.1.ends_with("more not kept"), "{lines:?}");
    }

    #[test]
    fn a_value_that_is_not_utf8_is_replaced_and_the_rest_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", "text/html".parse().unwrap());
        headers.insert("x-latin1", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        headers.insert("x-after", "ok".parse().unwrap());
        let kept = Headers::of(&headers);
        let lines: Vec<(&str, &str)> = kept.lines().collect();
        assert_eq!(lines, [("accept", "text/html"), ("x-latin1", "(not UTF-8)"), ("x-after", "ok")]);
    }
}
