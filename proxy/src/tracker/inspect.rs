//! The two directions of a session as the tracker sees them, and the frame
//! scanner and the tracker run together over bytes in memory.
//!
//! The relay (`session::relay`) drives the same [`Direction`] calls around
//! its reads and writes; [`inspect_all`] drives them with no I/O at all, for
//! fuzz targets and benchmarks.

use super::{Now, Tracker, Verdict};
use crate::wire::backend;
use crate::wire::error_response::ProxyError;
use crate::wire::framing::FrameError;
use crate::wire::scan::{Frame, FrameScanner, NotHeld, OverCap};

/// Which way the bytes flow; decides which messages the tracker reads.
pub trait Direction {
    /// What an inspected message over the cap is in this direction.
    const OVER_CAP: OverCap;
    /// Where a draining session meets its boundary in this direction:
    /// before a read batch is forwarded (a client's next request, sent
    /// while the session is idle, is answered with 57P01 instead of
    /// reaching the server) or after it (the server's ReadyForQuery that
    /// ends a transaction reaches the client first).
    const DRAIN_BEFORE_FORWARD: bool;
    /// Whether the tracker needs the whole message with this tag.
    fn inspected(tracker: &Tracker, tag: u8) -> bool;
    /// Shows a whole message to the tracker.
    fn observe(tracker: &mut Tracker, msg: &[u8], now: Now) -> Verdict;
    /// Shows a message that streams through: its tag, and its bytes when
    /// the whole message is already in the buffer.
    fn streamed(tracker: &mut Tracker, tag: u8, whole: Option<&[u8]>);
    /// Shows the start of an inspected message that is forwarded without
    /// being held whole (see [`NotHeld`]).
    fn not_held(tracker: &mut Tracker, tag: u8, prefix: &[u8], why: NotHeld, now: Now);
}

/// Client → server.
#[derive(Debug)]
pub enum Frontend {}

impl Direction for Frontend {
    const OVER_CAP: OverCap = OverCap::Refuse;
    const DRAIN_BEFORE_FORWARD: bool = true;
    fn inspected(tracker: &Tracker, tag: u8) -> bool {
        tracker.frontend_inspects(tag)
    }
    fn observe(tracker: &mut Tracker, msg: &[u8], now: Now) -> Verdict {
        tracker.frontend(msg, now)
    }
    fn streamed(_tracker: &mut Tracker, _tag: u8, _whole: Option<&[u8]>) {}
    fn not_held(tracker: &mut Tracker, _tag: u8, prefix: &[u8], _why: NotHeld, now: Now) {
        // Only the budget keeps a client message from being held: over the
        // cap it is refused (`OverCap::Refuse`).
        tracker.frontend_unheld(prefix, now)
    }
}

/// Server → client.
#[derive(Debug)]
pub enum Backend {}

impl Direction for Backend {
    const OVER_CAP: OverCap = OverCap::Stream;
    const DRAIN_BEFORE_FORWARD: bool = false;
    fn inspected(_tracker: &Tracker, tag: u8) -> bool {
        backend::is_inspected(tag)
    }
    fn observe(tracker: &mut Tracker, msg: &[u8], now: Now) -> Verdict {
        tracker.backend(msg, now)
    }
    fn streamed(tracker: &mut Tracker, tag: u8, whole: Option<&[u8]>) {
        tracker.backend_streamed(tag, whole)
    }
    fn not_held(tracker: &mut Tracker, tag: u8, prefix: &[u8], why: NotHeld, now: Now) {
        tracker.backend_unheld(tag, prefix, why, now)
    }
}

/// Why [`inspect_all`] stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A message header was impossible or over the cap.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The tracker refused a message (see [`Verdict::Refuse`]).
    #[error("{message}")]
    Refused {
        /// The error the client would be sent.
        kind: ProxyError,
        /// Its text.
        message: &'static str,
    },
}

/// Runs the frame scanner and the tracker over bytes already in memory,
/// without I/O and with no budget (any message up to `max_message` is
/// held): the entry point for fuzz targets and benchmarks. Returns how many
/// bytes would have been forwarded; a trailing incomplete message the
/// tracker reads is left unforwarded. What the tracker reported stays in
/// its outbox for the caller to drain.
pub fn inspect_all<D: Direction>(
    data: &[u8],
    tracker: &mut Tracker,
    max_message: usize,
    now: Now,
) -> Result<usize, InspectError> {
    let mut scanner = FrameScanner::new(max_message);
    let mut frames = scanner.frames(data, D::OVER_CAP);
    loop {
        match frames.next(|tag| D::inspected(tracker, tag))? {
            Frame::Whole(msg) => match D::observe(tracker, msg, now) {
                Verdict::Forward | Verdict::Replace(_) => {}
                Verdict::Refuse { kind, message } => {
                    return Err(InspectError::Refused { kind, message })
                }
            },
            Frame::Streamed { tag, whole } => D::streamed(tracker, tag, whole),
            Frame::NotHeld { tag, prefix, why } => D::not_held(tracker, tag, prefix, why, now),
            Frame::Incomplete(_) | Frame::Wait { .. } => return Ok(frames.pos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tracker::test_support::{b, now, parse, sync};
    use crate::tracker::{Effect, SessionInfo, TrackerLimits};

    /// A tracker past authentication, so every decoder is exercised.
    fn tracker() -> Tracker {
        let mut t = Tracker::new(
            SessionInfo::default(),
            TrackerLimits::default(),
            false,
            now(),
        );
        t.backend(b"Z\0\0\0\x05I", now());
        t.drain_effects().for_each(drop);
        t
    }

    #[test]
    fn inspects_whole_messages_and_leaves_a_partial_one() {
        let mut t = tracker();
        let mut data = parse("", "select 1");
        data.extend(sync());
        let whole = data.len();
        data.extend(&parse("", "select 2")[..6]);
        assert_eq!(
            inspect_all::<Frontend>(&data, &mut t, 1 << 20, now()).unwrap(),
            whole
        );
        assert!(!t.is_idle(), "a Parse and a Sync are pending");
        let replies = [b('1', b""), b('Z', b"I")].concat();
        assert_eq!(
            inspect_all::<Backend>(&replies, &mut t, 1 << 20, now()).unwrap(),
            replies.len()
        );
        assert!(t.is_idle());
        assert!(t.drain_effects().all(|e| !matches!(e, Effect::Desynced)));
    }

    #[test]
    fn a_client_message_over_the_cap_is_an_error() {
        let mut t = tracker();
        let q = parse("", &"x".repeat(5000));
        assert!(matches!(
            inspect_all::<Frontend>(&q, &mut t, 1024, now()),
            Err(InspectError::Frame(FrameError::TooLarge { .. }))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_interleavings_never_panic(
            chunks in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..40)
        ) {
            let mut t = tracker();
            for (to_server, bytes) in chunks {
                let _ = if to_server {
                    inspect_all::<Frontend>(&bytes, &mut t, 4096, now())
                } else {
                    inspect_all::<Backend>(&bytes, &mut t, 4096, now())
                };
                t.drain_effects().for_each(drop);
            }
        }
    }
}
