//! Slow queries: fingerprints whose executions take longer than the
//! latency threshold.
//!
//! Unlike the per-request detectors this one looks at a fingerprint's
//! executions over the whole run. [`SlowQueries::record`] keeps, per
//! fingerprint, exact counts (executions, executions at or over the
//! threshold, the slowest) and a compact latency histogram for the
//! percentiles the finding shows. [`SlowQueries::take`] turns the
//! fingerprints that qualify and ran since the last call into findings'
//! raw material ([`SlowQuery`]).
//!
//! # When a fingerprint is slow
//! - **Sustained**: at least [`min_executions`](SlowQueryConfig::min_executions)
//!   executions, a p95 (nearest rank, decided from exact counts) at or over
//!   [`threshold`](SlowQueryConfig::threshold), and at least two executions
//!   over it, so one hiccup among a handful (a checkpoint, a cold cache)
//!   is not a slow query. Warning; error when the p95 reaches
//!   [`single_execution`](SlowQueryConfig::single_execution).
//! - **One very slow execution**: any execution of at least
//!   [`single_execution`](SlowQueryConfig::single_execution) is reported
//!   even alone. When the p95 is fine it is an outlier (info).
//!
//! # What is measured, and what is not counted
//! The duration is the proxy's: from forwarding the statement's execution
//! to the server's completion message. It includes the network between
//! proxy and server, and the time the server waited for the client to read
//! a large result. Only SELECT, INSERT, UPDATE, DELETE, MERGE, EXECUTE and
//! cursor statements count: COPY runs at the client's pace, DDL and
//! maintenance (migrations, VACUUM, LOCK) are not the application's
//! queries, and transaction control and session settings are bookkeeping
//! (their waits, such as a COMMIT's flush, must not skew per-query
//! statistics). Executions cut short by the connection closing are not
//! counted; ones that ended in an error (a statement timeout) are.
//!
//! # Plans
//! The finding carries `details.plan`: the generic plan would come from an
//! EXPLAIN run with the client's rights over the catalog connection. That
//! is not fetched here: [`attach_plan`] is the seam where a plan (or the
//! reason there is none) goes into a finding.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::detect::n_plus_one::IdHasher;
use crate::finding::{Finding, Severity};
use crate::fingerprint::{FingerprintId, StatementKind};

/// Thresholds and caps of the slow-query detector (`[analyzer.slow_query]`).
///
/// Durations deserialize from milliseconds (`100`) or a string with a unit
/// (`"100ms"`, `"1s"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowQueryConfig {
    /// p95 latency of a fingerprint from which it is slow. Default 100 ms:
    /// a page that runs a few such queries already misses a 300 ms budget,
    /// while an indexed lookup takes well under a millisecond.
    #[serde(deserialize_with = "crate::correlation::duration_setting")]
    pub threshold: Duration,
    /// Executions a fingerprint needs before its p95 is judged. Default 3.
    pub min_executions: u64,
    /// One execution this slow is reported on its own (never less than
    /// `threshold`). Default 1 s: a user notices it, and no hiccup of a
    /// fast query lasts that long.
    #[serde(deserialize_with = "crate::correlation::duration_setting")]
    pub single_execution: Duration,
    /// Fingerprints whose latencies are tracked. When full, the ones never
    /// over the threshold are forgotten; if all were slow, new fingerprints
    /// are not tracked until the next time that frees room. Default 10,000
    /// (about 2 MB at most).
    pub max_fingerprints: usize,
}

impl Default for SlowQueryConfig {
    fn default() -> Self {
        SlowQueryConfig {
            threshold: Duration::from_millis(100),
            min_executions: 3,
            single_execution: Duration::from_secs(1),
            max_fingerprints: 10_000,
        }
    }
}

/// Whether executions of a statement kind count toward latency (see the
/// module docs).
pub fn is_measured(kind: StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Select
            | StatementKind::Insert
            | StatementKind::Update
            | StatementKind::Delete
            | StatementKind::Merge
            | StatementKind::Execute
            | StatementKind::Cursor
    )
}

/// Sub-buckets per power of two: a recorded latency is known to within
/// 1/16 of its value (the midpoint reported is within about 3 %).
const SUB_BUCKETS: u64 = 16;

