//! Per-query cost of the analysis the proxy runs on every event: the N+1
//! bookkeeping alone, and the whole of `Analyzer::process` for a statement
//! whose fingerprint is already cached.
//!
//! Run: `cargo bench -p qproxy-analyzer --bench pipeline -- --warm-up-time 1 --measurement-time 3`
//! Aim (issue 6): N+1 bookkeeping <= 1 µs per query; full analysis of a
//! cached statement about 2 µs per query.
//!
//! Every figure is per query: groups set `Throughput::Elements` to the
//! executions one sample runs, so read the reported time divided by that
//! count (criterion prints it as elem/s; `time` / elements is ns per query).
//!
//! The request is what a typical list page sends: a session lookup, the
//! current user, two feature flags, a page of 50 posts (the parent), one
//! author lookup per post (the N+1 children, 50 distinct ids) and a session
//! UPDATE; 56 statements, the values hashed as the proxy's tracker hashes
//! them (32 rows × up to 8 columns of results).
//!
//! Measured on the 2-core development VM (shared, so ±15%), per query:
//! `n_plus_one_record/record` 59 ns, `record+evaluate` 93 ns;
//! `analyzer_process_cached/request` 0.71 µs (1.86 µs before request tags
//! were cached per text and the correlation scans skipped plain text),
//! `request/new-ids` 1.16 µs, `child` 0.57 µs (was 1.65 µs).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use qproxy_analyzer::detect::n_plus_one::{Execution, NPlusOneConfig, RequestWork, ShapeClass};
use qproxy_analyzer::event::{Outcome, Protocol, QueryEvent, SessionEvent, TxStatus};
use qproxy_analyzer::finding::FindingKind;
use qproxy_analyzer::fingerprint::{fingerprint_sql, FingerprintId, StatementKind};
use qproxy_analyzer::pipeline::{Analyzer, AnalyzerConfig};
use qproxy_analyzer::values::value_hash;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64;

/// Rows of the parent whose values the tracker hashes (its default).
const RESULT_ROWS_HASHED: usize = 32;
/// Posts on the page: one child execution each.
const CHILDREN: usize = 50;

/// One statement of the request: its text and what one execution sent
/// and returned (as text values, hashed like the tracker does).
struct Statement {
    sql: &'static str,
    params: Vec<String>,
    /// Rows returned, each a list of column values.
    rows: Vec<Vec<String>>,
    tag: &'static str,
}

impl Statement {
    fn param_hashes(&self) -> SmallVec<[Option<u64>; 4]> {
        self.params
            .iter()
            .map(|p| Some(value_hash(p.as_bytes(), false)))
            .collect()
    }

    /// The tuple hash stands in for the tracker's hash of the Bind values.
    fn params_hash(&self) -> u64 {
        xxh3_64(self.params.join("\u{0}").as_bytes())
    }

    fn result_hashes(&self) -> Vec<u64> {
        self.rows
            .iter()
            .take(RESULT_ROWS_HASHED)
            .flat_map(|r| r.iter().take(8))
            .map(|v| value_hash(v.as_bytes(), false))
            .collect()
    }
}

/// The statements of request number `n`, in order (ids vary by request so
/// that no two requests hash alike).
fn request(n: usize) -> Vec<Statement> {
    let base = 1_000 * n;
    let author = |i: usize| (base + 100 + i).to_string();
    let mut out = vec![
        Statement {
            sql: "SELECT id, user_id, expires_at FROM sessions WHERE token = $1",
            params: vec![format!("tok-{n:08x}")],
            rows: vec![vec![
                (base + 1).to_string(),
                (base + 2).to_string(),
                "2030-01-01 00:00:00+00".into(),
            ]],
            tag: "SELECT 1",
        },
        Statement {
            sql: "SELECT id, name, email, is_staff FROM accounts WHERE id = $1",
            params: vec![(base + 2).to_string()],
            rows: vec![vec![
                (base + 2).to_string(),
                "Ada".into(),
                "ada@example.com".into(),
                "f".into(),
            ]],
            tag: "SELECT 1",
        },
    ];
    for flag in ["new_editor", "dark_mode"] {
        out.push(Statement {
            sql: "SELECT enabled FROM feature_flags WHERE name = $1",
            params: vec![flag.into()],
            rows: vec![vec!["t".into()]],
            tag: "SELECT 1",
        });
    }
    out.push(Statement {
        sql: "SELECT id, title, author_id, created_at FROM posts WHERE published ORDER BY created_at DESC LIMIT $1",
        params: vec![CHILDREN.to_string()],
        rows: (0..CHILDREN)
            .map(|i| {
                vec![
                    (base + 500 + i).to_string(),
                    format!("Post {i}"),
                    author(i),
                    "2024-05-01 12:00:00+00".into(),
                ]
            })
            .collect(),
        tag: "SELECT 50",
    });
    for i in 0..CHILDREN {
        out.push(Statement {
            sql: "SELECT id, name, avatar_url FROM authors WHERE id = $1",
            params: vec![author(i)],
            rows: vec![vec![
                author(i),
                format!("Author {i}"),
                format!("https://cdn.example.com/a/{i}.png"),
            ]],
            tag: "SELECT 1",
        });
    }
    out.push(Statement {
        sql: "UPDATE sessions SET last_seen_at = now() WHERE id = $1",
        params: vec![(base + 1).to_string()],
        rows: Vec::new(),
        tag: "UPDATE 1",
    });
    out
}

