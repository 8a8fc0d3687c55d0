//! The analysis pipeline: each [`QueryEvent`] is fingerprinted and its
//! request tags read (both cached by text), assigned to a request, and fed
//! to the detectors; ended requests are judged for N+1s (reads and writes)
//! and the query budget, and counted in their route's figures; idle
//! transactions are judged as statements arrive and connections close,
//! slow queries at each flush; findings gather in a book the caller flushes
//! to the store, each with where its statement was issued and the trace of
//! its request when tags said so.
//!
//! The pipeline is synchronous and single-threaded: the proxy runs it on
//! its analysis task, fed by the bounded event queue, so nothing here is
//! ever on the forwarding path.

mod book;
mod catalogs;
mod cursors;
pub mod facts;
pub mod indexes;
pub mod live;
mod request_tags;
pub mod suggest;
mod tables;
mod verdicts;
mod verify_queue;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Deserialize;
use smallvec::SmallVec;
use time::OffsetDateTime;
use xxhash_rust::xxh3::Xxh3;

use crate::correlation::{
    CorrelationConfig, CorrelationSource, Correlator, EndedRequest, RequestInfo, StatementRole,
};
use crate::detect::idle_in_transaction::{self, IdleInTransactionConfig, IdleTransactions};
use crate::detect::n_plus_one::{
    Detection, Execution, IdHasher, NPlusOneConfig, RequestWork, ShapeClass,
};
use crate::detect::n_plus_one_write;
use crate::detect::slow_query::{self, SlowQueries, SlowQueryConfig, Timed};
use crate::detect::too_many_queries::{self, TooManyQueriesConfig};
use crate::detect::unbounded::{self, UnboundedConfig};
use crate::detect::unindexed::{OffsetPaginationConfig, UnindexedConfig};
use crate::event::{Outcome, QueryEvent, SessionEvent};
use crate::finding::{
    details_map, finding_id, Finding, FindingKind, ParentRef, RequestRef, RowStats, Severity,
    Summary,
};
use crate::fingerprint::{Fingerprint, FingerprintCache, FingerprintId, StatementKind};
use crate::offset::{magnitude, top_level_offset, OffsetClause};
use crate::routes::{RouteStats, RouteTable, DEFAULT_MAX_ROUTES, ROUTE_SHAPES};
use crate::source::SourceLocation;

pub use book::FindingsBook;
use cursors::Cursors;
use facts::{statement_facts, StatementFacts};
use indexes::IndexAdvisor;
use live::LiveTally;
use request_tags::RequestTagsCache;
use tables::TableNames;
pub use tables::CATALOG_WAIT;
pub use verify_queue::VerificationConfig;

/// Settings of the whole pipeline (the `[analyzer]` part of the config).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerConfig {
    /// Request correlation.
    pub correlation: CorrelationConfig,
    /// N+1 and repeated-query detection.
    pub n_plus_one: NPlusOneConfig,
    /// Unbounded-SELECT detection.
    pub unbounded: UnboundedConfig,
    /// Unindexed filter and sort detection; its table-size thresholds also
    /// apply to non-sargable filters, offset pagination and unindexed
    /// foreign keys.
    pub unindexed: UnindexedConfig,
    /// Which OFFSETs count as offset pagination.
    pub offset_pagination: OffsetPaginationConfig,
    /// Slow-query detection.
    pub slow_query: SlowQueryConfig,
    /// The per-request query budget.
    pub too_many_queries: TooManyQueriesConfig,
    /// Idle-in-transaction detection.
    pub idle_in_transaction: IdleInTransactionConfig,
    /// How much hypopg verification (and catalog loading) runs.
    pub verification: VerificationConfig,
    /// Distinct SQL texts whose fingerprints (and, separately, request
    /// tags) are cached.
    pub fingerprint_cache: usize,
    /// Distinct findings held between two flushes.
    pub max_pending_findings: usize,
    /// Fingerprints whose statement facts are cached (and, separately,
    /// whose last source location and trace id are remembered).
    pub max_statement_facts: usize,
    /// Routes whose statements per request are tracked; requests of later
    /// routes are counted under `other`.
    pub max_routes: usize,
    /// Statements of one SQL text (a simple Query) that are fingerprinted;
    /// events for later ones are not expected. Set by the proxy from its
    /// `--max-statements-per-message`, not from the `[analyzer]` section.
    #[serde(skip, default = "default_max_statements_per_text")]
    pub max_statements_per_text: usize,
}

