//! A token reader over the head of one statement, for the few forms read
//! without sqlparser: correlation's `BEGIN`/`SET`/`set_config(...)` and the
//! pipeline's `DECLARE`/`FETCH`/`CLOSE`.
//!
//! It is a cursor over the [`Lexer`]'s tokens: every method skips
//! whitespace and comments and consumes input only when it matches, so a
//! caller tries one form after another without backtracking by hand. It
//! never fails and never reads past [`MAX_READ`] bytes.

use std::borrow::Cow;

use super::lexer::{quoted_end, Lexer, Token, TokenKind};

/// Bytes of a statement a reader looks at. The forms read are short;
/// anything past this point is data.
pub(crate) const MAX_READ: usize = 64 * 1024;

/// The reader; see the module docs.
pub(crate) struct Reader<'a> {
    /// The statement, cut to [`MAX_READ`] bytes on a `char` boundary.
    src: &'a str,
    /// Where the next token starts.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `stmt`.
    pub(crate) fn new(stmt: &'a str) -> Self {
        let mut end = stmt.len().min(MAX_READ);
        while !stmt.is_char_boundary(end) {
            end -= 1;
        }
        Reader {
            src: &stmt[..end],
            pos: 0,
        }
    }

    /// A reader over the same text, at byte `pos` (a `char` boundary).
    pub(crate) fn at(&self, pos: usize) -> Self {
        Reader {
            src: self.src,
            pos: pos.min(self.src.len()),
        }
    }

    /// The text read (cut to [`MAX_READ`]).
    pub(crate) fn text(&self) -> &'a str {
        self.src
    }

    /// The byte offset reading has reached.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The next token that is not whitespace or a comment, not consumed.
    fn peek(&self) -> Option<Token> {
        Lexer::at(self.src, self.pos).find(Token::is_significant)
    }

    /// Consumes `tok` when `keep` says so.
    fn take(&mut self, tok: Token, keep: bool) -> bool {
        if keep {
            self.pos = tok.end;
        }
        keep
    }

    /// Skips whitespace and comments; whether anything else is left.
    pub(crate) fn more(&mut self) -> bool {
        match self.peek() {
            Some(tok) => {
                self.pos = tok.start;
                true
            }
            None => {
                self.pos = self.src.len();
                false
            }
        }
    }

    /// Consumes the next token, whatever it is.
    pub(crate) fn skip(&mut self) {
        self.pos = self.peek().map_or(self.src.len(), |t| t.end);
    }

    /// An unquoted word (keyword or identifier), as written.
    pub(crate) fn word(&mut self) -> Option<&'a str> {
        let tok = self.peek()?;
        if tok.kind != TokenKind::Word {
            return None;
        }
        self.pos = tok.end;
        Some(tok.text(self.src))
    }

    /// The keyword `kw` (ASCII case-insensitive).
    pub(crate) fn keyword(&mut self, kw: &str) -> bool {
        match self.peek() {
            Some(tok) => {
                let hit =
                    tok.kind == TokenKind::Word && tok.text(self.src).eq_ignore_ascii_case(kw);
                self.take(tok, hit)
            }
            None => false,
        }
    }

    /// The one-byte punctuation or operator `c` (`(`, `,`, `.`, `=`, `;`).
    pub(crate) fn punct(&mut self, c: u8) -> bool {
        match self.peek() {
            Some(tok) => {
                let hit = tok.text(self.src).as_bytes() == [c];
                self.take(tok, hit)
            }
            None => false,
        }
    }

    /// A bare `SET` value: a run of word characters, `-` and `.` (`abc`,
    /// `-1.5`, `req-42`), as written.
    pub(crate) fn word_or_number(&mut self) -> Option<&'a str> {
        let start = self.peek()?.start;
        let b = self.src.as_bytes();
        let len = b[start..]
            .iter()
            .take_while(|&&c| is_word_byte(c) || matches!(c, b'-' | b'.'))
            .count();
        self.pos = start + len;
        (len > 0).then(|| &self.src[start..start + len])
    }

    /// `"..."` (with `""` for a quote), unescaped.
    pub(crate) fn quoted_identifier(&mut self) -> Option<Cow<'a, str>> {
        let tok = self.peek()?;
        let text = tok.text(self.src);
        if tok.kind != TokenKind::QuotedIdent || !text.starts_with('"') {
            return None;
        }
        quoted_end(self.src.as_bytes(), tok.start, b'"', false)?;
        self.pos = tok.end;
        let inner = &text[1..text.len() - 1];
        Some(if inner.contains("\"\"") {
            Cow::Owned(inner.replace("\"\"", "\""))
        } else {
            Cow::Borrowed(inner)
        })
    }

    /// `$n`, returning `n`.
    pub(crate) fn param(&mut self) -> Option<usize> {
        let tok = self.peek()?;
        if tok.kind != TokenKind::Param {
            return None;
        }
        let n = tok.text(self.src)[1..].parse().ok()?;
        self.pos = tok.end;
        Some(n)
    }

    /// `'...'` (with `''`) or `E'...'` (with backslash escapes), unescaped;
    /// `None` for other string forms and for one that never closes.
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        let tok = self.peek()?;
        let text = tok.text(self.src);
        if tok.kind != TokenKind::String {
            return None;
        }
        let escapes = text.starts_with(['e', 'E']);
        let open = tok.start + usize::from(escapes);
        if self.src.as_bytes().get(open) != Some(&b'\'') {
            return None;
        }
        quoted_end(self.src.as_bytes(), open, b'\'', escapes)?;
        self.pos = tok.end;
        let raw = &self.src[open + 1..tok.end - 1];
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
    /// double-quoted as a whole (then exactly as written).
    pub(crate) fn setting_name(&mut self, name: &str) -> bool {
        let Some(tok) = self.peek() else {
            return false;
        };
        let text = tok.text(self.src);
        if text.starts_with('"') {
            let closed = quoted_end(self.src.as_bytes(), tok.start, b'"', false).is_some();
            return self.take(tok, closed && text.get(1..text.len() - 1) == Some(name));
        }
        let save = self.pos;
        let (prefix, rest) = name.split_once('.').unwrap_or((name, ""));
        let ok = self.keyword(prefix) && self.punct(b'.') && self.keyword(rest);
        if !ok {
            self.pos = save;
        }
        ok
    }

    /// `::type` after a value.
    pub(crate) fn skip_cast(&mut self) {
        if let Some(tok) = self.peek() {
            if tok.kind == TokenKind::Operator && tok.text(self.src) == "::" {
                self.pos = tok.end;
                let _ = self.word();
            }
        }
    }
}

