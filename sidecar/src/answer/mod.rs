//! Judging a provider's answer: why a request goes one tier up.
//!
//! Pure and I/O-free. [`judge`] reads a complete, non-streaming answer
//! (and, when it needs them, the request's tool schemas and structured
//! output format) and returns the first escalation rule it fails, as a
//! [`Reason`]; the proxy then retries one tier up (see `proxy::route`).
//! [`Reason`] also names the escalations decided elsewhere (upstream
//! errors, a repeated prompt, the app's signal), for the
//! `x-tokenwarden-escalation-reason` header and the
//! `tokenwarden_escalations_total` metric.
//!
//! # What each rule reads
//!
//! | rule ([`Reason`]) | OpenAI chat completions | OpenAI Responses | Anthropic messages |
//! |---|---|---|---|
//! | `refusal` | a non-empty `message.refusal` | a `refusal` content part of a `message` item | `stop_reason: "refusal"` |
//! | `truncated` | `finish_reason: "length"` and the request set neither `max_tokens` nor `max_completion_tokens` | `status: "incomplete"`, `incomplete_details.reason: "max_output_tokens"` and the request set no `max_output_tokens` | `stop_reason: "model_context_window_exceeded"` |
//! | `empty` | `content` empty or whitespace, no `tool_calls`, `function_call` or `audio` | no non-blank `output_text`, and no item other than `message` and `reasoning` | no non-blank `text` block, and no block other than `text`, `thinking`, `redacted_thinking` |
//! | `tool_arguments` | a `tool_calls[].function.arguments` (or legacy `function_call.arguments`) that is not JSON, or does not match the `parameters` of the `tools[]` function of that name | a `function_call` item's `arguments`, against the `function` tool's `parameters` | a `tool_use` block's `input`, against the tool's `input_schema` |
//! | `response_format` | `content` against `response_format` (`json_schema`: `json_schema.schema`; `json_object`: JSON) | the `output_text` parts, joined, against `text.format` | the `text` blocks, joined, against `output_config.format` (or the beta `output_format`) of type `json_schema` |
//!
//! Sources: OpenAI chat completions
//! (<https://platform.openai.com/docs/api-reference/chat/object>), the
//! Responses API (<https://platform.openai.com/docs/api-reference/responses/object>),
//! structured outputs
//! (<https://platform.openai.com/docs/guides/structured-outputs>), function
//! calling (<https://platform.openai.com/docs/guides/function-calling>);
//! Anthropic's Messages API and its stop reasons
//! (<https://docs.anthropic.com/en/api/messages>,
//! <https://docs.claude.com/en/docs/build-with-claude/handling-stop-reasons>),
//! tool use (<https://docs.claude.com/en/docs/agents-and-tools/tool-use/implement-tool-use>)
//! and structured outputs
//! (<https://docs.claude.com/en/docs/build-with-claude/structured-outputs>).
//!
//! # Precedence and what is never escalated
//!
//! An answer is judged once, rule by rule in the order of the table, and
//! only by the rules that are on:
//!
//! - A cut at the app's own limit (`max_tokens` and kin; Anthropic
//!   requires `max_tokens`, so its `stop_reason: "max_tokens"` is always
//!   the app's) is what the app asked for: no rule judges such an answer
//!   (its text is partial by request, its JSON may be unfinished). The
//!   sidecar never writes a max-tokens field itself (its
//!   `defaultMaxOutputTokens` sizes only the budget reservation), so a cut
//!   without an app limit is the model's.
//! - A refused or truncated answer is judged by that rule alone: with the
//!   rule off it passes, rather than being caught as empty or as bad JSON.
//! - A content filter (chat `finish_reason: "content_filter"`, Responses
//!   `incomplete_details.reason: "content_filter"`) is the provider's and
//!   applies to every model: not judged.
//! - The structured-output check applies to an answer without tool calls
//!   (an answer that calls a tool gives its final answer later).
//! - With several choices (chat `n`), the answer fails only when every
//!   choice fails (the app has a usable one otherwise); the reason is the
//!   first choice's.
//!
//! Schemas are checked by [`schema`] (bounded; a schema it cannot check
//! passes the answer).

pub mod schema;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, value::RawValue};
use tokenwarden_core::workload::{Endpoint, Escalation};

/// Why a request went one tier up: the label of the
/// `x-tokenwarden-escalation-reason` header and of the
/// `tokenwarden_escalations_total` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An upstream error or timeout (`escalation.onUpstreamError`).
    UpstreamError,
    /// The same prompt again within the window (`escalation.repeatedPrompt`).
    RepeatedPrompt,
    /// The app sent `x-tokenwarden-escalate: 1` (`escalation.onAppSignal`).
    AppSignal,
    /// The answer was cut by a limit the app did not set (`onTruncation`).
    Truncated,
    /// No text and no tool call (`onEmptyAnswer`).
    Empty,
    /// The model refused (`onRefusal`).
    Refusal,
    /// A tool call's arguments are not JSON or miss the tool's schema
    /// (`onInvalidToolCall`).
    ToolArguments,
    /// The answer misses the requested structured output
    /// (`onInvalidResponseFormat`).
    ResponseFormat,
}

