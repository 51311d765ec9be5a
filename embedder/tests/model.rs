//! The library against the real all-MiniLM-L6-v2 weights: cosines equal the
//! reference values (computed with an independent numpy implementation of
//! the same weights, which reproduces candle's published output) to ±0.002, batches equal
//! single inputs (padding is masked out), vectors are unit length, and a
//! directory without the model files is refused naming them.

mod common;

use std::sync::OnceLock;

use tokenwarden_embedder::{Embedder, LoadError};

#[allow(clippy::expect_used)] // a test helper
fn embedder() -> Option<&'static Embedder> {
    static E: OnceLock<Option<Embedder>> = OnceLock::new();
    E.get_or_init(|| common::model_dir().map(|d| Embedder::load(&d).expect("model loads")))
        .as_ref()
}

const PAIRS: [(&str, &str, f32); 11] = [
    (
        "The new movie is awesome",
        "The new movie is so great",
        0.8939,
    ),
    ("The cat sits outside", "The new movie is awesome", -0.0247),
    ("what is 2+2", "what is 2+3", 0.8670),
    ("What is 2+2?", "what's two plus two", 0.8134),
    ("Is Python slow?", "Is Python not slow?", 0.9887),
    (
        "How do I reset my password?",
        "How can I reset my password?",
        0.9917,
    ),
    (
        "Who is the CEO of Apple?",
        "Who is the CEO of Google?",
        0.7260,
    ),
    (
        "Translate 'hello' to French",
        "Translate 'hello' to German",
        0.8128,
    ),
    (
        "What is the capital of France?",
        "What's the capital city of France?",
        0.9567,
    ),
    (
        "How do I cancel my order 12345?",
        "How do I cancel my order 12346?",
        0.9828,
    ),
    ("Can I get a refund?", "Can I not get a refund?", 0.9537),
];

#[test]
fn reference_cosines() {
    let Some(e) = embedder() else { return };
    assert_eq!(e.dimensions(), 384);
    assert!(!e.model_id().is_empty());
    assert_eq!(e.fingerprint().len(), 64);
    assert!(e.fingerprint().bytes().all(|b| b.is_ascii_hexdigit()));
    for (a, b, want) in PAIRS {
        let v = e.embed(&[a, b]).unwrap();
        let got = common::dot(&v[0], &v[1]);
        assert!(
            (got - want).abs() <= 0.002,
            "{a:?} / {b:?}: {got:.4}, want {want:.4}"
        );
    }
}

#[test]
fn batch_equals_single_and_unit_length() {
    let Some(e) = embedder() else { return };
    let texts: Vec<&str> = PAIRS.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
    // 22 inputs of different lengths: more than one forward chunk, padded batches.
    let batch = e.embed_counted(&texts).unwrap();
    assert_eq!(batch.vectors.len(), texts.len());
    for (i, text) in texts.iter().enumerate() {
        let single = e.embed_counted(&[text]).unwrap();
        assert_eq!(single.tokens[0], batch.tokens[i], "{text:?}");
        assert_eq!(single.tokens[0], e.count_tokens(text).unwrap());
        let cos = common::dot(&single.vectors[0], &batch.vectors[i]);
        assert!(cos > 0.99999, "{text:?}: batch vs single cosine {cos}");
        let max_diff = single.vectors[0]
            .iter()
            .zip(&batch.vectors[i])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-4, "{text:?}: max diff {max_diff}");
        let norm = common::dot(&batch.vectors[i], &batch.vectors[i]).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
    }
}

#[test]
fn token_counts_and_truncation() {
    let Some(e) = embedder() else { return };
    // [CLS] the new movie is awesome [SEP]
    assert_eq!(e.count_tokens("The new movie is awesome").unwrap(), 7);
    // Long inputs are cut at 256 tokens (sentence-transformers' max_seq_length),
    // not at the 128 the shipped tokenizer.json says.
    let long = "word ".repeat(1000);
    assert_eq!(e.count_tokens(&long).unwrap(), 256);
    let v = e.embed_counted(&[long.as_str()]).unwrap();
    assert_eq!(v.tokens, vec![256]);
    assert_eq!(v.vectors[0].len(), 384);
}

#[test]
fn missing_files_are_named() {
    let dir = std::env::temp_dir().join(format!("tw-embedder-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let err = Embedder::load(&dir).unwrap_err();
    match &err {
        LoadError::MissingFiles { missing, .. } => {
            assert_eq!(missing, &vec!["tokenizer.json", "model.safetensors"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("tokenizer.json, model.safetensors"), "{msg}");
    assert!(msg.contains("nothing is downloaded"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}
