//! [`Fingerprint`]: the compact, text-free image of a request's prompt in
//! the order the provider's prefix cache sees it — one entry per block
//! (tool, system part, message content block, input item), each with its
//! length and hashes, a chain of content-defined run hashes, the located
//! volatile runs, and where the provider would cache up to.

use std::{mem::size_of, time::Duration};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    limits::MonitorLimits,
    scan::{self, Pattern, PatternSink},
};
use crate::workload::Endpoint;

/// Anthropic's default cache lifetime, and OpenAI's in-memory retention.
const TTL_5M: u32 = 5 * 60;
/// Anthropic's `"ttl": "1h"`.
const TTL_1H: u32 = 60 * 60;
/// OpenAI's `prompt_cache_retention: "24h"`.
const TTL_24H: u32 = 24 * 60 * 60;
/// OpenAI caches prompts of at least 1,024 tokens: about 4,096 bytes.
const OPENAI_MIN_BYTES: u64 = 4096;
/// At most this many breakpoints are kept (Anthropic allows 4).
const MAX_BREAKPOINTS: usize = 8;

/// The compact image of one request's prompt: hashes, lengths and offsets
/// only, never prompt text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub(super) blocks: Box<[Block]>,
    pub(super) runs: Box<[Run]>,
    pub(super) patterns: Box<[Pattern]>,
    pub(super) breakpoints: Box<[Breakpoint]>,
    pub(super) rendered: u64,
    pub(super) cacheable: u64,
    pub(super) ttl_secs: u32,
    pub(super) anthropic: bool,
    /// The model's minimum cacheable length in tokens, when the caller
    /// knows it (0: [`MonitorLimits::min_cacheable_tokens`] applies).
    pub(super) min_cacheable_tokens: u64,
}

/// Which part of the request a block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Section {
    /// `tools[i]`.
    Tool,
    /// `system` (a string).
    System,
    /// `system[i]`.
    SystemItem,
    /// `messages[i]` (string content, or a whole OpenAI message).
    Message,
    /// `messages[i].content[j]`.
    MessageContent,
    /// `instructions`.
    Instructions,
    /// `input` (a string).
    Input,
    /// `input[i]`.
    InputItem,
}

/// One block: 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Block {
    /// Hash of the bytes (folded from the run hashes).
    pub raw: u64,
    /// Hash with digit and hex-id runs masked.
    pub masked: u32,
    /// Hash with whitespace runs normalised.
    pub ws: u32,
    /// Length in bytes.
    pub len: u32,
    /// One past the index of its last run in `runs`; its runs start at the
    /// previous block's `run_end`. An empty range: compared whole.
    pub run_end: u32,
    /// First index of the label.
    pub i: u32,
    /// Second index of the label (`content[j]`).
    pub j: u16,
    /// The section.
    pub section: Section,
    /// A system prompt: Anthropic `system`, `instructions`, or an OpenAI
    /// message or input item whose role is `system` or `developer`.
    pub system_like: bool,
}

/// One content-defined run of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    /// Hash of its bytes.
    pub hash: u32,
    /// Its length.
    pub len: u32,
}

/// An Anthropic `cache_control` breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Breakpoint {
    /// The block carrying it.
    pub block: u32,
    /// Rendered bytes up to the end of that block.
    pub end: u64,
}

#[derive(Deserialize)]
struct AnthropicBody<'a> {
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<AnthropicMessage<'a>>>,
    #[serde(borrow, default)]
    cache_control: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnthropicMessage<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    prompt_cache_retention: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResponsesBody<'a> {
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt_cache_retention: Option<&'a RawValue>,
}

/// A block's own `cache_control` member.
#[derive(Deserialize)]
struct WithCacheControl<'a> {
    #[serde(borrow, default)]
    cache_control: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CacheControl<'a> {
    #[serde(borrow, default)]
    ttl: Option<&'a str>,
}

/// Builds a fingerprint block by block.
struct Builder {
    anthropic: bool,
    blocks: Vec<Block>,
    runs: Vec<Run>,
    patterns: Vec<Pattern>,
    breakpoints: Vec<Breakpoint>,
    rendered: u64,
    ttl_1h: bool,
    max_patterns: usize,
    ends: Vec<u32>,
}

// === impl Fingerprint ===

