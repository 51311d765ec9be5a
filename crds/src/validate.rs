//! Field-path validation errors, shared by the webhook, the operator and
//! standalone mode.
//!
//! The checks themselves live in [`crate::convert`]: validating an object
//! *is* converting it into the compiler's input, so there is one code path
//! and nothing that passes validation can fail later.

use std::fmt;

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in kubectl notation, e.g. `spec.routes[2].target.tier`.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Every problem found in one object (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// `Kind namespace/name` of the object, for messages.
    pub object: String,
    /// The problems, in field order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid: ", self.object)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while walking an object.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    errors: Vec<FieldError>,
}

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn finish<T>(self, object: String, value: T) -> Result<T, ValidationErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ValidationErrors {
                object,
                errors: self.errors,
            })
        }
    }

    /// Check a list bound.
    pub(crate) fn max_items<T>(&mut self, path: &str, list: &[T], max: usize) {
        if list.len() > max {
            self.push(
                path,
                format!("must have at most {max} items, has {}", list.len()),
            );
        }
    }

    /// Check a string against length bounds.
    pub(crate) fn length(&mut self, path: &str, s: &str, min: usize, max: usize) -> bool {
        let n = s.chars().count();
        if n < min {
            self.push(
                path,
                if min == 1 {
                    "must not be empty".to_string()
                } else {
                    format!("must be at least {min} characters")
                },
            );
            false
        } else if n > max {
            self.push(path, format!("must be at most {max} characters, is {n}"));
            false
        } else {
            true
        }
    }

    /// A name others refer to: a DNS-1123 label.
    pub(crate) fn dns_label(&mut self, path: &str, s: &str) -> bool {
        if !self.length(path, s, 1, 63) {
            return false;
        }
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if !ok {
            self.push(
                path,
                format!(
                    "{s:?} is not a valid name: use lower-case letters, digits and '-', \
                     starting and ending with a letter or digit"
                ),
            );
        }
        ok
    }

    /// Names in a list must be unique.
    pub(crate) fn unique<'a>(
        &mut self,
        list_path: &str,
        field: &str,
        names: impl Iterator<Item = &'a str>,
    ) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, n) in names.enumerate() {
            if !seen.insert(n) {
                self.push(
                    format!("{list_path}[{i}].{field}"),
                    format!("duplicate {field} {n:?}"),
                );
            }
        }
    }
}
