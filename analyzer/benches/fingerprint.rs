//! Fingerprinting cost: every corpus statement uncached (a miss) and the
//! cache hit path.
//!
//! Run: `cargo bench -p qproxy-analyzer --bench fingerprint -- --warm-up-time 1 --measurement-time 3`
//! (add `QPROXY_BENCH_PER_STATEMENT=1` for each statement's miss time and
//! the median statement). Aim: median miss <= 10 µs, hit <= 300 ns.
//!
//! Measured on the 2-core development VM (shared with other builds, so
//! ±15%): hit 47-60 ns; new text of a known shape 0.9 µs (short pgx query)
//! to 2.1 µs (Django user query); full miss median over the corpus
//! 10.2-11.1 µs, of which sqlparser's own parse is 7.6-8.9 µs
//! (`parts/parse/*`); the Django user query (11 quoted columns) 32 µs.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use qproxy_analyzer::fingerprint::{fingerprint_sql, FingerprintCache};

const CORPUS: &str = include_str!("../tests/corpus/statements.txt");

/// The corpus statements (same format as the corpus test reads).
fn statements() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in CORPUS.lines() {
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with("== ") {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
            continue;
        }
        out.push(line.trim_start_matches("!fallback ").to_owned());
    }
    out
}

fn bench(c: &mut Criterion) {
    let statements = statements();

    // One sample = fingerprint every corpus statement once; the median per
    // statement is the reported time divided by the element count.
    let mut group = c.benchmark_group("fingerprint");
    group.throughput(Throughput::Elements(statements.len() as u64));
    group.bench_function("miss/corpus", |b| {
        b.iter(|| {
            for s in &statements {
                black_box(fingerprint_sql(black_box(s)));
            }
        })
    });
    let orm = r#"SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username", "auth_user"."first_name", "auth_user"."last_name", "auth_user"."email", "auth_user"."is_staff", "auth_user"."is_active", "auth_user"."date_joined" FROM "auth_user" WHERE "auth_user"."id" = 1 LIMIT 21"#;
    group.throughput(Throughput::Elements(1));
    group.bench_function("miss/django-user", |b| {
        b.iter(|| black_box(fingerprint_sql(black_box(orm))))
    });
    group.bench_function("miss/pgx-short", |b| {
        b.iter(|| {
            black_box(fingerprint_sql(black_box(
                "select id, name, email from users where id = $1",
            )))
        })
    });

    let mut cache = FingerprintCache::default();
    for s in &statements {
        cache.get(s);
    }
    group.throughput(Throughput::Elements(statements.len() as u64));
    group.bench_function("hit/corpus", |b| {
        b.iter(|| {
            for s in &statements {
                black_box(cache.get(black_box(s)));
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit/django-user", |b| {
        cache.get(orm);
        b.iter(|| black_box(cache.get(black_box(orm))))
    });
    group.bench_function("miss-via-cache/django-user", |b| {
        b.iter_batched(
            || FingerprintCache::new(16),
            |mut cache| black_box(cache.get(orm)),
            BatchSize::SmallInput,
        )
    });
    // A new text of a known shape: what an N+1 loop from a client that
    // inlines values (psycopg2, Sequelize) costs per query.
    let mut n = 0u64;
    group.bench_function("shape-hit/django-user", |b| {
        b.iter_batched(
            || {
                n += 1;
                orm.replace("= 1 LIMIT", &format!("= {n} LIMIT"))
            },
            |sql| black_box(cache.get(&sql)),
            BatchSize::SmallInput,
        )
    });
    let short = "SELECT id, name, email FROM users WHERE id = 1";
    cache.get(short);
    group.bench_function("shape-hit/pgx-short", |b| {
        b.iter_batched(
            || {
                n += 1;
                short.replace("= 1", &format!("= {n}"))
            },
            |sql| black_box(cache.get(&sql)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);

/// sqlparser's own cost, the floor under a miss.
fn parts(c: &mut Criterion) {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    let q = "select id, name, email from users where id = $1";
    let orm = r#"SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username", "auth_user"."first_name", "auth_user"."last_name", "auth_user"."email", "auth_user"."is_staff", "auth_user"."is_active", "auth_user"."date_joined" FROM "auth_user" WHERE "auth_user"."id" = 1 LIMIT 21"#;
    // QPROXY_BENCH_PER_STATEMENT=1 prints each corpus statement's miss time
    // (ours, then sqlparser's parse alone) and the median statement.
    if std::env::var("QPROXY_BENCH_PER_STATEMENT").is_ok() {
        let mut times: Vec<(f64, String)> = statements()
            .iter()
            .map(|s| {
                let n = 200;
                let t = std::time::Instant::now();
                for _ in 0..n {
                    black_box(fingerprint_sql(black_box(s)));
                }
                let ours = t.elapsed().as_secs_f64() / n as f64 * 1e6;
                let t = std::time::Instant::now();
                for _ in 0..n {
                    black_box(Parser::parse_sql(&PostgreSqlDialect {}, black_box(s)).ok());
                }
                let parse = t.elapsed().as_secs_f64() / n as f64 * 1e6;
                (
                    ours,
                    format!(
                        "{ours:8.2} {parse:8.2} {:5} {}",
                        s.len(),
                        &s[..s.len().min(60)]
                    ),
                )
            })
            .collect();
        times.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        for (_, line) in &times {
            eprintln!("{line}");
        }
        eprintln!("MEDIAN {}", times[times.len() / 2].1);
    }
    let mut g = c.benchmark_group("parts");
    for (name, sql) in [("short", q), ("orm", orm)] {
        g.bench_function(format!("tokenize/{name}"), |b| {
            b.iter(|| {
                black_box(
                    sqlparser::tokenizer::Tokenizer::new(&PostgreSqlDialect {}, black_box(sql))
                        .tokenize_with_location()
                        .unwrap(),
                )
            })
        });
        g.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| black_box(Parser::parse_sql(&PostgreSqlDialect {}, black_box(sql)).unwrap()))
        });
        let st = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        g.bench_function(format!("display/{name}"), |b| {
            b.iter(|| black_box(st[0].to_string()))
        });
    }
    g.finish();
}
criterion_group!(parts_group, parts);
criterion_main!(benches, parts_group);
