//! Hashes of literal values, comparable with hashes of bind parameters.
//!
//! For an inline literal the hash is [`crate::values::value_hash`] of the value as
//! PostgreSQL's text format would carry it in a `Bind` message or a
//! `DataRow`: strings unescaped (`'it''s'` → `it's`, `E'a\n'` → `a` and a
//! newline, dollar-quoted bodies as written), numbers as written (with a
//! leading `-` when negated, without `_` separators), `TRUE`/`FALSE` as `t`/`f`.
//! `NULL` has no value; it hashes to [`NULL_LITERAL_HASH`]. So the same
//! value sent inline by psycopg2 and bound by psycopg3 hashes the same, and
//! a child query's literals can be matched against a parent's result values.

/// Every literal value is hashed the way [`crate::values::value_hash`]
/// hashes a text-format parameter or result value, so integers and UUIDs
/// compare equal to their binary forms too.
fn xxh3_64(value: &[u8]) -> u64 {
    crate::values::value_hash(value, false)
}

fn xxh3_64_with_seed(value: &[u8], _seed: u64) -> u64 {
    crate::values::value_hash(value, false)
}

/// Stands for a `NULL` literal (which has no value bytes to hash).
pub const NULL_LITERAL_HASH: u64 = 0x6e75_6c6c_6e75_6c6c;

/// Hash of a numeric literal; `negative` when a unary minus precedes it.
pub(crate) fn number_hash(text: &str, negative: bool) -> u64 {
    if !negative && !text.contains('_') {
        return xxh3_64(text.as_bytes());
    }
    let mut value = Vec::with_capacity(text.len() + 1);
    if negative {
        value.push(b'-');
    }
    value.extend(text.bytes().filter(|&b| b != b'_'));
    xxh3_64(&value)
}

/// Hash of a `TRUE`/`FALSE`/`NULL` key word, `None` for other words.
pub(crate) fn keyword_hash(word: &str) -> Option<u64> {
    if word.eq_ignore_ascii_case("true") {
        Some(xxh3_64(b"t"))
    } else if word.eq_ignore_ascii_case("false") {
        Some(xxh3_64(b"f"))
    } else if word.eq_ignore_ascii_case("null") {
        Some(NULL_LITERAL_HASH)
    } else {
        None
    }
}

/// Hash of a string literal token (any flavour) by its value.
pub(crate) fn string_hash(token: &str) -> u64 {
    let bytes = token.as_bytes();
    match bytes.first() {
        Some(b'$') => {
            // $tag$body$tag$: the body.
            let tag_len = bytes[1..]
                .iter()
                .position(|&b| b == b'$')
                .map_or(1, |p| p + 2);
            let end = bytes.len().saturating_sub(tag_len).max(tag_len);
            xxh3_64(&bytes[tag_len.min(bytes.len())..end])
        }
        Some(b'e' | b'E') => xxh3_64(&unescape_c_style(quoted_body(&bytes[1..]))),
        Some(b'\'') => hash_doubled_quotes(quoted_body(bytes)),
        // B'', X'', N'', U&'': the text between the quotes.
        Some(_) => {
            let start = bytes.iter().position(|&b| b == b'\'').unwrap_or(0);
            hash_doubled_quotes(quoted_body(&bytes[start..]))
        }
        None => xxh3_64_with_seed(b"", 0),
    }
}

/// The bytes between the opening quote and the closing one (if any).
fn quoted_body(quoted: &[u8]) -> &[u8] {
    let inner = quoted.get(1..).unwrap_or_default();
    match inner.last() {
        Some(b'\'') => &inner[..inner.len() - 1],
        _ => inner,
    }
}

fn hash_doubled_quotes(body: &[u8]) -> u64 {
    if !body.windows(2).any(|w| w == b"''") {
        return xxh3_64(body);
    }
    let mut value = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        value.push(body[i]);
        i += if body[i] == b'\'' && body.get(i + 1) == Some(&b'\'') {
            2
        } else {
            1
        };
    }
    xxh3_64(&value)
}

/// PostgreSQL's escape-string rules (`E'...'`).
fn unescape_c_style(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b == b'\'' {
            // '' inside the string is one quote.
            out.push(b'\'');
            if body.get(i) == Some(&b'\'') {
                i += 1;
            }
            continue;
        }
        if b != b'\\' || i >= body.len() {
            out.push(b);
            continue;
        }
        let c = body[i];
        i += 1;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let (v, used) = hex_value(&body[i..], 2);
                if used == 0 {
                    out.push(b'x');
                } else {
                    out.push(v as u8);
                    i += used;
                }
            }
            b'u' | b'U' => {
                let width = if c == b'u' { 4 } else { 8 };
                let (v, used) = hex_value(&body[i..], width);
                match char::from_u32(v).filter(|_| used == width) {
                    Some(ch) => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += used;
                    }
                    None => out.push(c),
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Up to `max` hex digits: (value, digits used).
fn hex_value(bytes: &[u8], max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut used = 0;
    for &b in bytes.iter().take(max) {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        v = v.wrapping_mul(16).wrapping_add(u32::from(d));
        used += 1;
    }
    (v, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_hash_by_value() {
        let h = xxh3_64(b"it's");
        assert_eq!(string_hash("'it''s'"), h);
        assert_eq!(string_hash("E'it\\'s'"), h);
        assert_eq!(string_hash("$$it's$$"), h);
        assert_eq!(string_hash("$q$it's$q$"), h);
        assert_eq!(
            string_hash("E'a\\nb\\x41\\101\\u00e9'"),
            xxh3_64("a\nbAAé".as_bytes())
        );
        assert_eq!(string_hash("'unterminated"), xxh3_64(b"unterminated"));
        assert_eq!(string_hash("N'x'"), xxh3_64(b"x"));
    }

    #[test]
    fn numbers_and_keywords() {
        assert_eq!(number_hash("42", false), xxh3_64(b"42"));
        assert_eq!(number_hash("1_000", true), xxh3_64(b"-1000"));
        assert_eq!(keyword_hash("TRUE"), Some(xxh3_64(b"t")));
        assert_eq!(keyword_hash("null"), Some(NULL_LITERAL_HASH));
        assert_eq!(keyword_hash("nullif"), None);
    }
}