/// What `RequestWork::record` is handed for one statement, owned.
struct Recorded {
    fingerprint: FingerprintId,
    normalized: Arc<str>,
    kind: StatementKind,
    changed: Option<u64>,
    tuple_hash: u64,
    param_hashes: Vec<u64>,
    result_hashes: Vec<u64>,
    rows: u64,
}

fn recorded(statements: &[Statement]) -> Vec<Recorded> {
    statements
        .iter()
        .map(|s| {
            let fp = fingerprint_sql(s.sql).remove(0);
            Recorded {
                fingerprint: fp.id,
                normalized: fp.normalized,
                kind: fp.kind,
                changed: (ShapeClass::of(fp.kind) == ShapeClass::Write)
                    .then(|| s.tag.rsplit(' ').next().and_then(|n| n.parse().ok()))
                    .flatten(),
                tuple_hash: s.params_hash(),
                param_hashes: s.param_hashes().into_iter().flatten().collect(),
                result_hashes: s.result_hashes(),
                rows: s.rows.len() as u64,
            }
        })
        .collect()
}

fn record_all(work: &mut RequestWork, executions: &[Recorded], cfg: &NPlusOneConfig) {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for r in executions {
        work.record(
            &Execution {
                fingerprint: r.fingerprint,
                normalized: &r.normalized,
                kind: r.kind,
                changed: r.changed,
                statement_index: 0,
                tuple_hash: r.tuple_hash,
                param_hashes: &r.param_hashes,
                result_hashes: &r.result_hashes,
                rows: r.rows,
                duration: Duration::from_micros(300),
                at,
            },
            cfg,
        );
    }
}