/// A sparse log-linear histogram of latencies in microseconds: a sorted
/// list of (bucket, count). A fingerprint's latencies fall into a few
/// dozen buckets at most, so it stays small; it can never exceed the
/// number of buckets a `u64` of microseconds spans (under 1,000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: Vec<(u16, u32)>,
    total: u64,
}

impl LatencyHistogram {
    fn index(micros: u64) -> u16 {
        if micros < SUB_BUCKETS {
            return micros as u16;
        }
        let octave = 63 - u64::from(micros.leading_zeros());
        let shift = octave - 4;
        let sub = (micros >> shift) - SUB_BUCKETS;
        (SUB_BUCKETS + shift * SUB_BUCKETS + sub) as u16
    }

    /// The latency range `[low, high)` of a bucket, in microseconds.
    fn bounds(index: u16) -> (u64, u64) {
        let i = u64::from(index);
        if i < SUB_BUCKETS {
            return (i, i + 1);
        }
        let shift = (i - SUB_BUCKETS) / SUB_BUCKETS;
        let sub = (i - SUB_BUCKETS) % SUB_BUCKETS;
        (
            (SUB_BUCKETS + sub) << shift,
            (SUB_BUCKETS + sub + 1) << shift,
        )
    }

    /// Adds one latency.
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let index = Self::index(micros);
        match self.buckets.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(1),
            Err(at) => self.buckets.insert(at, (index, 1)),
        }
        self.total += 1;
    }

    /// Latencies recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (0 < q ≤ 1) by nearest rank, as the midpoint of
    /// its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for &(index, n) in &self.buckets {
            seen += u64::from(n);
            if seen >= rank {
                let (low, high) = Self::bounds(index);
                return Some(Duration::from_micros(low + (high - low) / 2));
            }
        }
        None
    }
}

/// The latency record of one fingerprint.
#[derive(Debug)]
struct Latencies {
    normalized: Arc<str>,
    table: Option<String>,
    database: Option<Arc<str>>,
    executions: u64,
    /// Executions at or over the threshold.
    over: u64,
    /// `over` when the fingerprint was last reported, so each finding
    /// counts only new slow executions as occurrences.
    over_reported: u64,
    max: Duration,
    total: Duration,
    histogram: LatencyHistogram,
    first_slow: Option<SystemTime>,
    last_slow: Option<SystemTime>,
    /// Executed since the last [`SlowQueries::take`].
    dirty: bool,
}

/// What the slow-query detector reports about one fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowQuery {
    /// The fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: Arc<str>,
    /// The first table it names, as written.
    pub table: Option<String>,
    /// The database it was first seen in.
    pub database: Option<Arc<str>>,
    /// How bad (see the module docs).
    pub severity: Severity,
    /// Slow executions since the previous report of this fingerprint.
    pub new_slow_executions: u64,
    /// First and latest execution at or over the threshold (or of the
    /// single very slow one).
    pub first_slow: SystemTime,
    /// See `first_slow`.
    pub last_slow: SystemTime,
    /// The evidence.
    pub details: SlowQueryDetails,
}

/// `details` of a `slow_query` finding. Times in milliseconds, rounded to
/// microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowQueryDetails {
    /// Executions measured so far in this run.
    pub count: u64,
    /// Executions at or over the threshold.
    pub slow_count: u64,
    /// Median latency (to within about 3 %).
    pub p50_ms: f64,
    /// 95th percentile latency, nearest rank (to within about 3 %).
    pub p95_ms: f64,
    /// Slowest execution (exact).
    pub max_ms: f64,
    /// Mean latency (exact).
    pub mean_ms: f64,
    /// The threshold in force.
    pub threshold_ms: f64,
    /// `p95` when the fingerprint is slow at its 95th percentile,
    /// `single_execution` when only its slowest execution made it.
    pub reason: String,
    /// How the latency was measured.
    pub measured: String,
    /// The statement's generic plan (EXPLAIN without ANALYZE, with the
    /// client's rights); `null` until [`attach_plan`] puts one in.
    pub plan: Option<serde_json::Value>,
    /// Why `plan` is empty, or where it came from.
    pub plan_note: String,
}

