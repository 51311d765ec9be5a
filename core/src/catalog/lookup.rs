//! [`Catalog`]: the built-in prices, indexed for per-request lookups.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{LazyLock, RwLock},
};

use super::{
    generated,
    prices::{ModelPrices, Price, Tier, TieredPrice},
    raw::{RawModel, RawPrice, RawProvider},
};
use crate::money::PricePerMtok;

/// Providers searched first when no hint settles a lookup, in this order:
/// the model vendors whose names are most often sent bare.
const PREFERRED: &[&str] = &[
    "openai",
    "anthropic",
    "google",
    "deepseek",
    "x-ai",
    "mistral",
];

/// Gateways and resellers: searched last, since they list other vendors'
/// models (often under the same names) at their own prices. `huggingface_*`
/// providers are matched by prefix.
const GATEWAYS: &[&str] = &["openrouter", "aws", "azure"];
const GATEWAY_PREFIX: &str = "huggingface_";

/// A price catalog: providers and their models with prices.
///
/// The built-in one ([`Catalog::builtin`]) is generated from genai-prices
/// data (see the [module docs](super) for the rules) and built once, lazily.
#[derive(Debug)]
pub struct Catalog {
    providers: Vec<ProviderEntry>,
    /// Provider index by exact id.
    by_id: HashMap<&'static str, usize>,
    /// Provider indexes in search-preference order.
    search_order: Vec<usize>,
    /// Answers already found, by provider hint (`"\0"`: none) and model name
    /// as given: the lookup runs several times per request, and a name
    /// matched by a `starts_with`/`regex` clause costs a scan of hundreds
    /// of clauses. Bounded by [`MEMO_MAX`] names, so arbitrary names sent
    /// by an app cannot grow it without limit.
    memo: RwLock<Memo>,
}

/// Names remembered by a catalog's lookup memo; past it, lookups still
/// work, uncached.
const MEMO_MAX: usize = 4096;

#[derive(Debug, Default)]
struct Memo {
    by_hint: HashMap<String, HashMap<String, Option<(usize, usize)>>>,
    len: usize,
}

/// A catalog entry that a model name resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PricedModel<'a> {
    /// genai-prices provider id (`openai`, `anthropic`, `google`, ...): the
    /// provider whose price list holds the model.
    pub provider_id: &'a str,
    /// The provider's display name (`OpenAI`).
    pub provider_name: &'a str,
    /// genai-prices model id (`claude-sonnet-4-5` for
    /// `claude-sonnet-4-5-20250929`): the canonical name to report under.
    pub model_id: &'a str,
    /// Maximum input tokens, when the data knows it.
    pub context_window: Option<u64>,
    /// The provider has deprecated the model (still served).
    pub deprecated: bool,
    /// The model's prices.
    pub prices: &'a ModelPrices,
}

#[derive(Debug)]
struct ProviderEntry {
    raw: &'static RawProvider,
    prices: Vec<ModelPrices>,
    /// For every name that some literal-only clause (`equals`, `or` of
    /// `equals`) can match: the index of the model a full first-match scan
    /// finds for it (computed once, so it is exactly the scan's answer).
    exact: HashMap<&'static str, usize>,
    /// Models whose clause is not literal-only, in data order: the only ones
    /// a name outside `exact` can match.
    scan: Vec<usize>,
    /// Indexes of `fallback_model_providers`.
    fallbacks: Vec<usize>,
}

// === impl Catalog ===

static BUILTIN: LazyLock<Catalog> = LazyLock::new(|| Catalog::from_raw(generated::PROVIDERS));

