//! Response bodies: buffered, or tapped while streaming.
//!
//! A [`TapBody`] forwards the provider's body frame by frame as it arrives
//! (never buffered whole) while a tap reads usage from it: the SSE tap for
//! event streams, the JSON tap ([`JsonTap`], constant memory) for large
//! non-streaming responses. When the body ends the attempt is settled with
//! the provider's usage; when it ends early — the provider cut the stream,
//! or the app went away and the body was dropped — it is settled with the
//! usage that already passed, else an estimate, marked estimated. Either
//! way exactly once.
//!
//! The body settles through a [`Settle`] it is handed (the proxy's
//! settlement): it knows nothing of budgets or ledgers.
//!
//! A JSON body is complete when its top-level object closed, not when the
//! transport says so: over HTTP/1.1 hyper stops polling a body with a
//! `content-length` once that many bytes were written, and drops it
//! without reading its end.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::{
    meter::{Decoder, Flavor, JsonOutcome, JsonTap, SseTap, TapOutcome},
    redact::Redactor,
    state::Shared,
};

/// Errors surfaced to hyper while streaming a response.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy returns.
pub enum ProxyBody {
    /// A complete body.
    Full(Full<Bytes>),
    /// A provider body forwarded as it arrives.
    Tap(Box<TapBody>),
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        ProxyBody::Full(Full::new(b))
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyBody::Full(_) => f.write_str("ProxyBody::Full"),
            ProxyBody::Tap(_) => f.write_str("ProxyBody::Tap"),
        }
    }
}

/// How a tapped body is read.
pub enum TapMode {
    /// Server-sent events: the SSE tap reads usage (and may strip the usage chunk).
    Sse(Box<SseTap>),
    /// A JSON body too large to buffer: scanned as it passes.
    Json(Box<JsonTap>),
    /// Not metered (errors, passthrough paths).
    Plain,
}

/// What a metered body reports to, exactly once, when it is done: it
/// settles the attempt from what passed.
pub trait Settle: Send {
    /// The response's flavor (how the JSON tap reads usage).
    fn flavor(&self) -> Flavor;
    /// The provider went silent mid-body and the body is cut (counted).
    fn stalled(&self);
    /// An event stream ended (`outcome.complete` when cleanly).
    fn stream(self: Box<Self>, outcome: TapOutcome);
    /// A JSON body went past the tap (whole or not).
    fn tapped(self: Box<Self>, outcome: &JsonOutcome);
    /// An untapped body ended, `clean`ly or cut.
    fn plain(self: Box<Self>, clean: bool);
    /// With [`TapBody::capturing`]: the body as the app received it
    /// (`None`: over the bound), before the call that settles.
    fn captured(&mut self, _body: Option<Bytes>) {}
}

/// A copy of what a body handed to the app, up to a bound (the response
/// cache's entry size): dropped, not grown, once over it.
struct Capture {
    buf: Option<Vec<u8>>,
    limit: usize,
}

impl Capture {
    fn push(&mut self, b: &[u8]) {
        if let Some(buf) = self.buf.as_mut() {
            if buf.len() + b.len() > self.limit {
                self.buf = None;
            } else {
                buf.extend_from_slice(b);
            }
        }
    }
}

/// Counts a request in `tokenwarden_in_flight_requests` while alive.
pub struct InFlight(Arc<Shared>);