fn default_max_statements_per_text() -> usize {
    DEFAULT_MAX_STATEMENTS_PER_TEXT
}

/// Default for [`AnalyzerConfig::max_statements_per_text`].
pub const DEFAULT_MAX_STATEMENTS_PER_TEXT: usize = 1_000;

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            correlation: CorrelationConfig::default(),
            n_plus_one: NPlusOneConfig::default(),
            unbounded: UnboundedConfig::default(),
            unindexed: UnindexedConfig::default(),
            offset_pagination: OffsetPaginationConfig::default(),
            slow_query: SlowQueryConfig::default(),
            too_many_queries: TooManyQueriesConfig::default(),
            idle_in_transaction: IdleInTransactionConfig::default(),
            verification: VerificationConfig::default(),
            fingerprint_cache: 10_000,
            max_pending_findings: 10_000,
            max_statement_facts: 10_000,
            max_routes: DEFAULT_MAX_ROUTES,
            max_statements_per_text: DEFAULT_MAX_STATEMENTS_PER_TEXT,
        }
    }
}

/// Counters for the coverage summary.
#[derive(Debug, Clone, Default)]
pub struct PipelineStats {
    /// Query events analysed.
    pub queries: u64,
    /// Query events whose statement did not parse (fallback fingerprint).
    pub parse_failures: u64,
    /// Requests ended that ran at least one statement of real work.
    pub requests: u64,
    /// Distinct fingerprints seen (capped at [`MAX_COUNTED_FINGERPRINTS`];
    /// beyond, the count stops growing).
    pub fingerprints: u64,
    /// Query events whose statement index did not match the text (the
    /// text held fewer statements than the server answered for).
    pub unmatched_statements: u64,
}

/// What one processed query event was, for the proxy's per-query metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    /// The statement's fingerprint.
    pub fingerprint: FingerprintId,
    /// What the statement does.
    pub kind: StatementKind,
    /// Time from sending the statement to its completion message.
    pub duration: std::time::Duration,
    /// Rows returned.
    pub rows: u64,
    /// The statement ended with an error (ErrorResponse or a failed COPY).
    pub error: bool,
    /// The statement did not parse (fallback fingerprint).
    pub fallback: bool,
    /// The statement was assigned to a request the application named
    /// (comment, SET variable or application_name).
    pub correlated: bool,
}

/// Distinct fingerprints counted for the summary.
pub const MAX_COUNTED_FINGERPRINTS: usize = 1_000_000;

/// The analysis state of one proxy process.
pub struct Analyzer {
    config: AnalyzerConfig,
    fingerprints: FingerprintCache,
    /// Request tags of the texts in `fingerprints`' key space.
    tags: RequestTagsCache,
    correlator: Correlator<RequestWork>,
    facts: HashMap<FingerprintId, Arc<StatementFacts>, BuildHasherDefault<IdHasher>>,
    seen: HashSet<FingerprintId, BuildHasherDefault<IdHasher>>,
    book: FindingsBook,
    stats: PipelineStats,
    indexes: IndexAdvisor,
    slow: SlowQueries,
    idle: IdleTransactions,
    requests_by_source: [u64; CORRELATION_SOURCES.len()],
    /// Statements per request by route, for reports and baselines.
    routes: RouteTable,
    /// Where each fingerprint was last issued and in which trace, for the
    /// findings made from fingerprints later (unindexed, slow, N+1 shapes).
    origins: HashMap<FingerprintId, Origin, BuildHasherDefault<IdHasher>>,
    /// Time per fingerprint and statements per request by route, for the
    /// proxy's live view.
    live: LiveTally,
    /// The text of the last query event and its cache key: the events of
    /// one multi-statement Query share one `Arc`, and hashing a megabyte
    /// of text once per statement would make such a Query quadratic. The
    /// event's text hold is kept with it (the text is still in memory) and
    /// both are let go at the next tick.
    last_text: Option<(Arc<str>, Option<crate::event::TextHold>, u128)>,
    /// Findings whose table waits for its database's catalog.
    tables: TableNames,
    /// [`Analyzer::finish`] ran: nothing waits any more.
    finished: bool,
    /// SQL cursors being fetched, whose rows add up to one execution.
    cursors: Cursors,
}

/// How the rows an unbounded candidate returned were read.
#[derive(Debug, Clone, Copy)]
enum Returned<'a> {
    /// By one execution, with the origin its tags gave.
    Execution(&'a Origin),
    /// Through a SQL cursor's FETCHes, added up.
    Cursor,
}

