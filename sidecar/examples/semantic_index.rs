//! The semantic cache's index lookup cost against its size, for the
//! benchmark (`bench/semantic_cache.sh` runs it; bench/README.md, "Response
//! cache (semantic)"): the sidecar's own `SemanticIndex`, brute force over
//! one scope of N entries of 384 dimensions (all-MiniLM-L6-v2's), filled
//! with pseudo-random unit vectors (a fixed seed), then LOOKUPS lookups of
//! fresh random queries timed one by one. Random unit vectors are far apart,
//! so no candidate reaches the threshold: the time is the dot products and
//! the scan, which is what a lookup costs whatever it finds.
//!
//! usage: semantic_index [LOOKUPS] [N...]   (default 200; 1000 10000 50000 100000)

use std::time::{Duration, Instant};

use tokenwarden_sidecar::response_cache::semantic::{
    SemanticEntry, SemanticIndex, normalised, now_ms,
};

const DIMS: usize = 384;

fn main() {
    let mut args = std::env::args().skip(1);
    let lookups: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut sizes: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000, 50_000, 100_000];
    }
    let mut seed = 1u32;
    let mut next = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let mut unit = || normalised((0..DIMS).map(|_| next()).collect()).unwrap_or_default();
    println!("entries\tlookups\tp50_us\tp99_us\tmean_us\tus_per_1k_entries");
    for n in sizes {
        let ix = SemanticIndex::new(Duration::from_secs(3600), u64::from(n));
        for i in 0..n {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            ix.insert(
                [1; 32],
                SemanticEntry {
                    embedding: unit(),
                    prompt: String::new(),
                    key,
                    stored_at_ms: now_ms(),
                },
            );
        }
        let mut took: Vec<f64> = (0..lookups)
            .map(|_| {
                let q = unit();
                let t = Instant::now();
                let found = ix.lookup(&[1; 32], &q, 9_500);
                let dt = t.elapsed().as_secs_f64() * 1e6;
                assert!(found.best.is_some(), "the scope has entries");
                dt
            })
            .collect();
        took.sort_by(f64::total_cmp);
        let at = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
        let mean = took.iter().sum::<f64>() / took.len() as f64;
        println!(
            "{n}\t{lookups}\t{:.1}\t{:.1}\t{mean:.1}\t{:.2}",
            at(0.5),
            at(0.99),
            at(0.5) * 1000.0 / f64::from(n)
        );
    }
}
