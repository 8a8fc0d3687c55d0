//! The fixes qproxy suggests for per-request findings (N+1 reads and
//! writes, repeated queries, the query budget, idle transactions) and slow
//! queries, and for unbounded SELECTs: the SQL shape that fixes it, and the idiom of the application's
//! ORM or driver when a framework or `db_driver` tag names it.

use std::time::Duration;

use crate::detect::n_plus_one::Detection;
use crate::detect::slow_query::SlowQueryDetails;
use crate::finding::FindingKind;
use crate::fingerprint::StatementKind;

/// The suggestion for an unbounded SELECT that returned `rows` in one
/// execution.
pub fn for_unbounded(rows: u64) -> String {
    format!(
        "This SELECT has no LIMIT and returned {rows} rows in one execution: paginate it (LIMIT with keyset pagination on an indexed column), or aggregate in the database if only a summary is needed."
    )
}

/// The suggestion text for a per-request detection.
pub fn for_detection(
    d: &Detection,
    equality_columns: &[String],
    framework: Option<&str>,
) -> String {
    match d.kind {
        FindingKind::RepeatedQuery => format!(
            "The same query ran {} times with identical parameters in one request: \
             load it once and reuse the result (memoize it for the request, or hoist it out of the loop).",
            d.count
        ),
        FindingKind::NPlusOneWrite => for_write(d, framework),
        _ => {
            let batched = match equality_columns {
                [col] => format!(
                    "fetch all rows in one query with `WHERE {col} = ANY($1)` (one array parameter holding every {col})"
                ),
                [] => "fetch all rows in one query (`WHERE key = ANY($1)` over the looked-up keys)".to_string(),
                cols => format!(
                    "fetch all rows in one query, e.g. `WHERE ({}) IN (SELECT * FROM unnest(...))`",
                    cols.join(", ")
                ),
            };
            let join = match &d.parent {
                Some(p) => format!(", or JOIN it to the parent query `{}`", truncate(&p.normalized, 120)),
                None => String::new(),
            };
            let mut text = format!(
                "{} executions of one query in a single request ({} distinct parameter sets): {batched}{join}.",
                d.count, d.distinct
            );
            if let Some(idiom) = framework.and_then(orm_idiom) {
                text.push(' ');
                text.push_str(idiom);
            }
            text
        }
    }
}

/// The suggestion for a loop of single-row writes: the set-based
/// statement, and the ORM's bulk idiom.
fn for_write(d: &Detection, framework: Option<&str>) -> String {
    let round_trips = d.writes.map_or(d.count, |w| u64::from(w.looped));
    let (what, fix) = match d.statement {
        StatementKind::Insert => (
            "INSERT",
            "insert the rows in one statement: a multi-row `INSERT ... VALUES (...), (...)`, \
             `INSERT ... SELECT * FROM unnest($1::int[], $2::text[])` with one array per column, \
             or COPY for thousands of rows",
        ),
        StatementKind::Update => (
            "UPDATE",
            "update the rows in one statement: `UPDATE t SET col = v.col FROM (VALUES ...) AS \
             v(id, col) WHERE t.id = v.id` for per-row values, or `WHERE id = ANY($1)` when every \
             row gets the same values",
        ),
        StatementKind::Delete => (
            "DELETE",
            "delete the rows in one statement: `DELETE ... WHERE id = ANY($1)` with one array \
             parameter holding every key",
        ),
        _ => (
            "write",
            "write the rows in one set-based statement (`MERGE ... USING (VALUES ...)`, or one \
             statement over an array parameter)",
        ),
    };
    let mut text = format!(
        "{} single-row {what}s of one shape in a single request, {round_trips} round trips \
         ({} distinct parameter sets): {fix}.",
        d.count, d.distinct
    );
    if let Some(idiom) = framework.and_then(|f| bulk_write_idiom(f, d.statement)) {
        text.push(' ');
        text.push_str(idiom);
    }
    text
}

