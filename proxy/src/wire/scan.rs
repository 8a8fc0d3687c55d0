//! Splitting a read buffer into messages: the pure half of a relay
//! direction.
//!
//! The relay reads whatever the socket has into a buffer and asks the
//! scanner, message by message, what is there. The caller says which tags it
//! wants to read whole (`inspected`); the scanner answers with a [`Frame`]:
//! a whole inspected message, a message passing through by its header (a
//! DataRow, CopyData, a notice), one that passes through without being held
//! because it is too large, or "wait for more bytes". It checks the
//! lengths (impossible ones, the cap on held messages) and remembers, across
//! reads, how much of a message that passes through is still to come.
//!
//! Nothing here reads, writes or allocates: the relay does the I/O and the
//! held-bytes budget, the tracker the reading, and tests and fuzz targets
//! drive the scanner over plain slices.

use super::framing::{self, FrameError, Header};

/// How much of a message over the cap is waited for before it passes
/// through, so that its reader sees the leading fields (an error's
/// SQLSTATE): no more than the smallest cap allowed (1 KiB).
pub const OVER_CAP_PREFIX: usize = 1024;

/// What happens to an inspected message larger than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCap {
    /// It is an error ([`FrameError::TooLarge`]): client messages, where a
    /// huge one is either an attack or a bug, and the session ends (08P01).
    Refuse,
    /// It passes through as [`Frame::NotHeld`]: server messages, which are
    /// the client's to read (a huge error text must not cost the client its
    /// connection).
    Stream,
}

/// Why an inspected message passes through without being held whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// It is over `--max-message-bytes` ([`OverCap::Stream`]).
    OverCap,
    /// The budget for held bytes could not cover it (the relay decides, see
    /// [`Frames::pass_through`]).
    OverBudget,
}

/// One step of a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An inspected message, whole: tag, length and body.
    Whole(&'a [u8]),
    /// A message that is not inspected; `whole` is the message when it is
    /// all in the buffer (the rest of a partial one is skipped in later
    /// reads).
    Streamed {
        /// The message's tag.
        tag: u8,
        /// The whole message, when it is all in the buffer.
        whole: Option<&'a [u8]>,
    },
    /// An inspected message passing through without being held whole:
    /// `prefix` is its header and as much of its body as is in the buffer
    /// (at least [`OVER_CAP_PREFIX`] bytes of it, or all of it, when over
    /// the cap).
    NotHeld {
        /// The message's tag.
        tag: u8,
        /// Its first bytes, header included.
        prefix: &'a [u8],
        /// Why it is not held.
        why: NotHeld,
    },
    /// An inspected message within the cap that is not whole yet. Nothing
    /// was consumed: the caller either stops and waits for `header.total`
    /// bytes from [`Frames::pos`], or lets it pass through with
    /// [`Frames::pass_through`].
    Incomplete(Header),
    /// Nothing more can be done with this buffer: everything before
    /// [`Frames::pos`] may be forwarded, and the next scan needs the buffer
    /// to hold `need` bytes from there (0: whatever arrives next).
    Wait {
        /// Bytes needed from [`Frames::pos`] before scanning on.
        need: usize,
    },
}

/// The framing state of one relay direction, kept across reads.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    /// Bytes of a message passing through that have not arrived yet.
    skip: usize,
    /// Cap for messages that must be held whole.
    max_message: usize,
}

impl FrameScanner {
    /// A scanner with the given cap on messages held whole.
    pub fn new(max_message: usize) -> Self {
        FrameScanner {
            skip: 0,
            max_message,
        }
    }

    /// Whether the scanner is inside a message passing through (part of it
    /// forwarded, the rest still to come): not a message boundary.
    pub fn in_message(&self) -> bool {
        self.skip > 0
    }

    /// Starts a scan of `buf`, the bytes not forwarded yet; `over_cap`
    /// says what an inspected message over the cap is.
    pub fn frames<'s, 'a>(&'s mut self, buf: &'a [u8], over_cap: OverCap) -> Frames<'s, 'a> {
        Frames {
            scanner: self,
            buf,
            pos: 0,
            over_cap,
        }
    }
}

/// One scan over a buffer: call [`Frames::next`] until it answers
/// [`Frame::Wait`] or [`Frame::Incomplete`].
#[derive(Debug)]
pub struct Frames<'s, 'a> {
    scanner: &'s mut FrameScanner,
    buf: &'a [u8],
    pos: usize,
    over_cap: OverCap,
}

