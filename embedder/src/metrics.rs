//! Prometheus metrics of the embedder (prometheus-client, OpenMetrics text on
//! `/metrics`), as the rest of the workspace exposes them. Labels never carry
//! input text: only the route, the status and the error type.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Labels of `tokenwarden_embedder_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `embeddings`, `healthz`, `readyz`, `metrics` or `other`.
    pub route: &'static str,
    /// The HTTP status code.
    pub status: u16,
}

/// Labels of `tokenwarden_embedder_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `invalid_request`, `model_not_found`, `too_large`, `overloaded`,
    /// `not_found`, `method_not_allowed` or `internal`.
    pub reason: &'static str,
}

/// The embedder's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Error responses by reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Inputs embedded.
    pub inputs: Counter,
    /// Tokens embedded (the sum of `usage.prompt_tokens`).
    pub tokens: Counter,
    /// Seconds per successful `/v1/embeddings` request (parse, queue, inference, encode).
    pub latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `tokenwarden_embedder_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tokenwarden_embedder");
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let inputs = Counter::default();
        let tokens = Counter::default();
        let latency = Histogram::new([0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register("errors", "Error responses by reason", errors.clone());
        registry.register("inputs", "Inputs embedded", inputs.clone());
        registry.register("tokens", "Tokens embedded", tokens.clone());
        registry.register(
            "request_duration_seconds",
            "Seconds per successful embeddings request",
            latency.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            inputs,
            tokens,
            latency,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
