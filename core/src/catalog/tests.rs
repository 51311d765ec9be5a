//! Costs of real models from the built-in catalog, against hand-computed
//! expectations.
//!
//! A price of `$X/MTok` is `X × 1e6` pico-USD per token, so every expected
//! value below is `tokens × (X × 1e6)`, summed over the four kinds. The
//! prices are those of `core/data/genai-prices/data_slim.json`.

use pretty_assertions::assert_eq;

use super::*;
use crate::{
    money::{PricePerMtok, Usd},
    tokens::TokenCounts,
};

fn usage(input: u64, cache_write: u64, cache_read: u64, output: u64) -> TokenCounts {
    TokenCounts {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        cache_write_1h_tokens: 0,
    }
}

/// The catalog cost of `model`, asserting which catalog entry it resolved to.
#[track_caller]
fn cost(hint: Option<&str>, model: &str, expect: (&str, &str), u: TokenCounts) -> i128 {
    let Some(m) = Catalog::builtin().lookup(hint, model) else {
        panic!("{model} is not in the catalog");
    };
    assert_eq!(
        (m.provider_id, m.model_id),
        expect,
        "{model} resolved to the wrong entry"
    );
    m.prices.cost(&u).picos()
}

// --- OpenAI ---

#[test]
fn gpt_5_with_cached_input() {
    // OpenAI usage: prompt_tokens 10,000 of which cached_tokens 4,000;
    // completion_tokens 2,000. gpt-5: $1.25 in, $0.125 cached, $10 out.
    //   6,000 × 1,250,000 =  7,500,000,000
    //   4,000 ×   125,000 =    500,000,000
    //   2,000 × 10,000,000 = 20,000,000,000
    //                        28,000,000,000 pico = $0.028
    let u = usage(10_000 - 4_000, 0, 4_000, 2_000);
    assert_eq!(
        cost(Some("openai"), "gpt-5", ("openai", "gpt-5"), u),
        28_000_000_000
    );
    assert_eq!(
        cost(None, "gpt-5-2025-08-07", ("openai", "gpt-5"), u),
        28_000_000_000
    );
}

#[test]
fn gpt_5_mini() {
    // $0.25 in, $0.025 cached, $2 out.
    //   100,000 × 250,000   = 25,000,000,000
    //    50,000 ×  25,000   =  1,250,000,000
    //     5,000 × 2,000,000 = 10,000,000,000
    //                         36,250,000,000
    let u = usage(100_000, 0, 50_000, 5_000);
    assert_eq!(
        cost(None, "gpt-5-mini", ("openai", "gpt-5-mini"), u),
        36_250_000_000
    );
}

#[test]
fn gpt_4o_dated_snapshot() {
    // $2.5 in, $1.25 cached, $10 out.
    //   1,000 ×  2,500,000 = 2,500,000,000
    //   1,000 ×  1,250,000 = 1,250,000,000
    //     500 × 10,000,000 = 5,000,000,000
    //                        8,750,000,000
    let u = usage(1_000, 0, 1_000, 500);
    assert_eq!(
        cost(None, "gpt-4o-2024-08-06", ("openai", "gpt-4o"), u),
        8_750_000_000
    );
}

#[test]
fn gpt_4_1_nano() {
    // $0.1 in, $0.4 out.
    //   1,234,567 × 100,000 = 123,456,700,000
    //       7,654 × 400,000 =   3,061,600,000
    //                         126,518,300,000
    let u = usage(1_234_567, 0, 0, 7_654);
    assert_eq!(
        cost(None, "gpt-4.1-nano", ("openai", "gpt-4.1-nano"), u),
        126_518_300_000
    );
}

#[test]
fn o3_uses_the_price_in_force_since_2025_06_10() {
    // Conditional prices: $10/$40 before 2025-06-10, $2/$8 (cached $0.5) after.
    //   10,000 × 2,000,000 = 20,000,000,000
    //    2,000 ×   500,000 =  1,000,000,000
    //   10,000 × 8,000,000 = 80,000,000,000
    //                       101,000,000,000
    let u = usage(10_000, 0, 2_000, 10_000);
    assert_eq!(cost(None, "o3", ("openai", "o3"), u), 101_000_000_000);
}

