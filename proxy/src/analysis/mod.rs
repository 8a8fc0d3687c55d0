//! The task at the other end of the event queue: runs the analyzer
//! pipeline apart from the relay, so however slow analysis gets, traffic is
//! not held up (the queue fills and further events are dropped and
//! counted). In the proxy it runs on a thread of its own
//! ([`AnalysisThread`]), never on the runtime that accepts clients and
//! serves the admin port. It also starts the catalog loads and hypopg checks
//! the pipeline asks for, within the limits of [`crate::analysis::background`]. Every flush interval
//! it hands new findings and the coverage summary to the store; at
//! shutdown it ends every open request and flushes once more.

pub(crate) mod background;
pub mod catalog;
pub mod store_target;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qproxy_analyzer::event::SessionEvent;
use qproxy_analyzer::finding::{Finding, Summary};
use qproxy_analyzer::pipeline::Analyzer;
use qproxy_analyzer::routes::RouteStats;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::admin::live::{LiveFeed, LiveView};
use crate::analysis::background::{Background, Finished};
use crate::analysis::catalog::CatalogConnector;
pub use crate::config::AnalysisSettings;
use crate::events::EventStats;
use crate::metrics::Metrics;

/// Where flushed findings go (the findings store in production).
pub trait FindingSink: Send {
    /// Findings gathered since the last flush and the summary so far.
    fn submit(&mut self, findings: Vec<Finding>, summary: Summary);
    /// The last flush before exit.
    fn finish(self: Box<Self>, findings: Vec<Finding>, summary: Summary);
    /// The run's per-route figures so far, handed over just before the
    /// flush they belong to when they changed (the store keeps them with
    /// the run; a sink without a store may ignore them).
    fn routes(&mut self, _routes: Vec<RouteStats>) {}
}

/// Events taken from the queue at once.
const BATCH: usize = 1024;
/// After a batch that emptied the queue, the task waits this long before
/// reading again, so events pile up and are taken many at a time: a relay
/// thread then wakes this task at most a few hundred times a second
/// instead of once per query (each wakeup is a syscall on the forwarding
/// path).
const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// At shutdown, how long a first catalog load still to come may take to
/// land, so the last findings name their tables schema-qualified (the
/// pipeline holds such findings back while their catalog loads). Short: the
/// drain has already waited for the clients.
const CATALOG_WAIT_AT_EXIT: Duration = Duration::from_secs(5);
/// The analysis task on a thread of its own with a single-threaded
/// runtime: fingerprinting a Query of a hundred thousand statements, a
/// catalog load or a burst of events then cannot hold up the runtime that
/// accepts clients and answers `/healthz` (a multi-thread runtime can: a
/// task that computes for seconds keeps its worker, and whatever waits in
/// that worker's queue, from running).
#[derive(Debug)]
pub struct AnalysisThread {
    /// Stops the task when dropped: by [`AnalysisThread::finish`], or with
    /// a handle dropped without it.
    stop: Option<DropGuard>,
    thread: Option<std::thread::JoinHandle<Analyzer>>,
}

