//! Writes the seed corpora, `corpus/<target>/seed-*`, from the sidecar's
//! provider fixtures (`sidecar/src/meter/testdata/`) and request bodies
//! taken from its tests. Files the fuzzer added (named by their SHA-1) are
//! left alone.
//!
//! `scripts/fuzz seeds` builds and runs it (instrumented like the targets,
//! so it shares their build; hence the link to libFuzzer's runtime).

use std::io::Write as _;

// The instrumented code calls libFuzzer's coverage callbacks.
use libfuzzer_sys as _;
use std::path::{Path, PathBuf};

use tokenwarden_fuzz::seed;

const CHAT: u8 = 0;
const RESPONSES: u8 = 1;
const EMBEDDINGS: u8 = 2;
const MESSAGES: u8 = 3;
const STRIP: u8 = 4;

const GZIP: u8 = 0;
const DEFLATE: u8 = 1;
const BROTLI: u8 = 2;
const ZSTD: u8 = 3;

/// Request bodies: (name, endpoint, body).
const REQUESTS: &[(&str, u8, &str)] = &[
    (
        "chat-tools",
        CHAT,
        r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],"tool_choice":"auto","temperature":0}"#,
    ),
    (
        "chat-extraction",
        CHAT,
        r#"{"model":"m","max_tokens":100,"max_completion_tokens":300,
      "functions":[{"name":"a"}],"tools":[{"type":"function"},{"type":"function"}],
      "messages":[
        {"role":"developer","content":"Be brief."},
        {"content":[{"type":"text","text":"part one"},{"type":"image_url","image_url":{"url":"data:"}},{"text":"part two","type":"text"}],"role":"user"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"a","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"42"},
        {"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},
        "not a message", 7, null
      ]}"#,
    ),
    (
        "chat-escapes",
        CHAT,
        r#"{"messages":[{"role":"user","content":"caf\u00e9 \"quoted\" back\\slash\nnext"}],"model":"gpt\u002d4o","temperature":0.2}"#,
    ),
    (
        "chat-nested-model-keys",
        CHAT,
        r#"{"metadata":{"model":"x"},"messages":[{"role":"user","content":"{\"model\": \"y\"}","model":"z"}],"model":"gpt-4o","tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"model":{"type":"string"}}}}}]}"#,
    ),
    (
        "chat-stream-odd-whitespace",
        CHAT,
        "{ \"stream\" :true , \"messages\":[ ] ,\"model\"\t:\t\"gpt-4o\" }",
    ),
    (
        "chat-stream-pretty",
        CHAT,
        "{\n  \"model\": \"gpt-4o\",\n  \"stream\": true,\n  \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]\n}\n",
    ),
    (
        "chat-stream-options-other-keys",
        CHAT,
        r#"{"model": "gpt-4o", "stream": true, "stream_options": { "include_usage": false, "include_obfuscation": true }, "messages": []}"#,
    ),
    (
        "chat-stream-options-null-usage-last",
        CHAT,
        "{\n  \"stream_options\": {\n    \"x\": [1, 2],\n    \"include_usage\": null\n  },\n  \"model\": \"a\",\n  \"stream\": true\n}",
    ),
    (
        "chat-stream-options-empty",
        CHAT,
        r#"{"model":"m","stream":true,"stream_options":{ }}"#,
    ),
    (
        "chat-stream-options-null",
        CHAT,
        r#"{"model":"m","stream_options":null,"stream":true}"#,
    ),
    (
        "chat-include-usage-already",
        CHAT,
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
    ),
    (
        "chat-nulls",
        CHAT,
        r#"{"model":"m","stream":null,"stream_options":null,"max_tokens":null,"tools":null,"messages":null}"#,
    ),
    ("chat-empty", CHAT, "{ }\n"),
    ("chat-no-model-stream", CHAT, r#"{"stream":true}"#),
    (
        "chat-escaped-model-key",
        CHAT,
        r#"{"mod\u0065l":"a","x":1}"#,
    ),
    (
        "chat-duplicate-model",
        CHAT,
        r#"{"model":"a","mod\u0065l":"b"}"#,
    ),
    (
        "chat-duplicate-passive",
        CHAT,
        r#"{"user":"a","model":"m","user":"b"}"#,
    ),
    (
        "chat-surrogates",
        CHAT,
        r#"{"model":"m","\ud800":1,"messages":[{"role":"user","content":"hi \ud83d"},{"role":"user","content":[{"type":"text","text":"\udc00x"}]}]}"#,
    ),
    ("chat-n", CHAT, r#"{"n":100,"max_tokens":1000}"#),
    (
        "chat-wrong-type",
        CHAT,
        r#"{"model":"m","stream_options":{"include_usage":"yes"}}"#,
    ),
    (
        "chat-deep",
        CHAT,
        r#"{"model":"m","x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{"model":1}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"messages":[{"role":"user","content":[[[[[[[[[[[]]]]]]]]]]]}]}"#,
    ),
    ("not-an-object", CHAT, r#"[{"model":"m"}]"#),
    (
        "messages-extraction",
        MESSAGES,
        r#"{"model":"claude-sonnet-4-5","max_tokens":2048,"stream":true,
      "system":"You are a careful engineer.",
      "tools":[{"name":"bash","input_schema":{"type":"object"}}],
      "messages":[
        {"role":"user","content":"Fix the flaky test."},
        {"role":"assistant","content":[
          {"type":"thinking","thinking":"hmm","signature":"s"},
          {"type":"text","text":"Running it."},
          {"type":"tool_use","id":"t1","name":"bash","input":{"cmd":"cargo test"}}]},
        {"role":"user","content":[
          {"type":"tool_result","tool_use_id":"t1","content":"test a ... FAILED"},
          {"type":"tool_result","tool_use_id":"t2","content":[{"type":"text","text":"panicked at"},{"type":"image","source":{}}]},
          {"type":"text","text":"Go on."}]},
        {"role":"assistant","content":[{"type":"web_search_tool_result","tool_use_id":"w","content":{"type":"web_search_tool_result_error","error_code":"unavailable"}}]}
      ]}"#,
    ),
    (
        "messages-pretty-system-blocks",
        MESSAGES,
        "{\n  \"max_tokens\": 1024,\n  \"model\" :  \"claude-opus-4-1\",\n  \"system\": [\n    {\"type\": \"text\", \"text\": \"You review code.\", \"cache_control\": {\"type\": \"ephemeral\"}}\n  ],\n  \"messages\": [\n    {\"role\": \"user\", \"content\": \"Review this diff.\"}\n  ]\n}\n",
    ),
    (
        "responses-extraction",
        RESPONSES,
        r#"{"model":"gpt-5","instructions":"Answer in French.","max_output_tokens":512,
      "tools":[{"type":"web_search"}],
      "input":[
        {"role":"developer","content":"Cite sources."},
        {"role":"user","content":"Quelle heure est-il ?"},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"À Paris."},{"type":"input_image","image_url":"x"}]},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Je regarde.","annotations":[]}]},
        {"type":"reasoning","id":"r","summary":[{"type":"summary_text","text":"thinking"}]},
        {"type":"function_call","call_id":"c","name":"clock","arguments":"{}"},
        {"type":"function_call_output","call_id":"c","output":"14:02"},
        {"type":"computer_call_output","call_id":"d","output":{"type":"computer_screenshot"}}
      ]}"#,
    ),
    (
        "responses-string-input",
        RESPONSES,
        r#"{"model":"gpt-5","input":"Hello","stream":true}"#,
    ),
    (
        "embeddings-strings",
        EMBEDDINGS,
        r#"{"model":"e","input":["a","b\u0021"],"dimensions":8}"#,
    ),
    (
        "embeddings-tokens",
        EMBEDDINGS,
        r#"{"model":"e","input":[[1,2],[3]]}"#,
    ),
    ("embeddings-no-model", EMBEDDINGS, r#"{"input":"hello"}"#),
];

