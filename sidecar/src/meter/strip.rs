//! Byte-exact removal of one top-level member from a JSON object's text.
//!
//! Used to strip the `"usage"` member OpenAI adds to every chat chunk when
//! `stream_options.include_usage` is on, without re-serializing the chunk:
//! every other byte stays as the provider sent it.

use std::ops::Range;

use memchr::{memchr2, memchr3, memmem};

/// The byte range to delete from `json` (the text of a JSON object) so that
/// its top-level member `key` disappears and the rest stays valid JSON:
///
/// - not the first member: from the end of the previous member's value to the
///   end of this member's value (`,"usage":null`);
/// - the first of several: from its key to the next key (`"usage":null,`);
/// - the only member: the member itself (`{"usage":null}` → `{}`).
///
/// `None` when the key is not a top-level member, or the text is not a
/// well-formed object as far as the scan goes. `key` is compared with the raw
/// (unescaped) key bytes.
///
/// `json` must be valid JSON (the caller has parsed it); on anything else the
/// result is unspecified, but this never panics.
pub(super) fn member_removal_span(json: &[u8], key: &[u8]) -> Option<Range<usize>> {
    from_the_end(json, key).or_else(|| scan(json, key))
}

/// The fast path: OpenAI puts `usage` near the end of a chunk, so take the
/// last occurrence of the quoted key and prove it is a top-level member by
/// parsing from it to the end of the text (the rest of its object must close
/// the text), instead of scanning the whole object.
///
/// Sound for valid JSON: an unescaped `"` followed by `key"` can only start a
/// string; a string followed by `:` is a key; and the object holding the key
/// is the top-level one iff its closing brace ends the text.
fn from_the_end(json: &[u8], key: &[u8]) -> Option<Range<usize>> {
    let at = memmem::rfind(json, key)?;
    let key_start = at.checked_sub(1)?;
    let key_end = at + key.len() + 1;
    if json.get(key_start) != Some(&b'"') || json.get(key_end - 1) != Some(&b'"') {
        return None;
    }
    let backslashes = json
        .get(..key_start)?
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    if backslashes % 2 == 1 {
        return None; // an escaped quote inside some string
    }
    let colon = skip_ws(json, key_end);
    if json.get(colon) != Some(&b':') {
        return None;
    }
    let value_end = skip_value(json, skip_ws(json, colon + 1))?;
    let after = skip_ws(json, value_end);
    let next = *json.get(after)?;
    // The remaining members of the same object, then its closing brace, then nothing.
    let mut j = after;
    while json.get(j) == Some(&b',') {
        j = skip_ws(json, j + 1);
        if json.get(j) != Some(&b'"') {
            return None;
        }
        j = skip_ws(json, skip_string(json, j)?);
        if json.get(j) != Some(&b':') {
            return None;
        }
        j = skip_ws(json, skip_value(json, skip_ws(json, j + 1))?);
    }
    if json.get(j) != Some(&b'}') || skip_ws(json, j + 1) != json.len() {
        return None;
    }
    let before = json.get(..key_start)?;
    let prev = before.iter().rposition(|b| !is_ws(*b))?;
    match *before.get(prev)? {
        b',' => {
            let prev_value_end = before.get(..prev)?.iter().rposition(|b| !is_ws(*b))? + 1;
            Some(prev_value_end..value_end)
        }
        b'{' if next == b',' => Some(key_start..skip_ws(json, after + 1)),
        b'{' => Some(key_start..value_end),
        _ => None,
    }
}

/// The general case: walk the top-level members from the start.
fn scan(json: &[u8], key: &[u8]) -> Option<Range<usize>> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut prev_value_end = None;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None; // `}` (key not found) or malformed
        }
        let key_start = i;
        let key_end = skip_string(json, i)?;
        let name = json.get(key_start + 1..key_end - 1)?;
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        let value_end = skip_value(json, i)?;
        i = skip_ws(json, value_end);
        let next = *json.get(i)?;
        if name == key {
            return Some(match prev_value_end {
                Some(prev) => prev..value_end,
                None if next == b',' => key_start..skip_ws(json, i + 1),
                None => key_start..value_end,
            });
        }
        if next != b',' {
            return None;
        }
        prev_value_end = Some(value_end);
        i += 1;
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(|&b| is_ws(b)) {
        i += 1;
    }
    i
}

/// `json[i]` is the opening quote; returns the index just past the closing one.
fn skip_string(json: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let k = j + memchr2(b'"', b'\\', json.get(j..)?)?;
        if json.get(k) == Some(&b'"') {
            return Some(k + 1);
        }
        j = k + 2; // a backslash escapes the next byte (`\"`, `\\`, `\u…`)
    }
}