// --- Anthropic ---

#[test]
fn claude_sonnet_4_5_snapshot_with_cache_write_and_read() {
    // Anthropic usage: input_tokens 1,000 (excludes cache), cache_creation 10,000,
    // cache_read 50,000, output 800. Total input 61,000 <= 200,000: base tier.
    // $3 in, $3.75 cache write, $0.30 cache read, $15 out.
    //    1,000 ×  3,000,000 =  3,000,000,000
    //   10,000 ×  3,750,000 = 37,500,000,000
    //   50,000 ×    300,000 = 15,000,000,000
    //      800 × 15,000,000 = 12,000,000,000
    //                         67,500,000,000
    let u = usage(1_000, 10_000, 50_000, 800);
    let expect = ("anthropic", "claude-sonnet-4-5");
    assert_eq!(
        cost(None, "claude-sonnet-4-5-20250929", expect, u),
        67_500_000_000
    );
    assert_eq!(
        cost(Some("anthropic"), "claude-sonnet-4-5", expect, u),
        67_500_000_000
    );
}

#[test]
fn claude_sonnet_4_5_long_context_tier() {
    // Total input = 150,000 + 60,000 cache read = 210,000 > 200,000: every
    // token at the tier rate: $6 in, $0.60 cache read, $22.50 out.
    //   150,000 ×  6,000,000 = 900,000,000,000
    //    60,000 ×    600,000 =  36,000,000,000
    //     1,000 × 22,500,000 =  22,500,000,000
    //                          958,500,000,000
    let expect = ("anthropic", "claude-sonnet-4-5");
    let model = "claude-sonnet-4-5-20250929";
    assert_eq!(
        cost(None, model, expect, usage(150_000, 0, 60_000, 1_000)),
        958_500_000_000
    );
    // Exactly 200,000 input tokens is still the base tier:
    //   200,000 × 3,000,000 + 1,000 × 15,000,000 = 615,000,000,000
    assert_eq!(
        cost(None, model, expect, usage(200_000, 0, 0, 1_000)),
        615_000_000_000
    );
    // 200,001 is not:
    //   200,001 × 6,000,000 + 1,000 × 22,500,000 = 1,200,006,000,000 + 22,500,000,000
    assert_eq!(
        cost(None, model, expect, usage(200_001, 0, 0, 1_000)),
        1_222_506_000_000
    );
}

#[test]
fn claude_opus_4_1() {
    // $15 in, $18.75 cache write, $1.50 cache read, $75 out.
    //   2,000 × 15,000,000 = 30,000,000,000
    //   3,000 × 18,750,000 = 56,250,000,000
    //   4,000 ×  1,500,000 =  6,000,000,000
    //   1,000 × 75,000,000 = 75,000,000,000
    //                       167,250,000,000
    let u = usage(2_000, 3_000, 4_000, 1_000);
    let expect = ("anthropic", "claude-opus-4-1");
    assert_eq!(
        cost(None, "claude-opus-4-1-20250805", expect, u),
        167_250_000_000
    );
}

#[test]
fn claude_haiku_4_5() {
    // $1 in, $1.25 cache write, $0.10 cache read, $5 out.
    //   10,000 × 1,000,000 = 10,000,000,000
    //    2,000 × 1,250,000 =  2,500,000,000
    //   20,000 ×   100,000 =  2,000,000,000
    //    3,000 × 5,000,000 = 15,000,000,000
    //                        29,500,000,000
    let u = usage(10_000, 2_000, 20_000, 3_000);
    let expect = ("anthropic", "claude-haiku-4-5");
    assert_eq!(
        cost(None, "claude-haiku-4-5-20251001", expect, u),
        29_500_000_000
    );
}

// --- Google ---