// === impl Reason ===

impl Reason {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UpstreamError => "upstream_error",
            Reason::RepeatedPrompt => "repeated_prompt",
            Reason::AppSignal => "app_signal",
            Reason::Truncated => "truncated",
            Reason::Empty => "empty",
            Reason::Refusal => "refusal",
            Reason::ToolArguments => "tool_arguments",
            Reason::ResponseFormat => "response_format",
        }
    }
}

/// What one answer (a chat choice, or the whole answer of the other APIs)
/// amounts to, read from the provider's JSON.
#[derive(Debug, Default)]
struct Output<'a> {
    /// Cut by an output limit: `Some(true)` the app's, `Some(false)` the
    /// model's.
    cut: Option<bool>,
    /// Stopped by the provider's content filter.
    filtered: bool,
    /// The model refused.
    refusal: bool,
    /// The answer's text (text parts joined).
    text: Cow<'a, str>,
    /// Something other than text came back (audio, a server-side tool).
    other_output: bool,
    /// Tool calls, in order.
    calls: Vec<Call<'a>>,
}

/// One tool call of an answer.
#[derive(Debug)]
struct Call<'a> {
    /// The tool's name.
    name: Cow<'a, str>,
    /// Its arguments.
    args: Args<'a>,
}

/// A tool call's arguments.
#[derive(Debug)]
enum Args<'a> {
    /// OpenAI: a string that should hold JSON.
    Text(Cow<'a, str>),
    /// Anthropic: already JSON (the `input` object), unparsed.
    Raw(&'a RawValue),
}

// The answers, deserialized into borrowed views of only the members the
// rules read: no tree of the whole body, no copy of a string without
// escapes. A body that does not fit these shapes is not judged.

/// An OpenAI chat completion.
#[derive(Deserialize)]
struct ChatAnswer<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChatChoice<'a>>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(borrow, default)]
    message: Option<ChatMessage<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct ChatMessage<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ChatToolCall<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
    #[serde(borrow, default)]
    audio: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChatToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionCall<'a>>,
}

/// `{name, arguments}` of a chat tool call or a Responses `function_call`.
#[derive(Deserialize, Default)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// An OpenAI Responses API response.
#[derive(Deserialize)]
struct ResponsesAnswer<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    incomplete_details: Option<IncompleteDetails<'a>>,
    #[serde(borrow, default)]
    output: Vec<ResponsesItem<'a>>,
}

#[derive(Deserialize)]
struct IncompleteDetails<'a> {
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponsesItem<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    /// A `message` item's parts (left unparsed for the other kinds).
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// A part of a Responses `message` item, or an Anthropic content block.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

/// An Anthropic message.
#[derive(Deserialize)]
struct AnthropicAnswer<'a> {
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Vec<Part<'a>>,
}

/// The request members the checks read, borrowed unparsed: one pass over
/// the body that skips everything else.
#[derive(Deserialize, Default)]
struct Asked<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_format: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output_config: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output_format: Option<&'a RawValue>,
}

/// The structured output a request asked for.
#[derive(Debug, PartialEq)]
enum Format {
    /// Any JSON (`json_object`).
    Json,
    /// JSON matching this schema (`json_schema`).
    Schema(Value),
}

/// The request, as far as the checks need it.
pub struct Request<'a> {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The app's request body.
    pub body: &'a [u8],
    /// The app set an output limit (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`).
    pub app_limit: bool,
}

/// The first rule that is on in `rules` and that the answer `answer` (a
/// complete non-streaming JSON body) fails; `None` when it passes, when
/// nothing can be read from it, or for embeddings. See the module docs.
pub fn judge(request: &Request<'_>, answer: &[u8], rules: &Escalation) -> Option<Reason> {
    if request.endpoint == Endpoint::Embeddings || !rules.checks_answers() {
        return None;
    }
    let outputs = outputs(request, answer)?;
    if outputs.is_empty() {
        return None;
    }
    let calls = outputs.iter().any(|o| !o.calls.is_empty());
    let asked: Asked<'_> = if may_ask(request, calls) {
        serde_json::from_slice(request.body).unwrap_or_default()
    } else {
        Asked::default()
    };
    let mut first = None;
    for (i, out) in outputs.iter().enumerate() {
        let reason = judge_output(request.endpoint, out, &asked, rules)?;
        if i == 0 {
            first = Some(reason);
        }
    }
    first
}

