//! The Kubernetes implementation of [`crate::source`].
//!
//! - [`KubeSource`]: kube-runtime reflectors over RoutingPolicy and
//!   TokenBudget in all namespaces, status by server-side apply on `/status`,
//!   Events (events.k8s.io/v1) on the objects.
//! - [`TokenReviewAuth`]: a sidecar's projected service-account token checked
//!   with a TokenReview and matched to the Pod it claims to be.
//! - [`LedgerReview`]: who may read the admin `/ledger` from outside the
//!   pod: a bearer token checked with TokenReview, its user with a
//!   SubjectAccessReview (`get` on tokenbudgets in all namespaces).
//! - [`leader`]: leader election on a Lease (kube-lease-manager); the leader
//!   labels its own Pod so the control Service routes only to it, and
//!   publishes its control address on the Lease for `Redirect`.
//! - [`ledger`]: the cluster ledger in a ConfigMap.
//! - [`api_calls`]: every Kubernetes API call this layer makes, for the
//!   chart's RBAC. Each module declares the calls next to the code that makes
//!   them; `tests/kube_layer.rs` runs every mock scenario through a recording
//!   API server and checks that what was observed and what is declared are
//!   the same set.
//!
//! `docs/kubernetes-layer.md` describes the design and what only a real
//! cluster verifies.

mod access;
mod auth;
pub mod leader;
pub mod ledger;
mod source;

pub use access::{LEDGER_GROUP, LEDGER_RESOURCE, LEDGER_VERB, LedgerReview};
pub use auth::{AUDIENCE, DEFAULT_CACHE_TTL, TokenReviewAuth};
pub use source::{FIELD_MANAGER, KubeSource, SourceOptions};

/// Where an API call's permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Objects in any namespace, or cluster-scoped resources (a ClusterRole).
    Cluster,
    /// Only the operator's own namespace (a Role there).
    OperatorNamespace,
}

/// One kind of Kubernetes API call the kube layer makes: an RBAC rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (plural).
    pub resource: &'static str,
    /// Subresource (`status`), if any.
    pub subresource: Option<&'static str>,
    /// RBAC verbs.
    pub verbs: &'static [&'static str],
    /// Where the permission is needed.
    pub scope: Scope,
    /// Why.
    pub reason: &'static str,
}

/// A request as RBAC sees it, parsed from its method and URI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RbacRequest {
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// RBAC verb (`get`, `list`, `watch`, `create`, `patch`, `update`,
    /// `delete`, `deletecollection`).
    pub verb: String,
}

/// Every Kubernetes API call the kube layer makes (the chart's RBAC must
/// grant each of these).
pub fn api_calls() -> Vec<ApiCall> {
    [
        source::CALLS,
        source::SECRET_CALLS,
        auth::CALLS,
        access::CALLS,
        leader::CALLS,
        ledger::CALLS,
    ]
    .concat()
}

/// Parse a request's method and path (with query) into what RBAC checks.
/// `None` for paths that are not resource requests (discovery, `/version`).
pub fn rbac_request(method: &str, path_and_query: &str) -> Option<RbacRequest> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some((*sub).to_string())),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(RbacRequest {
        group: group.to_string(),
        resource: resource.to_string(),
        subresource,
        namespace,
        verb: verb.to_string(),
    })
}

/// Whether `call` grants `request`, with `operator_namespace` the namespace a
/// [`Scope::OperatorNamespace`] rule is bound in.
pub fn grants(call: &ApiCall, request: &RbacRequest, operator_namespace: &str) -> bool {
    call.group == request.group
        && call.resource == request.resource
        && call.subresource == request.subresource.as_deref()
        && call.verbs.contains(&request.verb.as_str())
        && match call.scope {
            Scope::Cluster => true,
            Scope::OperatorNamespace => request.namespace.as_deref() == Some(operator_namespace),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rbac_requests() {
        let r = rbac_request(
            "PATCH",
            "/apis/tokenwarden.dev/v1alpha1/namespaces/team-a/tokenbudgets/b1/status?&force=true",
        );
        assert_eq!(
            r,
            Some(RbacRequest {
                group: "tokenwarden.dev".into(),
                resource: "tokenbudgets".into(),
                subresource: Some("status".into()),
                namespace: Some("team-a".into()),
                verb: "patch".into(),
            })
        );
        let w = rbac_request(
            "GET",
            "/apis/tokenwarden.dev/v1alpha1/routingpolicies?&watch=true&resourceVersion=1",
        );
        assert_eq!(
            w.map(|r| (r.verb, r.namespace)),
            Some(("watch".into(), None))
        );
        let l = rbac_request("GET", "/api/v1/namespaces/ns/pods?labelSelector=a%3Db");
        assert_eq!(
            l.map(|r| (r.group, r.resource, r.verb)),
            Some(("".into(), "pods".into(), "list".into()))
        );
        assert_eq!(rbac_request("GET", "/version"), None);
    }

    #[test]
    fn every_call_has_a_reason_and_verbs() {
        for call in api_calls() {
            assert!(!call.reason.is_empty(), "{call:?}");
            assert!(!call.verbs.is_empty(), "{call:?}");
        }
    }
}
