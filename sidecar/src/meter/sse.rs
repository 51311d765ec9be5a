//! The SSE tap: forwards a `text/event-stream` body chunk by chunk while
//! reading the provider's usage from it.
//!
//! Parsing follows the WHATWG event-stream rules: lines end in `\n`, `\r\n` or
//! `\r` (a `\r\n` pair may be split across chunks); a blank line dispatches
//! the event; `data:` lines (one optional space after the colon) are joined
//! with `\n`; `event:` names the event; lines starting with `:` are comments;
//! a leading UTF-8 BOM is ignored; an event without data is not dispatched,
//! nor is an unterminated event at the end of the stream. Bytes are never
//! decoded as text except inside a complete event, so chunk boundaries may
//! fall anywhere, including inside a UTF-8 sequence.
//!
//! Memory is bounded: an event larger than [`MAX_EVENT_BYTES`] is not parsed
//! (it is still forwarded unchanged), and the tap never holds more than about
//! that much of one event plus one chunk.

use bytes::Bytes;
use memchr::{memchr, memchr2};

use super::json::{AnthropicEvent, ChatChunk, ResponsesEvent};
use super::{Flavor, TokenCounts, strip};

/// The largest event (from its first line to its terminating blank line) the
/// tap parses; larger events are forwarded unparsed and unchanged.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// The longest `error` payload kept in [`TapOutcome::error_event`].
const MAX_ERROR_BYTES: usize = 2048;

/// The longest `event:` name kept; longer names match no known event.
const MAX_EVENT_NAME: usize = 64;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Buffer capacity kept between events; a bigger event's buffers are shrunk
/// back to this once it is done.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What the tap learned from a stream, returned by [`SseTap::finish`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapOutcome {
    /// The provider's final usage, when its final usage event arrived: the
    /// OpenAI chat chunk with a non-null `usage` (the last one wins), the
    /// Responses `response.completed`/`.incomplete`/`.failed` event's
    /// `response.usage`, Anthropic's `message_delta` usage merged over
    /// `message_start`'s. `None` when it never came. Every flavor sends it
    /// after generation ended, so it is exact even when `complete` is false.
    pub usage: Option<TokenCounts>,
    /// Anthropic only: the usage `message_start` reported — exact input and
    /// cache numbers, provisional output. Lets [`super::estimate_cut_stream`]
    /// count a cut stream's input exactly.
    pub start_usage: Option<TokenCounts>,
    /// The model the provider says is serving (chat: the chunks' `model`;
    /// Responses: `response.model`; Anthropic: `message_start.message.model`).
    pub served_model: Option<String>,
    /// The terminal event arrived: `data: [DONE]` (chat),
    /// `response.completed`/`response.failed`/`response.incomplete`
    /// (Responses), `message_stop` (Anthropic).
    pub complete: bool,
    /// UTF-8 bytes of generated text deltas seen (text, refusals, tool-call
    /// arguments, reasoning), for estimating the output of a cut stream.
    pub output_text_bytes: u64,
    /// Events dispatched (those with data), including unparsable ones.
    pub events: u64,
    /// The first error the provider reported in the stream: the data of an
    /// `event: error` event, of a chunk/event whose JSON is an error (a
    /// top-level `error` member or `"type":"error"`), or the `response.error`
    /// object of `response.failed`. Truncated to 2 KiB.
    pub error_event: Option<String>,
    /// The response's id and finish reasons, when the tap was made
    /// [`with_facts`](SseTap::with_facts).
    pub facts: super::ResponseFacts,
}

/// Strip mode: whose is the `\n` that may start the next chunk, when the
/// last one ended in `\r` (the pair `\r\n` split across chunks)?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SplitLf {
    /// The held event's: it stays in the held bytes.
    Hold,
    /// The event just forwarded: forward it too.
    Forward,
    /// The event just dropped: drop it too.
    Drop,
}

/// The Anthropic stream events the meter cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnthropicKind {
    MessageStart,
    MessageDelta,
    ContentBlockDelta,
    MessageStop,
    Error,
    Other,
}

