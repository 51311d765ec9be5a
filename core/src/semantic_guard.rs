//! The semantic cache's guards: before a stored answer to a *similar*
//! prompt is served, the two prompts are compared for the differences that
//! change the answer while keeping the embeddings close — numbers and
//! operators, negations, names and identifiers, code — and for how many
//! content words differ. Any such difference is a miss.
//!
//! Why: a sentence embedding averages its tokens, so one changed digit, an
//! added `not` or a swapped name barely moves it. Measured with
//! all-MiniLM-L6-v2: "Is Python slow?" / "Is Python not slow?" 0.989,
//! "cancel my order 12345" / "…12346" 0.983 — above any usable
//! `minSimilarity` (LiteLLM #12234, GPTCache #694, vllm-project/semantic-router
//! #2691 report the same failure; <https://github.com/vllm-project/semantic-router/issues/2691>).
//! `docs/response-cache.md` ("False hits, measured") has the measurement that
//! chose the defaults.
//!
//! The guards, each on a prompt's text with code spans taken out first:
//! - **code**: fenced (```` ``` ````, info string dropped) and inline
//!   (`` ` ``) spans, whitespace-normalised, and code-like tokens (`f(`,
//!   braces, brackets, `;`, `::`, `->`, `=>`, `==`, …) — the same, in order;
//! - **numbers**: digits (`1,000` = `1000`, decimals kept), number words
//!   (`two` = `2`, `twenty one` = `21`, `two hundred` = `200`, ordinals,
//!   `half`, `dozen`) and operators (`+ - * / = < > % ^`, `×`, `÷`, and
//!   `plus`, `minus`, `times`, `divided`, `equals`, `percent`) — the same
//!   sequence; a `-` inside a word or a `/` in prose is not an operator;
//! - **negations**: as many `not`/`no`/`never`/`none`/`nothing`/`nobody`/
//!   `neither`/`nor`/`without`/`nowhere` in each, after expanding `n't`
//!   (straight or curly apostrophe), `cannot` and apostrophe-less
//!   `dont`/`cant`/`isnt`/…;
//! - **entities**: names by their shape (capitalised past a sentence's first
//!   word, all capitals, inner capitals: `Apple`, `CEO`, `iPhone`), emails,
//!   URLs, paths and identifiers (letters with digits, `_`, inner dots,
//!   camelCase: `ORD-1234`, `snake_case`, `config.yaml`) must occur in both
//!   prompts in the same order (case aside), and quoted strings must match;
//! - **content words** (stop words, negations and numbers removed,
//!   lower-cased, contractions expanded, light stemming: `orders` = `order`,
//!   `enabled` = `enable`): at most `max_content_word_diff` stems in one and
//!   not the other (both ways); no word swapped for its opposite (a list:
//!   `enable`/`disable`, `increase`/`decrease`, `before`/`after`,
//!   `min`/`max`, `on`/`off`, `open`/`close`, …, and `un-`/`dis-`/`de-`/`non-`
//!   prefixes); no two words swapped around `to`/`into`/`from`/`than`/`vs`
//!   (`convert json to yaml` / `convert yaml to json`). `u32::MAX` turns this
//!   guard off.
//!
//! Limits (by design the guards err towards a miss): a lower-case name at a
//! sentence's start or in an all-lower-case prompt is not seen as a name
//! (the content-word bound and the similarity threshold are what stand
//! between "ceo of apple" and "ceo of google"); a reordered paraphrase with
//! two names or numbers is a miss.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Which guards run (each on by default) and the content-word bound.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Guards {
    /// Numbers (digits and number words) and arithmetic/comparison
    /// operators must be the same.
    pub numbers: bool,
    /// Negations (`not`, `no`, `never`, `n't`, `without`, …) must match.
    pub negations: bool,
    /// Names and identifiers (capitalised words past the first, quoted
    /// strings, emails, URLs, ids such as `ORD-1234`, paths) must be the same.
    pub entities: bool,
    /// Code (fenced or inline `` ` `` spans, code-like tokens) must be the same.
    pub code: bool,
    /// Most content words (stop words removed) that one prompt may have and
    /// the other lacks, summed both ways.
    pub max_content_word_diff: u32,
}

/// The guard that found a difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardMiss {
    /// Different numbers or operators.
    Numbers,
    /// A negation in one and not the other.
    Negation,
    /// Different names or identifiers.
    Entities,
    /// Different code.
    Code,
    /// Too many different content words.
    ContentWords,
}

impl GuardMiss {
    /// Its label in metrics and logs (`numbers`, `negation`, `entities`,
    /// `code`, `content_words`).
    pub fn as_str(self) -> &'static str {
        match self {
            GuardMiss::Numbers => "numbers",
            GuardMiss::Negation => "negation",
            GuardMiss::Entities => "entities",
            GuardMiss::Code => "code",
            GuardMiss::ContentWords => "content_words",
        }
    }
}

// === impl Guards ===

/// The content-word bound of [`Guards::default`]. Measured with
/// all-MiniLM-L6-v2 at `minSimilarity` 0.95 (docs/response-cache.md, "False
/// hits, measured"): 2 is the largest bound that keeps MRPC's false hits
/// within 1 in 1,000 (1 of 1,901; a bound of 3 lets 3 through), and on our
/// labelled pairs serves 81.3 % of paraphrases against 76.7 % at 1 and
/// 74.9 % at 0, with 0 false hits in 4,050 at each.
pub const DEFAULT_MAX_CONTENT_WORD_DIFF: u32 = 2;

