//! The response's id and finish reasons, read for traces
//! (`gen_ai.response.id`, `gen_ai.response.finish_reasons`); only when
//! traces are on, so an untraced response is parsed no more than before.
//!
//! | flavor | id | finish reasons |
//! |---|---|---|
//! | OpenAI chat | `id` (every chunk) | each `choices[].finish_reason`, by `index` ([chat object](https://platform.openai.com/docs/api-reference/chat/object)) |
//! | OpenAI Responses | `response.id` / `id` | `incomplete_details.reason` when `status` is `incomplete`, else `status` ([response object](https://platform.openai.com/docs/api-reference/responses/object)) |
//! | Anthropic | `id` (`message_start.message.id` streamed) | `stop_reason` (`message_delta.delta.stop_reason` streamed) ([messages](https://docs.anthropic.com/en/api/messages)) |
//!
//! Both are provider-made identifiers, never text the model generated;
//! they are bounded (an id to 256 bytes, at most 16 reasons of 64 bytes).

use serde::Deserialize;

use super::Flavor;

/// Longest id kept.
const MAX_ID: usize = 256;
/// Longest finish reason kept.
const MAX_REASON: usize = 64;
/// Most finish reasons kept (one per choice).
const MAX_REASONS: usize = 16;

/// What a response says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// The provider's id of the response.
    pub id: Option<String>,
    /// Why generation stopped, per choice (by index).
    reasons: Vec<(u32, String)>,
}

#[derive(Deserialize)]
struct Chat {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    choices: Option<Vec<ChatChoice>>,
}

#[derive(Deserialize)]
struct ChatChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Responses {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    incomplete_details: Option<Incomplete>,
}

#[derive(Deserialize)]
struct Incomplete {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(default)]
    response: Option<Responses>,
}

#[derive(Deserialize)]
struct Anthropic {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    message: Option<Box<Anthropic>>,
    #[serde(default)]
    delta: Option<Box<Anthropic>>,
}

fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

// === impl ResponseFacts ===

impl ResponseFacts {
    /// The facts of a whole JSON body (nothing when it is not one).
    pub fn from_json(flavor: Flavor, body: &[u8]) -> ResponseFacts {
        let mut facts = ResponseFacts::default();
        match flavor {
            Flavor::OpenAiChat => {
                if let Ok(c) = serde_json::from_slice::<Chat>(body) {
                    facts.chat(c);
                }
            }
            Flavor::OpenAiResponses => {
                if let Ok(r) = serde_json::from_slice::<Responses>(body) {
                    facts.responses(r);
                }
            }
            Flavor::Anthropic => {
                if let Ok(a) = serde_json::from_slice::<Anthropic>(body) {
                    facts.anthropic(a);
                }
            }
            Flavor::OpenAiEmbeddings => {}
        }
        facts
    }

    /// Learn from one stream event's data.
    pub(super) fn event(&mut self, flavor: Flavor, data: &[u8]) {
        match flavor {
            Flavor::OpenAiChat => {
                if let Ok(c) = serde_json::from_slice::<Chat>(data) {
                    self.chat(c);
                }
            }
            Flavor::OpenAiResponses => {
                if let Ok(ResponsesEvent { response: Some(r) }) =
                    serde_json::from_slice::<ResponsesEvent>(data)
                {
                    self.responses(r);
                }
            }
            Flavor::Anthropic => {
                if let Ok(a) = serde_json::from_slice::<Anthropic>(data) {
                    if let Some(m) = a.message {
                        self.anthropic(*m);
                    }
                    if let Some(d) = a.delta {
                        self.anthropic(*d);
                    }
                }
            }
            Flavor::OpenAiEmbeddings => {}
        }
    }

    /// The finish reasons, in choice order.
    pub fn finish_reasons(&self) -> Vec<&str> {
        self.reasons.iter().map(|(_, r)| r.as_str()).collect()
    }

    fn set_id(&mut self, id: Option<String>) {
        if let Some(id) = id.filter(|i| !i.is_empty()) {
            self.id = Some(bounded(&id, MAX_ID));
        }
    }

