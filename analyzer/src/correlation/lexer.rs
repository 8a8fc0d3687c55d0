//! A minimal SQL lexer for correlation: splitting a multi-statement query
//! string the way PostgreSQL does, and reading the first tokens of a
//! statement. It never fails and never reads past [`MAX_SCAN`] bytes.

use std::borrow::Cow;

use super::statement::MAX_SCAN;

/// The `index`-th (0-based) non-empty statement of a possibly
/// multi-statement text, as PostgreSQL splits it (quotes, dollar quotes and
/// comments respected). `None` when there are fewer statements, or when the
/// statement starts beyond [`MAX_SCAN`] bytes. A statement running past the
/// scan limit is returned truncated.
pub fn nth_statement(sql: &str, index: u16) -> Option<&str> {
    let b = sql.as_bytes();
    let mut limit = b.len().min(MAX_SCAN);
    while !sql.is_char_boundary(limit) {
        limit -= 1;
    }
    let (mut n, mut start, mut i, mut content) = (0u16, 0usize, 0usize, false);
    while i < limit {
        let c = b[i];
        let next = b.get(i + 1).copied();
        i = match c {
            b';' => {
                if content {
                    if n == index {
                        return Some(&sql[start..i]);
                    }
                    n += 1;
                }
                content = false;
                start = i + 1;
                i + 1
            }
            _ if c.is_ascii_whitespace() => i + 1,
            b'-' if next == Some(b'-') => b[i..limit]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(limit, |p| i + p + 1),
            b'/' if next == Some(b'*') => skip_block_comment(b, i, limit),
            _ => {
                content = true;
                skip_plain(b, skip_token(b, i, limit), limit)
            }
        };
    }
    (content && n == index).then(|| &sql[start..limit])
}

/// The offset of the next byte at or after `i` that can end a statement or
/// open a quote or comment (`;`, `'`, `"`, `$`, `-`, `/`); `limit` if none.
/// Words, numbers, spaces and other operators change nothing once the
/// statement has content, so [`nth_statement`] jumps over them instead of
/// reading one token at a time.
fn skip_plain(b: &[u8], i: usize, limit: usize) -> usize {
    next_byte(b, i, limit, |c| {
        matches!(c, b';' | b'\'' | b'"' | b'$' | b'-' | b'/')
    })
}

pub(crate) fn skip_block_comment(b: &[u8], start: usize, limit: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < limit {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            // Only a `/` or `*` can start the next pair that matters.
            _ => i = next_byte(b, i + 1, limit, |c| c == b'/' || c == b'*'),
        }
    }
    limit
}

/// The offset of the first byte in `b[i..limit]` that is `wanted`; `limit`
/// if none. Looks 16 bytes per step (a loop the compiler vectorizes), so
/// the long runs of ordinary text the correlation scans cross (words,
/// spaces, a tag comment's body) cost a fraction of a comparison per byte.
fn next_byte(b: &[u8], mut i: usize, limit: usize, wanted: impl Fn(u8) -> bool) -> usize {
    while i + 16 <= limit {
        if b[i..i + 16]
            .iter()
            .fold(false, |found, &c| found | wanted(c))
        {
            break;
        }
        i += 16;
    }
    b[i..limit]
        .iter()
        .position(|&c| wanted(c))
        .map_or(limit, |p| i + p)
}

/// Skips one lexical unit starting at `i` that is not whitespace or a
/// comment: a quoted string or identifier, a dollar-quoted body, or a byte.
fn skip_token(b: &[u8], i: usize, limit: usize) -> usize {
    let prev_ident = i > 0 && is_ident_byte(b[i - 1]);
    match b[i] {
        b'\'' => {
            let escapes =
                i > 0 && matches!(b[i - 1], b'e' | b'E') && !(i > 1 && is_ident_byte(b[i - 2]));
            skip_quoted(b, i, limit, b'\'', escapes).0
        }
        b'"' => skip_quoted(b, i, limit, b'"', false).0,
        b'$' if !prev_ident => match dollar_tag(b, i, limit) {
            Some(tag_end) => {
                let tag = &b[i..tag_end];
                b[tag_end..limit]
                    .windows(tag.len())
                    .position(|w| w == tag)
                    .map_or(limit, |p| tag_end + p + tag.len())
            }
            None => i + 1,
        },
        _ => i + 1,
    }
}

