//! Forwarding one direction of a session: read what arrived, let the tracker
//! look at the messages it needs, write the original bytes on.
//!
//! Messages are found by their 5-byte header (the frame scanner,
//! [`crate::wire::scan`], decides what each is). A message the tracker does
//! not read (DataRow, CopyData, notices) is counted by its header and its
//! bytes pass through as they arrive, however large; a message the tracker
//! reads is held until it is whole, up to a configured cap. Past the cap, a
//! client message ends the session (08P01), while a server message streams
//! through unread like a DataRow: the server's replies are the client's to
//! read, and a huge error text must not cost the client its connection.
//! Everything that arrived in one read goes out in one write, so a
//! pipelined batch or a result set costs one syscall per buffer, not one
//! per message, and nothing is allocated per message.
//!
//! An idle direction holds no buffer: it waits until its socket is
//! readable, then borrows a buffer from its thread's spare list and gives
//! it back once everything read has been forwarded. A thousand idle
//! sessions therefore cost their task state, not 32 KiB each.
//!
//! Holding a message larger than the ordinary buffer needs memory beyond
//! it, which comes from the process-wide budget for held bytes
//! ([`HeldBudget`]): the pump reserves the message's size and holds it in a
//! buffer of exactly that size, freed (and the reservation returned) once
//! the message is forwarded. When the budget cannot cover it, the message
//! is not held: it streams through like a DataRow, and the tracker is shown
//! only its first bytes ([`Direction::not_held`]), enough to keep following
//! the protocol while not analysing what the message runs. The client sees
//! no difference, so the budget bounds memory without refusing anyone.
//!
//! While the proxy drains, the pump decides at message boundaries whether
//! the session ends there (see [`Direction::DRAIN_BEFORE_FORWARD`]): the
//! drain flag is read once per read batch, and the tracker is asked only
//! once the flag is up.
//!
//! The tracker returns what it saw as effects; the pump applies them
//! ([`SessionEffects`]) right after each batch, under the same lock.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::{HeldBudget, HeldBytes, UNCHARGED_BYTES};
use crate::net::stream::WaitReadable;
use crate::session::drain::Drain;
use crate::session::effects::{now, SessionEffects};
use crate::tracker::{Direction, Effect, Now, Tracker, Verdict};
use crate::wire::error_response::ProxyError;
use crate::wire::framing::FrameError;
use crate::wire::scan::{Frame, FrameScanner, NotHeld};

/// Read buffer size to start with; it grows for large inspected messages,
/// and a grown buffer is freed once emptied (see [`give_back`]), so one
/// large query does not pin memory for the life of the connection.
const INITIAL_BUFFER: usize = 16 * 1024;

