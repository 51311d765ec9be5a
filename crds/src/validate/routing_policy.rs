//! `RoutingPolicy::validate()` and `to_input()`: the checks of a policy and
//! its conversion into the compiler's [`PolicyInput`], section by section.

use tokenwarden_core::{
    catalog::{ModelPrices, Price, PriceOverride},
    classify::ClassifierConfig,
    compile::{CachingPolicy, PolicyInput},
    response_cache::{
        CacheBackend, DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT_MS, MAX_MAX_BYTES,
        MAX_MAX_ENTRIES, MAX_MAX_ENTRY_BYTES, MAX_REDIS_TIMEOUT_MS, MAX_TTL_MS, MIN_MAX_BYTES,
        RedisConfig, RedisCredentials, RedisTlsCa, ResponseCacheConfig,
    },
    semantic_cache::{
        DEFAULT_EMBEDDING_TIMEOUT_MS, DEFAULT_MAX_ENTRIES as SEMANTIC_DEFAULT_MAX_ENTRIES,
        DEFAULT_MIN_SIMILARITY, Eligibility, EmbeddingConfig, MAX_EMBEDDING_TIMEOUT_MS,
        MAX_MAX_ENTRIES as SEMANTIC_MAX_MAX_ENTRIES, MAX_MAX_PROMPT_BYTES, MIN_MIN_SIMILARITY,
        SemanticCacheConfig, parse_similarity,
    },
    semantic_guard::Guards,
    workload::{
        AnthropicBreakpoints, Api, CacheTtl, DEFAULT_MAX_OUTPUT_TOKENS,
        DEFAULT_VOLATILE_GUARD_REPEATS, Endpoint, Escalation, Fallback, HeaderMatch, MinimumTokens,
        Provider, Range, RepeatRule, Route, RouteMatch, RoutingConfig, SecretRef, Target, Tier,
        VolatileGuard,
    },
};

use super::{
    ValidationErrors,
    fields::{
        Errors, MAX_WINDOW_MS, check_base_url, duration, glob_ok, object_ref, price, secret_ref,
        selector,
    },
};
use crate::routing_policy::{
    AnthropicCachingSpec, CacheBackendSpec, CacheTtlSpec, CachingSpec, ClassifierSpec,
    ComplexityClass, EscalationSpec, FallbackSpec, GuardMode, HeaderMatchSpec, PriceOverrideSpec,
    ProviderApi, ProviderSpec, RedisCacheSpec, RequestApi, ResponseCacheSpec, RouteMatchSpec,
    RouteSpec, RouteTargetSpec, RoutingPolicy, ScoreRangeSpec, SemanticCacheSpec, TierSpec,
    VolatilePrefixGuardSpec,
};

/// Longest per-try timeout.
const MAX_TRY_TIMEOUT_MS: u64 = 3600 * 1000;

impl RoutingPolicy {
    /// Check the object; `Ok` means the operator and sidecars accept it.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.to_input().map(|_| ())
    }

    /// Validate and convert into the compiler's input.
    pub fn to_input(&self) -> Result<PolicyInput, ValidationErrors> {
        let mut e = Errors::default();
        let source = object_ref(self, &mut e);
        let spec = &self.spec;
        let selector = selector(
            &mut e,
            "spec.workloadSelector",
            spec.workload_selector.as_ref(),
        );
        if !(-1000..=1000).contains(&spec.priority) {
            e.push("spec.priority", "must be between -1000 and 1000");
        }
        let providers = providers(&mut e, &spec.providers);
        let provider_names: Vec<&str> = spec.providers.iter().map(|p| p.name.as_str()).collect();
        let tiers = tiers(&mut e, &spec.tiers, &provider_names);
        let tier_names: Vec<&str> = spec.tiers.iter().map(|t| t.name.as_str()).collect();
        // Classifier before routes: `complexityClass` needs its threshold.
        let classifier = classifier(&mut e, spec.classifier.as_ref());
        let names = Names {
            tiers: &tier_names,
            providers: &provider_names,
        };
        let routes = routes(&mut e, &spec.routes, classifier.hard_threshold, &names);
        let escalation = escalation(&mut e, spec.escalation.clone().unwrap_or_default());
        let fallback = fallback(&mut e, spec.fallback.clone().unwrap_or_default());
        let default_max_output_tokens = spec
            .default_max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        if !(1..=1_000_000).contains(&default_max_output_tokens) {
            e.push(
                "spec.defaultMaxOutputTokens",
                "must be between 1 and 1000000",
            );
        }
        let caching = caching(&mut e, spec.caching.as_ref(), &spec.providers);
        let response_cache = spec
            .cache
            .as_ref()
            .map(|c| response_cache(&mut e, c, &spec.providers));

        let object = format!("RoutingPolicy {source}");
        let input = PolicyInput {
            selector,
            priority: spec.priority,
            routing: RoutingConfig {
                source,
                generation: self.metadata.generation.unwrap_or(0),
                providers,
                tiers,
                routes,
                escalation,
                fallback,
                classifier,
                default_max_output_tokens,
                unseen_input_tokens: spec.unseen_input_tokens,
                response_cache,
            },
            caching,
        };
        e.finish(object, input)
    }
}

