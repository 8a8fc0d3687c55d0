//! The catalog loader and hypopg verification against a real PostgreSQL 15
//! started by the test harness.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use qproxy_analyzer::catalog::{self, CatalogError, IndexMethod, KeyExpr};
use qproxy_analyzer::detect::unindexed::{analyze, SkipReason, UnindexedConfig, Verification};
use qproxy_analyzer::explain::hypopg::{verify_batch, verify_with_hypopg, VerifyJob};
use qproxy_analyzer::finding::FindingKind;
use qproxy_tests::{PgCluster, SUPERUSER, TRUST};
use tokio_postgres::NoTls;

/// One cluster per test binary; each test works in its own database.
fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| PgCluster::start().expect("start PostgreSQL"))
}

fn config(db: &str) -> tokio_postgres::Config {
    cluster().url(SUPERUSER, db, "disable").parse().unwrap()
}

const SHOP: &str = "
CREATE SCHEMA app;
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name varchar(100),
    org_id int,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    status text NOT NULL,
    total numeric,
    note text,
    tags text[],
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_live_org ON users (org_id) WHERE deleted_at IS NULL;
CREATE INDEX users_lower_email ON users (lower(email));
CREATE INDEX orders_status_created ON orders (status, created_at DESC);
CREATE INDEX orders_note_hash ON orders USING hash (note);
CREATE INDEX orders_tags_gin ON orders USING gin (tags);
CREATE INDEX orders_total_incl ON orders (total) INCLUDE (note);
CREATE TABLE app.events (id int, kind text);
CREATE TABLE \"MixedCase\" (\"Id\" int PRIMARY KEY);
CREATE VIEW user_names AS SELECT id, name FROM users;
CREATE MATERIALIZED VIEW user_ids AS SELECT id FROM users;
INSERT INTO users (email, name, org_id) SELECT 'u' || g || '@example.com', 'n' || g, g % 50 FROM generate_series(1, 20000) g;
INSERT INTO orders (user_id, status, total, note)
    SELECT 1 + g % 20000, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3], g, 'n' || (g % 1000) FROM generate_series(1, 60000) g;
ANALYZE;
";

/// A job to verify as the superuser the tests connect as.
fn job<'a>(sql: &'a str, ddl: &'a str) -> VerifyJob<'a> {
    VerifyJob {
        sql,
        ddl,
        user: Some("postgres"),
    }
}

fn database_with_shop(name: &str) {
    cluster().create_database(name).unwrap();
    cluster().psql_superuser(name, SHOP).unwrap();
}

/// qproxy sessions (`application_name` `qproxy-...`) connected to `db`.
fn sessions_now(db: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND application_name LIKE 'qproxy-%'"
    );
    cluster()
        .psql_superuser("postgres", &sql)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// [`sessions_now`], after giving a closed backend a moment to exit.