impl Default for Guards {
    /// Every guard on, at most [`DEFAULT_MAX_CONTENT_WORD_DIFF`] content words apart.
    fn default() -> Guards {
        Guards {
            numbers: true,
            negations: true,
            entities: true,
            code: true,
            max_content_word_diff: DEFAULT_MAX_CONTENT_WORD_DIFF,
        }
    }
}

/// Whether the answer stored for `cached` may answer `incoming` as far as
/// the guards can tell: `Ok` when none finds a difference. Symmetric, total
/// (never panics, any Unicode), and a prompt always passes against itself.
pub fn compare(cached: &str, incoming: &str, guards: &Guards) -> Result<(), GuardMiss> {
    let a = Analysis::of(cached);
    let b = Analysis::of(incoming);
    if guards.code && a.code != b.code {
        return Err(GuardMiss::Code);
    }
    if guards.numbers && a.numbers != b.numbers {
        return Err(GuardMiss::Numbers);
    }
    if guards.negations && a.negations != b.negations {
        return Err(GuardMiss::Negation);
    }
    if guards.entities && !same_entities(&a, &b) {
        return Err(GuardMiss::Entities);
    }
    if guards.max_content_word_diff != u32::MAX
        && !same_content(&a, &b, guards.max_content_word_diff)
    {
        return Err(GuardMiss::ContentWords);
    }
    Ok(())
}

// === analysis ===

/// A word of the prose, lower-cased, with what the entity guard needs.
#[derive(Debug, Clone)]
struct Word {
    lower: String,
    /// A name or identifier by its shape (capitalised past a sentence's start,
    /// all caps, inner capitals, or an id/email/URL/path token).
    entity: bool,
}

/// What the guards compare, extracted once per prompt.
#[derive(Debug, Default)]
struct Analysis {
    /// Code spans (whitespace-normalised) and code-like tokens, in order.
    code: Vec<String>,
    /// Numbers (normalised) and operators, in order.
    numbers: Vec<String>,
    /// How many negations.
    negations: usize,
    /// Quoted strings (lower-cased, whitespace-normalised), in order.
    quoted: Vec<String>,
    /// Every word in order (contractions expanded).
    words: Vec<Word>,
    /// Number words not yet turned into a number.
    pending: Vec<String>,
}

/// One lexeme of a whitespace-separated chunk of prose.
enum Lex {
    Word(String),
    Num(String),
    Op(char),
}

impl Analysis {
    fn of(text: &str) -> Analysis {
        let text = normalise_quotes(text);
        let mut out = Analysis::default();
        let prose = extract_code(&text, &mut out.code);
        out.quoted = quoted_strings(&prose);
        let mut sentence_start = true;
        let mut last_was_num = false;
        for chunk in prose.split_whitespace() {
            let core = chunk.trim_matches(|c: char| TRIM.contains(&c));
            let code_like = chunk.trim_matches(|c: char| SENTENCE_PUNCT.contains(&c));
            if is_code_like(code_like) {
                out.flush_number_words();
                out.code.push(code_like.to_string());
            } else if is_special(core) {
                out.flush_number_words();
                out.words.push(Word {
                    lower: core.to_lowercase(),
                    entity: true,
                });
            } else {
                let lexes = lex_chunk(core, last_was_num);
                out.push_lexes(lexes, &mut sentence_start, &mut last_was_num);
            }
            if !core.is_empty() {
                sentence_start = chunk.ends_with(['.', '!', '?', ':', '\n']);
            }
        }
        out.flush_number_words();
        out
    }

    fn push_lexes(&mut self, lexes: Vec<Lex>, sentence_start: &mut bool, last_num: &mut bool) {
        for lex in lexes {
            match lex {
                Lex::Num(n) => {
                    self.flush_number_words();
                    self.numbers.push(n);
                    *last_num = true;
                }
                Lex::Op(c) => {
                    self.flush_number_words();
                    self.numbers.push(c.to_string());
                    *last_num = false;
                }
                Lex::Word(w) => {
                    *last_num = false;
                    let entity = looks_like_name(&w, *sentence_start);
                    *sentence_start = false;
                    for part in expand(&w.to_lowercase()) {
                        self.push_word(part, entity);
                    }
                }
            }
        }
    }

    fn push_word(&mut self, part: String, entity: bool) {
        if NEGATIONS.contains(&part.as_str()) {
            self.negations += 1;
        }
        let after_hundred = part == "and" && self.pending.last().is_some_and(|w| w == "hundred");
        if let Some(op) = word_op(&part) {
            self.flush_number_words();
            self.numbers.push(op.to_string());
        } else if number_word(&part).is_some() {
            self.pending.push(part.clone());
        } else if !after_hundred {
            self.flush_number_words();
        }
        self.words.push(Word {
            entity: entity && !STOP_WORDS.contains(&part.as_str()),
            lower: part,
        });
    }

    /// Turns the pending run of number words into numbers (`twenty one` →
    /// `21`, `two hundred` → `200`; `one two` → `1`, `2`).
    fn flush_number_words(&mut self) {
        let mut value = Spelled::default();
        for w in std::mem::take(&mut self.pending) {
            let Some((n, kind)) = number_word(&w) else {
                continue;
            };
            if !value.accepts(kind) {
                self.numbers.push(value.take());
            }
            value.add(n, kind);
        }
        if value.kind.is_some() {
            self.numbers.push(value.take());
        }
    }