impl Fingerprint {
    /// The fingerprint of a request body as sent upstream, with the default
    /// [`MonitorLimits`]. `None` for embeddings and for bodies whose prompt
    /// sections cannot be read (not JSON, wrong shapes, no prompt).
    pub fn of(endpoint: Endpoint, body: &[u8]) -> Option<Fingerprint> {
        Fingerprint::of_with(endpoint, body, &MonitorLimits::default())
    }

    /// [`Fingerprint::of`] within the given limits (`max_blocks`,
    /// `max_runs`, `max_patterns`).
    pub fn of_with(endpoint: Endpoint, body: &[u8], limits: &MonitorLimits) -> Option<Fingerprint> {
        let mut b = Builder::new(endpoint == Endpoint::Messages, limits);
        let (cacheable, ttl_secs) = match endpoint {
            Endpoint::Embeddings => return None,
            Endpoint::Messages => b.anthropic(serde_json::from_slice(body).ok()?)?,
            Endpoint::ChatCompletions => {
                let body: ChatBody<'_> = serde_json::from_slice(body).ok()?;
                b.tools(body.tools.as_deref());
                for (i, m) in body.messages.iter().flatten().enumerate() {
                    b.push(Section::Message, i, 0, m, role_is_system(m));
                }
                b.openai(body.prompt_cache_retention)
            }
            Endpoint::Responses => {
                let body: ResponsesBody<'_> = serde_json::from_slice(body).ok()?;
                b.tools(body.tools.as_deref());
                if let Some(ins) = body.instructions {
                    b.push(Section::Instructions, 0, 0, ins, true);
                }
                if let Some(input) = body.input {
                    b.items(Section::Input, Section::InputItem, input)?;
                }
                b.openai(body.prompt_cache_retention)
            }
        };
        if b.blocks.is_empty() {
            return None;
        }
        let mut fp = Fingerprint {
            blocks: b.blocks.into_boxed_slice(),
            runs: b.runs.into_boxed_slice(),
            patterns: b.patterns.into_boxed_slice(),
            breakpoints: b.breakpoints.into_boxed_slice(),
            rendered: b.rendered,
            cacheable,
            ttl_secs,
            anthropic: endpoint == Endpoint::Messages,
            min_cacheable_tokens: 0,
        };
        fp.limit(limits);
        Some(fp)
    }

    /// Whether a fingerprint of `body` could ever matter: `false` for a
    /// prompt the provider cannot cache, which can then neither bust, nor
    /// miss, nor be the cached predecessor of a later prompt. That is an
    /// OpenAI body under 4,096 bytes (its rendered prompt is under the
    /// 4,096 bytes taken for OpenAI's 1,024-token minimum, so its
    /// cacheable point is 0) and an Anthropic body without the bytes
    /// `cache_control` (no breakpoint, nothing cached; a body with a `\u00`
    /// escape is fingerprinted, its keys may spell it so). A substring
    /// test: the common short request costs the monitor nothing.
    pub fn can_matter(endpoint: Endpoint, body: &[u8]) -> bool {
        match endpoint {
            // A key spelled with escapes (`cache\u005fcontrol`) has a `\u00`.
            Endpoint::Messages => {
                memchr::memmem::find(body, b"cache_control").is_some()
                    || memchr::memmem::find(body, b"\\u00").is_some()
            }
            Endpoint::ChatCompletions | Endpoint::Responses => {
                body.len() as u64 >= OPENAI_MIN_BYTES
            }
            Endpoint::Embeddings => false,
        }
    }

    /// Bytes of the rendered prompt (the blocks, as sent; Anthropic blocks
    /// without their `cache_control` member).
    pub fn rendered_bytes(&self) -> u64 {
        self.rendered
    }

    /// How far (in rendered bytes) the provider would cache this prompt:
    /// Anthropic, the end of the last block carrying `cache_control` (the
    /// last block when the request has a top-level `cache_control`), 0 when
    /// none; OpenAI, the whole prompt when it is at least ~1,024 tokens
    /// (4,096 bytes), else 0.
    pub fn cacheable_bytes(&self) -> u64 {
        self.cacheable
    }

