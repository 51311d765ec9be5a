//! The journal's line kinds and how they are told apart.

use serde::{Deserialize, Serialize};
use tokenwarden_core::usage::{IntentLine, UsageRecord};

/// One journal line.
pub(crate) enum Line {
    /// A settled attempt.
    Record(UsageRecord),
    /// An attempt about to be forwarded.
    Intent(IntentLine),
    /// Spool bookkeeping.
    Mark(Mark),
}

/// A bookkeeping line of the spool: where spooled records start or stop,
/// and the operator's ack watermark.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mark {
    /// `true`: the records after this line are sent to the operator
    /// (connected mode); `false`: they are not (standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<bool>,
    /// The operator holds every record up to this seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    /// The seq the next record gets at least (kept across a compaction
    /// and an upgrade, so seqs never go back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_seq: Option<u64>,
}

/// Parse one line (with or without its `\n`).
pub(crate) fn parse(buf: &[u8]) -> Result<Line, serde_json::Error> {
    if buf.starts_with(b"{\"intent\":") {
        serde_json::from_slice(buf).map(Line::Intent)
    } else if buf.starts_with(b"{\"spool\":") || buf.starts_with(b"{\"acked\":") {
        serde_json::from_slice(buf).map(Line::Mark)
    } else {
        serde_json::from_slice(buf).map(Line::Record)
    }
}

/// Append a record's line.
pub(crate) fn record(r: &UsageRecord, out: &mut Vec<u8>) {
    r.write_json(out);
    out.push(b'\n');
}

/// Append a mark's line.
pub(crate) fn mark(m: &Mark, out: &mut Vec<u8>) {
    // A struct of integers and booleans always serializes.
    if serde_json::to_writer(&mut *out, m).is_ok() {
        out.push(b'\n');
    }
}
