//! N+1 and repeated queries within one request.
//!
//! While a request runs, [`RequestWork::record`] keeps, per SELECT
//! fingerprint, how often it ran and with which parameter tuples (hashes
//! only), and for earlier queries the hashes of values they returned. When
//! the request ends, [`RequestWork::evaluate`] decides:
//! - `n_plus_one`: one SELECT shape ran at least
//!   [`threshold`](NPlusOneConfig::threshold) times with *distinct*
//!   parameter tuples;
//! - `repeated_query`: one shape ran with the *same* tuple at least
//!   [`repeated_threshold`](NPlusOneConfig::repeated_threshold) times (a
//!   cache or hoist candidate);
//! - `n_plus_one_write`: one INSERT/UPDATE/DELETE/MERGE shape ran at least
//!   [`write_threshold`](NPlusOneConfig::write_threshold) times with
//!   distinct parameters, each execution changing at most one row and
//!   waiting for the previous one's reply (a loop of single-row writes).
//!   Writes are never `n_plus_one` or `repeated_query` children.
//!
//! Every other statement of the request is counted by shape too, for the
//! query budget ([`RequestWork::top_shapes`]).
//!
//! # What counts as one write per row
//! - An execution that changed more than one row (the command tag says how
//!   many) is set-based: a chunked bulk INSERT of 500 rows per statement
//!   run five times is not a loop. So a per-parent `DELETE ... WHERE
//!   parent_id = $1` that removes several rows each time is not reported
//!   either (precision first).
//! - An execution sent before the previous execution of the same shape had
//!   completed did not wait for it: the client pipelined them (psycopg's
//!   `executemany`, JDBC batches), one round trip for the batch, which is
//!   the fix this finding suggests. So is each statement after the first of
//!   a multi-statement simple query.
//!
//! The parent of an N+1 is the earlier query in the same request whose
//! returned values contain the children's parameter values. It is named
//! only when at least half of the children (and at least two) match; when
//! nothing matches that well, the finding says no parent could be shown
//! rather than guessing from query order.
//!
//! Every structure here is capped per request, and the work per execution
//! is a hash-map update and a few small-vector pushes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use smallvec::SmallVec;

use crate::finding::FindingKind;
use crate::fingerprint::{FingerprintId, StatementKind};

/// Thresholds and caps of the N+1 detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NPlusOneConfig {
    /// Distinct parameter tuples of one SELECT shape in one request that
    /// make an N+1. Default 5: two or three lookups in a request are often
    /// deliberate (current user, tenant, feature flag), while a loop over a
    /// page of results produces tens; 5 catches a page of five items and
    /// stays quiet about a handful of distinct lookups.
    pub threshold: u32,
    /// Executions of one shape with one identical tuple that make a
    /// repeated query. Default 3: the same lookup twice can be a retry;
    /// three times is a missing cache or hoist.
    pub repeated_threshold: u32,
    /// Single-row executions of one INSERT/UPDATE/DELETE shape in one
    /// request, each its own round trip and with distinct parameters, that
    /// make an N+1 write. Default 5, as for reads: a form that saves a
    /// handful of rows one by one is not worth a finding, a loop over a
    /// page of items is.
    pub write_threshold: u32,
    /// SELECT shapes tracked per request; executions of further shapes are
    /// not analysed (counted as truncated).
    pub max_shapes: usize,
    /// Parameter tuples remembered per shape (beyond: still counted as
    /// distinct executions, without identity).
    pub max_tuples: usize,
    /// Earlier queries whose results are remembered for parent matching.
    pub max_result_sets: usize,
    /// Result value hashes remembered per earlier query.
    pub max_result_values: usize,
    /// Child executions whose parameters are matched against results.
    pub max_matched_children: usize,
}

impl Default for NPlusOneConfig {
    fn default() -> Self {
        NPlusOneConfig {
            threshold: 5,
            repeated_threshold: 3,
            write_threshold: 5,
            max_shapes: 256,
            max_tuples: 64,
            max_result_sets: 32,
            max_result_values: 512,
            max_matched_children: 64,
        }
    }
}