    /// The provider's cache lifetime for this request: Anthropic 1 hour when
    /// a breakpoint says `"ttl": "1h"`, else 5 minutes; OpenAI 24 hours with
    /// `prompt_cache_retention: "24h"`, else 5 minutes.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.ttl_secs))
    }

    /// The prompt goes to a model that caches nothing shorter than
    /// `tokens` (Anthropic's minimum differs by model: 1,024, 2,048 or
    /// 4,096 tokens): a shorter prefix is neither expected to be read nor
    /// counted as lost. Raises, never lowers,
    /// [`MonitorLimits::min_cacheable_tokens`].
    #[must_use]
    pub fn with_min_cacheable_tokens(mut self, tokens: u64) -> Fingerprint {
        self.min_cacheable_tokens = tokens;
        self
    }

    /// Heap bytes this fingerprint holds.
    pub fn heap_bytes(&self) -> usize {
        size_of::<Block>() * self.blocks.len()
            + size_of::<Run>() * self.runs.len()
            + size_of::<Pattern>() * self.patterns.len()
            + size_of::<Breakpoint>() * self.breakpoints.len()
    }

    /// The most a fingerprint within `limits` can take, its own struct
    /// included.
    pub fn max_bytes(limits: &MonitorLimits) -> usize {
        size_of::<Fingerprint>()
            + size_of::<Block>() * limits.max_blocks
            + size_of::<Run>() * limits.max_runs
            + size_of::<Pattern>() * limits.max_patterns
            + size_of::<Breakpoint>() * MAX_BREAKPOINTS
    }

    /// The label of block `b`: `tools[2]`, `system`, `messages[3].content[0]`…
    pub(super) fn label(&self, b: usize) -> String {
        let Some(k) = self.blocks.get(b) else {
            return String::new();
        };
        match k.section {
            Section::Tool => format!("tools[{}]", k.i),
            Section::System => "system".to_owned(),
            Section::SystemItem => format!("system[{}]", k.i),
            Section::Message => format!("messages[{}]", k.i),
            Section::MessageContent => format!("messages[{}].content[{}]", k.i, k.j),
            Section::Instructions => "instructions".to_owned(),
            Section::Input => "input".to_owned(),
            Section::InputItem => format!("input[{}]", k.i),
        }
    }

    /// The runs of block `b` (empty when they were not kept).
    pub(super) fn block_runs(&self, b: usize) -> &[Run] {
        let start = match b.checked_sub(1) {
            Some(p) => self.blocks.get(p).map_or(0, |p| p.run_end as usize),
            None => 0,
        };
        let end = self.blocks.get(b).map_or(start, |k| k.run_end as usize);
        self.runs.get(start..end).unwrap_or(&[])
    }

    /// The units block `b` is compared in: its runs, or the whole block
    /// when its runs were not kept.
    pub(super) fn units(&self, b: usize) -> impl Iterator<Item = Run> + '_ {
        let runs = self.block_runs(b);
        let whole = match (runs.is_empty(), self.blocks.get(b)) {
            (true, Some(k)) => Some(Run {
                hash: k.raw as u32,
                len: k.len,
            }),
            _ => None,
        };
        runs.iter().copied().chain(whole)
    }

    /// Keep within `limits`: fold blocks beyond `max_blocks - 1` into one,
    /// drop runs beyond `max_runs` (whole blocks at a time) and patterns
    /// beyond `max_patterns`.
    pub(super) fn limit(&mut self, limits: &MonitorLimits) {
        let max_blocks = limits.max_blocks.max(1);
        if self.blocks.len() > max_blocks {
            self.fold_tail(max_blocks - 1);
        }
        if self.runs.len() > limits.max_runs {
            let mut blocks = self.blocks.to_vec();
            let mut prev = 0u32;
            for b in &mut blocks {
                if b.run_end as usize > limits.max_runs {
                    b.run_end = prev;
                }
                prev = b.run_end;
            }
            self.runs = self.runs[..prev as usize].into();
            self.blocks = blocks.into_boxed_slice();
        }
        if self.patterns.len() > limits.max_patterns {
            self.patterns = self.patterns[..limits.max_patterns].into();
        }
    }

    /// Fold blocks `t..` into block `t`.
    fn fold_tail(&mut self, t: usize) {
        let mut blocks = self.blocks.to_vec();
        let mut starts = Vec::with_capacity(blocks.len() - t);
        let mut tail = blocks[t];
        starts.push(0u32);
        for b in &blocks[t + 1..] {
            starts.push(tail.len);
            tail.raw = scan::combine(tail.raw, b.raw);
            tail.masked = scan::combine(u64::from(tail.masked), u64::from(b.masked)) as u32;
            tail.ws = scan::combine(u64::from(tail.ws), u64::from(b.ws)) as u32;
            tail.len = tail.len.saturating_add(b.len);
            tail.run_end = b.run_end;
        }
        blocks.truncate(t);
        blocks.push(tail);
        self.blocks = blocks.into_boxed_slice();
        let t32 = t as u32;
        for p in self.patterns.iter_mut().filter(|p| p.block > t32) {
            p.offset = p.offset.saturating_add(starts[(p.block - t32) as usize]);
            p.block = t32;
        }
        for bp in self.breakpoints.iter_mut().filter(|bp| bp.block > t32) {
            bp.block = t32;
        }
    }
}

