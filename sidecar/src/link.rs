//! How requests reach a provider, prepared once per loaded config: the
//! origin and path prefix of its base URL, and its credential header.
//!
//! Every forwarded request needs both. Built per request they cost a
//! `format!`, a URI parse and a header-value check each time; prepared
//! here, a request clones a few reference-counted parts.

use http::{
    HeaderName, HeaderValue, Uri,
    header::AUTHORIZATION,
    uri::{Authority, PathAndQuery, Scheme},
};
use tokenwarden_core::workload::{Api, Provider};

use crate::{error::ProxyError, secrets::Keys};

/// One provider, ready to be called.
#[derive(Debug)]
pub struct Link {
    /// `scheme` and `authority` of the base URL, or why it cannot be used.
    origin: Result<(Scheme, Authority), String>,
    /// The base URL's path, without a trailing `/` (`""`, `/openai`).
    prefix: String,
    /// The credential header, or why there is none. The value is marked
    /// sensitive, so `Debug` and HPACK never show or index it.
    auth: Result<(HeaderName, HeaderValue), String>,
    /// The provider's name, for errors.
    name: String,
    /// Searches responses for the key (see [`crate::redact`]), when the key
    /// is long enough to search for.
    finder: Option<memchr::memmem::Finder<'static>>,
}

impl Link {
    /// Prepare `provider`, taking its key from `keys`.
    pub fn new(provider: &Provider, keys: &Keys) -> Self {
        let (origin, prefix) = split_base(&provider.base_url);
        let origin = origin
            .parse::<Uri>()
            .map_err(|e| format!("invalid upstream URL {origin}: {e}"))
            .and_then(|u| {
                let parts = u.into_parts();
                match (parts.scheme, parts.authority) {
                    (Some(s), Some(a)) => Ok((s, a)),
                    _ => Err(format!(
                        "invalid upstream URL {origin}: scheme and host required"
                    )),
                }
            });
        let auth = keys.get(&provider.api_key).and_then(|key| {
            let (name, value) = match provider.api {
                Api::OpenAi => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                Api::Anthropic => (
                    HeaderName::from_static("x-api-key"),
                    key.expose().to_string(),
                ),
            };
            let mut value = HeaderValue::try_from(value)
                .map_err(|_| "the key is not a valid header value".to_string())?;
            value.set_sensitive(true);
            Ok((name, value))
        });
        let mut link = Link {
            origin,
            prefix: prefix.to_string(),
            auth,
            name: provider.name.clone(),
            finder: None,
        };
        link.finder = link
            .secret()
            .filter(|s| s.len() >= crate::redact::MIN_SECRET_BYTES)
            .map(|s| memchr::memmem::Finder::new(s).into_owned());
        link
    }

