//! Durable files of tokenwarden: the usage journal and atomic file
//! replacement ([`write_atomic`]).
//!
//! # The journal
//!
//! One append-only file per state dir holds every usage record once, with
//! one sequence number: the local ledger (totals for `/ledger`, `report`
//! and the budgets after a restart) and, in connected mode, the spool (the
//! records the operator has not acked yet) are two views of it.
//!
//! Files under the state dir:
//! - `ledger.jsonl`: one JSON object per line, of four kinds, told apart by
//!   their first key:
//!   - a record, `{"seq":N,...}` ([`UsageRecord`]): one settled attempt;
//!   - an intent, `{"intent":ID,"record":{...}}` ([`IntentLine`]): an
//!     attempt about to be forwarded, at its worst case; the record that
//!     settles it carries the same id. An intent left without a record
//!     when the process died (the request was in flight, the provider may
//!     have billed it) is recorded at its worst case, marked estimated,
//!     when the journal is next opened ([`Journal::take_unsettled`]): the
//!     ledger may count more than the provider billed, never less;
//!   - a spool mark, `{"spool":true}` or `{"spool":false}`: the records
//!     after it are (connected mode) or are not (standalone) sent to the
//!     operator. A journal starts unspooled; opening it in the other mode
//!     writes a mark;
//!   - an ack mark, `{"acked":N}` (with `"next_seq":M` after a compaction
//!     or an upgrade): the operator holds every record up to `N`; the next
//!     record's seq is at least `M`.
//!
//!   Lines are staged and written in groups: the records that settle in
//!   one turn of the runtime share a `write(2)`, made before any of their
//!   responses leave. A line is in the page cache once the write returns,
//!   so it survives `kill -9`; with `fsync` (`--ledger-fsync`) it also
//!   survives a power loss. A journal whose writes fail is
//!   [`Journal::broken`] until one succeeds ([`Journal::probe`]).
//! - `ledger.snapshot.json`: the folded [`Aggregate`] up to its `last_seq`,
//!   written atomically when the journal grows past [`COMPACT_BYTES`]; the
//!   journal then starts again with the lines still needed: the spool
//!   mark, the ack mark, the unacked records (skipped by the totals: their
//!   seqs are in the snapshot) and the open intents.
//! - `requests-N.jsonl`: the journal as it was when compacted, kept for
//!   what-if replays (its records are in the snapshot's totals already;
//!   nothing counts them again). A compaction writes the new journal to
//!   `.ledger.jsonl.next`, hard-links the old one as the next segment,
//!   then renames the new one over it: at every instant `ledger.jsonl` is
//!   whole, old or new, and a crash between two steps leaves at worst a
//!   segment that repeats lines of the journal ([`records`] reads each seq
//!   once). The oldest segments are removed while all of them exceed the
//!   keep bound ([`DEFAULT_REPLAY_KEEP_BYTES`]; 0 keeps none).
//! - `ledger.lock`: held (`flock`) by the process that has the journal
//!   open, with its pid inside; a second one on the same dir is refused.
//! - `ledger.compact.lock`: held shared by readers ([`read`]) and
//!   exclusive by a compaction, so a read never pairs an old snapshot with
//!   a truncated journal.
//!
//! Opening replays snapshot + journal: records above the snapshot's
//! `last_seq` are folded once, records of spooled stretches above the ack
//! watermark are the spool. A torn last line (the process died mid-write)
//! is cut off; a corrupt line elsewhere is an error that names the line,
//! rather than a silently wrong ledger.
//!
//! Upgrade: sidecars before the one journal kept the spool apart
//! (`spool.jsonl`, `spool.meta.json` with `{next_seq, acked}`) and wrote
//! each record to both files. Opened in connected mode, a journal moves
//! that spool in once (an ack mark with its watermark and next seq, then
//! its unacked records, counted only when the ledger file missed them),
//! then removes the old files.

mod atomic;
mod journal;
mod legacy;
mod line;
mod lock;
mod replay;
mod segments;

use std::path::Path;

pub use atomic::write_atomic;
pub use journal::Journal;
pub use replay::read;
pub use segments::records;
#[cfg(doc)]
use tokenwarden_core::usage::{Aggregate, IntentLine, UsageRecord};

/// Journal size that triggers compaction into the snapshot.
pub const COMPACT_BYTES: u64 = 16 * 1024 * 1024;
/// How many bytes of rotated journal segments (`requests-N.jsonl`) a
/// state dir keeps for what-if replays unless told otherwise
/// ([`Journal::set_replay_keep_bytes`], the sidecar's
/// `--replay-keep-bytes`): four compactions' worth.
pub const DEFAULT_REPLAY_KEEP_BYTES: u64 = 4 * COMPACT_BYTES;
/// Budget periods kept per budget in the snapshot.
const KEEP_PERIODS: usize = 24;

const JOURNAL: &str = "ledger.jsonl";
const SNAPSHOT: &str = "ledger.snapshot.json";
/// The lock a writer holds (`read` does not take it).
const LOCK: &str = "ledger.lock";
/// Held shared by readers, exclusive by a compaction.
const COMPACT_LOCK: &str = "ledger.compact.lock";

/// Journal I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the journal of this state dir.
    #[error(
        "{dir} is in use by another tokenwarden-sidecar{holder} (it holds {dir}/{LOCK}); give each sidecar its own --state-dir"
    )]
    InUse {
        /// The state dir.
        dir: String,
        /// ` (pid N)` when the holder wrote its pid, else empty.
        holder: String,
    },
    /// A line or the snapshot cannot be parsed.
    #[error("{path}:{line}: corrupt ledger entry: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}
