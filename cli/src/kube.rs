//! The plugin's Kubernetes side: a read-only client from the user's
//! kubeconfig, every API call the plugin makes (for the `tokenwarden-viewer`
//! RBAC in the chart), and API errors turned into what a user can act on.
//!
//! kubectl passes a plugin its arguments as given and its environment
//! (`KUBECONFIG` included), so the plugin parses `--kubeconfig`,
//! `--context`, `-n` and `-A` itself
//! (<https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/>).
//! The config is read the way kubectl reads it: `--kubeconfig PATH`, else
//! `$KUBECONFIG` (several files, merged), else `~/.kube/config`; then the
//! in-cluster service account when there is no kubeconfig and the process
//! runs in a pod (kube 5 `Config::from_kubeconfig`,
//! `Config::from_custom_kubeconfig`, `Config::incluster`). The namespace is
//! `-n`, else the context's namespace, else `default`.

use ::kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};

use crate::Global;

/// The operator namespace the chart is installed in by default
/// (docs/install.md: `helm install tokenwarden … --namespace tokenwarden`;
/// deploy/tokenwarden.yaml uses the same).
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "tokenwarden";
/// The cluster ledger's ConfigMap (the operator's `--ledger-configmap`
/// default).
pub const LEDGER_CONFIGMAP: &str = "tokenwarden-ledger";
/// The ConfigMap key holding the ledger JSON (`ClusterLedgerState`).
pub const LEDGER_KEY: &str = "ledger.json";
/// The page that documents the RBAC a user needs.
pub const RBAC_DOC: &str = "docs/kubectl-plugin.md";

/// Where a permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scope {
    /// In any namespace (a ClusterRole, bound cluster-wide for `-A`, or
    /// with a RoleBinding per namespace).
    Cluster,
    /// Only in the operator's namespace, only the named objects (a Role
    /// there with `resourceNames`).
    OperatorNamespace,
}

/// One kind of API call the plugin makes: an RBAC rule a user needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub api_group: &'static str,
    /// Resource (plural).
    pub resource: &'static str,
    /// Only these objects (empty: any).
    pub resource_names: &'static [&'static str],
    /// RBAC verbs.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// Which subcommands make it, and why.
    pub reason: &'static str,
}

/// Every API call the plugin makes. All are reads; the chart's
/// `tokenwarden-viewer` ClusterRole and `tokenwarden-ledger-viewer` Role
/// grant exactly these (`kubectl tokenwarden rbac` prints them as JSON for
/// the chart test).
pub const CALLS: &[ApiCall] = &[
    ApiCall {
        api_group: "tokenwarden.dev",
        resource: "tokenbudgets",
        resource_names: &[],
        verbs: &["list"],
        scope: Scope::Cluster,
        reason: "budgets: every TokenBudget of a namespace (-n) or of all (-A) with its status",
    },
    ApiCall {
        api_group: "tokenwarden.dev",
        resource: "routingpolicies",
        resource_names: &[],
        verbs: &["list"],
        scope: Scope::Cluster,
        reason: "explain-request: the RoutingPolicies of the workload's namespace, compiled as \
                 the operator compiles them",
    },
    ApiCall {
        api_group: "",
        resource: "configmaps",
        resource_names: &[LEDGER_CONFIGMAP],
        verbs: &["get"],
        scope: Scope::OperatorNamespace,
        reason: "costs, what-if --cluster: the cluster ledger (spend by namespace, workload and \
                 model) the operator keeps in this ConfigMap",
    },
];

/// `kubectl tokenwarden rbac`: [`CALLS`] as pretty JSON
/// (`[{apiGroup, resource, resourceNames, verbs, scope, reason}]`).
pub fn rbac_json() -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(CALLS)?))
}

/// A request as RBAC sees it (parsed from its method and path).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RbacRequest {
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Object name, for requests on one object.
    pub name: Option<String>,
    /// Namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// RBAC verb.
    pub verb: String,
}

