//! Connected mode: the state the operator's control stream and request
//! handling share. The stream itself (connect with backoff and jitter,
//! `Hello`, config snapshots (ACK/NACK), usage replay, lease requests,
//! redirects) is the sidecar's `session` module, which works on this and
//! on the shared state; nothing here reaches back into either.
//!
//! - [`leases`]: per-budget leases and the wait for a grant.
//! - [`snapshot`]: validating, installing and persisting config snapshots.
//!
//! See `docs/sidecar-connected.md` for the behaviour users see.

pub mod leases;
pub mod snapshot;

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokenwarden_core::selector::Labels;
use tokenwarden_proto::SidecarMessage;
use tokio::sync::{Notify, mpsc};

use crate::sync::lock;

/// Settings of connected mode, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `https://host:port` or `http://host:port`.
    pub url: String,
    /// PEM CA bundle trusted for the control plane (else webpki roots).
    pub ca_file: Option<PathBuf>,
    /// Name the certificate must carry (default: the host of `url`), for the
    /// configured address and for redirect targets alike.
    pub server_name: Option<String>,
    /// Credential file, read on every connect.
    pub credential_file: Option<PathBuf>,
    /// This pod.
    pub namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Workload labels.
    pub labels: Labels,
    /// How long a request waits for a lease grant.
    pub lease_wait: Duration,
    /// Where the sidecar id and the last good snapshot live.
    pub state_dir: Option<PathBuf>,
}

/// Connected-mode state shared with request handling.
#[derive(Debug)]
pub struct Control {
    /// `<pod uid or hostname>-<8 hex>`.
    pub sidecar_id: String,
    /// Pod name (in usage records).
    pub pod_name: String,
    /// Woken when records the operator has not seen are on file (the
    /// spool: the unacked end of the usage journal).
    pub spool_added: Notify,
    /// Budget leases.
    pub leases: leases::Leases,
    /// How long a request waits for a grant.
    pub lease_wait: Duration,
    connected: AtomicBool,
    outbox: mpsc::UnboundedSender<SidecarMessage>,
    /// Version of the installed config (empty: none).
    pub config_version: Mutex<String>,
}

// === impl Control ===

impl Control {
    /// New state; the receiver is the session's outbox (lease requests).
    pub fn new(
        sidecar_id: String,
        pod_name: String,
        lease_wait: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<SidecarMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Control {
                sidecar_id,
                pod_name,
                spool_added: Notify::new(),
                leases: leases::Leases::default(),
                lease_wait,
                connected: AtomicBool::new(false),
                outbox: tx,
                config_version: Mutex::new(String::new()),
            },
            rx,
        )
    }

    /// Whether a session with the operator is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Mark the session up or down; wakes requests waiting for a lease.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        if !up {
            self.leases.forget_pending();
        }
        self.leases.changed.notify_waiters();
    }

    /// Queue a message for the session (dropped when none is up: lease
    /// requests are re-made after a reconnect).
    pub fn send(&self, msg: SidecarMessage) {
        let _ = self.outbox.send(msg);
    }

    /// The installed config's version.
    pub fn config_version(&self) -> String {
        lock(&self.config_version).clone()
    }
}

/// An error with its causes, `outer: cause: root cause` (each source once,
/// skipping a cause whose text its parent already shows).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The sidecar id: read from `STATE/sidecar-id`, or created there once as
/// `<pod uid or hostname>-<8 random hex>`. Without a state dir a fresh id
/// per process.
pub fn sidecar_id(state_dir: Option<&Path>, pod_uid: &str) -> std::io::Result<String> {
    let prefix = if pod_uid.is_empty() {
        hostname()
    } else {
        pod_uid.to_string()
    };
    let fresh = || -> std::io::Result<String> { Ok(format!("{prefix}-{}", random_hex()?)) };
    let Some(dir) = state_dir else {
        return fresh();
    };
    std::fs::create_dir_all(dir)?;
    let path = dir.join("sidecar-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = fresh()?;
    tokenwarden_durable::write_atomic(&path, format!("{id}\n").as_bytes(), true)?;
    Ok(id)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "sidecar".into())
}

fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Parse a downward-API labels file: one `key="value"` per line, the
/// value quoted and escaped as the kubelet writes it (Go `%q`).
pub fn parse_labels_file(text: &str) -> Result<Labels, String> {
    let mut out = Labels::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: not key=\"value\"", i + 1));
        };
        let v = unquote(v.trim()).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.insert(k.trim().to_string(), v);
    }
    Ok(out)
}

/// Undo Go's `strconv.Quote`.
fn unquote(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("value {s:?} is not double-quoted"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Result<u32, String> {
        let digits: String = chars.by_ref().take(n).collect();
        if digits.len() != n {
            return Err("short escape".into());
        }
        u32::from_str_radix(&digits, 16).map_err(|e| format!("bad escape: {e}"))
    };
    let mut bytes: Vec<u8> = Vec::new();
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut bytes, &mut out);
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or("trailing backslash")?;
        if e == 'x' {
            bytes.push(u8::try_from(hex(&mut chars, 2)?).map_err(|e| e.to_string())?);
            continue;
        }
        flush(&mut bytes, &mut out);
        let ch = match e {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            'u' => char::from_u32(hex(&mut chars, 4)?).ok_or("bad \\u escape")?,
            'U' => char::from_u32(hex(&mut chars, 8)?).ok_or("bad \\U escape")?,
            other => return Err(format!("unknown escape \\{other}")),
        };
        out.push(ch);
    }
    flush(&mut bytes, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file_in_the_kubelet_format() {
        let text =
            "app=\"agent\"\nteam=\"search \\\"core\\\"\"\nnote=\"a\\nb\\u00e9\\xc3\\xa9\"\n\n";
        let l = parse_labels_file(text).unwrap();
        assert_eq!(l["app"], "agent");
        assert_eq!(l["team"], "search \"core\"");
        assert_eq!(l["note"], "a\nbéé");
        assert!(
            parse_labels_file("app=agent")
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(error_chain(&e), "transport error: connection refused");
    }

    #[test]
    fn sidecar_id_is_created_once_per_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = sidecar_id(Some(dir.path()), "uid-1").unwrap();
        assert!(
            a.starts_with("uid-1-") && a.len() == "uid-1-".len() + 8,
            "{a}"
        );
        assert_eq!(sidecar_id(Some(dir.path()), "uid-1").unwrap(), a);
        let b = sidecar_id(None, "uid-1").unwrap();
        assert_ne!(a, b);
    }
}
