//! Byte-level primitives of the prefix-stability monitor: a fast
//! non-cryptographic hash, content-defined byte runs, the digit/hex-masked
//! and whitespace-free hashes of a block, and the detection of volatile
//! runs (timestamps, dates, UUIDs, long numbers). Only hashes, lengths,
//! offsets and kinds leave this module, never bytes.

use crate::usage::cache::ChangeKind;

/// Multiplier of the mixing step (the golden-ratio constant).
const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Smallest content-defined run, in bytes (except a block's last run).
/// At least 8: a run's end is decided by the 8 bytes before it.
pub(crate) const MIN_RUN: usize = 64;
/// Largest run, in bytes.
pub(crate) const MAX_RUN: usize = 1024;
/// A volatile run found in a block: where it starts and what it looks like,
/// with hashes of the bytes between its run's start and it (`pre`) and of
/// the run itself (`val`), so the first changed one can be told without
/// keeping the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    /// Index of the block in the fingerprint.
    pub block: u32,
    /// Byte offset inside the block.
    pub offset: u32,
    /// Hash of the block's bytes from the start of the run holding the
    /// pattern up to the pattern.
    pub pre: u32,
    /// Hash of the pattern's bytes.
    pub val: u32,
    /// Timestamp, Date, Uuid or Number.
    pub kind: ChangeKind,
}

/// The hashes of one block besides its runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Masks {
    /// Hash with digit runs and hex-id runs masked.
    pub masked: u64,
    /// Hash with each run of ASCII whitespace (and `\n`, `\t`, `\r`
    /// escapes) made one space, or none next to a quote or a block end.
    pub ws: u64,
}

/// A streaming hash: eight bytes at a time, multiply-rotate mixing (the
/// FxHash step) and a murmur3 finalizer so every output bit depends on
/// every input bit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hasher {
    h: u64,
    acc: u64,
    n: u32,
    len: u64,
}

// === impl Hasher ===

impl Hasher {
    /// A hasher with the given seed (different streams use different seeds).
    pub(crate) const fn new(seed: u64) -> Hasher {
        Hasher {
            h: seed,
            acc: 0,
            n: 0,
            len: 0,
        }
    }

    #[inline]
    fn mix(&mut self, w: u64) {
        self.h = (self.h.rotate_left(26) ^ w).wrapping_mul(K);
    }

    /// Feed one byte.
    #[inline]
    pub(crate) fn write_u8(&mut self, b: u8) {
        self.acc |= u64::from(b) << (8 * self.n);
        self.n += 1;
        self.len += 1;
        if self.n == 8 {
            let w = self.acc;
            self.mix(w);
            self.acc = 0;
            self.n = 0;
        }
    }

    /// Feed bytes.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        while self.n != 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.write_u8(b);
            bytes = rest;
        }
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        self.len += (bytes.len() - chunks.remainder().len()) as u64;
        for &b in chunks.remainder() {
            self.write_u8(b);
        }
    }

    /// Feed `src[s..e]`, reading whole words where it can: a short span
    /// costs one load, not one step per byte.
    #[inline(always)]
    pub(crate) fn write_span(&mut self, src: &[u8], mut s: usize, e: usize) {
        let mut len = e.saturating_sub(s);
        self.len += len as u64;
        if self.n != 0 && len > 0 {
            let take = (8 - self.n as usize).min(len);
            self.acc |= load(src, s, take) << (8 * self.n);
            self.n += take as u32;
            s += take;
            len -= take;
            if self.n < 8 {
                return;
            }
            let w = self.acc;
            self.mix(w);
            self.acc = 0;
            self.n = 0;
        }
        while len >= 8 {
            self.mix(load(src, s, 8));
            s += 8;
            len -= 8;
        }
        if len > 0 {
            self.acc = load(src, s, len);
            self.n = len as u32;
        }
    }

    /// The hash of everything fed.
    pub(crate) fn finish(&self) -> u64 {
        let mut h = self.h;
        if self.n != 0 {
            h = (h.rotate_left(26) ^ self.acc).wrapping_mul(K);
        }
        fmix(h ^ self.len)
    }
}