/// Where a statement shape was last issued: its tags' source location and
/// the trace id of the request it ran in.
#[derive(Debug, Clone, Default)]
struct Origin {
    source: Option<Arc<SourceLocation>>,
    trace_id: Option<Arc<str>>,
}

/// Every correlation source, in the order
/// [`Analyzer::requests_by_source`] reports them.
pub const CORRELATION_SOURCES: [CorrelationSource; 5] = [
    CorrelationSource::Comment,
    CorrelationSource::SetVariable,
    CorrelationSource::ApplicationName,
    CorrelationSource::Transaction,
    CorrelationSource::IdleGap,
];

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("stats", &self.stats)
            .field("pending_findings", &self.book.len())
            .finish_non_exhaustive()
    }
}

impl Analyzer {
    /// A pipeline with the given settings.
    pub fn new(config: AnalyzerConfig) -> Self {
        Analyzer {
            fingerprints: FingerprintCache::new(config.fingerprint_cache)
                .with_statement_cap(config.max_statements_per_text),
            tags: RequestTagsCache::new(config.fingerprint_cache),
            correlator: Correlator::new(config.correlation.clone()),
            facts: HashMap::default(),
            seen: HashSet::default(),
            book: FindingsBook::new(config.max_pending_findings),
            stats: PipelineStats::default(),
            indexes: IndexAdvisor::new(config.unindexed.clone(), config.verification.clone()),
            slow: SlowQueries::new(config.slow_query.clone()),
            idle: IdleTransactions::new(
                config.idle_in_transaction.clone(),
                config.correlation.max_contexts,
            ),
            requests_by_source: [0; CORRELATION_SOURCES.len()],
            routes: RouteTable::new(config.max_routes),
            origins: HashMap::default(),
            live: LiveTally::default(),
            last_text: None,
            tables: TableNames::new(config.max_pending_findings),
            finished: false,
            cursors: Cursors::default(),
            config,
        }
    }

    /// Processes one event from the proxy; for a query, says what it was.
    pub fn process(&mut self, event: &SessionEvent, now: Instant) -> Option<Processed> {
        let processed = match event {
            SessionEvent::Query(q) => self.query(q, now),
            SessionEvent::Closed {
                connection_id,
                at,
                tx_status,
            } => {
                self.correlator.connection_closed(*connection_id);
                for cursor in self.cursors.close(*connection_id, None, false) {
                    self.cursor_ended(cursor);
                }
                if let Some(gap) = self.idle.closed(*connection_id, *at, *tx_status) {
                    self.book.add(verdicts::idle_finding(&gap));
                }
                None
            }
        };
        self.judge_ended();
        processed
    }

    /// Requests ended so far that ran at least one statement of real work,
    /// by how they were formed (in [`CORRELATION_SOURCES`] order).
    pub fn requests_by_source(&self) -> [(CorrelationSource, u64); CORRELATION_SOURCES.len()] {
        std::array::from_fn(|i| (CORRELATION_SOURCES[i], self.requests_by_source[i]))
    }

    /// Query events assigned to a request the application named.
    pub fn queries_correlated(&self) -> u64 {
        self.correlator.stats().correlated
    }

    /// Whether any database's catalog is loaded.
    pub fn catalog_available(&self) -> bool {
        self.indexes.catalog_available()
    }

    /// Ends requests that went idle and refreshes old catalogs; call
    /// periodically.
    pub fn tick(&mut self, now: Instant) {
        self.last_text = None;
        self.correlator.expire_idle(now);
        self.judge_ended();
        self.indexes.tick(now);
    }

    /// The unindexed-filter/sort part: catalog and hypopg requests and
    /// results go through it.
    pub fn indexes(&mut self) -> &mut IndexAdvisor {
        &mut self.indexes
    }

    /// Index suggestions waiting for a hypopg check or being checked.
    pub fn verifications_queued(&self) -> usize {
        self.indexes.verifications_queued()
    }

    /// Index suggestions hypopg could have checked but did not, by reason.
    pub fn verifications_skipped(
        &self,
    ) -> [(crate::detect::unindexed::SkipReason, u64);
           crate::detect::unindexed::SkipReason::ALL.len()] {
        self.indexes.verifications_skipped()
    }

