//! Prometheus metrics of the node, rendered on `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set `{endpoint="chat"|"push"}`.
pub type EndpointLabels = Vec<(&'static str, &'static str)>;
/// Label set `{code="..."}`.
pub type CodeLabels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    pub connections_total: Family<EndpointLabels, Counter>,
    pub handshake_rejections: Family<CodeLabels, Counter>,
    pub closes: Family<CodeLabels, Counter>,
    pub frames_in: Counter,
    pub frame_errors: Family<CodeLabels, Counter>,
    pub notices_published: Counter,
    pub notices_delivered: Counter,
    pub messages_stored: Counter,
    pub http_requests: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// `http_requests` by status class (1xx..5xx), resolved once.
    http_by_class: [Counter; 5],
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chat_gateway");
        let m = Metrics {
            connections_open: Gauge::default(),
            connections_total: Family::default(),
            handshake_rejections: Family::default(),
            closes: Family::default(),
            frames_in: Counter::default(),
            frame_errors: Family::default(),
            notices_published: Counter::default(),
            notices_delivered: Counter::default(),
            messages_stored: Counter::default(),
            http_requests: Family::default(),
            http_by_class: Default::default(),
            registry: Registry::default(),
        };
        let http_by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| m.http_requests.get_or_create(&vec![("status", class)]).clone());
        registry.register("connections_open", "WebSocket connections open on this node", m.connections_open.clone());
        registry.register("connections", "WebSocket connections accepted", m.connections_total.clone());
        registry.register(
            "handshake_rejections",
            "WebSocket handshakes refused, by code",
            m.handshake_rejections.clone(),
        );
        registry.register("closes", "WebSocket connections closed by the server, by reason", m.closes.clone());
        registry.register("frames_in", "Client frames received", m.frames_in.clone());
        registry.register("frame_errors", "Client frames answered with an error, by code", m.frame_errors.clone());
        registry.register("notices_published", "Room notices published", m.notices_published.clone());
        registry.register("notices_delivered", "Room notices queued to local connections", m.notices_delivered.clone());
        registry.register("messages_stored", "Chat messages stored", m.messages_stored.clone());
        registry.register("http_requests", "HTTP requests, by status class", m.http_requests.clone());
        Metrics { registry, http_by_class, ..m }
    }

    /// Count one HTTP response (no allocation: the counters are resolved up front).
    pub fn http_request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http_by_class[class].inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
