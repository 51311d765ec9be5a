//! Keyword groups and a one-pass, ASCII-case-insensitive matcher.
//!
//! Patterns are lowercase ASCII (a few carry a typographic apostrophe) and
//! only match at a word start (the previous byte is not a letter, digit, `_`
//! or a non-ASCII byte). A pattern marked as a prefix also matches longer
//! words ("refactor" → "refactoring"); otherwise the match must end at a word
//! boundary. The table is sorted and indexed at compile time by the first two
//! bytes, so the scan does at most a few short comparisons per word start: no
//! regex, no allocation.

/// What a keyword counts towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    Reasoning,
    Design,
    Concurrency,
    Debugging,
    Simple,
    Hint,
}

/// Hits per group, in [`Group`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hits {
    pub(crate) reasoning: u32,
    pub(crate) design: u32,
    pub(crate) concurrency: u32,
    pub(crate) debugging: u32,
    pub(crate) simple: u32,
    pub(crate) hint: u32,
}

impl Hits {
    fn add(&mut self, group: Group) {
        let slot = match group {
            Group::Reasoning => &mut self.reasoning,
            Group::Design => &mut self.design,
            Group::Concurrency => &mut self.concurrency,
            Group::Debugging => &mut self.debugging,
            Group::Simple => &mut self.simple,
            Group::Hint => &mut self.hint,
        };
        *slot = slot.saturating_add(1);
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Keyword {
    pub(crate) text: &'static str,
    pub(crate) group: Group,
    pub(crate) prefix: bool,
}

/// Whole word (or phrase).
const fn w(text: &'static str, group: Group) -> Keyword {
    Keyword {
        text,
        group,
        prefix: false,
    }
}

/// Prefix: also matches longer words.
const fn p(text: &'static str, group: Group) -> Keyword {
    Keyword {
        text,
        group,
        prefix: true,
    }
}

use Group::{
    Concurrency as C, Debugging as B, Design as D, Hint as H, Reasoning as R, Simple as S,
};

/// The keyword table, sorted by bytes (a test checks this).
pub(crate) const KEYWORDS: &[Keyword] = &[
    // a
    w("a fix", H),
    w("actual behavior", B),
    w("actual behaviour", B),
    w("add a comment", S),
    w("add comments", S),
    w("add type hints", S),
    w("api", D),
    w("apis", D),
    p("architect", D),
    w("as simple as", H),
    p("async", C),
    p("atomic", C),
    p("await", C),
    // b
    p("backward compat", D),
    p("backwards compat", D),
    p("boilerplate", S),
    w("broken", B),
    w("bug", B),
    w("buggy", B),
    w("bugs", B),
    w("bump the version", S),
    // c
    w("change line", H),
    p("concurren", C),
    p("corner case", R),
    w("correctness", R),
    w("could be changed to", H),
    p("crash", B),
    p("cve-", C),
    // d
    p("data race", C),
    p("deadlock", C),
    w("dependency injection", D),
    p("design", D),
    p("distributed", D),
    p("docstring", S),
    w("does not work", B),
    w("doesn't work", B),
    w("doesn\u{2019}t work", B),
    // e
    p("edge case", R),
    w("expected behavior", B),
    w("expected behaviour", B),
    p("exploit", C),
    p("extensib", D),
    // f
    w("failing", B),
    w("fails", B),
    w("figure out", R),
    w("fix seems", H),
    w("fix the indentation", S),
    w("fix would", H),
    w("fixes it", H),
    w("flakiness", B),
    p("flaky", B),
    // g
    p("goroutine", C),
    // h
    w("hang", B),
    w("hanging", B),
    w("hangs", B),
    p("heisenbug", B),
    w("hello world", S),
    // i
    p("inconsisten", B),
    p("incorrect", B),
    w("injection", C),
    p("interface", D),
    p("intermittent", B),
    p("invariant", R),
    p("investigat", R),
    // l
    w("latency", C),
    w("lock-free", C),
    // m
    p("memory leak", C),
    p("microservice", D),
    w("minor change", S),
    p("mutex", C),
    // n
    w("no longer", B),
    w("not sure why", R),
    w("not working", B),
    // o
    w("one-line fix", H),
    w("one-liner", S),
    p("optimis", C),
    p("optimiz", C),
    p("overflow", C),
    // p
    p("parallel", C),
    w("performance", C),
    p("plugin", D),
    w("proof", R),
    w("proposed fix", H),
    w("pros and cons", R),
    p("protocol", D),
    w("prove", R),
    w("proves", R),
    w("pull request", H),
    // q
    w("quick fix", S),
    // r
    w("race", C),
    w("races", C),
    w("racy", C),
    w("reason about", R),
    p("refactor", D),
    p("regression", B),
    p("rename", S),
    w("replace it with", H),
    p("reproduc", B),
    p("root cause", R),
    // s
    p("scalab", D),
    p("schema", D),
    w("security", C),
    p("segfault", C),
    p("semaphore", C),
    w("should be changed to", H),
    w("simple change", S),
    w("simple fix", S),
    w("small change", S),
    w("something like this", H),
    w("spelling", S),
    p("state machine", D),
    w("step by step", R),
    w("stopped working", B),
    w("suggested fix", H),
    // t
    w("the fix is", H),
    w("the required change", H),
    p("thread", C),
    w("throughput", C),
    p("trade off", R),
    p("trade-off", R),
    p("tradeoff", R),
    p("transaction", C),
    p("trivial", H),
    p("typo", S),
    // u
    p("undefined behavio", C),
    p("unexpected", B),
    w("unsafe", C),
    p("unused import", S),
    // v
    p("vulnerab", C),
    // w
    w("why", R),
    w("why do", B),
    w("why does", B),
    w("why is", B),
    w("would fix", H),
    w("would solve", H),
    w("wrong", B),
    // y
];

/// Buckets: first letter (26) × second byte class ("other" + 26 letters).
const BUCKETS: usize = 26 * 27;

/// Bucket of a word starting with `first` (an ASCII letter) then `second`.
/// "Other" (space, `-`, …) comes first, as it sorts before the letters.
const fn bucket(first: u8, second: u8) -> usize {
    let f = (first.to_ascii_lowercase() - b'a') as usize;
    let s = if second.is_ascii_alphabetic() {
        (second.to_ascii_lowercase() - b'a') as usize + 1
    } else {
        0
    };
    f * 27 + s
}

/// For each bucket, the half-open range of [`KEYWORDS`] in it (the table is
/// sorted, so each bucket is contiguous; a test checks this).
static INDEX: [(u8, u8); BUCKETS] = build_index(KEYWORDS);

const fn build_index(table: &[Keyword]) -> [(u8, u8); BUCKETS] {
    let mut index = [(0u8, 0u8); BUCKETS];
    let mut i = 0;
    while i < table.len() {
        let text = table[i].text.as_bytes();
        let slot = bucket(text[0], text[1]);
        if index[slot].1 == 0 {
            index[slot].0 = i as u8;
        }
        index[slot].1 = (i + 1) as u8;
        i += 1;
    }
    index
}

/// Letters, digits, `_` and any non-ASCII byte (part of a UTF-8 letter).
#[inline]
pub(crate) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Counts keyword hits in `text` into `hits`.
pub(crate) fn scan(text: &[u8], hits: &mut Hits) {
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if !is_word_byte(b) {
            i += 1;
            continue;
        }
        // A word starts at `i`.
        if b.is_ascii_alphabetic() {
            let rest = &text[i..];
            let (lo, hi) = INDEX[bucket(b, rest.get(1).copied().unwrap_or(0))];
            for kw in KEYWORDS
                .get(usize::from(lo)..usize::from(hi))
                .unwrap_or(&[])
            {
                if matches_at(rest, kw) {
                    hits.add(kw.group);
                }
            }
        }
        // Skip to the end of the word.
        i += 1;
        while i < text.len() && is_word_byte(text[i]) {
            i += 1;
        }
    }
}

#[inline]
fn matches_at(rest: &[u8], kw: &Keyword) -> bool {
    let pat = kw.text.as_bytes();
    match rest.get(..pat.len()) {
        Some(head) if head.eq_ignore_ascii_case(pat) => {
            kw.prefix || rest.get(pat.len()).is_none_or(|&next| !is_word_byte(next))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(text: &str) -> Hits {
        let mut h = Hits::default();
        scan(text.as_bytes(), &mut h);
        h
    }

    #[test]
    fn table_is_sorted_lowercase_and_indexed() {
        assert!(
            KEYWORDS.len() < usize::from(u8::MAX),
            "INDEX stores u8 offsets"
        );
        for pair in KEYWORDS.windows(2) {
            assert!(
                pair[0].text < pair[1].text,
                "{:?} must sort before {:?}",
                pair[0].text,
                pair[1].text
            );
        }
        let mut last_bucket = 0;
        for kw in KEYWORDS {
            let text = kw.text.as_bytes();
            assert!(
                text.len() >= 3 && text[0].is_ascii_lowercase(),
                "{:?}",
                kw.text
            );
            assert!(
                !text.iter().any(u8::is_ascii_uppercase),
                "{:?} must be lowercase",
                kw.text
            );
            assert!(!kw.text.ends_with(' '), "{:?}", kw.text);
            let b = bucket(text[0], text[1]);
            assert!(
                b >= last_bucket,
                "{:?}: buckets must be contiguous",
                kw.text
            );
            last_bucket = b;
        }
        let indexed: usize = INDEX.iter().map(|(lo, hi)| usize::from(hi - lo)).sum();
        assert_eq!(indexed, KEYWORDS.len());
    }

    #[test]
    fn case_insensitive_word_start_and_boundaries() {
        assert_eq!(hits("A DEADLOCK, then deadlocks").concurrency, 2);
        // Word start: "race" must not match inside "trace" / "brace".
        assert_eq!(hits("traceback brace").concurrency, 0);
        // Whole word: "race" must not match "racetrack"; prefix "refactor" matches "Refactoring".
        assert_eq!(hits("racetrack").concurrency, 0);
        assert_eq!(hits("Refactoring").design, 1);
        assert_eq!(hits("the bug, bugs; debug").debugging, 2);
        assert_eq!(hits("Why does this hang?").debugging, 2);
        assert_eq!(hits("Why does this hang?").reasoning, 1);
        assert_eq!(hits("Rename variable x to y").simple, 1);
        // No benchmark harness wording: these phrases wrap every item of two
        // public benchmarks and say nothing about the task.
        for harness in [
            "Complete the following Python function:",
            "Write a python function to find the sum.",
            "Your code should pass these tests:",
        ] {
            assert_eq!(hits(harness).simple, 0, "{harness}");
        }
        assert_eq!(hits("It doesn\u{2019}t work").debugging, 1);
        // Non-ASCII letters are word bytes: no match starts mid-word.
        assert_eq!(hits("\u{e9}race").concurrency, 0);
    }

    #[test]
    fn truncated_input_is_fine() {
        assert_eq!(hits("dead").concurrency, 0);
        assert_eq!(hits("").design, 0);
        assert_eq!(hits("w").reasoning, 0);
    }
}
