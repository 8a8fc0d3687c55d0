//! Verdicts for one query block: which large tables no index lets the
//! planner reach without reading them whole, and which ORDER BYs no index
//! delivers.
//!
//! # Reachability
//! A join does not need every table to be filtered by an index; it needs
//! every large table to be *reachable*: either an index serves its own
//! filters (it can drive the join), or it is small, or it is not a catalog
//! table (CTE, derived table, function), or an index serves its join key
//! to a table that is reachable (it is the inner side of a nested loop).
//! A block without any filter reads everything anyway; an index would not
//! change that, so nothing there is reported. A large table left
//! unreachable gets an `unindexed_filter` finding, suggesting its own
//! filter columns and the join keys towards tables that drive or could
//! drive it.
//!
//! Every table's own filter is judged, whatever the others': when two
//! large tables are each filtered without an index and joined on indexed
//! keys (`orders JOIN customers ... WHERE customers.created_at > $1 AND
//! orders.status = $2`), neither drives the other until one of them is
//! indexed, so each gets its own filter suggested (without the join key
//! it already has an index for). A table with no filter of its own that
//! an indexed join key will reach once its partner is fixed gets nothing.
//!
//! # Statistics
//! Column statistics refine what counts as a filter (`selectivity.rs`):
//! a predicate that selects most of the table is no filter (the planner
//! reads the table whole anyway) and no key column, and a rare value of a
//! skewed column makes the suggestion a partial index.

use std::collections::BTreeMap;

use super::ddl::{create_index, create_partial_index, pattern_opclass, quote_ident, KeyDef};
use super::details::{PartialIndexDetails, UnindexedDetails};
use super::facts::{PredKind, Predicate, ScopeFacts, SourceFacts, Target};
use super::finding_parts::{describe_index, size_severity};
use super::selectivity::{FilterPlan, Partial};
use super::serve::{constant, serves_filter, serves_sort, unique_lookup, usable};
use super::{foreign_key, non_sargable, to_details, UnindexedConfig, UnindexedIssue, VerifyDdl};
use crate::catalog::{Catalog, Table};
use crate::finding::{FindingKind, Severity};

