//! The semantic cache's guards: before a stored answer to a *similar*
//! prompt is served, the two prompts are compared for the differences that
//! change the answer while keeping the embeddings close — numbers and
//! operators, negations, names and identifiers, code — and for how many
//! content words differ. Any such difference is a miss. (Skeleton: the
//! comparison is filled in on its own branch.)

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

/// Whether the answer stored for `cached` may answer `incoming` as far as
/// the guards can tell: `Ok` when none finds a difference.
pub fn compare(cached: &str, incoming: &str, guards: &Guards) -> Result<(), GuardMiss> {
    let _ = (cached, incoming, guards);
    unimplemented!("filled in by the guards branch")
}
