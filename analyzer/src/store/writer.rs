//! The background writer: one OS thread owns the [`Store`] and writes what
//! the analyzer hands it, so the store (SQLite's fsyncs and lock waits on a
//! shared file, PostgreSQL's round trips) never runs on an async worker or
//! the forwarding path.
//!
//! The analyzer submits one [`Batch`] per flush interval over a bounded
//! channel without ever blocking. If the channel is full, the batch is
//! kept and merged into the next submission.
//!
//! # When the store cannot be written
//! Another process may hold the file locked (a `BEGIN EXCLUSIVE`, a backup
//! tool) or the disk may be full. The thread then keeps what it could not
//! write in memory, merged by finding id, so memory grows with the number
//! of distinct findings, not with how long the outage lasts; and it retries
//! with exponential backoff ([`WriterConfig::initial_backoff`] doubling up
//! to [`WriterConfig::max_backoff`]) for as long as the process lives.
//! Each attempt waits at most [`WriterConfig::busy_timeout`] for the lock,
//! so the thread keeps taking batches meanwhile. Only two things lose
//! data: deltas of findings beyond [`WriterConfig::pending_max`] distinct
//! ones, and what is still pending when the final flush at shutdown gives
//! up after [`WriterConfig::final_flush_timeout`]. Both are counted in
//! [`WriterStats::findings_lost`] (the proxy exports it as
//! `qproxy_findings_lost_total`) and logged, and the count is written with
//! the run's summary once the store takes writes again, so the report's
//! coverage shows it.
//!
//! A crash loses at most the last flush interval plus whatever was pending
//! while the store was unwritable.
//!
//! # Retention
//! With [`WriterConfig::retention`] set, the thread deletes runs last
//! active longer ago than that (never its own) at startup, before the
//! proxy takes clients, and then every [`prune_interval`]. A prune that
//! fails is logged and tried again at the next interval; it never costs
//! findings.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{period, RunId, RunInfo, Store, StoreError, StoreLocation};
use crate::finding::{Finding, Summary};
use crate::report::escape::for_terminal_line;

/// Batches the channel holds. The analyzer sends about one per second and
/// the thread never blocks for long, so this only fills when the disk
/// stalls for several seconds.
pub const CHANNEL_CAPACITY: usize = 8;

/// How the writer thread copes with a store it cannot write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Distinct findings held in memory while the store cannot be written;
    /// deltas of further findings are dropped and counted as lost. Deltas
    /// of findings already held merge into them, so a long outage of a
    /// steady workload loses nothing.
    pub pending_max: usize,
    /// How long one write waits for another connection's lock before it
    /// fails and is retried later. Short, so the thread keeps draining the
    /// channel while the store is locked.
    pub busy_timeout: Duration,
    /// Delay before the first retry of a failed write; it doubles with
    /// every further failure up to [`WriterConfig::max_backoff`].
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How long the last flush (at [`Writer::finish`], or when the handle
    /// is dropped) keeps retrying before what is pending is given up on.
    pub final_flush_timeout: Duration,
    /// Delete runs (and findings only they saw) last active longer ago
    /// than this; `None` keeps everything.
    pub retention: Option<Duration>,
}

impl WriterConfig {
    /// Default [`WriterConfig::pending_max`]: a finding is a few hundred
    /// bytes, so this caps the held set at a few tens of MiB.
    pub const DEFAULT_PENDING_MAX: usize = 100_000;
    /// Default [`WriterConfig::final_flush_timeout`], and the most the
    /// proxy allows it whatever its shutdown grace period.
    pub const DEFAULT_FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            pending_max: WriterConfig::DEFAULT_PENDING_MAX,
            busy_timeout: Duration::from_millis(250),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            final_flush_timeout: WriterConfig::DEFAULT_FINAL_FLUSH_TIMEOUT,
            retention: None,
        }
    }
}

/// What one flush hands the store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// Finding deltas since the previous flush (see [`Store::record`]).
    pub findings: Vec<Finding>,
    /// The run's coverage totals so far (replaces the stored ones).
    pub summary: Summary,
}

