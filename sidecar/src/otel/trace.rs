//! OpenTelemetry traces: a span per metered LLM request and a child span
//! per upstream attempt, exported over OTLP (gRPC or HTTP/protobuf, plain
//! or TLS: [`super::tls`]), with
//! W3C trace context continued from the app and propagated upstream.
//!
//! Attributes follow the OpenTelemetry GenAI semantic conventions
//! (<https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/>):
//! span name `{gen_ai.operation.name} {gen_ai.request.model}`, kind
//! `CLIENT`; `gen_ai.usage.input_tokens` includes the cache reads and
//! writes, as the conventions say it SHOULD
//! (`gen_ai.usage.cache_read.input_tokens`,
//! `gen_ai.usage.cache_creation.input_tokens`). tokenwarden's own
//! attributes are under `tokenwarden.`. No prompt or completion text is
//! ever set on a span: only models, counts, names the policy gave, and
//! money.
//!
//! Configuration is the standard environment
//! (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>,
//! <https://opentelemetry.io/docs/specs/otel/protocol/exporter/>):
//! tracing is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, `OTEL_SDK_DISABLED` is not `true`
//! and `OTEL_TRACES_EXPORTER` is not `none`; otherwise every hook here is
//! a branch on `None`. The SDK reads the sampler
//! (`OTEL_TRACES_SAMPLER`, `_ARG`), the resource
//! (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`), headers and
//! timeouts. Spans go through a bounded queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048) to one export task; a full
//! queue or a batch the collector did not take drops spans, counted in
//! `tokenwarden_otel_dropped_spans_total`. A request never waits for it.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Array, Context, KeyValue, StringValue, Value,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor},
};
use prometheus_client::metrics::counter::Counter;
use tokenwarden_core::{
    money::Usd,
    tokens::TokenCounts,
    workload::{Api, Endpoint},
};

use super::{Signal, env_num, error_type, operation, provider_name, resource, tls::Transport};
use crate::sync::lock;

/// The sidecar's tracer, when traces are exported.
pub struct Otel {
    tracer: SdkTracer,
    /// Kept for the life of the process (its tracer's spans go to its
    /// processor).
    _provider: SdkTracerProvider,
    /// Asks the export task to send what is queued.
    flush: tokio::sync::mpsc::UnboundedSender<Flush>,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otel")
    }
}

// === impl Otel ===

impl Otel {
    /// Traces as the `OTEL_*` environment says: `Ok(None)` when off (no
    /// endpoint, `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`).
    /// Must run inside the Tokio runtime: it spawns the export task.
    /// Spans dropped are counted in `dropped`.
    pub fn from_env(dropped: Counter) -> Result<Option<Otel>, String> {
        let Some(endpoint) = Signal::Traces.endpoint() else {
            return Ok(None);
        };
        let transport = Transport::from_env(Signal::Traces, &endpoint)?;
        let queue = Queue::spawn_from_env(dropped);
        let exporter = match transport {
            Transport::Grpc(tls) => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if let Some(tls) = tls {
                    builder = builder.with_tls_config(tls);
                }
                builder.build()
            }
            Transport::Http(client) => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(*client)
                .build(),
        }
        .map_err(|e| format!("OTLP span exporter: {e}"))?;
        let resource = resource();
        let mut exporter = exporter;
        exporter.set_resource(&resource);
        let (processor, flush) = queue.start(exporter);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("tokenwarden-sidecar");
        Ok(Some(Otel {
            tracer,
            _provider: provider,
            flush,
            propagator: TraceContextPropagator::new(),
        }))
    }

    /// Start the span of a metered request: the child of the app's
    /// `traceparent` (with its `tracestate`) when it sent one.
    pub fn request(&self, app_headers: &HeaderMap, start: RequestStart<'_>) -> Arc<RequestSpan> {
        let parent = self.propagator.extract(&HeaderRead(app_headers));
        let op = operation(start.endpoint);
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", op),
            KeyValue::new("gen_ai.request.model", start.model.to_string()),
        ];
        if let Some(max) = start.max_tokens {
            attrs.push(KeyValue::new("gen_ai.request.max_tokens", to_i64(max)));
        }
        if let Some(route) = start.route {
            attrs.push(KeyValue::new("tokenwarden.route", route.to_string()));
        }
        if let Some(score) = start.score {
            attrs.push(KeyValue::new("tokenwarden.score", i64::from(score)));
        }
        let span = self
            .tracer
            .span_builder(format!("{op} {}", start.model))
            .with_kind(SpanKind::Client)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        Arc::new(RequestSpan {
            cx: parent.with_span(span),
            totals: Mutex::new(Totals::default()),
            tracer: self.tracer.clone(),
            propagator: self.propagator.clone(),
        })
    }
}

