//! The task at the other end of the event queue. It runs apart from the
//! relay, so however slow analysis gets, traffic is not held up: the queue
//! fills and further events are dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use qproxy_analyzer::event::SessionEvent;
use tokio::sync::mpsc;

/// What the analysis task has processed.
#[derive(Debug, Default)]
pub struct AnalysisStats {
    /// Query events consumed.
    pub queries: AtomicU64,
    /// Connections whose close was seen.
    pub sessions_closed: AtomicU64,
}

/// Consumes events until every sender is gone.
pub async fn run(mut events: mpsc::Receiver<SessionEvent>, stats: Arc<AnalysisStats>) {
    while let Some(event) = events.recv().await {
        match event {
            SessionEvent::Query(q) => {
                stats.queries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    connection_id = q.connection_id,
                    statement_index = q.statement_index,
                    protocol = ?q.protocol,
                    rows = q.rows,
                    duration_us = q.duration.as_micros() as u64,
                    outcome = ?q.outcome,
                    "query"
                );
            }
            SessionEvent::Closed { connection_id } => {
                stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(connection_id, "session closed");
            }
        }
    }
}
