//! The semantic response cache's pure half: its compiled settings
//! ([`SemanticCacheConfig`], from a RoutingPolicy's `spec.cache.semantic`),
//! which requests it may answer and what of them is embedded
//! ([`eligible`]), and the scope an entry is shared within
//! (`crate::response_cache::semantic_scope_input`). The sidecar embeds the text, keeps the index, runs
//! the guards (`crate::semantic_guard`) and serves the stored answer of
//! the exact cache (docs/response-cache.md, "Semantic cache").
//!
//! A request is answered from the stored answer to another request only
//! when the two differ in nothing but the wording of the user's text:
//!
//! - the *scope* — everything but that text — is the same: the namespace
//!   and policy, the routed provider and model, the API and path, the
//!   stream flag, the keyed headers, and the canonical body of the exact
//!   key (`crate::response_cache::canonical_key_input`) with the embedded
//!   text blanked, so the system prompt, sampling parameters, tools,
//!   earlier turns and every other member must be equal; plus the
//!   embedder's identity (provider and model: vectors of two models are
//!   not comparable);
//! - the two texts' embeddings are at least `minSimilarity` apart in
//!   cosine, and no guard finds a difference that changes the answer.
//!
//! Eligibility (each a policy field with the safe default): one user
//! message after optional system/developer messages (`singleTurnOnly`), no
//! tool definitions or tool results (`noTools`), text only (`textOnly`),
//! and a text short enough for the embedder to see whole
//! (`maxPromptBytes`: all-MiniLM-L6-v2 reads 256 word pieces; two prompts
//! that differ only past that point would embed alike). Requests that
//! refer to context the sidecar cannot see (a Responses
//! `previous_response_id`, `conversation` or stored `prompt`) are never
//! eligible. The request shapes follow the providers' references:
//! OpenAI chat `messages`
//! (<https://platform.openai.com/docs/api-reference/chat/create>),
//! Responses `input` as a string or a list of input items
//! (<https://platform.openai.com/docs/api-reference/responses/create>),
//! Anthropic `messages` with `system` apart
//! (<https://docs.anthropic.com/en/api/messages>).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::semantic_guard::Guards;

/// Similarities are integers: parts per [`SIMILARITY_SCALE`] of the cosine.
pub const SIMILARITY_SCALE: u32 = 10_000;

/// The default `minSimilarity`, in parts per [`SIMILARITY_SCALE`]: 0.95.
/// Strict on purpose; the guards, not the threshold, keep the false hits
/// out (docs/response-cache.md has the measurement).
pub const DEFAULT_MIN_SIMILARITY: u16 = 9_500;
/// The lowest `minSimilarity` a policy may set: 0.80 (below it, unrelated
/// short texts pass).
pub const MIN_MIN_SIMILARITY: u16 = 8_000;
/// Default time an embedding call may take before the request goes on as
/// a miss: 2 s.
pub const DEFAULT_EMBEDDING_TIMEOUT_MS: u64 = 2_000;
/// Longest embedding timeout: 30 s.
pub const MAX_EMBEDDING_TIMEOUT_MS: u64 = 30_000;
/// Default bound on the index's entries per policy.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Largest bound on the index's entries per policy.
pub const MAX_MAX_ENTRIES: u64 = 100_000;
/// Default longest user text embedded, in bytes.
pub const DEFAULT_MAX_PROMPT_BYTES: u32 = 1_000;
/// Largest `maxPromptBytes`.
pub const MAX_MAX_PROMPT_BYTES: u32 = 100_000;
/// Version of the scope's form; part of every scope.
pub const SCOPE_VERSION: u32 = 1;

/// The embeddings endpoint: a provider of the policy that speaks the
/// OpenAI API, and the model asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbeddingConfig {
    /// The provider's name in the policy.
    pub provider: String,
    /// The embedding model sent in the request.
    pub model: String,
    /// Time the call may take, in milliseconds.
    pub timeout_ms: u64,
}

/// Which requests may be answered from a similar one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Eligibility {
    /// Only one user message (after optional system/developer messages).
    pub single_turn_only: bool,
    /// No tool definitions, tool choice or tool results.
    pub no_tools: bool,
    /// The user message is text only (no images, audio, files).
    pub text_only: bool,
    /// Longest user text embedded, in bytes.
    pub max_prompt_bytes: u32,
}

impl Default for Eligibility {
    fn default() -> Self {
        Eligibility {
            single_turn_only: true,
            no_tools: true,
            text_only: true,
            max_prompt_bytes: DEFAULT_MAX_PROMPT_BYTES,
        }
    }
}

