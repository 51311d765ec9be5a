//! The answer rules on literal provider bodies, per API.

use pretty_assertions::assert_eq;
use tokenwarden_core::workload::{Endpoint, Escalation};

use super::{Reason, Request, judge, schema};

fn on() -> Escalation {
    Escalation::default()
}

fn chat(req: &str, answer: &str) -> Option<Reason> {
    judge_with(Endpoint::ChatCompletions, req, answer, &on())
}

fn judge_with(endpoint: Endpoint, req: &str, answer: &str, rules: &Escalation) -> Option<Reason> {
    let app_limit = [
        "\"max_tokens\"",
        "\"max_completion_tokens\"",
        "\"max_output_tokens\"",
    ]
    .iter()
    .any(|k| req.contains(k));
    judge(
        &Request {
            endpoint,
            body: req.as_bytes(),
            app_limit,
        },
        answer.as_bytes(),
        rules,
    )
}

const CHAT_REQ: &str = r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn chat_answer(message: &str, finish: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-5-mini","choices":[{{"index":0,"message":{message},"logprobs":null,"finish_reason":"{finish}"}}],"usage":{{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}}}"#
    )
}

#[test]
fn chat_a_good_answer_passes() {
    let a = chat_answer(
        r#"{"role":"assistant","content":"Hello!","refusal":null}"#,
        "stop",
    );
    assert_eq!(chat(CHAT_REQ, &a), None);
}

#[test]
fn chat_truncation_escalates_only_without_an_app_limit() {
    let a = chat_answer(
        r#"{"role":"assistant","content":"tok0 tok1","refusal":null}"#,
        "length",
    );
    assert_eq!(chat(CHAT_REQ, &a), Some(Reason::Truncated));
    let limited = r#"{"model":"gpt-5-mini","max_completion_tokens":2,"messages":[]}"#;
    assert_eq!(chat(limited, &a), None, "the app's own limit cut it");
    // Cut at the app's limit with nothing said: still what it asked for.
    let empty_cut = chat_answer(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "length",
    );
    assert_eq!(chat(limited, &empty_cut), None);
    let rules = Escalation {
        on_truncation: false,
        ..on()
    };
    assert_eq!(
        judge_with(Endpoint::ChatCompletions, CHAT_REQ, &a, &rules),
        None
    );
    assert_eq!(
        judge_with(Endpoint::ChatCompletions, CHAT_REQ, &empty_cut, &rules),
        None,
        "a cut answer is judged by the truncation rule alone"
    );
}

#[test]
fn chat_empty_and_refusal() {
    for content in [r#""""#, r#""  \n""#, "null"] {
        let a = chat_answer(
            &format!(r#"{{"role":"assistant","content":{content},"refusal":null}}"#),
            "stop",
        );
        assert_eq!(chat(CHAT_REQ, &a), Some(Reason::Empty), "{content}");
    }
    let refused = chat_answer(
        r#"{"role":"assistant","content":null,"refusal":"I'm sorry, I can't help with that."}"#,
        "stop",
    );
    assert_eq!(chat(CHAT_REQ, &refused), Some(Reason::Refusal));
    let rules = Escalation {
        on_refusal: false,
        ..on()
    };
    assert_eq!(
        judge_with(Endpoint::ChatCompletions, CHAT_REQ, &refused, &rules),
        None,
        "with the rule off a refusal is not caught as empty"
    );
    let filtered = chat_answer(r#"{"role":"assistant","content":null}"#, "content_filter");
    assert_eq!(chat(CHAT_REQ, &filtered), None);
    let audio = chat_answer(
        r#"{"role":"assistant","content":null,"audio":{"id":"audio_1","data":"AAA=","transcript":"hi"}}"#,
        "stop",
    );
    assert_eq!(chat(CHAT_REQ, &audio), None);
}

const CHAT_TOOLS: &str = r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","strict":true,"parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},"required":["city","unit"],"additionalProperties":false}}},{"type":"function","function":{"name":"now"}}]}"#;

fn chat_call(name: &str, args: &str) -> String {
    chat_answer(
        &format!(
            r#"{{"role":"assistant","content":null,"refusal":null,"tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"{name}","arguments":{}}}}}]}}"#,
            serde_json::to_string(args).unwrap()
        ),
        "tool_calls",
    )
}

