//! Sidecar identity in local mode: a shared secret.

use std::path::{Path, PathBuf};

use crate::source::{AuthError, Authenticator, BoxFuture, Claim, Identity};

/// The shortest shared secret accepted.
const MIN_SECRET_LEN: usize = 16;

/// Why the shared secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Fewer than 16 characters.
    #[error("{}: the shared secret must be at least 16 characters", .path.display())]
    TooShort {
        /// The file.
        path: PathBuf,
    },
}

/// Local mode identity: every sidecar presents the same shared secret; its
/// pod identity and labels are taken from its Hello.
pub struct SharedSecret {
    secret: Vec<u8>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

impl SharedSecret {
    /// Read the secret from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let secret = text.trim().as_bytes().to_vec();
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { secret })
    }
}

/// Compare in time independent of where the inputs differ: hash both, then
/// fold the XOR of the digests.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    da.as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Authenticator for SharedSecret {
    fn authenticate<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let given = claim.credential.trim().as_bytes();
            if given.is_empty() {
                return Err(AuthError::refused("no credential in Hello"));
            }
            if !same_secret(given, &self.secret) {
                return Err(AuthError::refused(
                    "the credential does not match the shared secret",
                ));
            }
            if claim.namespace.is_empty() || claim.pod_name.is_empty() {
                return Err(AuthError::refused(
                    "Hello must name the pod's namespace and name",
                ));
            }
            Ok(Identity {
                namespace: claim.namespace.clone(),
                pod_name: claim.pod_name.clone(),
                pod_uid: claim.pod_uid.clone(),
                labels: claim.labels.clone(),
            })
        })
    }
}