/// Bytes of an unquoted word after its first: letters, digits, `_`, `$`
/// and every byte of a non-ASCII character.
pub(crate) fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tokens_after_comments() {
        let mut rd = Reader::new("/* a /* nested */ */ -- x\n set_config ( E'it\\'s' , $12 ::text");
        assert_eq!(rd.word(), Some("set_config"));
        assert!(rd.punct(b'('));
        assert_eq!(rd.string().as_deref(), Some("it's"));
        assert!(rd.punct(b','));
        assert_eq!(rd.param(), Some(12));
        rd.skip_cast();
        assert_eq!(rd.word(), None);
        assert!(!rd.more());
    }

    #[test]
    fn consumes_only_what_matches() {
        let mut rd = Reader::new(r#"SET "qproxy.request_id" TO 'a''b', x"#);
        assert!(!rd.keyword("reset"));
        assert!(rd.keyword("set"));
        assert!(!rd.setting_name("qproxy.other"));
        assert!(rd.setting_name("qproxy.request_id"));
        assert_eq!(rd.string(), None);
        assert!(rd.keyword("to"));
        assert_eq!(rd.string().as_deref(), Some("a'b"));
        assert!(!rd.punct(b'('));
        assert!(rd.punct(b','));
        assert_eq!(rd.quoted_identifier(), None);
        assert_eq!(rd.word(), Some("x"));
    }

    #[test]
    fn unterminated_and_other_forms_are_not_read() {
        assert_eq!(Reader::new("'abc").string(), None);
        assert_eq!(Reader::new("$$abc$$").string(), None);
        assert_eq!(Reader::new("N'abc'").string(), None);
        assert_eq!(Reader::new("\"abc").quoted_identifier(), None);
        assert_eq!(
            Reader::new("\"a\"\"b\"").quoted_identifier().as_deref(),
            Some("a\"b")
        );
        assert_eq!(Reader::new("  -12.5e x").word_or_number(), Some("-12.5e"));
        assert_eq!(Reader::new("$x").param(), None);
    }
}
