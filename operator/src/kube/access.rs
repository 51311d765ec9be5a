//! [`LedgerReview`]: who may read the admin `/ledger` (cluster usage data)
//! over the pod network, decided as kube-rbac-proxy does: the bearer token is
//! authenticated with a TokenReview, then its user is authorized with a
//! SubjectAccessReview for `get` on `tokenbudgets.tokenwarden.dev` in all
//! namespaces.

use ::kube::{Api, Client, api::PostParams};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};

use super::{ApiCall, Scope};
use crate::{
    admin::{AccessDenied, LedgerAccess},
    source::BoxFuture,
};

/// What a user must be allowed to read `/ledger`: `get` on TokenBudgets in
/// every namespace (the ledger spans all of them).
pub const LEDGER_VERB: &str = "get";
/// API group of [`LEDGER_RESOURCE`].
pub const LEDGER_GROUP: &str = "tokenwarden.dev";
/// The resource [`LEDGER_VERB`] applies to.
pub const LEDGER_RESOURCE: &str = "tokenbudgets";

pub(super) const CALLS: &[ApiCall] = &[
    ApiCall {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        subresource: None,
        verbs: &["create"],
        scope: Scope::Cluster,
        reason: "authenticate the bearer token of a request for the admin /ledger (cluster usage data) from outside the pod",
    },
    ApiCall {
        group: "authorization.k8s.io",
        resource: "subjectaccessreviews",
        subresource: None,
        verbs: &["create"],
        scope: Scope::Cluster,
        reason: "authorize that token's user for the admin /ledger: it must be allowed to get tokenbudgets in all namespaces",
    },
];

/// Authenticates and authorizes `/ledger` readers against the API server.
/// Nothing is cached: `/ledger` is read by people and dashboards, not on
/// every request of the data path.
pub struct LedgerReview {
    client: Client,
}

// === impl LedgerReview ===

impl LedgerReview {
    /// A reviewer that asks the API server `client` talks to.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn check(&self, token: &str) -> Result<String, AccessDenied> {
        // No audiences: the API server's own, as for `kubectl create token`
        // (sidecar tokens, audience tokenwarden, are not accepted here).
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let review = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AccessDenied::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = review.status.ok_or_else(|| {
            AccessDenied::Unavailable("TokenReview returned no status".to_string())
        })?;
        if status.authenticated != Some(true) {
            return Err(AccessDenied::Unauthenticated(
                status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "the API server did not authenticate it".to_string()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username.is_empty() {
            return Err(AccessDenied::Unauthenticated(
                "the API server named no user for it".to_string(),
            ));
        }
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(username.clone()),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(LEDGER_VERB.to_string()),
                    group: Some(LEDGER_GROUP.to_string()),
                    resource: Some(LEDGER_RESOURCE.to_string()),
                    ..ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let access = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(|e| AccessDenied::Unavailable(format!("SubjectAccessReview failed: {e}")))?;
        let status = access.status.unwrap_or_default();
        if status.allowed {
            return Ok(username);
        }
        let why = status
            .reason
            .filter(|r| !r.is_empty())
            .or(status.evaluation_error.filter(|e| !e.is_empty()))
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        Err(AccessDenied::Forbidden(format!(
            "user {username:?} may not {LEDGER_VERB} {LEDGER_RESOURCE}.{LEDGER_GROUP} \
             in all namespaces{why}"
        )))
    }
}

impl LedgerAccess for LedgerReview {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<String, AccessDenied>> {
        Box::pin(self.check(token))
    }
}