/// For a `$` at `i` that opens a dollar quote (`$$` or `$tag$`), the offset
/// after the opening tag; `None` for a parameter like `$1`.
fn dollar_tag(b: &[u8], i: usize, limit: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < limit && b[j].is_ascii_digit() {
        return None;
    }
    while j < limit && is_ident_byte(b[j]) && b[j] != b'$' {
        j += 1;
    }
    (j < limit && b[j] == b'$').then_some(j + 1)
}

/// Skips a quoted string or identifier opened at `open`; returns the offset
/// after it and whether it was closed before `limit`.
pub(crate) fn skip_quoted(
    b: &[u8],
    open: usize,
    limit: usize,
    quote: u8,
    escapes: bool,
) -> (usize, bool) {
    let mut i = open + 1;
    while i < limit {
        if escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            // A doubled quote is an escaped quote: keep going.
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return (i + 1, true);
            }
        } else {
            i += 1;
        }
    }
    (limit, false)
}

pub(crate) fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// ASCII case-insensitive search within the first [`MAX_SCAN`] bytes. The
/// first byte is looked for on its own (see [`next_byte`]), so text without
/// candidates costs a fraction of a comparison per byte.
pub(crate) fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let hay = &hay.as_bytes()[..hay.len().min(MAX_SCAN)];
    let needle = needle.as_bytes();
    let (&first, rest) = needle.split_first()?;
    let first = first.to_ascii_lowercase();
    let last_start = hay.len().checked_sub(needle.len())?;
    let candidate = |c: u8| c.to_ascii_lowercase() == first;
    let mut i = 0;
    loop {
        i = next_byte(hay, i, last_start + 1, candidate);
        if i > last_start {
            return None;
        }
        if hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest) {
            return Some(i);
        }
        i += 1;
    }
}

pub(crate) fn contains_ci(hay: &str, needle: &str) -> bool {
    find_ci(hay, needle).is_some()
}