/// The names routes refer to.
struct Names<'a> {
    tiers: &'a [&'a str],
    providers: &'a [&'a str],
}

/// `spec.providers`.
fn providers(e: &mut Errors, specs: &[ProviderSpec]) -> Vec<Provider> {
    if specs.is_empty() {
        e.push("spec.providers", "at least one provider is required");
    }
    e.max_items("spec.providers", specs, 16);
    e.unique(
        "spec.providers",
        "name",
        specs.iter().map(|p| p.name.as_str()),
    );
    specs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("spec.providers[{i}]");
            e.dns_label(&format!("{path}.name"), &p.name);
            check_base_url(e, &format!("{path}.baseUrl"), &p.base_url);
            secret_ref(e, &format!("{path}.apiKeySecretRef"), &p.api_key_secret_ref);
            e.max_items(&format!("{path}.prices"), &p.prices, 64);
            e.unique(
                &format!("{path}.prices"),
                "model",
                p.prices.iter().map(|x| x.model.as_str()),
            );
            let prices = p
                .prices
                .iter()
                .enumerate()
                .filter_map(|(j, o)| price_override(e, &format!("{path}.prices[{j}]"), o))
                .collect();
            Provider {
                name: p.name.clone(),
                api: match p.api {
                    ProviderApi::Openai => Api::OpenAi,
                    ProviderApi::Anthropic => Api::Anthropic,
                },
                base_url: p.base_url.trim_end_matches('/').to_string(),
                api_key: SecretRef {
                    name: p.api_key_secret_ref.name.clone(),
                    key: p.api_key_secret_ref.key.clone(),
                },
                prices,
            }
        })
        .collect()
}

/// One entry of a provider's `prices`; `None` if a price is invalid.
fn price_override(e: &mut Errors, pp: &str, o: &PriceOverrideSpec) -> Option<PriceOverride> {
    e.length(&format!("{pp}.model"), &o.model, 1, 256);
    let input = price(e, &format!("{pp}.inputPerMTok"), &o.input_per_m_tok);
    let output = price(e, &format!("{pp}.outputPerMTok"), &o.output_per_m_tok);
    let cache_read = o
        .cache_read_per_m_tok
        .as_deref()
        .map(|s| price(e, &format!("{pp}.cacheReadPerMTok"), s));
    let cache_write = o
        .cache_write_per_m_tok
        .as_deref()
        .map(|s| price(e, &format!("{pp}.cacheWritePerMTok"), s));
    Some(PriceOverride {
        model: o.model.clone(),
        prices: ModelPrices {
            input: Price::Flat(input?),
            output: Some(Price::Flat(output?)),
            cache_read: match cache_read {
                Some(p) => Some(Price::Flat(p?)),
                None => None,
            },
            cache_write: match cache_write {
                Some(p) => Some(Price::Flat(p?)),
                None => None,
            },
        },
    })
}

