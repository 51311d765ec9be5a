//! Scripted answers (`x-fake-answer`): the shapes of answers a proxy may
//! judge — empty, refused, cut by the model's own limit, a given text, a
//! tool call with given arguments — written over a non-streaming JSON
//! answer after the handler built it. Usage is never changed.
//!
//! Shapes follow the providers' references: OpenAI chat
//! (<https://platform.openai.com/docs/api-reference/chat/object>:
//! `message.refusal`, `tool_calls`, `finish_reason`), Responses
//! (<https://platform.openai.com/docs/api-reference/responses/object>:
//! `refusal` content parts, `function_call` items, `incomplete_details`),
//! Anthropic messages (<https://docs.anthropic.com/en/api/messages>:
//! `tool_use` blocks, `stop_reason` `refusal` and
//! `model_context_window_exceeded`).

use serde_json::{Value, json};

/// The text of a scripted refusal.
pub(crate) const REFUSAL: &str = "I'm sorry, but I can't help with that.";

/// A scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// No text and no tool call.
    Empty,
    /// The model refuses.
    Refusal,
    /// Cut by the model's own limit (not the request's).
    Truncated,
    /// This text instead of the generated words.
    Text(String),
    /// One call of tool `name` with these arguments (raw).
    Tool { name: String, arguments: String },
}

impl Answer {
    /// `empty`, `refusal`, `truncated`, `text:TEXT`, `tool:NAME:ARGS`.
    pub(crate) fn parse(s: &str) -> Result<Answer, String> {
        match s {
            "empty" => return Ok(Answer::Empty),
            "refusal" => return Ok(Answer::Refusal),
            "truncated" => return Ok(Answer::Truncated),
            _ => {}
        }
        if let Some(text) = s.strip_prefix("text:") {
            return Ok(Answer::Text(text.to_string()));
        }
        if let Some(rest) = s.strip_prefix("tool:")
            && let Some((name, arguments)) = rest.split_once(':')
            && !name.is_empty()
        {
            return Ok(Answer::Tool {
                name: name.to_string(),
                arguments: arguments.to_string(),
            });
        }
        Err(format!(
            "x-fake-answer: unknown answer {s:?} (expected empty, refusal, truncated, text:TEXT or tool:NAME:ARGS)"
        ))
    }
}

/// Write the scripted answer of `knobs` for a request for `model` (if any)
/// over `body` with `shape` (one of [`chat`], [`responses`], [`messages`]).
pub(crate) fn apply(
    call: &crate::Call<'_>,
    model: Option<&str>,
    body: &mut Value,
    shape: fn(&mut Value, &Answer, u64),
) {
    if let Some(a) = call.knobs.answer_for(model) {
        shape(body, a, call.seq);
    }
}

/// Rewrite a chat completion: every choice.
pub(crate) fn chat(body: &mut Value, a: &Answer, seq: u64) {
    let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for choice in choices {
        let (content, refusal, calls, finish) = match a {
            Answer::Empty => (json!(""), Value::Null, None, "stop"),
            Answer::Refusal => (Value::Null, json!(REFUSAL), None, "stop"),
            Answer::Truncated => (
                choice["message"]["content"].take(),
                Value::Null,
                None,
                "length",
            ),
            Answer::Text(t) => (json!(t), Value::Null, None, "stop"),
            Answer::Tool { name, arguments } => (
                Value::Null,
                Value::Null,
                Some(json!([{
                    "id": format!("call_fake{seq:012x}"),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments}
                }])),
                "tool_calls",
            ),
        };
        let msg = &mut choice["message"];
        msg["content"] = content;
        msg["refusal"] = refusal;
        if let Some(c) = calls {
            msg["tool_calls"] = c;
        }
        choice["finish_reason"] = json!(finish);
    }
}

/// Rewrite a Responses API response.
pub(crate) fn responses(body: &mut Value, a: &Answer, seq: u64) {
    let msg_id = format!("msg_fake{seq:012x}");
    let message = |content: Value| json!({"id": msg_id, "type": "message", "status": "completed", "content": content, "role": "assistant"});
    let text =
        |t: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": t});
    match a {
        Answer::Empty => body["output"] = json!([message(json!([text("")]))]),
        Answer::Refusal => {
            body["output"] = json!([message(json!([{"type": "refusal", "refusal": REFUSAL}]))]);
        }
        Answer::Truncated => {
            body["status"] = json!("incomplete");
            body["incomplete_details"] = json!({"reason": "max_output_tokens"});
            if let Some(items) = body["output"].as_array_mut() {
                for item in items {
                    item["status"] = json!("incomplete");
                }
            }
        }
        Answer::Text(t) => body["output"] = json!([message(json!([text(t)]))]),
        Answer::Tool { name, arguments } => {
            body["output"] = json!([{
                "id": format!("fc_fake{seq:012x}"),
                "type": "function_call",
                "status": "completed",
                "arguments": arguments,
                "call_id": format!("call_fake{seq:012x}"),
                "name": name
            }]);
        }
    }
}

/// Rewrite an Anthropic message. A tool call's arguments are its `input`
/// (as JSON; a string when they are not JSON).
pub(crate) fn messages(body: &mut Value, a: &Answer, seq: u64) {
    match a {
        Answer::Empty => body["content"] = json!([]),
        Answer::Refusal => body["stop_reason"] = json!("refusal"),
        Answer::Truncated => body["stop_reason"] = json!("model_context_window_exceeded"),
        Answer::Text(t) => body["content"] = json!([{"type": "text", "text": t}]),
        Answer::Tool { name, arguments } => {
            let input =
                serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!(arguments));
            body["content"] = json!([{
                "type": "tool_use",
                "id": format!("toolu_fake{seq:012x}"),
                "name": name,
                "input": input
            }]);
            body["stop_reason"] = json!("tool_use");
        }
    }
}