/// Fingerprint ids (and the 128-bit text hashes the analyzer keys its
/// per-text caches by) are already uniform hashes: hashing them again is
/// waste.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type IdMap<V> = HashMap<FingerprintId, V, BuildHasherDefault<IdHasher>>;

/// What per-request bookkeeping does with a statement kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeClass {
    /// A SELECT: a possible `n_plus_one` or `repeated_query` child.
    Read,
    /// INSERT, UPDATE, DELETE or MERGE: a possible `n_plus_one_write`.
    Write,
    /// Anything else: only counted for the query budget.
    Other,
}

impl ShapeClass {
    /// The class of a statement kind.
    pub fn of(kind: StatementKind) -> ShapeClass {
        match kind {
            StatementKind::Select => ShapeClass::Read,
            StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Merge => ShapeClass::Write,
            _ => ShapeClass::Other,
        }
    }
}

/// One execution, as the pipeline hands it to the detector.
#[derive(Debug, Clone, Copy)]
pub struct Execution<'a> {
    /// The statement's fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL (shared, never copied).
    pub normalized: &'a Arc<str>,
    /// What the statement does (only SELECTs are N+1 children, only
    /// writes N+1 write children).
    pub kind: StatementKind,
    /// Rows a write changed, from its command tag (`INSERT 0 1` → 1);
    /// `None` when the statement failed or is not a write.
    pub changed: Option<u64>,
    /// For a simple query holding several statements: which one this is.
    /// Statements after the first went in the same round trip.
    pub statement_index: u16,
    /// Hash of the whole parameter tuple (bind parameters, or the literal
    /// values of a simple query).
    pub tuple_hash: u64,
    /// Hashes of each parameter value (see [`crate::values::value_hash`]).
    pub param_hashes: &'a [u64],
    /// Hashes of values the execution returned.
    pub result_hashes: &'a [u64],
    /// Rows returned.
    pub rows: u64,
    /// Time it took.
    pub duration: Duration,
    /// When it started.
    pub at: SystemTime,
}

#[derive(Debug)]
struct Shape {
    normalized: Arc<str>,
    kind: StatementKind,
    first_seq: u32,
    executions: u32,
    /// Inline room for a few: most shapes run once or twice per request,
    /// and a request lives as long as its connection is busy (or idle up
    /// to the context timeout), so this is per-connection memory.
    tuples: SmallVec<[(u64, u32); 4]>,
    /// Executions whose tuple was not remembered (over the cap).
    untracked_tuples: u32,
    /// (child execution ordinal, parameter value hash).
    child_values: SmallVec<[(u16, u64); 4]>,
    rows_max: u64,
    total: Duration,
    first_at: SystemTime,
    last_at: SystemTime,
    /// Write bookkeeping (zero for other classes).
    writes: WriteStats,
    /// When the latest execution of the shape completed, to tell an
    /// execution that waited for it from one pipelined behind it.
    last_end: SystemTime,
}

/// How a write shape's executions went out, for `n_plus_one_write`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Executions that changed at most one row and were sent only after
    /// the previous execution of the shape had completed: one row per
    /// round trip.
    pub looped: u32,
    /// Executions sent while the previous one was still running (a
    /// pipeline or batch), or after the first statement of a
    /// multi-statement query.
    pub pipelined: u32,
    /// Executions that changed more than one row.
    pub set_based: u32,
}

#[derive(Debug)]
struct ResultSet {
    fingerprint: FingerprintId,
    normalized: Arc<str>,
    first_seq: u32,
    values: Vec<u64>,
}

/// Per-request N+1 state: the `S` of the request correlator.
#[derive(Debug, Default)]
pub struct RequestWork {
    seq: u32,
    /// Boxed: a shape is a few hundred bytes (its inline tuple lists), and
    /// most requests of an idle connection hold one or two, so the map's
    /// spare slots stay pointer-sized.
    shapes: IdMap<Box<Shape>>,
    results: Vec<ResultSet>,
    /// Executions not analysed because a cap was hit.
    pub truncated: u32,
}

