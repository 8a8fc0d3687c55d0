//! Acting on what the tracker reports: the session's side of
//! [`Effect`]. The tracker only returns what happened; this hands events to
//! the analyzer's queue, registers the cancel key (and removes it at
//! close), gives the startup slot back, counts and logs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::events::EventSink;
use crate::limits::StartupSlot;
use crate::session::cancel::CancelKeys;
use crate::tracker::{Effect, Note, Now, Tracker, Unread};

/// The clocks, read once per batch of messages for the tracker.
pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// One session's outlet for its tracker's effects, shared by both relay
/// directions (each applies what its own batch produced).
#[derive(Debug)]
pub struct SessionEffects {
    /// The analyzer's queue and the counters shared by every connection.
    sink: EventSink,
    /// Where live sessions' cancel keys are registered; `None` in tests
    /// and tools that relay no real session.
    cancel_keys: Option<Arc<CancelKeys>>,
    /// The key registered for this session, removed at close. Locked once
    /// or twice per session, never on the per-message path.
    registered: Mutex<Option<(i32, Box<[u8]>)>>,
    /// The connection's startup slot, given back when authentication
    /// finishes or the session ends.
    startup_slot: Mutex<Option<StartupSlot>>,
    /// The session's span, entered only for effects that log.
    span: tracing::Span,
}

impl SessionEffects {
    /// An outlet that emits on `sink`. Its log lines carry the connection
    /// id through the session's tracing span.
    pub fn new(sink: EventSink) -> Self {
        SessionEffects {
            sink,
            cancel_keys: None,
            registered: Mutex::new(None),
            startup_slot: Mutex::new(None),
            span: tracing::Span::none(),
        }
    }

    /// Logs in `span` (the session's).
    pub fn with_span(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
    }

    /// The session's span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Registers the session's cancel key in `keys` when the server sends
    /// it.
    pub fn with_cancel_keys(mut self, keys: Arc<CancelKeys>) -> Self {
        self.cancel_keys = Some(keys);
        self
    }

    /// Holds the connection's startup slot until the tracker reports
    /// [`Effect::Started`] or the session ends.
    pub fn with_startup_slot(self, slot: StartupSlot) -> Self {
        *crate::lock(&self.startup_slot) = Some(slot);
        self
    }

    /// Applies everything in the tracker's outbox, oldest first.
    pub fn apply_all(&self, tracker: &mut Tracker) {
        for effect in tracker.drain_effects() {
            self.apply(effect);
        }
    }

    /// The session is over: the tracker closes (at `now`), what that
    /// reports is applied, and the cancel key is forgotten.
    pub fn close(&self, tracker: &mut Tracker, now: Now) {
        tracker.close(now);
        self.apply_all(tracker);
        if let (Some(keys), Some((pid, secret))) =
            (&self.cancel_keys, crate::lock(&self.registered).take())
        {
            keys.remove(pid, &secret);
        }
        crate::lock(&self.startup_slot).take();
    }