/// Appends the block's issues to `out`.
pub(crate) fn evaluate(
    facts: &ScopeFacts<'_>,
    catalog: &Catalog,
    config: &UnindexedConfig,
    out: &mut Vec<UnindexedIssue>,
) {
    let bytewise = catalog.prefix_like_uses_plain_btree();
    let n = facts.sources.len();
    let large: Vec<Option<&Table>> = facts
        .sources
        .iter()
        .map(|s| {
            s.table
                .filter(|t| t.estimated_rows() >= config.min_table_rows as f64)
        })
        .collect();
    let served_with = |i: usize, preds: &[Predicate]| {
        let (Some(table), source) = (facts.sources[i].table, &facts.sources[i]) else {
            return false;
        };
        table
            .indexes
            .iter()
            .any(|x| usable(x, table, source) && serves_filter(x, preds, bytewise))
    };
    let served: Vec<bool> = (0..n)
        .map(|i| served_with(i, &facts.sources[i].predicates))
        .collect();
    let plans: Vec<Option<FilterPlan>> = facts
        .sources
        .iter()
        .map(|s| {
            s.table
                .map(|t| FilterPlan::new(t, s, config.unselective_fraction))
        })
        .collect();
    let filtered: Vec<bool> = facts
        .sources
        .iter()
        .zip(&plans)
        .map(|(s, plan)| s.selective || plan.as_ref().is_some_and(|p| own_filter(s.table, p)))
        .collect();
    let any_filter = (0..n).any(|i| filtered[i] || served[i]);
    // Reachability as if every block filtered: a predicate that wraps a
    // column is a filter too, just not one an index serves.
    let strict = reach(
        facts,
        (0..n).map(|i| large[i].is_none() || served[i]).collect(),
        &served_with,
    );
    let reached = if any_filter {
        strict.clone()
    } else {
        vec![true; n]
    };
    // A table with a non-sargable predicate gets that finding instead of
    // an unindexed filter (see `non_sargable`'s docs).
    let flagged = non_sargable::evaluate(facts, config, &strict, bytewise, out);

    let mut reported: Vec<usize> = Vec::new();
    for i in (0..n).filter(|&i| !reached[i] && !flagged.contains(&i)) {
        let (Some(table), source, Some(plan)) = (large[i], &facts.sources[i], &plans[i]) else {
            continue;
        };
        // Join keys towards sources that drive, or will once their own
        // filter is indexed (a CTE or subquery that is read whole drives
        // nothing worth an index).
        let mut join_columns: Vec<&str> = Vec::new();
        for edge in &facts.joins {
            for (a, b) in [(&edge.left, &edge.right), (&edge.right, &edge.left)] {
                if a.0 == i
                    && (filtered[b.0] || (reached[b.0] && facts.sources[b.0].table.is_some()))
                    && !join_columns.contains(&a.1.as_str())
                {
                    join_columns.push(&a.1);
                }
            }
        }
        // One of them is indexed already (towards a source that is not
        // reached yet, or this table would be): this table is reached as
        // soon as that driver is. Without a filter of its own nothing is
        // to add here; with one, that filter is what lets the planner
        // start here instead, and it is suggested alone.
        if join_columns
            .iter()
            .any(|c| served_with(i, &with_join_key(source, c)))
        {
            if !filtered[i] {
                continue;
            }
            join_columns.clear();
        }
        let left_out = left_out(table, plan, !join_columns.is_empty());
        let partial = plan.partial.as_ref();
        let mut skip: Vec<&str> = left_out.iter().map(String::as_str).collect();
        skip.extend(partial.map(|p| p.column.as_str()));
        let sort = facts.sort.as_ref().filter(|s| s.source == i);
        let mut keys = suggested_keys(
            table,
            source,
            &join_columns,
            sort.map(|s| &s.keys[..]),
            true,
            bytewise,
            &skip,
        );
        // Sort columns alone are the sort finding's business.
        let narrows = |k: &KeyDef| {
            join_columns.contains(&k.column.as_str())
                || source.predicates.iter().any(|p| {
                    selective_column(Some(table), p) == Some(k.column.as_str())
                        && !skip.contains(&k.column.as_str())
                })
        };
        if !keys.iter().any(narrows) {
            match partial {
                // `WHERE status = $1` alone: the index needs a key; the
                // filtered column is the natural one.
                Some(p) if keys.is_empty() => keys.push(KeyDef::plain(&p.column)),
                Some(_) => {}
                None => continue,
            }
        }
        let severity = size_severity(table, config);
        let fk = table.foreign_keys.iter().find(|fk| {
            !fk.columns.is_empty()
                && fk.columns.len() <= keys.len()
                && fk.columns.iter().zip(&keys).all(|(c, k)| *c == k.column)
        });
        let details = UnindexedDetails {
            join_columns: Some(join_columns.iter().map(|c| c.to_string()).collect()),
            selectivity: plan.has_stats(table).then(|| plan.details(&left_out)),
            foreign_key: fk.map(|fk| fk.name.clone()),
            partial_index: partial.map(PartialIndexDetails::of),
            ..base_details(table, source)
        };
        let mut found = issue(
            FindingKind::UnindexedFilter,
            table,
            &keys,
            severity,
            details,
        );
        if let Some(p) = partial {
            restrict_to(&mut found, table, &keys, p);
        }
        out.push(found);
        reported.push(i);
        if let Some(fk) = fk {
            out.extend(foreign_key::joined(facts, i, table, fk, config));
        }
    }

    // A large table read whole because its filter is unselective: an
    // index would not change the plan, so the issue is held back until
    // hypopg says otherwise.
    for i in (0..n).filter(|&i| !strict[i] && !flagged.contains(&i) && !reported.contains(&i)) {
        let (Some(table), source, Some(plan)) = (large[i], &facts.sources[i], &plans[i]) else {
            continue;
        };
        let Some(whole) = plan.whole else {
            continue;
        };
        let keys = suggested_keys(table, source, &[], None, true, bytewise, &[]);
        if keys.is_empty() {
            continue;
        }
        let details = UnindexedDetails {
            selectivity: Some(plan.details(&[])),
            ..base_details(table, source)
        };
        let mut held = issue(
            FindingKind::UnindexedFilter,
            table,
            &keys,
            size_severity(table, config),
            details,
        );
        held.withheld = Some(format!(
            "column statistics estimate that the filter matches {:.1} % of the rows ({}): \
             the planner reads the table whole with or without an index",
            whole.fraction * 100.0,
            whole.basis.as_str()
        ));
        out.push(held);
    }

    if let Some(sort) = &facts.sort {
        let (Some(table), source) = (large[sort.source], &facts.sources[sort.source]) else {
            return;
        };
        let keys: Vec<_> = sort
            .keys
            .iter()
            .filter(|k| !constant(&k.target, &source.predicates))
            .cloned()
            .collect();
        // When an index already narrows the rows, sorting them is cheap
        // unless a LIMIT could have stopped an ordered scan early, and a
        // list equality (IN / ANY) leaves no index order to use.
        let narrowed = served[sort.source];
        let lists = source
            .predicates
            .iter()
            .any(|p| p.kind == PredKind::Eq { single: false });
        if keys.is_empty()
            || (narrowed && (!sort.limited || lists))
            || keys.iter().any(|k| k.target.column().is_none())
            || unique_lookup(table, source)
            || table.indexes.iter().any(|x| {
                usable(x, table, source) && serves_sort(x, &source.predicates, &keys, bytewise)
            })
        {
            return;
        }
        let mut severity =
            if !sort.limited && table.estimated_rows() >= config.unlimited_sort_error_rows as f64 {
                Severity::Error
            } else {
                size_severity(table, config)
            };
        if narrowed {
            severity = match severity {
                Severity::Error => Severity::Warning,
                _ => Severity::Info,
            };
        }
        // Under a rare value of a skewed column the filter's partial index
        // delivers the order too: suggest the same one.
        let partial = plans[sort.source].as_ref().and_then(|p| p.partial.as_ref());
        let skip: Vec<&str> = partial.map(|p| p.column.as_str()).into_iter().collect();
        let index_keys = suggested_keys(table, source, &[], Some(&keys), false, bytewise, &skip);
        let details = UnindexedDetails {
            sort: Some(
                KeyDef::for_sort(&keys)
                    .iter()
                    .map(KeyDef::describe)
                    .collect(),
            ),
            limited: Some(sort.limited),
            filter_served_by_index: Some(served[sort.source]),
            partial_index: partial.map(PartialIndexDetails::of),
            ..base_details(table, source)
        };
        let mut found = issue(
            FindingKind::UnindexedSort,
            table,
            &index_keys,
            severity,
            details,
        );
        if let Some(p) = partial {
            restrict_to(&mut found, table, &index_keys, p);
        }
        out.push(found);
    }
}