impl AnalysisThread {
    /// Starts [`run_with_metrics`] on a new thread.
    pub fn spawn(
        events: mpsc::Receiver<SessionEvent>,
        settings: AnalysisSettings,
        event_stats: Arc<EventStats>,
        catalog: Option<CatalogConnector>,
        sink: Box<dyn FindingSink>,
        metrics: Option<Arc<Metrics>>,
        live: Option<Arc<LiveFeed>>,
    ) -> std::io::Result<AnalysisThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("qproxy-analysis".into())
            .spawn(move || {
                runtime.block_on(run_with_metrics(
                    events,
                    settings,
                    event_stats,
                    catalog,
                    sink,
                    metrics,
                    live,
                    stopped.cancelled_owned(),
                ))
            })?;
        Ok(AnalysisThread {
            stop: Some(stop.drop_guard()),
            thread: Some(thread),
        })
    }

    /// Stops the task (what is queued is still analysed, every open request
    /// ended and the findings flushed) and waits for it; `None` if the
    /// thread died.
    pub async fn finish(mut self) -> Option<Analyzer> {
        drop(self.stop.take());
        let thread = self.thread.take()?;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()?
            .ok()
    }
}
/// Consumes events until every sender is gone or `stop` resolves (then the
/// queue is closed and what is in it still analysed), and finishes,
/// also recording per-query metrics, flushed findings and the
/// analyzer's coverage counters into `metrics`, and publishing the live
/// view's snapshots into `live`.
#[allow(clippy::too_many_arguments)]
pub async fn run_with_metrics(
    mut events: mpsc::Receiver<SessionEvent>,
    settings: AnalysisSettings,
    event_stats: Arc<EventStats>,
    catalog: Option<CatalogConnector>,
    mut sink: Box<dyn FindingSink>,
    metrics: Option<Arc<Metrics>>,
    live: Option<Arc<LiveFeed>>,
    stop: impl std::future::Future<Output = ()>,
) -> Analyzer {
    let mut live = live.map(LiveView::new);
    let mut analyzer = Analyzer::new(settings.analyzer.clone());
    let mut tick = tokio::time::interval(settings.tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (reply_tx, mut replies) = mpsc::channel::<Finished>(64);
    let mut background = Background::new(
        catalog,
        reply_tx,
        settings.max_catalog_jobs,
        settings.analyzer.verification.connections_per_second,
    );
    tokio::pin!(stop);
    let mut stopping = false;
    let mut last_flush = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = events.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                let drained = n < BATCH;
                let now = Instant::now();
                for event in batch.drain(..) {
                    let processed = analyzer.process(&event, now);
                    if let (Some(m), Some(p)) = (&metrics, processed) {
                        m.record_query(&p);
                    }
                }
                if let Some(m) = &metrics {
                    m.record_analyzer(&analyzer);
                }
                if drained && !stopping {
                    tokio::time::sleep(BATCH_WINDOW).await;
                }
            }
            Some(finished) = replies.recv() => {
                background.finished(finished, &mut analyzer, metrics.as_deref());
            }
            () = &mut stop, if !stopping => {
                stopping = true;
                events.close();
            }
            _ = tick.tick() => {
                analyzer.tick(Instant::now());
                if let Some(m) = &metrics {
                    m.record_analyzer(&analyzer);
                }
                if last_flush.elapsed() >= settings.flush_interval {
                    last_flush = Instant::now();
                    let summary = summary(&analyzer, &event_stats);
                    let findings = analyzer.take_findings();
                    if let Some(m) = &metrics {
                        m.record_findings(&findings);
                    }
                    if let Some(routes) = analyzer.take_routes() {
                        sink.routes(routes);
                    }
                    if let Some(live) = &mut live {
                        live.flush(&analyzer, &summary, &findings);
                    }
                    sink.submit(findings, summary);
                }
            }
        }
        background.start(&mut analyzer, Instant::now(), metrics.as_deref());
    }
    let deadline = tokio::time::Instant::now() + CATALOG_WAIT_AT_EXIT;
    while analyzer.indexes().catalogs_in_flight() && tokio::time::Instant::now() < deadline {
        // Loads wait for their turn (the connection budget), so keep
        // starting them while waiting for replies.
        background.start(&mut analyzer, Instant::now(), metrics.as_deref());
        let wake = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        if let Ok(Some(finished)) = tokio::time::timeout_at(wake, replies.recv()).await {
            background.finished(finished, &mut analyzer, metrics.as_deref());
        }
    }
    analyzer.finish();
    let summary = summary(&analyzer, &event_stats);
    let findings = analyzer.take_findings();
    if let Some(m) = &metrics {
        m.record_analyzer(&analyzer);
        m.record_findings(&findings);
    }
    if let Some(routes) = analyzer.take_routes() {
        sink.routes(routes);
    }
    if let Some(live) = live {
        live.finish(&analyzer, &summary, &findings);
    }
    sink.finish(findings, summary);
    analyzer
}

/// The coverage summary: the analyzer's, with what only the relay counts.
fn summary(analyzer: &Analyzer, event_stats: &EventStats) -> Summary {
    let mut summary = analyzer.summary(event_stats.dropped.load(Ordering::Relaxed));
    summary.statements_not_analysed = event_stats.statements_not_analysed.load(Ordering::Relaxed);
    summary
}
/// The production sink: batches go to the findings store's writer thread,
/// so the store (SQLite or PostgreSQL) never runs on the async workers.
#[derive(Debug)]
pub struct StoreSink {
    writer: qproxy_analyzer::store::Writer,
    /// Route figures handed over since the last batch, sent with the next.
    routes: Option<Vec<RouteStats>>,
}

impl StoreSink {
    /// Opens (or creates) the store and starts a run in it named
    /// `instance`.
    pub fn open(
        location: impl Into<qproxy_analyzer::store::StoreLocation>,
        instance: &str,
    ) -> Result<StoreSink, qproxy_analyzer::store::StoreError> {
        StoreSink::open_with(
            location,
            instance,
            qproxy_analyzer::store::WriterConfig::default(),
        )
    }

    /// [`StoreSink::open`] with the writer's retry, cap and retention
    /// settings.
    pub fn open_with(
        location: impl Into<qproxy_analyzer::store::StoreLocation>,
        instance: &str,
        config: qproxy_analyzer::store::WriterConfig,
    ) -> Result<StoreSink, qproxy_analyzer::store::StoreError> {
        let info = qproxy_analyzer::store::RunInfo::current(env!("CARGO_PKG_VERSION"), instance);
        Ok(StoreSink {
            writer: qproxy_analyzer::store::Writer::spawn_with(location, info, config)?,
            routes: None,
        })
    }

    /// The writer's counters (write failures, findings lost), for metrics.
    pub fn stats(&self) -> std::sync::Arc<qproxy_analyzer::store::WriterStats> {
        self.writer.stats()
    }
}

impl FindingSink for StoreSink {
    fn submit(&mut self, findings: Vec<Finding>, summary: Summary) {
        use qproxy_analyzer::store::{Batch, Submitted};
        let routes = self.routes.take();
        let batch = Batch {
            findings,
            summary,
            routes,
        };
        if self.writer.submit(batch) == Submitted::Lost {
            tracing::error!("the findings store writer has stopped; findings are being lost");
        }
    }

    fn routes(&mut self, routes: Vec<RouteStats>) {
        self.routes = Some(routes);
    }

    fn finish(self: Box<Self>, findings: Vec<Finding>, summary: Summary) {
        use qproxy_analyzer::store::Batch;
        let stats = self.writer.stats();
        let batch = Batch {
            findings,
            summary,
            routes: self.routes,
        };
        if let Err(e) = self.writer.finish(batch) {
            tracing::error!(
                error = %e,
                findings_lost_total = stats.findings_lost.load(Ordering::Relaxed),
                "final flush to the findings store failed; the lost findings are not in the report"
            );
        }
    }
}
