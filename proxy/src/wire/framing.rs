//! Message boundaries. Every message after startup is a one-byte tag and a
//! four-byte big-endian length that counts itself but not the tag.

/// Size of a tagged message header: tag byte plus length.
pub const HEADER_LEN: usize = 5;

/// The header of one tagged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type byte.
    pub tag: u8,
    /// Whole message size in bytes, tag and length included.
    pub total: usize,
}

/// Why a header cannot start a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below 4, which cannot even cover itself.
    #[error("message '{tag}' has impossible length {len}")]
    BadLength {
        /// The message's tag, for the error text.
        tag: char,
        /// The length field as sent.
        len: u32,
    },
    /// The message is larger than the configured cap for messages the proxy
    /// has to hold in memory.
    #[error("message '{tag}' of {size} bytes exceeds the {cap}-byte limit")]
    TooLarge {
        /// The message's tag.
        tag: char,
        /// Its announced size.
        size: usize,
        /// The configured cap.
        cap: usize,
    },
}

/// Reads the header at the start of `buf`; `None` until five bytes are there.
pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: printable(buf[0]),
            len,
        });
    }
    Ok(Some(Header {
        tag: buf[0],
        total: len as usize + 1,
    }))
}

/// Checks a message the proxy must buffer whole against the cap.
pub fn check_cap(header: Header, cap: usize) -> Result<(), FrameError> {
    if header.total > cap {
        return Err(FrameError::TooLarge {
            tag: printable(header.tag),
            size: header.total,
            cap,
        });
    }
    Ok(())
}

fn printable(tag: u8) -> char {
    if tag.is_ascii_graphic() {
        tag as char
    } else {
        '?'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_five_bytes() {
        assert_eq!(peek_header(b"Q\0\0\0").unwrap(), None);
        assert_eq!(
            peek_header(b"Q\0\0\0\x09").unwrap(),
            Some(Header {
                tag: b'Q',
                total: 10
            })
        );
    }

    #[test]
    fn rejects_lengths_under_four() {
        for len in 0..4u8 {
            let err = peek_header(&[b'Q', 0, 0, 0, len]).unwrap_err();
            assert!(matches!(err, FrameError::BadLength { tag: 'Q', .. }));
        }
        assert!(peek_header(&[b'S', 0, 0, 0, 4]).unwrap().is_some());
    }

    #[test]
    fn cap_is_inclusive() {
        let h = Header {
            tag: b'B',
            total: 100,
        };
        assert!(check_cap(h, 100).is_ok());
        assert!(matches!(
            check_cap(h, 99),
            Err(FrameError::TooLarge { size: 100, .. })
        ));
    }

    #[test]
    fn huge_length_does_not_overflow() {
        let h = peek_header(&[b'D', 0xff, 0xff, 0xff, 0xff])
            .unwrap()
            .unwrap();
        assert_eq!(h.total, u32::MAX as usize + 1);
    }
}
