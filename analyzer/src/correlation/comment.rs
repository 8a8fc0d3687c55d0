//! Locating the comments that may carry request tags, and splitting one into
//! key/value pairs.
//!
//! Tagging libraries put their comment either at the very end of the
//! statement (sqlcommenter's rule, Rails' default) or at the very start
//! (Rails' `prepend_comment`, several Python integrations), so only comments
//! at the two ends are read. Every loop here is bounded by a byte window and a
//! comment count, which keeps a multi-megabyte statement (a bulk `INSERT`, a
//! hostile input) as cheap as a short one.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::sql::lexer::{block_comment_end, Lexer, TokenKind};

/// Bytes examined at each end of the text. A tag comment is short; a comment
/// that starts further in than this is not a request tag.
const END_WINDOW: usize = 8 * 1024;
/// Longest comment body read for tags.
const MAX_COMMENT_LEN: usize = 4 * 1024;
/// Comments read at each end (a prepended hint plus a tag comment, say).
const MAX_COMMENTS_PER_END: usize = 4;
/// Pairs read from one comment; the known keys are far fewer than this.
const MAX_PAIRS: usize = 32;
/// Longest key considered; every key we act on is much shorter.
const MAX_KEY_LEN: usize = 64;

/// How a pair was written, which decides how its value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PairStyle {
    /// `key='value'` (sqlcommenter, Rails `:sqlcommenter`): URL-encoded,
    /// `\'` escaped, and `%%` possibly doubled by Python `%`-formatting.
    Quoted,
    /// `key=value` without quotes (some hand-rolled taggers): URL-decoded.
    Bare,
    /// `key:value` (marginalia, Rails `:legacy`): taken as written.
    Colon,
}

/// One decoded `key`/`value` pair from a tag comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair<'a> {
    pub(crate) key: Cow<'a, str>,
    pub(crate) value: Cow<'a, str>,
}

/// Bodies (text between `/*` and `*/`) of the block comments at the end of
/// `sql`, last first, then those at its start, first first.
///
/// Nested or unterminated comments are skipped: their structure is ambiguous
/// and no tagging library produces them.
pub(crate) fn edge_comments(sql: &str) -> SmallVec<[&str; 4]> {
    let mut out = SmallVec::new();
    let b = sql.as_bytes();
    let lowest_trailing = trailing_comments(sql, &mut out);
    leading_comments(sql, b.len().min(lowest_trailing), &mut out);
    out
}

/// Pushes trailing comment bodies; returns the offset of the first byte of
/// the earliest trailing comment found (or the text length if none).
fn trailing_comments<'a>(sql: &'a str, out: &mut SmallVec<[&'a str; 4]>) -> usize {
    let b = sql.as_bytes();
    let floor = b.len().saturating_sub(END_WINDOW);
    let mut end = b.len();
    for _ in 0..MAX_COMMENTS_PER_END {
        while end > floor && (b[end - 1].is_ascii_whitespace() || b[end - 1] == b';') {
            end -= 1;
        }
        if end < floor + 4 || &b[end - 2..end] != b"*/" {
            break;
        }
        let close = end - 2;
        let lo = floor.max(close.saturating_sub(MAX_COMMENT_LEN + 2));
        let Some(open) = rfind(&b[lo..close], b"/*").map(|i| lo + i) else {
            break;
        };
        let body = &sql[open + 2..close];
        if body.contains("*/") {
            // `/* a /* b */ c */`: nested, not ours; nothing before it is
            // trustworthy either.
            break;
        }
        out.push(body);
        end = open;
    }
    end
}

