//! The token digest used when sqlparser cannot parse a statement.
//!
//! sqlparser does not know every PostgreSQL statement (`VACUUM ANALYZE t`,
//! `ALTER SEQUENCE ... OWNED BY`, psql's `OPERATOR(pg_catalog.~)`), and some
//! input is not SQL at all; such statements still get a fingerprint, flagged
//! `fallback`. The digest works on [`Lexer`] tokens:
//!
//! - string literals (all flavours, dollar-quoted bodies included), numbers
//!   and `$n` parameters become placeholders `$1`, `$2`, ... numbered in
//!   order; a sign directly in front of a number joins it;
//! - a comma-separated run of placeholders directly inside `IN (...)`,
//!   `ANY(...)` or `ARRAY[...]` collapses to one placeholder;
//! - a string right after `->`, `->>`, `#>`, `#>>` or `?` (a JSON key) stays;
//! - comments are dropped, unquoted words lower-cased, quoted identifiers
//!   kept verbatim;
//! - tokens are joined with canonical spacing (one space, none inside
//!   `a.b`, `f(x)`, `x::t` or before `,` and `)`), so the original
//!   whitespace never matters.
//!
//! Kind, tables and `has_limit` are read from keywords on a best-effort basis.
//! Everything is a single pass without recursion, so no input can exhaust
//! the stack; the only allocations grow linearly with the input.

use std::iter::Peekable;

use smallvec::SmallVec;

use super::kind::{classify_words, StatementKind};
use super::render::is_json_key_operator;
use super::Shape;
use crate::sql::lexer::{Lexer, Token, TokenKind};

/// What the last emitted piece of output was, for spacing and collapsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emitted {
    Nothing,
    Word,
    Placeholder,
    /// A comma following a placeholder inside a collapsible list; holds the
    /// output length before the comma so it can be taken back.
    CommaAfterPlaceholder(usize),
    Open,
    Close,
    Comma,
    Dot,
    Cast,
    Other,
}