/// A RoutingPolicy's `spec.cache.semantic`, compiled.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SemanticCacheConfig {
    /// Least cosine similarity served, in parts per [`SIMILARITY_SCALE`].
    pub min_similarity: u16,
    /// Where the embeddings come from.
    pub embedding: EmbeddingConfig,
    /// The guards run before a hit is served.
    pub guards: Guards,
    /// Most entries in the index per policy (least recently used first out).
    pub max_entries: u64,
    /// Which requests are eligible.
    pub eligibility: Eligibility,
}

/// Parse a similarity given as a decimal string in `[0, 1]` with at most
/// four decimals (`"0.95"`, `"1"`) into parts per [`SIMILARITY_SCALE`].
pub fn parse_similarity(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || frac.len() > 4
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return None;
    }
    let int: u32 = int.parse().ok()?;
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<4}").parse().ok()?
    };
    let v = int.checked_mul(SIMILARITY_SCALE)?.checked_add(frac)?;
    u16::try_from(v).ok().filter(|_| v <= SIMILARITY_SCALE)
}

/// A similarity as the header shows it: `0.9731`.
pub fn format_similarity(parts: u16) -> String {
    format!(
        "{}.{:04}",
        u32::from(parts) / SIMILARITY_SCALE,
        u32::from(parts) % SIMILARITY_SCALE
    )
}

/// The cosine of two unit vectors as parts per [`SIMILARITY_SCALE`],
/// rounded down and clamped to `[0, SCALE]` (a negative cosine is 0).
pub fn similarity_parts(cosine: f32) -> u16 {
    if cosine.is_nan() || cosine <= 0.0 {
        return 0;
    }
    let v = (f64::from(cosine) * f64::from(SIMILARITY_SCALE)).floor();
    v.min(f64::from(SIMILARITY_SCALE)) as u16
}

/// Why a request is not looked up in the semantic cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ineligible {
    /// Not a chat request (embeddings), or not a JSON object.
    Endpoint,
    /// More than one user turn, or earlier assistant/tool turns.
    MultiTurn,
    /// Tool definitions, a tool choice or tool results.
    Tools,
    /// Images, audio or files in the user message.
    NotText,
    /// No user text (or the last message is not the user's).
    NoText,
    /// The user text is longer than `maxPromptBytes`.
    TooLong,
    /// It refers to context the sidecar cannot see (Responses
    /// `previous_response_id`, `conversation`, `prompt`).
    HiddenContext,
}

impl Ineligible {
    /// Its label in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Ineligible::Endpoint => "endpoint",
            Ineligible::MultiTurn => "multi_turn",
            Ineligible::Tools => "tools",
            Ineligible::NotText => "not_text",
            Ineligible::NoText => "no_text",
            Ineligible::TooLong => "too_long",
            Ineligible::HiddenContext => "hidden_context",
        }
    }
}

/// An eligible request: the text to embed, and the body with that text
/// blanked (for `crate::response_cache::semantic_scope_input`).
#[derive(Clone, Debug, PartialEq)]
pub struct Eligible {
    /// The user's text (text parts joined with `\n`).
    pub text: String,
    /// The request body with every embedded text part set to `""`.
    pub blanked: Value,
}

/// The request APIs the semantic cache reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

/// Members that define tools, in any of the three APIs.
const TOOL_FIELDS: [&str; 4] = ["tools", "tool_choice", "functions", "function_call"];
/// Responses members that bring in context the body does not carry.
const HIDDEN_FIELDS: [&str; 3] = ["previous_response_id", "conversation", "prompt"];