    fn apply(&self, effect: Effect) {
        let stats = self.sink.stats();
        // The session's span is entered by the arms that log, and only
        // there: the per-query arms stay free of it.
        match effect {
            Effect::Event(event) => self.sink.emit(event),
            Effect::BackendKey { pid, secret } => {
                if let Some(keys) = &self.cancel_keys {
                    keys.insert(pid, &secret);
                    *crate::lock(&self.registered) = Some((pid, secret));
                }
            }
            Effect::Started => {
                crate::lock(&self.startup_slot).take();
            }
            Effect::Untracked => {
                stats.untracked.fetch_add(1, Ordering::Relaxed);
            }
            Effect::NotAnalysed => {
                stats
                    .statements_not_analysed
                    .fetch_add(1, Ordering::Relaxed);
            }
            Effect::Unread(why) => {
                stats.unread_messages.fetch_add(1, Ordering::Relaxed);
                let _in = self.span.enter();
                match why {
                    Unread::ServerOverCap { tag } => tracing::debug!(
                        detail = %char::from(tag),
                        "server message over --max-message-bytes forwarded without being analysed"
                    ),
                    Unread::UndecodableClient(e) => tracing::debug!(
                        detail = %e,
                        "undecodable client message forwarded without being analysed"
                    ),
                }
            }
            Effect::Desynced => {
                stats.desynced_connections.fetch_add(1, Ordering::Relaxed);
                let _in = self.span.enter();
                tracing::warn!(
                    "protocol tracker lost sync; traffic is still forwarded but this connection is no longer analysed"
                );
            }
            Effect::Note(note) => {
                let _in = self.span.enter();
                match note {
                Note::UndecodableServer(e) => {
                    tracing::debug!(error = %e, "undecodable server message")
                }
                Note::SuspendedPortalsFull { cap } => tracing::debug!(
                    cap,
                    "too many suspended portals; the oldest is reported with the rows fetched so far"
                ),
                Note::TextOverBudget { bytes } => tracing::debug!(
                    bytes,
                    "SQL text too large for the held-bytes budget; not analysed"
                ),
                Note::ChannelBindingRefused => tracing::info!(
                    "client announced SCRAM channel binding, which cannot work through the proxy; refused"
                ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use qproxy_analyzer::event::SessionEvent;

    use super::*;
    use crate::limits::StartupSlots;
    use crate::tracker::{SessionInfo, TrackerLimits};

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_session_registers_its_cancel_key_frees_its_slot_and_cleans_up_at_close() {
        let (sink, mut rx) = EventSink::channel(16);
        let keys = Arc::new(CancelKeys::default());
        let slots = Arc::new(StartupSlots::new(4, Duration::ZERO));
        let (slot, _) = slots.admit(Instant::now()).unwrap();
        let effects = SessionEffects::new(sink.clone())
            .with_cancel_keys(keys.clone())
            .with_startup_slot(slot);
        let mut t = Tracker::new(
            SessionInfo::default(),
            TrackerLimits::default(),
            false,
            now(),
        );
        t.backend(&msg(b'R', &[0, 0, 0, 0]), now());
        t.backend(&msg(b'K', &[0, 0, 1, 0, 9, 9, 9, 9]), now());
        effects.apply_all(&mut t);
        assert!(keys.contains(256, &[9, 9, 9, 9]));
        assert_eq!(slots.len(), 1, "still authenticating");
        t.backend(&msg(b'Z', b"I"), now());
        effects.apply_all(&mut t);
        assert!(
            slots.is_empty(),
            "the first ReadyForQuery gave the slot back"
        );
        // A garbled request is counted as unread.
        t.frontend(&msg(b'P', b"no terminator"), now());
        effects.apply_all(&mut t);
        assert_eq!(sink.stats().unread_messages.load(Ordering::Relaxed), 1);
        effects.close(&mut t, now());
        assert!(!keys.contains(256, &[9, 9, 9, 9]), "forgotten at close");
        assert!(matches!(rx.try_recv(), Ok(SessionEvent::Closed { .. })));
        assert_eq!(sink.stats().emitted.load(Ordering::Relaxed), 1);
    }

    /// Collects what a fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn effects_that_log_do_so_in_the_session_span() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let (sink, _rx) = EventSink::channel(4);
            let span = tracing::info_span!("session", connection_id = 41u64);
            let effects = SessionEffects::new(sink).with_span(span);
            // Applied outside the span, as the relay does.
            effects.apply(Effect::Desynced);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("lost sync"), "{text}");
        assert!(text.contains("session{connection_id=41}"), "{text}");
    }

    #[test]
    fn a_session_that_never_started_gives_its_slot_back_at_close() {
        let (sink, _rx) = EventSink::channel(4);
        let slots = Arc::new(StartupSlots::new(4, Duration::ZERO));
        let (slot, _) = slots.admit(Instant::now()).unwrap();
        let effects = SessionEffects::new(sink).with_startup_slot(slot);
        let mut t = Tracker::new(
            SessionInfo::default(),
            TrackerLimits::default(),
            false,
            now(),
        );
        assert_eq!(slots.len(), 1);
        effects.close(&mut t, now());
        assert!(slots.is_empty());
    }
}
