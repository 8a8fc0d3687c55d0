//! Checks the fingerprint corpus (`tests/corpus/statements.txt`): statements
//! of one equivalence class share a fingerprint, different classes differ,
//! and everything parses except the statements marked `!fallback`.

use std::collections::HashMap;

use qproxy_analyzer::fingerprint::{fingerprint_sql, Fingerprint};

const CORPUS: &str = include_str!("corpus/statements.txt");

struct Entry {
    class: String,
    sql: String,
    expect_fallback: bool,
}

fn entries() -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut class = String::new();
    for line in CORPUS.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("== ") {
            class = name.trim().to_owned();
        } else if line.starts_with([' ', '\t']) {
            let last = out
                .last_mut()
                .expect("continuation line without a statement");
            last.sql.push('\n');
            last.sql.push_str(line);
        } else {
            let (sql, expect_fallback) = match line.strip_prefix("!fallback ") {
                Some(rest) => (rest, true),
                None => (line, false),
            };
            assert!(
                !class.is_empty(),
                "statement before the first class: {line}"
            );
            out.push(Entry {
                class: class.clone(),
                sql: sql.to_owned(),
                expect_fallback,
            });
        }
    }
    out
}

fn single(sql: &str) -> Fingerprint {
    let mut fps = fingerprint_sql(sql);
    assert_eq!(
        fps.len(),
        1,
        "expected one statement in {sql:?}, got {fps:#?}"
    );
    fps.remove(0)
}

#[test]
fn corpus_is_large_enough() {
    let entries = entries();
    assert!(entries.len() >= 150, "only {} statements", entries.len());
}

#[test]
fn corpus_parses_except_marked_fallbacks() {
    let mut wrong = Vec::new();
    for e in entries() {
        let fp = single(&e.sql);
        if fp.fallback != e.expect_fallback {
            wrong.push(format!(
                "[{}] fallback={} expected {}: {}",
                e.class, fp.fallback, e.expect_fallback, e.sql
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn corpus_classes_share_and_separate_fingerprints() {
    let mut by_class: Vec<(String, Vec<(String, Fingerprint)>)> = Vec::new();
    for e in entries() {
        let fp = single(&e.sql);
        match by_class.iter_mut().find(|(c, _)| *c == e.class) {
            Some((_, v)) => v.push((e.sql, fp)),
            None => by_class.push((e.class, vec![(e.sql, fp)])),
        }
    }
    let mut problems = Vec::new();
    let mut owner: HashMap<u64, &str> = HashMap::new();
    for (class, members) in &by_class {
        let first = &members[0].1;
        for (sql, fp) in &members[1..] {
            if fp.id != first.id {
                problems.push(format!(
                    "[{class}] differs:\n  {}\n  {}\n  (from {sql})",
                    first.normalized, fp.normalized
                ));
            }
        }
        if let Some(other) = owner.insert(first.id.0, class) {
            problems.push(format!(
                "[{class}] and [{other}] share {}: {}",
                first.id, first.normalized
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The normalized text is itself SQL that normalizes to the same text, so
/// it can be shown, re-parsed, or given to `EXPLAIN (GENERIC_PLAN)`.
/// Exceptions: placeholders where PostgreSQL takes no parameter and
/// sqlparser accepts none (`NOTIFY` payloads, `COMMENT ON ... IS`).
#[test]
fn normalized_text_is_a_fixpoint() {
    let mut problems = Vec::new();
    for e in entries().iter().filter(|e| !e.expect_fallback) {
        let fp = single(&e.sql);
        if fp.normalized.starts_with("NOTIFY ") || fp.normalized.starts_with("COMMENT ON ") {
            continue;
        }
        let again = single(&fp.normalized);
        if again.fallback || again.normalized != fp.normalized {
            problems.push(format!(
                "[{}]\n  {}\n  {}",
                e.class, fp.normalized, again.normalized
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every corpus statement through one warm cache (so shape hits happen
/// across classes) gives exactly what parsing it alone gives.
#[test]
fn cache_answers_equal_parsed_answers() {
    let mut cache = qproxy_analyzer::fingerprint::FingerprintCache::new(1_000);
    for e in entries() {
        let cached = cache.get(&e.sql);
        assert_eq!(&*cached, fingerprint_sql(&e.sql).as_slice(), "{}", e.sql);
    }
    assert!(cache.stats().shape_hits > 10, "{:?}", cache.stats());
}

/// Replaces the digits and quoted-string contents of `sql` using `seed`;
/// a crude mutation that needs no lexer and sometimes breaks the SQL
/// (which must not matter either).
fn mutate_literals(sql: &str, mut seed: u64) -> String {
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = String::new();
    let mut chars = sql.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        if c == '\'' {
            out.push('\'');
            while let Some(&d) = chars.peek() {
                chars.next();
                if d == '\'' {
                    break;
                }
            }
            for _ in 0..next() % 6 {
                out.push(char::from(b'a' + (next() % 26) as u8));
            }
            out.push('\'');
            prev = '\'';
        } else if c.is_ascii_digit() && !(prev.is_alphanumeric() || prev == '_' || prev == '$') {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push_str(&(next() % 1000).to_string());
            prev = '0';
        } else {
            out.push(c);
            prev = c;
        }
    }
    out
}

proptest::proptest! {
    #[test]
    fn cache_equals_parsing_for_mutated_corpus(index in 0usize..10_000, seed in 1u64..u64::MAX) {
        let entries = entries();
        let original = &entries[index % entries.len()].sql;
        let mutated = mutate_literals(original, seed);
        let mut cache = qproxy_analyzer::fingerprint::FingerprintCache::new(8);
        cache.get(original);
        let cached = cache.get(&mutated);
        let parsed = fingerprint_sql(&mutated);
        proptest::prop_assert_eq!(&*cached, parsed.as_slice(), "{}", mutated);
    }
}
