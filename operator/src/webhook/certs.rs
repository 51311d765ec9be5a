//! Webhook TLS: a CA and a serving certificate made with rcgen, kept in one
//! Secret that every replica shares, renewed before they expire, and the CA
//! published in the webhook configurations' `caBundle`.
//!
//! The Secret (`kubernetes.io/tls`) holds `tls.crt`/`tls.key` (the serving
//! certificate, valid for the webhook and control Services, so the gRPC
//! control server can mount the same files), `ca.key`, and `ca.crt`: the
//! current CA first, then the previous one while it is still valid, so a CA
//! rotation never leaves a replica with a certificate the apiserver or a
//! sidecar distrusts.
//!
//! Replicas race safely: creation is a POST (409 → read the winner's) and
//! renewal a PUT with the resourceVersion read (409 → read again).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

/// Field manager of our patches.
pub const FIELD_MANAGER: &str = "tokenwarden-operator";

const KEY_CERT: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const KEY_CA: &str = "ca.crt";
const KEY_CA_KEY: &str = "ca.key";

/// A serving certificate with the CAs that clients should trust.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// The serving certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// CA bundle for clients (PEM, one or more certificates).
    pub ca_pem: String,
}

/// Lifetimes and names of the certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPolicy {
    /// DNS names the serving certificate must carry.
    pub dns_names: Vec<String>,
    /// Lifetime of a new serving certificate, seconds.
    pub validity_secs: i64,
    /// Renew the serving certificate when less than this is left, seconds.
    pub renew_before_secs: i64,
    /// Lifetime of a new CA, seconds.
    pub ca_validity_secs: i64,
}

/// What is wrong with certificates or their storage.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM or DER that does not parse.
    #[error("reading a certificate: {0}")]
    Parse(String),
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Replicas kept racing.
    #[error("the Secret {0} kept changing under us; retrying later")]
    Contended(String),
}

/// Facts read back from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
}

/// What to do with the stored certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: valid long enough, right names.
    Keep,
    /// New serving certificate from the same CA.
    RenewLeaf,
    /// New CA (the old one stays in the bundle) and serving certificate.
    RenewCa,
    /// Nothing usable stored: new CA and serving certificate.
    Create,
}

// === impl CertBundle ===

impl std::fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertBundle")
            .field("cert_pem", &self.cert_pem)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

// === impl CertPolicy ===

impl CertPolicy {
    /// The names a serving certificate needs for Services `services` in
    /// `namespace`: `svc`, `svc.ns`, `svc.ns.svc` for each.
    pub fn service_names(services: &[&str], namespace: &str) -> Vec<String> {
        services
            .iter()
            .flat_map(|s| {
                [
                    (*s).to_string(),
                    format!("{s}.{namespace}"),
                    format!("{s}.{namespace}.svc"),
                ]
            })
            .collect()
    }
}

/// A new self-signed CA: `(cert_pem, key_pem)`.
pub fn generate_ca(now: i64, validity_secs: i64) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("tokenwarden-ca-{now}"));
    dn.push(DnType::OrganizationName, "tokenwarden");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now, validity_secs)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `dns_names` signed by the CA: `(cert_pem, key_pem)`.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    dns_names: &[String],
    now: i64,
    validity_secs: i64,
) -> Result<(String, String), CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, validity_secs)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn set_validity(params: &mut CertificateParams, now: i64, validity: i64) -> Result<(), CertError> {
    let t = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| CertError::Parse(e.to_string()))
    };
    // An hour of slack for clocks that lag ours.
    params.not_before = t(now - 3600)?;
    params.not_after = t(now + validity)?;
    Ok(())
}

/// The PEM blocks of a bundle, in order.
pub fn pem_blocks(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// Validity and DNS names of the first certificate in `pem`.
pub fn inspect(pem: &str) -> Result<CertInfo, CertError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = block
        .parse_x509()
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let validity = cert.validity();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                dns_names.push((*d).to_string());
            }
        }
    }
    Ok(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        dns_names,
    })
}

/// Decide from the Secret's data (if any) what to do at `now`.
pub fn plan(data: Option<&BTreeMap<String, String>>, now: i64, policy: &CertPolicy) -> Plan {
    let Some(data) = data else {
        return Plan::Create;
    };
    let (Some(cert), Some(key), Some(ca), Some(ca_key)) = (
        data.get(KEY_CERT),
        data.get(KEY_KEY),
        data.get(KEY_CA),
        data.get(KEY_CA_KEY),
    ) else {
        return Plan::Create;
    };
    if KeyPair::from_pem(key).is_err() || KeyPair::from_pem(ca_key).is_err() {
        return Plan::Create;
    }
    let (Ok(leaf), Ok(ca)) = (inspect(cert), inspect(ca)) else {
        return Plan::Create;
    };
    // The CA must outlive a freshly issued leaf plus its renewal margin.
    if ca.not_after - now < policy.validity_secs + policy.renew_before_secs {
        return Plan::RenewCa;
    }
    let names_ok = policy.dns_names.iter().all(|n| leaf.dns_names.contains(n));
    if leaf.not_after - now < policy.renew_before_secs || leaf.not_before > now || !names_ok {
        return Plan::RenewLeaf;
    }
    Plan::Keep
}

