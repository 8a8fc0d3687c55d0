//! The background writer: one OS thread owns the [`Store`] and writes what
//! the analyzer hands it, so SQLite (fsyncs, lock waits on a shared file)
//! never runs on an async worker or the forwarding path.
//!
//! The analyzer submits one [`Batch`] per flush interval over a bounded
//! channel without ever blocking. If the channel is full, the batch is
//! kept and merged into the next submission; if a write fails, the thread
//! keeps the batch and retries with the next one; only after
//! [`MAX_ATTEMPTS`] failed writes is data dropped, and then it is counted in
//! [`WriterStats`] and logged. Nothing is lost silently, and a crash loses
//! at most what was not yet flushed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use time::OffsetDateTime;

use super::{RunId, RunInfo, Store, StoreError};
use crate::finding::{Finding, Summary};

/// Batches the channel holds. The analyzer sends about one per second, so
/// this only fills when the disk or a lock stalls for several seconds.
pub const CHANNEL_CAPACITY: usize = 8;

/// Failed writes of the same data before it is dropped (and counted).
pub const MAX_ATTEMPTS: u32 = 5;

/// What one flush hands the store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// Finding deltas since the previous flush (see [`Store::record`]).
    pub findings: Vec<Finding>,
    /// The run's coverage totals so far (replaces the stored ones).
    pub summary: Summary,
}

impl Batch {
    /// Folds a later batch into this one: deltas for the same finding merge
    /// with [`Finding::merge`], and the later summary wins because it holds
    /// newer running totals.
    pub fn absorb(&mut self, later: Batch) {
        let mut index: HashMap<String, usize> = self
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), i))
            .collect();
        for f in later.findings {
            match index.get(&f.id) {
                Some(&i) => self.findings[i].merge(&f),
                None => {
                    index.insert(f.id.clone(), self.findings.len());
                    self.findings.push(f);
                }
            }
        }
        self.summary = later.summary;
    }
}

/// Counters for metrics and for tests; every loss is counted here.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches committed.
    pub batches_written: AtomicU64,
    /// Finding deltas committed.
    pub findings_written: AtomicU64,
    /// Submissions that found the channel full and were held for the next.
    pub batches_held: AtomicU64,
    /// Writes that failed (each is retried with the next batch).
    pub write_failures: AtomicU64,
    /// Finding deltas given up on after [`MAX_ATTEMPTS`] failed writes, or
    /// submitted after the writer thread was gone.
    pub findings_lost: AtomicU64,
}

/// What became of a submitted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued for the writer thread.
    Queued,
    /// The channel was full: kept, and sent merged with the next
    /// submission (or with [`Writer::finish`]).
    Held,
    /// The writer thread is gone; the findings were counted as lost.
    Lost,
}

enum Message {
    Batch(Batch),
    Finish {
        batch: Batch,
        ended_at: OffsetDateTime,
    },
}

impl Message {
    fn into_batch(self) -> Batch {
        match self {
            Message::Batch(batch) | Message::Finish { batch, .. } => batch,
        }
    }
}

/// Handle to the writer thread. Dropping it without [`Writer::finish`]
/// still writes everything submitted (and waits for that), but leaves the
/// run without an end time, as a crash would.
#[derive(Debug)]
pub struct Writer {
    tx: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    /// A batch the full channel did not take; it goes with the next one.
    pending: Option<Batch>,
    run: RunId,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Opens the store, starts a run and the writer thread. Opening happens
    /// here, not on the thread, so a bad `--store` fails at startup.
    pub fn spawn(path: impl AsRef<Path>, info: RunInfo) -> Result<Writer, StoreError> {
        let mut store = Store::open(path)?;
        let run = store.begin_run(&info)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("qproxy-store".into())
            .spawn(move || write_loop(store, run, rx, &thread_stats))
            .map_err(|_| StoreError::WriterGone)?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            pending: None,
            run,
            stats,
        })
    }

    /// The run this writer records into.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// Counters, shared so metrics can read them while the writer runs.
    pub fn stats(&self) -> Arc<WriterStats> {
        Arc::clone(&self.stats)
    }

    /// Hands a batch to the writer thread without blocking.
    pub fn submit(&mut self, batch: Batch) -> Submitted {
        let batch = match self.pending.take() {
            Some(mut held) => {
                held.absorb(batch);
                held
            }
            None => batch,
        };
        let Some(tx) = &self.tx else {
            return self.lose(batch);
        };
        match tx.try_send(Message::Batch(batch)) {
            Ok(()) => Submitted::Queued,
            Err(TrySendError::Full(msg)) => {
                let batch = msg.into_batch();
                self.stats.batches_held.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    findings = batch.findings.len(),
                    "findings writer is behind; holding batch"
                );
                self.pending = Some(batch);
                Submitted::Held
            }
            Err(TrySendError::Disconnected(msg)) => self.lose(msg.into_batch()),
        }
    }

    fn lose(&self, batch: Batch) -> Submitted {
        let n = batch.findings.len() as u64;
        self.stats.findings_lost.fetch_add(n, Ordering::Relaxed);
        tracing::error!(
            findings = n,
            "findings writer thread is gone; findings lost"
        );
        Submitted::Lost
    }

    /// Writes `last` and anything held, marks the run ended, and waits for
    /// the thread: what the proxy does on SIGTERM after finalizing open
    /// request contexts.
    pub fn finish(mut self, last: Batch) -> Result<(), StoreError> {
        let batch = match self.pending.take() {
            Some(mut held) => {
                held.absorb(last);
                held
            }
            None => last,
        };
        let ended_at = OffsetDateTime::now_utc();
        if let Some(tx) = self.tx.take() {
            // Blocking is fine here: shutdown waits for the store anyway.
            if tx.send(Message::Finish { batch, ended_at }).is_err() {
                tracing::error!("findings writer thread is gone; final batch lost");
            }
        }
        self.join()
    }

    fn join(&mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(StoreError::WriterGone)),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let (Some(tx), Some(held)) = (&self.tx, self.pending.take()) {
            let _ = tx.send(Message::Batch(held));
        }
        if let Err(e) = self.join() {
            tracing::error!(error = %e, "findings writer ended with an error");
        }
    }
}

