//! What the tracker reports, for the connection to act on.
//!
//! The tracker only keeps protocol state: it does not send, register, log
//! or read clocks. Each call takes the time from the caller ([`Now`]) and
//! leaves what happened in the tracker's outbox ([`Effect`]s, drained with
//! [`Tracker::drain_effects`](super::Tracker::drain_effects) after every
//! batch): the relay hands events to the analyzer's queue, registers the
//! cancel key, frees the startup slot, counts and logs.

use std::time::{Instant, SystemTime};

use qproxy_analyzer::event::SessionEvent;

use crate::wire::DecodeError;

/// The time of the bytes being observed, read once by the caller per
/// batch: the monotonic clock for durations, the wall clock for the times
/// events carry.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For durations.
    pub instant: Instant,
    /// For timestamps.
    pub wall: SystemTime,
}

/// One thing the connection must do, in the order the tracker saw it.
// Nearly every effect is an event, which moves on into the analyzer's queue
// by value: boxing it would allocate once per query, while the outbox's
// slots are reused.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Effect {
    /// Hand this to the analyzer (`EventSink::emit`).
    Event(SessionEvent),
    /// The server sent the session's cancel key: register it, so the
    /// proxy forwards CancelRequests for it; unregister it at close.
    BackendKey {
        /// The backend's process id.
        pid: i32,
        /// Its secret key.
        secret: Box<[u8]>,
    },
    /// Authentication finished (the first ReadyForQuery): the connection is
    /// no longer one still in startup, and gives its startup slot back.
    Started,
    /// An execution of a statement the tracker did not know (evicted by a
    /// cap, or a Parse it could not follow): no event could be built.
    Untracked,
    /// A statement forwarded but not analysed (past the per-message cap of
    /// a simple Query, or in a message not held whole).
    NotAnalysed,
    /// A message forwarded without the tracker reading it.
    Unread(Unread),
    /// The tracker lost sync with the protocol: traffic is still
    /// forwarded, analysis of this connection has stopped. Reported once.
    Desynced,
    /// Worth a line in the log, nothing more.
    Note(Note),
}

/// Why a message went by unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// A server message over `--max-message-bytes`.
    ServerOverCap {
        /// Its tag.
        tag: u8,
    },
    /// A client message that does not decode (the server answers it).
    UndecodableClient(DecodeError),
}

/// Conditions the connection logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A server message did not decode; the tracker stopped analysing.
    UndecodableServer(DecodeError),
    /// More portals were suspended than the cap allows; the oldest was
    /// reported with the rows it fetched.
    SuspendedPortalsFull {
        /// The cap.
        cap: usize,
    },
    /// A SQL text was too large for the held-bytes budget; its executions
    /// are not analysed.
    TextOverBudget {
        /// Its size.
        bytes: usize,
    },
    /// The client announced SCRAM channel binding after the proxy withheld
    /// the server's offer of it; the login is refused.
    ChannelBindingRefused,
}
