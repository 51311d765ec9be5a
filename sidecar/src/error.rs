//! Errors the sidecar itself returns to apps, in the provider's own shape.
//!
//! Every error the proxy makes (as opposed to an upstream error, which is
//! passed through as the provider sent it) is a [`ProxyError`]. One
//! exhaustive map gives its HTTP status, the provider-shaped JSON body (so
//! the official SDKs raise their usual exception types: 429 →
//! `RateLimitError`, 400 → `BadRequestError`, …) and a low-cardinality
//! metric label. Responses made by the sidecar carry `x-tokenwarden-error:
//! <label>` so they are never mistaken for the provider's.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use tokenwarden_core::{budget::RefusalReason, workload::Api};

/// Marks a response produced by the sidecar, with the error's metric label.
pub const ERROR_HEADER: &str = "x-tokenwarden-error";

/// Something the proxy refuses or cannot do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The body is not valid JSON, not an object, or a field has the wrong type.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request has no `model`.
    #[error("you must provide a model parameter")]
    MissingModel,
    /// The body is larger than `--max-body-bytes`.
    #[error("request body is larger than the sidecar's limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The request body did not arrive within `--body-timeout-ms`.
    #[error("tokenwarden sidecar: the request body did not arrive within {0} ms")]
    RequestTimeout(u64),
    /// A path the sidecar does not proxy.
    #[error(
        "tokenwarden sidecar: no route for {method} {path}; supported: POST /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/messages, /v1/messages/count_tokens, GET /v1/models"
    )]
    UnknownPath {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// No valid config loaded yet.
    #[error("tokenwarden sidecar is not ready: no valid configuration loaded yet")]
    NotReady,
    /// No RoutingPolicy selects this workload, or none speaks the request's API.
    #[error("{0}")]
    NoRoute(String),
    /// The provider key could not be read.
    #[error("tokenwarden sidecar cannot read the API key for provider {provider}: {reason}")]
    MissingKey {
        /// Provider name.
        provider: String,
        /// Why.
        reason: String,
    },
    /// A budget refuses the request (limit, Block threshold, per-request cap,
    /// loop guard, or fail-closed without lease).
    #[error("{message}")]
    BudgetBlocked {
        /// What kind of refusal: the metric label and the
        /// `x-tokenwarden-error` header (`limit`, `threshold`, `request_cap`,
        /// `loop_guard`, `lease`, `fail_closed`).
        reason: RefusalReason,
        /// Names the budget, the spend, the limit and when it resets.
        message: String,
        /// Seconds until the budget resets (for `retry-after`), if known.
        retry_after_secs: Option<u64>,
    },
    /// The provider could not be reached after every allowed attempt.
    #[error("tokenwarden sidecar could not reach the provider: {0}")]
    UpstreamUnreachable(String),
    /// The provider did not answer within the per-try timeout, on every attempt.
    #[error("tokenwarden sidecar: the provider did not respond within {0} ms")]
    UpstreamTimeout(u64),
    /// The durable ledger cannot be written (a full disk): the request was
    /// not forwarded (fail-closed).
    #[error(
        "tokenwarden sidecar cannot record this request durably, so it was not sent to the provider: {0}"
    )]
    LedgerUnavailable(String),
    /// The request's task ended without an answer (a bug: it panicked).
    #[error("tokenwarden sidecar: internal error while handling the request")]
    Internal,
    /// The app went away before the response head (nobody receives this;
    /// it names the outcome in metrics).
    #[error("tokenwarden sidecar: the client closed the request")]
    ClientGone,
}

// === impl ProxyError ===