/// `spec.tiers`.
fn tiers(e: &mut Errors, specs: &[TierSpec], provider_names: &[&str]) -> Vec<Tier> {
    e.max_items("spec.tiers", specs, 8);
    e.unique("spec.tiers", "name", specs.iter().map(|t| t.name.as_str()));
    specs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let path = format!("spec.tiers[{i}]");
            e.dns_label(&format!("{path}.name"), &t.name);
            if !provider_names.contains(&t.provider.as_str()) {
                e.push(
                    format!("{path}.provider"),
                    format!(
                        "provider {:?} is not defined in spec.providers (have: {})",
                        t.provider,
                        provider_names.join(", ")
                    ),
                );
            }
            e.length(&format!("{path}.model"), &t.model, 1, 256);
            Tier {
                name: t.name.clone(),
                provider: t.provider.clone(),
                model: t.model.clone(),
            }
        })
        .collect()
}

/// `spec.routes`.
fn routes(e: &mut Errors, specs: &[RouteSpec], hard_threshold: u16, names: &Names) -> Vec<Route> {
    e.max_items("spec.routes", specs, 64);
    e.unique("spec.routes", "name", specs.iter().map(|r| r.name.as_str()));
    specs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = format!("spec.routes[{i}]");
            e.dns_label(&format!("{path}.name"), &r.name);
            let matcher = route_match(
                e,
                &format!("{path}.match"),
                r.matches.as_ref(),
                hard_threshold,
            );
            let target = target(e, &format!("{path}.target"), &r.target, names);
            Route {
                name: r.name.clone(),
                matcher,
                target,
                response_cache: r.cache.as_ref().and_then(|c| c.enabled),
                semantic_cache: r.cache.as_ref().and_then(|c| c.semantic) != Some(false),
            }
        })
        .collect()
}

/// A route's `match`.
fn route_match(
    e: &mut Errors,
    path: &str,
    m: Option<&RouteMatchSpec>,
    hard_threshold: u16,
) -> RouteMatch {
    let Some(m) = m else {
        return RouteMatch::default();
    };
    e.max_items(&format!("{path}.models"), &m.models, 32);
    for (i, g) in m.models.iter().enumerate() {
        glob_ok(e, &format!("{path}.models[{i}]"), g);
    }
    e.max_items(&format!("{path}.apis"), &m.apis, 4);
    e.max_items(&format!("{path}.headers"), &m.headers, 16);
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_match(e, &format!("{path}.headers[{i}]"), h))
        .collect();
    let complexity = complexity(
        e,
        path,
        m.complexity.as_ref(),
        m.complexity_class,
        hard_threshold,
    );
    let prompt_tokens = m.prompt_tokens.as_ref().map(|r| {
        if let (Some(a), Some(b)) = (r.min, r.max)
            && a > b
        {
            e.push(format!("{path}.promptTokens"), "min must not exceed max");
        }
        Range {
            min: r.min,
            max: r.max,
        }
    });
    let endpoints = endpoints(e, path, &m.apis);
    RouteMatch {
        models: m.models.clone(),
        endpoints,
        headers,
        complexity,
        prompt_tokens,
        tools_present: m.tools_present,
    }
}

/// One entry of a route's `match.headers`.
fn header_match(e: &mut Errors, hp: &str, h: &HeaderMatchSpec) -> HeaderMatch {
    if e.length(&format!("{hp}.name"), &h.name, 1, 128)
        && !h
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
    {
        e.push(
            format!("{hp}.name"),
            format!("{:?} is not a valid HTTP header name", h.name),
        );
    }
    glob_ok(e, &format!("{hp}.value"), &h.value);
    HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        value: h.value.clone(),
    }
}