/// What to do with a complete raw event when stripping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Forward,
    Drop,
    /// Forward without the bytes in this range of the event's `data` value.
    RemoveFromData(usize, usize),
}

/// Taps one SSE response body. See the [module docs](self).
///
/// Without stripping, [`push`](Self::push) forwards each chunk immediately as
/// the same [`Bytes`] (zero-copy, no added latency) and only then parses it.
/// With stripping, each event is held until its terminating blank line and
/// then forwarded as slices of the upstream chunks (zero-copy) minus what is
/// stripped.
#[derive(Debug)]
pub struct SseTap {
    flavor: Flavor,
    strip: bool,

    // Line splitting.
    /// Absolute stream offset of the next byte to be pushed.
    pos: u64,
    /// The last line ended with `\r` at the end of a chunk: a `\n` starting
    /// the next chunk belongs to that line ending.
    skip_lf: bool,
    /// The start of an incomplete line (it continues in the next chunk).
    line_buf: Vec<u8>,
    /// Absolute offset where the current line begins.
    line_start: u64,
    /// The current line overflowed the event cap and is being discarded.
    line_discard: bool,
    /// Past the first line (where a BOM would be).
    past_first_line: bool,

    // The event being accumulated.
    /// Absolute offset of the event's first line.
    event_start: u64,
    data: Vec<u8>,
    data_lines: u32,
    /// Absolute offset of the first `data` line's value.
    data_value_at: u64,
    event_name: Vec<u8>,
    /// The event exceeded [`MAX_EVENT_BYTES`]: not parsed, forwarded as is.
    oversize: bool,

    // Strip mode: the raw bytes of the event being held.
    pending: Vec<Bytes>,
    /// Absolute offset of the first held (not yet forwarded) byte.
    block_start: u64,
    /// This event grew too big to hold and is being forwarded as it comes.
    flushing: bool,
    /// Where a `\n` starting the next chunk goes (meaningful while `skip_lf`).
    split_lf: SplitLf,

    // What was learned.
    usage: Option<TokenCounts>,
    usage_final: bool,
    start_usage: Option<TokenCounts>,
    served_model: Option<String>,
    complete: bool,
    output_text_bytes: u64,
    events: u64,
    error_event: Option<String>,
    facts: Option<Box<super::ResponseFacts>>,
}

impl SseTap {
    /// A tap for one response body of the given flavor.
    ///
    /// `strip_usage` only applies to [`Flavor::OpenAiChat`] (it is ignored
    /// for the others), when the proxy added `stream_options.include_usage` on
    /// the app's behalf: the final `"choices":[]` usage chunk is dropped and
    /// the top-level `usage` member OpenAI then adds to every other chunk
    /// (`"usage":null`) is cut out of the chunk's JSON text, every other byte
    /// untouched — the client receives exactly the bytes it would have
    /// received without `include_usage`. Usage is metered all the same.
    pub fn new(flavor: Flavor, strip_usage: bool) -> Self {
        SseTap {
            flavor,
            strip: strip_usage && flavor == Flavor::OpenAiChat,
            pos: 0,
            skip_lf: false,
            line_buf: Vec::new(),
            line_start: 0,
            line_discard: false,
            past_first_line: false,
            event_start: 0,
            data: Vec::new(),
            data_lines: 0,
            data_value_at: 0,
            event_name: Vec::new(),
            oversize: false,
            pending: Vec::new(),
            block_start: 0,
            flushing: false,
            split_lf: SplitLf::Hold,
            usage: None,
            usage_final: false,
            start_usage: None,
            served_model: None,
            complete: false,
            output_text_bytes: 0,
            events: 0,
            error_event: None,
            facts: None,
        }
    }

    /// Also read the response's id and finish reasons (for traces).
    #[must_use]
    pub fn with_facts(mut self) -> Self {
        self.facts = Some(Box::default());
        self
    }

    /// Whether this tap changes the bytes (strip mode). A tap that does not
    /// lets the caller forward each chunk first and [`observe`](Self::observe)
    /// it afterwards.
    pub fn strips(&self) -> bool {
        self.strip
    }