/// Extends `reached` along join edges: a source becomes reachable when an
/// index serves its join key towards a reachable source (it is the inner
/// side of a nested loop).
fn reach(
    facts: &ScopeFacts<'_>,
    mut reached: Vec<bool>,
    served_with: &dyn Fn(usize, &[Predicate]) -> bool,
) -> Vec<bool> {
    loop {
        let mut changed = false;
        for edge in &facts.joins {
            for (a, b) in [(&edge.left, &edge.right), (&edge.right, &edge.left)] {
                if !reached[a.0]
                    && reached[b.0]
                    && served_with(a.0, &with_join_key(&facts.sources[a.0], &a.1))
                {
                    reached[a.0] = true;
                    changed = true;
                }
            }
        }
        if !changed {
            return reached;
        }
    }
}

/// The column a predicate filters on, unless it cannot narrow much by
/// itself: a boolean column matches about half the table, where the
/// planner prefers a sequential scan and the fix is a partial index, not
/// a key column. Such predicates still count when an index serves them.
fn selective_column<'p>(table: Option<&Table>, p: &'p Predicate) -> Option<&'p str> {
    let column = p.target.column()?;
    let boolean = table
        .and_then(|t| t.column(column))
        .is_some_and(|c| c.type_name == "boolean");
    (!boolean).then_some(column)
}

/// Whether a source's own predicates narrow it: some column that may be
/// a key (not a boolean) and, when statistics cover every filter column,
/// a combined share under the threshold; or a rare value a partial index
/// can hold.
fn own_filter(table: Option<&Table>, plan: &FilterPlan) -> bool {
    let boolean = |c: &str| {
        table
            .and_then(|t| t.column(c))
            .is_some_and(|c| c.type_name == "boolean")
    };
    plan.partial.is_some()
        || (plan.whole.is_none() && plan.columns.iter().any(|(c, _)| !boolean(c)))
}

/// Filter columns to leave out of the key: those statistics call
/// unselective, when something else narrows the scan (another column, a
/// join key, a partial-index predicate). Unselective columns that only
/// narrow together stay.
fn left_out(table: &Table, plan: &FilterPlan, joined: bool) -> Vec<String> {
    let candidates: Vec<&str> = plan
        .columns
        .iter()
        .map(|(c, _)| c.as_str())
        .filter(|c| table.column(c).is_none_or(|c| c.type_name != "boolean"))
        .filter(|c| plan.partial.as_ref().is_none_or(|p| p.column != *c))
        .collect();
    let rest = candidates
        .iter()
        .any(|c| !plan.unselective.iter().any(|u| u == c));
    if rest || joined || plan.partial.is_some() {
        plan.unselective
            .iter()
            .filter(|u| candidates.contains(&u.as_str()))
            .cloned()
            .collect()
    } else {
        Vec::new()
    }
}

