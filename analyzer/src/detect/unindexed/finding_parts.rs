//! What every unindexed finding (filter, sort, foreign key, non-sargable
//! filter) shares: its severity by table size and how it names an index.
//!
//! A leaf below `evaluate.rs`, `foreign_key.rs` and `non_sargable.rs`:
//! `evaluate.rs` calls the other two, so they take these from here rather
//! than from it.

use super::UnindexedConfig;
use crate::catalog::{Index, KeyExpr, Table};
use crate::finding::Severity;

/// Warning from `min_table_rows`, error from `error_table_rows`: the
/// severity rule of every kind read from a statement and the catalog (an
/// unlimited sort's own tier aside).
pub(crate) fn size_severity(table: &Table, config: &UnindexedConfig) -> Severity {
    rows_severity(table.estimated_rows(), config)
}

/// [`size_severity`] of a table of `rows` estimated rows.
fn rows_severity(rows: f64, config: &UnindexedConfig) -> Severity {
    if rows >= config.error_table_rows as f64 {
        Severity::Error
    } else {
        Severity::Warning
    }
}

/// `name method (keys) [WHERE ..] [INVALID]`, as findings list indexes.
pub(crate) fn describe_index(index: &Index) -> String {
    let keys: Vec<String> = index
        .keys
        .iter()
        .map(|k| match &k.expr {
            KeyExpr::Column(c) => c.clone(),
            KeyExpr::Expression(e) => format!("({e})"),
        })
        .collect();
    let mut s = format!(
        "{} {} ({})",
        index.name,
        index.method.as_str(),
        keys.join(", ")
    );
    if let Some(p) = &index.predicate {
        s.push_str(&format!(" WHERE {p}"));
    }
    if !index.valid {
        s.push_str(" INVALID");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_table_is_an_error_from_the_error_size() {
        let config = UnindexedConfig::default();
        assert_eq!(rows_severity(10_000.0, &config), Severity::Warning);
        assert_eq!(rows_severity(999_999.0, &config), Severity::Warning);
        assert_eq!(rows_severity(1_000_000.0, &config), Severity::Error);
    }
}