/// How often retention runs after startup: hourly, or as often as the
/// retention itself when that is shorter (at least once a second).
pub fn prune_interval(retention: Duration) -> Duration {
    retention.clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Counters for metrics and for tests; every loss is counted here.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Writes committed.
    pub batches_written: AtomicU64,
    /// Finding deltas committed.
    pub findings_written: AtomicU64,
    /// Submissions that found the channel full and were held for the next.
    pub batches_held: AtomicU64,
    /// Writes that failed; each is retried after a backoff.
    pub write_failures: AtomicU64,
    /// Distinct findings waiting in memory for the store right now.
    pub pending_findings: AtomicU64,
    /// Finding occurrences given up on: past [`WriterConfig::pending_max`],
    /// still unwritable when the final flush gave up, or submitted after
    /// the writer thread was gone.
    pub findings_lost: AtomicU64,
    /// Runs deleted by retention.
    pub runs_pruned: AtomicU64,
}

impl WriterStats {
    fn lose(&self, occurrences: u64) -> u64 {
        self.findings_lost.fetch_add(occurrences, Ordering::Relaxed) + occurrences
    }
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

/// Finding deltas and the newest summary waiting for the store, merged by
/// finding id so that memory is bounded by distinct findings.
#[derive(Debug, Default)]
struct Pending {
    findings: Vec<Finding>,
    index: HashMap<String, usize>,
    summary: Option<Summary>,
}

impl Pending {
    fn from_batch(batch: Batch) -> Pending {
        let mut pending = Pending::default();
        pending.absorb(batch, usize::MAX);
        pending
    }

    fn is_empty(&self) -> bool {
        self.findings.is_empty() && self.summary.is_none()
    }

    /// Folds `batch` in: deltas of a held finding merge with
    /// [`Finding::merge`], new findings are added while fewer than `max`
    /// are held, and the batch's summary replaces the held one (it holds
    /// newer running totals). Returns the occurrences that did not fit.
    fn absorb(&mut self, batch: Batch, max: usize) -> u64 {
        let mut dropped = 0;
        for f in batch.findings {
            match self.index.get(&f.id) {
                Some(&i) => self.findings[i].merge(&f),
                None if self.findings.len() < max => {
                    self.index.insert(f.id.clone(), self.findings.len());
                    self.findings.push(f);
                }
                None => dropped += f.occurrences,
            }
        }
        self.summary = Some(batch.summary);
        dropped
    }

    /// Occurrences held: what giving up on this set loses.
    fn occurrences(&self) -> u64 {
        self.findings.iter().map(|f| f.occurrences).sum()
    }

    fn into_batch(self) -> Batch {
        Batch {
            findings: self.findings,
            summary: self.summary.unwrap_or_default(),
        }
    }
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
    /// What the full channel did not take; it goes with the next batch.
    held: Option<Pending>,
    pending_max: usize,
    run: RunId,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// [`Writer::spawn_with`] the default [`WriterConfig`].
    pub fn spawn(location: impl Into<StoreLocation>, info: RunInfo) -> Result<Writer, StoreError> {
        Writer::spawn_with(location, info, WriterConfig::default())
    }