impl Catalog {
    /// The catalog generated from `core/data/genai-prices/data_slim.json`.
    pub fn builtin() -> &'static Catalog {
        &BUILTIN
    }

    fn from_raw(raw: &'static [RawProvider]) -> Catalog {
        let mut by_id = HashMap::with_capacity(raw.len());
        for (i, p) in raw.iter().enumerate() {
            by_id.entry(p.id).or_insert(i);
        }
        let providers = raw.iter().map(|p| ProviderEntry::new(p, &by_id)).collect();

        let preferred = PREFERRED.iter().filter_map(|id| by_id.get(id).copied());
        let is_gateway =
            |p: &RawProvider| GATEWAYS.contains(&p.id) || p.id.starts_with(GATEWAY_PREFIX);
        let others = raw
            .iter()
            .enumerate()
            .filter(|(_, p)| !PREFERRED.contains(&p.id) && !is_gateway(p))
            .map(|(i, _)| i);
        let gateways = raw
            .iter()
            .enumerate()
            .filter(|(_, p)| is_gateway(p) && !PREFERRED.contains(&p.id))
            .map(|(i, _)| i);
        let search_order = preferred.chain(others).chain(gateways).collect();

        Catalog {
            providers,
            by_id,
            search_order,
            memo: RwLock::default(),
        }
    }

    /// Resolves a model name as sent to or returned by a provider.
    ///
    /// Names are compared case-insensitively. The search, which stops at the
    /// first model found:
    ///
    /// 1. `provider_hint` (e.g. `openai`, `anthropic`, `bedrock`), if it
    ///    names a provider — its id, else its `provider_match` clause, as
    ///    genai-prices resolves provider ids: that provider's models, then
    ///    its `fallback_model_providers` (Azure → OpenAI, Anthropic).
    /// 2. A provider-prefixed name `prefix/rest` (`openai/gpt-5`,
    ///    `anthropic/claude-sonnet-4-5`): if `prefix` names a provider, that
    ///    provider (and its fallbacks) with `rest`.
    /// 3. The providers whose `model_match` clause claims the full name (the
    ///    vendor: `claude` → Anthropic, `gpt-` → OpenAI).
    /// 4. Every provider, in preference order: OpenAI, Anthropic, Google,
    ///    DeepSeek, xAI, Mistral, then the other providers in data order,
    ///    then the gateways and resellers (OpenRouter, AWS Bedrock, Azure,
    ///    `huggingface_*`), so a bare name gets its vendor's price.
    ///
    /// Within a provider, the first model (in data order) whose match clause
    /// accepts the name wins, as in genai-prices; dated snapshots
    /// (`claude-sonnet-4-5-20250929`) resolve through the data's
    /// `starts_with` clauses. `None`: unknown model — callers must treat it
    /// as unpriced, never as $0.
    ///
    /// Cost (it runs several times per request): a name seen before is one
    /// read-locked hash lookup in a memo (about 100 ns). The first time,
    /// one hash lookup per provider searched, plus a scan of the models
    /// whose clauses are not plain `equals` (~170 of ~1,300): 50–300 ns
    /// for a literal name, several µs for a dated or unknown one.
    pub fn lookup(&self, provider_hint: Option<&str>, model: &str) -> Option<PricedModel<'_>> {
        // No hint is keyed apart from every hint an app could send.
        let hint = provider_hint.unwrap_or("\0");
        let found = self
            .memo
            .read()
            .ok()
            .and_then(|m| m.by_hint.get(hint)?.get(model).copied());
        let found = match found {
            Some(found) => found,
            None => {
                let found = self.search(provider_hint, model);
                if let Ok(mut m) = self.memo.write()
                    && m.len < MEMO_MAX
                    && m.by_hint
                        .entry(hint.to_string())
                        .or_default()
                        .insert(model.to_string(), found)
                        .is_none()
                {
                    m.len += 1;
                }
                found
            }
        };
        found.map(|(p, i)| self.providers[p].priced(i))
    }

    /// [`lookup`](Self::lookup) without the memo: `(provider, model)` indexes.
    fn search(&self, provider_hint: Option<&str>, model: &str) -> Option<(usize, usize)> {
        let name = lower(model);
        let name = name.as_ref();
        // Providers already searched with the full name, so step 4 skips them.
        let mut searched: Vec<usize> = Vec::new();

        if let Some(h) = provider_hint.and_then(|h| self.resolve_provider(h))
            && let Some(hit) = self.find_with_fallbacks(h, name, &mut searched)
        {
            return Some(hit);
        }
        if let Some((prefix, rest)) = name.split_once('/')
            && !rest.is_empty()
            && let Some(q) = self.resolve_provider(prefix)
            && let Some(hit) = self.find_with_fallbacks(q, rest, &mut Vec::new())
        {
            return Some(hit);
        }
        for &p in &self.search_order {
            let vendor = self.providers[p]
                .raw
                .model_match
                .is_some_and(|c| c.is_match(name));
            if vendor && !searched.contains(&p) {
                searched.push(p);
                if let Some(hit) = self.find_in(p, name) {
                    return Some(hit);
                }
            }
        }
        self.search_order
            .iter()
            .filter(|p| !searched.contains(p))
            .find_map(|&p| self.find_in(p, name))
    }

    /// Every model of the catalog, providers and models in data order.
    pub fn models(&self) -> impl Iterator<Item = PricedModel<'_>> {
        self.providers
            .iter()
            .flat_map(|p| (0..p.prices.len()).map(move |i| p.priced(i)))
    }

    /// The ids of the catalog's providers, in data order.
    pub fn provider_ids(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|p| p.raw.id)
    }

    /// A provider by id (exact, lower-cased) or by its `provider_match`
    /// clause, in data order — as genai-prices resolves provider ids.
    fn resolve_provider(&self, hint: &str) -> Option<usize> {
        let hint = lower(hint.trim());
        let hint = hint.as_ref();
        self.by_id.get(hint).copied().or_else(|| {
            self.providers
                .iter()
                .position(|p| p.raw.provider_match.is_some_and(|c| c.is_match(hint)))
        })
    }

    fn find_with_fallbacks(
        &self,
        provider: usize,
        name: &str,
        searched: &mut Vec<usize>,
    ) -> Option<(usize, usize)> {
        searched.push(provider);
        if let Some(hit) = self.find_in(provider, name) {
            return Some(hit);
        }
        // One level only, as in genai-prices.
        self.providers[provider].fallbacks.iter().find_map(|&f| {
            searched.push(f);
            self.find_in(f, name)
        })
    }

    fn find_in(&self, provider: usize, name: &str) -> Option<(usize, usize)> {
        let p = &self.providers[provider];
        let index = match p.exact.get(name) {
            Some(&i) => Some(i),
            None => p
                .scan
                .iter()
                .copied()
                .find(|&i| p.raw.models[i].m.is_match(name)),
        }?;
        Some((provider, index))
    }
}

