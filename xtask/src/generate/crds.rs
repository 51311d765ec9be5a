//! The CRD YAML, generated from the Rust types of `tokenwarden-crds`:
//! one file per CRD in the chart's `crds/` and all of them in `deploy/crds.yaml`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use tokenwarden_crds::{RoutingPolicy, TokenBudget};

use super::Output;

/// Header of every generated file.
const HEADER: &str = "# Generated from the Rust types in crds/src; do not edit.\n\
                      # Regenerate with: cargo xtask gen\n";

/// The CRDs, in a fixed order.
fn crds() -> Vec<CustomResourceDefinition> {
    vec![RoutingPolicy::crd(), TokenBudget::crd()]
}

/// Every generated CRD file.
pub fn outputs() -> Result<Vec<Output>, serde_norway::Error> {
    let mut out = Vec::new();
    let mut all = String::from(HEADER);
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = serde_norway::to_string(&crd)?;
        out.push(Output {
            path: format!("charts/tokenwarden/crds/{name}.yaml"),
            contents: format!("{HEADER}{yaml}"),
        });
        all.push_str("---\n");
        all.push_str(&yaml);
    }
    out.push(Output {
        path: "deploy/crds.yaml".to_owned(),
        contents: all,
    });
    Ok(out)
}
