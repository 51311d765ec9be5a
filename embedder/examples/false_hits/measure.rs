//! The false-hit measurement shared by the `false_hits` example and the
//! `false_hits` regression test: read labelled question pairs (our
//! `bench/semantic/pairs.tsv`, or MRPC's files), embed every distinct text
//! once with the real model, and count, per `minSimilarity`, how many
//! paraphrases a semantic cache would hit and how many non-paraphrases it
//! would falsely hit — on cosine alone and with the guards.

#![allow(dead_code)] // the example and the test each use a part

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    path::Path,
};

use tokenwarden_core::semantic_guard::{GuardMiss, Guards, compare};
use tokenwarden_embedder::{EmbedError, Embedder};

/// One labelled pair.
#[derive(Debug, Clone)]
pub struct Pair {
    /// True when the two texts ask the same thing.
    pub paraphrase: bool,
    /// What kind of edit made the pair (`number`, `howdo`, … or `mrpc`).
    pub kind: String,
    pub a: String,
    pub b: String,
}

/// A pair with its cosine.
#[derive(Debug, Clone)]
pub struct Scored {
    pub pair: Pair,
    pub cosine: f32,
}

/// Hits among paraphrases and among the others at one setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub paraphrases: usize,
    pub paraphrase_hits: usize,
    pub negatives: usize,
    pub false_hits: usize,
}

impl Tally {
    /// Paraphrase hit rate in percent.
    pub fn hit_pct(&self) -> f64 {
        pct(self.paraphrase_hits, self.paraphrases)
    }

    /// False hits per 1,000 negatives.
    pub fn per_mille(&self) -> f64 {
        if self.negatives == 0 {
            return 0.0;
        }
        self.false_hits as f64 * 1000.0 / self.negatives as f64
    }
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 * 100.0 / d as f64
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// Reads `pairs.tsv` (header `label kind a b`; `\t`, `\n`, `\\` escaped).
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [label, kind, a, b] = cols[..] else {
            return Err(format!("{}:{}: want 4 columns", path.display(), i + 1));
        };
        out.push(Pair {
            paraphrase: label == "1",
            kind: kind.to_string(),
            a: unescape(a),
            b: unescape(b),
        });
    }
    Ok(out)
}

/// The MRPC files in `dir` (`msr-para-{train,val,test}.tsv`: Quality, #1 ID,
/// #2 ID, #1 String, #2 String; no quoting; Quality 1 = paraphrase).
pub fn read_mrpc(dir: &Path) -> Result<Vec<Pair>, String> {
    let mut out = Vec::new();
    for split in ["train", "val", "test"] {
        let path = dir.join(format!("msr-para-{split}.tsv"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let [quality, _, _, a, b] = cols[..] else {
                return Err(format!("{}:{}: want 5 columns", path.display(), i + 1));
            };
            out.push(Pair {
                paraphrase: quality == "1",
                kind: format!("mrpc-{split}"),
                a: a.to_string(),
                b: b.to_string(),
            });
        }
    }
    Ok(out)
}

/// Embeds every distinct text once and scores each pair.
pub fn score(embedder: &Embedder, pairs: &[Pair]) -> Result<Vec<Scored>, EmbedError> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<&str> = Vec::new();
    for p in pairs {
        for t in [p.a.as_str(), p.b.as_str()] {
            index.entry(t).or_insert_with(|| {
                texts.push(t);
                texts.len() - 1
            });
        }
    }
    // Similar lengths together: less padding per batch.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    for batch in order.chunks(64) {
        let input: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
        for (&i, v) in batch.iter().zip(embedder.embed(&input)?) {
            vectors[i] = v;
        }
    }
    Ok(pairs
        .iter()
        .map(|p| {
            let (va, vb) = (&vectors[index[p.a.as_str()]], &vectors[index[p.b.as_str()]]);
            Scored {
                pair: p.clone(),
                cosine: va.iter().zip(vb).map(|(x, y)| x * y).sum(),
            }
        })
        .collect())
}

/// The guards' verdict on every pair.
pub fn verdicts(scored: &[Scored], guards: &Guards) -> Vec<Result<(), GuardMiss>> {
    scored
        .iter()
        .map(|s| compare(&s.pair.a, &s.pair.b, guards))
        .collect()
}