/// `len` (1 to 8) bytes of `src` from `at`, little-endian.
#[inline]
fn load(src: &[u8], at: usize, len: usize) -> u64 {
    if let Some(w) = src.get(at..at + 8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let w = u64::from_le_bytes(a);
        if len >= 8 {
            w
        } else {
            w & ((1u64 << (8 * len)) - 1)
        }
    } else {
        let mut w = 0u64;
        for (k, &b) in src[at..at + len].iter().enumerate() {
            w |= u64::from(b) << (8 * k);
        }
        w
    }
}

/// The hash of a byte string.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h = Hasher::new(0);
    h.write(bytes);
    h.finish()
}

/// An order-dependent combination of two hashes.
pub(crate) fn combine(a: u64, b: u64) -> u64 {
    fmix(a.rotate_left(17) ^ b.wrapping_mul(K))
}

/// The murmur3 64-bit finalizer.
const fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Split a block into content-defined runs, pushing each run's end offset.
///
/// A run ends after a position whose last 8 bytes hash (multiplicatively)
/// to a value with its top 8 bits zero — one position in 256 — at least
/// [`MIN_RUN`] and at most [`MAX_RUN`] bytes after the previous end. The
/// decision depends only on those 8 bytes, so an insertion or a length
/// change early in a block shifts only the run it is in: later runs keep
/// their hashes. Each position is tested on its own (no rolling state), and
/// the first `MIN_RUN` positions of a run are not tested at all.
pub(crate) fn run_ends(bytes: &[u8], ends: &mut Vec<u32>) {
    let n = bytes.len();
    let mut start = 0usize;
    while n - start > MAX_RUN {
        let limit = start + MAX_RUN;
        let mut end = limit;
        let mut i = start + MIN_RUN;
        while i <= limit {
            if is_anchor(bytes, i) {
                end = i;
                break;
            }
            i += 1;
        }
        ends.push(end as u32);
        start = end;
    }
    // The tail (at most MAX_RUN bytes) may still hold an anchor.
    while n - start > MIN_RUN {
        let Some(end) = (start + MIN_RUN..n).find(|&i| is_anchor(bytes, i)) else {
            break;
        };
        ends.push(end as u32);
        start = end;
    }
    if start < n || n == 0 {
        ends.push(n as u32);
    }
}

/// Whether a run may end at `i` (after `bytes[i - 8..i]`); `i >= 8`.
#[inline(always)]
fn is_anchor(bytes: &[u8], i: usize) -> bool {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i - 8..i]);
    (u64::from_le_bytes(w).wrapping_mul(K) >> 56) == 0
}

const fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where patterns go while a block is scanned.
pub(crate) struct PatternSink<'a> {
    /// The fingerprint's patterns.
    pub out: &'a mut Vec<Pattern>,
    /// At most this many in `out`.
    pub cap: usize,
    /// Index of the block being scanned.
    pub block: u32,
    /// The block's run ends (from [`run_ends`]).
    pub ends: &'a [u32],
}

// === impl PatternSink ===

impl PatternSink<'_> {
    /// Record the pattern starting at `i`, if any; `run` is the index of
    /// the run holding the last one (patterns come in order). Returns where
    /// the pattern ends.
    fn note(&mut self, bytes: &[u8], i: usize, run: &mut usize) -> Option<usize> {
        let (at, len, kind) = pattern_at(bytes, i)?;
        while *run + 1 < self.ends.len() && self.ends[*run] as usize <= at {
            *run += 1;
        }
        let run_start = match run.checked_sub(1) {
            Some(r) => self.ends[r] as usize,
            None => 0,
        };
        let pre_from = run_start.min(at);
        self.out.push(Pattern {
            block: self.block,
            offset: at as u32,
            pre: hash(&bytes[pre_from..at]) as u32,
            val: hash(&bytes[at..at + len]) as u32,
            kind,
        });
        Some(at + len)
    }
}