    /// Stems of the content words: no stop words, negations or numbers.
    fn content(&self) -> BTreeSet<String> {
        self.words
            .iter()
            .map(|w| w.lower.as_str())
            .filter(|w| is_content(w))
            .map(stem)
            .collect()
    }
}

fn is_content(w: &str) -> bool {
    !STOP_WORDS.contains(&w)
        && !NEGATIONS.contains(&w)
        && number_word(w).is_none()
        && word_op(w).is_none()
}

/// Characters trimmed off the ends of a chunk before it is classified.
const TRIM: &[char] = &[
    '.', ',', '!', '?', ';', ':', '"', '\'', '(', ')', '[', ']', '…',
];

/// Sentence punctuation trimmed off a chunk before it is checked for code.
const SENTENCE_PUNCT: &[char] = &['.', ',', '!', '?', ';', ':', '"', '\'', '…'];

/// Curly and other apostrophes/quotes to ASCII.
fn normalise_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '\u{02BC}' | '\u{FF07}' | '\u{2032}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{00AB}' | '\u{00BB}' => '"',
            '\u{00D7}' => '*',
            '\u{00F7}' => '/',
            c => c,
        })
        .collect()
}

/// Collapses whitespace runs to one space and trims.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Moves fenced (```) and inline (`) code into `code`, whitespace-normalised
/// (a fence's info string — the language — is dropped); returns the prose.
fn extract_code(text: &str, code: &mut Vec<String>) -> String {
    let mut prose = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        prose.push_str(&rest[..start]);
        prose.push(' ');
        let after = &rest[start..];
        if let Some(body) = after.strip_prefix("```") {
            let (block, tail) = body.split_once("```").unwrap_or((body, ""));
            let block = match block.split_once('\n') {
                Some((info, b)) if !info.trim().contains(char::is_whitespace) => b,
                _ => block,
            };
            code.push(squash(block));
            rest = tail;
        } else {
            let body = &after[1..];
            let (span, tail) = body.split_once('`').unwrap_or((body, ""));
            code.push(squash(span));
            rest = tail;
        }
    }
    prose.push_str(rest);
    prose
}

/// Strings in double quotes, and in single quotes that open after a space
/// and close before one (so apostrophes are not quotes).
fn quoted_strings(prose: &str) -> Vec<String> {
    let chars: Vec<char> = prose.chars().collect();
    let mut out = Vec::new();
    // The places a quote can close do not depend on where it opened: once
    // none is left for a quote character, stop looking (linear time on
    // any input).
    let mut exhausted = [false, false];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let kind = usize::from(c == '\'');
        let opens = c == '"' || (c == '\'' && (i == 0 || !chars[i - 1].is_alphanumeric()));
        if opens && !exhausted[kind] {
            let close = (i + 1..chars.len()).find(|&j| {
                chars[j] == c && (c == '"' || chars.get(j + 1).is_none_or(|n| !n.is_alphanumeric()))
            });
            if let Some(j) = close {
                let inner: String = chars[i + 1..j].iter().collect();
                out.push(squash(&inner.to_lowercase()));
                i = j + 1;
                continue;
            }
            exhausted[kind] = true;
        }
        i += 1;
    }
    out
}

/// Code-like prose tokens: a call (`name(`), braces, brackets, `;`, `::`,
/// `->`, `=>`, `==`, `!=`, `&&`, `||`.
fn is_code_like(core: &str) -> bool {
    let call = core
        .chars()
        .zip(core.chars().skip(1))
        .any(|(p, c)| c == '(' && (p.is_alphanumeric() || p == '_'));
    call || core.contains(['{', '}', '[', ']', ';'])
        || ["::", "->", "=>", "==", "!=", "&&", "||"]
            .iter()
            .any(|s| core.contains(s))
}

/// Emails, URLs, paths and identifiers: tokens whose exact spelling names
/// something (ids with digits, `_`, inner dots, camelCase).
fn is_special(core: &str) -> bool {
    let lower = core.to_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("www.") {
        return true;
    }
    if core.contains('@') && core.chars().any(char::is_alphanumeric) {
        return true;
    }
    if (core.contains('/') || core.contains('\\')) && core.chars().any(char::is_alphabetic) {
        return true;
    }
    if !core
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return false;
    }
    let letters = core.chars().any(char::is_alphabetic);
    let digits = core.chars().any(|c| c.is_ascii_digit());
    let dotted = core.contains('.')
        && core
            .split('.')
            .filter(|s| !s.is_empty())
            .any(|s| s.chars().count() > 1)
        && core.split('.').count() > 1
        && letters;
    (letters && digits) || core.contains('_') || dotted || camel(core)
}

/// An inner capital after a lower-case letter (`camelCase`, `iPhone`).
fn camel(word: &str) -> bool {
    word.chars()
        .zip(word.chars().skip(1))
        .any(|(a, b)| a.is_lowercase() && b.is_uppercase())
}

/// A name by its shape: capitalised past a sentence's start, all capitals
/// (2+ letters) or inner capitals anywhere. `I` is not a name.
fn looks_like_name(word: &str, sentence_start: bool) -> bool {
    let first_upper = word.chars().next().is_some_and(char::is_uppercase);
    let uppers = word.chars().filter(|c| c.is_uppercase()).count();
    let base = word.split('\'').next().unwrap_or(word);
    if base == "I" {
        return false;
    }
    (first_upper && !sentence_start) || uppers >= 2 || camel(word)
}

