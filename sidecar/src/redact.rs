//! Keeping the provider key out of what reaches the app.
//!
//! The sidecar holds the provider's API key; the app never needs it. An
//! upstream error that echoes the credential it was sent (a misbehaving
//! gateway, a debug proxy, an error page quoting the request) would hand
//! it to the app, so every byte of the key is replaced by `*` in the
//! response headers and in the bodies of error responses (any status that
//! is not 2xx) before they are forwarded. The mask has the key's length,
//! so a `content-length` stays right. Bodies are redacted as they stream:
//! the last `key length − 1` bytes of each chunk are held back until the
//! next one shows whether they start the key.
//!
//! Keys shorter than [`MIN_SECRET_BYTES`] are not searched for: masking a
//! short string would garble ordinary text, and no provider issues keys
//! that short.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use memchr::memmem;

/// Shortest secret searched for.
pub const MIN_SECRET_BYTES: usize = 8;

/// Redacts one secret from a body that arrives in chunks.
#[derive(Debug)]
pub struct Redactor {
    finder: memmem::Finder<'static>,
    carry: BytesMut,
}

// === impl Redactor ===

impl Redactor {
    /// A redactor for the secret `finder` looks for.
    pub fn new(finder: &memmem::Finder<'static>) -> Self {
        Redactor {
            finder: finder.clone(),
            carry: BytesMut::new(),
        }
    }

    /// A redactor for `secret`; `None` when it is too short to search for.
    pub fn for_secret(secret: &[u8]) -> Option<Self> {
        finder(secret).map(|f| Self::new(&f))
    }

    /// The next chunk: returns what can be forwarded now (possibly empty),
    /// holding back a tail that may be the start of the secret.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.carry.extend_from_slice(chunk);
        mask(&self.finder, &mut self.carry);
        let hold = (self.finder.needle().len() - 1).min(self.carry.len());
        let ready = self.carry.len() - hold;
        self.carry.split_to(ready).freeze()
    }

    /// The body ended: the held-back tail (it cannot hold the whole secret).
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.carry).freeze()
    }
}

/// Replace every occurrence of the secret in `buf` by `*`s.
fn mask(finder: &memmem::Finder<'_>, buf: &mut [u8]) {
    let n = finder.needle().len();
    let mut from = 0;
    while let Some(at) = finder.find(&buf[from..]) {
        let start = from + at;
        buf[start..start + n].fill(b'*');
        from = start + n;
    }
}

/// The searcher for `secret`; `None` when it is too short to search for.
pub fn finder(secret: &[u8]) -> Option<memmem::Finder<'static>> {
    (secret.len() >= MIN_SECRET_BYTES).then(|| memmem::Finder::new(secret).into_owned())
}

/// Redact the secret `finder` looks for from a whole body in place.
pub fn redact_body(finder: &memmem::Finder<'_>, body: &mut [u8]) {
    mask(finder, body);
}

/// Redact the secret `finder` looks for from every header value.
pub fn redact_headers(finder: &memmem::Finder<'_>, headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        if finder.find(value.as_bytes()).is_some() {
            let mut bytes = value.as_bytes().to_vec();
            mask(finder, &mut bytes);
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                *value = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: &[u8] = b"sk-live-0123456789abcdef";

    #[test]
    fn every_occurrence_is_masked_at_full_length() {
        let mut body = b"key sk-live-0123456789abcdef and again sk-live-0123456789abcdef.".to_vec();
        let len = body.len();
        let f = finder(KEY).unwrap();
        redact_body(&f, &mut body);
        assert_eq!(body.len(), len);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!("key {0} and again {0}.", "*".repeat(KEY.len()))
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-echo",
            HeaderValue::from_static("Bearer sk-live-0123456789abcdef"),
        );
        h.insert("x-ok", HeaderValue::from_static("fine"));
        redact_headers(&f, &mut h);
        assert_eq!(h["x-echo"], format!("Bearer {}", "*".repeat(KEY.len())));
        assert_eq!(h["x-ok"], "fine");
        assert!(Redactor::for_secret(b"short").is_none());
        assert!(finder(b"short").is_none());
    }

    proptest! {
        /// However the body is split, no chunk forwarded holds the key,
        /// and the output is the masked body, byte for byte.
        #[test]
        fn splits_never_let_the_key_through(
            prefix in "[a-z ]{0,40}",
            suffix in "[a-z ]{0,40}",
            cuts in proptest::collection::vec(0usize..120, 0..6),
        ) {
            let body = format!("{prefix}{}{suffix}{}", String::from_utf8_lossy(KEY), String::from_utf8_lossy(KEY));
            let mut expected = body.clone().into_bytes();
            redact_body(&finder(KEY).unwrap(), &mut expected);
            let mut r = Redactor::for_secret(KEY).unwrap();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let bytes = body.as_bytes();
            let mut out = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().map(|c| c.min(bytes.len())) {
                if c < at { continue; }
                let piece = r.push(&bytes[at..c]);
                prop_assert!(memmem::find(&piece, KEY).is_none());
                out.extend_from_slice(&piece);
                at = c;
            }
            out.extend_from_slice(&r.push(&bytes[at..]));
            out.extend_from_slice(&r.finish());
            prop_assert_eq!(out, expected);
        }
    }
}
