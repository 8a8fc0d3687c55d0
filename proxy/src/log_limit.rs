//! Rate-limited logging for events anyone who can reach the port can cause
//! at will: bogus CancelRequests, clients that connect and hang up, a full
//! proxy refusing clients, an upstream that refuses every connect. One log
//! line each would let a port scan or a crash-looping client flood the log
//! (and whatever ships it).
//!
//! A [`LogLimiter`] lets the first event of a window through; the rest of
//! the window are counted, and once the window ends one summary line says
//! how many were left out. A steady flood therefore costs two lines per
//! interval and kind, and no count is lost.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a window lasts: one event line and at most one summary line per
/// kind of event in this time.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Log it.
    Log,
    /// Leave it out; it has been counted.
    Suppress {
        /// Set on the first suppression since the last summary: the moment
        /// the summary is due (the end of the window). The caller arranges
        /// for [`LogLimiter::take_suppressed`] to be logged then.
        summary_at: Option<Instant>,
    },
}

/// Counts events of one kind and decides which are logged. See the module
/// docs.
#[derive(Debug)]
pub struct LogLimiter {
    /// What the events are, plural, for the summary line ("bogus cancel
    /// requests").
    what: &'static str,
    interval: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// When the current window began; `None` before the first event.
    started: Option<Instant>,
    /// Events left out since the last summary.
    suppressed: u64,
    /// A summary has been arranged and not yet taken.
    summary_pending: bool,
}

impl LogLimiter {
    /// A limiter for events described as `what`, one window per `interval`.
    pub const fn new(what: &'static str, interval: Duration) -> Self {
        LogLimiter {
            what,
            interval,
            state: Mutex::new(Window {
                started: None,
                suppressed: 0,
                summary_pending: false,
            }),
        }
    }

    /// Decides for one event that happens at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut w = crate::lock(&self.state);
        let expired = w
            .started
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            w.started = Some(now);
            return Admission::Log;
        }
        w.suppressed += 1;
        if w.summary_pending {
            return Admission::Suppress { summary_at: None };
        }
        w.summary_pending = true;
        let end = w.started.map_or(now, |start| start + self.interval);
        Admission::Suppress {
            summary_at: Some(end),
        }
    }

    /// The events left out since the last summary, resetting the count;
    /// the next suppression arranges a new summary.
    pub fn take_suppressed(&self) -> u64 {
        let mut w = crate::lock(&self.state);
        w.summary_pending = false;
        std::mem::take(&mut w.suppressed)
    }

    /// [`admit`](Self::admit) now; when this starts suppressing, a timer on
    /// the current tokio runtime logs the summary at the end of the window.
    /// `true` when the caller should log the event.
    pub fn should_log(&'static self) -> bool {
        match self.admit(Instant::now()) {
            Admission::Log => true,
            Admission::Suppress { summary_at: None } => false,
            Admission::Suppress {
                summary_at: Some(at),
            } => {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            tokio::time::sleep_until(at.into()).await;
                            self.log_summary();
                        });
                    }
                    // No runtime to wait on: the count stays and goes out
                    // with a later summary.
                    Err(_) => self.take_pending_back(),
                }
                false
            }
        }
    }

    /// Logs the summary line, if anything was left out.
    fn log_summary(&self) {
        let suppressed = self.take_suppressed();
        if suppressed > 0 {
            tracing::info!(
                suppressed,
                events = self.what,
                interval = ?self.interval,
                "{suppressed} more {} not logged",
                self.what
            );
        }
    }

    /// Undoes `summary_pending` when no summary could be arranged, so the
    /// next suppression tries again.
    fn take_pending_back(&self) {
        crate::lock(&self.state).summary_pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn first_event_of_a_window_is_logged_the_rest_counted() {
        let limiter = LogLimiter::new("test events", 10 * SECOND);
        let t0 = Instant::now();
        assert_eq!(limiter.admit(t0), Admission::Log);
        // The first suppression arranges the summary for the end of the window.
        assert_eq!(
            limiter.admit(t0 + SECOND),
            Admission::Suppress {
                summary_at: Some(t0 + 10 * SECOND)
            }
        );
        for i in 2..=9 {
            assert_eq!(
                limiter.admit(t0 + i * SECOND),
                Admission::Suppress { summary_at: None }
            );
        }
        assert_eq!(limiter.take_suppressed(), 9);
        assert_eq!(limiter.take_suppressed(), 0);
        // A new window logs again.
        assert_eq!(limiter.admit(t0 + 10 * SECOND), Admission::Log);
    }

    #[test]
    fn a_steady_flood_costs_one_event_and_one_summary_per_window() {
        let limiter = LogLimiter::new("test events", 10 * SECOND);
        let t0 = Instant::now();
        let (mut logged, mut summaries, mut counted) = (0, 0, 0);
        let mut due = None;
        // 1,000 events over 60 s; the summary is taken when it is due.
        for i in 0..1000u32 {
            let now = t0 + i * 60 * SECOND / 1000;
            if due.is_some_and(|at| now >= at) {
                counted += limiter.take_suppressed();
                summaries += 1;
                due = None;
            }
            match limiter.admit(now) {
                Admission::Log => logged += 1,
                Admission::Suppress { summary_at } => {
                    if let Some(at) = summary_at {
                        assert!(due.is_none(), "one summary at a time");
                        due = Some(at);
                    }
                }
            }
        }
        counted += limiter.take_suppressed();
        summaries += 1;
        assert_eq!(logged, 6, "one per 10 s window");
        assert_eq!(summaries, 6);
        assert_eq!(logged + counted, 1000, "nothing is lost");
    }

    #[test]
    fn a_late_summary_takes_what_the_next_window_counted_too() {
        let limiter = LogLimiter::new("test events", 10 * SECOND);
        let t0 = Instant::now();
        assert_eq!(limiter.admit(t0), Admission::Log);
        assert!(matches!(
            limiter.admit(t0 + SECOND),
            Admission::Suppress {
                summary_at: Some(_)
            }
        ));
        // The summary timer has not fired yet when the next window begins.
        assert_eq!(limiter.admit(t0 + 11 * SECOND), Admission::Log);
        assert_eq!(
            limiter.admit(t0 + 12 * SECOND),
            Admission::Suppress { summary_at: None }
        );
        assert_eq!(limiter.take_suppressed(), 2);
        // After the summary, the next suppression arranges another.
        assert!(matches!(
            limiter.admit(t0 + 13 * SECOND),
            Admission::Suppress {
                summary_at: Some(_)
            }
        ));
    }

    #[tokio::test]
    async fn should_log_arranges_the_summary_on_the_runtime() {
        static LIMITER: LogLimiter = LogLimiter::new("test events", Duration::from_millis(100));
        assert!(LIMITER.should_log());
        for _ in 0..5 {
            assert!(!LIMITER.should_log());
        }
        assert!(crate::lock(&LIMITER.state).summary_pending);
        // The summary timer (due first on this runtime) took the count at
        // the end of the window.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!crate::lock(&LIMITER.state).summary_pending);
        assert_eq!(LIMITER.take_suppressed(), 0);
    }
}
