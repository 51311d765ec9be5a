//! The OpenAI embeddings API on the wire: parsing and validating a
//! `POST /v1/embeddings` body, writing the response, and OpenAI's error JSON.
//!
//! Source: <https://platform.openai.com/docs/api-reference/embeddings/create>
//! (request: `input` string or array of strings — token arrays are rejected,
//! this model's tokenizer is not OpenAI's; an input "cannot be an empty
//! string"; `model`; `encoding_format` `float` (default) or `base64`;
//! `dimensions`; `user`) and
//! <https://platform.openai.com/docs/api-reference/embeddings/object> (the
//! `list` of `embedding` objects with `index`, plus `model` and `usage`).
//! `base64` is the little-endian f32 bytes of the vector, as OpenAI sends it.
//! Errors: <https://platform.openai.com/docs/guides/error-codes>, shape
//! `{"error":{"message","type","param","code"}}`.

use base64::Engine as _;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// An API error: an HTTP status plus OpenAI's error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `error.message`, human readable (never contains input text).
    pub message: String,
    /// `error.type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// `error.param`: the request field at fault, if any.
    pub param: Option<&'static str>,
    /// `error.code`, e.g. `model_not_found`.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 `invalid_request_error` about `param`.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    /// An error with an explicit status, type and code.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
        }
    }

    /// The response body: `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Vec<u8> {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
        .to_string()
        .into_bytes()
    }
}

/// How the vectors are encoded in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// A JSON array of numbers (the default).
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    /// The texts to embed, in order (a single string becomes one input).
    pub inputs: Vec<String>,
    /// The model the client asked for (echoed in the response).
    pub model: String,
    /// Float or base64.
    pub encoding_format: EncodingFormat,
}

#[derive(Deserialize)]
struct RawRequest {
    input: Option<Value>,
    model: Option<Value>,
    encoding_format: Option<Value>,
    dimensions: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<Value>,
}

/// Limits and identity the request is checked against.
#[derive(Debug, Clone)]
pub struct RequestRules<'a> {
    /// The model name clients must send.
    pub model_name: &'a str,
    /// The embedding length; a `dimensions` other than this is rejected.
    pub dimensions: usize,
    /// Most inputs one request may carry.
    pub max_inputs: usize,
}