/// Whether the request body can hold a member the checks will read: a
/// byte search for its quoted key before a pass over the whole body (most
/// requests ask for no structured output, and only an answer with tool
/// calls needs `tools`). A key that is also prompt text only costs the
/// pass; a key written with JSON escapes is not found, and its check is
/// skipped (the answer passes).
fn may_ask(request: &Request<'_>, calls: bool) -> bool {
    let has = |key: &[u8]| memchr::memmem::find(request.body, key).is_some();
    let format = match request.endpoint {
        Endpoint::ChatCompletions => has(b"\"response_format\""),
        Endpoint::Responses => has(b"\"text\""),
        Endpoint::Messages => has(b"\"output_config\"") || has(b"\"output_format\""),
        Endpoint::Embeddings => false,
    };
    format || (calls && has(b"\"tools\""))
}

/// The answers in a response body: one per chat choice, else one; `None`
/// when the body is not an answer of the endpoint's shape.
fn outputs<'a>(request: &Request<'_>, answer: &'a [u8]) -> Option<Vec<Output<'a>>> {
    Some(match request.endpoint {
        Endpoint::ChatCompletions => {
            let a: ChatAnswer<'a> = serde_json::from_slice(answer).ok()?;
            a.choices
                .into_iter()
                .map(|c| chat(c, request.app_limit))
                .collect()
        }
        Endpoint::Responses => vec![responses(
            serde_json::from_slice(answer).ok()?,
            request.app_limit,
        )],
        Endpoint::Messages => vec![anthropic(serde_json::from_slice(answer).ok()?)],
        Endpoint::Embeddings => Vec::new(),
    })
}

