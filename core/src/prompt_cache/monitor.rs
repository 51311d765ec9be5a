//! [`Monitor`]: compares each request's [`Fingerprint`] with the recent
//! ones of the same key and tells a cache bust (and which kind), a TTL
//! expiry, or nothing, in an [`Observation`].

use std::{
    collections::{HashMap, VecDeque},
    mem::size_of,
    time::Duration,
};

use jiff::Timestamp;

use super::{
    fingerprint::{Fingerprint, Run, Section},
    limits::MonitorLimits,
};
use crate::{
    tokens::TokenCounts,
    usage::cache::{BustReason, CacheBust, ChangeKind},
};

/// Anthropic looks for an earlier cache entry at most this many blocks
/// before each breakpoint.
const LOOKBACK_BLOCKS: u32 = 20;
/// OpenAI caches 1,024 tokens, then whole steps of 128.
const OPENAI_FIRST: u64 = 1024;
const OPENAI_STEP: u64 = 128;

/// What [`Monitor::observe`] found for one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The cache bust, with `lost_tokens` filled in.
    pub bust: Option<CacheBust>,
    /// The request matched an earlier prompt of its key whose cache had
    /// outlived its TTL: a TTL expiry, not a bust.
    pub expired: bool,
    /// Busts with the same section and change this key had in its recent
    /// window ([`MonitorLimits::bust_window`]), this one included; 0
    /// without a bust. What the volatile-prefix guard reads.
    pub repeats: u32,
}

/// The prefix-stability monitor: recent fingerprints per key, bounded by
/// [`MonitorLimits`]. Not thread-safe by itself; the caller locks it.
#[derive(Debug)]
pub struct Monitor {
    limits: MonitorLimits,
    keys: HashMap<Box<str>, KeyState>,
    tick: u64,
    scratch: Vec<(u32, u32)>,
}

/// What identifies a repeated bust: where (none for a provider miss) and
/// what changed.
type Signature = (Option<(Section, u32, u16)>, ChangeKind);

#[derive(Debug)]
struct KeyState {
    entries: Vec<Entry>,
    busts: VecDeque<Signature>,
    used: u64,
}

#[derive(Debug)]
struct Entry {
    fp: Fingerprint,
    last_seen: Timestamp,
    /// When its response was in (the provider had written its cache).
    settled: Timestamp,
}

/// How a new fingerprint `n` compares with an earlier one `o`.
#[derive(Clone, Copy, Debug, Default)]
struct Cmp {
    /// Bytes of the common prefix.
    d: u64,
    /// The first block that differs (or the shorter block count).
    block: usize,
    /// The first unit of that block that differs.
    unit: usize,
    /// That unit's offset inside the block.
    unit_off: u64,
    /// Bytes of `n` after `d` found in `o` after `d`, before `o`'s
    /// cacheable point.
    shared: u64,
    /// Of `shared`, the bytes before `n`'s own cacheable point.
    lost: u64,
}

/// The verdict on `n` against its best match `o`.
struct Verdict {
    bust: Option<(CacheBust, Signature)>,
    /// `n` read `o`'s cache (refresh it).
    read: bool,
    /// `n` continues or supersedes `o`: it takes `o`'s place.
    replaces: bool,
}

// === impl Monitor ===

impl Monitor {
    /// An empty monitor.
    pub fn new(limits: MonitorLimits) -> Monitor {
        Monitor {
            limits,
            keys: HashMap::new(),
            tick: 0,
            scratch: Vec::new(),
        }
    }

    /// The limits it runs with.
    pub fn limits(&self) -> &MonitorLimits {
        &self.limits
    }

    /// Compare `fp` (the request as sent) with the recent fingerprints of
    /// `key` (an opaque string of workload, provider and model), given what
    /// the provider billed, then remember it. `now` is best the time the
    /// request was sent upstream (TTLs run from the provider's last use of
    /// a prefix, and requests sent together cannot read each other's
    /// cache). `ttl_override` replaces the provider's TTL (tests,
    /// simulators).
    pub fn observe(
        &mut self,
        key: &str,
        fp: Fingerprint,
        now: Timestamp,
        billed: &TokenCounts,
        ttl_override: Option<Duration>,
    ) -> Observation {
        self.observe_sent(key, fp, now, now, billed, ttl_override)
    }