/// A route's `match.complexity` or `match.complexityClass` (one of them) as
/// a score range.
fn complexity(
    e: &mut Errors,
    path: &str,
    range: Option<&ScoreRangeSpec>,
    class: Option<ComplexityClass>,
    hard_threshold: u16,
) -> Option<Range> {
    let mut complexity = range.map(|c| {
        for (v, f) in [(c.min, "min"), (c.max, "max")] {
            if v.is_some_and(|v| v > 100) {
                e.push(
                    format!("{path}.complexity.{f}"),
                    "must be between 0 and 100",
                );
            }
        }
        if let (Some(a), Some(b)) = (c.min, c.max)
            && a > b
        {
            e.push(format!("{path}.complexity"), "min must not exceed max");
        }
        Range {
            min: c.min.map(u64::from),
            max: c.max.map(u64::from),
        }
    });
    if let Some(class) = class {
        if complexity.is_some() {
            e.push(
                format!("{path}.complexityClass"),
                "use either complexityClass or complexity, not both",
            );
        }
        let t = u64::from(hard_threshold);
        complexity = Some(match class {
            ComplexityClass::Hard => Range {
                min: Some(t),
                max: None,
            },
            ComplexityClass::Easy if t == 0 => Range {
                min: Some(1),
                max: Some(0),
            },
            ComplexityClass::Easy => Range {
                min: None,
                max: Some(t - 1),
            },
        });
    }
    complexity
}

/// A route's `match.apis`, sorted and without duplicates.
fn endpoints(e: &mut Errors, path: &str, apis: &[RequestApi]) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = apis
        .iter()
        .map(|a| match a {
            RequestApi::ChatCompletions => Endpoint::ChatCompletions,
            RequestApi::Responses => Endpoint::Responses,
            RequestApi::Embeddings => Endpoint::Embeddings,
            RequestApi::Messages => Endpoint::Messages,
        })
        .collect();
    let before = endpoints.len();
    endpoints.sort();
    endpoints.dedup();
    if endpoints.len() != before {
        e.push(format!("{path}.apis"), "duplicate entries");
    }
    endpoints
}

/// A route's `target`.
fn target(e: &mut Errors, path: &str, t: &RouteTargetSpec, names: &Names) -> Target {
    let passthrough = t.passthrough == Some(true);
    let kinds =
        usize::from(t.tier.is_some()) + usize::from(t.model.is_some()) + usize::from(passthrough);
    if kinds != 1 {
        e.push(
            path,
            "target needs exactly one of tier, model (with provider) or passthrough",
        );
    }
    if t.model.is_some() != t.provider.is_some() {
        e.push(path, "target.model and target.provider go together");
    }
    if let Some(tier) = &t.tier
        && !names.tiers.contains(&tier.as_str())
    {
        e.push(
            format!("{path}.tier"),
            format!(
                "tier {tier:?} is not defined in spec.tiers (have: {})",
                names.tiers.join(", ")
            ),
        );
    }
    if let Some(p) = &t.provider
        && !names.providers.contains(&p.as_str())
    {
        e.push(
            format!("{path}.provider"),
            format!(
                "provider {p:?} is not defined in spec.providers (have: {})",
                names.providers.join(", ")
            ),
        );
    }
    if let Some(m) = &t.model {
        e.length(&format!("{path}.model"), m, 1, 256);
    }
    match (&t.tier, &t.provider, &t.model) {
        (Some(tier), _, _) => Target::Tier(tier.clone()),
        (None, Some(provider), Some(model)) => Target::Model {
            provider: provider.clone(),
            model: model.clone(),
        },
        _ => Target::Passthrough,
    }
}

/// `spec.escalation` (defaults when absent).
fn escalation(e: &mut Errors, esc: EscalationSpec) -> Escalation {
    let repeated_prompt = esc.repeated_prompt.as_ref().and_then(|rp| {
        if !(2..=100).contains(&rp.count) {
            e.push(
                "spec.escalation.repeatedPrompt.count",
                "must be between 2 and 100",
            );
        }
        let window = duration(
            e,
            "spec.escalation.repeatedPrompt.window",
            &rp.window,
            MAX_WINDOW_MS,
        );
        Some(RepeatRule {
            count: rp.count,
            window_ms: window?,
        })
    });
    Escalation {
        on_upstream_error: esc.on_upstream_error.unwrap_or(true),
        repeated_prompt,
        on_truncation: esc.on_truncation.unwrap_or(true),
        on_empty_answer: esc.on_empty_answer.unwrap_or(true),
        on_refusal: esc.on_refusal.unwrap_or(true),
        on_invalid_tool_call: esc.on_invalid_tool_call.unwrap_or(true),
        on_invalid_response_format: esc.on_invalid_response_format.unwrap_or(true),
        on_app_signal: esc.on_app_signal.unwrap_or(true),
    }
}

