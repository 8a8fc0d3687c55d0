//! The last pass over sqlparser's printed output.
//!
//! It numbers placeholders in order of appearance (`$1`, `$2`, ...), so the
//! normalized text is valid PostgreSQL that `EXPLAIN (GENERIC_PLAN)` accepts,
//! and it replaces any string literal still left (sqlparser keeps a few as
//! plain strings outside its `Value` type, e.g. `COMMENT ON ... IS '...'`)
//! unless it is a JSON key: right after `->`, `->>`, `#>`, `#>>`, `#-`, `?`,
//! `?|` or `?&`, or inside an `ARRAY[...]` right after one of them.
//! This is the guarantee that no string value survives into a fingerprint.

use std::fmt::Write as _;

use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::lexer::{Lexer, TokenKind};

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

/// Rewrites `printed` as described in the module docs; hashes of strings it
/// replaces are appended to `literal_hashes`.
pub(crate) fn render(printed: &str, literal_hashes: &mut SmallVec<[u64; 4]>) -> String {
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
            TokenKind::String if !is_key => {
                literal_hashes.push(xxh3_64_with_seed(tok.text(printed).as_bytes(), 8));
                true
            }
            _ => false,
        };
        if replace {
            out.push_str(&printed[copied..tok.start]);
            placeholders += 1;
            let _ = write!(out, "${placeholders}");
            copied = tok.end;
        }
    }
    out.push_str(&printed[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_and_scrubs_strings() {
        let mut hashes = SmallVec::new();
        let out = render(
            "SELECT a ->> 'k', b FROM t WHERE c = $0 AND d = $00 AND e = 'left over'",
            &mut hashes,
        );
        assert_eq!(
            out,
            "SELECT a ->> 'k', b FROM t WHERE c = $1 AND d = $2 AND e = $3"
        );
        assert_eq!(hashes.len(), 1);
    }

    #[test]
    fn keeps_json_paths_in_arrays() {
        let mut hashes = SmallVec::new();
        let out = render(
            "SELECT a #>> ARRAY['x', 'y']::TEXT[], b ?| ARRAY['k'] FROM t WHERE c = ARRAY['v']",
            &mut hashes,
        );
        assert_eq!(
            out,
            "SELECT a #>> ARRAY['x', 'y']::TEXT[], b ?| ARRAY['k'] FROM t WHERE c = ARRAY[$1]"
        );
    }
}