/// Counts at `min_similarity`; with `verdicts`, a hit must also pass the guards.
pub fn tally(
    scored: &[Scored],
    min_similarity: f32,
    verdicts: Option<&[Result<(), GuardMiss>]>,
) -> Tally {
    let mut t = Tally::default();
    for (i, s) in scored.iter().enumerate() {
        let passes = verdicts.is_none_or(|v| v.get(i).is_some_and(Result::is_ok));
        let hit = s.cosine >= min_similarity && passes;
        if s.pair.paraphrase {
            t.paraphrases += 1;
            t.paraphrase_hits += usize::from(hit);
        } else {
            t.negatives += 1;
            t.false_hits += usize::from(hit);
        }
    }
    t
}

/// The sweep of `minSimilarity` × {cosine only, cosine + guards} as markdown.
pub fn sweep_table(scored: &[Scored], thresholds: &[f32], guards: &Guards) -> String {
    let v = verdicts(scored, guards);
    let mut out = String::from(
        "| minSimilarity | paraphrase hits, cosine only | false hits, cosine only | per 1,000 \
         | paraphrase hits, + guards | false hits, + guards | per 1,000 |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for &th in thresholds {
        let c = tally(scored, th, None);
        let g = tally(scored, th, Some(&v));
        let _ = writeln!(
            out,
            "| {th:.2} | {:.1} % ({}/{}) | {}/{} | {:.2} | {:.1} % ({}/{}) | {}/{} | {:.2} |",
            c.hit_pct(),
            c.paraphrase_hits,
            c.paraphrases,
            c.false_hits,
            c.negatives,
            c.per_mille(),
            g.hit_pct(),
            g.paraphrase_hits,
            g.paraphrases,
            g.false_hits,
            g.negatives,
            g.per_mille(),
        );
    }
    out
}

/// The content-word bound's effect at one threshold (the other guards on).
pub fn bound_table(scored: &[Scored], min_similarity: f32, bounds: &[u32]) -> String {
    let mut out = format!(
        "| content-word bound (at {min_similarity:.2}) | paraphrase hits | false hits | per 1,000 |\n|---|---|---|---|\n"
    );
    for &b in bounds {
        let g = Guards {
            max_content_word_diff: b,
            ..Guards::default()
        };
        let t = tally(scored, min_similarity, Some(&verdicts(scored, &g)));
        let name = if b == u32::MAX {
            "off".to_string()
        } else {
            b.to_string()
        };
        let _ = writeln!(
            out,
            "| {name} | {:.1} % ({}/{}) | {}/{} | {:.2} |",
            t.hit_pct(),
            t.paraphrase_hits,
            t.paraphrases,
            t.false_hits,
            t.negatives,
            t.per_mille()
        );
    }
    out
}

/// Per kind at one threshold: pairs, cosine hits, hits that pass the
/// guards, and which guard stopped the rest.
pub fn kind_table(scored: &[Scored], min_similarity: f32, guards: &Guards) -> String {
    let v = verdicts(scored, guards);
    #[derive(Default)]
    struct Row {
        label: bool,
        pairs: usize,
        cosine: usize,
        served: usize,
        stopped: BTreeMap<&'static str, usize>,
    }
    let mut rows: BTreeMap<(bool, &str), Row> = BTreeMap::new();
    for (s, verdict) in scored.iter().zip(&v) {
        let row = rows.entry((s.pair.paraphrase, &s.pair.kind)).or_default();
        row.label = s.pair.paraphrase;
        row.pairs += 1;
        if s.cosine >= min_similarity {
            row.cosine += 1;
            match verdict {
                Ok(()) => row.served += 1,
                Err(m) => *row.stopped.entry(m.as_str()).or_default() += 1,
            }
        }
    }
    let mut out = format!(
        "| kind | label | pairs | cosine ≥ {min_similarity:.2} | served (+ guards) | stopped by |\n|---|---|---|---|---|---|\n"
    );
    for ((_, kind), r) in &rows {
        let stopped: Vec<String> = r.stopped.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} | {} | {} |",
            if r.label { "paraphrase" } else { "negative" },
            r.pairs,
            r.cosine,
            r.served,
            stopped.join(", ")
        );
    }
    out
}