/// Parse a request's method and path (with query) into what RBAC checks,
/// as the operator's `kube::rbac_request` does. `None` for paths that are
/// not resource requests (discovery, `/version`).
#[cfg(test)]
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
    let (resource, name) = match rest {
        [resource] => (*resource, None),
        [resource, name] => (*resource, Some((*name).to_string())),
        _ => return None,
    };
    let watch = query.split('&').any(|kv| kv == "watch=true");
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
        name,
        namespace,
        verb: verb.to_string(),
    })
}

/// Whether `call` grants `request`, with the operator in
/// `operator_namespace`.
#[cfg(test)]
pub fn grants(call: &ApiCall, request: &RbacRequest, operator_namespace: &str) -> bool {
    call.api_group == request.group
        && call.resource == request.resource
        && call.verbs.contains(&request.verb.as_str())
        && (call.resource_names.is_empty()
            || request
                .name
                .as_deref()
                .is_some_and(|n| call.resource_names.contains(&n)))
        && match call.scope {
            Scope::Cluster => true,
            Scope::OperatorNamespace => request.namespace.as_deref() == Some(operator_namespace),
        }
}

/// A connected client and the namespace the user means.
#[derive(Clone)]
pub struct Cluster {
    /// The client (the user's credentials).
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// `-A`.
    pub all_namespaces: bool,
}

impl Cluster {
    /// The namespace to read, `None` for all (`-A`).
    pub fn scope(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.namespace.as_str())
    }
}

/// Connect with the user's kubeconfig and the global flags.
pub async fn connect(g: &Global) -> anyhow::Result<Cluster> {
    let config = config(g).await?;
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))?;
    Ok(Cluster {
        client,
        namespace,
        all_namespaces: g.all_namespaces,
    })
}

async fn config(g: &Global) -> anyhow::Result<Config> {
    let opts = KubeConfigOptions {
        context: g.context.clone(),
        cluster: None,
        user: None,
    };
    let loaded = match &g.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(&e, g))?;
            Config::from_custom_kubeconfig(kc, &opts).await
        }
        None => Config::from_kubeconfig(&opts).await,
    };
    match loaded {
        Ok(c) => Ok(c),
        // No kubeconfig at all: in a pod, use its service account as
        // kubectl does; anywhere else, say how to give one.
        Err(KubeconfigError::FindPath | KubeconfigError::ReadConfig(..))
            if g.kubeconfig.is_none()
                && g.context.is_none()
                && std::env::var_os("KUBECONFIG").is_none()
                && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() =>
        {
            Config::incluster().map_err(|e| anyhow::anyhow!("in-cluster config: {e}"))
        }
        Err(e) => Err(kubeconfig_error(&e, g)),
    }
}

fn kubeconfig_error(e: &KubeconfigError, g: &Global) -> anyhow::Error {
    match e {
        KubeconfigError::FindPath | KubeconfigError::ReadConfig(..) => anyhow::anyhow!(
            "no kubeconfig ({e}): pass --kubeconfig PATH, set KUBECONFIG, or create ~/.kube/config"
        ),
        KubeconfigError::LoadContext(_) if g.context.is_some() => anyhow::anyhow!(
            "context {:?} is not in the kubeconfig ({e}); `kubectl config get-contexts` lists them",
            g.context.as_deref().unwrap_or_default()
        ),
        KubeconfigError::CurrentContextNotSet => anyhow::anyhow!(
            "the kubeconfig has no current context: pass --context NAME or run `kubectl config use-context NAME`"
        ),
        _ => anyhow::anyhow!("kubeconfig: {e}"),
    }
}