/// `spec.fallback` (defaults when absent).
fn fallback(e: &mut Errors, fb: FallbackSpec) -> Fallback {
    let defaults = Fallback::default();
    let per_try_timeout_ms = fb
        .per_try_timeout
        .as_deref()
        .and_then(|s| duration(e, "spec.fallback.perTryTimeout", s, MAX_TRY_TIMEOUT_MS))
        .unwrap_or(defaults.per_try_timeout_ms);
    let max_attempts = fb.max_attempts.unwrap_or(defaults.max_attempts);
    if !(1..=5).contains(&max_attempts) {
        e.push("spec.fallback.maxAttempts", "must be between 1 and 5");
    }
    Fallback {
        on_rate_limit: fb.on_rate_limit.unwrap_or(defaults.on_rate_limit),
        on_server_error: fb.on_server_error.unwrap_or(defaults.on_server_error),
        on_connect_error: fb.on_connect_error.unwrap_or(defaults.on_connect_error),
        on_timeout: fb.on_timeout.unwrap_or(defaults.on_timeout),
        per_try_timeout_ms,
        max_attempts,
    }
}

/// `spec.classifier`: the defaults with the weights and threshold it sets.
fn classifier(e: &mut Errors, spec: Option<&ClassifierSpec>) -> ClassifierConfig {
    let mut cfg = ClassifierConfig::default();
    let Some(spec) = spec else {
        return cfg;
    };
    if let Some(t) = spec.hard_threshold {
        if t > 100 {
            e.push("spec.classifier.hardThreshold", "must be between 0 and 100");
        }
        cfg.hard_threshold = t;
    }
    if spec.weights.len() > 32 {
        e.push("spec.classifier.weights", "must have at most 32 entries");
    }
    // Weights are set by their serialized (camelCase) names, so the CRD
    // accepts exactly the features core defines, with no list to keep in sync.
    let mut weights = match serde_json::to_value(&cfg.weights) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let known: Vec<String> = weights.keys().cloned().collect();
    for (name, text) in &spec.weights {
        let path = format!("spec.classifier.weights.{name}");
        if !weights.contains_key(name) {
            e.push(
                path,
                format!(
                    "unknown classifier feature {name:?} (known: {})",
                    known.join(", ")
                ),
            );
            continue;
        }
        match parse_weight(text) {
            Some(w) => {
                weights.insert(name.clone(), serde_json::json!(w));
            }
            None => e.push(
                path,
                format!("{text:?} is not a weight: a decimal between -100 and 100, e.g. \"0.75\""),
            ),
        }
    }
    match serde_json::from_value(serde_json::Value::Object(weights)) {
        Ok(w) => cfg.weights = w,
        Err(err) => e.push("spec.classifier.weights", err.to_string()),
    }
    cfg
}

/// A weight: optional '-', up to 3 integer digits, up to 4 decimals, |w| <= 100.
fn parse_weight(s: &str) -> Option<f64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let shape_ok = !int.is_empty()
        && int.len() <= 3
        && frac.len() <= 4
        && !(digits.contains('.') && frac.is_empty())
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    let w: f64 = s.parse().ok()?;
    (shape_ok && w.abs() <= 100.0).then_some(w)
}

/// `spec.caching` (all off when absent).
fn caching(
    e: &mut Errors,
    spec: Option<&CachingSpec>,
    providers: &[ProviderSpec],
) -> CachingPolicy {
    let Some(spec) = spec else {
        return CachingPolicy::default();
    };
    let has_api = |api| providers.iter().any(|p| p.api == api);
    let anthropic_breakpoints = spec
        .anthropic
        .as_ref()
        .and_then(|a| anthropic_caching(e, a, has_api(ProviderApi::Anthropic)));
    let openai_prompt_cache_key = spec
        .openai
        .as_ref()
        .is_some_and(|o| o.prompt_cache_key == Some(true));
    if openai_prompt_cache_key && !has_api(ProviderApi::Openai) {
        e.push(
            "spec.caching.openai.promptCacheKey",
            "needs a provider with api: openai in spec.providers",
        );
    }
    let volatile_guard = spec
        .volatile_prefix_guard
        .as_ref()
        .and_then(|g| volatile_guard(e, g));
    CachingPolicy {
        anthropic_breakpoints,
        openai_prompt_cache_key,
        volatile_guard,
    }
}

