//! The field checks both kinds share, and [`Errors`], the collector they
//! report into: names, lengths, list bounds, label selectors, Secret
//! references, URLs, money, prices and durations.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use kube::ResourceExt;
use tokenwarden_core::{
    money::{PricePerMtok, Usd},
    selector::{LabelSelector, Operator, Requirement},
    workload::ObjectRef,
};

use super::{FieldError, ValidationErrors};
use crate::common::SecretKeyRef;

/// Namespace assumed for objects that state none (as kubectl does).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Longest duration accepted for windows, cool-downs and timeouts.
pub(super) const MAX_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// Collects errors while walking an object.
#[derive(Debug, Default)]
pub(super) struct Errors {
    errors: Vec<FieldError>,
}

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn finish<T>(self, object: String, value: T) -> Result<T, ValidationErrors> {
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
    pub(super) fn max_items<T>(&mut self, path: &str, list: &[T], max: usize) {
        if list.len() > max {
            self.push(
                path,
                format!("must have at most {max} items, has {}", list.len()),
            );
        }
    }

    /// Check a string against length bounds.
    pub(super) fn length(&mut self, path: &str, s: &str, min: usize, max: usize) -> bool {
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
    pub(super) fn dns_label(&mut self, path: &str, s: &str) -> bool {
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
    pub(super) fn unique<'a>(
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

pub(super) fn object_ref<K: ResourceExt>(obj: &K, e: &mut Errors) -> ObjectRef {
    let name = obj.meta().name.clone().unwrap_or_default();
    if name.is_empty() {
        e.push("metadata.name", "is required");
    } else if name.len() > 253
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        e.push(
            "metadata.name",
            format!("{name:?} is not a valid DNS subdomain name"),
        );
    }
    let namespace = obj
        .namespace()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    ObjectRef { namespace, name }
}

pub(super) fn secret_ref(e: &mut Errors, path: &str, s: &SecretKeyRef) {
    e.length(&format!("{path}.name"), &s.name, 1, 253);
    if e.length(&format!("{path}.key"), &s.key, 1, 253)
        && !s
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        e.push(
            format!("{path}.key"),
            "a Secret key consists of letters, digits, '-', '_' and '.'",
        );
    }
}

pub(super) fn check_base_url(e: &mut Errors, path: &str, url: &str) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        None => e.push(path, format!("{url:?} must start with https:// or http://")),
        Some(rest) => {
            let host = rest.split('/').next().unwrap_or_default();
            if host.is_empty()
                || rest.contains(char::is_whitespace)
                || rest.contains(['?', '#'])
                || url.len() > 2048
            {
                e.push(
                    path,
                    format!("{url:?} is not a base URL: scheme and host, optional path, no query"),
                );
            }
        }
    }
}

pub(super) fn price(e: &mut Errors, path: &str, s: &str) -> Option<PricePerMtok> {
    match s.parse::<PricePerMtok>() {
        Ok(p) => Some(p),
        Err(err) => {
            e.push(path, format!("{err}"));
            None
        }
    }
}

pub(super) fn usd(e: &mut Errors, path: &str, s: &str) -> Option<Usd> {
    let valid_shape = s
        .split_once('.')
        .map_or(s.len() <= 9, |(i, f)| i.len() <= 9 && f.len() <= 6);
    match s.parse::<Usd>() {
        Ok(v) if valid_shape => Some(v),
        Ok(_) => {
            e.push(
                path,
                format!("{s:?} has too many digits: at most 9 before and 6 after '.'"),
            );
            None
        }
        Err(err) => {
            e.push(path, err.to_string());
            None
        }
    }
}

/// Parse a duration of the form `1h30m`, `90s`, `250ms`, `1.5s` into
/// milliseconds; must be positive and at most `max_ms`.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration: use numbers with units ms, s, m or h, e.g. \"30s\" or \"1m30s\""
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty()
            || int.len() > 6
            || frac.len() > 3
            || (num.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let int: u64 = int.parse().map_err(|_| bad())?;
        let frac_scaled: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        // value = int + frac/1000 units; in ms: int*unit + frac_scaled*unit/1000.
        total = total
            .saturating_add(int.saturating_mul(unit_ms))
            .saturating_add(frac_scaled.saturating_mul(unit_ms) / 1000);
        rest = tail;
    }
    Ok(total)
}

pub(super) fn duration(e: &mut Errors, path: &str, s: &str, max_ms: u64) -> Option<u64> {
    match parse_duration_ms(s) {
        Ok(0) => {
            e.push(path, "must be greater than zero");
            None
        }
        Ok(ms) if ms > max_ms => {
            e.push(
                path,
                format!("{s:?} is longer than the maximum of {}", human_ms(max_ms)),
            );
            None
        }
        Ok(ms) => Some(ms),
        Err(msg) => {
            e.push(path, msg);
            None
        }
    }
}

fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

pub(super) fn selector(e: &mut Errors, path: &str, sel: Option<&K8sSelector>) -> LabelSelector {
    let Some(sel) = sel else {
        return LabelSelector::default();
    };
    let mut out = LabelSelector::default();
    for (k, v) in sel.match_labels.iter().flatten() {
        label_key(e, &format!("{path}.matchLabels"), k);
        label_value(e, &format!("{path}.matchLabels[{k}]"), v);
        out.match_labels.insert(k.clone(), v.clone());
    }
    let exprs = sel.match_expressions.as_deref().unwrap_or_default();
    e.max_items(&format!("{path}.matchExpressions"), exprs, 32);
    for (i, r) in exprs.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        label_key(e, &format!("{p}.key"), &r.key);
        let values = r.values.clone().unwrap_or_default();
        let operator = match r.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                e.push(
                    format!("{p}.operator"),
                    format!(
                        "unsupported operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                    ),
                );
                continue;
            }
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => e.push(
                format!("{p}.values"),
                format!("must be non-empty for operator {}", r.operator),
            ),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => e.push(
                format!("{p}.values"),
                format!("must be empty for operator {}", r.operator),
            ),
            _ => {}
        }
        for (j, v) in values.iter().enumerate() {
            label_value(e, &format!("{p}.values[{j}]"), v);
        }
        out.match_expressions.push(Requirement {
            key: r.key.clone(),
            operator,
            values,
        });
    }
    out
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

fn label_key(e: &mut Errors, path: &str, key: &str) {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    });
    if !prefix_ok || !is_label_name(name) {
        e.push(path, format!("{key:?} is not a valid label key"));
    }
}

fn label_value(e: &mut Errors, path: &str, v: &str) {
    if !v.is_empty() && !is_label_name(v) {
        e.push(path, format!("{v:?} is not a valid label value"));
    }
}

pub(super) fn glob_ok(e: &mut Errors, path: &str, g: &str) {
    if e.length(path, g, 1, 256)
        && let Err(err) = glob::Pattern::new(g)
    {
        e.push(path, format!("{g:?} is not a valid glob: {}", err.msg));
    }
}
