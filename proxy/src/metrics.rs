//! Prometheus metrics: one [`Metrics`] per process, owning its registry.
//!
//! Nothing here runs on the forwarding path. Per-query series are recorded
//! by the analysis task (it sees every event with its fingerprint);
//! counters that the relay and the store's writer thread already keep as
//! atomics ([`ServerStats`], [`EventStats`], [`WriterStats`]) are copied
//! into the registry when `/metrics` is scraped.
//!
//! # Which fingerprints get their own series
//! The first `top_k` distinct fingerprints the analysis task sees get
//! per-fingerprint series; every later fingerprint is counted under
//! `fingerprint="other"` with its real `statement` label. A series, once
//! exposed, is never deleted or relabelled, so the admitted set only grows
//! and memory is bounded by `top_k` (nothing is remembered about
//! fingerprints that were not admitted). Routes on request findings follow
//! the same rule with the same `top_k`, with `route="none"` for findings
//! whose request had no route. Label values are cut to
//! [`MAX_LABEL_BYTES`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use qproxy_analyzer::correlation::CorrelationSource;
use qproxy_analyzer::detect::unindexed::SkipReason;
use qproxy_analyzer::finding::{Finding, FindingKind};
use qproxy_analyzer::fingerprint::{FingerprintId, StatementKind};
use qproxy_analyzer::pipeline::{Analyzer, Processed};
use qproxy_analyzer::store::WriterStats;

use crate::events::EventStats;
use crate::stats::ServerStats;

/// Every metric family qproxy exports (dashboards and alert rules are
/// checked against this list).
pub const METRIC_NAMES: &[&str] = &[
    "qproxy_queries_total",
    "qproxy_query_duration_seconds",
    "qproxy_rows_returned",
    "qproxy_query_errors_total",
    "qproxy_findings_total",
    "qproxy_request_findings_total",
    "qproxy_client_connections",
    "qproxy_client_connections_accepted_total",
    "qproxy_upstream_errors_total",
    "qproxy_upstream_up",
    "qproxy_events_dropped_total",
    "qproxy_parse_failures_total",
    "qproxy_requests_total",
    "qproxy_queries_correlated_total",
    "qproxy_catalog_available",
    "qproxy_catalog_loads_total",
    "qproxy_verifications_skipped_total",
    "qproxy_verification_queue",
    "qproxy_background_connections_total",
    "qproxy_background_task_panics_total",
    "qproxy_untracked_executions_total",
    "qproxy_desynced_connections_total",
    "qproxy_findings_lost_total",
    "qproxy_store_write_failures_total",
    "qproxy_store_pending_findings",
    "qproxy_unread_messages_total",
    "qproxy_statements_not_analysed_total",
    "qproxy_held_bytes",
    "qproxy_messages_not_held_total",
    "qproxy_startup_evictions_total",
    "qproxy_build_info",
];

/// Longest label value exported; longer values are cut at a character
/// boundary.
pub const MAX_LABEL_BYTES: usize = 128;

/// Label value for everything outside the top K.
pub const OTHER: &str = "other";

/// Label value for request findings whose request had no route.
pub const NO_ROUTE: &str = "none";

/// Query latency buckets, in seconds: 100 µs to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Rows-returned buckets.
const ROWS_BUCKETS: &[f64] = &[
    0.0,
    1.0,
    10.0,
    100.0,
    1_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
];

/// Admits the first `cap` distinct keys; the rest map to "other". Admitted
/// keys stay admitted for the life of the process.
#[derive(Debug)]
pub struct LabelCap<K> {
    cap: usize,
    admitted: HashMap<K, ()>,
}

impl<K: std::hash::Hash + Eq> LabelCap<K> {
    /// Room for `cap` keys.
    pub fn new(cap: usize) -> Self {
        LabelCap {
            cap,
            admitted: HashMap::new(),
        }
    }

