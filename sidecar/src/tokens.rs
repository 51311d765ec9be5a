//! Refining the prompt-token bound, only when the cheap bound would refuse.
//!
//! The reservation's cheap bound is the body's byte count: a BPE token
//! covers at least one byte, so the prompt has at most that many tokens.
//! For a 100k-token agent context that is about 4× too high, which only
//! matters near the end of a budget or against a per-request cap. Then, and
//! only then, the sidecar computes a tighter bound that is still an upper
//! bound:
//!
//! - **OpenAI models** with a known tiktoken encoding (`o200k_base` for
//!   gpt-4o/4.1/5 and the o-series, `cl100k_base` for gpt-4/3.5 and
//!   embeddings): the token count of the *whole JSON body* with that encoding,
//!   plus a small margin. The provider tokenizes the message texts plus a few
//!   special tokens per message; the JSON text contains every message text
//!   (escapes only make it longer) plus keys and punctuation that outnumber
//!   those special tokens. The vocabulary (a few MiB) is loaded on the first
//!   refinement, off the hot path.
//! - **Anthropic models**: Anthropic publishes no tokenizer; the provider's
//!   own free `POST /v1/messages/count_tokens` returns the exact count for
//!   the same model, messages, system prompt and tools.
//! - Anything else keeps the byte bound.
//!
//! Images and files referenced by URL are not counted by either bound.

use std::sync::OnceLock;

use tiktoken_rs::{CoreBPE, tokenizer::Tokenizer};

/// Added to a tiktoken count: priming tokens of the chat format.
pub const TIKTOKEN_MARGIN: u64 = 16;

fn encoding(t: Tokenizer) -> Option<&'static CoreBPE> {
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    match t {
        Tokenizer::O200kBase => O200K
            .get_or_init(|| tiktoken_rs::o200k_base().ok())
            .as_ref(),
        Tokenizer::Cl100kBase => CL100K
            .get_or_init(|| tiktoken_rs::cl100k_base().ok())
            .as_ref(),
        _ => None,
    }
}

/// An upper bound on the prompt tokens of an OpenAI request for `model`,
/// or `None` when the model's encoding is unknown or the body is not UTF-8.
/// CPU-heavy for large bodies: call it from a blocking task.
pub fn openai_prompt_bound(model: &str, body: &[u8]) -> Option<u64> {
    let t = tiktoken_rs::tokenizer::get_tokenizer(model)?;
    let bpe = encoding(t)?;
    let text = std::str::from_utf8(body).ok()?;
    Some(bpe.encode_ordinary(text).len() as u64 + TIKTOKEN_MARGIN)
}

/// The body of a `count_tokens` call for a Messages request: the fields that
/// determine the prompt (`model` replaced by the routed one).
pub fn count_tokens_body(model: &str, body: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let mut out = serde_json::Map::new();
    out.insert("model".into(), serde_json::Value::String(model.to_string()));
    for k in ["messages", "system", "tools", "tool_choice", "thinking"] {
        if let Some(x) = obj.get(k)
            && !x.is_null()
        {
            out.insert(k.into(), x.clone());
        }
    }
    serde_json::to_vec(&serde_json::Value::Object(out)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiktoken_bound_is_far_below_bytes_and_above_the_text() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        let body =
            serde_json::json!({"model": "gpt-5", "messages": [{"role": "user", "content": text}]})
                .to_string();
        let bound = openai_prompt_bound("gpt-5", body.as_bytes()).unwrap();
        let text_tokens = tiktoken_rs::o200k_base()
            .unwrap()
            .encode_ordinary(&text)
            .len() as u64;
        assert!(bound > text_tokens, "{bound} > {text_tokens}");
        assert!(
            bound * 3 < body.len() as u64,
            "{bound} vs {} bytes",
            body.len()
        );
        assert_eq!(
            openai_prompt_bound("not-an-openai-model", body.as_bytes()),
            None
        );
        assert!(
            openai_prompt_bound("gpt-4", body.as_bytes()).is_some(),
            "cl100k models too"
        );
    }

    #[test]
    fn count_tokens_body_keeps_what_determines_the_prompt() {
        let b = br#"{"model":"claude-opus-4-1","max_tokens":9,"stream":true,"system":"s","messages":[{"role":"user","content":"hi"}],"temperature":1}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&count_tokens_body("claude-haiku-4-5", b).unwrap()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}],"system":"s"})
        );
    }
}