/// One pass over a block: its masked and whitespace-free hashes, and its
/// volatile patterns into `sink`.
///
/// Masking works on tokens (maximal runs of ASCII letters, digits and
/// `-`): a token of at least 8 characters made only of hex digits and `-`
/// with at least one digit (a UUID, a hex id, a long number, a
/// `2026-12-06` date) becomes `0`; in any other token each run of digits
/// becomes `0`. So two blocks that differ only in such values (even of
/// other lengths, `9:05` against `10:05`) have equal masked hashes.
pub(crate) fn scan_block(bytes: &[u8], sink: &mut PatternSink<'_>) -> Masks {
    // Both streams are the block's bytes with a few changes, so each is fed
    // the unchanged spans between its changes: the masked stream changes
    // only at tokens holding a digit, the whitespace one only where
    // whitespace is not a single space between words.
    let mut mh = Hasher::new(1);
    let mut wh = Hasher::new(2);
    let (mut m_from, mut w_from) = (0usize, 0usize);
    let n = bytes.len();
    let mut i = 0usize;
    let mut pattern_until = 0usize;
    let mut run = 0usize;
    loop {
        // Most bytes change neither stream: skip them in a tight loop.
        while i < n && PLAIN[usize::from(bytes[i])] {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else { break };
        match CLASS[usize::from(b)] {
            WS | BACKSLASH => {
                let j = ws_run_end(bytes, i);
                // A run of whitespace is one space, none next to a quote
                // (the ends of a JSON string) or at the ends of the block;
                // only runs that differ from that change the stream.
                let edge = i == 0 || j == n || bytes[i - 1] == b'"' || bytes[j] == b'"';
                let single = j == i + 1 && b == b' ';
                if j > i && (edge || !single) {
                    wh.write_span(bytes, w_from, i);
                    if !edge {
                        wh.write_u8(b' ');
                    }
                    w_from = j;
                }
                i = if j > i { j } else { i + 2 };
            }
            DIGIT => {
                let (s, e) = token_around(bytes, i);
                mh.write_span(bytes, m_from, s);
                mask_token(&bytes[s..e], &mut mh);
                m_from = e;
                for at in s..e {
                    if at >= pattern_until
                        && (at == s || bytes[at - 1] == b'-')
                        && bytes[at] != b'-'
                        && sink.out.len() < sink.cap
                        && let Some(until) = sink.note(bytes, at, &mut run)
                    {
                        pattern_until = until;
                    }
                }
                i = e;
            }
            _ => {
                // A month name before a day (`December 6, 2026`).
                if matches!(b, b'J' | b'F' | b'M' | b'A' | b'S' | b'O' | b'N' | b'D')
                    && i >= pattern_until
                    && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
                    && sink.out.len() < sink.cap
                    && let Some(until) = sink.note(bytes, i, &mut run)
                {
                    pattern_until = until;
                }
                i += 1;
            }
        }
    }
    mh.write_span(bytes, m_from, n);
    wh.write_span(bytes, w_from, n);
    Masks {
        masked: mh.finish(),
        ws: wh.finish(),
    }
}

/// The end of the run of whitespace (and `\n`, `\t`, `\r` escapes)
/// starting at `i`; `i` when there is none (another escape).
fn ws_run_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'\\' if matches!(bytes.get(i + 1), Some(b'n' | b't' | b'r')) => i += 2,
            _ => break,
        }
    }
    i
}

/// The token (a maximal run of ASCII letters, digits and `-`) holding
/// position `i`; the letter of a `\` escape is not part of it.
fn token_around(bytes: &[u8], i: usize) -> (usize, usize) {
    let is_tok = |c: u8| CLASS[usize::from(c)] >= DIGIT;
    let mut s = i;
    while s > 0 && is_tok(bytes[s - 1]) && !(s >= 2 && bytes[s - 2] == b'\\') {
        s -= 1;
    }
    let mut e = i;
    while e < bytes.len() && is_tok(bytes[e]) {
        e += 1;
    }
    (s, e)
}

/// Feed a token holding a digit, masked: `0` for a hex id of at least 8
/// characters, else each run of digits as one `0`.
fn mask_token(tok: &[u8], h: &mut Hasher) {
    if tok.len() >= 8 && tok.iter().all(|&c| c.is_ascii_hexdigit() || c == b'-') {
        h.write_u8(b'0');
        return;
    }
    let mut prev_digit = false;
    for &c in tok {
        if c.is_ascii_digit() {
            if !prev_digit {
                h.write_u8(b'0');
            }
            prev_digit = true;
        } else {
            h.write_u8(c);
            prev_digit = false;
        }
    }
}

/// Byte classes of [`scan_block`]; token classes are `>= DIGIT`.
const OTHER: u8 = 0;
const WS: u8 = 1;
const BACKSLASH: u8 = 2;
const DIGIT: u8 = 3;
const HEX_LETTER: u8 = 4;
const LETTER: u8 = 5;
const DASH: u8 = 6;
const CLASS: [u8; 256] = class_table();
/// Bytes [`scan_block`] passes over: not whitespace, `\\`, a digit, or a
/// month's initial.
const PLAIN: [bool; 256] = plain_table();

