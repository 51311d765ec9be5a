//! Helpers for black-box tests.

pub mod apiserver;
pub mod fake_provider;
pub mod process;