    /// [`Monitor::observe`] with both times of the request: `sent`, when
    /// it left for the provider (the clock of TTLs and of the comparison),
    /// and `settled`, when its response was in. A provider miss is only
    /// called against an earlier request that had settled before this one
    /// was sent (and [`MonitorLimits::miss_grace`] before): a request sent
    /// while another with the same prefix was still being answered cannot
    /// read that one's cache, whichever of the two settles first.
    pub fn observe_sent(
        &mut self,
        key: &str,
        mut fp: Fingerprint,
        sent: Timestamp,
        settled: Timestamp,
        billed: &TokenCounts,
        ttl_override: Option<Duration>,
    ) -> Observation {
        let now = sent;
        fp.limit(&self.limits);
        self.tick += 1;
        let limits = self.limits;
        let tick = self.tick;
        let mut scratch = std::mem::take(&mut self.scratch);
        let state = self.key_state(key);
        state.used = tick;
        let mut obs = Observation::default();
        let mut slot = None;
        if let Some((i, cmp)) = best_match(&state.entries, &fp, &mut scratch) {
            let o = &mut state.entries[i];
            let ttl = ttl_override.unwrap_or_else(|| o.fp.ttl());
            let age = elapsed(o.last_seen, now);
            let may_miss = o.settled <= sent && age >= limits.miss_grace;
            let v = judge(&o.fp, &fp, &cmp, billed, &limits, may_miss, &mut scratch);
            if age > ttl {
                // Nothing could be read past the TTL: an expiry, when `fp`
                // would have read `o`'s cache or been busted by it.
                obs.expired = v.read || v.bust.is_some();
                slot = (obs.expired || v.replaces).then_some(i);
            } else {
                if v.read {
                    o.last_seen = now;
                }
                if let Some((bust, sig)) = v.bust {
                    if state.busts.len() >= limits.bust_window.max(1) {
                        state.busts.pop_front();
                    }
                    state.busts.push_back(sig);
                    obs.repeats = state.busts.iter().filter(|s| **s == sig).count() as u32;
                    obs.bust = Some(bust);
                }
                slot = v.replaces.then_some(i);
            }
        }
        let entry = Entry {
            fp,
            last_seen: now,
            settled,
        };
        match slot {
            Some(i) => state.entries[i] = entry,
            None => {
                if state.entries.len() >= limits.per_key.max(1) {
                    let oldest =
                        (0..state.entries.len()).min_by_key(|&i| state.entries[i].last_seen);
                    if let Some(i) = oldest {
                        state.entries.remove(i);
                    }
                }
                state.entries.push(entry);
            }
        }
        self.scratch = scratch;
        obs
    }

    /// Keys held.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Fingerprints held, over all keys.
    pub fn fingerprints(&self) -> usize {
        self.keys.values().map(|s| s.entries.len()).sum()
    }

    /// Heap bytes held (fingerprints, keys, windows, the table): a gauge.
    pub fn heap_bytes(&self) -> usize {
        let table = self.keys.capacity() * (size_of::<(Box<str>, KeyState)>() + 1);
        let keys: usize = self
            .keys
            .iter()
            .map(|(k, s)| {
                k.len()
                    + s.entries.capacity() * size_of::<Entry>()
                    + s.entries.iter().map(|e| e.fp.heap_bytes()).sum::<usize>()
                    + s.busts.capacity() * size_of::<Signature>()
            })
            .sum();
        table + keys + self.scratch.capacity() * size_of::<(u32, u32)>()
    }

    /// The most [`Monitor::heap_bytes`] can reach with these limits when
    /// keys are at most `key_len` bytes (the scratch buffer aside, which is
    /// at most `max_runs` entries).
    pub fn max_heap_bytes(limits: &MonitorLimits, key_len: usize) -> usize {
        let per_key = key_len
            + limits.per_key.max(1).next_power_of_two()
                * (size_of::<Entry>() + Fingerprint::max_bytes(limits))
            + limits.bust_window.max(1).next_power_of_two() * size_of::<Signature>();
        // A hash table keeps at most 8/7 of its entries' slots, in powers of two.
        let slots = (limits.keys.max(1) * 8 / 7 + 1).next_power_of_two();
        slots * (size_of::<(Box<str>, KeyState)>() + 1)
            + limits.keys.max(1) * per_key
            + 2 * limits.max_runs * size_of::<(u32, u32)>()
    }

