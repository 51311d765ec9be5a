//! Content codings: `Coding::decoder`, `Decoder::push`, `decode_all`.
//!
//! Input: selector byte (`& 3` picks gzip, deflate, brotli or zstd), chunk
//! lengths, then the compressed (or garbage) body.
//!
//! Checked, besides "no panic":
//! - the output is bounded per piece: the decoder is fed 1 KiB per step
//!   and hands on each step's output at once, so no piece may be larger
//!   than 1 KiB times the coding's worst ratio (`MAX_PIECE`; brotli only
//!   with `FUZZ_CHECK_KNOWN=1`, see the README);
//! - the result does not depend on how the body was split: whole, in the
//!   input's chunks, or (for small bodies) one byte at a time: the same
//!   failure, and the same output (after a failure: one a prefix of the
//!   other);
//! - `decode_all` gives the same answer;
//! - after a failure nothing more is produced.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use tokenwarden_fuzz::{Input, bytewise, check_known};
use tokenwarden_sidecar::meter::{Coding, decode_all};

const CODINGS: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

/// The largest piece one `push` step (1 KiB of input) may hand on.
///
/// Deflate (gzip, zlib) expands at most 1032:1: ~1 MiB per step. A zstd
/// RLE block turns 4 bytes into 128 KiB: 32 MiB per step. This is the
/// bound the sidecar's "bounded: a highly compressed body never sits
/// decoded in memory" promise is checked against. Brotli breaks it (one
/// step can hand on 1 GiB: see the README's open findings), so for brotli
/// it is checked only with `FUZZ_CHECK_KNOWN=1`.
const MAX_PIECE: usize = 40 << 20;

/// Bodies larger than this are not also fed one byte at a time (slow).
const BYTEWISE_UP_TO: usize = 2048;

/// Output kept for comparing failed runs (the rest is only hashed).
const KEEP: usize = 16 << 20;

/// Output after which a run stops feeding (a bomb: slow, and the split
/// runs are then skipped).
const STOP: u64 = 64 << 20;

/// The decoder's step (`decode.rs`'s `STEP`): the runs feed it at most
/// this much per `push`, which is what it does inside `push` anyway, so
/// that a run can stop between steps.
const STEP: usize = 1024;

/// What a run decoded: its length and hash, the start of it, and whether
/// the decoder failed.
#[derive(PartialEq, Eq)]
struct Decoded {
    len: u64,
    fnv: u64,
    head: Vec<u8>,
    failed: bool,
    /// Stopped after `STOP` bytes of output.
    stopped: bool,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the bytes (megabytes): where the heads first differ says more.
        write!(
            f,
            "{} bytes (fnv {:016x}){}{}",
            self.len,
            self.fnv,
            if self.failed { ", failed" } else { "" },
            if self.stopped { ", stopped" } else { "" }
        )
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let coding = &CODINGS[usize::from(input.selector & 3)];
    let body = input.payload;
    if *coding == Coding::Brotli && !check_known() && brotli_bomb(body) {
        // The known open finding: do not spend seconds decoding a GiB.
        return;
    }

    let whole = run(coding, body, std::iter::once(0..body.len()));
    if whole.stopped {
        return;
    }
    if whole.len <= KEEP as u64 {
        assert_eq!(
            decode_all(coding, body),
            (!whole.failed).then(|| whole.head.clone()),
            "decode_all differs from one push"
        );
    }
    // brotli-decompressor's writer hands on at most 4 KiB per write once
    // its input is used up, holding the rest back until more input comes
    // (an open finding): without FUZZ_CHECK_KNOWN=1, brotli runs are only
    // checked to agree on a common prefix.
    let exact = *coding != Coding::Brotli || check_known();
    let chunked = run(coding, body, input.chunks().into_iter());
    same(&chunked, &whole, exact, "the input's chunks");
    if body.len() <= BYTEWISE_UP_TO {
        let byte_at_a_time = run(coding, body, bytewise(body.len()));
        same(&byte_at_a_time, &whole, exact, "one-byte chunks");
    }
});

/// Two runs over the same body: the same failure, the same output when
/// it decoded; after a failure, how much of the output before the bad
/// byte was handed on may depend on the steps, but one output is a
/// prefix of the other (also all that is checked when not `exact`).
fn same(split: &Decoded, whole: &Decoded, exact: bool, how: &str) {
    assert!(
        !split.stopped,
        "{how}: {} bytes of output, the whole run {}",
        split.len, whole.len
    );
    assert_eq!(split.failed, whole.failed, "{how}: failure differs");
    if whole.failed || !exact {
        let n = split.head.len().min(whole.head.len());
        let at = split
            .head
            .iter()
            .zip(&whole.head)
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            at >= n,
            "{how}: outputs diverge at byte {at}: {split:?} vs the whole run's {whole:?}"
        );
    } else if split != whole {
        let at = split
            .head
            .iter()
            .zip(&whole.head)
            .take_while(|(a, b)| a == b)
            .count();
        panic!(
            "{how}: output differs: {split:?} vs the whole run's {whole:?}; first difference at byte {at}"
        );
    }
}

/// Whether a brotli body decodes to more than `STOP` bytes (read through
/// a bounded reader, which stops there).
fn brotli_bomb(body: &[u8]) -> bool {
    use std::io::Read as _;
    let mut reader = brotli_decompressor::Decompressor::new(body, 4096);
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    while total <= STOP {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => total += n as u64,
        }
    }
    true
}

fn run(coding: &Coding, body: &[u8], chunks: impl Iterator<Item = Range<usize>>) -> Decoded {
    let Some(mut decoder) = coding.decoder() else {
        panic!("no decoder for {coding:?}");
    };
    let check_piece = *coding != Coding::Brotli || check_known();
    let mut out = Decoded {
        len: 0,
        fnv: 0xcbf2_9ce4_8422_2325,
        head: Vec::new(),
        failed: false,
        stopped: false,
    };
    let steps = chunks.flat_map(|r| {
        let end = r.end;
        (r.start..end.max(r.start + 1))
            .step_by(STEP)
            .map(move |at| at..(at + STEP).min(end))
    });
    for range in steps {
        if out.len > STOP {
            out.stopped = true;
            break;
        }
        let failed_before = decoder.failed();
        let mut produced = false;
        decoder.push(&body[range], |piece| {
            assert!(
                !check_piece || piece.len() <= MAX_PIECE,
                "{coding:?}: one step handed on {} bytes",
                piece.len()
            );
            produced = true;
            out.len += piece.len() as u64;
            // FNV-1a, a byte at a time: the same however the output is cut.
            for &b in piece {
                out.fnv = (out.fnv ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            let room = KEEP.saturating_sub(out.head.len());
            out.head.extend_from_slice(&piece[..piece.len().min(room)]);
        });
        assert!(!(failed_before && produced), "output after a failure");
    }
    out.failed = decoder.failed();
    out.stopped |= out.len > STOP;
    out
}