#[test]
fn gemini_2_5_pro_tiers() {
    let expect = ("google", "gemini-2.5-pro");
    // Above 200,000 input: $2.50 in, $15 out.
    //   250,000 ×  2,500,000 = 625,000,000,000
    //     2,000 × 15,000,000 =  30,000,000,000
    //                          655,000,000,000
    assert_eq!(
        cost(None, "gemini-2.5-pro", expect, usage(250_000, 0, 0, 2_000)),
        655_000_000_000
    );
    // 121,000 input in all: base $1.25 in, $0.125 cache read, $10 out; no
    // cache-write price, so cache writes are billed at the input price.
    //   100,000 ×  1,250,000 = 125,000,000,000
    //    20,000 ×    125,000 =   2,500,000,000
    //     1,000 ×  1,250,000 =   1,250,000,000  (cache write at input price)
    //     2,000 × 10,000,000 =  20,000,000,000
    //                          148,750,000,000
    let u = usage(100_000, 1_000, 20_000, 2_000);
    assert_eq!(
        cost(Some("google"), "gemini-2.5-pro", expect, u),
        148_750_000_000
    );
}

#[test]
fn gemini_2_5_flash() {
    // $0.30 in, $0.03 cache read, $2.50 out.
    //   1,000,000 ×   300,000 = 300,000,000,000
    //     500,000 ×    30,000 =  15,000,000,000
    //     100,000 × 2,500,000 = 250,000,000,000
    //                           565,000,000,000
    let u = usage(1_000_000, 0, 500_000, 100_000);
    let expect = ("google", "gemini-2.5-flash");
    assert_eq!(cost(None, "gemini-2.5-flash", expect, u), 565_000_000_000);
}

// --- DeepSeek ---

#[test]
fn deepseek_chat_standard_price() {
    // Time-of-day conditional: the standard (not off-peak) price,
    // $0.27 in, $0.07 cache hit, $1.10 out.
    //   3,000 ×   270,000 =   810,000,000
    //   7,000 ×    70,000 =   490,000,000
    //   1,500 × 1,100,000 = 1,650,000,000
    //                       2,950,000,000
    let u = usage(3_000, 0, 7_000, 1_500);
    let expect = ("deepseek", "deepseek-chat");
    assert_eq!(
        cost(Some("deepseek"), "deepseek-chat", expect, u),
        2_950_000_000
    );
}

#[test]
fn deepseek_reasoner_standard_price() {
    // $0.55 in, $0.14 cache hit, $2.19 out.
    //   3,000 ×   550,000 = 1,650,000,000
    //   7,000 ×   140,000 =   980,000,000
    //   1,500 × 2,190,000 = 3,285,000,000
    //                       5,915,000,000
    let u = usage(3_000, 0, 7_000, 1_500);
    let expect = ("deepseek", "deepseek-reasoner");
    assert_eq!(cost(None, "deepseek-reasoner", expect, u), 5_915_000_000);
}

// --- Name resolution ---

#[test]
fn provider_prefixed_names_resolve_to_the_vendor() {
    // gpt-5 as above: 28,000,000,000.
    let u = usage(6_000, 0, 4_000, 2_000);
    assert_eq!(
        cost(None, "openai/gpt-5", ("openai", "gpt-5"), u),
        28_000_000_000
    );
    // google/gemini-2.5-flash: Google's own $0.03 cache read, not
    // OpenRouter's $0.075 for the same name.
    //   10,000 × 30,000 = 300,000,000
    let u = usage(0, 0, 10_000, 0);
    let expect = ("google", "gemini-2.5-flash");
    assert_eq!(
        cost(None, "google/gemini-2.5-flash", expect, u),
        300_000_000
    );
    // Anthropic with a dated snapshot; 1,000 × 3,000,000 = 3,000,000,000.
    let expect = ("anthropic", "claude-sonnet-4-5");
    assert_eq!(
        cost(
            None,
            "anthropic/claude-sonnet-4-5-20250929",
            expect,
            usage(1_000, 0, 0, 0)
        ),
        3_000_000_000
    );
}

#[test]
fn names_are_case_insensitive() {
    let m = Catalog::builtin().lookup(None, "GPT-4o-Mini").unwrap();
    assert_eq!((m.provider_id, m.model_id), ("openai", "gpt-4o-mini"));
}

