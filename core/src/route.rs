//! The routing decision: which provider and model serve a request.
//!
//! [`Router`] is built once per config (globs compiled) and answers per
//! request in well under a microsecond for typical policies:
//!
//! 1. Routes are tried in order; the first whose conditions all hold and
//!    whose target speaks the request's API decides. (Requests are not
//!    translated between APIs: a route whose target provider speaks another
//!    API than the request is skipped.)
//! 2. No route matches: the request is forwarded with its own model to the
//!    first provider that speaks its API (`passthrough`).
//! 3. [`Router::escalate`] moves one tier up the ladder, skipping tiers whose
//!    provider speaks another API; [`Router::downgrade`] applies a budget's
//!    downgrade target.

use crate::workload::{Api, DowngradeTarget, Endpoint, Route, RoutingConfig, Target};

/// What routes match on, extracted from one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The model the app asked for.
    pub model: &'a str,
    /// Request headers, names lower-case.
    pub headers: &'a [(&'a str, &'a str)],
    /// Complexity score, 0..=100.
    pub score: u16,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// Whether the request defines tools.
    pub tools_present: bool,
}

/// A concrete upstream choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Index into `RoutingConfig::providers`.
    pub provider: usize,
    /// Model to send upstream.
    pub model: String,
    /// Position on the tier ladder, when the choice is a tier's.
    pub tier: Option<usize>,
}

/// The outcome of routing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Name of the route that matched; `None` when none did (passthrough).
    pub route: Option<String>,
    /// Where the request goes.
    pub choice: Choice,
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No provider speaks the request's API.
    #[error("no provider in RoutingPolicy {policy} speaks the {api} API")]
    NoProviderForApi {
        /// The policy, `namespace/name`.
        policy: String,
        /// The API.
        api: &'static str,
    },
}

/// A compiled routing policy.
#[derive(Debug, Clone)]
pub struct Router {
    cfg: RoutingConfig,
    routes: Vec<CompiledRoute>,
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    models: Vec<glob::Pattern>,
    headers: Vec<(String, glob::Pattern)>,
}

// === impl Endpoint ===

impl Endpoint {
    /// The provider API an endpoint belongs to.
    pub fn api(self) -> Api {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Embeddings => Api::OpenAi,
            Endpoint::Messages => Api::Anthropic,
        }
    }

    /// Low-cardinality name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
        }
    }

    /// Every endpoint.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::ChatCompletions,
        Endpoint::Responses,
        Endpoint::Embeddings,
        Endpoint::Messages,
    ];

    /// The name in the API objects, records and the wire (its serde form).
    pub fn serde_name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chatCompletions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
        }
    }

    /// The endpoint a [`serde_name`](Self::serde_name) names.
    pub fn from_serde_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.serde_name() == name)
    }
}

impl Api {
    /// `openai` or `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

// === impl Router ===

impl Router {
    /// Compile a routing config. Globs that fail to compile (validation
    /// rejects them earlier) match nothing.
    pub fn new(cfg: RoutingConfig) -> Self {
        let routes = cfg
            .routes
            .iter()
            .map(|r: &Route| CompiledRoute {
                models: r
                    .matcher
                    .models
                    .iter()
                    .filter_map(|g| glob::Pattern::new(g).ok())
                    .collect(),
                headers: r
                    .matcher
                    .headers
                    .iter()
                    .filter_map(|h| {
                        glob::Pattern::new(&h.value)
                            .ok()
                            .map(|p| (h.name.to_ascii_lowercase(), p))
                    })
                    .collect(),
            })
            .collect();
        Self { cfg, routes }
    }

    /// The config this router was built from.
    pub fn config(&self) -> &RoutingConfig {
        &self.cfg
    }

    /// Route one request.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Result<Decision, RouteError> {
        let api = facts.endpoint.api();
        for (route, compiled) in self.cfg.routes.iter().zip(&self.routes) {
            if !self.matches(route, compiled, facts) {
                continue;
            }
            if let Some(choice) = self.resolve(&route.target, facts.model, api) {
                return Ok(Decision {
                    route: Some(route.name.clone()),
                    choice,
                });
            }
        }
        self.resolve(&Target::Passthrough, facts.model, api)
            .map(|choice| Decision {
                route: None,
                choice,
            })
            .ok_or_else(|| RouteError::NoProviderForApi {
                policy: self.cfg.source.to_string(),
                api: api.as_str(),
            })
    }

