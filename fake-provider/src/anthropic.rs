//! Anthropic: messages, count_tokens, models, errors.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::text::{json_str, split_deltas, sse_event};
use super::{Call, Fields, State, UsageReport, reply::Reply};

/// Models listed by `GET /v1/models` (Anthropic flavour): id, display name, created_at.
const MODELS: &[(&str, &str, &str)] = &[
    (
        "claude-opus-4-1-20250805",
        "Claude Opus 4.1",
        "2025-08-05T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
    (
        "claude-sonnet-4-20250514",
        "Claude Sonnet 4",
        "2025-05-14T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-20241022",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

/// `{"type": "error", "error": {"type", "message"}}` with `status`.
pub(crate) fn error(status: StatusCode, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// The error body of an injected `x-fake-fault: STATUS`.
pub(crate) fn fault_error(status: StatusCode) -> Reply {
    let (kind, message) = match status.as_u16() {
        400 => ("invalid_request_error", "Fake invalid request."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => ("not_found_error", "Not found"),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed size.",
        ),
        429 => (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
        ),
        529 => ("overloaded_error", "Overloaded"),
        500..=599 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "Fake fault."),
    };
    error(status, kind, message)
}

/// `POST /v1/messages`.
pub(crate) fn messages(call: &Call, f: &Fields) -> Reply {
    let total = call.input_total();
    let cache = call.cache_figures();
    let (cache_read, cache_write) = (cache.read, cache.write);
    let input = total.saturating_sub(cache_read).saturating_sub(cache_write);
    let (out, capped) = call.output(f.max_tokens);
    let stop = if capped { "max_tokens" } else { "end_turn" };
    let content = call.state.words.text(out);
    let id = format!("msg_fake{:012x}", call.seq);
    let billed = UsageReport {
        model: call.served_model.clone(),
        input_total: input + cache_read + cache_write,
        output: out,
        cache_read,
        cache_write,
        cache_write_1h: cache.write_1h,
    };
    let usage = |output: u64| {
        json!({
            "input_tokens": input,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_write - cache.write_1h,
                "ephemeral_1h_input_tokens": cache.write_1h
            },
            "output_tokens": output,
            "service_tier": "standard"
        })
    };

    // The no-usage fault drops the member from the body and the events.
    let with_usage = |mut value: Value, usage: Value| {
        if let (Value::Object(map), false) = (&mut value, call.no_usage) {
            map.insert("usage".into(), usage);
        }
        value
    };

    if !f.streaming() {
        let body = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": call.served_model,
            "content": [{"type": "text", "text": content}],
            "stop_reason": stop,
            "stop_sequence": null
        });
        let mut body = with_usage(body, usage(out));
        crate::answer::apply(call, f.model.as_deref(), &mut body, crate::answer::messages);
        return Reply::billed_json(&body, billed, call.cut);
    }

    let start = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": call.served_model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null
    });
    let before = vec![
        sse_event(
            "message_start",
            &json!({"type": "message_start", "message": with_usage(start, usage(1))}),
        ),
        sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"),
    ];
    let deltas = split_deltas(&content, call.knobs.chunks)
        .into_iter()
        .map(|d| {
            Bytes::from(format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n",
                json_str(d)
            ))
        })
        .collect();
    let after = vec![
        Bytes::from_static(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        ),
        sse_event(
            "message_delta",
            &with_usage(
                json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": null}
                }),
                json!({"output_tokens": out}),
            ),
        ),
        Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
    ];
    let pieces = call.paced(before, deltas, after);
    Reply::billed_stream(pieces, billed, true, call.cut)
}

/// `POST /v1/messages/count_tokens` (free: bills nothing).
pub(crate) fn count_tokens(call: &Call) -> Reply {
    // What the body shows: x-fake-extra-input-tokens stands for input only billing sees.
    let body = json!({"input_tokens": call.body_tokens()});
    Reply::unbilled_json(Bytes::from(body.to_string()), call.cut)
}

/// The precomputed Anthropic `GET /v1/models` body.
pub(crate) fn models_list() -> Bytes {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name, created)| {
            json!({"type": "model", "id": id, "display_name": name, "created_at": created})
        })
        .collect();
    let first = MODELS.first().map(|m| m.0);
    let last = MODELS.last().map(|m| m.0);
    Bytes::from(
        json!({"data": data, "has_more": false, "first_id": first, "last_id": last}).to_string(),
    )
}

/// `GET /v1/models` with Anthropic auth.
pub(crate) fn models(state: &State, cut: bool) -> Reply {
    Reply::unbilled_json(state.anthropic_models.clone(), cut)
}