fn introspection_sessions(db: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = sessions_now(db);
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn loads_tables_columns_indexes_and_foreign_keys() {
    database_with_shop("catalog_model");
    let cat = catalog::load(&config("catalog_model"), NoTls)
        .await
        .unwrap();
    assert_eq!(cat.search_path, ["public"]);
    assert_eq!(cat.collation, "C");
    assert!(!cat.hypopg && !cat.truncated);

    let users = cat.resolve_table(None, "users").unwrap();
    assert_eq!(users.qualified_name(), "public.users");
    assert!(
        (19_000.0..=21_000.0).contains(&users.estimated_rows()),
        "{}",
        users.estimated_rows()
    );
    assert!(users.relpages > 0);
    let names: Vec<&str> = users.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["id", "email", "name", "org_id", "deleted_at", "created_at"]
    );
    assert!(users.column("email").unwrap().not_null);
    assert_eq!(
        users.column("name").unwrap().type_name,
        "character varying(100)"
    );

    let index = |t: &catalog::Table, name: &str| {
        t.indexes.iter().find(|i| i.name == name).cloned().unwrap()
    };
    let pk = index(users, "users_pkey");
    assert!(pk.primary && pk.unique && pk.valid && pk.method == IndexMethod::Btree);
    assert_eq!(pk.keys[0].expr, KeyExpr::Column("id".into()));
    assert!(index(users, "users_email_key").unique);
    assert_eq!(
        index(users, "users_live_org").predicate.as_deref(),
        Some("(deleted_at IS NULL)")
    );
    assert_eq!(
        index(users, "users_lower_email").keys[0].expr,
        KeyExpr::Expression("lower(email)".into())
    );
    let mut unique: Vec<Vec<&str>> = users.unique_column_sets().collect();
    unique.sort();
    assert_eq!(unique, [vec!["email"], vec!["id"]]);

    let orders = cat.resolve_table(Some("public"), "orders").unwrap();
    let composite = index(orders, "orders_status_created");
    assert_eq!(composite.keys.len(), 2);
    assert!(!composite.keys[0].descending);
    assert!(composite.keys[1].descending && composite.keys[1].nulls_first);
    assert_eq!(index(orders, "orders_note_hash").method, IndexMethod::Hash);
    assert_eq!(index(orders, "orders_tags_gin").method, IndexMethod::Gin);
    assert_eq!(
        index(orders, "orders_total_incl").keys.len(),
        1,
        "INCLUDE columns are not keys"
    );
    let fk = &orders.foreign_keys[0];
    assert_eq!(
        (fk.columns.clone(), fk.referenced_table.as_str()),
        (vec!["user_id".to_owned()], "public.users")
    );
    assert_eq!(fk.referenced_columns, ["id"]);

    assert!(cat.resolve_table(Some("app"), "events").is_some());
    assert!(
        cat.resolve_table(None, "events").is_none(),
        "app is not on the search path"
    );
    assert_eq!(
        cat.resolve_table(None, "MixedCase").unwrap().columns[0].name,
        "Id"
    );
    assert!(
        cat.resolve_table(None, "user_ids").is_some(),
        "materialized views are tables to the planner"
    );
    assert!(
        cat.resolve_table(None, "user_names").is_none(),
        "views are not"
    );
    assert!(cat.resolve_table(Some("pg_catalog"), "pg_class").is_none());
    assert!(cat
        .tables()
        .all(|t| t.schema == "public" || t.schema == "app"));

    // The detectors read this model the way they read hand-built ones.
    let config = UnindexedConfig::default();
    let issues = analyze("SELECT * FROM orders WHERE user_id = $1", &cat, &config);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].kind, FindingKind::UnindexedFilter);
    assert_eq!(issues[0].details["foreign_key"], "orders_user_id_fkey");
    for served in [
        "SELECT * FROM users WHERE lower(email) = lower($1)",
        "SELECT * FROM users WHERE org_id = $1 AND deleted_at IS NULL",
        "SELECT * FROM orders WHERE status = $1 ORDER BY created_at DESC LIMIT 20",
        "SELECT * FROM orders WHERE note = $1",
    ] {
        assert!(analyze(served, &cat, &config).is_empty(), "{served}");
    }
}

#[tokio::test]
async fn the_table_cap_keeps_the_largest_and_says_so() {
    database_with_shop("catalog_cap");
    let options = catalog::LoadOptions {
        max_tables: 1,
        ..Default::default()
    };
    let cat = catalog::load_with(&config("catalog_cap"), NoTls, &options)
        .await
        .unwrap();
    assert!(cat.truncated);
    assert_eq!(cat.table_count(), 1);
    assert!(cat.resolve_table(None, "orders").is_some());
}

/// `stats_big` (20k rows): `status` 98 % `done`, 2 % `new`; `amount` with
/// a statistics target of 1000; an array column; `stats_small` (100 rows).
/// `trust_user` may read only `id` and `status` of `stats_big`.
const STATS: &str = "
CREATE TABLE stats_big (id int PRIMARY KEY, status text NOT NULL, amount numeric NOT NULL,
                        tags text[], note text, created_at timestamptz NOT NULL);
