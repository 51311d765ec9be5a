//! Splicing edits into the body, and the digest.

use std::{
    hash::{DefaultHasher, Hasher},
    ops::Range,
};

use bytes::Bytes;
use tokenwarden_core::workload::Endpoint;

use super::{Layout, ParsedRequest, StreamOptions, scan};

/// The value `stream_options` gets when the app sent none (or `null`).
const STREAM_OPTIONS: &str = r#"{"include_usage":true}"#;

/// Replace the bytes at `at` (empty: insert) by `text`.
#[derive(Debug)]
struct Edit {
    at: Range<usize>,
    text: String,
}

pub(super) fn rewrite(
    body: &Bytes,
    parsed: &ParsedRequest<'_>,
    new_model: Option<&str>,
    ensure_include_usage: bool,
) -> Bytes {
    if !parsed.layout.describes(body) {
        return match scan::parse(parsed.endpoint, body, true) {
            Ok(again) if again.layout.describes(body) => {
                rewrite(body, &again, new_model, ensure_include_usage)
            }
            _ => body.clone(),
        };
    }
    let edits = plan(parsed, new_model, ensure_include_usage);
    if edits.is_empty() {
        return body.clone();
    }
    splice(body, &edits).map_or_else(|| body.clone(), Bytes::from)
}

pub(super) fn digest(body: &[u8], parsed: &ParsedRequest<'_>) -> u64 {
    if !parsed.layout.describes(body) {
        return match scan::parse(parsed.endpoint, body, true) {
            Ok(again) if again.layout.describes(body) => digest(body, &again),
            _ => hash(body, None),
        };
    }
    hash(body, parsed.layout.model.clone())
}

/// The edits, in body order (two inserts at the same offset keep the order
/// they are pushed in).
fn plan(
    parsed: &ParsedRequest<'_>,
    new_model: Option<&str>,
    ensure_include_usage: bool,
) -> Vec<Edit> {
    let layout = &parsed.layout;
    let mut edits = Vec::new();
    // A member appended to the top-level object needs a comma unless the
    // object is empty and nothing was appended before it.
    let mut top_comma = layout.has_members;

    if let Some(model) = new_model
        && parsed.model.as_deref() != Some(model)
    {
        // serde_json's string literal (escapes `"`, `\` and control chars).
        let literal = serde_json::Value::from(model).to_string();
        match &layout.model {
            Some(span) => edits.push(Edit {
                at: span.clone(),
                text: literal,
            }),
            None => {
                edits.push(member(layout.close, top_comma, "model", &literal));
                top_comma = true;
            }
        }
    }

    if ensure_include_usage
        && parsed.endpoint == Endpoint::ChatCompletions
        && parsed.stream
        && parsed.include_usage != Some(true)
    {
        edits.push(match &layout.stream_options {
            None => member(layout.close, top_comma, "stream_options", STREAM_OPTIONS),
            Some(StreamOptions::Null(span)) => Edit {
                at: span.clone(),
                text: STREAM_OPTIONS.into(),
            },
            Some(StreamOptions::Object {
                include_usage: Some(span),
                ..
            }) => Edit {
                at: span.clone(),
                text: "true".into(),
            },
            Some(StreamOptions::Object {
                close,
                has_members,
                include_usage: None,
            }) => member(*close, *has_members, "include_usage", "true"),
        });
    }

    edits.sort_by_key(|e| e.at.start);
    edits
}

/// Inserts `"name":value` right before the `}` at `close`.
fn member(close: usize, comma: bool, name: &str, value: &str) -> Edit {
    let comma = if comma { "," } else { "" };
    Edit {
        at: close..close,
        text: format!("{comma}\"{name}\":{value}"),
    }
}

/// The body with `edits` (sorted, not overlapping) applied.
fn splice(body: &[u8], edits: &[Edit]) -> Option<Vec<u8>> {
    let added: usize = edits.iter().map(|e| e.text.len()).sum();
    let mut out = Vec::with_capacity(body.len().saturating_add(added));
    let mut at = 0;
    for edit in edits {
        out.extend_from_slice(body.get(at..edit.at.start)?);
        out.extend_from_slice(edit.text.as_bytes());
        at = edit.at.end;
    }
    out.extend_from_slice(body.get(at..)?);
    Some(out)
}

/// SipHash-1-3 (std's `DefaultHasher`) of `body` without the bytes in `skip`.
fn hash(body: &[u8], skip: Option<Range<usize>>) -> u64 {
    let mut h = DefaultHasher::new();
    match skip.and_then(|span| Some((body.get(..span.start)?, body.get(span.end..)?))) {
        Some((before, after)) => {
            h.write(before);
            // A NUL byte cannot occur in JSON text (outside strings it is not
            // whitespace, inside it must be escaped), so the hashed sequence
            // of a body with a model never equals that of another body.
            h.write_u8(0);
            h.write(after);
        }
        None => h.write(body),
    }
    h.finish()
}

// === impl Layout ===

impl Layout {
    /// Whether these spans were taken from `body` (same buffer, same length).
    fn describes(&self, body: &[u8]) -> bool {
        self.body_addr == body.as_ptr().addr() && self.body_len == body.len()
    }
}
