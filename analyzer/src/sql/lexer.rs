//! The analyzer's one PostgreSQL lexer; it never fails.
//!
//! sqlparser's tokenizer rejects input it cannot parse (unterminated strings,
//! stray characters), but a fingerprint, a statement boundary and a request
//! tag are still owed for such input. This lexer follows PostgreSQL's
//! lexical rules closely enough to find string literals (plain, `E''`,
//! `B''`, `X''`, `N''`, `U&''`, dollar-quoted), numbers, `$n` parameters,
//! comments (nested `/* */` and `--`), quoted identifiers and operators, and
//! it accepts anything: an unterminated construct simply runs to the end of
//! the input. Every token advances by at least one byte and token boundaries
//! always fall on `char` boundaries (bytes >= 0x80 only ever appear inside
//! words, strings, identifiers and comments), so slicing the source with a
//! token's range cannot panic.
//!
//! Everything that needs to know where a string, comment or statement
//! starts and ends reads it here: the statement splitter (`split.rs`), the
//! token reader of correlation and cursors (`reader.rs`), the comment
//! windows of request tags, and in fingerprinting the scan of the input,
//! the fallback digest and the pass over sqlparser's printed output.

/// What a token is; only the distinctions the fingerprint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Spaces, tabs, newlines.
    Whitespace,
    /// `-- ...` or `/* ... */` (nesting allowed).
    Comment,
    /// Unquoted identifier or keyword.
    Word,
    /// `"..."` or `U&"..."`.
    QuotedIdent,
    /// Any string literal, including dollar-quoted bodies.
    String,
    /// Numeric literal (integers, decimals, exponents, `0x..`, `1_000`).
    Number,
    /// `$1`, `$2`, ...
    Param,
    /// A run of operator characters (`=`, `->>`, `::`, `<>`, ...).
    Operator,
    /// `;`
    Semicolon,
    /// `(`, `[`
    Open,
    /// `)`, `]`
    Close,
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// Anything else (one byte, ASCII).
    Other,
}

/// One token: its kind and its byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's text.
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }

    /// Whether the token carries meaning (not whitespace or a comment).
    pub fn is_significant(&self) -> bool {
        !matches!(self.kind, TokenKind::Whitespace | TokenKind::Comment)
    }
}

