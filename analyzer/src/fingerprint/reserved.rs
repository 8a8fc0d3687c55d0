//! When a quoted identifier may be printed without quotes.
//!
//! Django, Rails and Prisma quote every identifier (`"auth_user"."id"`);
//! hand-written SQL and Hibernate do not. PostgreSQL folds unquoted names to
//! lower case, so `"auth_user"` and `auth_user` are the same name, and the
//! fingerprint prints both the same way. Quotes stay where they change the
//! meaning: names with upper-case or other characters, and PostgreSQL's
//! reserved key words (`"user"` is a column, `user` is `CURRENT_USER`).

/// PostgreSQL's reserved key words, including those reserved except as
/// function or type names (PostgreSQL documentation, "SQL Key Words").
/// Sorted for binary search.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// Whether `name` (the value of a quoted identifier) reads the same without
/// quotes: lower-case ASCII letters, digits, `_` and `$`, not starting with a
/// digit or `$`, and not a reserved key word.
pub(crate) fn is_plain_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    (first.is_ascii_lowercase() || first == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'$')
        && RESERVED.binary_search(&name).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_list_is_sorted() {
        assert!(RESERVED.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn plain_identifiers() {
        assert!(is_plain_identifier("auth_user"));
        assert!(is_plain_identifier("name"));
        assert!(!is_plain_identifier("user"));
        assert!(!is_plain_identifier("User"));
        assert!(!is_plain_identifier("1a"));
        assert!(!is_plain_identifier("a b"));
        assert!(!is_plain_identifier(""));
    }
}