/// Every object of a tokenwarden.dev/v1alpha1 resource in the cluster's
/// scope (`-n` or `-A`), as JSON, sorted by namespace and name.
pub async fn list(
    cluster: &Cluster,
    resource: &str,
    kind: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use ::kube::{
        Api,
        api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
    };
    use serde_json::Value;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tokenwarden.dev", "v1alpha1", kind),
        resource,
    );
    let api: Api<DynamicObject> = match cluster.scope() {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
        None => Api::all_with(cluster.client.clone(), &ar),
    };
    let call = Call {
        verb: "list",
        group: "tokenwarden.dev",
        resource,
        name: None,
        namespace: cluster.scope(),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, &call))?;
    let mut items: Vec<Value> = list
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .collect();
    items.sort_by(|a, b| {
        let k = |v: &Value| {
            (
                v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                v["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        };
        k(a).cmp(&k(b))
    });
    Ok(items)
}

/// What a failed call was, for its error message.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// RBAC verb.
    pub verb: &'a str,
    /// API group (`""` core).
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// The object's name, when one object.
    pub name: Option<&'a str>,
    /// Namespace, `None` for all.
    pub namespace: Option<&'a str>,
}

impl Call<'_> {
    fn what(&self) -> String {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        let name = self.name.map(|n| format!(" {n:?}")).unwrap_or_default();
        let place = match self.namespace {
            Some(ns) => format!("in namespace {ns:?}"),
            None => "in all namespaces".to_string(),
        };
        format!("{} on {}{group}{name} {place}", self.verb, self.resource)
    }
}

/// Turn a failed API call into a message a user can act on: 403 names the
/// permission and the RBAC doc, 404 on a list means the CRDs are not
/// installed, 401 means the credentials were refused, a transport error
/// names the server.
pub fn api_error(e: ::kube::Error, call: &Call<'_>) -> anyhow::Error {
    match &e {
        ::kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "forbidden: you need {} (see {RBAC_DOC}: the tokenwarden-viewer ClusterRole); \
             the API server said: {}",
            call.what(),
            s.message
        ),
        ::kube::Error::Api(s) if s.code == 404 && call.name.is_none() => anyhow::anyhow!(
            "the {}.{} CRD is not installed in this cluster (the API server does not know the \
             resource): install tokenwarden (docs/install.md), or check --context",
            call.resource,
            call.group
        ),
        ::kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "unauthorized: the API server refused the kubeconfig's credentials ({})",
            s.message
        ),
        ::kube::Error::Api(s) => {
            anyhow::anyhow!("{} failed: {} ({})", call.what(), s.message, s.code)
        }
        _ => anyhow::anyhow!(
            "{} failed: cannot reach the API server: {}",
            call.what(),
            chain(&e)
        ),
    }
}

/// An error and its sources, `: `-separated (kube's transport errors say
/// `client error (Connect)`; the cause, e.g. `Connection refused`, is a
/// source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        next = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_grants_only_the_declared_calls() {
        let r = rbac_request(
            "GET",
            "/api/v1/namespaces/tokenwarden/configmaps/tokenwarden-ledger",
        )
        .unwrap();
        assert_eq!(
            r,
            RbacRequest {
                group: String::new(),
                resource: "configmaps".into(),
                name: Some("tokenwarden-ledger".into()),
                namespace: Some("tokenwarden".into()),
                verb: "get".into(),
            }
        );
        assert!(CALLS.iter().any(|c| grants(c, &r, "tokenwarden")));
        assert!(
            !CALLS.iter().any(|c| grants(c, &r, "other")),
            "only in the operator's namespace"
        );
        let other = rbac_request("GET", "/api/v1/namespaces/tokenwarden/configmaps/x").unwrap();
        assert!(!CALLS.iter().any(|c| grants(c, &other, "tokenwarden")));
        let all = rbac_request("GET", "/apis/tokenwarden.dev/v1alpha1/tokenbudgets?").unwrap();
        assert_eq!(
            (all.verb.as_str(), all.namespace.as_deref()),
            ("list", None)
        );
        assert!(CALLS.iter().any(|c| grants(c, &all, "tokenwarden")));
        let write = rbac_request(
            "PATCH",
            "/apis/tokenwarden.dev/v1alpha1/namespaces/a/tokenbudgets/b",
        )
        .unwrap();
        assert!(!CALLS.iter().any(|c| grants(c, &write, "tokenwarden")));
        assert_eq!(rbac_request("GET", "/version"), None);
    }

    #[test]
    fn every_call_is_a_read_with_a_reason() {
        for c in CALLS {
            assert!(!c.reason.is_empty());
            assert!(c.verbs.iter().all(|v| ["get", "list", "watch"].contains(v)));
        }
    }
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod api_tests;