ALTER TABLE stats_big ALTER COLUMN amount SET STATISTICS 1000;
CREATE TABLE stats_small (id int PRIMARY KEY, status text);
INSERT INTO stats_big
    SELECT g, CASE WHEN g % 50 = 0 THEN 'new' ELSE 'done' END, g, ARRAY['t' || g % 3, 'x,y'],
           CASE WHEN g % 10 = 0 THEN NULL ELSE 'n' || g END,
           timestamptz '2024-01-01' + g * interval '1 minute'
    FROM generate_series(1, 20000) g;
INSERT INTO stats_small SELECT g, 'new' FROM generate_series(1, 100) g;
ANALYZE;
GRANT SELECT (id, status) ON stats_big TO trust_user;
";

#[tokio::test]
async fn column_statistics_are_read_for_large_tables_capped() {
    cluster().create_database("catalog_stats").unwrap();
    cluster().psql_superuser("catalog_stats", STATS).unwrap();
    let cat = catalog::load(&config("catalog_stats"), NoTls)
        .await
        .unwrap();
    let big = cat.resolve_table(None, "stats_big").unwrap();
    let stats = |c: &str| big.column(c).unwrap().stats.clone();

    let status = stats("status").expect("status has statistics");
    assert_eq!(status.n_distinct, 2.0);
    assert_eq!(status.null_frac, 0.0);
    let values: Vec<&str> = status.most_common.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(values, ["done", "new"]);
    assert!((status.most_common[1].1 - 0.02).abs() < 0.005, "{status:?}");
    assert!(status.histogram.is_empty());

    // A statistics target of 1000: up to 1001 bounds, thinned to 101, still
    // ascending from the smallest value to the largest.
    let amount = stats("amount").expect("amount has statistics");
    assert_eq!(amount.histogram.len(), catalog::MAX_HISTOGRAM_BOUNDS);
    assert_eq!(amount.histogram.first().map(String::as_str), Some("1"));
    assert_eq!(amount.histogram.last().map(String::as_str), Some("20000"));
    assert!(amount.n_distinct < 0.0, "unique: a share of the rows");

    let note = stats("note").expect("note has statistics");
    assert!((note.null_frac - 0.1).abs() < 0.02, "{note:?}");
    let created = stats("created_at").expect("created_at has statistics");
    assert!(
        created.histogram[0].starts_with("2024-01-01 00:01:00"),
        "{:?}",
        created.histogram[0]
    );
    // An array column's statistics read as text, whatever they hold.
    assert!(stats("tags").is_some());

    // Tables under the size threshold get none.
    let small = cat.resolve_table(None, "stats_small").unwrap();
    assert!(small.columns.iter().all(|c| c.stats.is_none()));

    // A budget keeps what fits (whole columns), none when zero.
    let options = catalog::LoadOptions {
        max_stats_bytes: 2_000,
        ..Default::default()
    };
    let capped = catalog::load_with(&config("catalog_stats"), NoTls, &options)
        .await
        .unwrap();
    let with_stats = |cat: &catalog::Catalog| {
        cat.resolve_table(None, "stats_big")
            .unwrap()
            .columns
            .iter()
            .filter(|c| c.stats.is_some())
            .count()
    };
    assert!(with_stats(&capped) < with_stats(&cat), "{capped:?}");
    assert!(with_stats(&capped) >= 1);
    let none = catalog::LoadOptions {
        max_stats_bytes: 0,
        ..Default::default()
    };
    let none = catalog::load_with(&config("catalog_stats"), NoTls, &none)
        .await
        .unwrap();
    assert_eq!(with_stats(&none), 0);

    // pg_stats shows the upstream role only the columns it may read.
    let reader: tokio_postgres::Config = cluster()
        .url(TRUST, "catalog_stats", "disable")
        .parse()
        .unwrap();
    let limited = catalog::load(&reader, NoTls).await.unwrap();
    let big = limited.resolve_table(None, "stats_big").unwrap();
    let readable: Vec<&str> = big
        .columns
        .iter()
        .filter(|c| c.stats.is_some())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(readable, ["id", "status"]);
}

