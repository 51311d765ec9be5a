//! The demo's response-cache traffic (namespace `support`): a support/FAQ
//! bot whose customers keep asking the same questions, in the same words
//! and in others, under a RoutingPolicy with `spec.cache` on (exact, and
//! semantic when the self-hosted embedder runs, see [`crate::embedder`])
//! and a daily TokenBudget.
//!
//! The questions are [`FAQS`]: each a question as customers most often
//! type it, paraphrases of it, and near-misses — questions that read almost
//! the same but need another answer (another order number, a negation),
//! which all-MiniLM-L6-v2 still puts at a cosine above the 0.95 threshold
//! (0.961–0.993, measured with the embedder). The bot sends, one question
//! after another (each answer is stored before the next question):
//!
//! 1. every base question [`ROUNDS`] times over: exact repeats, which the
//!    exact cache answers from the second round on;
//! 2. every paraphrase once: the semantic cache's to answer (two of them
//!    are rewordings whose cosine is below the strict default, 0.941 and
//!    0.863: the provider answers those, which is what the default leaves on
//!    the table);
//! 3. every near-miss once: the guards must refuse them — the provider
//!    answers each.
//!
//! The bot records what the sidecar said about each request
//! (`x-tokenwarden-cache`, and `x-tokenwarden-cache-similarity` on a
//! semantic hit); the demo prints that next to the operator's ledger (see
//! `report::print_response_cache`).

use serde_json::json;
use tokenwarden_fake_provider::LoggedRequest;

use crate::{processes::HttpClient, requests::send_with_headers};

/// The FAQ bot's model.
pub const FAQ_MODEL: &str = "gpt-4o-mini";

/// Rounds of exact repeats of every base question.
pub const ROUNDS: usize = 5;

/// A near-miss of a question: its text and what differs.
pub type NearMiss = (&'static str, &'static str);

/// One support question: as customers most often type it, paraphrases of
/// it (same answer), and near-misses (another answer).
pub struct Faq {
    /// The question as most often asked (repeated [`ROUNDS`] times).
    pub ask: &'static str,
    /// Same question, other words.
    pub paraphrases: &'static [&'static str],
    /// Looks the same, is not: (text, what differs).
    pub near_misses: &'static [NearMiss],
}

/// The support questions (cosines to `ask` with all-MiniLM-L6-v2 in the
/// comments).
pub const FAQS: [Faq; 8] = [
    Faq {
        ask: "How do I reset my password?",
        // 0.9917, 0.9938; 0.9414 (below the threshold)
        paraphrases: &[
            "How can I reset my password?",
            "how do I reset my password",
            "I forgot my password, how do I reset it?",
        ],
        near_misses: &[],
    },
    Faq {
        ask: "What are your opening hours?",
        // 0.9828, 0.9732
        paraphrases: &[
            "What're your opening hours?",
            "What are your opening hours, please?",
        ],
        near_misses: &[],
    },
    Faq {
        ask: "Where is my order 48213?",
        // 0.9898, 0.9951; near-miss 0.9614
        paraphrases: &["Where's my order 48213?", "where is my order 48213"],
        near_misses: &[("Where is my order 48231?", "another order number")],
    },
    Faq {
        ask: "Can I get a refund for order 48213?",
        // 0.9929, 0.9927; near-miss 0.9716
        paraphrases: &[
            "Could I get a refund for order 48213?",
            "Can I get a refund on order 48213?",
        ],
        near_misses: &[(
            "Can I get a refund for order 48231?",
            "another order number",
        )],
    },
    Faq {
        ask: "Is the store open on Sundays?",
        // 0.9728; 0.8633 (below the threshold); near-miss 0.9773
        paraphrases: &["Is your store open on Sundays?", "Are you open on Sundays?"],
        near_misses: &[("Isn't the store open on Sundays?", "a negation")],
    },
    Faq {
        ask: "Does the warranty cover water damage?",
        // 0.9847, 0.9903; near-miss 0.9925
        paraphrases: &[
            "Does your warranty cover water damage?",
            "Does the warranty cover damage from water?",
        ],
        near_misses: &[("Does the warranty not cover water damage?", "a negation")],
    },
    Faq {
        ask: "How do I cancel my subscription?",
        // 0.9955, 0.9879
        paraphrases: &[
            "How can I cancel my subscription?",
            "How do I cancel my subscription, please?",
        ],
        near_misses: &[],
    },
    Faq {
        ask: "Can I pay with PayPal?",
        // 0.9783, 0.9608
        paraphrases: &[
            "Can I pay using PayPal?",
            "Is it possible to pay with PayPal?",
        ],
        near_misses: &[],
    },
];

/// What a question of the bot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A base question, asked again word for word.
    Repeat,
    /// Another wording of a base question.
    Paraphrase,
    /// Reads almost like a base question, needs another answer.
    NearMiss,
}

