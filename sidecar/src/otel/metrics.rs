//! OpenTelemetry metrics: the GenAI client metrics of every upstream
//! attempt, and its cost, exported over OTLP next to the Prometheus
//! `/metrics` endpoint (which is unchanged).
//!
//! The instruments follow the GenAI metric conventions
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/>):
//!
//! | instrument | kind, unit | recorded |
//! |---|---|---|
//! | `gen_ai.client.token.usage` | histogram, `{token}` | per answered attempt, once with `gen_ai.token.type=input` (uncached + cache reads + cache writes, as `gen_ai.usage.input_tokens` SHOULD count them) and, for chat, once with `output` |
//! | `gen_ai.client.operation.duration` | histogram, `s` | per attempt sent, from its request to its settlement (a stream's end); `error.type` when it failed |
//! | `tokenwarden.client.token.cache_usage` | histogram, `{token}` | per answered chat attempt, once with `tokenwarden.token.type=cache_read` and once with `cache_creation`: the conventions' token types are only `input` and `output`, so the cache counts are tokenwarden's |
//! | `tokenwarden.client.cost` | counter, `{USD}` | the attempts' cost at the served model's price |
//!
//! The histograms use the conventions' explicit bucket boundaries. Every
//! instrument has `gen_ai.operation.name`, `gen_ai.provider.name`,
//! `gen_ai.request.model` (the model the attempt was sent to) and, once
//! answered, `gen_ai.response.model`. Nothing else: no prompt text, no id,
//! nothing unique to a request; model names come from apps, so at most
//! [`crate::metrics::MAX_MODEL_LABELS`] distinct ones are kept (then
//! `other`), cut at 64 characters, as on `/metrics`.
//!
//! Money stays exact: the cost is summed in integer pico-dollars per
//! series and handed to the SDK as a cumulative observation, the total
//! divided by 10¹² once per export; the double is the one nearest the
//! exact total (exact decimal parses agree) up to $9,007 per series
//! (2⁵³ pico-dollars), past that rounded to 53 bits.
//!
//! Export runs in one task: every `OTEL_METRIC_EXPORT_INTERVAL` (60 s)
//! it collects and sends, waiting at most `OTEL_METRIC_EXPORT_TIMEOUT`
//! (30 s). Recording is the SDK's in-memory aggregation; a request never
//! waits for the collector. Temporality is cumulative, so an export the
//! collector missed loses nothing (the next one carries the totals); each
//! failed export is counted in
//! `tokenwarden_otel_metric_export_failures_total`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{Histogram, MeterProvider as _, ObservableCounter},
};
use opentelemetry_otlp::{WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::ResourceMetrics, exporter::PushMetricExporter, reader::MetricReader,
    },
};
use prometheus_client::metrics::counter::Counter;
use tokenwarden_core::{
    money::Usd,
    tokens::TokenCounts,
    workload::{Api, Endpoint},
};

use super::{Signal, env_num, error_type, operation, provider_name, resource, tls::Transport};
use crate::sync::lock;

/// `gen_ai.client.token.usage` buckets, as the conventions give them.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// `gen_ai.client.operation.duration` buckets (seconds), as the
/// conventions give them.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// The sidecar's OTLP metrics, when exported.
pub struct OtelMetrics {
    tokens: Histogram<u64>,
    cache_tokens: Histogram<u64>,
    duration: Histogram<f64>,
    /// Cost per series, exact; observed by `_cost` at each collection.
    cost: Arc<Mutex<BTreeMap<Series, i128>>>,
    _cost: ObservableCounter<f64>,
    models: Mutex<HashSet<String>>,
    /// The attribute sets of each answered series (bounded as the models).
    answered: Mutex<HashMap<Series, Arc<AnsweredAttrs>>>,
    _provider: SdkMeterProvider,
    /// Asks the export task to collect and send now.
    flush: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for OtelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtelMetrics")
    }
}

