//! `/metrics` read by a real parser: Python's `prometheus_client` OpenMetrics
//! parser (Debian `python3-prometheus-client`, installed by scripts/test.sh),
//! the library Prometheus' own Python tooling uses. The parsed samples must
//! show the traffic the test made.

use std::collections::HashMap;
use std::process::Stdio;

use terrier_testkit::admin::AdminClient;
use terrier_testkit::visitor::Visitor;
use terrier_testkit::{init_logging, TestAgent, TestServer};
use tokio::io::AsyncWriteExt;

/// Parses an exposition with prometheus_client and prints one JSON sample per line.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value}))
"#;

/// A parsed sample: (name, sorted labels) -> value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

async fn parse(text: &str) -> (Samples, HashMap<String, String>) {
    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("/usr/bin/python3 (scripts/test.sh installs python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the parser rejected the exposition:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = Samples::new();
    let mut types = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut labels: Vec<(String, String)> =
            v["labels"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect();
        labels.sort();
        types.insert(v["family"].as_str().unwrap().to_owned(), v["type"].as_str().unwrap().to_owned());
        samples.insert((v["name"].as_str().unwrap().to_owned(), labels), v["value"].as_f64().unwrap());
    }
    (samples, types)
}

/// The sample `name` with exactly `labels`, if the scrape had it.
fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut key: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    key.sort();
    samples.get(&(name.to_owned(), key)).copied()
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

#[tokio::test]
async fn metrics_parse_and_count_real_traffic() {
    init_logging();
    let metrics_port = terrier_testkit::redis::free_port().await;
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let server = TestServer::start(|c| c.admin.metrics_listen = Some(metrics_addr)).await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let (agent, host) = TestAgent::web_device(server.url(), "metered").await;
    let visitor = Visitor::new(server.addr);
    for _ in 0..3 {
        assert_eq!(visitor.post(&host, "/echo", vec![7u8; 1000]).await.status, 200);
    }
    // A refused handshake: a bad device name.
    let bad = visitor.get("localhost", "/v1/control?name=BAD&http=1").await;
    assert_eq!(bad.status, 400);

    let reply = admin.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let (samples, types) = parse(&reply.text).await;
    assert_eq!(value(&samples, "terrier_devices_online", &[]), 1.0);
    assert_eq!(value(&samples, "terrier_handshakes_total", &[("outcome", "accepted")]), 1.0);
    assert_eq!(value(&samples, "terrier_handshakes_total", &[("outcome", "bad_request")]), 1.0);
    assert!(value(&samples, "terrier_streams_total", &[("kind", "http")]) >= 1.0);
    assert_eq!(value(&samples, "terrier_streams_total", &[("kind", "tcp")]), 0.0);
    assert!(value(&samples, "terrier_relayed_bytes_total", &[("direction", "to_device")]) >= 3000.0);
    assert!(value(&samples, "terrier_relayed_bytes_total", &[("direction", "from_device")]) >= 3000.0);
    assert_eq!(value(&samples, "terrier_visitor_request_duration_seconds_count", &[]), 3.0);
    assert!(value(&samples, "terrier_store_duration_seconds_count", &[("op", "claim")]) >= 1.0);
    assert_eq!(value(&samples, "terrier_redirects_total", &[]), 0.0);
    assert_eq!(types["terrier_visitor_request_duration_seconds"], "histogram");
    assert_eq!(types["terrier_streams_open"], "gauge");

    // The separate metrics listener serves the same without a token, and nothing else.
    let plain = AdminClient::new(metrics_addr, None);
    let scraped = plain.get("/metrics").await;
    assert_eq!(scraped.status, 200);
    let (samples, _) = parse(&scraped.text).await;
    assert_eq!(value(&samples, "terrier_devices_online", &[]), 1.0);
    assert_eq!(plain.get("/api/v1/server").await.status, 404);

    agent.stop().await.unwrap();
    server.stop().await;
}

/// A device whose handshake is already waiting when terrierd starts (as
/// every device is after a restart) gets its lease claimed once: the node
/// registers before it serves, so the first heartbeat finds nothing to
/// resync and writes no lease back.
#[tokio::test]
async fn a_device_connecting_at_start_is_not_restored() {
    init_logging();
    let server = TestServer::start(|c| c.cluster.heartbeat_interval = std::time::Duration::from_millis(300)).await;
    // Nothing has polled the server yet: the handshake waits in the backlog.
    let device = terrier_testkit::raw::FakeDevice::connect(server.addr, "early").await;
    let admin = AdminClient::from_data_dir(server.addr, &server.data_dir()).await;
    let beats = server.config.cluster.heartbeat_interval * 2;
    tokio::time::sleep(beats).await;
    let (samples, _) = parse(&admin.get("/metrics").await.text).await;
    assert_eq!(value(&samples, "terrier_devices_online", &[]), 1.0);
    let restores = sample(&samples, "terrier_store_duration_seconds_count", &[("op", "restore")]);
    assert_eq!(restores, None, "the lease of {} was written back", device.session);
}