/// Returns the index just past the JSON value starting at `json[i]`.
fn skip_value(json: &[u8], i: usize) -> Option<usize> {
    match *json.get(i)? {
        b'"' => skip_string(json, i),
        open @ (b'{' | b'[') => {
            // Only this container's own brackets need counting: in valid JSON
            // the other kind is balanced inside it, and strings are skipped.
            let close = if open == b'{' { b'}' } else { b']' };
            let mut depth = 0usize;
            let mut j = i;
            loop {
                j += memchr3(b'"', open, close, json.get(j..)?)?;
                match *json.get(j)? {
                    b'"' => j = skip_string(json, j)?,
                    b if b == open => {
                        depth += 1;
                        j += 1;
                    }
                    _ => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                }
            }
        }
        _ => {
            let mut j = i;
            while let Some(&b) = json.get(j) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::{member_removal_span, scan};

    fn strip(json: &str) -> Option<String> {
        let span = member_removal_span(json.as_bytes(), b"usage")?;
        let mut s = json.to_owned();
        s.replace_range(span, "");
        Some(s)
    }

    #[test]
    fn removes_last_middle_first_and_only_member() {
        assert_eq!(strip(r#"{"a":1,"usage":null}"#).unwrap(), r#"{"a":1}"#);
        assert_eq!(
            strip(r#"{"a":1,"usage":null,"b":2}"#).unwrap(),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(strip(r#"{"usage":null,"b":2}"#).unwrap(), r#"{"b":2}"#);
        assert_eq!(strip(r#"{"usage":null}"#).unwrap(), r#"{}"#);
        assert_eq!(
            strip(r#"{"a":[1,{"x":"]}"}],"usage":{"p":1}}"#).unwrap(),
            r#"{"a":[1,{"x":"]}"}]}"#
        );
    }

    #[test]
    fn keeps_whitespace_layout_valid() {
        assert_eq!(
            strip(r#"{ "a": 1 , "usage" : null }"#).unwrap(),
            r#"{ "a": 1 }"#
        );
        assert_eq!(
            strip(r#"{ "usage": null, "b": 2}"#).unwrap(),
            r#"{ "b": 2}"#
        );
        assert_eq!(strip(" {\n\"usage\":null\n}").unwrap(), " {\n\n}");
    }

    #[test]
    fn only_top_level_and_exact_key() {
        assert_eq!(strip(r#"{"x":{"usage":null},"y":"\"usage\":null"}"#), None);
        assert_eq!(strip(r#"{"usages":null,"TokenCounts":1}"#), None);
        assert_eq!(
            strip(r#"{"a\"usage":null,"usage":true}"#).unwrap(),
            r#"{"a\"usage":null}"#
        );
    }

    #[test]
    fn malformed_is_none() {
        for bad in [
            "",
            "[]",
            "null",
            "{",
            r#"{"usage""#,
            r#"{"usage":"#,
            r#"{"a":1"#,
            r#"{"a" 1}"#,
        ] {
            assert_eq!(member_removal_span(bad.as_bytes(), b"usage"), None, "{bad}");
        }
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "usage", "a", "usage_x", "xusage", "b\"usage", "us\\age", "u",
        ])
        .prop_map(str::to_owned)
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            prop::sample::select(vec!["", "usage", "\"usage\":null}", "\\", "é\n"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec((key(), value()), 0..6).prop_map(|kv| kv.into_iter().collect())
    }

    /// `n` proptest cases (or `PROPTEST_CASES` when set, for long soak runs);
    /// failing seeds are kept beside this file (`<file>.proptest-regressions`).
    fn config(n: u32) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok());
        ProptestConfig {
            cases: cases.unwrap_or(n),
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// On valid JSON the fast path agrees with the full scan, and removing
        /// the span removes exactly the top-level member.
        #[test]
        fn removal_is_exact(object in object(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            let span = member_removal_span(text.as_bytes(), b"usage");
            prop_assert_eq!(&span, &scan(text.as_bytes(), b"usage"));
            let mut expected = object.clone();
            let had = expected.shift_remove("usage").is_some();
            prop_assert_eq!(span.is_some(), had);
            if let Some(span) = span {
                let mut stripped = text.clone();
                stripped.replace_range(span, "");
                let parsed: Map<String, Value> = serde_json::from_str(&stripped).unwrap();
                prop_assert_eq!(parsed, expected);
            }
        }

        #[test]
        fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = member_removal_span(&bytes, b"usage");
        }
    }
}