#[test]
fn hints_pick_the_provider_and_its_fallbacks() {
    let catalog = Catalog::builtin();
    // Azure lists o3 itself...
    let m = catalog.lookup(Some("azure"), "o3").unwrap();
    assert_eq!((m.provider_id, m.model_id), ("azure", "o3-2025-04-16"));
    // ...and falls back to OpenAI for gpt-4o.
    let m = catalog.lookup(Some("azure"), "gpt-4o").unwrap();
    assert_eq!((m.provider_id, m.model_id), ("openai", "gpt-4o"));
    // A hint resolves through provider_match, like genai-prices: `bedrock` is AWS.
    let m = catalog
        .lookup(Some("bedrock"), "anthropic.claude-sonnet-4-5-20250929-v1:0")
        .unwrap();
    assert_eq!(m.provider_id, "aws");
    // A hint that does not serve the model does not prevent finding it.
    let m = catalog.lookup(Some("openai"), "claude-haiku-4-5").unwrap();
    assert_eq!(
        (m.provider_id, m.model_id),
        ("anthropic", "claude-haiku-4-5")
    );
    // Unknown hints are ignored.
    let m = catalog.lookup(Some("no-such-provider"), "gpt-5").unwrap();
    assert_eq!(m.provider_id, "openai");
}

#[test]
fn regex_clauses_from_the_data() {
    let catalog = Catalog::builtin();
    let m = catalog.lookup(None, "grok-4.3-20260301").unwrap();
    assert_eq!((m.provider_id, m.model_id), ("x-ai", "grok-4.3"));
    assert!(
        catalog
            .lookup(Some("x-ai"), "grok-4.3-2026030")
            .is_none_or(|m| m.model_id != "grok-4.3")
    );
}

#[test]
fn unknown_model_is_unpriced_never_zero() {
    let book = PriceBook::new(vec![]);
    assert_eq!(
        book.price(Some("openai"), "my-local-llama-70b"),
        Pricing::Unpriced
    );
    assert_eq!(
        book.cost(None, "my-local-llama-70b", &usage(1_000, 0, 0, 1_000)),
        None
    );
    assert!(Catalog::builtin().lookup(None, "").is_none());
}

#[test]
fn overrides_take_precedence() {
    let flat = |input: &str, output: &str| {
        ModelPrices::flat(input.parse().unwrap(), output.parse().unwrap())
    };
    let book = PriceBook::new(vec![
        PriceOverride {
            model: "gpt-5".into(),
            prices: flat("1", "2"),
        },
        PriceOverride {
            model: "gpt-5".into(),
            prices: flat("9", "9"),
        },
        PriceOverride {
            model: "acme-*".into(),
            prices: flat("0.5", "0.5"),
        },
        PriceOverride {
            model: "acme-large-*".into(),
            prices: flat("4", "8"),
        },
    ]);
    // gpt-5 overridden at $1 in, $2 out; cache reads fall back to $1 input:
    //   6,000 × 1,000,000 + 4,000 × 1,000,000 + 2,000 × 2,000,000 = 14,000,000,000
    let u = usage(6_000, 0, 4_000, 2_000);
    assert_eq!(
        book.cost(Some("openai"), "GPT-5", &u),
        Some(Usd::from_picos(14_000_000_000))
    );
    let Pricing::Priced {
        model_id,
        provider_id,
        source,
        ..
    } = book.price(None, "gpt-5")
    else {
        panic!("gpt-5 must be priced");
    };
    assert_eq!(
        (model_id, provider_id, source),
        ("gpt-5", None, PriceSource::Override)
    );
    // The longest prefix wins: acme-large-2 at $4/$8.
    //   1,000 × 4,000,000 + 1,000 × 8,000,000 = 12,000,000,000
    let u = usage(1_000, 0, 0, 1_000);
    assert_eq!(
        book.cost(None, "acme-large-2", &u),
        Some(Usd::from_picos(12_000_000_000))
    );
    //   1,000 × 500,000 × 2 = 1,000,000,000
    assert_eq!(
        book.cost(None, "acme-small", &u),
        Some(Usd::from_picos(1_000_000_000))
    );
    // Other models still come from the catalog (gpt-5-mini: 100 × 250,000).
    let Pricing::Priced {
        source,
        provider_id,
        ..
    } = book.price(None, "gpt-5-mini")
    else {
        panic!("gpt-5-mini must be priced");
    };
    assert_eq!(
        (source, provider_id),
        (PriceSource::Catalog, Some("openai"))
    );
    assert_eq!(
        book.cost(None, "gpt-5-mini", &usage(100, 0, 0, 0)),
        Some(Usd::from_picos(25_000_000))
    );
}

