//! Reading RoutingPolicy and TokenBudget objects from YAML, as standalone
//! mode and the operator's local source do.
//!
//! A file may hold several documents (`---`). Each must be a
//! `tokenwarden.dev/v1alpha1` `RoutingPolicy` or `TokenBudget`; anything else
//! is an error that names the document, so a typo is never silently ignored.
//! Type errors carry the field path (`spec.limit.tokens: invalid type ...`).

use serde::Deserialize;

use crate::{routing_policy::RoutingPolicy, token_budget::TokenBudget, validate::ValidationErrors};

/// One API object read from YAML.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A RoutingPolicy.
    RoutingPolicy(Box<RoutingPolicy>),
    /// A TokenBudget.
    TokenBudget(Box<TokenBudget>),
}

/// Why a YAML stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not YAML, or not an object.
    #[error("document {doc}: {message}")]
    Syntax {
        /// 1-based document index in the stream.
        doc: usize,
        /// Parser message.
        message: String,
    },
    /// Not one of our kinds.
    #[error(
        "document {doc}: unsupported object {api_version}/{kind}: expected tokenwarden.dev/v1alpha1 RoutingPolicy or TokenBudget"
    )]
    UnsupportedKind {
        /// 1-based document index.
        doc: usize,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// A field has the wrong type or an unknown name.
    #[error("document {doc} ({kind} {name}): {path}: {message}")]
    Field {
        /// 1-based document index.
        doc: usize,
        /// Its kind.
        kind: String,
        /// Its name, or `<unnamed>`.
        name: String,
        /// Path of the field.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The object parsed but `validate()` rejected it.
    #[error("document {doc}: {errors}")]
    Invalid {
        /// 1-based document index.
        doc: usize,
        /// The field errors.
        errors: ValidationErrors,
    },
}

/// Parse every document of a YAML stream into objects, without validating.
pub fn parse_yaml(text: &str) -> Result<Vec<Object>, LoadError> {
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value = serde_json::Value::deserialize(de).map_err(|e| LoadError::Syntax {
            doc,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        out.push(parse_value(doc, value)?);
    }
    Ok(out)
}

/// Parse one object already turned into JSON.
pub fn parse_value(doc: usize, value: serde_json::Value) -> Result<Object, LoadError> {
    let Some(map) = value.as_object() else {
        return Err(LoadError::Syntax {
            doc,
            message: "expected a mapping (an API object)".into(),
        });
    };
    let field = |k: &str| {
        map.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_string();
    let field_err = |e: serde_path_to_error::Error<serde_json::Error>| LoadError::Field {
        doc,
        kind: kind.clone(),
        name: name.clone(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    };
    match (api_version.as_str(), kind.as_str()) {
        ("tokenwarden.dev/v1alpha1", "RoutingPolicy") => serde_path_to_error::deserialize(value)
            .map(|o| Object::RoutingPolicy(Box::new(o)))
            .map_err(field_err),
        ("tokenwarden.dev/v1alpha1", "TokenBudget") => serde_path_to_error::deserialize(value)
            .map(|o| Object::TokenBudget(Box::new(o)))
            .map_err(field_err),
        _ => Err(LoadError::UnsupportedKind {
            doc,
            api_version,
            kind,
        }),
    }
}

/// Parse and validate every document; the first invalid object is an error.
pub fn load_yaml(text: &str) -> Result<Vec<Object>, LoadError> {
    let objects = parse_yaml(text)?;
    for (i, o) in objects.iter().enumerate() {
        o.validate()
            .map_err(|errors| LoadError::Invalid { doc: i + 1, errors })?;
    }
    Ok(objects)
}

// === impl Object ===

impl Object {
    /// Run `validate()` on the object.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        match self {
            Object::RoutingPolicy(p) => p.validate(),
            Object::TokenBudget(b) => b.validate(),
        }
    }
}
