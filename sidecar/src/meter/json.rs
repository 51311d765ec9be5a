//! The few members of provider JSON the meter reads, as typed serde structs.
//!
//! Every struct ignores unknown members (serde skips them with `IgnoredAny`,
//! without allocating) and treats missing or `null` counts as 0. Streaming
//! structs borrow from the event data ([`Cow`] strings) and only measure the
//! generated text ([`TextLen`]) instead of copying it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Flavor, MeterError, Metered, TokenCounts};

// ---------------------------------------------------------------- usage shapes

/// `…_tokens_details` of OpenAI usage: only the cached part matters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CachedDetails {
    cached_tokens: Option<u64>,
}

/// OpenAI chat completions (and embeddings) `usage`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<CachedDetails>,
}

impl ChatUsage {
    pub(super) fn to_usage(&self) -> TokenCounts {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let cached = cached(self.prompt_tokens_details.as_ref());
        TokenCounts {
            input_tokens: prompt.saturating_sub(cached),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        }
    }

    fn to_embeddings_usage(&self) -> TokenCounts {
        TokenCounts {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            ..TokenCounts::default()
        }
    }
}

/// OpenAI Responses `usage`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ResponsesUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<CachedDetails>,
}

impl ResponsesUsage {
    pub(super) fn to_usage(&self) -> TokenCounts {
        let input = self.input_tokens.unwrap_or(0);
        let cached = cached(self.input_tokens_details.as_ref());
        TokenCounts {
            input_tokens: input.saturating_sub(cached),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        }
    }
}

fn cached(details: Option<&CachedDetails>) -> u64 {
    details.and_then(|d| d.cached_tokens).unwrap_or(0)
}

/// Anthropic `usage` (of a message, `message_start.message` or `message_delta`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AnthropicUsage {
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
    pub(super) cache_creation_input_tokens: Option<u64>,
    pub(super) cache_read_input_tokens: Option<u64>,
    /// The 5-minute / 1-hour split of the cache writes.
    pub(super) cache_creation: Option<CacheCreation>,
}

/// Anthropic `usage.cache_creation`: the cache writes by TTL.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CacheCreation {
    pub(super) ephemeral_1h_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    pub(super) fn to_usage(&self) -> TokenCounts {
        let mut usage = TokenCounts::default();
        self.merge_into(&mut usage);
        usage
    }

    /// Overwrites the counts this usage carries (non-null), keeps the others.
    pub(super) fn merge_into(&self, usage: &mut TokenCounts) {
        if let Some(n) = self.input_tokens {
            usage.input_tokens = n;
        }
        if let Some(n) = self.output_tokens {
            usage.output_tokens = n;
        }
        if let Some(n) = self.cache_creation_input_tokens {
            usage.cache_write_tokens = n;
        }
        if let Some(n) = self.cache_read_input_tokens {
            usage.cache_read_tokens = n;
        }
        if let Some(n) = self
            .cache_creation
            .as_ref()
            .and_then(|c| c.ephemeral_1h_input_tokens)
        {
            usage.cache_write_1h_tokens = n;
        }
        // A part of the writes, never more (a lying upstream cannot bill
        // writes twice).
        usage.cache_write_1h_tokens = usage.cache_write_1h_tokens.min(usage.cache_write_tokens);
    }
}

// ------------------------------------------------------------ non-streaming

#[derive(Deserialize)]
#[serde(bound(deserialize = "U: Deserialize<'de>"))]
struct Body<U> {
    #[serde(default)]
    model: Option<String>,
    // `default` with `deserialize_with`: a missing member is `None`.
    #[serde(default = "none", deserialize_with = "object_only")]
    usage: Option<U>,
}

fn none<U>() -> Option<U> {
    None
}

/// A usage must be a JSON object (or `null`: none). serde's derived
/// structs also accept an array, read by position (fuzzing found
/// `"usage":[1000,20]` read as 1000 input and 20 output tokens): any other
/// value is a malformed usage.
fn object_only<'de, D, U>(d: D) -> Result<Option<U>, D::Error>
where
    D: Deserializer<'de>,
    U: Deserialize<'de>,
{
    let raw: Option<&'de serde_json::value::RawValue> = Option::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(r) if r.get().starts_with('{') => serde_json::from_str(r.get())
            .map(Some)
            .map_err(de::Error::custom),
        Some(_) => Err(de::Error::custom("usage is not an object")),
    }
}

pub(super) fn from_json(flavor: Flavor, body: &[u8]) -> Result<Option<Metered>, MeterError> {
    // A response is an object; a struct would also read an array by
    // position.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<de::IgnoredAny>(body) {
            Ok(_) => Ok(None),
            Err(e) => Err(MeterError::InvalidJson(e)),
        };
    }
    let parsed =
        match flavor {
            Flavor::OpenAiChat => {
                parse::<ChatUsage>(body).map(|b| metered(b.model, b.usage.map(|u| u.to_usage())))
            }
            Flavor::OpenAiEmbeddings => parse::<ChatUsage>(body)
                .map(|b| metered(b.model, b.usage.map(|u| u.to_embeddings_usage()))),
            Flavor::OpenAiResponses => parse::<ResponsesUsage>(body)
                .map(|b| metered(b.model, b.usage.map(|u| u.to_usage()))),
            Flavor::Anthropic => parse::<AnthropicUsage>(body)
                .map(|b| metered(b.model, b.usage.map(|u| u.to_usage()))),
        };
    match parsed {
        Ok(metered) => Ok(metered),
        Err(e) if e.is_data() => {
            // Valid JSON of the wrong shape: a non-object carries no usage; an
            // object whose usage is malformed is an error worth reporting.
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                Err(MeterError::BadUsage(e))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(MeterError::InvalidJson(e)),
    }
}

