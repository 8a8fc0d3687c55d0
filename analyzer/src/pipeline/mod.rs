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
//!
//! # Layout
//! - `mod.rs`: the [`Analyzer`] and what it answers (findings, summary,
//!   counters); `config.rs`: its settings.
//! - `query.rs`: one query event through the pipeline; `cursors.rs`: SQL
//!   cursors whose FETCHes add up to one execution.
//! - `findings.rs`: the detectors' typed verdicts → [`Finding`]s, the one
//!   place a finding is assembled; `grouping.rs`: what a finding says
//!   about its request; `suggest.rs`: the wording of fixes.
//! - `indexes.rs` (with `catalogs.rs`, `verify_queue.rs`): the index
//!   advisor's catalogs, statement shapes and queued hypopg checks (the
//!   checks themselves run in the proxy, through
//!   [`crate::explain::hypopg`]).
//! - `tables.rs`: findings waiting for their catalog to qualify a table;
//!   `book.rs`: findings gathered between flushes; `facts.rs`,
//!   `request_tags.rs`, `live.rs`: per-shape and per-text caches and the
//!   live view.

mod book;
mod catalogs;
mod config;
mod cursors;
pub mod facts;
mod findings;
mod grouping;
pub mod indexes;
pub mod live;
mod query;
mod request_tags;
pub mod suggest;
mod tables;
mod verify_queue;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::Instant;

use crate::correlation::{CorrelationSource, Correlator, EndedRequest};
use crate::detect::idle_in_transaction::IdleTransactions;
use crate::detect::n_plus_one::{IdHasher, RequestWork};
use crate::detect::slow_query::SlowQueries;
use crate::detect::too_many_queries;
use crate::event::{QueryEvent, SessionEvent};
use crate::finding::{Finding, Summary};
use crate::fingerprint::{FingerprintCache, FingerprintId, StatementKind};
use crate::routes::{RouteStats, RouteTable, ROUTE_SHAPES};
use crate::source::SourceLocation;

pub use book::FindingsBook;
use cursors::Cursors;
use facts::StatementFacts;
use indexes::IndexAdvisor;
use live::LiveTally;
use request_tags::RequestTagsCache;
use tables::TableNames;
pub use tables::CATALOG_WAIT;
pub use verify_queue::VerificationConfig;

pub use config::{AnalyzerConfig, DEFAULT_MAX_STATEMENTS_PER_TEXT};

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
                    self.book.add(findings::idle_finding(&gap));
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
            self.book.add(findings::slow_finding(&slow, table));
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
                let facts = self.facts.get(&detection.fingerprint).map(Arc::as_ref);
                let finding = findings::detection_finding(&detection, &request.request, facts);
                self.book.add(finding);
            }
            if let Some(over) = too_many_queries::evaluate(
                &self.config.too_many_queries,
                request.request.source,
                request.work_statements,
                &request.state,
            ) {
                self.book.add(findings::budget_finding(
                    &over,
                    &request.request,
                    request.started_at,
                    request.ended_at,
                ));
            }
        }
    }
}

/// The text of the statement `fp` fingerprints in the event's (possibly
/// multi-statement) text: the range the same split that numbered it found,
/// so the statement the facts, index advice and OFFSET are read from is
/// always the one the fingerprint is of.
fn statement_text<'a>(q: &'a QueryEvent, fp: &crate::fingerprint::Fingerprint) -> &'a str {
    q.sql.get(fp.span.clone()).unwrap_or(&q.sql)
}