/// The bulk-write idiom of the ORM or driver a tag names, for a statement
/// kind.
fn bulk_write_idiom(framework: &str, kind: StatementKind) -> Option<&'static str> {
    let f = framework.to_ascii_lowercase();
    let idiom = if f.contains("django") {
        match kind {
            StatementKind::Update => {
                "Django: bulk_update(objs, fields) instead of save() per object, or \
                 queryset.update() when every row gets the same values."
            }
            StatementKind::Delete => {
                "Django: queryset.filter(pk__in=ids).delete() instead of delete() per object."
            }
            _ => "Django: bulk_create(objs) instead of save() or create() per object.",
        }
    } else if f.contains("rails") || f.contains("active_record") || f.contains("activerecord") {
        match kind {
            StatementKind::Update => {
                "Rails: update_all on the relation, or upsert_all for per-row values, instead of \
                 update/save per record."
            }
            StatementKind::Delete => {
                "Rails: where(id: ids).delete_all instead of destroy per record."
            }
            _ => "Rails: insert_all (or upsert_all) instead of create/save per record.",
        }
    } else if f.contains("sqlalchemy") || f.contains("flask") {
        match kind {
            StatementKind::Update => {
                "SQLAlchemy: session.execute(update(Model), [{\"id\": ..., ...}, ...]) updates by \
                 primary key in one executemany."
            }
            StatementKind::Delete => {
                "SQLAlchemy: session.execute(delete(Model).where(Model.id.in_(ids)))."
            }
            _ => "SQLAlchemy: session.execute(insert(Model), [dict, ...]) inserts the list in one executemany.",
        }
    } else if f.contains("psycopg") {
        "psycopg: cursor.executemany(sql, rows) sends the batch in one pipeline (one round \
         trip), and cursor.copy() loads large batches."
    } else if f.contains("spring") || f.contains("hibernate") || f.contains("jpa") {
        "Hibernate: set hibernate.jdbc.batch_size (with hibernate.order_inserts and \
         order_updates) so the writes go out as JDBC batches."
    } else if f.contains("prisma") {
        "Prisma: createMany / updateMany / deleteMany instead of one call per row."
    } else if f.contains("sequelize") {
        "Sequelize: bulkCreate, or update/destroy with a where clause over the keys."
    } else if f.contains("knex") || f.contains("express") {
        "knex: insert(rows) with an array, or whereIn(...).update()/del()."
    } else if f.contains("laravel") || f.contains("eloquent") {
        "Eloquent: Model::insert($rows) or upsert(), or whereIn(...)->update()/delete()."
    } else {
        return None;
    };
    Some(idiom)
}

/// The suggestion for a request over its query budget.
pub fn for_budget(
    statements: u64,
    budget: u64,
    top: Option<(u64, &str)>,
    framework: Option<&str>,
) -> String {
    let mut text = format!(
        "{statements} statements in one request, over the budget of {budget}: every statement is a \
         round trip. "
    );
    if let Some((count, query)) = top {
        text.push_str(&format!(
            "The most frequent shape ran {count} times (`{}`): batch it into one query \
             (`= ANY($1)`, a JOIN) or load it once per request. ",
            truncate(query, 120)
        ));
    }
    text.push_str(
        "Load related rows eagerly, batch writes, and cache what does not change per request.",
    );
    if let Some(idiom) = framework.and_then(orm_idiom) {
        text.push(' ');
        text.push_str(idiom);
    }
    text
}

/// The suggestion for a transaction left idle.
pub fn for_idle(idle: Duration, lock: Option<&str>, framework: Option<&str>) -> String {
    let held = match lock {
        Some(what) => format!(", holding the locks its {what} took (other sessions wait on them)"),
        None => String::new(),
    };
    let mut text = format!(
        "The transaction stayed open {:.1} s while the application sent nothing{held}: move slow \
         work (HTTP calls, queues, file I/O, waiting for a user) before BEGIN or after COMMIT, \
         and set idle_in_transaction_session_timeout as a safety net.",
        idle.as_secs_f64()
    );
    if let Some(idiom) = framework.and_then(idle_idiom) {
        text.push(' ');
        text.push_str(idiom);
    }
    text
}

fn idle_idiom(framework: &str) -> Option<&'static str> {
    let f = framework.to_ascii_lowercase();
    let idiom = if f.contains("django") {
        "Django: keep the call out of the transaction.atomic() block, or run it after commit \
         with transaction.on_commit()."
    } else if f.contains("rails") || f.contains("active_record") || f.contains("activerecord") {
        "Rails: move the call out of the transaction do ... end block, or into an after_commit \
         callback."
    } else if f.contains("sqlalchemy") || f.contains("flask") {
        "SQLAlchemy: commit (or end the session.begin() block) before the call; a session \
         begins a transaction at its first query."
    } else if f.contains("psycopg") {
        "psycopg: connect with autocommit=True and wrap only the statements in \
         `with conn.transaction():`; a non-autocommit connection stays in a transaction until \
         commit()."
    } else if f.contains("spring") || f.contains("hibernate") || f.contains("jpa") {
        "Spring: keep the call outside the @Transactional method."
    } else {
        return None;
    };
    Some(idiom)
}

/// The suggestion for a slow query.
pub fn for_slow(d: &SlowQueryDetails) -> String {
    if d.reason == "single_execution" {
        format!(
            "One execution took {:.0} ms while the p95 over {} executions is {:.0} ms: look for \
             a lock wait (pg_locks, log_lock_waits) or a cold cache at that time, and EXPLAIN \
             (ANALYZE, BUFFERS) the query with the parameters of the slow call.",
            d.max_ms, d.count, d.p95_ms
        )
    } else {
        format!(
            "p95 {:.0} ms over {} executions (max {:.0} ms, threshold {:.0} ms): run EXPLAIN \
             (ANALYZE, BUFFERS) with real parameters to see where the time goes (a scan an index \
             would avoid, a large sort, a lock wait), and check pg_stat_statements for its \
             share of the database's time.",
            d.p95_ms, d.count, d.max_ms, d.threshold_ms
        )
    }
}

