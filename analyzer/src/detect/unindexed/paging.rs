//! `offset_pagination`: pages fetched with a large OFFSET on a large table.
//!
//! PostgreSQL produces and discards every row an OFFSET skips, so page
//! 500 of 20 rows reads 10 000 rows to return 20, and each page costs more
//! than the one before. Keyset pagination (`WHERE (sort_key, id) >
//! ($last_sort_key, $last_id) ORDER BY sort_key, id LIMIT n`) reads only the
//! page, from an index.
//!
//! The statement's shape decides *whether* it pages a large table: an
//! OFFSET on its outermost SELECT (not a subquery's, not a set
//! operation's), with the ORDER BY's table, or else the largest table it
//! reads, at `min_table_rows` or more. The OFFSET's *size* differs per
//! execution (a literal or a bound parameter; both share one fingerprint),
//! so this module only prepares the finding; the pipeline counts it for
//! executions whose OFFSET reaches `[analyzer.offset_pagination]
//! min_offset` (1 000: below that a page skips fewer rows than a
//! sequential scan of a small table reads anyway) and raises it to an error
//! from `error_offset` (100 000, where each page reads for tens of
//! milliseconds). The largest OFFSET seen is kept only as its order of
//! magnitude (see [`crate::offset`]).
//!
//! The suggestion names the keyset: the ORDER BY columns, plus the primary
//! key as a tie-breaker unless they already include a unique key, as a row
//! comparison when every key has the same direction (a btree serves it),
//! spelt out key by key when directions are mixed. An OFFSET without ORDER
//! BY pages in no defined order; the suggestion says so and orders by the
//! primary key.

use serde::{Deserialize, Serialize};

use super::ddl::quote_ident;
use super::facts::{ScopeFacts, Target};
use super::{to_details, UnindexedConfig, UnindexedIssue};
use crate::catalog::Table;
use crate::finding::{FindingKind, Severity};

/// When an execution's OFFSET counts (`[analyzer.offset_pagination]`); the
/// module docs say why these defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OffsetPaginationConfig {
    /// An OFFSET of at least this many rows is reported (1 000).
    pub min_offset: u64,
    /// From this OFFSET the finding is an error (100 000).
    pub error_offset: u64,
}

impl Default for OffsetPaginationConfig {
    fn default() -> Self {
        OffsetPaginationConfig {
            min_offset: 1_000,
            error_offset: 100_000,
        }
    }
}

impl OffsetPaginationConfig {
    /// The severity an execution with this OFFSET gives its shape's
    /// finding; `None` below `min_offset`.
    pub fn severity(&self, offset: u64) -> Option<Severity> {
        if offset < self.min_offset.max(1) {
            None
        } else if offset >= self.error_offset {
            Some(Severity::Error)
        } else {
            Some(Severity::Warning)
        }
    }
}

/// The severity rule of a shape's `offset_pagination` finding once its
/// executions are counted: the prepared finding's (a warning), raised to
/// the worst that any counted execution's OFFSET gave
/// ([`OffsetPaginationConfig::severity`]).
pub fn counted_severity(prepared: Severity, worst_offset: Option<Severity>) -> Severity {
    worst_offset.map_or(prepared, |worst| prepared.max(worst))
}

/// The evidence of an `offset_pagination` finding (its `details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetPaginationDetails {
    /// The paged table's estimated rows.
    pub rows_estimate: u64,
    /// The ORDER BY keys (`created_at DESC`); empty without ORDER BY.
    pub order_by: Vec<String>,
    /// The columns of the suggested keyset; empty when the ORDER BY has
    /// expressions (then the suggestion is prose).
    pub keyset: Vec<String>,
    /// The largest OFFSET seen, rounded down to a power of ten (never the
    /// value itself); set by the pipeline from the executions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_offset: Option<u64>,
}

/// The `offset_pagination` issue a block would give if its executions use a
/// large OFFSET (see the module docs); its severity once counted is
/// [`counted_severity`].
pub(crate) fn evaluate(
    facts: &ScopeFacts<'_>,
    config: &UnindexedConfig,
    out: &mut Vec<UnindexedIssue>,
) {
    if !facts.role.offset {
        return;
    }
    let source = match &facts.sort {
        Some(sort) => Some(sort.source),
        None => (0..facts.sources.len())
            .filter(|&i| facts.sources[i].table.is_some())
            .max_by(|&a, &b| {
                let rows = |i: usize| facts.sources[i].table.map_or(0.0, Table::estimated_rows);
                rows(a).total_cmp(&rows(b))
            }),
    };
    let Some(table) = source.and_then(|i| facts.sources[i].table) else {
        return;
    };
    if table.estimated_rows() < config.min_table_rows as f64 {
        return;
    }
    let sort: Vec<(&Target, bool)> = facts
        .sort
        .iter()
        .flat_map(|s| &s.keys)
        .map(|k| (&k.target, k.descending))
        .collect();
    let order_by: Vec<String> = sort
        .iter()
        .map(|(t, desc)| {
            let name = match t {
                Target::Column(c) => quote_ident(c),
                Target::Expression(e) => e.clone(),
            };
            if *desc {
                format!("{name} DESC")
            } else {
                name
            }
        })
        .collect();
    // An ORDER BY over several tables (or of grouped output) has no keyset
    // this module can name.
    let keyset = if facts.role.ordered && sort.is_empty() {
        None
    } else {
        keyset(table, &sort)
    };
    let suggestion = suggestion(table, facts.role.ordered, keyset.as_deref());
    let columns: Vec<String> = sort
        .iter()
        .filter_map(|(t, _)| t.column().map(str::to_owned))
        .collect();
    let details = OffsetPaginationDetails {
        rows_estimate: table.estimated_rows().round() as u64,
        order_by,
        keyset: keyset
            .unwrap_or_default()
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
        max_offset: None,
    };
    out.push(UnindexedIssue {
        kind: FindingKind::OffsetPagination,
        table: table.qualified_name(),
        columns,
        severity: Severity::Warning,
        suggestion,
        details: to_details(&details),
        withheld: None,
        verify_ddl: None,
    });
}

