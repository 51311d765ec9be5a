//! The platform team's objects for the demo: one RoutingPolicy and one
//! TokenBudget per team, as they would be applied with kubectl.

use crate::{embedder::MODEL, workload::FLAGSHIP};

/// The platform team's objects: one file per team, as they would be applied
/// with kubectl.
/// `embedder_url`: the self-hosted embedder, when it runs (the FAQ bot's
/// policy then has the semantic cache on).
pub fn objects(base_url: &str, embedder_url: Option<&str>) -> [(&'static str, String); 5] {
    [
        (
            "agents.yaml",
            format!(
                r#"# Cheap by default, a strong model for hard work, the flagship only when a
# request escalates (upstream error, or the same prompt retried).
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: coding-agent, namespace: agents}}
spec:
  workloadSelector: {{matchLabels: {{app: coding-agent}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
  tiers:
    - {{name: cheap, provider: anthropic, model: claude-haiku-4-5}}
    - {{name: standard, provider: anthropic, model: claude-sonnet-4-5}}
    - {{name: frontier, provider: anthropic, model: {FLAGSHIP}}}
  routes:
    - {{name: hard, match: {{apis: [Messages], complexityClass: Hard}}, target: {{tier: standard}}}}
    - {{name: easy, match: {{apis: [Messages]}}, target: {{tier: cheap}}}}
  escalation:
    onUpstreamError: true
    repeatedPrompt: {{count: 2, window: 10m}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: agents-daily, namespace: agents}}
spec:
  period: Daily
  limit: {{usd: "50.00"}}
  thresholds:
    - {{percent: 50, action: Alert}}
    - {{percent: 80, action: Downgrade, downgradeTo: {{tier: cheap}}}}
"#
            ),
        ),
        (
            "search.yaml",
            format!(
                r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: search-agent, namespace: search}}
spec:
  workloadSelector: {{matchLabels: {{app: search-agent}}}}
  providers:
    - {{name: openai, api: openai, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
  tiers:
    - {{name: mini, provider: openai, model: gpt-4o-mini}}
    - {{name: full, provider: openai, model: gpt-4o}}
  routes:
    - {{name: hard, match: {{apis: [ChatCompletions], complexityClass: Hard}}, target: {{tier: full}}}}
    - {{name: easy, match: {{apis: [ChatCompletions]}}, target: {{tier: mini}}}}
---
# A small hourly dollar budget: from 30% every pod of the team is moved to
# the cheap tier, cluster-wide.
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: search-hourly, namespace: search}}
spec:
  period: Hourly
  limit: {{usd: "0.50"}}
  thresholds:
    - {{percent: 30, action: Downgrade, downgradeTo: {{tier: mini}}}}
"#
            ),
        ),
        (
            "research.yaml",
            format!(
                r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: summarizer, namespace: research}}
spec:
  workloadSelector: {{matchLabels: {{app: summarizer}}}}
  providers:
    - {{name: openai, api: openai, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
---
# A token cap shared by every summarizer pod: leases make it hold across pods.
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: summarizer-tokens, namespace: research}}
spec:
  workloadSelector: {{matchLabels: {{app: summarizer}}}}
  period: Monthly
  limit: {{tokens: 150000}}
"#
            ),
        ),
        ("ops.yaml", ops(base_url)),
        ("support.yaml", support(base_url, embedder_url)),
    ]
}

/// The `support` team: a FAQ bot whose repeated questions the response
/// cache answers — and, with the self-hosted embedder, their paraphrases —
/// under a daily budget that shows what the hits saved.
fn support(base_url: &str, embedder_url: Option<&str>) -> String {
    let (embedder, semantic) = match embedder_url {
        Some(url) => (
            format!(
                r#"
    # The self-hosted tokenwarden-embedder (all-MiniLM-L6-v2), priced at $0:
    # its calls are in the ledger as free requests.
    - name: embedder
      api: openai
      baseUrl: "{url}"
      apiKeySecretRef: {{name: llm-keys, key: embedder}}
      prices: [{{model: {MODEL}, inputPerMTok: "0", outputPerMTok: "0"}}]"#
            ),
            format!(
                r#"
    # A paraphrase is answered from a stored answer when its embedding is at
    # least 0.95 alike and the guards find no difference that changes the
    # answer (numbers, negations, names, code): the defaults.
    semantic:
      embedding: {{provider: embedder, model: {MODEL}}}"#
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"# Customers ask the same questions all day: the sidecar answers a repeat
# from its response cache at $0 (off unless a policy sets it).
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: faq-bot, namespace: support}}
spec:
  workloadSelector: {{matchLabels: {{app: faq-bot}}}}
  providers:
    - {{name: openai, api: openai, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}{embedder}
  cache:
    exact: {{ttl: 1h}}{semantic}
---
# Its status shows the spend and, apart, what the cache's hits saved.
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: support-daily, namespace: support}}
spec:
  workloadSelector: {{matchLabels: {{app: faq-bot}}}}
  period: Daily
  limit: {{usd: "5.00"}}
"#
    )
}

/// The `ops` team: the same planning agent without and with automatic
/// prompt-cache breakpoints, and an agent whose timestamp busts its cache.
fn ops(base_url: &str) -> String {
    format!(
        r#"# The same planning agent twice: without and with automatic prompt-cache
# breakpoints (the agent sends no cache_control of its own).
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: planner, namespace: ops}}
spec:
  workloadSelector: {{matchLabels: {{app: planner}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: planner-cached, namespace: ops}}
spec:
  workloadSelector: {{matchLabels: {{app: planner-cached}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
  caching:
    anthropic: {{automaticBreakpoints: true}}
---
# An agent whose system prompt starts with the current time: the
# volatile-prefix guard names it once it has broken the cache 3 times.
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: ticket-agent, namespace: ops}}
spec:
  workloadSelector: {{matchLabels: {{app: ticket-agent}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
  caching:
    volatilePrefixGuard: {{mode: Report, repeats: 3}}
"#
    )
}