impl Otel {
    /// Export the spans queued now, waiting at most `within` (at shutdown,
    /// so the last requests' spans are not lost).
    pub async fn flush(&self, within: Duration) {
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.flush.send(ack).is_ok() {
            let _ = tokio::time::timeout(within, done).await;
        }
    }
}

/// What a request span starts with.
pub struct RequestStart<'a> {
    /// Endpoint called.
    pub endpoint: Endpoint,
    /// Model the app asked for.
    pub model: &'a str,
    /// The output-token limit the app set (`max_tokens`,
    /// `max_completion_tokens`, `max_output_tokens`).
    pub max_tokens: Option<u64>,
    /// Route that matched.
    pub route: Option<&'a str>,
    /// Complexity score, when computed.
    pub score: Option<u16>,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What the request's attempts came to, summed, for the request span.
#[derive(Default)]
struct Totals {
    attempts: u32,
    usage: TokenCounts,
    cost: Usd,
    unpriced: bool,
    response_model: Option<String>,
    response_id: Option<String>,
    finish_reasons: Vec<String>,
    provider: Option<&'static str>,
    status: u16,
    estimated: bool,
    adjusted: Vec<&'static str>,
    escalations: Vec<&'static str>,
    budgets: Vec<String>,
    failed: Option<&'static str>,
}

/// The span of a metered request; ends when the last of its attempts
/// settled (a stream's when its body ended) and the request is done
/// with it: every holder keeps an `Arc`, the last one dropped ends it.
pub struct RequestSpan {
    cx: Context,
    totals: Mutex<Totals>,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSpan")
    }
}

// === impl RequestSpan ===

impl RequestSpan {
    /// Say what changed the model (`escalated`, `downgraded`,
    /// `fallback`) and why each escalation happened, as the response
    /// headers do.
    pub fn adjusted(&self, adjusted: &[&'static str], escalations: &[&'static str]) {
        let mut t = lock(&self.totals);
        t.adjusted = adjusted.to_vec();
        t.escalations = escalations.to_vec();
    }

    /// The request failed with the error labelled `label` (as in
    /// `tokenwarden_errors_total`): its span's `error.type`.
    pub fn failed(&self, label: &'static str) {
        lock(&self.totals).failed = Some(label);
    }