#[test]
fn override_validation() {
    let prices = ModelPrices::flat(PricePerMtok::ZERO, PricePerMtok::ZERO);
    let o = |model: &str| PriceOverride {
        model: model.into(),
        prices: prices.clone(),
    };
    assert_eq!(o("gpt-5").validate(), Ok(()));
    assert_eq!(o("gpt-5*").validate(), Ok(()));
    assert_eq!(o("*").validate(), Ok(()));
    assert_eq!(o("").validate(), Err(InvalidOverride::EmptyModel));
    assert!(matches!(
        o("gpt-*-mini").validate(),
        Err(InvalidOverride::MisplacedWildcard(_))
    ));
    assert!(matches!(
        o("gpt**").validate(),
        Err(InvalidOverride::MisplacedWildcard(_))
    ));
    // An invalid glob is not a wildcard.
    let book = PriceBook::new(vec![o("gpt-*-mini")]);
    assert_eq!(
        book.price(None, "gpt-5-mini").prices(),
        Catalog::builtin()
            .lookup(None, "gpt-5-mini")
            .map(|m| m.prices)
    );
}

#[test]
fn override_serde() {
    let json =
        r#"{"model":"acme-*","prices":{"input":"0.50","output":"1.50","cache_read":"0.05"}}"#;
    let o: PriceOverride = serde_json::from_str(json).unwrap();
    assert_eq!(o.model, "acme-*");
    assert_eq!(
        o.prices.cache_read,
        Some(Price::Flat(PricePerMtok::from_nanos(50_000_000)))
    );
    assert_eq!(serde_json::to_string(&o).unwrap(), json);
}

#[test]
fn every_catalog_model_resolves_by_its_own_id() {
    // Sanity over the whole data: a model id looked up within its own
    // provider finds some model of that provider (ids need not match their
    // own clause, e.g. `ft:gpt-3.5-turbo-`), and the catalog is big.
    let catalog = Catalog::builtin();
    let mut count = 0;
    let mut self_matching = 0;
    for m in catalog.models() {
        count += 1;
        if let Some(found) = catalog.lookup(Some(m.provider_id), m.model_id)
            && found.provider_id == m.provider_id
        {
            self_matching += 1;
        }
    }
    assert!(count > 1_200, "only {count} models");
    assert!(
        self_matching * 100 / count >= 95,
        "{self_matching} of {count}"
    );
    assert!(catalog.provider_ids().any(|p| p == "openrouter"));
}

#[test]
fn exact_index_agrees_with_a_full_scan() {
    // The per-provider index must give exactly what genai-prices' first-match
    // scan gives, for every literal in the data and every model id.
    let catalog = Catalog::builtin();
    for p in super::generated::PROVIDERS {
        let mut names: Vec<&str> = p.models.iter().map(|m| m.id).collect();
        for m in p.models {
            m.m.literals(&mut |s| names.push(s));
        }
        for name in names {
            let name = name.to_lowercase();
            let scan = p.models.iter().find(|m| m.m.is_match(&name)).map(|m| m.id);
            let indexed = catalog
                .lookup(Some(p.id), &name)
                .filter(|hit| hit.provider_id == p.id)
                .map(|hit| hit.model_id);
            if scan.is_some() {
                assert_eq!(indexed, scan, "provider {}, name {name}", p.id);
            }
        }
    }
}
