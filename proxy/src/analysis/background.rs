//! The proxy's own connections to client databases, scheduled: the catalog
//! loads and hypopg verification batches the analyzer asks for.
//!
//! Bounded three ways, so that a workload of many new statement shapes
//! cannot turn into a stream of connections that outlives it: at most
//! `max_jobs` run at once; a token bucket lets `connections_per_second`
//! new connections start overall (loads first, they gate every finding of
//! their database); and a verification job checks a whole batch of one
//! database's suggestions on one connection, then disconnects. What does
//! not fit waits in the analyzer's bounded queue, or is skipped and counted
//! there.
//!
//! Every job runs in a task of its own under a supervisor task: a job that
//! panics is logged and counted, and answered as failed (its database's
//! catalog goes back to retryable, its suggestions say why they were not
//! checked), so a panic never silently ends part of the analysis.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use qproxy_analyzer::catalog::Catalog;
use qproxy_analyzer::detect::unindexed::{SkipReason, Verification};
use qproxy_analyzer::explain::hypopg::VerifyJob;
use qproxy_analyzer::pipeline::indexes::VerifyRequest;
use qproxy_analyzer::pipeline::Analyzer;
use tokio::sync::mpsc;
// Database names come from clients' StartupMessages: escaped like report text.
use qproxy_analyzer::report::escape::for_terminal_line;

use crate::analysis::catalog::CatalogConnector;
use crate::metrics::Metrics;

/// What a job produced.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A catalog load ended (`None`: it failed).
    Loaded {
        database: String,
        loaded: Option<(Arc<Catalog>, bool)>,
    },
    /// A verification batch ended: one verdict per request, in order.
    Verified {
        requests: Vec<VerifyRequest>,
        verdicts: Vec<Verification>,
    },
}

/// A job's reply, and the name of its task if it panicked.
#[derive(Debug)]
pub(crate) struct Finished {
    reply: Reply,
    panicked: Option<&'static str>,
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Whether a token is there to take at `now`.
    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now.max(self.last);
        self.tokens >= 1.0
    }

    /// Takes a token; call after [`TokenBucket::ready`] said yes.
    pub(crate) fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// Runs the jobs; lives on the analysis task.
pub(crate) struct Background {
    connector: Option<CatalogConnector>,
    replies: mpsc::Sender<Finished>,
    running: usize,
    max_running: usize,
    bucket: TokenBucket,
}

/// The reason given to suggestions whose verification task died.
const TASK_FAILED: &str = "not verified: the verification task failed (see the proxy's log)";

impl Background {
    /// `replies` is where jobs answer; hand what comes out of it to
    /// [`Background::finished`].
    pub(crate) fn new(
        connector: Option<CatalogConnector>,
        replies: mpsc::Sender<Finished>,
        max_running: usize,
        connections_per_second: f64,
    ) -> Self {
        Background {
            connector,
            replies,
            running: 0,
            max_running: max_running.max(1),
            // Two seconds' worth, so the first catalog load and the first
            // batch after it do not wait.
            bucket: TokenBucket::new(
                connections_per_second,
                2.0 * connections_per_second,
                Instant::now(),
            ),
        }
    }

    /// Starts whatever the analyzer asks for that the limits allow.
    pub(crate) fn start(
        &mut self,
        analyzer: &mut Analyzer,
        now: Instant,
        metrics: Option<&Metrics>,
    ) {
        let indexes = analyzer.indexes();
        let Some(connector) = &self.connector else {
            // No upstream to read catalogs from: every load fails at once
            // (and nothing is verified without a catalog).
            for db in indexes.take_catalog_loads(now, usize::MAX) {
                indexes.install_catalog(&db, None);
            }
            return;
        };
        while self.running < self.max_running && self.bucket.ready(now) {
            if let Some(database) = indexes.take_catalog_loads(now, 1).pop() {
                self.bucket.take();
                self.running += 1;
                if let Some(m) = metrics {
                    m.background_connection("catalog");
                }
                let fallback = Reply::Loaded {
                    database: database.clone(),
                    loaded: None,
                };
                spawn_supervised(
                    "catalog_load",
                    load(connector.clone(), database),
                    fallback,
                    self.replies.clone(),
                );
            } else if let Some(batch) = indexes.take_verification_batch() {
                self.bucket.take();
                self.running += 1;
                if let Some(m) = metrics {
                    m.background_connection("verification");
                }
                let n = batch.requests.len();
                let fallback = Reply::Verified {
                    requests: batch.requests.clone(),
                    verdicts: vec![Verification::skipped(SkipReason::Error, TASK_FAILED); n],
                };
                spawn_supervised(
                    "verification",
                    verify(connector.clone(), batch.database, batch.requests),
                    fallback,
                    self.replies.clone(),
                );
            } else {
                break;
            }
        }
    }