    /// Ends every open request (shutdown) and judges them. Findings
    /// still waiting for a catalog go with the next
    /// [`Analyzer::take_findings`], qualified or not.
    pub fn finish(&mut self) {
        self.finished = true;
        self.last_text = None;
        for cursor in self.cursors.close_all() {
            self.cursor_ended(cursor);
        }
        self.correlator.finish_all();
        self.judge_ended();
    }

    /// Findings gathered since the last call (deltas for the store), their
    /// tables schema-qualified; a finding whose database's catalog is
    /// still loading waits for it (see [`tables`](self::tables)).
    pub fn take_findings(&mut self) -> Vec<Finding> {
        for f in self.indexes.take_findings() {
            self.book.add(f);
        }
        for slow in self.slow.take() {
            let table = slow.table.as_deref().map(str::to_string);
            self.book.add(verdicts::slow_finding(&slow, table));
        }
        let mut fresh = self.book.take();
        for f in &mut fresh {
            self.add_origin(f);
        }
        self.tables
            .settle(&self.indexes, fresh, Instant::now(), self.finished)
    }

    /// Findings held back until their database's catalog arrives.
    pub fn findings_awaiting_catalog(&self) -> usize {
        self.tables.waiting()
    }

    /// The run's per-route figures when a request of a named route ended
    /// since the last call: what the store replaces the run's rows with.
    pub fn take_routes(&mut self) -> Option<Vec<RouteStats>> {
        self.routes.take_changed()
    }

    /// Fills in where the finding's statement was issued and the trace it
    /// ran in, from what the shape's tags said last, unless the detector
    /// already knew (the worst request's trace, the execution's own tags).
    fn add_origin(&self, f: &mut Finding) {
        let Some(origin) = u64::from_str_radix(&f.fingerprint, 16)
            .ok()
            .and_then(|id| self.origins.get(&FingerprintId(id)))
        else {
            return;
        };
        if let (None, Some(source)) = (f.details.get(crate::finding::SOURCE_KEY), &origin.source) {
            f.set_source(source);
        }
        if let (None, Some(trace)) = (f.trace_id(), &origin.trace_id) {
            f.set_trace_id(trace);
        }
    }

    /// Time per fingerprint and statements per request by route, for the
    /// proxy's live view.
    pub fn live(&self) -> &LiveTally {
        &self.live
    }

    /// Counters so far.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The coverage summary; the caller supplies what only it knows.
    pub fn summary(&self, dropped_events: u64) -> Summary {
        let catalog_available = self.indexes.catalog_available();
        Summary {
            queries: self.stats.queries,
            fingerprints: self.stats.fingerprints,
            requests: self.stats.requests,
            correlated_fraction: self.correlator.stats().correlated_fraction(),
            parse_failures: self.stats.parse_failures,
            dropped_events,
            verifications_skipped: self.verifications_skipped().iter().map(|(_, n)| n).sum(),
            catalog: if catalog_available {
                "available"
            } else {
                "unavailable"
            }
            .to_string(),
            // Only the store's writer knows; it fills this in as it writes.
            findings_lost: 0,
            // Only the proxy knows what it forwarded without analysis.
            statements_not_analysed: 0,
        }
    }