impl ProxyError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::InvalidRequest(_) | ProxyError::MissingModel => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UnknownPath { .. } => StatusCode::NOT_FOUND,
            ProxyError::NotReady
            | ProxyError::NoRoute(_)
            | ProxyError::MissingKey { .. }
            | ProxyError::LedgerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BudgetBlocked { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            // nginx's "client closed request".
            ProxyError::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// Low-cardinality label for metrics and the `x-tokenwarden-error` header.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::InvalidRequest(_) => "invalid_request",
            ProxyError::MissingModel => "missing_model",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::RequestTimeout(_) => "request_timeout",
            ProxyError::UnknownPath { .. } => "unknown_path",
            ProxyError::NotReady => "not_ready",
            ProxyError::NoRoute(_) => "no_route",
            ProxyError::MissingKey { .. } => "missing_key",
            ProxyError::BudgetBlocked { reason, .. } => reason.as_str(),
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::ClientGone => "client_gone",
            ProxyError::Internal => "internal",
            ProxyError::LedgerUnavailable(_) => "ledger_unavailable",
        }
    }

    /// OpenAI's `error.type` / Anthropic's `error.type` for this error.
    fn types(&self) -> (&'static str, &'static str) {
        match self {
            ProxyError::InvalidRequest(_)
            | ProxyError::MissingModel
            | ProxyError::UnknownPath { .. }
            | ProxyError::RequestTimeout(_) => ("invalid_request_error", "invalid_request_error"),
            ProxyError::BodyTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            ProxyError::NotReady
            | ProxyError::NoRoute(_)
            | ProxyError::MissingKey { .. }
            | ProxyError::LedgerUnavailable(_) => ("server_error", "api_error"),
            ProxyError::BudgetBlocked { .. } => ("insufficient_quota", "rate_limit_error"),
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::ClientGone
            | ProxyError::Internal => ("server_error", "api_error"),
        }
    }

    /// OpenAI's `error.code`.
    fn openai_code(&self) -> serde_json::Value {
        match self {
            ProxyError::BudgetBlocked { .. } => json!("tokenwarden_budget_exceeded"),
            ProxyError::MissingModel => json!("missing_model"),
            ProxyError::UnknownPath { .. } => json!("unknown_url"),
            _ => serde_json::Value::Null,
        }
    }

    /// The provider-shaped JSON body for an app speaking `api`.
    pub fn body(&self, api: Api) -> Bytes {
        let (openai_type, anthropic_type) = self.types();
        let message = self.to_string();
        let v = match api {
            Api::OpenAi => json!({
                "error": {
                    "message": message,
                    "type": openai_type,
                    "param": if matches!(self, ProxyError::MissingModel) { json!("model") } else { serde_json::Value::Null },
                    "code": self.openai_code(),
                }
            }),
            Api::Anthropic => json!({
                "type": "error",
                "error": { "type": anthropic_type, "message": message },
            }),
        };
        Bytes::from(v.to_string())
    }

    /// The complete HTTP response.
    pub fn to_response<B: From<Bytes>>(&self, api: Api) -> Response<B> {
        let mut resp = Response::new(B::from(self.body(api)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.label()));
        if let ProxyError::BudgetBlocked {
            retry_after_secs, ..
        } = self
        {
            // The official SDKs retry 429s unless told not to; a spent budget
            // does not recover in seconds, so tell them to surface the error.
            h.insert("x-should-retry", HeaderValue::from_static("false"));
            if let Some(s) = retry_after_secs
                && let Ok(v) = HeaderValue::from_str(&s.to_string())
            {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_block_is_a_provider_shaped_429() {
        let e = ProxyError::BudgetBlocked {
            reason: RefusalReason::Limit,
            message: "TokenBudget ns/b is exhausted".into(),
            retry_after_secs: Some(3600),
        };
        let r: Response<Bytes> = e.to_response(Api::OpenAi);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["x-should-retry"], "false");
        assert_eq!(r.headers()["retry-after"], "3600");
        assert_eq!(r.headers()[ERROR_HEADER], "limit");
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "tokenwarden_budget_exceeded");
        assert_eq!(v["error"]["message"], "TokenBudget ns/b is exhausted");
        let r: Response<Bytes> = e.to_response(Api::Anthropic);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "TokenBudget ns/b is exhausted"}})
        );
    }

    #[test]
    fn every_error_has_a_status_and_label() {
        let all = [
            ProxyError::InvalidRequest("x".into()),
            ProxyError::MissingModel,
            ProxyError::BodyTooLarge { limit: 1 },
            ProxyError::UnknownPath {
                method: "GET".into(),
                path: "/x".into(),
            },
            ProxyError::NotReady,
            ProxyError::NoRoute("x".into()),
            ProxyError::MissingKey {
                provider: "p".into(),
                reason: "r".into(),
            },
            ProxyError::UpstreamUnreachable("x".into()),
            ProxyError::UpstreamTimeout(5),
            ProxyError::ClientGone,
            ProxyError::LedgerUnavailable("disk full".into()),
            ProxyError::RequestTimeout(60_000),
            ProxyError::Internal,
        ];
        let expected = [
            400, 400, 413, 404, 503, 503, 503, 502, 504, 499, 503, 408, 500,
        ];
        for (e, s) in all.iter().zip(expected) {
            assert_eq!(e.status().as_u16(), s, "{e:?}");
            assert!(!e.label().is_empty());
            let v: serde_json::Value = serde_json::from_slice(&e.body(Api::OpenAi)).unwrap();
            assert!(v["error"]["message"].is_string());
        }
    }
}