/// `RequestWork::record` per execution, and with the request-end
/// `evaluate` amortised over the request's executions.
fn n_plus_one(c: &mut Criterion) {
    let cfg = NPlusOneConfig::default();
    let executions = recorded(&request(1));
    let n = executions.len() as u64;

    // The detector must see what the bench claims to measure.
    let mut work = RequestWork::default();
    record_all(&mut work, &executions, &cfg);
    let found = work.evaluate(&cfg);
    assert_eq!(found.len(), 1, "one N+1: {found:?}");
    assert_eq!(found[0].count, CHILDREN as u64);
    assert!(found[0].parent.is_some(), "the posts query is the parent");

    let mut g = c.benchmark_group("n_plus_one_record");
    g.throughput(Throughput::Elements(n));
    g.bench_function("record", |b| {
        b.iter_batched_ref(
            RequestWork::default,
            |work| record_all(work, black_box(&executions), &cfg),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("record+evaluate", |b| {
        b.iter_batched_ref(
            RequestWork::default,
            |work| {
                record_all(work, black_box(&executions), &cfg);
                black_box(work.evaluate(&cfg))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The requests cycled through: enough that each request id is a new
/// context, few enough that every text stays in the fingerprint cache.
const REQUESTS: usize = 64;

/// The events of request `n`, tagged as sqlcommenter tags them (a trailing
/// comment, URL-encoded values), sent over the extended protocol on one
/// pooled connection.
fn request_events(n: usize, start: SystemTime) -> Vec<SessionEvent> {
    let comment = format!(
        " /*action='index',controller='posts',framework='django%3A4.2',request_id='{:08x}-7c1e-4d2a-9b1f-{:012x}'*/",
        n * 2_654_435_761 % (1 << 32),
        n
    );
    request(n)
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            SessionEvent::Query(QueryEvent {
                connection_id: 7,
                sql: format!("{}{comment}", s.sql).into(),
                statement_index: 0,
                statement_name: None,
                prepared_at: None,
                protocol: Protocol::Extended,
                params_hash: Some(s.params_hash()),
                param_hashes: s.param_hashes(),
                result_hashes: s.result_hashes(),
                offset: None,
                started_at: start + Duration::from_millis(i as u64),
                duration: Duration::from_micros(300),
                rows: s.rows.len() as u64,
                outcome: Outcome::Complete { tag: s.tag.into() },
                tx_status: TxStatus::Idle,
                application_name: Some("web".into()),
                database: Some("app".into()),
                user: Some("app".into()),
                text_hold: None,
            })
        })
        .collect()
}

/// A clock for the analyzer that moves as fast as the bench needs: the
/// pipeline only compares its instants, it never sleeps.
struct Clock {
    base: Instant,
    elapsed: Duration,
}

impl Clock {
    fn now(&self) -> Instant {
        self.base + self.elapsed
    }
}

/// One request through the pipeline, then the upkeep the proxy does
/// between requests: the tick that ends it after the grace period, and a
/// catalog that cannot be loaded.
fn run_request(analyzer: &mut Analyzer, events: &[SessionEvent], clock: &mut Clock) {
    for e in events {
        clock.elapsed += Duration::from_millis(1);
        black_box(analyzer.process(e, clock.now()));
    }
    clock.elapsed += Duration::from_secs(3);
    analyzer.tick(clock.now());
    for db in analyzer
        .indexes()
        .take_catalog_loads(clock.now(), usize::MAX)
    {
        analyzer.indexes().install_catalog(&db, None);
    }
}

/// `Analyzer::process` per event, fingerprints cached, correlated by a
/// sqlcommenter request id.
fn analyzer_process(c: &mut Criterion) {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let requests: Vec<Vec<SessionEvent>> = (0..REQUESTS)
        .map(|n| request_events(n, start + Duration::from_secs(10 * n as u64)))
        .collect();
    let per_request = requests[0].len() as u64;
    let mut analyzer = Analyzer::new(AnalyzerConfig::default());
    let mut clock = Clock {
        base: Instant::now(),
        elapsed: Duration::ZERO,
    };
    // Warm up: every text fingerprinted, every shape's facts computed.
    for events in &requests {
        run_request(&mut analyzer, events, &mut clock);
    }
    let findings = analyzer.take_findings();
    assert!(
        findings.iter().any(|f| f.kind == FindingKind::NPlusOne),
        "the N+1 is found: {:?}",
        findings.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
    assert_eq!(
        analyzer.queries_correlated(),
        analyzer.stats().queries,
        "every event was correlated by its comment"
    );
    // The last request is still the connection's current one: it ends when
    // the next request starts (or after the idle timeout).
    assert_eq!(analyzer.stats().requests, REQUESTS as u64 - 1);

    let mut g = c.benchmark_group("analyzer_process_cached");
    // A whole request (and its end) per iteration, cycling through the
    // request ids; the figure is per event.
    g.throughput(Throughput::Elements(per_request));
    let mut next = 0;
    g.bench_function("request", |b| {
        b.iter(|| {
            run_request(&mut analyzer, &requests[next % REQUESTS], &mut clock);
            next += 1;
        });
        // Findings are merged by id, so the book stays small; flush it as
        // the proxy does.
        black_box(analyzer.take_findings());
    });

    // The same, but every request id new, as it is in production: each
    // request's texts (comment included) are new to the text tier, so the
    // first execution of each costs a shape-tier hit (a scan, no parse) and
    // the repeats within the request are text hits.
    let mut fresh = REQUESTS;
    g.bench_function("request/new-ids", |b| {
        b.iter_batched_ref(
            || {
                fresh += 1;
                request_events(fresh, start + Duration::from_secs(10 * fresh as u64))
            },
            |events| run_request(&mut analyzer, events, &mut clock),
            BatchSize::SmallInput,
        );
        black_box(analyzer.take_findings());
    });

    // One child event at a time into a request that never ends: the
    // steady state of a long request, its per-request state at its caps.
    let children: Vec<&SessionEvent> = requests[0]
        .iter()
        .filter(|e| matches!(e, SessionEvent::Query(q) if q.sql.contains("FROM authors")))
        .collect();
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("child", |b| {
        b.iter(|| {
            clock.elapsed += Duration::from_micros(100);
            let e = children[i % children.len()];
            i += 1;
            black_box(analyzer.process(e, clock.now()))
        })
    });
    g.finish();
}

criterion_group!(benches, n_plus_one, analyzer_process);
criterion_main!(benches);