    /// Start the span of attempt `number` to `model` at `api`, and write
    /// its `traceparent` (and the app's `tracestate`) into `upstream`.
    pub fn attempt(
        self: &Arc<Self>,
        endpoint: Endpoint,
        api: Api,
        model: &str,
        number: u32,
        upstream: &mut HeaderMap,
    ) -> AttemptSpan {
        let op = operation(endpoint);
        let span = self
            .tracer
            .span_builder(format!("{op} {model}"))
            .with_kind(SpanKind::Client)
            .with_attributes(vec![
                KeyValue::new("gen_ai.operation.name", op),
                KeyValue::new("gen_ai.provider.name", provider_name(api)),
                KeyValue::new("gen_ai.request.model", model.to_string()),
                KeyValue::new("tokenwarden.attempt", i64::from(number)),
            ])
            .start_with_context(&self.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        upstream.remove("traceparent");
        upstream.remove("tracestate");
        self.propagator
            .inject_context(&cx, &mut HeaderWrite(upstream));
        lock(&self.totals).provider = Some(provider_name(api));
        AttemptSpan {
            cx: Some(cx),
            request: self.clone(),
        }
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        let t = std::mem::take(&mut *lock(&self.totals));
        let span = self.cx.span();
        let mut attrs = usage_attrs(&t.usage);
        attrs.push(KeyValue::new("tokenwarden.attempts", i64::from(t.attempts)));
        if let Some(p) = t.provider {
            attrs.push(KeyValue::new("gen_ai.provider.name", p));
        }
        if let Some(m) = t.response_model {
            attrs.push(KeyValue::new("gen_ai.response.model", m));
        }
        if let Some(id) = t.response_id {
            attrs.push(KeyValue::new("gen_ai.response.id", id));
        }
        if !t.finish_reasons.is_empty() {
            attrs.push(strings("gen_ai.response.finish_reasons", &t.finish_reasons));
        }
        if !t.unpriced && t.attempts > 0 {
            attrs.push(KeyValue::new("tokenwarden.cost_usd", t.cost.to_string()));
        }
        if t.estimated {
            attrs.push(KeyValue::new("tokenwarden.usage_estimated", true));
        }
        if t.usage.cache_read_tokens > 0 {
            attrs.push(KeyValue::new("tokenwarden.cache_hit", true));
        }
        if !t.adjusted.is_empty() {
            attrs.push(strings("tokenwarden.adjusted", &t.adjusted));
        }
        if !t.escalations.is_empty() {
            attrs.push(strings("tokenwarden.escalation_reasons", &t.escalations));
        }
        if !t.budgets.is_empty() {
            attrs.push(strings("tokenwarden.budgets", &t.budgets));
        }
        if t.status != 0 {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(t.status),
            ));
        }
        let error = match t.failed {
            Some(label) => Some(Cow::Borrowed(label)),
            None if !(200..300).contains(&t.status) => Some(error_type(t.status)),
            None => None,
        };
        if let Some(e) = error {
            attrs.push(KeyValue::new("error.type", e.clone().into_owned()));
            span.set_attributes(attrs);
            span.set_status(Status::error(e));
        } else {
            span.set_attributes(attrs);
        }
        span.end();
    }
}

fn strings<S: AsRef<str>>(key: &'static str, values: &[S]) -> KeyValue {
    let values = values
        .iter()
        .map(|v| StringValue::from(v.as_ref().to_string()))
        .collect();
    KeyValue::new(key, Value::Array(Array::String(values)))
}

/// The `gen_ai.usage.*` attributes of `usage`; input includes the cache
/// reads and writes, as the conventions say.
fn usage_attrs(usage: &TokenCounts) -> Vec<KeyValue> {
    let input = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens;
    vec![
        KeyValue::new("gen_ai.usage.input_tokens", to_i64(input)),
        KeyValue::new("gen_ai.usage.output_tokens", to_i64(usage.output_tokens)),
        KeyValue::new(
            "gen_ai.usage.cache_read.input_tokens",
            to_i64(usage.cache_read_tokens),
        ),
        KeyValue::new(
            "gen_ai.usage.cache_creation.input_tokens",
            to_i64(usage.cache_write_tokens),
        ),
    ]
}

/// What an attempt came to, as metered.
pub struct Settled<'a> {
    /// Upstream status (`0`: no answer).
    pub status: u16,
    /// The usage the provider reported, or an estimate.
    pub usage: &'a TokenCounts,
    /// The model that served.
    pub served_model: &'a str,
    /// `usage` is an estimate.
    pub estimated: bool,
    /// Its cost, `None` when the model is unpriced.
    pub cost: Option<Usd>,
    /// The budgets it counts in (`namespace/name`).
    pub budgets: Vec<String>,
    /// The provider's id of the response, when read.
    pub response_id: Option<&'a str>,
    /// Why generation stopped, per choice, when read.
    pub finish_reasons: Vec<&'a str>,
}

