//! Anthropic's minimum cacheable prompt length per model, as data.
//!
//! Anthropic caches a prompt prefix only when it is at least a model-dependent
//! number of tokens long; a shorter prefix marked with `cache_control` is
//! processed (and billed) without caching, and without an error. The sidecar
//! inserts automatic breakpoints only past this length (a RoutingPolicy may
//! override it).
//!
//! Source: [`SOURCE`] ("Cache limitations": "The minimum cacheable prompt
//! length is …"), read on [`READ_ON`]:
//!
//! | models | minimum |
//! |---|---|
//! | Claude Opus 4.5, Opus 4.6 (and the later Opus 4.x) | 4,096 |
//! | Claude Haiku 4.5 | 4,096 |
//! | Claude Haiku 3.5, Haiku 3 | 2,048 |
//! | Claude Sonnet 4.6, 4.5, 4, Opus 4.1, Opus 4, Sonnet 3.7 (and the older Sonnet 3.5, Opus 3) | 1,024 |
//! | any other model | 1,024 ([`FALLBACK_MIN_TOKENS`]) |
//!
//! The later Opus 4.x (4.7) are put in the 4,096 row as the page's newest Opus
//! rows are; a model the table does not know gets the documented 1,024, the
//! smallest minimum of the current Sonnet and Opus 4 rows.
//!
//! Model ids are matched by family (`opus`, `sonnet`, `haiku`) and version,
//! in every spelling the APIs use: `claude-haiku-4-5-20251001`,
//! `claude-haiku-4-5`, `claude-haiku-4.5`, `claude-3-5-haiku-20241022`,
//! Bedrock's `us.anthropic.claude-haiku-4-5-20251001-v1:0`, Vertex's
//! `claude-haiku-4-5@20251001`, routers' `anthropic/claude-haiku-4.5`.

/// Where the table was read.
pub const SOURCE: &str = "https://platform.claude.com/docs/en/build-with-claude/prompt-caching";

/// When the table was read from [`SOURCE`] (ISO date).
pub const READ_ON: &str = "2026-12-06";

/// The minimum for a model the table does not know.
pub const FALLBACK_MIN_TOKENS: u64 = 1024;

/// A Claude model family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Claude Opus.
    Opus,
    /// Claude Sonnet.
    Sonnet,
    /// Claude Haiku.
    Haiku,
}

/// One row of the table: the models of a family whose version is in
/// `from..=to` (major, minor; `claude-sonnet-4` is 4.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheMinimum {
    /// The family.
    pub family: Family,
    /// The lowest version of the row, inclusive.
    pub from: (u32, u32),
    /// The highest version of the row, inclusive.
    pub to: (u32, u32),
    /// The minimum cacheable prompt length, in tokens.
    pub min_tokens: u64,
    /// The models as Anthropic's page names them.
    pub models: &'static str,
}

/// Anthropic's minimum cacheable prompt lengths (see the module docs).
pub const ANTHROPIC_CACHE_MINIMUMS: &[CacheMinimum] = &[
    CacheMinimum {
        family: Family::Opus,
        from: (4, 5),
        to: (4, u32::MAX),
        min_tokens: 4096,
        models: "Claude Opus 4.5, Claude Opus 4.6 and later Opus 4.x",
    },
    CacheMinimum {
        family: Family::Opus,
        from: (4, 0),
        to: (4, 4),
        min_tokens: 1024,
        models: "Claude Opus 4, Claude Opus 4.1",
    },
    CacheMinimum {
        family: Family::Opus,
        from: (3, 0),
        to: (3, u32::MAX),
        min_tokens: 1024,
        models: "Claude Opus 3",
    },
    CacheMinimum {
        family: Family::Sonnet,
        from: (4, 0),
        to: (4, u32::MAX),
        min_tokens: 1024,
        models: "Claude Sonnet 4, Claude Sonnet 4.5, Claude Sonnet 4.6",
    },
    CacheMinimum {
        family: Family::Sonnet,
        from: (3, 0),
        to: (3, u32::MAX),
        min_tokens: 1024,
        models: "Claude Sonnet 3.7, Claude Sonnet 3.5",
    },
    CacheMinimum {
        family: Family::Haiku,
        from: (4, 5),
        to: (4, u32::MAX),
        min_tokens: 4096,
        models: "Claude Haiku 4.5",
    },
    CacheMinimum {
        family: Family::Haiku,
        from: (3, 0),
        to: (3, u32::MAX),
        min_tokens: 2048,
        models: "Claude Haiku 3.5, Claude Haiku 3",
    },
];

/// The minimum cacheable prompt length of `model`, in tokens:
/// [`ANTHROPIC_CACHE_MINIMUMS`]'s row for it, or [`FALLBACK_MIN_TOKENS`].
#[must_use]
pub fn anthropic_min_cacheable_tokens(model: &str) -> u64 {
    anthropic_cache_minimum(model).map_or(FALLBACK_MIN_TOKENS, |row| row.min_tokens)
}

/// The row of [`ANTHROPIC_CACHE_MINIMUMS`] for `model`, if one covers it.
#[must_use]
pub fn anthropic_cache_minimum(model: &str) -> Option<&'static CacheMinimum> {
    let (family, version) = claude_version(model)?;
    ANTHROPIC_CACHE_MINIMUMS
        .iter()
        .find(|row| row.family == family && (row.from..=row.to).contains(&version))
}