/// `spec.caching.anthropic`: `Some` when breakpoints are inserted.
fn anthropic_caching(
    e: &mut Errors,
    a: &AnthropicCachingSpec,
    has_provider: bool,
) -> Option<AnthropicBreakpoints> {
    const PATH: &str = "spec.caching.anthropic";
    let on = a.automatic_breakpoints == Some(true);
    if on && !has_provider {
        e.push(
            format!("{PATH}.automaticBreakpoints"),
            "needs a provider with api: anthropic in spec.providers",
        );
    }
    if !on && (a.ttl.is_some() || !a.minimum_tokens.is_empty()) {
        e.push(
            PATH,
            "ttl and minimumTokens apply only to inserted breakpoints: set \
             automaticBreakpoints: true or remove them",
        );
    }
    let list = format!("{PATH}.minimumTokens");
    e.max_items(&list, &a.minimum_tokens, 32);
    e.unique(
        &list,
        "model",
        a.minimum_tokens.iter().map(|m| m.model.as_str()),
    );
    let minimum_overrides = a
        .minimum_tokens
        .iter()
        .enumerate()
        .map(|(i, m)| {
            glob_ok(e, &format!("{list}[{i}].model"), &m.model);
            if !(1..=1_000_000).contains(&m.tokens) {
                e.push(
                    format!("{list}[{i}].tokens"),
                    "must be between 1 and 1000000",
                );
            }
            MinimumTokens {
                model: m.model.clone(),
                tokens: m.tokens,
            }
        })
        .collect();
    on.then_some(AnthropicBreakpoints {
        ttl: match a.ttl {
            None | Some(CacheTtlSpec::FiveMinutes) => CacheTtl::FiveMinutes,
            Some(CacheTtlSpec::OneHour) => CacheTtl::OneHour,
        },
        minimum_overrides,
    })
}

/// `spec.caching.volatilePrefixGuard`: `Some` in `Report` mode.
fn volatile_guard(e: &mut Errors, g: &VolatilePrefixGuardSpec) -> Option<VolatileGuard> {
    const PATH: &str = "spec.caching.volatilePrefixGuard";
    if let Some(r) = g.repeats
        && !(2..=100).contains(&r)
    {
        e.push(format!("{PATH}.repeats"), "must be between 2 and 100");
    }
    match g.mode {
        GuardMode::Disabled => {
            if g.repeats.is_some() {
                e.push(
                    format!("{PATH}.repeats"),
                    "repeats applies only with mode: Report",
                );
            }
            None
        }
        GuardMode::Report => Some(VolatileGuard {
            repeats: g.repeats.unwrap_or(DEFAULT_VOLATILE_GUARD_REPEATS),
        }),
    }
}

