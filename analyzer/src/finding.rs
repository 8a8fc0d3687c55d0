//! Findings: what qproxy tells developers, in the shape of DESIGN's JSON
//! report. Every detector produces [`Finding`]s; the store and every report
//! format consume them.
//!
//! A finding's [`Finding::id`] is stable across runs and machines: it hashes
//! what makes the problem *the same problem* (kind, fingerprint, table and
//! columns, route, parent), never counts or times, so baselines and SARIF
//! `partialFingerprints` can match it.
//!
//! # Table names
//! [`Finding::table`] is always `schema.table` as the database's catalog
//! names it once the finding leaves the analyzer. The kinds made from
//! traffic (`n_plus_one`, `repeated_query`, `n_plus_one_write`,
//! `unbounded_select`, `slow_query`) often happen before their database's
//! catalog has loaded, so their **id hashes the table as the statement
//! wrote it** (`orders`, or `app.orders`), and the name they show is
//! qualified when they are flushed: an id never depends on whether the
//! catalog had arrived, and a baseline written on a run where it had not
//! still matches. When the name cannot be qualified (the catalog is
//! unavailable), the finding keeps the written name and says why in
//! `details.table_unresolved` ([`TABLE_UNRESOLVED`]); a later sighting that
//! resolved it replaces both when the two merge. The index advisor's
//! kinds are only made with the catalog at hand: their table is qualified
//! from the start, and their id hashes the qualified name.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use xxhash_rust::xxh3::Xxh3;

/// The kinds of finding. New kinds are added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// One SELECT shape run many times in one request with distinct
    /// parameters.
    NPlusOne,
    /// The same query with identical parameters run repeatedly in one request.
    RepeatedQuery,
    /// A WHERE/JOIN predicate on a large table that no index serves.
    UnindexedFilter,
    /// An ORDER BY on a large table that no index serves.
    UnindexedSort,
    /// A SELECT with no LIMIT that returns many rows.
    UnboundedSelect,
    /// One INSERT/UPDATE/DELETE shape run many times in one request with
    /// distinct parameters, a round trip each: the write side of an N+1.
    NPlusOneWrite,
    /// A fingerprint whose executions exceed the latency threshold.
    SlowQuery,
    /// One request ran more statements than the query budget allows.
    TooManyQueries,
    /// A request held a transaction open while the application sent
    /// nothing.
    IdleInTransaction,
    /// A predicate wraps an indexed column (function, cast, arithmetic,
    /// leading-wildcard LIKE) so the index cannot serve it.
    NonSargableFilter,
    /// A large OFFSET on a large table: every page reads and discards the
    /// rows before it.
    OffsetPagination,
    /// A foreign key no index leads with, on a large referencing table,
    /// exercised by the traffic (DELETE or key UPDATE of the referenced
    /// table, or a join on the key).
    UnindexedForeignKey,
}

impl FindingKind {
    /// Every kind, in report order.
    pub const ALL: [FindingKind; 12] = [
        FindingKind::NPlusOne,
        FindingKind::RepeatedQuery,
        FindingKind::UnindexedFilter,
        FindingKind::UnindexedSort,
        FindingKind::UnboundedSelect,
        FindingKind::NPlusOneWrite,
        FindingKind::SlowQuery,
        FindingKind::TooManyQueries,
        FindingKind::IdleInTransaction,
        FindingKind::NonSargableFilter,
        FindingKind::OffsetPagination,
        FindingKind::UnindexedForeignKey,
    ];

    /// The name used in JSON, metrics labels and `--fail-on`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::NPlusOne => "n_plus_one",
            FindingKind::RepeatedQuery => "repeated_query",
            FindingKind::UnindexedFilter => "unindexed_filter",
            FindingKind::UnindexedSort => "unindexed_sort",
            FindingKind::UnboundedSelect => "unbounded_select",
            FindingKind::NPlusOneWrite => "n_plus_one_write",
            FindingKind::SlowQuery => "slow_query",
            FindingKind::TooManyQueries => "too_many_queries",
            FindingKind::IdleInTransaction => "idle_in_transaction",
            FindingKind::NonSargableFilter => "non_sargable_filter",
            FindingKind::OffsetPagination => "offset_pagination",
            FindingKind::UnindexedForeignKey => "unindexed_foreign_key",
        }
    }

    /// Whether a finding's `details` describe its worst sighting as a
    /// whole (the top shapes of the worst request, the timings behind the
    /// largest count), so a merge takes them from the sighting with the
    /// larger `count` instead of key by key from the latest.
    pub fn details_follow_count(self) -> bool {
        matches!(
            self,
            FindingKind::NPlusOneWrite
                | FindingKind::SlowQuery
                | FindingKind::TooManyQueries
                | FindingKind::IdleInTransaction
        )
    }

    /// Parses a kind name as [`FindingKind::as_str`] writes it.
    pub fn parse(s: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Should be fixed.
    Warning,
    /// Hurts now.
    Error,
}

