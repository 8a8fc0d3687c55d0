//! The fixes qproxy suggests for N+1s and repeated queries: the batched SQL
//! shape, and the idiom of the application's ORM when a framework tag names
//! it.

use crate::detect::n_plus_one::Detection;
use crate::finding::FindingKind;

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

/// The eager-loading idiom of the ORM a framework or driver tag names.
fn orm_idiom(framework: &str) -> Option<&'static str> {
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
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