    /// One tier up from `current`, skipping tiers of another API. `None` at
    /// the top, or when `current` is not on the ladder and no tier serves
    /// its model.
    pub fn escalate(&self, current: &Choice, api: Api) -> Option<Choice> {
        let from = current.tier?;
        self.cfg
            .tiers
            .iter()
            .enumerate()
            .skip(from + 1)
            .find_map(|(i, t)| {
                let p = self
                    .cfg
                    .providers
                    .iter()
                    .position(|p| p.name == t.provider)?;
                (self.cfg.providers[p].api == api).then(|| Choice {
                    provider: p,
                    model: t.model.clone(),
                    tier: Some(i),
                })
            })
    }

    /// Apply a budget's downgrade target to `current`. `None` when the
    /// target does not exist or speaks another API (the request then keeps
    /// its choice; the compiler warns about missing tiers).
    pub fn downgrade(
        &self,
        current: &Choice,
        target: &DowngradeTarget,
        api: Api,
    ) -> Option<Choice> {
        match target {
            DowngradeTarget::Tier(name) => {
                let t = self.cfg.tier_index(name)?;
                // Never "downgrade" upwards.
                if current.tier.is_some_and(|c| c < t) {
                    return Some(current.clone());
                }
                let tier = &self.cfg.tiers[t];
                let p = self
                    .cfg
                    .providers
                    .iter()
                    .position(|p| p.name == tier.provider)?;
                (self.cfg.providers[p].api == api).then(|| Choice {
                    provider: p,
                    model: tier.model.clone(),
                    tier: Some(t),
                })
            }
            DowngradeTarget::Model(m) => Some(Choice {
                provider: current.provider,
                model: m.clone(),
                tier: self.tier_of(current.provider, m),
            }),
        }
    }

