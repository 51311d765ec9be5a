//! The sentence-embedding model: a BERT encoder (all-MiniLM-L6-v2 and other
//! sentence-transformers BERT models) run on the CPU with candle, loaded from
//! a directory only — nothing is ever downloaded.
//!
//! The recipe is sentence-transformers' for this model
//! (<https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2>, `modules.json`:
//! Transformer → Pooling(mean) → Normalize): the last hidden state is averaged
//! over the real tokens (the attention mask excludes padding) and the mean is
//! L2-normalised, so the cosine of two embeddings is their dot product.
//!
//! Pitfall (measured): the shipped `tokenizer.json` pads every input to a fixed
//! 128 tokens and truncates at 128. Padding is turned off for single inputs and
//! set to "longest in the batch" for batches (masked out of the mean), and
//! truncation is sentence-transformers' `max_seq_length` of 256 tokens.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The files [`Embedder::load`] reads from the model directory.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Inputs longer than this many tokens (with `[CLS]`/`[SEP]`) are truncated,
/// as sentence-transformers does (`max_seq_length` of all-MiniLM-L6-v2).
pub const MAX_TOKENS: usize = 256;

/// Inputs per forward pass: bounds the activation memory of a large request
/// (attention is batch × heads × tokens²).
const CHUNK: usize = 16;

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// One or more of [`MODEL_FILES`] is not in the directory.
    #[error(
        "model directory {dir} lacks {missing}: it must hold config.json, tokenizer.json and \
         model.safetensors (e.g. the all-MiniLM-L6-v2 files; nothing is downloaded)",
        missing = .missing.join(", ")
    )]
    MissingFiles {
        /// The directory that was given.
        dir: PathBuf,
        /// The file names not found in it.
        missing: Vec<&'static str>,
    },
    /// A file exists but could not be read or parsed.
    #[error("{file}: {reason}")]
    Invalid {
        /// The offending file.
        file: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// Why a batch could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The tokenizer failed on an input.
    #[error("tokenizer: {0}")]
    Tokenize(String),
    /// The model's forward pass failed.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
}

/// Embeddings of a batch plus the tokens each input was embedded from.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// One L2-normalised vector of [`Embedder::dimensions`] floats per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model read per input (after truncation, with `[CLS]` and `[SEP]`).
    pub tokens: Vec<usize>,
}

/// A loaded sentence-embedding model. `Send + Sync`: share it behind an `Arc`
/// and call [`Embedder::embed`] from blocking threads.
pub struct Embedder {
    model: BertModel,
    single: Tokenizer,
    batch: Tokenizer,
    device: Device,
    dimensions: usize,
    model_id: String,
    fingerprint: String,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model_id", &self.model_id)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

fn invalid(file: &Path, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Invalid {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn fingerprint(config: &str, tokenizer: &Path, weights: &[u8]) -> Result<String, LoadError> {
    let tok = std::fs::read(tokenizer).map_err(|e| invalid(tokenizer, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [config.as_bytes(), &tok, weights] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Embedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    /// The model id is the directory's name.
    pub fn load(dir: &Path) -> Result<Embedder, LoadError> {
        let missing: Vec<&'static str> = MODEL_FILES
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(LoadError::MissingFiles {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        let device = Device::Cpu;
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| invalid(&config_path, e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| invalid(&config_path, e))?;
        let dimensions = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| v.get("hidden_size").and_then(serde_json::Value::as_u64))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| invalid(&config_path, "no hidden_size"))?;
        let tok_path = dir.join("tokenizer.json");
        let mut single = Tokenizer::from_file(&tok_path).map_err(|e| invalid(&tok_path, e))?;
        single.with_padding(None);
        single
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| invalid(&tok_path, e))?;
        let mut batch = single.clone();
        batch.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let weights_path = dir.join("model.safetensors");
        // Read into memory (safe code only: the workspace forbids `unsafe`,
        // which mmap would need); the weights are ~91 MB for this model.
        let weights = std::fs::read(&weights_path).map_err(|e| invalid(&weights_path, e))?;
        let fingerprint = fingerprint(&config_text, &tok_path, &weights)?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| invalid(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| invalid(&weights_path, e))?;
        let model_id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Embedder {
            model,
            single,
            batch,
            device,
            dimensions,
            model_id,
            fingerprint,
        })
    }

    /// SHA-256 (hex) over the config, tokenizer and weight files: two
    /// embedders with the same fingerprint give the same vectors, so a cache
    /// of embeddings can be scoped by it (the directory name can lie).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The model's id: the name of the directory it was loaded from.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Length of every embedding (384 for all-MiniLM-L6-v2).
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Tokens `text` is embedded from (after truncation, with `[CLS]`/`[SEP]`).
    pub fn count_tokens(&self, text: &str) -> Result<usize, EmbedError> {
        let enc = self
            .single
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().len())
    }

    /// L2-normalised, mean-pooled embeddings of `texts`, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_counted(texts)?.vectors)
    }

    /// [`Embedder::embed`] plus the token count of each input (for `usage`).
    /// CPU-bound: call it from a blocking thread in async code.
    pub fn embed_counted(&self, texts: &[&str]) -> Result<Embedded, EmbedError> {
        let mut out = Embedded {
            vectors: Vec::with_capacity(texts.len()),
            tokens: Vec::with_capacity(texts.len()),
        };
        for chunk in texts.chunks(CHUNK) {
            self.embed_chunk(chunk, &mut out)?;
        }
        Ok(out)
    }

    fn embed_chunk(&self, texts: &[&str], out: &mut Embedded) -> Result<(), EmbedError> {
        let encodings = if texts.len() == 1 {
            vec![
                self.single
                    .encode(texts[0], true)
                    .map_err(|e| EmbedError::Tokenize(e.to_string()))?,
            ]
        } else {
            self.batch
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| EmbedError::Tokenize(e.to_string()))?
        };
        let mut ids = Vec::with_capacity(encodings.len());
        let mut masks = Vec::with_capacity(encodings.len());
        for enc in &encodings {
            let mask = enc.get_attention_mask();
            out.tokens.push(mask.iter().filter(|&&m| m != 0).count());
            ids.push(Tensor::new(enc.get_ids(), &self.device)?);
            masks.push(Tensor::new(mask, &self.device)?);
        }
        let ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&masks, 0)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // [b, n, d]
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, n, 1]
        let pooled = hidden
            .broadcast_mul(&m)?
            .sum(1)?
            .broadcast_div(&m.sum(1)?)?; // [b, d]
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        let normed = pooled.broadcast_div(&norm)?;
        out.vectors.extend(normed.to_vec2::<f32>()?);
        Ok(())
    }
}
