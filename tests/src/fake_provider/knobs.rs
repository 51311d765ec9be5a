//! Per-request knobs read from `x-fake-*` headers, and fault parsing.

use std::time::Duration;

use http::HeaderMap;

use super::FakeConfig;

/// Largest `x-fake-output-tokens` accepted (keeps a typo from allocating gigabytes).
pub(crate) const MAX_OUTPUT_TOKENS: u64 = 1_000_000;

/// A fault the fake injects instead of (or around) the normal response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// That HTTP status with the provider's error body.
    Status(u16),
    /// 200 with `<html>oops` (text/html).
    Garbage,
    /// Half the response, then the connection is dropped.
    Cut,
    /// Sleep this long before sending the response head; the response itself is normal.
    SlowHead(Duration),
    /// Close the connection without any response.
    Close,
}

impl Fault {
    pub(crate) fn parse(s: &str) -> Result<Fault, String> {
        let s = s.trim();
        match s {
            "garbage" => return Ok(Fault::Garbage),
            "cut" => return Ok(Fault::Cut),
            "close" => return Ok(Fault::Close),
            _ => {}
        }
        if let Some(ms) = s.strip_prefix("slow-head:") {
            return ms
                .trim()
                .parse::<u64>()
                .map(|ms| Fault::SlowHead(Duration::from_millis(ms)))
                .map_err(|_| format!("bad slow-head milliseconds in fault {s:?}"));
        }
        match s.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => Ok(Fault::Status(code)),
            _ => Err(format!(
                "unknown fault {s:?} (expected a 4xx/5xx status, garbage, cut, close or slow-head:MS)"
            )),
        }
    }

    /// The short label used in the request log (`"503"`, `"cut"`, `"slow-head:200"`).
    pub(crate) fn label(&self) -> String {
        match self {
            Fault::Status(code) => code.to_string(),
            Fault::Garbage => "garbage".into(),
            Fault::Cut => "cut".into(),
            Fault::SlowHead(d) => format!("slow-head:{}", d.as_millis()),
            Fault::Close => "close".into(),
        }
    }
}

/// Parses `model=fault,model=fault` (the `x-fake-fail-models` syntax).
pub(crate) fn parse_fail_models(s: &str) -> Result<Vec<(String, Fault)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((model, fault)) = part.split_once('=') else {
            return Err(format!(
                "bad fail-models entry {part:?} (expected model=status)"
            ));
        };
        out.push((model.trim().to_string(), Fault::parse(fault)?));
    }
    Ok(out)
}

/// Everything the `x-fake-*` headers (or the config defaults) ask of one request.
#[derive(Debug)]
pub(crate) struct Knobs {
    pub output_tokens: u64,
    pub chunks: usize,
    pub chunk_delay: Duration,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub served_model: Option<String>,
    pub fault: Option<Fault>,
    pub fault_times: Option<u64>,
    pub fault_key: String,
    pub fail_models: Vec<(String, Fault)>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    match header(headers, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("header {name}: expected a non-negative integer, got {v:?}")),
    }
}

impl Knobs {
    pub(crate) fn from_headers(headers: &HeaderMap, cfg: &FakeConfig) -> Result<Knobs, String> {
        let output_tokens = number(headers, "x-fake-output-tokens")?.unwrap_or(cfg.output_tokens);
        if output_tokens > MAX_OUTPUT_TOKENS {
            return Err(format!("x-fake-output-tokens: at most {MAX_OUTPUT_TOKENS}"));
        }
        let chunks = number(headers, "x-fake-chunks")?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(cfg.chunks)
            .max(1);
        let chunk_delay = Duration::from_millis(
            number(headers, "x-fake-chunk-delay-ms")?.unwrap_or(cfg.chunk_delay_ms),
        );
        let fault = header(headers, "x-fake-fault")
            .map(Fault::parse)
            .transpose()?;
        let fail_models = match header(headers, "x-fake-fail-models") {
            Some(v) => parse_fail_models(v)?,
            None => Vec::new(),
        };
        Ok(Knobs {
            output_tokens,
            chunks,
            chunk_delay,
            cached_tokens: number(headers, "x-fake-cached-tokens")?.unwrap_or(0),
            cache_write_tokens: number(headers, "x-fake-cache-write-tokens")?.unwrap_or(0),
            served_model: header(headers, "x-fake-served-model").map(str::to_string),
            fault,
            fault_times: number(headers, "x-fake-fault-times")?,
            fault_key: header(headers, "x-fake-key").unwrap_or("").to_string(),
            fail_models,
        })
    }
}