/// How a plan request for a slow query ended, for [`attach_plan`].
#[derive(Debug, Clone, PartialEq)]
pub enum PlanOutcome {
    /// The plan, as EXPLAIN (FORMAT JSON) returned it.
    Fetched(serde_json::Value),
    /// Why there is no plan (no rights, the statement does not parse, the
    /// catalog connection failed, ...).
    Unavailable(String),
}

/// What `details.plan_note` says until plans are fetched.
pub const PLAN_NOT_FETCHED: &str = "plans are not fetched yet: run EXPLAIN on this query (as the \
     application's role) to see its generic plan";

/// Puts a plan (or the reason there is none) into a `slow_query`
/// finding's details; other findings are left alone. The seam for fetching
/// plans over the catalog connection: the caller runs EXPLAIN for
/// `finding.query` in `finding.database` with the client's rights and
/// hands the outcome here before the finding is stored.
pub fn attach_plan(finding: &mut Finding, plan: PlanOutcome) {
    if finding.kind != crate::finding::FindingKind::SlowQuery {
        return;
    }
    let (plan, note) = match plan {
        PlanOutcome::Fetched(p) => (
            p,
            "generic plan: EXPLAIN without ANALYZE, run with the client's rights".to_string(),
        ),
        PlanOutcome::Unavailable(reason) => (serde_json::Value::Null, reason),
    };
    finding.details.insert("plan".into(), plan);
    finding.details.insert("plan_note".into(), note.into());
}

/// Per-fingerprint latencies of the run (see the module docs).
#[derive(Debug, Default)]
pub struct SlowQueries {
    config: SlowQueryConfig,
    latencies: HashMap<FingerprintId, Latencies, BuildHasherDefault<IdHasher>>,
    /// Executions of fingerprints not tracked because the table was full
    /// of slow ones.
    pub untracked: u64,
}

/// One measured execution, as the pipeline hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Timed<'a> {
    /// The statement's fingerprint.
    pub fingerprint: FingerprintId,
    /// Its normalized SQL.
    pub normalized: &'a Arc<str>,
    /// Its first table, as written.
    pub table: Option<&'a str>,
    /// The database it ran in.
    pub database: Option<&'a Arc<str>>,
    /// How long it took.
    pub duration: Duration,
    /// When it started.
    pub at: SystemTime,
}

impl SlowQueries {
    /// A detector with the given settings.
    pub fn new(config: SlowQueryConfig) -> Self {
        SlowQueries {
            config,
            latencies: HashMap::default(),
            untracked: 0,
        }
    }

    /// Records one execution of a measured statement ([`is_measured`]).
    pub fn record(&mut self, t: &Timed<'_>) {
        if !self.latencies.contains_key(&t.fingerprint) && !self.make_room() {
            self.untracked += 1;
            return;
        }
        let l = self
            .latencies
            .entry(t.fingerprint)
            .or_insert_with(|| Latencies {
                normalized: t.normalized.clone(),
                table: t.table.map(str::to_string),
                database: t.database.cloned(),
                executions: 0,
                over: 0,
                over_reported: 0,
                max: Duration::ZERO,
                total: Duration::ZERO,
                histogram: LatencyHistogram::default(),
                first_slow: None,
                last_slow: None,
                dirty: false,
            });
        l.executions += 1;
        l.total += t.duration;
        l.max = l.max.max(t.duration);
        l.histogram.record(t.duration);
        l.dirty = true;
        if t.duration >= self.config.threshold {
            l.over += 1;
            l.first_slow = Some(l.first_slow.map_or(t.at, |f| f.min(t.at)));
            l.last_slow = Some(l.last_slow.map_or(t.at, |f| f.max(t.at)));
        }
    }

    /// Frees room for one more fingerprint if the table is full, by
    /// forgetting every fingerprint that never ran over the threshold.
    fn make_room(&mut self) -> bool {
        if self.latencies.len() < self.config.max_fingerprints.max(1) {
            return true;
        }
        self.latencies.retain(|_, l| l.over > 0);
        self.latencies.len() < self.config.max_fingerprints.max(1)
    }

