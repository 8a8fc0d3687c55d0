//! Every statement of the fingerprint corpus (real ORM, driver and tool
//! SQL) through the detector against a catalog where each table it names
//! is large and has every column it could mean: the detector must never
//! panic (`analyze` would swallow a panic, so a hook records it), and
//! primary-key lookups must stay clean.

use std::sync::atomic::{AtomicUsize, Ordering};

use qproxy_analyzer::catalog::{Catalog, Table};
use qproxy_analyzer::detect::unindexed::{analyze, UnindexedConfig};
use qproxy_analyzer::fingerprint::fingerprint_sql;

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn statements() -> Vec<String> {
    let text = include_str!("corpus/statements.txt");
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with("==") || line.trim().is_empty() {
            continue;
        }
        let line = line.strip_prefix("!fallback ").unwrap_or(line);
        match out.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.to_owned()),
        }
    }
    out
}

/// Every table the statement names, 1M rows, with a primary key on `id`
/// and a column for every word of the statement.
fn catalog_for(sql: &str) -> Catalog {
    let words: Vec<String> = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .flat_map(|w| [w.to_lowercase(), w])
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut catalog = Catalog::new();
    for fp in fingerprint_sql(sql) {
        for table in &fp.tables {
            catalog.insert(
                Table::new(table, 1_000_000)
                    .primary_key(&["id"])
                    .columns(&words),
            );
        }
    }
    catalog
}

#[test]
fn the_corpus_never_panics_and_pk_lookups_stay_clean() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        eprintln!("panic: {info}");
    }));
    let config = UnindexedConfig::default();
    let statements = statements();
    assert!(
        statements.len() > 200,
        "corpus not read: {}",
        statements.len()
    );
    let mut with_issues = 0;
    for sql in &statements {
        let issues = analyze(sql, &catalog_for(sql), &config);
        if !issues.is_empty() {
            with_issues += 1;
        }
        let lower = sql.to_lowercase();
        let pk_lookup = (lower.contains(".\"id\" = $1")
            || lower.contains(".id = $1")
            || lower.contains(" id = $1"))
            && !lower.contains(" join ")
            && !lower.contains(" or ")
            && lower.matches("select").count() == 1
            && lower.starts_with("select");
        if pk_lookup {
            assert!(issues.is_empty(), "{sql}: {issues:?}");
        }
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    // Most of the corpus filters by keys this synthetic catalog does not
    // index, so a healthy share must be found.
    assert!(
        with_issues > statements.len() / 10,
        "{with_issues} of {}",
        statements.len()
    );
}