/// `spec.cache`: the response cache's backend, lifetime and bounds, each
/// defaulted and range-checked.
fn response_cache(
    e: &mut Errors,
    spec: &ResponseCacheSpec,
    providers: &[ProviderSpec],
) -> ResponseCacheConfig {
    let d = ResponseCacheConfig::default();
    let backend = match spec.backend {
        None | Some(CacheBackendSpec::Memory) => CacheBackend::Memory,
        Some(CacheBackendSpec::Redis) => CacheBackend::Redis,
    };
    let redis = match (backend, spec.redis.as_ref()) {
        (CacheBackend::Redis, Some(r)) => Some(redis(e, r)),
        (CacheBackend::Redis, None) => {
            e.push("spec.cache.redis", "is required with backend: redis");
            None
        }
        (CacheBackend::Memory, Some(_)) => {
            e.push("spec.cache.redis", "applies only with backend: redis");
            None
        }
        (CacheBackend::Memory, None) => None,
    };
    let semantic = spec
        .semantic
        .as_ref()
        .map(|s| semantic_cache(e, s, providers));
    let Some(x) = spec.exact.as_ref() else {
        return ResponseCacheConfig {
            backend,
            redis,
            semantic,
            ..d
        };
    };
    let ttl_ms = x
        .ttl
        .as_deref()
        .and_then(|s| duration(e, "spec.cache.exact.ttl", s, MAX_TTL_MS))
        .unwrap_or(d.ttl_ms);
    if ttl_ms < 1000 {
        e.push("spec.cache.exact.ttl", "must be at least 1s");
    }
    let max_entries = x.max_entries.map_or(d.max_entries, u64::from);
    if !(1..=MAX_MAX_ENTRIES).contains(&max_entries) {
        e.push(
            "spec.cache.exact.maxEntries",
            "must be between 1 and 1000000",
        );
    }
    let max_bytes = x.max_bytes.unwrap_or(d.max_bytes);
    if !(MIN_MAX_BYTES..=MAX_MAX_BYTES).contains(&max_bytes) {
        e.push(
            "spec.cache.exact.maxBytes",
            "must be between 65536 and 4294967296",
        );
    }
    let max_entry_bytes = x
        .max_entry_bytes
        .unwrap_or(d.max_entry_bytes.min(max_bytes));
    if !(1..=MAX_MAX_ENTRY_BYTES).contains(&max_entry_bytes) {
        e.push(
            "spec.cache.exact.maxEntryBytes",
            "must be between 1 and 67108864",
        );
    } else if max_entry_bytes > max_bytes {
        e.push(
            "spec.cache.exact.maxEntryBytes",
            "must not exceed spec.cache.exact.maxBytes",
        );
    }
    ResponseCacheConfig {
        backend,
        ttl_ms,
        max_entries,
        max_bytes,
        max_entry_bytes,
        only_deterministic: x.only_deterministic.unwrap_or(d.only_deterministic),
        redis,
        semantic,
    }
}

/// `spec.cache.semantic`: the threshold, the embeddings endpoint (a
/// provider of this policy that speaks the OpenAI API), the guards and the
/// eligibility rules, each defaulted and range-checked.
fn semantic_cache(
    e: &mut Errors,
    spec: &SemanticCacheSpec,
    providers: &[ProviderSpec],
) -> SemanticCacheConfig {
    const P: &str = "spec.cache.semantic";
    let min_similarity = match spec.min_similarity.as_deref() {
        None => DEFAULT_MIN_SIMILARITY,
        Some(s) => match parse_similarity(s) {
            Some(v) if v >= MIN_MIN_SIMILARITY => v,
            _ => {
                e.push(
                    format!("{P}.minSimilarity"),
                    format!(
                        "{s:?} must be a decimal from \"0.80\" to \"1\" with at most 4 decimals"
                    ),
                );
                DEFAULT_MIN_SIMILARITY
            }
        },
    };
    let emb = &spec.embedding;
    match providers.iter().find(|p| p.name == emb.provider) {
        None => e.push(
            format!("{P}.embedding.provider"),
            format!("{:?} is not a provider in spec.providers", emb.provider),
        ),
        Some(p) if p.api != ProviderApi::Openai => e.push(
            format!("{P}.embedding.provider"),
            format!(
                "{:?} speaks the anthropic API; embeddings need api: openai",
                emb.provider
            ),
        ),
        Some(_) => {}
    }
    if emb.model.is_empty() || emb.model.len() > 256 {
        e.push(
            format!("{P}.embedding.model"),
            "must be 1 to 256 characters",
        );
    }
    let timeout_ms = emb
        .timeout
        .as_deref()
        .and_then(|s| {
            duration(
                e,
                &format!("{P}.embedding.timeout"),
                s,
                MAX_EMBEDDING_TIMEOUT_MS,
            )
        })
        .unwrap_or(DEFAULT_EMBEDDING_TIMEOUT_MS);
    let g = spec.guards.clone().unwrap_or_default();
    let dg = Guards::default();
    let max_content_word_diff = g.max_content_word_diff.unwrap_or(dg.max_content_word_diff);
    if max_content_word_diff > 20 {
        e.push(
            format!("{P}.guards.maxContentWordDiff"),
            "must be between 0 and 20",
        );
    }
    let max_entries = spec
        .max_entries
        .map_or(SEMANTIC_DEFAULT_MAX_ENTRIES, u64::from);
    if !(1..=SEMANTIC_MAX_MAX_ENTRIES).contains(&max_entries) {
        e.push(format!("{P}.maxEntries"), "must be between 1 and 100000");
    }
    let el = spec.eligibility.clone().unwrap_or_default();
    let de = Eligibility::default();
    let max_prompt_bytes = el.max_prompt_bytes.unwrap_or(de.max_prompt_bytes);
    if !(1..=MAX_MAX_PROMPT_BYTES).contains(&max_prompt_bytes) {
        e.push(
            format!("{P}.eligibility.maxPromptBytes"),
            "must be between 1 and 100000",
        );
    }
    SemanticCacheConfig {
        min_similarity,
        embedding: EmbeddingConfig {
            provider: emb.provider.clone(),
            model: emb.model.clone(),
            timeout_ms,
        },
        guards: Guards {
            numbers: g.numbers.unwrap_or(dg.numbers),
            negations: g.negations.unwrap_or(dg.negations),
            entities: g.entities.unwrap_or(dg.entities),
            code: g.code.unwrap_or(dg.code),
            max_content_word_diff,
        },
        max_entries,
        eligibility: Eligibility {
            single_turn_only: el.single_turn_only.unwrap_or(de.single_turn_only),
            no_tools: el.no_tools.unwrap_or(de.no_tools),
            text_only: el.text_only.unwrap_or(de.text_only),
            max_prompt_bytes,
        },
    }
}