    /// Whether `key` has (or now gets) its own series.
    pub fn admit(&mut self, key: K) -> bool {
        if self.admitted.contains_key(&key) {
            return true;
        }
        if self.admitted.len() >= self.cap {
            return false;
        }
        self.admitted.insert(key, ());
        true
    }

    /// Keys admitted so far.
    pub fn len(&self) -> usize {
        self.admitted.len()
    }

    /// Whether nothing was admitted yet.
    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty()
    }
}

/// `value` cut to at most [`MAX_LABEL_BYTES`] at a character boundary.
pub fn cap_label(value: &str) -> &str {
    if value.len() <= MAX_LABEL_BYTES {
        return value;
    }
    let mut end = MAX_LABEL_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The four per-query series of one (fingerprint, statement) pair.
#[derive(Clone)]
struct QuerySeries {
    queries: IntCounter,
    duration: Histogram,
    rows: Histogram,
    errors: IntCounter,
}

/// What only the analysis task touches: which fingerprints and routes are
/// admitted, and handles to their series.
struct PerQuery {
    fingerprints: HashMap<FingerprintId, QuerySeries>,
    other: HashMap<StatementKind, QuerySeries>,
    routes: LabelCap<String>,
    requests_seen: [u64; 5],
    skipped_seen: [u64; SkipReason::ALL.len()],
}

/// Analysis-side counters mirrored by cumulative value.
struct Synced {
    accepted: u64,
    upstream_errors: u64,
    dropped: u64,
    untracked: u64,
    desynced: u64,
    findings_lost: u64,
    store_write_failures: u64,
    unread: u64,
    not_analysed: u64,
    not_held: u64,
    startup_evictions: u64,
}

/// The process's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    top_k: usize,
    queries: IntCounterVec,
    query_duration: HistogramVec,
    rows_returned: HistogramVec,
    query_errors: IntCounterVec,
    findings: IntCounterVec,
    request_findings: IntCounterVec,
    client_connections: IntGauge,
    connections_accepted: IntCounter,
    upstream_errors: IntCounter,
    upstream_up: IntGauge,
    events_dropped: IntCounter,
    parse_failures: IntCounter,
    requests: IntCounterVec,
    queries_correlated: IntCounter,
    catalog_available: IntGauge,
    catalog_loads: IntCounterVec,
    verifications_skipped: IntCounterVec,
    verification_queue: IntGauge,
    background_connections: IntCounterVec,
    background_panics: IntCounterVec,
    untracked: IntCounter,
    desynced: IntCounter,
    findings_lost: IntCounter,
    store_write_failures: IntCounter,
    store_pending: IntGauge,
    unread: IntCounter,
    not_analysed: IntCounter,
    held_bytes: IntGauge,
    not_held: IntCounter,
    startup_evictions: IntCounter,
    per_query: Mutex<PerQuery>,
    synced: Mutex<Synced>,
    server_stats: Arc<ServerStats>,
    event_stats: Arc<EventStats>,
    /// The findings store's writer, when there is one (not in unit tests).
    store_stats: Option<Arc<WriterStats>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("top_k", &self.top_k)
            .finish_non_exhaustive()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique name");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique name");
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique name");
    c
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique name");
    h
}

/// Raises a counter to a cumulative value kept elsewhere.
fn sync_counter(counter: &IntCounter, last: &mut u64, now: u64) {
    if now > *last {
        counter.inc_by(now - *last);
        *last = now;
    }
}