const fn plain_table() -> [bool; 256] {
    let mut t = [true; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let class = CLASS[b];
        t[b] = !(class == WS
            || class == BACKSLASH
            || class == DIGIT
            || matches!(c, b'J' | b'F' | b'M' | b'A' | b'S' | b'O' | b'N' | b'D'));
        b += 1;
    }
    t
}

const fn class_table() -> [u8; 256] {
    let mut t = [OTHER; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_hexdigit() {
            HEX_LETTER
        } else if c.is_ascii_alphabetic() {
            LETTER
        } else if c == b'-' {
            DASH
        } else if c == b'\\' {
            BACKSLASH
        } else if is_ws(c) {
            WS
        } else {
            OTHER
        };
        b += 1;
    }
    t
}

// --- pattern recognition -------------------------------------------------

fn digits(b: &[u8], i: usize, min: usize, max: usize) -> Option<usize> {
    let mut j = i;
    while j < b.len() && j - i < max && b[j].is_ascii_digit() {
        j += 1;
    }
    (j - i >= min).then_some(j)
}

fn byte(b: &[u8], i: usize, want: u8) -> Option<usize> {
    (b.get(i) == Some(&want)).then_some(i + 1)
}

fn ends_word(b: &[u8], i: usize) -> bool {
    b.get(i).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// `8-4-4-4-12` hex digits.
fn uuid_at(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for (g, len) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if g > 0 {
            j = byte(b, j, b'-')?;
        }
        let end = j + len;
        if end > b.len() || !b[j..end].iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        j = end;
    }
    ends_word(b, j).then_some(j)
}

/// `YYYY-MM-DD` or `YYYY/MM/DD`.
fn ymd_at(b: &[u8], i: usize) -> Option<usize> {
    let j = digits(b, i, 4, 4)?;
    let sep = *b.get(j).filter(|c| matches!(c, b'-' | b'/'))?;
    let j = digits(b, j + 1, 2, 2)?;
    let j = byte(b, j, sep)?;
    let j = digits(b, j, 2, 2)?;
    (!b.get(j).is_some_and(u8::is_ascii_digit)).then_some(j)
}

/// `H:MM`, `HH:MM`, `HH:MM:SS`, with an optional fraction and zone.
fn time_at(b: &[u8], i: usize) -> Option<usize> {
    let j = digits(b, i, 1, 2)?;
    let j = byte(b, j, b':')?;
    let mut j = digits(b, j, 2, 2)?;
    if let Some(k) = byte(b, j, b':').and_then(|k| digits(b, k, 2, 2)) {
        j = k;
    }
    if let Some(k) = b
        .get(j)
        .filter(|c| matches!(c, b'.' | b','))
        .and_then(|_| digits(b, j + 1, 1, 9))
    {
        j = k;
    }
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(zone_end(b, j))
}

/// Extend past a time zone: `Z`, `±HH:MM`, `±HHMM`, ` +HHMM`, ` UTC`, ` GMT`.
fn zone_end(b: &[u8], j: usize) -> usize {
    if b.get(j) == Some(&b'Z') {
        return j + 1;
    }
    let k = if b.get(j) == Some(&b' ') { j + 1 } else { j };
    if matches!(b.get(k), Some(b'+' | b'-'))
        && let Some(e) = digits(b, k + 1, 2, 2)
        && let Some(e3) = digits(b, byte(b, e, b':').unwrap_or(e), 2, 2)
    {
        return e3;
    }
    if k > j && (b[k..].starts_with(b"UTC") || b[k..].starts_with(b"GMT")) && ends_word(b, k + 3) {
        return k + 3;
    }
    j
}

const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];

/// A month name (`Dec`, `December`): the end of the word.
fn month_at(b: &[u8], i: usize) -> Option<usize> {
    MONTHS.iter().find(|m| b[i..].starts_with(m))?;
    let mut j = i + 3;
    while j < b.len() && b[j].is_ascii_lowercase() {
        j += 1;
    }
    Some(j)
}