/// Pushes the bodies of the block comments before the first token that is
/// not whitespace or a comment, read with the crate's lexer within the
/// first `limit` bytes (a comment must close inside them).
fn leading_comments<'a>(sql: &'a str, limit: usize, out: &mut SmallVec<[&'a str; 4]>) {
    let mut end = limit.min(END_WINDOW);
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    let window = &sql[..end];
    let mut taken = 0;
    for tok in Lexer::new(window) {
        if taken >= MAX_COMMENTS_PER_END {
            return;
        }
        let text = tok.text(window);
        match tok.kind {
            TokenKind::Whitespace => {}
            // A line comment counts as read only with its newline in the
            // window.
            TokenKind::Comment if text.starts_with("--") => {
                if tok.end == window.len() {
                    return;
                }
            }
            TokenKind::Comment => {
                if block_comment_end(window.as_bytes(), tok.start).is_none() {
                    return;
                }
                let body = &text[2..text.len() - 2];
                // `/* a /* b */ c */`: nested, not ours.
                if !body.contains("/*") && body.len() <= MAX_COMMENT_LEN {
                    out.push(body);
                }
                taken += 1;
            }
            _ => return,
        }
    }
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Splits one comment body into pairs, in order. Reading stops at the first
/// thing that is not a pair, so free text (a Hibernate `/* load User */`
/// comment, an optimizer hint) yields nothing, and a comment damaged half-way
/// keeps only its well-formed prefix.
pub(crate) fn pairs(body: &str) -> SmallVec<[Pair<'_>; 8]> {
    let mut out = SmallVec::new();
    let b = body.as_bytes();
    let mut i = skip_ws(b, 0);
    while i < b.len() && out.len() < MAX_PAIRS {
        let key_start = i;
        while i < b.len()
            && !matches!(b[i], b'=' | b':' | b',' | b'\'')
            && !b[i].is_ascii_whitespace()
        {
            i += 1;
        }
        let raw_key = &body[key_start..i];
        i = skip_ws(b, i);
        let style = match b.get(i) {
            Some(b'=') => PairStyle::Bare,
            Some(b':') => PairStyle::Colon,
            _ => break,
        };
        if raw_key.is_empty() || raw_key.len() > MAX_KEY_LEN {
            break;
        }
        i = skip_ws(b, i + 1);
        let (raw_value, style, next) = if b.get(i) == Some(&b'\'') {
            let Some((value, next)) = quoted(body, i) else {
                break;
            };
            let style = if style == PairStyle::Bare {
                PairStyle::Quoted
            } else {
                style
            };
            (value, style, next)
        } else {
            let end = b[i..]
                .iter()
                .position(|&c| c == b',')
                .map_or(b.len(), |n| i + n);
            (Cow::Borrowed(body[i..end].trim_end()), style, end)
        };
        i = skip_ws(b, next);
        let key = match style {
            PairStyle::Colon => Cow::Borrowed(raw_key),
            PairStyle::Quoted | PairStyle::Bare => url_decode(raw_key),
        };
        let value = match (style, raw_value) {
            (PairStyle::Colon, v) => v,
            (_, Cow::Borrowed(v)) => url_decode(v),
            (_, Cow::Owned(v)) => Cow::Owned(url_decode(&v).into_owned()),
        };
        out.push(Pair { key, value });
        if b.get(i) != Some(&b',') {
            break;
        }
        i = skip_ws(b, i + 1);
    }
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Reads a single-quoted value starting at the quote at `start`; a backslash
/// escapes the next character (`\'`). Returns the unescaped value and the
/// offset after the closing quote, or `None` when the quote never closes.
fn quoted(body: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = body.as_bytes();
    let from = start + 1;
    let mut i = from;
    let mut owned: Option<String> = None;
    let mut run = from;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let value = match owned {
                    None => Cow::Borrowed(&body[from..i]),
                    Some(mut s) => {
                        s.push_str(&body[run..i]);
                        Cow::Owned(s)
                    }
                };
                return Some((value, i + 1));
            }
            b'\\' if i + 1 < b.len() => {
                let s = owned.get_or_insert_with(String::new);
                s.push_str(&body[run..i]);
                // The escaped character may be multi-byte: copy it whole.
                let ch = body[i + 1..].chars().next()?;
                s.push(ch);
                i += 1 + ch.len_utf8();
                run = i;
            }
            _ => i += 1,
        }
    }
    None
}

/// Percent-decodes `s`, first undoing the `%%` doubling that Python
/// integrations emit when the driver never applies `%`-formatting. `+` is
/// left alone: only Java's form encoder produces it for a space, while
/// request ids (base64) contain real `+` signs. Invalid escapes stay as
/// written and invalid UTF-8 is replaced, so decoding never fails.
pub(crate) fn url_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if b.get(i + 1) == Some(&b'%') {
                // `%%` is a doubled `%`; what follows it is the escape proper.
                i += 1;
                continue;
            }
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(body: &str) -> Vec<(String, String)> {
        pairs(body)
            .into_iter()
            .map(|p| (p.key.into_owned(), p.value.into_owned()))
            .collect()
    }

    #[test]
    fn finds_trailing_then_leading() {
        let c = edge_comments("/*a:1*/ select 1 /*b='2'*/ ;\n");
        assert_eq!(c.as_slice(), ["b='2'", "a:1"]);
    }

    #[test]
    fn whole_text_comment_is_read_once() {
        assert_eq!(edge_comments("/*a='1'*/").as_slice(), ["a='1'"]);
    }

    #[test]
    fn nested_and_unterminated_are_skipped() {
        assert!(edge_comments("select 1 /* a /* b='1' */ c */").is_empty());
        assert!(edge_comments("/* a /* b */ c */ select 1").is_empty());
        assert!(edge_comments("/* a='1' select 1").is_empty());
        assert!(edge_comments("select 1 a='1' */").is_empty());
    }

    #[test]
    fn line_comments_before_a_leading_block_are_skipped() {
        assert_eq!(
            edge_comments("-- name: GetUser :one\n/*x:1*/select").as_slice(),
            ["x:1"]
        );
    }

    #[test]
    fn decodes_doubled_percent_and_escapes() {
        assert_eq!(url_decode("%%5Epolls/%%24"), "^polls/$");
        assert_eq!(url_decode("%5Epolls%2F%24"), "^polls/$");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz%4"), "%zz%4");
        assert_eq!(url_decode("a+b"), "a+b");
    }

    #[test]
    fn splits_each_style() {
        assert_eq!(
            kv("a='x%2Fy',b='it\\'s'"),
            [("a".into(), "x/y".into()), ("b".into(), "it's".into())]
        );
        assert_eq!(
            kv("application:Shop,controller:users"),
            [
                ("application".into(), "Shop".into()),
                ("controller".into(), "users".into())
            ]
        );
        assert_eq!(
            kv(" k = v , j=w "),
            [("k".into(), "v".into()), ("j".into(), "w".into())]
        );
        assert_eq!(
            kv("ns:Admin::Users"),
            [("ns".into(), "Admin::Users".into())]
        );
    }

    #[test]
    fn free_text_yields_nothing() {
        assert!(kv(" load com.example.User ").is_empty());
        assert!(kv("+ IndexScan(t) ").is_empty());
        assert!(kv("a='unterminated").is_empty());
        assert_eq!(kv("a='1' junk"), [("a".into(), "1".into())]);
    }
}