    fn query(&mut self, q: &QueryEvent, now: Instant) -> Option<Processed> {
        self.stats.queries += 1;
        // One hash of the text keys both per-text caches.
        let text_key = match &self.last_text {
            Some((text, _, key)) if Arc::ptr_eq(text, &q.sql) => *key,
            _ => {
                let key = FingerprintCache::text_key(&q.sql);
                self.last_text = Some((q.sql.clone(), q.text_hold.clone(), key));
                key
            }
        };
        let all = self.fingerprints.get_keyed(text_key, &q.sql);
        let Some(fp) = all
            .iter()
            .find(|f| f.statement_index == q.statement_index)
            .or_else(|| all.last())
        else {
            self.stats.unmatched_statements += 1;
            return None;
        };
        if fp.statement_index != q.statement_index {
            self.stats.unmatched_statements += 1;
        }
        if fp.fallback {
            self.stats.parse_failures += 1;
        }
        if self.seen.len() < MAX_COUNTED_FINGERPRINTS && self.seen.insert(fp.id) {
            self.stats.fingerprints += 1;
        }
        self.live
            .record_execution(fp.id, &fp.normalized, fp.kind, q.duration);
        let facts = self.facts_for(fp, q);
        let tags = self.tags.get(text_key, &q.sql);
        let source = tags.and_then(|t| t.source.clone());
        let observed = self.correlator.observe(q, tags, now);
        let origin = Origin {
            source,
            trace_id: observed.request.trace_id.clone(),
        };
        if origin.source.is_some() || origin.trace_id.is_some() {
            if self.origins.len() >= self.config.max_statement_facts
                && !self.origins.contains_key(&fp.id)
            {
                // Bounded like the facts cache: start over.
                self.origins.clear();
            }
            self.origins.insert(fp.id, origin.clone());
        }
        let processed = Processed {
            fingerprint: fp.id,
            kind: fp.kind,
            duration: q.duration,
            rows: q.rows,
            error: matches!(
                q.outcome,
                crate::event::Outcome::Error { .. } | crate::event::Outcome::CopyFailed
            ),
            fallback: fp.fallback,
            correlated: observed.request.source.is_correlated(),
        };
        if observed.role == StatementRole::Normal {
            let mut params: SmallVec<[u64; 4]> = SmallVec::new();
            let tuple_hash = match q.params_hash {
                Some(h) => {
                    params.extend(q.param_hashes.iter().flatten().copied());
                    h
                }
                None => {
                    params.extend(fp.literal_hashes.iter().copied());
                    let mut h = Xxh3::new();
                    for l in &fp.literal_hashes {
                        h.update(&l.to_le_bytes());
                    }
                    h.digest()
                }
            };
            let changed = match (&q.outcome, ShapeClass::of(fp.kind)) {
                (Outcome::Complete { tag }, ShapeClass::Write) => rows_changed(tag),
                _ => None,
            };
            // A SELECT whose WITH clause writes is no read N+1 child, and
            // its command tag counts the rows it returned, not the rows it
            // changed: only the query budget counts it.
            let kind = if facts.modifies {
                StatementKind::Other
            } else {
                fp.kind
            };
            let execution = Execution {
                fingerprint: fp.id,
                normalized: &fp.normalized,
                kind,
                changed,
                statement_index: q.statement_index,
                tuple_hash,
                param_hashes: &params,
                result_hashes: &q.result_hashes,
                rows: q.rows,
                duration: q.duration,
                at: q.started_at,
            };
            observed.state.record(&execution, &self.config.n_plus_one);
            if slow_query::is_measured(fp.kind)
                && !matches!(q.outcome, Outcome::Aborted | Outcome::CopyFailed)
            {
                self.slow.record(&Timed {
                    fingerprint: fp.id,
                    normalized: &fp.normalized,
                    table: fp.tables.first().map(String::as_str),
                    database: q.database.as_ref(),
                    duration: q.duration,
                    at: q.started_at,
                });
            }
        }
        // Every statement, bookkeeping included: the COMMIT after an idle
        // gap is where the gap ends.
        let statement = idle_in_transaction::Statement {
            connection_id: q.connection_id,
            fingerprint: fp.id,
            normalized: &fp.normalized,
            kind: fp.kind,
            locking_read: facts.locking,
            cte_write: facts.modifies,
            completed: matches!(q.outcome, Outcome::Complete { .. }),
            statement_index: q.statement_index,
            tx_status: q.tx_status,
            started_at: q.started_at,
            ended_at: q.started_at.checked_add(q.duration).unwrap_or(q.started_at),
        };
        let request = observed.request;
        if let Some(gap) = self
            .idle
            .observe(&statement, request.id, || verdicts::request_labels(request))
        {
            self.book.add(verdicts::idle_finding(&gap));
        }
        self.check_unbounded(
            fp,
            &facts,
            q.database.as_ref(),
            q.rows,
            q.started_at,
            Returned::Execution(&origin),
        );
        self.follow_cursor(fp, q, now);
        if let Some(db) = &q.database {
            if fp.kind == StatementKind::Ddl {
                self.indexes.schema_changed(db, now);
            } else if !fp.fallback
                && matches!(
                    fp.kind,
                    StatementKind::Select
                        | StatementKind::Update
                        | StatementKind::Delete
                        | StatementKind::Insert
                )
                && !fp.tables.is_empty()
            {
                let execution = indexes::Execution {
                    database: db,
                    fingerprint: fp.id,
                    normalized: &fp.normalized,
                    user: q.user.as_ref(),
                    at: to_offset(q.started_at),
                };
                self.indexes
                    .executed(execution, || statement_text(q, fp), now);
                if facts.offset {
                    self.check_offset(db, fp, q);
                }
            }
        }
        Some(processed)
    }

