//! The match clauses of the price data (`equals`, `starts_with`, `ends_with`,
//! `contains`, `regex`, `or`, `and`) and how a model name is tested against
//! them.
//!
//! Matching follows genai-prices: the model name is lower-cased and compared
//! with clause strings that are lower-cased too (the generator stores them
//! lower-cased), except `regex`, which is kept verbatim and searched in the
//! lower-cased name (Python `re.search`).
//!
//! Regular expressions are compiled by the generator into a small
//! [`Pattern`] (literals, `\d`, `[...]` classes, `(?:a|b)` alternations of
//! literals, `{n}` repeats, `^` / `$` anchors). That covers every regex in
//! the data; the generator rejects anything else with a message, so a data
//! update that needs more fails loudly at generation time rather than
//! mis-pricing at run time. No regex engine runs per request.

/// One match clause, with its strings already lower-cased (except regexes).
#[derive(Debug)]
pub(crate) enum Clause {
    /// The whole name equals the string.
    Equals(&'static str),
    /// The name starts with the string.
    StartsWith(&'static str),
    /// The name ends with the string.
    EndsWith(&'static str),
    /// The name contains the string.
    Contains(&'static str),
    /// The regex matches somewhere in the name.
    Regex(&'static Pattern),
    /// Any of the clauses matches.
    Or(&'static [Clause]),
    /// All of the clauses match.
    And(&'static [Clause]),
}

/// A compiled regular expression from the restricted subset described in the
/// module docs. Matching is a small backtracking walk over [`Atom`]s.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The regex as written in the data, for diagnostics.
    #[expect(dead_code, reason = "only read through Debug, for diagnostics")]
    pub source: &'static str,
    /// `^`: the match must start at the beginning of the name.
    pub anchor_start: bool,
    /// `$`: the match must end at the end of the name.
    pub anchor_end: bool,
    /// The sequence to match.
    pub atoms: &'static [Atom],
}

/// One element of a [`Pattern`].
#[derive(Debug)]
pub(crate) enum Atom {
    /// These exact characters.
    Lit(&'static str),
    /// One ASCII digit (`\d`).
    Digit,
    /// One of these characters (`[...]`, ranges expanded).
    Class(&'static str),
    /// One of these literal strings (`(?:a|b|c)`), tried in order.
    Alt(&'static [&'static str]),
}

// === impl Clause ===

impl Clause {
    /// Whether the lower-cased model name `name` matches.
    pub(crate) fn is_match(&self, name: &str) -> bool {
        match self {
            Clause::Equals(s) => name == *s,
            Clause::StartsWith(s) => name.starts_with(s),
            Clause::EndsWith(s) => name.ends_with(s),
            Clause::Contains(s) => name.contains(s),
            Clause::Regex(p) => p.is_match(name),
            Clause::Or(cs) => cs.iter().any(|c| c.is_match(name)),
            Clause::And(cs) => cs.iter().all(|c| c.is_match(name)),
        }
    }

    /// If this clause can only match names from a finite set of literals,
    /// calls `f` with each of them and returns `true`; otherwise returns
    /// `false` (and may have called `f` for some literals). The set may be a
    /// superset of what actually matches (for `and`), never a subset.
    pub(crate) fn literals(&self, f: &mut impl FnMut(&'static str)) -> bool {
        match self {
            Clause::Equals(s) => {
                f(s);
                true
            }
            Clause::Or(cs) => cs.iter().all(|c| c.literals(f)),
            // Everything an `and` matches, its first literal-only part matches.
            Clause::And(cs) => cs
                .iter()
                .find(|c| c.is_literal_only())
                .is_some_and(|c| c.literals(f)),
            Clause::StartsWith(_)
            | Clause::EndsWith(_)
            | Clause::Contains(_)
            | Clause::Regex(_) => false,
        }
    }

    fn is_literal_only(&self) -> bool {
        self.literals(&mut |_| {})
    }
}

// === impl Pattern ===

impl Pattern {
    /// Whether the pattern matches somewhere in `text` (`re.search`).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        if self.anchor_start {
            return self.match_here(self.atoms, text);
        }
        text.char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()))
            .any(|i| {
                text.get(i..)
                    .is_some_and(|rest| self.match_here(self.atoms, rest))
            })
    }

    fn match_here(&self, atoms: &[Atom], text: &str) -> bool {
        let Some((first, rest)) = atoms.split_first() else {
            return !self.anchor_end || text.is_empty();
        };
        match first {
            Atom::Lit(lit) => text
                .strip_prefix(lit)
                .is_some_and(|t| self.match_here(rest, t)),
            Atom::Alt(options) => options.iter().any(|o| {
                text.strip_prefix(o)
                    .is_some_and(|t| self.match_here(rest, t))
            }),
            Atom::Digit | Atom::Class(_) => {
                let mut chars = text.chars();
                match chars.next() {
                    Some(c) if first.accepts(c) => self.match_here(rest, chars.as_str()),
                    _ => false,
                }
            }
        }
    }
}

// === impl Atom ===

impl Atom {
    fn accepts(&self, c: char) -> bool {
        match self {
            Atom::Digit => c.is_ascii_digit(),
            Atom::Class(chars) => chars.contains(c),
            Atom::Lit(_) | Atom::Alt(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Atom::*, Clause::*, *};

    static GROK: Pattern = Pattern {
        source: r"^grok-4\.3-\d{8}$",
        anchor_start: true,
        anchor_end: true,
        atoms: &[
            Lit("grok-4.3-"),
            Digit,
            Digit,
            Digit,
            Digit,
            Digit,
            Digit,
            Digit,
            Digit,
        ],
    };
    static MISTRAL: Pattern = Pattern {
        source: "(?:mi|code|dev|magi|mini)stral",
        anchor_start: false,
        anchor_end: false,
        atoms: &[Alt(&["mi", "code", "dev", "magi", "mini"]), Lit("stral")],
    };
    static O_SERIES: Pattern = Pattern {
        source: "^o[134]",
        anchor_start: true,
        anchor_end: false,
        atoms: &[Lit("o"), Class("134")],
    };
    static DOLLAR: Pattern = Pattern {
        source: "a[bc]$",
        anchor_start: false,
        anchor_end: true,
        atoms: &[Lit("a"), Class("bc")],
    };

    #[test]
    fn patterns_match_like_re_search() {
        assert!(GROK.is_match("grok-4.3-20260115"));
        assert!(!GROK.is_match("grok-4.3-2026011"));
        assert!(!GROK.is_match("grok-4.3-202601150"));
        assert!(!GROK.is_match("x-grok-4.3-20260115"));
        assert!(!GROK.is_match("grok-4x3-20260115"));

        assert!(MISTRAL.is_match("mistral-large-latest"));
        assert!(MISTRAL.is_match("codestral-2501"));
        assert!(
            MISTRAL.is_match("open-ministral-8b"),
            "backtracks from `mi` to `mini`"
        );
        assert!(MISTRAL.is_match("magistral-medium"));
        assert!(!MISTRAL.is_match("mixtral-8x7b"));

        assert!(O_SERIES.is_match("o3-mini"));
        assert!(O_SERIES.is_match("o4"));
        assert!(!O_SERIES.is_match("o2"));
        assert!(!O_SERIES.is_match("gpt-o3"));

        assert!(DOLLAR.is_match("xxab"));
        assert!(DOLLAR.is_match("añac"));
        assert!(!DOLLAR.is_match("abc"));
        assert!(!DOLLAR.is_match("a"));
    }

    static CLAUSE: Clause = Or(&[
        And(&[StartsWith("claude-"), Contains("sonnet"), EndsWith("-v1")]),
        Equals("x"),
        Regex(&O_SERIES),
    ]);

    #[test]
    fn clauses_combine() {
        assert!(CLAUSE.is_match("claude-3-sonnet-v1"));
        assert!(!CLAUSE.is_match("claude-3-sonnet-v2"));
        assert!(CLAUSE.is_match("x"));
        assert!(!CLAUSE.is_match("xx"));
        assert!(CLAUSE.is_match("o1-pro"));
    }

    #[test]
    fn literal_sets() {
        let collect = |c: &Clause| {
            let mut v = Vec::new();
            c.literals(&mut |s| v.push(s)).then_some(v)
        };
        assert_eq!(
            collect(&Or(&[Equals("a"), Equals("b")])),
            Some(vec!["a", "b"])
        );
        assert_eq!(
            collect(&And(&[StartsWith("a"), Equals("ab")])),
            Some(vec!["ab"])
        );
        assert_eq!(collect(&Or(&[Equals("a"), StartsWith("b")])), None);
        assert_eq!(collect(&CLAUSE), None);
    }
}