impl Severity {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// The request a finding was seen in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestRef {
    /// Request id (from a tag or `SET qproxy.request_id`), or a synthetic
    /// context id for fallback grouping.
    pub id: Option<String>,
    /// Route label (`route`, or `controller#action`).
    pub route: Option<String>,
    /// How executions were grouped into this request: `comment`,
    /// `set_variable`, `application_name`, `transaction` or `idle_gap`.
    pub correlation: Option<String>,
}

/// The parent query of an N+1: the query whose results fed the children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// Parent fingerprint (16 hex digits).
    pub fingerprint: String,
    /// Parent's normalized SQL.
    pub query: String,
}

/// Rows returned per execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RowStats {
    /// Most rows one execution returned.
    pub max: u64,
}

/// One finding, as the JSON report shows it. Fields that do not apply to a
/// kind are `None` (serialized as `null`) or empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable id (16 hex digits); see [`finding_id`].
    pub id: String,
    /// What kind of problem.
    pub kind: FindingKind,
    /// How bad.
    pub severity: Severity,
    /// Fingerprint of the offending statement (16 hex digits).
    pub fingerprint: String,
    /// The statement's normalized SQL (placeholders only, never values).
    pub query: String,
    /// `schema.table` the finding is about, when one table is.
    pub table: Option<String>,
    /// Columns involved (filter/sort columns, or N+1 parameter columns).
    pub columns: Vec<String>,
    /// Worst per-request execution count (N+1, repeated query, N+1 write),
    /// statements of the worst request (too many queries), executions
    /// measured (slow query), or the longest idle time in milliseconds
    /// (idle in transaction).
    pub count: Option<u64>,
    /// How often the finding was seen (requests, or executions for
    /// per-statement kinds).
    pub occurrences: u64,
    /// The request it was seen in (the worst one).
    pub request: Option<RequestRef>,
    /// The N+1 parent, when one could be shown.
    pub parent: Option<ParentRef>,
    /// Rows returned per execution.
    pub rows: Option<RowStats>,
    /// What to do about it: prose, DDL, or both.
    pub suggestion: Option<String>,
    /// Database the statement ran in.
    pub database: Option<String>,
    /// Kind-specific evidence (e.g. hypopg cost before/after, why no parent
    /// was named). Additive; consumers must ignore keys they do not know.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// First time seen.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Last time seen.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

/// `details` key of a finding whose table is named as the statement wrote
/// it because the catalog could not qualify it; the value says why.
pub const TABLE_UNRESOLVED: &str = "table_unresolved";

/// `details` keys that describe the request a per-request finding was
/// seen in: how its statements were grouped, and so how far the grouping
/// is one request (`high`, `medium`, `low`). They go with
/// [`Finding::request`], the worst sighting's.
pub const REQUEST_DETAILS: [&str; 2] = ["grouping", "confidence"];

/// Kind-specific evidence as the `details` map: each kind defines a serde
/// struct for its details and serializes it here, so the keys cannot drift
/// between the detector, the store and the reports.
pub fn details_map<T: Serialize>(details: &T) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(details) {
        Ok(serde_json::Value::Object(map)) => map,
        // A struct of plain fields always serializes to an object.
        _ => serde_json::Map::new(),
    }
}

/// The stable finding id: XXH3-64 over the identifying parts, each
/// length-prefixed so no two different tuples hash the same input.
pub fn finding_id(
    kind: FindingKind,
    fingerprint: &str,
    table: Option<&str>,
    columns: &[String],
    route: Option<&str>,
    parent_fingerprint: Option<&str>,
) -> String {
    let mut h = Xxh3::new();
    let mut part = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    part(kind.as_str());
    part(fingerprint);
    part(table.unwrap_or(""));
    part(&columns.join(","));
    part(route.unwrap_or(""));
    part(parent_fingerprint.unwrap_or(""));
    format!("{:016x}", h.digest())
}

impl Finding {
    /// Recomputes [`Finding::id`] from the identifying fields. (The
    /// per-request, unbounded and slow-query kinds hash the table as the
    /// statement names it, before catalog qualification, so for those this
    /// matches only while `table` is as written. A `too_many_queries`
    /// finding is one per route: its `fingerprint`, the request's most
    /// frequent shape, is not part of its identity.)
    pub fn compute_id(&self) -> String {
        let fingerprint = match self.kind {
            FindingKind::TooManyQueries => "",
            _ => &self.fingerprint,
        };
        finding_id(
            self.kind,
            fingerprint,
            self.table.as_deref(),
            &self.columns,
            self.request.as_ref().and_then(|r| r.route.as_deref()),
            self.parent.as_ref().map(|p| p.fingerprint.as_str()),
        )
    }

