//! The suggested index as DDL a developer can paste.

use super::facts::SortKey;
use crate::catalog::Table;

/// One key of a suggested index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyDef {
    pub column: String,
    pub descending: bool,
    pub nulls_first: bool,
    pub opclass: Option<&'static str>,
}

impl KeyDef {
    pub(crate) fn plain(column: &str) -> KeyDef {
        KeyDef {
            column: column.to_owned(),
            descending: false,
            nulls_first: false,
            opclass: None,
        }
    }

    /// Keys for an ORDER BY. When the first key is DESC the whole order is
    /// flipped: a backward scan of the flipped index delivers it, and an
    /// ascending first key reads more naturally.
    pub(crate) fn for_sort(keys: &[SortKey]) -> Vec<KeyDef> {
        let flip = keys.first().is_some_and(|k| k.descending);
        keys.iter()
            .filter_map(|k| {
                Some(KeyDef {
                    column: k.target.column()?.to_owned(),
                    descending: k.descending != flip,
                    nulls_first: k.nulls_first != flip,
                    opclass: None,
                })
            })
            .collect()
    }

    fn render(&self) -> String {
        let mut s = quote_ident(&self.column);
        if let Some(op) = self.opclass {
            s.push(' ');
            s.push_str(op);
        }
        if self.descending {
            s.push_str(" DESC");
        }
        if self.nulls_first != self.descending {
            s.push_str(if self.nulls_first {
                " NULLS FIRST"
            } else {
                " NULLS LAST"
            });
        }
        s
    }

    /// How the key reads in a report (`created_at DESC`).
    pub(crate) fn describe(&self) -> String {
        self.render()
    }
}

/// `CREATE INDEX CONCURRENTLY ON schema.table (keys);` — CONCURRENTLY
/// because the table is large by construction and a plain CREATE INDEX
/// would block writes for the whole build. No index name: PostgreSQL
/// picks one, and a guessed name could collide.
pub(crate) fn create_index(table: &Table, keys: &[KeyDef]) -> String {
    let keys: Vec<String> = keys.iter().map(KeyDef::render).collect();
    format!(
        "CREATE INDEX CONCURRENTLY ON {}.{} ({});",
        quote_ident(&table.schema),
        quote_ident(&table.name),
        keys.join(", ")
    )
}

/// [`create_index`] of a partial index `WHERE predicate` (SQL as given).
pub(crate) fn create_partial_index(table: &Table, keys: &[KeyDef], predicate: &str) -> String {
    let full = create_index(table, keys);
    let body = full.strip_suffix(';').unwrap_or(&full);
    format!("{body} WHERE {predicate};")
}

/// The operator class a prefix LIKE needs under a non-C collation.
pub(crate) fn pattern_opclass(type_name: &str) -> &'static str {
    if type_name.starts_with("character(") || type_name == "character" || type_name == "bpchar" {
        "bpchar_pattern_ops"
    } else {
        "text_pattern_ops"
    }
}

/// Quotes an identifier only when PostgreSQL would not read it back
/// unchanged: anything but lower-case letters, digits, `_` and `$` (not
/// leading), or a reserved word.
pub(crate) fn quote_ident(name: &str) -> String {
    if crate::fingerprint::reserved::is_plain_identifier(name) {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote_ident("user_id"), "user_id");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("CamelCase"), "\"CamelCase\"");
        assert_eq!(quote_ident("1st"), "\"1st\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