impl Metrics {
    /// Registers every metric. `top_k` fingerprints (and routes) get their
    /// own series; the counters in `server_stats` and `event_stats` are
    /// read at scrape time.
    pub fn new(top_k: usize, server_stats: Arc<ServerStats>, event_stats: Arc<EventStats>) -> Self {
        let r = Registry::new();
        let fp = &["fingerprint", "statement"];
        let metrics = Metrics {
            top_k,
            queries: counter_vec(&r, "qproxy_queries_total", "Statements executed.", fp),
            query_duration: histogram_vec(
                &r,
                "qproxy_query_duration_seconds",
                "Time from sending a statement to its completion message.",
                DURATION_BUCKETS,
                fp,
            ),
            rows_returned: histogram_vec(
                &r,
                "qproxy_rows_returned",
                "Rows returned per statement execution.",
                ROWS_BUCKETS,
                fp,
            ),
            query_errors: counter_vec(
                &r,
                "qproxy_query_errors_total",
                "Statements that ended with an error.",
                fp,
            ),
            findings: counter_vec(
                &r,
                "qproxy_findings_total",
                "Occurrences of findings, counted when flushed.",
                &["kind"],
            ),
            request_findings: counter_vec(
                &r,
                "qproxy_request_findings_total",
                "Occurrences of per-request findings (n_plus_one, repeated_query) by route.",
                &["kind", "route"],
            ),
            client_connections: gauge(&r, "qproxy_client_connections", "Client connections open."),
            connections_accepted: counter(
                &r,
                "qproxy_client_connections_accepted_total",
                "Client connections accepted.",
            ),
            upstream_errors: counter(
                &r,
                "qproxy_upstream_errors_total",
                "Failures to reach or keep the upstream server.",
            ),
            upstream_up: gauge(
                &r,
                "qproxy_upstream_up",
                "1 when the last readiness check reached the upstream, else 0.",
            ),
            events_dropped: counter(
                &r,
                "qproxy_events_dropped_total",
                "Query events dropped because the analyzer queue was full.",
            ),
            parse_failures: counter(
                &r,
                "qproxy_parse_failures_total",
                "Statements that did not parse (fingerprinted by token digest).",
            ),
            requests: counter_vec(
                &r,
                "qproxy_requests_total",
                "Requests ended, by how their statements were grouped.",
                &["correlation"],
            ),
            queries_correlated: counter(
                &r,
                "qproxy_queries_correlated_total",
                "Statements assigned to a request the application named.",
            ),
            catalog_available: gauge(
                &r,
                "qproxy_catalog_available",
                "1 when a database catalog is loaded, else 0.",
            ),
            catalog_loads: counter_vec(
                &r,
                "qproxy_catalog_loads_total",
                "Catalog loads finished, by outcome (ok, error).",
                &["outcome"],
            ),
            verifications_skipped: counter_vec(
                &r,
                "qproxy_verifications_skipped_total",
                "Index suggestions hypopg could have checked but did not, by reason \
                 (queue_full, refused, error).",
                &["reason"],
            ),
            verification_queue: gauge(
                &r,
                "qproxy_verification_queue",
                "Index suggestions waiting for a hypopg check or being checked.",
            ),
            background_connections: counter_vec(
                &r,
                "qproxy_background_connections_total",
                "Connections the proxy opened to client databases for itself, by purpose \
                 (catalog, verification).",
                &["purpose"],
            ),
            background_panics: counter_vec(
                &r,
                "qproxy_background_task_panics_total",
                "Background tasks (catalog_load, verification) that panicked; their work was \
                 answered as failed.",
                &["task"],
            ),
            untracked: counter(
                &r,
                "qproxy_untracked_executions_total",
                "Executions of statements the tracker did not know, so not analysed.",
            ),
            desynced: counter(
                &r,
                "qproxy_desynced_connections_total",
                "Connections whose tracker lost protocol sync and stopped analysing.",
            ),
            findings_lost: counter(
                &r,
                "qproxy_findings_lost_total",
                "Finding occurrences lost because the findings store could not be written \
                 (pending cap reached, or still unwritable at shutdown).",
            ),
            store_write_failures: counter(
                &r,
                "qproxy_store_write_failures_total",
                "Writes to the findings store that failed (locked, disk full); each is retried.",
            ),
            store_pending: gauge(
                &r,
                "qproxy_store_pending_findings",
                "Distinct findings held in memory until the findings store takes writes again.",
            ),
            unread: counter(
                &r,
                "qproxy_unread_messages_total",
                "Messages forwarded without being analysed: server messages over \
                 --max-message-bytes, client messages that do not decode.",
            ),
            not_analysed: counter(
                &r,
                "qproxy_statements_not_analysed_total",
                "Statements forwarded but not analysed: past --max-statements-per-message in one \
                 simple Query, or in a message too large for --max-held-bytes.",
            ),
            held_bytes: gauge(
                &r,
                "qproxy_held_bytes",
                "Bytes held whole now beyond the connections' ordinary buffers (large messages \
                 and SQL texts), charged against --max-held-bytes.",
            ),
            not_held: counter(
                &r,
                "qproxy_messages_not_held_total",
                "Messages forwarded without being held whole, so not analysed, because \
                 --max-held-bytes was spent.",
            ),
            startup_evictions: counter(
                &r,
                "qproxy_startup_evictions_total",
                "Connections still in startup closed to make room for a newer one \
                 (--max-startup-connections).",
            ),
            per_query: Mutex::new(PerQuery {
                fingerprints: HashMap::new(),
                other: HashMap::new(),
                routes: LabelCap::new(top_k),
                requests_seen: [0; 5],
                skipped_seen: [0; SkipReason::ALL.len()],
            }),
            synced: Mutex::new(Synced {
                accepted: 0,
                upstream_errors: 0,
                dropped: 0,
                untracked: 0,
                desynced: 0,
                findings_lost: 0,
                store_write_failures: 0,
                unread: 0,
                not_analysed: 0,
                not_held: 0,
                startup_evictions: 0,
            }),
            server_stats,
            event_stats,
            store_stats: None,
            registry: r,
        };
        let build = IntGaugeVec::new(
            Opts::new(
                "qproxy_build_info",
                "Always 1; the version is in the label.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics
            .registry
            .register(Box::new(build))
            .expect("unique name");
        for source in qproxy_analyzer::pipeline::CORRELATION_SOURCES {
            metrics.requests.with_label_values(&[source.as_str()]);
        }
        for kind in FindingKind::ALL {
            metrics.findings.with_label_values(&[kind.as_str()]);
        }
        for reason in SkipReason::ALL {
            metrics
                .verifications_skipped
                .with_label_values(&[reason.as_str()]);
        }
        for outcome in ["ok", "error"] {
            metrics.catalog_loads.with_label_values(&[outcome]);
        }
        for purpose in ["catalog", "verification"] {
            metrics.background_connections.with_label_values(&[purpose]);
        }
        for task in ["catalog_load", "verification"] {
            metrics.background_panics.with_label_values(&[task]);
        }
        // Every family is exposed from the first scrape: zero series that
        // exist anyway (the "other" bucket, findings without a route).
        for kind in [FindingKind::NPlusOne, FindingKind::RepeatedQuery] {
            metrics
                .request_findings
                .with_label_values(&[kind.as_str(), NO_ROUTE]);
        }
        {
            let select = StatementKind::Select;
            let series = metrics.series(&[OTHER, select.as_str()]);
            let mut state = crate::lock(&metrics.per_query);
            state.other.insert(select, series);
        }
        metrics
    }

    /// Also exports the findings store writer's counters (findings lost,
    /// write failures, pending findings), read at scrape time.
    pub fn with_store_stats(mut self, stats: Arc<WriterStats>) -> Self {
        self.store_stats = Some(stats);
        self
    }

    /// The readiness check's verdict on the upstream.
    pub fn set_upstream_up(&self, up: bool) {
        self.upstream_up.set(i64::from(up));
    }

    fn series(&self, labels: &[&str]) -> QuerySeries {
        QuerySeries {
            queries: self.queries.with_label_values(labels),
            duration: self.query_duration.with_label_values(labels),
            rows: self.rows_returned.with_label_values(labels),
            errors: self.query_errors.with_label_values(labels),
        }
    }

    /// Records one analysed statement (analysis task only).
    pub fn record_query(&self, p: &Processed) {
        let series = {
            let mut state = crate::lock(&self.per_query);
            let state = &mut *state;
            match state.fingerprints.get(&p.fingerprint) {
                Some(s) => s.clone(),
                None if state.fingerprints.len() < self.top_k => {
                    let id = p.fingerprint.to_string();
                    let s = self.series(&[&id, p.kind.as_str()]);
                    state.fingerprints.insert(p.fingerprint, s.clone());
                    s
                }
                None => state
                    .other
                    .entry(p.kind)
                    .or_insert_with(|| self.series(&[OTHER, p.kind.as_str()]))
                    .clone(),
            }
        };
        series.queries.inc();
        series.duration.observe(p.duration.as_secs_f64());
        series.rows.observe(p.rows as f64);
        if p.error {
            series.errors.inc();
        }
        if p.fallback {
            self.parse_failures.inc();
        }
        if p.correlated {
            self.queries_correlated.inc();
        }
    }

    /// Copies the analyzer's cumulative request counts, catalog state and
    /// verification counts (analysis task only).
    pub fn record_analyzer(&self, analyzer: &Analyzer) {
        self.catalog_available
            .set(i64::from(analyzer.catalog_available()));
        self.verification_queue
            .set(i64::try_from(analyzer.verifications_queued()).unwrap_or(i64::MAX));
        let skipped = analyzer.verifications_skipped();
        let mut state = crate::lock(&self.per_query);
        for (i, (reason, count)) in skipped.into_iter().enumerate() {
            let seen = &mut state.skipped_seen[i];
            if count > *seen {
                self.verifications_skipped
                    .with_label_values(&[reason.as_str()])
                    .inc_by(count - *seen);
                *seen = count;
            }
        }
        for (i, (source, count)) in analyzer.requests_by_source().into_iter().enumerate() {
            let seen = &mut state.requests_seen[i];
            if count > *seen {
                self.requests
                    .with_label_values(&[source_label(source)])
                    .inc_by(count - *seen);
                *seen = count;
            }
        }
    }

    /// A catalog load finished.
    pub fn catalog_load(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.catalog_loads.with_label_values(&[outcome]).inc();
    }

    /// The proxy opened a connection of its own (`catalog`, `verification`).
    pub fn background_connection(&self, purpose: &str) {
        self.background_connections
            .with_label_values(&[purpose])
            .inc();
    }

    /// A background task panicked.
    pub fn background_panic(&self, task: &str) {
        self.background_panics.with_label_values(&[task]).inc();
    }

    /// Counts flushed findings by kind, and per-request ones by route.
    pub fn record_findings(&self, findings: &[Finding]) {
        if findings.is_empty() {
            return;
        }
        let mut state = crate::lock(&self.per_query);
        for f in findings {
            let n = f.occurrences;
            self.findings
                .with_label_values(&[f.kind.as_str()])
                .inc_by(n);
            if !matches!(f.kind, FindingKind::NPlusOne | FindingKind::RepeatedQuery) {
                continue;
            }
            let route = f.request.as_ref().and_then(|r| r.route.as_deref());
            let label = match route {
                None => NO_ROUTE,
                Some(r) => {
                    let r = cap_label(r);
                    if state.routes.admit(r.to_string()) {
                        r
                    } else {
                        OTHER
                    }
                }
            };
            self.request_findings
                .with_label_values(&[f.kind.as_str(), label])
                .inc_by(n);
        }
    }

    /// The text exposition of every metric, with the relay's counters
    /// copied in first.
    pub fn render(&self) -> String {
        {
            let mut s = crate::lock(&self.synced);
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let server = &self.server_stats;
            let events = &self.event_stats;
            self.client_connections
                .set(i64::try_from(load(&server.client_connections)).unwrap_or(i64::MAX));
            sync_counter(
                &self.connections_accepted,
                &mut s.accepted,
                load(&server.connections_accepted),
            );
            sync_counter(
                &self.upstream_errors,
                &mut s.upstream_errors,
                load(&server.upstream_errors),
            );
            sync_counter(&self.events_dropped, &mut s.dropped, load(&events.dropped));
            sync_counter(&self.untracked, &mut s.untracked, load(&events.untracked));
            sync_counter(
                &self.desynced,
                &mut s.desynced,
                load(&events.desynced_connections),
            );
            if let Some(store) = &self.store_stats {
                sync_counter(
                    &self.findings_lost,
                    &mut s.findings_lost,
                    load(&store.findings_lost),
                );
                sync_counter(
                    &self.store_write_failures,
                    &mut s.store_write_failures,
                    load(&store.write_failures),
                );
                self.store_pending
                    .set(i64::try_from(load(&store.pending_findings)).unwrap_or(i64::MAX));
            }
            sync_counter(&self.unread, &mut s.unread, load(&events.unread_messages));
            sync_counter(
                &self.not_analysed,
                &mut s.not_analysed,
                load(&events.statements_not_analysed),
            );
            self.held_bytes
                .set(i64::try_from(server.held.held()).unwrap_or(i64::MAX));
            sync_counter(&self.not_held, &mut s.not_held, server.held.not_held());
            sync_counter(
                &self.startup_evictions,
                &mut s.startup_evictions,
                load(&server.startup_evictions),
            );
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn source_label(source: CorrelationSource) -> &'static str {
    source.as_str()
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn metrics(k: usize) -> Metrics {
        Metrics::new(k, Arc::default(), Arc::default())
    }

    fn query(id: u64, kind: StatementKind) -> Processed {
        Processed {
            fingerprint: FingerprintId(id),
            kind,
            duration: Duration::from_millis(3),
            rows: 2,
            error: false,
            fallback: false,
            correlated: false,
        }
    }

    fn series_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .collect()
    }

    #[test]
    fn label_cap_admits_first_k_and_keeps_them() {
        let mut cap = LabelCap::new(2);
        assert!(cap.admit("a"));
        assert!(cap.admit("b"));
        assert!(!cap.admit("c"));
        assert!(cap.admit("a"), "admitted keys stay admitted");
        assert!(!cap.admit("c"));
        assert_eq!(cap.len(), 2);
        let mut none = LabelCap::new(0);
        assert!(!none.admit(1));
        assert!(none.is_empty());
    }

    #[test]
    fn long_label_values_are_cut_at_a_char_boundary() {
        assert_eq!(cap_label("short"), "short");
        let long = "é".repeat(100);
        let cut = cap_label(&long);
        assert!(cut.len() <= MAX_LABEL_BYTES);
        assert_eq!(cut.len(), MAX_LABEL_BYTES);
        let odd = format!("a{}", "é".repeat(100));
        assert_eq!(cap_label(&odd).len(), MAX_LABEL_BYTES - 1);
    }

    #[test]
    fn fingerprints_beyond_k_go_to_other_with_their_statement_kind() {
        let m = metrics(2);
        for id in 1..=5 {
            m.record_query(&query(id, StatementKind::Select));
        }
        m.record_query(&query(6, StatementKind::Insert));
        m.record_query(&query(1, StatementKind::Select));
        let mut err = query(7, StatementKind::Update);
        err.error = true;
        m.record_query(&err);
        let text = m.render();
        let lines = series_lines(&text, "qproxy_queries_total");
        let own: Vec<_> = lines.iter().filter(|l| !l.contains("other")).collect();
        assert_eq!(own.len(), 2, "{lines:?}");
        assert!(text.contains(
            "qproxy_queries_total{fingerprint=\"0000000000000001\",statement=\"select\"} 2"
        ));
        assert!(text.contains("qproxy_queries_total{fingerprint=\"other\",statement=\"select\"} 3"));
        assert!(text.contains("qproxy_queries_total{fingerprint=\"other\",statement=\"insert\"} 1"));
        assert!(text
            .contains("qproxy_query_errors_total{fingerprint=\"other\",statement=\"update\"} 1"));
        assert!(text.contains(
            "qproxy_query_duration_seconds_count{fingerprint=\"other\",statement=\"select\"} 3"
        ));
        assert!(text.contains(
            "qproxy_rows_returned_bucket{fingerprint=\"other\",statement=\"select\",le=\"1\"} 0"
        ));
    }

    #[test]
    fn routes_are_capped_and_missing_routes_are_none() {
        use qproxy_analyzer::finding::RequestRef;
        let m = metrics(1);
        let finding = |kind: FindingKind, route: Option<&str>| {
            let mut f: Finding = serde_json::from_value(serde_json::json!({
                "id": "x", "kind": kind.as_str(), "severity": "warning", "fingerprint": "0000000000000001",
                "query": "SELECT 1", "occurrences": 2, "columns": [],
                "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-01T00:00:00Z"
            }))
            .expect("finding");
            f.request = Some(RequestRef {
                id: None,
                route: route.map(str::to_string),
                correlation: None,
            });
            f
        };
        let long = "r".repeat(300);
        m.record_findings(&[
            finding(FindingKind::NPlusOne, Some(&long)),
            finding(FindingKind::NPlusOne, Some("/b")),
            finding(FindingKind::RepeatedQuery, None),
            finding(FindingKind::UnboundedSelect, Some("/c")),
        ]);
        let text = m.render();
        let capped = "r".repeat(MAX_LABEL_BYTES);
        assert!(text.contains(&format!(
            "qproxy_request_findings_total{{kind=\"n_plus_one\",route=\"{capped}\"}} 2"
        )));
        assert!(
            text.contains("qproxy_request_findings_total{kind=\"n_plus_one\",route=\"other\"} 2")
        );
        assert!(text
            .contains("qproxy_request_findings_total{kind=\"repeated_query\",route=\"none\"} 2"));
        assert!(!text.contains("route=\"/c\""));
        assert!(text.contains("qproxy_findings_total{kind=\"n_plus_one\"} 4"));
        assert!(text.contains("qproxy_findings_total{kind=\"unbounded_select\"} 2"));
    }

    #[test]
    fn store_writer_counters_are_copied_at_scrape_time() {
        let store = Arc::new(WriterStats::default());
        let m = metrics(1).with_store_stats(store.clone());
        store.findings_lost.store(7, Ordering::Relaxed);
        store.write_failures.store(3, Ordering::Relaxed);
        store.pending_findings.store(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("qproxy_findings_lost_total 7"), "{text}");
        assert!(
            text.contains("qproxy_store_write_failures_total 3"),
            "{text}"
        );
        assert!(text.contains("qproxy_store_pending_findings 2"), "{text}");
        store.findings_lost.store(9, Ordering::Relaxed);
        store.pending_findings.store(0, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("qproxy_findings_lost_total 9"), "{text}");
        assert!(text.contains("qproxy_store_pending_findings 0"), "{text}");
    }

    #[test]
    fn every_family_is_exposed_from_the_start() {
        let server = Arc::new(ServerStats::default());
        server.connections_accepted.store(7, Ordering::Relaxed);
        server.client_connections.store(3, Ordering::Relaxed);
        let m = Metrics::new(3, server.clone(), Arc::default());
        let text = m.render();
        for name in METRIC_NAMES {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("qproxy_client_connections 3"));
        assert!(text.contains("qproxy_client_connections_accepted_total 7"));
        server.connections_accepted.store(9, Ordering::Relaxed);
        assert!(m
            .render()
            .contains("qproxy_client_connections_accepted_total 9"));
        assert!(text.contains("qproxy_build_info{version=\""));
        assert!(text.contains("qproxy_findings_lost_total 0"));
        assert!(text.contains("# TYPE qproxy_query_duration_seconds histogram"));
    }
}
