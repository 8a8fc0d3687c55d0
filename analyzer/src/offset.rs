//! OFFSET values: the one bound parameter value qproxy reads.
//!
//! `offset_pagination` is about how many rows a page skips, and with
//! server-side binding (`LIMIT $1 OFFSET $2`, what Rails, SQLAlchemy and
//! psycopg's prepared statements send) that number only exists in the
//! Bind message. Everywhere else qproxy hashes bound values and never reads
//! them (DESIGN non-negotiable 4); for OFFSET it reads this one value
//! because it is a row count the application computed, not data a user
//! typed, and even so it never keeps it: the tracker decodes it into the
//! execution's [`QueryEvent::offset`](crate::event::QueryEvent::offset),
//! the analyzer compares it with the threshold, and only its order of
//! magnitude ([`magnitude`]: 1000, 10000, ...) reaches the store, and only
//! for a statement already reported. Logs and metrics never see it.
//!
//! Cost on the forwarding path: [`top_level_offset`] runs once per new
//! statement text (the tracker caches the result with the prepared
//! statement), and a text without the letters `offset` is rejected by a
//! byte scan before any lexing. Decoding at Bind is a few bytes.

use crate::sql::lexer::{Lexer, TokenKind};

/// Where a statement's top-level OFFSET takes its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetClause {
    /// `OFFSET 5000`: an integer literal in the text.
    Literal(u64),
    /// `OFFSET $2`: a bind parameter (1-based, as written).
    Parameter(u16),
}

/// The OFFSET of the outermost query of one statement: outside every
/// parenthesis, so a subquery's or CTE's OFFSET does not count. `None` when
/// there is none, when its value is an expression (`OFFSET ($1 - 1) * 20`:
/// not guessed), or when the text holds several at the top level (several
/// statements; the caller passes one).
pub fn top_level_offset(sql: &str) -> Option<OffsetClause> {
    if !mentions_offset(sql.as_bytes()) {
        return None;
    }
    let mut depth = 0usize;
    let mut found = None;
    let mut tokens = Lexer::new(sql).filter(|t| t.is_significant()).peekable();
    while let Some(t) = tokens.next() {
        match t.kind {
            TokenKind::Open => depth += 1,
            TokenKind::Close => depth = depth.saturating_sub(1),
            TokenKind::Word if depth == 0 && t.text(sql).eq_ignore_ascii_case("offset") => {
                if found.is_some() {
                    return None;
                }
                let value = tokens.next();
                let clause = match value.map(|v| (v.kind, v.text(sql))) {
                    Some((TokenKind::Number, text)) => {
                        parse_integer(text).map(OffsetClause::Literal)
                    }
                    Some((TokenKind::Param, text)) => text[1..]
                        .parse::<u16>()
                        .ok()
                        .filter(|&n| n > 0)
                        .map(OffsetClause::Parameter),
                    Some((TokenKind::Open, _)) => {
                        depth += 1;
                        None
                    }
                    _ => None,
                };
                // An OFFSET whose value cannot be read still counts as
                // found, so a second one makes the text ambiguous.
                found = Some(clause);
                // `OFFSET 10.5` or `OFFSET $1 * 20`: the value is what
                // follows, not the token read.
                if clause.is_some()
                    && tokens.peek().is_some_and(|next| {
                        matches!(next.kind, TokenKind::Operator | TokenKind::Dot)
                            && next.text(sql) != "::"
                    })
                {
                    found = Some(None);
                }
            }
            _ => {}
        }
    }
    found.flatten()
}

/// A byte scan for `offset` in any case, so texts without it (nearly all)
/// skip the lexer.
fn mentions_offset(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'o' || b == b'O')
        .any(|(i, _)| {
            bytes
                .get(i..i + 6)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"offset"))
        })
}

/// `5000` or `5_000`; anything with a fraction, exponent or radix prefix is
/// not a row count this module reads.
fn parse_integer(text: &str) -> Option<u64> {
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    digits.parse().ok()
}