/// A verdict for one shape in one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// `NPlusOne`, `RepeatedQuery` or `NPlusOneWrite`.
    pub kind: FindingKind,
    /// The repeated shape.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: Arc<str>,
    /// What the statement does (SELECT for reads; INSERT, UPDATE, ... for
    /// writes).
    pub statement: StatementKind,
    /// How the executions of a write went out (`NPlusOneWrite` only).
    pub writes: Option<WriteStats>,
    /// Executions in the request (N+1) or of the most repeated tuple
    /// (repeated query).
    pub count: u64,
    /// Distinct parameter tuples seen (at least; capped tuples count as
    /// distinct).
    pub distinct: u64,
    /// Time all executions of the shape took in this request.
    pub total_duration: Duration,
    /// Most rows one execution returned.
    pub rows_max: u64,
    /// The parent query, when its results provably fed the children.
    pub parent: Option<Parent>,
    /// First execution of the shape in the request.
    pub first_seen: SystemTime,
    /// Last execution.
    pub last_seen: SystemTime,
}

/// One statement shape of a request and how often it ran, for the query
/// budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeCount {
    /// The shape's fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: Arc<str>,
    /// Executions in the request.
    pub count: u64,
}

/// The query whose results fed an N+1's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    /// Its fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: Arc<str>,
    /// Children whose parameters were found among its results.
    pub matched: u32,
    /// Children checked.
    pub checked: u32,
}

impl RequestWork {
    /// Records one execution in the request.
    pub fn record(&mut self, e: &Execution<'_>, cfg: &NPlusOneConfig) {
        self.seq = self.seq.saturating_add(1);
        let seq = self.seq;
        self.record_child(e, seq, cfg);
        if !e.result_hashes.is_empty() {
            self.record_results(e, seq, cfg);
        }
    }

    fn record_child(&mut self, e: &Execution<'_>, seq: u32, cfg: &NPlusOneConfig) {
        if !self.shapes.contains_key(&e.fingerprint) && self.shapes.len() >= cfg.max_shapes {
            self.truncated = self.truncated.saturating_add(1);
            return;
        }
        let class = ShapeClass::of(e.kind);
        let end = e.at.checked_add(e.duration).unwrap_or(e.at);
        let shape = self.shapes.entry(e.fingerprint).or_insert_with(|| {
            Box::new(Shape {
                normalized: e.normalized.clone(),
                kind: e.kind,
                first_seq: seq,
                executions: 0,
                tuples: SmallVec::new(),
                untracked_tuples: 0,
                child_values: SmallVec::new(),
                rows_max: 0,
                total: Duration::ZERO,
                first_at: e.at,
                last_at: e.at,
                writes: WriteStats::default(),
                last_end: SystemTime::UNIX_EPOCH,
            })
        });
        let ordinal = shape.executions;
        shape.executions = shape.executions.saturating_add(1);
        if class == ShapeClass::Write {
            let w = &mut shape.writes;
            let waited = e.statement_index == 0 && e.at >= shape.last_end;
            match e.changed {
                Some(n) if n > 1 => w.set_based = w.set_based.saturating_add(1),
                _ if !waited => w.pipelined = w.pipelined.saturating_add(1),
                _ => w.looped = w.looped.saturating_add(1),
            }
        }
        shape.last_end = shape.last_end.max(end);
        if class == ShapeClass::Other {
            // Counted for the budget only: no tuples or values to match.
            return;
        }
        shape.rows_max = shape.rows_max.max(e.rows);
        shape.total += e.duration;
        shape.last_at = shape.last_at.max(e.at);
        match shape.tuples.iter().position(|(h, _)| *h == e.tuple_hash) {
            Some(i) => shape.tuples[i].1 = shape.tuples[i].1.saturating_add(1),
            None if shape.tuples.len() < cfg.max_tuples => shape.tuples.push((e.tuple_hash, 1)),
            None => shape.untracked_tuples = shape.untracked_tuples.saturating_add(1),
        }
        if (ordinal as usize) < cfg.max_matched_children {
            for &h in e.param_hashes.iter().take(4) {
                shape.child_values.push((ordinal as u16, h));
            }
        }
    }

