//! AdmissionReview in, AdmissionReview out: the two handlers, without HTTP.
//!
//! The response is built here rather than with kube-core's
//! `AdmissionResponse`, whose `patch` serializes as an array of numbers
//! (kube-rs/kube#1781); the apiserver's `[]byte` field is base64 on the wire.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionReview, Operation},
};
use serde_json::{Value, json};
use tokenwarden_crds::load;

use super::inject::{InjectConfig, Outcome, inject, provider_secrets};
use crate::source::Objects;

/// Everything the mutating handler reads besides the request.
#[derive(Debug, Clone)]
pub struct InjectContext<'a> {
    /// Chart values turned into flags.
    pub config: &'a InjectConfig,
    /// The policies as last seen; `None` while the source has not synced.
    pub objects: Option<&'a Objects>,
    /// The control plane's CA bundle (PEM).
    pub ca_pem: &'a str,
}

/// Handle a mutating (injection) AdmissionReview body; returns the JSON body
/// of the response review.
pub fn mutate(body: &[u8], ctx: &InjectContext<'_>) -> Vec<u8> {
    let req = match parse(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let uid = req.uid.clone();
    if req.operation != Operation::Create || req.kind.kind != "Pod" {
        return allowed(&uid, None, Vec::new());
    }
    let Some(obj) = &req.object else {
        return allowed(&uid, None, Vec::new());
    };
    let pod: Pod = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => return denied(&uid, 400, "BadRequest", &format!("not a Pod: {e}")),
    };
    // At CREATE the pod's own namespace field may be empty: the request's counts.
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    let secrets = match ctx.objects {
        Some(o) => provider_secrets(o, &namespace, &labels),
        None => {
            warnings.push(
                "tokenwarden: RoutingPolicies not loaded yet; no provider-key Secret mounted \
                 (recreate the pod once the operator is ready)"
                    .to_string(),
            );
            Vec::new()
        }
    };
    match inject(&pod, &namespace, &secrets, ctx.ca_pem, ctx.config) {
        Outcome::Skip(reason) => {
            tracing::debug!(%namespace, pod = ?pod.metadata.name, %reason, "not injected");
            allowed(&uid, None, warnings)
        }
        Outcome::Patch { ops, .. } => match serde_json::to_vec(&ops) {
            Ok(patch) => allowed(&uid, Some(&patch), warnings),
            Err(e) => denied(&uid, 500, "InternalError", &e.to_string()),
        },
    }
}

/// Handle a validating AdmissionReview body for RoutingPolicy and TokenBudget:
/// denies with the shared `validate()` field-path messages.
pub fn validate(body: &[u8]) -> Vec<u8> {
    let req = match parse(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let uid = req.uid.clone();
    let Some(obj) = &req.object else {
        return allowed(&uid, None, Vec::new()); // DELETE
    };
    let value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(e) => return denied(&uid, 400, "BadRequest", &e.to_string()),
    };
    let object = match load::parse_value(1, value) {
        Ok(o) => o,
        Err(load::LoadError::Field {
            kind,
            name,
            path,
            message,
            ..
        }) => {
            return denied(
                &uid,
                422,
                "Invalid",
                &format!(
                    "{kind} {}/{name} is invalid: {path}: {message}",
                    req.namespace.as_deref().unwrap_or_default()
                ),
            );
        }
        Err(e) => return denied(&uid, 422, "Invalid", &e.to_string()),
    };
    match object.validate() {
        Ok(()) => allowed(&uid, None, Vec::new()),
        Err(errors) => denied(&uid, 422, "Invalid", &errors.to_string()),
    }
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Vec<u8>> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
        denied(
            "",
            400,
            "BadRequest",
            &format!("not an AdmissionReview: {e}"),
        )
    })?;
    review
        .try_into()
        .map_err(|_| denied("", 400, "BadRequest", "AdmissionReview without a request"))
}

fn review(response: Value) -> Vec<u8> {
    let v = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    // Serializing a Value cannot fail.
    serde_json::to_vec(&v).unwrap_or_default()
}

fn allowed(uid: &str, patch: Option<&[u8]>, warnings: Vec<String>) -> Vec<u8> {
    let mut r = json!({"uid": uid, "allowed": true});
    if let (Some(patch), Value::Object(m)) = (patch, &mut r) {
        m.insert("patchType".into(), "JSONPatch".into());
        m.insert(
            "patch".into(),
            base64::engine::general_purpose::STANDARD
                .encode(patch)
                .into(),
        );
    }
    if let (false, Value::Object(m)) = (warnings.is_empty(), &mut r) {
        m.insert("warnings".into(), json!(warnings));
    }
    review(r)
}

fn denied(uid: &str, code: u16, reason: &str, message: &str) -> Vec<u8> {
    review(json!({
        "uid": uid,
        "allowed": false,
        "status": {"code": code, "reason": reason, "message": message},
    }))
}