    fn matches(&self, route: &Route, compiled: &CompiledRoute, f: &RequestFacts<'_>) -> bool {
        let m = &route.matcher;
        (m.endpoints.is_empty() || m.endpoints.contains(&f.endpoint))
            && (compiled.models.is_empty() || compiled.models.iter().any(|g| g.matches(f.model)))
            && compiled.headers.iter().all(|(name, g)| {
                f.headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && g.matches(v))
            })
            && m.complexity.is_none_or(|r| r.contains(u64::from(f.score)))
            && m.prompt_tokens.is_none_or(|r| r.contains(f.prompt_tokens))
            && m.tools_present.is_none_or(|t| t == f.tools_present)
    }

    fn resolve(&self, target: &Target, requested: &str, api: Api) -> Option<Choice> {
        let providers = &self.cfg.providers;
        match target {
            Target::Tier(name) => {
                let t = self.cfg.tier_index(name)?;
                let tier = &self.cfg.tiers[t];
                let p = providers.iter().position(|p| p.name == tier.provider)?;
                (providers[p].api == api).then(|| Choice {
                    provider: p,
                    model: tier.model.clone(),
                    tier: Some(t),
                })
            }
            Target::Model { provider, model } => {
                let p = providers.iter().position(|x| &x.name == provider)?;
                (providers[p].api == api).then(|| Choice {
                    provider: p,
                    model: model.clone(),
                    tier: self.tier_of(p, model),
                })
            }
            Target::Passthrough => {
                let p = providers.iter().position(|x| x.api == api)?;
                Some(Choice {
                    provider: p,
                    model: requested.to_string(),
                    tier: self.tier_of(p, requested),
                })
            }
        }
    }

    /// The lowest tier served by this provider and model.
    fn tier_of(&self, provider: usize, model: &str) -> Option<usize> {
        let name = &self.cfg.providers[provider].name;
        self.cfg
            .tiers
            .iter()
            .position(|t| &t.provider == name && t.model == model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classify::ClassifierConfig,
        workload::{
            Escalation, Fallback, HeaderMatch, ObjectRef, Provider, Range, RouteMatch, SecretRef,
            Tier,
        },
    };

    #[test]
    fn endpoint_serde_names_are_the_serde_form() {
        for e in Endpoint::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.serde_name()));
            assert_eq!(Endpoint::from_serde_name(e.serde_name()), Some(e));
            assert_eq!(serde_json::from_str::<Endpoint>(&json).unwrap(), e);
        }
        assert_eq!(Endpoint::from_serde_name("chat_completions"), None);
    }

    fn provider(name: &str, api: Api) -> Provider {
        Provider {
            name: name.into(),
            api,
            base_url: format!("https://{name}.example"),
            api_key: SecretRef {
                name: "k".into(),
                key: name.into(),
            },
            prices: vec![],
        }
    }

    fn tier(name: &str, provider: &str, model: &str) -> Tier {
        Tier {
            name: name.into(),
            provider: provider.into(),
            model: model.into(),
        }
    }

    fn route(name: &str, matcher: RouteMatch, target: Target) -> Route {
        Route {
            name: name.into(),
            matcher,
            target,
            response_cache: None,
            semantic_cache: true,
        }
    }

    fn config(routes: Vec<Route>) -> RoutingConfig {
        RoutingConfig {
            source: ObjectRef::new("ns", "p"),
            generation: 1,
            providers: vec![
                provider("openai", Api::OpenAi),
                provider("anthropic", Api::Anthropic),
            ],
            tiers: vec![
                tier("cheap", "anthropic", "claude-haiku-4-5"),
                tier("oa-mid", "openai", "gpt-5-mini"),
                tier("standard", "anthropic", "claude-sonnet-4-5"),
                tier("frontier", "anthropic", "claude-opus-4-1"),
            ],
            routes,
            escalation: Escalation::default(),
            fallback: Fallback::default(),
            classifier: ClassifierConfig::default(),
            default_max_output_tokens: 4096,
            unseen_input_tokens: None,
            response_cache: None,
        }
    }

    fn facts<'a>(endpoint: Endpoint, model: &'a str, score: u16) -> RequestFacts<'a> {
        RequestFacts {
            endpoint,
            model,
            headers: &[],
            score,
            prompt_tokens: 1000,
            tools_present: false,
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let r = Router::new(config(vec![
            route(
                "hard",
                RouteMatch {
                    complexity: Some(Range {
                        min: Some(60),
                        max: None,
                    }),
                    ..Default::default()
                },
                Target::Tier("standard".into()),
            ),
            route("rest", RouteMatch::default(), Target::Tier("cheap".into())),
        ]));
        let d = r
            .decide(&facts(Endpoint::Messages, "claude-opus-4-1", 75))
            .unwrap();
        assert_eq!(d.route.as_deref(), Some("hard"));
        assert_eq!(
            d.choice,
            Choice {
                provider: 1,
                model: "claude-sonnet-4-5".into(),
                tier: Some(2)
            }
        );
        let d = r
            .decide(&facts(Endpoint::Messages, "claude-opus-4-1", 10))
            .unwrap();
        assert_eq!(d.route.as_deref(), Some("rest"));
        assert_eq!(d.choice.model, "claude-haiku-4-5");
    }

    #[test]
    fn routes_whose_target_speaks_another_api_are_skipped() {
        let r = Router::new(config(vec![
            route(
                "to-anthropic",
                RouteMatch::default(),
                Target::Tier("cheap".into()),
            ),
            route(
                "to-openai",
                RouteMatch::default(),
                Target::Model {
                    provider: "openai".into(),
                    model: "gpt-5-nano".into(),
                },
            ),
        ]));
        let d = r
            .decide(&facts(Endpoint::ChatCompletions, "gpt-5", 0))
            .unwrap();
        assert_eq!(d.route.as_deref(), Some("to-openai"));
        assert_eq!(
            d.choice,
            Choice {
                provider: 0,
                model: "gpt-5-nano".into(),
                tier: None
            }
        );
    }

    #[test]
    fn no_match_is_passthrough_to_the_first_provider_of_the_api() {
        let r = Router::new(config(vec![route(
            "only-embeddings",
            RouteMatch {
                endpoints: vec![Endpoint::Embeddings],
                ..Default::default()
            },
            Target::Passthrough,
        )]));
        let d = r
            .decide(&facts(Endpoint::ChatCompletions, "gpt-5-mini", 0))
            .unwrap();
        assert_eq!(d.route, None);
        assert_eq!(
            d.choice,
            Choice {
                provider: 0,
                model: "gpt-5-mini".into(),
                tier: Some(1)
            }
        );
    }

    #[test]
    fn model_globs_headers_tokens_and_tools() {
        let m = RouteMatch {
            models: vec!["gpt-5*".into(), "o3".into()],
            headers: vec![HeaderMatch {
                name: "x-task".into(),
                value: "review*".into(),
            }],
            prompt_tokens: Some(Range {
                min: None,
                max: Some(5000),
            }),
            tools_present: Some(false),
            ..Default::default()
        };
        let r = Router::new(config(vec![route(
            "r",
            m,
            Target::Model {
                provider: "openai".into(),
                model: "gpt-5-nano".into(),
            },
        )]));
        let headers = [("X-Task", "review-pr")];
        let mut f = facts(Endpoint::ChatCompletions, "gpt-5.1", 0);
        assert_eq!(r.decide(&f).unwrap().route, None, "header missing");
        f.headers = &headers;
        assert_eq!(r.decide(&f).unwrap().route.as_deref(), Some("r"));
        f.model = "gpt-4o";
        assert_eq!(r.decide(&f).unwrap().route, None, "model glob");
        f.model = "o3";
        f.prompt_tokens = 5001;
        assert_eq!(r.decide(&f).unwrap().route, None, "prompt tokens");
        f.prompt_tokens = 10;
        f.tools_present = true;
        assert_eq!(r.decide(&f).unwrap().route, None, "tools");
    }

    #[test]
    fn escalation_walks_up_the_ladder_within_the_api() {
        let r = Router::new(config(vec![]));
        let cheap = Choice {
            provider: 1,
            model: "claude-haiku-4-5".into(),
            tier: Some(0),
        };
        let next = r.escalate(&cheap, Api::Anthropic).unwrap();
        assert_eq!(next.model, "claude-sonnet-4-5", "skips the OpenAI tier");
        let top = r.escalate(&next, Api::Anthropic).unwrap();
        assert_eq!(top.tier, Some(3));
        assert_eq!(r.escalate(&top, Api::Anthropic), None);
        let off_ladder = Choice {
            provider: 0,
            model: "gpt-4o".into(),
            tier: None,
        };
        assert_eq!(r.escalate(&off_ladder, Api::OpenAi), None);
    }

    #[test]
    fn downgrade_never_goes_up() {
        let r = Router::new(config(vec![]));
        let strong = Choice {
            provider: 1,
            model: "claude-opus-4-1".into(),
            tier: Some(3),
        };
        let d = r
            .downgrade(
                &strong,
                &DowngradeTarget::Tier("cheap".into()),
                Api::Anthropic,
            )
            .unwrap();
        assert_eq!(d.model, "claude-haiku-4-5");
        let cheap = d;
        let same = r.downgrade(
            &cheap,
            &DowngradeTarget::Tier("standard".into()),
            Api::Anthropic,
        );
        assert_eq!(same, Some(cheap.clone()));
        let m = r.downgrade(
            &strong,
            &DowngradeTarget::Model("claude-3-5-haiku".into()),
            Api::Anthropic,
        );
        assert_eq!(m.unwrap().model, "claude-3-5-haiku");
        // A tier of another API cannot serve an Anthropic request.
        assert_eq!(
            r.downgrade(
                &strong,
                &DowngradeTarget::Tier("oa-mid".into()),
                Api::Anthropic
            ),
            None
        );
    }

    #[test]
    fn an_api_without_provider_is_an_error() {
        let mut cfg = config(vec![]);
        cfg.providers.retain(|p| p.api == Api::OpenAi);
        cfg.tiers.clear();
        let r = Router::new(cfg);
        let err = r
            .decide(&facts(Endpoint::Messages, "claude-haiku-4-5", 0))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no provider in RoutingPolicy ns/p speaks the anthropic API"
        );
    }
}