/// The keyset: the ORDER BY columns with their directions, then the
/// primary key (in the last key's direction) unless a unique key is
/// already among them. `None` when a key is an expression, or there is no
/// ORDER BY and no primary key.
fn keyset(table: &Table, sort: &[(&Target, bool)]) -> Option<Vec<(String, bool)>> {
    let mut keys: Vec<(String, bool)> = Vec::with_capacity(sort.len() + 1);
    for (target, desc) in sort {
        keys.push((target.column()?.to_owned(), *desc));
    }
    let unique = table
        .unique_column_sets()
        .any(|set| set.iter().all(|c| keys.iter().any(|(k, _)| k == c)));
    if !unique {
        let pk = table.indexes.iter().find(|x| x.primary && x.valid)?;
        let direction = keys.last().is_some_and(|(_, desc)| *desc);
        for column in pk.column_names()? {
            if !keys.iter().any(|(k, _)| k == column) {
                keys.push((column.to_owned(), direction));
            }
        }
    }
    Some(keys)
}

fn suggestion(table: &Table, ordered: bool, keyset: Option<&[(String, bool)]>) -> String {
    let Some(keys) = keyset.filter(|k| !k.is_empty()) else {
        return format!(
            "Every page reads and discards the rows its OFFSET skips. Paginate by keyset \
             instead: remember the last row's ORDER BY values and ask for the rows after them \
             (WHERE (keys) > (last row's keys) ... LIMIT n), with an index in that order{}.",
            if ordered {
                ""
            } else {
                "; and add an ORDER BY on a unique key, since pages without one come in no \
                 defined order"
            }
        );
    };
    let last = |c: &str| {
        let name: String = c
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .collect();
        format!("$last_{}", name.to_lowercase())
    };
    let order: Vec<String> = keys
        .iter()
        .map(|(c, desc)| {
            if *desc {
                format!("{} DESC", quote_ident(c))
            } else {
                quote_ident(c)
            }
        })
        .collect();
    let same_direction = keys.iter().all(|(_, d)| *d == keys[0].1);
    let condition = if keys.len() == 1 {
        let (c, desc) = &keys[0];
        format!(
            "{} {} {}",
            quote_ident(c),
            if *desc { "<" } else { ">" },
            last(c)
        )
    } else if same_direction {
        let names: Vec<String> = keys.iter().map(|(c, _)| quote_ident(c)).collect();
        let lasts: Vec<String> = keys.iter().map(|(c, _)| last(c)).collect();
        format!(
            "({}) {} ({})",
            names.join(", "),
            if keys[0].1 { "<" } else { ">" },
            lasts.join(", ")
        )
    } else {
        // Mixed directions: no row comparison expresses it; one branch per
        // key, earlier keys equal.
        let branches: Vec<String> = (0..keys.len())
            .map(|k| {
                let mut parts: Vec<String> = keys[..k]
                    .iter()
                    .map(|(c, _)| format!("{} = {}", quote_ident(c), last(c)))
                    .collect();
                let (c, desc) = &keys[k];
                parts.push(format!(
                    "{} {} {}",
                    quote_ident(c),
                    if *desc { "<" } else { ">" },
                    last(c)
                ));
                if parts.len() == 1 {
                    parts.remove(0)
                } else {
                    format!("({})", parts.join(" AND "))
                }
            })
            .collect();
        format!("({})", branches.join(" OR "))
    };
    let unordered = if !ordered {
        " (without an ORDER BY, OFFSET pages come in no defined order: rows can repeat or go \
         missing between pages)"
    } else {
        ""
    };
    format!(
        "Every page reads and discards the rows its OFFSET skips{unordered}. Paginate by keyset \
         on {}: remember the last row's values and ask for the next page with WHERE {condition} \
         ORDER BY {} LIMIT n, which an index on ({}) serves without reading the skipped rows.",
        table.qualified_name(),
        order.join(", "),
        if same_direction {
            keys.iter()
                .map(|(c, _)| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            order.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_reported_from_the_minimum_and_an_error_from_the_error_offset() {
        let c = OffsetPaginationConfig::default();
        assert_eq!(c.severity(999), None);
        assert_eq!(c.severity(1_000), Some(Severity::Warning));
        assert_eq!(c.severity(99_999), Some(Severity::Warning));
        assert_eq!(c.severity(100_000), Some(Severity::Error));
    }

    #[test]
    fn the_counted_finding_takes_the_worst_offset() {
        assert_eq!(counted_severity(Severity::Warning, None), Severity::Warning);
        assert_eq!(
            counted_severity(Severity::Warning, Some(Severity::Error)),
            Severity::Error
        );
        assert_eq!(
            counted_severity(Severity::Error, Some(Severity::Warning)),
            Severity::Error
        );
    }
}