#[tokio::test]
async fn introspection_leaves_no_connection_behind() {
    database_with_shop("catalog_drop");
    let cfg = config("catalog_drop");
    catalog::load(&cfg, NoTls).await.unwrap();
    assert!(!catalog::has_hypopg(&cfg, NoTls).await.unwrap());
    let v = verify_with_hypopg(
        &cfg,
        NoTls,
        job("SELECT 1", "CREATE INDEX ON orders (user_id)"),
    )
    .await
    .unwrap();
    assert!(matches!(v, Verification::Unverified { .. }), "{v:?}");
    assert_eq!(introspection_sessions("catalog_drop"), 0);
    // The count does see a session that stays (so the zero above means something).
    let mut holder = cfg.clone();
    holder.application_name("qproxy-holder");
    let (client, connection) = holder.connect(NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    assert_eq!(sessions_now("catalog_drop"), 1);
    drop(client);
    driver.await.unwrap().unwrap();
    assert_eq!(introspection_sessions("catalog_drop"), 0);
    // What test runners do between runs: it must not fail because of qproxy.
    cluster()
        .psql_superuser("postgres", "DROP DATABASE catalog_drop")
        .unwrap();
}

#[tokio::test]
async fn connection_failures_are_errors_not_hangs() {
    let started = Instant::now();
    let missing = catalog::load(&config("no_such_database"), NoTls).await;
    assert!(
        matches!(missing, Err(CatalogError::Connect(_))),
        "{missing:?}"
    );
    let mut closed = config("postgres");
    closed.port(1).connect_timeout(Duration::from_secs(2));
    assert!(matches!(
        catalog::load(&closed, NoTls).await,
        Err(CatalogError::Connect(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn hypopg_verifies_a_missing_index() {
    database_with_shop("catalog_hypopg");
    cluster()
        .psql_superuser("catalog_hypopg", "CREATE EXTENSION hypopg")
        .unwrap();
    let cfg = config("catalog_hypopg");
    let cat = catalog::load(&cfg, NoTls).await.unwrap();
    assert!(cat.hypopg);
    assert!(catalog::has_hypopg(&cfg, NoTls).await.unwrap());

    for sql in [
        "SELECT * FROM orders WHERE user_id = 42",
        "SELECT * FROM orders WHERE user_id = $1",
        "SELECT o.id FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1",
        "UPDATE orders SET note = 'x' WHERE user_id = $1",
        "DELETE FROM orders WHERE user_id = 7",
    ] {
        let issue = analyze(sql, &cat, &UnindexedConfig::default())
            .pop()
            .unwrap();
        assert_eq!(
            issue.suggestion,
            "CREATE INDEX CONCURRENTLY ON public.orders (user_id);"
        );
        match verify_with_hypopg(&cfg, NoTls, job(sql, &issue.suggestion))
            .await
            .unwrap()
        {
            Verification::Verified {
                cost_before,
                cost_after,
                uses_index,
            } => {
                assert!(uses_index, "{sql}");
                assert!(
                    cost_after < cost_before / 10.0,
                    "{sql}: {cost_before} -> {cost_after}"
                );
            }
            other => panic!("{sql}: {other:?}"),
        }
    }

    // An index the planner has no use for is reported as such.
    let useless = verify_with_hypopg(
        &cfg,
        NoTls,
        job(
            "SELECT * FROM orders WHERE id = $1",
            "CREATE INDEX ON public.orders (total)",
        ),
    )
    .await
    .unwrap();
    assert_eq!(useless.improves(), Some(false));

    // Nothing was changed: the rows are all there and no index was built.
    let state = cluster()
        .psql_superuser(
            "catalog_hypopg",
            "SELECT count(*) FROM orders WHERE note = 'x'; SELECT count(*) FROM orders; \
             SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'",
        )
        .unwrap();
    assert_eq!(
        state.split_whitespace().collect::<Vec<_>>(),
        ["0", "60000", "5"]
    );
    assert_eq!(introspection_sessions("catalog_hypopg"), 0);
}

#[tokio::test]
async fn hypopg_outside_the_search_path() {
    cluster().create_database("catalog_hypopg_schema").unwrap();
    cluster()
        .psql_superuser(
            "catalog_hypopg_schema",
            "CREATE SCHEMA ext; CREATE EXTENSION hypopg SCHEMA ext;
             CREATE TABLE t (a int, b int);
             INSERT INTO t SELECT g, g FROM generate_series(1, 100000) g; ANALYZE t;",
        )
        .unwrap();
    let cfg = config("catalog_hypopg_schema");
    let v = verify_with_hypopg(
        &cfg,
        NoTls,
        job(
            "SELECT b FROM t WHERE a = $1",
            "CREATE INDEX ON public.t (a)",
        ),
    )
    .await
    .unwrap();
    assert_eq!(v.improves(), Some(true), "{v:?}");
    assert_eq!(v.to_details()["hypopg"]["verified"], true);
}

#[tokio::test]
async fn verification_refuses_what_it_must_not_run() {
    let cfg = config("postgres");
    let refused = |v: &Verification| {
        matches!(
            v,
            Verification::Skipped {
                why: SkipReason::Refused,
                ..
            }
        )
    };
    for sql in [
        "DROP TABLE orders",
        "SELECT 1; DROP TABLE orders",
        "INSERT INTO t VALUES (1)",
        "VACUUM",
    ] {
        let v = verify_with_hypopg(&cfg, NoTls, job(sql, "CREATE INDEX ON t (a)"))
            .await
            .unwrap();
        assert!(refused(&v), "{sql}: {v:?}");
    }
    let v = verify_with_hypopg(&cfg, NoTls, job("SELECT 1", "DROP INDEX x"))
        .await
        .unwrap();
    assert!(refused(&v), "{v:?}");
    // Never with the upstream's own rights when the client is unknown.
    let anonymous = VerifyJob {
        user: None,
        ..job("SELECT 1", "CREATE INDEX ON t (a)")
    };
    let v = verify_with_hypopg(&cfg, NoTls, anonymous).await.unwrap();
    assert!(refused(&v), "{v:?}");
    assert!(v.to_details()["hypopg"]["reason"]
        .as_str()
        .unwrap()
        .contains("user is unknown"));
}

/// Objects a client can create that the planner would run, each behind a
/// statement that looks harmless: every one is refused before anything
/// plans it, with a reason that names it. Each function raises an error
/// when called on a verification connection, so a check that let it run
/// would come back as an error, not as a refusal.
#[tokio::test]
async fn statements_that_could_run_client_code_while_planned_are_refused() {
    let db = "catalog_guard";
    database_with_shop(db);
    cluster()
        .psql_superuser(
            db,
            "CREATE EXTENSION hypopg;
             CREATE ROLE guard_client LOGIN;
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO guard_client;
             CREATE FUNCTION public.ran() RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
                 BEGIN
                   IF current_setting('application_name') = 'qproxy-hypopg' THEN
                     RAISE EXCEPTION 'client code ran while being checked';
                   END IF;
                 END $$;
             CREATE FUNCTION public.evil(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
                 BEGIN PERFORM public.ran(); RETURN x; END $$;
             CREATE FUNCTION public.abs(x text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
                 BEGIN PERFORM public.ran(); RETURN 1; END $$;
             CREATE FUNCTION public.plus3(a int, b int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
                 BEGIN PERFORM public.ran(); RETURN a + b; END $$;
             CREATE OPERATOR public.### (LEFTARG = int, RIGHTARG = int, FUNCTION = public.plus3);
             CREATE TABLE tricky (id int, v int);
             INSERT INTO tricky SELECT g, g FROM generate_series(1, 1000) g;
             CREATE INDEX tricky_evil ON tricky ((v + public.evil(1)));
             GRANT SELECT ON tricky TO guard_client;
             CREATE VIEW wrapped AS SELECT id FROM orders WHERE id = public.evil(1);
             GRANT SELECT ON wrapped TO guard_client;
             CREATE TYPE mood AS ENUM ('ok', 'sad');
             CREATE TABLE moods (id int, m mood);
             GRANT SELECT ON moods TO guard_client;
             CREATE TYPE span AS RANGE (subtype = int);
             CREATE TABLE spans (id int, s span);
             GRANT SELECT ON spans TO guard_client;",
        )
        .unwrap();
    let cfg = config(db);
    let ddl = "CREATE INDEX ON public.orders (user_id)";
    let cases = [
        ("SELECT * FROM orders WHERE user_id = evil(3)", "public.evil()"),
        ("SELECT * FROM orders WHERE user_id = public.evil(3)", "public.evil()"),
        ("SELECT * FROM orders WHERE user_id = abs('3')", "public.abs()"),
        ("SELECT * FROM orders WHERE user_id = 1 ### 2", "public.###"),
        ("SELECT * FROM orders o JOIN tricky t ON t.id = o.user_id WHERE o.user_id = 3", "public.evil(integer)"),
        ("SELECT * FROM wrapped WHERE id = 3", "a view"),
        ("SELECT * FROM spans WHERE id = 3", "span"),
        (
            "SELECT * FROM orders WHERE user_id = length(query_to_xml('SELECT public.evil(1)', true, true, '')::text)",
            "runs SQL",
        ),
    ];
    let jobs: Vec<VerifyJob<'_>> = cases
        .iter()
        .map(|(sql, _)| VerifyJob {
            user: Some("guard_client"),
            ..job(sql, ddl)
        })
        .collect();
    // All on one connection, as the proxy batches them.
    let verdicts = verify_batch(&cfg, NoTls, &jobs).await.unwrap();
    for ((sql, named), v) in cases.iter().zip(&verdicts) {
        let details = v.to_details();
        let reason = details["hypopg"]["reason"].as_str().unwrap_or("");
        assert_eq!(details["hypopg"]["skipped"], "refused", "{sql}: {v:?}");
        assert!(reason.contains(named), "{sql}: {reason}");
    }

    // What stays allowed on the same connection: a plain statement, an enum
    // column, and the client's own lack of privileges is its own answer.
    cluster()
        .psql_superuser(db, "REVOKE SELECT ON orders FROM guard_client")
        .unwrap();
    let ok = [
        "SELECT * FROM users WHERE org_id = $1 AND name = 'x'",
        "SELECT * FROM moods WHERE m = 'ok'::mood AND id = 3",
        "SELECT * FROM orders WHERE user_id = 3",
    ];
    let jobs: Vec<VerifyJob<'_>> = ok
        .iter()
        .zip([
            "CREATE INDEX ON public.users (org_id, name)",
            "CREATE INDEX ON public.moods (id)",
            ddl,
        ])
        .map(|(sql, ddl)| VerifyJob {
            user: Some("guard_client"),
            ..job(sql, ddl)
        })
        .collect();
    let verdicts = verify_batch(&cfg, NoTls, &jobs).await.unwrap();
    assert!(
        matches!(verdicts[0], Verification::Verified { .. }),
        "{:?}",
        verdicts[0]
    );
    assert!(
        matches!(verdicts[1], Verification::Verified { .. }),
        "{:?}",
        verdicts[1]
    );
    assert_eq!(
        verdicts[2].to_details()["hypopg"]["reason"],
        "not verified: the client role cannot run this statement"
    );
    // A role that does not exist, or that the upstream may not become.
    let missing = VerifyJob {
        user: Some("nobody_here"),
        ..job(ok[0], "CREATE INDEX ON public.users (org_id)")
    };
    let v = verify_with_hypopg(&cfg, NoTls, missing).await.unwrap();
    assert!(
        v.to_details()["hypopg"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{v:?}"
    );
    assert_eq!(introspection_sessions(db), 0);
}