/// Makes `found` a partial index `WHERE column = $1`: the suggestion
/// shows a placeholder (the pipeline numbers it as the statement's
/// normalized text does), hypopg gets the value.
fn restrict_to(found: &mut UnindexedIssue, table: &Table, keys: &[KeyDef], p: &Partial) {
    let column = quote_ident(&p.column);
    found.suggestion = create_partial_index(table, keys, &format!("{column} = $1"));
    found.verify_ddl = Some(VerifyDdl(create_partial_index(
        table,
        keys,
        &format!("{column} = {}", p.literal_sql),
    )));
}

fn with_join_key(source: &SourceFacts<'_>, column: &str) -> Vec<Predicate> {
    let mut preds = source.predicates.clone();
    preds.push(Predicate {
        target: Target::Column(column.to_owned()),
        kind: PredKind::Eq { single: true },
    });
    preds
}

/// Equality columns (join keys, single values, IS NULL, then lists) →
/// sort columns → at most one range or prefix column; never a column of
/// `skip` (left out as unselective, or the partial-index column). A list of values
/// (`IN`, `= ANY`) breaks index order, so sort columns follow only when
/// there is none. `with_lists`: whether list equalities are included (the
/// sort suggestion leaves them out so the index keeps delivering order).
fn suggested_keys(
    table: &Table,
    source: &SourceFacts<'_>,
    join_columns: &[&str],
    sort: Option<&[super::facts::SortKey]>,
    with_lists: bool,
    bytewise: bool,
    skip: &[&str],
) -> Vec<KeyDef> {
    let columns_of = |wanted: &dyn Fn(PredKind) -> bool| -> Vec<&str> {
        source
            .predicates
            .iter()
            .filter(|p| wanted(p.kind))
            .filter_map(|p| selective_column(Some(table), p))
            .filter(|c| !skip.contains(c))
            .collect()
    };
    let mut keys: Vec<KeyDef> = Vec::new();
    let add = |key: KeyDef, keys: &mut Vec<KeyDef>| {
        if !keys.iter().any(|k| k.column == key.column) {
            keys.push(key);
        }
    };
    for c in join_columns.iter().copied().chain(columns_of(&|k| {
        matches!(k, PredKind::Eq { single: true } | PredKind::IsNull)
    })) {
        add(KeyDef::plain(c), &mut keys);
    }
    let lists = columns_of(&|k| k == PredKind::Eq { single: false });
    if with_lists {
        for c in &lists {
            add(KeyDef::plain(c), &mut keys);
        }
    }
    if lists.is_empty() || !with_lists {
        for key in sort.map(KeyDef::for_sort).unwrap_or_default() {
            add(key, &mut keys);
        }
    }
    if let Some(p) = source.predicates.iter().find(|p| {
        matches!(p.kind, PredKind::Range | PredKind::Prefix)
            && p.target
                .column()
                .is_some_and(|c| !keys.iter().any(|k| k.column == c) && !skip.contains(&c))
    }) {
        let column = p.target.column().unwrap_or_default();
        let mut key = KeyDef::plain(column);
        if p.kind == PredKind::Prefix && !bytewise {
            key.opclass = Some(pattern_opclass(
                table
                    .column(column)
                    .map_or("text", |c| c.type_name.as_str()),
            ));
        }
        add(key, &mut keys);
    }
    keys
}

fn base_details(table: &Table, source: &SourceFacts<'_>) -> UnindexedDetails {
    let mut predicates = BTreeMap::new();
    for (name, kind) in [
        ("equality", PredKind::Eq { single: true }),
        ("in_list", PredKind::Eq { single: false }),
        ("is_null", PredKind::IsNull),
        ("range", PredKind::Range),
        ("prefix_like", PredKind::Prefix),
    ] {
        let targets: Vec<String> = source
            .predicates
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| match &p.target {
                Target::Column(c) | Target::Expression(c) => c.clone(),
            })
            .collect();
        if !targets.is_empty() {
            predicates.insert(name, targets);
        }
    }
    UnindexedDetails {
        rows_estimate: table.estimated_rows().round() as u64,
        predicates,
        existing_indexes: table.indexes.iter().take(10).map(describe_index).collect(),
        ..UnindexedDetails::default()
    }
}

fn issue(
    kind: FindingKind,
    table: &Table,
    keys: &[KeyDef],
    severity: Severity,
    details: UnindexedDetails,
) -> UnindexedIssue {
    let suggestion = create_index(table, keys);
    UnindexedIssue {
        kind,
        table: table.qualified_name(),
        columns: keys.iter().map(|k| k.column.clone()).collect(),
        severity,
        suggestion,
        details: to_details(&details),
        withheld: None,
        verify_ddl: None,
    }
}
