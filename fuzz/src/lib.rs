//! What the fuzz targets share: how a fuzz input is laid out.
//!
//! Every target reads its input the same way, so the seeds stay readable
//! (two header bytes, then a real body or stream):
//!
//! ```text
//! byte 0         selector: which endpoint / flavor / coding (and flags)
//! byte 1         k: how many chunk-length bytes follow (taken modulo 32)
//! bytes 2..2+k   chunk lengths, 0..=255 each, used in a cycle
//! the rest       the payload: a request body, a response body or stream
//! ```
//!
//! The streaming targets feed the payload whole, one byte at a time, and in
//! the chunks the lengths give (a 0 is an empty chunk), and check that the
//! three runs agree.

use std::ops::Range;
use std::sync::OnceLock;

/// Whether to check the invariants whose violations are known, reported
/// and not yet fixed (`FUZZ_CHECK_KNOWN=1`; see the README's open
/// findings). Off, the targets step over those inputs, so that a run keeps
/// looking for new bugs instead of finding the known ones again.
pub fn check_known() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_CHECK_KNOWN").is_some_and(|v| v == "1"))
}

/// The most chunk-length bytes an input carries.
pub const MAX_LENGTHS: usize = 32;

/// A fuzz input, split into its parts (see the crate docs).
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Picks the endpoint, flavor or coding, and flags.
    pub selector: u8,
    /// Chunk lengths, used in a cycle.
    pub lengths: &'a [u8],
    /// The bytes under test.
    pub payload: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `data`; `None` when it is too short to have a header.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&selector, rest) = data.split_first()?;
        let (&k, rest) = rest.split_first()?;
        let k = (usize::from(k) % MAX_LENGTHS).min(rest.len());
        let (lengths, payload) = rest.split_at(k);
        Some(Input {
            selector,
            lengths,
            payload,
        })
    }

    /// The chunks of the payload as the lengths cut it: consecutive ranges
    /// covering it exactly, in order (empty ranges included). Without
    /// lengths, or with only zeros, the whole payload after those empty
    /// chunks.
    pub fn chunks(&self) -> Vec<Range<usize>> {
        chunk_ranges(self.payload.len(), self.lengths)
    }
}

/// See [`Input::chunks`].
pub fn chunk_ranges(len: usize, lengths: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    if lengths.iter().all(|&l| l == 0) {
        out.extend(lengths.iter().map(|_| 0..0));
        out.push(0..len);
        return out;
    }
    let mut at = 0;
    for &l in lengths.iter().cycle() {
        if at >= len {
            break;
        }
        let end = (at + usize::from(l)).min(len);
        out.push(at..end);
        at = end;
    }
    if out.is_empty() {
        out.push(0..0);
    }
    out
}

/// One-byte chunks of a payload of `len` bytes.
pub fn bytewise(len: usize) -> impl Iterator<Item = Range<usize>> {
    (0..len).map(|i| i..i + 1)
}

/// Whether `small` is `big` with some bytes removed (order kept).
pub fn is_subsequence(small: &[u8], big: &[u8]) -> bool {
    let mut rest = big.iter();
    small.iter().all(|b| rest.any(|c| c == b))
}

/// The header of a seed: selector, then no chunk lengths (or these).
pub fn seed(selector: u8, lengths: &[u8], payload: &[u8]) -> Vec<u8> {
    assert!(lengths.len() < MAX_LENGTHS);
    let mut out = Vec::with_capacity(2 + lengths.len() + payload.len());
    out.push(selector);
    out.push(u8::try_from(lengths.len()).unwrap_or(0));
    out.extend_from_slice(lengths);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_payload_in_order() {
        for lengths in [&[][..], &[0], &[0, 0], &[1], &[3, 0, 5], &[255]] {
            for len in [0, 1, 7, 300] {
                let chunks = chunk_ranges(len, lengths);
                let mut at = 0;
                for c in &chunks {
                    assert_eq!(c.start, at);
                    at = c.end;
                }
                assert_eq!(at, len, "{lengths:?} {len}");
            }
        }
    }

    #[test]
    fn header_round_trips() {
        let data = seed(5, &[1, 2], b"body");
        let input = Input::parse(&data).unwrap();
        assert_eq!(input.selector, 5);
        assert_eq!(input.lengths, &[1, 2]);
        assert_eq!(input.payload, b"body");
    }
}
