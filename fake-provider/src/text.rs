//! Deterministic output text, stream splitting, embeddings and small encoders.

use std::borrow::Cow;

use bytes::Bytes;

/// Words precomputed at start at most; longer texts are built per request.
pub(crate) const PRECOMPUTED_WORDS: u64 = 100_000;

/// The words `tok0 tok1 …`, precomputed for the first `count` words.
#[derive(Debug)]
pub(crate) struct Words {
    text: String,
    /// `ends[i]` = byte offset just after word `i`.
    ends: Vec<usize>,
}

impl Words {
    pub(crate) fn new(count: u64) -> Words {
        let mut text = String::new();
        let mut ends = Vec::new();
        for i in 0..count {
            push_word(&mut text, i);
            ends.push(text.len());
        }
        Words { text, ends }
    }

    /// The text of the first `n` words: borrowed when precomputed, else the precomputed text
    /// extended with the missing words (up to 10 bytes per word: 1M words are 9.9 MB).
    pub(crate) fn text(&self, n: u64) -> Cow<'_, str> {
        let have = self.ends.len();
        match usize::try_from(n) {
            Ok(0) => Cow::Borrowed(""),
            Ok(n) if n <= have => Cow::Borrowed(&self.text[..self.ends[n - 1]]),
            _ => {
                let extra = usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(have);
                let mut text =
                    String::with_capacity(self.text.len().saturating_add(extra.saturating_mul(10)));
                text.push_str(&self.text);
                for i in have as u64..n {
                    push_word(&mut text, i);
                }
                Cow::Owned(text)
            }
        }
    }
}

/// Appends word `i` (`tok{i}`, after a space unless it is the first).
fn push_word(text: &mut String, i: u64) {
    use std::fmt::Write;
    if i > 0 {
        text.push(' ');
    }
    // Writing into a String cannot fail.
    let _ = write!(text, "tok{i}");
}

/// Splits `text` (whose words are separated by single spaces) into at most `chunks` deltas of
/// consecutive words; the deltas concatenate back to `text`. No empty deltas.
pub(crate) fn split_deltas(text: &str, chunks: usize) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    // Offsets where words start (after the first).
    let starts: Vec<usize> = text.match_indices(' ').map(|(i, _)| i).collect();
    let words = starts.len() + 1;
    let chunks = chunks.clamp(1, words);
    let mut out = Vec::with_capacity(chunks);
    let mut from = 0usize;
    for c in 1..=chunks {
        let word_end = c * words / chunks; // exclusive word index
        let to = if word_end >= words {
            text.len()
        } else {
            starts[word_end - 1]
        };
        out.push(&text[from..to]);
        from = to;
    }
    out
}

/// `ceil(bytes / 4)`: the fake's token count for a request body.
pub(crate) fn tokens_for_bytes(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// A JSON string literal for `s` (with quotes).
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// `event: NAME\ndata: JSON\n\n`.
pub(crate) fn sse_event(name: &str, data: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `data: JSON\n\n` from an already-serialized JSON text.
pub(crate) fn sse_data(json: &str) -> Bytes {
    let mut out = String::with_capacity(json.len() + 8);
    out.push_str("data: ");
    out.push_str(json);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// A deterministic filler like OpenAI's `obfuscation` field (which pads deltas to hide their length).
pub(crate) fn obfuscation(seed: usize) -> &'static str {
    const PADS: [&str; 4] = ["aZ3k", "Qw9", "x", "Lm7Tq2"];
    PADS[seed % PADS.len()]
}

/// A deterministic, normalized, bag-of-words embedding of `text` with `dims` dimensions:
/// identical texts give identical vectors, texts sharing words give similar ones.
pub(crate) fn embed(text: &str, dims: usize) -> Vec<f32> {
    let dims = dims.max(1);
    let mut v = vec![0f32; dims];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = fnv1a(word.to_lowercase().as_bytes());
        let idx = (h % dims as u64) as usize;
        let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
        v[idx] += sign;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        // No words, or words that cancelled out: a fixed unit vector.
        v[0] = 1.0;
        return v;
    }
    for x in &mut v {
        *x /= norm;
    }
    v
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Standard base64 (with padding) of the little-endian f32 bytes, as OpenAI returns for
/// `encoding_format: "base64"`.
pub(crate) fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64(&bytes)
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).copied().map_or(0, u32::from);
        let b2 = chunk.get(2).copied().map_or(0, u32::from);
        let n = (b0 << 16) | (b1 << 8) | b2;
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_deltas() {
        let w = Words::new(5);
        assert_eq!(w.text(0), "");
        assert_eq!(w.text(3), "tok0 tok1 tok2");
        assert_eq!(w.text(7), "tok0 tok1 tok2 tok3 tok4 tok5 tok6");
        let text = w.text(5);
        let d = split_deltas(&text, 2);
        assert_eq!(d, vec!["tok0 tok1", " tok2 tok3 tok4"]);
        assert_eq!(split_deltas(&text, 8).len(), 5);
        assert_eq!(split_deltas(&text, 8).concat(), text);
        assert_eq!(split_deltas(&text, 1), vec![&*text]);
        assert!(split_deltas("", 3).is_empty());
    }

    #[test]
    fn texts_beyond_the_precomputed_words() {
        let w = Words::new(3);
        let long = w.text(250_000);
        assert!(long.starts_with("tok0 tok1 tok2 tok3 "));
        assert!(long.ends_with(" tok249998 tok249999"));
        assert_eq!(long.split(' ').count(), 250_000);
        assert_eq!(long, Words::new(250_000).text(250_000));
        let empty = Words::new(0);
        assert_eq!(empty.text(2), "tok0 tok1");
    }

    #[test]
    fn token_count_is_ceil_quarter() {
        assert_eq!(tokens_for_bytes(0), 0);
        assert_eq!(tokens_for_bytes(1), 1);
        assert_eq!(tokens_for_bytes(4), 1);
        assert_eq!(tokens_for_bytes(5), 2);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_are_deterministic_and_normalized() {
        let a = embed("hello world", 8);
        assert_eq!(a, embed("Hello, world!", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(embed("", 4), vec![1.0, 0.0, 0.0, 0.0]);
    }
}