fn parse<'a, U: Deserialize<'a>>(body: &'a [u8]) -> Result<Body<U>, serde_json::Error> {
    serde_json::from_slice(body)
}

fn metered(model: Option<String>, usage: Option<TokenCounts>) -> Option<Metered> {
    usage.map(|usage| Metered {
        usage,
        served_model: model.filter(|m| !m.is_empty()),
    })
}

// ---------------------------------------------------------------- streaming

/// The UTF-8 length of a JSON string, measured without keeping the string.
/// Any other JSON value (null, number, object, …) measures 0.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TextLen(pub(super) u64);

impl<'de> Deserialize<'de> for TextLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextLenVisitor)
    }
}

struct TextLenVisitor;

impl<'de> Visitor<'de> for TextLenVisitor {
    type Value = TextLen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<TextLen, E> {
        Ok(TextLen(v.len() as u64))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_none<E: de::Error>(self) -> Result<TextLen, E> {
        Ok(TextLen(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextLen, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TextLen(0))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextLen, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(TextLen(0))
    }
}

fn text_len(t: Option<TextLen>) -> u64 {
    t.map_or(0, |t| t.0)
}

/// One OpenAI chat completion chunk.
#[derive(Debug, Deserialize)]
pub(super) struct ChatChunk<'a> {
    #[serde(default, borrow)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) choices: Option<ChoicesText>,
    #[serde(default)]
    pub(super) usage: Option<ChatUsage>,
    #[serde(default)]
    pub(super) error: Option<IgnoredAny>,
}

/// A chunk's `choices`: how many, and the bytes of generated text they carry.
#[derive(Debug, Default)]
pub(super) struct ChoicesText {
    pub(super) count: usize,
    pub(super) text_bytes: u64,
}

impl<'de> Deserialize<'de> for ChoicesText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ChoicesVisitor)
    }
}

struct ChoicesVisitor;

impl<'de> Visitor<'de> for ChoicesVisitor {
    type Value = ChoicesText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of choices")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ChoicesText, A::Error> {
        let mut out = ChoicesText::default();
        while let Some(choice) = seq.next_element::<ChatChoice>()? {
            out.count += 1;
            out.text_bytes += choice.delta.map_or(0, |d| d.text_bytes());
        }
        Ok(out)
    }
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    #[serde(default)]
    delta: Option<ChatDelta>,
}

#[derive(Debug, Deserialize)]
struct ChatDelta {
    #[serde(default)]
    content: Option<TextLen>,
    #[serde(default)]
    refusal: Option<TextLen>,
    /// Reasoning text some OpenAI-compatible servers stream (DeepSeek, vLLM).
    #[serde(default)]
    reasoning_content: Option<TextLen>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

impl ChatDelta {
    fn text_bytes(&self) -> u64 {
        let tools: u64 = self
            .tool_calls
            .iter()
            .flatten()
            .map(|t| t.arguments_len())
            .sum();
        text_len(self.content) + text_len(self.refusal) + text_len(self.reasoning_content) + tools
    }
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    function: Option<FunctionDelta>,
}

impl ToolCallDelta {
    fn arguments_len(&self) -> u64 {
        self.function.as_ref().map_or(0, |f| text_len(f.arguments))
    }
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    arguments: Option<TextLen>,
}

/// One OpenAI Responses stream event.
#[derive(Debug, Deserialize)]
pub(super) struct ResponsesEvent<'a> {
    #[serde(default, borrow, rename = "type")]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) delta: Option<TextLen>,
    #[serde(default, borrow)]
    pub(super) response: Option<ResponseObject<'a>>,
}

/// The `response` object of Responses lifecycle events.
#[derive(Debug, Deserialize)]
pub(super) struct ResponseObject<'a> {
    #[serde(default, borrow)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) usage: Option<ResponsesUsage>,
    #[serde(default)]
    pub(super) error: Option<serde_json::Value>,
}

/// One Anthropic Messages stream event.
#[derive(Debug, Deserialize)]
pub(super) struct AnthropicEvent<'a> {
    #[serde(default, borrow, rename = "type")]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) message: Option<AnthropicMessage<'a>>,
    #[serde(default)]
    pub(super) usage: Option<AnthropicUsage>,
    #[serde(default)]
    pub(super) delta: Option<AnthropicDelta>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AnthropicMessage<'a> {
    #[serde(default, borrow)]
    pub(super) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) usage: Option<AnthropicUsage>,
}

/// `delta` of `content_block_delta` (text, tool input JSON, thinking) and of
/// `message_delta` (stop reason only, so it measures 0).
#[derive(Debug, Deserialize)]
pub(super) struct AnthropicDelta {
    #[serde(default)]
    text: Option<TextLen>,
    #[serde(default)]
    partial_json: Option<TextLen>,
    #[serde(default)]
    thinking: Option<TextLen>,
}

impl AnthropicDelta {
    pub(super) fn text_bytes(&self) -> u64 {
        text_len(self.text) + text_len(self.partial_json) + text_len(self.thinking)
    }
}