/// The span of one upstream attempt (nothing when traces are off); ends
/// when the attempt settles.
#[derive(Debug, Default)]
pub struct AttemptTrace {
    /// The request's span, shared by its attempts.
    pub request: Option<Arc<RequestSpan>>,
    /// The current attempt's span, once sent.
    pub span: Option<AttemptSpan>,
}

/// A started attempt span.
#[derive(Debug)]
pub struct AttemptSpan {
    cx: Option<Context>,
    request: Arc<RequestSpan>,
}

// === impl AttemptSpan ===

impl AttemptSpan {
    /// End the span with what the attempt came to, and add it to the
    /// request's totals.
    pub fn settled(mut self, s: &Settled<'_>) {
        let Some(cx) = self.cx.take() else {
            return;
        };
        let span = cx.span();
        let mut attrs = usage_attrs(s.usage);
        attrs.push(KeyValue::new(
            "gen_ai.response.model",
            s.served_model.to_string(),
        ));
        if let Some(cost) = s.cost {
            attrs.push(KeyValue::new("tokenwarden.cost_usd", cost.to_string()));
        }
        if let Some(id) = s.response_id {
            attrs.push(KeyValue::new("gen_ai.response.id", id.to_string()));
        }
        if !s.finish_reasons.is_empty() {
            attrs.push(strings("gen_ai.response.finish_reasons", &s.finish_reasons));
        }
        if s.estimated {
            attrs.push(KeyValue::new("tokenwarden.usage_estimated", true));
        }
        if s.usage.cache_read_tokens > 0 {
            attrs.push(KeyValue::new("tokenwarden.cache_hit", true));
        }
        if s.status != 0 {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(s.status),
            ));
        }
        if !(200..300).contains(&s.status) {
            attrs.push(KeyValue::new(
                "error.type",
                error_type(s.status).into_owned(),
            ));
            span.set_status(Status::error(error_type(s.status)));
        }
        span.set_attributes(attrs);
        span.end();
        let mut t = lock(&self.request.totals);
        t.attempts += 1;
        t.usage.input_tokens += s.usage.input_tokens;
        t.usage.output_tokens += s.usage.output_tokens;
        t.usage.cache_read_tokens += s.usage.cache_read_tokens;
        t.usage.cache_write_tokens += s.usage.cache_write_tokens;
        match s.cost {
            Some(c) => t.cost += c,
            None => t.unpriced = true,
        }
        t.estimated |= s.estimated;
        // A success is not undone by a later attempt's failure: the
        // app got the kept answer.
        if (200..300).contains(&s.status) {
            t.status = s.status;
            t.response_model = Some(s.served_model.to_string());
            t.response_id = s.response_id.map(str::to_string);
            t.finish_reasons = s.finish_reasons.iter().map(|r| (*r).to_string()).collect();
        } else if !(200..300).contains(&t.status) {
            t.status = s.status;
        }
        for b in &s.budgets {
            if !t.budgets.contains(b) {
                t.budgets.push(b.clone());
            }
        }
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        // Dropped unsettled (the request failed before its answer was
        // metered): the span still ends.
        if let Some(cx) = self.cx.take() {
            cx.span().end();
        }
    }
}

/// The app's request headers, read for `traceparent` and `tracestate`.
struct HeaderRead<'a>(&'a HeaderMap);

impl Extractor for HeaderRead<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The upstream request's headers, written with the attempt's context.
struct HeaderWrite<'a>(&'a mut HeaderMap);

