//! The JSON tap: `JsonTap`, against the whole-body `from_json`;
//! `estimate_json`.
//!
//! Input: selector byte (`& 3` picks the flavor), chunk lengths, then the
//! response body.
//!
//! Checked, besides "no panic":
//! - the outcome is the same whether the body comes whole, one byte at a
//!   time, or in the input's chunks;
//! - `total_bytes` is the body's length and `text_bytes <= total_bytes`;
//! - whenever `from_json` reads the body (valid JSON: an object with or
//!   without a usage, or another value), the tap's `metered` is what
//!   `from_json` read, and a body with a usage is `complete`;
//! - a JSON value that is not an object carries no usage (only with
//!   `FUZZ_CHECK_KNOWN=1`: see the README's open findings);
//! - `estimate_json` counts a quarter token per text byte.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use tokenwarden_fuzz::{Input, bytewise, check_known};
use tokenwarden_sidecar::meter::{Flavor, JsonOutcome, JsonTap, estimate_json, from_json};

const FLAVORS: [Flavor; 4] = [
    Flavor::OpenAiChat,
    Flavor::OpenAiResponses,
    Flavor::OpenAiEmbeddings,
    Flavor::Anthropic,
];

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let flavor = FLAVORS[usize::from(input.selector & 3)];
    let body = input.payload;

    let whole = run(flavor, body, std::iter::once(0..body.len()));
    assert_eq!(whole.total_bytes, body.len() as u64);
    assert!(whole.text_bytes <= whole.total_bytes);
    let byte_at_a_time = run(flavor, body, bytewise(body.len()));
    assert_eq!(
        byte_at_a_time, whole,
        "one-byte chunks differ from the whole"
    );
    let chunked = run(flavor, body, input.chunks().into_iter());
    assert_eq!(
        chunked,
        whole,
        "chunks {:?} differ from the whole",
        input.chunks()
    );

    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match from_json(flavor, body) {
        // A JSON value that is not an object carries no usage (from_json's
        // docs); from_json reads an array as a positional response: an
        // open finding, checked with FUZZ_CHECK_KNOWN=1.
        Ok(Some(metered)) if !object => assert!(
            !check_known(),
            "from_json read usage from a JSON value that is not an object: {metered:?}"
        ),
        Ok(metered) => {
            assert_eq!(whole.metered, metered, "the tap and from_json disagree");
            if metered.is_some() {
                assert!(whole.complete, "a body from_json read is not complete");
            }
        }
        Err(_) => {}
    }

    for prompt in [0, 7, u64::MAX] {
        let estimate = estimate_json(prompt, &whole);
        assert_eq!(estimate.input_tokens, prompt);
        assert_eq!(estimate.output_tokens, whole.text_bytes.div_ceil(4));
    }
});

/// Pushes the chunks, checking the running counters; returns the outcome.
fn run(flavor: Flavor, body: &[u8], chunks: impl Iterator<Item = Range<usize>>) -> JsonOutcome {
    let mut tap = JsonTap::new();
    let mut seen = 0u64;
    let mut was_complete = false;
    for range in chunks {
        seen += range.len() as u64;
        tap.push(&body[range]);
        assert_eq!(tap.total_bytes(), seen);
        // Once the top-level object closed, it stays closed.
        assert!(!was_complete || tap.complete());
        was_complete = tap.complete();
    }
    let outcome = tap.finish(flavor);
    assert_eq!(outcome.complete, tap.complete());
    // `finish` does not consume: asking twice gives the same answer.
    assert_eq!(tap.finish(flavor), outcome);
    outcome
}