// === impl Builder ===

impl Builder {
    fn new(anthropic: bool, limits: &MonitorLimits) -> Builder {
        Builder {
            anthropic,
            blocks: Vec::new(),
            runs: Vec::new(),
            patterns: Vec::new(),
            breakpoints: Vec::new(),
            rendered: 0,
            ttl_1h: false,
            max_patterns: limits.max_patterns,
            ends: Vec::new(),
        }
    }

    /// Anthropic: tools → system → messages; returns (cacheable, ttl).
    fn anthropic(&mut self, body: AnthropicBody<'_>) -> Option<(u64, u32)> {
        self.tools(body.tools.as_deref());
        if let Some(system) = body.system {
            self.items(Section::System, Section::SystemItem, system)?;
        }
        for (i, m) in body.messages.iter().flatten().enumerate() {
            let Some(content) = m.content else { continue };
            if content.get().starts_with('"') {
                self.push(Section::Message, i, 0, content, false);
            } else {
                let blocks: Vec<&RawValue> = serde_json::from_str(content.get()).ok()?;
                for (j, c) in blocks.into_iter().enumerate() {
                    self.push(Section::MessageContent, i, j, c, false);
                }
            }
        }
        // Automatic caching: a top-level `cache_control` puts the
        // breakpoint on the last cacheable block.
        if let Some(cc) = body.cache_control {
            let last = self.blocks.len().checked_sub(1)?;
            self.breakpoint(last, cc.get());
        }
        let cacheable = self.breakpoints.iter().map(|b| b.end).max().unwrap_or(0);
        Some((cacheable, if self.ttl_1h { TTL_1H } else { TTL_5M }))
    }

    /// OpenAI: (cacheable, ttl).
    fn openai(&self, retention: Option<&RawValue>) -> (u64, u32) {
        let cacheable = if self.rendered >= OPENAI_MIN_BYTES {
            self.rendered
        } else {
            0
        };
        let ttl = match retention.map(RawValue::get) {
            Some("\"24h\"") => TTL_24H,
            _ => TTL_5M,
        };
        (cacheable, ttl)
    }

    fn tools(&mut self, tools: Option<&[&RawValue]>) {
        for (i, t) in tools.unwrap_or_default().iter().enumerate() {
            self.push(Section::Tool, i, 0, t, false);
        }
    }

    /// A string (one block) or an array (one block per element).
    fn items(&mut self, whole: Section, item: Section, v: &RawValue) -> Option<()> {
        let system = whole == Section::System;
        if v.get().starts_with('"') {
            self.push(whole, 0, 0, v, true);
        } else {
            let items: Vec<&RawValue> = serde_json::from_str(v.get()).ok()?;
            for (i, x) in items.into_iter().enumerate() {
                self.push(item, i, 0, x, system || role_is_system(x));
            }
        }
        Some(())
    }

    fn push(&mut self, section: Section, i: usize, j: usize, v: &RawValue, system_like: bool) {
        let raw = v.get();
        let stripped =
            if self.anthropic && raw.starts_with('{') && raw.contains("\"cache_control\"") {
                strip_cache_control(raw)
            } else {
                None
            };
        let bytes = match &stripped {
            Some((bytes, _)) => bytes.as_slice(),
            None => raw.as_bytes(),
        };
        // Anthropic renders a string and one plain text block alike (the
        // string is shorthand for it): a plain text block is its text.
        let bytes = if self.anthropic {
            plain_text(bytes).unwrap_or(bytes)
        } else {
            bytes
        };
        let index = self.blocks.len();
        self.ends.clear();
        scan::run_ends(bytes, &mut self.ends);
        let mut raw_hash = bytes.len() as u64;
        let mut prev = 0usize;
        for &e in &self.ends {
            let h = scan::hash(&bytes[prev..e as usize]);
            raw_hash = scan::combine(raw_hash, h);
            self.runs.push(Run {
                hash: h as u32,
                len: e - prev as u32,
            });
            prev = e as usize;
        }
        let masks = scan::scan_block(
            bytes,
            &mut PatternSink {
                out: &mut self.patterns,
                cap: self.max_patterns,
                block: index as u32,
                ends: &self.ends,
            },
        );
        self.blocks.push(Block {
            raw: raw_hash,
            masked: masks.masked as u32,
            ws: masks.ws as u32,
            len: bytes.len() as u32,
            run_end: self.runs.len() as u32,
            i: i as u32,
            j: j.min(usize::from(u16::MAX)) as u16,
            section,
            system_like,
        });
        self.rendered += bytes.len() as u64;
        if let Some((_, cc)) = stripped {
            self.breakpoint(index, cc);
        }
    }

