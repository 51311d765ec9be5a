//! OpenAI: chat completions, responses, embeddings, models, errors.

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::text::{self, json_str, obfuscation, split_deltas, sse_data, sse_event};
use super::{Call, Fields, State, UsageReport, reply::Reply};

const FINGERPRINT: &str = "fp_fake0001";

/// Models listed by `GET /v1/models`.
const MODELS: &[&str] = &[
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
];
const MODEL_CREATED: u64 = 1_754_425_777;

/// `{"error": {"message", "type", "param", "code"}}` with `status`.
pub(crate) fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

/// The error body of an injected `x-fake-fault: STATUS`.
pub(crate) fn fault_error(status: StatusCode, model: Option<&str>) -> Reply {
    let model = model.unwrap_or("this model");
    match status.as_u16() {
        429 => error(
            status,
            &format!(
                "Rate limit reached for {model} in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more."
            ),
            "requests",
            Some("rate_limit_exceeded"),
            None,
        ),
        500 => error(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
        502 => error(status, "Bad gateway.", "server_error", None, None),
        503 => error(
            status,
            "The server is overloaded or not ready yet.",
            "server_error",
            None,
            None,
        ),
        code @ 500..=599 => error(
            status,
            &format!("The server had an error processing your request (fake fault {code})."),
            "server_error",
            None,
            None,
        ),
        code => error(
            status,
            &format!("Fake fault {code}."),
            "invalid_request_error",
            None,
            None,
        ),
    }
}

fn usage_json(prompt: u64, cached: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// The `no-usage` fault: removes the `usage` member (keeping the other members' order).
fn without_usage(value: &mut Value, no_usage: bool) {
    if let (Value::Object(map), true) = (value, no_usage) {
        map.shift_remove("usage");
    }
}

/// `POST /v1/chat/completions`: `n` choices with the same text, billed `n` times.
pub(crate) fn chat(call: &Call, f: &Fields) -> Reply {
    let prompt = call.input_total();
    let cached = call.cache_figures().read.min(prompt);
    // `n` was validated with the rest of the body.
    let n = f.choices().unwrap_or(1);
    let (per_choice, capped) = call.output(f.max_tokens());
    let out = per_choice * n;
    let finish = if capped { "length" } else { "stop" };
    let content = call.state.words.text(per_choice);
    let id = format!("chatcmpl-fake{:012x}", call.seq);
    let usage = UsageReport {
        model: call.served_model.clone(),
        input_total: prompt,
        output: out,
        cache_read: cached,
        cache_write: 0,
        cache_write_1h: 0,
    };

    if !f.streaming() {
        let choices: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "index": i,
                    "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
                    "logprobs": null,
                    "finish_reason": finish
                })
            })
            .collect();
        let mut body = json!({
            "id": id,
            "object": "chat.completion",
            "created": call.created,
            "model": call.served_model,
            "choices": choices,
            "usage": usage_json(prompt, cached, out),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT
        });
        crate::answer::apply(call, f.model.as_deref(), &mut body, crate::answer::chat);
        without_usage(&mut body, call.no_usage);
        return Reply::billed_json(&body, usage, call.cut);
    }

    let opts = f.stream_options.as_ref();
    // The no-usage fault: no usage chunk and no `"usage": null`, whatever the request asked.
    let include_usage = opts.and_then(|o| o.include_usage).unwrap_or(false) && !call.no_usage;
    let obfuscate = opts.and_then(|o| o.include_obfuscation).unwrap_or(true);
    let head = format!(
        r#"{{"id":"{id}","object":"chat.completion.chunk","created":{},"model":{},"service_tier":"default","system_fingerprint":"{FINGERPRINT}","choices":["#,
        call.created,
        json_str(&call.served_model)
    );
    let chunk = |choice: &str, extra: &str| {
        let mut s = String::with_capacity(head.len() + choice.len() + 64);
        s.push_str(&head);
        s.push_str(choice);
        s.push(']');
        if include_usage {
            s.push_str(r#","usage":null"#);
        }
        s.push_str(extra);
        s.push('}');
        sse_data(&s)
    };

    // One chunk per choice index for the role, every delta step and the finish.
    let first = (0..n)
        .map(|i| {
            chunk(
                &format!(
                    r#"{{"index":{i},"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}"#
                ),
                "",
            )
        })
        .collect();
    let steps: Vec<Vec<Bytes>> = split_deltas(&content, call.knobs.chunks)
        .into_iter()
        .enumerate()
        .map(|(step, d)| {
            let text = json_str(d);
            (0..n)
                .map(|i| {
                    let choice = format!(
                        r#"{{"index":{i},"delta":{{"content":{text}}},"logprobs":null,"finish_reason":null}}"#
                    );
                    let extra = if obfuscate {
                        format!(r#","obfuscation":"{}""#, obfuscation(step))
                    } else {
                        String::new()
                    };
                    chunk(&choice, &extra)
                })
                .collect()
        })
        .collect();
    let mut after: Vec<Bytes> = (0..n)
        .map(|i| {
            chunk(
                &format!(
                    r#"{{"index":{i},"delta":{{}},"logprobs":null,"finish_reason":"{finish}"}}"#
                ),
                "",
            )
        })
        .collect();
    if include_usage {
        let mut s = head.clone();
        s.push_str(r#"],"usage":"#);
        s.push_str(&usage_json(prompt, cached, out).to_string());
        s.push('}');
        after.push(sse_data(&s));
    }
    after.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let pieces = call.paced_steps(first, steps, after);
    Reply::billed_stream(pieces, usage, include_usage, call.cut)
}

/// A Responses API `response` object; the no-usage fault leaves its
/// `usage` member out.
fn response_object(
    call: &Call,
    f: &Fields,
    resp_id: &str,
    status: &str,
    incomplete: Value,
    output: Value,
    usage: Value,
) -> Value {
    let mut value = json!({
        "id": resp_id,
        "object": "response",
        "created_at": call.created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": f.max_output_tokens,
        "max_tool_calls": null,
        "model": call.served_model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "service_tier": "default",
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {}
    });
    without_usage(&mut value, call.no_usage);
    value
}

/// `POST /v1/responses`.
pub(crate) fn responses(call: &Call, f: &Fields) -> Reply {
    let input = call.input_total();
    let cached = call.cache_figures().read.min(input);
    let (out, capped) = call.output(f.max_tokens());
    let content = call.state.words.text(out);
    let resp_id = format!("resp_fake{:012x}", call.seq);
    let msg_id = format!("msg_fake{:012x}", call.seq);
    let usage = UsageReport {
        model: call.served_model.clone(),
        input_total: input,
        output: out,
        cache_read: cached,
        cache_write: 0,
        cache_write_1h: 0,
    };
    let usage_value = json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + out
    });
    let (final_status, incomplete) = if capped {
        ("incomplete", json!({"reason": "max_output_tokens"}))
    } else {
        ("completed", Value::Null)
    };
    let part = |text: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
    let item = |status: &str, content: Value| json!({"id": msg_id, "type": "message", "status": status, "content": content, "role": "assistant"});
    let response = |status: &str, incomplete: Value, output: Value, usage: Value| {
        response_object(call, f, &resp_id, status, incomplete, output, usage)
    };
    let done_item = item(final_status, json!([part(&content)]));

    if !f.streaming() {
        let mut body = response(final_status, incomplete, json!([done_item]), usage_value);
        crate::answer::apply(
            call,
            f.model.as_deref(),
            &mut body,
            crate::answer::responses,
        );
        return Reply::billed_json(&body, usage, call.cut);
    }

    let mut seq = 0u64;
    let mut event = |kind: &str, mut data: Value| {
        if let Value::Object(map) = &mut data {
            map.insert("type".into(), Value::from(kind));
            map.insert("sequence_number".into(), Value::from(seq));
        }
        seq += 1;
        sse_event(kind, &data)
    };
    let in_progress = response("in_progress", Value::Null, json!([]), Value::Null);
    let before = vec![
        event("response.created", json!({"response": in_progress})),
        event("response.in_progress", json!({"response": in_progress})),
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": item("in_progress", json!([]))}),
        ),
        event(
            "response.content_part.added",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part("")}),
        ),
    ];
    let deltas = split_deltas(&content, call.knobs.chunks)
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            event(
                "response.output_text.delta",
                json!({
                    "item_id": msg_id, "output_index": 0, "content_index": 0,
                    "delta": d, "logprobs": [], "obfuscation": obfuscation(i)
                }),
            )
        })
        .collect();
    let final_kind = if capped {
        "response.incomplete"
    } else {
        "response.completed"
    };
    let after = vec![
        event(
            "response.output_text.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": content, "logprobs": []}),
        ),
        event(
            "response.content_part.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part(&content)}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 0, "item": done_item}),
        ),
        event(
            final_kind,
            json!({"response": response(final_status, incomplete, json!([done_item]), usage_value)}),
        ),
    ];
    let pieces = call.paced(before, deltas, after);
    Reply::billed_stream(pieces, usage, true, call.cut)
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// The texts to embed: one per string / token array.
fn embedding_inputs(input: &Value) -> Result<Vec<String>, &'static str> {
    let token_text = |v: &[Value]| -> Option<String> {
        v.iter()
            .map(|t| t.as_u64().map(|n| format!("t{n}")))
            .collect::<Option<Vec<_>>>()
            .map(|w| w.join(" "))
    };
    match input {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if items.is_empty() => Err("'input' cannot be an empty array."),
        Value::Array(items) if items.iter().all(Value::is_number) => token_text(items)
            .map(|t| vec![t])
            .ok_or("Invalid token ids in 'input'."),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Array(tokens) => token_text(tokens).ok_or("Invalid token ids in 'input'."),
                _ => Err("Invalid type for 'input': expected a string or an array of strings."),
            })
            .collect(),
        _ => Err("Invalid type for 'input': expected a string or an array of strings."),
    }
}

