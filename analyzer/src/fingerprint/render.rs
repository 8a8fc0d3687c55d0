//! The last pass over sqlparser's printed output.
//!
//! It numbers placeholders in order of appearance (`$1`, `$2`, ...), so the
//! normalized text is valid PostgreSQL that `EXPLAIN (GENERIC_PLAN)` accepts,
//! and it replaces any string literal still left (sqlparser keeps a few as
//! plain strings outside its `Value` type, e.g. `COMMENT ON ... IS '...'`)
//! unless it is a JSON key: right after `->`, `->>`, `#>`, `#>>`, `#-`, `?`,
//! `?|` or `?&`, or inside an `ARRAY[...]` right after one of them.
//! This is the guarantee that no string value survives into a fingerprint.

use crate::sql::lexer::{Lexer, TokenKind};

/// Whether `op` takes a JSON key or path as its right operand.
pub(crate) fn is_json_key_operator(op: &str) -> bool {
    matches!(op, "->" | "->>" | "#>" | "#>>" | "#-" | "?" | "?|" | "?&")
}

/// Where the pass is relative to a JSON key operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKeys {
    /// Not at a JSON operand.
    No,
    /// Right after a JSON key operator.
    AfterOperator,
    /// After `operator ARRAY`.
    AfterArray,
    /// Inside the brackets of `operator ARRAY[`, this many deep.
    InArray(u32),
}

/// Rewrites `printed` as described in the module docs.
pub(crate) fn render(printed: &str) -> String {
    let mut out = String::with_capacity(printed.len());
    let mut copied = 0usize;
    let mut placeholders = 0u32;
    let mut json = JsonKeys::No;
    for tok in Lexer::new(printed) {
        if !tok.is_significant() {
            continue;
        }
        let is_key = matches!(json, JsonKeys::AfterOperator | JsonKeys::InArray(_));
        json = match (json, tok.kind) {
            (_, TokenKind::Operator) if is_json_key_operator(tok.text(printed)) => {
                JsonKeys::AfterOperator
            }
            (JsonKeys::AfterOperator, TokenKind::Word)
                if tok.text(printed).eq_ignore_ascii_case("array") =>
            {
                JsonKeys::AfterArray
            }
            (JsonKeys::AfterArray, TokenKind::Open) => JsonKeys::InArray(1),
            (JsonKeys::InArray(n), TokenKind::Open) => JsonKeys::InArray(n + 1),
            (JsonKeys::InArray(1), TokenKind::Close) => JsonKeys::No,
            (JsonKeys::InArray(n), TokenKind::Close) => JsonKeys::InArray(n - 1),
            (JsonKeys::InArray(n), _) => JsonKeys::InArray(n),
            _ => JsonKeys::No,
        };
        let replace = match tok.kind {
            TokenKind::Param => true,
            TokenKind::String => !is_key,
            _ => false,
        };
        if replace {
            out.push_str(&printed[copied..tok.start]);
            placeholders += 1;
            out.push('$');
            push_decimal(&mut out, placeholders);
            copied = tok.end;
        }
    }
    out.push_str(&printed[copied..]);
    out
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_and_scrubs_strings() {
        let out = render("SELECT a ->> 'k', b FROM t WHERE c = $0 AND d = $00 AND e = 'left over'");
        assert_eq!(
            out,
            "SELECT a ->> 'k', b FROM t WHERE c = $1 AND d = $2 AND e = $3"
        );
    }

    #[test]
    fn keeps_json_paths_in_arrays() {
        let out = render(
            "SELECT a #>> ARRAY['x', 'y']::TEXT[], b ?| ARRAY['k'] FROM t WHERE c = ARRAY['v']",
        );
        assert_eq!(
            out,
            "SELECT a #>> ARRAY['x', 'y']::TEXT[], b ?| ARRAY['k'] FROM t WHERE c = ARRAY[$1]"
        );
    }
}