/// Token reader over one statement; every method skips leading whitespace
/// and comments and consumes input only when it matches.
pub(crate) struct Lexer<'a> {
    pub(crate) s: &'a str,
    pub(crate) i: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        let limit = s.len().min(MAX_SCAN);
        let mut end = limit;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Lexer { s: &s[..end], i: 0 }
    }

    pub(crate) fn trivia(&mut self) {
        let b = self.s.as_bytes();
        while self.i < b.len() {
            match (b[self.i], b.get(self.i + 1)) {
                (c, _) if c.is_ascii_whitespace() => self.i += 1,
                (b'-', Some(b'-')) => {
                    self.i = b[self.i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(b.len(), |p| self.i + p + 1)
                }
                (b'/', Some(b'*')) => self.i = skip_block_comment(b, self.i, b.len()),
                _ => return,
            }
        }
    }

    pub(crate) fn word(&mut self) -> Option<&'a str> {
        self.trivia();
        let b = self.s.as_bytes();
        let start = self.i;
        if start >= b.len()
            || !(b[start].is_ascii_alphabetic() || b[start] == b'_' || b[start] >= 0x80)
        {
            return None;
        }
        let mut end = start;
        while end < b.len() && is_ident_byte(b[end]) {
            end += 1;
        }
        self.i = end;
        Some(&self.s[start..end])
    }

    pub(crate) fn word_or_number(&mut self) -> Option<&'a str> {
        self.trivia();
        let b = self.s.as_bytes();
        let start = self.i;
        let mut end = start;
        while end < b.len() && (is_ident_byte(b[end]) || matches!(b[end], b'-' | b'.')) {
            end += 1;
        }
        self.i = end;
        (end > start).then(|| &self.s[start..end])
    }

    pub(crate) fn keyword(&mut self, kw: &str) -> bool {
        let save = self.i;
        match self.word() {
            Some(w) if w.eq_ignore_ascii_case(kw) => true,
            _ => {
                self.i = save;
                false
            }
        }
    }

    pub(crate) fn punct(&mut self, c: u8) -> bool {
        self.trivia();
        let hit = self.s.as_bytes().get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    /// `"..."` (with `""` for a quote), unescaped.
    pub(crate) fn quoted_identifier(&mut self) -> Option<Cow<'a, str>> {
        self.trivia();
        let b = self.s.as_bytes();
        if b.get(self.i) != Some(&b'"') {
            return None;
        }
        let mut j = self.i + 1;
        let mut doubled = false;
        while j < b.len() {
            if b[j] == b'"' {
                if b.get(j + 1) == Some(&b'"') {
                    doubled = true;
                    j += 2;
                    continue;
                }
                let inner = &self.s[self.i + 1..j];
                self.i = j + 1;
                return Some(if doubled {
                    Cow::Owned(inner.replace("\"\"", "\""))
                } else {
                    Cow::Borrowed(inner)
                });
            }
            j += 1;
        }
        None
    }

    /// `$n`, returning `n`.
    pub(crate) fn param(&mut self) -> Option<usize> {
        self.trivia();
        let b = self.s.as_bytes();
        if b.get(self.i) != Some(&b'$') {
            return None;
        }
        let digits = b[self.i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let n = self.s[self.i + 1..self.i + 1 + digits].parse().ok()?;
        self.i += 1 + digits;
        Some(n)
    }

    /// `'...'` (with `''`) or `E'...'` (with backslash escapes), unescaped.
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        self.trivia();
        let b = self.s.as_bytes();
        let escapes =
            matches!(b.get(self.i), Some(b'e' | b'E')) && b.get(self.i + 1) == Some(&b'\'');
        let open = self.i + usize::from(escapes);
        if b.get(open) != Some(&b'\'') {
            return None;
        }
        let (end, closed) = skip_quoted(b, open, b.len(), b'\'', escapes);
        if !closed {
            return None;
        }
        self.i = end;
        let raw = &self.s[open + 1..end - 1];
        if !(raw.contains('\'') || escapes && raw.contains('\\')) {
            return Some(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' if escapes => out.extend(chars.next()),
                '\'' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        Some(Cow::Owned(out))
    }

    /// The dotted setting `name` (`a.b`, ASCII case-insensitive), bare or
    /// double-quoted as a whole.
    pub(crate) fn setting_name(&mut self, name: &str) -> bool {
        self.trivia();
        let save = self.i;
        let b = self.s.as_bytes();
        if b.get(self.i) == Some(&b'"') {
            let (end, closed) = skip_quoted(b, self.i, b.len(), b'"', false);
            if closed && self.s.get(self.i + 1..end - 1) == Some(name) {
                self.i = end;
                return true;
            }
            return false;
        }
        let (prefix, rest) = name.split_once('.').unwrap_or((name, ""));
        let ok = self.keyword(prefix) && self.punct(b'.') && self.keyword(rest);
        if !ok {
            self.i = save;
        }
        ok
    }

    /// `::type` after a value.
    pub(crate) fn skip_cast(&mut self) {
        self.trivia();
        if self.s.as_bytes()[self.i..].starts_with(b"::") {
            self.i += 2;
            let _ = self.word();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_ci_matches_case_insensitively() {
        assert_eq!(
            find_ci("SET QProxy.Request_ID = 1", "qproxy.request_id"),
            Some(4)
        );
        assert_eq!(find_ci("qproxy.request_i", "qproxy.request_id"), None);
        assert_eq!(find_ci("", "x"), None);
        assert_eq!(find_ci("é qproxy", "qproxy"), Some(3));
    }

    #[test]
    fn lexer_reads_tokens_after_comments() {
        let mut lx = Lexer::new("/* a /* nested */ */ -- x\n set_config ( E'it\\'s' , $12 ::text");
        assert_eq!(lx.word(), Some("set_config"));
        assert!(lx.punct(b'('));
        assert_eq!(lx.string().as_deref(), Some("it's"));
        assert!(lx.punct(b','));
        assert_eq!(lx.param(), Some(12));
        lx.skip_cast();
        assert_eq!(lx.word(), None);
    }

    #[test]
    fn dollar_quotes_and_parameters() {
        assert_eq!(dollar_tag(b"$1", 0, 2), None);
        assert_eq!(dollar_tag(b"$$x", 0, 3), Some(2));
        assert_eq!(dollar_tag(b"$fn$x", 0, 5), Some(4));
        assert_eq!(
            nth_statement("SELECT $q$;$q$; SELECT 2", 1),
            Some(" SELECT 2")
        );
        assert_eq!(nth_statement("SELECT a$b; SELECT 2", 1), Some(" SELECT 2"));
    }

    /// `nth_statement` as it was before [`next_byte`]: one token (and one
    /// comment byte) at a time.
    fn nth_statement_by_token(sql: &str, index: u16) -> Option<&str> {
        let b = sql.as_bytes();
        let mut limit = b.len().min(MAX_SCAN);
        while !sql.is_char_boundary(limit) {
            limit -= 1;
        }
        let (mut n, mut start, mut i, mut content) = (0u16, 0usize, 0usize, false);
        while i < limit {
            let next = b.get(i + 1).copied();
            i = match b[i] {
                b';' => {
                    if content {
                        if n == index {
                            return Some(&sql[start..i]);
                        }
                        n += 1;
                    }
                    content = false;
                    start = i + 1;
                    i + 1
                }
                c if c.is_ascii_whitespace() => i + 1,
                b'-' if next == Some(b'-') => b[i..limit]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(limit, |p| i + p + 1),
                b'/' if next == Some(b'*') => {
                    let (mut depth, mut j) = (0usize, i);
                    loop {
                        if j + 1 >= limit {
                            break limit;
                        }
                        match (b[j], b[j + 1]) {
                            (b'/', b'*') => {
                                depth += 1;
                                j += 2;
                            }
                            (b'*', b'/') => {
                                depth -= 1;
                                j += 2;
                                if depth == 0 {
                                    break j;
                                }
                            }
                            _ => j += 1,
                        }
                    }
                }
                _ => {
                    content = true;
                    skip_token(b, i, limit)
                }
            };
        }
        (content && n == index).then(|| &sql[start..limit])
    }

    /// Texts made of the fragments the splitter treats specially, long
    /// enough to cross the 16-byte steps.
    fn sqlish() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let fragment = prop::sample::select(vec![
            ";",
            "'",
            "''",
            "\"",
            "$",
            "$$",
            "$q$",
            "$1",
            "a$b",
            "E'",
            "\\",
            "-",
            "--",
            "\n",
            "/",
            "/*",
            "*/",
            " ",
            "SELECT",
            "x",
            "é",
            "qproxy.request_id",
            "QProxy.Request_ID",
            "abcdefghijklmnopqrstuvwxyz0123456789",
        ]);
        prop::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        #[test]
        fn fast_scans_agree_with_the_byte_at_a_time_ones(sql in sqlish(), index in 0u16..4) {
            proptest::prop_assert_eq!(
                nth_statement(&sql, index),
                nth_statement_by_token(&sql, index)
            );
            for needle in ["qproxy.request_id", "set_config", "$"] {
                let hay = &sql.as_bytes()[..sql.len().min(MAX_SCAN)];
                let naive = hay
                    .windows(needle.len())
                    .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
                proptest::prop_assert_eq!(find_ci(&sql, needle), naive);
            }
        }
    }
}