/// `POST /v1/embeddings`.
pub(crate) fn embeddings(call: &Call, body: &Bytes) -> Reply {
    let bad = |msg: &str, param: &str| {
        error(
            StatusCode::BAD_REQUEST,
            msg,
            "invalid_request_error",
            None,
            Some(param),
        )
    };
    let req: EmbeddingRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad(&format!("Invalid request body: {e}"), "input"),
    };
    let Some(input) = req.input.as_ref() else {
        return bad("Missing required parameter: 'input'.", "input");
    };
    let texts = match embedding_inputs(input) {
        Ok(t) => t,
        Err(msg) => return bad(msg, "input"),
    };
    let dims = req.dimensions.unwrap_or(8);
    if dims == 0 || dims > 4096 {
        return bad(
            "Invalid value for 'dimensions': must be between 1 and 4096.",
            "dimensions",
        );
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return bad(
                "Invalid value for 'encoding_format': expected 'float' or 'base64'.",
                "encoding_format",
            );
        }
    };
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = text::embed(t, dims);
            let embedding = if base64 {
                Value::from(text::base64_f32(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let prompt = call.input_total();
    let mut body = json!({
        "object": "list",
        "data": data,
        "model": call.served_model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt}
    });
    without_usage(&mut body, call.no_usage);
    let usage = UsageReport {
        model: call.served_model.clone(),
        input_total: prompt,
        output: 0,
        cache_read: 0,
        cache_write: 0,
        cache_write_1h: 0,
    };
    Reply::billed_json(&body, usage, call.cut)
}

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": MODEL_CREATED, "owned_by": "openai"})
}

/// The precomputed `GET /v1/models` body.
pub(crate) fn models_list() -> Bytes {
    let data: Vec<Value> = MODELS.iter().map(|m| model_json(m)).collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// `GET /v1/models`.
pub(crate) fn models(state: &State, cut: bool) -> Reply {
    Reply::unbilled_json(state.openai_models.clone(), cut)
}

/// `GET /v1/models/{id}`: any id exists.
pub(crate) fn model(id: &str, cut: bool) -> Reply {
    Reply::unbilled_json(Bytes::from(model_json(id).to_string()), cut)
}
