//! What a handler hands back ([`Reply`]): the status, headers and body of
//! the response plus what the fake billed for it. Turning it into an HTTP
//! response (encoding, request id) is the server's, in the crate root.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::{
    UsageReport,
    body::{self, Delivery, Payload},
    cache::Commit,
};

/// What a handler hands back: the response plus what it billed.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Payload,
    pub usage: Option<UsageReport>,
    pub usage_in_body: bool,
    pub cut: bool,
    /// Prompt-cache writes and refreshes, applied only if the reply is billed.
    pub cache_commit: Commit,
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const SSE: &str = "text/event-stream; charset=utf-8";

impl Reply {
    pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
        Reply::bytes(status, JSON, Bytes::from(body.to_string()))
    }

    pub(crate) fn bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: Payload::Full(body, Delivery::Whole),
            usage: None,
            usage_in_body: false,
            cut: false,
            cache_commit: Commit::new(),
        }
    }

    /// A successful, billed JSON body; with `cut`, half of it then a dropped connection.
    pub(crate) fn billed_json(value: &serde_json::Value, usage: UsageReport, cut: bool) -> Reply {
        let bytes = Bytes::from(value.to_string());
        if cut {
            Reply {
                body: Payload::Full(bytes, Delivery::HalfThenCut),
                cut: true,
                ..Reply::bytes(StatusCode::OK, JSON, Bytes::new())
            }
        } else {
            Reply {
                usage: Some(usage),
                usage_in_body: true,
                ..Reply::bytes(StatusCode::OK, JSON, bytes)
            }
        }
    }

    /// A successful JSON body that bills nothing; with `cut`, half of it then a dropped connection.
    pub(crate) fn unbilled_json(bytes: Bytes, cut: bool) -> Reply {
        if cut {
            Reply {
                body: Payload::Full(bytes, Delivery::HalfThenCut),
                cut: true,
                ..Reply::bytes(StatusCode::OK, JSON, Bytes::new())
            }
        } else {
            Reply::bytes(StatusCode::OK, JSON, bytes)
        }
    }

    /// A successful, billed event stream; with `cut`, about half of it then a dropped connection.
    pub(crate) fn billed_stream(
        pieces: Vec<body::Piece>,
        usage: UsageReport,
        usage_in_body: bool,
        cut: bool,
    ) -> Reply {
        let (pieces, usage) = if cut {
            (cut_half(pieces), None)
        } else {
            (pieces, Some(usage))
        };
        Reply {
            status: StatusCode::OK,
            content_type: SSE,
            headers: vec![(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            )],
            body: Payload::Stream(pieces),
            usage,
            usage_in_body: usage_in_body && !cut,
            cut,
            cache_commit: Commit::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// Keeps the first half of the data pieces (and the pauses before them), then a cut.
fn cut_half(pieces: Vec<body::Piece>) -> Vec<body::Piece> {
    let (mut first, _) = body::split_half(pieces);
    first.push(body::Piece::Cut);
    first
}
