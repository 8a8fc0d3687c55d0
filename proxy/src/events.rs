//! The bounded channel from the sessions (the events their protocol
//! trackers report) to the analyzer task.
//!
//! Analysis must never slow traffic: [`EventSink::emit`] uses `try_send`, and
//! when the channel is full the event is dropped and counted, never awaited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use qproxy_analyzer::event::SessionEvent;
use tokio::sync::mpsc;

/// Counters shared by every connection's tracker.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Events handed to the analyzer.
    pub emitted: AtomicU64,
    /// Events dropped because the channel was full.
    pub dropped: AtomicU64,
    /// Executions whose statement the tracker did not know (evicted by a
    /// cap, or the tracker lost sync), so no event could be built.
    pub untracked: AtomicU64,
    /// Connections whose tracker lost sync with the protocol and stopped
    /// analysing (traffic is still forwarded).
    pub desynced_connections: AtomicU64,
    /// Messages forwarded without the tracker reading them: server
    /// messages over `--max-message-bytes` and client messages that do not
    /// decode (the server answers those).
    pub unread_messages: AtomicU64,
    /// Statements forwarded but not analysed: past the per-message cap of
    /// a simple Query, or in a message too large for the held-bytes budget.
    pub statements_not_analysed: AtomicU64,
}

/// The sending side, cloned into every connection.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<SessionEvent>,
    stats: Arc<EventStats>,
}

impl EventSink {
    /// A sink and the receiver the analyzer task reads from.
    pub fn channel(capacity: usize) -> (EventSink, mpsc::Receiver<SessionEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            EventSink {
                tx,
                stats: Arc::default(),
            },
            rx,
        )
    }

    /// Hands an event on without waiting; a full or closed channel drops it.
    pub fn emit(&self, event: SessionEvent) {
        match self.tx.try_send(event) {
            Ok(()) => self.stats.emitted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<EventStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_channel_drops_and_counts() {
        let (sink, mut rx) = EventSink::channel(2);
        for id in 0..5 {
            sink.emit(SessionEvent::Closed {
                connection_id: id,
                at: std::time::SystemTime::now(),
                tx_status: None,
            });
        }
        assert_eq!(sink.stats().emitted.load(Ordering::Relaxed), 2);
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 3);
        assert!(rx.try_recv().is_ok());
    }
}
