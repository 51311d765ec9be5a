//! OpenTelemetry from the sidecar: traces ([`trace`]: a span per metered
//! LLM request, a child per upstream attempt) and metrics ([`metrics`]:
//! the GenAI client metrics and the cost), each exported over OTLP (gRPC
//! or HTTP/protobuf, plain or TLS) by one task of its own, so a request
//! never waits for a collector.
//!
//! Configuration is the standard environment
//! (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>,
//! <https://opentelemetry.io/docs/specs/otel/protocol/exporter/>), read
//! here once per signal: a signal is on when its endpoint
//! (`OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) is set, `OTEL_SDK_DISABLED` is not
//! `true` and `OTEL_{TRACES,METRICS}_EXPORTER` is not `none`. The
//! transport (protocol, timeout, TLS files) is in [`tls`].

mod metrics;
mod tls;
mod trace;

pub use metrics::{MeteredAttempt, OtelMetrics};
pub use trace::{AttemptSpan, AttemptTrace, Otel, RequestSpan, RequestStart, Settled};

use std::{borrow::Cow, time::Duration};

use opentelemetry_sdk::Resource;
use tokenwarden_core::workload::{Api, Endpoint};

/// The environment variable `name`, when set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num(name: &str, default: u64) -> u64 {
    env(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// An OTLP signal the sidecar exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Traces,
    Metrics,
}

// === impl Signal ===

impl Signal {
    /// The signal's part of its variables' names (`TRACES`).
    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    /// The signal-specific variable `OTEL_EXPORTER_OTLP_{SIGNAL}_{what}`,
    /// else the general `OTEL_EXPORTER_OTLP_{what}`.
    fn var(self, what: &str) -> Option<String> {
        env(&format!("OTEL_EXPORTER_OTLP_{}_{what}", self.upper()))
            .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{what}")))
    }

    /// The collector's endpoint when the signal is on.
    fn endpoint(self) -> Option<String> {
        let sdk_off =
            env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let exporter_off = env(&format!("OTEL_{}_EXPORTER", self.upper()))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
        if sdk_off || exporter_off {
            return None;
        }
        self.var("ENDPOINT")
    }

    /// One export request's timeout (`OTEL_EXPORTER_OTLP_*TIMEOUT`, ms).
    fn timeout(self) -> Duration {
        Duration::from_millis(
            self.var("TIMEOUT")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(10_000),
        )
    }
}

/// The resource of everything the sidecar exports: the SDK's (from
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`), with
/// `service.name` `tokenwarden-sidecar` unless they name one.
fn resource() -> Resource {
    let mut resource = Resource::builder();
    if env("OTEL_SERVICE_NAME").is_none()
        && !env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="))
    {
        resource = resource.with_service_name("tokenwarden-sidecar");
    }
    resource.build()
}

/// `gen_ai.operation.name` of an endpoint.
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Embeddings => "embeddings",
        _ => "chat",
    }
}

/// `gen_ai.provider.name` of an API.
fn provider_name(api: Api) -> &'static str {
    match api {
        Api::Anthropic => "anthropic",
        _ => "openai",
    }
}

/// `error.type` (and the span status description) of an upstream status.
fn error_type(status: u16) -> Cow<'static, str> {
    if status == 0 {
        Cow::Borrowed("upstream_unreachable")
    } else {
        Cow::Owned(status.to_string())
    }
}