/// Words after which a `-` or `+` is a sign, not a subtraction.
pub(crate) fn expects_operand(word: &str) -> bool {
    const WORDS: [&str; 22] = [
        "and",
        "between",
        "by",
        "case",
        "else",
        "having",
        "in",
        "is",
        "like",
        "limit",
        "not",
        "offset",
        "on",
        "or",
        "return",
        "returning",
        "select",
        "set",
        "then",
        "values",
        "when",
        "where",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// Words after which a table name follows.
fn introduces_table(word: &str) -> bool {
    ["from", "join", "into", "update", "copy", "table"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn fold_name(tok: &Token, src: &str) -> String {
    let text = tok.text(src);
    match tok.kind {
        TokenKind::QuotedIdent => {
            let inner = text.strip_prefix('"').unwrap_or(text);
            let inner = inner.strip_suffix('"').unwrap_or(inner);
            inner.replace("\"\"", "\"")
        }
        _ => text.to_ascii_lowercase(),
    }
}

/// Where the digester is in recognizing a table name.
#[derive(Debug)]
enum TableState {
    Idle,
    /// After `FROM`, `JOIN`, `INTO`, ... (or a comma in a `FROM` list).
    Expecting,
    /// Inside a possibly qualified name.
    InName {
        name: String,
        after_dot: bool,
    },
}

struct Digester<'a> {
    src: &'a str,
    out: String,
    emitted: Emitted,
    placeholders: u32,
    /// One entry per open bracket: whether its contents are a value list
    /// whose placeholders collapse.
    brackets: Vec<bool>,
    table_state: TableState,
    /// Bracket depth of the `FROM` list being read, if any.
    from_list_depth: Option<usize>,
    tables: Vec<String>,
    cte_names: Vec<String>,
    /// The last word or quoted identifier at depth 0 (a CTE name if `AS` follows).
    last_name: Option<String>,
    /// First two words, lower-cased.
    words: [Option<String>; 2],
    /// After `WITH`: the first top-level DML keyword.
    main_word: Option<String>,
    has_limit: bool,
}

impl<'a> Digester<'a> {
    fn new(src: &'a str) -> Self {
        Digester {
            src,
            out: String::with_capacity(src.len().min(1 << 16)),
            emitted: Emitted::Nothing,
            placeholders: 0,
            brackets: Vec::new(),
            table_state: TableState::Idle,
            from_list_depth: None,
            tables: Vec::new(),
            cte_names: Vec::new(),
            last_name: None,
            words: [None, None],
            main_word: None,
            has_limit: false,
        }
    }

    fn space_before(&mut self, kind: TokenKind) {
        let glued_to_previous = matches!(
            self.emitted,
            Emitted::Nothing | Emitted::Open | Emitted::Dot | Emitted::Cast
        );
        let glued_to_next = matches!(
            kind,
            TokenKind::Close | TokenKind::Comma | TokenKind::Dot | TokenKind::Semicolon
        ) || (kind == TokenKind::Open && self.emitted == Emitted::Word);
        if !glued_to_previous && !glued_to_next {
            self.out.push(' ');
        }
    }

    fn in_collapsible_list(&self) -> bool {
        self.brackets.last().copied().unwrap_or(false)
    }

    fn depth(&self) -> usize {
        self.brackets.len()
    }

    fn placeholder(&mut self) {
        if let Emitted::CommaAfterPlaceholder(len) = self.emitted {
            self.out.truncate(len);
            self.emitted = Emitted::Placeholder;
            return;
        }
        self.space_before(TokenKind::Param);
        self.placeholders += 1;
        self.out.push('$');
        self.out.push_str(&self.placeholders.to_string());
        self.emitted = Emitted::Placeholder;
    }

    /// Keyword facts: first words, the statement after `WITH`, `LIMIT`.
    fn note_word(&mut self, lower: &str) {
        if self.words[0].is_none() {
            self.words[0] = Some(lower.to_owned());
        } else if self.words[1].is_none() {
            self.words[1] = Some(lower.to_owned());
        }
        if self.depth() != 0 {
            return;
        }
        if self.main_word.is_none()
            && self.words[0].as_deref() == Some("with")
            && matches!(lower, "select" | "insert" | "update" | "delete" | "merge")
        {
            self.main_word = Some(lower.to_owned());
        }
        if matches!(lower, "limit" | "fetch") && self.words[0].as_deref() != Some("fetch") {
            self.has_limit = true;
        }
        if matches!(
            lower,
            "where" | "group" | "order" | "limit" | "having" | "on" | "using" | "set" | "union"
        ) {
            self.from_list_depth = None;
        }
        if lower == "as" && self.words[0].as_deref() == Some("with") {
            if let Some(name) = self.last_name.take() {
                self.cte_names.push(name);
            }
        }
    }

    fn finish_table(&mut self) {
        if let TableState::InName { name, .. } =
            std::mem::replace(&mut self.table_state, TableState::Idle)
        {
            if !self.tables.contains(&name) {
                self.tables.push(name);
            }
        }
    }

    /// Feeds one significant token to the table-name recognizer.
    fn track_table(&mut self, tok: &Token) {
        let src = self.src;
        let is_name = matches!(tok.kind, TokenKind::Word | TokenKind::QuotedIdent);
        match &mut self.table_state {
            TableState::InName { after_dot, .. } if !*after_dot && tok.kind == TokenKind::Dot => {
                *after_dot = true;
                return;
            }
            TableState::InName { name, after_dot } if *after_dot && is_name => {
                name.push('.');
                name.push_str(&fold_name(tok, src));
                *after_dot = false;
                return;
            }
            TableState::InName { .. } if tok.kind == TokenKind::Open => {
                // A function in FROM (`generate_series(...)`), not a table.
                self.table_state = TableState::Idle;
                return;
            }
            TableState::InName { .. } => self.finish_table(),
            TableState::Expecting if is_name => {
                let text = tok.text(src);
                let skip = tok.kind == TokenKind::Word
                    && ["only", "lateral", "table"]
                        .iter()
                        .any(|w| w.eq_ignore_ascii_case(text));
                if !skip {
                    self.table_state = TableState::InName {
                        name: fold_name(tok, src),
                        after_dot: false,
                    };
                }
                return;
            }
            TableState::Expecting => self.table_state = TableState::Idle,
            TableState::Idle => {}
        }
        let text = tok.text(src);
        if tok.kind == TokenKind::Word && introduces_table(text) {
            self.table_state = TableState::Expecting;
            if text.eq_ignore_ascii_case("from") {
                self.from_list_depth = Some(self.depth());
            }
        } else if tok.kind == TokenKind::Comma && self.from_list_depth == Some(self.depth()) {
            self.table_state = TableState::Expecting;
        }
    }

    fn run(mut self, tokens: &mut Peekable<impl Iterator<Item = Token>>) -> Shape {
        let src = self.src;
        while let Some(tok) = tokens.next() {
            let text = tok.text(src);
            self.track_table(&tok);
            match tok.kind {
                TokenKind::Whitespace | TokenKind::Comment => {}
                TokenKind::String => {
                    let keep = self.emitted == Emitted::Other
                        && self
                            .out
                            .rsplit(' ')
                            .next()
                            .is_some_and(is_json_key_operator);
                    if keep {
                        self.space_before(tok.kind);
                        self.out.push_str(text);
                        self.emitted = Emitted::Other;
                    } else {
                        self.placeholder();
                    }
                }
                TokenKind::Number | TokenKind::Param => self.placeholder(),
                TokenKind::Operator => {
                    let signed = (text == "-" || text == "+") && self.expects_operand();
                    if signed && tokens.peek().is_some_and(|t| t.kind == TokenKind::Number) {
                        tokens.next();
                        self.placeholder();
                        continue;
                    }
                    if text == "::" {
                        self.out.push_str("::");
                        self.emitted = Emitted::Cast;
                    } else {
                        self.space_before(tok.kind);
                        self.out.push_str(text);
                        self.emitted = Emitted::Other;
                    }
                }
                TokenKind::Word | TokenKind::QuotedIdent => {
                    self.space_before(tok.kind);
                    let start = self.out.len();
                    if tok.kind == TokenKind::Word {
                        self.out
                            .extend(text.chars().map(|c| c.to_ascii_lowercase()));
                        let lower = self.out[start..].to_owned();
                        self.note_word(&lower);
                    } else {
                        self.out.push_str(text);
                    }
                    if self.depth() == 0 && !text.eq_ignore_ascii_case("as") {
                        self.last_name = Some(fold_name(&tok, src));
                    }
                    self.emitted = Emitted::Word;
                }
                TokenKind::Open => {
                    let previous_word = self.out.rsplit([' ', '(', '[', ',']).next().unwrap_or("");
                    let collapsible = self.emitted == Emitted::Word
                        && ["in", "any", "array", "all"].contains(&previous_word);
                    self.space_before(tok.kind);
                    self.out.push_str(text);
                    self.brackets.push(collapsible);
                    self.emitted = Emitted::Open;
                }
                TokenKind::Close => {
                    self.brackets.pop();
                    self.space_before(tok.kind);
                    self.out.push_str(text);
                    self.emitted = Emitted::Close;
                }
                TokenKind::Comma => {
                    let before = self.out.len();
                    self.out.push(',');
                    self.emitted =
                        if self.emitted == Emitted::Placeholder && self.in_collapsible_list() {
                            Emitted::CommaAfterPlaceholder(before)
                        } else {
                            Emitted::Comma
                        };
                }
                TokenKind::Dot => {
                    self.out.push('.');
                    self.emitted = Emitted::Dot;
                }
                TokenKind::Semicolon | TokenKind::Other => {
                    self.space_before(tok.kind);
                    self.out.push_str(text);
                    self.emitted = Emitted::Other;
                }
            }
        }
        self.finish_table();
        self.finish()
    }

    /// Whether a `-`/`+` here is a sign rather than a binary operator.
    fn expects_operand(&self) -> bool {
        match self.emitted {
            Emitted::Nothing
            | Emitted::Open
            | Emitted::Comma
            | Emitted::CommaAfterPlaceholder(_)
            | Emitted::Other
            | Emitted::Cast => true,
            Emitted::Word => self.out.rsplit(' ').next().is_some_and(expects_operand),
            Emitted::Placeholder | Emitted::Close | Emitted::Dot => false,
        }
    }

    fn finish(self) -> Shape {
        let kind = classify_words(
            self.words[0].as_deref().unwrap_or(""),
            self.words[1].as_deref().unwrap_or(""),
            self.main_word.as_deref().unwrap_or(""),
        );
        let cte_names = self.cte_names;
        let tables = self
            .tables
            .into_iter()
            .filter(|t| !cte_names.contains(t))
            .collect();
        Shape {
            text: self.out,
            kind,
            tables,
            literal_hashes: SmallVec::new(),
            has_limit: self.has_limit && kind == StatementKind::Select,
        }
    }
}

/// Digests one statement's text.
pub(crate) fn digest(stmt: &str) -> Shape {
    let mut tokens = Lexer::new(stmt).filter(Token::is_significant).peekable();
    Digester::new(stmt).run(&mut tokens)
}