    /// The key's searcher, prepared with the config (see [`Link::secret`]).
    pub fn secret_finder(&self) -> Option<&memchr::memmem::Finder<'static>> {
        self.finder.as_ref()
    }

    /// The upstream URI for the app's `path_and_query`.
    pub fn uri(&self, path_and_query: &PathAndQuery) -> Result<Uri, ProxyError> {
        let (scheme, authority) = self
            .origin
            .as_ref()
            .map_err(|e| ProxyError::NoRoute(e.clone()))?;
        let path_and_query = if self.prefix.is_empty() {
            path_and_query.clone()
        } else {
            format!("{}{path_and_query}", self.prefix)
                .parse()
                .map_err(|e| ProxyError::NoRoute(format!("invalid upstream URL: {e}")))?
        };
        Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ProxyError::NoRoute(format!("invalid upstream URL: {e}")))
    }

    /// The key itself (the credential header's value without its scheme),
    /// for redacting it from what the provider sends back.
    pub fn secret(&self) -> Option<&[u8]> {
        let (name, value) = self.auth.as_ref().ok()?;
        let bytes = value.as_bytes();
        Some(if name == AUTHORIZATION {
            bytes.strip_prefix(b"Bearer ").unwrap_or(bytes)
        } else {
            bytes
        })
    }

    /// The credential header, or the provider-shaped 503 saying why there is none.
    pub fn auth(&self) -> Result<(&HeaderName, &HeaderValue), ProxyError> {
        match &self.auth {
            Ok((n, v)) => Ok((n, v)),
            Err(reason) => Err(ProxyError::MissingKey {
                provider: self.name.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

/// `https://host:port/prefix/` → (`https://host:port`, `/prefix`).
fn split_base(url: &str) -> (&str, &str) {
    let url = url.trim_end_matches('/');
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

#[cfg(test)]
mod tests {
    use tokenwarden_core::workload::SecretRef;

    use super::*;

    fn provider(api: Api, base_url: &str) -> Provider {
        Provider {
            name: "p".into(),
            api,
            base_url: base_url.into(),
            api_key: SecretRef {
                name: "keys".into(),
                key: "k".into(),
            },
            prices: Vec::new(),
        }
    }

    fn keys(value: &str) -> (tempfile::TempDir, Keys) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/k"), value).unwrap();
        let r = SecretRef {
            name: "keys".into(),
            key: "k".into(),
        };
        let keys = Keys::load(Some(dir.path()), [&r]);
        (dir, keys)
    }

    fn pq(s: &'static str) -> PathAndQuery {
        PathAndQuery::from_static(s)
    }

    #[test]
    fn base_urls_split_into_origin_and_prefix() {
        assert_eq!(
            split_base("https://api.openai.com"),
            ("https://api.openai.com", "")
        );
        assert_eq!(
            split_base("https://api.openai.com/"),
            ("https://api.openai.com", "")
        );
        assert_eq!(
            split_base("http://gw.infra:8080/openai/"),
            ("http://gw.infra:8080", "/openai")
        );
    }

    #[test]
    fn uris_keep_the_prefix_path_and_query() {
        let (_d, k) = keys("sk-1");
        let plain = Link::new(&provider(Api::OpenAi, "https://api.openai.com/"), &k);
        assert_eq!(
            plain.uri(&pq("/v1/chat/completions?x=1&y=%20")).unwrap(),
            "https://api.openai.com/v1/chat/completions?x=1&y=%20"
        );
        let gw = Link::new(&provider(Api::OpenAi, "http://gw.infra:8080/openai/"), &k);
        assert_eq!(
            gw.uri(&pq("/v1/models")).unwrap(),
            "http://gw.infra:8080/openai/v1/models"
        );
        let bad = Link::new(&provider(Api::OpenAi, "not a url"), &k);
        let e = bad.uri(&pq("/v1/models")).unwrap_err();
        assert!(e.to_string().contains("invalid upstream URL"), "{e}");
    }

    #[test]
    fn credentials_are_the_providers_header_and_sensitive() {
        let (_d, k) = keys("sk-live-1\n");
        let openai = Link::new(&provider(Api::OpenAi, "https://api.openai.com"), &k);
        let (name, value) = openai.auth().unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value, "Bearer sk-live-1");
        assert!(value.is_sensitive());
        assert_eq!(openai.secret(), Some(&b"sk-live-1"[..]));
        let anthropic = Link::new(&provider(Api::Anthropic, "https://api.anthropic.com"), &k);
        let (name, value) = anthropic.auth().unwrap();
        assert_eq!(name, "x-api-key");
        assert_eq!(value, "sk-live-1");
        assert!(value.is_sensitive());
        assert_eq!(anthropic.secret(), Some(&b"sk-live-1"[..]));
        assert!(!format!("{openai:?}{anthropic:?}").contains("sk-live"));
    }

    #[test]
    fn a_missing_key_names_the_provider() {
        let missing = Keys::load(
            None,
            [&SecretRef {
                name: "keys".into(),
                key: "k".into(),
            }],
        );
        let link = Link::new(&provider(Api::OpenAi, "https://api.openai.com"), &missing);
        match link.auth() {
            Err(ProxyError::MissingKey { provider, reason }) => {
                assert_eq!(provider, "p");
                assert!(reason.contains("--secrets-dir"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
