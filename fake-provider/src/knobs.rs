//! Per-request knobs read from `x-fake-*` headers, and fault parsing.

use std::time::Duration;

use http::HeaderMap;

use super::FakeConfig;
use super::answer::Answer;
use super::encoding::Encoding;

/// Largest `x-fake-output-tokens` accepted (keeps a typo from allocating gigabytes).
pub(crate) const MAX_OUTPUT_TOKENS: u64 = 1_000_000;

/// Largest `x-fake-extra-input-tokens` accepted (keeps the usage sums far from overflowing).
pub(crate) const MAX_EXTRA_INPUT_TOKENS: u64 = 1_000_000_000_000;

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
    /// A normal, billed response delivered in two parts with this pause in between.
    Stall(Duration),
    /// A normal, billed response without any usage in its body or events.
    NoUsage,
    /// A 400 whose message and `x-echo-credential` header carry the request's raw credential.
    EchoKey,
}

impl Fault {
    pub(crate) fn parse(s: &str) -> Result<Fault, String> {
        let s = s.trim();
        match s {
            "garbage" => return Ok(Fault::Garbage),
            "cut" => return Ok(Fault::Cut),
            "close" => return Ok(Fault::Close),
            "no-usage" => return Ok(Fault::NoUsage),
            "echo-key" => return Ok(Fault::EchoKey),
            _ => {}
        }
        let millis = |ms: &str, name: &str| {
            ms.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("bad {name} milliseconds in fault {s:?}"))
        };
        if let Some(ms) = s.strip_prefix("slow-head:") {
            return millis(ms, "slow-head").map(Fault::SlowHead);
        }
        if let Some(ms) = s.strip_prefix("stall:") {
            return millis(ms, "stall").map(Fault::Stall);
        }
        match s.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => Ok(Fault::Status(code)),
            _ => Err(format!(
                "unknown fault {s:?} (expected a 4xx/5xx status, garbage, cut, close, slow-head:MS, stall:MS, no-usage or echo-key)"
            )),
        }
    }

    /// The short label used in the request log (`"503"`, `"cut"`, `"slow-head:200"`,
    /// `"stall:200"`, `"no-usage"`, `"echo-key"`).
    pub(crate) fn label(&self) -> String {
        match self {
            Fault::Status(code) => code.to_string(),
            Fault::Garbage => "garbage".into(),
            Fault::Cut => "cut".into(),
            Fault::SlowHead(d) => format!("slow-head:{}", d.as_millis()),
            Fault::Close => "close".into(),
            Fault::Stall(d) => format!("stall:{}", d.as_millis()),
            Fault::NoUsage => "no-usage".into(),
            Fault::EchoKey => "echo-key".into(),
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
    /// `x-fake-cached-tokens`, when present.
    pub cached_tokens: Option<u64>,
    /// `x-fake-cache-write-tokens`, when present.
    pub cache_write_tokens: Option<u64>,
    /// Billed input the body does not show (`x-fake-extra-input-tokens`).
    pub extra_input_tokens: u64,
    pub served_model: Option<String>,
    pub fault: Option<Fault>,
    pub fault_times: Option<u64>,
    pub fault_key: String,
    pub fail_models: Vec<(String, Fault)>,
    /// `x-fake-answer`, when present.
    pub answer: Option<Answer>,
    /// `x-fake-answer-model`: the answer applies to requests for this model only.
    pub answer_model: Option<String>,
    /// `x-fake-chunked: 1`: a whole JSON body goes without a `content-length`.
    pub chunked: bool,
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

/// The `x-fake-encoding` of a request (identity when absent).
pub(crate) fn encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    header(headers, "x-fake-encoding").map_or(Ok(Encoding::Identity), Encoding::parse)
}

impl Knobs {
    /// Either cache knob is present: its arithmetic applies and the simulated cache is unused.
    pub(crate) fn cache_knobs(&self) -> bool {
        self.cached_tokens.is_some() || self.cache_write_tokens.is_some()
    }

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
        let extra_input_tokens = number(headers, "x-fake-extra-input-tokens")?.unwrap_or(0);
        if extra_input_tokens > MAX_EXTRA_INPUT_TOKENS {
            return Err(format!(
                "x-fake-extra-input-tokens: at most {MAX_EXTRA_INPUT_TOKENS}"
            ));
        }
        // Applied by the caller before authentication (so error bodies are encoded too);
        // checked here so a bad value is a 400 like any other knob.
        encoding(headers)?;
        let fail_models = match header(headers, "x-fake-fail-models") {
            Some(v) => parse_fail_models(v)?,
            None => Vec::new(),
        };
        Ok(Knobs {
            output_tokens,
            chunks,
            chunk_delay,
            cached_tokens: number(headers, "x-fake-cached-tokens")?,
            cache_write_tokens: number(headers, "x-fake-cache-write-tokens")?,
            extra_input_tokens,
            served_model: header(headers, "x-fake-served-model").map(str::to_string),
            fault,
            fault_times: number(headers, "x-fake-fault-times")?,
            fault_key: header(headers, "x-fake-key").unwrap_or("").to_string(),
            fail_models,
            answer: header(headers, "x-fake-answer")
                .map(Answer::parse)
                .transpose()?,
            answer_model: header(headers, "x-fake-answer-model").map(str::to_string),
            chunked: number(headers, "x-fake-chunked")?.is_some_and(|n| n > 0),
        })
    }

    /// The scripted answer for a request for `model`, if any.
    pub(crate) fn answer_for(&self, model: Option<&str>) -> Option<&Answer> {
        let applies = self
            .answer_model
            .as_deref()
            .is_none_or(|m| Some(m) == model);
        self.answer.as_ref().filter(|_| applies)
    }
}
