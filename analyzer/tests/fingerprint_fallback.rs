//! The token digest used when sqlparser fails, and the guards against
//! pathological input (size, nesting depth).

use qproxy_analyzer::fingerprint::{fingerprint_sql, Fingerprint, StatementKind, MAX_PARSE_BYTES};

fn fallback(sql: &str) -> Fingerprint {
    let mut fps = fingerprint_sql(sql);
    assert_eq!(fps.len(), 1, "expected one statement in {sql:?}: {fps:#?}");
    let fp = fps.remove(0);
    assert!(fp.fallback, "{sql:?} parsed: {}", fp.normalized);
    fp
}

#[track_caller]
fn assert_same_fallback(a: &str, b: &str) {
    let (fa, fb) = (fallback(a), fallback(b));
    assert_eq!(fa.id, fb.id, "\n  {}\n  {}", fa.normalized, fb.normalized);
}

#[track_caller]
fn assert_different_fallback(a: &str, b: &str) {
    let (fa, fb) = (fallback(a), fallback(b));
    assert_ne!(fa.id, fb.id, "both digest to {}", fa.normalized);
}

#[test]
fn literals_become_placeholders() {
    assert_same_fallback(
        "CREATE SEQUENCE s START WITH 1 INCREMENT BY 1 CACHE 1",
        "create sequence s start with 100 increment by -5 cache 20",
    );
    assert_same_fallback(
        "VACUUM ANALYZE t WHERE a = 'x' AND b = E'y\\'' AND c = $$z$$ AND d = $1",
        "VACUUM ANALYZE t WHERE a = $tag$q$tag$ AND b = 'it''s' AND c = 1.5e3 AND d = 7",
    );
}

#[test]
fn text_is_canonical() {
    assert_same_fallback(
        "VACUUM   ANALYZE /* nightly */ users -- why\n",
        "vacuum analyze users",
    );
    let fp = fallback("VACUUM (VERBOSE, ANALYZE) public.\"Users\" WHERE a=-1");
    assert_eq!(
        &*fp.normalized,
        "vacuum(verbose, analyze) public.\"Users\" where a = $1"
    );
}

#[test]
fn placeholder_lists_collapse() {
    assert_same_fallback(
        "select * from t where a in (1, 2, 3) and b = any(array[1,2]) and c = 'oops",
        "select * from t where a in (4) and b = any(array[5]) and c = 'still open",
    );
    // Function arguments are not a list to collapse.
    assert_different_fallback(
        "select f(1, 2) where x = 'open",
        "select f(1) where x = 'open",
    );
}

#[test]
fn json_keys_are_kept() {
    assert_different_fallback(
        "select data->>'name' from t where x = 'open",
        "select data->>'email' from t where x = 'open",
    );
}

#[test]
fn kind_tables_and_limit_are_guessed() {
    let fp = fallback(
        "WITH x AS (SELECT 1) INSERT INTO public.t SELECT * FROM x JOIN \"Other\" o ON true WHERE 'open",
    );
    assert_eq!(fp.kind, StatementKind::Insert);
    assert_eq!(fp.tables, vec!["public.t", "Other"]);
    let fp = fallback("select a from t1, t2 where b = 'x' limit 5 offset 'open");
    assert_eq!(fp.kind, StatementKind::Select);
    assert_eq!(fp.tables, vec!["t1", "t2"]);
    assert!(fp.has_limit);
    assert_eq!(fallback("VACUUM ANALYZE users").kind, StatementKind::Other);
    assert_eq!(fallback("ROLLBACK TO 'open").kind, StatementKind::Savepoint);
}

#[test]
fn no_literal_survives() {
    let fp = fallback("ALTER ROLE bob PASSWORD 'hunter2' VALID UNTIL 'soon' /* x");
    assert!(!fp.normalized.contains("hunter2"), "{}", fp.normalized);
    assert!(!fp.normalized.contains("soon"), "{}", fp.normalized);
}

#[test]
fn unterminated_constructs_do_not_panic() {
    for sql in [
        "'",
        "E'\\",
        "\"",
        "$$",
        "$a$ body",
        "/* /* nested */",
        "--",
        "U&'",
        "select ((((",
        "select ))))",
        "\u{0}\u{1}\u{7f}",
        "sélect ünïcode FROM tàble WHERE ß = 'ü'",
        "$1$2$3",
        "..,,;;::",
    ] {
        let _ = fingerprint_sql(sql);
    }
}

#[test]
fn oversized_statements_skip_the_parser() {
    let big = format!("SELECT '{}'", "x".repeat(MAX_PARSE_BYTES));
    let start = std::time::Instant::now();
    let fp = fallback(&big);
    assert_eq!(&*fp.normalized, "select $1");
    assert!(start.elapsed().as_secs() < 10);
}

#[test]
fn deep_parentheses_cannot_overflow_the_stack() {
    // Runs on the test thread's default 2 MiB stack, like a tokio worker.
    let n = 10_000;
    let sql = format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
    let fp = fallback(&sql);
    assert!(fp.normalized.contains("$1"));
    let sql = format!("SELECT {}1", "(".repeat(n));
    let _ = fingerprint_sql(&sql);
    let sql = format!("SELECT * FROM t WHERE {}", "NOT ".repeat(n));
    let _ = fingerprint_sql(&sql);
}

#[test]
fn long_operator_chains_are_parsed_on_a_large_stack() {
    let ors = (0..5_000)
        .map(|i| format!("a = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let fp = fingerprint_sql(&format!("SELECT * FROM t WHERE {ors}")).remove(0);
    assert!(!fp.fallback);
    assert_eq!(fp.literal_hashes.len(), 5_000);
    let unions = vec!["SELECT a FROM t"; 2_000].join(" UNION ALL ");
    assert!(!fingerprint_sql(&unions)[0].fallback);
}

#[test]
fn fallback_ids_are_hashes_of_the_normalized_text() {
    let fp = fallback("VACUUM ANALYZE t");
    assert_eq!(
        fp.id.0,
        xxhash_rust::xxh3::xxh3_64(fp.normalized.as_bytes())
    );
}

#[test]
fn the_parse_limit_is_per_statement_not_per_text() {
    // A megabyte and more of short statements: each is parsed on its own.
    let one = format!("SELECT a FROM t WHERE b = '{}'; ", "x".repeat(250));
    let sql = one.repeat(MAX_PARSE_BYTES / 250);
    assert!(sql.len() > MAX_PARSE_BYTES);
    let fps = fingerprint_sql(&sql);
    assert_eq!(fps.len(), MAX_PARSE_BYTES / 250);
    assert!(fps.iter().all(|f| !f.fallback));
    assert_eq!(&*fps[0].normalized, "SELECT a FROM t WHERE b = $1");
}
