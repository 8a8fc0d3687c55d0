//! The drain as a session sees it: when it starts, and when its grace
//! period is over.
//!
//! A session does not poll for the drain. It learns of it in two places:
//! its watchdog is woken once when the drain starts (to close a session
//! that is idle at that moment, and to cut one still in a transaction when
//! the grace period is over), and its relay reads [`Drain::is_draining`]
//! once per read batch, so the session ends at its own next message
//! boundary (the server's ReadyForQuery outside a transaction, or the
//! client's next request while idle) — see [`crate::session::relay`].

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// The proxy's drain, shared by the listener (which starts it) and every
/// session (which ends itself by it).
#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// Raised when the drain starts, before `started` is cancelled. The
    /// relay reads it once per read batch: a relaxed load, where the
    /// token's own check takes a lock. Relaxed is enough: a session whose
    /// relay misses the store is woken through `started`, whose
    /// cancellation is ordered after it.
    draining: AtomicBool,
    /// Cancelled when the drain starts: wakes the sessions' watchdogs.
    started: CancellationToken,
    /// Cancelled when the grace period is over: sessions still in a
    /// transaction are cut.
    grace_over: CancellationToken,
}

impl Drain {
    /// Starts the drain: sessions end at their next boundary from now on.
    pub(crate) fn start(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.started.cancel();
    }

    /// Ends the grace period: sessions still in a transaction are cut.
    pub(crate) fn end_grace(&self) {
        self.grace_over.cancel();
    }

    /// Whether the drain has started; cheap enough for the relay's path.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Resolves once the drain has started.
    pub(crate) async fn started(&self) {
        self.started.cancelled().await;
    }

    /// Resolves once the grace period is over.
    pub(crate) async fn grace_over(&self) {
        self.grace_over.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_rises_with_the_start_and_the_grace_ends_apart() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let drain = Drain::default();
        assert!(!drain.is_draining());
        drain.start();
        assert!(drain.is_draining());
        rt.block_on(async {
            drain.started().await;
            // Starting the drain does not end the grace period.
            let cut =
                tokio::time::timeout(std::time::Duration::from_millis(20), drain.grace_over())
                    .await;
            assert!(cut.is_err());
            drain.end_grace();
            drain.grace_over().await;
        });
    }
}