/// What an upstream attempt came to, for the metrics.
#[derive(Debug)]
pub struct MeteredAttempt<'a> {
    /// Endpoint called.
    pub endpoint: Endpoint,
    /// API of the provider it went to (`None`: no router).
    pub api: Option<Api>,
    /// The model the attempt was sent to.
    pub model: &'a str,
    /// The model that served.
    pub served_model: &'a str,
    /// Upstream status (`0`: no answer).
    pub status: u16,
    /// The usage metered (reported or estimated).
    pub usage: &'a TokenCounts,
    /// Its cost, `None` when unpriced.
    pub cost: Option<Usd>,
    /// From sending the attempt to its settlement, when it was sent.
    pub duration: Option<Duration>,
}

/// The attribute sets of an answered attempt's points.
struct AnsweredAttrs {
    base: Vec<KeyValue>,
    input: Vec<KeyValue>,
    output: Vec<KeyValue>,
    cache_read: Vec<KeyValue>,
    cache_write: Vec<KeyValue>,
}

/// The attributes a cost total is kept under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Series {
    operation: &'static str,
    provider: Option<&'static str>,
    request_model: String,
    response_model: Option<String>,
}

// === impl Series ===

impl Series {
    fn attributes(&self) -> Vec<KeyValue> {
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", self.operation),
            KeyValue::new("gen_ai.request.model", self.request_model.clone()),
        ];
        if let Some(p) = self.provider {
            attrs.push(KeyValue::new("gen_ai.provider.name", p));
        }
        if let Some(m) = &self.response_model {
            attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
        }
        attrs
    }
}

// === impl OtelMetrics ===

impl OtelMetrics {
    /// Metrics as the `OTEL_*` environment says: `Ok(None)` when off (no
    /// endpoint, `OTEL_SDK_DISABLED=true`, `OTEL_METRICS_EXPORTER=none`).
    /// Must run inside the Tokio runtime: it spawns the export task.
    /// Failed exports are counted in `failures`.
    pub fn from_env(failures: Counter) -> Result<Option<OtelMetrics>, String> {
        let Some(endpoint) = Signal::Metrics.endpoint() else {
            return Ok(None);
        };
        let exporter = match Transport::from_env(Signal::Metrics, &endpoint)? {
            Transport::Grpc(tls) => {
                let mut builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
                if let Some(tls) = tls {
                    builder = builder.with_tls_config(tls);
                }
                builder.build()
            }
            Transport::Http(client) => opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(*client)
                .build(),
        }
        .map_err(|e| format!("OTLP metric exporter: {e}"))?;
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .with_resource(resource())
            .build();
        let (flush, flushes) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(export_loop(
            Export {
                reader,
                exporter,
                failures,
                timeout: Duration::from_millis(env_num("OTEL_METRIC_EXPORT_TIMEOUT", 30_000)),
            },
            Duration::from_millis(env_num("OTEL_METRIC_EXPORT_INTERVAL", 60_000).max(1)),
            flushes,
        ));
        Ok(Some(OtelMetrics::instruments(provider, flush)))
    }

    fn instruments(
        provider: SdkMeterProvider,
        flush: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>,
    ) -> OtelMetrics {
        let meter = provider.meter("tokenwarden-sidecar");
        let cost: Arc<Mutex<BTreeMap<Series, i128>>> = Arc::default();
        let observed = Arc::downgrade(&cost);
        OtelMetrics {
            tokens: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used.")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            cache_tokens: meter
                .u64_histogram("tokenwarden.client.token.cache_usage")
                .with_unit("{token}")
                .with_description(
                    "Input tokens read from and written to the provider's prompt cache.",
                )
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            _cost: meter
                .f64_observable_counter("tokenwarden.client.cost")
                .with_unit("{USD}")
                .with_description("Cost of the LLM calls at the served model's price.")
                .with_callback(move |observer| {
                    let Some(cost) = Weak::upgrade(&observed) else {
                        return;
                    };
                    for (series, picos) in lock(&cost).iter() {
                        observer.observe(
                            *picos as f64 / Usd::PICOS_PER_USD as f64,
                            &series.attributes(),
                        );
                    }
                })
                .build(),
            cost,
            models: Mutex::default(),
            answered: Mutex::default(),
            _provider: provider,
            flush,
        }
    }