/// Whether a request of `shape` (`None`: another API, e.g. embeddings)
/// with this parsed `body` may be answered from a similar one under `e`,
/// and what of it is embedded.
pub fn eligible(
    e: &Eligibility,
    shape: Option<Shape>,
    body: &Value,
) -> Result<Eligible, Ineligible> {
    let shape = shape.ok_or(Ineligible::Endpoint)?;
    let obj = body.as_object().ok_or(Ineligible::Endpoint)?;
    if e.no_tools
        && TOOL_FIELDS
            .iter()
            .any(|f| obj.get(*f).is_some_and(|v| !is_empty(v)))
    {
        return Err(Ineligible::Tools);
    }
    let mut blanked = body.clone();
    let text = match shape {
        Shape::ChatCompletions | Shape::Messages => {
            let list = blanked
                .get_mut("messages")
                .and_then(Value::as_array_mut)
                .ok_or(Ineligible::NoText)?;
            last_user_text(e, list, shape == Shape::ChatCompletions)?
        }
        Shape::Responses => {
            if HIDDEN_FIELDS
                .iter()
                .any(|f| obj.get(*f).is_some_and(|v| !v.is_null()))
            {
                return Err(Ineligible::HiddenContext);
            }
            let input = blanked.get_mut("input").ok_or(Ineligible::NoText)?;
            match input {
                Value::String(s) => std::mem::take(s),
                Value::Array(items) => last_user_text(e, items, true)?,
                _ => return Err(Ineligible::NoText),
            }
        }
    };
    if text.trim().is_empty() {
        return Err(Ineligible::NoText);
    }
    if text.len() > e.max_prompt_bytes as usize {
        return Err(Ineligible::TooLong);
    }
    Ok(Eligible { text, blanked })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The last message of `list`, a user's, taken out as text (blanked in
/// place). `system_roles`: `system`/`developer` messages may precede it
/// (OpenAI); Anthropic carries its system prompt apart.
fn last_user_text(
    e: &Eligibility,
    list: &mut [Value],
    system_roles: bool,
) -> Result<String, Ineligible> {
    let (last, earlier) = list.split_last_mut().ok_or(Ineligible::NoText)?;
    for m in earlier.iter() {
        let role = m.get("role").and_then(Value::as_str);
        let is_system = system_roles && matches!(role, Some("system" | "developer"));
        if e.no_tools && is_tool_item(m) {
            return Err(Ineligible::Tools);
        }
        if e.single_turn_only && !is_system {
            return Err(Ineligible::MultiTurn);
        }
    }
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(if is_tool_item(last) {
            Ineligible::Tools
        } else {
            Ineligible::NoText
        });
    }
    match last.get_mut("content").ok_or(Ineligible::NoText)? {
        Value::String(s) => Ok(std::mem::take(s)),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for p in parts.iter_mut() {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "text" | "input_text" => {
                        let t = p.get_mut("text").ok_or(Ineligible::NoText)?;
                        let Value::String(s) = t else {
                            return Err(Ineligible::NoText);
                        };
                        texts.push(std::mem::take(s));
                    }
                    "tool_result" | "function_call_output" if e.no_tools => {
                        return Err(Ineligible::Tools);
                    }
                    _ if e.text_only => return Err(Ineligible::NotText),
                    _ => {}
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(Ineligible::NoText),
    }
}

/// A tool call or tool result, in any of the three APIs' shapes.
fn is_tool_item(m: &Value) -> bool {
    let role = m.get("role").and_then(Value::as_str);
    let kind = m.get("type").and_then(Value::as_str);
    matches!(role, Some("tool" | "function"))
        || matches!(
            kind,
            Some("function_call" | "function_call_output" | "custom_tool_call_output")
        )
        || m.get("tool_calls").is_some_and(|v| !is_empty(v))
        || m.get("content").and_then(Value::as_array).is_some_and(|c| {
            c.iter().any(|p| {
                matches!(
                    p.get("type").and_then(Value::as_str),
                    Some("tool_use" | "tool_result")
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(endpoint: Option<Shape>, body: Value) -> Eligible {
        eligible(&Eligibility::default(), endpoint, &body).unwrap()
    }

    fn no(endpoint: Option<Shape>, body: Value) -> Ineligible {
        eligible(&Eligibility::default(), endpoint, &body).unwrap_err()
    }

    #[test]
    fn similarities_parse_format_and_round_down() {
        assert_eq!(parse_similarity("0.95"), Some(9_500));
        assert_eq!(parse_similarity("0.9731"), Some(9_731));
        assert_eq!(parse_similarity("1"), Some(10_000));
        assert_eq!(parse_similarity("1.0"), Some(10_000));
        assert_eq!(parse_similarity("0"), Some(0));
        for bad in [
            "", ".9", "0.", "0.12345", "1.01", "2", "-0.5", "0,9", "0.9e1",
        ] {
            assert_eq!(parse_similarity(bad), None, "{bad}");
        }
        assert_eq!(format_similarity(9_731), "0.9731");
        assert_eq!(format_similarity(10_000), "1.0000");
        assert_eq!(format_similarity(500), "0.0500");
        assert_eq!(similarity_parts(0.97319), 9_731);
        assert_eq!(similarity_parts(1.000_01), 10_000);
        assert_eq!(similarity_parts(-0.3), 0);
        assert_eq!(similarity_parts(f32::NAN), 0);
    }

    #[test]
    fn openai_chat_single_turn_text_is_embedded_and_blanked() {
        let e = ok(
            Some(Shape::ChatCompletions),
            json!({"model":"m","temperature":0,"messages":[
                {"role":"system","content":"Be brief."},
                {"role":"user","content":"How do I reset my password?"}]}),
        );
        assert_eq!(e.text, "How do I reset my password?");
        assert_eq!(
            e.blanked,
            json!({"model":"m","temperature":0,"messages":[
                {"role":"system","content":"Be brief."},
                {"role":"user","content":""}]})
        );
        let parts = ok(
            Some(Shape::ChatCompletions),
            json!({"messages":[{"role":"user","content":[
                {"type":"text","text":"a"},{"type":"text","text":"b"}]}]}),
        );
        assert_eq!(parts.text, "a\nb");
    }

    #[test]
    fn responses_and_anthropic_shapes() {
        let s = ok(
            Some(Shape::Responses),
            json!({"input":"hi there","instructions":"x"}),
        );
        assert_eq!(
            (s.text.as_str(), &s.blanked["input"]),
            ("hi there", &json!(""))
        );
        let items = ok(
            Some(Shape::Responses),
            json!({"input":[{"role":"user","content":[{"type":"input_text","text":"q"}]}]}),
        );
        assert_eq!(items.text, "q");
        assert_eq!(
            no(
                Some(Shape::Responses),
                json!({"input":"q","previous_response_id":"resp_1"})
            ),
            Ineligible::HiddenContext
        );
        let a = ok(
            Some(Shape::Messages),
            json!({"system":"s","max_tokens":5,"messages":[{"role":"user","content":"q?"}]}),
        );
        assert_eq!((a.text.as_str(), &a.blanked["system"]), ("q?", &json!("s")));
        // Anthropic has no system role in messages: a first message of
        // another role is an earlier turn.
        assert_eq!(
            no(
                Some(Shape::Messages),
                json!({"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}]})
            ),
            Ineligible::MultiTurn
        );
    }

    #[test]
    fn the_safe_defaults_refuse_what_a_similar_prompt_cannot_answer() {
        let multi = json!({"messages":[
            {"role":"user","content":"a"},{"role":"assistant","content":"b"},
            {"role":"user","content":"c"}]});
        assert_eq!(
            no(Some(Shape::ChatCompletions), multi.clone()),
            Ineligible::MultiTurn
        );
        let tools = json!({"tools":[{"type":"function","function":{"name":"f"}}],
            "messages":[{"role":"user","content":"a"}]});
        assert_eq!(
            no(Some(Shape::ChatCompletions), tools.clone()),
            Ineligible::Tools
        );
        let empty_tools = json!({"tools":[],"messages":[{"role":"user","content":"a"}]});
        assert_eq!(
            ok(Some(Shape::ChatCompletions), empty_tools).text,
            "a",
            "no tools"
        );
        let result = json!({"messages":[{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t","content":"42"}]}]});
        assert_eq!(no(Some(Shape::Messages), result), Ineligible::Tools);
        let image = json!({"messages":[{"role":"user","content":[
            {"type":"text","text":"what is this"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]});
        assert_eq!(
            no(Some(Shape::ChatCompletions), image.clone()),
            Ineligible::NotText
        );
        let last_assistant = json!({"messages":[{"role":"assistant","content":"a"}]});
        assert_eq!(
            no(Some(Shape::ChatCompletions), last_assistant),
            Ineligible::NoText
        );
        let blank = json!({"messages":[{"role":"user","content":"  "}]});
        assert_eq!(no(Some(Shape::ChatCompletions), blank), Ineligible::NoText);
        let long = json!({"messages":[{"role":"user","content":"x".repeat(1001)}]});
        assert_eq!(no(Some(Shape::ChatCompletions), long), Ineligible::TooLong);
        assert_eq!(no(None, json!({"input":"a"})), Ineligible::Endpoint);
        assert_eq!(
            no(Some(Shape::ChatCompletions), json!([1])),
            Ineligible::Endpoint
        );
    }

    #[test]
    fn relaxed_eligibility_keeps_the_rest_in_the_scope() {
        let multi = json!({"messages":[
            {"role":"user","content":"a"},{"role":"assistant","content":"b"},
            {"role":"user","content":"c"}]});
        let tools = json!({"tools":[{"type":"function","function":{"name":"f"}}],
            "messages":[{"role":"user","content":"a"}]});
        let image = json!({"messages":[{"role":"user","content":[
            {"type":"text","text":"what is this"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]});
        // Each guard can be relaxed: earlier turns and tools then stay in
        // the scope (they must be equal), only the last user text is embedded.
        let relaxed = Eligibility {
            single_turn_only: false,
            no_tools: false,
            text_only: false,
            max_prompt_bytes: 100,
        };
        let m = eligible(&relaxed, Some(Shape::ChatCompletions), &multi).unwrap();
        assert_eq!(
            (m.text.as_str(), &m.blanked["messages"][0]["content"]),
            ("c", &json!("a"))
        );
        assert!(eligible(&relaxed, Some(Shape::ChatCompletions), &tools).is_ok());
        assert_eq!(
            eligible(&relaxed, Some(Shape::ChatCompletions), &image)
                .unwrap()
                .text,
            "what is this"
        );
    }
}