    fn facts_for(&mut self, fp: &Fingerprint, q: &QueryEvent) -> Arc<StatementFacts> {
        self.facts_for_text(fp, statement_text(q, fp), q.database.as_ref())
    }

    fn facts_for_text(
        &mut self,
        fp: &Fingerprint,
        text: &str,
        database: Option<&Arc<str>>,
    ) -> Arc<StatementFacts> {
        if let Some(f) = self.facts.get(&fp.id) {
            return f.clone();
        }
        let mut facts = if fp.kind == StatementKind::Select && !fp.fallback {
            statement_facts(text)
        } else {
            StatementFacts::default()
        };
        facts.table = fp.tables.first().cloned();
        facts.database = database.cloned();
        let facts = Arc::new(facts);
        if self.facts.len() >= self.config.max_statement_facts {
            // Crude but bounded: start over rather than track recency.
            self.facts.clear();
        }
        self.facts.insert(fp.id, facts.clone());
        facts
    }

    /// Rates one execution of `fp` that returned `rows`; `cursor`: the rows
    /// of a SQL cursor's FETCHes, added up.
    fn check_unbounded(
        &mut self,
        fp: &Fingerprint,
        facts: &StatementFacts,
        database: Option<&Arc<str>>,
        rows: u64,
        started_at: SystemTime,
        returned: Returned<'_>,
    ) {
        if !facts.parsed
            || !unbounded::is_candidate(
                fp.kind == StatementKind::Select,
                fp.has_limit,
                facts.aggregate_only,
                facts.exists_only,
                &fp.tables,
            )
        {
            return;
        }
        let Some(severity) = self.config.unbounded.severity(rows) else {
            return;
        };
        // Qualified at flush time (see `tables`).
        let table = fp.tables.first().cloned();
        let fingerprint = fp.id.to_string();
        let at = to_offset(started_at);
        // The id uses the table as the statement names it, so it does not
        // change when the catalog (which qualifies the name) arrives.
        let mut finding = Finding {
            id: finding_id(
                FindingKind::UnboundedSelect,
                &fingerprint,
                fp.tables.first().map(String::as_str),
                &[],
                None,
                None,
            ),
            kind: FindingKind::UnboundedSelect,
            severity,
            fingerprint,
            query: fp.normalized.to_string(),
            table,
            columns: Vec::new(),
            count: None,
            occurrences: 1,
            request: None,
            parent: None,
            rows: Some(RowStats { max: rows }),
            suggestion: Some(format!(
                "This SELECT has no LIMIT and returned {rows} rows in one execution: paginate it (LIMIT with keyset pagination on an indexed column), or aggregate in the database if only a summary is needed."
            )),
            database: database.map(|d| d.to_string()),
            details: serde_json::Map::new(),
            first_seen: at,
            last_seen: at,
        };
        finding.details.insert(
            "rows_threshold".into(),
            self.config.unbounded.info_rows.into(),
        );
        if let Returned::Cursor = returned {
            finding.details.insert(
                "fetched".into(),
                "through a SQL cursor: the rows of all its FETCHes".into(),
            );
        }
        // This very execution's origin, not the shape's latest.
        if let Returned::Execution(origin) = returned {
            if let Some(source) = &origin.source {
                finding.set_source(source);
            }
            if let Some(trace) = &origin.trace_id {
                finding.set_trace_id(trace);
            }
        }
        self.book.add(finding);
    }

    /// Reads this execution's OFFSET (bound, or a literal in its text),
    /// compares it with the threshold and hands on only its order of
    /// magnitude (see [`crate::offset`]).
    fn check_offset(&mut self, db: &Arc<str>, fp: &Fingerprint, q: &QueryEvent) {
        let fingerprint = fp.id;
        let offset = q
            .offset
            .or_else(|| match top_level_offset(statement_text(q, fp)) {
                Some(OffsetClause::Literal(v)) => Some(v),
                _ => None,
            });
        let Some(offset) = offset else {
            return;
        };
        if let Some(severity) = self.config.offset_pagination.severity(offset) {
            self.indexes.large_offset(
                db,
                fingerprint,
                magnitude(offset),
                severity,
                to_offset(q.started_at),
            );
        }
    }