/// `6 Dec 2026` (RFC 2822) or `December 6, 2026`; then an optional time.
fn named_date_at(b: &[u8], i: usize) -> Option<(usize, ChangeKind)> {
    let end = if b[i].is_ascii_digit() {
        let j = digits(b, i, 1, 2)?;
        let j = month_at(b, byte(b, j, b' ')?)?;
        digits(b, byte(b, j, b' ')?, 4, 4)?
    } else {
        let j = month_at(b, i)?;
        let j = digits(b, byte(b, j, b' ')?, 1, 2)?;
        let j = byte(b, j, b',').unwrap_or(j);
        digits(b, byte(b, j, b' ')?, 4, 4)?
    };
    match byte(b, end, b' ').and_then(|k| time_at(b, k)) {
        Some(t) => Some((t, ChangeKind::Timestamp)),
        None => Some((end, ChangeKind::Date)),
    }
}

/// Start of a `Sun, ` (or `Sunday, `) just before `i`, else `i`.
fn weekday_start(b: &[u8], i: usize) -> usize {
    let head = &b[..i];
    let Some(rest) = head.strip_suffix(b", ") else {
        return i;
    };
    let mut s = rest.len();
    while s > 0 && b[s - 1].is_ascii_alphabetic() {
        s -= 1;
    }
    let word_ok = s == 0 || !b[s - 1].is_ascii_alphanumeric();
    if word_ok && DAYS.iter().any(|d| b[s..rest.len()].starts_with(d)) {
        s
    } else {
        i
    }
}

/// A volatile run starting at `i`: `(start, len, kind)`; `start` may lie
/// before `i` (a weekday name in front of an RFC 2822 date).
pub(crate) fn pattern_at(b: &[u8], i: usize) -> Option<(usize, usize, ChangeKind)> {
    let c = b[i];
    // Most tokens are words: only a hex letter or a month's initial can
    // start a pattern with a letter, so the rest is skipped at once.
    let hex_letter = matches!(c, b'a'..=b'f' | b'A'..=b'F');
    if (c.is_ascii_digit() || hex_letter)
        && let Some(e) = uuid_at(b, i)
    {
        return Some((i, e - i, ChangeKind::Uuid));
    }
    if (c.is_ascii_digit() || b"JFMASOND".contains(&c))
        && let Some((e, kind)) = named_date_at(b, i)
    {
        let s = weekday_start(b, i);
        return Some((s, e - s, kind));
    }
    if c.is_ascii_digit() {
        if let Some(e) = ymd_at(b, i) {
            let time = matches!(b.get(e), Some(b'T' | b' '))
                .then(|| time_at(b, e + 1))
                .flatten();
            return Some(match time {
                Some(t) => (i, t - i, ChangeKind::Timestamp),
                None => (i, e - i, ChangeKind::Date),
            });
        }
        if let Some(t) = time_at(b, i) {
            return Some((i, t - i, ChangeKind::Timestamp));
        }
    }
    if c.is_ascii_digit() || hex_letter {
        return hex_or_number_at(b, i);
    }
    None
}

