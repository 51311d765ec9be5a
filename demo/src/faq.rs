//! The demo's response-cache traffic (namespace `support`): a support/FAQ
//! bot whose customers keep asking the same questions, under a
//! RoutingPolicy with `spec.cache` on and a daily TokenBudget.
//!
//! The questions are [`QUESTIONS`]: base questions × wordings. Wording 0
//! is the base question as customers most often type it; the others are
//! paraphrases of it. The bot first sends exact repeats (every base
//! question's wording 0, [`ROUNDS`] times over, one question after another
//! so that each is filled before it is asked again), which the exact cache
//! answers from the second round on; then every paraphrase once. The exact
//! cache cannot answer a paraphrase (another text is another key): those
//! are misses today and are the semantic cache's to answer once it is on.
//! The demo prints the hit rate and the saved dollars the operator's ledger
//! counted (see `report::print_response_cache`).

use serde_json::json;

use crate::{
    processes::HttpClient,
    requests::{Tasks, send},
};

/// The FAQ bot's model.
pub const FAQ_MODEL: &str = "gpt-4o-mini";

/// Rounds of exact repeats of every base question.
pub const ROUNDS: usize = 5;

/// Base questions × wordings: wording 0 is asked [`ROUNDS`] times, the
/// paraphrases once each.
pub const QUESTIONS: [[&str; 3]; 8] = [
    [
        "How do I reset my password?",
        "I forgot my password, how can I reset it?",
        "What are the steps to change a forgotten password?",
    ],
    [
        "What are your opening hours?",
        "When are you open?",
        "At what times is the store open?",
    ],
    [
        "How long does shipping take?",
        "How many days until my order arrives?",
        "What is the usual delivery time?",
    ],
    [
        "Can I return an item I bought online?",
        "Is it possible to send back something I ordered on the website?",
        "How do returns work for online orders?",
    ],
    [
        "Do you ship internationally?",
        "Can you deliver outside the country?",
        "Is shipping available to other countries?",
    ],
    [
        "How do I cancel my subscription?",
        "I want to stop my subscription, what do I do?",
        "Where can I end my plan?",
    ],
    [
        "Which payment methods do you accept?",
        "How can I pay for my order?",
        "What ways of paying are supported?",
    ],
    [
        "How do I contact customer support?",
        "What is the best way to reach your support team?",
        "How can I talk to someone from support?",
    ],
];

/// The requests the bot sends, in order: the exact repeats, then the
/// paraphrases.
pub fn asked() -> Vec<&'static str> {
    let mut v = Vec::new();
    for _ in 0..ROUNDS {
        v.extend(QUESTIONS.iter().map(|q| q[0]));
    }
    v.extend(QUESTIONS.iter().flat_map(|q| q[1..].iter().copied()));
    v
}

/// Play the FAQ bot: one conversation turn per question, in order (one
/// task: a repeat is asked only once its first answer is stored).
pub fn faq_bot(tasks: &mut Tasks, client: &HttpClient, port: u16) {
    let client = client.clone();
    tasks.push(tokio::spawn(async move {
        let mut worst = (200, String::new());
        for question in asked() {
            let body = json!({
                "model": FAQ_MODEL,
                "max_tokens": 300,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": "You are the help-desk assistant of an online shop. Answer in two sentences."},
                    {"role": "user", "content": question},
                ],
            })
            .to_string();
            let headers = vec![
                (
                    "authorization",
                    "Bearer the-app-has-no-real-key".to_string(),
                ),
                ("x-fake-output-tokens", "120".to_string()),
            ];
            let (status, model) =
                send(&client, port, "/v1/chat/completions", headers, body).await?;
            if status != 200 {
                worst = (status, model);
            } else if worst.0 == 200 {
                worst.1 = model;
            }
        }
        anyhow::Ok(("faq", false, worst.0, worst.1))
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_repeats_come_first_then_each_paraphrase_once() {
        let a = asked();
        assert_eq!(a.len(), ROUNDS * 8 + 8 * 2);
        assert_eq!(a[0], a[8]);
        assert_eq!(a[ROUNDS * 8], QUESTIONS[0][1]);
        let unique: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(unique.len(), 8 * 3);
    }
}