/// Parses and validates a request body.
pub fn parse_request(body: &[u8], rules: &RequestRules<'_>) -> Result<EmbeddingRequest, ApiError> {
    let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            None,
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })?;
    let model = match raw.model {
        Some(Value::String(m)) => m,
        Some(_) => return Err(ApiError::invalid(Some("model"), "'model' must be a string")),
        None => {
            return Err(ApiError::invalid(
                Some("model"),
                "you must provide a model parameter",
            ));
        }
    };
    if model != rules.model_name {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{model}` does not exist; this embedder serves `{}`",
                rules.model_name
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        });
    }
    let encoding_format = match raw.encoding_format {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(s)) if s == "float" => EncodingFormat::Float,
        Some(Value::String(s)) if s == "base64" => EncodingFormat::Base64,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                "'encoding_format' must be 'float' or 'base64'",
            ));
        }
    };
    match raw.dimensions {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == u64::try_from(rules.dimensions).ok() => {}
        Some(_) => {
            return Err(ApiError::invalid(
                Some("dimensions"),
                format!(
                    "'dimensions' must be {} for this model (it cannot shorten its embeddings)",
                    rules.dimensions
                ),
            ));
        }
    }
    let inputs = parse_input(raw.input)?;
    if inputs.len() > rules.max_inputs {
        return Err(ApiError::invalid(
            Some("input"),
            format!(
                "'input' has {} items; at most {} are allowed per request",
                inputs.len(),
                rules.max_inputs
            ),
        ));
    }
    Ok(EmbeddingRequest {
        inputs,
        model,
        encoding_format,
    })
}

fn parse_input(input: Option<Value>) -> Result<Vec<String>, ApiError> {
    let empty = || ApiError::invalid(Some("input"), "'input' cannot be an empty string");
    let tokens = || {
        ApiError::invalid(
            Some("input"),
            "token arrays are not supported: this model's tokenizer is not OpenAI's; send \
             'input' as a string or an array of strings",
        )
    };
    match input {
        Some(Value::String(s)) if s.is_empty() => Err(empty()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) if items.is_empty() => Err(ApiError::invalid(
            Some("input"),
            "'input' cannot be an empty array",
        )),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) if s.is_empty() => Err(empty()),
                Value::String(s) => Ok(s),
                Value::Number(_) | Value::Array(_) => Err(tokens()),
                _ => Err(ApiError::invalid(
                    Some("input"),
                    "'input' must be a string or an array of strings",
                )),
            })
            .collect(),
        None => Err(ApiError::invalid(
            Some("input"),
            "you must provide an 'input' parameter",
        )),
        Some(_) => Err(ApiError::invalid(
            Some("input"),
            "'input' must be a string or an array of strings",
        )),
    }
}

/// The response body for `vectors` (in input order) and their total tokens.
pub fn response_body(
    model: &str,
    vectors: &[Vec<f32>],
    total_tokens: usize,
    format: EncodingFormat,
) -> Vec<u8> {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": total_tokens, "total_tokens": total_tokens},
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RequestRules<'static> = RequestRules {
        model_name: "m",
        dimensions: 4,
        max_inputs: 2,
    };

    fn err(body: &str) -> ApiError {
        parse_request(body.as_bytes(), &RULES).unwrap_err()
    }

    #[test]
    fn string_and_array_inputs() {
        let r = parse_request(br#"{"model":"m","input":"a b","user":"u"}"#, &RULES).unwrap();
        assert_eq!(r.inputs, vec!["a b".to_string()]);
        assert_eq!(r.encoding_format, EncodingFormat::Float);
        let r = parse_request(
            br#"{"model":"m","input":["a","b"],"encoding_format":"base64","dimensions":4}"#,
            &RULES,
        )
        .unwrap();
        assert_eq!(r.inputs, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(r.encoding_format, EncodingFormat::Base64);
    }

    #[test]
    fn rejections_name_the_param() {
        assert_eq!(err(r#"{"model":"m"}"#).param, Some("input"));
        assert_eq!(err(r#"{"model":"m","input":""}"#).param, Some("input"));
        assert_eq!(err(r#"{"model":"m","input":[]}"#).param, Some("input"));
        assert_eq!(
            err(r#"{"model":"m","input":["a","b","c"]}"#).param,
            Some("input")
        );
        let e = err(r#"{"model":"m","input":[1,2]}"#);
        assert!(e.message.contains("token arrays"), "{}", e.message);
        assert_eq!(
            err(r#"{"model":"m","input":"a","dimensions":3}"#).param,
            Some("dimensions")
        );
        let e = err(r#"{"model":"m","input":"a","encoding_format":"int8"}"#);
        assert_eq!(e.param, Some("encoding_format"));
        assert_eq!(err(r#"{"input":"a"}"#).param, Some("model"));
        let e = err(r#"{"model":"other","input":"a"}"#);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, Some("model_not_found"))
        );
        assert_eq!(err("{").status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn error_body_is_openai_shaped() {
        let body = ApiError::invalid(Some("input"), "bad").body();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error":{"message":"bad","type":"invalid_request_error","param":"input","code":null}})
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let body = response_body("m", &[vec![1.0, -0.5]], 3, EncodingFormat::Base64);
        let v: Value = serde_json::from_slice(&body).unwrap();
        // 1.0f32 = 00 00 80 3f, -0.5f32 = 00 00 00 bf
        assert_eq!(v["data"][0]["embedding"], json!("AACAPwAAAL8="));
        assert_eq!(v["usage"], json!({"prompt_tokens":3,"total_tokens":3}));
        assert_eq!(v["object"], json!("list"));
        assert_eq!(v["data"][0]["object"], json!("embedding"));
    }
}
