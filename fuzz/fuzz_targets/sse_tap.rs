//! The SSE tap: `SseTap::push` / `observe` / `finish`, `estimate_cut_stream`.
//!
//! Input: selector byte (`& 3` picks the flavor, `& 4` strip mode), chunk
//! lengths, then the stream bytes.
//!
//! Checked, besides "no panic":
//! - the outcome and the forwarded bytes are the same whether the stream
//!   comes whole, one byte at a time, or in the input's chunks;
//! - without strip (or for a flavor that ignores it), the forwarded bytes
//!   are the input bytes, each chunk forwarded as it came;
//! - with strip, the forwarded bytes are the input with some bytes removed,
//!   and the outcome is the one the same stream gives without strip;
//! - `observe` learns what `push` learns;
//! - `estimate_cut_stream` never under-counts the reported output.
#![no_main]

use std::ops::Range;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tokenwarden_fuzz::{Input, bytewise, is_subsequence};
use tokenwarden_sidecar::meter::{Flavor, SseTap, TapOutcome, estimate_cut_stream};

const FLAVORS: [Flavor; 4] = [
    Flavor::OpenAiChat,
    Flavor::OpenAiResponses,
    Flavor::OpenAiEmbeddings,
    Flavor::Anthropic,
];

/// `TapOutcome::error_event` keeps at most 2 KiB of the event's bytes; a
/// lossy UTF-8 conversion may turn each into a 3-byte U+FFFD.
const MAX_ERROR_TEXT: usize = 3 * 2048;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let flavor = FLAVORS[usize::from(input.selector & 3)];
    let strip = input.selector & 4 != 0;
    let stream = Bytes::copy_from_slice(input.payload);
    let strips = strip && flavor == Flavor::OpenAiChat;

    let whole = run(flavor, strip, &stream, std::iter::once(0..stream.len()));
    if strips {
        assert!(
            is_subsequence(&whole.0, &stream),
            "strip mode added or reordered bytes"
        );
        let plain = run(flavor, false, &stream, std::iter::once(0..stream.len()));
        assert_eq!(whole.1, plain.1, "strip mode metered differently");
    } else {
        assert_eq!(whole.0, stream, "forwarded bytes differ from the input");
        assert_eq!(observe(flavor, &stream, input.chunks()), whole.1);
    }

    let byte_at_a_time = run(flavor, strip, &stream, bytewise(stream.len()));
    assert_eq!(
        byte_at_a_time, whole,
        "one-byte chunks differ from the whole"
    );
    let chunked = run(flavor, strip, &stream, input.chunks().into_iter());
    assert_eq!(
        chunked,
        whole,
        "chunks {:?} differ from the whole",
        input.chunks()
    );

    let outcome = &whole.1;
    if let Some(error) = &outcome.error_event {
        assert!(
            error.len() <= MAX_ERROR_TEXT,
            "error_event of {} bytes",
            error.len()
        );
    }
    for reserved in [0, 1000, u64::MAX] {
        let estimate = estimate_cut_stream(flavor, reserved, outcome);
        let reported = match flavor {
            Flavor::Anthropic => outcome.usage.or(outcome.start_usage),
            _ => outcome.usage,
        };
        if let Some(usage) = reported {
            assert!(estimate.output_tokens >= usage.output_tokens);
            assert_eq!(estimate.input_tokens, usage.input_tokens);
        } else {
            assert_eq!(estimate.input_tokens, reserved);
        }
        assert!(estimate.output_tokens >= outcome.output_text_bytes.div_ceil(4));
    }
});

/// Pushes the chunks; returns the forwarded bytes and the outcome.
fn run(
    flavor: Flavor,
    strip: bool,
    stream: &Bytes,
    chunks: impl Iterator<Item = Range<usize>>,
) -> (Vec<u8>, TapOutcome) {
    let mut tap = SseTap::new(flavor, strip);
    assert_eq!(tap.strips(), strip && flavor == Flavor::OpenAiChat);
    let mut out = Vec::new();
    for range in chunks {
        let chunk = stream.slice(range);
        let before = out.len();
        tap.push(chunk.clone(), &mut out);
        if !tap.strips() && !chunk.is_empty() {
            // Forwarded at once, as the same buffer.
            assert_eq!(out.len(), before + 1);
            assert_eq!(out[before].as_ptr(), chunk.as_ptr());
            assert_eq!(out[before].len(), chunk.len());
        }
        // The accessors answer at any point.
        let _ = (tap.usage_so_far(), tap.served_model(), tap.is_complete());
    }
    let outcome = tap.finish(&mut out);
    (out.concat(), outcome)
}

/// The outcome of a non-stripping tap fed through `observe`.
fn observe(flavor: Flavor, stream: &Bytes, chunks: Vec<Range<usize>>) -> TapOutcome {
    let mut tap = SseTap::new(flavor, false);
    for range in chunks {
        tap.observe(stream.slice(range));
    }
    let mut out = Vec::new();
    let outcome = tap.finish(&mut out);
    assert!(out.is_empty(), "an observing tap forwarded bytes");
    outcome
}