/// Spare read buffers kept per thread for the next readable socket.
const SPARE_BUFFERS: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    /// The outbox lent to the tracker for one batch ([`with_spare_outbox`]).
    static OUTBOX: Cell<Vec<Effect>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` (a batch and the draining of its effects) with this thread's
/// spare outbox lent to the tracker, and takes it back afterwards: the
/// room for a batch's effects is kept once per thread rather than once per
/// session.
fn with_spare_outbox<R>(tracker: &mut Tracker, f: impl FnOnce(&mut Tracker) -> R) -> R {
    let mut spare = OUTBOX.take();
    tracker.swap_outbox(&mut spare);
    let result = f(tracker);
    tracker.swap_outbox(&mut spare);
    OUTBOX.set(spare);
    result
}

/// A read buffer from this thread's spares, or a new one.
fn take_buffer() -> BytesMut {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(INITIAL_BUFFER))
}

/// Keeps an emptied buffer of the usual size for the next reader; a grown
/// one (or one too many) is freed.
fn give_back(mut buf: BytesMut) {
    buf.clear();
    // Moves the start back to the beginning of the allocation (no copy:
    // the buffer is empty) and tells whether it is the usual size.
    buf.reserve(INITIAL_BUFFER);
    if buf.capacity() > 2 * INITIAL_BUFFER {
        return;
    }
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    });
}

/// Why a direction stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading from the source or writing to the destination failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A message header was impossible or over the cap.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The tracker refused a message (see [`Verdict::Refuse`]).
    #[error("{message}")]
    Refused {
        /// The error the client is sent.
        kind: ProxyError,
        /// Its text.
        message: &'static str,
    },
}

/// How a direction stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The source closed.
    Closed,
    /// The proxy drains and the session is at a boundary where it may end
    /// without losing work: nothing in flight, no transaction open.
    Drained,
}
/// The framing state of one direction.
#[derive(Debug)]
pub struct Pump {
    buf: BytesMut,
    /// Message boundaries across reads, and the cap on held messages.
    scanner: FrameScanner,
    /// Where memory for large held messages is reserved; `None` holds any
    /// message up to the cap (fuzz targets and tests).
    budget: Option<Arc<HeldBudget>>,
    /// The reservation behind `buf` while it is a buffer made for one
    /// large message; returned when that buffer is freed.
    held: Option<HeldBytes>,
    /// The proxy's drain, when the session may end at a boundary; `None`
    /// never drains (fuzz targets and tests).
    drain: Option<Arc<Drain>>,
    /// Where the tracker's effects go; `None` discards them (tests).
    effects: Option<Arc<SessionEffects>>,
}

/// The outcome of scanning the buffer.
#[derive(Debug)]
struct Scan {
    /// Leading bytes that may be forwarded as they are.
    forward: usize,
    /// A message right after them to be replaced: its length and the
    /// bytes to send instead.
    replace: Option<(usize, Vec<u8>)>,
    /// Size the buffer must reach to hold the next inspected message whole.
    need: usize,
    /// Memory reserved for that message, when it needs more than the
    /// ordinary buffer.
    reservation: Option<HeldBytes>,
}

impl Pump {
    /// A pump with the given cap on held messages and no budget.
    pub fn new(max_message: usize) -> Self {
        Pump {
            buf: BytesMut::new(),
            scanner: FrameScanner::new(max_message),
            budget: None,
            held: None,
            drain: None,
            effects: None,
        }
    }

    /// A pump that reserves memory for large held messages in `budget`,
    /// and streams those it cannot cover.
    pub fn with_budget(max_message: usize, budget: Arc<HeldBudget>) -> Self {
        Pump {
            budget: Some(budget),
            ..Pump::new(max_message)
        }
    }

    /// Ends the run at the session's next boundary once `drain` has
    /// started.
    pub(crate) fn with_drain(mut self, drain: Arc<Drain>) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Whether the proxy drains and the session may end here: at a
    /// message boundary (not inside a streamed message), nothing in flight
    /// and no transaction open. One relaxed load while not draining.
    fn drain_boundary(&self, tracker: &Mutex<Tracker>) -> bool {
        !self.scanner.in_message()
            && self.drain.as_ref().is_some_and(|d| d.is_draining())
            && crate::lock(tracker).is_idle()
    }

    /// Applies what the tracker reports to the session (see
    /// [`SessionEffects`]).
    pub fn with_effects(mut self, effects: Arc<SessionEffects>) -> Self {
        self.effects = Some(effects);
        self
    }

    /// Forwards from `src` to `dst` until `src` ends, the session reaches
    /// a boundary while the proxy drains, or either side fails.
    pub async fn run<D: Direction, R, W>(
        &mut self,
        src: &mut R,
        dst: &mut W,
        tracker: &Mutex<Tracker>,
    ) -> Result<Stopped, RelayError>
    where
        R: AsyncRead + WaitReadable + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.buf.is_empty() {
                if self.buf.capacity() > 0 {
                    give_back(std::mem::take(&mut self.buf));
                }
                // A buffer made for one large message is gone with it.
                self.held = None;
                src.wait_readable().await?;
                self.buf = take_buffer();
            }
            // A buffer made for one message has exactly its room: never
            // grown beyond what was reserved.
            if self.held.is_none() && self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(INITIAL_BUFFER.max(self.buf.len()));
            }
            if src.read_buf(&mut self.buf).await? == 0 {
                return Ok(Stopped::Closed);
            }
            if D::DRAIN_BEFORE_FORWARD && self.drain_boundary(tracker) {
                return Ok(Stopped::Drained);
            }
            loop {
                let scan = {
                    let mut t = crate::lock(tracker);
                    with_spare_outbox(&mut t, |t| {
                        let scan = self.scan::<D>(t, now());
                        match &self.effects {
                            Some(effects) => effects.apply_all(t),
                            None => t.drain_effects().for_each(drop),
                        }
                        scan
                    })?
                };
                if scan.forward > 0 {
                    dst.write_all(&self.buf[..scan.forward]).await?;
                    self.buf.advance(scan.forward);
                }
                match scan.replace {
                    Some((len, bytes)) => {
                        dst.write_all(&bytes).await?;
                        self.buf.advance(len);
                    }
                    None => {
                        self.make_room(scan.need, scan.reservation);
                        break;
                    }
                }
            }
            dst.flush().await?;
            if !D::DRAIN_BEFORE_FORWARD && self.drain_boundary(tracker) {
                return Ok(Stopped::Drained);
            }
        }
    }

    /// Makes the buffer (whose front is the message waited for) big enough
    /// for `need` bytes: within the ordinary buffer, or, with memory
    /// reserved for it, in a buffer of exactly that size.
    fn make_room(&mut self, need: usize, reservation: Option<HeldBytes>) {
        match reservation {
            Some(reservation) => {
                let mut own = BytesMut::with_capacity(need);
                own.extend_from_slice(&self.buf);
                give_back(std::mem::replace(&mut self.buf, own));
                self.held = Some(reservation);
            }
            None if need > self.buf.len() => self.buf.reserve(need - self.buf.len()),
            None => {}
        }
    }

    /// Walks the complete messages at the front of the buffer.
    fn scan<D: Direction>(&mut self, tracker: &mut Tracker, now: Now) -> Result<Scan, RelayError> {
        let capacity = self.buf.capacity();
        let mut frames = self.scanner.frames(&self.buf, D::OVER_CAP);
        loop {
            let header = match frames.next(|tag| D::inspected(tracker, tag))? {
                Frame::Whole(msg) => match D::observe(tracker, msg, now) {
                    Verdict::Forward => continue,
                    Verdict::Replace(bytes) => {
                        return Ok(Scan {
                            replace: Some((msg.len(), bytes)),
                            ..Scan::forward(frames.pos() - msg.len())
                        })
                    }
                    Verdict::Refuse { kind, message } => {
                        return Err(RelayError::Refused { kind, message })
                    }
                },
                Frame::Streamed { tag, whole } => {
                    D::streamed(tracker, tag, whole);
                    continue;
                }
                Frame::NotHeld { tag, prefix, why } => {
                    D::not_held(tracker, tag, prefix, why, now);
                    continue;
                }
                Frame::Wait { need } => {
                    return Ok(Scan {
                        need,
                        ..Scan::forward(frames.pos())
                    })
                }
                Frame::Incomplete(header) => header,
            };
            // An inspected message not whole yet: held if it fits the
            // ordinary buffer (or the one made for it) or the budget covers
            // it; else it passes through once its first bytes are here for
            // the tracker.
            let pos = frames.pos();
            let available = self.buf.len() - pos;
            let room = capacity - pos;
            let reservation = match &self.budget {
                _ if header.total <= UNCHARGED_BYTES.max(room) => None,
                None => None,
                Some(budget) => match budget.try_reserve(header.total) {
                    Some(reserved) => Some(reserved),
                    None if available < UNCHARGED_BYTES => {
                        return Ok(Scan {
                            need: UNCHARGED_BYTES,
                            ..Scan::forward(pos)
                        });
                    }
                    None => {
                        budget.note_not_held();
                        if let Frame::NotHeld { tag, prefix, why } =
                            frames.pass_through(header, NotHeld::OverBudget)
                        {
                            D::not_held(tracker, tag, prefix, why, now);
                        }
                        continue;
                    }
                },
            };
            return Ok(Scan {
                need: header.total,
                reservation,
                ..Scan::forward(pos)
            });
        }
    }
}

impl Scan {
    /// Forward `n` bytes; nothing else to do.
    fn forward(n: usize) -> Scan {
        Scan {
            forward: n,
            replace: None,
            need: 0,
            reservation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use proptest::prelude::*;
    use tokio::io::ReadBuf;

    use super::*;
    use crate::tracker::{Backend, Frontend, SessionInfo, TrackerLimits};

    /// A reader that hands out its data in the given chunk sizes, the way
    /// a socket may split messages anywhere.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        next: usize,
        /// Records the budget's highest use seen at any read.
        probe: Option<(Arc<HeldBudget>, u64)>,
    }

    impl WaitReadable for Chunked {
        fn wait_readable(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send {
            std::future::ready(Ok(()))
        }
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let size = self
                .sizes
                .get(self.next)
                .copied()
                .unwrap_or(usize::MAX)
                .max(1);
            self.next += 1;
            if let Some((budget, peak)) = &mut self.probe {
                *peak = (*peak).max(budget.held());
            }
            let n = size.min(self.data.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// A tracker past authentication, so every decoder is exercised.
    fn tracker() -> Mutex<Tracker> {
        let mut t = Tracker::new(
            SessionInfo::default(),
            TrackerLimits::default(),
            false,
            now(),
        );
        t.backend(b"Z\0\0\0\x05I", now());
        t.drain_effects().for_each(drop);
        Mutex::new(t)
    }

    #[test]
    fn spare_buffers_are_reused_and_grown_ones_freed() {
        // Each test runs on its own thread, so the spare list starts empty.
        let mut a = take_buffer();
        assert!(a.capacity() >= INITIAL_BUFFER);
        a.extend_from_slice(b"forwarded");
        a.advance(9);
        let ptr = a.as_ptr();
        give_back(a);
        // The same allocation comes back, rewound to its start.
        let b = take_buffer();
        assert!(b.is_empty() && b.capacity() >= INITIAL_BUFFER);
        assert_eq!(b.as_ptr(), ptr.wrapping_sub(9));
        let mut big = BytesMut::with_capacity(4 * INITIAL_BUFFER);
        big.extend_from_slice(&[0u8; 100]);
        give_back(big);
        give_back(b);
        assert_eq!(SPARE.with(|s| s.borrow().len()), 1);
        for _ in 0..SPARE_BUFFERS + 10 {
            give_back(BytesMut::with_capacity(INITIAL_BUFFER));
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), SPARE_BUFFERS);
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Runs `pump` over `data`, read in chunks of `sizes`, to completion on
    /// a runtime of its own: how it stopped, what it forwarded, and the
    /// source (whose probe recorded the budget's peak use, when given one).
    fn pump_through<D: Direction>(
        pump: Pump,
        data: &[u8],
        sizes: Vec<usize>,
        probe: Option<Arc<HeldBudget>>,
        tracker: &Mutex<Tracker>,
    ) -> (Result<Stopped, RelayError>, Vec<u8>, Chunked) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut pump = pump;
            let mut src = Chunked {
                data: data.to_vec(),
                pos: 0,
                sizes,
                next: 0,
                probe: probe.map(|budget| (budget, 0)),
            };
            let mut out = Vec::new();
            let stopped = pump.run::<D, _, _>(&mut src, &mut out, tracker).await;
            (stopped, out, src)
        })
    }

    fn relay<D: Direction>(
        data: &[u8],
        sizes: Vec<usize>,
        cap: usize,
    ) -> Result<Vec<u8>, RelayError> {
        let (stopped, out, _) = pump_through::<D>(Pump::new(cap), data, sizes, None, &tracker());
        stopped.map(|_| out)
    }

    fn backend_stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(msg(b'T', b"\0\0"));
        for i in 0..50u8 {
            s.extend(msg(b'D', &[0, 1, 0, 0, 0, 1, i]));
        }
        s.extend(msg(b'D', &vec![7u8; 100_000]));
        s.extend(msg(b'N', b"SNOTICE\0Mhi\0\0"));
        s.extend(msg(b'C', b"SELECT 51\0"));
        s.extend(msg(b'Z', b"I"));
        s
    }

    #[test]
    fn forwards_bytes_unchanged_however_they_are_split() {
        let data = backend_stream();
        for size in [1, 2, 3, 5, 7, 64, 4096, usize::MAX] {
            let out = relay::<Backend>(&data, vec![size; data.len()], 1 << 20).unwrap();
            assert_eq!(out, data, "chunk size {size}");
        }
    }

    #[test]
    fn streamed_messages_may_exceed_the_cap() {
        // DataRow is not held, so the cap on held messages does not apply.
        let data = backend_stream();
        assert_eq!(
            relay::<Backend>(&data, vec![1000; 1000], 1024).unwrap(),
            data
        );
    }

    #[test]
    fn oversized_inspected_message_is_refused() {
        let mut q = msg(b'Q', &vec![b'x'; 5000]);
        q.push(0);
        let err = relay::<Frontend>(&q, vec![], 1024).unwrap_err();
        assert!(
            matches!(err, RelayError::Frame(FrameError::TooLarge { .. })),
            "{err}"
        );
    }

    #[test]
    fn oversized_server_message_streams_through_unread() {
        // An ErrorResponse four times the cap, between ordinary replies.
        let mut body = b"SERROR\0VERROR\0CP0001\0M".to_vec();
        body.extend(std::iter::repeat_n(b'x', 4096));
        body.extend_from_slice(b"\0\0");
        let mut data = msg(b'E', &body);
        data.extend(msg(b'Z', b"I"));
        for size in [1, 7, 100, 1000, usize::MAX] {
            let out = relay::<Backend>(&data, vec![size; data.len()], 1024).unwrap();
            assert_eq!(out, data, "chunk size {size}");
        }
    }

    #[test]
    fn impossible_length_is_refused() {
        let err = relay::<Frontend>(&[b'Q', 0, 0, 0, 2, 0], vec![], 1024).unwrap_err();
        assert!(
            matches!(err, RelayError::Frame(FrameError::BadLength { .. })),
            "{err}"
        );
    }

    /// Relays client traffic through a pump with `budget`: the output and
    /// the budget's peak use seen at reads.
    fn relay_with_budget(
        data: &[u8],
        sizes: Vec<usize>,
        budget: &Arc<HeldBudget>,
    ) -> (Vec<u8>, u64, Mutex<Tracker>) {
        let t = tracker();
        let pump = Pump::with_budget(64 << 20, budget.clone());
        let (stopped, out, src) =
            pump_through::<Frontend>(pump, data, sizes, Some(budget.clone()), &t);
        stopped.unwrap();
        (out, src.probe.unwrap().1, t)
    }

    /// A large Query and a Sync behind it.
    fn large_query_then_sync() -> Vec<u8> {
        let mut q = msg(b'Q', &[b"select '", &[b'x'; 100_000][..], b"'\0"].concat());
        q.extend(msg(b'S', b""));
        q
    }

    #[test]
    fn a_large_message_the_budget_covers_is_held_in_a_buffer_of_its_own() {
        let data = large_query_then_sync();
        let budget = Arc::new(HeldBudget::new(1 << 20));
        let (out, peak, t) = relay_with_budget(&data, vec![4096; 100], &budget);
        assert_eq!(out, data);
        // The message's size was reserved while it was held; the buffer,
        // and with it the reservation, went once it was forwarded.
        let message = (data.len() - 5) as u64;
        assert_eq!(peak, message);
        assert_eq!(budget.not_held(), 0);
        assert_eq!(budget.held(), 0);
        drop(t);
    }

    #[test]
    fn a_large_message_the_budget_cannot_cover_streams_through_unchanged() {
        let data = large_query_then_sync();
        for size in [1, 7, 1000, 4096, 65536, usize::MAX] {
            let budget = Arc::new(HeldBudget::new(1 << 20));
            // Someone else holds most of it.
            let taken = budget.try_reserve((1 << 20) - 50_000).unwrap();
            let (out, peak, t) = relay_with_budget(&data, vec![size; 200_000], &budget);
            assert_eq!(out, data, "chunk size {size}");
            assert_eq!(peak, taken.bytes(), "nothing more was held");
            assert_eq!(budget.not_held(), 1);
            // The tracker followed it: a Query and a Sync are pending.
            assert!(!crate::lock(&t).is_idle());
        }
    }

    #[test]
    fn large_inspected_message_is_held_then_forwarded_whole() {
        let mut body = vec![b'a'; 5 * 1024 * 1024];
        body.push(0);
        let q = msg(b'Q', &body);
        let out = relay::<Frontend>(&q, vec![65536; 200], 64 << 20).unwrap();
        assert_eq!(out, q);
    }

    /// Relays `data` (split into `sizes`) through a pump of direction `D`
    /// while the proxy drains; `tracker` has seen what came before.
    fn relay_draining<D: Direction>(
        data: &[u8],
        sizes: Vec<usize>,
        tracker: &Mutex<Tracker>,
    ) -> (Stopped, Vec<u8>) {
        let drain = Arc::new(Drain::default());
        drain.start();
        let pump = Pump::new(1 << 20).with_drain(drain);
        let (stopped, out, _) = pump_through::<D>(pump, data, sizes, None, tracker);
        (stopped.unwrap(), out)
    }

    fn query(sql: &str) -> Vec<u8> {
        msg(b'Q', &[sql.as_bytes(), b"\0"].concat())
    }

    #[test]
    fn the_outbox_is_lent_per_batch_so_an_idle_session_holds_none() {
        let t = tracker();
        // The tracker's own outbox was used (and grown) at login.
        crate::lock(&t).frontend(&query("select 1"), now());
        let mut own = Vec::new();
        crate::lock(&t).swap_outbox(&mut own);
        assert!(own.capacity() > 0);
        crate::lock(&t).swap_outbox(&mut Vec::new());
        let replies = [msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat();
        let (stopped, out, _) =
            pump_through::<Backend>(Pump::new(1 << 20), &replies, vec![], None, &t);
        assert_eq!((stopped.unwrap(), out), (Stopped::Closed, replies));
        // The query's event went through this thread's outbox, which keeps
        // the room; the session's tracker holds none.
        let mut held = Vec::new();
        crate::lock(&t).swap_outbox(&mut held);
        assert_eq!(held.capacity(), 0);
        assert!(OUTBOX.take().capacity() > 0);
    }

    #[test]
    fn swapping_the_outbox_keeps_undrained_effects() {
        let t = tracker();
        let mut t = crate::lock(&t);
        t.frontend(&query("select 1"), now());
        t.backend(&msg(b'C', b"SELECT 1\0"), now());
        t.backend(&msg(b'Z', b"I"), now());
        let mut spare = Vec::with_capacity(8);
        t.swap_outbox(&mut spare);
        assert!(spare.is_empty());
        assert!(matches!(
            t.drain_effects().next(),
            Some(Effect::Event(qproxy_analyzer::event::SessionEvent::Query(
                _
            )))
        ));
    }

    #[test]
    fn a_draining_idle_session_does_not_forward_the_next_request() {
        let t = tracker();
        let (stopped, out) = relay_draining::<Frontend>(&query("begin"), vec![], &t);
        assert_eq!(stopped, Stopped::Drained);
        assert!(out.is_empty(), "the BEGIN reached the server");
    }

    #[test]
    fn a_draining_session_in_a_transaction_forwards_its_requests() {
        let t = tracker();
        {
            let mut t = crate::lock(&t);
            t.frontend(&query("begin"), now());
            t.backend(&msg(b'C', b"BEGIN\0"), now());
            t.backend(b"Z\0\0\0\x05T", now());
        }
        let data = [query("insert into t values (1)"), query("commit")].concat();
        let (stopped, out) = relay_draining::<Frontend>(&data, vec![], &t);
        assert_eq!(stopped, Stopped::Closed);
        assert_eq!(out, data);
    }

    #[test]
    fn a_draining_session_ends_after_the_ready_for_query_that_ends_its_transaction() {
        let t = tracker();
        crate::lock(&t).frontend(&query("begin"), now());
        // The transaction opens (no boundary), then the client commits.
        let begun = [msg(b'C', b"BEGIN\0"), msg(b'Z', b"T")].concat();
        let (stopped, out) = relay_draining::<Backend>(&begun, vec![], &t);
        assert_eq!((stopped, out), (Stopped::Closed, begun));
        crate::lock(&t).frontend(&query("commit"), now());
        let committed = [msg(b'C', b"COMMIT\0"), msg(b'Z', b"I")].concat();
        // A notice the server sends later is not read: the session ended
        // at the ReadyForQuery, which the client got.
        let notice = msg(b'N', b"SNOTICE\0Mlater\0\0");
        let data = [committed.clone(), notice].concat();
        let (stopped, out) = relay_draining::<Backend>(&data, vec![committed.len(), 100], &t);
        assert_eq!(stopped, Stopped::Drained);
        assert_eq!(out, committed);
    }

    proptest! {
        #[test]
        fn any_split_of_valid_traffic_is_forwarded_exactly(
            sizes in proptest::collection::vec(1usize..300, 1..200)
        ) {
            let data = backend_stream();
            prop_assert_eq!(relay::<Backend>(&data, sizes, 1 << 20).unwrap(), data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let _ = relay::<Frontend>(&data, sizes.clone(), 4096);
            let _ = relay::<Backend>(&data, sizes, 4096);
        }
    }
}