impl Injector for HeaderWrite<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` is no `tracestate`.
        if value.is_empty() {
            return;
        }
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// A request to export what is queued now; answered when done.
type Flush = tokio::sync::oneshot::Sender<()>;

/// The bounded span queue and its batch settings (`OTEL_BSP_*`).
struct Queue {
    tx: tokio::sync::mpsc::Sender<SpanData>,
    rx: tokio::sync::mpsc::Receiver<SpanData>,
    dropped: Counter,
    delay: Duration,
    batch: usize,
    timeout: Duration,
}

// === impl Queue ===

impl Queue {
    fn spawn_from_env(dropped: Counter) -> Queue {
        let size = usize::try_from(env_num("OTEL_BSP_MAX_QUEUE_SIZE", 2048).max(1)).unwrap_or(2048);
        let (tx, rx) = tokio::sync::mpsc::channel(size);
        Queue {
            tx,
            rx,
            dropped,
            delay: Duration::from_millis(env_num("OTEL_BSP_SCHEDULE_DELAY", 5000)),
            batch: usize::try_from(env_num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).max(1))
                .unwrap_or(512),
            timeout: Duration::from_millis(env_num("OTEL_BSP_EXPORT_TIMEOUT", 30_000)),
        }
    }

    /// Spawn the export task; the processor feeds it, the sender asks it
    /// to flush.
    fn start<E: SpanExporter + 'static>(
        self,
        exporter: E,
    ) -> (QueueProcessor, tokio::sync::mpsc::UnboundedSender<Flush>) {
        let Queue {
            tx,
            rx,
            dropped,
            delay,
            batch,
            timeout,
        } = self;
        let (flush_tx, flushes) = tokio::sync::mpsc::unbounded_channel();
        let export = Export {
            exporter,
            dropped: dropped.clone(),
            batch,
            timeout,
        };
        tokio::spawn(export_loop(export, rx, flushes, delay));
        (QueueProcessor { tx, dropped }, flush_tx)
    }
}

/// The exporter and how it sends.
struct Export<E> {
    exporter: E,
    dropped: Counter,
    batch: usize,
    timeout: Duration,
}

// === impl Export ===

impl<E: SpanExporter> Export<E> {
    /// Send one batch; one that fails or times out is dropped and counted.
    async fn send(&self, spans: Vec<SpanData>) {
        let n = spans.len() as u64;
        let result = tokio::time::timeout(self.timeout, self.exporter.export(spans)).await;
        if !matches!(result, Ok(Ok(()))) {
            self.dropped.inc_by(n);
            tracing::debug!(spans = n, "OTLP export failed; spans dropped");
        }
    }

    /// Send everything queued now, in batches, and answer `ack`.
    async fn drain(&self, rx: &mut tokio::sync::mpsc::Receiver<SpanData>, ack: Flush) {
        loop {
            let mut spans = Vec::new();
            while spans.len() < self.batch {
                match rx.try_recv() {
                    Ok(s) => spans.push(s),
                    Err(_) => break,
                }
            }
            if spans.is_empty() {
                break;
            }
            self.send(spans).await;
        }
        let _ = ack.send(());
    }
}

/// Export batches: up to `batch` spans, or what came within `delay` of
/// the first; a flush sends what is queued at once.
async fn export_loop<E: SpanExporter>(
    export: Export<E>,
    mut rx: tokio::sync::mpsc::Receiver<SpanData>,
    mut flushes: tokio::sync::mpsc::UnboundedReceiver<Flush>,
    delay: Duration,
) {
    let mut spans = Vec::with_capacity(export.batch.min(512));
    loop {
        let first = tokio::select! {
            next = rx.recv() => match next {
                Some(s) => s,
                None => break,
            },
            Some(ack) = flushes.recv() => {
                export.drain(&mut rx, ack).await;
                continue;
            }
        };
        spans.push(first);
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        let mut closed = false;
        let mut ack = None;
        while spans.len() < export.batch {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(s) => spans.push(s),
                    None => { closed = true; break; }
                },
                () = &mut deadline => break,
                Some(a) = flushes.recv() => { ack = Some(a); break; }
            }
        }
        export.send(std::mem::take(&mut spans)).await;
        if let Some(ack) = ack {
            export.drain(&mut rx, ack).await;
        }
        if closed {
            break;
        }
    }
}

/// Hands ended, sampled spans to the export task without waiting: a full
/// queue drops the span (counted).
#[derive(Debug)]
struct QueueProcessor {
    tx: tokio::sync::mpsc::Sender<SpanData>,
    dropped: Counter,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
