//! `unindexed_foreign_key`: a foreign key whose referencing columns no
//! index leads with, on a large referencing table, reported when the
//! traffic exercises it.
//!
//! # When the key is exercised
//! - A DELETE of the referenced table: for every deleted row PostgreSQL
//!   looks up the referencing rows (`SELECT 1 FROM referencing WHERE fk =
//!   $1 FOR KEY SHARE`, or the cascade's DELETE/UPDATE), a sequential scan
//!   of the referencing table per row without an index.
//! - An UPDATE of the referenced table that sets a referenced column: the
//!   same lookup for every row whose key changes.
//! - A join on the key (every key column equated with its referenced
//!   column) where the referenced side drives the join and nothing else
//!   reaches the referencing table: the case `unindexed_filter` reports for
//!   the statement with `details.foreign_key`. The foreign-key finding names
//!   the constraint beside it, so `--fail-on unindexed_foreign_key` and
//!   baselines can target missing foreign-key indexes alone; both carry the
//!   same DDL and go away with one index.
//!
//! A statement that only filters the referencing table by the key column
//! (`WHERE author_id = $1`) does not exercise the constraint: that is an
//! `unindexed_filter`.
//!
//! # Indexed
//! The key counts as indexed when a valid index could serve the lookup
//! PostgreSQL runs, equality on every key column: a btree whose first key
//! is a key column (it narrows the scan, even if it does not hold every key
//! column), a hash on a one-column key, a partial index whose predicate
//! is implied (`WHERE fk IS NOT NULL`). Severity: warning from
//! `min_table_rows` referencing rows, error from `error_table_rows`.

use serde::{Deserialize, Serialize};

use super::ddl::{create_index, KeyDef};
use super::facts::{Modification, PredKind, Predicate, ScopeFacts, SourceFacts, Target};
use super::finding_parts::{describe_index, size_severity};
use super::serve::{serves_filter, usable};
use super::{to_details, UnindexedConfig, UnindexedIssue};
use crate::catalog::{Catalog, ForeignKey, Table};
use crate::finding::FindingKind;

/// The evidence of an `unindexed_foreign_key` finding (its `details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnindexedForeignKeyDetails {
    /// The constraint's name.
    pub constraint: String,
    /// The referenced table, `schema.table`.
    pub referenced_table: String,
    /// The referenced columns, parallel to the finding's `columns`.
    pub referenced_columns: Vec<String>,
    /// How the statement exercises the key: `delete` (of referenced rows),
    /// `update_key` (of referenced columns) or `join` (on the key).
    pub exercised_by: String,
    /// The referencing table's estimated rows.
    pub rows_estimate: u64,
    /// Every index of the referencing table (at most 10).
    pub existing_indexes: Vec<String>,
}

/// Issues for a DELETE or UPDATE block: the unindexed foreign keys that
/// reference its target table (and, for UPDATE, a column it sets).
pub(crate) fn modification(
    facts: &ScopeFacts<'_>,
    catalog: &Catalog,
    config: &UnindexedConfig,
    out: &mut Vec<UnindexedIssue>,
) {
    let Some(modifies) = &facts.role.modifies else {
        return;
    };
    let Some(target) = facts.sources.first().and_then(|s| s.table) else {
        return;
    };
    let target = target.qualified_name();
    for table in catalog.tables() {
        if table.estimated_rows() < config.min_table_rows as f64 {
            continue;
        }
        for fk in table
            .foreign_keys
            .iter()
            .filter(|fk| fk.referenced_table == target)
        {
            let exercised_by = match modifies {
                Modification::Delete => "delete",
                Modification::Update { columns }
                    if fk.referenced_columns.iter().any(|c| columns.contains(c)) =>
                {
                    "update_key"
                }
                Modification::Update { .. } => continue,
            };
            if !indexed(table, fk) {
                out.push(issue(table, fk, exercised_by, config));
            }
        }
    }
}

/// The issue for a join on `fk` (of source `i`, a large table the
/// unindexed-filter verdict found unreachable), when every key column is
/// equated with its referenced column of a source that is the referenced
/// table.
pub(crate) fn joined(
    facts: &ScopeFacts<'_>,
    i: usize,
    table: &Table,
    fk: &ForeignKey,
    config: &UnindexedConfig,
) -> Option<UnindexedIssue> {
    let on_key = fk
        .columns
        .iter()
        .zip(&fk.referenced_columns)
        .all(|(column, referenced)| {
            facts.joins.iter().any(|edge| {
                [(&edge.left, &edge.right), (&edge.right, &edge.left)]
                    .into_iter()
                    .any(|(a, b)| {
                        a.0 == i
                            && a.1 == *column
                            && b.1 == *referenced
                            && facts.sources[b.0]
                                .table
                                .is_some_and(|t| t.qualified_name() == fk.referenced_table)
                    })
            })
        });
    (on_key && !fk.columns.is_empty() && !indexed(table, fk))
        .then(|| issue(table, fk, "join", config))
}

/// Whether an index serves PostgreSQL's lookup of referencing rows
/// (equality on every key column; the key columns are not null there).
fn indexed(table: &Table, fk: &ForeignKey) -> bool {
    let lookup = SourceFacts {
        table: Some(table),
        predicates: fk
            .columns
            .iter()
            .map(|c| Predicate {
                target: Target::Column(c.clone()),
                kind: PredKind::Eq { single: true },
            })
            .collect(),
        not_null: fk.columns.clone(),
        ..SourceFacts::opaque()
    };
    table
        .indexes
        .iter()
        .any(|x| usable(x, table, &lookup) && serves_filter(x, &lookup.predicates, false))
}

fn issue(
    table: &Table,
    fk: &ForeignKey,
    exercised_by: &str,
    config: &UnindexedConfig,
) -> UnindexedIssue {
    let keys: Vec<KeyDef> = fk.columns.iter().map(|c| KeyDef::plain(c)).collect();
    let details = UnindexedForeignKeyDetails {
        constraint: fk.name.clone(),
        referenced_table: fk.referenced_table.clone(),
        referenced_columns: fk.referenced_columns.clone(),
        exercised_by: exercised_by.to_owned(),
        rows_estimate: table.estimated_rows().round() as u64,
        existing_indexes: table.indexes.iter().take(10).map(describe_index).collect(),
    };
    UnindexedIssue {
        kind: FindingKind::UnindexedForeignKey,
        table: table.qualified_name(),
        columns: fk.columns.clone(),
        severity: size_severity(table, config),
        suggestion: create_index(table, &keys),
        details: to_details(&details),
        withheld: None,
        verify_ddl: None,
    }
}