    fn judge_ended(&mut self) {
        let ended: Vec<EndedRequest<RequestWork>> = self.correlator.drain_ended().collect();
        for request in ended {
            if request.work_statements > 0 {
                self.stats.requests += 1;
                if let Some(i) = CORRELATION_SOURCES
                    .iter()
                    .position(|s| *s == request.request.source)
                {
                    self.requests_by_source[i] += 1;
                }
                // Only requests the application named have a route worth
                // a figure (see crate::routes).
                if let (true, Some(route)) = (
                    request.request.source.is_correlated(),
                    &request.request.route,
                ) {
                    self.routes.record(
                        route,
                        request.work_statements,
                        &request.state.top_shapes(ROUTE_SHAPES),
                    );
                }
                self.live
                    .record_request(request.request.route.as_ref(), request.work_statements);
            }
            for detection in request.state.evaluate(&self.config.n_plus_one) {
                let finding = self.detection_finding(&detection, &request.request);
                self.book.add(finding);
            }
            if let Some(over) = too_many_queries::evaluate(
                &self.config.too_many_queries,
                request.request.source,
                request.work_statements,
                &request.state,
            ) {
                self.book.add(verdicts::budget_finding(
                    &over,
                    &request.request,
                    request.started_at,
                    request.ended_at,
                ));
            }
        }
    }