/// `spec.cache.redis`: the URL (no password in it), where the credentials
/// are, the per-operation timeout and the key prefix.
fn redis(e: &mut Errors, spec: &RedisCacheSpec) -> RedisConfig {
    if let Err(msg) = check_redis_url(&spec.url) {
        e.push("spec.cache.redis.url", msg);
    }
    let timeout_ms = spec
        .timeout
        .as_deref()
        .and_then(|s| duration(e, "spec.cache.redis.timeout", s, MAX_REDIS_TIMEOUT_MS))
        .unwrap_or(DEFAULT_REDIS_TIMEOUT_MS);
    let key_prefix = spec
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || !key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        e.push(
            "spec.cache.redis.keyPrefix",
            "must be 1-64 letters, digits, '_', '.' or '-'",
        );
    }
    let tls_ca = spec.tls.as_ref().and_then(|t| t.ca_secret.as_ref());
    if spec.tls.is_some() && !spec.url.starts_with("rediss://") {
        e.push("spec.cache.redis.tls", "needs a rediss:// url");
    }
    RedisConfig {
        url: spec.url.clone(),
        credentials: spec.credentials_secret.as_ref().map(|c| RedisCredentials {
            secret: c.name.clone(),
            password_key: c.key.clone(),
            username_key: c.username_key.clone(),
        }),
        tls_ca: tls_ca.map(|c| RedisTlsCa {
            secret: c.name.clone(),
            key: c.key.clone(),
        }),
        timeout_ms,
        key_prefix,
        password: None,
        username: None,
        ca_pem: None,
        credentials_error: None,
    }
}

/// A Redis URL the sidecar can use: `redis://` or `rediss://`, a host, and
/// no password (in the user info or as a `password` query parameter).
fn check_redis_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or("must start with redis:// or rediss://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            if userinfo.contains(':') {
                return Err(
                    "must not hold a password: put it in a Secret named by credentialsSecret",
                );
            }
            host
        }
        None => authority,
    };
    if host.is_empty() || host.starts_with(':') {
        return Err("must name a host");
    }
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|p| p.starts_with("password=")) {
        return Err("must not hold a password: put it in a Secret named by credentialsSecret");
    }
    Ok(())
}