/// A hex id of at least 16 hex digits with a digit in it (a hash, a
/// request id), or a number of at least 5 digits (an epoch, a counter).
fn hex_or_number_at(b: &[u8], i: usize) -> Option<(usize, usize, ChangeKind)> {
    let mut j = i;
    let mut digits_n = 0usize;
    let mut letters = false;
    while j < b.len() && b[j].is_ascii_hexdigit() {
        if b[j].is_ascii_digit() {
            digits_n += 1;
        } else {
            letters = true;
        }
        j += 1;
    }
    if !ends_word(b, j) {
        return None;
    }
    if letters {
        return (j - i >= 16 && digits_n > 0).then_some((i, j - i, ChangeKind::Uuid));
    }
    if digits_n == 0 {
        return None;
    }
    // A decimal fraction belongs to the number (`1733477426.123`).
    if let Some(k) = byte(b, j, b'.').and_then(|k| digits(b, k, 1, 18)) {
        digits_n += k - j - 1;
        j = k;
    }
    (digits_n >= 5).then_some((i, j - i, ChangeKind::Number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(s: &str) -> Option<(usize, usize, ChangeKind)> {
        let b = s.as_bytes();
        (0..b.len())
            .filter(|&i| i == 0 || !b[i - 1].is_ascii_alphanumeric())
            .find_map(|i| pattern_at(b, i))
    }

    #[test]
    fn patterns_are_recognised_with_their_extent() {
        let cases: [(&str, usize, &str, ChangeKind); 9] = [
            (
                "Now: 2026-12-06T09:30:26Z.",
                5,
                "2026-12-06T09:30:26Z",
                ChangeKind::Timestamp,
            ),
            (
                "at 2026-12-06 09:30:26.123+01:00 x",
                3,
                "2026-12-06 09:30:26.123+01:00",
                ChangeKind::Timestamp,
            ),
            ("Today is 2026-12-06.", 9, "2026-12-06", ChangeKind::Date),
            (
                "Date: Sun, 06 Dec 2026 09:30:26 +0000 ok",
                6,
                "Sun, 06 Dec 2026 09:30:26 +0000",
                ChangeKind::Timestamp,
            ),
            (
                "on December 6, 2026 we",
                3,
                "December 6, 2026",
                ChangeKind::Date,
            ),
            ("it is 9:05 now", 6, "9:05", ChangeKind::Timestamp),
            (
                "id 550e8400-e29b-41d4-a716-446655440000 end",
                3,
                "550e8400-e29b-41d4-a716-446655440000",
                ChangeKind::Uuid,
            ),
            (
                "sha deadbeef0123456789 x",
                4,
                "deadbeef0123456789",
                ChangeKind::Uuid,
            ),
            (
                "epoch 1733477426.5 s",
                6,
                "1733477426.5",
                ChangeKind::Number,
            ),
        ];
        for (text, at, run, kind) in cases {
            let (s, len, k) = find(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!((s, &text[s..s + len], k), (at, run, kind), "{text}");
        }
        assert_eq!(find("version 1234 and 12 words"), None);
        assert_eq!(find("a cafe-bad idea"), None);
    }

    #[test]
    fn masked_hash_ignores_values_and_ws_hash_ignores_whitespace() {
        let scan = |s: &str| {
            let mut ends = Vec::new();
            run_ends(s.as_bytes(), &mut ends);
            let mut out = Vec::new();
            let mut sink = PatternSink {
                out: &mut out,
                cap: 8,
                block: 0,
                ends: &ends,
            };
            (scan_block(s.as_bytes(), &mut sink), hash(s.as_bytes()))
        };
        let (a, ra) =
            scan("\"It is 2026-12-06T09:30:26Z, id 550e8400-e29b-41d4-a716-446655440000\"");
        let (b, rb) =
            scan("\"It is 2026-12-07T10:01:02Z, id a50e8400-e29b-41d4-a716-44665544ffff\"");
        assert_ne!(ra, rb);
        assert_eq!(a.masked, b.masked);
        assert_ne!(a.ws, b.ws);
        let (c, _) = scan("\"Be  brief.\\n\\nAnswer\"");
        let (d, _) = scan("\"Be brief.\\nAnswer\"");
        assert_eq!(c.ws, d.ws);
        assert_ne!(c.masked, d.masked);
        let (e, _) = scan("\"Be brief, answer\"");
        assert_ne!(c.ws, e.ws);
    }

    #[test]
    fn runs_resynchronise_after_a_length_change() {
        const WORDS: [&str; 9] = [
            "alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta", "zeta",
        ];
        let body: String = (0..400)
            .map(|i| format!("{} {} {}; ", WORDS[i % 9], WORDS[(i * 7) % 9], i * 31))
            .collect();
        let a = format!("t=9:05 {body}");
        let b = format!("t=10:05 {body}");
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        run_ends(a.as_bytes(), &mut ea);
        run_ends(b.as_bytes(), &mut eb);
        let runs = |s: &str, e: &[u32]| -> Vec<u64> {
            let mut prev = 0;
            e.iter()
                .map(|&x| {
                    let h = hash(&s.as_bytes()[prev..x as usize]);
                    prev = x as usize;
                    h
                })
                .collect()
        };
        let (ra, rb) = (runs(&a, &ea), runs(&b, &eb));
        assert!(ra.len() > 10);
        assert_ne!(ra[0], rb[0]);
        assert_eq!(ra[2..], rb[2..], "all but the first runs are shared");
        assert!(
            ea.iter()
                .zip(&ea[1..])
                .all(|(x, y)| y - x <= MAX_RUN as u32)
        );
    }
}
