//! Measures a semantic cache's false hits with the real embedding model:
//! for a sweep of `minSimilarity`, the share of true paraphrases it would
//! hit and the number of non-paraphrases it would falsely hit, on cosine
//! alone and with the guards (`tokenwarden_core::semantic_guard`); prints
//! markdown tables (see `docs/response-cache.md`, "False hits, measured").
//!
//! ```text
//! cargo run -p tokenwarden-embedder --example false_hits -- \
//!     --model "$TOKENWARDEN_EMBEDDER_MODEL_DIR" --pairs bench/semantic/pairs.tsv [--mrpc DIR]
//! ```
//! `--mrpc DIR` reads `msr-para-{train,val,test}.tsv` (MRPC; not in this
//! repository, see the docs for where to get it). Only texts' cosines are
//! computed; nothing is written.

mod measure;

use std::{collections::HashMap, path::PathBuf, time::Instant};

use clap::Parser;
use tokenwarden_core::semantic_guard::Guards;
use tokenwarden_embedder::Embedder;

#[derive(Parser)]
struct Args {
    /// The model directory (default: $TOKENWARDEN_EMBEDDER_MODEL_DIR).
    #[arg(long, env = "TOKENWARDEN_EMBEDDER_MODEL_DIR")]
    model: PathBuf,
    /// Our labelled pairs (`bench/semantic/pairs.tsv`).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// A directory with MRPC's `msr-para-{train,val,test}.tsv`.
    #[arg(long)]
    mrpc: Option<PathBuf>,
    /// The thresholds to sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.80,0.85,0.90,0.92,0.94,0.95,0.96,0.97,0.98,0.99"
    )]
    thresholds: Vec<f32>,
    /// The threshold of the per-kind and content-word-bound tables.
    #[arg(long, default_value_t = 0.95)]
    at: f32,
    /// A cache of cosines (`<file>.<set>`: escaped pair texts and cosine per
    /// line): pairs found there are not embedded again; the file is
    /// rewritten with every pair. For iterating on the guards.
    #[arg(long)]
    cosines: Option<PathBuf>,
    /// Also list the non-paraphrases served at `--at` with the guards on.
    #[arg(long)]
    list: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let embedder = Embedder::load(&args.model)?;
    let mut sets = Vec::new();
    if let Some(p) = &args.pairs {
        sets.push((
            "tokenwarden pairs",
            measure::read_pairs(p).map_err(anyhow::Error::msg)?,
        ));
    }
    if let Some(d) = &args.mrpc {
        sets.push((
            "MRPC (train + val + test)",
            measure::read_mrpc(d).map_err(anyhow::Error::msg)?,
        ));
    }
    anyhow::ensure!(!sets.is_empty(), "give --pairs and/or --mrpc");
    let guards = Guards::default();
    for (name, pairs) in sets {
        let t0 = Instant::now();
        let cache = args
            .cosines
            .as_ref()
            .map(|c| c.with_extension(name.split(' ').next().unwrap_or("set")));
        let scored = scored_with_cache(&embedder, &pairs, cache.as_deref())?;
        println!("## {name}: {} pairs\n", pairs.len());
        println!(
            "{}",
            measure::sweep_table(&scored, &args.thresholds, &guards)
        );
        println!(
            "{}",
            measure::bound_table(&scored, args.at, &[0, 1, 2, 3, 4, 6, u32::MAX])
        );
        println!("{}", measure::kind_table(&scored, args.at, &guards));
        if args.list {
            let v = measure::verdicts(&scored, &guards);
            for (s, verdict) in scored.iter().zip(&v) {
                if !s.pair.paraphrase && s.cosine >= args.at && verdict.is_ok() {
                    println!(
                        "- false hit {:.3} [{}]: {:?} / {:?}",
                        s.cosine, s.pair.kind, s.pair.a, s.pair.b
                    );
                }
            }
            println!();
        }
        eprintln!(
            "{name}: embedded and scored in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    eprintln!("total {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// Scores `pairs`, reusing the cosines cached in `cache` for the same texts.
fn scored_with_cache(
    embedder: &Embedder,
    pairs: &[measure::Pair],
    cache: Option<&std::path::Path>,
) -> anyhow::Result<Vec<measure::Scored>> {
    let mut known: HashMap<(String, String), f32> = HashMap::new();
    if let Some(text) = cache.and_then(|c| std::fs::read_to_string(c).ok()) {
        for line in text.lines() {
            if let [a, b, c] = line.split('\t').collect::<Vec<_>>()[..] {
                known.insert((a.to_string(), b.to_string()), c.parse()?);
            }
        }
    }
    let missing: Vec<measure::Pair> = pairs
        .iter()
        .filter(|p| !known.contains_key(&(esc(&p.a), esc(&p.b))))
        .cloned()
        .collect();
    for s in measure::score(embedder, &missing)? {
        known.insert((esc(&s.pair.a), esc(&s.pair.b)), s.cosine);
    }
    let scored: Vec<measure::Scored> = pairs
        .iter()
        .map(|p| measure::Scored {
            pair: p.clone(),
            cosine: known[&(esc(&p.a), esc(&p.b))],
        })
        .collect();
    if let Some(c) = cache {
        let text: String = scored
            .iter()
            .map(|s| format!("{}\t{}\t{}\n", esc(&s.pair.a), esc(&s.pair.b), s.cosine))
            .collect();
        std::fs::write(c, text)?;
    }
    Ok(scored)
}