/// The thread body: write each batch, retrying failures with the next one;
/// on Finish (or when the handle is dropped) write what is left and stop.
fn write_loop(
    mut store: Store,
    run: RunId,
    rx: Receiver<Message>,
    stats: &WriterStats,
) -> Result<(), StoreError> {
    let mut carry: Option<Batch> = None;
    let mut attempts = 0;
    loop {
        let (batch, finish) = match rx.recv() {
            Ok(Message::Batch(b)) => (b, None),
            Ok(Message::Finish { batch, ended_at }) => (batch, Some(ended_at)),
            Err(_) => {
                // Handle dropped without finish: the carry was already tried.
                return match carry {
                    Some(b) => flush(&mut store, run, b, stats, &mut attempts, true).map(drop),
                    None => Ok(()),
                };
            }
        };
        let batch = match carry.take() {
            Some(mut c) => {
                c.absorb(batch);
                c
            }
            None => batch,
        };
        if let Some(ended_at) = finish {
            // End the run even if the last write failed: the run did stop.
            let flushed = flush(&mut store, run, batch, stats, &mut attempts, true);
            let ended = store.end_run(run, ended_at);
            return flushed.map(drop).and(ended);
        }
        carry = flush(&mut store, run, batch, stats, &mut attempts, false).unwrap_or(None);
    }
}

/// Writes one batch. On failure returns the batch to retry, or, after
/// [`MAX_ATTEMPTS`] or when `last`, counts it lost and returns the error.
fn flush(
    store: &mut Store,
    run: RunId,
    batch: Batch,
    stats: &WriterStats,
    attempts: &mut u32,
    last: bool,
) -> Result<Option<Batch>, StoreError> {
    match store.record_batch(run, &batch) {
        Ok(recorded) => {
            *attempts = 0;
            stats.batches_written.fetch_add(1, Ordering::Relaxed);
            stats
                .findings_written
                .fetch_add(batch.findings.len() as u64, Ordering::Relaxed);
            for &i in &recorded.new_in_run {
                log_new(&batch.findings[i]);
            }
            Ok(None)
        }
        Err(e) => {
            *attempts += 1;
            stats.write_failures.fetch_add(1, Ordering::Relaxed);
            let n = batch.findings.len() as u64;
            if last || *attempts >= MAX_ATTEMPTS {
                stats.findings_lost.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, findings = n, attempts = *attempts, "cannot write findings; giving up on this batch");
                *attempts = 0;
                Err(e)
            } else {
                tracing::warn!(error = %e, findings = n, attempts = *attempts, "cannot write findings; will retry with the next batch");
                Ok(Some(batch))
            }
        }
    }
}

/// One structured event per finding, the first time a run records it.
fn log_new(f: &Finding) {
    let request = f.request.as_ref();
    tracing::info!(
        target: "qproxy::finding",
        id = %f.id,
        kind = %f.kind,
        severity = f.severity.as_str(),
        fingerprint = %f.fingerprint,
        table = f.table.as_deref(),
        count = f.count,
        request_id = request.and_then(|r| r.id.as_deref()),
        route = request.and_then(|r| r.route.as_deref()),
        query = %f.query,
        "new finding"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{FindingKind, Severity};

    fn delta(id: &str, occurrences: u64, count: u64) -> Finding {
        Finding {
            id: id.into(),
            kind: FindingKind::NPlusOne,
            severity: Severity::Warning,
            fingerprint: "00000000000000ff".into(),
            query: "SELECT 1".into(),
            table: None,
            columns: vec![],
            count: Some(count),
            occurrences,
            request: None,
            parent: None,
            rows: None,
            suggestion: None,
            database: None,
            details: Default::default(),
            first_seen: OffsetDateTime::UNIX_EPOCH,
            last_seen: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn absorb_merges_same_ids_and_keeps_newest_summary() {
        let mut a = Batch {
            findings: vec![delta("a", 1, 10)],
            summary: Summary {
                queries: 5,
                ..Summary::default()
            },
        };
        a.absorb(Batch {
            findings: vec![delta("a", 2, 7), delta("b", 1, 3)],
            summary: Summary {
                queries: 9,
                ..Summary::default()
            },
        });
        assert_eq!(a.findings.len(), 2);
        assert_eq!(
            (a.findings[0].occurrences, a.findings[0].count),
            (3, Some(10))
        );
        assert_eq!(a.findings[1].id, "b");
        assert_eq!(a.summary.queries, 9);
    }
}
