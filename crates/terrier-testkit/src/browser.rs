//! [`Browser`]: a real headless Chromium driven over the Chrome DevTools
//! Protocol (a WebSocket with JSON commands), for dashboard tests.
//!
//! Written against the protocol directly with tokio-tungstenite (already a
//! dependency) instead of a CDP crate: five commands are all the tests need
//! (navigate, evaluate, type, key press, screenshot), and this keeps CI free
//! of a large dependency tree. Chromium comes from Debian (`chromium`,
//! installed by scripts/test.sh) and runs with `--headless --no-sandbox
//! --disable-gpu --disable-background-networking` and a throwaway profile.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to start and print its DevTools address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A headless Chromium with one page open.
pub struct Browser {
    /// The browser process, killed on drop.
    _child: Child,
    /// Its throwaway profile.
    _profile: tempfile::TempDir,
    /// The DevTools connection.
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The page's session id (flat mode).
    session: String,
    /// Last command id.
    next_id: u64,
}

impl Browser {
    /// Starts Chromium with a `width`×`height` page.
    pub async fn start(width: u32, height: u32) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium_path())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium must be installed (scripts/test.sh installs Debian's chromium)");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .expect("chromium prints its DevTools address");
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("DevTools WebSocket");
        let mut browser = Self { _child: child, _profile: profile, ws, session: String::new(), next_id: 0 };
        let target = browser.command(None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached =
            browser.command(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true })).await;
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        browser
            .page(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser
    }

    /// Sends one command (to the browser, or to the page session) and waits
    /// for its result; events in between are skipped.
    async fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).await.expect("send DevTools command");
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, async {
            while let Some(frame) = self.ws.next().await {
                let Ok(Message::Text(text)) = frame else { continue };
                let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
                if value["id"] == id {
                    return value;
                }
            }
            panic!("DevTools connection closed");
        })
        .await
        .unwrap_or_else(|_| panic!("DevTools {method} answered within {COMMAND_TIMEOUT:?}"));
        if let Some(error) = reply.get("error") {
            panic!("DevTools {method} failed: {error}");
        }
        reply["result"].clone()
    }

    /// A command to the page.
    async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.command(Some(&session), method, params).await
    }

    /// Opens `url` in the page.
    pub async fn goto(&mut self, url: &str) {
        self.page("Page.navigate", json!({ "url": url })).await;
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise) and
    /// returns its value; a thrown exception is `Null`.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .page("Runtime.evaluate", json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }))
            .await;
        if result.get("exceptionDetails").is_some() {
            return Value::Null;
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true` (up to `deadline`).
    pub async fn wait_for(&mut self, expression: &str, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "page never satisfied `{expression}` within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub async fn type_text(&mut self, text: &str) {
        self.page("Input.insertText", json!({ "text": text })).await;
    }

    /// Presses Enter.
    pub async fn press_enter(&mut self) {
        for kind in ["keyDown", "keyUp"] {
            let mut params = json!({ "type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13 });
            if kind == "keyDown" {
                params["text"] = json!("\r");
            }
            self.page("Input.dispatchKeyEvent", params).await;
        }
    }

    /// Clicks the centre of the first element matching `selector` with a real mouse event.
    pub async fn click(&mut self, selector: &str) {
        let expression = format!(
            "(() => {{ const r = document.querySelector({}).getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        );
        let point = self.eval(&expression).await;
        let (x, y) = (point[0].as_f64().expect("element x"), point[1].as_f64().expect("element y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

/// Debian installs `chromium`; other systems may call it differently.
fn chromium_path() -> String {
    std::env::var("TERRIER_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Where tests leave files for people to look at: `target/test-artifacts`.
pub fn artifact_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts")
}

/// Standard base64 (the screenshot encoding), padding optional.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'=' && !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | value(*c) << (18 - 6 * i));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aGVsbG8="), b"hello");
        assert_eq!(super::decode_base64("aGVsbG8hIQ=="), b"hello!!");
        assert_eq!(super::decode_base64("YWJj"), b"abc");
    }
}