    /// The fingerprints that ran since the last call and are slow.
    pub fn take(&mut self) -> Vec<SlowQuery> {
        let config = &self.config;
        let mut out = Vec::new();
        for (&fingerprint, l) in &mut self.latencies {
            if !std::mem::take(&mut l.dirty) {
                continue;
            }
            let Some(verdict) = judge(config, l) else {
                continue;
            };
            let new_slow_executions = l.over - l.over_reported;
            l.over_reported = l.over;
            let (Some(first_slow), Some(last_slow)) = (l.first_slow, l.last_slow) else {
                continue;
            };
            out.push(SlowQuery {
                fingerprint,
                normalized: l.normalized.clone(),
                table: l.table.clone(),
                database: l.database.clone(),
                severity: verdict.severity,
                new_slow_executions,
                first_slow,
                last_slow,
                details: details(config, l, verdict.reason),
            });
        }
        out.sort_by_key(|s| s.fingerprint.0);
        out
    }
}

struct Verdict {
    severity: Severity,
    reason: &'static str,
}

/// Decides from exact counts (see the module docs).
fn judge(config: &SlowQueryConfig, l: &Latencies) -> Option<Verdict> {
    let single_execution = config.single_execution.max(config.threshold);
    let n = l.executions;
    // Nearest rank: the p95 is the value at rank ceil(0.95 n), so it is at
    // or over the threshold when at least n - ceil(0.95 n) + 1 are.
    let needed = n - (n * 95).div_ceil(100) + 1;
    let sustained = n >= config.min_executions && l.over >= needed.max(2);
    if sustained {
        let p95 = l.histogram.quantile(0.95).unwrap_or(l.max);
        let severity = if p95 >= single_execution {
            Severity::Error
        } else {
            Severity::Warning
        };
        return Some(Verdict {
            severity,
            reason: "p95",
        });
    }
    (l.max >= single_execution).then_some(Verdict {
        severity: Severity::Info,
        reason: "single_execution",
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn details(config: &SlowQueryConfig, l: &Latencies, reason: &str) -> SlowQueryDetails {
    // A bucket's midpoint can overshoot the slowest execution in it.
    let quantile = |q| ms(l.histogram.quantile(q).unwrap_or(l.max).min(l.max));
    let mean = l.total / u32::try_from(l.executions.max(1)).unwrap_or(u32::MAX);
    SlowQueryDetails {
        count: l.executions,
        slow_count: l.over,
        p50_ms: quantile(0.5),
        p95_ms: quantile(0.95),
        max_ms: ms(l.max),
        mean_ms: ms(mean),
        threshold_ms: ms(config.threshold),
        reason: reason.to_string(),
        measured: "at the proxy, from forwarding each execution to the server's completion \
                   message (includes the server waiting for the client to read large results)"
            .to_string(),
        plan: None,
        plan_note: PLAN_NOT_FETCHED.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut SlowQueries, fp: u64, millis: &[u64]) {
        let sql: Arc<str> = Arc::from("select pg_sleep($1)");
        for (i, &m) in millis.iter().enumerate() {
            s.record(&Timed {
                fingerprint: FingerprintId(fp),
                normalized: &sql,
                table: None,
                database: None,
                duration: Duration::from_millis(m),
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64),
            });
        }
    }

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = LatencyHistogram::default();
        for m in 1..=100u64 {
            h.record(Duration::from_millis(m));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p95 = h.quantile(0.95).unwrap().as_secs_f64() * 1000.0;
        assert!((p50 - 50.0).abs() / 50.0 < 0.04, "{p50}");
        assert!((p95 - 95.0).abs() / 95.0 < 0.04, "{p95}");
        assert_eq!(h.len(), 100);
        // Buckets are contiguous and ordered.
        for i in 0..200u16 {
            assert_eq!(
                LatencyHistogram::bounds(i).1,
                LatencyHistogram::bounds(i + 1).0
            );
            let (low, _) = LatencyHistogram::bounds(i);
            assert_eq!(LatencyHistogram::index(low), i);
        }
        assert!(LatencyHistogram::default().quantile(0.5).is_none());
    }

    #[test]
    fn sustained_slowness_is_a_warning_with_timings() {
        let mut s = SlowQueries::new(SlowQueryConfig::default());
        run(&mut s, 1, &[150, 152, 151, 155]);
        let got = s.take();
        assert_eq!(got.len(), 1);
        let q = &got[0];
        assert_eq!(q.severity, Severity::Warning);
        assert_eq!(q.new_slow_executions, 4);
        assert_eq!(q.details.count, 4);
        assert_eq!(q.details.max_ms, 155.0);
        assert!((q.details.p50_ms - 151.0).abs() < 5.0, "{:?}", q.details);
        assert!(q.details.p95_ms <= 155.0 && q.details.p95_ms > 145.0);
        assert_eq!(q.details.reason, "p95");
        assert_eq!(q.details.plan, None);
        // Nothing new, nothing to report; new slow runs count once each.
        assert!(s.take().is_empty());
        run(&mut s, 1, &[160]);
        assert_eq!(s.take()[0].new_slow_executions, 1);
    }

    #[test]
    fn fast_lookups_and_single_hiccups_are_clean() {
        let mut s = SlowQueries::new(SlowQueryConfig::default());
        run(&mut s, 1, &[1; 200]);
        // Two executions are not enough to judge.
        run(&mut s, 2, &[150, 150]);
        // One hiccup among a handful.
        run(&mut s, 3, &[2, 2, 180, 2]);
        // 2 slow of 60: under 5 %.
        let mut mostly_fast = vec![3; 58];
        mostly_fast.extend([300, 300]);
        run(&mut s, 4, &mostly_fast);
        assert!(s.take().is_empty());
        // Four slow of 62: the 59th of 62 sorted latencies is slow.
        run(&mut s, 4, &[300, 300]);
        assert_eq!(s.take().len(), 1);
    }

    #[test]
    fn one_very_slow_execution_is_an_outlier_and_a_slow_p95_an_error() {
        let mut s = SlowQueries::new(SlowQueryConfig::default());
        run(&mut s, 1, &[1500]);
        run(&mut s, 2, &[1200, 1300, 1250]);
        let got = s.take();
        let sev: Vec<(u64, Severity, &str)> = got
            .iter()
            .map(|q| (q.fingerprint.0, q.severity, q.details.reason.as_str()))
            .collect();
        assert_eq!(
            sev,
            [
                (1, Severity::Info, "single_execution"),
                (2, Severity::Error, "p95")
            ]
        );
    }

    #[test]
    fn only_slow_fingerprints_survive_a_full_table() {
        let config = SlowQueryConfig {
            max_fingerprints: 3,
            ..Default::default()
        };
        let mut s = SlowQueries::new(config);
        run(&mut s, 1, &[200, 200, 200]);
        run(&mut s, 2, &[1]);
        run(&mut s, 3, &[1]);
        run(&mut s, 4, &[1]);
        assert_eq!(s.latencies.len(), 2);
        assert!(s.latencies.contains_key(&FingerprintId(1)));
        run(&mut s, 5, &[1]);
        run(&mut s, 6, &[1]);
        assert!(s.latencies.len() <= 3);
        assert_eq!(s.take().len(), 1);
    }

    #[test]
    fn plans_go_into_slow_query_details_only() {
        let mut f = crate::finding::Finding {
            id: "0".repeat(16),
            kind: crate::finding::FindingKind::SlowQuery,
            severity: Severity::Warning,
            fingerprint: "0".repeat(16),
            query: "SELECT 1".into(),
            table: None,
            columns: vec![],
            count: None,
            occurrences: 1,
            request: None,
            parent: None,
            rows: None,
            suggestion: None,
            database: None,
            details: serde_json::Map::new(),
            first_seen: time::OffsetDateTime::UNIX_EPOCH,
            last_seen: time::OffsetDateTime::UNIX_EPOCH,
        };
        attach_plan(
            &mut f,
            PlanOutcome::Fetched(serde_json::json!([{"Plan": {}}])),
        );
        assert!(f.details["plan"].is_array());
        attach_plan(&mut f, PlanOutcome::Unavailable("no rights".into()));
        assert!(f.details["plan"].is_null());
        assert_eq!(f.details["plan_note"], "no rights");
        f.kind = crate::finding::FindingKind::NPlusOne;
        f.details.clear();
        attach_plan(&mut f, PlanOutcome::Unavailable("x".into()));
        assert!(f.details.is_empty());
    }
}