/// Iterator over the tokens of a SQL text.
pub(crate) struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Self::at(src, 0)
    }

    /// A lexer that starts at byte `pos` of `src` (a token boundary, or at
    /// least a `char` boundary, for the tokens to make sense).
    pub fn at(src: &'a str, pos: usize) -> Self {
        Lexer {
            bytes: src.as_bytes(),
            pos: pos.min(src.len()),
        }
    }

    /// The byte offset the next token starts at.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    /// Advances past a quoted body starting at the opening quote.
    /// `backslash_escapes` is true for `E'...'` strings.
    fn skip_quoted(&mut self, quote: u8, backslash_escapes: bool) {
        self.pos =
            quoted_end(self.bytes, self.pos, quote, backslash_escapes).unwrap_or(self.bytes.len());
    }

    fn skip_block_comment(&mut self) {
        self.pos = block_comment_end(self.bytes, self.pos).unwrap_or(self.bytes.len());
    }

    /// At a `$`: a dollar-quoted string (`$$...$$`, `$tag$...$tag$`), or
    /// `None` when the `$` does not open one.
    fn try_dollar_quote(&mut self) -> Option<()> {
        let start = self.pos;
        let mut end_tag = start + 1;
        while let Some(&b) = self.bytes.get(end_tag) {
            let ok = if end_tag == start + 1 {
                is_ident_start(b)
            } else {
                is_ident_start(b) || b.is_ascii_digit()
            };
            if b == b'$' {
                break;
            }
            if !ok {
                return None;
            }
            end_tag += 1;
        }
        if self.bytes.get(end_tag) != Some(&b'$') {
            return None;
        }
        let tag = &self.bytes[start..=end_tag];
        let body_start = end_tag + 1;
        let close = find_subslice(&self.bytes[body_start..], tag);
        self.pos = match close {
            Some(i) => body_start + i + tag.len(),
            None => self.bytes.len(),
        };
        Some(())
    }

    fn skip_number(&mut self) {
        while matches!(self.peek(0), Some(b) if b.is_ascii_digit() || b == b'_') {
            self.pos += 1;
        }
        if self.peek(0) == Some(b'.') && self.peek(1) != Some(b'.') {
            self.pos += 1;
            while matches!(self.peek(0), Some(b) if b.is_ascii_digit() || b == b'_') {
                self.pos += 1;
            }
        }
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek(1), Some(b'+' | b'-')));
            if matches!(self.peek(1 + sign), Some(b) if b.is_ascii_digit()) {
                self.pos += 1 + sign;
            }
        }
        // Trailing letters and digits (`0x1F`, `1e10`, junk): part of the number.
        while matches!(self.peek(0), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
            self.pos += 1;
        }
    }

    fn skip_operator(&mut self) {
        let start = self.pos;
        while let Some(b) = self.peek(0) {
            if !is_operator_char(b) {
                break;
            }
            // A comment start ends the operator (unless it is the first char).
            if self.pos > start
                && ((b == b'-' && self.peek(1) == Some(b'-'))
                    || (b == b'/' && self.peek(1) == Some(b'*')))
            {
                break;
            }
            self.pos += 1;
        }
        // PostgreSQL: a multi-char operator may not end in `+` or `-` unless
        // it also contains one of ~ ! @ # % ^ & | ` ? (so `=-1` is `=` `-1`).
        let op = &self.bytes[start..self.pos];
        if op.len() > 1 && !op.iter().any(|b| b"~!@#%^&|`?".contains(b)) {
            let mut end = self.pos;
            while end > start + 1 && matches!(self.bytes[end - 1], b'+' | b'-') {
                end -= 1;
            }
            self.pos = end;
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let start = self.pos;
        let b = *self.bytes.get(start)?;
        let kind = match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                while matches!(
                    self.peek(0),
                    Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
                ) {
                    self.pos += 1;
                }
                TokenKind::Whitespace
            }
            b'-' if self.peek(1) == Some(b'-') => {
                while !matches!(self.peek(0), None | Some(b'\n')) {
                    self.pos += 1;
                }
                TokenKind::Comment
            }
            b'/' if self.peek(1) == Some(b'*') => {
                self.skip_block_comment();
                TokenKind::Comment
            }
            b'\'' => {
                self.skip_quoted(b'\'', false);
                TokenKind::String
            }
            b'"' => {
                self.skip_quoted(b'"', false);
                TokenKind::QuotedIdent
            }
            b'e' | b'E' if self.peek(1) == Some(b'\'') => {
                self.pos += 1;
                self.skip_quoted(b'\'', true);
                TokenKind::String
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if self.peek(1) == Some(b'\'') => {
                self.pos += 1;
                self.skip_quoted(b'\'', false);
                TokenKind::String
            }
            b'u' | b'U' if self.peek(1) == Some(b'&') && self.peek(2) == Some(b'\'') => {
                self.pos += 2;
                self.skip_quoted(b'\'', false);
                TokenKind::String
            }
            b'u' | b'U' if self.peek(1) == Some(b'&') && self.peek(2) == Some(b'"') => {
                self.pos += 2;
                self.skip_quoted(b'"', false);
                TokenKind::QuotedIdent
            }
            b'$' if matches!(self.peek(1), Some(d) if d.is_ascii_digit()) => {
                self.pos += 1;
                while matches!(self.peek(0), Some(d) if d.is_ascii_digit()) {
                    self.pos += 1;
                }
                TokenKind::Param
            }
            b'$' if self.try_dollar_quote().is_some() => TokenKind::String,
            b'0'..=b'9' => {
                self.skip_number();
                TokenKind::Number
            }
            b'.' if matches!(self.peek(1), Some(d) if d.is_ascii_digit()) => {
                self.skip_number();
                TokenKind::Number
            }
            _ if is_ident_start(b) => {
                let rest = &self.bytes[start + 1..];
                self.pos += 1 + rest
                    .iter()
                    .position(|&c| !is_ident_part(c))
                    .unwrap_or(rest.len());
                TokenKind::Word
            }
            _ if is_operator_char(b) => {
                self.skip_operator();
                TokenKind::Operator
            }
            b';' => {
                self.pos += 1;
                TokenKind::Semicolon
            }
            b'(' | b'[' => {
                self.pos += 1;
                TokenKind::Open
            }
            b')' | b']' => {
                self.pos += 1;
                TokenKind::Close
            }
            b',' => {
                self.pos += 1;
                TokenKind::Comma
            }
            b'.' => {
                self.pos += 1;
                TokenKind::Dot
            }
            _ => {
                self.pos += 1;
                TokenKind::Other
            }
        };
        debug_assert!(self.pos > start);
        Some(Token {
            kind,
            start,
            end: self.pos,
        })
    }
}