    fn reason(&mut self, index: u32, reason: Option<String>) {
        let Some(reason) = reason.filter(|r| !r.is_empty()) else {
            return;
        };
        let reason = bounded(&reason, MAX_REASON);
        match self.reasons.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.reasons[at].1 = reason,
            Err(at) if self.reasons.len() < MAX_REASONS => self.reasons.insert(at, (index, reason)),
            Err(_) => {}
        }
    }

    fn chat(&mut self, c: Chat) {
        self.set_id(c.id);
        for (n, choice) in c.choices.into_iter().flatten().enumerate() {
            let index = choice
                .index
                .unwrap_or_else(|| u32::try_from(n).unwrap_or(u32::MAX));
            self.reason(index, choice.finish_reason);
        }
    }

    fn responses(&mut self, r: Responses) {
        self.set_id(r.id);
        let reason = match (r.status.as_deref(), r.incomplete_details) {
            (Some("incomplete"), Some(Incomplete { reason: Some(why) })) => Some(why),
            (Some("in_progress" | "queued"), _) | (None, _) => None,
            (Some(status), _) => Some(status.to_string()),
        };
        self.reason(0, reason);
    }

    fn anthropic(&mut self, a: Anthropic) {
        self.set_id(a.id);
        self.reason(0, a.stop_reason);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn whole_bodies() {
        let chat = br#"{"id":"chatcmpl-1","choices":[{"index":1,"finish_reason":"length","message":{"content":"x"}},{"index":0,"finish_reason":"stop"}]}"#;
        let f = ResponseFacts::from_json(Flavor::OpenAiChat, chat);
        assert_eq!(f.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(f.finish_reasons(), ["stop", "length"]);
        let responses = br#"{"id":"resp_1","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}"#;
        let f = ResponseFacts::from_json(Flavor::OpenAiResponses, responses);
        assert_eq!(f.id.as_deref(), Some("resp_1"));
        assert_eq!(f.finish_reasons(), ["max_output_tokens"]);
        let done = br#"{"id":"resp_2","status":"completed"}"#;
        let f = ResponseFacts::from_json(Flavor::OpenAiResponses, done);
        assert_eq!(f.finish_reasons(), ["completed"]);
        let msg = br#"{"id":"msg_1","type":"message","stop_reason":"end_turn","content":[]}"#;
        let f = ResponseFacts::from_json(Flavor::Anthropic, msg);
        assert_eq!(f.id.as_deref(), Some("msg_1"));
        assert_eq!(f.finish_reasons(), ["end_turn"]);
        assert_eq!(
            ResponseFacts::from_json(Flavor::Anthropic, b"not json"),
            ResponseFacts::default()
        );
    }

    #[test]
    fn stream_events() {
        let mut f = ResponseFacts::default();
        f.event(
            Flavor::Anthropic,
            br#"{"type":"message_start","message":{"id":"msg_2","stop_reason":null}}"#,
        );
        f.event(
            Flavor::Anthropic,
            br#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"}}"#,
        );
        assert_eq!(f.id.as_deref(), Some("msg_2"));
        assert_eq!(f.finish_reasons(), ["max_tokens"]);
        let mut f = ResponseFacts::default();
        f.event(
            Flavor::OpenAiChat,
            br#"{"id":"c","choices":[{"index":0,"finish_reason":null}]}"#,
        );
        f.event(
            Flavor::OpenAiChat,
            br#"{"id":"c","choices":[{"index":0,"finish_reason":"tool_calls"}]}"#,
        );
        f.event(Flavor::OpenAiChat, br#"{"id":"c","choices":[],"usage":{}}"#);
        assert_eq!(f.finish_reasons(), ["tool_calls"]);
        let long = format!(r#"{{"id":"{}"}}"#, "é".repeat(300));
        let f = ResponseFacts::from_json(Flavor::OpenAiChat, long.as_bytes());
        assert!(f.id.unwrap().len() <= MAX_ID);
    }
}