    fn breakpoint(&mut self, block: usize, cache_control: &str) {
        let cc: Option<CacheControl<'_>> = serde_json::from_str(cache_control).ok();
        if cc.as_ref().and_then(|c| c.ttl) == Some("1h") {
            self.ttl_1h = true;
        }
        if self.breakpoints.len() < MAX_BREAKPOINTS {
            self.breakpoints.push(Breakpoint {
                block: block as u32,
                end: self.rendered,
            });
        }
    }
}

/// The text literal (quotes included) of a plain Anthropic text block,
/// `{"type": "text", "text": "…"}` with no other member; `None` for
/// anything else.
fn plain_text(bytes: &[u8]) -> Option<&[u8]> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(borrow)]
        text: &'a serde_json::value::RawValue,
    }
    if !bytes.starts_with(b"{") {
        return None;
    }
    let p: Plain<'_> = serde_json::from_slice(bytes).ok()?;
    let text = p.text.get();
    if p.kind != "text" || !text.starts_with('"') {
        return None;
    }
    // The literal lies inside `bytes`: find its offset by address.
    let start = (text.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    bytes.get(start..start + text.len())
}

/// A block's bytes without its top-level `cache_control` member (the
/// provider does not render it, and clients move it from turn to turn),
/// and that member's value. `None` when it has none.
fn strip_cache_control(raw: &str) -> Option<(Vec<u8>, &str)> {
    let with: WithCacheControl<'_> = serde_json::from_str(raw).ok()?;
    let value = with.cache_control?.get();
    let b = raw.as_bytes();
    let vs = (value.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let ve = vs + value.len();
    let back = |mut k: usize| {
        while k > 0 && b[k - 1].is_ascii_whitespace() {
            k -= 1;
        }
        k
    };
    let colon = back(vs);
    if colon == 0 || b[colon - 1] != b':' {
        return None;
    }
    let key_end = back(colon - 1);
    let key_start = key_end.checked_sub("\"cache_control\"".len())?;
    if &b[key_start..key_end] != b"\"cache_control\"" {
        return None;
    }
    let before = back(key_start);
    let (s, e) = if before > 0 && b[before - 1] == b',' {
        (before - 1, ve)
    } else {
        // The first member: drop it and the comma after it.
        let mut e = ve;
        while e < b.len() && b[e].is_ascii_whitespace() {
            e += 1;
        }
        if b.get(e) == Some(&b',') {
            e += 1;
            while e < b.len() && b[e].is_ascii_whitespace() {
                e += 1;
            }
        }
        (key_start, e)
    };
    let mut out = Vec::with_capacity(b.len() - (e - s));
    out.extend_from_slice(&b[..s]);
    out.extend_from_slice(&b[e..]);
    Some((out, value))
}

/// An OpenAI message or input item whose first member is `"role"` with
/// the value `"system"` or `"developer"` (how SDKs and people write them).
fn role_is_system(v: &RawValue) -> bool {
    let s = v.get().trim_start_matches('{').trim_start();
    let Some(rest) = s.strip_prefix("\"role\"") else {
        return false;
    };
    let rest = rest.trim_start().trim_start_matches(':').trim_start();
    rest.starts_with("\"system\"") || rest.starts_with("\"developer\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_not_part_of_a_block() {
        let a = strip_cache_control(
            r#"{"type":"text","text":"hi", "cache_control" : {"type":"ephemeral","ttl":"1h"}}"#,
        )
        .map(|(b, v)| (String::from_utf8(b).unwrap_or_default(), v.to_owned()));
        assert_eq!(
            a,
            Some((
                r#"{"type":"text","text":"hi"}"#.to_owned(),
                r#"{"type":"ephemeral","ttl":"1h"}"#.to_owned()
            ))
        );
        let b = strip_cache_control(r#"{"cache_control":{"type":"ephemeral"}, "type":"text"}"#)
            .map(|(b, _)| String::from_utf8(b).unwrap_or_default());
        assert_eq!(b.as_deref(), Some(r#"{"type":"text"}"#));
        assert_eq!(strip_cache_control(r#"{"text":"\"cache_control\""}"#), None);
    }

    #[test]
    fn blocks_follow_the_providers_rendering_order() {
        let body = br#"{"model":"m","tools":[{"name":"a"},{"name":"b"}],"system":[{"type":"text","text":"s0"},{"type":"text","text":"s1","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"text","text":"a"}]}]}"#;
        let fp = Fingerprint::of(Endpoint::Messages, body).unwrap();
        let labels: Vec<String> = (0..fp.blocks.len()).map(|b| fp.label(b)).collect();
        assert_eq!(
            labels,
            [
                "tools[0]",
                "tools[1]",
                "system[0]",
                "system[1]",
                "messages[0]",
                "messages[1].content[0]"
            ]
        );
        // A plain text block is its text, as a string is: Anthropic renders
        // `"q"` and `[{"type":"text","text":"q"}]` alike.
        let blocks = [
            r#"{"name":"a"}"#,
            r#"{"name":"b"}"#,
            r#""s0""#,
            r#""s1""#,
            r#""q""#,
            r#""a""#,
        ];
        let lens = blocks.map(|b| b.len() as u64);
        let raws: Vec<u64> = fp.blocks.iter().map(|b| b.raw).collect();
        let want = Fingerprint::of(
            Endpoint::Messages,
            br#"{"tools":[{"name":"a"},{"name":"b"}],"system":[{"type":"text","text":"s0"},{"type":"text","text":"s1"}],"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"text","text":"a"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            raws,
            want.blocks.iter().map(|b| b.raw).collect::<Vec<_>>(),
            "cache_control is not hashed"
        );
        assert_eq!(fp.rendered_bytes(), lens.iter().sum::<u64>());
        assert_eq!(fp.cacheable_bytes(), lens[..4].iter().sum::<u64>());
        assert_eq!(fp.ttl(), Duration::from_secs(3600));

        let chat = br#"{"messages":[{"role":"developer","content":"x"},{"role":"user","content":"y"}],"prompt_cache_retention":"24h"}"#;
        let fp = Fingerprint::of(Endpoint::ChatCompletions, chat).unwrap();
        assert_eq!(
            fp.blocks.iter().map(|b| b.system_like).collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(fp.ttl(), Duration::from_secs(86_400));
        assert_eq!(fp.cacheable_bytes(), 0, "below 1,024 tokens");

        let responses = br#"{"instructions":"be brief","input":"hello","tools":[{"type":"function","name":"f"}]}"#;
        let fp = Fingerprint::of(Endpoint::Responses, responses).unwrap();
        let labels: Vec<String> = (0..fp.blocks.len()).map(|b| fp.label(b)).collect();
        assert_eq!(labels, ["tools[0]", "instructions", "input"]);
        assert_eq!(Fingerprint::of(Endpoint::Responses, b"not json"), None);
    }

    #[test]
    fn limits_fold_blocks_and_drop_runs() {
        let msgs: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    r#"{{"role":"user","content":"message number {i} {}"}}"#,
                    "x".repeat(700)
                )
            })
            .collect();
        let body = format!(r#"{{"messages":[{}]}}"#, msgs.join(","));
        let full = Fingerprint::of(Endpoint::ChatCompletions, body.as_bytes()).unwrap();
        let limits = MonitorLimits {
            max_blocks: 10,
            max_runs: 20,
            ..MonitorLimits::default()
        };
        let small =
            Fingerprint::of_with(Endpoint::ChatCompletions, body.as_bytes(), &limits).unwrap();
        assert_eq!(small.blocks.len(), 10);
        assert!(small.runs.len() <= 20);
        assert_eq!(small.rendered_bytes(), full.rendered_bytes());
        assert_eq!(
            small.blocks.iter().map(|b| u64::from(b.len)).sum::<u64>(),
            full.rendered_bytes()
        );
        assert_eq!(small.blocks[..9], full.blocks[..9]);
        assert!(small.heap_bytes() <= Fingerprint::max_bytes(&limits));
    }
}