    fn record_results(&mut self, e: &Execution<'_>, seq: u32, cfg: &NPlusOneConfig) {
        let set = match self
            .results
            .iter_mut()
            .position(|r| r.fingerprint == e.fingerprint)
        {
            Some(i) => &mut self.results[i],
            None => {
                if self.results.len() >= cfg.max_result_sets {
                    return;
                }
                if self.results.capacity() == 0 {
                    // Most requests keep one result set; the default first
                    // growth would reserve four.
                    self.results.reserve_exact(1);
                }
                self.results.push(ResultSet {
                    fingerprint: e.fingerprint,
                    normalized: e.normalized.clone(),
                    first_seq: seq,
                    values: Vec::new(),
                });
                self.results.last_mut().expect("just pushed")
            }
        };
        for &h in e.result_hashes {
            if set.values.len() >= cfg.max_result_values {
                break;
            }
            set.values.push(h);
        }
    }

    /// Decides, at the end of the request, which shapes were N+1s or
    /// repeated queries.
    pub fn evaluate(&self, cfg: &NPlusOneConfig) -> Vec<Detection> {
        let mut out = Vec::new();
        for (&fingerprint, shape) in &self.shapes {
            let distinct = shape.tuples.len() as u64 + u64::from(shape.untracked_tuples);
            let (kind, count) = match ShapeClass::of(shape.kind) {
                ShapeClass::Read => {
                    let most_repeated = shape.tuples.iter().map(|(_, n)| *n).max().unwrap_or(0);
                    if distinct >= u64::from(cfg.threshold) {
                        (FindingKind::NPlusOne, u64::from(shape.executions))
                    } else if most_repeated >= cfg.repeated_threshold {
                        (FindingKind::RepeatedQuery, u64::from(most_repeated))
                    } else {
                        continue;
                    }
                }
                ShapeClass::Write
                    if shape.writes.looped >= cfg.write_threshold
                        && distinct >= u64::from(cfg.write_threshold) =>
                {
                    (FindingKind::NPlusOneWrite, u64::from(shape.executions))
                }
                ShapeClass::Write | ShapeClass::Other => continue,
            };
            let parent = if kind == FindingKind::RepeatedQuery {
                None
            } else {
                self.find_parent(fingerprint, shape)
            };
            out.push(Detection {
                kind,
                fingerprint,
                normalized: shape.normalized.clone(),
                statement: shape.kind,
                writes: (kind == FindingKind::NPlusOneWrite).then_some(shape.writes),
                count,
                distinct,
                total_duration: shape.total,
                rows_max: shape.rows_max,
                parent,
                first_seen: shape.first_at,
                last_seen: shape.last_at,
            });
        }
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.fingerprint.0.cmp(&b.fingerprint.0))
        });
        out
    }

    /// Distinct statement shapes recorded in the request.
    pub fn shape_count(&self) -> usize {
        self.shapes.len()
    }

    /// The `n` shapes that ran most often in the request (ties: the one
    /// seen first), every statement kind counted; shapes past
    /// [`max_shapes`](NPlusOneConfig::max_shapes) are not among them
    /// ([`RequestWork::truncated`] says how many executions that left out).
    pub fn top_shapes(&self, n: usize) -> Vec<ShapeCount> {
        let mut shapes: Vec<(&FingerprintId, &Box<Shape>)> = self.shapes.iter().collect();
        shapes.sort_by(|a, b| {
            b.1.executions
                .cmp(&a.1.executions)
                .then(a.1.first_seq.cmp(&b.1.first_seq))
        });
        shapes
            .into_iter()
            .take(n)
            .map(|(&fingerprint, shape)| ShapeCount {
                fingerprint,
                normalized: shape.normalized.clone(),
                count: u64::from(shape.executions),
            })
            .collect()
    }

    fn find_parent(&self, child: FingerprintId, shape: &Shape) -> Option<Parent> {
        let checked = shape
            .child_values
            .iter()
            .map(|(ordinal, _)| *ordinal)
            .max()
            .map_or(0, |m| u32::from(m) + 1);
        if checked < 2 {
            return None;
        }
        let mut best: Option<Parent> = None;
        for set in &self.results {
            if set.fingerprint == child || set.first_seq >= shape.first_seq {
                continue;
            }
            let mut matched = 0u32;
            let mut last = None;
            for &(ordinal, h) in &shape.child_values {
                if last == Some(ordinal) {
                    continue;
                }
                if set.values.contains(&h) {
                    matched += 1;
                    last = Some(ordinal);
                }
            }
            if matched >= 2
                && matched * 2 >= checked
                && best.as_ref().is_none_or(|b| matched > b.matched)
            {
                best = Some(Parent {
                    fingerprint: set.fingerprint,
                    normalized: set.normalized.clone(),
                    matched,
                    checked,
                });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::value_hash;

    struct Req {
        work: RequestWork,
        cfg: NPlusOneConfig,
        sql: Vec<Arc<str>>,
    }

    fn req() -> Req {
        Req {
            work: RequestWork::default(),
            cfg: NPlusOneConfig::default(),
            sql: vec![
                Arc::from("select * from posts"),
                Arc::from("select * from users where id = ?"),
            ],
        }
    }

    impl Req {
        /// Runs shape `fp` with integer parameter `param`, returning `results`.
        fn run(&mut self, fp: u64, param: Option<i64>, results: &[i64]) {
            let params: Vec<u64> = param
                .map(|p| value_hash(p.to_string().as_bytes(), false))
                .into_iter()
                .collect();
            let res: Vec<u64> = results
                .iter()
                .map(|r| value_hash(r.to_string().as_bytes(), false))
                .collect();
            let e = Execution {
                fingerprint: FingerprintId(fp),
                normalized: &self.sql[(fp as usize) % 2],
                kind: StatementKind::Select,
                changed: None,
                statement_index: 0,
                tuple_hash: params.first().copied().unwrap_or(0),
                param_hashes: &params,
                result_hashes: &res,
                rows: results.len() as u64,
                duration: Duration::from_millis(1),
                at: SystemTime::UNIX_EPOCH,
            };
            self.work.record(&e, &self.cfg);
        }
    }

    #[test]
    fn loop_over_parent_rows_is_an_n_plus_one_with_its_parent() {
        let mut r = req();
        r.run(10, None, &[11, 12, 13, 14, 15, 16]);
        for author in 11..=16 {
            r.run(21, Some(author), &[author]);
        }
        let d = r.work.evaluate(&r.cfg);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].kind, d[0].count, d[0].distinct),
            (FindingKind::NPlusOne, 6, 6)
        );
        let p = d[0].parent.as_ref().expect("parent found");
        assert_eq!(p.fingerprint, FingerprintId(10));
        assert_eq!((p.matched, p.checked), (6, 6));
    }

    #[test]
    fn no_parent_is_named_without_evidence() {
        let mut r = req();
        r.run(10, None, &[1, 2, 3]);
        for id in 100..110 {
            r.run(21, Some(id), &[id]);
        }
        let d = r.work.evaluate(&r.cfg);
        assert_eq!(d[0].kind, FindingKind::NPlusOne);
        assert!(d[0].parent.is_none());
    }

    #[test]
    fn below_threshold_and_batched_queries_are_clean() {
        let mut r = req();
        for id in 0..4 {
            r.run(21, Some(id), &[id]);
        }
        r.run(22, Some(99), &[1, 2, 3, 4, 5, 6, 7]);
        assert!(r.work.evaluate(&r.cfg).is_empty());
    }

    #[test]
    fn identical_tuples_are_a_repeated_query() {
        let mut r = req();
        for _ in 0..4 {
            r.run(21, Some(7), &[7]);
        }
        let d = r.work.evaluate(&r.cfg);
        assert_eq!(
            (d[0].kind, d[0].count, d[0].distinct),
            (FindingKind::RepeatedQuery, 4, 1)
        );
    }

    #[test]
    fn caps_bound_memory() {
        let mut r = req();
        r.cfg.max_shapes = 2;
        for fp in 0..100 {
            r.run(fp, Some(fp as i64), &[1]);
        }
        assert_eq!(r.work.shapes.len(), 2);
        assert_eq!(r.work.truncated, 98);
        assert!(r.work.results.len() <= r.cfg.max_result_sets);
    }
}
