//! Helpers for black-box tests.

pub mod fake_provider;