/// Splits a chunk into words, numbers and operators.
fn lex_chunk(core: &str, last_was_num: bool) -> Vec<Lex> {
    let chars: Vec<char> = core.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut num = String::new();
            while i < chars.len() {
                let d = chars[i];
                let sep =
                    matches!(d, '.' | ',') && chars.get(i + 1).is_some_and(char::is_ascii_digit);
                if d.is_ascii_digit() {
                    num.push(d);
                } else if sep {
                    if d == '.' {
                        num.push('.');
                    }
                } else {
                    break;
                }
                i += 1;
            }
            out.push(Lex::Num(num));
            continue;
        }
        if c.is_alphabetic() {
            let mut word = String::new();
            while i < chars.len()
                && (chars[i].is_alphanumeric() && !chars[i].is_ascii_digit()
                    || (chars[i] == '\'' && chars.get(i + 1).is_some_and(|n| n.is_alphabetic())))
            {
                word.push(chars[i]);
                i += 1;
            }
            out.push(Lex::Word(word));
            continue;
        }
        if is_operator(&chars, i, last_was_num) {
            out.push(Lex::Op(c));
        }
        i += 1;
    }
    out
}

/// Whether `chars[i]` is an arithmetic or comparison operator here, not a
/// hyphen, slash in prose or markdown emphasis.
fn is_operator(chars: &[char], i: usize, last_was_num: bool) -> bool {
    let prev = i.checked_sub(1).and_then(|j| chars.get(j));
    let next = chars.get(i + 1);
    let digit_next = next.is_some_and(char::is_ascii_digit);
    let digit_prev = prev.is_some_and(char::is_ascii_digit);
    let alone = chars.len() == 1;
    match chars.get(i) {
        Some('+' | '=' | '<' | '>' | '^' | '%') => true,
        Some('-') => {
            (digit_next && !prev.is_some_and(|p| p.is_alphabetic())) || (alone && last_was_num)
        }
        Some('/') => digit_next || digit_prev || (alone && last_was_num),
        Some('*') => prev != Some(&'*') && next != Some(&'*'),
        _ => false,
    }
}

/// Expands contractions: `don't`/`dont` → `do not`, `can't`/`cannot` →
/// `can not`, `what's` → `what` (the rest is a stop word), `apple's` → `apple`.
fn expand(word: &str) -> Vec<String> {
    if let Some(base) = word.strip_suffix("n't") {
        let base = match base {
            "ca" => "can",
            "wo" => "will",
            "sha" => "shall",
            "ai" => "is",
            b => b,
        };
        return vec![base.to_string(), "not".to_string()];
    }
    if word == "cannot" {
        return vec!["can".to_string(), "not".to_string()];
    }
    if let Some(base) = NO_APOSTROPHE
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, b)| *b)
    {
        return vec![base.to_string(), "not".to_string()];
    }
    let base = word.split('\'').next().unwrap_or(word);
    vec![base.to_string()]
}

/// Negative contractions written without the apostrophe.
const NO_APOSTROPHE: &[(&str, &str)] = &[
    ("dont", "do"),
    ("doesnt", "does"),
    ("didnt", "did"),
    ("isnt", "is"),
    ("arent", "are"),
    ("wasnt", "was"),
    ("werent", "were"),
    ("cant", "can"),
    ("couldnt", "could"),
    ("wouldnt", "would"),
    ("shouldnt", "should"),
    ("wont", "will"),
    ("hasnt", "has"),
    ("havent", "have"),
    ("hadnt", "had"),
    ("mustnt", "must"),
    ("neednt", "need"),
    ("aint", "is"),
    ("mightnt", "might"),
    ("shant", "shall"),
];

/// Negation words (contractions are expanded to `not` first).
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "nowhere",
    "noone", "nope",
];

// === numbers ===

/// What a number word is, for joining runs (`twenty` `one`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumKind {
    Unit,
    Teen,
    Tens,
    Hundred,
    Scale,
    /// Ordinals, `half`, `dozen`: a number on its own.
    Alone,
}

/// A number being spelled out in words.
#[derive(Default)]
struct Spelled {
    total: u128,
    current: u128,
    kind: Option<NumKind>,
    text: Option<String>,
}

impl Spelled {
    fn accepts(&self, next: NumKind) -> bool {
        use NumKind::*;
        match (self.kind, next) {
            (None, _) => true,
            (Some(Alone), _) | (_, Alone) => false,
            (Some(Tens), Unit) => true,
            (Some(Hundred | Scale), Unit | Teen | Tens) => true,
            (Some(Unit | Teen | Tens), Hundred) => true,
            (Some(Unit | Teen | Tens | Hundred), Scale) => true,
            _ => false,
        }
    }

    fn add(&mut self, n: u128, kind: NumKind) {
        match kind {
            NumKind::Unit | NumKind::Teen | NumKind::Tens => {
                self.current = self.current.saturating_add(n)
            }
            NumKind::Hundred => self.current = self.current.max(1).saturating_mul(100),
            NumKind::Scale => {
                let part = self.current.max(1).saturating_mul(n);
                self.total = self.total.saturating_add(part);
                self.current = 0;
            }
            NumKind::Alone => {
                self.text = Some(match n {
                    0 => "0.5".to_string(),
                    n => n.to_string(),
                })
            }
        }
        self.kind = Some(kind);
    }