    /// Opens the store, starts a run, applies retention once, and starts
    /// the writer thread. Opening happens here, not on the thread, so a bad
    /// `--store` fails at startup.
    pub fn spawn_with(
        location: impl Into<StoreLocation>,
        info: RunInfo,
        config: WriterConfig,
    ) -> Result<Writer, StoreError> {
        let mut store = Store::open(location)?;
        let run = store.begin_run(&info)?;
        store.set_busy_timeout(config.busy_timeout)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let stats = Arc::new(WriterStats::default());
        let next_prune = config.retention.map(|retention| {
            prune(&mut store, run, retention, &stats);
            Instant::now() + prune_interval(retention)
        });
        let pending_max = config.pending_max.max(1);
        let flusher = Flusher {
            store,
            run,
            config: WriterConfig {
                pending_max,
                ..config
            },
            stats: Arc::clone(&stats),
            pending: Pending::default(),
            backoff: Duration::ZERO,
            retry_at: None,
            failures: 0,
            cap_reached: false,
            next_prune,
        };
        let thread = std::thread::Builder::new()
            .name("qproxy-store".into())
            .spawn(move || write_loop(flusher, rx))
            .map_err(|_| StoreError::WriterGone)?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            held: None,
            pending_max,
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

    /// `batch` merged into what the full channel did not take before.
    fn with_held(&mut self, batch: Batch) -> Batch {
        let Some(mut held) = self.held.take() else {
            return batch;
        };
        let dropped = held.absorb(batch, self.pending_max);
        if dropped > 0 {
            let total = self.stats.lose(dropped);
            tracing::error!(
                findings_lost = dropped,
                findings_lost_total = total,
                "findings writer is behind and the pending cap is reached; findings lost"
            );
        }
        held.into_batch()
    }

    /// Hands a batch to the writer thread without blocking.
    pub fn submit(&mut self, batch: Batch) -> Submitted {
        let batch = self.with_held(batch);
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
                self.held = Some(Pending::from_batch(batch));
                Submitted::Held
            }
            Err(TrySendError::Disconnected(msg)) => self.lose(msg.into_batch()),
        }
    }

    fn lose(&self, batch: Batch) -> Submitted {
        let n: u64 = batch.findings.iter().map(|f| f.occurrences).sum();
        let total = self.stats.lose(n);
        tracing::error!(
            findings_lost = n,
            findings_lost_total = total,
            "findings writer thread is gone; findings lost"
        );
        Submitted::Lost
    }

