//! Prometheus metrics of one node, in the OpenMetrics text format at
//! `/metrics`: devices online, control handshakes by outcome, streams open
//! and total by kind, bytes relayed by direction, visitor request latency,
//! store latency and errors, redirects.
//!
//! Counters are updated where things happen ([`crate::tunnel::traffic::Metered`]
//! for streams and bytes, [`crate::store::metered::MeteredStore`] for the
//! store, the ingress for handshakes and visitor requests); the online gauge
//! is read from the session registry at scrape time. Handles of labelled
//! series are resolved once, so the hot path is one atomic add.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Content type of the exposition ([`Metrics::encode`]).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a visitor stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A connection to the device's HTTP service.
    Http,
    /// A connection to one of its TCP services.
    Tcp,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The node's metrics and the registry that encodes them.
pub struct Metrics {
    /// Every metric below, registered once.
    registry: Registry,
    /// Devices with a control socket on this node (set at scrape time).
    devices_online: Gauge,
    /// Control handshakes by outcome.
    handshakes: Family<OutcomeLabel, Counter>,
    /// Open visitor streams: HTTP, TCP.
    streams_open: [Gauge; 2],
    /// Visitor streams opened: HTTP, TCP.
    streams_total: [Counter; 2],
    /// Bytes into devices.
    bytes_to_device: Counter,
    /// Bytes out of devices.
    bytes_from_device: Counter,
    /// Time from a visitor's HTTP request to the response head.
    visitor_latency: Histogram,
    /// Store call latency by operation.
    store_latency: HistogramFamily<OpLabel>,
    /// Failed store calls by operation.
    store_errors: Family<OpLabel, Counter>,
    /// Devices redirected (307) to a less loaded node.
    redirects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("terrier");
        let devices_online = Gauge::default();
        registry.register("devices_online", "Devices with a control socket on this node", devices_online.clone());
        let handshakes = Family::<OutcomeLabel, Counter>::default();
        registry.register("handshakes", "Control socket handshakes by outcome", handshakes.clone());
        let streams_open_family = Family::<KindLabel, Gauge>::default();
        registry.register("streams_open", "Visitor streams relayed right now", streams_open_family.clone());
        let streams_family = Family::<KindLabel, Counter>::default();
        registry.register("streams", "Visitor streams opened", streams_family.clone());
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register("relayed_bytes", "Bytes relayed between visitors and devices", bytes.clone());
        let visitor_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "visitor_request_duration_seconds",
            "Time from a visitor's HTTP request to the device's response head",
            visitor_latency.clone(),
        );
        let store_latency: HistogramFamily<OpLabel> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.5, 12)));
        registry.register("store_duration_seconds", "Store call latency by operation", store_latency.clone());
        let store_errors = Family::<OpLabel, Counter>::default();
        registry.register("store_errors", "Failed store calls by operation", store_errors.clone());
        let redirects = Counter::default();
        registry.register("redirects", "Devices redirected to a less loaded node", redirects.clone());
        let kind = |k| KindLabel { kind: k };
        let direction = |d| DirectionLabel { direction: d };
        let streams_open = [
            streams_open_family.get_or_create_owned(&kind("http")),
            streams_open_family.get_or_create_owned(&kind("tcp")),
        ];
        let streams_total =
            [streams_family.get_or_create_owned(&kind("http")), streams_family.get_or_create_owned(&kind("tcp"))];
        let bytes_to_device = bytes.get_or_create_owned(&direction("to_device"));
        let bytes_from_device = bytes.get_or_create_owned(&direction("from_device"));
        Self {
            streams_open,
            streams_total,
            bytes_to_device,
            bytes_from_device,
            registry,
            devices_online,
            handshakes,
            visitor_latency,
            store_latency,
            store_errors,
            redirects,
        }
    }
}

impl Metrics {
    /// The exposition text, with `devices_online` as given.
    pub fn encode(&self, devices_online: usize) -> String {
        self.devices_online.set(devices_online as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A control handshake ended with HTTP `status`.
    pub fn handshake(&self, status: u16) {
        let outcome = match status {
            101 => "accepted",
            307 => "redirected",
            400 => "bad_request",
            401 | 403 => "unauthorized",
            409 => "conflict",
            429 => "rate_limited",
            503 => "unavailable",
            _ => "other",
        };
        if status == 307 {
            self.redirects.inc();
        }
        self.handshakes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A visitor stream started relaying.
    pub fn stream_opened(&self, kind: StreamKind) {
        self.streams_open[kind as usize].inc();
        self.streams_total[kind as usize].inc();
    }

    /// A visitor stream ended.
    pub fn stream_closed(&self, kind: StreamKind) {
        self.streams_open[kind as usize].dec();
    }

    /// Bytes went from a visitor into a device.
    pub fn bytes_to_device(&self, n: u64) {
        self.bytes_to_device.inc_by(n);
    }

    /// Bytes came out of a device to a visitor.
    pub fn bytes_from_device(&self, n: u64) {
        self.bytes_from_device.inc_by(n);
    }

    /// A visitor's HTTP request got its response head after `elapsed`.
    pub fn visitor_request(&self, elapsed: Duration) {
        self.visitor_latency.observe(elapsed.as_secs_f64());
    }

    /// A store call `op` took `elapsed` and failed or not.
    pub fn store_call(&self, op: &'static str, elapsed: Duration, failed: bool) {
        let label = OpLabel { op };
        self.store_latency.get_or_create(&label).observe(elapsed.as_secs_f64());
        if failed {
            self.store_errors.get_or_create(&label).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::default();
        m.handshake(101);
        m.handshake(307);
        m.stream_opened(StreamKind::Tcp);
        m.bytes_to_device(10);
        m.visitor_request(Duration::from_millis(3));
        m.store_call("claim", Duration::from_micros(300), true);
        let text = m.encode(2);
        for needle in [
            "terrier_devices_online 2",
            "terrier_handshakes_total{outcome=\"accepted\"} 1",
            "terrier_redirects_total 1",
            "terrier_streams_open{kind=\"tcp\"} 1",
            "terrier_streams_total{kind=\"http\"} 0",
            "terrier_relayed_bytes_total{direction=\"to_device\"} 10",
            "terrier_visitor_request_duration_seconds_count 1",
            "terrier_store_errors_total{op=\"claim\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}
