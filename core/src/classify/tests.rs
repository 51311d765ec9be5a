use proptest::prelude::*;

use super::*;

/// The view of a request without tools.
fn view<'a>(messages: &'a [(Role, &'a str)]) -> RequestView<'a> {
    RequestView {
        messages,
        tool_definitions: 0,
    }
}

fn user(text: &str) -> Classification {
    classify(&ClassifierConfig::default(), &view(&[(Role::User, text)]))
}

const TRACE_AND_CONCURRENCY: &str = "\
Our order service deadlocks intermittently under load. Two worker threads share a \
connection pool guarded by a mutex, and a background task holds a lock while awaiting \
an async refill. Why does this only happen in production, and how should we redesign \
the locking so it stays correct and keeps latency low?

```
Exception in thread \"worker-7\" java.lang.IllegalStateException: pool exhausted
    at com.shop.db.Pool.acquire(Pool.java:88)
    at com.shop.orders.OrderService.place(OrderService.java:142)
    at com.shop.orders.Worker.run(Worker.java:51)
Caused by: java.util.concurrent.TimeoutException: lock wait exceeded
    at com.shop.db.Pool.refill(Pool.java:120)
```
";

#[test]
fn deterministic() {
    let a = user(TRACE_AND_CONCURRENCY);
    for _ in 0..10 {
        assert_eq!(user(TRACE_AND_CONCURRENCY), a);
    }
}

#[test]
fn trivial_edit_scores_low() {
    let c = user("rename variable x to y");
    assert!(c.score < 20, "{c:?}");
    assert!(!c.hard);
    let c = user("Fix the typo in this docstring: \"Retruns the sum of a and b.\"");
    assert!(c.score < 20, "{c:?}");
}

#[test]
fn trace_plus_concurrency_design_scores_high() {
    let c = user(TRACE_AND_CONCURRENCY);
    assert!(c.score >= 80, "{c:?}");
    assert!(c.hard);
    assert!(c.features.stack_trace_lines >= 5, "{:?}", c.features);
    assert!(c.features.concurrency_keywords >= 5, "{:?}", c.features);
    assert!(
        c.reason.starts_with(&format!("score {}: +", c.score)),
        "{}",
        c.reason
    );
}

#[test]
fn tools_and_depth_raise_the_score() {
    let cfg = ClassifierConfig::default();
    let text = "Update the README with the new install command.";
    let base = classify(&cfg, &view(&[(Role::User, text)]));
    let tools = classify(
        &cfg,
        &RequestView {
            messages: &[(Role::User, text)],
            tool_definitions: 12,
        },
    );
    assert!(
        tools.score > base.score,
        "{} vs {}",
        tools.score,
        base.score
    );
    assert_eq!(tools.features.tool_definitions, 12);

    let mut deep = vec![(Role::System, "You are a coding agent.")];
    for _ in 0..8 {
        deep.push((Role::User, "ok, next"));
        deep.push((Role::Assistant, "done"));
    }
    deep.push((Role::User, text));
    let deep = classify(&cfg, &view(&deep));
    assert_eq!(deep.features.conversation_turns, 17);
    assert!(deep.score > base.score, "{} vs {}", deep.score, base.score);
    assert!(deep.reason.contains("17 turns"), "{}", deep.reason);
}

#[test]
fn zero_weight_switches_a_feature_off() {
    let mut cfg = ClassifierConfig::default();
    let with = classify(&cfg, &view(&[(Role::User, TRACE_AND_CONCURRENCY)]));
    cfg.weights.stack_trace_lines = 0.0;
    let without = classify(&cfg, &view(&[(Role::User, TRACE_AND_CONCURRENCY)]));
    assert!(
        without.score < with.score,
        "{} vs {}",
        without.score,
        with.score
    );
    assert_eq!(
        without.features, with.features,
        "features do not depend on weights"
    );
    assert!(
        !without.reason.contains("stack trace"),
        "{}",
        without.reason
    );

    // A feature with weight 0 does not move the score at all.
    let plain = "Summarize what this service does.";
    let mut cfg = ClassifierConfig::default();
    cfg.weights.tool_definitions = 0.0;
    let none = classify(&cfg, &view(&[(Role::User, plain)]));
    let many = classify(
        &cfg,
        &RequestView {
            messages: &[(Role::User, plain)],
            tool_definitions: 40,
        },
    );
    assert_eq!(none.score, many.score);

    // And the threshold decides `hard`.
    let mut cfg = ClassifierConfig::default();
    let c = classify(&cfg, &view(&[(Role::User, plain)]));
    cfg.hard_threshold = c.score;
    assert!(classify(&cfg, &view(&[(Role::User, plain)])).hard);
    cfg.hard_threshold = c.score + 1;
    assert!(!classify(&cfg, &view(&[(Role::User, plain)])).hard);
}

#[test]
fn simple_markers_push_down() {
    let text = "Rename the variable `n` to `count` in this helper.";
    let mut cfg = ClassifierConfig::default();
    let with = classify(&cfg, &view(&[(Role::User, text)]));
    cfg.weights.simple_markers = 0.0;
    let without = classify(&cfg, &view(&[(Role::User, text)]));
    assert!(with.score < without.score);
}

#[test]
fn empty_request() {
    // No evidence either way: the score is the bias alone, and at the default
    // threshold that stays on the strong tier (a request goes cheap only on
    // evidence that it is easy).
    let c = classify(&ClassifierConfig::default(), &view(&[]));
    assert_eq!(c.score, 11);
    assert!(c.hard, "{c:?}");
    assert_eq!(c.reason, format!("score {}: no strong signals", c.score));
    assert_eq!(c.features, Features::default());
}

#[test]
fn config_serde_camel_case_partial_and_validation() {
    let cfg: ClassifierConfig = serde_json::from_str(
        r#"{"weights": {"toolDefinitions": 1.5, "stackTraceLines": 0}, "hardThreshold": 60}"#,
    )
    .unwrap();
    assert_eq!(cfg.weights.tool_definitions, 1.5);
    assert_eq!(cfg.weights.stack_trace_lines, 0.0);
    assert_eq!(cfg.weights.code_lines, FeatureWeights::default().code_lines);
    assert_eq!(cfg.bias, DEFAULT_BIAS);
    assert_eq!(cfg.hard_threshold, 60);
    assert_eq!(cfg.validate(), Ok(()));

    let json = serde_json::to_value(ClassifierConfig::default()).unwrap();
    assert_eq!(json["hardThreshold"], u64::from(DEFAULT_HARD_THRESHOLD));
    assert!(json["weights"]["conversationTurns"].is_number());
    let back: ClassifierConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, ClassifierConfig::default());
    assert_eq!(
        serde_json::from_str::<ClassifierConfig>("{}").unwrap(),
        ClassifierConfig::default()
    );

    let mut bad = ClassifierConfig::default();
    bad.weights.design_keywords = f64::NAN;
    assert!(
        matches!(bad.validate(), Err(ClassifierConfigError::BadWeight { ref field, .. }) if field == "weights.designKeywords")
    );
    let bad = ClassifierConfig {
        hard_threshold: 101,
        ..ClassifierConfig::default()
    };
    assert_eq!(
        bad.validate(),
        Err(ClassifierConfigError::BadThreshold(101))
    );
    // A bad config still never panics.
    let bad = ClassifierConfig {
        bias: f64::NAN,
        ..ClassifierConfig::default()
    };
    assert_eq!(classify(&bad, &view(&[(Role::User, "x")])).score, 0);
}

#[test]
fn classification_serializes_camel_case() {
    let c = user(TRACE_AND_CONCURRENCY);
    let json = serde_json::to_value(&c).unwrap();
    assert!(json["features"]["stackTraceLines"].is_number());
    assert!(json["reason"].is_string());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_and_stays_in_range(
        texts in proptest::collection::vec(("\\PC*", 0u8..4), 0..6),
        tools in 0usize..1000,
        bias in -200.0f64..200.0,
    ) {
        let msgs: Vec<(Role, &str)> = texts
            .iter()
            .map(|(t, r)| {
                let role = match r { 0 => Role::System, 1 => Role::User, 2 => Role::Assistant, _ => Role::Tool };
                (role, t.as_str())
            })
            .collect();
        let mut cfg = ClassifierConfig::default();
        let c = classify(&cfg, &RequestView { messages: &msgs, tool_definitions: tools });
        prop_assert!(c.score <= 100);
        prop_assert!(c.reason.starts_with("score "));
        cfg.bias = bias;
        let c = classify(&cfg, &RequestView { messages: &msgs, tool_definitions: tools });
        prop_assert!(c.score <= 100);
    }

    #[test]
    fn never_panics_on_code_like_text(text in "([a-zA-Z_ ]{0,12}(\\(|\\)|:|;|\\{|\\}|\"|#|`{3}|~{3}|\\n|at |File \"|Error: |::| = |é|\u{2019}|0x)){0,60}") {
        let c = user(&text);
        prop_assert!(c.score <= 100);
    }
}

/// Every request of the evaluation set scores the same from its recorded
/// features as from its text: a replay under new weights starts from the
/// live score's exact arithmetic.
#[test]
fn classify_features_equals_classify_on_every_dev_row() {
    #[derive(serde::Deserialize)]
    struct Row {
        messages: Vec<Msg>,
    }
    #[derive(serde::Deserialize)]
    struct Msg {
        role: Role,
        content: String,
    }
    let dev = include_str!("../../data/routing-eval/dev.jsonl");
    let configs = [
        ClassifierConfig::default(),
        ClassifierConfig {
            bias: -1.25,
            hard_threshold: 40,
            ..ClassifierConfig::default()
        },
    ];
    let mut rows = 0;
    for line in dev.lines().filter(|l| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(line).unwrap();
        let msgs: Vec<(Role, &str)> = row
            .messages
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect();
        for tools in [0, 3] {
            let req = RequestView {
                messages: &msgs,
                tool_definitions: tools,
            };
            for cfg in &configs {
                let live = classify(cfg, &req);
                assert_eq!(classify_features(cfg, &live.features), live);
            }
        }
        rows += 1;
    }
    assert_eq!(rows, 229);
}
