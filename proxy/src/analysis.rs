//! The task at the other end of the event queue: runs the analyzer
//! pipeline apart from the relay, so however slow analysis gets, traffic is
//! not held up (the queue fills and further events are dropped and
//! counted). Every flush interval it hands new findings and the coverage
//! summary to the store; at shutdown it ends every open request and flushes
//! once more.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qproxy_analyzer::event::SessionEvent;
use qproxy_analyzer::finding::{Finding, Summary};
use qproxy_analyzer::pipeline::{Analyzer, AnalyzerConfig};
use tokio::sync::mpsc;

use crate::events::EventStats;

/// Where flushed findings go (the findings store in production).
pub trait FindingSink: Send {
    /// Findings gathered since the last flush and the summary so far.
    fn submit(&mut self, findings: Vec<Finding>, summary: Summary);
    /// The last flush before exit.
    fn finish(self: Box<Self>, findings: Vec<Finding>, summary: Summary);
}

/// How the analysis task runs.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    /// Pipeline settings.
    pub analyzer: AnalyzerConfig,
    /// How often findings are flushed (a crash loses at most this much).
    pub flush_interval: Duration,
    /// How often idle requests are ended.
    pub tick_interval: Duration,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            analyzer: AnalyzerConfig::default(),
            flush_interval: Duration::from_secs(1),
            tick_interval: Duration::from_millis(250),
        }
    }
}

/// Whether the catalog is loaded, as the summary reports it.
pub trait CatalogState: Send + Sync {
    /// True when at least one database's catalog is loaded.
    fn available(&self) -> bool;
}

/// Consumes events until every sender is gone or `stop` resolves (then the
/// queue is closed and what is in it still analysed), and finishes.
pub async fn run(
    mut events: mpsc::Receiver<SessionEvent>,
    settings: AnalysisSettings,
    event_stats: Arc<EventStats>,
    catalog: Arc<dyn CatalogState>,
    mut sink: Box<dyn FindingSink>,
    stop: impl std::future::Future<Output = ()>,
) -> Analyzer {
    tokio::pin!(stop);
    let mut stopping = false;
    let mut analyzer = Analyzer::new(settings.analyzer.clone());
    let mut tick = tokio::time::interval(settings.tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            n = events.recv_many(&mut batch, 256) => {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                for event in batch.drain(..) {
                    analyzer.process(&event, now);
                }
            }
            () = &mut stop, if !stopping => {
                stopping = true;
                events.close();
            }
            _ = tick.tick() => {
                analyzer.tick(Instant::now());
                if last_flush.elapsed() >= settings.flush_interval {
                    last_flush = Instant::now();
                    let summary = summary(&analyzer, &event_stats, catalog.as_ref());
                    sink.submit(analyzer.take_findings(), summary);
                }
            }
        }
    }
    analyzer.finish();
    let summary = summary(&analyzer, &event_stats, catalog.as_ref());
    sink.finish(analyzer.take_findings(), summary);
    analyzer
}

fn summary(analyzer: &Analyzer, events: &EventStats, catalog: &dyn CatalogState) -> Summary {
    analyzer.summary(events.dropped.load(Ordering::Relaxed), catalog.available())
}

/// A sink that only logs (used when no store is configured, and in tests).
#[derive(Debug, Default)]
pub struct LogSink {
    /// Findings received so far.
    pub findings: Vec<Finding>,
}

impl FindingSink for LogSink {
    fn submit(&mut self, findings: Vec<Finding>, summary: Summary) {
        tracing::debug!(findings = findings.len(), queries = summary.queries, "analysis flush");
        self.findings.extend(findings);
    }

    fn finish(self: Box<Self>, findings: Vec<Finding>, summary: Summary) {
        tracing::info!(
            findings = self.findings.len() + findings.len(),
            queries = summary.queries,
            "analysis finished"
        );
    }
}