/// Decodes a bound OFFSET value: text format is a decimal integer
/// (surrounding whitespace and a `+` allowed, as `int8in` does), binary
/// format a big-endian `int2`, `int4` or `int8`. Negative, NULL-free but
/// malformed, or oversized values give `None` (the server rejects them
/// anyway).
pub fn decode_bound_offset(value: &[u8], binary: bool) -> Option<u64> {
    if binary {
        let signed = match value.len() {
            2 => i64::from(i16::from_be_bytes(value.try_into().ok()?)),
            4 => i64::from(i32::from_be_bytes(value.try_into().ok()?)),
            8 => i64::from_be_bytes(value.try_into().ok()?),
            _ => return None,
        };
        return u64::try_from(signed).ok();
    }
    let text = std::str::from_utf8(value).ok()?.trim_ascii();
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The order of magnitude of an OFFSET (the largest power of ten not above
/// it; 0 for 0): what the store keeps instead of the value.
pub fn magnitude(offset: u64) -> u64 {
    match offset.checked_ilog10() {
        Some(exp) => 10u64.pow(exp),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_literal_and_parameter_offsets() {
        use OffsetClause::*;
        assert_eq!(
            top_level_offset("SELECT * FROM t ORDER BY id LIMIT 20 OFFSET 5000"),
            Some(Literal(5000))
        );
        assert_eq!(
            top_level_offset("select * from t order by id limit $1 offset $2"),
            Some(Parameter(2))
        );
        assert_eq!(
            top_level_offset("SELECT * FROM t OFFSET $1::bigint ROWS FETCH NEXT 5 ROWS ONLY"),
            Some(Parameter(1))
        );
        assert_eq!(
            top_level_offset("SELECT 1 OFFSET /* page */ 1_000"),
            Some(Literal(1000))
        );
        assert_eq!(
            top_level_offset("(SELECT a FROM t) UNION (SELECT a FROM u) OFFSET 30"),
            Some(Literal(30))
        );
    }

    #[test]
    fn ignores_what_it_cannot_read_reliably() {
        assert_eq!(top_level_offset("SELECT * FROM t LIMIT 10"), None);
        // A subquery's or CTE's OFFSET is not the statement's.
        assert_eq!(
            top_level_offset("SELECT * FROM (SELECT * FROM t OFFSET 5000) x"),
            None
        );
        assert_eq!(
            top_level_offset("WITH p AS (SELECT * FROM t OFFSET $1) SELECT * FROM p"),
            None
        );
        // Expressions are not evaluated.
        assert_eq!(top_level_offset("SELECT 1 OFFSET ($1 - 1) * 20"), None);
        assert_eq!(top_level_offset("SELECT 1 OFFSET $1 * 20"), None);
        assert_eq!(top_level_offset("SELECT 1 OFFSET 10.5"), None);
        // Strings, comments and quoted names are not keywords.
        assert_eq!(top_level_offset("SELECT 'offset 5' FROM t"), None);
        assert_eq!(
            top_level_offset("SELECT \"offset\" FROM t -- offset 9"),
            None
        );
        assert_eq!(top_level_offset("SELECT $x$ OFFSET 9 $x$"), None);
        // Two top-level OFFSETs: two statements, ambiguous.
        assert_eq!(
            top_level_offset("SELECT 1 OFFSET 5; SELECT 2 OFFSET 6"),
            None
        );
        assert_eq!(top_level_offset("SELECT 1 OFFSET"), None);
        assert_eq!(top_level_offset(""), None);
    }

    #[test]
    fn decodes_bound_values_in_both_formats() {
        assert_eq!(decode_bound_offset(b"5000", false), Some(5000));
        assert_eq!(decode_bound_offset(b" +20 ", false), Some(20));
        assert_eq!(decode_bound_offset(b"-1", false), None);
        assert_eq!(decode_bound_offset(b"1e3", false), None);
        assert_eq!(decode_bound_offset(b"", false), None);
        assert_eq!(decode_bound_offset(b"99999999999999999999999", false), None);
        assert_eq!(
            decode_bound_offset(&5000i64.to_be_bytes(), true),
            Some(5000)
        );
        assert_eq!(decode_bound_offset(&70i32.to_be_bytes(), true), Some(70));
        assert_eq!(decode_bound_offset(&7i16.to_be_bytes(), true), Some(7));
        assert_eq!(decode_bound_offset(&(-4i64).to_be_bytes(), true), None);
        assert_eq!(decode_bound_offset(&[0, 1, 2], true), None);
    }

    #[test]
    fn magnitude_keeps_only_the_power_of_ten() {
        assert_eq!(magnitude(0), 0);
        assert_eq!(magnitude(7), 1);
        assert_eq!(magnitude(1000), 1000);
        assert_eq!(magnitude(4999), 1000);
        assert_eq!(magnitude(123_456), 100_000);
        assert_eq!(magnitude(u64::MAX), 10_000_000_000_000_000_000);
    }
}
