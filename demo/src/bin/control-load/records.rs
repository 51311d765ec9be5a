//! The usage records the simulated sidecars send: shaped like the real
//! sidecar's, priced from the built-in catalog, from a small deterministic
//! generator.

use anyhow::Context as _;
use tokenwarden_core::{
    catalog::{Catalog, ModelPrices},
    tokens::TokenCounts,
    usage::{BudgetPeriodRef, UsageRecord},
    workload::Endpoint,
};

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One kind of traffic: what was asked for, what served it, at what price.
pub struct Kind {
    endpoint: Endpoint,
    requested: &'static str,
    served: &'static str,
    provider: &'static str,
    route: Option<&'static str>,
    prices: ModelPrices,
}

pub fn kinds() -> anyhow::Result<Vec<Kind>> {
    let table: [(Endpoint, &str, &str, &str, Option<&str>); 5] = [
        (
            Endpoint::Messages,
            "claude-opus-4-1",
            "claude-haiku-4-5",
            "anthropic",
            Some("default"),
        ),
        (
            Endpoint::Messages,
            "claude-opus-4-1",
            "claude-sonnet-4-5",
            "anthropic",
            Some("hard"),
        ),
        (
            Endpoint::ChatCompletions,
            "gpt-5",
            "gpt-5-mini",
            "openai",
            None,
        ),
        (
            Endpoint::Responses,
            "gpt-4.1",
            "gpt-4.1-mini",
            "openai",
            None,
        ),
        (
            Endpoint::Embeddings,
            "text-embedding-3-small",
            "text-embedding-3-small",
            "openai",
            None,
        ),
    ];
    table
        .into_iter()
        .map(|(endpoint, requested, served, provider, route)| {
            let m = Catalog::builtin()
                .lookup(Some(provider), served)
                .with_context(|| format!("no built-in price for {provider}/{served}"))?;
            Ok(Kind {
                endpoint,
                requested,
                served,
                provider,
                route,
                prices: m.prices.clone(),
            })
        })
        .collect()
}

pub fn make_record(
    rng: &mut Rng,
    kinds: &[Kind],
    seq: u64,
    budgets: &[BudgetPeriodRef],
) -> (UsageRecord, i128) {
    let k = &kinds[(rng.next() % kinds.len() as u64) as usize];
    let usage = if k.endpoint == Endpoint::Embeddings {
        TokenCounts {
            input_tokens: rng.range(50, 2_000),
            ..TokenCounts::default()
        }
    } else {
        let cached = rng.next().is_multiple_of(3);
        TokenCounts {
            input_tokens: rng.range(200, 6_000),
            output_tokens: rng.range(20, 1_500),
            cache_read_tokens: if cached { rng.range(1_000, 20_000) } else { 0 },
            cache_write_tokens: if rng.next().is_multiple_of(10) {
                rng.range(500, 4_000)
            } else {
                0
            },
            cache_write_1h_tokens: 0,
        }
    };
    let cost = k.prices.cost(&usage);
    let score = u16::try_from(rng.next() % 100).unwrap_or(0);
    let rec = UsageRecord {
        seq,
        ts: jiff::Timestamp::now(),
        endpoint: k.endpoint,
        requested_model: k.requested.to_string(),
        served_model: k.served.to_string(),
        provider: k.provider.to_string(),
        route: k.route.map(str::to_string),
        score: (k.endpoint != Endpoint::Embeddings).then_some(score),
        reason: (k.endpoint != Endpoint::Embeddings)
            .then(|| format!("score {score}: +{} turns, +code block", 1 + score / 10)),
        attempt: 1,
        status: 200,
        usage,
        cost: Some(cost),
        estimated: false,
        budgets: budgets.to_vec(),
        intent: None,
        replay: None,
        cache: Default::default(),
    };
    (rec, cost.picos())
}
