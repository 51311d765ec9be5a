//! [`PriceBook`]: the built-in catalog with RoutingPolicy price overrides on
//! top.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Catalog, ModelPrices, lookup::lower};
use crate::money::Usd;
use crate::tokens::TokenCounts;

/// A price override from a RoutingPolicy: prices for one model name or a
/// family of names, taking precedence over the built-in catalog.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    /// The model name exactly as requested/served (`my-finetune-v2`), or a
    /// prefix glob ending in `*` (`my-finetune-*`; `*` alone matches every
    /// model). Compared case-insensitively. A `*` anywhere but at the end is
    /// not a wildcard ([`PriceOverride::validate`] rejects it).
    pub model: String,
    /// The prices for matching models.
    pub prices: ModelPrices,
}

/// A [`PriceOverride`] that cannot work as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOverride {
    /// `model` is empty.
    #[error("a price override needs a model name or a prefix ending in '*'")]
    EmptyModel,
    /// `*` somewhere other than at the end.
    #[error(
        "price override model {0:?}: '*' is only allowed once, at the end (a prefix glob such as \"my-model-*\")"
    )]
    MisplacedWildcard(String),
}

/// Where a price came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The built-in catalog (genai-prices data).
    Catalog,
    /// A RoutingPolicy price override.
    Override,
}

/// The prices that apply to a model name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pricing<'a> {
    /// The model has prices.
    Priced {
        /// The catalog's model id (`claude-sonnet-4-5` for a dated snapshot),
        /// or the override's `model` as written (`my-finetune-*`).
        model_id: &'a str,
        /// The catalog provider id; `None` for overrides.
        provider_id: Option<&'a str>,
        /// Catalog or override.
        source: PriceSource,
        /// The prices.
        prices: &'a ModelPrices,
    },
    /// Neither an override nor the catalog knows the model. Its usage must be
    /// recorded as unpriced and reported, never counted as $0.
    Unpriced,
}

/// The prices a sidecar or the operator charges with: RoutingPolicy
/// overrides first, then the built-in [`Catalog`].
///
/// Precedence: an override whose `model` equals the name (case-insensitive)
/// wins; else the prefix glob with the longest prefix; else the catalog
/// lookup ([`Catalog::lookup`]). Among overrides with the same `model`, the
/// first in the list wins. Overrides match the name as given: an override
/// for `gpt-5` does not apply to `openai/gpt-5`.
#[derive(Clone, Debug)]
pub struct PriceBook {
    catalog: &'static Catalog,
    overrides: Vec<PriceOverride>,
    /// Lower-cased exact names → override index (first wins).
    exact: HashMap<String, usize>,
    /// Lower-cased prefixes → override index, longest prefix first.
    prefixes: Vec<(String, usize)>,
}

// === impl PriceOverride ===

impl PriceOverride {
    /// Checks that `model` is a name or a prefix glob (`*` only at the end).
    pub fn validate(&self) -> Result<(), InvalidOverride> {
        let body = self.model.strip_suffix('*').unwrap_or(&self.model);
        if self.model.is_empty() {
            Err(InvalidOverride::EmptyModel)
        } else if body.contains('*') {
            Err(InvalidOverride::MisplacedWildcard(self.model.clone()))
        } else {
            Ok(())
        }
    }

    /// The prefix, if `model` is a valid prefix glob.
    fn prefix(&self) -> Option<&str> {
        self.model.strip_suffix('*').filter(|p| !p.contains('*'))
    }
}

// === impl Pricing ===

impl<'a> Pricing<'a> {
    /// The prices, if priced.
    pub fn prices(&self) -> Option<&'a ModelPrices> {
        match self {
            Pricing::Priced { prices, .. } => Some(prices),
            Pricing::Unpriced => None,
        }
    }

    /// Whether the model is priced.
    pub fn is_priced(&self) -> bool {
        matches!(self, Pricing::Priced { .. })
    }
}

// === impl PriceBook ===

impl PriceBook {
    /// A price book with these overrides over [`Catalog::builtin`].
    pub fn new(overrides: Vec<PriceOverride>) -> Self {
        let mut exact = HashMap::new();
        let mut prefixes = Vec::new();
        for (i, o) in overrides.iter().enumerate() {
            match o.prefix() {
                Some(prefix) => prefixes.push((prefix.to_lowercase(), i)),
                None => {
                    exact.entry(o.model.to_lowercase()).or_insert(i);
                }
            }
        }
        // Longest prefix first; the stable sort keeps list order among equals.
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        PriceBook {
            catalog: Catalog::builtin(),
            overrides,
            exact,
            prefixes,
        }
    }

    /// The overrides, as given.
    pub fn overrides(&self) -> &[PriceOverride] {
        &self.overrides
    }

    /// The prices for `model`, as served by the provider `provider_hint`
    /// names (see [`Catalog::lookup`]).
    pub fn price(&self, provider_hint: Option<&str>, model: &str) -> Pricing<'_> {
        if let Some(o) = self.find_override(model) {
            return Pricing::Priced {
                model_id: &o.model,
                provider_id: None,
                source: PriceSource::Override,
                prices: &o.prices,
            };
        }
        match self.catalog.lookup(provider_hint, model) {
            Some(m) => Pricing::Priced {
                model_id: m.model_id,
                provider_id: Some(m.provider_id),
                source: PriceSource::Catalog,
                prices: m.prices,
            },
            None => Pricing::Unpriced,
        }
    }

    /// The model's context window (its most input tokens), when the
    /// catalog knows it.
    pub fn context_window(&self, provider_hint: Option<&str>, model: &str) -> Option<u64> {
        self.catalog
            .lookup(provider_hint, model)
            .and_then(|m| m.context_window)
    }

    /// The cost of `usage` on `model`; `None` when the model is unpriced
    /// (never $0 for an unknown model).
    pub fn cost(
        &self,
        provider_hint: Option<&str>,
        model: &str,
        usage: &TokenCounts,
    ) -> Option<Usd> {
        self.price(provider_hint, model)
            .prices()
            .map(|p| p.cost(usage))
    }

    fn find_override(&self, model: &str) -> Option<&PriceOverride> {
        if self.overrides.is_empty() {
            return None;
        }
        let name = lower(model);
        let index = self.exact.get(name.as_ref()).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix.as_str()))
                .map(|&(_, i)| i)
        })?;
        self.overrides.get(index)
    }
}