    fn detection_finding(&self, d: &Detection, request: &RequestInfo) -> Finding {
        let facts = self.facts.get(&d.fingerprint);
        let columns: Vec<String> = facts
            .map(|f| f.equality_columns.clone())
            .unwrap_or_default();
        let framework = verdicts::framework_of(request);
        let suggestion = suggest::for_detection(d, &columns, framework);
        let route = request.route.as_deref().map(str::to_string);
        let fingerprint = d.fingerprint.to_string();
        let parent = d.parent.as_ref().map(|p| ParentRef {
            fingerprint: p.fingerprint.to_string(),
            query: p.normalized.to_string(),
        });
        // The id uses the table as the statement names it (stable whether or
        // not the catalog had qualified it yet); the name shown is
        // qualified at flush time (see `tables`).
        let written = facts.and_then(|f| f.table.as_deref());
        let table = written.map(str::to_string);
        let id = finding_id(
            d.kind,
            &fingerprint,
            written,
            &columns,
            route.as_deref(),
            parent.as_ref().map(|p| p.fingerprint.as_str()),
        );
        let mut severity = match (d.kind, d.count) {
            (FindingKind::NPlusOneWrite, n) => n_plus_one_write::severity(n),
            (FindingKind::NPlusOne, n) if n >= 25 => Severity::Error,
            (FindingKind::NPlusOne, _) => Severity::Warning,
            (_, n) if n >= 10 => Severity::Warning,
            _ => Severity::Info,
        };
        let mut details = serde_json::Map::new();
        details.insert("distinct_parameters".into(), d.distinct.into());
        details.insert(
            "total_duration_ms".into(),
            serde_json::Value::from(
                (d.total_duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            ),
        );
        match &d.parent {
            Some(p) => {
                details.insert(
                    "parent_evidence".into(),
                    format!(
                        "{} of {} checked executions used values this query returned",
                        p.matched, p.checked
                    )
                    .into(),
                );
            }
            None if d.kind == FindingKind::NPlusOne => {
                details.insert(
                    "parent_evidence".into(),
                    "no earlier query in the request returned the parameter values these executions used".into(),
                );
            }
            None => {}
        }
        if let Some(note) = verdicts::grouping_note(request) {
            details.insert("grouping".into(), note.into());
        }
        if d.kind == FindingKind::NPlusOneWrite {
            details = details_map(&verdicts::write_details(d, request));
        }
        let mut suggestion = suggestion;
        verdicts::weigh_by_grouping(request, &mut severity, &mut details, &mut suggestion);
        let mut finding = Finding {
            id,
            kind: d.kind,
            severity,
            fingerprint,
            query: d.normalized.to_string(),
            table,
            columns,
            count: Some(d.count),
            occurrences: 1,
            request: Some(RequestRef {
                id: Some(
                    request
                        .request_id
                        .as_deref()
                        .or(request.trace_id.as_deref())
                        .map(str::to_string)
                        .unwrap_or_else(|| request.id.to_string()),
                ),
                route,
                correlation: Some(request.source.as_str().to_string()),
            }),
            parent,
            rows: Some(RowStats { max: d.rows_max }),
            suggestion: Some(suggestion),
            database: facts
                .and_then(|f| f.database.as_deref())
                .map(str::to_string),
            details,
            first_seen: to_offset(d.first_seen),
            last_seen: to_offset(d.last_seen),
        };
        if let Some(trace) = &request.trace_id {
            finding.set_trace_id(trace);
        }
        finding
    }
}

/// Rows a write changed, from its command tag (`INSERT 0 3`, `UPDATE 2`,
/// `DELETE 0`, `MERGE 1`): the last number.
fn rows_changed(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next()?.parse().ok()
}

/// The text of the statement `fp` fingerprints in the event's (possibly
/// multi-statement) text: the range the same split that numbered it found,
/// so the statement the facts, index advice and OFFSET are read from is
/// always the one the fingerprint is of.
fn statement_text<'a>(q: &'a QueryEvent, fp: &Fingerprint) -> &'a str {
    q.sql.get(fp.span.clone()).unwrap_or(&q.sql)
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Outcome, Protocol, TxStatus};

    fn statement(sql: &Arc<str>, index: u16, hold: Option<crate::event::TextHold>) -> SessionEvent {
        SessionEvent::Query(QueryEvent {
            connection_id: 1,
            sql: sql.clone(),
            statement_index: index,
            statement_name: None,
            prepared_at: None,
            protocol: Protocol::Simple,
            params_hash: None,
            param_hashes: SmallVec::new(),
            result_hashes: Vec::new(),
            offset: None,
            started_at: SystemTime::now(),
            duration: Duration::from_millis(1),
            rows: 1,
            outcome: Outcome::Complete {
                tag: "SELECT 1".into(),
            },
            tx_status: TxStatus::Idle,
            application_name: None,
            database: None,
            user: None,
            text_hold: hold,
        })
    }

    #[test]
    fn statements_of_one_text_are_analysed_up_to_the_cap() {
        let mut analyzer = Analyzer::new(AnalyzerConfig {
            max_statements_per_text: 3,
            ..AnalyzerConfig::default()
        });
        let sql: Arc<str> = Arc::from("SELECT 1; SELECT 2 FROM t; SELECT 3 FROM u; SELECT 4");
        let now = Instant::now();
        let kinds: Vec<_> = (0..3)
            .map(|i| analyzer.process(&statement(&sql, i, None), now).unwrap())
            .collect();
        assert_eq!(analyzer.stats().queries, 3);
        assert_eq!(analyzer.stats().unmatched_statements, 0);
        assert_eq!(analyzer.stats().fingerprints, 3);
        assert!(kinds.iter().all(|p| !p.fallback));
        // A later statement has no fingerprint of its own (the proxy never
        // sends one): counted as unmatched, not fingerprinted afresh.
        analyzer.process(&statement(&sql, 3, None), now);
        assert_eq!(analyzer.stats().unmatched_statements, 1);
        assert_eq!(analyzer.stats().fingerprints, 3);
    }

    #[test]
    fn a_large_texts_hold_is_kept_while_its_text_is_and_let_go_at_the_tick() {
        let mut analyzer = Analyzer::new(AnalyzerConfig::default());
        let sql: Arc<str> = Arc::from("SELECT 1; SELECT 2");
        let hold: crate::event::TextHold = Arc::new("charged");
        let now = Instant::now();
        for i in 0..2 {
            let event = statement(&sql, i, Some(hold.clone()));
            analyzer.process(&event, now);
        }
        // The analyzer still refers to the text, so it keeps the hold too.
        assert_eq!(Arc::strong_count(&hold), 2);
        assert_eq!(Arc::strong_count(&sql), 2);
        analyzer.tick(now);
        assert_eq!(Arc::strong_count(&hold), 1);
        assert_eq!(Arc::strong_count(&sql), 1);
    }
    #[test]
    fn a_statements_text_comes_from_the_split_that_numbered_it() {
        // Vertical tab: whitespace to the lexer (and to PostgreSQL 16+), so
        // the second statement is the SELECT, not the `\x0b` between.
        let sql: Arc<str> = Arc::from("SELECT 1;\x0b; SELECT a FROM t OFFSET 5; SELECT 2");
        let mut cache = FingerprintCache::default();
        let fps = cache.get(&sql);
        let texts: Vec<_> = fps
            .iter()
            .map(|fp| {
                let SessionEvent::Query(q) = statement(&sql, fp.statement_index, None) else {
                    unreachable!("a query event");
                };
                statement_text(&q, fp).trim().to_owned()
            })
            .collect();
        assert_eq!(texts, ["SELECT 1", "SELECT a FROM t OFFSET 5", "SELECT 2"]);
    }
}