/// The family and version (major, minor) of a Claude model id.
///
/// The name is what follows the last `/` (a router's `anthropic/`), up to an
/// `@` (Vertex's version) or `:` (Bedrock's `-v1:0`, a router's
/// `:thinking`), from `claude` on (Bedrock's `us.anthropic.`). Its `-`, `.`
/// and `_` separated words are read in any order: the family word, and the
/// first two numbers of at most two digits (a date suffix has eight).
#[must_use]
pub fn claude_version(model: &str) -> Option<(Family, (u32, u32))> {
    let lower = model.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or_default();
    let name = name.split(['@', ':']).next().unwrap_or_default();
    let name = name.get(name.find("claude")? + "claude".len()..)?;
    let mut family = None;
    let mut numbers = Vec::with_capacity(2);
    for word in name.split(['-', '.', '_']) {
        match word {
            "opus" => family = family.or(Some(Family::Opus)),
            "sonnet" => family = family.or(Some(Family::Sonnet)),
            "haiku" => family = family.or(Some(Family::Haiku)),
            _ if (1..=2).contains(&word.len()) && numbers.len() < 2 => {
                if let Ok(n) = word.parse::<u32>() {
                    numbers.push(n);
                }
            }
            _ => {}
        }
    }
    let major = *numbers.first()?;
    Some((family?, (major, numbers.get(1).copied().unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn min(model: &str) -> u64 {
        anthropic_min_cacheable_tokens(model)
    }

    #[test]
    fn opus_4_5_and_later_need_4096() {
        for model in [
            "claude-opus-4-5-20251101",
            "claude-opus-4-5",
            "claude-opus-4.5",
            "claude-opus-4-6",
            "claude-opus-4-7",
            "anthropic/claude-opus-4.6:thinking",
            "global.anthropic.claude-opus-4-5-20251101-v1:0",
            "claude-opus-4-5@20251101",
            "Claude-Opus-4-5",
        ] {
            assert_eq!(min(model), 4096, "{model}");
        }
    }

    #[test]
    fn haiku_4_5_needs_4096() {
        for model in [
            "claude-haiku-4-5-20251001",
            "claude-haiku-4-5",
            "claude-haiku-4.5",
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "claude-haiku-4-5@20251001",
        ] {
            assert_eq!(min(model), 4096, "{model}");
        }
    }

    #[test]
    fn haiku_3_5_and_3_need_2048() {
        for model in [
            "claude-3-5-haiku-20241022",
            "claude-3-5-haiku-latest",
            "claude-3-haiku-20240307",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "claude-3-5-haiku@20241022",
            "claude-haiku-3.5",
        ] {
            assert_eq!(min(model), 2048, "{model}");
        }
    }

    #[test]
    fn sonnet_opus_4_and_4_1_sonnet_3_7_need_1024() {
        for model in [
            "claude-sonnet-4-20250514",
            "claude-sonnet-4-0",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4.5",
            "claude-sonnet-4-6",
            "claude-opus-4-20250514",
            "claude-opus-4-1-20250805",
            "claude-opus-4.1",
            "claude-3-7-sonnet-20250219",
            "claude-3-7-sonnet-latest",
            "claude-3-5-sonnet-20241022",
            "claude-3-opus-20240229",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "claude-sonnet-4@20250514",
        ] {
            assert_eq!(min(model), 1024, "{model}");
        }
    }

    #[test]
    fn unknown_models_get_the_documented_fallback() {
        for model in [
            "",
            "gpt-4o",
            "claude",
            "claude-2.1",
            "claude-instant-1.2",
            "claude-opus",
            "claude-haiku-5",
            "claude-opus-5-20270101",
        ] {
            assert_eq!(min(model), FALLBACK_MIN_TOKENS, "{model}");
            assert_eq!(FALLBACK_MIN_TOKENS, 1024);
        }
        assert_eq!(anthropic_cache_minimum("gpt-4o"), None);
    }

    #[test]
    fn versions_are_read_in_both_word_orders() {
        assert_eq!(
            claude_version("claude-3-5-haiku-20241022"),
            Some((Family::Haiku, (3, 5)))
        );
        assert_eq!(
            claude_version("claude-haiku-4-5-20251001"),
            Some((Family::Haiku, (4, 5)))
        );
        assert_eq!(
            claude_version("claude-sonnet-4-20250514"),
            Some((Family::Sonnet, (4, 0)))
        );
        assert_eq!(
            claude_version("claude-3-opus-20240229"),
            Some((Family::Opus, (3, 0)))
        );
    }

    #[test]
    fn the_table_names_its_source_and_every_row_is_one_of_the_documented_sizes() {
        assert!(SOURCE.starts_with("https://"));
        assert_eq!(READ_ON.len(), 10);
        for row in ANTHROPIC_CACHE_MINIMUMS {
            assert!([1024, 2048, 4096].contains(&row.min_tokens), "{row:?}");
            assert!(row.from <= row.to, "{row:?}");
        }
        // No two rows of a family overlap.
        for (i, a) in ANTHROPIC_CACHE_MINIMUMS.iter().enumerate() {
            for b in ANTHROPIC_CACHE_MINIMUMS.iter().skip(i + 1) {
                let disjoint = a.family != b.family || a.to < b.from || b.to < a.from;
                assert!(disjoint, "{a:?} overlaps {b:?}");
            }
        }
    }
}