/// Carry out `plan` on `data`: the new Secret data. `Keep` returns it as is.
pub fn renew(
    plan: Plan,
    data: Option<&BTreeMap<String, String>>,
    now: i64,
    policy: &CertPolicy,
) -> Result<BTreeMap<String, String>, CertError> {
    let get = |k: &str| data.and_then(|d| d.get(k)).cloned().unwrap_or_default();
    let (ca_bundle, ca_key) = match plan {
        Plan::Keep => return Ok(data.cloned().unwrap_or_default()),
        Plan::RenewLeaf => (get(KEY_CA), get(KEY_CA_KEY)),
        Plan::Create | Plan::RenewCa => {
            let (ca, key) = generate_ca(now, policy.ca_validity_secs)?;
            let mut bundle = ca;
            if plan == Plan::RenewCa {
                // Keep the old CA trusted while certificates it signed may live.
                if let Some(old) = pem_blocks(&get(KEY_CA)).into_iter().next() {
                    bundle.push_str(&old);
                }
            }
            (bundle, key)
        }
    };
    // Drop expired CAs from the bundle; the first is the signing one.
    let blocks: Vec<String> = pem_blocks(&ca_bundle)
        .into_iter()
        .enumerate()
        .filter(|(i, b)| *i == 0 || inspect(b).is_ok_and(|c| c.not_after > now))
        .map(|(_, b)| b)
        .collect();
    let signing = blocks.first().cloned().unwrap_or_default();
    let (cert, key) = issue(
        &signing,
        &ca_key,
        &policy.dns_names,
        now,
        policy.validity_secs,
    )?;
    Ok(BTreeMap::from([
        (KEY_CERT.to_string(), cert),
        (KEY_KEY.to_string(), key),
        (KEY_CA.to_string(), blocks.concat()),
        (KEY_CA_KEY.to_string(), ca_key),
    ]))
}

fn bundle_of(data: &BTreeMap<String, String>) -> CertBundle {
    let get = |k: &str| data.get(k).cloned().unwrap_or_default();
    CertBundle {
        cert_pem: get(KEY_CERT),
        key_pem: get(KEY_KEY),
        ca_pem: get(KEY_CA),
    }
}

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|v| (k.clone(), v)))
        .collect()
}

fn secret(name: &str, data: BTreeMap<String, String>, resource_version: Option<String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version,
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), "tokenwarden".into()),
                ("app.kubernetes.io/component".into(), "webhook-tls".into()),
                (
                    "app.kubernetes.io/managed-by".into(),
                    "tokenwarden-operator".into(),
                ),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Make sure the Secret `name` in the API's namespace holds certificates
/// valid at `now`, creating or renewing them; returns what it holds then.
pub async fn ensure_secret(
    api: &Api<Secret>,
    name: &str,
    now: i64,
    policy: &CertPolicy,
) -> Result<CertBundle, CertError> {
    for _ in 0..3 {
        let current = api.get_opt(name).await?;
        let data = current.as_ref().map(secret_data);
        let plan = plan(data.as_ref(), now, policy);
        if plan == Plan::Keep {
            return Ok(bundle_of(&data.unwrap_or_default()));
        }
        let new = renew(plan, data.as_ref(), now, policy)?;
        let result = match &current {
            None => {
                api.create(&PostParams::default(), &secret(name, new.clone(), None))
                    .await
            }
            Some(s) => {
                let rv = s.metadata.resource_version.clone();
                api.replace(name, &PostParams::default(), &secret(name, new.clone(), rv))
                    .await
            }
        };
        match result {
            Ok(_) => {
                tracing::info!(secret = name, ?plan, "webhook certificates written");
                return Ok(bundle_of(&new));
            }
            // Another replica won the race: read what it wrote.
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CertError::Contended(name.to_string()))
}

/// Publish `ca_pem` as the `caBundle` of every webhook in the two
/// configurations (a configuration that does not exist is skipped). Patches
/// only what differs, by strategic merge on the webhook's name.
pub async fn patch_ca_bundles(
    client: &Client,
    mutating: &str,
    validating: &str,
    ca_pem: &str,
) -> Result<usize, CertError> {
    let want = ca_pem.as_bytes();
    let mut patched = 0;
    let mapi: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(cfg) = mapi.get_opt(mutating).await? {
        let stale: Vec<String> = cfg
            .webhooks
            .iter()
            .flatten()
            .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(want))
            .map(|w| w.name.clone())
            .collect();
        if !stale.is_empty() {
            mapi.patch(mutating, &pp(), &Patch::Strategic(ca_patch(&stale, want)))
                .await?;
            patched += stale.len();
        }
    }
    let vapi: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(cfg) = vapi.get_opt(validating).await? {
        let stale: Vec<String> = cfg
            .webhooks
            .iter()
            .flatten()
            .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(want))
            .map(|w| w.name.clone())
            .collect();
        if !stale.is_empty() {
            vapi.patch(validating, &pp(), &Patch::Strategic(ca_patch(&stale, want)))
                .await?;
            patched += stale.len();
        }
    }
    Ok(patched)
}

fn pp() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn ca_patch(names: &[String], ca: &[u8]) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    json!({
        "webhooks": names
            .iter()
            .map(|n| json!({"name": n, "clientConfig": {"caBundle": b64}}))
            .collect::<Vec<_>>()
    })
}