    /// Folds a later sighting of the same finding into this one: counts
    /// add up, maxima are kept, the worst request and severity win.
    pub fn merge(&mut self, later: &Finding) {
        debug_assert_eq!(self.id, later.id);
        self.occurrences += later.occurrences;
        let later_is_worse = later.count > self.count;
        if later_is_worse {
            self.count = later.count;
            self.request = later.request.clone();
        }
        self.severity = self.severity.max(later.severity);
        match (&mut self.rows, later.rows) {
            (Some(a), Some(b)) => a.max = a.max.max(b.max),
            (None, Some(b)) => self.rows = Some(b),
            _ => {}
        }
        self.first_seen = self.first_seen.min(later.first_seen);
        self.last_seen = self.last_seen.max(later.last_seen);
        if self.suggestion.is_none() {
            self.suggestion = later.suggestion.clone();
        }
        let unresolved = self.details.contains_key(TABLE_UNRESOLVED);
        let later_unresolved = later.details.contains_key(TABLE_UNRESOLVED);
        if self.kind.details_follow_count() {
            // The suggestion quotes the same figures as the details.
            if later_is_worse || self.details.is_empty() {
                self.details = later.details.clone();
                if later.suggestion.is_some() {
                    self.suggestion = later.suggestion.clone();
                }
            }
        } else {
            let confidence_changes =
                later_is_worse && later.details.get("confidence") != self.details.get("confidence");
            for (k, v) in &later.details {
                if !later_is_worse && REQUEST_DETAILS.contains(&k.as_str()) {
                    continue;
                }
                self.details.insert(k.clone(), v.clone());
            }
            if later_is_worse {
                for k in REQUEST_DETAILS {
                    if !later.details.contains_key(k) {
                        self.details.remove(k);
                    }
                }
            }
            if confidence_changes && later.suggestion.is_some() {
                // The suggestion says how far the grouping can be trusted.
                self.suggestion = later.suggestion.clone();
            }
        }
        // A table the catalog qualified beats the name as written.
        match (unresolved, later_unresolved) {
            (true, false) => {
                if later.table.is_some() {
                    self.table = later.table.clone();
                }
                self.details.remove(TABLE_UNRESOLVED);
            }
            (false, true) => {
                self.details.remove(TABLE_UNRESOLVED);
            }
            _ => {}
        }
    }
}

/// The coverage summary every report starts with, so a blind run cannot
/// look clean (DESIGN non-negotiable 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    /// Query events analysed.
    pub queries: u64,
    /// Distinct fingerprints seen.
    pub fingerprints: u64,
    /// Request contexts ended.
    pub requests: u64,
    /// Share of queries correlated to a request by a tag, SET or
    /// application_name (not by a fallback).
    pub correlated_fraction: f64,
    /// Statements sqlparser could not parse (fingerprinted by token digest).
    pub parse_failures: u64,
    /// Events dropped because the analyzer queue was full.
    pub dropped_events: u64,
    /// Index suggestions hypopg could have checked but did not: the
    /// verification queue was full, planning the statement as its client
    /// was refused, or the check failed. Each such finding says why in
    /// `details.hypopg`. Absent from stores and reports written before it
    /// existed (read as 0).
    #[serde(default)]
    pub verifications_skipped: u64,
    /// `available` or `unavailable`.
    pub catalog: String,
    /// Finding occurrences the proxy could not get into the store (it
    /// stayed unwritable past the in-memory cap, or past the final flush),
    /// so the findings above undercount. Absent in stores and baselines
    /// written before it existed, hence the default.
    #[serde(default)]
    pub findings_lost: u64,
    /// Statements the proxy forwarded without analysing them: those past
    /// the per-message statement cap of a simple Query, and those in a
    /// message too large for the proxy's budget for held bytes.
    #[serde(default)]
    pub statements_not_analysed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_separates_fields() {
        let a = finding_id(
            FindingKind::NPlusOne,
            "00ff",
            Some("public.users"),
            &["id".into()],
            Some("users#show"),
            None,
        );
        // Pinned: a change here breaks every user's baseline.
        assert_eq!(
            a,
            finding_id(
                FindingKind::NPlusOne,
                "00ff",
                Some("public.users"),
                &["id".into()],
                Some("users#show"),
                None
            )
        );
        assert_eq!(a.len(), 16);
        let b = finding_id(
            FindingKind::NPlusOne,
            "00ff",
            Some("public.user"),
            &["sid".into()],
            Some("users#show"),
            None,
        );
        assert_ne!(a, b);
        let c = finding_id(
            FindingKind::RepeatedQuery,
            "00ff",
            Some("public.users"),
            &["id".into()],
            Some("users#show"),
            None,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn kinds_round_trip() {
        for k in FindingKind::ALL {
            assert_eq!(FindingKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
