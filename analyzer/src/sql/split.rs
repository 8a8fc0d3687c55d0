//! The analyzer's one statement splitter: where the statements of a
//! (possibly multi-statement) text start and end.
//!
//! A statement ends at a `;` outside brackets; quotes, dollar quotes and
//! comments are the [`Lexer`]'s, so a `;` inside them never ends one. A
//! statement with nothing but whitespace and comments is empty and gets no
//! number (PostgreSQL sends no reply for it), so the `n`-th statement here
//! is the one a proxy event's `statement_index` `n` counted. Fingerprints
//! (the scan in `fingerprint/scan.rs` feeds [`Splitter`] the tokens it
//! reads anyway), correlation and the pipeline all split here, so a
//! statement's number and its text cannot come from two rules that
//! disagree.

use std::ops::Range;

use super::lexer::{Lexer, Token, TokenKind};

/// The boundary rule, fed every token of a text in order.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Splitter {
    /// Brackets open at this point; a `;` inside them (a syntax error
    /// PostgreSQL rejects as a whole) ends nothing.
    depth: usize,
}

impl Splitter {
    /// Whether `tok` ends the current statement.
    #[inline]
    pub(crate) fn ends_statement(&mut self, tok: &Token) -> bool {
        match tok.kind {
            TokenKind::Semicolon => self.depth == 0,
            TokenKind::Open => {
                self.depth += 1;
                false
            }
            TokenKind::Close => {
                self.depth = self.depth.saturating_sub(1);
                false
            }
            _ => false,
        }
    }
}

/// The byte ranges of the non-empty statements of `src`, in order, each
/// without its terminating `;` (leading whitespace and comments included).
pub(crate) fn statements(src: &str) -> Statements<'_> {
    Statements {
        lexer: Lexer::new(src),
        splitter: Splitter::default(),
        len: src.len(),
        done: false,
    }
}

/// Iterator of [`statements`]; lazy, so asking for the first statement
/// lexes only as far as its end.
pub(crate) struct Statements<'a> {
    lexer: Lexer<'a>,
    splitter: Splitter,
    len: usize,
    done: bool,
}

impl Iterator for Statements<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        while !self.done {
            let start = self.lexer.pos();
            let mut content = false;
            let end = loop {
                let Some(tok) = self.lexer.next() else {
                    self.done = true;
                    break self.len;
                };
                if self.splitter.ends_statement(&tok) {
                    break tok.start;
                }
                content |= tok.is_significant();
            };
            if content {
                return Some(start..end);
            }
        }
        None
    }
}

/// The `index`-th (0-based) non-empty statement of `src`; `None` when there
/// are fewer.
pub(crate) fn nth_statement(src: &str, index: u16) -> Option<&str> {
    // Most texts hold one statement and no `;` at all: then the rule has no
    // boundary to find, and one memchr plus the first token answer (this
    // runs for every event correlation classifies).
    if !src.as_bytes().contains(&b';') {
        return (index == 0 && Lexer::new(src).any(|t| t.is_significant())).then_some(src);
    }
    statements(src)
        .nth(usize::from(index))
        .and_then(|r| src.get(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(src: &str) -> Vec<&str> {
        statements(src).map(|r| src[r].trim()).collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(
            parts("select ';'; select $$;$$ ; /* ; */ ;; select (1;2)"),
            vec!["select ';'", "select $$;$$", "select (1;2)"]
        );
        assert_eq!(
            parts("SELECT E'\\';'; SELECT \"a;b\" -- ;\n; SELECT $q$;$q$; SELECT a$b; SELECT 2"),
            vec![
                "SELECT E'\\';'",
                "SELECT \"a;b\" -- ;",
                "SELECT $q$;$q$",
                "SELECT a$b",
                "SELECT 2"
            ]
        );
    }

    #[test]
    fn empty_statements_get_no_number() {
        assert!(parts("").is_empty());
        assert!(parts("  ;  ; /* c */ ; -- x").is_empty());
        assert_eq!(nth_statement("SELECT 1;", 0), Some("SELECT 1"));
        assert_eq!(nth_statement("SELECT 1;", 1), None);
        assert_eq!(nth_statement(";; SELECT 1; ;SELECT 2", 1), Some("SELECT 2"));
    }

    #[test]
    fn unterminated_constructs_swallow_the_rest() {
        assert_eq!(parts("SELECT 'a; SELECT 2"), vec!["SELECT 'a; SELECT 2"]);
        assert_eq!(
            parts("SELECT 1 /* ; SELECT 2"),
            vec!["SELECT 1 /* ; SELECT 2"]
        );
        assert_eq!(
            parts("SELECT $x$ ; SELECT 2"),
            vec!["SELECT $x$ ; SELECT 2"]
        );
    }

    proptest::proptest! {
        /// Statements are in order, never overlap, each holds a token that
        /// is not whitespace or a comment, and what lies between them is
        /// only `;`, whitespace and comments.
        #[test]
        fn statements_cover_the_text(parts in proptest::collection::vec(
            proptest::sample::select(vec![
                ";", "'", "''", "\"", "$", "$$", "$q$", "$1", "a$b", "E'", "\\", "-", "--",
                "\n", "/", "/*", "*/", " ", "(", ")", "SELECT", "x", "é",
            ]),
            0..40,
        )) {
            let src = parts.concat();
            for index in 0..3u16 {
                proptest::prop_assert_eq!(
                    nth_statement(&src, index),
                    statements(&src).nth(usize::from(index)).map(|r| &src[r])
                );
            }
            let mut last = 0;
            for r in statements(&src) {
                proptest::prop_assert!(r.start >= last && r.start <= r.end);
                let between = &src[last..r.start];
                proptest::prop_assert!(
                    Lexer::new(between).all(|t| !t.is_significant() || t.kind == TokenKind::Semicolon),
                    "{between:?}"
                );
                proptest::prop_assert!(Lexer::new(&src[r.clone()]).any(|t| t.is_significant()));
                last = r.end;
            }
        }
    }
}