    /// A job ended: its results go to the analyzer, its slot is free.
    pub(crate) fn finished(
        &mut self,
        finished: Finished,
        analyzer: &mut Analyzer,
        metrics: Option<&Metrics>,
    ) {
        self.running = self.running.saturating_sub(1);
        if let (Some(task), Some(m)) = (finished.panicked, metrics) {
            m.background_panic(task);
        }
        match finished.reply {
            Reply::Loaded { database, loaded } => {
                if let Some(m) = metrics {
                    m.catalog_load(loaded.is_some());
                }
                analyzer.indexes().install_catalog(&database, loaded);
            }
            Reply::Verified { requests, verdicts } => {
                let mut verdicts = verdicts.into_iter();
                for request in &requests {
                    let verdict = verdicts
                        .next()
                        .unwrap_or_else(|| Verification::skipped(SkipReason::Error, TASK_FAILED));
                    analyzer.indexes().install_verification(request, verdict);
                }
            }
        }
    }
}

/// Runs `job` in a task of its own and sends its reply, or `fallback` if
/// the task panicked (or was cancelled), so every started job is answered.
pub(crate) fn spawn_supervised<F>(
    task: &'static str,
    job: F,
    fallback: Reply,
    replies: mpsc::Sender<Finished>,
) where
    F: Future<Output = Reply> + Send + 'static,
{
    tokio::spawn(async move {
        let finished = match tokio::spawn(job).await {
            Ok(reply) => Finished {
                reply,
                panicked: None,
            },
            Err(e) => {
                let what = if e.is_panic() {
                    panic_message(e.into_panic())
                } else {
                    "cancelled".to_string()
                };
                tracing::error!(
                    task,
                    error = %what,
                    "background task failed; its work is answered as failed and retried later"
                );
                Finished {
                    reply: fallback,
                    panicked: Some(task),
                }
            }
        };
        let _ = replies.send(finished).await;
    });
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "a panic without a message".to_string(),
        },
    }
}

async fn load(connector: CatalogConnector, database: String) -> Reply {
    let started = Instant::now();
    let loaded = match connector.load(&database).await {
        Ok((catalog, hypopg)) => {
            tracing::info!(
                database = %for_terminal_line(&database),
                tables = catalog.table_count(),
                hypopg,
                ms = started.elapsed().as_millis() as u64,
                "catalog loaded"
            );
            Some((Arc::new(catalog), hypopg))
        }
        Err(e) => {
            tracing::warn!(database = %for_terminal_line(&database), error = %e, "catalog unavailable; unindexed filter/sort detection is off for this database");
            None
        }
    };
    Reply::Loaded { database, loaded }
}

async fn verify(
    connector: CatalogConnector,
    database: String,
    requests: Vec<VerifyRequest>,
) -> Reply {
    let jobs: Vec<VerifyJob<'_>> = requests
        .iter()
        .map(|r| VerifyJob {
            sql: &r.sql,
            ddl: &r.ddl,
            user: r.user.as_deref(),
        })
        .collect();
    let verdicts = match connector.verify_batch(&database, &jobs).await {
        Ok(verdicts) => verdicts,
        Err(e) => {
            tracing::warn!(database = %for_terminal_line(&database), suggestions = jobs.len(), error = %e, "hypopg verification failed");
            let reason = format!("not verified: hypopg check failed: {e}");
            vec![Verification::skipped(SkipReason::Error, reason); jobs.len()]
        }
    };
    tracing::debug!(database = %for_terminal_line(&database), suggestions = jobs.len(), "hypopg batch checked");
    drop(jobs);
    Reply::Verified { requests, verdicts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How long a test waits for a job's answer.
    const SETTLE: Duration = Duration::from_secs(5);

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 4.0, t0);
        let mut taken = 0;
        while b.ready(t0) {
            b.take();
            taken += 1;
        }
        assert_eq!(taken, 4, "the burst");
        assert!(!b.ready(t0 + Duration::from_millis(400)));
        assert!(b.ready(t0 + Duration::from_millis(500)));
        b.take();
        // Ten idle seconds refill to the burst, no more.
        let later = t0 + Duration::from_secs(10);
        let mut taken = 0;
        while b.ready(later) {
            b.take();
            taken += 1;
        }
        assert_eq!(taken, 4);
        // Time never runs backwards for the bucket.
        assert!(!b.ready(t0));
    }

    #[tokio::test]
    async fn a_panicking_job_is_answered_with_its_fallback() {
        let (tx, mut rx) = mpsc::channel(4);
        let fallback = Reply::Loaded {
            database: "app".into(),
            loaded: None,
        };
        spawn_supervised(
            "catalog_load",
            async {
                if true {
                    panic!("index definition was NULL");
                }
                Reply::Loaded {
                    database: "never".into(),
                    loaded: None,
                }
            },
            fallback,
            tx.clone(),
        );
        let finished = tokio::time::timeout(SETTLE, rx.recv())
            .await
            .expect("answered")
            .expect("open");
        assert_eq!(finished.panicked, Some("catalog_load"));
        assert!(matches!(
            finished.reply,
            Reply::Loaded { ref database, loaded: None } if database == "app"
        ));

        spawn_supervised(
            "verification",
            async {
                Reply::Verified {
                    requests: Vec::new(),
                    verdicts: Vec::new(),
                }
            },
            Reply::Loaded {
                database: "unused".into(),
                loaded: None,
            },
            tx,
        );
        let finished = rx.recv().await.unwrap();
        assert_eq!(finished.panicked, None);
        assert!(matches!(finished.reply, Reply::Verified { .. }));
    }
}