impl InFlight {
    /// Count one more request in flight.
    pub fn new(shared: &Arc<Shared>) -> Self {
        shared.metrics.in_flight().inc();
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight().dec();
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

/// A provider body forwarded frame by frame.
///
/// Bookkeeping waits until the bytes before it are on their way to the app:
/// a chunk an SSE tap does not change is forwarded first and parsed after,
/// and an event stream's settlement (ledger write, metrics) runs after its
/// last event, before the end of the body. When
/// such work is due right after a frame was handed out, `poll_frame` wakes
/// itself and returns `Pending` once, so the server writes what it has
/// before polling again. Without it hyper polls on at once and writes only
/// when the body goes pending or ends: a stream that arrived whole (its
/// first event next to its usage) would reach the app only after the parse
/// and the ledger write.
pub struct TapBody {
    upstream: Incoming,
    mode: Option<TapMode>,
    pending: std::collections::VecDeque<Bytes>,
    settlement: Option<Box<dyn Settle>>,
    done: bool,
    in_flight: Option<InFlight>,
    /// A chunk already forwarded, not yet read by the SSE tap.
    unread: Option<Bytes>,
    /// The upstream ended (cleanly or not) and the settlement is still due.
    ended: Option<bool>,
    /// A frame was handed out since this body last returned `Pending`.
    handed_out: bool,
    /// The body's content coding, when the provider compressed it: the
    /// taps read the decoded text.
    decoder: Option<Decoder>,
    /// Bytes received from the provider (as sent, before any decoding).
    raw_bytes: u64,
    /// How long the provider may stay silent, and the timer of the
    /// current silence (reset by every frame).
    idle: Option<(std::time::Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// Masks the provider key in an error body (see [`crate::redact`]).
    redactor: Option<Redactor>,
    /// A copy of the body for the response cache.
    capture: Option<Capture>,
}

// === impl TapBody ===

impl TapBody {
    /// Tap `upstream` in `mode`, settling with `settlement` at the end; a
    /// provider silent for `idle` mid-body is cut.
    pub fn new(
        upstream: Incoming,
        mode: TapMode,
        settlement: Box<dyn Settle>,
        idle: std::time::Duration,
    ) -> Self {
        TapBody {
            upstream,
            mode: Some(mode),
            pending: Default::default(),
            settlement: Some(settlement),
            done: false,
            in_flight: None,
            unread: None,
            ended: None,
            handed_out: false,
            decoder: None,
            raw_bytes: 0,
            idle: Some((idle, Box::pin(tokio::time::sleep(idle)))),
            redactor: None,
            capture: None,
        }
    }

    /// Mask `secret` in the body as it passes (error bodies; see
    /// [`crate::redact`]). Only for [`TapMode::Plain`]: taps read bodies
    /// the provider answered with success.
    pub fn redacting(mut self, secret: Option<&memchr::memmem::Finder<'static>>) -> Self {
        self.redactor = secret.map(Redactor::new);
        self
    }

    /// Read a body the provider compressed through `decoder`. An SSE tap
    /// that strips then forwards the decoded events (the caller drops the
    /// `content-encoding`); every other mode forwards the bytes as sent.
    pub fn decoding(mut self, decoder: Option<Decoder>) -> Self {
        self.decoder = decoder;
        self
    }

    /// Bytes of the body already read from `upstream` (the answer judge
    /// held them): forwarded, decoded and tapped first, as if they had
    /// just arrived. Call after [`TapBody::decoding`] and
    /// [`TapBody::redacting`].
    pub fn with_prefix(mut self, prefix: Bytes) -> Self {
        if !prefix.is_empty() {
            self.on_data(prefix);
        }
        self
    }

    /// Copy what is handed to the app aside, up to `limit` bytes, for the
    /// settlement ([`Settle::captured`]); the forwarding is unchanged.
    pub fn capturing(mut self, limit: u64) -> Self {
        self.capture = Some(Capture {
            buf: Some(Vec::new()),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        });
        self
    }

    /// Forward without metering.
    pub fn plain(upstream: Incoming) -> Self {
        TapBody {
            upstream,
            mode: Some(TapMode::Plain),
            pending: Default::default(),
            settlement: None,
            done: false,
            in_flight: None,
            unread: None,
            ended: None,
            handed_out: false,
            decoder: None,
            raw_bytes: 0,
            idle: None,
            redactor: None,
            capture: None,
        }
    }

    /// Keep the request counted as in flight until this body is dropped.
    pub fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    fn on_data(&mut self, data: Bytes) {
        self.raw_bytes = self.raw_bytes.saturating_add(data.len() as u64);
        if let Some(r) = self.redactor.as_mut() {
            let ready = r.push(&data);
            if !ready.is_empty() {
                self.pending.push_back(ready);
            }
            return;
        }
        if let Some(decoder) = self.decoder.as_mut() {
            let mut decoded = Vec::new();
            decoder.push(&data, |piece| decoded.extend_from_slice(piece));
            match self.mode.as_mut() {
                Some(TapMode::Sse(tap)) if tap.strips() => {
                    let mut out = Vec::new();
                    tap.push(Bytes::from(decoded), &mut out);
                    self.pending.extend(out);
                }
                Some(TapMode::Sse(_)) => {
                    self.pending.push_back(data);
                    if !decoded.is_empty() {
                        self.unread = Some(Bytes::from(decoded));
                    }
                }
                Some(TapMode::Json(tap)) => {
                    tap.push(&decoded);
                    self.pending.push_back(data);
                }
                Some(TapMode::Plain) | None => self.pending.push_back(data),
            }
            return;
        }
        match self.mode.as_mut() {
            Some(TapMode::Sse(tap)) if !tap.strips() => {
                // Forward now, read after (see the type's docs).
                self.pending.push_back(data.clone());
                self.unread = Some(data);
            }
            Some(TapMode::Sse(tap)) => {
                let mut out = Vec::new();
                tap.push(data, &mut out);
                self.pending.extend(out);
            }
            Some(TapMode::Json(tap)) => {
                tap.push(&data);
                self.pending.push_back(data);
            }
            Some(TapMode::Plain) | None => self.pending.push_back(data),
        }
    }

    /// Reads the chunk forwarded last, if the tap has not yet.
    fn read_unread(&mut self) {
        if let Some(chunk) = self.unread.take()
            && let Some(TapMode::Sse(tap)) = self.mode.as_mut()
        {
            tap.observe(chunk);
        }
    }

    /// The upstream ended cleanly (`clean`) or not: settle once.
    fn finish(&mut self, clean: bool) {
        self.read_unread();
        if let Some(mut r) = self.redactor.take() {
            // The held-back tail cannot hold the whole key; after a cut
            // it is dropped all the same (it may start it).
            let tail = r.finish();
            if clean && !tail.is_empty() {
                self.pending.push_back(tail);
            }
        }
        let mode = self.mode.take();
        let Some(mut settlement) = self.settlement.take() else {
            return;
        };
        // A body that did not decode is counted by the bytes that passed.
        let undecodable = self
            .decoder
            .as_ref()
            .is_some_and(Decoder::failed)
            .then_some(self.raw_bytes);
        match mode {
            Some(TapMode::Sse(tap)) => {
                let mut out = Vec::new();
                let mut outcome = tap.finish(&mut out);
                self.pending.extend(out);
                if !clean {
                    outcome.complete = false;
                }
                if let Some(raw) = undecodable {
                    outcome.output_text_bytes = outcome.output_text_bytes.max(raw);
                }
                self.give_capture(settlement.as_mut());
                settlement.stream(outcome);
            }
            Some(TapMode::Json(tap)) => {
                let mut outcome = tap.finish(settlement.flavor());
                if let Some(raw) = undecodable {
                    outcome.text_bytes = outcome.text_bytes.max(raw);
                }
                self.give_capture(settlement.as_mut());
                settlement.tapped(&outcome);
            }
            Some(TapMode::Plain) | None => settlement.plain(clean),
        }
    }
}

// === impl TapBody (capture) ===

impl TapBody {
    /// Hand the captured copy (what was handed out, and what is pending)
    /// to the settlement.
    fn give_capture(&mut self, settlement: &mut dyn Settle) {
        if let Some(mut c) = self.capture.take() {
            let pending: Vec<Bytes> = self.pending.iter().cloned().collect();
            for p in &pending {
                c.push(p);
            }
            settlement.captured(c.buf.map(Bytes::from));
        }
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        // The app went away (or hyper dropped the body) before the end: the
        // attempt still counts, from what passed.
        // An upstream that had ended cleanly still counts as complete.
        if !self.done {
            self.finish(self.ended.unwrap_or(false));
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                self.handed_out = true;
                if let Some(c) = self.capture.as_mut() {
                    c.push(&b);
                }
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            // Only event streams: their end (the last chunk) is written after the
            // settlement either way, so an app that reads to the end sees it in
            // the ledger. A body with a length would be complete without that.
            let settle_due = self.ended.is_some() && matches!(self.mode, Some(TapMode::Sse(_)));
            if self.handed_out && (self.unread.is_some() || settle_due) {
                // Let the server write what it has first (see the type's docs).
                self.handed_out = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.unread.is_some() {
                self.read_unread();
                continue;
            }
            if let Some(clean) = self.ended.take() {
                self.finish(clean);
                self.done = true;
                continue;
            }
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Pending => {
                    self.handed_out = false;
                    if let Some((after, timer)) = self.idle.as_mut()
                        && timer.as_mut().poll(cx).is_ready()
                    {
                        // The provider went silent mid-body: cut it.
                        let after = *after;
                        self.idle = None;
                        if let Some(s) = self.settlement.as_ref() {
                            s.stalled();
                        }
                        self.finish(false);
                        self.done = true;
                        return Poll::Ready(Some(Err(format!(
                            "tokenwarden sidecar: the provider sent nothing for {} ms; response cut",
                            after.as_millis()
                        )
                        .into())));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) if self.idle.is_some() => {
                    if let Some((after, timer)) = self.idle.as_mut() {
                        let at = tokio::time::Instant::now() + *after;
                        timer.as_mut().reset(at);
                    }
                    match frame.into_data() {
                        Ok(data) => self.on_data(data),
                        Err(frame) => {
                            if frame.is_trailers() {
                                return Poll::Ready(Some(Ok(frame)));
                            }
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.on_data(data),
                    Err(frame) => {
                        if frame.is_trailers() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.finish(false);
                    self.done = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => self.ended = Some(true),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            // Bytes may be removed from event streams.
            Some(TapMode::Sse(_)) => SizeHint::default(),
            _ => self.upstream.size_hint(),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(f) => Pin::new(f).poll_frame(cx).map_err(|e| match e {}),
            ProxyBody::Tap(t) => Pin::new(t.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(f) => f.is_end_stream(),
            ProxyBody::Tap(t) => t.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(f) => f.size_hint(),
            ProxyBody::Tap(t) => t.size_hint(),
        }
    }
}