impl<'a> Frames<'_, 'a> {
    /// Bytes at the front of the buffer that were scanned past: they may be
    /// forwarded as they are.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next step. `inspected` says whether a tag is read whole.
    ///
    /// # Errors
    /// A length under 4 ([`FrameError::BadLength`]), or an inspected
    /// message over the cap under [`OverCap::Refuse`].
    pub fn next(&mut self, inspected: impl Fn(u8) -> bool) -> Result<Frame<'a>, FrameError> {
        let buf = self.buf;
        let scanner = &mut *self.scanner;
        if scanner.skip > 0 {
            let n = scanner.skip.min(buf.len() - self.pos);
            self.pos += n;
            scanner.skip -= n;
            if scanner.skip > 0 {
                return Ok(Frame::Wait { need: 0 });
            }
        }
        let Some(header) = framing::peek_header(&buf[self.pos..])? else {
            return Ok(Frame::Wait { need: 0 });
        };
        let available = buf.len() - self.pos;
        if !inspected(header.tag) {
            let whole = if available >= header.total {
                let msg = &buf[self.pos..self.pos + header.total];
                self.pos += header.total;
                Some(msg)
            } else {
                scanner.skip = header.total - available;
                self.pos = buf.len();
                None
            };
            return Ok(Frame::Streamed {
                tag: header.tag,
                whole,
            });
        }
        if let Err(too_large) = framing::check_cap(header, scanner.max_message) {
            let want = header.total.min(OVER_CAP_PREFIX);
            if available < want {
                return Ok(Frame::Wait { need: want });
            }
            return match self.over_cap {
                OverCap::Refuse => Err(too_large),
                OverCap::Stream => Ok(self.pass_through(header, NotHeld::OverCap)),
            };
        }
        if available < header.total {
            return Ok(Frame::Incomplete(header));
        }
        let msg = &buf[self.pos..self.pos + header.total];
        self.pos += header.total;
        Ok(Frame::Whole(msg))
    }

    /// Lets the inspected message at [`Frames::pos`] (just answered as
    /// [`Frame::Incomplete`], or over the cap) pass through without being
    /// held: what of it is in the buffer is consumed, the rest is skipped as
    /// it arrives, and its first bytes are returned for the tracker.
    pub fn pass_through(&mut self, header: Header, why: NotHeld) -> Frame<'a> {
        let buf = self.buf;
        let available = buf.len() - self.pos;
        let end = self.pos + available.min(header.total);
        let prefix = &buf[self.pos..end];
        if available < header.total {
            self.scanner.skip = header.total - available;
        }
        self.pos = end;
        Frame::NotHeld {
            tag: header.tag,
            prefix,
            why,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Inspects everything but DataRow (`D`), as the backend does.
    fn inspected(tag: u8) -> bool {
        tag != b'D'
    }

    /// What a scan of `data` fed in `sizes`-byte reads yields, as
    /// `(tag, whole, bytes consumed)` per frame; incomplete inspected
    /// messages are waited for, as the relay does.
    fn scan_all(
        data: &[u8],
        sizes: &[usize],
        cap: usize,
        over_cap: OverCap,
    ) -> Result<Vec<(u8, bool, usize)>, FrameError> {
        let mut scanner = FrameScanner::new(cap);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut out = Vec::new();
        let mut sizes = sizes.iter().copied().cycle();
        loop {
            let mut frames = scanner.frames(&buf, over_cap);
            let consumed = loop {
                let before = frames.pos();
                match frames.next(inspected)? {
                    Frame::Whole(m) => out.push((m[0], true, m.len())),
                    Frame::Streamed { tag, whole } => {
                        out.push((tag, whole.is_some(), frames.pos() - before))
                    }
                    Frame::NotHeld { tag, prefix, .. } => out.push((tag, false, prefix.len())),
                    Frame::Incomplete(_) | Frame::Wait { .. } => break frames.pos(),
                }
            };
            buf.drain(..consumed);
            if fed == data.len() {
                return Ok(out);
            }
            let n = sizes
                .next()
                .unwrap_or(usize::MAX)
                .max(1)
                .min(data.len() - fed);
            buf.extend_from_slice(&data[fed..fed + n]);
            fed += n;
        }
    }

    fn stream() -> Vec<u8> {
        let mut s = msg(b'T', b"\0\0");
        for i in 0..20u8 {
            s.extend(msg(b'D', &[0, 1, 0, 0, 0, 1, i]));
        }
        s.extend(msg(b'D', &[7u8; 5000]));
        s.extend(msg(b'C', b"SELECT 21\0"));
        s.extend(msg(b'Z', b"I"));
        s
    }

    #[test]
    fn whole_buffer_yields_every_message() {
        let data = stream();
        let frames = scan_all(&data, &[usize::MAX], 1 << 20, OverCap::Refuse).unwrap();
        assert_eq!(frames.len(), 24);
        assert_eq!(frames[0], (b'T', true, 7));
        assert!(frames[1..22]
            .iter()
            .all(|&(t, whole, _)| t == b'D' && whole));
        assert_eq!(frames[23], (b'Z', true, 6));
    }

    #[test]
    fn a_streamed_message_split_across_reads_is_skipped_to_its_end() {
        let data = stream();
        // The 5000-byte DataRow arrives in 100-byte pieces: one frame, then
        // its bytes are skipped as they come, and the next header is found.
        let frames = scan_all(&data, &[100], 1 << 20, OverCap::Refuse).unwrap();
        let tags: Vec<u8> = frames.iter().map(|f| f.0).collect();
        let mut expected = vec![b'T'];
        expected.extend([b'D'; 21]);
        expected.extend([b'C', b'Z']);
        assert_eq!(tags, expected);
        assert!(frames.iter().any(|&(t, whole, _)| t == b'D' && !whole));
    }

    #[test]
    fn an_incomplete_inspected_message_is_not_consumed() {
        let q = msg(b'Q', b"select 1\0");
        let mut scanner = FrameScanner::new(1024);
        let mut frames = scanner.frames(&q[..8], OverCap::Refuse);
        assert_eq!(
            frames.next(|_| true).unwrap(),
            Frame::Incomplete(Header {
                tag: b'Q',
                total: q.len()
            })
        );
        assert_eq!(frames.pos(), 0);
        let mut frames = scanner.frames(&q, OverCap::Refuse);
        assert_eq!(frames.next(|_| true).unwrap(), Frame::Whole(&q));
        assert_eq!(frames.next(|_| true).unwrap(), Frame::Wait { need: 0 });
        assert_eq!(frames.pos(), q.len());
    }

    #[test]
    fn impossible_length_is_an_error() {
        let mut scanner = FrameScanner::new(1024);
        let err = scanner
            .frames(&[b'Q', 0, 0, 0, 2, 0], OverCap::Refuse)
            .next(|_| true)
            .unwrap_err();
        assert!(matches!(err, FrameError::BadLength { tag: 'Q', len: 2 }));
    }

    #[test]
    fn over_the_cap_waits_for_a_prefix_then_refuses_or_streams() {
        let mut body = b"SERROR\0VERROR\0CP0001\0M".to_vec();
        body.extend(std::iter::repeat_n(b'x', 4096));
        body.extend_from_slice(b"\0\0");
        let e = msg(b'E', &body);
        let mut scanner = FrameScanner::new(1024);
        // Not enough of it for the prefix yet.
        assert_eq!(
            scanner.frames(&e[..100], OverCap::Stream).next(inspected),
            Ok(Frame::Wait {
                need: OVER_CAP_PREFIX
            })
        );
        assert!(matches!(
            scanner.frames(&e[..2000], OverCap::Refuse).next(inspected),
            Err(FrameError::TooLarge { tag: 'E', .. })
        ));
        let mut frames = scanner.frames(&e[..2000], OverCap::Stream);
        assert_eq!(
            frames.next(inspected),
            Ok(Frame::NotHeld {
                tag: b'E',
                prefix: &e[..2000],
                why: NotHeld::OverCap
            })
        );
        assert_eq!(frames.pos(), 2000);
        // The rest is skipped, and the next message found after it.
        let mut rest = e[2000..].to_vec();
        rest.extend(msg(b'Z', b"I"));
        let mut frames = scanner.frames(&rest, OverCap::Stream);
        assert_eq!(
            frames.next(inspected),
            Ok(Frame::Whole(&rest[e.len() - 2000..]))
        );
    }

    #[test]
    fn pass_through_consumes_what_is_there_and_skips_the_rest() {
        let q = msg(b'Q', &[b'x'; 300]);
        let mut scanner = FrameScanner::new(1 << 20);
        let mut frames = scanner.frames(&q[..100], OverCap::Refuse);
        let Frame::Incomplete(header) = frames.next(|_| true).unwrap() else {
            panic!("expected an incomplete message");
        };
        assert_eq!(
            frames.pass_through(header, NotHeld::OverBudget),
            Frame::NotHeld {
                tag: b'Q',
                prefix: &q[..100],
                why: NotHeld::OverBudget
            }
        );
        assert_eq!(frames.pos(), 100);
        let mut tail = q[100..].to_vec();
        tail.extend(msg(b'S', b""));
        let mut frames = scanner.frames(&tail, OverCap::Refuse);
        assert_eq!(
            frames.next(|_| true),
            Ok(Frame::Whole(&tail[q.len() - 100..]))
        );
    }

    proptest! {
        #[test]
        fn any_split_of_valid_traffic_yields_the_same_messages(
            sizes in proptest::collection::vec(1usize..300, 1..50)
        ) {
            let data = stream();
            let tags = |frames: Vec<(u8, bool, usize)>| -> Vec<u8> {
                frames.into_iter().map(|f| f.0).collect()
            };
            let whole = scan_all(&data, &[usize::MAX], 1 << 20, OverCap::Refuse).unwrap();
            let split = scan_all(&data, &sizes, 1 << 20, OverCap::Refuse).unwrap();
            prop_assert_eq!(tags(split), tags(whole));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let _ = scan_all(&data, &sizes, 1024, OverCap::Refuse);
            let _ = scan_all(&data, &sizes, 1024, OverCap::Stream);
        }
    }
}