    fn take(&mut self) -> String {
        let taken = std::mem::take(self);
        taken
            .text
            .unwrap_or_else(|| taken.total.saturating_add(taken.current).to_string())
    }
}

/// The value and kind of a number word (`half` is 0, read as 0.5).
fn number_word(w: &str) -> Option<(u128, NumKind)> {
    const UNITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    const TEENS: [&str; 10] = [
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    const ORDINALS: [&str; 12] = [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
        "tenth", "eleventh", "twelfth",
    ];
    let pos = |list: &[&str]| list.iter().position(|x| *x == w).map(|i| i as u128);
    if let Some(i) = pos(&UNITS) {
        return Some((i, NumKind::Unit));
    }
    if let Some(i) = pos(&TEENS) {
        return Some((10 + i, NumKind::Teen));
    }
    if let Some(i) = pos(&TENS) {
        return Some((20 + 10 * i, NumKind::Tens));
    }
    if let Some(i) = pos(&ORDINALS) {
        return Some((1 + i, NumKind::Alone));
    }
    match w {
        "hundred" => Some((100, NumKind::Hundred)),
        "thousand" => Some((1_000, NumKind::Scale)),
        "million" => Some((1_000_000, NumKind::Scale)),
        "billion" => Some((1_000_000_000, NumKind::Scale)),
        "trillion" => Some((1_000_000_000_000, NumKind::Scale)),
        "dozen" => Some((12, NumKind::Alone)),
        "half" => Some((0, NumKind::Alone)),
        _ => None,
    }
}

/// Operators spelled as words.
fn word_op(w: &str) -> Option<char> {
    match w {
        "plus" => Some('+'),
        "minus" => Some('-'),
        "times" | "multiplied" => Some('*'),
        "divided" => Some('/'),
        "equals" | "equal" => Some('='),
        "percent" => Some('%'),
        _ => None,
    }
}

// === entities ===

/// The names and identifiers either prompt has must occur in both, in the
/// same order (case aside: `Apple` and `apple` match; `Apple … Google` and
/// `Google … Apple` do not), and the quoted strings must be the same.
fn same_entities(a: &Analysis, b: &Analysis) -> bool {
    if a.quoted != b.quoted {
        return false;
    }
    let names: BTreeSet<&str> = a
        .words
        .iter()
        .chain(&b.words)
        .filter(|w| w.entity)
        .map(|w| w.lower.as_str())
        .collect();
    let seq = |x: &Analysis| -> Vec<String> {
        x.words
            .iter()
            .filter(|w| names.contains(w.lower.as_str()))
            .map(|w| w.lower.clone())
            .collect()
    };
    seq(a) == seq(b)
}

// === content words ===

/// At most `bound` content words apart (stems, both ways), no antonym
/// swapped for its opposite, and no two words swapped around a relation
/// word (`json to yaml` / `yaml to json`).
fn same_content(a: &Analysis, b: &Analysis, bound: u32) -> bool {
    let (ca, cb) = (a.content(), b.content());
    let diff = ca.symmetric_difference(&cb).count();
    if u32::try_from(diff).unwrap_or(u32::MAX) > bound {
        return false;
    }
    !antonym_swap(a, b) && !relation_swap(a, b, &ca, &cb)
}

/// Light stemming: plural `-s`/`-es`/`-ies`, `-ed`, `-ing`, final `-e`, so
/// `enable`/`enabled`/`enabling` and `order`/`orders` are one word.
fn stem(w: &str) -> String {
    let n = w.chars().count();
    let mut s = w.to_string();
    if n > 5 && s.ends_with("ing") {
        s.truncate(s.len() - 3);
    } else if n > 4 && (s.ends_with("ies") || s.ends_with("ied")) {
        s.truncate(s.len() - 3);
        s.push('y');
    } else if n > 4 && (s.ends_with("ed") || s.ends_with("es")) {
        s.truncate(s.len() - 2);
    } else if n > 3
        && s.ends_with('s')
        && !s.ends_with("ss")
        && !s.ends_with("us")
        && !s.ends_with("is")
    {
        s.truncate(s.len() - 1);
    }
    if s.chars().count() > 3 && s.ends_with('e') {
        s.truncate(s.len() - 1);
    }
    s
}

/// Pairs of words whose swap inverts a question.
const ANTONYMS: &[(&str, &str)] = &[
    ("enable", "disable"),
    ("increase", "decrease"),
    ("before", "after"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("on", "off"),
    ("open", "close"),
    ("upload", "download"),
    ("import", "export"),
    ("add", "remove"),
    ("add", "delete"),
    ("create", "delete"),
    ("lock", "unlock"),
    ("start", "stop"),
    ("start", "end"),
    ("show", "hide"),
    ("allow", "block"),
    ("allow", "deny"),
    ("accept", "reject"),
    ("accept", "decline"),
    ("buy", "sell"),
    ("login", "logout"),
    ("in", "out"),
    ("up", "down"),
    ("above", "below"),
    ("over", "under"),
    ("more", "less"),
    ("more", "fewer"),
    ("most", "least"),
    ("higher", "lower"),
    ("high", "low"),
    ("larger", "smaller"),
    ("bigger", "smaller"),
    ("large", "small"),
    ("faster", "slower"),
    ("fast", "slow"),
    ("true", "false"),
    ("include", "exclude"),
    ("public", "private"),
    ("encrypt", "decrypt"),
    ("connect", "disconnect"),
    ("subscribe", "unsubscribe"),
    ("install", "uninstall"),
    ("activate", "deactivate"),
    ("pause", "resume"),
    ("push", "pull"),
    ("send", "receive"),
    ("credit", "debit"),
    ("first", "last"),
    ("old", "new"),
    ("best", "worst"),
    ("upgrade", "downgrade"),
    ("early", "late"),
    ("earlier", "later"),
    ("input", "output"),
    ("read", "write"),
    ("join", "leave"),
    ("light", "dark"),
    ("earliest", "latest"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("monthly", "annual"),
    ("monthly", "yearly"),
    ("daily", "weekly"),
    ("weekly", "monthly"),
    ("success", "failure"),
    ("succeed", "fail"),
    ("valid", "invalid"),
    ("inside", "outside"),
    ("internal", "external"),
    ("left", "right"),
    ("top", "bottom"),
    ("maximize", "minimize"),
    ("incoming", "outgoing"),
];

/// Prefixes that swap a word for its opposite (`inbound` / `outbound`,
/// `upload` / `download`, `preorder` / `postorder`).
const OPPOSITE_PREFIXES: &[(&str, &str)] = &[
    ("in", "out"),
    ("up", "down"),
    ("over", "under"),
    ("pre", "post"),
    ("im", "ex"),
    ("inc", "dec"),
];

/// Prefixes that make a word's opposite (`lock` → `unlock`).
const NEGATING_PREFIXES: &[&str] = &["un", "dis", "de", "non"];

/// Whether one prompt has more of a word and the other more of its
/// opposite (`turn on` / `turn off`, `enable` / `disable`).
fn antonym_swap(a: &Analysis, b: &Analysis) -> bool {
    let count = |x: &Analysis| -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        for w in &x.words {
            *m.entry(stem(&w.lower)).or_insert(0) += 1;
        }
        m
    };
    let (ma, mb) = (count(a), count(b));
    let delta = |w: &str| {
        let w = stem(w);
        ma.get(&w).copied().unwrap_or(0) - mb.get(&w).copied().unwrap_or(0)
    };
    let swapped = |x: &str, y: &str| {
        let (dx, dy) = (delta(x), delta(y));
        (dx > 0 && dy < 0) || (dx < 0 && dy > 0)
    };
    if ANTONYMS.iter().any(|(x, y)| swapped(x, y)) {
        return true;
    }
    // Prefixed opposites among the words that differ.
    let changed: Vec<&String> = ma
        .keys()
        .chain(mb.keys())
        .filter(|w| w.chars().count() >= 3)
        .collect();
    let present = |w: &str| ma.contains_key(w) || mb.contains_key(w);
    changed.iter().any(|w| {
        let negated = NEGATING_PREFIXES.iter().any(|p| {
            let opposite = format!("{p}{w}");
            present(&opposite) && swapped(w, &opposite)
        });
        let flipped = OPPOSITE_PREFIXES.iter().any(|(p, q)| {
            w.strip_prefix(p)
                .filter(|rest| rest.chars().count() >= 3)
                .is_some_and(|rest| {
                    let opposite = format!("{q}{rest}");
                    present(&opposite) && swapped(w, &opposite)
                })
        });
        negated || flipped
    })
}

/// Words that relate the words around them in an order that matters.
const RELATIONS: &[&str] = &["to", "into", "from", "than", "vs", "versus"];

/// Whether a relation word is followed by a different content word in each
/// prompt although both have both words (`convert json to yaml` / `convert
/// yaml to json`).
fn relation_swap(a: &Analysis, b: &Analysis, ca: &BTreeSet<String>, cb: &BTreeSet<String>) -> bool {
    let pairs = |x: &Analysis| -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (i, w) in x.words.iter().enumerate() {
            if !RELATIONS.contains(&w.lower.as_str()) {
                continue;
            }
            let next = x
                .words
                .iter()
                .skip(i + 1)
                .take(4)
                .find(|n| is_content(&n.lower));
            if let Some(n) = next {
                out.insert((w.lower.clone(), stem(&n.lower)));
            }
        }
        out
    };
    let (pa, pb) = (pairs(a), pairs(b));
    let one_way = |p: &BTreeSet<(String, String)>,
                   q: &BTreeSet<(String, String)>,
                   other: &BTreeSet<String>| {
        p.difference(q)
            .any(|(rel, w)| other.contains(w) && q.iter().any(|(r2, w2)| r2 == rel && w2 != w))
    };
    one_way(&pa, &pb, cb) || one_way(&pb, &pa, ca)
}

/// Words that carry no content of their own in a support question:
/// articles, pronouns, auxiliaries, prepositions, question words and
/// politeness. (Negations, numbers and antonyms are judged separately.)
const STOP_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "i",
    "me",
    "my",
    "mine",
    "myself",
    "you",
    "your",
    "yours",
    "we",
    "us",
    "our",
    "ours",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "he",
    "him",
    "his",
    "she",
    "her",
    "this",
    "that",
    "these",
    "those",
    "is",
    "am",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "do",
    "does",
    "did",
    "doing",
    "have",
    "has",
    "had",
    "having",
    "can",
    "could",
    "will",
    "would",
    "shall",
    "should",
    "may",
    "might",
    "must",
    "of",
    "in",
    "on",
    "at",
    "by",
    "for",
    "with",
    "about",
    "as",
    "into",
    "to",
    "from",
    "and",
    "or",
    "but",
    "if",
    "then",
    "so",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "when",
    "where",
    "why",
    "how",
    "there",
    "here",
    "some",
    "any",
    "just",
    "also",
    "way",
    "please",
    "kindly",
    "thanks",
    "thank",
    "hi",
    "hello",
    "hey",
    "tell",
    "know",
    "want",
    "like",
    "wondering",
    "possible",
    "able",
    "let",
    "s",
    "t",
    "d",
    "ll",
    "re",
    "ve",
    "m",
    "o",
    "actually",
    "really",
    "exactly",
    "too",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(a: &str, b: &str) -> Result<(), GuardMiss> {
        let r = compare(a, b, &Guards::default());
        assert_eq!(
            r,
            compare(b, a, &Guards::default()),
            "not symmetric: {a:?} / {b:?}"
        );
        r
    }

    #[test]
    fn true_paraphrases_pass() {
        for (a, b) in [
            (
                "How do I reset my password?",
                "How can I reset my password?",
            ),
            (
                "What is the capital of France?",
                "What's the capital city of France?",
            ),
            ("What is 2+2?", "what's two plus two"),
            (
                "How do I cancel order 12345?",
                "Please help me cancel order 12345.",
            ),
            (
                "Can I change my email address?",
                "Is it possible to change my email address?",
            ),
            ("Where is my refund?", "where's my refund"),
            ("How Do I Reset My Password", "how do i reset my password"),
            (
                "On the mobile app, how do I log out?",
                "How do I log out on the mobile app?",
            ),
            ("Why doesn't the app start?", "Why does the app not start?"),
            ("I can't log in", "I cannot log in"),
            ("I dont have access", "I don\u{2019}t have access"),
            (
                "Is there a fee for 1,000 users?",
                "Is there a fee for 1000 users?",
            ),
            (
                "Does it support twenty one seats?",
                "Does it support 21 seats?",
            ),
            ("Run `ls  -la` please", "Please run `ls -la`"),
        ] {
            assert_eq!(check(a, b), Ok(()), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn numbers_and_operators_differ() {
        for (a, b) in [
            ("what is 2+2", "what is 2+3"),
            ("cancel order 12345", "cancel order 12346"),
            ("what is 10 - 3", "what is 10 + 3"),
            ("what is 6*7", "what is 6/7"),
            ("what is 10 minus 3", "what is 3 minus 10"),
            ("Is x > 5?", "Is x < 5?"),
            ("Can I add two users?", "Can I add three users?"),
            ("Can I add twenty one users?", "Can I add twenty users?"),
            ("What is 1.5 times 2?", "What is 1.05 times 2?"),
            ("Refund within 30 days?", "Refund within 30% days?"),
            ("What is the second invoice?", "What is the third invoice?"),
        ] {
            assert_eq!(check(a, b), Err(GuardMiss::Numbers), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn hyphens_and_prose_slashes_are_not_operators() {
        assert_eq!(check("How do I sign-in?", "How do I sign in?"), Ok(()));
        assert_eq!(
            check("Is e-mail support open?", "Is email support open?").err(),
            Some(GuardMiss::ContentWords)
        );
        assert_eq!(
            check("What is 5-3?", "What is 53?"),
            Err(GuardMiss::Numbers)
        );
    }

    #[test]
    fn negations_differ() {
        for (a, b) in [
            ("Is Python slow?", "Is Python not slow?"),
            ("Can I get a refund?", "Can I not get a refund?"),
            ("Why does the app start?", "Why doesn't the app start?"),
            ("Why does the app start?", "Why doesnt the app start?"),
            (
                "Why does the app start?",
                "Why doesn\u{2019}t the app start?",
            ),
            ("I can log in", "I cant log in"),
            ("I can log in", "I cannot log in"),
            ("Can I pay with a card?", "Can I pay without a card?"),
            ("Has anyone replied?", "Has nobody replied?"),
            ("Do you ever refund?", "Do you never refund?"),
            ("Is there a fee?", "Is there no fee?"),
        ] {
            assert_eq!(check(a, b), Err(GuardMiss::Negation), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn names_and_identifiers_differ() {
        for (a, b) in [
            ("Who is the CEO of Apple?", "Who is the CEO of Google?"),
            (
                "Is Apple bigger than Google?",
                "Is Google bigger than Apple?",
            ),
            (
                "Translate 'hello' to French",
                "Translate 'goodbye' to French",
            ),
            (
                "Translate \"good night\" to French",
                "Translate \"good day\" to French",
            ),
            ("Where is ORD-1234?", "Where is ORD-1235?"),
            (
                "Email jane@example.com the invoice",
                "Email john@example.com the invoice",
            ),
            (
                "Is https://example.com/a down?",
                "Is https://example.com/b down?",
            ),
            ("Delete /var/log/app.log", "Delete /var/log/db.log"),
            ("What does user_id mean?", "What does user_name mean?"),
            ("What does getUser return?", "What does getUsers return?"),
            ("Does it work on iPhone?", "Does it work on iPad?"),
        ] {
            assert_eq!(check(a, b), Err(GuardMiss::Entities), "{a:?} / {b:?}");
        }
        // Case alone is not a different name.
        assert_eq!(
            check("Who is the CEO of Apple?", "who is the ceo of apple"),
            Ok(())
        );
    }

    #[test]
    fn code_differs() {
        for (a, b) in [
            ("Why does `x = 1` fail?", "Why does `x = 2` fail?"),
            (
                "Fix this:\n```python\nprint(a)\n```",
                "Fix this:\n```python\nprint(b)\n```",
            ),
            ("What does foo() return?", "What does bar() return?"),
            ("Is a::b public?", "Is a::c public?"),
        ] {
            assert_eq!(check(a, b), Err(GuardMiss::Code), "{a:?} / {b:?}");
        }
        // Whitespace and the fence's language tag do not matter.
        assert_eq!(
            check(
                "Fix:\n```rust\nfn main() {\n    run();\n}\n```",
                "Fix:\n```\nfn main() { run(); }\n```"
            ),
            Ok(())
        );
    }

    #[test]
    fn antonyms_and_swaps_differ() {
        for (a, b) in [
            ("How do I enable dark mode?", "How do I disable dark mode?"),
            ("How do I increase my limit?", "How do I decrease my limit?"),
            (
                "Can I cancel before shipping?",
                "Can I cancel after shipping?",
            ),
            ("What is the min order size?", "What is the max order size?"),
            (
                "How do I turn on notifications?",
                "How do I turn off notifications?",
            ),
            ("How do I open a ticket?", "How do I close a ticket?"),
            ("How do I lock my card?", "How do I unlock my card?"),
            ("How do I sign in?", "How do I sign out?"),
            (
                "How do I convert json to yaml?",
                "How do I convert yaml to json?",
            ),
            (
                "Is postgres faster than mysql?",
                "Is mysql faster than postgres?",
            ),
        ] {
            assert_eq!(check(a, b), Err(GuardMiss::ContentWords), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn content_word_bound() {
        let a = "How do I reset my password?";
        let b = "How do I reset my password and delete my account forever?";
        assert_eq!(check(a, b), Err(GuardMiss::ContentWords));
        // One added content word is within the default bound; a bound of 0 is not.
        let c = "How do I reset my account password?";
        assert_eq!(check(a, c), Ok(()));
        let strict = Guards {
            max_content_word_diff: 0,
            ..Guards::default()
        };
        assert_eq!(compare(a, c, &strict), Err(GuardMiss::ContentWords));
        let off = Guards {
            max_content_word_diff: u32::MAX,
            ..Guards::default()
        };
        assert_eq!(compare(a, b, &off), Ok(()));
    }

    #[test]
    fn guards_can_be_turned_off() {
        let none = Guards {
            numbers: false,
            negations: false,
            entities: false,
            code: false,
            max_content_word_diff: u32::MAX,
        };
        for (a, b) in [
            ("what is 2+2", "what is 2+3"),
            ("Is Python slow?", "Is Python not slow?"),
            ("Who is the CEO of Apple?", "Who is the CEO of Google?"),
            ("Why does `x = 1` fail?", "Why does `x = 2` fail?"),
        ] {
            assert_eq!(compare(a, b, &none), Ok(()));
        }
    }

    #[test]
    fn default_guards() {
        let g = Guards::default();
        assert!(g.numbers && g.negations && g.entities && g.code);
        assert_eq!(g.max_content_word_diff, DEFAULT_MAX_CONTENT_WORD_DIFF);
        assert_eq!(DEFAULT_MAX_CONTENT_WORD_DIFF, 2);
    }

    #[test]
    fn odd_input_does_not_panic() {
        for s in [
            "",
            "`",
            "```",
            "``` ```",
            "'",
            "\"",
            "''",
            "-",
            "/",
            "*",
            "1,",
            "1.",
            ".5",
            "١٢٣",
            "ǅungla Ⅻ",
            "\u{0301}x",
            "a\u{0000}b",
            "`x` `",
            "n't",
            "'s",
            "hundred billion trillion trillion trillion",
            "💥 2+2 = 4 💥",
            "İstanbul",
            "ß ẞ",
        ] {
            let _ = check(s, "What is 2+2?");
            assert_eq!(check(s, s), Ok(()), "{s:?}");
        }
    }

    #[test]
    fn long_adversarial_input_is_linear() {
        // Quadratic scans would take minutes here; linear ones milliseconds.
        for unit in [" 'a", "\"", "((", "`", "x(", "one ", "a-", "'s "] {
            let big = unit.repeat(100_000 / unit.len());
            let started = std::time::Instant::now();
            assert_eq!(check(&big, &big), Ok(()));
            let _ = check(&big, "What is 2+2?");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{unit:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn total_symmetric_and_reflexive(a in any::<String>(), b in any::<String>()) {
            let g = Guards::default();
            prop_assert_eq!(compare(&a, &a, &g), Ok(()));
            prop_assert_eq!(compare(&a, &b, &g).is_ok(), compare(&b, &a, &g).is_ok());
        }

        #[test]
        fn total_on_prompt_like_text(a in "[a-zA-Z0-9 `'\"’+*/=<>%^.,!?:;()\\[\\]{}@_-]{0,60}", b in "[a-zA-Z0-9 `'\"’+*/=<>%^.,!?:;()\\[\\]{}@_-]{0,60}") {
            let g = Guards::default();
            prop_assert_eq!(compare(&a, &a, &g), Ok(()));
            prop_assert_eq!(compare(&a, &b, &g).is_ok(), compare(&b, &a, &g).is_ok());
        }
    }
}