/// The eager-loading idiom of the ORM a framework or driver tag names.
pub fn orm_idiom(framework: &str) -> Option<&'static str> {
    let f = framework.to_ascii_lowercase();
    let idiom = if f.contains("django") {
        "Django: use select_related() for foreign keys and prefetch_related() for reverse and many-to-many relations."
    } else if f.contains("rails") || f.contains("active_record") || f.contains("activerecord") {
        "Rails: use includes() (or preload()/eager_load()) on the relation."
    } else if f.contains("spring") || f.contains("hibernate") || f.contains("jpa") {
        "Hibernate/JPA: use JOIN FETCH in the query or an @EntityGraph, or @BatchSize on the association."
    } else if f.contains("prisma") {
        "Prisma: load the relation with include (or select) in the parent query instead of one findUnique per row."
    } else if f.contains("sqlalchemy") || f.contains("flask") {
        "SQLAlchemy: use selectinload() or joinedload() options on the parent query."
    } else if f.contains("sequelize") {
        "Sequelize: add the association to the parent query's include."
    } else if f.contains("knex") || f.contains("express") {
        "knex: collect the keys and run one whereIn() query."
    } else if f.contains("laravel") || f.contains("eloquent") {
        "Eloquent: eager-load the relation with with()."
    } else {
        return None;
    };
    Some(idiom)
}

/// Cuts long SQL for prose, on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::n_plus_one::Parent;
    use crate::fingerprint::FingerprintId;
    use std::time::{Duration, SystemTime};

    fn detection(kind: FindingKind) -> Detection {
        Detection {
            kind,
            fingerprint: FingerprintId(1),
            normalized: "select * from users where id = $1".into(),
            statement: StatementKind::Select,
            writes: None,
            count: 12,
            distinct: 12,
            total_duration: Duration::from_millis(5),
            rows_max: 1,
            parent: Some(Parent {
                fingerprint: FingerprintId(2),
                normalized: "select * from posts".into(),
                matched: 12,
                checked: 12,
            }),
            first_seen: SystemTime::UNIX_EPOCH,
            last_seen: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn batched_form_parent_and_orm_idiom() {
        let s = for_detection(
            &detection(FindingKind::NPlusOne),
            &["id".into()],
            Some("django:4.2"),
        );
        assert!(s.contains("WHERE id = ANY($1)"), "{s}");
        assert!(
            s.contains("JOIN it to the parent query `select * from posts`"),
            "{s}"
        );
        assert!(s.contains("select_related()"), "{s}");
        let s = for_detection(&detection(FindingKind::NPlusOne), &[], None);
        assert!(!s.contains("Django"));
        let s = for_detection(&detection(FindingKind::RepeatedQuery), &[], Some("rails"));
        assert!(s.contains("identical parameters"), "{s}");
    }

    #[test]
    fn writes_get_the_set_based_statement_and_the_bulk_idiom() {
        let mut d = detection(FindingKind::NPlusOneWrite);
        d.statement = StatementKind::Insert;
        let s = for_detection(&d, &[], Some("django:4.2"));
        assert!(s.contains("multi-row `INSERT"), "{s}");
        assert!(s.contains("bulk_create"), "{s}");
        d.statement = StatementKind::Update;
        let s = for_detection(&d, &[], Some("rails"));
        assert!(s.contains("FROM (VALUES"), "{s}");
        assert!(s.contains("update_all"), "{s}");
        d.statement = StatementKind::Delete;
        let s = for_detection(&d, &[], Some("sqlalchemy"));
        assert!(s.contains("= ANY($1)"), "{s}");
        assert!(s.contains("delete(Model)"), "{s}");
        d.statement = StatementKind::Insert;
        let s = for_detection(&d, &[], Some("psycopg:3.2"));
        assert!(s.contains("executemany"), "{s}");
        let s = for_detection(&d, &[], None);
        assert!(!s.contains("Django") && !s.contains("executemany"), "{s}");
    }

    #[test]
    fn budget_idle_and_slow_suggestions() {
        let s = for_budget(60, 50, Some((40, "SELECT 1")), Some("django"));
        assert!(
            s.contains("60 statements") && s.contains("ran 40 times"),
            "{s}"
        );
        assert!(s.contains("select_related"), "{s}");
        let s = for_idle(Duration::from_millis(1500), Some("UPDATE"), Some("rails"));
        assert!(s.contains("1.5 s") && s.contains("its UPDATE took"), "{s}");
        assert!(s.contains("transaction do"), "{s}");
        let s = for_idle(Duration::from_secs(2), None, Some("psycopg"));
        assert!(s.contains("autocommit=True") && !s.contains("locks"), "{s}");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