// === impl ProviderEntry ===

impl ProviderEntry {
    fn new(raw: &'static RawProvider, by_id: &HashMap<&'static str, usize>) -> ProviderEntry {
        let prices = raw.models.iter().map(model_prices).collect();
        let mut literals = Vec::new();
        let mut scan = Vec::new();
        for (i, m) in raw.models.iter().enumerate() {
            if !m.m.literals(&mut |s| literals.push(s)) {
                scan.push(i);
            }
        }
        let first_match = |name: &str| raw.models.iter().position(|m| m.m.is_match(name));
        let exact = literals
            .into_iter()
            .filter_map(|s| Some((s, first_match(s)?)))
            .collect();
        let fallbacks = raw
            .fallbacks
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .collect();
        ProviderEntry {
            raw,
            prices,
            exact,
            scan,
            fallbacks,
        }
    }

    /// `index` is a valid model index (from `exact`, `scan` or a range).
    fn priced(&self, index: usize) -> PricedModel<'_> {
        let model = &self.raw.models[index];
        PricedModel {
            provider_id: self.raw.id,
            provider_name: self.raw.name,
            model_id: model.id,
            context_window: model.ctx,
            deprecated: model.dep,
            prices: &self.prices[index],
        }
    }
}

fn model_prices(m: &RawModel) -> ModelPrices {
    let price = |r: &RawPrice| match r {
        RawPrice::F(n) => Price::Flat(PricePerMtok::from_nanos(*n)),
        RawPrice::T(base, tiers) => Price::Tiered(TieredPrice {
            base: PricePerMtok::from_nanos(*base),
            tiers: tiers
                .iter()
                .map(|&(start, n)| Tier {
                    start,
                    price: PricePerMtok::from_nanos(n),
                })
                .collect(),
        }),
    };
    ModelPrices {
        input: price(&m.p.0),
        output: m.p.1.as_ref().map(price),
        cache_read: m.p.2.as_ref().map(price),
        cache_write: m.p.3.as_ref().map(price),
    }
}

/// Lower-cases, allocating only when there is something to change.
pub(super) fn lower(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_answers_are_the_search_answers_and_the_memo_is_bounded() {
        let cat = Catalog::from_raw(generated::PROVIDERS);
        let mut names: Vec<String> = cat.models().map(|m| m.model_id.to_string()).collect();
        names.extend(
            [
                "gpt-4o-mini",
                "GPT-4o-Mini",
                "gpt-4o-2024-08-06",
                "claude-sonnet-4-5-20250929",
                "openai/gpt-5",
                "no-such-model",
            ]
            .map(String::from),
        );
        let hints = [None, Some("openai"), Some("anthropic"), Some("azure")];
        for hint in hints {
            for name in &names {
                let want = cat
                    .search(hint, name)
                    .map(|(p, i)| cat.providers[p].priced(i));
                // The first call fills the memo while it has room, the
                // second reads it.
                assert_eq!(cat.lookup(hint, name), want, "{hint:?} {name}");
                assert_eq!(cat.lookup(hint, name), want, "{hint:?} {name} (remembered)");
            }
        }
        // Names an app makes up cannot grow it past the bound; past it,
        // answers stay right.
        for i in 0..MEMO_MAX {
            assert_eq!(cat.lookup(None, &format!("made-up-{i}")), None);
        }
        assert_eq!(cat.memo.read().unwrap().len, MEMO_MAX);
        let m = cat
            .lookup(Some("openai"), "gpt-4o-mini-2024-07-18")
            .unwrap();
        assert_eq!(m.model_id, "gpt-4o-mini");
        assert_eq!(cat.memo.read().unwrap().len, MEMO_MAX);
    }
}