/// Stream fixtures: (file, selector).
const STREAMS: &[(&str, u8)] = &[
    ("openai_chat.sse", CHAT),
    ("openai_chat_include_usage.sse", CHAT | STRIP),
    ("openai_chat_tools.sse", CHAT),
    ("openai_chat_tools_include_usage.sse", CHAT | STRIP),
    ("openai_responses.sse", RESPONSES),
    ("anthropic.sse", MESSAGES),
    ("anthropic_tools.sse", MESSAGES),
    ("anthropic_overloaded.sse", MESSAGES),
];

/// Small hand-written streams: (name, selector, stream).
const SMALL_STREAMS: &[(&str, u8, &str)] = &[
    (
        "chat-strip-usage-everywhere",
        CHAT | STRIP,
        concat!(
            r#"data: {"usage":null,"id":"a","choices":[{"delta":{"content":"x"}}]}"#,
            "\n\n",
            r#"data: { "id": "b", "usage": null, "choices": [ ] }"#,
            "\r\n\r\n",
            r#"data:{"id":"c","usage":null}"#,
            "\n\n",
            ": keep-alive\nid: 7\nevent: chunk\n",
            r#"data: {"id":"d","choices":[],"usage":null}"#,
            "\nretry: 10\n\n",
            ": the end\n",
            r#"data: {"id":"e","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        ),
    ),
    (
        "chat-strip-multiline-bad-json",
        CHAT | STRIP,
        "data: {\"id\":\"a\",\ndata: \"usage\":null}\n\ndata: {\"usage\":null\n\n",
    ),
    (
        "anthropic-field-syntax-bom",
        MESSAGES,
        concat!(
            "\u{FEFF}: a comment first, after a BOM\n",
            "event: message_start\n",
            "id: 1\n",
            "data:{\"type\":\"message_start\",\n",
            "data:  \"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5}}}\n",
            "\n",
            "event: ping\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
        ),
    ),
    (
        "responses-failed",
        RESPONSES,
        concat!(
            "event: response.created\n",
            r#"data: {"type":"response.created","response":{"model":"gpt-5","usage":null}}"#,
            "\n\n",
            "event: response.output_text.delta\n",
            r#"data: {"type":"response.output_text.delta","delta":"Bon"}"#,
            "\n\n",
            "event: response.failed\n",
            r#"data: {"type":"response.failed","response":{"model":"gpt-5","error":{"code":"server_error","message":"boom"},"usage":{"input_tokens":9,"output_tokens":1,"input_tokens_details":{"cached_tokens":2}}}}"#,
            "\n\n",
        ),
    ),
];

/// JSON bodies (files of testdata): (file, selector).
const JSONS: &[(&str, u8)] = &[
    ("openai_chat.json", CHAT),
    ("openai_responses.json", RESPONSES),
    ("openai_embeddings.json", EMBEDDINGS),
    ("anthropic.json", MESSAGES),
];

/// Small hand-written JSON bodies: (name, selector, body).
const SMALL_JSONS: &[(&str, u8, &str)] = &[
    (
        "chat-escapes-in-text",
        CHAT,
        r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"world\" {not: a key} \\ done"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4}},"system_fingerprint":"fp_1"}"#,
    ),
    (
        "anthropic-duplicate-usage",
        MESSAGES,
        r#"{"usage":{"input_tokens":1,"output_tokens":1},"model":"claude-haiku-4-5","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":3,"cache_creation_input_tokens":2}}"#,
    ),
    (
        "responses-escaped-keys-scalars",
        RESPONSES,
        "{ \"mod\\u0065l\" : \"m\\\"1\" ,\n \"usage\" :{\"input_tokens\" : 5 , \"output_tokens\":6 } , \"n\": 12 }  ",
    ),
    (
        "nested-usage-not-top-level",
        CHAT,
        r#"{"choices":[{"message":{"content":"x","usage":{"prompt_tokens":999}},"model":"inner"}],"data":{"usage":{"completion_tokens":5}}}"#,
    ),
    (
        "responses-cut",
        RESPONSES,
        r#"{"usage":{"input_tokens":5,"output_tokens":6},"output":[{"content":[{"text":"abcdefgh"#,
    ),
    (
        "error-object",
        CHAT,
        r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
    ),
    ("not-json", CHAT, "<html>oops</html>"),
    (
        "model-of-odd-type",
        MESSAGES,
        r#"{"model":7,"usage":{"input_tokens":3,"output_tokens":4}}"#,
    ),
];

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let testdata = fuzz.join("../sidecar/src/meter/testdata");
    let fixture =
        |name: &str| std::fs::read(testdata.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let corpus = fuzz.join("corpus");

    // request
    for (name, endpoint, body) in REQUESTS {
        write(
            &corpus,
            "request",
            name,
            &seed(*endpoint, &[], body.as_bytes()),
        );
    }

    // sse_tap: the fixtures whole; one cut in odd chunks; CRLF and CR line
    // endings; the small streams.
    for (file, selector) in STREAMS {
        let name = file.trim_end_matches(".sse");
        write(
            &corpus,
            "sse_tap",
            name,
            &seed(*selector, &[], &fixture(file)),
        );
    }
    let chat_iu = fixture("openai_chat_include_usage.sse");
    write(
        &corpus,
        "sse_tap",
        "openai_chat_include_usage-chunks",
        &seed(CHAT | STRIP, &[7, 0, 13, 255, 1], &chat_iu),
    );
    let anthropic = String::from_utf8(fixture("anthropic_overloaded.sse")).unwrap_or_default();
    write(
        &corpus,
        "sse_tap",
        "anthropic_overloaded-crlf",
        &seed(
            MESSAGES,
            &[3, 250],
            anthropic.replace('\n', "\r\n").as_bytes(),
        ),
    );
    let tools =
        String::from_utf8(fixture("openai_chat_tools_include_usage.sse")).unwrap_or_default();
    write(
        &corpus,
        "sse_tap",
        "openai_chat_tools_include_usage-cr",
        &seed(
            CHAT | STRIP,
            &[1, 2, 3],
            tools.replace('\n', "\r").as_bytes(),
        ),
    );
    for (name, selector, stream) in SMALL_STREAMS {
        write(
            &corpus,
            "sse_tap",
            name,
            &seed(*selector, &[5, 1], stream.as_bytes()),
        );
    }

    // json_tap
    for (file, selector) in JSONS {
        let name = file.trim_end_matches(".json");
        write(
            &corpus,
            "json_tap",
            name,
            &seed(*selector, &[], &fixture(file)),
        );
    }
    for (name, selector, body) in SMALL_JSONS {
        write(
            &corpus,
            "json_tap",
            name,
            &seed(*selector, &[3, 1], body.as_bytes()),
        );
    }

    // decode: two bodies in each coding, plus the edge cases of each.
    let json = fixture("openai_chat.json");
    let sse = fixture("anthropic_overloaded.sse");
    for (name, body) in [("json", &json), ("sse", &sse)] {
        write(
            &corpus,
            "decode",
            &format!("gzip-{name}"),
            &seed(GZIP, &[], &gzip(body)),
        );
        write(
            &corpus,
            "decode",
            &format!("deflate-{name}"),
            &seed(DEFLATE, &[], &zlib(body)),
        );
        write(
            &corpus,
            "decode",
            &format!("brotli-{name}"),
            &seed(BROTLI, &[], &brotli(body)),
        );
        write(
            &corpus,
            "decode",
            &format!("zstd-{name}"),
            &seed(ZSTD, &[], &zstd(body)),
        );
    }
    let small = br#"{"usage":{"prompt_tokens":12,"completion_tokens":7}}"#;
    // gzip: two members (MultiGzDecoder), trailing garbage, cut short.
    let two = [gzip(small), gzip(small)].concat();
    write(
        &corpus,
        "decode",
        "gzip-two-members",
        &seed(GZIP, &[9, 0, 30], &two),
    );
    let garbage = [gzip(small), b"<html>".to_vec()].concat();
    write(
        &corpus,
        "decode",
        "gzip-trailing-garbage",
        &seed(GZIP, &[], &garbage),
    );
    let cut = gzip(small);
    write(
        &corpus,
        "decode",
        "gzip-cut",
        &seed(GZIP, &[], &cut[..cut.len() / 2]),
    );
    // A run of zeros: the highest ratios.
    let zeros = vec![0u8; 1 << 20];
    write(
        &corpus,
        "decode",
        "deflate-zeros",
        &seed(DEFLATE, &[], &zlib(&zeros)),
    );
    write(
        &corpus,
        "decode",
        "brotli-zeros",
        &seed(BROTLI, &[], &brotli(&zeros)),
    );
    write(
        &corpus,
        "decode",
        "zstd-zeros",
        &seed(ZSTD, &[], &zstd(&zeros)),
    );
    // zstd: two frames and a skippable frame between them.
    let skippable = [
        &0x184D_2A50u32.to_le_bytes()[..],
        &4u32.to_le_bytes(),
        b"skip",
    ]
    .concat();
    let frames = [zstd(small), skippable, zstd(b"")].concat();
    write(
        &corpus,
        "decode",
        "zstd-frames",
        &seed(ZSTD, &[4, 4, 4], &frames),
    );
    write(
        &corpus,
        "decode",
        "brotli-empty",
        &seed(BROTLI, &[], &brotli(b"")),
    );
    write(
        &corpus,
        "decode",
        "garbage",
        &seed(GZIP, &[], b"<html>not gzip</html>"),
    );
}

fn write(corpus: &Path, target: &str, name: &str, data: &[u8]) {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap_or_default();
    e.finish().unwrap_or_default()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap_or_default();
    e.finish().unwrap_or_default()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        e.write_all(data).unwrap_or_default();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap_or_default()
}