    /// The state of `key`, made (dropping the least recently used key at
    /// the limit) when new.
    fn key_state(&mut self, key: &str) -> &mut KeyState {
        if !self.keys.contains_key(key) && self.keys.len() >= self.limits.keys.max(1) {
            let lru = self
                .keys
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = lru {
                self.keys.remove(&k);
            }
        }
        self.keys.entry(Box::from(key)).or_insert_with(|| KeyState {
            entries: Vec::new(),
            busts: VecDeque::new(),
            used: 0,
        })
    }
}

/// Time from `then` to `now` (zero when the clock went back).
fn elapsed(then: Timestamp, now: Timestamp) -> Duration {
    let ms = now.as_millisecond().saturating_sub(then.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Bytes → tokens at the request's own ratio (billed input / rendered).
fn tokens(bytes: u64, billed_input: u64, rendered: u64) -> u64 {
    if rendered == 0 {
        return 0;
    }
    let t = u128::from(bytes) * u128::from(billed_input) / u128::from(rendered);
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The earlier fingerprint sharing the most content with `n` (common
/// prefix plus shared content after it), if any shares anything.
fn best_match(
    entries: &[Entry],
    n: &Fingerprint,
    scratch: &mut Vec<(u32, u32)>,
) -> Option<(usize, Cmp)> {
    let mut cands: Vec<(usize, Cmp)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (i, prefix(&e.fp, n)))
        .collect();
    // Longest prefix first; the rest only when they could still win.
    cands.sort_by(|a, b| {
        b.1.d
            .cmp(&a.1.d)
            .then(entries[b.0].last_seen.cmp(&entries[a.0].last_seen))
    });
    let mut best: Option<(usize, Cmp)> = None;
    let mut best_score = 0u64;
    for (i, mut c) in cands {
        let o = &entries[i].fp;
        let bound = c.d
            + o.cacheable
                .saturating_sub(c.d)
                .min(n.rendered.saturating_sub(c.d));
        if best.is_some() && bound <= best_score {
            continue;
        }
        if c.d < o.cacheable {
            shared_after(o, n, &mut c, scratch);
        }
        let score = c.d + c.shared;
        if score > best_score {
            best_score = score;
            best = Some((i, c));
        }
    }
    best
}

/// The common prefix of `o` and `n`: whole blocks, then units.
fn prefix(o: &Fingerprint, n: &Fingerprint) -> Cmp {
    let mut c = Cmp::default();
    let common = o.blocks.len().min(n.blocks.len());
    // Equal content under another label (a message split differently) is
    // still a shared prefix for the provider: compare content only.
    while c.block < common
        && o.blocks[c.block].raw == n.blocks[c.block].raw
        && o.blocks[c.block].len == n.blocks[c.block].len
    {
        c.d += u64::from(n.blocks[c.block].len);
        c.block += 1;
    }
    if c.block < common {
        for (x, y) in o.units(c.block).zip(n.units(c.block)) {
            if x != y {
                break;
            }
            c.unit += 1;
            c.unit_off += u64::from(x.len);
        }
        c.d += c.unit_off;
    }
    c
}

/// Fill `shared` and `lost`: the units of `n` after the divergence that
/// match units of `o` after it and before `o`'s cacheable point, each unit
/// of `o` matched at most once (content repeated inside a prompt counts
/// once; content moved, as reordered tools, still counts: a stable order
/// would have let the provider serve it).
fn shared_after(o: &Fingerprint, n: &Fingerprint, c: &mut Cmp, scratch: &mut Vec<(u32, u32)>) {
    scratch.clear();
    let block_start = c.d - c.unit_off;
    let mut pos = block_start;
    for b in c.block..o.blocks.len() {
        if pos >= o.cacheable {
            break;
        }
        let mut at = pos;
        for u in o.units(b) {
            if at >= c.d && at + u64::from(u.len) <= o.cacheable {
                scratch.push((u.hash, 1));
            }
            at += u64::from(u.len);
        }
        pos += u64::from(o.blocks[b].len);
    }
    if scratch.is_empty() {
        return;
    }
    // A multiset: (hash, how many of `o`'s units have it).
    scratch.sort_unstable();
    scratch.dedup_by(|later, first| {
        let same = later.0 == first.0;
        if same {
            first.1 += later.1;
        }
        same
    });
    let mut pos = block_start;
    for b in c.block..n.blocks.len() {
        let mut at = pos;
        for u in n.units(b) {
            let len = u64::from(u.len);
            if at >= c.d
                && let Ok(i) = scratch.binary_search_by_key(&u.hash, |&(h, _)| h)
                && scratch[i].1 > 0
            {
                scratch[i].1 -= 1;
                c.shared += len;
                if at + len <= n.cacheable {
                    c.lost += len;
                }
            }
            at += len;
        }
        pos += u64::from(n.blocks[b].len);
    }
}

/// Bytes of `n`'s prompt the provider should have served from `o`'s
/// cache: Anthropic, the longest of `o`'s breakpoints inside the common
/// prefix that one of `n`'s breakpoints reaches within its 20-block
/// lookback; OpenAI, the common prefix when `o` was cached.
fn readable(o: &Fingerprint, n: &Fingerprint, d: u64) -> u64 {
    if !n.anthropic {
        return if o.cacheable > 0 {
            d.min(o.cacheable)
        } else {
            0
        };
    }
    o.breakpoints
        .iter()
        .filter(|e| e.end <= d)
        .filter(|e| {
            n.breakpoints
                .iter()
                .any(|b| b.end >= e.end && b.block.saturating_sub(e.block) <= LOOKBACK_BLOCKS)
        })
        .map(|e| e.end)
        .max()
        .unwrap_or(0)
}

/// Cache bust, read, replacement: the rules of the module docs.
fn judge(
    o: &Fingerprint,
    n: &Fingerprint,
    c: &Cmp,
    billed: &TokenCounts,
    limits: &MonitorLimits,
    may_miss: bool,
    scratch: &mut Vec<(u32, u32)>,
) -> Verdict {
    let total = billed.total_input_tokens();
    let tok = |bytes: u64| tokens(bytes, total, n.rendered);
    let above_read = billed
        .input_tokens
        .saturating_add(billed.cache_write_tokens);
    let min_cacheable = limits
        .min_cacheable_tokens
        .max(o.min_cacheable_tokens)
        .max(n.min_cacheable_tokens);
    let o_cacheable = if tok(o.cacheable) >= min_cacheable {
        o.cacheable
    } else {
        0
    };
    let read_bytes = readable(o, n, c.d.min(o_cacheable));
    let read = read_bytes > 0;
    let replaces = c.d >= o.cacheable || c.block + 1 >= o.blocks.len();
    if c.d < o_cacheable {
        let lost_tokens = tok(c.lost).min(above_read);
        if lost_tokens < limits.min_lost_tokens
            || c.block >= n.blocks.len()
            || c.block >= o.blocks.len()
        {
            return Verdict {
                bust: None,
                read,
                replaces,
            };
        }
        let reason = if c.d < c.lost {
            BustReason::VolatilePrefix
        } else {
            BustReason::PrefixDiverged
        };
        let (offset, change) = classify(o, n, c, scratch);
        let k = &n.blocks[c.block];
        let bust = CacheBust {
            reason,
            section: n.label(c.block),
            offset,
            change,
            lost_tokens,
        };
        let sig = (Some((k.section, k.i, k.j)), change);
        return Verdict {
            bust: Some((bust, sig)),
            read,
            replaces: true,
        };
    }
    let mut expected = tok(read_bytes);
    if !n.anthropic {
        expected = if expected < OPENAI_FIRST {
            0
        } else {
            OPENAI_FIRST + (expected - OPENAI_FIRST) / OPENAI_STEP * OPENAI_STEP
        };
    }
    let missing = expected.saturating_sub(billed.cache_read_tokens);
    let lost_tokens = missing.min(above_read);
    let miss = may_miss
        && expected >= min_cacheable
        && billed.cache_read_tokens.saturating_mul(2) < expected
        && lost_tokens >= limits.min_lost_tokens;
    let bust = miss.then(|| {
        let bust = CacheBust {
            reason: BustReason::ProviderMiss,
            section: String::new(),
            offset: 0,
            change: ChangeKind::None,
            lost_tokens,
        };
        (bust, (None, ChangeKind::None))
    });
    Verdict {
        bust,
        read,
        replaces,
    }
}

/// The offset inside the diverging block and the kind of change.
fn classify(
    o: &Fingerprint,
    n: &Fingerprint,
    c: &Cmp,
    scratch: &mut Vec<(u32, u32)>,
) -> (u64, ChangeKind) {
    let b = c.block;
    let (nb, ob) = (&n.blocks[b], &o.blocks[b]);
    let (offset, pattern) = refine(o, n, c);
    let in_tools = nb.section == Section::Tool || ob.section == Section::Tool;
    let change = if in_tools && tools_reordered(o, n) {
        ChangeKind::ToolsReordered
    } else if nb.masked == ob.masked {
        pattern.unwrap_or(ChangeKind::Number)
    } else if nb.ws == ob.ws {
        ChangeKind::Whitespace
    } else if in_tools {
        ChangeKind::ToolsChanged
    } else if nb.system_like && ob.system_like && !system_shares_a_run(o, n, scratch) {
        ChangeKind::SystemReplaced
    } else {
        ChangeKind::Content
    };
    (offset, change)
}

/// The start of the diverging unit, moved to the first volatile run in it
/// that differs when the bytes before that run are the same in both.
fn refine(o: &Fingerprint, n: &Fingerprint, c: &Cmp) -> (u64, Option<ChangeKind>) {
    let b = c.block;
    let start = c.unit_off;
    if n.block_runs(b).is_empty() || o.block_runs(b).is_empty() {
        return (start, None);
    }
    let unit_end = |fp: &Fingerprint| {
        let len = fp.units(b).nth(c.unit).map_or(0, |u: Run| u64::from(u.len));
        start + len
    };
    let within = |fp: &'_ Fingerprint, end: u64| {
        let b32 = b as u32;
        fp.patterns
            .iter()
            .filter(move |p| p.block == b32 && (start..end).contains(&u64::from(p.offset)))
            .copied()
            .collect::<Vec<_>>()
    };
    let (np, op) = (within(n, unit_end(n)), within(o, unit_end(o)));
    for (k, x) in np.iter().enumerate() {
        match op.get(k) {
            Some(y) if x.offset == y.offset && x.pre == y.pre => {
                if x.val != y.val {
                    return (u64::from(x.offset), Some(x.kind));
                }
            }
            None => return (u64::from(x.offset), Some(x.kind)),
            Some(_) => break,
        }
    }
    (start, None)
}

/// The same tool definitions in another order.
fn tools_reordered(o: &Fingerprint, n: &Fingerprint) -> bool {
    let tools = |fp: &Fingerprint| {
        let mut v: Vec<u64> = fp
            .blocks
            .iter()
            .filter(|b| b.section == Section::Tool)
            .map(|b| b.raw)
            .collect();
        let ordered = v.clone();
        v.sort_unstable();
        (ordered, v)
    };
    let ((no, ns), (oo, os)) = (tools(n), tools(o));
    ns == os && no != oo
}

/// Whether a run of `n`'s system prompt appears in `o`'s.
fn system_shares_a_run(o: &Fingerprint, n: &Fingerprint, scratch: &mut Vec<(u32, u32)>) -> bool {
    scratch.clear();
    for (b, k) in o.blocks.iter().enumerate() {
        if k.system_like {
            scratch.extend(o.units(b).map(|u| (u.hash, 0)));
        }
    }
    scratch.sort_unstable();
    n.blocks
        .iter()
        .enumerate()
        .filter(|(_, k)| k.system_like)
        .flat_map(|(b, _)| n.units(b))
        .any(|u| scratch.binary_search(&(u.hash, 0)).is_ok())
}