/// Byte classes, looked up once per byte instead of compared in chains.
const IDENT_START: u8 = 1;
const IDENT_PART: u8 = 2;
const OPERATOR: u8 = 4;

const fn byte_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // Letters, `_` and every byte of a non-ASCII character start an
        // identifier (PostgreSQL accepts any high-bit character in names).
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            table[b] |= IDENT_START | IDENT_PART;
        }
        if c.is_ascii_digit() || c == b'$' {
            table[b] |= IDENT_PART;
        }
        b += 1;
    }
    let ops = b"+-*/<>=~!@#%^&|`?:";
    let mut i = 0;
    while i < ops.len() {
        table[ops[i] as usize] |= OPERATOR;
        i += 1;
    }
    table
}

static CLASSES: [u8; 256] = byte_classes();

fn is_ident_start(b: u8) -> bool {
    CLASSES[usize::from(b)] & IDENT_START != 0
}

fn is_ident_part(b: u8) -> bool {
    CLASSES[usize::from(b)] & IDENT_PART != 0
}

fn is_operator_char(b: u8) -> bool {
    CLASSES[usize::from(b)] & OPERATOR != 0
}

/// For a quote at `open` (`'` or `"`), the offset just after its closing
/// quote; a doubled quote is an escaped one, and with `backslash_escapes`
/// (`E'...'`) a backslash escapes the next byte. `None` when it never
/// closes (the lexer's token then runs to the end).
pub(crate) fn quoted_end(
    bytes: &[u8],
    open: usize,
    quote: u8,
    backslash_escapes: bool,
) -> Option<usize> {
    let mut pos = open + 1;
    while let Some(&b) = bytes.get(pos) {
        if backslash_escapes && b == b'\\' {
            pos += 2;
            continue;
        }
        pos += 1;
        if b == quote {
            if bytes.get(pos) == Some(&quote) {
                pos += 1; // doubled quote is an escaped quote
            } else {
                return Some(pos);
            }
        }
    }
    None
}

/// For a `/*` at `start`, the offset just after its matching `*/`
/// (PostgreSQL nests block comments); `None` when it never closes.
pub(crate) fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut pos = start + 2;
    let mut depth = 1usize;
    while pos < bytes.len() {
        match (bytes[pos], bytes.get(pos + 1)) {
            (b'*', Some(b'/')) => {
                pos += 2;
                depth -= 1;
                if depth == 0 {
                    return Some(pos);
                }
            }
            (b'/', Some(b'*')) => {
                pos += 2;
                depth += 1;
            }
            _ => pos += 1,
        }
    }
    None
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(TokenKind, &str)> {
        Lexer::new(src)
            .filter(Token::is_significant)
            .map(|t| (t.kind, t.text(src)))
            .collect()
    }

    #[test]
    fn lexes_literal_flavours() {
        use TokenKind::*;
        assert_eq!(
            kinds("E'a\\'b' 'it''s' $$x$$ $t$y$t$ B'01' U&'d' 1.5e-3 .5 $3 0x1F"),
            vec![
                (String, "E'a\\'b'"),
                (String, "'it''s'"),
                (String, "$$x$$"),
                (String, "$t$y$t$"),
                (String, "B'01'"),
                (String, "U&'d'"),
                (Number, "1.5e-3"),
                (Number, ".5"),
                (Param, "$3"),
                (Number, "0x1F"),
            ]
        );
    }

    #[test]
    fn operators_follow_postgres_rules() {
        use TokenKind::*;
        assert_eq!(
            kinds("a=-1 b->>'k' c::int d--x\ne/*y*/f"),
            vec![
                (Word, "a"),
                (Operator, "="),
                (Operator, "-"),
                (Number, "1"),
                (Word, "b"),
                (Operator, "->>"),
                (String, "'k'"),
                (Word, "c"),
                (Operator, "::"),
                (Word, "int"),
                (Word, "d"),
                (Word, "e"),
                (Word, "f"),
            ]
        );
    }

    #[test]
    fn unterminated_constructs_run_to_the_end() {
        for src in [
            "'abc",
            "\"abc",
            "/* /* */",
            "$tag$ body",
            "E'\\",
            "U&'",
            "--",
        ] {
            let toks: Vec<_> = Lexer::new(src).collect();
            assert_eq!(toks.last().map(|t| t.end), Some(src.len()), "{src}");
        }
    }
}