/// A chat completion choice.
fn chat(choice: ChatChoice<'_>, app_limit: bool) -> Output<'_> {
    let msg = choice.message.unwrap_or_default();
    let finish = choice.finish_reason.as_deref();
    let mut custom_calls = false;
    let mut calls: Vec<Call<'_>> = Vec::new();
    for c in msg.tool_calls.into_iter().flatten() {
        match c.function {
            Some(f) => calls.push(function_call(f)),
            None => custom_calls = true,
        }
    }
    // The legacy `function_call`, when it is an object.
    if let Some(raw) = msg.function_call
        && raw.get().starts_with('{')
        && let Ok(f) = serde_json::from_str::<FunctionCall<'_>>(raw.get())
    {
        calls.push(function_call(f));
    }
    Output {
        cut: (finish == Some("length")).then_some(app_limit),
        filtered: finish == Some("content_filter"),
        refusal: msg.refusal.is_some_and(|r| !r.is_empty()),
        text: msg.content.unwrap_or_default(),
        other_output: custom_calls || msg.audio.is_some(),
        calls,
    }
}

fn function_call(f: FunctionCall<'_>) -> Call<'_> {
    Call {
        name: f.name.unwrap_or_default(),
        args: Args::Text(f.arguments.unwrap_or_default()),
    }
}

/// A Responses API response.
fn responses(v: ResponsesAnswer<'_>, app_limit: bool) -> Output<'_> {
    let incomplete = v.status.as_deref() == Some("incomplete");
    let why = v.incomplete_details.and_then(|d| d.reason);
    let why = why.as_deref();
    let mut out = Output {
        cut: (incomplete && why == Some("max_output_tokens")).then_some(app_limit),
        filtered: incomplete && why == Some("content_filter"),
        ..Output::default()
    };
    let mut text = String::new();
    for item in v.output {
        match item.kind.as_deref() {
            Some("message") => {
                let parts: Vec<Part<'_>> = item
                    .content
                    .and_then(|raw| serde_json::from_str(raw.get()).ok())
                    .unwrap_or_default();
                for part in parts {
                    match part.kind.as_deref() {
                        Some("output_text") => text.push_str(part.text.as_deref().unwrap_or("")),
                        Some("refusal") => out.refusal = true,
                        _ => {}
                    }
                }
            }
            Some("reasoning") => {}
            Some("function_call") => out.calls.push(Call {
                name: item.name.unwrap_or_default(),
                args: Args::Text(item.arguments.unwrap_or_default()),
            }),
            _ => out.other_output = true,
        }
    }
    out.text = Cow::Owned(text);
    out
}

/// An Anthropic message.
fn anthropic(v: AnthropicAnswer<'_>) -> Output<'_> {
    let stop = v.stop_reason.as_deref();
    let mut out = Output {
        // `max_tokens` is required: a `max_tokens` stop is the app's limit.
        cut: match stop {
            Some("max_tokens") => Some(true),
            Some("model_context_window_exceeded") => Some(false),
            _ => None,
        },
        refusal: stop == Some("refusal"),
        ..Output::default()
    };
    let mut text = String::new();
    for block in v.content {
        match block.kind.as_deref() {
            Some("text") => text.push_str(block.text.as_deref().unwrap_or("")),
            Some("thinking" | "redacted_thinking") => {}
            Some("tool_use") => out.calls.push(Call {
                name: block.name.unwrap_or_default(),
                args: block
                    .input
                    .map_or(Args::Text(Cow::Borrowed("null")), Args::Raw),
            }),
            _ => out.other_output = true,
        }
    }
    out.text = Cow::Owned(text);
    out
}

/// One answer against the rules that are on (see the module docs for the
/// order).
fn judge_output(
    endpoint: Endpoint,
    out: &Output<'_>,
    asked: &Asked<'_>,
    rules: &Escalation,
) -> Option<Reason> {
    if out.cut == Some(true) || out.filtered {
        return None;
    }
    if out.refusal {
        return rules.on_refusal.then_some(Reason::Refusal);
    }
    if out.cut == Some(false) {
        return rules.on_truncation.then_some(Reason::Truncated);
    }
    if out.text.trim().is_empty() && out.calls.is_empty() && !out.other_output {
        return rules.on_empty_answer.then_some(Reason::Empty);
    }
    if rules.on_invalid_tool_call
        && !out.calls.is_empty()
        && out.calls.iter().any(|c| !call_is_valid(endpoint, c, asked))
    {
        return Some(Reason::ToolArguments);
    }
    if rules.on_invalid_response_format
        && out.calls.is_empty()
        && let Some(format) = format(endpoint, asked)
        && !text_matches(&out.text, &format)
    {
        return Some(Reason::ResponseFormat);
    }
    None
}

/// A tool call's arguments are JSON and match the declared schema (when
/// the request declared one for that name).
fn call_is_valid(endpoint: Endpoint, call: &Call<'_>, asked: &Asked<'_>) -> bool {
    let text = match &call.args {
        Args::Text(s) => s.as_ref(),
        Args::Raw(r) => r.get(),
    };
    let Ok(args) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    match tool_schema(endpoint, asked, &call.name) {
        Some(s) => schema::validate(&s, &args) != schema::Verdict::Invalid,
        None => true,
    }
}

/// The JSON schema the request declares for the tool `name`, if any.
fn tool_schema(endpoint: Endpoint, asked: &Asked<'_>, name: &str) -> Option<Value> {
    let tools = asked.tools?;
    if tools.get().len() > schema::MAX_TOOLS_BYTES {
        return None;
    }
    let tools: Vec<Value> = serde_json::from_str(tools.get()).ok()?;
    tools.into_iter().find_map(|mut t| {
        let (def, key) = match endpoint {
            Endpoint::ChatCompletions => {
                if t.get("type").and_then(Value::as_str) != Some("function") {
                    return None;
                }
                (t.get_mut("function")?.take(), "parameters")
            }
            Endpoint::Responses => {
                if t.get("type").and_then(Value::as_str) != Some("function") {
                    return None;
                }
                (t, "parameters")
            }
            Endpoint::Messages => (t, "input_schema"),
            Endpoint::Embeddings => return None,
        };
        if def.get("name").and_then(Value::as_str) != Some(name) {
            return None;
        }
        def.get(key)
            .filter(|s| s.is_object() || s.is_boolean())
            .cloned()
    })
}

/// The structured output the request asked for, if any.
fn format(endpoint: Endpoint, asked: &Asked<'_>) -> Option<Format> {
    let (raw, pointer) = match endpoint {
        Endpoint::ChatCompletions => (asked.response_format?, ""),
        Endpoint::Responses => (asked.text?, "/format"),
        Endpoint::Messages => match (asked.output_config, asked.output_format) {
            (Some(c), _) => (c, "/format"),
            (None, Some(f)) => (f, ""),
            (None, None) => return None,
        },
        Endpoint::Embeddings => return None,
    };
    let v: Value = serde_json::from_str(raw.get()).ok()?;
    let f = v.pointer(pointer)?;
    match f.get("type").and_then(Value::as_str)? {
        "json_object" if endpoint != Endpoint::Messages => Some(Format::Json),
        "json_schema" => {
            let schema = match endpoint {
                Endpoint::ChatCompletions => f.pointer("/json_schema/schema"),
                _ => f.get("schema"),
            };
            Some(schema.map_or(Format::Json, |s| Format::Schema(s.clone())))
        }
        _ => None,
    }
}

/// The answer's text is JSON and matches the format.
fn text_matches(text: &str, format: &Format) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    match format {
        Format::Json => true,
        Format::Schema(s) => schema::validate(s, &v) != schema::Verdict::Invalid,
    }
}