#[test]
fn chat_tool_arguments_are_json_matching_the_declared_schema() {
    let good = chat_call("get_weather", r#"{"city":"Paris","unit":"c"}"#);
    assert_eq!(chat(CHAT_TOOLS, &good), None);
    let not_json = chat_call("get_weather", r#"{"city":"Paris","unit":"c""#);
    assert_eq!(chat(CHAT_TOOLS, &not_json), Some(Reason::ToolArguments));
    let off_schema = chat_call("get_weather", r#"{"city":"Paris","unit":"kelvin"}"#);
    assert_eq!(chat(CHAT_TOOLS, &off_schema), Some(Reason::ToolArguments));
    let missing = chat_call("get_weather", r#"{"city":"Paris"}"#);
    assert_eq!(chat(CHAT_TOOLS, &missing), Some(Reason::ToolArguments));
    // No `parameters`, or a tool the request did not declare: JSON is enough.
    assert_eq!(chat(CHAT_TOOLS, &chat_call("now", "{}")), None);
    assert_eq!(chat(CHAT_TOOLS, &chat_call("other", r#"{"a":1}"#)), None);
    assert_eq!(
        chat(CHAT_TOOLS, &chat_call("other", "{")),
        Some(Reason::ToolArguments)
    );
    let rules = Escalation {
        on_invalid_tool_call: false,
        ..on()
    };
    assert_eq!(
        judge_with(Endpoint::ChatCompletions, CHAT_TOOLS, &not_json, &rules),
        None
    );
}

#[test]
fn chat_response_format() {
    let schema_req = r#"{"model":"gpt-5-mini","messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"answer","strict":true,"schema":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}}}}"#;
    let ok = chat_answer(r#"{"role":"assistant","content":"{\"n\":3}"}"#, "stop");
    assert_eq!(chat(schema_req, &ok), None);
    let wrong = chat_answer(
        r#"{"role":"assistant","content":"{\"n\":\"three\"}"}"#,
        "stop",
    );
    assert_eq!(chat(schema_req, &wrong), Some(Reason::ResponseFormat));
    let prose = chat_answer(r#"{"role":"assistant","content":"n is 3"}"#, "stop");
    assert_eq!(chat(schema_req, &prose), Some(Reason::ResponseFormat));
    let object_req = r#"{"model":"m","messages":[],"response_format":{"type":"json_object"}}"#;
    assert_eq!(chat(object_req, &wrong), None);
    assert_eq!(chat(object_req, &prose), Some(Reason::ResponseFormat));
    let text_req = r#"{"model":"m","messages":[],"response_format":{"type":"text"}}"#;
    assert_eq!(chat(text_req, &prose), None);
    let rules = Escalation {
        on_invalid_response_format: false,
        ..on()
    };
    assert_eq!(
        judge_with(Endpoint::ChatCompletions, schema_req, &wrong, &rules),
        None
    );
}

#[test]
fn chat_with_several_choices_fails_only_when_all_fail() {
    let body = |second: &str| {
        format!(
            r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":""}},"finish_reason":"stop"}},{{"index":1,"message":{{"role":"assistant","content":{second}}},"finish_reason":"stop"}}]}}"#
        )
    };
    assert_eq!(chat(CHAT_REQ, &body(r#""fine""#)), None);
    assert_eq!(chat(CHAT_REQ, &body(r#""""#)), Some(Reason::Empty));
}

#[test]
fn responses_rules() {
    let req = r#"{"model":"gpt-5-mini","input":"hi"}"#;
    let r = |e: &str, b: &str| judge_with(Endpoint::Responses, e, b, &on());
    let answer = |status: &str, details: &str, output: &str| {
        format!(
            r#"{{"id":"resp_1","object":"response","status":"{status}","incomplete_details":{details},"model":"gpt-5-mini","output":[{output}],"usage":{{"input_tokens":3,"output_tokens":2,"total_tokens":5}}}}"#
        )
    };
    let text = |t: &str| {
        format!(
            r#"{{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{{"type":"output_text","text":{},"annotations":[]}}]}}"#,
            serde_json::to_string(t).unwrap()
        )
    };
    assert_eq!(r(req, &answer("completed", "null", &text("Hi"))), None);
    let cut = answer(
        "incomplete",
        r#"{"reason":"max_output_tokens"}"#,
        &text("tok0"),
    );
    assert_eq!(r(req, &cut), Some(Reason::Truncated));
    let limited = r#"{"model":"gpt-5-mini","input":"hi","max_output_tokens":16}"#;
    assert_eq!(r(limited, &cut), None);
    let filtered = answer("incomplete", r#"{"reason":"content_filter"}"#, "");
    assert_eq!(r(req, &filtered), None);
    assert_eq!(
        r(req, &answer("completed", "null", &text(" "))),
        Some(Reason::Empty)
    );
    assert_eq!(
        r(
            req,
            &answer(
                "completed",
                "null",
                r#"{"type":"reasoning","id":"rs_1","summary":[]}"#
            )
        ),
        Some(Reason::Empty)
    );
    let refusal = r#"{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"refusal","refusal":"I can't help with that."}]}"#;
    assert_eq!(
        r(req, &answer("completed", "null", refusal)),
        Some(Reason::Refusal)
    );
    let web = r#"{"type":"web_search_call","id":"ws_1","status":"completed"}"#;
    assert_eq!(r(req, &answer("completed", "null", web)), None);

    let tools = r#"{"model":"gpt-5-mini","input":"hi","tools":[{"type":"function","name":"add","parameters":{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}}]}"#;
    let call = |args: &str| {
        format!(
            r#"{{"type":"function_call","id":"fc_1","call_id":"call_1","name":"add","arguments":{},"status":"completed"}}"#,
            serde_json::to_string(args).unwrap()
        )
    };
    assert_eq!(
        r(
            tools,
            &answer("completed", "null", &call(r#"{"a":1,"b":2}"#))
        ),
        None
    );
    assert_eq!(
        r(tools, &answer("completed", "null", &call(r#"{"a":1}"#))),
        Some(Reason::ToolArguments)
    );
    assert_eq!(
        r(tools, &answer("completed", "null", &call("a=1"))),
        Some(Reason::ToolArguments)
    );

    let format = r#"{"model":"gpt-5-mini","input":"hi","text":{"format":{"type":"json_schema","name":"n","strict":true,"schema":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}}}}"#;
    assert_eq!(
        r(format, &answer("completed", "null", &text(r#"{"n":1}"#))),
        None
    );
    assert_eq!(
        r(
            format,
            &answer("completed", "null", &text(r#"{"n":1,"m":2}"#))
        ),
        Some(Reason::ResponseFormat)
    );
}

#[test]
fn anthropic_rules() {
    let r = |e: &str, b: &str| judge_with(Endpoint::Messages, e, b, &on());
    let req = r#"{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}"#;
    let msg = |content: &str, stop: &str| {
        format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{content}],"stop_reason":"{stop}","stop_sequence":null,"usage":{{"input_tokens":3,"output_tokens":2}}}}"#
        )
    };
    assert_eq!(
        r(req, &msg(r#"{"type":"text","text":"Hi"}"#, "end_turn")),
        None
    );
    assert_eq!(
        r(req, &msg(r#"{"type":"text","text":"Hi"}"#, "max_tokens")),
        None,
        "max_tokens is always the app's"
    );
    assert_eq!(
        r(
            req,
            &msg(
                r#"{"type":"text","text":"Hi"}"#,
                "model_context_window_exceeded"
            )
        ),
        Some(Reason::Truncated)
    );
    assert_eq!(r(req, &msg("", "end_turn")), Some(Reason::Empty));
    assert_eq!(
        r(
            req,
            &msg(
                r#"{"type":"thinking","thinking":"hmm","signature":"s"}"#,
                "end_turn"
            )
        ),
        Some(Reason::Empty)
    );
    assert_eq!(r(req, &msg("", "refusal")), Some(Reason::Refusal));
    let server =
        r#"{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"q"}}"#;
    assert_eq!(r(req, &msg(server, "pause_turn")), None);

    let tools = r#"{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[],"tools":[{"name":"get_weather","description":"d","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}},{"type":"web_search_20250305","name":"web_search"}]}"#;
    let use_ = |input: &str| {
        msg(
            &format!(
                r#"{{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{input}}}"#
            ),
            "tool_use",
        )
    };
    assert_eq!(r(tools, &use_(r#"{"location":"Paris"}"#)), None);
    assert_eq!(
        r(tools, &use_(r#"{"place":"Paris"}"#)),
        Some(Reason::ToolArguments)
    );
    assert_eq!(
        r(tools, &use_(r#"{"location":7}"#)),
        Some(Reason::ToolArguments)
    );

    let ga = r#"{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[],"output_config":{"format":{"type":"json_schema","schema":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}}}}"#;
    let beta = r#"{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[],"output_format":{"type":"json_schema","schema":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}}}"#;
    for req in [ga, beta] {
        assert_eq!(
            r(
                req,
                &msg(r#"{"type":"text","text":"{\"ok\":true}"}"#, "end_turn")
            ),
            None
        );
        assert_eq!(
            r(
                req,
                &msg(r#"{"type":"text","text":"{\"ok\":\"yes\"}"}"#, "end_turn")
            ),
            Some(Reason::ResponseFormat)
        );
    }
}

#[test]
fn unreadable_answers_and_embeddings_pass() {
    assert_eq!(chat(CHAT_REQ, "<html>oops"), None);
    assert_eq!(chat(CHAT_REQ, r#"{"choices":[]}"#), None);
    assert_eq!(
        judge_with(
            Endpoint::Embeddings,
            r#"{"model":"e","input":"x"}"#,
            r#"{"data":[]}"#,
            &on()
        ),
        None
    );
    let all_off = Escalation {
        on_truncation: false,
        on_empty_answer: false,
        on_refusal: false,
        on_invalid_tool_call: false,
        on_invalid_response_format: false,
        ..on()
    };
    let empty = chat_answer(r#"{"role":"assistant","content":""}"#, "stop");
    assert_eq!(
        judge_with(Endpoint::ChatCompletions, CHAT_REQ, &empty, &all_off),
        None
    );
}

#[test]
fn schemas_that_cannot_be_checked_pass() {
    use serde_json::json;
    let v = json!({"a": 1});
    assert_eq!(
        schema::validate(&json!({"type": "object"}), &v),
        schema::Verdict::Valid
    );
    assert_eq!(
        schema::validate(&json!({"type": "string"}), &v),
        schema::Verdict::Invalid
    );
    // Not a schema; a remote reference (never fetched); a pattern the
    // linear-time engine cannot run; too large.
    assert_eq!(
        schema::validate(&json!({"type": 12}), &v),
        schema::Verdict::Unchecked
    );
    assert_eq!(
        schema::validate(&json!({"$ref": "https://example.com/s.json"}), &v),
        schema::Verdict::Unchecked
    );
    assert_eq!(
        schema::validate(
            &json!({"properties": {"a": {"type": "string", "pattern": "(a)\\1"}}}),
            &json!({"a": "aa"})
        ),
        schema::Verdict::Unchecked
    );
    let huge = json!({"enum": (0..schema::MAX_SCHEMA_NODES).collect::<Vec<_>>()});
    assert_eq!(schema::validate(&huge, &v), schema::Verdict::Unchecked);
    // A pattern that backtracking engines take exponential time on.
    let evil = json!({"type": "string", "pattern": "^(a+)+$"});
    let started = std::time::Instant::now();
    assert_eq!(
        schema::validate(&evil, &json!(format!("{}!", "a".repeat(5000)))),
        schema::Verdict::Invalid
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn the_request_is_read_only_when_it_can_ask_for_a_check() {
    use super::may_ask;
    let req = |body: &'static str| Request {
        endpoint: Endpoint::ChatCompletions,
        body: body.as_bytes(),
        app_limit: false,
    };
    // No format asked and no tool call to check: no pass over the body.
    assert!(!may_ask(&req(r#"{"model":"m","messages":[]}"#), false));
    assert!(!may_ask(&req(r#"{"model":"m","tools":[]}"#), false));
    // A format, or a tool call with tools declared: the body is read.
    assert!(may_ask(
        &req(r#"{"response_format":{"type":"json_object"}}"#),
        false
    ));
    assert!(may_ask(&req(r#"{"model":"m","tools":[]}"#), true));
    // Anthropic's format keys.
    let msg = Request {
        endpoint: Endpoint::Messages,
        body: br#"{"output_config":{"format":{}}}"#,
        app_limit: false,
    };
    assert!(may_ask(&msg, false));
    // And a format asked in a body that also carries other members is
    // still checked end to end.
    assert_eq!(
        chat(
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
            &chat_answer(r#"{"role":"assistant","content":"not json"}"#, "stop"),
        ),
        Some(Reason::ResponseFormat)
    );
}
