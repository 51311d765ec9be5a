//! [`TokenReviewAuth`]: a sidecar's projected service-account token, checked
//! by the API server (TokenReview) and matched to the Pod it claims to be.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ::kube::{Api, Client, api::PostParams};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::Pod,
};

use super::{ApiCall, Scope};
use crate::source::{AuthError, Authenticator, BoxFuture, Claim, Identity};

/// The audience a sidecar's projected token must carry.
pub const AUDIENCE: &str = "tokenwarden";

/// How long a positive result is reused for the same token (sidecars
/// reconnect; a TokenReview per reconnect is wasted load).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// The longest cache TTL accepted: labels read from the Pod must not get old.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
/// Bound on cached identities (expired entries are dropped first).
const MAX_CACHE_ENTRIES: usize = 10_000;

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

pub(super) const CALLS: &[ApiCall] = &[
    ApiCall {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        subresource: None,
        verbs: &["create"],
        scope: Scope::Cluster,
        reason: "check a sidecar's service-account token (audience tokenwarden) and which pod it is bound to",
    },
    ApiCall {
        group: "",
        resource: "pods",
        subresource: None,
        verbs: &["get"],
        scope: Scope::Cluster,
        reason: "read the authenticated sidecar's Pod: its uid must match the token, its labels select policies",
    },
];

/// Authenticates sidecars with TokenReview.
pub struct TokenReviewAuth {
    client: Client,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Instant, Identity)>>,
}

// === impl TokenReviewAuth ===

impl TokenReviewAuth {
    /// An authenticator that reuses positive results for [`DEFAULT_CACHE_TTL`].
    pub fn new(client: Client) -> Self {
        Self {
            client,
            ttl: DEFAULT_CACHE_TTL,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Reuse positive results for `ttl` (at most 60 s; zero disables the cache).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.min(MAX_CACHE_TTL);
        self
    }

    async fn check(&self, claim: &Claim) -> Result<Identity, AuthError> {
        let pod = format!("{}/{}", claim.namespace, claim.pod_name);
        if claim.credential.is_empty() {
            return Err(AuthError::refused(format!(
                "pod {pod}: no service-account token in the hello"
            )));
        }
        if claim.namespace.is_empty() || claim.pod_name.is_empty() || claim.pod_uid.is_empty() {
            return Err(AuthError::refused(
                "the hello must name the pod's namespace, name and uid",
            ));
        }
        let key = token_key(&claim.credential);
        if let Some(identity) = self.cached(&key, claim) {
            return Ok(identity);
        }

        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(claim.credential.clone()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let review = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::unchecked(format!("pod {pod}: TokenReview failed"), e))?;
        let status = review.status.ok_or_else(|| {
            AuthError::refused(format!("pod {pod}: TokenReview returned no status"))
        })?;
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".to_string());
            return Err(AuthError::refused(format!(
                "pod {pod}: the API server rejected the service-account token: {why}"
            )));
        }
        let audiences = status.audiences.unwrap_or_default();
        if !audiences.iter().any(|a| a == AUDIENCE) {
            return Err(AuthError::refused(format!(
                "pod {pod}: the token is valid for audiences {audiences:?}, not {AUDIENCE:?} \
                 (mount a projected service-account token with audience {AUDIENCE})"
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let prefix = format!("system:serviceaccount:{}:", claim.namespace);
        let service_account = match username.strip_prefix(&prefix) {
            Some(sa) if !sa.is_empty() && !sa.contains(':') => sa.to_string(),
            _ => {
                return Err(AuthError::refused(format!(
                    "pod {pod}: the token belongs to {username:?}, not to a service account \
                     in namespace {:?}",
                    claim.namespace
                )));
            }
        };
        let extra = user.extra.unwrap_or_default();
        let bound = |key: &str| -> Result<String, AuthError> {
            match extra.get(key).map(Vec::as_slice) {
                Some([value]) => Ok(value.clone()),
                _ => Err(AuthError::refused(format!(
                    "pod {pod}: the token is not bound to a pod (no {key}); \
                     use a projected service-account token"
                ))),
            }
        };
        let bound_name = bound(POD_NAME_EXTRA)?;
        if bound_name != claim.pod_name {
            return Err(AuthError::refused(format!(
                "pod {pod}: the token is bound to pod {bound_name:?}, not {:?}",
                claim.pod_name
            )));
        }
        let bound_uid = bound(POD_UID_EXTRA)?;
        if bound_uid != claim.pod_uid {
            return Err(AuthError::refused(format!(
                "pod {pod}: the token is bound to pod uid {bound_uid:?}, not {:?}",
                claim.pod_uid
            )));
        }

        let found = Api::<Pod>::namespaced(self.client.clone(), &claim.namespace)
            .get_opt(&claim.pod_name)
            .await
            .map_err(|e| AuthError::unchecked(format!("pod {pod}: reading the pod failed"), e))?
            .ok_or_else(|| AuthError::refused(format!("pod {pod} does not exist")))?;
        let uid = found.metadata.uid.clone().unwrap_or_default();
        if uid != claim.pod_uid {
            return Err(AuthError::refused(format!(
                "pod {pod} has uid {uid:?}, the token is bound to {:?} (the pod was replaced)",
                claim.pod_uid
            )));
        }
        let pod_sa = found
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        if pod_sa != service_account {
            return Err(AuthError::refused(format!(
                "pod {pod} runs as service account {pod_sa:?}, the token is for {service_account:?}"
            )));
        }
        let identity = Identity {
            namespace: claim.namespace.clone(),
            pod_name: claim.pod_name.clone(),
            pod_uid: uid,
            labels: found.metadata.labels.unwrap_or_default(),
        };
        self.remember(key, &identity);
        Ok(identity)
    }

    fn cached(&self, key: &[u8; 32], claim: &Claim) -> Option<Identity> {
        let cache = self.cache.lock().ok()?;
        let (at, identity) = cache.get(key)?;
        (at.elapsed() < self.ttl
            && identity.namespace == claim.namespace
            && identity.pod_name == claim.pod_name
            && identity.pod_uid == claim.pod_uid)
            .then(|| identity.clone())
    }

    fn remember(&self, key: [u8; 32], identity: &Identity) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= MAX_CACHE_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), identity.clone()));
    }
}

impl Authenticator for TokenReviewAuth {
    fn authenticate<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(self.check(claim))
    }
}

/// The cache key: SHA-256 of the token (the token itself is never kept).
fn token_key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}