    /// Writes `last` and anything held, marks the run ended, and waits for
    /// the thread: what the proxy does on SIGTERM after finalizing open
    /// request contexts. While the store cannot be written this retries
    /// for up to [`WriterConfig::final_flush_timeout`], then gives up on
    /// what is pending (counted and logged) and returns the last error.
    pub fn finish(mut self, last: Batch) -> Result<(), StoreError> {
        let batch = self.with_held(last);
        let ended_at = OffsetDateTime::now_utc();
        if let Some(tx) = self.tx.take() {
            // Blocking is fine here: shutdown waits for the store anyway.
            if let Err(e) = tx.send(Message::Finish { batch, ended_at }) {
                self.lose(e.0.into_batch());
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
        if let (Some(tx), Some(held)) = (&self.tx, self.held.take()) {
            let _ = tx.send(Message::Batch(held.into_batch()));
        }
        if let Err(e) = self.join() {
            tracing::error!(error = %e, "findings writer ended with an error");
        }
    }
}

/// The thread body: take batches, write them (or, while a retry is
/// scheduled, merge them into what is pending); on Finish, or when the
/// handle is dropped, flush what is left and stop.
fn write_loop(mut flusher: Flusher, rx: Receiver<Message>) -> Result<(), StoreError> {
    loop {
        let wake = match (flusher.retry_at, flusher.next_prune) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let message = match wake {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        flusher.prune_if_due();
        match message {
            Ok(Message::Batch(batch)) => {
                flusher.take(batch);
                if flusher.retry_at.is_none() {
                    let _ = flusher.attempt();
                }
            }
            Ok(Message::Finish { batch, ended_at }) => {
                flusher.take(batch);
                return flusher.finish(Some(ended_at));
            }
            Err(RecvTimeoutError::Timeout) => {
                if flusher.retry_at.is_some_and(|at| at <= Instant::now()) {
                    let _ = flusher.attempt();
                }
            }
            // Handle dropped without finish: flush, but leave the run
            // unended, as after a crash.
            Err(RecvTimeoutError::Disconnected) => return flusher.finish(None),
        }
    }
}

/// The writer thread's state: the store, what is pending, and when to
/// retry.
struct Flusher {
    store: Store,
    run: RunId,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    pending: Pending,
    /// The delay before the next retry if the current attempt fails.
    backoff: Duration,
    /// When to retry a failed write; `None` while the store is writable.
    retry_at: Option<Instant>,
    /// Failed writes since the last success.
    failures: u64,
    /// Whether this outage has dropped deltas yet (logged once per outage).
    cap_reached: bool,
    /// When retention runs next; `None` without a retention.
    next_prune: Option<Instant>,
}

impl Flusher {
    fn prune_if_due(&mut self) {
        let (Some(at), Some(retention)) = (self.next_prune, self.config.retention) else {
            return;
        };
        if at <= Instant::now() {
            prune(&mut self.store, self.run, retention, &self.stats);
            self.next_prune = Some(Instant::now() + prune_interval(retention));
        }
    }

    fn take(&mut self, batch: Batch) {
        let dropped = self.pending.absorb(batch, self.config.pending_max);
        self.stats
            .pending_findings
            .store(self.pending.findings.len() as u64, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        let total = self.stats.lose(dropped);
        if !self.cap_reached {
            self.cap_reached = true;
            tracing::error!(
                pending_max = self.config.pending_max,
                findings_lost = dropped,
                findings_lost_total = total,
                "the pending cap is reached while findings wait for the store; dropping \
                 findings (counted in qproxy_findings_lost_total and the report)"
            );
        }
    }

    /// Writes what is pending in one transaction, with the run's loss
    /// count so far in its summary. On failure everything stays pending
    /// and a retry is scheduled.
    fn attempt(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let lost = self.stats.findings_lost.load(Ordering::Relaxed);
        if let Some(summary) = &mut self.pending.summary {
            summary.findings_lost = lost;
        }
        let pending = &self.pending;
        match self
            .store
            .write(self.run, &pending.findings, pending.summary.as_ref())
        {
            Ok(recorded) => {
                self.stats.batches_written.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .findings_written
                    .fetch_add(pending.findings.len() as u64, Ordering::Relaxed);
                for &i in &recorded.new_in_run {
                    log_new(&pending.findings[i]);
                }
                if self.failures > 0 {
                    tracing::info!(
                        failed_writes = self.failures,
                        findings = pending.findings.len(),
                        findings_lost_total = lost,
                        "findings store writable again; pending findings written"
                    );
                }
                self.pending = Pending::default();
                self.stats.pending_findings.store(0, Ordering::Relaxed);
                self.failures = 0;
                self.cap_reached = false;
                self.backoff = Duration::ZERO;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                let retry_in_ms = u64::try_from(self.failed().as_millis()).unwrap_or(u64::MAX);
                let pending_findings = self.pending.findings.len();
                // Once per outage at warn; the retries (every few seconds
                // while it lasts) only at debug.
                if self.failures == 1 {
                    tracing::warn!(error = %e, pending_findings, retry_in_ms,
                        "cannot write findings; holding them in memory and retrying");
                } else {
                    tracing::debug!(error = %e, pending_findings, retry_in_ms,
                        failures = self.failures, "cannot write findings yet");
                }
                Err(e)
            }
        }
    }

    /// Counts a failed write and schedules the retry; returns its delay.
    fn failed(&mut self) -> Duration {
        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        self.failures += 1;
        self.backoff = if self.backoff.is_zero() {
            self.config.initial_backoff
        } else {
            (self.backoff * 2).min(self.config.max_backoff)
        };
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff
    }

    /// The last flush: write what is pending and end the run (when
    /// `ended_at` is given), retrying until
    /// [`WriterConfig::final_flush_timeout`]; then count what is still
    /// pending as lost and say so.
    fn finish(mut self, ended_at: Option<OffsetDateTime>) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.config.final_flush_timeout;
        let mut end = ended_at;
        loop {
            let result = self.attempt().and_then(|()| match end {
                Some(at) => self.store.end_run(self.run, at).map(|()| end = None),
                None => Ok(()),
            });
            let error = match result {
                Ok(()) => break,
                Err(e) => e,
            };
            if end.is_some() && self.pending.is_empty() {
                // Only ending the run failed; attempt() did not count it.
                self.failed();
            }
            let now = Instant::now();
            let Some(retry_at) = self.retry_at.filter(|_| now < deadline) else {
                let dropped = self.pending.occurrences();
                let total = self.stats.lose(dropped);
                tracing::error!(
                    error = %error,
                    findings_lost = dropped,
                    findings_lost_total = total,
                    "findings store still unwritable at shutdown; giving up: these findings \
                     are lost and the stored report undercounts them"
                );
                return Err(error);
            };
            std::thread::sleep(retry_at.min(deadline).saturating_duration_since(now));
        }
        let lost = self.stats.findings_lost.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                findings_lost_total = lost,
                "findings were lost during this run; the report's coverage says how many"
            );
        }
        Ok(())
    }
}

/// Deletes what is older than `retention`, except `run` (this process's),
/// and says what went. A failure is logged: retention tries again later.
fn prune(store: &mut Store, run: RunId, retention: Duration, stats: &WriterStats) {
    let cutoff = period::before(OffsetDateTime::now_utc(), retention);
    match store.prune(cutoff, Some(run)) {
        Ok(pruned) => {
            stats.runs_pruned.fetch_add(pruned.runs, Ordering::Relaxed);
            if pruned.runs > 0 || pruned.findings > 0 {
                tracing::info!(
                    runs = pruned.runs,
                    findings = pruned.findings,
                    retention_s = retention.as_secs(),
                    "findings store retention: deleted old runs"
                );
            }
        }
        Err(e) => tracing::warn!(
            error = %e,
            "findings store retention failed; trying again later"
        ),
    }
}

/// One structured event per finding, the first time a run records it.
/// Text that came from the client (SQL, tags) is escaped, so a request id
/// holding terminal escapes cannot rewrite the terminal that tails the
/// log.
fn log_new(f: &Finding) {
    fn shown(s: Option<&str>) -> Option<tracing::field::DisplayValue<Cow<'_, str>>> {
        s.map(|s| tracing::field::display(for_terminal_line(s)))
    }
    let request = f.request.as_ref();
    tracing::info!(
        target: "qproxy::finding",
        id = %f.id,
        kind = %f.kind,
        severity = f.severity.as_str(),
        fingerprint = %for_terminal_line(&f.fingerprint),
        table = shown(f.table.as_deref()),
        count = f.count,
        request_id = shown(request.and_then(|r| r.id.as_deref())),
        route = shown(request.and_then(|r| r.route.as_deref())),
        query = %for_terminal_line(&f.query),
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

    fn batch(findings: Vec<Finding>, queries: u64) -> Batch {
        Batch {
            findings,
            summary: Summary {
                queries,
                ..Summary::default()
            },
        }
    }

    #[test]
    fn absorb_merges_same_ids_and_keeps_newest_summary() {
        let mut p = Pending::default();
        assert!(p.is_empty());
        assert_eq!(p.absorb(batch(vec![delta("a", 1, 10)], 5), 10), 0);
        assert_eq!(
            p.absorb(batch(vec![delta("a", 2, 7), delta("b", 1, 3)], 9), 10),
            0
        );
        assert_eq!(p.findings.len(), 2);
        assert_eq!(
            (p.findings[0].occurrences, p.findings[0].count),
            (3, Some(10))
        );
        assert_eq!(p.findings[1].id, "b");
        assert_eq!(p.occurrences(), 4);
        assert_eq!(p.into_batch().summary.queries, 9);
    }

    #[test]
    fn absorb_past_the_cap_merges_known_ids_and_drops_new_ones() {
        let mut p = Pending::default();
        assert_eq!(p.absorb(batch(vec![delta("a", 1, 5)], 1), 1), 0);
        // "b" would be a second distinct finding: dropped, its occurrences
        // returned; "a" still merges.
        assert_eq!(
            p.absorb(batch(vec![delta("b", 4, 5), delta("a", 2, 5)], 2), 1),
            4
        );
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.findings[0].occurrences, 3);
        assert_eq!(p.summary.as_ref().map(|s| s.queries), Some(2));
    }
}