/// The requests the bot sends, in order: the exact repeats, then the
/// paraphrases, then the near-misses.
pub fn asked() -> Vec<(Kind, &'static str)> {
    let mut v = Vec::new();
    for _ in 0..ROUNDS {
        v.extend(FAQS.iter().map(|f| (Kind::Repeat, f.ask)));
    }
    v.extend(
        FAQS.iter()
            .flat_map(|f| f.paraphrases.iter().map(|p| (Kind::Paraphrase, *p))),
    );
    v.extend(
        FAQS.iter()
            .flat_map(|f| f.near_misses.iter().map(|n| (Kind::NearMiss, n.0))),
    );
    v
}

/// How many of `asked()` are of `kind`.
pub fn count(kind: Kind) -> usize {
    asked().iter().filter(|(k, _)| *k == kind).count()
}

/// The near-misses' "what differs", with how many of each, in first-seen
/// order (`another order number 2, a negation 2`).
pub fn near_miss_kinds() -> Vec<(&'static str, usize)> {
    let mut kinds: Vec<(&'static str, usize)> = Vec::new();
    for (_, what) in FAQS.iter().flat_map(|f| f.near_misses.iter()) {
        match kinds.iter_mut().find(|(k, _)| k == what) {
            Some(k) => k.1 += 1,
            None => kinds.push((what, 1)),
        }
    }
    kinds
}

/// What the sidecar said about the bot's requests of one kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    /// Requests sent.
    pub asked: usize,
    /// Answered 200 with `x-tokenwarden-cache: hit` and no similarity: the
    /// exact cache.
    pub exact: usize,
    /// Answered 200 with `x-tokenwarden-cache: hit` and a similarity: the
    /// semantic cache.
    pub semantic: usize,
    /// Anything else (`miss`): the provider's answer.
    pub other: usize,
    /// Not answered 200.
    pub failed: usize,
}

/// What the bot saw, per kind of question.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaqSeen {
    pub repeats: Seen,
    pub paraphrases: Seen,
    pub near_misses: Seen,
}

impl FaqSeen {
    fn of(&mut self, kind: Kind) -> &mut Seen {
        match kind {
            Kind::Repeat => &mut self.repeats,
            Kind::Paraphrase => &mut self.paraphrases,
            Kind::NearMiss => &mut self.near_misses,
        }
    }

    /// Requests that did not get a 200.
    pub fn failed(&self) -> usize {
        self.repeats.failed + self.paraphrases.failed + self.near_misses.failed
    }
}

/// The body of one question (the same system prompt, model and sampling
/// parameters every time: only the user's words differ).
pub fn body(question: &str) -> String {
    json!({
        "model": FAQ_MODEL,
        "max_tokens": 300,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are the help-desk assistant of an online shop. Answer in two sentences."},
            {"role": "user", "content": question},
        ],
    })
    .to_string()
}

/// Play the FAQ bot through the sidecar on `port`: one conversation turn
/// per question, in order (a repeat is asked only once its first answer is
/// stored), and what the sidecar said about each.
pub async fn faq_bot(client: HttpClient, port: u16) -> anyhow::Result<FaqSeen> {
    let mut seen = FaqSeen::default();
    for (kind, question) in asked() {
        let headers = vec![
            (
                "authorization",
                "Bearer the-app-has-no-real-key".to_string(),
            ),
            ("x-fake-output-tokens", "120".to_string()),
        ];
        let (status, h) = send_with_headers(
            &client,
            port,
            "/v1/chat/completions",
            headers,
            body(question),
        )
        .await?;
        let s = seen.of(kind);
        s.asked += 1;
        let hit = h.get("x-tokenwarden-cache").is_some_and(|v| v == "hit");
        let similar = h.contains_key("x-tokenwarden-cache-similarity");
        match (status, hit, similar) {
            (200, true, false) => s.exact += 1,
            (200, true, true) => s.semantic += 1,
            (200, false, _) => s.other += 1,
            _ => s.failed += 1,
        }
    }
    Ok(seen)
}

/// How many of the provider's chat requests asked a question of `kind`
/// (the fake provider's request log; the user message's text).
pub fn at_provider(log: &[LoggedRequest], kind: Kind) -> usize {
    let questions: Vec<&str> = asked()
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, q)| q)
        .collect();
    log.iter()
        .filter_map(LoggedRequest::body_json)
        .filter(|b| b["model"] == FAQ_MODEL)
        .filter(|b| {
            b["messages"][1]["content"]
                .as_str()
                .is_some_and(|q| questions.contains(&q))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_repeats_come_first_then_each_paraphrase_then_each_near_miss() {
        let a = asked();
        let (p, n) = (count(Kind::Paraphrase), count(Kind::NearMiss));
        assert_eq!((p, n), (17, 4));
        assert_eq!(a.len(), ROUNDS * 8 + p + n);
        assert_eq!(a[0], a[8]);
        assert_eq!(a[ROUNDS * 8], (Kind::Paraphrase, FAQS[0].paraphrases[0]));
        assert_eq!(a[ROUNDS * 8 + p].0, Kind::NearMiss);
        let unique: std::collections::BTreeSet<_> = a.iter().map(|q| q.1).collect();
        assert_eq!(unique.len(), 8 + p + n, "every wording is distinct");
        assert_eq!(
            near_miss_kinds(),
            [("another order number", 2), ("a negation", 2)]
        );
    }
}