    /// Feeds the next chunk of upstream bytes; appends what must be forwarded
    /// to `out` (possibly nothing yet, possibly several slices).
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        if !self.strip && !chunk.is_empty() {
            out.push(chunk.clone());
        }
        self.scan(chunk, out);
    }

    /// Reads a chunk the caller has already forwarded unchanged. Only for a
    /// tap that does not strip: it would have forwarded exactly that chunk.
    pub fn observe(&mut self, chunk: Bytes) {
        debug_assert!(!self.strip, "a stripping tap decides what is forwarded");
        self.scan(chunk, &mut Vec::new());
    }

    fn scan(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        if chunk.is_empty() {
            return;
        }
        let base = self.pos;
        self.pos += chunk.len() as u64;
        let buf: &[u8] = &chunk;
        let mut i = 0;
        // Strip mode: `chunk[..emit_from]` is already forwarded, dropped or held.
        let mut emit_from = 0;

        if self.skip_lf {
            self.skip_lf = false;
            if buf.first() == Some(&b'\n') {
                i = 1;
                if self.event_start == self.line_start {
                    self.event_start += 1;
                }
                self.line_start += 1;
                if self.strip && self.split_lf != SplitLf::Hold {
                    if self.split_lf == SplitLf::Forward {
                        out.push(chunk.slice(..1));
                    }
                    emit_from = 1;
                    self.block_start += 1;
                }
            }
        }

        while i < buf.len() {
            let Some(k) = buf.get(i..).and_then(|rest| memchr2(b'\n', b'\r', rest)) else {
                self.append_partial(buf.get(i..).unwrap_or_default());
                break;
            };
            let end = i + k;
            let mut next = end + 1;
            if buf.get(end) == Some(&b'\r') {
                match buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let blank = self.end_line(buf.get(i..end).unwrap_or_default());
            self.line_start = base + next as u64;
            if blank {
                let action = self.dispatch(base + next as u64);
                if self.strip {
                    let tail = chunk.slice(emit_from..next);
                    self.emit_event(tail, action, out);
                    self.block_start = base + next as u64;
                    emit_from = next;
                    self.split_lf = match action {
                        Action::Drop => SplitLf::Drop,
                        Action::Forward | Action::RemoveFromData(..) => SplitLf::Forward,
                    };
                }
                self.event_start = self.line_start;
            } else {
                self.split_lf = SplitLf::Hold;
            }
            i = next;
        }

        if self.strip && emit_from < buf.len() {
            let rest = chunk.slice(emit_from..);
            if self.flushing {
                out.push(rest);
                self.block_start = self.pos;
            } else {
                self.pending.push(rest);
                if self.pos - self.event_start > MAX_EVENT_BYTES as u64 {
                    // Too big to hold: forward what we have and the rest of
                    // this event as it comes (it will not be stripped).
                    out.append(&mut self.pending);
                    self.flushing = true;
                    self.block_start = self.pos;
                }
            }
        }
    }

    /// The upstream ended (cleanly or not): forwards anything still held and
    /// returns what was learned. An unterminated last event is forwarded as
    /// is but not dispatched (as an SSE client would discard it).
    pub fn finish(mut self, out: &mut Vec<Bytes>) -> TapOutcome {
        out.append(&mut self.pending);
        TapOutcome {
            usage: if self.usage_final { self.usage } else { None },
            start_usage: self.start_usage,
            served_model: self.served_model,
            complete: self.complete,
            output_text_bytes: self.output_text_bytes,
            events: self.events,
            error_event: self.error_event,
            facts: self.facts.map(|f| *f).unwrap_or_default(),
        }
    }

    /// The usage seen so far: the final usage once it arrived; for Anthropic,
    /// `message_start`'s usage (with the latest cumulative output) before that.
    pub fn usage_so_far(&self) -> Option<&TokenCounts> {
        self.usage.as_ref()
    }

    /// The model the provider says is serving, once seen.
    pub fn served_model(&self) -> Option<&str> {
        self.served_model.as_deref()
    }

    /// Whether the terminal event has arrived.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Bytes the tap holds: its parse buffers plus, when stripping, the
    /// upstream chunks of the event being held.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.line_buf.capacity()
            + self.data.capacity()
            + self.pending.iter().map(Bytes::len).sum::<usize>()
    }

    // ------------------------------------------------------------ lines

    /// Keeps the start of a line that continues in the next chunk.
    fn append_partial(&mut self, part: &[u8]) {
        if self.line_discard {
            return;
        }
        if self.oversize {
            // The event is not parsed any more; only blankness matters, and a
            // line with bytes is not blank.
            self.line_discard = true;
            self.line_buf.clear();
            return;
        }
        if self.line_buf.len() + part.len() + self.data.len() > MAX_EVENT_BYTES {
            self.overflow();
        } else {
            extend_capped(&mut self.line_buf, part);
        }
    }

    /// The event is too big to parse: drop what was kept of it.
    fn overflow(&mut self) {
        self.line_discard = true;
        self.oversize = true;
        self.line_buf.clear();
        self.data.clear();
    }

    /// A line ended; `part` is its last (or only) piece. Returns whether it
    /// was blank (which ends the event).
    fn end_line(&mut self, part: &[u8]) -> bool {
        if self.line_discard {
            // An overflowing line is longer than the cap, so not blank.
            self.line_discard = false;
            self.line_buf.clear();
            self.past_first_line = true;
            return false;
        }
        if self.line_buf.is_empty() {
            return self.field(part);
        }
        if self.line_buf.len() + part.len() + self.data.len() > MAX_EVENT_BYTES {
            self.overflow();
            self.line_discard = false;
            self.past_first_line = true;
            return false;
        }
        let mut line = std::mem::take(&mut self.line_buf);
        line.extend_from_slice(part);
        let blank = self.field(&line);
        line.clear();
        self.line_buf = line;
        blank
    }

    /// Interprets one complete line (without its ending).
    fn field(&mut self, line: &[u8]) -> bool {
        if line.len() + self.data.len() > MAX_EVENT_BYTES {
            self.overflow();
            self.line_discard = false;
            self.past_first_line = true;
            return false;
        }
        let mut line = line;
        let mut offset = 0;
        if !self.past_first_line {
            self.past_first_line = true;
            if let Some(rest) = line.strip_prefix(BOM) {
                line = rest;
                offset = BOM.len();
            }
        }
        if line.is_empty() {
            return true;
        }
        if self.oversize || line.first() == Some(&b':') {
            return false;
        }
        let (name, value, value_offset) = match memchr(b':', line) {
            Some(colon) => {
                let v = if line.get(colon + 1) == Some(&b' ') {
                    colon + 2
                } else {
                    colon + 1
                };
                (
                    line.get(..colon).unwrap_or_default(),
                    line.get(v..).unwrap_or_default(),
                    v,
                )
            }
            None => (line, &[][..], line.len()),
        };
        match name {
            b"data" => {
                if self.data_lines == 0 {
                    self.data_value_at = self.line_start + (offset + value_offset) as u64;
                } else {
                    self.data.push(b'\n');
                }
                extend_capped(&mut self.data, value);
                self.data_lines = self.data_lines.saturating_add(1);
            }
            b"event" => {
                self.event_name.clear();
                if value.len() <= MAX_EVENT_NAME {
                    self.event_name.extend_from_slice(value);
                } else {
                    self.event_name.extend_from_slice(b"\0too-long");
                }
            }
            _ => {} // `id`, `retry` and unknown fields do not matter here
        }
        false
    }

    // ------------------------------------------------------------ events

    /// A blank line ended the event (at absolute offset `end`): meter it and
    /// decide what to forward, then reset for the next event.
    fn dispatch(&mut self, end: u64) -> Action {
        let too_big = self.oversize || end - self.event_start > MAX_EVENT_BYTES as u64;
        let mut action = Action::Forward;
        if self.data_lines > 0 || self.oversize {
            self.events += 1;
            if !self.oversize {
                action = self.meter_event();
            }
        }
        if too_big || self.flushing {
            action = Action::Forward;
        }
        self.data.clear();
        self.data.shrink_to(KEEP_CAPACITY);
        self.line_buf.shrink_to(KEEP_CAPACITY);
        self.data_lines = 0;
        self.event_name.clear();
        self.oversize = false;
        self.flushing = false;
        action
    }

    /// Reads usage from the dispatched event; returns the strip action.
    fn meter_event(&mut self) -> Action {
        let data = std::mem::take(&mut self.data);
        if let Some(facts) = self.facts.as_deref_mut() {
            facts.event(self.flavor, &data);
        }
        if self.event_name == b"error" {
            self.record_error(&data);
        }
        let action = match self.flavor {
            Flavor::OpenAiChat => self.chat_event(&data),
            Flavor::OpenAiResponses => {
                self.responses_event(&data);
                Action::Forward
            }
            Flavor::Anthropic => {
                self.anthropic_event(&data);
                Action::Forward
            }
            Flavor::OpenAiEmbeddings => Action::Forward,
        };
        self.data = data;
        action
    }

    fn chat_event(&mut self, data: &[u8]) -> Action {
        if data.trim_ascii() == b"[DONE]" {
            self.complete = true;
            return Action::Forward;
        }
        let Some(chunk) = object::<ChatChunk<'_>>(data) else {
            return Action::Forward;
        };
        if let Some(model) = &chunk.model {
            self.set_model(model);
        }
        if chunk.error.is_some() {
            self.record_error(data);
        }
        let no_choices = chunk.choices.as_ref().map(|c| c.count == 0);
        if let Some(choices) = &chunk.choices {
            self.output_text_bytes += choices.text_bytes;
        }
        let has_usage = chunk.usage.is_some();
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.to_usage());
            self.usage_final = true;
        }
        if !self.strip {
            return Action::Forward;
        }
        if no_choices == Some(true) && has_usage {
            // The extra chunk include_usage adds: the client never asked for it.
            return Action::Drop;
        }
        if self.data_lines != 1 {
            // The data value is not one contiguous run of the raw event.
            return Action::Forward;
        }
        match strip::member_removal_span(data, b"usage") {
            Some(span) => Action::RemoveFromData(span.start, span.end),
            None => Action::Forward,
        }
    }

    fn responses_event(&mut self, data: &[u8]) {
        let parsed = object::<ResponsesEvent<'_>>(data);
        let kind: &[u8] = match parsed.as_ref().and_then(|e| e.kind.as_deref()) {
            Some(kind) => kind.as_bytes(),
            None => &self.event_name,
        };
        let terminal = matches!(
            kind,
            b"response.completed" | b"response.failed" | b"response.incomplete"
        );
        let failed = kind == b"response.failed";
        let error = kind == b"error";
        let counts_text =
            kind.ends_with(b".delta") && memchr::memmem::find(kind, b"audio").is_none();
        if terminal {
            self.complete = true;
        }
        if error {
            self.record_error(data);
        }
        if let Some(event) = parsed {
            if counts_text {
                self.output_text_bytes += event.delta.map_or(0, |d| d.0);
            }
            if let Some(response) = &event.response {
                if let Some(model) = &response.model {
                    self.set_model(model);
                }
                if let Some(usage) = &response.usage {
                    self.usage = Some(usage.to_usage());
                    self.usage_final = true;
                }
                if failed && self.error_event.is_none() {
                    self.error_event = response.error.as_ref().map(ToString::to_string);
                }
            }
        }
        if failed && self.error_event.is_none() {
            self.error_event = Some("response.failed".to_owned());
        }
    }

    fn anthropic_event(&mut self, data: &[u8]) {
        let parsed = object::<AnthropicEvent<'_>>(data);
        // The JSON `type`, else the SSE event name (Anthropic sends both).
        let kind: &[u8] = match parsed.as_ref().and_then(|e| e.kind.as_deref()) {
            Some(kind) => kind.as_bytes(),
            None => &self.event_name,
        };
        let kind = match kind {
            b"message_start" => AnthropicKind::MessageStart,
            b"message_delta" => AnthropicKind::MessageDelta,
            b"content_block_delta" => AnthropicKind::ContentBlockDelta,
            b"message_stop" => AnthropicKind::MessageStop,
            b"error" => AnthropicKind::Error,
            _ => AnthropicKind::Other,
        };
        match kind {
            AnthropicKind::MessageStop => self.complete = true,
            AnthropicKind::Error => self.record_error(data),
            _ => {}
        }
        let Some(event) = parsed else { return };
        match kind {
            AnthropicKind::MessageStart => {
                if let Some(message) = &event.message {
                    if let Some(model) = &message.model {
                        self.set_model(model);
                    }
                    if let Some(usage) = &message.usage {
                        let start = usage.to_usage();
                        self.start_usage = Some(start);
                        self.usage = Some(start);
                    }
                }
            }
            AnthropicKind::MessageDelta => {
                if let Some(delta_usage) = &event.usage {
                    let usage = self.usage.get_or_insert_with(TokenCounts::default);
                    delta_usage.merge_into(usage);
                    self.usage_final = true;
                }
            }
            AnthropicKind::ContentBlockDelta => {
                if let Some(delta) = &event.delta {
                    self.output_text_bytes += delta.text_bytes();
                }
            }
            AnthropicKind::MessageStop | AnthropicKind::Error | AnthropicKind::Other => {}
        }
    }

    fn set_model(&mut self, model: &str) {
        if !model.is_empty() && self.served_model.as_deref() != Some(model) {
            self.served_model = Some(model.to_owned());
        }
    }

    fn record_error(&mut self, data: &[u8]) {
        if self.error_event.is_some() {
            return;
        }
        let mut end = data.len().min(MAX_ERROR_BYTES);
        let text = match std::str::from_utf8(data) {
            Ok(text) => {
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.get(..end).unwrap_or_default().to_owned()
            }
            Err(_) => String::from_utf8_lossy(data.get(..end).unwrap_or_default()).into_owned(),
        };
        self.error_event = Some(text);
    }

    // ------------------------------------------------------------ strip mode output

    /// Forwards the held event (`pending` + `tail`) according to `action`.
    fn emit_event(&mut self, tail: Bytes, action: Action, out: &mut Vec<Bytes>) {
        match action {
            Action::Forward => {
                out.append(&mut self.pending);
                if !tail.is_empty() {
                    out.push(tail);
                }
            }
            Action::Drop => self.pending.clear(),
            Action::RemoveFromData(from, to) => {
                let Some(at) = self.data_value_at.checked_sub(self.block_start) else {
                    self.emit_event(tail, Action::Forward, out);
                    return;
                };
                let (cut_from, cut_to) = (at as usize + from, at as usize + to);
                let mut offset = 0;
                for piece in self.pending.drain(..).chain(std::iter::once(tail)) {
                    let (start, end) = (offset, offset + piece.len());
                    offset = end;
                    if end <= cut_from || start >= cut_to {
                        if !piece.is_empty() {
                            out.push(piece);
                        }
                        continue;
                    }
                    if cut_from > start {
                        out.push(piece.slice(..cut_from - start));
                    }
                    if cut_to < end {
                        out.push(piece.slice(cut_to - start..));
                    }
                }
            }
        }
    }
}

/// Appends to a parse buffer, growing it geometrically but never past the
/// event cap (so a buffer never holds more than [`MAX_EVENT_BYTES`] of capacity).
fn extend_capped(buf: &mut Vec<u8>, part: &[u8]) {
    let needed = buf.len() + part.len();
    if needed > buf.capacity() {
        let target = needed
            .max(buf.capacity() * 2)
            .min(MAX_EVENT_BYTES)
            .max(needed);
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(part);
}

/// An event's data read as `T` when it is a JSON object: serde's derived
/// structs would also read an array by position (fuzzing found
/// `["gpt-x",[],[1000,20]]` metered as a chat chunk with usage).
fn object<'a, T: serde::Deserialize<'a>>(data: &'a [u8]) -> Option<T> {
    if data.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(data).ok()
}
