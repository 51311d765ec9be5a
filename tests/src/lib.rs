//! The test harness, shared by the integration tests of every package: the
//! fake provider (re-exported from `tokenwarden-fake-provider`), a fake
//! operator and a fake sidecar speaking the control protocol, spawn helpers
//! for the real operator and sidecar binaries, a test CA, free ports and
//! HTTP probes, a scripted mock Kubernetes API (`mock_api::Scenario`) and an
//! in-process API server stand-in for the operator's Kubernetes mode, and an
//! in-process OTLP collector (`otlp`: gRPC and HTTP, plain and TLS), and
//! the real embedder (`embedder`).

pub mod apiserver;
pub mod embedder;
pub mod fake_operator;
pub mod fake_sidecar;
pub mod mock_api;
pub mod operator;
pub mod otlp;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod redis;
pub mod sidecar;
pub mod tls;

pub use tokenwarden_fake_provider as fake_provider;