    /// Record one settled attempt.
    pub fn attempt(&self, a: &MeteredAttempt<'_>) {
        let answered = (200..300).contains(&a.status);
        let series = Series {
            operation: operation(a.endpoint),
            provider: a.api.map(provider_name),
            request_model: self.model(a.model),
            response_model: answered.then(|| self.model(a.served_model)),
        };
        if !answered {
            if let Some(d) = a.duration {
                let mut failed = series.attributes();
                failed.push(KeyValue::new(
                    "error.type",
                    error_type(a.status).into_owned(),
                ));
                self.duration.record(d.as_secs_f64(), &failed);
            }
            return;
        }
        let attrs = self.answered_attrs(&series);
        if let Some(d) = a.duration {
            self.duration.record(d.as_secs_f64(), &attrs.base);
        }
        let u = a.usage;
        let input = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens;
        self.tokens.record(input, &attrs.input);
        if series.operation == "chat" {
            self.tokens.record(u.output_tokens, &attrs.output);
            self.cache_tokens
                .record(u.cache_read_tokens, &attrs.cache_read);
            self.cache_tokens
                .record(u.cache_write_tokens, &attrs.cache_write);
        }
        if let Some(cost) = a.cost {
            let mut totals = lock(&self.cost);
            let total = totals.entry(series).or_insert(0);
            *total = total.saturating_add(cost.picos());
        }
    }

    /// The attribute sets of an answered attempt's points, built once per
    /// series.
    fn answered_attrs(&self, series: &Series) -> Arc<AnsweredAttrs> {
        let mut cached = lock(&self.answered);
        if let Some(a) = cached.get(series) {
            return a.clone();
        }
        let base = series.attributes();
        let a = Arc::new(AnsweredAttrs {
            input: with(&base, "gen_ai.token.type", "input"),
            output: with(&base, "gen_ai.token.type", "output"),
            cache_read: with(&base, "tokenwarden.token.type", "cache_read"),
            cache_write: with(&base, "tokenwarden.token.type", "cache_creation"),
            base,
        });
        cached.insert(series.clone(), a.clone());
        a
    }

    /// Collect and send now, waiting at most `within` (at shutdown, so
    /// the last requests' figures reach the collector).
    pub async fn flush(&self, within: Duration) {
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.flush.send(ack).is_ok() {
            let _ = tokio::time::timeout(within, done).await;
        }
    }

    /// Bound a model name for use as an attribute value.
    fn model(&self, name: &str) -> String {
        let name: String = name
            .chars()
            .take(64)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        let mut seen = lock(&self.models);
        if seen.contains(&name) {
            return name;
        }
        if seen.len() >= crate::metrics::MAX_MODEL_LABELS {
            return "other".into();
        }
        seen.insert(name.clone());
        name
    }
}

/// `attrs` and one more.
fn with(attrs: &[KeyValue], key: &'static str, value: &'static str) -> Vec<KeyValue> {
    let mut all = attrs.to_vec();
    all.push(KeyValue::new(key, value));
    all
}

/// The reader the SDK and the export task share: collected on the
/// task's schedule, never on a request's.
#[derive(Clone, Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The reader, the exporter, and how it sends.
struct Export<E> {
    reader: SharedReader,
    exporter: E,
    failures: Counter,
    timeout: Duration,
}

// === impl Export ===

impl<E: PushMetricExporter> Export<E> {
    /// Collect and send once; a failure or a timeout is counted.
    async fn once(&self) {
        let mut rm = ResourceMetrics::default();
        if self.reader.collect(&mut rm).is_err() {
            return;
        }
        let sent = tokio::time::timeout(self.timeout, self.exporter.export(&rm)).await;
        if !matches!(sent, Ok(Ok(()))) {
            self.failures.inc();
            tracing::debug!("OTLP metric export failed");
        }
    }
}

/// Export every `interval`, and when asked to flush.
async fn export_loop<E: PushMetricExporter>(
    export: Export<E>,
    interval: Duration,
    mut flushes: tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => export.once().await,
            ack = flushes.recv() => match ack {
                Some(ack) => {
                    export.once().await;
                    let _ = ack.send(());
                }
                None => break,
            },
        }
    }
}
