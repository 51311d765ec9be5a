//! Offline validation of a JSON value against a CRD version's `openAPIV3Schema`.
//!
//! Test support: checks example custom resources against the generated CRDs the
//! way kube-apiserver (structural schema validation, pruning reported as errors)
//! plus `kubectl apply --validate=strict` would, without a cluster.
//!
//! ```ignore
//! let errors = openapi::validate(&crd_version_schema, &custom_resource_json);
//! assert!(errors.is_empty(), "{}", openapi::format_errors(&errors));
//! ```
//!
//! Implemented: `type` (object, array, string, integer, number, boolean),
//! `nullable`, `properties`, `required`, `additionalProperties`, unknown fields,
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-embedded-resource`, `enum`, `pattern`, `minLength`/`maxLength`,
//! `minimum`/`maximum` (+ boolean `exclusiveMinimum`/`exclusiveMaximum`),
//! `multipleOf`, `minItems`/`maxItems`, `uniqueItems`,
//! `minProperties`/`maxProperties`, `format` (`date-time`, `date`, `int32`,
//! `int64`), `items`, `x-kubernetes-list-type` (`map` with
//! `x-kubernetes-list-map-keys`, `set`), `allOf`/`anyOf`/`oneOf`/`not`.
//! Ignored: `x-kubernetes-validations` (CEL), `default`, `description`, other
//! formats.
//!
//! Paths: properties are joined with `.`, array items are `[i]`, and map keys
//! that are not plain identifiers (`[A-Za-z0-9_-]+`) are `[key]`, e.g.
//! `spec.routes[2].target.tier`, `metadata.labels[app.kubernetes.io/name]`.
//! The root object's path is the empty string (shown as `<root>`).
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

/// One validation failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    /// Field path, e.g. `spec.routes[2].target.tier`; empty for the root.
    pub path: String,
    /// Apiserver-style message, e.g. `Unsupported value: "Yearly": supported values: "Daily"`.
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "<root>: {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Validate `value` against `schema` (the openAPIV3Schema of one CRD version).
///
/// `value` is a whole custom resource: at the root, `apiVersion`, `kind` and
/// `metadata` are always allowed (metadata is checked like `ObjectMeta`).
/// Returns every error found, in document order; empty means valid.
pub fn validate(schema: &Value, value: &Value) -> Vec<SchemaError> {
    let mut v = Validator::default();
    v.node(schema, value, "", Mode::Structural, true);
    v.errors
}

/// One error per line, for assertion messages.
pub fn format_errors(errors: &[SchemaError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a schema node is applied.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// The structural schema proper: fields not in it are unknown (pruned).
    Structural,
    /// Inside `allOf`/`anyOf`/`oneOf`/`not` (and the root `metadata` schema):
    /// value checks only, fields not mentioned are fine.
    ValueOnly,
}

#[derive(Default)]
struct Validator {
    errors: Vec<SchemaError>,
}

const RESOURCE_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

impl Validator {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(SchemaError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn invalid(&mut self, path: &str, value: &Value, detail: impl fmt::Display) {
        self.err(path, format!("Invalid value: {}: {detail}", render(value)));
    }

    fn node(&mut self, schema: &Value, value: &Value, path: &str, mode: Mode, root: bool) {
        let s = match schema {
            Value::Object(s) => s,
            Value::Bool(false) => {
                self.err(path, "Forbidden: no value is allowed here");
                return;
            }
            _ => return,
        };

        let (types, type_allows_null) = declared_types(s);
        let int_or_string = flag(s, "x-kubernetes-int-or-string");

        if value.is_null() {
            if flag(s, "nullable") || type_allows_null {
                return;
            }
            if !types.is_empty() || int_or_string {
                self.invalid(path, value, "must not be null");
                return;
            }
        }

        // type
        let type_ok = if int_or_string {
            is_integer(value) || value.is_string()
        } else {
            types.is_empty() || types.iter().any(|t| has_type(value, t))
        };
        if !type_ok {
            let expected = if int_or_string {
                "must be of type integer or string".to_owned()
            } else {
                format!("must be of type {}", types.join(" or "))
            };
            self.invalid(path, value, expected);
            return;
        }

        // enum
        if let Some(Value::Array(allowed)) = s.get("enum")
            && !allowed.iter().any(|a| json_eq(a, value))
        {
            let list = allowed
                .iter()
                .map(render_scalar)
                .collect::<Vec<_>>()
                .join(", ");
            self.err(
                path,
                format!(
                    "Unsupported value: {}: supported values: {list}",
                    render(value)
                ),
            );
        }

        match value {
            Value::String(text) => self.string(s, value, text, path),
            Value::Number(_) => self.number(s, value, path),
            Value::Array(items) => self.array(s, items, path, mode),
            Value::Object(obj) => self.object(s, obj, path, mode, root),
            Value::Bool(_) | Value::Null => {}
        }

        self.junctors(s, value, path);
    }

    fn string(&mut self, s: &Map<String, Value>, value: &Value, text: &str, path: &str) {
        let len = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            self.invalid(path, value, format!("should be at least {min} chars long"));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            self.err(path, format!("Too long: may not be longer than {max}"));
        }
        if let Some(Value::String(pattern)) = s.get("pattern") {
            match pattern_matches(pattern, text) {
                Ok(true) => {}
                Ok(false) => self.invalid(path, value, format!("should match '{pattern}'")),
                Err(e) => self.err(
                    path,
                    format!("Internal error: invalid pattern '{pattern}': {e}"),
                ),
            }
        }
        match s.get("format").and_then(Value::as_str) {
            Some("date-time") if !is_date_time(text) => {
                self.invalid(path, value, "must be of type date-time");
            }
            Some("date") if !is_date(text) => self.invalid(path, value, "must be of type date"),
            _ => {}
        }
    }

    fn number(&mut self, s: &Map<String, Value>, value: &Value, path: &str) {
        let Some(x) = value.as_f64() else { return };
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let exclusive = flag(s, "exclusiveMinimum");
            if x < min || (exclusive && x == min) {
                let rel = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                self.invalid(path, value, format!("should be {rel} {}", fmt_num(min)));
            }
        }
        if let Some(Value::Number(n)) = s.get("exclusiveMinimum")
            && let Some(min) = n.as_f64()
            && x <= min
        {
            self.invalid(
                path,
                value,
                format!("should be greater than {}", fmt_num(min)),
            );
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let exclusive = flag(s, "exclusiveMaximum");
            if x > max || (exclusive && x == max) {
                let rel = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                self.invalid(path, value, format!("should be {rel} {}", fmt_num(max)));
            }
        }
        if let Some(Value::Number(n)) = s.get("exclusiveMaximum")
            && let Some(max) = n.as_f64()
            && x >= max
        {
            self.invalid(path, value, format!("should be less than {}", fmt_num(max)));
        }
        if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
            && m > 0.0
        {
            let q = x / m;
            if (q - q.round()).abs() > 1e-9 {
                self.invalid(
                    path,
                    value,
                    format!("should be a multiple of {}", fmt_num(m)),
                );
            }
        }
        match s.get("format").and_then(Value::as_str) {
            Some("int32")
                if is_integer(value)
                    && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&x) =>
            {
                self.invalid(path, value, "must be of type int32");
            }
            Some("int64") if is_integer(value) => {
                let in_range = match value {
                    Value::Number(n) if n.as_i64().is_some() => true,
                    Value::Number(n) if n.as_u64().is_some() => false,
                    _ => {
                        let bound = 2f64.powi(63);
                        (-bound..bound).contains(&x)
                    }
                };
                if !in_range {
                    self.invalid(path, value, "must be of type int64");
                }
            }
            _ => {}
        }
    }

    fn array(&mut self, s: &Map<String, Value>, items: &[Value], path: &str, mode: Mode) {
        let len = items.len() as u64;
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            self.invalid(
                path,
                &Value::from(len),
                format!("should have at least {min} items"),
            );
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            self.err(
                path,
                format!("Too many: {len}: must have at most {max} items"),
            );
        }

        let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
        if flag(s, "uniqueItems") || list_type == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].iter().any(|prev| json_eq(prev, item)) {
                    self.err(
                        &index(path, i),
                        format!("Duplicate value: {}", render_scalar(item)),
                    );
                }
            }
        }
        if list_type == Some("map") {
            self.list_map(s, items, path);
        }

        match s.get("items") {
            Some(Value::Array(tuple)) => {
                for (i, (item, sub)) in items.iter().zip(tuple).enumerate() {
                    self.node(sub, item, &index(path, i), mode, false);
                }
            }
            Some(sub) => {
                for (i, item) in items.iter().enumerate() {
                    self.node(sub, item, &index(path, i), mode, false);
                }
            }
            None => {}
        }
    }

    fn list_map(&mut self, s: &Map<String, Value>, items: &[Value], path: &str) {
        let keys: Vec<&str> = match s.get("x-kubernetes-list-map-keys") {
            Some(Value::Array(k)) => k.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if keys.is_empty() {
            return;
        }
        let item_props = s.get("items").and_then(|i| i.get("properties"));
        // A missing key takes the key property's default, as the apiserver
        // defaults before validating; with no default it counts as null.
        let key_tuple = |item: &Map<String, Value>| -> Vec<Value> {
            keys.iter()
                .map(|k| {
                    item.get(*k)
                        .or_else(|| {
                            item_props
                                .and_then(|p| p.get(*k))
                                .and_then(|p| p.get("default"))
                        })
                        .cloned()
                        .unwrap_or(Value::Null)
                })
                .collect()
        };
        let mut seen: Vec<Vec<Value>> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Object(obj) = item else { continue };
            let tuple = key_tuple(obj);
            if seen
                .iter()
                .any(|t| t.iter().zip(&tuple).all(|(a, b)| json_eq(a, b)))
            {
                let desc = keys
                    .iter()
                    .zip(&tuple)
                    .map(|(k, v)| format!("{k}={}", render_scalar(v)))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.err(
                    &index(path, i),
                    format!("Duplicate value: duplicate entries for key [{desc}]"),
                );
            } else {
                seen.push(tuple);
            }
        }
    }

    fn object(
        &mut self,
        s: &Map<String, Value>,
        obj: &Map<String, Value>,
        path: &str,
        mode: Mode,
        root: bool,
    ) {
        let count = obj.len() as u64;
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
            && count < min
        {
            self.invalid(
                path,
                &Value::from(count),
                format!("should have at least {min} properties"),
            );
        }
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
            && count > max
        {
            self.err(
                path,
                format!("Too many: {count}: must have at most {max} properties"),
            );
        }

        let props = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
        let embedded = flag(s, "x-kubernetes-embedded-resource");
        let resource_like = root || embedded;
        let is_object_schema = declared_types(s).0.contains(&"object")
            || props.is_some()
            || embedded
            || additional.is_some();

        if let Some(Value::Array(required)) = s.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    self.err(&child(path, r), "Required value");
                }
            }
        }
        if embedded && mode == Mode::Structural {
            for k in ["apiVersion", "kind"] {
                if obj.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                    self.err(&child(path, k), "Required value: must not be empty");
                }
            }
        }

        for (key, v) in obj {
            let p = child(path, key);
            let declared = props.and_then(|ps| ps.get(key));
            if resource_like && RESOURCE_FIELDS.contains(&key.as_str()) {
                if key == "metadata" {
                    self.object_meta(v, &p, root);
                    if let (Some(meta_schema), true) = (declared, v.is_object()) {
                        self.node(meta_schema, v, &p, Mode::ValueOnly, false);
                    }
                    continue;
                }
                if declared.is_none() {
                    if !v.is_string() {
                        self.invalid(&p, v, "must be of type string");
                    }
                    continue;
                }
            }
            if let Some(sub) = declared {
                self.node(sub, v, &p, mode, false);
                continue;
            }
            match additional {
                Some(sub @ Value::Object(_)) => self.node(sub, v, &p, mode, false),
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => self.err(&p, format!("unknown field {}", quote(key))),
                _ => {
                    if mode == Mode::Structural && !preserve && is_object_schema {
                        self.err(&p, format!("unknown field {}", quote(key)));
                    }
                }
            }
        }
    }

    /// `ObjectMeta` checks for the root object and embedded resources.
    fn object_meta(&mut self, meta: &Value, path: &str, root: bool) {
        let obj = match meta {
            Value::Null => return,
            Value::Object(obj) => obj,
            other => {
                self.invalid(path, other, "must be of type object");
                return;
            }
        };
        for (key, v) in obj {
            let p = child(path, key);
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "name" | "generateName" => {
                    let Some(name) = v.as_str() else {
                        self.invalid(&p, v, "must be of type string");
                        continue;
                    };
                    // Embedded resources: the name format depends on the kind, so
                    // the apiserver does not check it.
                    if !root {
                        continue;
                    }
                    let checked = if key == "generateName" {
                        mask_trailing_dash(name)
                    } else {
                        name.to_owned()
                    };
                    if let Some(msg) = dns_subdomain_error(&checked) {
                        self.invalid(&p, v, msg);
                    }
                }
                "namespace" => match v.as_str() {
                    Some(ns) => {
                        if let Some(msg) = dns_label_error(ns) {
                            self.invalid(&p, v, msg);
                        }
                    }
                    None => self.invalid(&p, v, "must be of type string"),
                },
                "selfLink" | "uid" | "resourceVersion" | "creationTimestamp"
                | "deletionTimestamp" => {
                    if !v.is_string() {
                        self.invalid(&p, v, "must be of type string");
                    }
                }
                "generation" | "deletionGracePeriodSeconds" => {
                    if !is_integer(v) {
                        self.invalid(&p, v, "must be of type integer");
                    }
                }
                "labels" | "annotations" => {
                    let Some(map) = v.as_object() else {
                        self.invalid(&p, v, "must be of type object");
                        continue;
                    };
                    for (k, lv) in map {
                        let kp = child(&p, k);
                        if let Some(msg) = qualified_name_error(k) {
                            self.invalid(&kp, &Value::String(k.clone()), msg);
                        }
                        match lv.as_str() {
                            None => self.invalid(&kp, lv, "must be of type string"),
                            Some(text) if key == "labels" => {
                                if let Some(msg) = label_value_error(text) {
                                    self.invalid(&kp, lv, msg);
                                }
                            }
                            Some(_) => {}
                        }
                    }
                }
                "finalizers" => match v.as_array() {
                    Some(items) => {
                        for (i, f) in items.iter().enumerate() {
                            if !f.is_string() {
                                self.invalid(&index(&p, i), f, "must be of type string");
                            }
                        }
                    }
                    None => self.invalid(&p, v, "must be of type array"),
                },
                "ownerReferences" | "managedFields" => match v.as_array() {
                    Some(items) => {
                        for (i, f) in items.iter().enumerate() {
                            if !f.is_object() {
                                self.invalid(&index(&p, i), f, "must be of type object");
                            }
                        }
                    }
                    None => self.invalid(&p, v, "must be of type array"),
                },
                _ => self.err(&p, format!("unknown field {}", quote(key))),
            }
        }
    }

    fn junctors(&mut self, s: &Map<String, Value>, value: &Value, path: &str) {
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                self.node(sub, value, path, Mode::ValueOnly, false);
            }
        }
        if let Some(Value::Array(any)) = s.get("anyOf") {
            let results: Vec<_> = any.iter().map(|sub| sub_errors(sub, value, path)).collect();
            if !results.is_empty() && !results.iter().any(Vec::is_empty) {
                self.invalid(path, value, "must validate at least one schema (anyOf)");
                self.errors.extend(best(results));
            }
        }
        if let Some(Value::Array(one)) = s.get("oneOf") {
            let results: Vec<_> = one.iter().map(|sub| sub_errors(sub, value, path)).collect();
            let valid = results.iter().filter(|r| r.is_empty()).count();
            if !results.is_empty() && valid != 1 {
                let found = if valid == 0 {
                    "Found none valid".to_owned()
                } else {
                    format!("Found {valid} valid alternatives")
                };
                self.invalid(
                    path,
                    value,
                    format!("must validate one and only one schema (oneOf). {found}"),
                );
                if valid == 0 {
                    self.errors.extend(best(results));
                }
            }
        }
        if let Some(not) = s.get("not")
            && sub_errors(not, value, path).is_empty()
        {
            self.invalid(path, value, "must not validate the schema (not)");
        }
    }
}

fn sub_errors(schema: &Value, value: &Value, path: &str) -> Vec<SchemaError> {
    let mut v = Validator::default();
    v.node(schema, value, path, Mode::ValueOnly, false);
    v.errors
}

/// The failing branch with the fewest errors (reported alongside an anyOf/oneOf failure).
fn best(results: Vec<Vec<SchemaError>>) -> Vec<SchemaError> {
    results.into_iter().min_by_key(Vec::len).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Schema and value helpers

fn flag(s: &Map<String, Value>, key: &str) -> bool {
    s.get(key) == Some(&Value::Bool(true))
}

/// The declared `type`s (a string, or an array as in plain JSON Schema) and
/// whether that array includes "null".
fn declared_types(s: &Map<String, Value>) -> (Vec<&str>, bool) {
    match s.get("type") {
        Some(Value::String(t)) => (vec![t.as_str()], false),
        Some(Value::Array(ts)) => {
            let all: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            let nullable = all.contains(&"null");
            (all.into_iter().filter(|t| *t != "null").collect(), nullable)
        }
        _ => (Vec::new(), false),
    }
}

/// Whether `value` is a JSON integer; like the apiserver, a float with no
/// fractional part (`1.0`) counts as an integer.
fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64()
                || n.is_u64()
                || n.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        _ => false,
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    }
}

/// JSON equality with numbers compared by value (`1` == `1.0`) and objects
/// compared regardless of key order.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(i, j)| json_eq(i, j))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Value as shown after `Invalid value:`: scalars as JSON, containers by type name.
fn render(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

/// Value as JSON (containers included), for enum lists and duplicates.
fn render_scalar(value: &Value) -> String {
    value.to_string()
}

fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn child(path: &str, key: &str) -> String {
    if !is_plain_key(key) {
        format!("{path}[{key}]")
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

// ---------------------------------------------------------------------------
// Patterns: Kubernetes evaluates `pattern` with Go's RE2 (`regexp`). The Rust
// `regex` crate has the same syntax and semantics for what CRDs use, except
// that Go's Perl classes are ASCII-only (Rust's are Unicode) and a few things
// Go treats as literals are errors or operators in Rust; `go_to_rust_regex`
// bridges those.

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<String, Result<regex::Regex, String>>> =
        RefCell::new(HashMap::new());
}

fn pattern_matches(pattern: &str, text: &str) -> Result<bool, String> {
    REGEX_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let compiled = cache.entry(pattern.to_owned()).or_insert_with(|| {
            regex::Regex::new(&go_to_rust_regex(pattern)).map_err(|e| e.to_string())
        });
        compiled
            .as_ref()
            .map(|re| re.is_match(text))
            .map_err(Clone::clone)
    })
}

/// Rewrites a Go RE2 pattern into an equivalent Rust `regex` pattern.
fn go_to_rust_regex(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\\' => {
                let Some(n) = next else {
                    out.push('\\');
                    break;
                };
                match n {
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    's' => out.push_str(r"[\t\n\f\r ]"),
                    'S' => out.push_str(r"[^\t\n\f\r ]"),
                    'w' => out.push_str("[0-9A-Za-z_]"),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    _ => {
                        out.push('\\');
                        out.push(n);
                    }
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    out.push_str(r"\]");
                    i += 1;
                }
                continue;
            }
            '[' if in_class => {
                if next == Some(':') {
                    // POSIX class such as [:alpha:]: copy through ":]".
                    let rest: String = chars[i..].iter().collect();
                    if let Some(end) = rest.find(":]") {
                        out.push_str(&rest[..end + 2]);
                        i += rest[..end + 2].chars().count();
                        continue;
                    }
                }
                out.push_str(r"\[");
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '&' | '-' | '~' if in_class && next == Some(c) => {
                // `&&`, `--`, `~~` are set operators in Rust, literals in Go.
                out.push('\\');
                out.push(c);
                out.push('\\');
                out.push(c);
                i += 2;
                continue;
            }
            '{' if !in_class && !is_repetition(&chars[i..]) => out.push_str(r"\{"),
            '}' if !in_class => {
                // A `}` that closes a repetition was copied with it below.
                out.push_str(r"\}");
            }
            '{' if !in_class => {
                // Copy the whole `{m}`, `{m,}` or `{m,n}`.
                while let Some(&ch) = chars.get(i) {
                    out.push(ch);
                    i += 1;
                    if ch == '}' {
                        break;
                    }
                }
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Whether `s` (starting at `{`) is a Go repetition `{m}`, `{m,}` or `{m,n}`.
fn is_repetition(s: &[char]) -> bool {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if s.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    s.get(i) == Some(&'}')
}

// ---------------------------------------------------------------------------
// Formats

/// `date` as the apiserver checks it: `YYYY-MM-DD`, a real calendar day.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(y), Some(m), Some(d)) = (digits(&b[0..4]), digits(&b[5..7]), digits(&b[8..10]))
    else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// `date-time` as the apiserver checks it (kube-openapi strfmt `IsDateTime`):
/// RFC 3339, case-insensitive: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn is_date_time(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let Some((date, time)) = lower.split_once('t') else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let b = time.as_bytes();
    if b.len() < 9 || b[2] != b':' || b[5] != b':' {
        return false;
    }
    let (Some(h), Some(mi), Some(sec)) = (digits(&b[0..2]), digits(&b[3..5]), digits(&b[6..8]))
    else {
        return false;
    };
    if h > 23 || mi > 59 || sec > 59 {
        return false;
    }
    let mut rest = &b[8..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        [b'z'] => true,
        [sign, h1, h2, b':', m1, m2] if *sign == b'+' || *sign == b'-' => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u32, |acc, d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

// ---------------------------------------------------------------------------
// ObjectMeta name rules (k8s.io/apimachinery/pkg/util/validation)

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// apimachinery's `maskTrailingDash` for `generateName` prefixes: a trailing
/// `-` (and the character before it) becomes `a`.
fn mask_trailing_dash(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() > 1 && chars.last() == Some(&'-') {
        let mut masked: String = chars[..chars.len() - 2].iter().collect();
        masked.push('a');
        masked
    } else {
        name.to_owned()
    }
}

fn dns_label_error(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".to_owned());
    }
    (!is_dns_label(s)).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
         and must start and end with an alphanumeric character"
            .to_owned()
    })
}

fn dns_subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".to_owned());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
         or '.', and must start and end with an alphanumeric character"
            .to_owned()
    })
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Label and annotation keys: `[prefix/]name`.
fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".to_owned());
        }
        if let Some(msg) = dns_subdomain_error(p) {
            return Some(format!("prefix part {msg}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".to_owned());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".to_owned());
    }
    (!is_qualified_name_part(name)).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and \
         end with an alphanumeric character"
            .to_owned()
    })
}

fn label_value_error(v: &str) -> Option<String> {
    if v.len() > 63 {
        return Some("must be no more than 63 characters".to_owned());
    }
    (!v.is_empty() && !is_qualified_name_part(v)).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
         or '.', and must start and end with an alphanumeric character"
            .to_owned()
    })
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(schema: &Value, value: &Value) -> Vec<String> {
        validate(schema, value)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A root schema with `spec` as given.
    fn root(spec: Value) -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": spec,
            }
        })
    }

    fn cr(spec: Value) -> Value {
        json!({
            "apiVersion": "tokenwarden.dev/v1alpha1",
            "kind": "TokenBudget",
            "metadata": {"name": "demo", "namespace": "default"},
            "spec": spec,
        })
    }

    fn spec_errors(spec_schema: Value, spec: Value) -> Vec<String> {
        msgs(&root(spec_schema), &cr(spec))
    }

    #[test]
    fn valid_resource_has_no_errors() {
        let schema = root(json!({
            "type": "object",
            "required": ["period"],
            "properties": {
                "period": {"type": "string", "enum": ["Daily", "Monthly"]},
                "limit": {"type": "integer", "minimum": 1},
            }
        }));
        assert_eq!(
            msgs(&schema, &cr(json!({"period": "Daily", "limit": 5}))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn types() {
        let s = json!({"type": "object", "properties": {
            "o": {"type": "object"}, "a": {"type": "array"}, "s": {"type": "string"},
            "i": {"type": "integer"}, "n": {"type": "number"}, "b": {"type": "boolean"},
        }});
        assert!(
            spec_errors(
                s.clone(),
                json!({"o": {}, "a": [], "s": "x", "i": 3, "n": 1.5, "b": true})
            )
            .is_empty()
        );
        assert!(spec_errors(s.clone(), json!({"i": -3, "n": 2, "i2": null})).len() == 1); // only i2 unknown
        assert_eq!(
            spec_errors(
                s.clone(),
                json!({"o": [], "a": {}, "s": 1, "i": 1.5, "n": "1", "b": "true"})
            ),
            vec![
                r#"spec.o: Invalid value: "array": must be of type object"#,
                r#"spec.a: Invalid value: "object": must be of type array"#,
                r#"spec.s: Invalid value: 1: must be of type string"#,
                r#"spec.i: Invalid value: 1.5: must be of type integer"#,
                r#"spec.n: Invalid value: "1": must be of type number"#,
                r#"spec.b: Invalid value: "true": must be of type boolean"#,
            ]
        );
        // 1.0 is an integer for the apiserver too.
        assert!(spec_errors(s, json!({"i": 1.0})).is_empty());
    }

    #[test]
    fn root_must_be_object() {
        assert_eq!(
            msgs(&root(json!({"type": "object"})), &json!([1])),
            vec![r#"<root>: Invalid value: "array": must be of type object"#]
        );
    }

    #[test]
    fn nullable() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "string", "nullable": true},
            "b": {"type": "string"},
            "c": {"type": ["string", "null"]},
            "d": {"x-kubernetes-preserve-unknown-fields": true},
        }});
        assert!(spec_errors(s.clone(), json!({"a": null, "c": null, "d": null})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"b": null})),
            vec!["spec.b: Invalid value: null: must not be null"]
        );
    }

    #[test]
    fn required() {
        let s = json!({"type": "object", "required": ["a", "b"], "properties": {
            "a": {"type": "string"}, "b": {"type": "string"}}});
        assert!(spec_errors(s.clone(), json!({"a": "x", "b": "y"})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"a": "x"})),
            vec!["spec.b: Required value"]
        );
    }

    #[test]
    fn unknown_fields() {
        let s = json!({"type": "object", "properties": {
            "known": {"type": "string"},
            "empty": {"type": "object"},
            "inner": {"type": "object", "properties": {"x": {"type": "integer"}}},
        }});
        assert_eq!(
            spec_errors(
                s,
                json!({"known": "k", "foo": 1, "empty": {"bar": 2}, "inner": {"x": 1, "y": 2}})
            ),
            vec![
                r#"spec.foo: unknown field "foo""#,
                r#"spec.empty.bar: unknown field "bar""#,
                r#"spec.inner.y: unknown field "y""#,
            ]
        );
        // Unknown top-level fields too.
        assert_eq!(
            msgs(
                &root(json!({"type": "object"})),
                &json!({"kind": "X", "spex": {}})
            ),
            vec![r#"spex: unknown field "spex""#]
        );
    }

    #[test]
    fn additional_properties() {
        let s = json!({"type": "object", "properties": {
            "m": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            "closed": {"type": "object", "additionalProperties": false},
            "open": {"type": "object", "additionalProperties": true},
        }});
        assert!(
            spec_errors(
                s.clone(),
                json!({"m": {"a": 1, "b.c/d": 2}, "open": {"x": [1]}})
            )
            .is_empty()
        );
        assert_eq!(
            spec_errors(s, json!({"m": {"a": "1", "b.c/d": -1}, "closed": {"x": 1}})),
            vec![
                r#"spec.m.a: Invalid value: "1": must be of type integer"#,
                "spec.m[b.c/d]: Invalid value: -1: should be greater than or equal to 0",
                r#"spec.closed.x: unknown field "x""#,
            ]
        );
    }

    #[test]
    fn preserve_unknown_fields() {
        let s = json!({"type": "object", "properties": {
            "p": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "known": {"type": "integer"},
                    "strict": {"type": "object", "properties": {"a": {"type": "string"}}},
                }
            },
            "any": {"x-kubernetes-preserve-unknown-fields": true},
        }});
        assert!(spec_errors(
            s.clone(),
            json!({"p": {"known": 1, "whatever": {"deep": [1, {"x": null}]}}, "any": [1, "two"]})
        )
        .is_empty());
        // Declared fields below are still validated, and preservation is not inherited
        // by declared sub-schemas.
        assert_eq!(
            spec_errors(
                s,
                json!({"p": {"known": "x", "strict": {"a": "ok", "b": 1}}})
            ),
            vec![
                r#"spec.p.known: Invalid value: "x": must be of type integer"#,
                r#"spec.p.strict.b: unknown field "b""#,
            ]
        );
    }

    #[test]
    fn int_or_string() {
        let s = json!({"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true, "pattern": "^[a-z]+$", "minimum": 1},
            "alt": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
        }});
        assert!(spec_errors(s.clone(), json!({"port": 8080, "alt": "http"})).is_empty());
        assert!(spec_errors(s.clone(), json!({"port": "http", "alt": 1})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"port": 1.5, "alt": true})),
            vec![
                "spec.port: Invalid value: 1.5: must be of type integer or string",
                "spec.alt: Invalid value: true: must be of type integer or string",
            ]
        );
    }

    #[test]
    fn int_or_string_value_checks_apply_per_type() {
        let s = json!({"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true, "pattern": "^[a-z]+$", "minimum": 1},
        }});
        assert_eq!(
            spec_errors(s.clone(), json!({"port": "HTTP"})),
            vec![r#"spec.port: Invalid value: "HTTP": should match '^[a-z]+$'"#]
        );
        assert_eq!(
            spec_errors(s, json!({"port": 0})),
            vec!["spec.port: Invalid value: 0: should be greater than or equal to 1"]
        );
    }

    #[test]
    fn embedded_resource() {
        let s = json!({"type": "object", "properties": {
            "template": {
                "type": "object",
                "x-kubernetes-embedded-resource": true,
                "properties": {"spec": {"type": "object", "properties": {"x": {"type": "string"}}}}
            },
            "raw": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "x-kubernetes-preserve-unknown-fields": true},
        }});
        assert!(spec_errors(
            s.clone(),
            json!({
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Any_Name", "labels": {"a": "b"}}, "spec": {"x": "y"}},
                "raw": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}},
            })
        )
        .is_empty());
        assert_eq!(
            spec_errors(
                s,
                json!({"template": {"metadata": {"bogus": 1}, "spec": {"z": 1}}})
            ),
            vec![
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.template.kind: Required value: must not be empty",
                r#"spec.template.metadata.bogus: unknown field "bogus""#,
                r#"spec.template.spec.z: unknown field "z""#,
            ]
        );
    }

    #[test]
    fn enums() {
        let s = json!({"type": "object", "properties": {
            "period": {"type": "string", "enum": ["Hourly", "Daily", "Weekly", "Monthly"]},
            "n": {"type": "integer", "enum": [1, 2]},
        }});
        assert!(spec_errors(s.clone(), json!({"period": "Daily", "n": 2})).is_empty());
        assert!(spec_errors(s.clone(), json!({"n": 2.0})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"period": "Yearly", "n": 3})),
            vec![
                r#"spec.period: Unsupported value: "Yearly": supported values: "Hourly", "Daily", "Weekly", "Monthly""#,
                "spec.n: Unsupported value: 3: supported values: 1, 2",
            ]
        );
    }

    #[test]
    fn patterns() {
        let usd = r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$";
        let s = json!({"type": "object", "properties": {
            "limit": {"type": "object", "properties": {"usd": {"type": "string", "pattern": usd}}},
            "url": {"type": "string", "pattern": r"^https?://[^\s/?#]+(/[^\s?#]*)?$"},
            "dur": {"type": "string", "pattern": r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$"},
            "tok": {"type": "string", "pattern": r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"},
            "key": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"},
        }});
        assert!(spec_errors(
            s.clone(),
            json!({"limit": {"usd": "50.25"}, "url": "https://api.example.com/v1", "dur": "1m30s",
                   "tok": "X-Api-Key", "key": "api.key_1"})
        )
        .is_empty());
        assert_eq!(
            spec_errors(
                s,
                json!({"limit": {"usd": "50,00"}, "url": "https://exa mple.com", "dur": "1d",
                       "tok": "a b", "key": "a/b"})
            ),
            vec![
                format!(r#"spec.limit.usd: Invalid value: "50,00": should match '{usd}'"#),
                r#"spec.url: Invalid value: "https://exa mple.com": should match '^https?://[^\s/?#]+(/[^\s?#]*)?$'"#.to_owned(),
                r#"spec.dur: Invalid value: "1d": should match '^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$'"#.to_owned(),
                r#"spec.tok: Invalid value: "a b": should match '^[A-Za-z0-9!#$%&'*+.^_`|~-]+$'"#.to_owned(),
                r#"spec.key: Invalid value: "a/b": should match '^[-._a-zA-Z0-9]+$'"#.to_owned(),
            ]
        );
    }

    #[test]
    fn go_regex_semantics() {
        // Perl classes are ASCII-only in Go.
        assert_eq!(pattern_matches(r"^\d+$", "١٢"), Ok(false));
        assert_eq!(pattern_matches(r"^\d+$", "12"), Ok(true));
        assert_eq!(pattern_matches(r"^\s$", "\u{a0}"), Ok(false));
        assert_eq!(pattern_matches(r"^\s$", "\t"), Ok(true));
        assert_eq!(pattern_matches(r"^\w+$", "é"), Ok(false));
        assert_eq!(pattern_matches(r"^[\w.]+$", "a.b_c"), Ok(true));
        assert_eq!(pattern_matches(r"^[^\s]+$", "ab"), Ok(true));
        assert_eq!(pattern_matches(r"^[^\s]+$", "a b"), Ok(false));
        // Unanchored patterns search, like Go's MatchString.
        assert_eq!(pattern_matches("b", "abc"), Ok(true));
        // Things Go reads as literals.
        assert_eq!(pattern_matches(r"^a{$", "a{"), Ok(true));
        assert_eq!(pattern_matches(r"^[a&&b]+$", "&"), Ok(true));
        assert_eq!(pattern_matches(r"^[[]$", "["), Ok(true));
        assert_eq!(pattern_matches(r"^[]a]+$", "]a"), Ok(true));
        assert_eq!(pattern_matches(r"^[[:alpha:]]+$", "abc"), Ok(true));
        assert_eq!(pattern_matches(r"^x{2,3}$", "xxx"), Ok(true));
        assert_eq!(pattern_matches(r"^x{2,3}$", "xxxx"), Ok(false));
        // Character counts are per code point.
        assert_eq!(pattern_matches(r"^.{2}$", "éé"), Ok(true));
        assert!(pattern_matches("(", "x").is_err());
    }

    #[test]
    fn invalid_pattern_is_reported() {
        let s = json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}});
        let e = spec_errors(s, json!({"a": "x"}));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("spec.a: Internal error: invalid pattern '('"),
            "{e:?}"
        );
    }

    #[test]
    fn string_lengths_count_characters() {
        let s = json!({"type": "object", "properties": {
            "s": {"type": "string", "minLength": 2, "maxLength": 3}}});
        assert!(spec_errors(s.clone(), json!({"s": "ééé"})).is_empty());
        assert_eq!(
            spec_errors(s.clone(), json!({"s": "é"})),
            vec![r#"spec.s: Invalid value: "é": should be at least 2 chars long"#]
        );
        assert_eq!(
            spec_errors(s, json!({"s": "abcd"})),
            vec!["spec.s: Too long: may not be longer than 3"]
        );
    }

    #[test]
    fn numeric_bounds() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "b": {"type": "number", "minimum": 0, "exclusiveMinimum": true,
                  "maximum": 1, "exclusiveMaximum": true},
            "c": {"type": "integer", "multipleOf": 5},
        }});
        assert!(spec_errors(s.clone(), json!({"a": -1000, "b": 0.5, "c": 10})).is_empty());
        assert!(spec_errors(s.clone(), json!({"a": 1000})).is_empty());
        assert_eq!(
            spec_errors(s.clone(), json!({"a": 1001, "b": 0, "c": 7})),
            vec![
                "spec.a: Invalid value: 1001: should be less than or equal to 1000",
                "spec.b: Invalid value: 0: should be greater than 0",
                "spec.c: Invalid value: 7: should be a multiple of 5",
            ]
        );
        assert_eq!(
            spec_errors(s, json!({"a": -1001, "b": 1.0})),
            vec![
                "spec.a: Invalid value: -1001: should be greater than or equal to -1000",
                "spec.b: Invalid value: 1.0: should be less than 1",
            ]
        );
    }

    #[test]
    fn formats() {
        let s = json!({"type": "object", "properties": {
            "t": {"type": "string", "format": "date-time"},
            "d": {"type": "string", "format": "date"},
            "i32": {"type": "integer", "format": "int32"},
            "i64": {"type": "integer", "format": "int64"},
            "other": {"type": "string", "format": "uuid"},
            "u": {"type": "integer", "format": "uint32"},
        }});
        for t in [
            "2024-01-31T10:00:00Z",
            "2024-02-29t23:59:59.123456+02:00",
            "2024-01-01T00:00:00-07:30",
        ] {
            assert!(spec_errors(s.clone(), json!({"t": t})).is_empty(), "{t}");
        }
        for t in [
            "2024-01-31",
            "2024-01-31T10:00:00",
            "2023-02-29T10:00:00Z",
            "2024-01-31T24:00:00Z",
            "2024-01-31 10:00:00Z",
            "2024-01-31T10:00Z",
            "yesterday",
        ] {
            assert_eq!(
                spec_errors(s.clone(), json!({"t": t})),
                vec![format!(
                    r#"spec.t: Invalid value: "{t}": must be of type date-time"#
                )],
                "{t}"
            );
        }
        assert!(
            spec_errors(
                s.clone(),
                json!({"d": "2024-12-31", "other": "not-a-uuid", "u": -1})
            )
            .is_empty()
        );
        assert_eq!(
            spec_errors(s.clone(), json!({"d": "2024-13-01"})),
            vec![r#"spec.d: Invalid value: "2024-13-01": must be of type date"#]
        );
        assert!(spec_errors(s.clone(), json!({"i32": 2_147_483_647, "i64": i64::MIN})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"i32": 2_147_483_648_i64, "i64": u64::MAX})),
            vec![
                "spec.i32: Invalid value: 2147483648: must be of type int32",
                "spec.i64: Invalid value: 18446744073709551615: must be of type int64",
            ]
        );
    }

    #[test]
    fn item_counts_and_paths() {
        let s = json!({"type": "object", "properties": {
            "providers": {"type": "array", "minItems": 1, "maxItems": 2,
                          "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }});
        assert!(spec_errors(s.clone(), json!({"providers": [{"name": "a"}]})).is_empty());
        assert_eq!(
            spec_errors(s.clone(), json!({"providers": []})),
            vec!["spec.providers: Invalid value: 0: should have at least 1 items"]
        );
        assert_eq!(
            spec_errors(
                s,
                json!({"providers": [{"name": "a"}, {"name": 2}, {"nam": "c"}]})
            ),
            vec![
                "spec.providers: Too many: 3: must have at most 2 items",
                "spec.providers[1].name: Invalid value: 2: must be of type string",
                r#"spec.providers[2].nam: unknown field "nam""#,
            ]
        );
    }

    #[test]
    fn nested_array_paths() {
        let s = json!({"type": "object", "properties": {
            "routes": {"type": "array", "items": {"type": "object", "properties": {
                "match": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
                "target": {"type": "object", "properties": {"tier": {"type": "string"}}},
            }}}
        }});
        assert_eq!(
            spec_errors(
                s,
                json!({"routes": [{}, {}, {"target": {"tier": 3}, "match": [["a"], ["b", 7]]}]})
            ),
            vec![
                "spec.routes[2].target.tier: Invalid value: 3: must be of type string",
                "spec.routes[2].match[1][1]: Invalid value: 7: must be of type string",
            ]
        );
    }

    #[test]
    fn unique_items_and_sets() {
        let s = json!({"type": "object", "properties": {
            "u": {"type": "array", "uniqueItems": true, "items": {"type": "integer"}},
            "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "atomic": {"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}},
        }});
        assert!(
            spec_errors(
                s.clone(),
                json!({"u": [1, 2], "set": ["a", "b"], "atomic": ["a", "a"]})
            )
            .is_empty()
        );
        assert_eq!(
            spec_errors(s, json!({"u": [1, 2, 1.0], "set": ["a", "b", "a", "a"]})),
            vec![
                "spec.u[2]: Duplicate value: 1.0",
                r#"spec.set[2]: Duplicate value: "a""#,
                r#"spec.set[3]: Duplicate value: "a""#,
            ]
        );
    }

    #[test]
    fn list_map_duplicates() {
        let s = json!({"type": "object", "properties": {
            "providers": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"],
                          "properties": {"name": {"type": "string"}, "url": {"type": "string"}}}
            },
            "ports": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {"type": "object", "properties": {
                    "port": {"type": "integer"},
                    "protocol": {"type": "string", "default": "TCP"}}}
            },
        }});
        assert!(
            spec_errors(
                s.clone(),
                json!({"providers": [{"name": "x"}, {"name": "y"}],
                   "ports": [{"port": 80}, {"port": 80, "protocol": "UDP"}]})
            )
            .is_empty()
        );
        assert_eq!(
            spec_errors(
                s,
                json!({"providers": [{"name": "x", "url": "a"}, {"name": "y"}, {"name": "x", "url": "b"}],
                       "ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]})
            ),
            vec![
                r#"spec.providers[2]: Duplicate value: duplicate entries for key [name="x"]"#,
                r#"spec.ports[1]: Duplicate value: duplicate entries for key [port=80, protocol="TCP"]"#,
            ]
        );
    }

    #[test]
    fn property_counts() {
        let s = json!({"type": "object", "properties": {
            "m": {"type": "object", "minProperties": 1, "maxProperties": 2,
                  "additionalProperties": {"type": "string"}}}});
        assert!(spec_errors(s.clone(), json!({"m": {"a": "1"}})).is_empty());
        assert_eq!(
            spec_errors(s.clone(), json!({"m": {}})),
            vec!["spec.m: Invalid value: 0: should have at least 1 properties"]
        );
        assert_eq!(
            spec_errors(s, json!({"m": {"a": "1", "b": "2", "c": "3"}})),
            vec!["spec.m: Too many: 3: must have at most 2 properties"]
        );
    }

    #[test]
    fn one_of_required_alternatives() {
        // The shape kube-derive emits for "exactly one of tier / provider".
        let s = json!({"type": "object", "properties": {
            "target": {
                "type": "object",
                "properties": {"tier": {"type": "string"}, "provider": {"type": "string"}},
                "oneOf": [{"required": ["tier"]}, {"required": ["provider"]}]
            }
        }});
        assert!(spec_errors(s.clone(), json!({"target": {"tier": "cheap"}})).is_empty());
        assert_eq!(
            spec_errors(s.clone(), json!({"target": {"tier": "a", "provider": "b"}})),
            vec![
                r#"spec.target: Invalid value: "object": must validate one and only one schema (oneOf). Found 2 valid alternatives"#
            ]
        );
        assert_eq!(
            spec_errors(s, json!({"target": {}})),
            vec![
                r#"spec.target: Invalid value: "object": must validate one and only one schema (oneOf). Found none valid"#,
                "spec.target.tier: Required value",
            ]
        );
    }

    #[test]
    fn any_of_all_of_not() {
        let s = json!({"type": "object", "properties": {
            "any": {"type": "string", "anyOf": [{"pattern": "^a"}, {"maxLength": 2}]},
            "all": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 9}]},
            "not": {"type": "string", "not": {"enum": ["forbidden"]}},
            "sub": {"type": "object", "anyOf": [{"properties": {"x": {"minimum": 5}}}]},
        }});
        assert!(
            spec_errors(
                s.clone(),
                json!({"any": "abcdef", "all": 5, "not": "fine", "sub": {}})
            )
            .is_empty()
        );
        assert!(spec_errors(s.clone(), json!({"any": "zz"})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"any": "zzz", "all": 10, "not": "forbidden"})),
            vec![
                r#"spec.any: Invalid value: "zzz": must validate at least one schema (anyOf)"#,
                r#"spec.any: Invalid value: "zzz": should match '^a'"#,
                "spec.all: Invalid value: 10: should be less than or equal to 9",
                r#"spec.not: Invalid value: "forbidden": must not validate the schema (not)"#,
            ]
        );
    }

    #[test]
    fn junctor_branches_do_not_report_unknown_fields() {
        // Fields only mentioned in anyOf branches are still unknown to the
        // structural schema; fields mentioned in the structural part are fine.
        let s = json!({"type": "object", "properties": {
            "o": {"type": "object", "properties": {"a": {"type": "integer"}},
                  "anyOf": [{"properties": {"a": {"minimum": 1}}}]}}});
        assert!(spec_errors(s.clone(), json!({"o": {"a": 1}})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"o": {"a": 0, "b": 1}})),
            vec![
                r#"spec.o.b: unknown field "b""#,
                r#"spec.o: Invalid value: "object": must validate at least one schema (anyOf)"#,
                "spec.o.a: Invalid value: 0: should be greater than or equal to 1",
            ]
        );
    }

    #[test]
    fn root_allows_api_version_kind_metadata() {
        // Even when the schema does not declare them.
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object"}}});
        let value = json!({
            "apiVersion": "tokenwarden.dev/v1alpha1",
            "kind": "RoutingPolicy",
            "metadata": {
                "name": "my-policy.v2",
                "namespace": "team-a",
                "labels": {"app.kubernetes.io/name": "x", "tier": ""},
                "annotations": {"example.com/note": "any text / here"},
                "finalizers": ["tokenwarden.dev/cleanup"],
                "creationTimestamp": null,
                "generation": 3,
            },
            "spec": {},
        });
        assert_eq!(msgs(&schema, &value), Vec::<String>::new());
        // Declared metadata schema ({type: object}) does not make metadata fields unknown.
        assert_eq!(
            msgs(&root(json!({"type": "object"})), &value),
            Vec::<String>::new()
        );
    }

    #[test]
    fn root_metadata_is_checked_like_object_meta() {
        let schema = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}}});
        let value = json!({
            "apiVersion": 1,
            "kind": "K",
            "metadata": {
                "name": "Not_Valid_Name",
                "namespace": "x.y",
                "labels": {"bad key!": "v", "ok": "bad value!", "n": 1},
                "nmae": "typo",
            },
        });
        assert_eq!(
            msgs(&schema, &value),
            vec![
                "apiVersion: Invalid value: 1: must be of type string",
                r#"metadata.name: Invalid value: "Not_Valid_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"#,
                r#"metadata.namespace: Invalid value: "x.y": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"#,
                r#"metadata.labels[bad key!]: Invalid value: "bad key!": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"#,
                r#"metadata.labels.ok: Invalid value: "bad value!": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"#,
                "metadata.labels.n: Invalid value: 1: must be of type string",
                r#"metadata.nmae: unknown field "nmae""#,
                // The CRD's own metadata schema applies too.
                "metadata.name: Too long: may not be longer than 10",
            ]
        );
        assert_eq!(
            msgs(&schema, &json!({"metadata": "x"})),
            vec![r#"metadata: Invalid value: "x": must be of type object"#]
        );
    }

    #[test]
    fn generate_name_may_end_with_dash() {
        let schema = json!({"type": "object"});
        assert!(msgs(&schema, &json!({"metadata": {"generateName": "budget-"}})).is_empty());
        assert_eq!(
            msgs(&schema, &json!({"metadata": {"generateName": "-"}})).len(),
            1
        );
    }

    #[test]
    fn resource_fields_are_only_special_at_root() {
        let s = json!({"type": "object", "properties": {"x": {"type": "integer"}}});
        assert_eq!(
            spec_errors(s, json!({"kind": "X"})),
            vec![r#"spec.kind: unknown field "kind""#]
        );
    }

    #[test]
    fn collects_all_errors() {
        let s = json!({"type": "object", "required": ["z"], "properties": {
            "a": {"type": "string", "maxLength": 1, "pattern": "^[0-9]$"},
            "z": {"type": "string"}}});
        assert_eq!(
            spec_errors(s, json!({"a": "ab"})),
            vec![
                "spec.z: Required value",
                "spec.a: Too long: may not be longer than 1",
                r#"spec.a: Invalid value: "ab": should match '^[0-9]$'"#,
            ]
        );
    }

    #[test]
    fn display_and_format_errors() {
        let e = vec![
            SchemaError {
                path: String::new(),
                message: "m1".into(),
            },
            SchemaError {
                path: "spec.a".into(),
                message: "m2".into(),
            },
        ];
        assert_eq!(format_errors(&e), "<root>: m1\nspec.a: m2");
    }

    #[test]
    fn boolean_and_empty_schemas() {
        let s = json!({"type": "object", "properties": {
            "anything": {"x-kubernetes-preserve-unknown-fields": true},
            "never": false,
        }});
        assert!(spec_errors(s.clone(), json!({"anything": {"a": [1]}})).is_empty());
        assert_eq!(
            spec_errors(s, json!({"never": 1})),
            vec!["spec.never: Forbidden: no value is allowed here"]
        );
    }
}
