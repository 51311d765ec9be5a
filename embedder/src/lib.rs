//! tokenwarden-embedder: a self-hosted, OpenAI-compatible `/v1/embeddings`
//! server for a local sentence-embedding model (all-MiniLM-L6-v2 by default),
//! in Rust with candle on the CPU. The semantic response cache embeds prompts
//! with it — over HTTP, or in process through [`Embedder`].
//!
//! - [`model`]: [`Embedder::load`] a model directory (nothing is downloaded),
//!   [`Embedder::embed`] texts into L2-normalised mean-pooled vectors;
//!   [`Embedder::fingerprint`] identifies the model files (scope caches by it).
//! - [`api`]: the OpenAI embeddings request/response and error JSON.
//! - [`server`]: the hyper server with its limits, probes and shutdown.
//! - [`metrics`]: the Prometheus metrics.
//!
//! See `docs/embedder.md`.

pub mod api;
pub mod metrics;
pub mod model;
pub mod server;

pub use model::{EmbedError, Embedded, Embedder, LoadError, MAX_TOKENS, MODEL_FILES};
